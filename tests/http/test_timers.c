/* tests/http/test_timers.c — timers, reactors and parked events against real
 * servers, on a database and a Redis database of their own (cqrsd_timers,
 * Redis db 3), so the leases and timers of make test's server stay out of it.
 * The servers load the e-commerce module and tests/modules/notes.so, with
 *   CQRSD_FN_ORDER_PAYMENT_TIMEOUT_DELAY_S=2, CQRSD_FN_CART_ABANDONMENT_DELAY_S=3
 *
 *   unpaid_order_is_cancelled   an unpaid order is cancelled ("not paid in
 *                               time") after its delay; a paid one is not
 *   idle_cart_is_abandoned      an idle cart gets CartAbandoned and reads as
 *                               abandoned; a change makes it open again; a
 *                               checked-out cart is left alone
 *   timers_survive_a_kill       a timer stored, the server SIGKILLed past the
 *                               due time: the next start fires it
 *   fire_once_across_instances  two servers, 20 unpaid orders: each expired
 *                               once, and order.expire ran 20 times in all
 *   reactor_runs_again_safely   the reactor's checkpoint set back (as a crash
 *                               before it moved would leave it): its commands
 *                               answer from their keys, nothing is doubled
 *   failures_are_parked         a poisoned note: the reactor and the
 *                               projection retry, park it and go on with the
 *                               next notes; after the fix, POST
 *                               /admin/parked/{id}/retry applies it once
 *   redis_refusals_are_parked   a note whose read-model key holds a string:
 *                               Redis refuses its writes, the projection
 *                               backs off, parks it after 3 attempts and goes
 *                               on; after the key is fixed, a retry applies it
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "core/util.h"
#include "tests/lib/th.h"

#define ADDR_A "127.0.0.1:18094"
#define ADDR_B "127.0.0.1:18095"
#define BASE_A "http://" ADDR_A
#define BASE_B "http://" ADDR_B
#define TEST_DB "cqrsd_timers"
#define TEST_REDIS_DB 3

static char run[16], dburl[512], redisurl[512], poison[128];
static char env_db[600], env_redis[600], env_mods[1200], env_poison[200];
static PGconn *pg;
static pid_t a_pid, b_pid;

static const char *const *server_env(void)
{
    static const char *env[8];
    env[0] = env_db;
    env[1] = env_redis;
    env[2] = env_mods;
    env[3] = env_poison;
    env[4] = "CQRSD_FN_ORDER_PAYMENT_TIMEOUT_DELAY_S=2";
    env[5] = "CQRSD_FN_CART_ABANDONMENT_DELAY_S=3";
    env[6] = NULL;
    return env;
}


static long post(const char *base, const char *path, const char *body)
{
    struct th_reply r = th_call(NULL, base, "POST", path, body, NULL, 20);
    if (r.status >= 500)
        print_message("POST %s: %ld %s\n", path, r.status, r.body ? r.body : "");
    th_reply_free(&r);
    return r.status;
}

/* Opens cart <run>-<id>, adds one item, checks it out (an order of the
 * same id), and pays it when pay. */
static void order(const char *base, const char *id, int pay)
{
    char body[200], path[200];
    snprintf(body, sizeof body, "{\"cart_id\":\"%s-%s\",\"customer_id\":\"c%s\"}", run, id, run);
    assert_int_equal(post(base, "/carts", body), 201);
    snprintf(path, sizeof path, "/carts/%s-%s/items", run, id);
    assert_int_equal(post(base, path, "{\"sku\":\"S1\",\"quantity\":2,\"unit_price\":\"1.25\"}"),
                     200);
    snprintf(path, sizeof path, "/carts/%s-%s/checkout", run, id);
    assert_int_equal(post(base, path, NULL), 200);
    if (pay) {
        snprintf(path, sizeof path, "/orders/%s-%s/payments", run, id);
        assert_int_equal(post(base, path, "{\"amount\":\"2.50\"}"), 200);
    }
}

