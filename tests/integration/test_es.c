/* tests/integration/test_es.c — the event store against a real PostgreSQL
 * (DATABASE_URL, migrated): optimistic concurrency, atomic multi-stream
 * appends, idempotency by command id and by event id, the commit-safe global
 * order with a transaction left open while others commit, and migrations
 * refusing an edited file. Stream ids carry a per-run prefix so reruns do not
 * collide. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/es.h"
#include "core/migrate.h"
#include "core/util.h"
#include "tests/lib/th.h"

static char run_id[16];

static PGconn *conn(void)
{
    struct err e = {0};
    PGconn *pg = es_connect(getenv("DATABASE_URL"), &e);
    if (!pg)
        fail_msg("%s", e.msg);
    return pg;
}

static char *sid(const char *name)
{
    return xasprintf("test%s-%s", run_id, name);
}

static int append1(PGconn *pg, const char *stream, int64_t expected, const char *type,
                   const char *command_id, json_t **reply, struct err *e)
{
    json_t *data = json_pack("{s:s}", "k", type);
    struct es_new_event ev = {type, data, NULL, NULL};
    struct es_stream_append s = {stream, NULL, expected, &ev, 1};
    json_t *r = NULL;
    int rc = es_append(pg, command_id, "req", 200, NULL, &s, 1, &r, e);
    json_decref(data);
    if (reply)
        *reply = r;
    else
        json_decref(r);
    return rc;
}

static void expected_versions(void **st)
{
    (void)st;
    PGconn *pg = conn();
    struct err e = {0};
    char *s = sid("ev");
    json_t *r = NULL;
    assert_int_equal(append1(pg, s, ES_NO_STREAM, "A", NULL, &r, &e), 0);
    assert_int_equal(json_integer_value(json_object_get(r, "version")), 1);
    assert_true(es_position_valid(json_string_value(json_object_get(r, "position"))));
    json_decref(r);
    assert_int_equal(append1(pg, s, ES_NO_STREAM, "B", NULL, NULL, &e), ERR_CONFLICT);
    assert_non_null(strstr(e.msg, "expected no stream, found version 1"));
    assert_int_equal(append1(pg, s, 2, "B", NULL, NULL, &e), ERR_CONFLICT);
    assert_non_null(strstr(e.msg, "expected 2, found 1"));
    assert_int_equal(append1(pg, s, 1, "B", NULL, NULL, &e), 0);
    assert_int_equal(append1(pg, s, ES_ANY, "C", NULL, &r, &e), 0);
    assert_int_equal(json_integer_value(json_object_get(r, "version")), 3);
    json_decref(r);
    struct es_events l = {0};
    assert_int_equal(es_read_stream(pg, s, 0, 100, &l, &e), 0);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.ev[0].type, "A");
    assert_string_equal(l.ev[2].type, "C");
    assert_int_equal(l.ev[2].version, 3);
    assert_true(strcmp(l.ev[0].position, l.ev[1].position) < 0);
    es_events_clear(&l);
    assert_int_equal(es_read_stream(pg, s, 2, 100, &l, &e), 0);
    assert_int_equal(l.n, 1);
    es_events_clear(&l);
    free(s);
    PQfinish(pg);
}

static void multi_stream_is_atomic(void **st)
{
    (void)st;
    PGconn *pg = conn();
    struct err e = {0};
    char *a = sid("atomA"), *b = sid("atomB");
    assert_int_equal(append1(pg, b, ES_NO_STREAM, "X", NULL, NULL, &e), 0);
    json_t *d = json_object();
    struct es_new_event ev = {"Y", d, NULL, NULL};
    struct es_stream_append s[2] = {{a, NULL, ES_NO_STREAM, &ev, 1}, {b, NULL, ES_NO_STREAM, &ev, 1}};
    json_t *r = NULL;
    assert_int_equal(es_append(pg, NULL, "", 200, NULL, s, 2, &r, &e), ERR_CONFLICT);
    struct es_events l = {0};
    assert_int_equal(es_read_stream(pg, a, 0, 10, &l, &e), 0);
    assert_int_equal(l.n, 0); /* nothing of the failed append is stored */
    s[1].expected = 1;
    assert_int_equal(es_append(pg, NULL, "", 200, NULL, s, 2, &r, &e), 0);
    assert_int_equal(json_array_size(json_object_get(r, "streams")), 2);
    json_decref(r);
    json_decref(d);
    free(a);
    free(b);
    PQfinish(pg);
}

