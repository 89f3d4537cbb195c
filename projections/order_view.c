/* projections/order_view.c — the order read model behind GET /orders/{order_id}
 * (and the status/total/placed_at of each order in a customer's order list).
 *
 * Key (relative to "order_view:v1:"): order:<order_id>, a hash of order_id,
 * cart_id, customer_id, country, status (placed/paid/cancelled), total, paid,
 * refund_due, units, placed_at, paid_at, cancelled_at and lines (the
 * OrderPlaced lines as compact JSON text, in the order placed).
 *
 * Invariants: money fields are thousandths; paid is 0 until OrderPaid and
 * refund_due 0 until OrderCancelled; paid_at/cancelled_at are absent until
 * their event; customer_id/country are absent for a guest or no country.
 */
#include "keys.h"

#include <inttypes.h>

static void order_view_hset_money(struct fn_batch *b, const char *key, const char *field,
                                  int64_t v)
{
    char n[24];
    snprintf(n, sizeof n, "%" PRId64, v);
    fn_hset(b, key, field, n);
}

/* The order hash key of the event, or NULL (caller frees) for an event
 * without an order id, which no handler projects. */
static char *order_key(const struct fn_event *ev)
{
    const char *order = proj_opt(ev->data, "order_id");
    return order ? proj_key("order:", order, "") : NULL;
}

static int order_placed(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    (void)e;
    const json_t *d = ev->data;
    char *key = order_key(ev);
    if (!key)
        return 0;
    const char *at = proj_str(d, "occurred_at");
    const char *cart = proj_str(d, "cart_id");
    const char *customer = proj_opt(d, "customer_id");
    const char *country = proj_opt(d, "country");
    const json_t *lines = json_object_get(d, "lines");
    char *text = json_is_array(lines) ? json_dumps(lines, JSON_COMPACT | JSON_PRESERVE_ORDER)
                                      : NULL;
    if (json_is_array(lines) && !text)
        abort(); /* out of memory: never store a wrong order */
    char units[24];
    snprintf(units, sizeof units, "%" PRId64, proj_int(d, "units"));
    fn_hset(b, key, "order_id", proj_str(d, "order_id"));
    if (cart)
        fn_hset(b, key, "cart_id", cart);
    if (customer)
        fn_hset(b, key, "customer_id", customer);
    if (country)
        fn_hset(b, key, "country", country);
    fn_hset(b, key, "status", "placed");
    order_view_hset_money(b, key, "total", proj_money(d, "total"));
    fn_hset(b, key, "paid", "0");
    fn_hset(b, key, "refund_due", "0");
    fn_hset(b, key, "units", units);
    if (at)
        fn_hset(b, key, "placed_at", at);
    fn_hset(b, key, "lines", text ? text : "[]");
    free(text);
    free(key);
    return 0;
}

static int order_paid(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    (void)e;
    char *key = order_key(ev);
    if (!key)
        return 0;
    const char *at = proj_str(ev->data, "occurred_at");
    fn_hset(b, key, "status", "paid");
    order_view_hset_money(b, key, "paid", proj_money(ev->data, "amount"));
    if (at)
        fn_hset(b, key, "paid_at", at);
    free(key);
    return 0;
}

static int order_cancelled(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    (void)e;
    char *key = order_key(ev);
    if (!key)
        return 0;
    const char *at = proj_str(ev->data, "occurred_at");
    fn_hset(b, key, "status", "cancelled");
    order_view_hset_money(b, key, "refund_due", proj_money(ev->data, "refund_due"));
    if (at)
        fn_hset(b, key, "cancelled_at", at);
    free(key);
    return 0;
}

static const struct fn_on_event order_view_on[] = {
    {EV_OrderPlaced, order_placed},
    {EV_OrderPaid, order_paid},
    {EV_OrderCancelled, order_cancelled},
    {NULL, NULL},
};

const struct fn_projection proj_order_view = {
    .abi = FN_ABI_VERSION,
    .name = PROJ_ORDER,
    .version = PROJ_ORDER_V,
    .on = order_view_on,
};