/* Events of type in stream <category>-<run>-<id>. */
static long long events(const char *category, const char *id, const char *type)
{
    return th_sql_int(pg, "SELECT count(*) FROM events WHERE stream_id = '%s-%s-%s' AND type = '%s'",
                 category, run, id, type);
}

/* Waits until events(...) == n, at most seconds. */
static void wait_events(const char *category, const char *id, const char *type, long long n,
                        int seconds)
{
    th_wait_sql_int(pg, n, seconds,
                    "SELECT count(*) FROM events WHERE stream_id = '%s-%s-%s' AND type = '%s'",
                    category, run, id, type);
}

static json_t *get(const char *base, const char *fmt, const char *id)
{
    char path[200];
    snprintf(path, sizeof path, fmt, run, id);
    return th_get_json(base, path);
}

static void unpaid_order_is_cancelled(void **state)
{
    (void)state;
    order(BASE_A, "unpaid", 0);
    order(BASE_A, "paid", 1);
    wait_events("order", "unpaid", "OrderCancelled", 1, 15);
    PGresult *r = th_sql(pg, "SELECT data->>'reason', data->>'refund_due' FROM events WHERE stream_id = "
                    "'order-%s-unpaid' AND type = 'OrderCancelled'",
                    run);
    assert_string_equal(PQgetvalue(r, 0, 0), "not paid in time");
    assert_string_equal(PQgetvalue(r, 0, 1), "0.00");
    PQclear(r);
    th_wait_caught_up(BASE_A, 15);
    json_t *o = get(BASE_A, "/orders/%s-%s", "unpaid");
    assert_string_equal(json_string_value(json_object_get(o, "status")), "cancelled");
    json_decref(o);
    /* the paid order's timer was stopped: nothing due, nothing happens */
    sleep(3);
    assert_int_equal(events("order", "paid", "OrderCancelled"), 0);
    assert_int_equal(th_sql_int(pg, "SELECT count(*) FROM timers WHERE timer_key IN ('%s-paid', "
                           "'%s-unpaid')",
                           run, run),
                     0);
}

static void idle_cart_is_abandoned(void **state)
{
    (void)state;
    char body[200], path[200];
    snprintf(body, sizeof body, "{\"cart_id\":\"%s-idle\"}", run);
    assert_int_equal(post(BASE_A, "/carts", body), 201);
    snprintf(path, sizeof path, "/carts/%s-idle/items", run);
    assert_int_equal(post(BASE_A, path, "{\"sku\":\"S1\",\"quantity\":1,\"unit_price\":\"3\"}"),
                     200);
    order(BASE_A, "bought", 1);
    wait_events("cart", "idle", "CartAbandoned", 1, 15);
    th_wait_caught_up(BASE_A, 15);
    json_t *c = get(BASE_A, "/carts/%s-%s", "idle");
    assert_string_equal(json_string_value(json_object_get(c, "status")), "abandoned");
    assert_true(json_is_string(json_object_get(c, "abandoned_at")));
    json_decref(c);
    /* a change: open again (and a new timer) */
    assert_int_equal(post(BASE_A, path, "{\"sku\":\"S2\",\"quantity\":1,\"unit_price\":\"1\"}"),
                     200);
    th_wait_caught_up(BASE_A, 15);
    c = get(BASE_A, "/carts/%s-%s", "idle");
    assert_string_equal(json_string_value(json_object_get(c, "status")), "open");
    assert_true(json_is_null(json_object_get(c, "abandoned_at")));
    json_decref(c);
    wait_events("cart", "idle", "CartAbandoned", 2, 15);
    assert_int_equal(events("cart", "bought", "CartAbandoned"), 0);
}

