/* commands/cart.c — the cart command functions: cart.open, cart.add_item,
 * cart.remove_item, cart.checkout (docs/events.md is the contract).
 *
 * All four share one private state, folded by cart_evolve from the cart
 * stream "cart-<cart_id>" (CartOpened, ItemAdded, ItemRemoved,
 * CartCheckedOut; other types are ignored).
 *
 * Invariants:
 *   - lines are kept in the order they were added, repeated skus included;
 *     ItemRemoved drops every line of its sku;
 *   - units and total are the exact sums of the lines (int64 thousandths for
 *     money); add_item refuses an item that would overflow the total, so a
 *     sound stream never overflows;
 *   - an event evolve cannot fold (missing field, bad money) marks the state
 *     malformed and every decide then fails with ERR_INTERNAL rather than
 *     deciding on a wrong state;
 *   - decide is pure: it validates (400, then 422 value rules, then 404, then
 *     422 state rules) and only then emits; it never changes the state;
 *   - the state owns its strings and lines; cart_release frees them.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cqrsd/fn.h>

#include "ecom.h"
#include "events.h"

/* One line of the cart, owned by the state. */
struct cart_line {
    char *sku;
    char *description; /* "" when the item had none */
    int64_t quantity;
    int64_t unit_price; /* thousandths */
    int64_t amount;     /* thousandths, quantity * unit_price */
};

struct cart_state {
    int opened;
    int checked_out;
    char *customer_id;       /* NULL: guest */
    char *country;           /* NULL: unknown */
    struct cart_line *lines; /* n used of cap, in the order added */
    size_t n, cap;
    int64_t units;           /* sum of quantities */
    int64_t total;           /* sum of amounts, thousandths */
    int abandoned;           /* CartAbandoned, and no change since */
    char last_change_at[RTIME_BUFSZ]; /* occurred_at of the last open, add or remove */
    char bad_type[32];       /* type of the first event evolve could not fold; "" if none */
    int64_t bad_version;
};

static char *dup_or_null(const json_t *v)
{
    return json_is_string(v) ? fn_strdup(json_string_value(v)) : NULL;
}

static void free_line(struct cart_line *l)
{
    free(l->sku);
    free(l->description);
}

static void mark_bad(struct cart_state *s, const struct fn_event *ev)
{
    if (!s->bad_type[0]) {
        snprintf(s->bad_type, sizeof s->bad_type, "%s", ev->type ? ev->type : "?");
        s->bad_version = ev->version;
    }
}

/* Recomputes units and total from the lines; 0 or -1 on overflow. */
static int recount(struct cart_state *s)
{
    int64_t units = 0, total = 0;
    for (size_t i = 0; i < s->n; i++)
        if (__builtin_add_overflow(units, s->lines[i].quantity, &units) ||
            __builtin_add_overflow(total, s->lines[i].amount, &total))
            return -1;
    s->units = units;
    s->total = total;
    return 0;
}

static void fold_item_added(struct cart_state *s, const struct fn_event *ev)
{
    const json_t *sku = json_object_get(ev->data, "sku");
    const json_t *desc = json_object_get(ev->data, "description");
    const json_t *qty = json_object_get(ev->data, "quantity");
    struct cart_line l = {0};
    if (!json_is_string(sku) || !json_is_integer(qty) ||
        money_parse_wide(json_string_value(json_object_get(ev->data, "unit_price")),
                              &l.unit_price, NULL) ||
        money_parse_wide(json_string_value(json_object_get(ev->data, "amount")), &l.amount,
                              NULL)) {
        mark_bad(s, ev);
        return;
    }
    l.quantity = (int64_t)json_integer_value(qty);
    int64_t units, total;
    if (__builtin_add_overflow(s->units, l.quantity, &units) ||
        __builtin_add_overflow(s->total, l.amount, &total)) {
        mark_bad(s, ev);
        return;
    }
    s->units = units;
    s->total = total;
    l.sku = fn_strdup(json_string_value(sku));
    l.description = fn_strdup(json_is_string(desc) ? json_string_value(desc) : "");
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->lines = ecom_realloc(s->lines, s->cap * sizeof *s->lines);
    }
    s->lines[s->n++] = l;
}

