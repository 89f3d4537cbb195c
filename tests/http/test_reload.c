/* tests/http/test_reload.c — reloading modules under load, against a real
 * server of its own on a database of its own (cqrsd_reload, Redis db 4). The
 * server loads a folder holding copies of the e-commerce module and of the
 * fixture tests/modules/notes.so; the test replaces files in that folder as
 * an operator installs a new build (a copy, then a rename over the old one).
 *
 *   reload_under_load     four clients send commands (each with its key) and
 *                         queries without pause while the modules are
 *                         reloaded 10 times (SIGHUP and POST
 *                         /admin/modules/reload in turn): no request fails,
 *                         every acknowledged command is stored once, the
 *                         stream versions are dense
 *   new_projection_version  notes v2 (projection version 2) replaces v1: it
 *                         rebuilds into its own keys while queries answer
 *                         from v1, which keeps up with new notes; once v2
 *                         reaches the head, queries switch ("schema": 2)
 *   refused_reload        a file that is no module in the folder: the reload
 *                         answers 422 naming it, the serving generation goes on
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "core/util.h"
#include "tests/lib/th.h"

#define ADDR "127.0.0.1:18096"
#define BASE "http://" ADDR

static char run[16], dburl[512], redisurl[512], dir[64], poison[128];
static char env_db[600], env_redis[600], env_mods[200], env_poison[200];
static PGconn *pg;
static pid_t server;


/* Installs src as <dir>/<name> the way a careful operator does: a copy
 * beside it, then a rename over it (a loaded file is never written). */
static void install(const char *src, const char *name)
{
    char *cmd = xasprintf("cp '%s' '%s/.%s.new' && mv '%s/.%s.new' '%s/%s'", src, dir, name,
                          dir, name, dir, name);
    assert_int_equal(system(cmd), 0);
    free(cmd);
}

static long long generation(void)
{
    json_t *m = th_get_json(BASE, "/admin/modules");
    long long g = json_integer_value(json_object_get(m, "generation"));
    json_decref(m);
    return g;
}

/* ---------- the load ---------- */

static atomic_int stop_load, failures, acked;

struct client {
    pthread_t t;
    int id, queries;
};

static void *client_main(void *arg)
{
    struct client *c = arg;
    CURL *h = curl_easy_init();
    for (int n = 0; !atomic_load(&stop_load); n++) {
        char body[200], path[200], key[100];
        struct th_reply r;
        if (c->queries) {
            snprintf(path, sizeof path, n % 2 ? "/carts/%s-fixed" : "/products/top", run);
            r = th_call(h, BASE, "GET", path, NULL, NULL, 20);
            if (r.status != 200) {
                print_message("GET %s: %ld %s\n", path, r.status, r.body ? r.body : "");
                atomic_fetch_add(&failures, 1);
            }
            th_reply_free(&r);
            continue;
        }
        snprintf(body, sizeof body, "{\"cart_id\":\"%s-c%d-%d\"}", run, c->id, n);
        snprintf(key, sizeof key, "%s-open-%d-%d", run, c->id, n);
        r = th_call(h, BASE, "POST", "/carts", body, key, 20);
        int ok = r.status == 201;
        if (!ok)
            print_message("POST /carts: %ld %s\n", r.status, r.body ? r.body : "");
        th_reply_free(&r);
        if (ok) {
            snprintf(path, sizeof path, "/carts/%s-c%d-%d/items", run, c->id, n);
            snprintf(key, sizeof key, "%s-add-%d-%d", run, c->id, n);
            r = th_call(h, BASE, "POST", path,
                        "{\"sku\":\"R1\",\"quantity\":1,\"unit_price\":\"2.00\"}", key, 20);
            ok = r.status == 200;
            if (!ok)
                print_message("POST %s: %ld %s\n", path, r.status, r.body ? r.body : "");
            th_reply_free(&r);
        }
        if (ok)
            atomic_fetch_add(&acked, 1);
        else
            atomic_fetch_add(&failures, 1);
    }
    curl_easy_cleanup(h);
    return NULL;
}

