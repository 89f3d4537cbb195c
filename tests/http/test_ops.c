/* tests/http/test_ops.c — what an operator watches (issue 8, point 1),
 * against the real servers: make test's own, and one of this test's on a
 * database of its own (cqrsd_ops, Redis db 8) whose schema it edits.
 *
 *   liveness          GET /healthz answers 200 {"status":"alive"} from the
 *                     HTTP thread; only GET and HEAD
 *   readiness         GET /readyz: 200 with the stores up and no migration
 *                     pending; 503 naming the reason when a migration of the
 *                     binary is missing from the database, or the database
 *                     holds one the binary does not know
 *   metrics_format    GET /metrics is Prometheus text 0.0.4: every sample
 *                     line parses, belongs to a family announced by # HELP
 *                     and # TYPE before it, histograms are cumulative and end
 *                     with +Inf equal to _count
 *   metrics_count     a command and a query move exactly their counters
 *                     (function invocations, HTTP requests by route and
 *                     status, the duration histogram's count); a 404 counts
 *                     under route ""; every projection has its lag, state and
 *                     parked gauges
 *   read_your_writes  (point 5) a query with Cqrsd-Min-Position: the command's
 *                     position answers at once when the read models have
 *                     it; with cart_view paused it waits, 504 past Prefer:
 *                     wait=1 naming the projection and how far behind it
 *                     is, and 200 with the new cart once cart_view is
 *                     resumed during the wait; every query reply carries
 *                     Cqrsd-Position; a malformed token is a 400
 *   oldest_append     cqrsd_oldest_append_seconds: 0 with a stranger's
 *                     transaction open in another database, the age of an
 *                     open appender's transaction while one is open, 0 again
 *                     after it ends
 */
#include <pthread.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "core/util.h"
#include "tests/lib/th.h"

#define ADDR "127.0.0.1:18101"
#define BASE "http://" ADDR

static char run[16], dburl[512], redisurl[512];
static char env_db[600], env_redis[600];
static const char *url; /* make test's server */
static PGconn *pg;      /* cqrsd_ops */
static pid_t server;    /* on cqrsd_ops */

/* ---------- a scrape ---------- */

/* GET base/metrics: fails the test unless 200 in the text format. Owned. */
static char *scrape(const char *base)
{
    CURL *c = curl_easy_init();
    struct th_reply r = th_call(c, base, "GET", "/metrics", NULL, NULL, 10);
    char *ct = NULL;
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
    if (r.status != 200)
        fail_msg("GET /metrics answered %ld: %.300s", r.status, r.body ? r.body : "");
    if (!ct || strncmp(ct, "text/plain; version=0.0.4", 25))
        fail_msg("GET /metrics Content-Type is \"%s\", not text/plain; version=0.0.4",
                 ct ? ct : "");
    curl_easy_cleanup(c);
    return r.body;
}

/* The value of the sample whose name and labels are exactly `series` (e.g.
 * `cqrsd_postgres_up` or `x{a="b"}`), or -1 when the scrape has none. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (!strncmp(l, series, n) && l[n] == ' ')
            return strtod(l + n + 1, NULL);
    return -1;
}

static double must_sample(const char *text, const char *series)
{
    double v = sample(text, series);
    if (v < 0)
        fail_msg("the scrape has no sample %s", series);
    return v;
}

/* ---------- liveness and readiness ---------- */

static void liveness(void **state)
{
    (void)state;
    json_t *h = th_get_json(url, "/healthz");
    assert_string_equal(json_string_value(json_object_get(h, "status")), "alive");
    json_decref(h);
    struct th_reply r = th_call(NULL, url, "POST", "/healthz", "{}", NULL, 5);
    assert_int_equal(r.status, 405);
    th_reply_free(&r);
}

/* GET base/readyz: its status, and *body (owned) the reply. */
static long readyz(const char *base, json_t **body)
{
    return th_call_json(base, "GET", "/readyz", NULL, body);
}