static void fold_item_removed(struct cart_state *s, const struct fn_event *ev)
{
    const char *sku = json_string_value(json_object_get(ev->data, "sku"));
    if (!sku) {
        mark_bad(s, ev);
        return;
    }
    size_t kept = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (!strcmp(s->lines[i].sku, sku))
            free_line(&s->lines[i]);
        else
            s->lines[kept++] = s->lines[i];
    }
    s->n = kept;
    if (recount(s))
        mark_bad(s, ev);
}

/* A change of the cart's contents: it is not abandoned, and idle from then. */
static void note_change(struct cart_state *s, const struct fn_event *ev)
{
    const char *at = json_string_value(json_object_get(ev->data, "occurred_at"));
    s->abandoned = 0;
    snprintf(s->last_change_at, sizeof s->last_change_at, "%s", at ? at : "");
}

/* Folds one cart event into state (struct cart_state). */
static void cart_evolve(void *state, const struct fn_event *ev)
{
    struct cart_state *s = state;
    if (!ev->type || !json_is_object(ev->data)) {
        mark_bad(s, ev);
    } else if (!strcmp(ev->type, EV_CartOpened)) {
        free(s->customer_id);
        free(s->country);
        s->opened = 1;
        s->customer_id = dup_or_null(json_object_get(ev->data, "customer_id"));
        s->country = dup_or_null(json_object_get(ev->data, "country"));
        note_change(s, ev);
    } else if (!strcmp(ev->type, EV_ItemAdded)) {
        fold_item_added(s, ev);
        note_change(s, ev);
    } else if (!strcmp(ev->type, EV_ItemRemoved)) {
        fold_item_removed(s, ev);
        note_change(s, ev);
    } else if (!strcmp(ev->type, EV_CartCheckedOut)) {
        s->checked_out = 1;
    } else if (!strcmp(ev->type, EV_CartAbandoned)) {
        s->abandoned = 1;
    }
}

/* Frees what cart_evolve allocated; leaves the state zeroed. */
static void cart_release(void *state)
{
    struct cart_state *s = state;
    for (size_t i = 0; i < s->n; i++)
        free_line(&s->lines[i]);
    free(s->lines);
    free(s->customer_id);
    free(s->country);
    memset(s, 0, sizeof *s);
}

/* 0 when the cart exists and its stream is sound; ERR_NOT_FOUND / ERR_INTERNAL. */
static int require_cart(const struct cart_state *s, int64_t version, const char *cart_id,
                        struct err *e)
{
    if (s->bad_type[0])
        return err_set(e, ERR_INTERNAL,
                       "cart \"%s\" has a malformed %s event at version %" PRId64, cart_id,
                       s->bad_type, s->bad_version);
    if (version <= 0 || !s->opened)
        return err_set(e, ERR_NOT_FOUND, "cart \"%s\" does not exist", cart_id);
    return 0;
}

/* ---------- cart.open ---------- */

/* cmd {cart_id, customer_id?: string|null, country?: string|null, occurred_at}
 * -> CartOpened. ERR_CONFLICT when the cart stream already exists. */
static int open_decide(const void *state, int64_t version, const json_t *cmd,
                       struct fn_decision *d, struct err *e)
{
    (void)state;
    const char *cart_id;
    char at[RTIME_BUFSZ];
    json_t *customer = NULL, *country = NULL;
    int rc;
    if ((rc = ecom_id(cmd, "cart_id", &cart_id, e)) || (rc = ecom_occurred_at(cmd, at, e)) ||
        (rc = ecom_opt_string(cmd, "customer_id", &customer, e)))
        return rc;
    if ((rc = ecom_opt_string(cmd, "country", &country, e))) {
        json_decref(customer);
        return rc;
    }
    if (version > 0) {
        json_decref(customer);
        json_decref(country);
        return err_set(e, ERR_CONFLICT, "cart \"%s\" already exists", cart_id);
    }
    json_t *data = json_object();
    json_object_set_new(data, "cart_id", json_string(cart_id));
    json_object_set_new(data, "customer_id", customer);
    json_object_set_new(data, "country", country);
    json_object_set_new(data, "occurred_at", json_string(at));
    fn_emit(d, EV_CartOpened, data);
    fn_reply_set(d, "cart_id", json_string(cart_id));
    return 0;
}

