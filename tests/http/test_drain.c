/* tests/http/test_drain.c — SIGTERM drains (issue 8, point 7), against real
 * servers of its own (127.0.0.1:18104) on a database of its own (cqrsd_drain,
 * Redis db 9). A command is held in flight for real: a transaction of the
 * test's own locks the cart's row in `streams`, so cart.add_item waits inside
 * its append, on a worker.
 *
 *   drain_finishes_in_flight  SIGTERM with a command held: new connections
 *                             are refused, a new request on a connection
 *                             already open is answered 503 with Retry-After;
 *                             once the lock goes the held command completes
 *                             (200, its event stored), and the server exits 0,
 *                             logging what it finished
 *   drain_past_the_timeout    CQRSD_SHUTDOWN_TIMEOUT=2 and the lock kept: the
 *                             server exits 1 after about 2 s, saying a
 *                             request was still in flight
 */
#include <pthread.h>
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

#define ADDR "127.0.0.1:18104"
#define BASE "http://" ADDR

static char run[16], dburl[512], redisurl[512];
static char env_db[600], env_redis[600], env_timeout[64];

struct held {
    pthread_t t;
    char path[128];
    struct th_reply r;
};

static void *post_held(void *arg)
{
    struct held *h = arg;
    h->r = th_call(NULL, BASE, "POST", h->path,
                   "{\"sku\":\"D1\",\"quantity\":1,\"unit_price\":\"1.00\"}", NULL, 30);
    return NULL;
}

/* A server on ADDR with CQRSD_SHUTDOWN_TIMEOUT=timeout_s. */
static pid_t start(int timeout_s)
{
    snprintf(env_timeout, sizeof env_timeout, "CQRSD_SHUTDOWN_TIMEOUT=%d", timeout_s);
    static const char *env[5];
    env[0] = env_db;
    env[1] = env_redis;
    env[2] = env_timeout;
    env[3] = "CQRSD_LOG_LEVEL=info"; /* the drain's records are at info */
    return th_start_server(ADDR, env);
}

/* Opens cart id, then holds its row of `streams` in a transaction of pg's. */
static void open_and_hold(PGconn *pg, const char *id)
{
    char body[128];
    snprintf(body, sizeof body, "{\"cart_id\":\"%s\"}", id);
    struct th_reply r = th_call(NULL, BASE, "POST", "/carts", body, NULL, 10);
    assert_int_equal(r.status, 201);
    th_reply_free(&r);
    PQclear(th_sql(pg, "BEGIN"));
    PQclear(th_sql(pg, "SELECT 1 FROM streams WHERE stream_id = 'cart-%s' FOR UPDATE", id));
}

/* Waits until cart.add_item has one invocation in flight on the server. */
static void wait_held(void)
{
    for (int i = 0; i < 100; i++) {
        if (th_counter(BASE, "cart.add_item", "in_flight") == 1)
            return;
        usleep(50000);
    }
    fail_msg("the held command never got in flight");
}

/* Opens cart "<prefix>-<run>", holds its row and sends an add_item that waits
 * on it, from h's thread; returns once the command is in flight. */
static void hold_command(PGconn *pg, const char *prefix, struct held *h)
{
    char cart[64];
    snprintf(cart, sizeof cart, "%s-%s", prefix, run);
    open_and_hold(pg, cart);
    snprintf(h->path, sizeof h->path, "/carts/%s/items", cart);
    pthread_create(&h->t, NULL, post_held, h);
    wait_held();
}

/* waitpid with a bound: the exit status, or fails after seconds. *took_ms
 * gets the time it took. */
static int wait_exit(pid_t pid, int seconds, long *took_ms)
{
    int64_t t0 = util_now_ms();
    for (;;) {
        int st;
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) {
            *took_ms = (long)(util_now_ms() - t0);
            if (!WIFEXITED(st))
                fail_msg("the server ended by signal %d, not by exiting", WTERMSIG(st));
            return WEXITSTATUS(st);
        }
        if (util_now_ms() - t0 > seconds * 1000) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            fail_msg("the server had not exited %d s after SIGTERM", seconds);
        }
        usleep(20000);
    }
}

/* The server log ($CQRSD_SERVER_LOG) holds text. */
static int log_has(const char *text)
{
    FILE *f = fopen(getenv("CQRSD_SERVER_LOG"), "r");
    if (!f)
        return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, text) != NULL;
    fclose(f);
    return found;
}

