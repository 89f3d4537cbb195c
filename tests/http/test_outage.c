/* tests/http/test_outage.c — outages of PostgreSQL and Redis under a running
 * server (issue 3, point 4):
 *  - PostgreSQL stopped: commands answer 503 with Retry-After at once (no
 *    hang, no crash), queries still answer from Redis, /readyz says "down";
 *    started again: the server reconnects by itself, the command retried
 *    with its Idempotency-Key lands once, and the projections (re-LISTENed)
 *    catch up;
 *  - Redis stopped: queries answer 503 with Retry-After, commands still
 *    land; started again: the projections catch up with what was appended;
 *  - Redis flushed: the projections rebuild from the first event by
 *    themselves, and the read models answer as before.
 * Runs under tools/test.sh: CQRSD_URL, CQRSD_SERVICES, CQRSD_SERVICES_ARGS,
 * REDIS_URL. */
#include <curl/curl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/rm.h"
#include "core/util.h"
#include "tests/lib/th.h"

static const char *url;
static char run_id[9];

/* One request, bounded to 15 s: a hang fails the test. */
static struct th_reply call(const char *method, const char *path, const char *body, const char *key)
{
    return th_call(NULL, url, method, path, body, key, 15);
}

static void services(const char *verb)
{
    char *cmd = xasprintf("bash %s %s %s", getenv("CQRSD_SERVICES"), verb,
                          getenv("CQRSD_SERVICES_ARGS"));
    int rc = system(cmd);
    free(cmd);
    assert_int_equal(rc, 0);
}

static void expect_503(struct th_reply r, const char *what)
{
    if (r.status != 503 || !*r.retry_after || !r.body || !strstr(r.body, "\"status\":503"))
        fail_msg("%s: expected 503 problem with Retry-After, got %ld (Retry-After \"%s\") %s", what,
                 r.status, r.retry_after, r.body ? r.body : "");
    free(r.body);
}

/* Retries a command with its key, as a client would, until it is not a 503. */
static long until_not_503(const char *method, const char *path, const char *body, const char *key)
{
    for (int i = 0; i < 60; i++) {
        struct th_reply r = call(method, path, body, key);
        th_reply_free(&r);
        if (r.status != 503 && r.status != 0)
            return r.status;
        sleep(1);
    }
    return 503;
}

static void postgres_outage(void **st)
{
    (void)st;
    char path[128], body[160], key[64];
    snprintf(body, sizeof body, "{\"cart_id\":\"pg%s\",\"customer_id\":\"pg%s\"}", run_id, run_id);
    services("stop-pg");
    snprintf(key, sizeof key, "outage-open-%s", run_id);
    expect_503(call("POST", "/carts", body, key), "command while PostgreSQL is down");
    struct th_reply q = call("GET", "/stats/summary", NULL, NULL);
    assert_int_equal(q.status, 200); /* queries read Redis */
    free(q.body);
    expect_503(call("GET", "/streams/cart-nothing", NULL, NULL), "/streams while PostgreSQL is down");
    struct th_reply h = call("GET", "/readyz", NULL, NULL);
    assert_int_equal(h.status, 503);
    assert_non_null(strstr(h.body, "\"postgres\":\"down\""));
    free(h.body);
    services("start-pg");
    assert_int_equal(until_not_503("POST", "/carts", body, key), 201);
    assert_int_equal(until_not_503("POST", "/carts", body, key), 201); /* the same reply, once */
    snprintf(path, sizeof path, "/carts/pg%s/items", run_id);
    assert_int_equal(until_not_503("POST", path, "{\"sku\":\"pg-sku\",\"quantity\":3,\"unit_price\":\"0.10\"}", NULL), 200);
    snprintf(path, sizeof path, "/carts/pg%s/checkout", run_id);
    assert_int_equal(until_not_503("POST", path, "{}", NULL), 200);
    th_wait_caught_up(url, 60);
    snprintf(path, sizeof path, "/orders/pg%s", run_id);
    json_t *order = th_get_json(url, path);
    assert_string_equal(json_string_value(json_object_get(order, "total")), "0.30");
    json_decref(order);
    snprintf(path, sizeof path, "/streams/cart-pg%s", run_id);
    json_t *s = th_get_json(url, path);
    assert_int_equal(json_array_size(json_object_get(s, "events")), 3); /* opened once */
    json_decref(s);
}

static void redis_outage(void **st)
{
    (void)st;
    char path[128], body[160];
    services("stop-redis");
    expect_503(call("GET", "/stats/summary", NULL, NULL), "query while Redis is down");
    snprintf(body, sizeof body, "{\"cart_id\":\"rd%s\",\"customer_id\":\"rd%s\"}", run_id, run_id);
    struct th_reply r = call("POST", "/carts", body, NULL);
    assert_int_equal(r.status, 201); /* commands need no Redis */
    free(r.body);
    snprintf(path, sizeof path, "/carts/rd%s/items", run_id);
    r = call("POST", path, "{\"sku\":\"rd-sku\",\"quantity\":2,\"unit_price\":\"0.20\"}", NULL);
    assert_int_equal(r.status, 200);
    free(r.body);
    services("start-redis");
    th_wait_caught_up(url, 60);
    snprintf(path, sizeof path, "/carts/rd%s", run_id);
    json_t *cart = th_get_json(url, path);
    assert_string_equal(json_string_value(json_object_get(cart, "total")), "0.40");
    json_decref(cart);
}

static void redis_flushed(void **st)
{
    (void)st;
    char opath[128], upath[128], rpath[128];
    th_wait_caught_up(url, 60);
    snprintf(opath, sizeof opath, "/orders/pg%s", run_id);
    snprintf(upath, sizeof upath, "/customers/pg%s", run_id);
    snprintf(rpath, sizeof rpath, "/carts/rd%s", run_id);
    const char *paths[] = {"/stats/summary", "/stats/countries", "/products/top?by=revenue&limit=20",
                           opath, upath, rpath, "/products/pg-sku"};
    enum { N = sizeof paths / sizeof paths[0] };
    json_t *before[N];
    for (int i = 0; i < N; i++)
        before[i] = th_get_json(url, paths[i]);
    struct err e = {0};
    redisContext *rc = rm_connect(getenv("REDIS_URL"), 5000, &e);
    assert_non_null(rc);
    freeReplyObject(redisCommand(rc, "FLUSHALL"));
    redisFree(rc);
    th_wait_caught_up(url, 60); /* checkpoints gone: the runner replays from the first event */
    for (int i = 0; i < N; i++) {
        json_t *after = th_get_json(url, paths[i]);
        if (!json_equal(before[i], after)) {
            char *a = json_dumps(before[i], JSON_COMPACT), *b = json_dumps(after, JSON_COMPACT);
            fail_msg("%s differs after the rebuild:\nbefore %.600s\nafter  %.600s", paths[i], a, b);
        }
        json_decref(after);
        json_decref(before[i]);
    }
}

int main(void)
{
    url = getenv("CQRSD_URL");
    if (!url || !getenv("CQRSD_SERVICES") || !getenv("CQRSD_SERVICES_ARGS") || !getenv("REDIS_URL")) {
        fprintf(stderr, "test_outage: run it with make test (needs CQRSD_URL, CQRSD_SERVICES, "
                        "CQRSD_SERVICES_ARGS, REDIS_URL)\n");
        return 1;
    }
    char u[37];
    util_uuid4(u);
    snprintf(run_id, sizeof run_id, "%.8s", u);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(postgres_outage),
        cmocka_unit_test(redis_outage),
        cmocka_unit_test(redis_flushed),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
