/* projections/keys.h — what projections/ and queries/ share: the name and
 * version of every read model (so both build the same keys), the small pure
 * helpers projections use to read event data, and the helpers of
 * queries/common.c that every query uses to read Redis.
 *
 * Read-model semantics shared by all projections (docs/events.md):
 *   - money is int64 thousandths, written with HINCRBY only;
 *   - `orders` counts orders placed; a cancellation leaves it alone and adds
 *     one to `cancelled`, while `revenue` and `units` are net of cancelled
 *     orders (reversed on the day and in the country of placement); the
 *     write-only batch has no SREM/ZREM, so sets (customers) and an order
 *     list keep cancelled orders too, consistently with `orders`;
 *   - a null or empty customer_id is a guest: counted in orders and revenue,
 *     never in customers; a null or empty country counts in no country;
 *   - money fields of an event that are not decimal strings count as 0 (the
 *     commands validate them; a projection cannot fail);
 *   - an id (cart, order, customer, sku, country) inside a key is escaped with
 *     proj_key: ':' becomes "%3A" and '%' becomes "%25", so no client-chosen
 *     id ("17850:orders") can reach another key or type (a WRONGTYPE error
 *     would stall the projection); ids without those characters, i.e. all
 *     real ones, appear verbatim as docs/events.md shows. Set members hold
 *     the ids unescaped.
 *
 * Out-of-memory aborts the process, as everywhere in the platform.
 * This header sees the platform only through <cqrsd/fn.h>.
 */
#ifndef CQRSD_PROJECTIONS_KEYS_H
#define CQRSD_PROJECTIONS_KEYS_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cqrsd/fn.h>

#include "../commands/events.h"

/* ---------- read-model names and versions (key prefix "<name>:v<version>:") */

#define PROJ_CART "cart_view"
#define PROJ_CART_V 1
#define PROJ_ORDER "order_view"
#define PROJ_ORDER_V 1
#define PROJ_CUSTOMER "customer"
#define PROJ_CUSTOMER_V 1
#define PROJ_PRODUCT "product"
#define PROJ_PRODUCT_V 1
#define PROJ_STATS "stats"
#define PROJ_STATS_V 1

/* ---------- projection helpers (pure; no I/O) ---------- */

/* "<prefix><id escaped><suffix>" (see the escaping rule above); caller frees.
 * Aborts when out of memory. */
static inline char *proj_key(const char *prefix, const char *id, const char *suffix)
{
    size_t lp = strlen(prefix), li = strlen(id), ls = strlen(suffix), extra = 0;
    for (const char *c = id; *c; c++)
        extra += (*c == ':' || *c == '%') ? 2 : 0;
    char *s = malloc(lp + li + extra + ls + 1), *w;
    if (!s)
        abort();
    memcpy(s, prefix, lp);
    w = s + lp;
    for (const char *c = id; *c; c++) {
        if (*c == ':' || *c == '%') {
            *w++ = '%';
            *w++ = *c == ':' ? '3' : '2';
            *w++ = *c == ':' ? 'A' : '5';
        } else {
            *w++ = *c;
        }
    }
    memcpy(w, suffix, ls + 1);
    return s;
}

/* The string member k of object o; NULL when absent, null or not a string.
 * Borrowed from o. */
static inline const char *proj_str(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Like proj_str, but an empty string is NULL too (guest customer, no country). */
static inline const char *proj_opt(const json_t *o, const char *k)
{
    const char *s = proj_str(o, k);
    return s && *s ? s : NULL;
}

/* The integer member k of o; 0 when absent or not an integer. */
static inline int64_t proj_int(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

/* -v, saturated at INT64_MAX for INT64_MIN (which no valid event holds). */
static inline int64_t proj_neg(int64_t v)
{
    return v == INT64_MIN ? INT64_MAX : -v;
}

/* Parses an event's decimal money string ("-12.5", "0.001") into thousandths
 * over the whole int64 range (order totals may exceed money_parse's input
 * limit). Returns 0, or -1 when s is not such a string or overflows. */
static inline int proj_money_parse(const char *s, int64_t *out)
{
    return money_parse_wide(s, out, NULL) ? -1 : 0;
}

/* The money member k of o in thousandths; 0 when absent or malformed. */
static inline int64_t proj_money(const json_t *o, const char *k)
{
    int64_t v;
    return proj_money_parse(proj_str(o, k), &v) == 0 ? v : 0;
}

/* Sets *secs to the Unix seconds (floor) of an RFC 3339 time. Returns 0, or
 * -1 when t is NULL or malformed. */
static inline int proj_unix_seconds(const char *t, int64_t *secs)
{
    int64_t us;
    int off;
    if (!t || rtime_parse(t, &us, &off, NULL))
        return -1;
    *secs = us / 1000000 - (us % 1000000 < 0);
    return 0;
}

/* ---------- query helpers (queries/common.c) ---------- */

/* Longest range /stats/daily answers, in days (both ends included). */
#define QUERY_DAILY_MAX_DAYS 400

/* Sets o[field] to the hash's integer field as a JSON integer, or as a money
 * string (money_format) for query_put_money. Returns 0 or ERR_INTERNAL. */
int query_put_int(json_t *o, const struct fn_hash *h, const char *field, struct err *e);
int query_put_money(json_t *o, const struct fn_hash *h, const char *field, struct err *e);

/* Sets o[field] to the hash's string field, or null when absent or empty. */
void query_put_str(json_t *o, const struct fn_hash *h, const char *field);

/* A field of a reply object taken from a hash: its name and how it shows. */
enum query_kind {
    QUERY_INT,   /* JSON integer, 0 when absent */
    QUERY_MONEY, /* decimal string (money_format), "0.00" when absent */
    QUERY_STR,   /* string, null when absent or empty */
};
struct query_field {
    const char *name;
    enum query_kind kind;
};

/* Sets o's fields from h, in the order of f[0..n) (replies keep the
 * documented field order). Returns 0 or ERR_INTERNAL (malformed integer). */
int query_put_fields(json_t *o, const struct fn_hash *h, const struct query_field *f, size_t n,
                     struct err *e);

/* A new JSON string with money_format(thousandths). */
json_t *query_money(int64_t thousandths);

/* Route parameter `name`, required and non-empty. Returns 0 and sets *out
 * (borrowed), or ERR_INVALID. */
int query_param_id(const struct fn_query_ctx *q, const char *name, const char **out,
                   struct err *e);

/* Optional integer parameter: def when absent, else digits only with a value
 * in [min, max]. Returns 0 or ERR_INVALID naming the parameter and value. */
int query_param_int(const struct fn_query_ctx *q, const char *name, int64_t def, int64_t min,
                    int64_t max, int64_t *out, struct err *e);

#endif