static void timers_survive_a_kill(void **state)
{
    (void)state;
    order(BASE_A, "killed", 0);
    /* the timer is stored (its scheduler ran), not yet due */
    th_wait_sql_int(pg, 1, 5,
                    "SELECT count(*) FROM timers WHERE timer = 'order.payment_timeout' AND "
                    "timer_key = '%s-killed'",
                    run);
    kill(a_pid, SIGKILL);
    waitpid(a_pid, NULL, 0);
    sleep(3); /* due while no server runs */
    assert_int_equal(events("order", "killed", "OrderCancelled"), 0);
    a_pid = th_start_server(ADDR_A, server_env());
    wait_events("order", "killed", "OrderCancelled", 1, 15);
}

static long long expire_runs(const char *base)
{
    return th_counter(base, "order.expire", "invocations");
}

static void fire_once_across_instances(void **state)
{
    (void)state;
    b_pid = th_start_server(ADDR_B, server_env());
    long long before = expire_runs(BASE_A) + expire_runs(BASE_B);
    char id[32];
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof id, "many%02d", i);
        order(i % 2 ? BASE_A : BASE_B, id, 0);
    }
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof id, "many%02d", i);
        wait_events("order", id, "OrderCancelled", 1, 20);
    }
    sleep(1); /* a second fire, if there were one, would show now */
    long long after = expire_runs(BASE_A) + expire_runs(BASE_B);
    print_message("order.expire ran %lld times on A, %lld on B (in all, %lld more than before)\n",
                  expire_runs(BASE_A), expire_runs(BASE_B), after - before);
    assert_int_equal(after - before, 20);
    th_stop_server(b_pid);
    b_pid = 0;
}

static void reactor_runs_again_safely(void **state)
{
    (void)state;
    char body[200];
    for (int i = 0; i < 5; i++) {
        snprintf(body, sizeof body, "{\"note_id\":\"%s-n%d\",\"text\":\"hello\"}", run, i);
        assert_int_equal(post(BASE_A, "/notes", body), 201);
    }
    wait_events("copy", "n4", "NoteCopied", 1, 15);
    long long copies = th_sql_int(pg, "SELECT count(*) FROM events WHERE type = 'NoteCopied'");
    long long ran = th_counter(BASE_A, "notes.echo", "invocations");
    /* as if the instance crashed after the commands and before the move */
    PQclear(th_sql(pg, "UPDATE consumer_checkpoints SET position = '' WHERE consumer = "
                       "'reactor:notes.echo'"));
    th_wait_sql_int(pg, 1, 10,
                    "SELECT count(*) FROM consumer_checkpoints WHERE consumer = "
                    "'reactor:notes.echo' AND position <> ''");
    sleep(1);
    /* it ran again on the five notes at least, and issued nothing new */
    assert_true(th_counter(BASE_A, "notes.echo", "invocations") >= ran + 5);
    assert_int_equal(th_sql_int(pg, "SELECT count(*) FROM events WHERE type = 'NoteCopied'"), copies);
    for (int i = 0; i < 5; i++) {
        char sid[64];
        snprintf(sid, sizeof sid, "n%d", i);
        assert_int_equal(events("copy", sid, "NoteCopied"), 1);
    }
}

/* POST /admin/parked/{id}/retry answers status, with a body containing want. */
static void retry(long long id, long status, const char *want)
{
    char path[100];
    snprintf(path, sizeof path, "/admin/parked/%lld/retry", id);
    struct th_reply r = th_call(NULL, BASE_A, "POST", path, NULL, NULL, 20);
    print_message("retry of #%lld: %ld %s\n", id, r.status, r.body);
    assert_int_equal(r.status, status);
    assert_non_null(strstr(r.body, want));
    th_reply_free(&r);
}

/* The parked items of function (a new reference to the array). */
static json_t *parked(const char *function)
{
    char path[200];
    snprintf(path, sizeof path, "/admin/parked?function=%s", function);
    json_t *all = th_get_json(BASE_A, path);
    json_t *list = json_incref(json_object_get(all, "parked"));
    json_decref(all);
    return list;
}