static void idempotency(void **st)
{
    (void)st;
    PGconn *pg = conn();
    struct err e = {0};
    char *s = sid("idem");
    char *key = xasprintf("key-%s", run_id);
    json_t *r1 = NULL, *r2 = NULL;
    assert_int_equal(append1(pg, s, ES_ANY, "A", key, &r1, &e), 0);
    int status = 0, same = 0;
    assert_int_equal(es_command_lookup(pg, key, "req", &status, &r2, &same, &e), 1);
    assert_true(same);
    assert_int_equal(status, 200);
    assert_true(json_equal(r1, r2));
    json_decref(r2);
    assert_int_equal(es_command_lookup(pg, key, "other request", &status, &r2, &same, &e), 1);
    assert_false(same);
    json_decref(r2);
    /* a second append with the same key is refused by the store itself */
    assert_int_equal(append1(pg, s, ES_ANY, "A", key, NULL, &e), ERR_IDEMPOTENCY);
    struct es_events l = {0};
    assert_int_equal(es_read_stream(pg, s, 0, 10, &l, &e), 0);
    assert_int_equal(l.n, 1);
    es_events_clear(&l);
    char *unknown = xasprintf("nokey-%s", run_id);
    assert_int_equal(es_command_lookup(pg, unknown, "req", &status, &r2, &same, &e), 0);
    json_decref(r1);
    free(unknown);
    free(key);
    free(s);
    PQfinish(pg);
}

static void event_id_idempotency(void **st)
{
    (void)st;
    PGconn *pg = conn();
    struct err e = {0};
    char *s = sid("evid");
    char id1[37], id2[37];
    util_uuid4(id1);
    util_uuid4(id2);
    json_t *d = json_object();
    struct es_new_event evs[2] = {{"A", d, NULL, id1}, {"B", d, NULL, id2}};
    struct es_stream_append sa = {s, NULL, ES_ANY, evs, 2};
    json_t *r1 = NULL, *r2 = NULL;
    assert_int_equal(es_append(pg, NULL, "", 200, NULL, &sa, 1, &r1, &e), 0);
    assert_int_equal(es_append(pg, NULL, "", 200, NULL, &sa, 1, &r2, &e), 0);
    assert_int_equal(json_integer_value(json_object_get(r2, "version")), 2);
    assert_string_equal(json_string_value(json_object_get(r1, "position")),
                        json_string_value(json_object_get(r2, "position")));
    struct es_events l = {0};
    assert_int_equal(es_read_stream(pg, s, 0, 10, &l, &e), 0);
    assert_int_equal(l.n, 2);
    es_events_clear(&l);
    /* part of the ids stored: a conflict, not a silent partial append */
    char id3[37];
    util_uuid4(id3);
    struct es_new_event mixed[2] = {{"A", d, NULL, id1}, {"C", d, NULL, id3}};
    sa.events = mixed;
    assert_int_equal(es_append(pg, NULL, "", 200, NULL, &sa, 1, &r2, &e), ERR_CONFLICT);
    json_decref(r1);
    json_decref(r2);
    json_decref(d);
    free(s);
    PQfinish(pg);
}

/* position of the newest event of the global stream */
static void read_all_after(PGconn *pg, const char *after, struct es_events *l)
{
    struct err e = {0};
    if (es_read_all(pg, after, 100000, l, &e))
        fail_msg("%s", e.msg);
}

static int has(const struct es_events *l, const char *stream)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->ev[i].stream_id, stream))
            return 1;
    return 0;
}

