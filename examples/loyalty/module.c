/* loyalty — a cqrsd module beside the e-commerce one: customers earn points
 * for the orders they pay and redeem them. Written with `cqrsd new loyalty`,
 * built against the installed ABI (pkg-config cqrsd); it never touches core/.
 *
 *   reactor     loyalty.earn_on_payment  OrderPaid (of the e-commerce module)
 *                                        -> issues loyalty.earn
 *   command     loyalty.earn (internal)  {customer_id, order_id, amount}
 *                                        -> PointsEarned: 1 point per whole unit paid
 *   command     loyalty.redeem           POST /loyalty/{customer_id}/redemptions
 *                                        {points, reason?} -> PointsRedeemed
 *   projection  loyalty_points          customer:<id> hash: balance, earned,
 *                                        redeemed, orders
 *   query       loyalty.balance          GET /loyalty/{customer_id}
 *
 * Stream "loyalty-<customer_id>" holds a customer's points; its state knows
 * the orders already rewarded, so an order earns once even if a payment were
 * seen twice (the reactor's idempotency keys already see to that).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cqrsd/fn.h>

/* The event types this module writes, once: a typo fails the build. */
#define LOYALTY_EVENTS(X) X(PointsEarned) X(PointsRedeemed)
#define LOYALTY_DEFINE(name) static const char EV_##name[] = #name;
LOYALTY_EVENTS(LOYALTY_DEFINE)
#define LOYALTY_LIST(name) EV_##name,
static const char *const events[] = {LOYALTY_EVENTS(LOYALTY_LIST) NULL};

/* The event it reacts to, declared by the e-commerce module (cqrsd reports a
 * handler of a type no loaded module declares). */
static const char EV_OrderPaid[] = "OrderPaid";

#define MAX_ORDERS 100000 /* rewarded orders a customer's state remembers */

/* ---------- the customer's points ---------- */

struct points {
    int64_t balance;
    size_t n;        /* orders rewarded */
    char **orders;   /* their ids, owned */
};

static void evolve(void *state, const struct fn_event *ev)
{
    struct points *s = state;
    int64_t points = json_integer_value(json_object_get(ev->data, "points"));
    if (!strcmp(ev->type, EV_PointsEarned)) {
        const char *order = json_string_value(json_object_get(ev->data, "order_id"));
        s->balance += points;
        if (order && s->n < MAX_ORDERS) {
            char **o = realloc(s->orders, (s->n + 1) * sizeof *o);
            if (!o)
                abort();
            s->orders = o;
            s->orders[s->n++] = fn_strdup(order);
        }
    } else if (!strcmp(ev->type, EV_PointsRedeemed)) {
        s->balance -= points;
    }
}

static void release(void *state)
{
    struct points *s = state;
    for (size_t i = 0; i < s->n; i++)
        free(s->orders[i]);
    free(s->orders);
}

/* cmd {customer_id, order_id, amount: decimal string, occurred_at} ->
 * PointsEarned {customer_id, order_id, amount, points, occurred_at}, points =
 * the whole units of amount. 422 when the order earned already or is worth
 * no point. Reply: {points, balance}. */
static int earn(const void *state, int64_t version, const json_t *cmd, struct fn_decision *d,
                struct err *e)
{
    (void)version;
    const struct points *s = state;
    const char *customer = json_string_value(json_object_get(cmd, "customer_id"));
    const char *order = json_string_value(json_object_get(cmd, "order_id"));
    const char *text = json_string_value(json_object_get(cmd, "amount"));
    int64_t amount;
    if (!order || !*order)
        return err_set(e, ERR_INVALID, "order_id is required");
    if (!text)
        return err_set(e, ERR_INVALID, "amount is required, as a decimal string");
    int rc = money_parse_wide(text, &amount, e);
    if (rc)
        return rc;
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->orders[i], order))
            return err_set(e, ERR_REJECTED, "order \"%s\" earned its points already", order);
    int64_t points = amount / 1000;
    if (points <= 0)
        return err_set(e, ERR_REJECTED, "order \"%s\" of %s earns no point", order, text);
    fn_emit(d, EV_PointsEarned,
            json_pack("{s:s, s:s, s:s, s:I, s:O}", "customer_id", customer, "order_id", order,
                      "amount", text, "points", (json_int_t)points, "occurred_at",
                      json_object_get(cmd, "occurred_at")));
    fn_reply_set(d, "points", json_integer((json_int_t)points));
    fn_reply_set(d, "balance", json_integer((json_int_t)(s->balance + points)));
    return 0;
}