static void failures_are_parked(void **state)
{
    (void)state;
    FILE *f = fopen(poison, "w");
    assert_non_null(f);
    fclose(f);
    char body[200];
    snprintf(body, sizeof body, "{\"note_id\":\"%s-bad\",\"text\":\"x\",\"poison\":true}", run);
    assert_int_equal(post(BASE_A, "/notes", body), 201);
    snprintf(body, sizeof body, "{\"note_id\":\"%s-after\",\"text\":\"y\"}", run);
    assert_int_equal(post(BASE_A, "/notes", body), 201);
    /* both go past the poisoned note: 3 attempts (50, 100 ms apart), parked */
    wait_events("copy", "after", "NoteCopied", 1, 20);
    th_wait_caught_up(BASE_A, 20);
    json_t *n = get(BASE_A, "/notes/%s-%s", "after");
    assert_int_equal(json_integer_value(json_object_get(n, "seen")), 1);
    json_decref(n);
    n = get(BASE_A, "/notes/%s-%s", "bad");
    assert_int_equal(json_integer_value(json_object_get(n, "seen")), 0);
    json_decref(n);
    assert_int_equal(events("copy", "bad", "NoteCopied"), 0);

    json_t *pr = parked("notes.echo"), *pp = parked("notes");
    assert_int_equal(json_array_size(pr), 1);
    assert_int_equal(json_array_size(pp), 1);
    json_t *item = json_array_get(pp, 0);
    assert_string_equal(json_string_value(json_object_get(item, "kind")), "projection");
    assert_int_equal(json_integer_value(json_object_get(item, "attempts")), 3);
    assert_non_null(strstr(json_string_value(json_object_get(item, "error")), "poisoned note"));
    char sid[100];
    snprintf(sid, sizeof sid, "note-%s-bad", run);
    assert_string_equal(json_string_value(json_object_get(json_object_get(item, "subject"),
                                                          "stream_id")),
                        sid);
    long long pid = json_integer_value(json_object_get(item, "id"));
    long long rid = json_integer_value(json_object_get(json_array_get(pr, 0), "id"));
    json_decref(pr);
    json_decref(pp);
    json_t *h = th_get_json(BASE_A, "/readyz");
    assert_string_equal(json_string_value(json_object_get(h, "status")), "degraded");
    assert_true(json_integer_value(json_object_get(h, "parked")) >= 2);
    json_decref(h);

    /* still poisoned: a retry fails, and says so */
    retry(pid, 422, "still fails");

    /* the fix, then the retries: applied once each */
    unlink(poison);
    retry(pid, 200, "\"state\":\"resolved\"");
    retry(pid, 409, "already resolved");
    n = get(BASE_A, "/notes/%s-%s", "bad");
    assert_int_equal(json_integer_value(json_object_get(n, "seen")), 1);
    json_decref(n);
    retry(rid, 200, "\"state\":\"resolved\"");
    assert_int_equal(events("copy", "bad", "NoteCopied"), 1);
    assert_int_equal(th_sql_int(pg, "SELECT count(*) FROM parked WHERE state = 'parked'"), 0);
    retry(999999, 404, "no parked item");
}

static void redis(const char *fmt, const char *arg)
{
    char cmd[1200], line[600];
    snprintf(line, sizeof line, fmt, arg);
    snprintf(cmd, sizeof cmd, "redis-cli -u '%s' %s >/dev/null", redisurl, line);
    assert_int_equal(system(cmd), 0);
}

