/* projections/cart_view.c — the cart read model behind GET /carts/{cart_id}.
 *
 * Keys (relative to "cart_view:v1:"):
 *   cart:<cart_id>          hash cart_id, status (open/checked_out), customer_id,
 *                           country, opened_at, order_id, units, total
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
#include "projections/keys.h"

#include <inttypes.h>

static const char *const cart_view_types[] = {"CartOpened", "ItemAdded", "ItemRemoved",
                                              "CartCheckedOut", NULL};

static void cart_view_apply(struct fn_batch *b, const struct fn_event *ev)
{
    const json_t *d = ev->data;
    const char *cart = proj_str(d, "cart_id");
    if (!cart || !*cart)
        return;
    char *key = proj_key("cart:", cart, "");

    if (!strcmp(ev->type, "CartOpened")) {
        const char *customer = proj_opt(d, "customer_id");
        const char *country = proj_opt(d, "country");
        const char *at = proj_str(d, "occurred_at");
        fn_hset(b, key, "cart_id", cart);
        fn_hset(b, key, "status", "open");
        if (customer)
            fn_hset(b, key, "customer_id", customer);
        if (country)
            fn_hset(b, key, "country", country);
        if (at)
            fn_hset(b, key, "opened_at", at);
        fn_hincrby(b, key, "units", 0);
        fn_hincrby(b, key, "total", 0);
    } else if (!strcmp(ev->type, "ItemAdded")) {
        const char *sku = proj_str(d, "sku");
        if (sku) {
            const char *desc = proj_str(d, "description");
            int64_t qty = proj_int(d, "quantity");
            int64_t amount = proj_money(d, "amount");
            char price[24];
            snprintf(price, sizeof price, "%" PRId64, proj_money(d, "unit_price"));
            char *kq = proj_keyf("%s:qty", key), *ka = proj_keyf("%s:amount", key);
            char *kd = proj_keyf("%s:desc", key), *kp = proj_keyf("%s:price", key);
            char *kl = proj_keyf("%s:prices", key), *m = proj_keyf("%s\x1f%s", sku, price);
            fn_zadd(b, kl, 0, m);
            free(kl);
            free(m);
            fn_hincrby(b, kq, sku, qty);
            fn_hincrby(b, ka, sku, amount);
            fn_hset(b, kd, sku, desc ? desc : "");
            fn_hset(b, kp, sku, price);
            fn_hincrby(b, key, "units", qty);
            fn_hincrby(b, key, "total", amount);
            free(kq);
            free(ka);
            free(kd);
            free(kp);
        }
    } else if (!strcmp(ev->type, "ItemRemoved")) {
        const char *sku = proj_str(d, "sku");
        if (sku) {
            char *kq = proj_keyf("%s:qty", key), *ka = proj_keyf("%s:amount", key);
            char *kd = proj_keyf("%s:desc", key), *kp = proj_keyf("%s:price", key);
            char *kl = proj_keyf("%s:prices", key), *lo = proj_keyf("[%s\x1f", sku);
            char *hi = proj_keyf("(%s\x20", sku); /* every "<sku>\x1f..." sorts below */
            fn_zremrangebylex(b, kl, lo, hi);
            free(kl);
            free(lo);
            free(hi);
            fn_hdel(b, kq, sku);
            fn_hdel(b, ka, sku);
            fn_hdel(b, kd, sku);
            fn_hdel(b, kp, sku);
            fn_hincrby(b, key, "units", proj_neg(proj_int(d, "quantity")));
            fn_hincrby(b, key, "total", proj_neg(proj_money(d, "amount")));
            free(kq);
            free(ka);
            free(kd);
            free(kp);
        }
    } else if (!strcmp(ev->type, "CartCheckedOut")) {
        const char *order = proj_str(d, "order_id");
        fn_hset(b, key, "status", "checked_out");
        if (order)
            fn_hset(b, key, "order_id", order);
    }
    free(key);
}

const struct fn_projection proj_cart_view = {
    .name = PROJ_CART,
    .version = PROJ_CART_V,
    .types = cart_view_types,
    .apply = cart_view_apply,
};