static void readiness(void **state)
{
    (void)state;
    json_t *b = NULL;
    assert_int_equal(readyz(BASE, &b), 200);
    assert_string_equal(json_string_value(json_object_get(b, "postgres")), "up");
    assert_string_equal(json_string_value(json_object_get(b, "redis")), "up");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(b, "migrations"),
                                                        "pending")),
                     0);
    assert_null(json_object_get(b, "not_ready"));
    json_decref(b);

    /* a migration of this binary the database lacks: not ready, and why */
    PQclear(th_sql(pg, "CREATE TEMP TABLE kept AS SELECT * FROM schema_migrations "
                       "WHERE name = '0004_appenders.sql'"));
    PQclear(th_sql(pg, "DELETE FROM schema_migrations WHERE name = '0004_appenders.sql'"));
    long st = readyz(BASE, &b);
    char *txt = json_dumps(b, 0);
    if (st != 503 || !strstr(txt, "1 migration of this binary not applied"))
        fail_msg("a missing migration: /readyz answered %ld %s", st, txt);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(b, "migrations"),
                                                        "pending")),
                     1);
    free(txt);
    json_decref(b);
    PQclear(th_sql(pg, "INSERT INTO schema_migrations SELECT * FROM kept"));
    assert_int_equal(readyz(BASE, &b), 200);
    json_decref(b);

    /* one the binary does not know (a newer binary migrated the database) */
    PQclear(th_sql(pg, "INSERT INTO schema_migrations (name, checksum) VALUES "
                       "('9999_future.sql', 'x')"));
    st = readyz(BASE, &b);
    txt = json_dumps(b, 0);
    if (st != 503 || !strstr(txt, "1 migration this binary does not know"))
        fail_msg("an unknown migration: /readyz answered %ld %s", st, txt);
    free(txt);
    json_decref(b);
    PQclear(th_sql(pg, "DELETE FROM schema_migrations WHERE name = '9999_future.sql'"));
    assert_int_equal(readyz(BASE, &b), 200);
    json_decref(b);
}

/* ---------- metrics ---------- */

static void metrics_format(void **state)
{
    (void)state;
    char *text = scrape(url);
    regex_t line;
    /* name{label="value",...} value, value a float or +Inf/NaN */
    assert_int_equal(regcomp(&line,
                             "^([a-zA-Z_:][a-zA-Z0-9_:]*)(\\{([a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|"
                             "\\\\.)*\",?)*\\})? (-?[0-9.eE+-]+|\\+Inf|NaN)$",
                             REG_EXTENDED),
                     0);
    char family[200] = "", type[32] = "";
    int samples = 0, histograms = 0;
    long long last_bucket = -1;
    char *save = NULL;
    for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(l, "# HELP ", 7)) {
            sscanf(l + 7, "%199s", family);
            type[0] = '\0';
            continue;
        }
        if (!strncmp(l, "# TYPE ", 7)) {
            char f[200];
            assert_int_equal(sscanf(l + 7, "%199s %31s", f, type), 2);
            if (strcmp(f, family))
                fail_msg("# TYPE of %s follows # HELP of %s", f, family);
            histograms += !strcmp(type, "histogram");
            continue;
        }
        regmatch_t m[2];
        if (regexec(&line, l, 2, m, 0))
            fail_msg("not a sample line: \"%s\"", l);
        char name[200];
        snprintf(name, sizeof name, "%.*s", (int)(m[1].rm_eo - m[1].rm_so), l);
        if (!*type)
            fail_msg("sample %s has no # TYPE before it", name);
        size_t fl = strlen(family);
        int ours = !strcmp(name, family) ||
                   (!strcmp(type, "histogram") && !strncmp(name, family, fl) &&
                    (!strcmp(name + fl, "_bucket") || !strcmp(name + fl, "_sum") ||
                     !strcmp(name + fl, "_count")));
        if (!ours)
            fail_msg("sample %s is not of family %s (%s)", name, family, type);
        if (!strcmp(type, "histogram")) {
            long long v = strtoll(strrchr(l, ' ') + 1, NULL, 10);
            if (strstr(name, "_bucket")) {
                if (!strstr(l, "le=\"0.0005\"") && v < last_bucket)
                    fail_msg("histogram bucket decreases: \"%s\" after %lld", l, last_bucket);
                last_bucket = v;
            } else if (strstr(name, "_count") && v != last_bucket) {
                fail_msg("\"%s\": _count differs from the +Inf bucket %lld", l, last_bucket);
            }
        }
        samples++;
    }
    regfree(&line);
    if (samples < 50 || histograms < 2)
        fail_msg("only %d samples and %d histograms", samples, histograms);
    free(text);
}