static void redis_refusals_are_parked(void **state)
{
    (void)state;
    char key[200], body[200];
    /* the key holds BUSY, a Redis error code: a refusal that quotes it is
     * still a refusal (parked), not a busy Redis (waited on for ever) */
    snprintf(key, sizeof key, "notes:v1:note:%s-BUSY-wrong", run);
    redis("SET %s not-a-hash", key);
    snprintf(body, sizeof body, "{\"note_id\":\"%s-BUSY-wrong\",\"text\":\"x\"}", run);
    assert_int_equal(post(BASE_A, "/notes", body), 201);
    snprintf(body, sizeof body, "{\"note_id\":\"%s-later\",\"text\":\"y\"}", run);
    assert_int_equal(post(BASE_A, "/notes", body), 201);
    /* the refused note is parked after its attempts, and the next one applied */
    json_t *pp = NULL;
    for (int i = 0; i < 200; i++) {
        json_decref(pp);
        pp = parked("notes");
        if (json_array_size(pp) == 1)
            break;
        usleep(100000);
    }
    assert_int_equal(json_array_size(pp), 1);
    json_t *item = json_array_get(pp, 0);
    assert_int_equal(json_integer_value(json_object_get(item, "attempts")), 3);
    const char *why = json_string_value(json_object_get(item, "error"));
    print_message("parked after 3 attempts: %s\n", why);
    assert_non_null(strstr(why, "REFUSED HINCRBY"));
    long long pid = json_integer_value(json_object_get(item, "id"));
    json_decref(pp);
    th_wait_caught_up(BASE_A, 20);
    json_t *n = get(BASE_A, "/notes/%s-%s", "later");
    assert_int_equal(json_integer_value(json_object_get(n, "seen")), 1);
    json_decref(n);

    /* still refused: the retry says so; after the fix it applies once */
    retry(pid, 422, "still fails");
    redis("DEL %s", key);
    retry(pid, 200, "\"state\":\"resolved\"");
    n = get(BASE_A, "/notes/%s-%s", "BUSY-wrong");
    assert_int_equal(json_integer_value(json_object_get(n, "seen")), 1);
    json_decref(n);
}

/* A database and a Redis database of the test's own, migrated. */
static int setup(void **state)
{
    (void)state;
    th_isolated(TEST_DB, TEST_REDIS_DB, dburl, redisurl);
    snprintf(env_db, sizeof env_db, "DATABASE_URL=%s", dburl);
    snprintf(env_redis, sizeof env_redis, "REDIS_URL=%s", redisurl);
    snprintf(env_mods, sizeof env_mods, "CQRSD_MODULES=%s:%s/notes.so",
             getenv("CQRSD_ECOMMERCE_MODULE"), getenv("CQRSD_TEST_MODULES"));
    snprintf(poison, sizeof poison, "/tmp/cqrsd-poison-%ld", (long)getpid());
    snprintf(env_poison, sizeof env_poison, "CQRSD_TEST_POISON=%s", poison);
    pg = PQconnectdb(dburl);
    if (PQstatus(pg) != CONNECTION_OK)
        fail_msg("PostgreSQL: %s", PQerrorMessage(pg));
    a_pid = th_start_server(ADDR_A, server_env());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (a_pid)
        th_stop_server(a_pid);
    if (b_pid)
        th_stop_server(b_pid);
    unlink(poison);
    PQfinish(pg);
    return 0;
}

int main(void)
{
    if (!getenv("DATABASE_URL") || !getenv("REDIS_URL") || !getenv("CQRSD_BIN") ||
        !getenv("CQRSD_ECOMMERCE_MODULE") || !getenv("CQRSD_TEST_MODULES")) {
        fprintf(stderr, "test_timers: needs DATABASE_URL, REDIS_URL, CQRSD_BIN, "
                        "CQRSD_ECOMMERCE_MODULE and CQRSD_TEST_MODULES (run it with make test)\n");
        return 1;
    }
    snprintf(run, sizeof run, "t%lx", (unsigned long)time(NULL));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unpaid_order_is_cancelled),
        cmocka_unit_test(idle_cart_is_abandoned),
        cmocka_unit_test(timers_survive_a_kill),
        cmocka_unit_test(fire_once_across_instances),
        cmocka_unit_test(reactor_runs_again_safely),
        cmocka_unit_test(failures_are_parked),
        cmocka_unit_test(redis_refusals_are_parked),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
