/* tests/integration/test_readmodels.c — projections and queries against a
 * real Redis (REDIS_URL, e.g. redis://127.0.0.1:56379/0).
 *
 * Loads the modules of $CQRSD_MODULES (default build/modules/ecommerce.so),
 * builds events as struct fn_event, runs every loaded projection's handler of
 * the event's type, executes the batch's flat argv (count, then that many
 * arguments) with redisCommandArgv, then runs the loaded query functions (as
 * the platform does, core/query.h) and compares their JSON with the expected
 * documents.
 *
 * Invariant: the test only ever uses Redis database TEST_DB (9), flushed
 * before each test; whatever database REDIS_URL names is ignored, so db 0 is
 * never touched. Without REDIS_URL the program skips (exit 77).
 */
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/fn_int.h"
#include "core/query.h"
#include "core/reg.h"
#include "core/rm.h"
#include "projections/keys.h"

#define TEST_DB 9

static redisContext *redis;
static struct reg *R;

/* The full key of a projection's relative key, at its loaded version. */
static char *key_of(const char *projection, const char *rel)
{
    const struct reg_projection *p = reg_projection_find(R, projection);
    assert_non_null(p);
    return xasprintf("%s:v%d:%s", projection, p->p->version, rel);
}

/* ---------- Redis connection ---------- */

/* Connects to REDIS_URL's host and port ("redis://[[user]:password@]host[:port][/db]"),
 * authenticates when a password is given, and selects TEST_DB. */
static redisContext *test_connect(const char *url)
{
    char host[256] = "127.0.0.1", pass[256] = "";
    int port = 6379;
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *at = strchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon && (size_t)(at - colon - 1) < sizeof pass)
            snprintf(pass, sizeof pass, "%.*s", (int)(at - colon - 1), colon + 1);
        p = at + 1;
    }
    size_t hl = strcspn(p, ":/");
    if (hl > 0 && hl < sizeof host)
        snprintf(host, sizeof host, "%.*s", (int)hl, p);
    if (p[hl] == ':')
        port = atoi(p + hl + 1);
    redisContext *c = redisConnect(host, port);
    if (!c || c->err) {
        fprintf(stderr, "test_readmodels: cannot connect to %s:%d: %s\n", host, port,
                c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return NULL;
    }
    redisReply *r;
    if (*pass) {
        r = redisCommand(c, "AUTH %s", pass);
        if (r)
            freeReplyObject(r);
    }
    r = redisCommand(c, "SELECT %d", TEST_DB);
    int ok = r && r->type == REDIS_REPLY_STATUS;
    if (r)
        freeReplyObject(r);
    if (!ok) {
        fprintf(stderr, "test_readmodels: cannot select database %d\n", TEST_DB);
        redisFree(c);
        return NULL;
    }
    return c;
}

static void test_redis(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(redis, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("redis: %s", r->str);
    freeReplyObject(r);
}

static int flush_db(void **state)
{
    (void)state;
    test_redis("FLUSHDB");
    return 0;
}

/* ---------- projecting events ---------- */

/* Executes a batch's commands, decoding the flat argv. */
static void exec_batch(const struct fn_batch *b)
{
    size_t i = 0, ncmds = 0;
    while (i < b->argc) {
        char *end;
        long n = strtol(b->argv[i], &end, 10);
        assert_true(*end == '\0' && n > 0 && (size_t)n <= b->argc - i - 1);
        redisReply *r = redisCommandArgv(redis, (int)n, (const char **)(b->argv + i + 1), NULL);
        assert_non_null(r);
        if (r->type == REDIS_REPLY_ERROR)
            fail_msg("redis %s %s: %s", b->argv[i + 1], b->argv[i + 2], r->str);
        freeReplyObject(r);
        i += (size_t)n + 1;
        ncmds++;
    }
    assert_int_equal(ncmds, b->ncmds);
}

/* Applies one event (data stolen) to every projection that handles its type. */
static void emit(const char *stream_id, const char *type, json_t *data)
{
    static int64_t position;
    char pos[33], recorded[RTIME_BUFSZ];
    assert_non_null(data);
    snprintf(pos, sizeof pos, "%032llx", (unsigned long long)++position);
    struct fn_event ev = {stream_id, 1, type, data, pos, rtime_now(recorded), ""};
    int applied = 0;
    for (size_t i = 0; i < R->nprojs; i++) {
        const struct fn_projection *p = R->projs[i].p;
        int (*apply)(struct fn_batch *, const struct fn_event *, struct err *) =
            reg_projection_handler(p, type);
        if (!apply)
            continue;
        struct fn_batch b;
        struct err e = {0};
        fn_batch_init(&b);
        fn_batch_set_prefix(&b, p->name, p->version);
        assert_int_equal(apply(&b, &ev, &e), 0);
        exec_batch(&b);
        fn_batch_clear(&b);
        applied++;
    }
    assert_true(applied > 0);
    json_decref(data);
}

/* ---------- event builders (the shapes of docs/events.md) ---------- */

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static int64_t money(const char *s)
{
    int64_t v = 0;
    assert_int_equal(money_parse(s, &v, NULL), 0);
    return v;
}

static json_t *money_json(int64_t v)
{
    char buf[MONEY_BUFSZ];
    return json_string(money_format(v, buf));
}

static json_t *line(const char *sku, const char *desc, int64_t qty, const char *price)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:o}", "sku", sku, "description", desc, "quantity",
                     (json_int_t)qty, "unit_price", price, "amount",
                     money_json(qty * money(price)));
}

static void cart_opened(const char *cart, const char *customer, const char *country,
                        const char *at)
{
    char stream[128];
    snprintf(stream, sizeof stream, "cart-%s", cart);
    emit(stream, "CartOpened",
         json_pack("{s:s, s:o, s:o, s:s}", "cart_id", cart, "customer_id", str_or_null(customer),
                   "country", str_or_null(country), "occurred_at", at));
}

static void item_added(const char *cart, const char *sku, const char *desc, int64_t qty,
                       const char *price, const char *at)
{
    char stream[128];
    snprintf(stream, sizeof stream, "cart-%s", cart);
    json_t *d = line(sku, desc, qty, price);
    json_object_set_new(d, "cart_id", json_string(cart));
    json_object_set_new(d, "occurred_at", json_string(at));
    emit(stream, "ItemAdded", d);
}

static void item_removed(const char *cart, const char *sku, int64_t qty, const char *amount,
                         const char *at)
{
    char stream[128];
    snprintf(stream, sizeof stream, "cart-%s", cart);
    emit(stream, "ItemRemoved",
         json_pack("{s:s, s:s, s:I, s:s, s:s}", "cart_id", cart, "sku", sku, "quantity",
                   (json_int_t)qty, "amount", amount, "occurred_at", at));
}

static void checked_out(const char *cart, const char *total, const char *at)
{
    char stream[128];
    snprintf(stream, sizeof stream, "cart-%s", cart);
    emit(stream, "CartCheckedOut",
         json_pack("{s:s, s:s, s:s, s:s}", "cart_id", cart, "order_id", cart, "total", total,
                   "occurred_at", at));
}