static void metrics_count(void **state)
{
    (void)state;
    char cart[64], path[128], body[200];
    snprintf(cart, sizeof cart, "ops-%s", run);
    snprintf(body, sizeof body, "{\"cart_id\":\"%s\"}", cart);
    snprintf(path, sizeof path, "/carts/%s", cart);
    char *before = scrape(url);
    const char *opened = "cqrsd_function_invocations_total{function=\"cart.open\",kind=\"command\"}";
    const char *posted =
        "cqrsd_http_requests_total{method=\"POST\",route=\"/carts\",status=\"201\"}";
    const char *posted_n = "cqrsd_http_request_duration_seconds_count{method=\"POST\","
                           "route=\"/carts\",status=\"201\"}";
    const char *got = "cqrsd_http_requests_total{method=\"GET\",route=\"/carts/{cart_id}\","
                      "status=\"200\"}";
    const char *lost = "cqrsd_http_requests_total{method=\"GET\",route=\"\",status=\"404\"}";
    double o0 = must_sample(before, opened);
    double p0 = sample(before, posted), n0 = sample(before, posted_n);
    double g0 = sample(before, got), l0 = sample(before, lost);

    struct th_reply r = th_call(NULL, url, "POST", "/carts", body, NULL, 10);
    assert_int_equal(r.status, 201);
    th_reply_free(&r);
    th_wait_caught_up(url, 30);
    r = th_call(NULL, url, "GET", path, NULL, NULL, 10);
    assert_int_equal(r.status, 200);
    th_reply_free(&r);
    r = th_call(NULL, url, "GET", "/no/such/route", NULL, NULL, 10);
    assert_int_equal(r.status, 404);
    th_reply_free(&r);

    char *after = scrape(url);
    assert_true(must_sample(after, opened) == o0 + 1);
    assert_true(must_sample(after, posted) == (p0 < 0 ? 0 : p0) + 1);
    assert_true(must_sample(after, posted_n) == (n0 < 0 ? 0 : n0) + 1);
    assert_true(must_sample(after, got) == (g0 < 0 ? 0 : g0) + 1);
    assert_true(must_sample(after, lost) == (l0 < 0 ? 0 : l0) + 1);
    assert_true(must_sample(after, "cqrsd_postgres_up") == 1);
    assert_true(must_sample(after, "cqrsd_redis_up") == 1);
    assert_true(must_sample(after, "cqrsd_queue_capacity") > 0);
    assert_true(must_sample(after, "cqrsd_workers{state=\"busy\"}") >= 1); /* the scrape's */
    assert_true(must_sample(after, "cqrsd_connections{store=\"postgres\",state=\"open\"}") >= 1);
    must_sample(after, "cqrsd_queue_depth{queue=\"commands\"}");

    /* every projection of GET /admin/projections, caught up */
    json_t *ap = th_get_json(url, "/admin/projections");
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(ap, "projections"), i, p) {
        const char *name = json_string_value(json_object_get(p, "name"));
        int v = (int)json_integer_value(json_object_get(p, "version"));
        char s[300];
        snprintf(s, sizeof s, "cqrsd_projection_lag_events{projection=\"%s\",version=\"%d\"}",
                 name, v);
        assert_true(must_sample(after, s) == 0);
        snprintf(s, sizeof s, "cqrsd_projection_lag_seconds{projection=\"%s\",version=\"%d\"}",
                 name, v);
        assert_true(must_sample(after, s) == 0);
        snprintf(s, sizeof s,
                 "cqrsd_projection_state{projection=\"%s\",version=\"%d\",state=\"running\"}",
                 name, v);
        assert_true(must_sample(after, s) == 1);
        snprintf(s, sizeof s,
                 "cqrsd_projection_state{projection=\"%s\",version=\"%d\",state=\"halted\"}",
                 name, v);
        assert_true(must_sample(after, s) == 0);
        snprintf(s, sizeof s, "cqrsd_parked_events{kind=\"projection\",function=\"%s\"}", name);
        must_sample(after, s);
    }
    assert_true(i >= 5);
    json_decref(ap);
    free(before);
    free(after);
}