static void late_commit_is_not_skipped(void **st)
{
    (void)st;
    PGconn *a = conn(), *b = conn(), *reader = conn();
    struct err e = {0};
    char head[33];
    assert_int_equal(es_head(reader, head, &e), 0);
    char *sa = sid("lateA"), *sb = sid("lateB");
    PQclear(PQexec(a, "BEGIN"));
    assert_int_equal(append1(a, sa, ES_ANY, "Early", NULL, NULL, &e), 0); /* txid taken first */
    assert_int_equal(append1(b, sb, ES_ANY, "Late", NULL, NULL, &e), 0);  /* commits first */
    struct es_events l = {0};
    read_all_after(reader, head, &l);
    /* b committed, but a is open with a smaller txid: b must not be seen yet */
    assert_false(has(&l, sb));
    assert_false(has(&l, sa));
    es_events_clear(&l);
    PQclear(PQexec(a, "COMMIT"));
    read_all_after(reader, head, &l);
    assert_true(has(&l, sa));
    assert_true(has(&l, sb));
    size_t ia = 0, ib = 0;
    for (size_t i = 0; i < l.n; i++) {
        if (!strcmp(l.ev[i].stream_id, sa))
            ia = i;
        if (!strcmp(l.ev[i].stream_id, sb))
            ib = i;
    }
    assert_true(ia < ib); /* (txid, seq) order */
    es_events_clear(&l);

    /* a rolled-back append leaves no stall */
    assert_int_equal(es_head(reader, head, &e), 0);
    char *sc = sid("rolled"), *sd = sid("after");
    PQclear(PQexec(a, "BEGIN"));
    assert_int_equal(append1(a, sc, ES_ANY, "Gone", NULL, NULL, &e), 0);
    assert_int_equal(append1(b, sd, ES_ANY, "Kept", NULL, NULL, &e), 0);
    PQclear(PQexec(a, "ROLLBACK"));
    read_all_after(reader, head, &l);
    assert_true(has(&l, sd));
    assert_false(has(&l, sc));
    es_events_clear(&l);
    free(sa);
    free(sb);
    free(sc);
    free(sd);
    PQfinish(a);
    PQfinish(b);
    PQfinish(reader);
}

/* Group commit: five commands in one transaction, each with its own outcome.
 * A conflict, a key used twice in the group and a malformed append fail
 * alone; the others are stored, each with its own reply and position. */
static void group_outcomes_are_independent(void **st)
{
    (void)st;
    PGconn *pg = conn();
    struct err e = {0};
    char *a = sid("ga"), *b = sid("gb"), *c = sid("gc"), *k = sid("gk");
    json_t *data = json_pack("{s:s}", "k", "v");
    struct es_new_event ev = {"G", data, NULL, NULL};
    struct es_stream_append sa = {a, NULL, ES_NO_STREAM, &ev, 1};
    struct es_stream_append sb = {b, NULL, 7, &ev, 1}; /* b does not exist */
    struct es_stream_append sc = {c, NULL, ES_NO_STREAM, &ev, 1};
    struct es_stream_append sk = {k, NULL, ES_ANY, &ev, 1};
    struct es_stream_append empty = {c, NULL, ES_ANY, &ev, 0};
    char *key = xasprintf("group-key-%s", run_id);
    struct es_command_append g[6] = {
        {NULL, "r", 201, NULL, &sa, 1, 0, {0}, NULL},
        {NULL, "r", 200, NULL, &sb, 1, 0, {0}, NULL},
        {key, "r", 200, NULL, &sk, 1, 0, {0}, NULL},
        {key, "r", 200, NULL, &sk, 1, 0, {0}, NULL},
        {NULL, "r", 200, NULL, &empty, 1, 0, {0}, NULL},
        {NULL, "r", 201, NULL, &sc, 1, 0, {0}, NULL},
    };
    assert_int_equal(es_append_group(pg, g, 6, &e), 0);
    assert_int_equal(g[0].rc, 0);
    assert_int_equal(g[1].rc, ERR_CONFLICT);
    assert_non_null(strstr(g[1].err.msg, "version conflict"));
    assert_int_equal(g[2].rc, 0);
    assert_int_equal(g[3].rc, ERR_IDEMPOTENCY);
    assert_int_equal(g[4].rc, ERR_INVALID);
    assert_int_equal(g[5].rc, 0);
    /* one transaction: the stored commands share a txid, in order */
    const char *pa = json_string_value(json_object_get(g[0].reply, "position"));
    const char *pk = json_string_value(json_object_get(g[2].reply, "position"));
    const char *pc = json_string_value(json_object_get(g[5].reply, "position"));
    assert_true(pa && pk && pc && !strncmp(pa, pc, 16) && !strncmp(pa, pk, 16));
    assert_true(strcmp(pa, pk) < 0 && strcmp(pk, pc) < 0);
    assert_int_equal(json_integer_value(json_object_get(g[5].reply, "version")), 1);
    struct es_events l = {0};
    assert_int_equal(es_read_stream(pg, a, 0, 10, &l, &e), 0);
    assert_int_equal(l.n, 1);
    es_events_clear(&l);
    assert_int_equal(es_read_stream(pg, b, 0, 10, &l, &e), 0);
    assert_int_equal(l.n, 0);
    assert_int_equal(es_read_stream(pg, k, 0, 10, &l, &e), 0);
    assert_int_equal(l.n, 1); /* the second use of the key appended nothing */
    es_events_clear(&l);
    int status = 0, same = 0;
    json_t *stored = NULL;
    assert_int_equal(es_command_lookup(pg, key, "r", &status, &stored, &same, &e), 1);
    assert_true(same);
    assert_true(json_equal(json_object_get(stored, "position"), json_object_get(g[2].reply, "position")));
    json_decref(stored);
    for (int i = 0; i < 6; i++)
        json_decref(g[i].reply);
    json_decref(data);
    free(key);
    free(a), free(b), free(c), free(k);
    PQfinish(pg);
}