const struct fn_command cart_open = {
    .abi = FN_ABI_VERSION,
    .name = "cart.open",
    .method = "POST",
    .route = "/carts",
    .category = "cart",
    .id_field = "cart_id",
    .creates = 1,
    .state_size = sizeof(struct cart_state),
    .evolve = cart_evolve,
    .decide = open_decide,
    .release = cart_release,
    .fields = (const char *const[]){"customer_id", "country", NULL},
};

/* ---------- cart.add_item ---------- */

/* cmd {cart_id, sku, description?, quantity, unit_price, occurred_at}
 * -> ItemAdded {cart_id, sku, description, quantity, unit_price, amount, occurred_at}. */
static int add_item_decide(const void *state, int64_t version, const json_t *cmd,
                           struct fn_decision *d, struct err *e)
{
    const struct cart_state *s = state;
    const char *cart_id;
    char at[RTIME_BUFSZ];
    struct ecom_line l;
    int rc;
    if ((rc = ecom_id(cmd, "cart_id", &cart_id, e)) || (rc = ecom_occurred_at(cmd, at, e)) ||
        (rc = ecom_line_parse(cmd, "", &l, e)) || (rc = ecom_line_check(&l, "", e)) ||
        (rc = require_cart(s, version, cart_id, e)))
        return rc;
    if (s->checked_out)
        return err_set(e, ERR_REJECTED, "cannot add to cart \"%s\": it is checked out", cart_id);
    if (s->n >= ECOM_MAX_LINES)
        return err_set(e, ERR_REJECTED, "cannot add to cart \"%s\": it already has %d lines",
                       cart_id, ECOM_MAX_LINES);
    int64_t total;
    if (money_add(s->total, l.amount, &total, NULL))
        return err_set(e, ERR_REJECTED, "cannot add to cart \"%s\": its total would be too large",
                       cart_id);
    json_t *data = json_object();
    json_object_set_new(data, "cart_id", json_string(cart_id));
    json_object_set_new(data, "sku", json_string(l.sku));
    json_object_set_new(data, "description", json_string(l.description));
    json_object_set_new(data, "quantity", json_integer((json_int_t)l.quantity));
    json_object_set_new(data, "unit_price", ecom_money_json(l.unit_price));
    json_object_set_new(data, "amount", ecom_money_json(l.amount));
    json_object_set_new(data, "occurred_at", json_string(at));
    fn_emit(d, EV_ItemAdded, data);
    return 0;
}

const struct fn_command cart_add_item = {
    .abi = FN_ABI_VERSION,
    .name = "cart.add_item",
    .method = "POST",
    .route = "/carts/{cart_id}/items",
    .category = "cart",
    .id_field = "cart_id",
    .creates = 0,
    .state_size = sizeof(struct cart_state),
    .evolve = cart_evolve,
    .decide = add_item_decide,
    .release = cart_release,
    .fields = (const char *const[]){"sku", "description", "quantity", "unit_price", NULL},
};

/* ---------- cart.remove_item ---------- */

/* cmd {cart_id, sku, occurred_at} -> ItemRemoved {cart_id, sku, quantity,
 * amount, occurred_at}: the sums over every line of sku. */
