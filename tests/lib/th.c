/* tests/lib/th.c — the tests' HTTP client (see th.h). */
#include "tests/lib/th.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "core/util.h"

static size_t on_body(char *d, size_t s, size_t n, void *u)
{
    struct th_reply *r = u;
    r->body = xrealloc(r->body, r->len + s * n + 1);
    memcpy(r->body + r->len, d, s * n);
    r->len += s * n;
    r->body[r->len] = '\0';
    return s * n;
}

static size_t on_header(char *d, size_t s, size_t n, void *u)
{
    struct th_reply *r = u;
    if (s * n > 12 && !strncasecmp(d, "Retry-After:", 12)) {
        const char *v = d + 12 + strspn(d + 12, " ");
        snprintf(r->retry_after, sizeof r->retry_after, "%.*s", (int)strcspn(v, "\r\n"), v);
    }
    return s * n;
}

struct th_reply th_call(CURL *c, const char *base, const char *method, const char *path,
                        const char *body, const char *key, long timeout_s)
{
    struct th_reply r = {0};
    CURL *h = c ? c : curl_easy_init();
    char *u = xasprintf("%s%s", base, path);
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    char *kh = key ? xasprintf("Idempotency-Key: %s", key) : NULL;
    if (kh)
        hd = curl_slist_append(hd, kh);
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, u);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
    if (body)
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    if (curl_easy_perform(h) == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
        curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &r.connects);
    }
    curl_slist_free_all(hd);
    if (!c)
        curl_easy_cleanup(h);
    free(kh);
    free(u);
    return r;
}

void th_reply_free(struct th_reply *r)
{
    free(r->body);
    r->body = NULL;
    r->len = 0;
}

json_t *th_get_json(const char *base, const char *path)
{
    struct th_reply r = th_call(NULL, base, "GET", path, NULL, NULL, 15);
    if (r.status != 200)
        fail_msg("GET %s: %ld %s", path, r.status, r.body ? r.body : "");
    json_t *j = json_loads(r.body, 0, NULL);
    th_reply_free(&r);
    if (!j)
        fail_msg("GET %s: the reply is not JSON", path);
    return j;
}

void th_wait_caught_up(const char *base, int seconds)
{
    for (int i = 0; i < seconds * 10; i++) {
        struct th_reply r = th_call(NULL, base, "GET", "/readyz", NULL, NULL, 5);
        json_t *h = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
        th_reply_free(&r);
        int all = h != NULL;
        json_t *p;
        size_t k;
        json_array_foreach(json_object_get(h, "projections"), k, p)
            all &= json_is_true(json_object_get(p, "caught_up"));
        json_decref(h);
        if (all)
            return;
        usleep(100000);
    }
    fail_msg("projections did not catch up within %d s", seconds);
}

