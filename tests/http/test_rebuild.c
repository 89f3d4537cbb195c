/* tests/http/test_rebuild.c — blue/green rebuilds (core/rebuild.h; issue 8,
 * point 4, and the replay of issue 7) under the running server:
 *
 *   rebuild_serves_throughout   `cqrsd replay --all` while queries and
 *       commands go on: every query answers 200 with the same body, every
 *       command is acknowledged; afterwards each projection serves from the
 *       next build, the old build's keys are gone, the commands sent during
 *       the rebuild are in the read models, and the result equals a hard
 *       reset replayed through the live path (rm_reset + proj_catch_up);
 *       stderr, not a terminal, gets plain lines (no carriage return);
 *   interrupted_rebuild_leaves_live   a rebuild stopped after writing its
 *       new build leaves the live builds and their contents as they were;
 *       the next rebuild drops what it wrote and completes;
 *   one_rebuild_at_a_time   while another session holds a projection's
 *       rebuild lock, `cqrsd replay` of it exits 1 saying so, and changes
 *       nothing;
 *   bounded_rebuild   with the model bounded to 16 kB the fold stops early
 *       and the batch path does the rest: the same read models;
 *   rebuild_over_http   POST /admin/projections/{name}/rebuild answers 202,
 *       a second one 409 while it runs, an unknown name 404; GET
 *       /admin/projections shows it rebuilding, then done, on the next build,
 *       running and caught up.
 *
 * Runs under tools/test.sh: CQRSD_URL, CQRSD_BIN, DATABASE_URL, REDIS_URL. */
#include <curl/curl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/es.h"
#include "core/proj.h"
#include "core/rebuild.h"
#include "core/reg.h"
#include "core/rm.h"
#include "core/rtime.h"
#include "core/util.h"
#include "tests/lib/th.h"

static const char *url, *bin;
static char run_id[9];
static struct reg *R; /* the modules the server runs: $CQRSD_MODULES */

#define CARTS 12

static redisContext *redis(void)
{
    struct err e = {0};
    redisContext *rc = rm_connect(getenv("REDIS_URL"), 10000, &e);
    if (!rc)
        fail_msg("%s", e.msg);
    return rc;
}

static long call(const char *method, const char *path, const char *body)
{
    struct th_reply r = th_call(NULL, url, method, path, body, NULL, 10);
    th_reply_free(&r);
    return r.status;
}

/* The live build of every projection of R, in order. */
static void live_builds(redisContext *rc, long *builds)
{
    char(*cp)[33] = xcalloc(R->nprojs + 1, sizeof *cp);
    struct err e = {0};
    if (rm_checkpoints_get(rc, R, cp, builds, &e))
        fail_msg("%s", e.msg);
    free(cp);
}

/* "<relative key> <type> <sha1 of the sorted contents>" of every key under
 * prefix, one per line, by a script over SCAN pages. */
static const char DIGEST_LUA[] =
    "local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2] .. '*', 'COUNT', 1000)\n"
    "local out = {r[1]}\n"
    "for _, k in ipairs(r[2]) do\n"
    "  local t, items = redis.call('TYPE', k).ok, {}\n"
    "  if t == 'hash' or t == 'zset' then\n"
    "    local h = t == 'hash' and redis.call('HGETALL', k) or redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')\n"
    "    for i = 1, #h, 2 do items[#items + 1] = h[i] .. '=' .. h[i + 1] end\n"
    "  elseif t == 'set' then items = redis.call('SMEMBERS', k)\n"
    "  else items = {redis.call('GET', k)} end\n"
    "  table.sort(items)\n"
    "  out[#out + 1] = k:sub(#ARGV[2] + 1) .. ' ' .. t .. ' ' .. redis.sha1hex(table.concat(items, '\\31'))\n"
    "end\n"
    "return out\n";

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The keys of one build of projection p, as a sorted list of lines; *n
 * gets their number. Caller frees with free_lines. */
