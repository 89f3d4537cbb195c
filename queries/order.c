/* queries/order.c — GET /orders/{order_id} from the order_view read model
 * (projections/order_view.c).
 *
 * Invariant: the lines are the OrderPlaced lines exactly as the event gave
 * them (stored as JSON text), in the order placed.
 */
#include "projections/keys.h"

/*
 * order.get: `{order_id, cart_id, customer_id|null, country|null, status,
 * lines: [{sku, description, quantity, unit_price, amount}], units, total,
 * paid, refund_due, placed_at, paid_at|null, cancelled_at|null}`; money as
 * decimal strings. Errors: ERR_INVALID (no order_id), ERR_NOT_FOUND
 * (`no order "<id>"`), ERR_UNAVAILABLE, ERR_INTERNAL (malformed read model).
 * *out is a new reference owned by the caller.
 */
static int order_get(struct fn_query_ctx *q, json_t **out, struct err *e)
{
    struct query_hash h;
    const char *id;
    json_t *o = NULL, *lines = NULL;
    int rc;

    if ((rc = query_param_id(q, "order_id", &id, e)))
        return rc;
    char *key = query_key(PROJ_ORDER, PROJ_ORDER_V, "order:", id, "");
    rc = query_hgetall(q, key, &h, e);
    free(key);
    if (rc)
        goto done;
    if (h.n == 0) {
        rc = err_set(e, ERR_NOT_FOUND, "no order \"%.200s\"", id);
        goto done;
    }

    const char *text = query_hash_get(&h, "lines");
    if (text) {
        lines = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_array(lines)) {
            rc = err_set(e, ERR_INTERNAL, "order \"%.200s\" holds malformed lines", id);
            goto done;
        }
    } else {
        lines = json_array();
    }

    o = json_object();
    json_object_set_new(o, "order_id", json_string(id));
    query_put_str(o, &h, "cart_id", 1);
    query_put_str(o, &h, "customer_id", 1);
    query_put_str(o, &h, "country", 1);
    query_put_str(o, &h, "status", 1);
    json_object_set(o, "lines", lines);
    if ((rc = query_put_int(o, &h, "units", e)) || (rc = query_put_money(o, &h, "total", e)) ||
        (rc = query_put_money(o, &h, "paid", e)) || (rc = query_put_money(o, &h, "refund_due", e)))
        goto done;
    query_put_str(o, &h, "placed_at", 1);
    query_put_str(o, &h, "paid_at", 1);
    query_put_str(o, &h, "cancelled_at", 1);
    *out = o;
    o = NULL;
done:
    json_decref(o);
    json_decref(lines);
    query_hash_free(&h);
    return rc;
}

const struct fn_query query_order_get = {
    .name = "order.get",
    .route = "/orders/{order_id}",
    .run = order_get,
};