static void reload_under_load(void **state)
{
    (void)state;
    char body[200], path[200];
    snprintf(body, sizeof body, "{\"cart_id\":\"%s-fixed\"}", run);
    struct th_reply r = th_call(NULL, BASE, "POST", "/carts", body, NULL, 20);
    assert_int_equal(r.status, 201);
    th_reply_free(&r);
    th_wait_caught_up(BASE, 20);
    struct client c[4];
    for (int i = 0; i < 4; i++) {
        c[i] = (struct client){.id = i, .queries = i >= 2};
        pthread_create(&c[i].t, NULL, client_main, &c[i]);
    }
    long long g0 = generation();
    for (int i = 0; i < 10; i++) {
        usleep(300000);
        install(getenv("CQRSD_ECOMMERCE_MODULE"), "ecommerce.so");
        if (i % 2) {
            kill(server, SIGHUP);
            for (int k = 0; k < 100 && generation() != g0 + i + 1; k++)
                usleep(20000);
        } else {
            r = th_call(NULL, BASE, "POST", "/admin/modules/reload", NULL, NULL, 20);
            assert_int_equal(r.status, 200);
            th_reply_free(&r);
        }
        assert_int_equal(generation(), g0 + i + 1);
    }
    usleep(300000);
    atomic_store(&stop_load, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(c[i].t, NULL);
    print_message("%d carts opened and filled during 10 reloads, %d failed requests\n",
                  atomic_load(&acked), atomic_load(&failures));
    assert_int_equal(atomic_load(&failures), 0);
    assert_true(atomic_load(&acked) > 20);
    /* every acknowledged command stored once, versions dense */
    snprintf(path, sizeof path, "cart-%s-c%%", run);
    assert_int_equal(th_sql_int(pg, "SELECT count(*) FROM events WHERE stream_id LIKE '%s'", path),
                     2LL * atomic_load(&acked));
    assert_int_equal(th_sql_int(pg, "SELECT count(*) FROM (SELECT stream_id FROM events WHERE stream_id "
                           "LIKE '%s' GROUP BY stream_id HAVING max(version) <> count(*) OR "
                           "count(*) <> 2) x",
                           path),
                     0);
    th_wait_caught_up(BASE, 30);
    json_t *s = th_get_json(BASE, "/stats/summary");
    json_decref(s);
}

static json_t *note(const char *id)
{
    char path[200];
    snprintf(path, sizeof path, "/notes/%s-%s", run, id);
    return th_get_json(BASE, path);
}

static long long note_field(const char *id, const char *field)
{
    json_t *n = note(id);
    long long v = json_integer_value(json_object_get(n, field));
    json_decref(n);
    return v;
}

static void post_note(const char *id, int poisoned)
{
    char body[200];
    snprintf(body, sizeof body, "{\"note_id\":\"%s-%s\",\"poison\":%s}", run, id,
             poisoned ? "true" : "false");
    struct th_reply r = th_call(NULL, BASE, "POST", "/notes", body, NULL, 20);
    assert_int_equal(r.status, 201);
    th_reply_free(&r);
}

static void new_projection_version(void **state)
{
    (void)state;
    post_note("p", 1); /* no poison file yet: v1 counts it */
    for (int i = 0; i < 20; i++) {
        char id[16];
        snprintf(id, sizeof id, "n%d", i);
        post_note(id, 0);
    }
    th_wait_caught_up(BASE, 20);
    assert_int_equal(note_field("n1", "schema"), 1);
    assert_int_equal(note_field("p", "seen"), 1);

    /* v2, whose rebuild stops at the poisoned note while the file exists */
    FILE *f = fopen(poison, "w");
    assert_non_null(f);
    fclose(f);
    char v2[600];
    snprintf(v2, sizeof v2, "%s/notes_v2.so", getenv("CQRSD_TEST_MODULES"));
    install(v2, "notes.so");
    struct th_reply r = th_call(NULL, BASE, "POST", "/admin/modules/reload", NULL, NULL, 20);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"rebuilding\":[\"notes v2\"]"));
    th_reply_free(&r);
    /* queries answer from v1 meanwhile, and v1 keeps up with new notes */
    post_note("during", 0);
    for (int i = 0; i < 50 && note_field("during", "seen") != 1; i++)
        usleep(100000);
    assert_int_equal(note_field("during", "seen"), 1);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(note_field("n1", "schema"), 1);
        usleep(100000);
    }
    /* the fix: v2 gets past the note, reaches the head, queries switch */
    unlink(poison);
    int switched = 0;
    for (int i = 0; i < 150 && !switched; i++) {
        switched = note_field("n1", "schema") == 2;
        if (!switched)
            usleep(100000);
    }
    assert_true(switched);
    assert_int_equal(note_field("n1", "seen"), 1);
    assert_int_equal(note_field("during", "seen"), 1);
    assert_int_equal(note_field("p", "seen"), 1);
    assert_int_equal(note_field("n1", "notes"), 22);
    json_t *m = th_get_json(BASE, "/admin/modules");
    assert_int_equal(json_array_size(json_object_get(m, "rebuilding")), 0);
    json_decref(m);
}

