/* tests/http/test_limits.c — per-function limits and counters against a real
 * server of its own (127.0.0.1:18092, beside make test's), started with
 *   CQRSD_WORKERS=2
 *   CQRSD_FN_CART_ADD_ITEM_CONCURRENCY=1, CQRSD_FN_CART_ADD_ITEM_TIMEOUT_MS=1500
 *   CQRSD_FN_CART_GET_TIMEOUT_MS=400
 * Functions are held in flight for real: a transaction of the test's own
 * locks the cart's row in `streams`, so cart.add_item waits inside its
 * append, on a worker, for as long as the test says.
 *
 *   concurrency      with one add_item in flight, another gets 429 with
 *                    Retry-After and a problem naming the limit, while
 *                    queries and other commands answer 200
 *   timeout          the held add_item is answered 504 at its deadline; once
 *                    the lock goes, it completes, and a retry with its
 *                    Idempotency-Key gets the stored 200: stored once
 *   queued           both workers held: a query queued past its timeout is
 *                    answered 503 (never run)
 *   counters         GET /admin/functions shows limits, in-flight,
 *                    invocations, errors and rejections as they happened
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "core/util.h"
#include "tests/lib/th.h"

#define ADDR "127.0.0.1:18092"
#define BASE "http://" ADDR

static pid_t server;
static char run[16];
static PGconn *pg;

static void sql(PGconn *c, const char *q)
{
    PQclear(th_sql(c, "%s", q));
}

static PGconn *db(void)
{
    PGconn *c = PQconnectdb(getenv("DATABASE_URL"));
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("cannot connect to PostgreSQL: %s", PQerrorMessage(c));
    return c;
}

/* A connection holding the streams row of stream_id locked (or, for a stream
 * not there yet, holding an uncommitted insert of it), until sql(c, "COMMIT"). */
static PGconn *hold(const char *stream_id, int insert)
{
    PGconn *c = db();
    sql(c, "BEGIN");
    char *q = insert ? xasprintf("INSERT INTO streams VALUES ('%s', 'cart', 1)", stream_id)
                     : xasprintf("SELECT 1 FROM streams WHERE stream_id = '%s' FOR UPDATE",
                                 stream_id);
    sql(c, q);
    free(q);
    return c;
}

static long post(const char *path, const char *body, const char *key, struct th_reply *out)
{
    struct th_reply r = th_call(NULL, BASE, "POST", path, body, key, 20);
    long st = r.status;
    if (out)
        *out = r;
    else
        th_reply_free(&r);
    return st;
}

static long get(const char *path)
{
    struct th_reply r = th_call(NULL, BASE, "GET", path, NULL, NULL, 20);
    th_reply_free(&r);
    return r.status;
}

static json_t *function(const char *name)
{
    return th_function(BASE, name);
}

static long long counter(const char *name, const char *field)
{
    return th_counter(BASE, name, field);
}

static void wait_in_flight(const char *name, long long n)
{
    for (int i = 0; i < 100; i++) {
        if (counter(name, "in_flight") == n)
            return;
        usleep(50000);
    }
    fail_msg("%s never had %lld requests in flight", name, n);
}

struct call {
    pthread_t t;
    const char *method;
    char path[128], body[256], key[64];
    struct th_reply r;
    int64_t ms; /* how long the answer took */
};

static void *call_main(void *arg)
{
    struct call *c = arg;
    int64_t t0 = util_now_ms();
    c->r = th_call(NULL, BASE, c->method, c->path, c->body[0] ? c->body : NULL,
                   c->key[0] ? c->key : NULL, 30);
    c->ms = util_now_ms() - t0;
    return NULL;
}

static void start_call(struct call *c)
{
    pthread_create(&c->t, NULL, call_main, c);
}

static char *cart_path(const char *cart, const char *suffix)
{
    return xasprintf("/carts/%s-%s%s", run, cart, suffix);
}

