/* queries/stats.c — GET /stats/summary, /stats/daily and /stats/countries
 * from the stats read model (projections/stats.c).
 *
 * Invariants: stats never 404: what the read model lacks (nothing projected
 * yet, a day without events) reads as zeros; every figure is parsed strictly.
 */
#include "keys.h"

#include <inttypes.h>

#define STATS_NFIELDS(a) (sizeof(a) / sizeof *(a))

/*
 * stats.summary: `{orders, revenue, units, cancelled, returns, returns_value,
 * customers}`; money as decimal strings, customers = customers with at least
 * one order. All zeros before anything is projected. Errors: ERR_UNAVAILABLE,
 * ERR_INTERNAL. *out is a new reference owned by the caller.
 */
static int stats_summary(struct fn_query_ctx *q, json_t **out, struct err *e)
{
    static const struct query_field fields[] = {
        {"orders", QUERY_INT},   {"revenue", QUERY_MONEY}, {"units", QUERY_INT},
        {"cancelled", QUERY_INT}, {"returns", QUERY_INT},  {"returns_value", QUERY_MONEY},
    };
    struct fn_hash h;
    int64_t customers = 0;
    json_t *o = json_object();
    int rc = fn_hgetall(q, PROJ_STATS, "summary", &h, e);
    if (!rc && !(rc = query_put_fields(o, &h, fields, STATS_NFIELDS(fields), e)) &&
        !(rc = fn_scard(q, PROJ_STATS, "customers", &customers, e))) {
        json_object_set_new(o, "customers", json_integer((json_int_t)customers));
        *out = o;
        o = NULL;
    }
    json_decref(o);
    return rc;
}

const struct fn_query query_stats_summary = {
    .abi = FN_ABI_VERSION,
    .name = "stats.summary",
    .route = "/stats/summary",
    .run = stats_summary,
};

/* Reads the required date parameter name into *days. */
static int stats_date_param(const struct fn_query_ctx *q, const char *name, int64_t *days,
                            struct err *e)
{
    const char *v = fn_param(q, name);
    if (!v || !*v)
        return err_set(e, ERR_INVALID, "parameter \"%s\" is required (a date YYYY-MM-DD)", name);
    if (rtime_parse_date(v, days))
        return err_set(e, ERR_INVALID,
                       "invalid value \"%.40s\" for parameter \"%s\": expected a date YYYY-MM-DD",
                       v, name);
    return 0;
}

/*
 * stats.daily: `{from, to, days: [{date, orders, revenue, units, returns,
 * returns_value}]}`, one entry per business-time-zone day from `from` to `to`
 * inclusive (both required, real dates YYYY-MM-DD, from <= to, at most
 * QUERY_DAILY_MAX_DAYS days), zeros for days without events. Errors:
 * ERR_INVALID, ERR_UNAVAILABLE, ERR_INTERNAL. *out is a new reference owned
 * by the caller.
 */
static int stats_daily(struct fn_query_ctx *q, json_t **out, struct err *e)
{
    static const struct query_field fields[] = {
        {"orders", QUERY_INT},  {"revenue", QUERY_MONEY},       {"units", QUERY_INT},
        {"returns", QUERY_INT}, {"returns_value", QUERY_MONEY},
    };
    int64_t from, to;
    int rc;

    if ((rc = stats_date_param(q, "from", &from, e)) || (rc = stats_date_param(q, "to", &to, e)))
        return rc;
    if (from > to)
        return err_set(e, ERR_INVALID, "invalid range: from %s is after to %s",
                       fn_param(q, "from"), fn_param(q, "to"));
    if (to - from + 1 > QUERY_DAILY_MAX_DAYS)
        return err_set(e, ERR_INVALID,
                       "invalid range: %" PRId64 " days from %s to %s, at most %d allowed",
                       to - from + 1, fn_param(q, "from"), fn_param(q, "to"),
                       QUERY_DAILY_MAX_DAYS);

    /* every day's hash in one round trip */
    size_t ndays = (size_t)(to - from + 1);
    struct fn_hash *h = calloc(ndays, sizeof *h);
    if (!h)
        abort();
    fn_pipeline_begin(q);
    for (size_t i = 0; i < ndays; i++) {
        char date[11], rel[16];
        rtime_format_date(from + (int64_t)i, date);
        snprintf(rel, sizeof rel, "day:%s", date);
        fn_hgetall(q, PROJ_STATS, rel, &h[i], e);
    }
    if ((rc = fn_pipeline_end(q, e))) {
        free(h);
        return rc;
    }
    json_t *days = json_array();
    for (size_t i = 0; i < ndays && !rc; i++) {
        char date[11];
        rtime_format_date(from + (int64_t)i, date);
        json_t *d = json_object();
        json_object_set_new(d, "date", json_string(date));
        rc = query_put_fields(d, &h[i], fields, STATS_NFIELDS(fields), e);
        json_array_append_new(days, d);
    }
    free(h);
    if (rc) {
        json_decref(days);
        return rc;
    }
    json_t *o = json_object();
    json_object_set_new(o, "from", json_string(fn_param(q, "from")));
    json_object_set_new(o, "to", json_string(fn_param(q, "to")));
    json_object_set_new(o, "days", days);
    *out = o;
    return 0;
}

