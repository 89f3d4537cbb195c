/* projections/cart_view.c — the cart read model behind GET /carts/{cart_id}.
 *
 * Keys (relative to "cart_view:v1:"):
 *   cart:<cart_id>          hash cart_id, status (open/checked_out), customer_id,
 *                           country, opened_at, order_id, units, total, and
 *                           abandoned_at while the cart is abandoned (CartAbandoned,
 *                           no change since)
 *   cart:<cart_id>:qty      hash sku -> quantity (sum of the sku's lines)
 *   cart:<cart_id>:amount   hash sku -> amount in thousandths (sum of the lines)
 *   cart:<cart_id>:desc     hash sku -> description of the last line added
 *   cart:<cart_id>:price    hash sku -> unit price (thousandths) of the last line
 *   cart:<cart_id>:prices   zset (all scores 0) of "<sku>\x1f<unit price>": the
 *                           distinct prices of each sku's lines, by lexical range
 *
 * Invariants: units and total equal the sums of :qty and :amount; a sku is in
 * all per-sku hashes and :prices or in none (ItemRemoved drops every line of
 * the sku); customer_id and country are absent for a guest or an unknown
 * country. The query shows a unit price only when all of a sku's lines have
 * one price (skus hold no control characters, so \x1f separates).
 */
#include "keys.h"

#include <inttypes.h>

/* The cart hash key of the event, or NULL (caller frees) for an event
 * without a cart id, which no handler projects. */
static char *cart_key(const struct fn_event *ev)
{
    const char *cart = proj_opt(ev->data, "cart_id");
    return cart ? proj_key("cart:", cart, "") : NULL;
}

static int cart_opened(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    (void)e;
    const json_t *d = ev->data;
    char *key = cart_key(ev);
    if (!key)
        return 0;
    const char *customer = proj_opt(d, "customer_id");
    const char *country = proj_opt(d, "country");
    const char *at = proj_str(d, "occurred_at");
    fn_hset(b, key, "cart_id", proj_str(d, "cart_id"));
    fn_hset(b, key, "status", "open");
    if (customer)
        fn_hset(b, key, "customer_id", customer);
    if (country)
        fn_hset(b, key, "country", country);
    if (at)
        fn_hset(b, key, "opened_at", at);
    fn_hincrby(b, key, "units", 0);
    fn_hincrby(b, key, "total", 0);
    free(key);
    return 0;
}

/* The keys of a cart's lines, by sku: hashes qty, amount, desc and price, and
 * the sorted set prices ("<sku>\x1f<price>" members). */
struct line_keys {
    char *qty, *amount, *desc, *price, *prices;
};

static struct line_keys line_keys(const char *cart_key)
{
    return (struct line_keys){fn_asprintf("%s:qty", cart_key), fn_asprintf("%s:amount", cart_key),
                              fn_asprintf("%s:desc", cart_key), fn_asprintf("%s:price", cart_key),
                              fn_asprintf("%s:prices", cart_key)};
}

static void line_keys_free(struct line_keys *k)
{
    free(k->qty);
    free(k->amount);
    free(k->desc);
    free(k->price);
    free(k->prices);
}

static int item_added(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    (void)e;
    const json_t *d = ev->data;
    const char *sku = proj_str(d, "sku");
    char *key = cart_key(ev);
    if (!key || !sku) {
        free(key);
        return 0;
    }
    const char *desc = proj_str(d, "description");
    int64_t qty = proj_int(d, "quantity");
    int64_t amount = proj_money(d, "amount");
    char price[24];
    snprintf(price, sizeof price, "%" PRId64, proj_money(d, "unit_price"));
    struct line_keys k = line_keys(key);
    char *m = fn_asprintf("%s\x1f%s", sku, price);
    fn_zadd(b, k.prices, 0, m);
    fn_hincrby(b, k.qty, sku, qty);
    fn_hincrby(b, k.amount, sku, amount);
    fn_hset(b, k.desc, sku, desc ? desc : "");
    fn_hset(b, k.price, sku, price);
    fn_hincrby(b, key, "units", qty);
    fn_hincrby(b, key, "total", amount);
    fn_hdel(b, key, "abandoned_at"); /* a change: no longer abandoned */
    line_keys_free(&k);
    free(m);
    free(key);
    return 0;
}

static int item_removed(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    (void)e;
    const json_t *d = ev->data;
    const char *sku = proj_str(d, "sku");
    char *key = cart_key(ev);
    if (!key || !sku) {
        free(key);
        return 0;
    }
    struct line_keys k = line_keys(key);
    char *lo = fn_asprintf("[%s\x1f", sku);
    char *hi = fn_asprintf("(%s\x20", sku); /* every "<sku>\x1f..." sorts below */
    fn_zremrangebylex(b, k.prices, lo, hi);
    fn_hdel(b, k.qty, sku);
    fn_hdel(b, k.amount, sku);
    fn_hdel(b, k.desc, sku);
    fn_hdel(b, k.price, sku);
    fn_hincrby(b, key, "units", proj_neg(proj_int(d, "quantity")));
    fn_hincrby(b, key, "total", proj_neg(proj_money(d, "amount")));
    fn_hdel(b, key, "abandoned_at");
    line_keys_free(&k);
    free(lo);
    free(hi);
    free(key);
    return 0;
}

static int cart_checked_out(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    (void)e;
    const char *order = proj_str(ev->data, "order_id");
    char *key = cart_key(ev);
    if (!key)
        return 0;
    fn_hset(b, key, "status", "checked_out");
    if (order)
        fn_hset(b, key, "order_id", order);
    free(key);
    return 0;
}

static int cart_abandoned(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    (void)e;
    const char *at = proj_str(ev->data, "occurred_at");
    char *key = cart_key(ev);
    if (!key)
        return 0;
    fn_hset(b, key, "abandoned_at", at ? at : "");
    free(key);
    return 0;
}

static const struct fn_on_event cart_view_on[] = {
    {EV_CartOpened, cart_opened},
    {EV_ItemAdded, item_added},
    {EV_ItemRemoved, item_removed},
    {EV_CartCheckedOut, cart_checked_out},
    {EV_CartAbandoned, cart_abandoned},
    {NULL, NULL},
};

const struct fn_projection proj_cart_view = {
    .abi = FN_ABI_VERSION,
    .name = PROJ_CART,
    .version = PROJ_CART_V,
    .on = cart_view_on,
};