/* Emits OrderPlaced with the lines (stolen) and returns its data (a new
 * reference, for order_cancelled). */
static json_t *order_placed(const char *order, const char *customer, const char *country,
                            const char *at, json_t *lines)
{
    int64_t units = 0, total = 0;
    size_t i;
    json_t *l;
    json_array_foreach(lines, i, l) {
        units += json_integer_value(json_object_get(l, "quantity"));
        total += money(json_string_value(json_object_get(l, "amount")));
    }
    json_t *d = json_pack("{s:s, s:s, s:o, s:o, s:o, s:I, s:o, s:s}", "order_id", order,
                          "cart_id", order, "customer_id", str_or_null(customer), "country",
                          str_or_null(country), "lines", lines, "units", (json_int_t)units,
                          "total", money_json(total), "occurred_at", at);
    char stream[128];
    snprintf(stream, sizeof stream, "order-%s", order);
    emit(stream, "OrderPlaced", json_incref(d));
    return d;
}

static void order_paid(const json_t *placed, const char *at)
{
    const char *order = json_string_value(json_object_get(placed, "order_id"));
    char stream[128];
    snprintf(stream, sizeof stream, "order-%s", order);
    emit(stream, "OrderPaid",
         json_pack("{s:s, s:O, s:O, s:s}", "order_id", order, "customer_id",
                   json_object_get(placed, "customer_id"), "amount",
                   json_object_get(placed, "total"), "occurred_at", at));
}

static void order_cancelled(const json_t *placed, const char *refund_due, const char *at)
{
    const char *order = json_string_value(json_object_get(placed, "order_id"));
    char stream[128];
    snprintf(stream, sizeof stream, "order-%s", order);
    emit(stream, "OrderCancelled",
         json_pack("{s:s, s:O, s:O, s:O, s:O, s:O, s:O, s:s, s:n, s:s}", "order_id", order,
                   "customer_id", json_object_get(placed, "customer_id"), "country",
                   json_object_get(placed, "country"), "lines", json_object_get(placed, "lines"),
                   "units", json_object_get(placed, "units"), "total",
                   json_object_get(placed, "total"), "placed_at",
                   json_object_get(placed, "occurred_at"), "refund_due", refund_due, "reason",
                   "occurred_at", at));
}

static void return_recorded(const char *id, const char *customer, const char *country,
                            const char *at, json_t *lines)
{
    int64_t units = 0, total = 0;
    size_t i;
    json_t *l;
    json_array_foreach(lines, i, l) {
        units += json_integer_value(json_object_get(l, "quantity"));
        total += money(json_string_value(json_object_get(l, "amount")));
    }
    char stream[128];
    snprintf(stream, sizeof stream, "return-%s", id);
    emit(stream, "ReturnRecorded",
         json_pack("{s:s, s:o, s:o, s:o, s:I, s:o, s:s}", "return_id", id, "customer_id",
                   str_or_null(customer), "country", str_or_null(country), "lines", lines,
                   "units", (json_int_t)units, "total", money_json(total), "occurred_at", at));
}

/*
 * The shared data set, across the 2011 UK clock changes (BST from 27 March
 * 01:00 UTC to 30 October 01:00 UTC):
 *   536366  17850 UK       2011-03-28T00:30+01:00 (local 28 March), emitted
 *           before 536365 although placed later; a 0.00 line
 *   536365  17850 UK       2011-03-26T23:30Z (local 26 March), 85123A on two
 *           lines, paid
 *   536367  guest France   2011-10-29T23:30Z (local 30 October 00:30 BST), 0.001 price
 *   536368  12583 France   2011-10-30T23:30Z (local 30 October, GMT), paid then
 *           cancelled on 2 November
 *   536369  12662 Germany  2011-06-01, revenue 7.401 like France's (tie)
 *   C536379 return of 17850 UK on 28 March
 *   cart 536365 (checked out) and cart 536370 (open, two prices, a removal)
 */