const struct fn_query query_stats_daily = {
    .abi = FN_ABI_VERSION,
    .name = "stats.daily",
    .route = "/stats/daily",
    .run = stats_daily,
};

/* One country's figures, kept for sorting. */
struct stats_country {
    const char *name; /* borrowed from the query's arena */
    size_t len;
    int64_t revenue;
    json_t *o;
};

/* Revenue descending, then name ascending (bytewise). */
static int stats_country_cmp(const void *a, const void *b)
{
    const struct stats_country *x = a, *y = b;
    if (x->revenue != y->revenue)
        return x->revenue < y->revenue ? 1 : -1;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->name, y->name, n);
    if (c)
        return c;
    return (x->len > y->len) - (x->len < y->len);
}

/*
 * stats.countries: `{countries: [{country, orders, revenue, returns,
 * returns_value, customers}]}`, sorted by revenue descending then country
 * name ascending; money as decimal strings. Errors: ERR_UNAVAILABLE,
 * ERR_INTERNAL. *out is a new reference owned by the caller.
 */
static int stats_countries(struct fn_query_ctx *q, json_t **out, struct err *e)
{
    static const struct query_field fields[] = {
        {"orders", QUERY_INT},
        {"revenue", QUERY_MONEY},
        {"returns", QUERY_INT},
        {"returns_value", QUERY_MONEY},
    };
    struct fn_members m;
    int rc = fn_smembers(q, PROJ_STATS, "countries", &m, e);
    if (rc)
        return rc;
    struct stats_country *v = calloc(m.n + 1, sizeof *v);
    struct fn_hash *h = calloc(m.n + 1, sizeof *h);
    int64_t *customers = calloc(m.n + 1, sizeof *customers);
    size_t n = 0;
    if (!v || !h || !customers)
        abort();
    /* every country's hash and customer count in one round trip */
    fn_pipeline_begin(q);
    for (size_t i = 0; i < m.n; i++) {
        char *ckey = proj_key("country:", m.m[i].member, "");
        char *rel = proj_key("country:", m.m[i].member, ":customers");
        fn_hgetall(q, PROJ_STATS, ckey, &h[i], e);
        fn_scard(q, PROJ_STATS, rel, &customers[i], e);
        free(ckey);
        free(rel);
    }
    rc = fn_pipeline_end(q, e);
    for (size_t i = 0; i < m.n && !rc; i++) {
        const char *name = m.m[i].member;
        rc = fn_hash_int(&h[i], "revenue", &v[n].revenue, e);
        if (!rc) {
            json_t *o = json_object();
            json_object_set_new(o, "country", json_stringn(name, m.m[i].len));
            v[n].name = name;
            v[n].len = m.m[i].len;
            v[n].o = o;
            n++;
            if (!(rc = query_put_fields(o, &h[i], fields, STATS_NFIELDS(fields), e)))
                json_object_set_new(o, "customers", json_integer((json_int_t)customers[i]));
        }
    }
    if (!rc) {
        qsort(v, n, sizeof *v, stats_country_cmp);
        json_t *list = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append(list, v[i].o);
        *out = json_pack("{s:o}", "countries", list);
    }
    for (size_t i = 0; i < n; i++)
        json_decref(v[i].o);
    free(v);
    free(h);
    free(customers);
    return rc;
}

const struct fn_query query_stats_countries = {
    .abi = FN_ABI_VERSION,
    .name = "stats.countries",
    .route = "/stats/countries",
    .run = stats_countries,
};
