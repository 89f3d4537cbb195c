/* commands/order.c — the order command functions: order.pay, order.cancel
 * (docs/events.md is the contract).
 *
 * Both share one private state folded by order_evolve from the stream
 * "order-<order_id>", which cart.checkout opens with OrderPlaced; OrderPaid
 * and OrderCancelled follow. Other event types are ignored.
 *
 * Invariants:
 *   - the state keeps what OrderCancelled must copy so projections can
 *     reverse the order: lines (an owned deep copy of OrderPlaced.lines),
 *     units, total, placed_at, customer_id, country;
 *   - money is int64 thousandths; paid_amount is what OrderPaid recorded and
 *     becomes refund_due on cancellation ("0.00" when unpaid);
 *   - an event evolve cannot fold marks the state malformed and decide then
 *     fails with ERR_INTERNAL;
 *   - decide is pure and validates (400, then 404, then 422) before emitting;
 *   - the state owns its strings and lines; order_release frees them.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cqrsd/fn.h>

#include "ecom.h"
#include "events.h"

struct order_state {
    int placed;
    int paid;
    int cancelled;
    char *customer_id;   /* NULL: guest */
    char *country;       /* NULL: unknown */
    char *placed_at;     /* OrderPlaced.occurred_at */
    json_t *lines;       /* owned copy of OrderPlaced.lines */
    int64_t units;
    int64_t total;       /* thousandths */
    int64_t paid_amount; /* thousandths; 0 until paid */
    char bad_type[32];   /* type of the first event evolve could not fold; "" if none */
    int64_t bad_version;
};

static char *dup_or_null(const json_t *v)
{
    return json_is_string(v) ? fn_strdup(json_string_value(v)) : NULL;
}

static void mark_bad(struct order_state *s, const struct fn_event *ev)
{
    if (!s->bad_type[0]) {
        snprintf(s->bad_type, sizeof s->bad_type, "%s", ev->type ? ev->type : "?");
        s->bad_version = ev->version;
    }
}

/* Frees what order_evolve allocated; leaves the state zeroed. */
static void order_release(void *state)
{
    struct order_state *s = state;
    free(s->customer_id);
    free(s->country);
    free(s->placed_at);
    json_decref(s->lines);
    memset(s, 0, sizeof *s);
}

static void fold_placed(struct order_state *s, const struct fn_event *ev)
{
    const json_t *lines = json_object_get(ev->data, "lines");
    const json_t *units = json_object_get(ev->data, "units");
    const json_t *at = json_object_get(ev->data, "occurred_at");
    int64_t total;
    if (s->placed || !json_is_array(lines) || !json_is_integer(units) || !json_is_string(at) ||
        money_parse_wide(json_string_value(json_object_get(ev->data, "total")), &total,
                              NULL)) {
        mark_bad(s, ev);
        return;
    }
    s->placed = 1;
    s->customer_id = dup_or_null(json_object_get(ev->data, "customer_id"));
    s->country = dup_or_null(json_object_get(ev->data, "country"));
    s->placed_at = fn_strdup(json_string_value(at));
    s->lines = json_deep_copy(lines);
    s->units = (int64_t)json_integer_value(units);
    s->total = total;
}

/* Folds one order event into state (struct order_state). */
static void order_evolve(void *state, const struct fn_event *ev)
{
    struct order_state *s = state;
    if (!ev->type || !json_is_object(ev->data)) {
        mark_bad(s, ev);
    } else if (!strcmp(ev->type, EV_OrderPlaced)) {
        fold_placed(s, ev);
    } else if (!strcmp(ev->type, EV_OrderPaid)) {
        if (money_parse_wide(json_string_value(json_object_get(ev->data, "amount")),
                                  &s->paid_amount, NULL))
            mark_bad(s, ev);
        else
            s->paid = 1;
    } else if (!strcmp(ev->type, EV_OrderCancelled)) {
        s->cancelled = 1;
    }
}

/* 0 when the order exists and its stream is sound; ERR_NOT_FOUND / ERR_INTERNAL. */
static int require_order(const struct order_state *s, int64_t version, const char *order_id,
                         struct err *e)
{
    if (s->bad_type[0])
        return err_set(e, ERR_INTERNAL,
                       "order \"%s\" has a malformed %s event at version %" PRId64, order_id,
                       s->bad_type, s->bad_version);
    if (version <= 0 || !s->placed)
        return err_set(e, ERR_NOT_FOUND, "order \"%s\" does not exist", order_id);
    return 0;
}

/* ---------- order.pay ---------- */

/* cmd {order_id, amount: decimal string, occurred_at} -> OrderPaid {order_id,
 * customer_id, amount, occurred_at}. 422 when cancelled, already paid, or
 * amount differs from the order total. */
static int pay_decide(const void *state, int64_t version, const json_t *cmd, struct fn_decision *d,
                      struct err *e)
{
    const struct order_state *s = state;
    const char *order_id;
    char at[RTIME_BUFSZ];
    int64_t amount;
    int rc;
    if ((rc = ecom_id(cmd, "order_id", &order_id, e)) || (rc = ecom_occurred_at(cmd, at, e)) ||
        (rc = ecom_money_field(cmd, "amount", "", &amount, e)) ||
        (rc = require_order(s, version, order_id, e)))
        return rc;
    if (s->cancelled)
        return err_set(e, ERR_REJECTED, "cannot pay order \"%s\": it is cancelled", order_id);
    if (s->paid)
        return err_set(e, ERR_REJECTED, "cannot pay order \"%s\": it is already paid", order_id);
    if (amount != s->total) {
        char a[MONEY_BUFSZ], t[MONEY_BUFSZ];
        return err_set(e, ERR_REJECTED,
                       "cannot pay order \"%s\": amount %s does not equal its total %s", order_id,
                       money_format(amount, a), money_format(s->total, t));
    }
    json_t *data = json_object();
    json_object_set_new(data, "order_id", json_string(order_id));
    json_object_set_new(data, "customer_id", ecom_string_or_null(s->customer_id));
    json_object_set_new(data, "amount", ecom_money_json(amount));
    json_object_set_new(data, "occurred_at", json_string(at));
    fn_emit(d, EV_OrderPaid, data);
    return 0;
}