static int load_fixture(void **state)
{
    flush_db(state);
    json_t *o;

    cart_opened("536365", "17850", "United Kingdom", "2011-03-26T23:00:00+00:00");
    item_added("536365", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 6, "2.55",
               "2011-03-26T23:01:00+00:00");
    item_added("536365", "71053", "WHITE METAL LANTERN", 6, "3.39", "2011-03-26T23:02:00+00:00");
    item_added("536365", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 2, "2.55",
               "2011-03-26T23:03:00+00:00");
    checked_out("536365", "40.74", "2011-03-26T23:30:00+00:00");

    o = order_placed("536366", "17850", "United Kingdom", "2011-03-28T00:30:00+01:00",
                     json_pack("[o, o]", line("22633", "HAND WARMER UNION JACK", 6, "1.85"),
                               line("84879", "ASSORTED COLOUR BIRD ORNAMENT", 32, "0")));
    json_decref(o);

    o = order_placed(
        "536365", "17850", "United Kingdom", "2011-03-26T23:30:00+00:00",
        json_pack("[o, o, o]", line("85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 6, "2.55"),
                  line("71053", "WHITE METAL LANTERN", 6, "3.39"),
                  line("85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 2, "2.55")));
    order_paid(o, "2011-03-27T00:10:00+00:00");
    json_decref(o);

    o = order_placed("536367", NULL, "France", "2011-10-29T23:30:00+00:00",
                     json_pack("[o, o]", line("85123A", "", 1, "0.001"),
                               line("22633", "HAND WARMER UNION JACK", 4, "1.85")));
    json_decref(o);

    o = order_placed("536368", "12583", "France", "2011-10-30T23:30:00+00:00",
                     json_pack("[o]", line("71053", "WHITE METAL LANTERN", 10, "3.39")));
    order_paid(o, "2011-10-31T09:00:00+00:00");
    order_cancelled(o, "33.90", "2011-11-02T12:00:00+00:00");
    json_decref(o);

    o = order_placed("536369", "12662", "Germany", "2011-06-01T10:00:00+01:00",
                     json_pack("[o]", line("21754", "HOME BUILDING BLOCK WORD", 1, "7.401")));
    json_decref(o);

    return_recorded("C536379", "17850", "United Kingdom", "2011-03-28T10:00:00+01:00",
                    json_pack("[o]", line("85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 2,
                                          "2.55")));

    cart_opened("536370", "12583", "France", "2011-12-01T08:45:00+00:00");
    item_added("536370", "22728", "ALARM CLOCK BAKELIKE PINK", 24, "3.75",
               "2011-12-01T08:46:00+00:00");
    item_added("536370", "22727", "ALARM CLOCK BAKELIKE RED", 24, "3.75",
               "2011-12-01T08:47:00+00:00");
    item_added("536370", "22728", "ALARM CLOCK BAKELIKE PINK", 12, "3.50",
               "2011-12-01T08:48:00+00:00");
    item_added("536370", "POST", "POSTAGE", 3, "18.00", "2011-12-01T08:49:00+00:00");
    item_removed("536370", "POST", 3, "54.00", "2011-12-01T08:50:00+00:00");
    return 0;
}

/* ---------- running queries ---------- */

static const struct fn_query *find_query(const char *name)
{
    const struct reg_query *q = reg_query_find(R, name);
    if (!q)
        fail_msg("no query %s", name);
    return q->q;
}

/* Runs query `name` with NULL-terminated name/value parameter pairs;
 * returns its code, sets *out (or NULL) and fills e. */
static int vrun(const char *name, json_t **out, struct err *e, va_list ap)
{
    const char *names[16], *values[16];
    size_t n = 0;
    const char *k;
    while ((k = va_arg(ap, const char *))) {
        assert_true(n < 16);
        names[n] = k;
        values[n++] = va_arg(ap, const char *);
    }
    const struct fn_query *fq = find_query(name);
    int rc = query_call(R, fq, redis, NULL, names, values, n, out, NULL, e);
    if (rc) {
        assert_null(*out);
        assert_int_equal(e->code, rc);
        assert_true(e->msg[0] != '\0');
    } else {
        assert_non_null(*out);
    }
    return rc;
}

/* Runs a query that must succeed and returns its reply (caller decrefs). */
static json_t *query(const char *name, ...)
{
    va_list ap;
    json_t *out;
    struct err e;
    va_start(ap, name);
    int rc = vrun(name, &out, &e, ap);
    va_end(ap);
    if (rc)
        fail_msg("%s failed (%d): %s", name, rc, e.msg);
    return out;
}

/* Runs a query that must fail; returns its code, message in *e. */
static int query_fails(struct err *e, const char *name, ...)
{
    va_list ap;
    json_t *out;
    va_start(ap, name);
    int rc = vrun(name, &out, e, ap);
    va_end(ap);
    if (!rc) {
        char *s = json_dumps(out, JSON_COMPACT);
        json_decref(out);
        fail_msg("%s succeeded: %s", name, s);
    }
    return rc;
}

/* Asserts got (stolen) equals the JSON text expected. */
static void expect_json(json_t *got, const char *expected)
{
    json_error_t je;
    json_t *want = json_loads(expected, 0, &je);
    if (!want)
        fail_msg("bad expected JSON (%s): %s", je.text, expected);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS);
        char *w = json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS);
        print_error("got:  %s\nwant: %s\n", g, w);
        free(g);
        free(w);
        json_decref(got);
        json_decref(want);
        fail();
    }
    json_decref(got);
    json_decref(want);
}

static void expect_code(int code, const char *name, ...)
{
    va_list ap;
    json_t *out;
    struct err e;
    va_start(ap, name);
    int rc = vrun(name, &out, &e, ap);
    va_end(ap);
    if (rc != code) {
        char *s = out ? json_dumps(out, JSON_COMPACT) : NULL;
        json_decref(out);
        fail_msg("%s: want code %d, got %d (%s) %s", name, code, rc, e.msg, s ? s : "");
    }
    json_decref(out);
}

/* ---------- tests ---------- */

static void test_empty_read_models(void **state)
{
    (void)state;
    expect_json(query("stats.summary", NULL),
                "{\"orders\":0,\"revenue\":\"0.00\",\"units\":0,\"cancelled\":0,\"returns\":0,"
                "\"returns_value\":\"0.00\",\"customers\":0}");
    expect_json(query("stats.countries", NULL), "{\"countries\":[]}");
    expect_json(query("product.top", NULL), "{\"by\":\"units\",\"products\":[]}");
    expect_json(query("stats.daily", "from", "2011-12-31", "to", "2012-01-01", NULL),
                "{\"from\":\"2011-12-31\",\"to\":\"2012-01-01\",\"days\":["
                "{\"date\":\"2011-12-31\",\"orders\":0,\"revenue\":\"0.00\",\"units\":0,"
                "\"returns\":0,\"returns_value\":\"0.00\"},"
                "{\"date\":\"2012-01-01\",\"orders\":0,\"revenue\":\"0.00\",\"units\":0,"
                "\"returns\":0,\"returns_value\":\"0.00\"}]}");
    expect_code(ERR_NOT_FOUND, "cart.get", "cart_id", "536365", NULL);
    expect_code(ERR_NOT_FOUND, "order.get", "order_id", "536365", NULL);
    expect_code(ERR_NOT_FOUND, "customer.get", "customer_id", "17850", NULL);
    expect_code(ERR_NOT_FOUND, "customer.orders", "customer_id", "17850", NULL);
    expect_code(ERR_NOT_FOUND, "product.get", "sku", "85123A", NULL);
}

static void test_cart(void **state)
{
    (void)state;
    expect_json(query("cart.get", "cart_id", "536365", NULL),
                "{\"cart_id\":\"536365\",\"status\":\"checked_out\",\"customer_id\":\"17850\","
                "\"country\":\"United Kingdom\",\"opened_at\":\"2011-03-26T23:00:00+00:00\","
                "\"order_id\":\"536365\",\"abandoned_at\":null,\"lines\":["
                "{\"sku\":\"71053\",\"description\":\"WHITE METAL LANTERN\",\"quantity\":6,"
                "\"unit_price\":\"3.39\",\"amount\":\"20.34\"},"
                "{\"sku\":\"85123A\",\"description\":\"WHITE HANGING HEART T-LIGHT HOLDER\","
                "\"quantity\":8,\"unit_price\":\"2.55\",\"amount\":\"20.40\"}],"
                "\"units\":14,\"total\":\"40.74\"}");
    /* open; 22728 added at two prices (no single unit price); POST removed */
    expect_json(query("cart.get", "cart_id", "536370", NULL),
                "{\"cart_id\":\"536370\",\"status\":\"open\",\"customer_id\":\"12583\","
                "\"country\":\"France\",\"opened_at\":\"2011-12-01T08:45:00+00:00\","
                "\"order_id\":null,\"abandoned_at\":null,\"lines\":["
                "{\"sku\":\"22727\",\"description\":\"ALARM CLOCK BAKELIKE RED\",\"quantity\":24,"
                "\"unit_price\":\"3.75\",\"amount\":\"90.00\"},"
                "{\"sku\":\"22728\",\"description\":\"ALARM CLOCK BAKELIKE PINK\",\"quantity\":36,"
                "\"amount\":\"132.00\"}],"
                "\"units\":60,\"total\":\"222.00\"}");
    struct err e;
    assert_int_equal(query_fails(&e, "cart.get", "cart_id", "nope", NULL), ERR_NOT_FOUND);
    assert_string_equal(e.msg, "no cart \"nope\"");
    assert_int_equal(err_http_status(e.code), 404);
    expect_code(ERR_INVALID, "cart.get", NULL);
}

static void test_cart_guest_and_readd(void **state)
{
    (void)state;
    cart_opened("G1", NULL, NULL, "2011-01-04T10:00:00+00:00");
    item_added("G1", "A", "", 2, "0.001", "2011-01-04T10:01:00+00:00");
    item_removed("G1", "A", 2, "0.002", "2011-01-04T10:02:00+00:00");
    item_added("G1", "A", "THING", 1, "0", "2011-01-04T10:03:00+00:00");
    expect_json(query("cart.get", "cart_id", "G1", NULL),
                "{\"cart_id\":\"G1\",\"status\":\"open\",\"customer_id\":null,\"country\":null,"
                "\"opened_at\":\"2011-01-04T10:00:00+00:00\",\"order_id\":null,"
                "\"abandoned_at\":null,\"lines\":["
                "{\"sku\":\"A\",\"description\":\"THING\",\"quantity\":1,\"unit_price\":\"0.00\","
                "\"amount\":\"0.00\"}],\"units\":1,\"total\":\"0.00\"}");
}

static void test_orders(void **state)
{
    (void)state;
    expect_json(
        query("order.get", "order_id", "536365", NULL),
        "{\"order_id\":\"536365\",\"cart_id\":\"536365\",\"customer_id\":\"17850\","
        "\"country\":\"United Kingdom\",\"status\":\"paid\",\"lines\":["
        "{\"sku\":\"85123A\",\"description\":\"WHITE HANGING HEART T-LIGHT HOLDER\","
        "\"quantity\":6,\"unit_price\":\"2.55\",\"amount\":\"15.30\"},"
        "{\"sku\":\"71053\",\"description\":\"WHITE METAL LANTERN\",\"quantity\":6,"
        "\"unit_price\":\"3.39\",\"amount\":\"20.34\"},"
        "{\"sku\":\"85123A\",\"description\":\"WHITE HANGING HEART T-LIGHT HOLDER\","
        "\"quantity\":2,\"unit_price\":\"2.55\",\"amount\":\"5.10\"}],"
        "\"units\":14,\"total\":\"40.74\",\"paid\":\"40.74\",\"refund_due\":\"0.00\","
        "\"placed_at\":\"2011-03-26T23:30:00+00:00\",\"paid_at\":\"2011-03-27T00:10:00+00:00\","
        "\"cancelled_at\":null}");
    expect_json(
        query("order.get", "order_id", "536368", NULL),
        "{\"order_id\":\"536368\",\"cart_id\":\"536368\",\"customer_id\":\"12583\","
        "\"country\":\"France\",\"status\":\"cancelled\",\"lines\":["
        "{\"sku\":\"71053\",\"description\":\"WHITE METAL LANTERN\",\"quantity\":10,"
        "\"unit_price\":\"3.39\",\"amount\":\"33.90\"}],"
        "\"units\":10,\"total\":\"33.90\",\"paid\":\"33.90\",\"refund_due\":\"33.90\","
        "\"placed_at\":\"2011-10-30T23:30:00+00:00\",\"paid_at\":\"2011-10-31T09:00:00+00:00\","
        "\"cancelled_at\":\"2011-11-02T12:00:00+00:00\"}");
    json_t *o = query("order.get", "order_id", "536367", NULL);
    assert_true(json_is_null(json_object_get(o, "customer_id")));
    assert_string_equal(json_string_value(json_object_get(o, "status")), "placed");
    assert_string_equal(json_string_value(json_object_get(o, "total")), "7.401");
    assert_string_equal(json_string_value(json_object_get(o, "paid")), "0.00");
    assert_true(json_is_null(json_object_get(o, "paid_at")));
    json_decref(o);
    struct err e;
    assert_int_equal(query_fails(&e, "order.get", "order_id", "999999", NULL), ERR_NOT_FOUND);
    assert_string_equal(e.msg, "no order \"999999\"");
}

static void test_customers(void **state)
{
    (void)state;
    /* 536366 was projected before 536365 but placed after it */
    expect_json(query("customer.get", "customer_id", "17850", NULL),
                "{\"customer_id\":\"17850\",\"orders\":2,\"revenue\":\"51.84\",\"units\":52,"
                "\"cancelled\":0,\"returns\":1,\"returns_value\":\"5.10\","
                "\"first_order_at\":\"2011-03-26T23:30:00+00:00\","
                "\"last_order_at\":\"2011-03-28T00:30:00+01:00\"}");
    /* a cancelled paid order: counted as an order, revenue and units reversed */
    expect_json(query("customer.get", "customer_id", "12583", NULL),
                "{\"customer_id\":\"12583\",\"orders\":1,\"revenue\":\"0.00\",\"units\":0,"
                "\"cancelled\":1,\"returns\":0,\"returns_value\":\"0.00\","
                "\"first_order_at\":\"2011-10-30T23:30:00+00:00\","
                "\"last_order_at\":\"2011-10-30T23:30:00+00:00\"}");
    expect_json(query("customer.orders", "customer_id", "17850", NULL),
                "{\"customer_id\":\"17850\",\"total\":2,\"orders\":["
                "{\"order_id\":\"536366\",\"status\":\"placed\",\"total\":\"11.10\","
                "\"placed_at\":\"2011-03-28T00:30:00+01:00\"},"
                "{\"order_id\":\"536365\",\"status\":\"paid\",\"total\":\"40.74\","
                "\"placed_at\":\"2011-03-26T23:30:00+00:00\"}]}");
    expect_json(query("customer.orders", "customer_id", "17850", "limit", "1", "offset", "1",
                      NULL),
                "{\"customer_id\":\"17850\",\"total\":2,\"orders\":["
                "{\"order_id\":\"536365\",\"status\":\"paid\",\"total\":\"40.74\","
                "\"placed_at\":\"2011-03-26T23:30:00+00:00\"}]}");
    expect_json(query("customer.orders", "customer_id", "17850", "offset", "2", NULL),
                "{\"customer_id\":\"17850\",\"total\":2,\"orders\":[]}");
    expect_json(query("customer.orders", "customer_id", "12583", NULL),
                "{\"customer_id\":\"12583\",\"total\":1,\"orders\":["
                "{\"order_id\":\"536368\",\"status\":\"cancelled\",\"total\":\"33.90\","
                "\"placed_at\":\"2011-10-30T23:30:00+00:00\"}]}");

    struct err e;
    assert_int_equal(query_fails(&e, "customer.get", "customer_id", "99999", NULL),
                     ERR_NOT_FOUND);
    assert_string_equal(e.msg, "no customer \"99999\"");
    expect_code(ERR_NOT_FOUND, "customer.orders", "customer_id", "99999", NULL);
    expect_code(ERR_INVALID, "customer.orders", "customer_id", "17850", "limit", "0", NULL);
    expect_code(ERR_INVALID, "customer.orders", "customer_id", "17850", "limit", "101", NULL);
    expect_code(ERR_INVALID, "customer.orders", "customer_id", "17850", "limit", "abc", NULL);
    expect_code(ERR_INVALID, "customer.orders", "customer_id", "17850", "offset", "-1", NULL);
    expect_code(ERR_INVALID, "customer.orders", "customer_id", "17850", "offset", "1x", NULL);
}

static void test_customer_with_returns_only(void **state)
{
    (void)state;
    return_recorded("C1", "40000", "EIRE", "2011-02-01T12:00:00+00:00",
                    json_pack("[o]", line("A", "THING", 1, "1.5")));
    expect_json(query("customer.get", "customer_id", "40000", NULL),
                "{\"customer_id\":\"40000\",\"orders\":0,\"revenue\":\"0.00\",\"units\":0,"
                "\"cancelled\":0,\"returns\":1,\"returns_value\":\"1.50\","
                "\"first_order_at\":null,\"last_order_at\":null}");
    expect_json(query("customer.orders", "customer_id", "40000", NULL),
                "{\"customer_id\":\"40000\",\"total\":0,\"orders\":[]}");
    /* a return is no order: not a customer in the stats */
    expect_json(query("stats.summary", NULL),
                "{\"orders\":0,\"revenue\":\"0.00\",\"units\":0,\"cancelled\":0,\"returns\":1,"
                "\"returns_value\":\"1.50\",\"customers\":0}");
    expect_json(query("stats.countries", NULL),
                "{\"countries\":[{\"country\":\"EIRE\",\"orders\":0,\"revenue\":\"0.00\","
                "\"returns\":1,\"returns_value\":\"1.50\",\"customers\":0}]}");
}

static void test_products(void **state)
{
    (void)state;
    /* 85123A: two lines in 536365 count one order; 0.001 line of 536367; a return */
    expect_json(query("product.get", "sku", "85123A", NULL),
                "{\"sku\":\"85123A\",\"description\":\"WHITE HANGING HEART T-LIGHT HOLDER\","
                "\"orders\":2,\"units\":9,\"revenue\":\"20.401\",\"returned_units\":2,"
                "\"returns_value\":\"5.10\"}");
    /* 71053: the cancelled order still counts in orders, not in units/revenue */
    expect_json(query("product.get", "sku", "71053", NULL),
                "{\"sku\":\"71053\",\"description\":\"WHITE METAL LANTERN\",\"orders\":2,"
                "\"units\":6,\"revenue\":\"20.34\",\"returned_units\":0,"
                "\"returns_value\":\"0.00\"}");
    expect_json(query("product.get", "sku", "84879", NULL),
                "{\"sku\":\"84879\",\"description\":\"ASSORTED COLOUR BIRD ORNAMENT\","
                "\"orders\":1,\"units\":32,\"revenue\":\"0.00\",\"returned_units\":0,"
                "\"returns_value\":\"0.00\"}");
    struct err e;
    assert_int_equal(query_fails(&e, "product.get", "sku", "NOPE", NULL), ERR_NOT_FOUND);
    assert_string_equal(e.msg, "no product \"NOPE\"");

    expect_json(
        query("product.top", "by", "units", NULL),
        "{\"by\":\"units\",\"products\":["
        "{\"sku\":\"84879\",\"description\":\"ASSORTED COLOUR BIRD ORNAMENT\",\"units\":32,"
        "\"revenue\":\"0.00\"},"
        "{\"sku\":\"22633\",\"description\":\"HAND WARMER UNION JACK\",\"units\":10,"
        "\"revenue\":\"18.50\"},"
        "{\"sku\":\"85123A\",\"description\":\"WHITE HANGING HEART T-LIGHT HOLDER\","
        "\"units\":9,\"revenue\":\"20.401\"},"
        "{\"sku\":\"71053\",\"description\":\"WHITE METAL LANTERN\",\"units\":6,"
        "\"revenue\":\"20.34\"},"
        "{\"sku\":\"21754\",\"description\":\"HOME BUILDING BLOCK WORD\",\"units\":1,"
        "\"revenue\":\"7.401\"}]}");
    expect_json(
        query("product.top", "by", "revenue", "limit", "3", NULL),
        "{\"by\":\"revenue\",\"products\":["
        "{\"sku\":\"85123A\",\"description\":\"WHITE HANGING HEART T-LIGHT HOLDER\","
        "\"units\":9,\"revenue\":\"20.401\"},"
        "{\"sku\":\"71053\",\"description\":\"WHITE METAL LANTERN\",\"units\":6,"
        "\"revenue\":\"20.34\"},"
        "{\"sku\":\"22633\",\"description\":\"HAND WARMER UNION JACK\",\"units\":10,"
        "\"revenue\":\"18.50\"}]}");

    expect_code(ERR_INVALID, "product.top", "by", "foo", NULL);
    expect_code(ERR_INVALID, "product.top", "by", "", NULL);
    expect_code(ERR_INVALID, "product.top", "limit", "0", NULL);
    expect_code(ERR_INVALID, "product.top", "limit", "abc", NULL);
    expect_code(ERR_INVALID, "product.top", "limit", "1000", NULL);
    expect_code(ERR_INVALID, "product.top", "limit", "101", NULL);
    expect_code(ERR_INVALID, "product.top", "limit", "-1", NULL);
    expect_code(ERR_INVALID, "product.top", "limit", "", NULL);
    expect_code(ERR_INVALID, "product.top", "limit", " 5", NULL);
    expect_code(ERR_INVALID, "product.top", "limit", "99999999999999999999", NULL);
    expect_code(0, "product.top", "limit", "100", NULL);
    expect_code(0, "product.top", "limit", "1", NULL);
}

/* Equal scores are ordered by sku ascending, also at the page boundary. */
static void test_top_ties(void **state)
{
    (void)state;
    json_decref(order_placed("T1", NULL, "Spain", "2011-05-01T10:00:00+01:00",
                             json_pack("[o, o, o, o, o]", line("D", "d", 5, "1"),
                                       line("C", "c", 5, "1"), line("B", "b", 5, "1"),
                                       line("A", "a", 5, "1"), line("E", "e", 7, "1"))));
    expect_json(query("product.top", "limit", "3", NULL),
                "{\"by\":\"units\",\"products\":["
                "{\"sku\":\"E\",\"description\":\"e\",\"units\":7,\"revenue\":\"7.00\"},"
                "{\"sku\":\"A\",\"description\":\"a\",\"units\":5,\"revenue\":\"5.00\"},"
                "{\"sku\":\"B\",\"description\":\"b\",\"units\":5,\"revenue\":\"5.00\"}]}");
    expect_json(query("product.top", "by", "revenue", "limit", "2", NULL),
                "{\"by\":\"revenue\",\"products\":["
                "{\"sku\":\"E\",\"description\":\"e\",\"units\":7,\"revenue\":\"7.00\"},"
                "{\"sku\":\"A\",\"description\":\"a\",\"units\":5,\"revenue\":\"5.00\"}]}");
    json_t *o = query("product.top", NULL);
    assert_int_equal(json_array_size(json_object_get(o, "products")), 5);
    const char *want[] = {"E", "A", "B", "C", "D"};
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(json_string_value(json_object_get(
                                json_array_get(json_object_get(o, "products"), i), "sku")),
                            want[i]);
    json_decref(o);
}

static void test_summary_and_countries(void **state)
{
    (void)state;
    /* 40.74 + 11.10 + 7.401 + (33.90 - 33.90) + 7.401; guests are no customers */
    expect_json(query("stats.summary", NULL),
                "{\"orders\":5,\"revenue\":\"66.642\",\"units\":58,\"cancelled\":1,"
                "\"returns\":1,\"returns_value\":\"5.10\",\"customers\":3}");
    /* France and Germany tie on 7.401: by name */
    expect_json(query("stats.countries", NULL),
                "{\"countries\":["
                "{\"country\":\"United Kingdom\",\"orders\":2,\"revenue\":\"51.84\","
                "\"returns\":1,\"returns_value\":\"5.10\",\"customers\":1},"
                "{\"country\":\"France\",\"orders\":2,\"revenue\":\"7.401\",\"returns\":0,"
                "\"returns_value\":\"0.00\",\"customers\":1},"
                "{\"country\":\"Germany\",\"orders\":1,\"revenue\":\"7.401\",\"returns\":0,"
                "\"returns_value\":\"0.00\",\"customers\":1}]}");
}

#define ZERO_DAY(d)                                                                              \
    "{\"date\":\"" d "\",\"orders\":0,\"revenue\":\"0.00\",\"units\":0,\"returns\":0,"          \
    "\"returns_value\":\"0.00\"}"

static void test_daily_across_dst(void **state)
{
    (void)state;
    /* spring: 23:30 GMT on 26 March stays on the 26th; 00:30 BST on the 28th
     * (23:30 UTC on the 27th) is the 28th */
    expect_json(query("stats.daily", "from", "2011-03-26", "to", "2011-03-29", NULL),
                "{\"from\":\"2011-03-26\",\"to\":\"2011-03-29\",\"days\":["
                "{\"date\":\"2011-03-26\",\"orders\":1,\"revenue\":\"40.74\",\"units\":14,"
                "\"returns\":0,\"returns_value\":\"0.00\"}," ZERO_DAY("2011-03-27") ","
                "{\"date\":\"2011-03-28\",\"orders\":1,\"revenue\":\"11.10\",\"units\":38,"
                "\"returns\":1,\"returns_value\":\"5.10\"}," ZERO_DAY("2011-03-29") "]}");
    /* autumn: 23:30 UTC on 29 October is 00:30 BST on the 30th; 23:30 UTC on
     * the 30th is 23:30 GMT on the 30th; the cancellation of 2 November
     * reverses revenue and units on the 30th, where the order was placed */
    expect_json(query("stats.daily", "from", "2011-10-29", "to", "2011-11-02", NULL),
                "{\"from\":\"2011-10-29\",\"to\":\"2011-11-02\",\"days\":[" ZERO_DAY(
                    "2011-10-29") ","
                                  "{\"date\":\"2011-10-30\",\"orders\":2,\"revenue\":\"7.401\","
                                  "\"units\":5,\"returns\":0,\"returns_value\":\"0.00\"},"
                                  ZERO_DAY("2011-10-31") "," ZERO_DAY("2011-11-01") "," ZERO_DAY(
                                      "2011-11-02") "]}");
    /* one day; leap day; a 400-day range is the most allowed */
    expect_json(query("stats.daily", "from", "2011-06-01", "to", "2011-06-01", NULL),
                "{\"from\":\"2011-06-01\",\"to\":\"2011-06-01\",\"days\":["
                "{\"date\":\"2011-06-01\",\"orders\":1,\"revenue\":\"7.401\",\"units\":1,"
                "\"returns\":0,\"returns_value\":\"0.00\"}]}");
    json_t *o = query("stats.daily", "from", "2012-02-28", "to", "2012-03-01", NULL);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(o, "days"), 1), "date")),
                        "2012-02-29");
    json_decref(o);
    o = query("stats.daily", "from", "2011-01-01", "to", "2012-02-04", NULL);
    json_t *days = json_object_get(o, "days");
    assert_int_equal(json_array_size(days), 400);
    assert_string_equal(json_string_value(json_object_get(json_array_get(days, 399), "date")),
                        "2012-02-04");
    int64_t orders = 0;
    for (size_t i = 0; i < json_array_size(days); i++)
        orders += json_integer_value(json_object_get(json_array_get(days, i), "orders"));
    assert_int_equal(orders, 5);
    json_decref(o);

    struct err e;
    assert_int_equal(query_fails(&e, "stats.daily", "from", "2011-01-01", "to", "2012-02-05",
                                 NULL),
                     ERR_INVALID);
    assert_int_equal(query_fails(&e, "stats.daily", "from", "2011-03-02", "to", "2011-03-01",
                                 NULL),
                     ERR_INVALID);
    static const char *const bad[] = {"2011-02-29", "2011-02-30", "2011-13-01", "2011-00-10",
                                      "2011-01-00", "2011-1-01",  "20110101",   "2011-01-01x",
                                      "2011/01/01", "",           "abcd-ef-gh", "2011-04-31"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        expect_code(ERR_INVALID, "stats.daily", "from", bad[i], "to", "2011-12-31", NULL);
        expect_code(ERR_INVALID, "stats.daily", "from", "2011-01-01", "to", bad[i], NULL);
    }
    expect_code(ERR_INVALID, "stats.daily", "to", "2011-12-31", NULL);
    expect_code(ERR_INVALID, "stats.daily", "from", "2011-12-31", NULL);
    expect_code(ERR_INVALID, "stats.daily", NULL);
}

