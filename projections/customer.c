/* projections/customer.c — per-customer figures behind GET /customers/{id}
 * and GET /customers/{id}/orders.
 *
 * Keys (relative to "customer:v1:"):
 *   customer:<id>          hash orders, revenue, units, cancelled, returns,
 *                          returns_value, first_order_at, last_order_at
 *   customer:<id>:orders   zset member order_id, score placed time (Unix s)
 *
 * Invariants: guests (null or empty customer_id) are never projected here;
 * orders counts orders placed (cancelled ones included, as in the zset, whose
 * ZCARD equals it), cancelled counts cancellations, revenue and units are net
 * of cancelled orders; returns counts ReturnRecorded events and returns_value
 * sums their totals (thousandths). first_order_at/last_order_at are the
 * placed_at of the first/last order in event order; the query derives the
 * earliest/latest by placement time from the zset when it can.
 */
#include "keys.h"

/* The customer hash key of the event, or NULL (caller frees) for a guest's,
 * which no handler projects. */
static char *customer_key(const struct fn_event *ev)
{
    const char *customer = proj_opt(ev->data, "customer_id");
    return customer ? proj_key("customer:", customer, "") : NULL;
}

static int order_placed(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    (void)e;
    const json_t *d = ev->data;
    char *key = customer_key(ev);
    if (!key)
        return 0;
    const char *order = proj_str(d, "order_id");
    const char *at = proj_str(d, "occurred_at");
    int64_t secs;
    fn_hincrby(b, key, "orders", 1);
    fn_hincrby(b, key, "revenue", proj_money(d, "total"));
    fn_hincrby(b, key, "units", proj_int(d, "units"));
    if (at) {
        fn_hsetnx(b, key, "first_order_at", at);
        fn_hset(b, key, "last_order_at", at);
    }
    if (order && *order) {
        char *zkey = fn_asprintf("%s:orders", key);
        fn_zadd(b, zkey, proj_unix_seconds(at, &secs) == 0 ? secs : 0, order);
        free(zkey);
    }
    free(key);
    return 0;
}

static int order_cancelled(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    (void)e;
    const json_t *d = ev->data;
    char *key = customer_key(ev);
    if (!key)
        return 0;
    fn_hincrby(b, key, "cancelled", 1);
    fn_hincrby(b, key, "revenue", proj_neg(proj_money(d, "total")));
    fn_hincrby(b, key, "units", proj_neg(proj_int(d, "units")));
    free(key);
    return 0;
}

static int return_recorded(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    (void)e;
    const json_t *d = ev->data;
    char *key = customer_key(ev);
    if (!key)
        return 0;
    fn_hincrby(b, key, "returns", 1);
    fn_hincrby(b, key, "returns_value", proj_money(d, "total"));
    free(key);
    return 0;
}

static const struct fn_on_event customer_on[] = {
    {EV_OrderPlaced, order_placed},
    {EV_OrderCancelled, order_cancelled},
    {EV_ReturnRecorded, return_recorded},
    {NULL, NULL},
};

const struct fn_projection proj_customer = {
    .abi = FN_ABI_VERSION,
    .name = PROJ_CUSTOMER,
    .version = PROJ_CUSTOMER_V,
    .on = customer_on,
};
