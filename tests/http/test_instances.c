/* tests/http/test_instances.c — several instances on one PostgreSQL and one
 * Redis (issue 9, point 2): three servers of their own (127.0.0.1:18107-18109)
 * on a database of their own (cqrsd_instances, Redis db 10), with
 * CQRSD_PROJECTION_LEASE_MS=2000.
 *
 *   leases_spread        the five projection leases spread over the three
 *                        instances: each holds one or two
 *   kill_and_pause       three clients send add-item commands (each with its
 *                        Idempotency-Key, retried until answered) spread over
 *                        the instances while one is SIGKILLed and started
 *                        again and another is stopped (SIGSTOP) for 5 s,
 *                        past its leases, then continued: every acknowledged
 *                        command is stored once, its leases moved to the
 *                        others while it was stopped, and the read models
 *                        equal a rebuild from the first event (cqrsd replay
 *                        --all changes no cart and no figure)
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
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

#define N 3
static const char *ADDRS[N] = {"127.0.0.1:18107", "127.0.0.1:18108", "127.0.0.1:18109"};
static char bases[N][40];
static pid_t servers[N];
static char run[16], dburl[512], redisurl[512], env_db[600], env_redis[600];
static const char *env[5];
static PGconn *pg;

static void start(int i)
{
    servers[i] = th_start_server(ADDRS[i], env);
}

/* The leases held now: owner count and the most any one holds. */
static void lease_spread(int *owners, int *most, int *total)
{
    PGresult *r = th_sql(pg, "SELECT count(*) FROM projection_leases WHERE expires_at > now() "
                             "GROUP BY owner");
    *owners = PQntuples(r);
    *most = *total = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        int n = atoi(PQgetvalue(r, i, 0));
        *total += n;
        if (n > *most)
            *most = n;
    }
    PQclear(r);
}

static void leases_spread(void **state)
{
    (void)state;
    int owners = 0, most = 0, total = 0;
    for (int i = 0; i < 100; i++) { /* a renewal a second: a few rounds */
        lease_spread(&owners, &most, &total);
        if (owners == N && most <= 2 && total == 5)
            break;
        usleep(100000);
    }
    if (owners != N || most > 2 || total != 5)
        fail_msg("the leases did not spread: %d owners, at most %d each, %d in all", owners, most,
                 total);
    print_message("5 leases over %d instances, at most %d each\n", owners, most);
}

/* ---------- the load ---------- */

static atomic_int stop_load, acked, sent;

struct client {
    pthread_t t;
    int id;
};

static void *client_main(void *arg)
{
    struct client *c = arg;
    char cart[64], body[200], path[128], key[96];
    snprintf(cart, sizeof cart, "ci%d-%s", c->id, run);
    snprintf(body, sizeof body, "{\"cart_id\":\"%s\"}", cart);
    for (int tries = 0;; tries++) { /* open the cart on whichever instance answers */
        snprintf(key, sizeof key, "open-%d-%s", c->id, run);
        struct th_reply r = th_call(NULL, bases[tries % N], "POST", "/carts", body, key, 5);
        long st = r.status;
        th_reply_free(&r);
        if (st == 201)
            break;
        usleep(50000);
    }
    snprintf(path, sizeof path, "/carts/%s/items", cart);
    for (int n = 0; !atomic_load(&stop_load); n++) {
        snprintf(body, sizeof body, "{\"sku\":\"S%d-%d\",\"quantity\":1,\"unit_price\":\"1.00\"}",
                 c->id, n);
        snprintf(key, sizeof key, "add-%d-%d-%s", c->id, n, run);
        atomic_fetch_add(&sent, 1);
        /* until answered: another instance, the same key */
        for (int tries = 0;; tries++) {
            struct th_reply r =
                th_call(NULL, bases[(n + tries + c->id) % N], "POST", path, body, key, 5);
            long st = r.status;
            th_reply_free(&r);
            if (st == 200) {
                atomic_fetch_add(&acked, 1);
                break;
            }
            usleep(20000);
        }
    }
    return NULL;
}

/* GET base/carts/ci<id>-<run> (id -1: /products/top) as canonical text. */
static char *read_text(const char *base, int id)
{
    char path[128];
    if (id < 0)
        snprintf(path, sizeof path, "/products/top");
    else
        snprintf(path, sizeof path, "/carts/ci%d-%s", id, run);
    json_t *j = th_get_json(base, path);
    char *t = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(j);
    return t;
}