static void drain_finishes_in_flight(void **state)
{
    (void)state;
    pid_t server = start(20);
    PGconn *pg = PQconnectdb(dburl);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    char cart[64];
    snprintf(cart, sizeof cart, "drain-%s", run);
    struct held h;
    hold_command(pg, "drain", &h);
    CURL *open = curl_easy_init(); /* a keep-alive connection opened before the signal */
    struct th_reply r = th_call(open, BASE, "GET", "/healthz", NULL, NULL, 5);
    assert_int_equal(r.status, 200);
    th_reply_free(&r);

    assert_int_equal(kill(server, SIGTERM), 0);
    usleep(300000);
    r = th_call(NULL, BASE, "GET", "/healthz", NULL, NULL, 2); /* a new connection */
    if (r.status != 0)
        fail_msg("a new connection while draining was answered %ld", r.status);
    th_reply_free(&r);
    r = th_call(open, BASE, "GET", "/healthz", NULL, NULL, 5);
    if (r.status != 503 || strcmp(r.retry_after, "1") || !strstr(r.body, "shutting down"))
        fail_msg("a request on an open connection while draining: %ld Retry-After \"%s\" %s",
                 r.status, r.retry_after, r.body ? r.body : "");
    th_reply_free(&r);
    curl_easy_cleanup(open);

    usleep(300000);
    assert_int_equal(kill(server, 0), 0); /* still draining: the command is held */
    PQclear(th_sql(pg, "COMMIT"));
    pthread_join(h.t, NULL);
    if (h.r.status != 200)
        fail_msg("the command in flight at SIGTERM answered %ld %s", h.r.status,
                 h.r.body ? h.r.body : "");
    th_reply_free(&h.r);
    long took;
    assert_int_equal(wait_exit(server, 20, &took), 0);
    assert_int_equal(th_sql_int(pg, "SELECT count(*) FROM events WHERE stream_id = 'cart-%s'",
                                cart),
                     2);
    /* the held command, and maybe the last poll of /admin/functions not yet
     * completed when the signal came: counted in flight; the one new request
     * was refused */
    assert_true(log_has(" in flight answered, 1 new one answered 503\"") &&
                log_has("\"msg\":\"drained in "));
    assert_true(log_has("\"msg\":\"stopped in "));
    print_message("drained and exited 0 in %ld ms after the lock went\n", took);
    PQfinish(pg);
}

static void drain_past_the_timeout(void **state)
{
    (void)state;
    pid_t server = start(2);
    PGconn *pg = PQconnectdb(dburl);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    struct held h;
    hold_command(pg, "stuck", &h);
    assert_int_equal(kill(server, SIGTERM), 0);
    long took;
    int code = wait_exit(server, 10, &took);
    if (code != 1 || took < 1800 || took > 6000)
        fail_msg("with CQRSD_SHUTDOWN_TIMEOUT=2 and a command stuck: exit %d after %ld ms", code,
                 took);
    assert_true(log_has("shutdown did not finish within CQRSD_SHUTDOWN_TIMEOUT: 1 request still "
                        "in flight"));
    PQclear(th_sql(pg, "ROLLBACK"));
    pthread_join(h.t, NULL);
    if (h.r.status != 0)
        fail_msg("the stuck command was answered %ld after the server exited", h.r.status);
    th_reply_free(&h.r);
    PQfinish(pg);
}

static int setup(void **state)
{
    (void)state;
    th_isolated("cqrsd_drain", 9, dburl, redisurl);
    snprintf(env_db, sizeof env_db, "DATABASE_URL=%s", dburl);
    snprintf(env_redis, sizeof env_redis, "REDIS_URL=%s", redisurl);
    return 0;
}

int main(void)
{
    if (!getenv("DATABASE_URL") || !getenv("REDIS_URL") || !getenv("CQRSD_BIN") ||
        !getenv("CQRSD_SERVER_LOG")) {
        fprintf(stderr, "test_drain: needs DATABASE_URL, REDIS_URL, CQRSD_BIN and "
                        "CQRSD_SERVER_LOG (run it with make test)\n");
        return 1;
    }
    snprintf(run, sizeof run, "d%lx", (unsigned long)time(NULL));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(drain_finishes_in_flight),
        cmocka_unit_test(drain_past_the_timeout),
    };
    int rc = cmocka_run_group_tests(tests, setup, NULL);
    curl_global_cleanup();
    return rc;
}
