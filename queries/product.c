/* queries/product.c — GET /products/{sku} and GET /products/top from the
 * product read model (projections/product.c).
 *
 * Invariants: rankings come from the top:units / top:revenue zsets (ordering
 * only), every figure shown from the product hash; equal scores are ordered
 * by sku ascending (bytewise), also across the page boundary, so the answer
 * is deterministic.
 */
#include "keys.h"

#define PRODUCT_TOP_LIMIT_DEFAULT 10
#define PRODUCT_TOP_LIMIT_MAX 100

/* Sets o's fields from the product hash: description ("" when absent), then
 * with `full` {orders, units, revenue, returned_units, returns_value}, else
 * {units, revenue}. */
static int product_fields(json_t *o, const struct fn_hash *h, int full, struct err *e)
{
    static const struct query_field all[] = {
        {"orders", QUERY_INT},          {"units", QUERY_INT},
        {"revenue", QUERY_MONEY},       {"returned_units", QUERY_INT},
        {"returns_value", QUERY_MONEY},
    };
    const char *d = fn_hash_get(h, "description");
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
    struct fn_hash h;
    const char *sku;
    int rc;

    if ((rc = query_param_id(q, "sku", &sku, e)))
        return rc;
    char *key = proj_key("product:", sku, "");
    rc = fn_hgetall(q, PROJ_PRODUCT, key, &h, e);
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
    return rc;
}

const struct fn_query query_product_get = {
    .abi = FN_ABI_VERSION,
    .name = "product.get",
    .route = "/products/{sku}",
    .run = product_get,
};

/* Score descending, then sku ascending (bytewise). */
static int product_ranked_cmp(const void *a, const void *b)
{
    const struct fn_member *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? 1 : -1;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->member, y->member, n);
    if (c)
        return c;
    return (x->len > y->len) - (x->len < y->len);
}

/* Appends the members of r to v[*n..cap), skipping members already in
 * v[0..had) (a score may change between two reads). */
static void product_collect(const struct fn_members *r, struct fn_member *v, size_t *n,
                            size_t cap)
{
    size_t had = *n;
    for (size_t i = 0; i < r->n && *n < cap; i++) {
        int dup = 0;
        for (size_t j = 0; j < had && !dup; j++)
            dup = v[j].len == r->m[i].len && !memcmp(v[j].member, r->m[i].member, r->m[i].len);
        if (!dup)
            v[(*n)++] = r->m[i];
    }
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
    struct fn_member v[PRODUCT_TOP_LIMIT_MAX];
    struct fn_members r1, r2;
    size_t n = 0;
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
    const char *zkey = !strcmp(by, "units") ? "top:units" : "top:revenue";

    /* 1. the first `limit` by score descending (Redis orders ties by member
     *    descending, hence step 2) */
    if ((rc = fn_zrange(q, PROJ_PRODUCT, zkey, 0, limit - 1, FN_DESC | FN_SCORES, &r1, e)))
        return rc;
    product_collect(&r1, v, &n, (size_t)limit);
    /* 2. when the page is full, the members tied with its last score may
     *    include smaller skus than the ones Redis chose: keep the members
     *    strictly above that score and refill with the tied members in
     *    ascending sku order (ZRANGEBYSCORE orders equal scores by member) */
    if (n == (size_t)limit) {
        int64_t last = v[n - 1].score;
        size_t above = 0;
        while (above < n && v[above].score > last)
            above++;
        n = above;
        if ((rc = fn_zrangebyscore(q, PROJ_PRODUCT, zkey, last, last, 0, limit - (int64_t)above,
                                   &r2, e)))
            return rc;
        product_collect(&r2, v, &n, (size_t)limit);
    }
    qsort(v, n, sizeof *v, product_ranked_cmp);

    /* every product's hash in one round trip */
    struct fn_hash h[PRODUCT_TOP_LIMIT_MAX];
    fn_pipeline_begin(q);
    for (size_t i = 0; i < n; i++) {
        char *key = proj_key("product:", v[i].member, "");
        fn_hgetall(q, PROJ_PRODUCT, key, &h[i], e);
        free(key);
    }
    if ((rc = fn_pipeline_end(q, e)))
        return rc;
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *p = json_object();
        json_object_set_new(p, "sku", json_stringn(v[i].member, v[i].len));
        rc = product_fields(p, &h[i], 0, e);
        json_array_append_new(list, p);
        if (rc) {
            json_decref(list);
            return rc;
        }
    }
    *out = json_pack("{s:s, s:o}", "by", by, "products", list);
    return 0;
}

const struct fn_query query_product_top = {
    .abi = FN_ABI_VERSION,
    .name = "product.top",
    .route = "/products/top",
    .run = product_top,
};