static char **build_lines(redisContext *rc, const struct fn_projection *p, long build, size_t *n)
{
    char *prefix = rm_keyspace(p->name, p->version, build);
    char **lines = NULL;
    *n = 0;
    char cursor[32] = "0";
    do {
        redisReply *r = redisCommand(rc, "EVAL %s 0 %s %s", DIGEST_LUA, cursor, prefix);
        if (!r || r->type != REDIS_REPLY_ARRAY)
            fail_msg("digest of %s: %s", prefix, r && r->str ? r->str : "no reply");
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        lines = xrealloc(lines, (*n + r->elements) * sizeof *lines);
        for (size_t i = 1; i < r->elements; i++)
            lines[(*n)++] = xstrdup(r->element[i]->str);
        freeReplyObject(r);
    } while (strcmp(cursor, "0"));
    qsort(lines, *n, sizeof *lines, cmp_str);
    size_t k = 0; /* SCAN may return a key twice */
    for (size_t i = 0; i < *n; i++) {
        if (k && !strcmp(lines[i], lines[k - 1]))
            free(lines[i]);
        else
            lines[k++] = lines[i];
    }
    *n = k;
    free(prefix);
    return lines;
}

/* One text of every projection's live build: "<projection> <line>\n"... */
static char *live_text(redisContext *rc)
{
    long *builds = xcalloc(R->nprojs + 1, sizeof *builds);
    live_builds(rc, builds);
    char *out = xstrdup("");
    size_t len = 0;
    for (size_t p = 0; p < R->nprojs; p++) {
        size_t n = 0;
        char **lines = build_lines(rc, R->projs[p].p, builds[p], &n);
        for (size_t i = 0; i < n; i++) {
            char *l = xasprintf("%s %s\n", R->projs[p].p->name, lines[i]);
            size_t ll = strlen(l);
            out = xrealloc(out, len + ll + 1);
            memcpy(out + len, l, ll + 1);
            len += ll;
            free(l);
            free(lines[i]);
        }
        free(lines);
    }
    free(builds);
    return out;
}

/* The number of keys of build b of p. */
static size_t build_keys(redisContext *rc, const struct fn_projection *p, long b)
{
    size_t n = 0;
    char **lines = build_lines(rc, p, b, &n);
    for (size_t i = 0; i < n; i++)
        free(lines[i]);
    free(lines);
    return n;
}

/* Runs `env $CQRSD_BIN replay args` (env: "NAME=VALUE ..." or "") with
 * stdout and stderr into *out (caller frees); returns its exit status. */