/* Client-chosen ids holding ':' or '%' cannot reach another key. */
static void test_hostile_ids(void **state)
{
    (void)state;
    json_decref(order_placed("X1", "17850", "United Kingdom", "2011-01-05T10:00:00+00:00",
                             json_pack("[o]", line("S:1", "s", 1, "1"))));
    json_decref(order_placed("X2", "17850:orders", "United Kingdom:customers",
                             "2011-01-05T11:00:00+00:00",
                             json_pack("[o]", line("S%3A1", "t", 2, "1"))));
    cart_opened("C:qty", NULL, NULL, "2011-01-05T09:00:00+00:00");
    item_added("C", "Z", "z", 1, "1", "2011-01-05T09:01:00+00:00");
    cart_opened("C", NULL, NULL, "2011-01-05T09:00:00+00:00");
    item_added("C", "Y", "y", 1, "1", "2011-01-05T09:01:00+00:00");
    json_t *o = query("customer.get", "customer_id", "17850:orders", NULL);
    assert_int_equal(json_integer_value(json_object_get(o, "orders")), 1);
    json_decref(o);
    o = query("customer.orders", "customer_id", "17850", NULL);
    assert_int_equal(json_integer_value(json_object_get(o, "total")), 1);
    json_decref(o);
    o = query("product.get", "sku", "S:1", NULL);
    assert_int_equal(json_integer_value(json_object_get(o, "units")), 1);
    json_decref(o);
    o = query("product.get", "sku", "S%3A1", NULL);
    assert_int_equal(json_integer_value(json_object_get(o, "units")), 2);
    json_decref(o);
    o = query("cart.get", "cart_id", "C", NULL);
    assert_int_equal(json_array_size(json_object_get(o, "lines")), 2);
    json_decref(o);
    o = query("stats.countries", NULL);
    assert_int_equal(json_array_size(json_object_get(o, "countries")), 2);
    json_decref(o);
}