/* cmd {customer_id, points: integer > 0, reason?: string, occurred_at} ->
 * PointsRedeemed {customer_id, points, reason, occurred_at}. 404 for a
 * customer with no points ever, 422 for more points than the balance.
 * Reply: {balance}. */
static int redeem(const void *state, int64_t version, const json_t *cmd, struct fn_decision *d,
                  struct err *e)
{
    const struct points *s = state;
    const char *customer = json_string_value(json_object_get(cmd, "customer_id"));
    const json_t *points = json_object_get(cmd, "points");
    const json_t *reason = json_object_get(cmd, "reason");
    if (!json_is_integer(points))
        return err_set(e, ERR_INVALID, "points must be an integer");
    if (reason && !json_is_string(reason) && !json_is_null(reason))
        return err_set(e, ERR_INVALID, "reason must be a string");
    if (json_integer_value(points) <= 0)
        return err_set(e, ERR_REJECTED, "cannot redeem %lld points: redeem at least 1",
                       (long long)json_integer_value(points));
    if (version == 0)
        return err_set(e, ERR_NOT_FOUND, "customer \"%s\" has no points", customer);
    if (json_integer_value(points) > s->balance)
        return err_set(e, ERR_REJECTED,
                       "cannot redeem %lld points for customer \"%s\": the balance is %lld",
                       (long long)json_integer_value(points), customer, (long long)s->balance);
    fn_emit(d, EV_PointsRedeemed,
            json_pack("{s:s, s:O, s:O, s:O}", "customer_id", customer, "points", points, "reason",
                      reason ? reason : json_null(), "occurred_at",
                      json_object_get(cmd, "occurred_at")));
    fn_reply_set(d, "balance",
                 json_integer((json_int_t)(s->balance - json_integer_value(points))));
    return 0;
}

static const struct fn_command loyalty_earn = {
    .abi = FN_ABI_VERSION,
    .name = "loyalty.earn",
    .category = "loyalty",
    .id_field = "customer_id",
    .state_size = sizeof(struct points),
    .evolve = evolve,
    .decide = earn,
    .release = release,
};

static const struct fn_command loyalty_redeem = {
    .abi = FN_ABI_VERSION,
    .name = "loyalty.redeem",
    .method = "POST",
    .route = "/loyalty/{customer_id}/redemptions",
    .category = "loyalty",
    .id_field = "customer_id",
    .state_size = sizeof(struct points),
    .evolve = evolve,
    .decide = redeem,
    .release = release,
    .fields = (const char *const[]){"points", "reason", NULL},
};

/* ---------- the reactor ---------- */

/* OrderPaid {order_id, customer_id|null, amount}: a customer's payment earns
 * points; a guest's does not. */
static int on_paid(struct fn_react *r, const struct fn_event *ev, struct err *e)
{
    (void)e;
    const char *customer = json_string_value(json_object_get(ev->data, "customer_id"));
    const json_t *order = json_object_get(ev->data, "order_id");
    const json_t *amount = json_object_get(ev->data, "amount");
    if (!customer || !*customer || !json_is_string(order) || !json_is_string(amount))
        return 0;
    fn_issue(r, "loyalty.earn",
             json_pack("{s:s, s:O, s:O}", "customer_id", customer, "order_id", order, "amount",
                       amount));
    return 0;
}

