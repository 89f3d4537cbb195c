/* queries/cart.c — GET /carts/{cart_id} from the cart_view read model
 * (projections/cart_view.c).
 *
 * Invariant: the answer only ever shows what the read model holds; the
 * per-sku hashes are joined on the sku of the quantity hash (a sku absent
 * there is not a line), so a half-removed line cannot appear.
 */
#include "projections/keys.h"

/*
 * cart.get: `{cart_id, status, customer_id|null, country|null, opened_at,
 * order_id|null, lines: [{sku, description, quantity, unit_price?, amount}],
 * units, total}`; lines sorted by sku (bytewise); money as decimal strings;
 * unit_price only when all lines of the sku have one price (the :prices set
 * holds one member for it), so a sku added at several prices shows none. Errors: ERR_INVALID (no cart_id), ERR_NOT_FOUND
 * (`no cart "<id>"`), ERR_UNAVAILABLE, ERR_INTERNAL (malformed read model).
 * *out is a new reference owned by the caller.
 */
static int cart_get(struct fn_query_ctx *q, json_t **out, struct err *e)
{
    static const char *const suffix[] = {"", ":qty", ":amount", ":desc", ":price"};
    enum { CART, QTY, AMOUNT, DESC, PRICE, NHASH };
    struct query_hash h[NHASH];
    const char *id;
    json_t *o = NULL, *lines = NULL;
    redisReply *prices = NULL;
    int rc;

    memset(h, 0, sizeof h);
    if ((rc = query_param_id(q, "cart_id", &id, e)))
        return rc;
    for (int i = 0; i < NHASH; i++) {
        char *key = query_key(PROJ_CART, PROJ_CART_V, "cart:", id, suffix[i]);
        rc = query_hgetall(q, key, &h[i], e);
        free(key);
        if (rc)
            goto done;
        if (i == CART && h[CART].n == 0) {
            rc = err_set(e, ERR_NOT_FOUND, "no cart \"%.200s\"", id);
            goto done;
        }
    }

    /* the distinct prices of each sku: members "<sku>\x1f<price>" */
    char *pkey = query_key(PROJ_CART, PROJ_CART_V, "cart:", id, ":prices");
    prices = fn_redis(q, "ZRANGE %s 0 -1", pkey);
    free(pkey);
    if (!prices) {
        rc = err_set(e, ERR_UNAVAILABLE, "could not read cart \"%.200s\"", id);
        goto done;
    }
    if (prices->type != REDIS_REPLY_ARRAY) {
        rc = err_set(e, ERR_INTERNAL, "cart \"%.200s\" holds a malformed price set", id);
        goto done;
    }

    o = json_object();
    lines = json_array();
    /* h[QTY].kv is sorted by sku: the lines come out in sku order */
    for (size_t i = 0; i < h[QTY].n; i++) {
        const struct query_kv *kv = &h[QTY].kv[i];
        int64_t qty, amount = 0, price;
        if (query_parse_i64(kv->value, kv->vlen, &qty)) {
            rc = err_set(e, ERR_INTERNAL, "cart \"%.200s\" holds a malformed quantity of \"%.100s\"",
                         id, kv->field);
            goto done;
        }
        const char *a = query_hash_get(&h[AMOUNT], kv->field);
        const char *d = query_hash_get(&h[DESC], kv->field);
        const char *p = query_hash_get(&h[PRICE], kv->field);
        if (a && query_parse_i64(a, strlen(a), &amount)) {
            rc = err_set(e, ERR_INTERNAL, "cart \"%.200s\" holds a malformed amount of \"%.100s\"",
                         id, kv->field);
            goto done;
        }
        json_t *line = json_object();
        json_object_set_new(line, "sku", json_stringn(kv->field, kv->flen));
        json_object_set_new(line, "description", json_string(d ? d : ""));
        json_object_set_new(line, "quantity", json_integer((json_int_t)qty));
        size_t nprices = 0;
        for (size_t k = 0; k < prices->elements; k++) {
            const redisReply *m = prices->element[k];
            if (m->type == REDIS_REPLY_STRING && m->len > kv->flen &&
                !memcmp(m->str, kv->field, kv->flen) && m->str[kv->flen] == '\x1f')
                nprices++;
        }
        if (p && nprices == 1 && !query_parse_i64(p, strlen(p), &price))
            json_object_set_new(line, "unit_price", query_money(price));
        json_object_set_new(line, "amount", query_money(amount));
        json_array_append_new(lines, line);
    }

    json_object_set_new(o, "cart_id", json_string(id));
    query_put_str(o, &h[CART], "status");
    query_put_str(o, &h[CART], "customer_id");
    query_put_str(o, &h[CART], "country");
    query_put_str(o, &h[CART], "opened_at");
    query_put_str(o, &h[CART], "order_id");
    json_object_set(o, "lines", lines);
    if ((rc = query_put_int(o, &h[CART], "units", e)) ||
        (rc = query_put_money(o, &h[CART], "total", e)))
        goto done;
    *out = o;
    o = NULL;
done:
    if (prices)
        freeReplyObject(prices);
    json_decref(o);
    json_decref(lines);
    for (int i = 0; i < NHASH; i++)
        query_hash_free(&h[i]);
    return rc;
}

const struct fn_query query_cart_get = {
    .name = "cart.get",
    .route = "/carts/{cart_id}",
    .run = cart_get,
};