/* A damaged read model gives a problem, never a crash or a wrong figure. */
static void test_damaged_read_model(void **state)
{
    (void)state;
    char *key = key_of(PROJ_PRODUCT, "product:85123A");
    test_redis("HSET %s units 12abc", key);
    expect_code(ERR_INTERNAL, "product.get", "sku", "85123A", NULL);
    test_redis("HSET %s units 99999999999999999999", key);
    expect_code(ERR_INTERNAL, "product.get", "sku", "85123A", NULL);
    test_redis("DEL %s", key);
    test_redis("SET %s oops", key);
    expect_code(ERR_INTERNAL, "product.get", "sku", "85123A", NULL);
    expect_code(ERR_INTERNAL, "product.top", NULL);
    free(key);

    key = key_of(PROJ_STATS, "summary");
    test_redis("DEL %s", key);
    test_redis("SET %s 1", key);
    expect_code(ERR_INTERNAL, "stats.summary", NULL);
    free(key);

    key = key_of(PROJ_ORDER, "order:536365");
    test_redis("HSET %s lines {not-json", key);
    expect_code(ERR_INTERNAL, "order.get", "order_id", "536365", NULL);
    free(key);

    /* an order listed for a customer but not (yet) in order_view */
    key = key_of(PROJ_ORDER, "order:536366");
    test_redis("DEL %s", key);
    free(key);
    expect_json(query("customer.orders", "customer_id", "17850", "limit", "1", NULL),
                "{\"customer_id\":\"17850\",\"total\":2,\"orders\":["
                "{\"order_id\":\"536366\",\"status\":null,\"total\":null,\"placed_at\":null}]}");
    /* last_order_at falls back to the projection's own field */
    json_t *o = query("customer.get", "customer_id", "17850", NULL);
    assert_string_equal(json_string_value(json_object_get(o, "last_order_at")),
                        "2011-03-26T23:30:00+00:00");
    json_decref(o);
}

