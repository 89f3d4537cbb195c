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

/* Reads order_view's placed_at of the one order in m (the first or the last
 * of the customer's zset) into *at (in a pipeline: filled at its end); none
 * when m is empty. */
static int customer_order_time(struct fn_query_ctx *q, const struct fn_members *m,
                               const char **at, struct err *e)
{
    static const char *const field = "placed_at";
    *at = NULL;
    if (m->n != 1)
        return 0;
    char *okey = proj_key("order:", m->m[0].member, "");
    int rc = fn_hmget(q, PROJ_ORDER, okey, 1, &field, at, e);
    free(okey);
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
    zkey = proj_key("customer:", id, ":orders");
    /* the customer, its first and its last order: one round trip; then
     * when those orders were placed: another */
    struct fn_members edge[2];
    fn_pipeline_begin(q);
    fn_hgetall(q, PROJ_CUSTOMER, key, &h, e);
    fn_zrange(q, PROJ_CUSTOMER, zkey, 0, 0, 0, &edge[0], e);
    fn_zrange(q, PROJ_CUSTOMER, zkey, 0, 0, FN_DESC, &edge[1], e);
    rc = fn_pipeline_end(q, e);
    free(key);
    if (rc)
        goto done;
    if (h.n == 0) {
        rc = err_set(e, ERR_NOT_FOUND, "no customer \"%.200s\"", id);
        goto done;
    }
    fn_pipeline_begin(q);
    customer_order_time(q, &edge[0], &first, e);
    customer_order_time(q, &edge[1], &last, e);
    if ((rc = fn_pipeline_end(q, e)))
        goto done;
    if (first && !*first)
        first = NULL;
    if (last && !*last)
        last = NULL;

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

/* Reads order_view's status, total and placed_at of the order into f (in a
 * pipeline: filled at its end). */
static int customer_order_fields(struct fn_query_ctx *q, const struct fn_member *member,
                                 const char *f[3], struct err *e)
{
    static const char *const fields[] = {"status", "total", "placed_at"};
    char *okey = proj_key("order:", member->member, "");
    int rc = fn_hmget(q, PROJ_ORDER, okey, 3, fields, f, e);
    free(okey);
    return rc;
}

/* One order of the list: `{order_id, status, total, placed_at}` from its
 * fields f (customer_order_fields), nulls while order_view lags. Sets *out
 * (new reference). */
static int customer_order_entry(const struct fn_member *member, const char *const f[3],
                                json_t **out, struct err *e)
{
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
    char *key = proj_key("customer:", id, "");
    json_t *list = json_array();
    const char *(*f)[3] = NULL;
    struct fn_members m;
    int exists;
    /* the page, its count and whether the customer exists: one round trip */
    fn_pipeline_begin(q);
    fn_zcard(q, PROJ_CUSTOMER, zkey, &count, e);
    fn_exists(q, PROJ_CUSTOMER, key, &exists, e);
    fn_zrange(q, PROJ_CUSTOMER, zkey, offset, offset + limit - 1, FN_DESC, &m, e);
    if ((rc = fn_pipeline_end(q, e)))
        goto done;
    if (count == 0 && !exists) {
        rc = err_set(e, ERR_NOT_FOUND, "no customer \"%.200s\"", id);
        goto done;
    }
    /* every order's fields: one round trip */
    f = calloc(m.n + 1, sizeof *f);
    if (!f)
        abort();
    fn_pipeline_begin(q);
    for (size_t i = 0; i < m.n; i++)
        customer_order_fields(q, &m.m[i], f[i], e);
    if ((rc = fn_pipeline_end(q, e)))
        goto done;
    for (size_t i = 0; i < m.n; i++) {
        json_t *entry = NULL;
        if ((rc = customer_order_entry(&m.m[i], f[i], &entry, e)))
            goto done;
        json_array_append_new(list, entry);
    }
    *out = json_pack("{s:s, s:I, s:O}", "customer_id", id, "total", (json_int_t)count, "orders",
                     list);
done:
    json_decref(list);
    free(f);
    free(zkey);
    free(key);
    return rc;
}

const struct fn_query query_customer_orders = {
    .abi = FN_ABI_VERSION,
    .name = "customer.orders",
    .route = "/customers/{customer_id}/orders",
    .run = customer_orders,
};