static const struct fn_on_react earn_on[] = {
    {EV_OrderPaid, on_paid},
    {NULL, NULL},
};

static const struct fn_reactor loyalty_earn_on_payment = {
    .abi = FN_ABI_VERSION,
    .name = "loyalty.earn_on_payment",
    .on = earn_on,
};

/* ---------- projection loyalty_points ---------- */

static int earned(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    (void)e;
    const char *customer = json_string_value(json_object_get(ev->data, "customer_id"));
    int64_t points = json_integer_value(json_object_get(ev->data, "points"));
    if (!customer)
        return 0;
    char *key = fn_asprintf("customer:%s", customer);
    fn_hincrby(b, key, "balance", points);
    fn_hincrby(b, key, "earned", points);
    fn_hincrby(b, key, "orders", 1);
    fn_hincrby(b, key, "redeemed", 0);
    free(key);
    return 0;
}

static int redeemed(struct fn_batch *b, const struct fn_event *ev, struct err *e)
{
    (void)e;
    const char *customer = json_string_value(json_object_get(ev->data, "customer_id"));
    int64_t points = json_integer_value(json_object_get(ev->data, "points"));
    if (!customer)
        return 0;
    char *key = fn_asprintf("customer:%s", customer);
    fn_hincrby(b, key, "balance", -points);
    fn_hincrby(b, key, "redeemed", points);
    free(key);
    return 0;
}

static const struct fn_on_event balance_on[] = {
    {EV_PointsEarned, earned},
    {EV_PointsRedeemed, redeemed},
    {NULL, NULL},
};

static const struct fn_projection loyalty_points = {
    .abi = FN_ABI_VERSION,
    .name = "loyalty_points",
    .version = 1,
    .on = balance_on,
};

/* ---------- query loyalty.balance ---------- */

/* {customer_id, balance, earned, redeemed, orders}; 404 for a customer who
 * never earned a point. */
static int balance(struct fn_query_ctx *q, json_t **out, struct err *e)
{
    const char *customer = fn_param(q, "customer_id");
    struct fn_hash h;
    char *key = fn_asprintf("customer:%s", customer);
    int rc = fn_hgetall(q, "loyalty_points", key, &h, e);
    free(key);
    if (rc)
        return rc;
    if (h.n == 0)
        return err_set(e, ERR_NOT_FOUND, "customer \"%s\" has no points", customer);
    int64_t bal, earn_total, red, orders;
    if ((rc = fn_hash_int(&h, "balance", &bal, e)) ||
        (rc = fn_hash_int(&h, "earned", &earn_total, e)) ||
        (rc = fn_hash_int(&h, "redeemed", &red, e)) || (rc = fn_hash_int(&h, "orders", &orders, e)))
        return rc;
    *out = json_pack("{s:s, s:I, s:I, s:I, s:I}", "customer_id", customer, "balance",
                     (json_int_t)bal, "earned", (json_int_t)earn_total, "redeemed",
                     (json_int_t)red, "orders", (json_int_t)orders);
    return 0;
}

static const struct fn_query loyalty_balance_query = {
    .abi = FN_ABI_VERSION,
    .name = "loyalty.balance",
    .route = "/loyalty/{customer_id}",
    .run = balance,
};

/* ---------- the module ---------- */

static const struct fn_command *const commands[] = {&loyalty_earn, &loyalty_redeem, NULL};
static const struct fn_projection *const projections[] = {&loyalty_points, NULL};
static const struct fn_query *const queries[] = {&loyalty_balance_query, NULL};
static const struct fn_reactor *const reactors[] = {&loyalty_earn_on_payment, NULL};

FN_MODULE = {
    .abi = FN_ABI_VERSION,
    .name = "loyalty",
    .version = "1.0.0",
    .events = events,
    .commands = commands,
    .projections = projections,
    .queries = queries,
    .reactors = reactors,
};