static void test_redis_unreachable(void **state)
{
    (void)state;
    const char *names[] = {"sku"}, *values[] = {"85123A"};
    struct err e;
    json_t *out = NULL;
    assert_int_equal(query_call(R, find_query("product.get"), NULL, NULL, names, values, 1, &out, NULL, &e),
                     ERR_UNAVAILABLE);
    assert_null(out);
    assert_int_equal(query_call(R, find_query("stats.summary"), NULL, NULL, NULL, NULL, 0, &out, NULL, &e),
                     ERR_UNAVAILABLE);
    assert_int_equal(query_call(R, find_query("stats.countries"), NULL, NULL, NULL, NULL, 0, &out, NULL, &e),
                     ERR_UNAVAILABLE);
    assert_null(out);
}

/* ---------- pipelined reads (fn_pipeline_begin/end) ---------- */

/* What the pipeline test functions saw, for the test to check. */
static struct {
    struct fn_hash h;
    struct fn_members z, m;
    const char *v[2];
    int64_t zcard;
    int exists;
    size_t z_n_inside; /* fn_members.n right after the zrange was queued */
    int end_rc;
    /* copies of what the replies said: they live in the query's arena,
     * freed when query_call returns */
    char total[16], z0[16], v0[16], m0[16];
    int64_t z2_score;
    int v1_null;
} PL;

