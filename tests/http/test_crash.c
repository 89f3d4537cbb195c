/* tests/http/test_crash.c — a server killed with SIGKILL loses nothing.
 *
 * Rounds (CQRSD_CRASH_ROUNDS, default 3), each:
 *  1. commands: 4 client threads open carts, add items and check out, as
 *     fast as they can; the server is SIGKILLed after a random 150-650 ms;
 *  2. or (every other round) the read models are reset to zero and the
 *     server is SIGKILLed while its projections are catching up;
 * then the server is started again and the test checks that every
 * acknowledged command's event is stored exactly once, that no command is
 * half-stored (a checkout's cart event without its order's first event, or
 * the reverse), that stream versions are dense, and that the read models,
 * once caught up, equal a rebuild of every projection from the first event.
 *
 * Then a second instance stands by for the projection lease and takes over
 * when the first is killed.
 *
 * Runs under tools/test.sh: CQRSD_URL, CQRSD_BIN, CQRSD_SERVER_PIDFILE,
 * CQRSD_SERVER_LOG, DATABASE_URL, REDIS_URL.
 */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/es.h"
#include "core/fn_int.h"
#include "core/proj.h"
#include "core/reg.h"
#include "core/rm.h"
#include "core/rtime.h"
#include "core/util.h"
#include "tests/lib/th.h"

#define THREADS 4
#define MAX_CARTS 4000
#define ITEMS 3

static const char *url, *bin, *pidfile, *logfile;
static char run_id[9];
static struct reg *R; /* the modules the server runs: $CQRSD_MODULES */

/* ---------- HTTP ---------- */

/* Returns the HTTP status (0 on a transport error); *out gets the parsed body. */
static long http(CURL *c, const char *method, const char *path, const char *body, json_t **out)
{
    struct th_reply r = th_call(c, url, method, path, body, NULL, 10);
    if (out)
        *out = r.body ? json_loads(r.body, 0, NULL) : NULL;
    th_reply_free(&r);
    return r.status;
}

/* ---------- the server ---------- */

