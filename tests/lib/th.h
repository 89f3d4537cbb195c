/* tests/lib/th.h — a small HTTP client for the tests that talk to the real
 * server (libcurl + cmocka): one request with a bounded time, a JSON GET
 * that fails the test unless 200, and waiting for the projections. Linked
 * into every test program by the Makefile. */
#ifndef CQRSD_TESTS_TH_H
#define CQRSD_TESTS_TH_H

#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stddef.h>
#include <sys/types.h>

struct th_reply {
    long status;          /* 0: no HTTP answer (refused, timed out) */
    long connects;        /* CURLINFO_NUM_CONNECTS: 0 when the connection was reused */
    char retry_after[16]; /* the Retry-After header, "" when absent */
    char *body;           /* NUL-terminated; owned, free with th_reply_free */
    size_t len;
};

/* One request to base + path on handle c (NULL: a fresh handle), JSON body
 * (NULL: none), optional Idempotency-Key, at most timeout_s seconds. */
struct th_reply th_call(CURL *c, const char *base, const char *method, const char *path,
                        const char *body, const char *key, long timeout_s);

/* Frees the body; r may be reused. */
void th_reply_free(struct th_reply *r);

/* GET base + path; fails the test unless 200 with JSON. Caller decrefs. */
json_t *th_get_json(const char *base, const char *path);

/* Polls GET /readyz until every projection is caught_up; fails the test
 * after `seconds`. */
void th_wait_caught_up(const char *base, int seconds);

/* Starts `$CQRSD_BIN serve` on addr ("127.0.0.1:port") with the extra
 * environment env (NULL-terminated "NAME=VALUE" strings, may be NULL), its
 * stderr appended to $CQRSD_SERVER_LOG, and waits until /healthz answers
 * (fails the test after 10 s). Returns its pid. */
pid_t th_start_server(const char *addr, const char *const *env);

/* A PostgreSQL database `db` of the test's own (dropped and created again
 * on the server of $DATABASE_URL, then migrated with $CQRSD_BIN) and Redis
 * database redis_db of the server of $REDIS_URL (flushed): a world where
 * the leases, timers and checkpoints of make test's server are not. Fills
 * dburl and redisurl (at least 512 bytes each); fails the test otherwise. */
void th_isolated(const char *db, int redis_db, char *dburl, char *redisurl);

/* Runs the SQL statement fmt (printf-style) on pg; fails the test on an
 * error. The caller PQclears the result. */
PGresult *th_sql(PGconn *pg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Runs the SQL query fmt (printf-style) on pg and returns the integer in
 * its first row's first column (-1 when no row); fails the test on an error. */
long long th_sql_int(PGconn *pg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A stranger to the event store: a transaction holding a transaction id open
 * in database "postgres" of DATABASE_URL's server, so it is in every
 * snapshot of the server. Fails the test when it cannot connect. The caller
 * ends it with th_stranger_end. */
PGconn *th_stranger(void);
/* Fails the test unless the stranger's transaction is still open; then rolls
 * it back and closes the connection. */
void th_stranger_end(PGconn *pg);

/* Polls th_sql_int(pg, fmt, ...) every 50 ms until it is want; fails the
 * test, naming the last value, after `seconds`. */
void th_wait_sql_int(PGconn *pg, long long want, int seconds, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* th_call without a key, 20 s at most: the status, and *out (may be NULL)
 * the body as JSON (NULL when it is none). Caller decrefs *out. */
long th_call_json(const char *base, const char *method, const char *path, const char *body,
                  json_t **out);

/* The GET base/admin/functions entry of function name (a new reference);
 * fails the test when it lists none. */
json_t *th_function(const char *base, const char *name);

/* A counter (invocations, errors, in_flight, ...) of th_function. */
long long th_counter(const char *base, const char *name, const char *field);

/* SIGTERM, then waits for the process (SIGKILL after 10 s). */
void th_stop_server(pid_t pid);

#endif
