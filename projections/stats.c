/* projections/stats.c — shop-wide figures behind GET /stats/summary,
 * /stats/daily and /stats/countries.
 *
 * Keys (relative to "stats:v1:"):
 *   summary                   hash orders, revenue, units, cancelled, returns,
 *                             returns_value
 *   customers                 set of customer ids with at least one order
 *   day:<YYYY-MM-DD>          hash orders, revenue, units, returns, returns_value
 *   country:<name>            hash orders, revenue, returns, returns_value
 *   country:<name>:customers  set of customer ids with an order there
 *   countries                 set of country names having a country hash
 *
 * Invariants: dates are business-time-zone dates (rtime_local_date_of, after
 * rtime_init) of the order's placement or the return; a cancellation subtracts
 * the order's revenue and units on the day and in the country it was placed
 * (from the event's placed_at and country), and adds one to summary
 * `cancelled`, never removing it from `orders`. Guests are in no customer set;
 * orders without a country are in the summary and the days only.
 */
#include "keys.h"

/* The "day:<date>" key for an RFC 3339 time; NULL when t is missing or malformed. */
static char *stats_day_key(const char *t)
{
    char date[11];
    if (!t || rtime_local_date_of(t, date, NULL))
        return NULL;
    return fn_asprintf("day:%s", date);
}

static int order_placed(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    (void)e;
    const json_t *d = ev->data;
    const char *customer = proj_opt(d, "customer_id");
    const char *country = proj_opt(d, "country");
    int64_t total = proj_money(d, "total"), units = proj_int(d, "units");
    char *dkey = stats_day_key(proj_str(d, "occurred_at"));
    fn_hincrby(b, "summary", "orders", 1);
    fn_hincrby(b, "summary", "revenue", total);
    fn_hincrby(b, "summary", "units", units);
    if (dkey) {
        fn_hincrby(b, dkey, "orders", 1);
        fn_hincrby(b, dkey, "revenue", total);
        fn_hincrby(b, dkey, "units", units);
    }
    if (customer)
        fn_sadd(b, "customers", customer);
    if (country) {
        char *ckey = proj_key("country:", country, "");
        fn_sadd(b, "countries", country);
        fn_hincrby(b, ckey, "orders", 1);
        fn_hincrby(b, ckey, "revenue", total);
        if (customer) {
            char *skey = fn_asprintf("%s:customers", ckey);
            fn_sadd(b, skey, customer);
            free(skey);
        }
        free(ckey);
    }
    free(dkey);
    return 0;
}

static int order_cancelled(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    (void)e;
    const json_t *d = ev->data;
    const char *country = proj_opt(d, "country");
    int64_t total = proj_neg(proj_money(d, "total")), units = proj_neg(proj_int(d, "units"));
    char *dkey = stats_day_key(proj_str(d, "placed_at"));
    fn_hincrby(b, "summary", "cancelled", 1);
    fn_hincrby(b, "summary", "revenue", total);
    fn_hincrby(b, "summary", "units", units);
    if (dkey) {
        fn_hincrby(b, dkey, "revenue", total);
        fn_hincrby(b, dkey, "units", units);
    }
    if (country) {
        char *ckey = proj_key("country:", country, "");
        fn_hincrby(b, ckey, "revenue", total);
        free(ckey);
    }
    free(dkey);
    return 0;
}

static int return_recorded(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    (void)e;
    const json_t *d = ev->data;
    const char *country = proj_opt(d, "country");
    int64_t total = proj_money(d, "total");
    char *dkey = stats_day_key(proj_str(d, "occurred_at"));
    fn_hincrby(b, "summary", "returns", 1);
    fn_hincrby(b, "summary", "returns_value", total);
    if (dkey) {
        fn_hincrby(b, dkey, "returns", 1);
        fn_hincrby(b, dkey, "returns_value", total);
    }
    if (country) {
        char *ckey = proj_key("country:", country, "");
        fn_sadd(b, "countries", country);
        fn_hincrby(b, ckey, "returns", 1);
        fn_hincrby(b, ckey, "returns_value", total);
        free(ckey);
    }
    free(dkey);
    return 0;
}

static const struct fn_on_event stats_on[] = {
    {EV_OrderPlaced, order_placed},
    {EV_OrderCancelled, order_cancelled},
    {EV_ReturnRecorded, return_recorded},
    {NULL, NULL},
};

const struct fn_projection proj_stats = {
    .abi = FN_ABI_VERSION,
    .name = PROJ_STATS,
    .version = PROJ_STATS_V,
    .on = stats_on,
};
