/* queries/cart.c — GET /carts/{cart_id} from the cart_view read model
 * (projections/cart_view.c).
 *
 * Invariant: the answer only ever shows what the read model holds; the
 * per-sku hashes are joined on the sku of the quantity hash (a sku absent
 * there is not a line), so a half-removed line cannot appear.
 */
#include "keys.h"

/*
 * cart.get: `{cart_id, status: open|abandoned|checked_out, customer_id|null,
 * country|null, opened_at, order_id|null, abandoned_at|null, lines: [{sku,
 * description, quantity, unit_price?, amount}], units, total}`; lines sorted by sku (bytewise); money as decimal strings;
 * unit_price only when all lines of the sku have one price (the :prices set
 * holds one member for it), so a sku added at several prices shows none. Errors: ERR_INVALID (no cart_id), ERR_NOT_FOUND
 * (`no cart "<id>"`), ERR_UNAVAILABLE, ERR_INTERNAL (malformed read model).
 * *out is a new reference owned by the caller.
 */
static int cart_get(struct fn_query_ctx *q, json_t **out, struct err *e)
{
    static const char *const suffix[] = {"", ":qty", ":amount", ":desc", ":price"};
    enum { CART, QTY, AMOUNT, DESC, PRICE, NHASH };
    struct fn_hash h[NHASH];
    struct fn_members prices;
    const char *id;
    int rc;

    if ((rc = query_param_id(q, "cart_id", &id, e)))
        return rc;
    char *keys[NHASH];
    for (int i = 0; i < NHASH; i++)
        keys[i] = proj_key("cart:", id, suffix[i]);
    /* the distinct prices of each sku: members "<sku>\x1f<price>" */
    char *pkey = proj_key("cart:", id, ":prices");
    /* one round trip for the six reads */
    fn_pipeline_begin(q);
    fn_hgetall_many(q, PROJ_CART, (const char *const *)keys, NHASH, h, e);
    fn_zrange(q, PROJ_CART, pkey, 0, -1, 0, &prices, e);
    rc = fn_pipeline_end(q, e);
    for (int i = 0; i < NHASH; i++)
        free(keys[i]);
    free(pkey);
    if (rc)
        return rc;
    if (h[CART].n == 0)
        return err_set(e, ERR_NOT_FOUND, "no cart \"%.200s\"", id);

    json_t *lines = json_array();
    /* h[QTY] is sorted by sku: the lines come out in sku order */
    for (size_t i = 0; i < h[QTY].n; i++) {
        const struct fn_field *kv = &h[QTY].f[i];
        int64_t qty, amount = 0, price;
        if (fn_parse_int(kv->value, kv->value_len, &qty)) {
            json_decref(lines);
            return err_set(e, ERR_INTERNAL,
                           "cart \"%.200s\" holds a malformed quantity of \"%.100s\"", id,
                           kv->name);
        }
        const char *a = fn_hash_get(&h[AMOUNT], kv->name);
        const char *d = fn_hash_get(&h[DESC], kv->name);
        const char *p = fn_hash_get(&h[PRICE], kv->name);
        if (a && fn_parse_int(a, strlen(a), &amount)) {
            json_decref(lines);
            return err_set(e, ERR_INTERNAL,
                           "cart \"%.200s\" holds a malformed amount of \"%.100s\"", id,
                           kv->name);
        }
        json_t *line = json_object();
        json_object_set_new(line, "sku", json_stringn(kv->name, kv->name_len));
        json_object_set_new(line, "description", json_string(d ? d : ""));
        json_object_set_new(line, "quantity", json_integer((json_int_t)qty));
        size_t nprices = 0;
        for (size_t k = 0; k < prices.n; k++) {
            const struct fn_member *m = &prices.m[k];
            if (m->len > kv->name_len && !memcmp(m->member, kv->name, kv->name_len) &&
                m->member[kv->name_len] == '\x1f')
                nprices++;
        }
        if (p && nprices == 1 && !fn_parse_int(p, strlen(p), &price))
            json_object_set_new(line, "unit_price", query_money(price));
        json_object_set_new(line, "amount", query_money(amount));
        json_array_append_new(lines, line);
    }

    json_t *o = json_object();
    json_object_set_new(o, "cart_id", json_string(id));
    const char *status = fn_hash_get(&h[CART], "status");
    const char *abandoned = fn_hash_get(&h[CART], "abandoned_at");
    json_object_set_new(o, "status", !status ? json_null()
                                     : abandoned && !strcmp(status, "open")
                                         ? json_string("abandoned")
                                         : json_string(status));
    query_put_str(o, &h[CART], "customer_id");
    query_put_str(o, &h[CART], "country");
    query_put_str(o, &h[CART], "opened_at");
    query_put_str(o, &h[CART], "order_id");
    query_put_str(o, &h[CART], "abandoned_at");
    json_object_set_new(o, "lines", lines);
    if ((rc = query_put_int(o, &h[CART], "units", e)) ||
        (rc = query_put_money(o, &h[CART], "total", e))) {
        json_decref(o);
        return rc;
    }
    *out = o;
    return 0;
}

const struct fn_query query_cart_get = {
    .abi = FN_ABI_VERSION,
    .name = "cart.get",
    .route = "/carts/{cart_id}",
    .run = cart_get,
};