static void kill_and_pause(void **state)
{
    (void)state;
    struct client cl[3];
    for (int i = 0; i < 3; i++) {
        cl[i].id = i;
        pthread_create(&cl[i].t, NULL, client_main, &cl[i]);
    }
    sleep(2);
    /* instance 1 dies and comes back */
    kill(servers[1], SIGKILL);
    waitpid(servers[1], NULL, 0);
    sleep(1);
    start(1);
    sleep(1);
    /* instance 2 stops past its leases: the others take them */
    kill(servers[2], SIGSTOP);
    /* past its leases (2 s) and a renewal of the others (1 s): the two left
     * hold all five */
    sleep(3);
    int owners = 0, most = 0, total = 0, moved = 0;
    for (int i = 0; i < 30 && !moved; i++) {
        lease_spread(&owners, &most, &total);
        moved = owners == 2 && total == 5;
        if (!moved)
            usleep(100000);
    }
    kill(servers[2], SIGCONT);
    if (!moved)
        fail_msg("6 s after SIGSTOP the leases are not all with the two others (%d owners, %d "
                 "in all)",
                 owners, total);
    sleep(2);
    atomic_store(&stop_load, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(cl[i].t, NULL);
    print_message("%d commands sent, %d acknowledged; while one was stopped the two others "
                  "held the 5 leases (at most %d each)\n",
                  atomic_load(&sent), atomic_load(&acked), most);
    assert_int_equal(atomic_load(&acked), atomic_load(&sent));

    /* every acknowledged command stored once */
    long long items = th_sql_int(pg, "SELECT count(*) FROM events WHERE type = 'ItemAdded' AND "
                                     "stream_id LIKE 'cart-ci%%-%s'",
                                 run);
    long long distinct = th_sql_int(pg, "SELECT count(DISTINCT data->>'sku') FROM events WHERE "
                                        "type = 'ItemAdded' AND stream_id LIKE 'cart-ci%%-%s'",
                                    run);
    if (items != atomic_load(&acked) || distinct != items)
        fail_msg("%lld ItemAdded events (%lld skus) for %d acknowledged commands", items, distinct,
                 atomic_load(&acked));

    /* the read models equal a rebuild */
    th_wait_caught_up(bases[0], 60);
    char *before[4];
    for (int i = 0; i < 4; i++)
        before[i] = read_text(bases[0], i < 3 ? i : -1);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "DATABASE_URL='%s' REDIS_URL='%s' '%s' replay --all >/dev/null 2>&1",
             dburl, redisurl, getenv("CQRSD_BIN"));
    assert_int_equal(system(cmd), 0);
    th_wait_caught_up(bases[0], 60);
    for (int i = 0; i < 4; i++) {
        char *after = NULL;
        for (int k = 0; k < 20; k++) { /* every instance reads the new build within 0.5 s */
            free(after);
            after = read_text(bases[i % N], i < 3 ? i : -1);
            if (!strcmp(after, before[i]))
                break;
            usleep(100000);
        }
        if (strcmp(after, before[i]))
            fail_msg("%s %d differs after a rebuild:\n%s\n%s", i < 3 ? "cart" : "top products",
                     i, before[i], after);
        free(after);
        free(before[i]);
    }
}

static int setup(void **state)
{
    (void)state;
    th_isolated("cqrsd_instances", 10, dburl, redisurl);
    snprintf(env_db, sizeof env_db, "DATABASE_URL=%s", dburl);
    snprintf(env_redis, sizeof env_redis, "REDIS_URL=%s", redisurl);
    env[0] = env_db;
    env[1] = env_redis;
    env[2] = "CQRSD_PROJECTION_LEASE_MS=2000";
    env[3] = "CQRSD_LOG_LEVEL=info";
    for (int i = 0; i < N; i++) {
        snprintf(bases[i], sizeof bases[i], "http://%s", ADDRS[i]);
        start(i);
    }
    pg = PQconnectdb(dburl);
    if (PQstatus(pg) != CONNECTION_OK)
        fail_msg("PostgreSQL: %s", PQerrorMessage(pg));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++) {
        kill(servers[i], SIGCONT);
        th_stop_server(servers[i]);
    }
    PQfinish(pg);
    return 0;
}

int main(void)
{
    if (!getenv("DATABASE_URL") || !getenv("REDIS_URL") || !getenv("CQRSD_BIN")) {
        fprintf(stderr, "test_instances: needs DATABASE_URL, REDIS_URL and CQRSD_BIN (run it "
                        "with make test)\n");
        return 1;
    }
    snprintf(run, sizeof run, "i%lx", (unsigned long)time(NULL));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(leases_spread),
        cmocka_unit_test(kill_and_pause),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
