/* reactors/cart_abandonment.c — the cart.abandonment timer: a cart left
 * unchanged for the delay (default 24 hours, CQRSD_FN_CART_ABANDONMENT_DELAY_S)
 * and not checked out gets CartAbandoned, for the shop to remind the
 * customer.
 *
 * Every change of the cart (CartOpened, ItemAdded, ItemRemoved) starts its
 * timer again, with the cart's version in the payload; CartCheckedOut stops
 * it. The fire issues cart.abandon with that version, which records
 * CartAbandoned only if the cart is still at it: a change just before the
 * fire makes cart.abandon answer 422, and nothing happens.
 */
#include <cqrsd/fn.h>

#include "../commands/events.h"

static const char *cart_of(const struct fn_event *ev)
{
    const char *id = json_string_value(json_object_get(ev->data, "cart_id"));
    return id && *id ? id : NULL;
}

/* A change: the cart is idle from this version on. */
static int changed(struct fn_react *r, const struct fn_event *ev, struct err *e)
{
    (void)e;
    const char *cart = cart_of(ev);
    if (cart)
        fn_timer_start(r, cart, json_pack("{s:s, s:I}", "cart_id", cart, "version",
                                          (json_int_t)ev->version));
    return 0;
}

static int checked_out(struct fn_react *r, const struct fn_event *ev, struct err *e)
{
    (void)e;
    const char *cart = cart_of(ev);
    if (cart)
        fn_timer_stop(r, cart);
    return 0;
}

static int fire(struct fn_react *r, const struct fn_timer_due *t, struct err *e)
{
    const char *cart = json_string_value(json_object_get(t->payload, "cart_id"));
    const json_t *version = json_object_get(t->payload, "version");
    if (!cart || !json_is_integer(version))
        return err_set(e, ERR_INVALID, "the timer of \"%s\" has no cart_id or version", t->key);
    fn_issue(r, "cart.abandon", json_pack("{s:s, s:I}", "cart_id", cart, "idle_since_version",
                                          json_integer_value(version)));
    return 0;
}

static const struct fn_on_react on[] = {
    {EV_CartOpened, changed},
    {EV_ItemAdded, changed},
    {EV_ItemRemoved, changed},
    {EV_CartCheckedOut, checked_out},
    {NULL, NULL},
};

const struct fn_timer timer_cart_abandonment = {
    .abi = FN_ABI_VERSION,
    .name = "cart.abandonment",
    .delay_s = 24 * 60 * 60,
    .on = on,
    .fire = fire,
};