static int remove_item_decide(const void *state, int64_t version, const json_t *cmd,
                              struct fn_decision *d, struct err *e)
{
    const struct cart_state *s = state;
    const char *cart_id, *sku;
    char at[RTIME_BUFSZ];
    int rc;
    if ((rc = ecom_id(cmd, "cart_id", &cart_id, e)) || (rc = ecom_id(cmd, "sku", &sku, e)) ||
        (rc = ecom_occurred_at(cmd, at, e)))
        return rc;
    if (strlen(sku) > ECOM_MAX_SKU)
        return err_set(e, ERR_INVALID, "sku is %zu bytes long, more than %d", strlen(sku),
                       ECOM_MAX_SKU);
    if ((rc = require_cart(s, version, cart_id, e)))
        return rc;
    if (s->checked_out)
        return err_set(e, ERR_REJECTED, "cannot remove from cart \"%s\": it is checked out",
                       cart_id);
    size_t found = 0;
    int64_t quantity = 0, amount = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->lines[i].sku, sku))
            continue;
        found++;
        quantity += s->lines[i].quantity; /* bounded by the state's sums */
        amount += s->lines[i].amount;
    }
    if (!found)
        return err_set(e, ERR_NOT_FOUND, "cart \"%s\" has no item \"%s\"", cart_id, sku);
    json_t *data = json_object();
    json_object_set_new(data, "cart_id", json_string(cart_id));
    json_object_set_new(data, "sku", json_string(sku));
    json_object_set_new(data, "quantity", json_integer((json_int_t)quantity));
    json_object_set_new(data, "amount", ecom_money_json(amount));
    json_object_set_new(data, "occurred_at", json_string(at));
    fn_emit(d, EV_ItemRemoved, data);
    return 0;
}

const struct fn_command cart_remove_item = {
    .abi = FN_ABI_VERSION,
    .name = "cart.remove_item",
    .method = "DELETE",
    .route = "/carts/{cart_id}/items/{sku}",
    .category = "cart",
    .id_field = "cart_id",
    .creates = 0,
    .state_size = sizeof(struct cart_state),
    .evolve = cart_evolve,
    .decide = remove_item_decide,
    .release = cart_release,
    .fields = (const char *const[]){"sku", NULL},
};

/* ---------- cart.checkout ---------- */

/* cmd {cart_id, occurred_at} -> CartCheckedOut {cart_id, order_id, total,
 * occurred_at} on the cart stream and OrderPlaced {order_id, cart_id,
 * customer_id, country, lines, units, total, occurred_at} opening
 * "order-<cart_id>"; reply {order_id, total}. */
static int checkout_decide(const void *state, int64_t version, const json_t *cmd,
                           struct fn_decision *d, struct err *e)
{
    const struct cart_state *s = state;
    const char *cart_id;
    char at[RTIME_BUFSZ];
    int rc;
    if ((rc = ecom_id(cmd, "cart_id", &cart_id, e)) || (rc = ecom_occurred_at(cmd, at, e)) ||
        (rc = require_cart(s, version, cart_id, e)))
        return rc;
    if (s->checked_out)
        return err_set(e, ERR_REJECTED, "cannot check out cart \"%s\": it is already checked out",
                       cart_id);
    if (s->n == 0)
        return err_set(e, ERR_REJECTED, "cannot check out cart \"%s\": it is empty", cart_id);

    json_t *co = json_object();
    json_object_set_new(co, "cart_id", json_string(cart_id));
    json_object_set_new(co, "order_id", json_string(cart_id));
    json_object_set_new(co, "total", ecom_money_json(s->total));
    json_object_set_new(co, "occurred_at", json_string(at));
    fn_emit(d, EV_CartCheckedOut, co);

    json_t *lines = json_array();
    for (size_t i = 0; i < s->n; i++) {
        const struct cart_line *l = &s->lines[i];
        json_array_append_new(lines, ecom_line_json(l->sku, l->description, l->quantity,
                                                    l->unit_price, l->amount));
    }
    json_t *op = json_object();
    json_object_set_new(op, "order_id", json_string(cart_id));
    json_object_set_new(op, "cart_id", json_string(cart_id));
    json_object_set_new(op, "customer_id", ecom_string_or_null(s->customer_id));
    json_object_set_new(op, "country", ecom_string_or_null(s->country));
    json_object_set_new(op, "lines", lines);
    json_object_set_new(op, "units", json_integer((json_int_t)s->units));
    json_object_set_new(op, "total", ecom_money_json(s->total));
    json_object_set_new(op, "occurred_at", json_string(at));
    char *order_stream = fn_asprintf("order-%s", cart_id);
    fn_emit_new_stream(d, order_stream, EV_OrderPlaced, op);
    free(order_stream);

