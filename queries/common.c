/* queries/common.c — helpers every query shares (declared in
 * projections/keys.h): hash fields as reply fields,
 * parameter validation.
 *
 * Invariants: no stored value is trusted: every stored integer is parsed
 * strictly, so a missing, partly written or foreign read model yields zeros,
 * 404 or a 500 problem, never a crash. (The platform's typed reads check the
 * shape of every Redis reply.)
 */
#include "keys.h"

#include <inttypes.h>

int query_put_int(json_t *o, const struct fn_hash *h, const char *field, struct err *e)
{
    int64_t v;
    int rc = fn_hash_int(h, field, &v, e);
    if (!rc)
        json_object_set_new(o, field, json_integer((json_int_t)v));
    return rc;
}

int query_put_money(json_t *o, const struct fn_hash *h, const char *field, struct err *e)
{
    int64_t v;
    int rc = fn_hash_int(h, field, &v, e);
    if (!rc)
        json_object_set_new(o, field, query_money(v));
    return rc;
}

void query_put_str(json_t *o, const struct fn_hash *h, const char *field)
{
    const char *v = fn_hash_get(h, field);
    json_object_set_new(o, field, v && *v ? json_string(v) : json_null());
}

int query_put_fields(json_t *o, const struct fn_hash *h, const struct query_field *f, size_t n,
                     struct err *e)
{
    for (size_t i = 0; i < n; i++) {
        int rc = 0;
        switch (f[i].kind) {
        case QUERY_INT:
            rc = query_put_int(o, h, f[i].name, e);
            break;
        case QUERY_MONEY:
            rc = query_put_money(o, h, f[i].name, e);
            break;
        case QUERY_STR:
            query_put_str(o, h, f[i].name);
            break;
        }
        if (rc)
            return rc;
    }
    return 0;
}

json_t *query_money(int64_t thousandths)
{
    char buf[MONEY_BUFSZ];
    return json_string(money_format(thousandths, buf));
}

int query_param_id(const struct fn_query_ctx *q, const char *name, const char **out,
                   struct err *e)
{
    const char *v = fn_param(q, name);
    if (!v || !*v)
        return err_set(e, ERR_INVALID, "parameter \"%s\" is required", name);
    *out = v;
    return 0;
}

int query_param_int(const struct fn_query_ctx *q, const char *name, int64_t def, int64_t min,
                    int64_t max, int64_t *out, struct err *e)
{
    const char *v = fn_param(q, name);
    int64_t n;
    if (!v) {
        *out = def;
        return 0;
    }
    if (*v < '0' || *v > '9' || fn_parse_int(v, strlen(v), &n) || n < min || n > max)
        return err_set(e, ERR_INVALID,
                       "invalid value \"%.40s\" for parameter \"%s\": expected an integer from "
                       "%" PRId64 " to %" PRId64,
                       v, name, min, max);
    *out = n;
    return 0;
}