pid_t th_start_server(const char *addr, const char *const *env)
{
    const char *bin = getenv("CQRSD_BIN"), *log = getenv("CQRSD_SERVER_LOG");
    if (!bin)
        fail_msg("CQRSD_BIN is not set (run the test with make test)");
    pid_t pid = fork();
    if (pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        setsid(); /* not in the test's process group */
        if (log && !freopen(log, "a", stderr))
            _exit(126);
        setenv("CQRSD_HTTP_ADDR", addr, 1);
        for (size_t i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        execl(bin, bin, "serve", (char *)NULL);
        _exit(127);
    }
    char *base = xasprintf("http://%s", addr);
    for (int i = 0; i < 200; i++) {
        struct th_reply r = th_call(NULL, base, "GET", "/healthz", NULL, NULL, 2);
        th_reply_free(&r);
        if (r.status == 200) {
            free(base);
            return pid;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            fail_msg("the server on %s exited at start (status %d): see %s", addr,
                     WIFEXITED(st) ? WEXITSTATUS(st) : -1, log ? log : "its stderr");
        usleep(50000);
    }
    kill(pid, SIGKILL);
    fail_msg("the server on %s did not answer /healthz within 10 s", addr);
    free(base);
    return -1;
}

void th_stop_server(pid_t pid)
{
    kill(pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        usleep(100000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

void th_isolated(const char *db, int redis_db, char *dburl, char *redisurl)
{
    PGconn *admin = PQconnectdb(getenv("DATABASE_URL"));
    if (PQstatus(admin) != CONNECTION_OK)
        fail_msg("PostgreSQL: %s", PQerrorMessage(admin));
    char *q = xasprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", db);
    PQclear(PQexec(admin, q));
    free(q);
    q = xasprintf("CREATE DATABASE %s", db);
    PGresult *r = PQexec(admin, q);
    free(q);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("CREATE DATABASE %s: %s", db, PQerrorMessage(admin));
    PQclear(r);
    snprintf(dburl, 512, "host=%s port=%s user=%s dbname=%s", PQhost(admin), PQport(admin),
             PQuser(admin), db);
    PQfinish(admin);
    const char *redis = getenv("REDIS_URL"); /* redis://host:port/db */
    const char *rest = strstr(redis, "://");
    const char *slash = rest ? strchr(rest + 3, '/') : NULL;
    int hostlen = slash ? (int)(slash - redis) : (int)strlen(redis);
    snprintf(redisurl, 512, "%.*s/%d", hostlen, redis, redis_db);
    char *cmd = xasprintf("DATABASE_URL='%s' '%s' migrate >/dev/null && redis-cli -u '%s' "
                          "FLUSHDB >/dev/null",
                          dburl, getenv("CQRSD_BIN"), redisurl);
    if (system(cmd) != 0)
        fail_msg("could not migrate %s or flush %s", dburl, redisurl);
    free(cmd);
}

/* rows: the statement must return rows (a query) */
static PGresult *vsql(PGconn *pg, int rows, const char *fmt, va_list ap)
{
    char *q = NULL;
    if (vasprintf(&q, fmt, ap) < 0)
        abort();
    PGresult *r = PQexec(pg, q);
    if (PQresultStatus(r) != PGRES_TUPLES_OK &&
        (rows || PQresultStatus(r) != PGRES_COMMAND_OK))
        fail_msg("%s: %s", q, PQerrorMessage(pg));
    free(q);
    return r;
}

PGresult *th_sql(PGconn *pg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PGresult *r = vsql(pg, 0, fmt, ap);
    va_end(ap);
    return r;
}

static long long vsql_int(PGconn *pg, const char *fmt, va_list ap)
{
    PGresult *r = vsql(pg, 1, fmt, ap);
    long long v = PQntuples(r) ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return v;
}

long long th_sql_int(PGconn *pg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    long long v = vsql_int(pg, fmt, ap);
    va_end(ap);
    return v;
}

void th_wait_sql_int(PGconn *pg, long long want, int seconds, const char *fmt, ...)
{
    long long v = 0;
    for (int i = 0; i <= seconds * 20; i++) {
        va_list ap;
        va_start(ap, fmt);
        v = vsql_int(pg, fmt, ap);
        va_end(ap);
        if (v == want)
            return;
        usleep(50000);
    }
    va_list ap;
    va_start(ap, fmt);
    char *q = NULL;
    if (vasprintf(&q, fmt, ap) < 0)
        abort();
    va_end(ap);
    fail_msg("%s gave %lld, not %lld, for %d s", q, v, want, seconds);
}

long th_call_json(const char *base, const char *method, const char *path, const char *body,
                  json_t **out)
{
    struct th_reply r = th_call(NULL, base, method, path, body, NULL, 20);
    if (out)
        *out = r.body ? json_loads(r.body, 0, NULL) : NULL;
    th_reply_free(&r);
    return r.status;
}

json_t *th_function(const char *base, const char *name)
{
    json_t *all = th_get_json(base, "/admin/functions"), *f;
    size_t i;
    json_array_foreach(json_object_get(all, "functions"), i, f)
        if (!strcmp(json_string_value(json_object_get(f, "name")), name)) {
            json_incref(f);
            json_decref(all);
            return f;
        }
    json_decref(all);
    fail_msg("/admin/functions lists no %s", name);
    return NULL;
}

long long th_counter(const char *base, const char *name, const char *field)
{
    json_t *f = th_function(base, name);
    long long v = json_integer_value(json_object_get(f, field));
    json_decref(f);
    return v;
}

PGconn *th_stranger(void)
{
    const char *keys[] = {"dbname", "dbname", NULL};
    const char *vals[] = {getenv("DATABASE_URL"), "postgres", NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(pg) != CONNECTION_OK)
        fail_msg("cannot connect to database postgres: %s", PQerrorMessage(pg));
    PQclear(th_sql(pg, "BEGIN"));
    PQclear(th_sql(pg, "SELECT pg_current_xact_id()")); /* takes an id */
    return pg;
}

void th_stranger_end(PGconn *pg)
{
    if (th_sql_int(pg, "SELECT (pg_current_xact_id_if_assigned() IS NOT NULL)::int") != 1)
        fail_msg("the stranger's transaction ended before the test did");
    PQclear(th_sql(pg, "ROLLBACK"));
    PQfinish(pg);
}