    fn_reply_set(d, "order_id", json_string(cart_id));
    fn_reply_set(d, "total", ecom_money_json(s->total));
    return 0;
}

const struct fn_command cart_checkout = {
    .abi = FN_ABI_VERSION,
    .name = "cart.checkout",
    .method = "POST",
    .route = "/carts/{cart_id}/checkout",
    .category = "cart",
    .id_field = "cart_id",
    .creates = 0,
    .state_size = sizeof(struct cart_state),
    .evolve = cart_evolve,
    .decide = checkout_decide,
    .release = cart_release,
    .fields = (const char *const[]){NULL},
};

/* ---------- cart.abandon (internal: the cart.abandonment timer's) ---------- */

/* cmd {cart_id, idle_since_version: the cart's version when it went idle,
 * occurred_at} -> CartAbandoned {cart_id, customer_id, country, lines, units,
 * total, idle_since, occurred_at}, for the shop to remind the customer.
 * 422 when the cart is checked out, changed since that version, or already
 * abandoned; 404 when it does not exist. The cart stays usable: a change
 * makes it an ordinary open cart again. */
static int abandon_decide(const void *state, int64_t version, const json_t *cmd,
                          struct fn_decision *d, struct err *e)
{
    const struct cart_state *s = state;
    const char *cart_id;
    char at[RTIME_BUFSZ];
    int rc;
    if ((rc = ecom_id(cmd, "cart_id", &cart_id, e)) || (rc = ecom_occurred_at(cmd, at, e)))
        return rc;
    const json_t *since = json_object_get(cmd, "idle_since_version");
    if (!json_is_integer(since) || json_integer_value(since) < 1)
        return err_set(e, ERR_INVALID, "idle_since_version must be a version number >= 1");
    if ((rc = require_cart(s, version, cart_id, e)))
        return rc;
    if (s->checked_out)
        return err_set(e, ERR_REJECTED, "cart \"%s\" is checked out: it is not abandoned",
                       cart_id);
    if (version != (int64_t)json_integer_value(since))
        return err_set(e, ERR_REJECTED,
                       "cart \"%s\" changed since version %" PRId64 " (it is at version %" PRId64
                       ")",
                       cart_id, (int64_t)json_integer_value(since), version);
    /* the timer never gets here (CartAbandoned moves the version past the
     * one it names); a caller that names the abandoned version does */
    if (s->abandoned)
        return err_set(e, ERR_REJECTED, "cart \"%s\" is already abandoned", cart_id);
    json_t *data = json_object();
    json_object_set_new(data, "cart_id", json_string(cart_id));
    json_object_set_new(data, "customer_id", ecom_string_or_null(s->customer_id));
    json_object_set_new(data, "country", ecom_string_or_null(s->country));
    json_object_set_new(data, "lines", json_integer((json_int_t)s->n));
    json_object_set_new(data, "units", json_integer((json_int_t)s->units));
    json_object_set_new(data, "total", ecom_money_json(s->total));
    json_object_set_new(data, "idle_since", json_string(s->last_change_at));
    json_object_set_new(data, "occurred_at", json_string(at));
    fn_emit(d, EV_CartAbandoned, data);
    return 0;
}

const struct fn_command cart_abandon = {
    .abi = FN_ABI_VERSION,
    .name = "cart.abandon",
    .category = "cart",
    .id_field = "cart_id",
    .creates = 0,
    .state_size = sizeof(struct cart_state),
    .evolve = cart_evolve,
    .decide = abandon_decide,
    .release = cart_release,
    .fields = (const char *const[]){"idle_since_version", NULL},
};