static int run_replay_env(const char *env, const char *args, char **out)
{
    char *cmd = xasprintf("env %s %s replay %s 2>&1 </dev/null", env, bin, args);
    FILE *f = popen(cmd, "r");
    free(cmd);
    if (!f)
        fail_msg("could not run %s replay", bin);
    size_t len = 0, cap = 4096;
    *out = xmalloc(cap);
    size_t got;
    while ((got = fread(*out + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (cap - len < 1024)
            *out = xrealloc(*out, cap *= 2);
    }
    (*out)[len] = '\0';
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int run_replay(const char *args, char **out)
{
    return run_replay_env("", args, out);
}

/* Opens CARTS carts with three items each; checks out the first half. */
static void fill(const char *tag)
{
    for (int i = 0; i < CARTS; i++) {
        char body[200], path[120];
        snprintf(body, sizeof body, "{\"cart_id\":\"rb%s%s%d\",\"customer_id\":\"c%d\"}", run_id,
                 tag, i, i % 5);
        assert_int_equal(call("POST", "/carts", body), 201);
        snprintf(path, sizeof path, "/carts/rb%s%s%d/items", run_id, tag, i);
        for (int k = 0; k < 3; k++) {
            snprintf(body, sizeof body,
                     "{\"sku\":\"S%d\",\"description\":\"thing %d\",\"quantity\":%d,"
                     "\"unit_price\":\"%d.25\"}",
                     k, k, k + 1, k + 2);
            assert_int_equal(call("POST", path, body), 200);
        }
        if (i < CARTS / 2) {
            snprintf(path, sizeof path, "/carts/rb%s%s%d/checkout", run_id, tag, i);
            assert_int_equal(call("POST", path, "{}"), 200);
        }
    }
}

/* Fails unless every projection serves from the build after before[p], the
 * old build holds no key, and the read models read text. */
static void rebuilt_as_before(redisContext *rc, const long *before, const char *text,
                              const char *what)
{
    long *now = xcalloc(R->nprojs + 1, sizeof *now);
    live_builds(rc, now);
    for (size_t p = 0; p < R->nprojs; p++) {
        if (now[p] != before[p] + 1)
            fail_msg("%s: %s serves build %ld, from %ld", what, R->projs[p].p->name, now[p],
                     before[p]);
        assert_int_equal(build_keys(rc, R->projs[p].p, before[p]), 0);
    }
    char *after = live_text(rc);
    if (strcmp(text, after))
        fail_msg("%s differs from the read models before it", what);
    free(after);
    free(now);
}

/* ---------- queries and commands while a rebuild runs ---------- */

struct traffic {
    volatile int stop;
    char path[120], body[8192];
    long queries, bad_queries, commands, bad_commands;
    char first_bad[400], first_bad_command[200];
};

static void *queries(void *arg)
{
    struct traffic *t = arg;
    CURL *c = curl_easy_init();
    while (!t->stop) {
        struct th_reply r = th_call(c, url, "GET", t->path, NULL, NULL, 10);
        t->queries++;
        if (r.status != 200 || strcmp(r.body ? r.body : "", t->body)) {
            char when[64];
            if (!t->bad_queries++) {
                redisContext *rc = redis();
                redisReply *lv = redisCommand(rc, "GET cqrsd:live:cart_view:v1");
                const char *id = strrchr(t->path, '/') + 1;
                redisReply *e0 = redisCommand(rc, "EXISTS cart_view:v1:cart:%s", id);
                redisReply *e1 = redisCommand(rc, "EXISTS cart_view:v1@1:cart:%s", id);
                redisReply *bs = redisCommand(rc, "SMEMBERS cqrsd:builds:cart_view:v1");
                redisReply *n = redisCommand(rc, "DBSIZE");
                snprintf(t->first_bad, sizeof t->first_bad,
                         "%ld at %s (live build %s, build 0 has it %lld, build 1 %lld, %zu builds "
                         "registered, dbsize %lld): %.150s",
                         r.status, rtime_now(when), lv && lv->str ? lv->str : "0", e0->integer,
                         e1->integer, bs->elements, n->integer, r.body ? r.body : "");
                freeReplyObject(lv);
                freeReplyObject(e0);
                freeReplyObject(e1);
                freeReplyObject(bs);
                freeReplyObject(n);
                redisFree(rc);
            }
        }
        th_reply_free(&r);
    }
    curl_easy_cleanup(c);
    return NULL;
}

static void *commands(void *arg)
{
    struct traffic *t = arg;
    char path[120], body[200];
    snprintf(path, sizeof path, "/carts/rb%sduring/items", run_id);
    while (!t->stop) {
        snprintf(body, sizeof body, "{\"sku\":\"D\",\"quantity\":1,\"unit_price\":\"1.00\"}");
        struct th_reply r = th_call(NULL, url, "POST", path, body, NULL, 10);
        t->commands++;
        if (r.status != 200 && !t->bad_commands++)
            snprintf(t->first_bad_command, sizeof t->first_bad_command, "%ld %.150s", r.status,
                     r.body ? r.body : "");
        th_reply_free(&r);
        usleep(5000);
    }
    return NULL;
}

static void rebuild_serves_throughout(void **state)
{
    (void)state;
    fill("a");
    char during[120];
    snprintf(during, sizeof during, "{\"cart_id\":\"rb%sduring\"}", run_id);
    assert_int_equal(call("POST", "/carts", during), 201);
    th_wait_caught_up(url, 30);
    redisContext *rc = redis();
    long *before = xcalloc(R->nprojs + 1, sizeof *before);
    live_builds(rc, before);

    struct traffic t = {0};
    /* a checked-out cart: its body cannot change (an open one is abandoned
     * by the cart.abandonment timer after a while, a change of its own) */
    snprintf(t.path, sizeof t.path, "/carts/rb%sa0", run_id);
    struct th_reply first = th_call(NULL, url, "GET", t.path, NULL, NULL, 10);
    assert_int_equal(first.status, 200);
    snprintf(t.body, sizeof t.body, "%s", first.body);
    th_reply_free(&first);
    pthread_t q, c;
    pthread_create(&q, NULL, queries, &t);
    pthread_create(&c, NULL, commands, &t);
    char *out = NULL, began[64];
    rtime_now(began);
    int code = run_replay("--all", &out);
    t.stop = 1;
    pthread_join(q, NULL);
    pthread_join(c, NULL);
    print_message("replay from %s: exit %d, %ld queries (%ld bad), %ld commands during it\n%s",
                  began, code, t.queries, t.bad_queries, t.commands, out);
    if (code != 0)
        fail_msg("cqrsd replay --all exited %d:\n%s", code, out);
    if (strchr(out, '\r'))
        fail_msg("replay wrote carriage returns into a pipe:\n%s", out);
    if (!strstr(out, " events, ") || !strstr(out, "/s, ETA"))
        fail_msg("replay printed no progress line:\n%s", out);
    if (t.bad_queries)
        fail_msg("%ld of %ld queries during the rebuild differed: first %s", t.bad_queries,
                 t.queries, t.first_bad);
    if (t.bad_commands)
        fail_msg("%ld of %ld commands during the rebuild failed: first %s", t.bad_commands,
                 t.commands, t.first_bad_command);
    assert_true(t.queries > 0 && t.commands > 0);

    /* each serves from the next build; the old one is gone */
    long *after = xcalloc(R->nprojs + 1, sizeof *after);
    live_builds(rc, after);
    for (size_t p = 0; p < R->nprojs; p++) {
        const struct fn_projection *fp = R->projs[p].p;
        if (after[p] != before[p] + 1)
            fail_msg("%s serves build %ld after the rebuild, from %ld", fp->name, after[p],
                     before[p]);
        size_t left = build_keys(rc, fp, before[p]);
        if (left)
            fail_msg("%s: %zu keys of the old build %ld are left", fp->name, left, before[p]);
    }
    /* the commands sent during it are in the read model */
    th_wait_caught_up(url, 30);
    char path[120];
    snprintf(path, sizeof path, "/carts/rb%sduring", run_id);
    json_t *cart = th_get_json(url, path);
    json_t *d = json_array_get(json_object_get(cart, "lines"), 0);
    assert_non_null(d);
    assert_int_equal(json_integer_value(json_object_get(d, "quantity")), t.commands);
    json_decref(cart);

    /* and it equals a hard reset replayed through the live path */
    char *blue_green = live_text(rc);
    struct err e = {0};
    PGconn *pg = es_connect(getenv("DATABASE_URL"), &e);
    assert_non_null(pg);
    for (size_t p = 0; p < R->nprojs; p++)
        assert_int_equal(rm_reset(rc, R->projs[p].p->name, R->projs[p].p->version, NULL, &e), 0);
    if (proj_catch_up(pg, rc, R, &e))
        fail_msg("live-path replay: %s", e.msg);
    char *live_path = live_text(rc);
    if (strcmp(blue_green, live_path))
        fail_msg("the blue/green rebuild differs from the live-path replay (%zu vs %zu bytes)",
                 strlen(blue_green), strlen(live_path));
    assert_true(strlen(blue_green) > 0);
    PQfinish(pg);
    free(blue_green);
    free(live_path);
    free(out);
    free(before);
    free(after);
    redisFree(rc);
}

/* ---------- interrupted ---------- */

static void stop_at_write(void *arg, enum rebuild_phase ph, long long done, long long total,
                          double secs)
{
    (void)done;
    (void)total;
    (void)secs;
    if (ph == REBUILD_WRITE)
        atomic_store((atomic_int *)arg, 1);
}

static void interrupted_rebuild_leaves_live(void **state)
{
    (void)state;
    fill("b");
    th_wait_caught_up(url, 30);
    redisContext *rc = redis();
    struct err e = {0};
    PGconn *pg = es_connect(getenv("DATABASE_URL"), &e);
    assert_non_null(pg);
    long *before = xcalloc(R->nprojs + 1, sizeof *before);
    live_builds(rc, before);
    char *text = live_text(rc);
    unsigned char *all = xcalloc(R->nprojs + 1, 1);
    memset(all, 1, R->nprojs);
    atomic_int stop = 0;
    struct rebuild_opts o = {all, stop_at_write, &stop, &stop, NULL, 0};
    int code = rebuild_run(pg, rc, R, &o, NULL, &e);
    assert_int_equal(code, ERR_UNAVAILABLE);
    assert_non_null(strstr(e.msg, "stopped before the switch"));
    long *now = xcalloc(R->nprojs + 1, sizeof *now);
    live_builds(rc, now);
    size_t written = 0;
    for (size_t p = 0; p < R->nprojs; p++) {
        assert_int_equal(now[p], before[p]);
        written += build_keys(rc, R->projs[p].p, before[p] + 1);
    }
    assert_true(written > 0); /* it was stopped after writing the new build */
    char *still = live_text(rc);
    if (strcmp(text, still))
        fail_msg("the live read models changed under an interrupted rebuild");
    char path[120];
    snprintf(path, sizeof path, "/carts/rb%sb0", run_id);
    json_decref(th_get_json(url, path));

    /* the next one drops what the interrupted one wrote, and completes */
    char *out = NULL;
    assert_int_equal(run_replay("--all", &out), 0);
    rebuilt_as_before(rc, before, text, "the completed rebuild");
    free(out);
    free(still);
    free(text);
    free(all);
    free(before);
    free(now);
    PQfinish(pg);
    redisFree(rc);
}

/* ---------- one at a time ---------- */

static void one_rebuild_at_a_time(void **state)
{
    (void)state;
    const struct fn_projection *p = R->projs[0].p;
    struct err e = {0};
    PGconn *holder = es_connect(getenv("DATABASE_URL"), &e);
    assert_non_null(holder);
    PQclear(th_sql(holder, "SELECT pg_advisory_lock(%d, %d)", REBUILD_LOCK_CLASS,
                   rebuild_lock_objid(p->name, p->version)));
    redisContext *rc = redis();
    long *before = xcalloc(R->nprojs + 1, sizeof *before);
    live_builds(rc, before);
    char *out = NULL;
    assert_int_equal(run_replay(p->name, &out), 1);
    if (!strstr(out, "already running"))
        fail_msg("replay beside a running rebuild said:\n%s", out);
    long *now = xcalloc(R->nprojs + 1, sizeof *now);
    live_builds(rc, now);
    assert_int_equal(now[0], before[0]);
    assert_int_equal(build_keys(rc, p, before[0] + 1), 0);
    PQfinish(holder); /* the lock goes with the session */
    free(out);
    out = NULL;
    assert_int_equal(run_replay(p->name, &out), 0);
    live_builds(rc, now);
    assert_int_equal(now[0], before[0] + 1);
    free(out);
    free(before);
    free(now);
    redisFree(rc);
}

static void bounded_rebuild(void **state)
{
    (void)state;
    fill("c");
    th_wait_caught_up(url, 30);
    redisContext *rc = redis();
    struct err e = {0};
    PGconn *pg = es_connect(getenv("DATABASE_URL"), &e);
    assert_non_null(pg);
    long long events = th_sql_int(pg, "SELECT count(*) FROM events");
    long *before = xcalloc(R->nprojs + 1, sizeof *before);
    live_builds(rc, before);
    char *text = live_text(rc);
    unsigned char *all = xcalloc(R->nprojs + 1, 1);
    memset(all, 1, R->nprojs);
    /* a model of 16 kB: the fold stops after a few carts */
    struct rebuild_opts o = {all, NULL, NULL, NULL, NULL, 16 << 10};
    struct rebuild_stats st = {0};
    if (rebuild_run(pg, rc, R, &o, &st, &e))
        fail_msg("bounded rebuild: %s", e.msg);
    print_message("bounded: %lld of %lld events folded, the rest through the batch path\n",
                  st.events, events);
    assert_true(st.bounded);
    assert_true(st.events > 0 && st.events < events);
    rebuilt_as_before(rc, before, text, "the bounded rebuild");
    free(text);
    free(all);
    free(before);
    PQfinish(pg);
    redisFree(rc);
}

/* The entry of projection name in GET /admin/projections (new reference). */
static json_t *status_of(const char *name)
{
    json_t *all = th_get_json(url, "/admin/projections");
    json_t *p, *out = NULL;
    size_t i;
    json_array_foreach(json_object_get(all, "projections"), i, p)
        if (!strcmp(json_string_value(json_object_get(p, "name")), name))
            out = json_incref(p);
    if (!json_is_string(json_object_get(all, "head")))
        fail_msg("GET /admin/projections has no head");
    json_decref(all);
    if (!out)
        fail_msg("GET /admin/projections lists no %s", name);
    return out;
}

/* Fails unless entry p of GET /admin/projections is in state want, naming
 * the advisory locks held (a "rebuilding" comes from a rebuild lock). */
static void state_is(json_t *p, const char *want, const char *when)
{
    if (!strcmp(json_string_value(json_object_get(p, "state")), want))
        return;
    struct err e = {0};
    PGconn *pg = es_connect(getenv("DATABASE_URL"), &e);
    PGresult *r = th_sql(pg, "SELECT string_agg(classid || '/' || objid || '/' || pid || '/' || "
                             "granted, ' ') FROM pg_locks WHERE locktype = 'advisory'");
    fail_msg("%s: %s; advisory locks (classid/objid/pid/granted): %s", when, json_dumps(p, 0),
             PQgetvalue(r, 0, 0));
}

static void rebuild_over_http(void **state)
{
    (void)state;
    th_wait_caught_up(url, 30);
    const char *name = R->projs[R->nprojs - 1].p->name;
    json_t *before = status_of(name);
    json_int_t b0 = json_integer_value(json_object_get(before, "build"));
    state_is(before, "running", "before the rebuild");
    assert_int_equal(json_integer_value(json_object_get(before, "lag_events")), 0);
    char path[160];
    snprintf(path, sizeof path, "/admin/projections/%s/rebuild", name);
    json_t *reply = NULL;
    assert_int_equal(th_call_json(url, "POST", path, NULL, &reply), 202);
    assert_string_equal(json_string_value(json_object_get(reply, "state")), "rebuilding");
    json_decref(reply);
    /* it runs at least through the switch's grace: a second one is refused */
    assert_int_equal(th_call_json(url, "POST", path, NULL, &reply), 409);
    json_decref(reply);
    assert_int_equal(th_call_json(url, "POST", "/admin/projections/no_such/rebuild", NULL, &reply),
                     404);
    json_decref(reply);
    json_t *now = NULL;
    const char *st = NULL;
    for (int i = 0; i < 300; i++) {
        json_decref(now);
        now = status_of(name);
        st = json_string_value(json_object_get(json_object_get(now, "rebuild"), "state"));
        if (st && strcmp(st, "rebuilding"))
            break;
        usleep(100000);
    }
    if (!st || strcmp(st, "done"))
        fail_msg("the rebuild over HTTP ended %s", json_dumps(now, 0));
    assert_int_equal(json_integer_value(json_object_get(now, "build")), b0 + 1);
    state_is(now, "running", "after the rebuild");
    json_decref(now);
    json_decref(before);
}

int main(void)
{
    url = getenv("CQRSD_URL");
    bin = getenv("CQRSD_BIN");
    if (!url || !bin || !getenv("DATABASE_URL") || !getenv("REDIS_URL")) {
        fprintf(stderr, "test_rebuild: needs CQRSD_URL, CQRSD_BIN, DATABASE_URL, REDIS_URL "
                        "(run it with make test)\n");
        return 1;
    }
    char u[37];
    util_uuid4(u);
    snprintf(run_id, sizeof run_id, "%.8s", u);
    rtime_init();
    struct err e = {0};
    const char *mods = getenv("CQRSD_MODULES");
    if (reg_open(mods && *mods ? mods : "build/modules/ecommerce.so", &R, &e)) {
        fprintf(stderr, "test_rebuild: %s\n", e.msg);
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rebuild_serves_throughout),
        cmocka_unit_test(interrupted_rebuild_leaves_live),
        cmocka_unit_test(one_rebuild_at_a_time),
        cmocka_unit_test(bounded_rebuild),
        cmocka_unit_test(rebuild_over_http),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    reg_release(R);
    return rc;
}
