/* queries/order.c — GET /orders/{order_id} from the order_view read model
 * (projections/order_view.c).
 *
 * Invariant: the lines are the OrderPlaced lines exactly as the event gave
 * them (stored as JSON text), in the order placed.
 */
#include "keys.h"

/* A copy of the stored lines with each line's members in the documented
 * order (sku, description, quantity, unit_price, amount, then any other):
 * the event store may have reordered them. Returns a new reference. */
static json_t *order_lines_ordered(const json_t *stored)
{
    static const char *const keys[] = {"sku", "description", "quantity", "unit_price", "amount"};
    json_t *lines = json_array(), *l, *v;
    size_t i;
    const char *k;
    json_array_foreach(stored, i, l) {
        json_t *c = json_object();
        for (size_t j = 0; j < sizeof keys / sizeof *keys; j++)
            if ((v = json_object_get(l, keys[j])))
                json_object_set(c, keys[j], v);
        json_object_foreach(l, k, v)
            if (!json_object_get(c, k))
                json_object_set(c, k, v);
        json_array_append_new(lines, c);
    }
    return lines;
}

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
    struct fn_hash h;
    const char *id;
    json_t *o = NULL, *lines = NULL;
    int rc;

    if ((rc = query_param_id(q, "order_id", &id, e)))
        return rc;
    char *key = proj_key("order:", id, "");
    rc = fn_hgetall(q, PROJ_ORDER, key, &h, e);
    free(key);
    if (rc)
        return rc;
    if (h.n == 0)
        return err_set(e, ERR_NOT_FOUND, "no order \"%.200s\"", id);

    const char *text = fn_hash_get(&h, "lines");
    if (text) {
        json_t *stored = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_array(stored)) {
            json_decref(stored);
            return err_set(e, ERR_INTERNAL, "order \"%.200s\" holds malformed lines", id);
        }
        lines = order_lines_ordered(stored);
        json_decref(stored);
    } else {
        lines = json_array();
    }

    static const struct query_field head[] = {
        {"cart_id", QUERY_STR}, {"customer_id", QUERY_STR}, {"country", QUERY_STR},
        {"status", QUERY_STR},
    };
    static const struct query_field tail[] = {
        {"units", QUERY_INT},      {"total", QUERY_MONEY},  {"paid", QUERY_MONEY},
        {"refund_due", QUERY_MONEY}, {"placed_at", QUERY_STR}, {"paid_at", QUERY_STR},
        {"cancelled_at", QUERY_STR},
    };
    o = json_object();
    json_object_set_new(o, "order_id", json_string(id));
    query_put_fields(o, &h, head, sizeof head / sizeof *head, e); /* strings: cannot fail */
    json_object_set(o, "lines", lines);
    if ((rc = query_put_fields(o, &h, tail, sizeof tail / sizeof *tail, e)))
        goto done;
    *out = o;
    o = NULL;
done:
    json_decref(o);
    json_decref(lines);
    return rc;
}

const struct fn_query query_order_get = {
    .abi = FN_ABI_VERSION,
    .name = "order.get",
    .route = "/orders/{order_id}",
    .run = order_get,
};
