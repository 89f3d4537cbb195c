/* projections/product.c — per-product figures behind GET /products/{sku} and
 * the rankings behind GET /products/top.
 *
 * Keys (relative to "product:v1:"):
 *   product:<sku>   hash sku, description, orders, units, revenue,
 *                   returned_units, returns_value
 *   top:units       zset member sku, score net units sold
 *   top:revenue     zset member sku, score net revenue (thousandths)
 *
 * Invariants: an order counts once in `orders` of each sku it holds, however
 * many lines of that sku it has (lines are grouped by sku per event before any
 * write); units and revenue are net of cancelled orders, and the zset scores
 * always move by the same amounts as the hash fields (they are exact below
 * 2^53; the hash is the authoritative figure). Returns touch only
 * returned_units/returns_value, never the rankings. description is the last
 * non-empty description an order or a return gave the sku (the field exists,
 * maybe empty, as soon as the hash does); cancellations leave it alone.
 */
#include "keys.h"

/* One line of an event, for grouping by sku. */
struct product_line {
    const char *sku, *description;
    int64_t quantity, amount;
    size_t pos; /* position in the event, to keep the original order among equals */
};

static int product_line_cmp(const void *a, const void *b)
{
    const struct product_line *x = a, *y = b;
    int c = strcmp(x->sku, y->sku);
    if (c)
        return c;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* The event's lines sorted by sku, then by position; lines without a sku are
 * dropped. Returns a malloc'd array (caller frees) and sets *n. */
static struct product_line *product_lines(const json_t *d, size_t *n)
{
    const json_t *lines = json_object_get(d, "lines");
    size_t total = json_is_array(lines) ? json_array_size(lines) : 0;
    struct product_line *v = malloc((total ? total : 1) * sizeof *v);
    if (!v)
        abort();
    size_t k = 0;
    for (size_t i = 0; i < total; i++) {
        const json_t *l = json_array_get(lines, i);
        const char *sku = proj_str(l, "sku");
        if (!sku)
            continue;
        v[k].sku = sku;
        v[k].description = proj_str(l, "description");
        v[k].quantity = proj_int(l, "quantity");
        v[k].amount = proj_money(l, "amount");
        v[k].pos = i;
        k++;
    }
    qsort(v, k, sizeof *v, product_line_cmp);
    *n = k;
    return v;
}

/* What an event does to the figures of the skus it holds. */
enum product_effect { PRODUCT_PLACED, PRODUCT_CANCELLED, PRODUCT_RETURNED };

static void product_apply(struct fn_batch *b, const struct fn_event *ev, enum product_effect how)
{
    int placed = how == PRODUCT_PLACED, cancelled = how == PRODUCT_CANCELLED;
    size_t n;
    struct product_line *lines = product_lines(ev->data, &n);

    for (size_t i = 0; i < n;) {
        const char *sku = lines[i].sku, *desc = NULL;
        int64_t qty = 0, amount = 0;
        size_t j = i;
        for (; j < n && !strcmp(lines[j].sku, sku); j++) {
            /* saturate: overflow is impossible for events the commands accepted */
            if (__builtin_add_overflow(qty, lines[j].quantity, &qty))
                qty = lines[j].quantity < 0 ? INT64_MIN : INT64_MAX;
            if (__builtin_add_overflow(amount, lines[j].amount, &amount))
                amount = lines[j].amount < 0 ? INT64_MIN : INT64_MAX;
            if (lines[j].description && *lines[j].description)
                desc = lines[j].description;
        }
        i = j;

        char *key = proj_key("product:", sku, "");
        if (!cancelled) { /* a cancellation repeats an old order's descriptions */
            fn_hset(b, key, "sku", sku);
            if (desc)
                fn_hset(b, key, "description", desc);
            else
                fn_hsetnx(b, key, "description", "");
        }
        if (placed) {
            fn_hincrby(b, key, "orders", 1);
            fn_hincrby(b, key, "units", qty);
            fn_hincrby(b, key, "revenue", amount);
            fn_zincrby(b, "top:units", qty, sku);
            fn_zincrby(b, "top:revenue", amount, sku);
        } else if (cancelled) {
            fn_hincrby(b, key, "units", proj_neg(qty));
            fn_hincrby(b, key, "revenue", proj_neg(amount));
            fn_zincrby(b, "top:units", proj_neg(qty), sku);
            fn_zincrby(b, "top:revenue", proj_neg(amount), sku);
        } else {
            fn_hincrby(b, key, "returned_units", qty);
            fn_hincrby(b, key, "returns_value", amount);
        }
        free(key);
    }
    free(lines);
}

static int order_placed(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    (void)e;
    product_apply(b, ev, PRODUCT_PLACED);
    return 0;
}

static int order_cancelled(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    (void)e;
    product_apply(b, ev, PRODUCT_CANCELLED);
    return 0;
}

static int return_recorded(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    (void)e;
    product_apply(b, ev, PRODUCT_RETURNED);
    return 0;
}

static const struct fn_on_event product_on[] = {
    {EV_OrderPlaced, order_placed},
    {EV_OrderCancelled, order_cancelled},
    {EV_ReturnRecorded, return_recorded},
    {NULL, NULL},
};

const struct fn_projection proj_product = {
    .abi = FN_ABI_VERSION,
    .name = PROJ_PRODUCT,
    .version = PROJ_PRODUCT_V,
    .on = product_on,
};