/* ---------- read your writes ---------- */

struct got {
    long status;
    char position[64];
    char *body;
    size_t len;
};

static size_t got_header(char *d, size_t sz, size_t n, void *u)
{
    struct got *g = u;
    size_t l = sz * n;
    if (l > 16 && !strncasecmp(d, "Cqrsd-Position:", 15)) {
        const char *v = d + 15;
        while (*v == ' ')
            v++;
        snprintf(g->position, sizeof g->position, "%.*s", (int)strcspn(v, "\r\n"), v);
    }
    return l;
}

static size_t got_body(char *d, size_t sz, size_t n, void *u)
{
    struct got *g = u;
    g->body = xrealloc(g->body, g->len + sz * n + 1);
    memcpy(g->body + g->len, d, sz * n);
    g->len += sz * n;
    g->body[g->len] = '\0';
    return sz * n;
}

/* GET BASE/path with the headers h1, h2 (NULL: none). */
static struct got get_with(const char *path, const char *h1, const char *h2)
{
    struct got g = {0};
    CURL *c = curl_easy_init();
    char u[512];
    snprintf(u, sizeof u, "%s%s", BASE, path);
    struct curl_slist *hs = NULL;
    if (h1)
        hs = curl_slist_append(hs, h1);
    if (h2)
        hs = curl_slist_append(hs, h2);
    curl_easy_setopt(c, CURLOPT_URL, u);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, got_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &g);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, got_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &g);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &g.status);
    curl_slist_free_all(hs);
    curl_easy_cleanup(c);
    if (!g.body)
        g.body = xstrdup("");
    return g;
}

/* POST /carts for cart id on BASE; its reply's position into pos. */
static void open_cart_at(const char *id, char pos[64])
{
    json_t *b = NULL;
    char body[128];
    snprintf(body, sizeof body, "{\"cart_id\":\"%s\"}", id);
    assert_int_equal(th_call_json(BASE, "POST", "/carts", body, &b), 201);
    snprintf(pos, 64, "%s", json_string_value(json_object_get(b, "position")));
    json_decref(b);
    assert_int_equal(strlen(pos), 32);
}

struct waiter {
    pthread_t t;
    char path[128], header[128];
    struct got g;
};

static void *wait_main(void *arg)
{
    struct waiter *w = arg;
    w->g = get_with(w->path, w->header, NULL);
    return NULL;
}