static void refused_reload(void **state)
{
    (void)state;
    long long g = generation();
    char bad[600];
    snprintf(bad, sizeof bad, "%s/not_a_module.so", getenv("CQRSD_TEST_MODULES"));
    install(bad, "zz_broken.so");
    struct th_reply r = th_call(NULL, BASE, "POST", "/admin/modules/reload", NULL, NULL, 20);
    assert_int_equal(r.status, 422);
    assert_non_null(strstr(r.body, "zz_broken.so"));
    assert_non_null(strstr(r.body, "is not a cqrsd module"));
    th_reply_free(&r);
    assert_int_equal(generation(), g);
    assert_int_equal(note_field("n1", "schema"), 2); /* still serving */
    char *p = xasprintf("%s/zz_broken.so", dir);
    unlink(p);
    free(p);
    r = th_call(NULL, BASE, "POST", "/admin/modules/reload", NULL, NULL, 20);
    assert_int_equal(r.status, 200);
    th_reply_free(&r);
}

static int setup(void **state)
{
    (void)state;
    th_isolated("cqrsd_reload", 4, dburl, redisurl);
    snprintf(dir, sizeof dir, "/tmp/cqrsd-reload.XXXXXX");
    assert_non_null(mkdtemp(dir));
    char notes[600];
    snprintf(notes, sizeof notes, "%s/notes.so", getenv("CQRSD_TEST_MODULES"));
    install(getenv("CQRSD_ECOMMERCE_MODULE"), "ecommerce.so");
    install(notes, "notes.so");
    snprintf(poison, sizeof poison, "/tmp/cqrsd-reload-poison-%ld", (long)getpid());
    snprintf(env_db, sizeof env_db, "DATABASE_URL=%s", dburl);
    snprintf(env_redis, sizeof env_redis, "REDIS_URL=%s", redisurl);
    snprintf(env_mods, sizeof env_mods, "CQRSD_MODULES=%s", dir);
    snprintf(env_poison, sizeof env_poison, "CQRSD_TEST_POISON=%s", poison);
    static const char *env[5];
    env[0] = env_db;
    env[1] = env_redis;
    env[2] = env_mods;
    env[3] = env_poison;
    server = th_start_server(ADDR, env);
    pg = PQconnectdb(dburl);
    if (PQstatus(pg) != CONNECTION_OK)
        fail_msg("PostgreSQL: %s", PQerrorMessage(pg));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    th_stop_server(server);
    PQfinish(pg);
    char *cmd = xasprintf("rm -rf '%s'", dir);
    if (system(cmd) != 0)
        print_message("could not remove %s\n", dir);
    free(cmd);
    unlink(poison);
    return 0;
}

int main(void)
{
    if (!getenv("DATABASE_URL") || !getenv("REDIS_URL") || !getenv("CQRSD_BIN") ||
        !getenv("CQRSD_ECOMMERCE_MODULE") || !getenv("CQRSD_TEST_MODULES")) {
        fprintf(stderr, "test_reload: needs DATABASE_URL, REDIS_URL, CQRSD_BIN, "
                        "CQRSD_ECOMMERCE_MODULE and CQRSD_TEST_MODULES (run it with make test)\n");
        return 1;
    }
    snprintf(run, sizeof run, "r%lx", (unsigned long)time(NULL));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reload_under_load),
        cmocka_unit_test(new_projection_version),
        cmocka_unit_test(refused_reload),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
