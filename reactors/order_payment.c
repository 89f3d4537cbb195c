/* reactors/order_payment.c — the order.payment_timeout timer: an order not
 * paid within the delay (default 30 minutes, CQRSD_FN_ORDER_PAYMENT_TIMEOUT_DELAY_S)
 * after it was placed is cancelled.
 *
 * OrderPlaced starts the timer of the order; OrderPaid and OrderCancelled
 * stop it. When it fires it issues order.expire, which cancels the order
 * only if it is still unpaid: a payment recorded just before the fire (its
 * stop not handled yet) makes order.expire answer 422, and nothing happens.
 */
#include <cqrsd/fn.h>

#include "../commands/events.h"

static const char *order_of(const struct fn_event *ev)
{
    const char *id = json_string_value(json_object_get(ev->data, "order_id"));
    return id && *id ? id : NULL;
}

/* OrderPlaced: start the timer of the order, payload {order_id}. */
static int placed(struct fn_react *r, const struct fn_event *ev, struct err *e)
{
    (void)e;
    const char *order = order_of(ev);
    if (order)
        fn_timer_start(r, order, json_pack("{s:s}", "order_id", order));
    return 0;
}

/* OrderPaid, OrderCancelled: nothing left to wait for. */
static int settled(struct fn_react *r, const struct fn_event *ev, struct err *e)
{
    (void)e;
    const char *order = order_of(ev);
    if (order)
        fn_timer_stop(r, order);
    return 0;
}

static int fire(struct fn_react *r, const struct fn_timer_due *t, struct err *e)
{
    const char *order = json_string_value(json_object_get(t->payload, "order_id"));
    if (!order)
        return err_set(e, ERR_INVALID, "the timer of \"%s\" has no order_id", t->key);
    fn_issue(r, "order.expire", json_pack("{s:s}", "order_id", order));
    return 0;
}

static const struct fn_on_react on[] = {
    {EV_OrderPlaced, placed},
    {EV_OrderPaid, settled},
    {EV_OrderCancelled, settled},
    {NULL, NULL},
};

const struct fn_timer timer_order_payment = {
    .abi = FN_ABI_VERSION,
    .name = "order.payment_timeout",
    .delay_s = 30 * 60,
    .on = on,
    .fire = fire,
};