static void pl_copy(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "(null)");
}

static const char *const pl_fields[] = {"status", "nope"};

/* Six reads of several kinds in one pipeline, nested once. */
static int pl_all(struct fn_query_ctx *q, json_t **out, struct err *e)
{
    (void)out;
    fn_pipeline_begin(q);
    fn_hgetall(q, PROJ_CART, "pl:h", &PL.h, e);
    fn_pipeline_begin(q); /* nested: only the outer end sends */
    fn_zrange(q, PROJ_CART, "pl:z", 0, -1, FN_SCORES, &PL.z, e);
    PL.z_n_inside = PL.z.n;
    fn_pipeline_end(q, e);
    PL.z_n_inside += PL.z.n; /* still nothing: the outer pipeline is open */
    fn_hmget(q, PROJ_CART, "pl:h", 2, pl_fields, PL.v, e);
    fn_zcard(q, PROJ_CART, "pl:z", &PL.zcard, e);
    fn_exists(q, PROJ_CART, "pl:h", &PL.exists, e);
    fn_smembers(q, PROJ_CART, "pl:s", &PL.m, e);
    PL.end_rc = fn_pipeline_end(q, e);
    if (PL.end_rc == 0) {
        pl_copy(PL.total, sizeof PL.total, fn_hash_get(&PL.h, "total"));
        pl_copy(PL.z0, sizeof PL.z0, PL.z.n ? PL.z.m[0].member : NULL);
        PL.z2_score = PL.z.n > 2 ? PL.z.m[2].score : -1;
        pl_copy(PL.v0, sizeof PL.v0, PL.v[0]);
        PL.v1_null = PL.v[1] == NULL;
        pl_copy(PL.m0, sizeof PL.m0, PL.m.n ? PL.m.m[0].member : NULL);
    }
    return PL.end_rc;
}

/* A read of a key of the wrong type between two good ones. */
static int pl_wrongtype(struct fn_query_ctx *q, json_t **out, struct err *e)
{
    (void)out;
    fn_pipeline_begin(q);
    fn_hgetall(q, PROJ_CART, "pl:h", &PL.h, e);
    fn_zrange(q, PROJ_CART, "pl:h", 0, -1, 0, &PL.z, e); /* a hash */
    fn_smembers(q, PROJ_CART, "pl:s", &PL.m, e);
    return fn_pipeline_end(q, e);
}

/* A projection the generation lacks, inside a pipeline. */
static int pl_unknown(struct fn_query_ctx *q, json_t **out, struct err *e)
{
    (void)out;
    fn_pipeline_begin(q);
    fn_smembers(q, PROJ_CART, "pl:s", &PL.m, e);
    fn_smembers(q, "no_such_projection", "pl:s", &PL.m, e);
    return fn_pipeline_end(q, e);
}

/* Returns with its pipeline open: the platform must drop the replies. */
static int pl_left_open(struct fn_query_ctx *q, json_t **out, struct err *e)
{
    (void)out;
    struct fn_members local; /* gone when this returns: never written after */
    fn_pipeline_begin(q);
    fn_smembers(q, PROJ_CART, "pl:s", &local, e);
    fn_zrange(q, PROJ_CART, "pl:z", 0, -1, 0, &local, e);
    return err_set(e, ERR_NOT_FOUND, "gave up");
}

static int pl_end_alone(struct fn_query_ctx *q, json_t **out, struct err *e)
{
    (void)out;
    return fn_pipeline_end(q, e);
}

static int pl_run(int (*run)(struct fn_query_ctx *, json_t **, struct err *), struct err *e)
{
    const struct fn_query fq = {FN_ABI_VERSION, "test.pipeline", "/test", run, {0}};
    json_t *out = NULL;
    int rc = query_call(R, &fq, redis, NULL, NULL, NULL, 0, &out, NULL, e);
    json_decref(out);
    return rc;
}