const struct fn_command order_pay = {
    .abi = FN_ABI_VERSION,
    .name = "order.pay",
    .method = "POST",
    .route = "/orders/{order_id}/payments",
    .category = "order",
    .id_field = "order_id",
    .creates = 0,
    .state_size = sizeof(struct order_state),
    .evolve = order_evolve,
    .decide = pay_decide,
    .release = order_release,
    .fields = (const char *const[]){"amount", NULL},
};

/* ---------- order.cancel ---------- */

/* Emits OrderCancelled for order_id from s (reason stolen, may be NULL) and
 * sets the reply's refund_due: what was paid, "0.00" when unpaid. */
static void emit_cancelled(const struct order_state *s, const char *order_id, json_t *reason,
                           const char *at, struct fn_decision *d)
{
    int64_t refund = s->paid ? s->paid_amount : 0;
    json_t *data = json_object();
    json_object_set_new(data, "order_id", json_string(order_id));
    json_object_set_new(data, "customer_id", ecom_string_or_null(s->customer_id));
    json_object_set_new(data, "country", ecom_string_or_null(s->country));
    json_object_set_new(data, "lines", json_deep_copy(s->lines));
    json_object_set_new(data, "units", json_integer((json_int_t)s->units));
    json_object_set_new(data, "total", ecom_money_json(s->total));
    json_object_set_new(data, "placed_at", json_string(s->placed_at));
    json_object_set_new(data, "refund_due", ecom_money_json(refund));
    json_object_set_new(data, "reason", reason ? reason : json_null());
    json_object_set_new(data, "occurred_at", json_string(at));
    fn_emit(d, EV_OrderCancelled, data);
    fn_reply_set(d, "refund_due", ecom_money_json(refund));
}

/* cmd {order_id, reason?: string|null, occurred_at} -> OrderCancelled
 * {order_id, customer_id, country, lines, units, total, placed_at,
 * refund_due, reason, occurred_at}; reply {refund_due}. 422 when already
 * cancelled. */
static int cancel_decide(const void *state, int64_t version, const json_t *cmd,
                         struct fn_decision *d, struct err *e)
{
    const struct order_state *s = state;
    const char *order_id;
    char at[RTIME_BUFSZ];
    json_t *reason = NULL;
    int rc;
    if ((rc = ecom_id(cmd, "order_id", &order_id, e)) || (rc = ecom_occurred_at(cmd, at, e)) ||
        (rc = ecom_opt_string(cmd, "reason", &reason, e)))
        return rc;
    if (reason && json_string_length(reason) > ECOM_MAX_DESCRIPTION) {
        rc = err_set(e, ERR_INVALID, "reason is %zu bytes long, more than %d",
                     json_string_length(reason), ECOM_MAX_DESCRIPTION);
        json_decref(reason);
        return rc;
    }
    if ((rc = require_order(s, version, order_id, e))) {
        json_decref(reason);
        return rc;
    }
    if (s->cancelled) {
        json_decref(reason);
        return err_set(e, ERR_REJECTED, "cannot cancel order \"%s\": it is already cancelled",
                       order_id);
    }
    emit_cancelled(s, order_id, reason, at, d);
    return 0;
}

const struct fn_command order_cancel = {
    .abi = FN_ABI_VERSION,
    .name = "order.cancel",
    .method = "POST",
    .route = "/orders/{order_id}/cancel",
    .category = "order",
    .id_field = "order_id",
    .creates = 0,
    .state_size = sizeof(struct order_state),
    .evolve = order_evolve,
    .decide = cancel_decide,
    .release = order_release,
    .fields = (const char *const[]){"reason", NULL},
};

/* ---------- order.expire (internal: the order.payment_timeout timer's) ---------- */

/* cmd {order_id, occurred_at} -> OrderCancelled {..., refund_due "0.00",
 * reason "not paid in time"} when the order is still unpaid; 422 when it is
 * paid or already cancelled (then there is nothing to do), 404 when it does
 * not exist. */
static int expire_decide(const void *state, int64_t version, const json_t *cmd,
                         struct fn_decision *d, struct err *e)
{
    const struct order_state *s = state;
    const char *order_id;
    char at[RTIME_BUFSZ];
    int rc;
    if ((rc = ecom_id(cmd, "order_id", &order_id, e)) || (rc = ecom_occurred_at(cmd, at, e)) ||
        (rc = require_order(s, version, order_id, e)))
        return rc;
    if (s->cancelled)
        return err_set(e, ERR_REJECTED, "order \"%s\" is already cancelled", order_id);
    if (s->paid)
        return err_set(e, ERR_REJECTED, "order \"%s\" is paid: it does not expire", order_id);
    emit_cancelled(s, order_id, json_string("not paid in time"), at, d);
    return 0;
}

const struct fn_command order_expire = {
    .abi = FN_ABI_VERSION,
    .name = "order.expire",
    .category = "order",
    .id_field = "order_id",
    .creates = 0,
    .state_size = sizeof(struct order_state),
    .evolve = order_evolve,
    .decide = expire_decide,
    .release = order_release,
    .fields = (const char *const[]){NULL},
};