/* A transaction that wrote something else first cannot then append: a reader
 * may already have passed its id (migrations/0004_appenders.sql). */
static void append_after_other_write_is_refused(void **st)
{
    (void)st;
    PGconn *pg = conn();
    struct err e = {0};
    char *s = sid("late-register");
    PQclear(PQexec(pg, "BEGIN"));
    PQclear(PQexec(pg, "SELECT pg_current_xact_id()"));
    assert_int_not_equal(append1(pg, s, ES_NO_STREAM, "A", NULL, NULL, &e), 0);
    assert_non_null(strstr(e.msg, "must come before any other write"));
    PQclear(PQexec(pg, "ROLLBACK"));
    /* two appends in one transaction are one appender, registered once */
    PQclear(PQexec(pg, "BEGIN"));
    assert_int_equal(append1(pg, s, ES_NO_STREAM, "A", NULL, NULL, &e), 0);
    assert_int_equal(append1(pg, s, 1, "B", NULL, NULL, &e), 0);
    PQclear(PQexec(pg, "COMMIT"));
    free(s);
    PQfinish(pg);
}

/* Transactions that do not append hold nothing back: one in another database
 * and one in this database that wrote elsewhere stay open while an append
 * commits, and the reader sees the append (issue 7, point 3). */
static void strangers_do_not_hold_back(void **st)
{
    (void)st;
    PGconn *here = conn(), *w = conn(), *reader = conn();
    struct err e = {0};
    char head[33];
    assert_int_equal(es_head(reader, head, &e), 0);
    PGconn *other = th_stranger();
    PQclear(PQexec(here, "BEGIN"));
    PQclear(PQexec(here, "CREATE TEMP TABLE t (x int)"));
    char *s = sid("stranger");
    assert_int_equal(append1(w, s, ES_NO_STREAM, "Seen", NULL, NULL, &e), 0);
    struct es_events l = {0};
    read_all_after(reader, head, &l);
    assert_true(has(&l, s));
    es_events_clear(&l);
    char now[33];
    assert_int_equal(es_head(reader, now, &e), 0);
    assert_true(strcmp(now, head) > 0);
    /* both strangers were still open while the reader passed them */
    th_stranger_end(other);
    assert_int_equal(th_sql_int(here, "SELECT (pg_current_xact_id_if_assigned() IS NOT NULL)::int"), 1);
    PQclear(PQexec(here, "ROLLBACK"));
    free(s);
    PQfinish(here);
    PQfinish(w);
    PQfinish(reader);
}

/* A notification libpq read along with a query's result is still a wake-up:
 * es_wait_notify returns at once, not after its whole wait (it used to poll
 * the socket only, and the projections then waited for their next poll). */
static void notify_read_during_a_query_wakes(void **st)
{
    (void)st;
    PGconn *a = conn(), *b = conn();
    PQclear(PQexec(a, "LISTEN cqrsd_test_wake"));
    PQclear(PQexec(b, "NOTIFY cqrsd_test_wake"));
    usleep(200000);
    PGresult *r = PQexec(a, "SELECT 1"); /* libpq takes the notification in here */
    PQclear(r);
    atomic_int stop = 0;
    int64_t t0 = util_now_ms();
    assert_int_equal(es_wait_notify(a, 10000, &stop), 1);
    assert_true(util_now_ms() - t0 < 5000);
    PQfinish(a);
    PQfinish(b);
}

/* Statements are prepared once per connection; a session that lost them
 * (DISCARD ALL, as a connection pooler does) prepares them again. */
static void prepared_again_after_discard(void **st)
{
    (void)st;
    PGconn *pg = conn();
    struct err e = {0};
    char head[33];
    assert_int_equal(es_head(pg, head, &e), 0);
    PQclear(PQexec(pg, "DISCARD ALL"));
    assert_int_equal(es_head(pg, head, &e), 0);
    PQfinish(pg);
}

/* A member of a group waiting on a lock held outside the group fails alone,
 * after the group's lock timeout (5 s), as unavailable (503: try again); the
 * others commit. A direct call of the body without registering is refused. */