static void open_cart(const char *cart)
{
    char body[128];
    snprintf(body, sizeof body, "{\"cart_id\":\"%s-%s\"}", run, cart);
    assert_int_equal(post("/carts", body, NULL, NULL), 201);
}

static void concurrency_and_timeout(void **state)
{
    (void)state;
    open_cart("held");
    open_cart("other");
    long long rejections = counter("cart.add_item", "rejections");
    json_t *f = function("cart.add_item");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(f, "limits"),
                                                        "concurrency")), 1);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(f, "limits"),
                                                        "timeout_ms")), 1500);
    assert_string_equal(json_string_value(json_object_get(f, "module")), "ecommerce");
    json_decref(f);

    char sid[64];
    snprintf(sid, sizeof sid, "cart-%s-held", run);
    PGconn *lock = hold(sid, 0);
    struct call held = {.method = "POST"};
    char *p = cart_path("held", "/items");
    snprintf(held.path, sizeof held.path, "%s", p);
    free(p);
    snprintf(held.body, sizeof held.body, "{\"sku\":\"H\",\"quantity\":1,\"unit_price\":\"1.00\"}");
    snprintf(held.key, sizeof held.key, "limits-%s-held", run);
    start_call(&held);
    wait_in_flight("cart.add_item", 1);

    /* over the limit: 429 at once, with Retry-After, for this function only */
    struct th_reply r;
    p = cart_path("other", "/items");
    assert_int_equal(post(p, "{\"sku\":\"O\",\"quantity\":1,\"unit_price\":\"1.00\"}", NULL, &r),
                     429);
    free(p);
    assert_string_equal(r.retry_after, "1");
    assert_non_null(strstr(r.body, "/problems/throttled"));
    assert_non_null(strstr(r.body, "cart.add_item is at its concurrency limit of 1"));
    th_reply_free(&r);
    assert_int_equal(counter("cart.add_item", "rejections"), rejections + 1);
    p = cart_path("other", "");
    assert_int_equal(get(p), 200);
    free(p);
    open_cart("third"); /* another command serves too */

    /* the held one is answered 504 at its deadline (1500 ms) */
    pthread_join(held.t, NULL);
    assert_int_equal(held.r.status, 504);
    assert_true(held.ms >= 1400 && held.ms < 10000);
    assert_non_null(strstr(held.r.body, "did not finish within its timeout of 1500 ms"));
    assert_non_null(strstr(held.r.body, "Idempotency-Key"));
    th_reply_free(&held.r);

    /* the function still completes once the lock goes; its key tells the outcome */
    sql(lock, "COMMIT");
    PQfinish(lock);
    wait_in_flight("cart.add_item", 0);
    p = cart_path("held", "/items");
    assert_int_equal(post(p, held.body, held.key, &r), 200);
    free(p);
    json_t *reply = json_loads(r.body, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(reply, "version")), 2);
    json_decref(reply);
    th_reply_free(&r);
    assert_int_equal(
        th_sql_int(pg, "SELECT count(*) FROM events WHERE stream_id = '%s' AND type = 'ItemAdded'",
                   sid),
        1);
    assert_true(counter("cart.add_item", "invocations") >= 2);
    /* group commit's counters: one more command alone is one more group of one */
    json_t *before = th_get_json(BASE, "/admin/functions");
    p = cart_path("held", "/items");
    assert_int_equal(post(p, "{\"sku\":\"G\",\"quantity\":1,\"unit_price\":\"1.00\"}", NULL, NULL),
                     200);
    free(p);
    json_t *after = th_get_json(BASE, "/admin/functions");
    json_t *gb = json_object_get(before, "group_commit"), *ga = json_object_get(after, "group_commit");
    assert_int_equal(json_integer_value(json_object_get(ga, "commands")),
                     json_integer_value(json_object_get(gb, "commands")) + 1);
    assert_int_equal(json_integer_value(json_object_get(ga, "groups")),
                     json_integer_value(json_object_get(gb, "groups")) + 1);
    json_decref(before);
    json_decref(after);
    /* the 504 is its one error; its late 200 is not counted again */
    assert_int_equal(counter("cart.add_item", "errors"), 1);
}

