/* queries/product.c — GET /products/{sku} and GET /products/top from the
 * product read model (projections/product.c).
 *
 * Invariants: rankings come from the top:units / top:revenue zsets (ordering
 * only), every figure shown from the product hash; equal scores are ordered
 * by sku ascending (bytewise), also across the page boundary, so the answer
 * is deterministic.
 */
#include "projections/keys.h"

#define PRODUCT_TOP_LIMIT_DEFAULT 10
#define PRODUCT_TOP_LIMIT_MAX 100

/* Sets o's fields from the product hash: description ("" when absent), then
 * with `full` {orders, units, revenue, returned_units, returns_value}, else
 * {units, revenue}. */
static int product_fields(json_t *o, const struct query_hash *h, int full, struct err *e)
{
    static const struct query_field all[] = {
        {"orders", QUERY_INT},          {"units", QUERY_INT},
        {"revenue", QUERY_MONEY},       {"returned_units", QUERY_INT},
        {"returns_value", QUERY_MONEY},
    };
    const char *d = query_hash_get(h, "description");
    json_object_set_new(o, "description", json_string(d ? d : ""));
    return full ? query_put_fields(o, h, all, sizeof all / sizeof *all, e)
                : query_put_fields(o, h, all + 1, 2, e);
}

/*
 * product.get: `{sku, description, orders, units, revenue, returned_units,
 * returns_value}`; money as decimal strings. Errors: ERR_INVALID,
 * ERR_NOT_FOUND (`no product "<sku>"`), ERR_UNAVAILABLE, ERR_INTERNAL.
 * *out is a new reference owned by the caller.
 */
static int product_get(struct fn_query_ctx *q, json_t **out, struct err *e)
{
    struct query_hash h;
    const char *sku;
    int rc;

    if ((rc = query_param_id(q, "sku", &sku, e)))
        return rc;
    char *key = query_key(PROJ_PRODUCT, PROJ_PRODUCT_V, "product:", sku, "");
    rc = query_hgetall(q, key, &h, e);
    free(key);
    if (!rc && h.n == 0)
        rc = err_set(e, ERR_NOT_FOUND, "no product \"%.200s\"", sku);
    if (!rc) {
        json_t *o = json_object();
        json_object_set_new(o, "sku", json_string(sku));
        if ((rc = product_fields(o, &h, 1, e)))
            json_decref(o);
        else
            *out = o;
    }
    query_hash_free(&h);
    return rc;
}

const struct fn_query query_product_get = {
    .name = "product.get",
    .route = "/products/{sku}",
    .run = product_get,
};

/* A ranked member: borrowed from a zset reply. */
struct product_ranked {
    const redisReply *sku;
    int64_t score; /* the projection adds integers only, exact below 2^53 */
};

/* Score descending, then sku ascending (bytewise). */
static int product_ranked_cmp(const void *a, const void *b)
{
    const struct product_ranked *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? 1 : -1;
    size_t n = x->sku->len < y->sku->len ? x->sku->len : y->sku->len;
    int c = memcmp(x->sku->str, y->sku->str, n);
    if (c)
        return c;
    return (x->sku->len > y->sku->len) - (x->sku->len < y->sku->len);
}

/* Checks a WITHSCORES reply and appends its members to v[*n..cap), skipping
 * members already in v (a score may change between two reads). */
static int product_collect(const redisReply *r, const char *zkey, struct product_ranked *v,
                           size_t *n, size_t cap, struct err *e)
{
    size_t had = *n;
    if (r->elements % 2)
        return err_set(e, ERR_INTERNAL, "redis answered a range of \"%.200s\" with %zu elements",
                       zkey, r->elements);
    for (size_t i = 0; i + 1 < r->elements && *n < cap; i += 2) {
        const redisReply *m = r->element[i], *s = r->element[i + 1];
        if (!m || !s || m->type != REDIS_REPLY_STRING || s->type != REDIS_REPLY_STRING)
            return err_set(e, ERR_INTERNAL, "redis answered a range of \"%.200s\" with a "
                           "non-string element", zkey);
        int64_t d;
        if (query_parse_i64(s->str, s->len, &d))
            return err_set(e, ERR_INTERNAL, "zset \"%.200s\" holds the score \"%.40s\"", zkey,
                           s->str);
        int dup = 0;
        for (size_t j = 0; j < had && !dup; j++)
            dup = v[j].sku->len == m->len && !memcmp(v[j].sku->str, m->str, m->len);
        if (dup)
            continue;
        v[*n].sku = m;
        v[*n].score = d;
        (*n)++;
    }
    return 0;
}