static void group_member_stuck_on_a_lock_fails_alone(void **st)
{
    (void)st;
    PGconn *pg = conn(), *holder = conn();
    struct err e = {0};
    char *held = sid("held"), *free_ = sid("free");
    assert_int_equal(append1(pg, held, ES_NO_STREAM, "A", NULL, NULL, &e), 0);
    PQclear(PQexec(holder, "BEGIN"));
    PQclear(th_sql(holder, "SELECT 1 FROM streams WHERE stream_id = '%s' FOR UPDATE", held));
    json_t *data = json_pack("{s:s}", "k", "v");
    struct es_new_event ev = {"G", data, NULL, NULL};
    struct es_stream_append sf = {free_, NULL, ES_NO_STREAM, &ev, 1};
    struct es_stream_append sh = {held, NULL, 1, &ev, 1};
    struct es_command_append g[2] = {
        {NULL, "r", 201, NULL, &sf, 1, 0, {0}, NULL},
        {NULL, "r", 200, NULL, &sh, 1, 0, {0}, NULL},
    };
    assert_int_equal(es_append_group(pg, g, 2, &e), 0);
    assert_int_equal(g[0].rc, 0);
    assert_int_equal(g[1].rc, ERR_UNAVAILABLE);
    assert_non_null(strstr(g[1].err.msg, "lock timeout"));
    PQclear(PQexec(holder, "ROLLBACK"));
    assert_int_equal(th_sql_int(pg, "SELECT count(*) FROM events WHERE stream_id = '%s'", free_), 1);
    assert_int_equal(th_sql_int(pg, "SELECT version FROM streams WHERE stream_id = '%s'", held), 1);
    PGresult *r = PQexec(pg, "SELECT cqrsd_append_streams(NULL, '', 200, NULL, "
                             "'[{\"stream\": \"x-1\", \"expected\": -1, \"events\": [{\"type\": \"T\", \"data\": {}}]}]')");
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    assert_non_null(strstr(PQresultErrorMessage(r), "call cqrsd_append"));
    PQclear(r);
    json_decref(g[0].reply);
    json_decref(data);
    free(held);
    free(free_);
    PQfinish(holder);
    PQfinish(pg);
}

static void migrations(void **st)
{
    (void)st;
    PGconn *pg = conn();
    struct err e = {0};
    int n = -1;
    assert_int_equal(migrate_run(pg, migrations_embedded, &n, &e), 0);
    assert_int_equal(n, 0); /* already applied by make test */
    struct migration edited[] = {{migrations_embedded[0].name, "SELECT 1; -- edited"}, {0, 0}};
    assert_int_equal(migrate_run(pg, edited, &n, &e), ERR_CONFLICT);
    assert_non_null(strstr(e.msg, "was edited after it was applied"));
    assert_non_null(strstr(e.msg, migrations_embedded[0].name));
    struct migration none[] = {{0, 0}};
    assert_int_equal(migrate_run(pg, none, &n, &e), ERR_CONFLICT);
    assert_non_null(strstr(e.msg, "does not know"));
    PQfinish(pg);
}

static void bad_position(void **st)
{
    (void)st;
    PGconn *pg = conn();
    struct err e = {0};
    struct es_events l = {0};
    assert_int_equal(es_read_all(pg, "xyz", 10, &l, &e), ERR_INVALID);
    assert_int_equal(es_read_all(pg, "0000000000000000000000000000000G", 10, &l, &e), ERR_INVALID);
    assert_false(es_position_valid("00000000000000000000000000000000a"));
    assert_true(es_position_valid(""));
    PQfinish(pg);
}

int main(void)
{
    if (!getenv("DATABASE_URL")) {
        fprintf(stderr, "test_es: DATABASE_URL is not set\n");
        return 1;
    }
    char u[37];
    util_uuid4(u);
    snprintf(run_id, sizeof run_id, "%.8s", u);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(expected_versions),   cmocka_unit_test(multi_stream_is_atomic),
        cmocka_unit_test(idempotency),         cmocka_unit_test(event_id_idempotency),
        cmocka_unit_test(late_commit_is_not_skipped), cmocka_unit_test(migrations),
        cmocka_unit_test(bad_position),        cmocka_unit_test(group_outcomes_are_independent),
        cmocka_unit_test(append_after_other_write_is_refused),
        cmocka_unit_test(strangers_do_not_hold_back),
        cmocka_unit_test(notify_read_during_a_query_wakes),
        cmocka_unit_test(prepared_again_after_discard),
        cmocka_unit_test(group_member_stuck_on_a_lock_fails_alone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
