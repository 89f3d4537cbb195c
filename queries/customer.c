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
#include "projections/keys.h"

#define CUSTOMER_ORDERS_LIMIT_DEFAULT 20
#define CUSTOMER_ORDERS_LIMIT_MAX 100
#define CUSTOMER_ORDERS_OFFSET_MAX 1000000000

/* Sets *out to order_view's placed_at of the order at the start (rev = 0) or
 * the end (rev = 1) of the customer's zset: a new string the caller frees, or
 * NULL when the zset is empty or the order is not in order_view yet. */
static int customer_edge_order_time(struct fn_query_ctx *q, const char *zkey, int rev, char **out,
                                    struct err *e)
{
    redisReply *r, *t;
    *out = NULL;
    int rc = query_exec(q, QUERY_WANT(REDIS_REPLY_ARRAY), &r, e, 4,
                        (const char *[]){rev ? "ZREVRANGE" : "ZRANGE", zkey, "0", "0"});
    if (rc)
        return rc;
    if (r->elements != 1 || !r->element[0] || r->element[0]->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        return 0;
    }
    char *okey = query_key(PROJ_ORDER, PROJ_ORDER_V, "order:", r->element[0]->str, "");
    freeReplyObject(r);
    rc = query_exec(q, QUERY_WANT(REDIS_REPLY_STRING) | QUERY_WANT(REDIS_REPLY_NIL), &t, e, 3,
                    (const char *[]){"HGET", okey, "placed_at"});
    free(okey);
    if (rc)
        return rc;
    if (t->type == REDIS_REPLY_STRING && t->str && *t->str) {
        *out = strdup(t->str);
        if (!*out)
            abort();
    }
    freeReplyObject(t);
    return 0;
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
    struct query_hash h;
    const char *id;
    char *zkey = NULL, *first = NULL, *last = NULL;
    json_t *o = NULL;
    int rc;

    if ((rc = query_param_id(q, "customer_id", &id, e)))
        return rc;
    char *key = query_key(PROJ_CUSTOMER, PROJ_CUSTOMER_V, "customer:", id, "");
    rc = query_hgetall(q, key, &h, e);
    free(key);
    if (rc)
        goto done;
    if (h.n == 0) {
        rc = err_set(e, ERR_NOT_FOUND, "no customer \"%.200s\"", id);
        goto done;
    }
    zkey = query_key(PROJ_CUSTOMER, PROJ_CUSTOMER_V, "customer:", id, ":orders");
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
    free(first);
    free(last);
    query_hash_free(&h);
    return rc;
}

const struct fn_query query_customer_get = {
    .name = "customer.get",
    .route = "/customers/{customer_id}",
    .run = customer_get,
};

/* One order of the list: `{order_id, status, total, placed_at}` from
 * order_view, nulls while order_view lags. Sets *out (new reference). */
static int customer_order_entry(struct fn_query_ctx *q, const redisReply *member, json_t **out,
                                struct err *e)
{
    redisReply *r;
    char *okey = query_key(PROJ_ORDER, PROJ_ORDER_V, "order:", member->str, "");
    int rc = query_exec(q, QUERY_WANT(REDIS_REPLY_ARRAY), &r, e, 5,
                        (const char *[]){"HMGET", okey, "status", "total", "placed_at"});
    free(okey);
    if (rc)
        return rc;
    const redisReply *f[3] = {NULL, NULL, NULL};
    for (size_t i = 0; i < 3 && i < r->elements; i++)
        if (r->element[i] && r->element[i]->type == REDIS_REPLY_STRING)
            f[i] = r->element[i];
    json_t *o = json_object();
    json_object_set_new(o, "order_id", json_stringn(member->str, member->len));
    json_object_set_new(o, "status", f[0] ? json_stringn(f[0]->str, f[0]->len) : json_null());
    int64_t total;
    if (f[1] && query_parse_i64(f[1]->str, f[1]->len, &total)) {
        rc = err_set(e, ERR_INTERNAL, "order \"%.200s\" holds a malformed total", member->str);
        json_decref(o);
        freeReplyObject(r);
        return rc;
    }
    json_object_set_new(o, "total", f[1] ? query_money(total) : json_null());
    json_object_set_new(o, "placed_at", f[2] ? json_stringn(f[2]->str, f[2]->len) : json_null());
    freeReplyObject(r);
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
    char *zkey = NULL;
    redisReply *r = NULL;
    json_t *o = NULL, *list = NULL;
    int rc;

    if ((rc = query_param_id(q, "customer_id", &id, e)) ||
        (rc = query_param_int(q, "limit", CUSTOMER_ORDERS_LIMIT_DEFAULT, 1,
                              CUSTOMER_ORDERS_LIMIT_MAX, &limit, e)) ||
        (rc = query_param_int(q, "offset", 0, 0, CUSTOMER_ORDERS_OFFSET_MAX, &offset, e)))
        return rc;
    zkey = query_key(PROJ_CUSTOMER, PROJ_CUSTOMER_V, "customer:", id, ":orders");
    if ((rc = query_exec(q, QUERY_WANT(REDIS_REPLY_INTEGER), &r, e, 2,
                         (const char *[]){"ZCARD", zkey})))
        goto done;
    count = (int64_t)r->integer;
    freeReplyObject(r);
    r = NULL;
    if (count == 0) {
        char *key = query_key(PROJ_CUSTOMER, PROJ_CUSTOMER_V, "customer:", id, "");
        rc = query_exec(q, QUERY_WANT(REDIS_REPLY_INTEGER), &r, e, 2,
                        (const char *[]){"EXISTS", key});
        free(key);
        if (rc)
            goto done;
        if (r->integer == 0) {
            rc = err_set(e, ERR_NOT_FOUND, "no customer \"%.200s\"", id);
            goto done;
        }
        freeReplyObject(r);
        r = NULL;
    }

    list = json_array();
    if (offset < count) {
        char start[24], stop[24];
        snprintf(start, sizeof start, "%lld", (long long)offset);
        snprintf(stop, sizeof stop, "%lld", (long long)(offset + limit - 1));
        if ((rc = query_exec(q, QUERY_WANT(REDIS_REPLY_ARRAY), &r, e, 4,
                             (const char *[]){"ZREVRANGE", zkey, start, stop})))
            goto done;
        for (size_t i = 0; i < r->elements; i++) {
            const redisReply *m = r->element[i];
            json_t *entry = NULL;
            if (!m || m->type != REDIS_REPLY_STRING) {
                rc = err_set(e, ERR_INTERNAL, "redis answered ZREVRANGE on key \"%.200s\" with "
                             "a non-string member", zkey);
                goto done;
            }
            if ((rc = customer_order_entry(q, m, &entry, e)))
                goto done;
            json_array_append_new(list, entry);
        }
    }

    o = json_object();
    json_object_set_new(o, "customer_id", json_string(id));
    json_object_set_new(o, "total", json_integer((json_int_t)count));
    json_object_set(o, "orders", list);
    *out = o;
    o = NULL;
done:
    if (r)
        freeReplyObject(r);
    json_decref(o);
    json_decref(list);
    free(zkey);
    return rc;
}

const struct fn_query query_customer_orders = {
    .name = "customer.orders",
    .route = "/customers/{customer_id}/orders",
    .run = customer_orders,
};