static void queued_past_the_timeout(void **state)
{
    (void)state;
    open_cart("held2");
    char held_sid[64], new_sid[64];
    snprintf(held_sid, sizeof held_sid, "cart-%s-held2", run);
    snprintf(new_sid, sizeof new_sid, "cart-%s-new", run);
    PGconn *a = hold(held_sid, 0), *b = hold(new_sid, 1);
    struct call c1 = {.method = "POST"}, c2 = {.method = "POST"};
    char *p = cart_path("held2", "/items");
    snprintf(c1.path, sizeof c1.path, "%s", p);
    free(p);
    snprintf(c1.body, sizeof c1.body, "{\"sku\":\"H\",\"quantity\":1,\"unit_price\":\"1.00\"}");
    snprintf(c2.path, sizeof c2.path, "/carts");
    snprintf(c2.body, sizeof c2.body, "{\"cart_id\":\"%s-new\"}", run);
    start_call(&c1);
    start_call(&c2);
    wait_in_flight("cart.add_item", 1);
    wait_in_flight("cart.open", 1);

    /* both workers held: a query waits in the queue past its 400 ms */
    long long before = counter("cart.get", "invocations");
    long long errors = counter("cart.get", "errors");
    struct th_reply r;
    int64_t t0 = util_now_ms();
    p = cart_path("held2", "");
    r = th_call(NULL, BASE, "GET", p, NULL, NULL, 20);
    free(p);
    int64_t ms = util_now_ms() - t0;
    assert_int_equal(r.status, 503);
    assert_string_equal(r.retry_after, "1");
    assert_non_null(strstr(r.body, "past the timeout of cart.get (400 ms); it was not run"));
    assert_true(ms >= 350 && ms < 5000);
    th_reply_free(&r);

    sql(a, "ROLLBACK");
    sql(b, "ROLLBACK");
    PQfinish(a);
    PQfinish(b);
    pthread_join(c1.t, NULL);
    pthread_join(c2.t, NULL);
    assert_int_equal(c1.r.status, 200);
    assert_int_equal(c2.r.status, 201);
    th_reply_free(&c1.r);
    th_reply_free(&c2.r);
    /* the expired query never ran */
    wait_in_flight("cart.get", 0);
    assert_int_equal(counter("cart.get", "invocations"), before);
    assert_int_equal(counter("cart.get", "errors"), errors + 1); /* its 503 */
    p = cart_path("held2", "");
    assert_int_equal(get(p), 200);
    free(p);
    assert_int_equal(counter("cart.get", "invocations"), before + 1);
}

static int setup(void **state)
{
    (void)state;
    static const char *const env[] = {
        "CQRSD_WORKERS=2",
        "CQRSD_FN_CART_ADD_ITEM_CONCURRENCY=1",
        "CQRSD_FN_CART_ADD_ITEM_TIMEOUT_MS=1500",
        "CQRSD_FN_CART_GET_TIMEOUT_MS=400",
        NULL,
    };
    server = th_start_server(ADDR, env);
    pg = db();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    th_stop_server(server);
    PQfinish(pg);
    return 0;
}

int main(void)
{
    if (!getenv("DATABASE_URL") || !getenv("CQRSD_BIN")) {
        fprintf(stderr, "test_limits: needs DATABASE_URL and CQRSD_BIN (run it with make test)\n");
        return 1;
    }
    snprintf(run, sizeof run, "lim%lx", (unsigned long)time(NULL) ^ (unsigned long)getpid());
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(concurrency_and_timeout),
        cmocka_unit_test(queued_past_the_timeout),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