/*
 * product.top: `{by, products: [{sku, description, units, revenue}]}`, the
 * `limit` products (1..100, default 10) with the most net units sold (by=units,
 * the default) or net revenue (by=revenue), ties by sku ascending; money as
 * decimal strings. Errors: ERR_INVALID (by not units/revenue, bad limit),
 * ERR_UNAVAILABLE, ERR_INTERNAL. *out is a new reference owned by the caller.
 */
static int product_top(struct fn_query_ctx *q, json_t **out, struct err *e)
{
    const char *by = fn_param(q, "by");
    int64_t limit;
    redisReply *r1 = NULL, *r2 = NULL;
    struct product_ranked v[PRODUCT_TOP_LIMIT_MAX];
    size_t n = 0;
    char *zkey = NULL, stop[24], count[24];
    json_t *o = NULL, *list = NULL;
    int rc;

    if (!by)
        by = "units";
    if (strcmp(by, "units") && strcmp(by, "revenue"))
        return err_set(e, ERR_INVALID,
                       "invalid value \"%.40s\" for parameter \"by\": expected units or revenue",
                       by);
    if ((rc = query_param_int(q, "limit", PRODUCT_TOP_LIMIT_DEFAULT, 1, PRODUCT_TOP_LIMIT_MAX,
                              &limit, e)))
        return rc;
    zkey = fn_key(PROJ_PRODUCT, PROJ_PRODUCT_V, !strcmp(by, "units") ? "top:units" : "top:revenue");

    /* 1. the first `limit` by score descending (Redis orders ties by member
     *    descending, hence step 2) */
    snprintf(stop, sizeof stop, "%lld", (long long)(limit - 1));
    if ((rc = query_exec(q, QUERY_WANT(REDIS_REPLY_ARRAY), &r1, e, 5,
                         (const char *[]){"ZREVRANGE", zkey, "0", stop, "WITHSCORES"})) ||
        (rc = product_collect(r1, zkey, v, &n, (size_t)limit, e)))
        goto done;
    /* 2. when the page is full, the members tied with its last score may
     *    include smaller skus than the ones Redis chose: keep the members
     *    strictly above that score and refill with the tied members in
     *    ascending sku order (ZRANGEBYSCORE orders equal scores by member) */
    if (n == (size_t)limit) {
        const redisReply *last = r1->element[2 * n - 1];
        size_t above = 0;
        while (above < n && v[above].score > v[n - 1].score)
            above++;
        n = above;
        snprintf(count, sizeof count, "%zu", (size_t)limit - above);
        if ((rc = query_exec(q, QUERY_WANT(REDIS_REPLY_ARRAY), &r2, e, 8,
                             (const char *[]){"ZRANGEBYSCORE", zkey, last->str, last->str,
                                              "WITHSCORES", "LIMIT", "0", count})) ||
            (rc = product_collect(r2, zkey, v, &n, (size_t)limit, e)))
            goto done;
    }
    qsort(v, n, sizeof *v, product_ranked_cmp);

    list = json_array();
    for (size_t i = 0; i < n; i++) {
        struct query_hash h;
        char *key = query_key(PROJ_PRODUCT, PROJ_PRODUCT_V, "product:", v[i].sku->str, "");
        rc = query_hgetall(q, key, &h, e);
        free(key);
        if (!rc) {
            json_t *p = json_object();
            json_object_set_new(p, "sku", json_stringn(v[i].sku->str, v[i].sku->len));
            rc = product_fields(p, &h, 0, e);
            json_array_append_new(list, p);
        }
        query_hash_free(&h);
        if (rc)
            goto done;
    }
    o = json_object();
    json_object_set_new(o, "by", json_string(by));
    json_object_set(o, "products", list);
    *out = o;
    o = NULL;
done:
    if (r1)
        freeReplyObject(r1);
    if (r2)
        freeReplyObject(r2);
    json_decref(o);
    json_decref(list);
    free(zkey);
    return rc;
}

const struct fn_query query_product_top = {
    .name = "product.top",
    .route = "/products/top",
    .run = product_top,
};