static void read_your_writes(void **state)
{
    (void)state;
    char c1[64], c2[64], pos[64], hdr[128], path[128];
    snprintf(c1, sizeof c1, "ryw1-%s", run);
    snprintf(c2, sizeof c2, "ryw2-%s", run);

    /* caught up (or about to be): answered with the cart */
    open_cart_at(c1, pos);
    snprintf(hdr, sizeof hdr, "Cqrsd-Min-Position: %s", pos);
    snprintf(path, sizeof path, "/carts/%s", c1);
    struct got g = get_with(path, hdr, NULL);
    if (g.status != 200 || strcmp(g.position, pos) < 0)
        fail_msg("GET %s after %s: %ld, Cqrsd-Position \"%s\": %s", path, pos, g.status,
                 g.position, g.body);
    free(g.body);

    /* behind: 504 past the wait asked for, saying how far behind */
    assert_int_equal(th_call_json(BASE, "POST", "/admin/projections/cart_view/pause", NULL, NULL),
                     200);
    open_cart_at(c2, pos);
    snprintf(hdr, sizeof hdr, "Cqrsd-Min-Position: %s", pos);
    snprintf(path, sizeof path, "/carts/%s", c2);
    int64_t t0 = util_now_ms();
    g = get_with(path, hdr, "Prefer: wait=1");
    int64_t took = util_now_ms() - t0;
    char want[200];
    snprintf(want, sizeof want, "projection cart_view v1 has not reached position %s within 1000 ms",
             pos);
    if (g.status != 504 || !strstr(g.body, want) || !strstr(g.body, "1 event behind the newest") ||
        took < 900)
        fail_msg("GET %s behind: %ld after %lld ms: %s", path, g.status, (long long)took, g.body);
    if (strlen(g.position) != 32 || strcmp(g.position, pos) >= 0)
        fail_msg("the 504 says it reflects %s, not a position before %s", g.position, pos);
    free(g.body);
    /* without the header: the stale read model answers at once, 404 */
    g = get_with(path, NULL, NULL);
    assert_int_equal(g.status, 404);
    free(g.body);

    /* resumed during the wait: answered with the new cart */
    struct waiter w = {0};
    snprintf(w.path, sizeof w.path, "%s", path);
    snprintf(w.header, sizeof w.header, "%s", hdr);
    pthread_create(&w.t, NULL, wait_main, &w);
    usleep(400000);
    assert_int_equal(th_call_json(BASE, "POST", "/admin/projections/cart_view/resume", NULL, NULL),
                     200);
    pthread_join(w.t, NULL);
    if (w.g.status != 200 || !strstr(w.g.body, c2) || strcmp(w.g.position, pos) < 0)
        fail_msg("GET %s waiting through the resume: %ld, Cqrsd-Position \"%s\": %s", path,
                 w.g.status, w.g.position, w.g.body);
    free(w.g.body);

    /* every query says what it reflects; a bad token is refused */
    g = get_with("/stats/summary", NULL, NULL);
    assert_int_equal(g.status, 200);
    assert_int_equal(strlen(g.position), 32);
    free(g.body);
    g = get_with(path, "Cqrsd-Min-Position: 12ab", NULL);
    if (g.status != 400 || !strstr(g.body, "Cqrsd-Min-Position must be a position token"))
        fail_msg("a bad token: %ld %s", g.status, g.body);
    free(g.body);
}

static void oldest_append(void **state)
{
    (void)state;
    PGconn *stranger = th_stranger();
    char *t = scrape(BASE);
    assert_true(must_sample(t, "cqrsd_oldest_append_seconds") == 0);
    free(t);
    PGconn *app = PQconnectdb(dburl);
    assert_int_equal(PQstatus(app), CONNECTION_OK);
    PQclear(th_sql(app, "BEGIN"));
    PQclear(th_sql(app, "SELECT cqrsd_register_appender()"));
    usleep(1300 * 1000);
    t = scrape(BASE);
    double age = must_sample(t, "cqrsd_oldest_append_seconds");
    if (age < 1.2 || age > 30)
        fail_msg("an appender open 1.3 s: cqrsd_oldest_append_seconds %g", age);
    free(t);
    PQclear(th_sql(app, "ROLLBACK"));
    PQfinish(app);
    t = scrape(BASE);
    assert_true(must_sample(t, "cqrsd_oldest_append_seconds") == 0);
    free(t);
    th_stranger_end(stranger);
}

static int setup(void **state)
{
    (void)state;
    th_isolated("cqrsd_ops", 8, dburl, redisurl);
    snprintf(env_db, sizeof env_db, "DATABASE_URL=%s", dburl);
    snprintf(env_redis, sizeof env_redis, "REDIS_URL=%s", redisurl);
    static const char *env[3];
    env[0] = env_db;
    env[1] = env_redis;
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
    return 0;
}

int main(void)
{
    if (!getenv("DATABASE_URL") || !getenv("REDIS_URL") || !getenv("CQRSD_BIN") ||
        !getenv("CQRSD_URL")) {
        fprintf(stderr, "test_ops: needs DATABASE_URL, REDIS_URL, CQRSD_BIN and CQRSD_URL (run "
                        "it with make test)\n");
        return 1;
    }
    url = getenv("CQRSD_URL");
    snprintf(run, sizeof run, "o%lx", (unsigned long)time(NULL));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(liveness),
        cmocka_unit_test(readiness),
        cmocka_unit_test(metrics_format),
        cmocka_unit_test(metrics_count),
        cmocka_unit_test(read_your_writes),
        cmocka_unit_test(oldest_append),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
