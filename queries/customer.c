/* queries/customer.c — GET /customers/{customer_id} and
 * GET /customers/{customer_id}/orders from the customer read model
 * (projections/customer.c), joined with order_view for each order's status,
 * total and placement time.
 *
 * Invariants: a customer exists once the customer projection has a hash for
 * it (an order or a return); the order list is the customer's zset, newest
 * placement first (ties: greater order id first), so `total` equals the
 * customer's `orders`. Figures of an order that order_view has not projected
 * yet are null, never guessed.
 */
#include "keys.h"

#define CUSTOMER_ORDERS_LIMIT_DEFAULT 20
#define CUSTOMER_ORDERS_LIMIT_MAX 100
#define CUSTOMER_ORDERS_OFFSET_MAX 1000000000

/* Sets *out to order_view's placed_at of the order at the start (rev = 0) or
 * the end (rev = 1) of the customer's zset (borrowed from the query's arena),
 * or NULL when the zset is empty or the order is not in order_view yet. */
static int customer_edge_order_time(struct fn_query_ctx *q, const char *zkey, int rev,
                                    const char **out, struct err *e)
{
    struct fn_members m;
    *out = NULL;
    int rc = fn_zrange(q, PROJ_CUSTOMER, zkey, 0, 0, rev ? FN_DESC : 0, &m, e);
    if (rc || m.n != 1)
        return rc;
    char *okey = proj_key("order:", m.m[0].member, "");
    const char *field = "placed_at", *at = NULL;
    rc = fn_hmget(q, PROJ_ORDER, okey, 1, &field, &at, e);
    free(okey);
    if (!rc && at && *at)
        *out = at;
    return rc;
}

/*
 * customer.get: `{customer_id, orders, revenue, units, cancelled, returns,
 * returns_value, first_order_at|null, last_order_at|null}`; money as decimal
 * strings. first/last_order_at are the placed_at of the customer's earliest
 * and latest orders by placement time (falling back to the projection's
 * fields, first/last in event order, while order_view lags). Errors:
 * ERR_INVALID, ERR_NOT_FOUND (`no customer "<id>"`), ERR_UNAVAILABLE,
 * ERR_INTERNAL. *out is a new reference owned by the caller.
 */
static int customer_get(struct fn_query_ctx *q, json_t **out, struct err *e)
{
    static const struct query_field fields[] = {
        {"orders", QUERY_INT},   {"revenue", QUERY_MONEY}, {"units", QUERY_INT},
        {"cancelled", QUERY_INT}, {"returns", QUERY_INT},  {"returns_value", QUERY_MONEY},
    };
    struct fn_hash h;
    const char *id, *first = NULL, *last = NULL;
    char *zkey = NULL;
    json_t *o = NULL;
    int rc;

    if ((rc = query_param_id(q, "customer_id", &id, e)))
        return rc;
    char *key = proj_key("customer:", id, "");
    rc = fn_hgetall(q, PROJ_CUSTOMER, key, &h, e);
    free(key);
    if (rc)
        return rc;
    if (h.n == 0)
        return err_set(e, ERR_NOT_FOUND, "no customer \"%.200s\"", id);
    zkey = proj_key("customer:", id, ":orders");
    if ((rc = customer_edge_order_time(q, zkey, 0, &first, e)) ||
        (rc = customer_edge_order_time(q, zkey, 1, &last, e)))
        goto done;

    o = json_object();
    json_object_set_new(o, "customer_id", json_string(id));
    if ((rc = query_put_fields(o, &h, fields, sizeof fields / sizeof *fields, e)))
        goto done;
    if (first)
        json_object_set_new(o, "first_order_at", json_string(first));
    else
        query_put_str(o, &h, "first_order_at");
    if (last)
        json_object_set_new(o, "last_order_at", json_string(last));
    else
        query_put_str(o, &h, "last_order_at");
    *out = o;
    o = NULL;
done:
    json_decref(o);
    free(zkey);
    return rc;
}

