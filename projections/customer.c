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
#include "projections/keys.h"

static const char *const customer_types[] = {"OrderPlaced", "OrderCancelled", "ReturnRecorded",
                                             NULL};

static void customer_apply(struct fn_batch *b, const struct fn_event *ev)
{
    const json_t *d = ev->data;
    const char *customer = proj_opt(d, "customer_id");
    if (!customer)
        return;
    char *key = proj_key("customer:", customer, "");

    if (!strcmp(ev->type, "OrderPlaced")) {
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
            char *zkey = proj_keyf("%s:orders", key);
            fn_zadd(b, zkey, proj_unix_seconds(at, &secs) == 0 ? secs : 0, order);
            free(zkey);
        }
    } else if (!strcmp(ev->type, "OrderCancelled")) {
        fn_hincrby(b, key, "cancelled", 1);
        fn_hincrby(b, key, "revenue", proj_neg(proj_money(d, "total")));
        fn_hincrby(b, key, "units", proj_neg(proj_int(d, "units")));
    } else if (!strcmp(ev->type, "ReturnRecorded")) {
        fn_hincrby(b, key, "returns", 1);
        fn_hincrby(b, key, "returns_value", proj_money(d, "total"));
    }
    free(key);
}

const struct fn_projection proj_customer = {
    .name = PROJ_CUSTOMER,
    .version = PROJ_CUSTOMER_V,
    .types = customer_types,
    .apply = customer_apply,
};