static pid_t server_pid(void)
{
    FILE *f = fopen(pidfile, "r");
    long pid = 0;
    if (f) {
        if (fscanf(f, "%ld", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    return (pid_t)pid;
}

static void wait_healthy_at(const char *base)
{
    CURL *c = curl_easy_init();
    const char *saved = url;
    url = base;
    for (int i = 0; i < 200; i++) {
        if (http(c, "GET", "/healthz", NULL, NULL) == 200) {
            url = saved;
            curl_easy_cleanup(c);
            return;
        }
        usleep(50000);
    }
    url = saved;
    curl_easy_cleanup(c);
    fail_msg("server at %s did not answer /healthz within 10 s", base);
}

static void wait_healthy(void)
{
    wait_healthy_at(url);
}

static void kill_pid(pid_t pid, int sig)
{
    assert_true(pid > 0);
    assert_int_equal(kill(pid, sig), 0);
    for (int i = 0; i < 250 && kill(pid, 0) == 0; i++) {
        waitpid(pid, NULL, WNOHANG); /* reaps it when it is our child */
        usleep(20000);
    }
    assert_int_not_equal(kill(pid, 0), 0);
}

static void kill_server(void)
{
    kill_pid(server_pid(), SIGKILL);
}

/* Starts `cqrsd serve` listening on addr ("127.0.0.1:port"), logging to logfile. */
static pid_t spawn_server(const char *addr)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setsid(); /* not in the test's process group */
        FILE *lf = freopen(logfile, "a", stderr);
        (void)lf;
        setenv("CQRSD_HTTP_ADDR", addr, 1);
        execl(bin, bin, "serve", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void start_server(void)
{
    const char *addr = strstr(url, "://") ? strstr(url, "://") + 3 : url;
    pid_t pid = spawn_server(addr);
    FILE *f = fopen(pidfile, "w");
    assert_non_null(f);
    fprintf(f, "%ld\n", (long)pid);
    fclose(f);
    wait_healthy();
}

static void wait_caught_up(void)
{
    th_wait_caught_up(url, 60);
}

/* ---------- load ---------- */

struct cart {
    char id[48];
    int acked_open, acked_items[ITEMS], acked_checkout;
};

static struct cart carts[MAX_CARTS];
static int ncarts;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static volatile int stop_load;

static void *client(void *arg)
{
    (void)arg;
    CURL *c = curl_easy_init();
    while (!stop_load) {
        pthread_mutex_lock(&mu);
        if (ncarts == MAX_CARTS) {
            pthread_mutex_unlock(&mu);
            break;
        }
        struct cart *ct = &carts[ncarts++];
        snprintf(ct->id, sizeof ct->id, "crash%s-%d", run_id, ncarts);
        pthread_mutex_unlock(&mu);
        char body[200], path[120];
        snprintf(body, sizeof body, "{\"cart_id\":\"%.47s\",\"customer_id\":\"crash%s\"}", ct->id, run_id);
        ct->acked_open = http(c, "POST", "/carts", body, NULL) == 201;
        if (!ct->acked_open)
            continue;
        snprintf(path, sizeof path, "/carts/%.47s/items", ct->id);
        for (int i = 0; i < ITEMS && !stop_load; i++) {
            snprintf(body, sizeof body,
                     "{\"sku\":\"crash-sku-%d\",\"quantity\":%d,\"unit_price\":\"0.%03d\"}", i,
                     i + 1, 100 + i);
            ct->acked_items[i] = http(c, "POST", path, body, NULL) == 200;
        }
        snprintf(path, sizeof path, "/carts/%.47s/checkout", ct->id);
        ct->acked_checkout = http(c, "POST", path, "{}", NULL) == 200;
    }
    curl_easy_cleanup(c);
    return NULL;
}

/* Checks every cart begun so far against the event store. */
static void check_stored(void)
{
    CURL *c = curl_easy_init();
    int acked = 0;
    for (int n = 0; n < ncarts; n++) {
        struct cart *ct = &carts[n];
        char path[120];
        json_t *s = NULL;
        snprintf(path, sizeof path, "/streams/cart-%.47s", ct->id);
        long st = http(c, "GET", path, NULL, &s);
        if (st == 404) {
            if (ct->acked_open)
                fail_msg("cart %s: open was acknowledged but the stream is missing", ct->id);
            json_decref(s);
            continue;
        }
        assert_int_equal(st, 200);
        json_t *evs = json_object_get(s, "events"), *ev;
        size_t i;
        int items[ITEMS] = {0}, checkout = 0;
        json_array_foreach(evs, i, ev)
        {
            if (json_integer_value(json_object_get(ev, "version")) != (json_int_t)i + 1)
                fail_msg("cart %s: versions are not dense at index %zu", ct->id, i);
            const char *type = json_string_value(json_object_get(ev, "type"));
            if (!strcmp(type, "ItemAdded")) {
                const char *sku = json_string_value(json_object_get(json_object_get(ev, "data"), "sku"));
                int k = atoi(sku + strlen("crash-sku-"));
                assert_true(k >= 0 && k < ITEMS);
                items[k]++;
            } else if (!strcmp(type, "CartCheckedOut")) {
                checkout++;
            }
        }
        for (int k = 0; k < ITEMS; k++) {
            if (items[k] > 1)
                fail_msg("cart %s: item %d stored %d times", ct->id, k, items[k]);
            if (ct->acked_items[k] && items[k] != 1)
                fail_msg("cart %s: acknowledged item %d is not stored", ct->id, k);
            acked += ct->acked_items[k];
        }
        if (checkout > 1 || (ct->acked_checkout && checkout != 1))
            fail_msg("cart %s: checkout stored %d times (acknowledged: %d)", ct->id, checkout,
                     ct->acked_checkout);
        json_decref(s);
        /* atomic checkout: the order stream exists exactly when the cart was checked out */
        snprintf(path, sizeof path, "/streams/order-%.47s", ct->id);
        st = http(c, "GET", path, NULL, &s);
        if ((st == 200) != (checkout == 1))
            fail_msg("cart %s: checkout half-stored (cart checked out: %d, order stream: %ld)",
                     ct->id, checkout, st);
        json_decref(s);
    }
    curl_easy_cleanup(c);
    print_message("checked %d carts, %d acknowledged item commands stored exactly once\n", ncarts,
                  acked);
}

/* ---------- read models ---------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Appends the reply's items sorted, '|'-separated: hash and zset replies as
 * "field=value" pairs (pairs = 1), set members one by one. */
static void append_reply(char **out, size_t *len, redisReply *r, int pairs)
{
    char **items = NULL;
    size_t n = 0;
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_INTEGER) {
        items = xmalloc(sizeof *items);
        items[n++] = r->type == REDIS_REPLY_STRING ? xstrdup(r->str) : xasprintf("%lld", r->integer);
    } else if (r->type == REDIS_REPLY_ARRAY) {
        items = xcalloc(r->elements + 1, sizeof *items);
        for (size_t i = 0; i < r->elements; i += pairs ? 2 : 1)
            items[n++] = pairs && i + 1 < r->elements
                             ? xasprintf("%s=%s", r->element[i]->str, r->element[i + 1]->str)
                             : xstrdup(r->element[i]->str);
    }
    qsort(items, n, sizeof *items, cmp_str);
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(items[i]);
        *out = xrealloc(*out, *len + l + 2);
        memcpy(*out + *len, items[i], l);
        *len += l;
        (*out)[(*len)++] = '|';
        (*out)[*len] = '\0';
        free(items[i]);
    }
    free(items);
}

/* A canonical text of every key of every projection: sorted keys, each with
 * its type and sorted contents. Caller frees. */
static char *dump(redisContext *rc)
{
    char **keys = NULL;
    size_t nk = 0;
    for (size_t p = 0; p < R->nprojs; p++) {
        char cursor[32] = "0";
        /* the build that serves (core/rm.h: a rebuild moves it) */
        char cp[33];
        long build = 0;
        struct err e = {0};
        assert_int_equal(rm_checkpoint_get(rc, R->projs[p].p->name, R->projs[p].p->version, cp,
                                           &build, &e), 0);
        char *space = rm_keyspace(R->projs[p].p->name, R->projs[p].p->version, build);
        char *pattern = xasprintf("%s*", space);
        free(space);
        do {
            redisReply *r = redisCommand(rc, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
            assert_non_null(r);
            assert_int_equal(r->type, REDIS_REPLY_ARRAY);
            snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
            redisReply *ks = r->element[1];
            keys = xrealloc(keys, (nk + ks->elements + 1) * sizeof *keys);
            for (size_t i = 0; i < ks->elements; i++)
                keys[nk++] = xstrdup(ks->element[i]->str);
            freeReplyObject(r);
        } while (strcmp(cursor, "0"));
        free(pattern);
    }
    qsort(keys, nk, sizeof *keys, cmp_str);
    char *out = xstrdup("");
    size_t len = 0;
    for (size_t i = 0; i < nk; i++) {
        if (i && !strcmp(keys[i], keys[i - 1]))
            continue; /* SCAN may return a key twice; keys are freed after the loop */
        redisReply *t = redisCommand(rc, "TYPE %s", keys[i]);
        const char *cmd = !strcmp(t->str, "hash")  ? "HGETALL %s"
                          : !strcmp(t->str, "set") ? "SMEMBERS %s"
                          : !strcmp(t->str, "zset") ? "ZRANGE %s 0 -1 WITHSCORES"
                                                    : "GET %s";
        char *head = xasprintf("\n%s (%s): ", keys[i], t->str);
        size_t hl = strlen(head);
        out = xrealloc(out, len + hl + 1);
        memcpy(out + len, head, hl + 1);
        len += hl;
        free(head);
        int pairs = !strcmp(t->str, "hash") || !strcmp(t->str, "zset");
        freeReplyObject(t);
        redisReply *r = redisCommand(rc, cmd, keys[i]);
        assert_non_null(r);
        append_reply(&out, &len, r, pairs);
        freeReplyObject(r);
    }
    for (size_t i = 0; i < nk; i++)
        free(keys[i]);
    free(keys);
    return out;
}

static void compare_with_rebuild(void)
{
    struct err e = {0};
    wait_caught_up();
    redisContext *rc = rm_connect(getenv("REDIS_URL"), 10000, &e);
    assert_non_null(rc);
    char *live = dump(rc);
    /* rebuild every projection from the first event, here, while the server
     * runs too: the checkpoint check keeps the two runners from doubling */
    PGconn *pg = es_connect(getenv("DATABASE_URL"), &e);
    assert_non_null(pg);
    for (size_t p = 0; p < R->nprojs; p++)
        assert_int_equal(rm_reset(rc, R->projs[p].p->name, R->projs[p].p->version, NULL, &e), 0);
    int rcode = proj_catch_up(pg, rc, R, &e);
    if (rcode)
        fail_msg("rebuild failed: %s", e.msg);
    wait_caught_up();
    char *rebuilt = dump(rc);
    if (strcmp(live, rebuilt)) {
        char *lp = xasprintf("%s.live.txt", logfile), *rp = xasprintf("%s.rebuilt.txt", logfile);
        FILE *f = fopen(lp, "w");
        if (f) {
            fputs(live, f);
            fclose(f);
        }
        if ((f = fopen(rp, "w"))) {
            fputs(rebuilt, f);
            fclose(f);
        }
        print_message("dumps written to %s and %s\n", lp, rp);
        free(lp);
        free(rp);
        size_t i = 0;
        while (live[i] && live[i] == rebuilt[i])
            i++;
        size_t from = i > 200 ? i - 200 : 0;
        fail_msg("read models differ from a rebuild near:\nlive:    %.400s\nrebuilt: %.400s",
                 live + from, rebuilt + from);
    }
    print_message("read models equal a rebuild from zero (%zu bytes of dump)\n", strlen(live));
    free(live);
    free(rebuilt);
    PQfinish(pg);
    redisFree(rc);
}

static unsigned rnd(unsigned n)
{
    return (unsigned)rand() % n;
}

static void kill_during_commands(void)
{
    stop_load = 0;
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, client, NULL);
    usleep((150 + rnd(500)) * 1000);
    kill_server();
    stop_load = 1;
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    start_server();
    check_stored();
}

static void kill_during_catch_up(void)
{
    struct err e = {0};
    redisContext *rc = rm_connect(getenv("REDIS_URL"), 10000, &e);
    assert_non_null(rc);
    for (size_t p = 0; p < R->nprojs; p++)
        assert_int_equal(rm_reset(rc, R->projs[p].p->name, R->projs[p].p->version, NULL, &e), 0);
    redisFree(rc);
    usleep((50 + rnd(300)) * 1000); /* the server's runner is replaying now */
    kill_server();
    start_server();
}

static void sigkill_loses_nothing(void **st)
{
    (void)st;
    const char *r = getenv("CQRSD_CRASH_ROUNDS");
    int rounds = r ? atoi(r) : 3;
    for (int i = 0; i < rounds; i++) {
        print_message("round %d: kill -9 during %s\n", i + 1,
                      i % 2 ? "projection catch-up" : "commands");
        if (i % 2)
            kill_during_catch_up();
        else
            kill_during_commands();
        compare_with_rebuild();
    }
}

/* A second instance stands by while the first holds the projection lease,
 * and takes over when the first is killed: events appended through the
 * second instance afterwards reach the read models. */
static void second_instance_takes_over_projections(void **st)
{
    (void)st;
    const char *colon = strrchr(url, ':');
    assert_non_null(colon);
    char addr[64], base[80];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", atoi(colon + 1) + 1);
    snprintf(base, sizeof base, "http://%s", addr);
    pid_t second = spawn_server(addr);
    wait_healthy_at(base);
    kill_server(); /* the first instance, holder of the lease */

    const char *saved = url;
    url = base;
    CURL *c = curl_easy_init();
    char body[160], path[120];
    snprintf(body, sizeof body, "{\"cart_id\":\"lease%s\",\"customer_id\":\"lease%s\"}", run_id, run_id);
    assert_int_equal(http(c, "POST", "/carts", body, NULL), 201);
    snprintf(path, sizeof path, "/carts/lease%s/items", run_id);
    assert_int_equal(http(c, "POST", path, "{\"sku\":\"lease-sku\",\"quantity\":2,\"unit_price\":\"1.50\"}", NULL), 200);
    wait_caught_up(); /* only a runner that took over the lease gets there */
    json_t *cart = NULL;
    snprintf(path, sizeof path, "/carts/lease%s", run_id);
    assert_int_equal(http(c, "GET", path, NULL, &cart), 200);
    assert_string_equal(json_string_value(json_object_get(cart, "total")), "3.00");
    json_decref(cart);
    curl_easy_cleanup(c);
    url = saved;

    start_server(); /* the first instance again, for the tests after this one */
    kill_pid(second, SIGTERM);
}

int main(void)
{
    url = getenv("CQRSD_URL");
    bin = getenv("CQRSD_BIN");
    pidfile = getenv("CQRSD_SERVER_PIDFILE");
    logfile = getenv("CQRSD_SERVER_LOG");
    if (!url || !bin || !pidfile || !logfile || !getenv("DATABASE_URL") || !getenv("REDIS_URL")) {
        fprintf(stderr, "test_crash: needs CQRSD_URL, CQRSD_BIN, CQRSD_SERVER_PIDFILE, "
                        "CQRSD_SERVER_LOG, DATABASE_URL, REDIS_URL (run it with make test)\n");
        return 1;
    }
    char u[37];
    util_uuid4(u);
    snprintf(run_id, sizeof run_id, "%.8s", u);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    rtime_init(); /* the rebuild here must see business days as the server does */
    struct err e = {0};
    const char *mods = getenv("CQRSD_MODULES");
    if (reg_open(mods && *mods ? mods : "build/modules/ecommerce.so", &R, &e)) {
        fprintf(stderr, "test_crash: %s\n", e.msg);
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sigkill_loses_nothing),
        cmocka_unit_test(second_instance_takes_over_projections),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    reg_release(R);
    return rc;
}