static void test_pipeline(void **state)
{
    (void)state;
    char *h = key_of(PROJ_CART, "pl:h"), *z = key_of(PROJ_CART, "pl:z"),
         *m = key_of(PROJ_CART, "pl:s");
    test_redis("HSET %s status open total 1250", h);
    test_redis("ZADD %s 3 c 1 a 2 b", z);
    test_redis("SADD %s only", m);
    struct err e = {0};
    memset(&PL, 0, sizeof PL);
    assert_int_equal(pl_run(pl_all, &e), 0);
    assert_int_equal(PL.end_rc, 0);
    assert_int_equal(PL.z_n_inside, 0); /* queued, not read, until the end */
    assert_int_equal(PL.h.n, 2);
    assert_string_equal(PL.total, "1250");
    assert_int_equal(PL.z.n, 3);
    assert_string_equal(PL.z0, "a");
    assert_int_equal(PL.z2_score, 3);
    assert_string_equal(PL.v0, "open");
    assert_true(PL.v1_null);
    assert_int_equal(PL.zcard, 3);
    assert_int_equal(PL.exists, 1);
    assert_int_equal(PL.m.n, 1);
    assert_string_equal(PL.m0, "only");

    /* the first error is returned; every reply is read, so the connection
     * stays in step for the next query */
    assert_int_equal(pl_run(pl_wrongtype, &e), ERR_INTERNAL);
    assert_non_null(strstr(e.msg, "WRONGTYPE"));
    assert_non_null(strstr(e.msg, h));
    assert_int_equal(pl_run(pl_unknown, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "no_such_projection"));
    assert_int_equal(pl_run(pl_left_open, &e), ERR_NOT_FOUND);
    assert_int_equal(pl_run(pl_end_alone, &e), ERR_INTERNAL);
    assert_non_null(strstr(e.msg, "without fn_pipeline_begin"));
    memset(&PL, 0, sizeof PL);
    assert_int_equal(pl_run(pl_all, &e), 0);
    assert_int_equal(PL.h.n, 2);
    assert_int_equal(PL.z.n, 3);
    assert_int_equal(PL.m.n, 1);
    /* a live-build pointer that never parses is read again at every key the
     * query names: inside a pipeline that read must wait, or it takes a
     * pipelined reply for its own */
    char *live = xasprintf("cqrsd:live:%s:v%d", PROJ_CART, reg_projection_find(R, PROJ_CART)->p->version);
    test_redis("SET %s not-a-build", live);
    poll(NULL, 0, RM_LIVE_REFRESH_MS + 100); /* the cached build is due for a refresh */
    memset(&PL, 0, sizeof PL);
    assert_int_equal(pl_run(pl_all, &e), 0);
    assert_int_equal(PL.h.n, 2);
    assert_int_equal(PL.z.n, 3);
    assert_int_equal(PL.zcard, 3);
    assert_int_equal(PL.m.n, 1);
    assert_string_equal(PL.total, "1250");
    assert_string_equal(PL.m0, "only");
    test_redis("DEL %s", live);
    free(live);
    /* and the queries of the module still read right after all that */
    expect_code(ERR_NOT_FOUND, "cart.get", "cart_id", "nobody", NULL);
    free(h);
    free(z);
    free(m);
}

/* The error replies a writer waits on, and the ones it must not: shapes as
 * Redis 7 and Redis 6 send them, and our scripts' REFUSED replies quoting a
 * code inside a key */
static void test_transient_errors(void **state)
{
    (void)state;
    static const char *const wait[] = {
        "LOADING Redis is loading the dataset in memory",
        "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
        "READONLY You can't write against a read only replica. script: 1a2b, on @user_script:1.",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "NOREPLICAS Not enough good replicas to write.",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "OOM command not allowed when used memory > 'maxmemory'.",
        ("ERR Error running script (call to f_1a2b): @user_script:12: -READONLY You can't write "
         "against a read only replica."),
    };
    static const char *const refuse[] = {
        "REFUSED HINCRBY on notes:v1:note:x-BUSY-wrong, a string",
        "REFUSED HINCRBY on c:v1:BUSY LOADING, not an integer",
        "CHECKPOINT c:v1 is \"OOM 3\", batch expected \"2\"",
        ("ERR Error running script (call to f_1a2b): @user_script:3: Script attempted to access "
         "nonexistent global variable 'BUSY'"),
        "BUSYKEY Target key name already exists.",
        "ERR unknown command 'READONLY'",
        "",
    };
    for (size_t i = 0; i < sizeof wait / sizeof *wait; i++)
        if (!rm_error_transient(wait[i]))
            fail_msg("taken as permanent: %s", wait[i]);
    for (size_t i = 0; i < sizeof refuse / sizeof *refuse; i++)
        if (rm_error_transient(refuse[i]))
            fail_msg("taken as transient: %s", refuse[i]);
    assert_int_equal(rm_error_transient(NULL), 0);
}

static void test_registries(void **state)
{
    (void)state;
    static const char *const projections[] = {PROJ_CART, PROJ_ORDER, PROJ_CUSTOMER, PROJ_PRODUCT,
                                              PROJ_STATS};
    for (size_t i = 0; i < sizeof projections / sizeof *projections; i++) {
        const struct reg_projection *rp = reg_projection_find(R, projections[i]);
        assert_non_null(rp);
        assert_non_null(rp->p->on);
        assert_non_null(rp->p->on[0].type);
        assert_true(rp->p->version >= 1);
    }
    static const char *const routes[][2] = {
        {"cart.get", "/carts/{cart_id}"},
        {"order.get", "/orders/{order_id}"},
        {"customer.get", "/customers/{customer_id}"},
        {"customer.orders", "/customers/{customer_id}/orders"},
        {"product.get", "/products/{sku}"},
        {"product.top", "/products/top"},
        {"stats.summary", "/stats/summary"},
        {"stats.daily", "/stats/daily"},
        {"stats.countries", "/stats/countries"},
    };
    size_t n = R->nqueries;
    assert_int_equal(n, sizeof routes / sizeof *routes);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(find_query(routes[i][0])->route, routes[i][1]);
}

int main(void)
{
    const char *url = getenv("REDIS_URL");
    if (!url || !*url) {
        fprintf(stderr, "test_readmodels: REDIS_URL is not set, skipping\n");
        return 77;
    }
    rtime_init(); /* business days in Europe/London (or CQRSD_TIMEZONE) */
    const char *mods = getenv("CQRSD_MODULES");
    struct err e = {0};
    if (reg_open(mods && *mods ? mods : "build/modules/ecommerce.so", &R, &e)) {
        fprintf(stderr, "test_readmodels: %s\n", e.msg);
        return 1;
    }
    redis = test_connect(url);
    if (!redis)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registries),
        cmocka_unit_test(test_transient_errors),
        cmocka_unit_test_setup(test_empty_read_models, flush_db),
        cmocka_unit_test_setup(test_cart, load_fixture),
        cmocka_unit_test_setup(test_cart_guest_and_readd, flush_db),
        cmocka_unit_test_setup(test_orders, load_fixture),
        cmocka_unit_test_setup(test_customers, load_fixture),
        cmocka_unit_test_setup(test_customer_with_returns_only, flush_db),
        cmocka_unit_test_setup(test_products, load_fixture),
        cmocka_unit_test_setup(test_top_ties, flush_db),
        cmocka_unit_test_setup(test_summary_and_countries, load_fixture),
        cmocka_unit_test_setup(test_daily_across_dst, load_fixture),
        cmocka_unit_test_setup(test_hostile_ids, flush_db),
        cmocka_unit_test_setup(test_damaged_read_model, load_fixture),
        cmocka_unit_test(test_redis_unreachable),
        cmocka_unit_test_setup(test_pipeline, flush_db),
    };
    int failed = cmocka_run_group_tests_name("readmodels", tests, NULL, flush_db);
    redisFree(redis);
    reg_release(R);
    return failed ? 1 : 0;
}