const struct fn_query query_customer_get = {
    .abi = FN_ABI_VERSION,
    .name = "customer.get",
    .route = "/customers/{customer_id}",
    .run = customer_get,
};

/* One order of the list: `{order_id, status, total, placed_at}` from
 * order_view, nulls while order_view lags. Sets *out (new reference). */
static int customer_order_entry(struct fn_query_ctx *q, const struct fn_member *member,
                                json_t **out, struct err *e)
{
    static const char *const fields[] = {"status", "total", "placed_at"};
    const char *f[3];
    char *okey = proj_key("order:", member->member, "");
    int rc = fn_hmget(q, PROJ_ORDER, okey, 3, fields, f, e);
    free(okey);
    if (rc)
        return rc;
    int64_t total;
    if (f[1] && fn_parse_int(f[1], strlen(f[1]), &total))
        return err_set(e, ERR_INTERNAL, "order \"%.200s\" holds a malformed total",
                       member->member);
    json_t *o = json_object();
    json_object_set_new(o, "order_id", json_stringn(member->member, member->len));
    json_object_set_new(o, "status", f[0] ? json_string(f[0]) : json_null());
    json_object_set_new(o, "total", f[1] ? query_money(total) : json_null());
    json_object_set_new(o, "placed_at", f[2] ? json_string(f[2]) : json_null());
    *out = o;
    return 0;
}

/*
 * customer.orders: `{customer_id, total, orders: [{order_id, status|null,
 * total|null, placed_at|null}]}`, newest first; query parameters limit
 * (1..100, default 20) and offset (0..1e9, default 0); total counts all the
 * customer's orders. Errors: ERR_INVALID (bad limit/offset), ERR_NOT_FOUND
 * (`no customer "<id>"`), ERR_UNAVAILABLE, ERR_INTERNAL. *out is a new
 * reference owned by the caller.
 */
static int customer_orders(struct fn_query_ctx *q, json_t **out, struct err *e)
{
    const char *id;
    int64_t limit, offset, count;
    int rc;

    if ((rc = query_param_id(q, "customer_id", &id, e)) ||
        (rc = query_param_int(q, "limit", CUSTOMER_ORDERS_LIMIT_DEFAULT, 1,
                              CUSTOMER_ORDERS_LIMIT_MAX, &limit, e)) ||
        (rc = query_param_int(q, "offset", 0, 0, CUSTOMER_ORDERS_OFFSET_MAX, &offset, e)))
        return rc;
    char *zkey = proj_key("customer:", id, ":orders");
    json_t *list = json_array();
    if ((rc = fn_zcard(q, PROJ_CUSTOMER, zkey, &count, e)))
        goto done;
    if (count == 0) {
        char *key = proj_key("customer:", id, "");
        int exists;
        rc = fn_exists(q, PROJ_CUSTOMER, key, &exists, e);
        free(key);
        if (!rc && !exists)
            rc = err_set(e, ERR_NOT_FOUND, "no customer \"%.200s\"", id);
        if (rc)
            goto done;
    }
    if (offset < count) {
        struct fn_members m;
        if ((rc = fn_zrange(q, PROJ_CUSTOMER, zkey, offset, offset + limit - 1, FN_DESC, &m, e)))
            goto done;
        for (size_t i = 0; i < m.n; i++) {
            json_t *entry = NULL;
            if ((rc = customer_order_entry(q, &m.m[i], &entry, e)))
                goto done;
            json_array_append_new(list, entry);
        }
    }
    *out = json_pack("{s:s, s:I, s:O}", "customer_id", id, "total", (json_int_t)count, "orders",
                     list);
done:
    json_decref(list);
    free(zkey);
    return rc;
}

const struct fn_query query_customer_orders = {
    .abi = FN_ABI_VERSION,
    .name = "customer.orders",
    .route = "/customers/{customer_id}/orders",
    .run = customer_orders,
};
