/* core/es.c — the event store over libpq (see es.h, DESIGN.md §3).
 *
 * Appends go through the SQL function cqrsd_append (one round trip, one
 * transaction: stream compare-and-set, events, idempotency key), or
 * cqrsd_append_group for several commands in one transaction (group commit).
 * Reads of the global stream compare the (txid, seq) pair as a row and stop
 * below cqrsd_read_bound() (migrations/0004_appenders.sql): an appending
 * transaction still in progress may yet commit events with a smaller pair, so
 * nothing at or above the oldest open appender is returned until it ends;
 * transactions that do not append hold nothing back.
 */
#include "core/es.h"

#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

/* The ERR_* code of a failed statement's SQLSTATE (and constraint, for a
 * unique violation). */
static int code_of(const char *state, const char *constraint)
{
    if (!state)
        return ERR_INTERNAL;
    if (!strcmp(state, "CQ409"))
        return ERR_CONFLICT;
    if (!strcmp(state, "23505"))
        return constraint && !strcmp(constraint, "commands_pkey") ? ERR_IDEMPOTENCY : ERR_CONFLICT;
    if (!strncmp(state, "08", 2) || !strncmp(state, "57P", 3) || !strcmp(state, "53300"))
        return ERR_UNAVAILABLE; /* connection exception, shutdown, too many connections */
    if (!strcmp(state, "55P03") || !strcmp(state, "40P01") || !strcmp(state, "40001"))
        return ERR_UNAVAILABLE; /* lock timeout, deadlock victim, serialization: try again */
    if (!strncmp(state, "22", 2) || !strcmp(state, "23514"))
        return ERR_INVALID; /* data exception, check violation */
    return ERR_INTERNAL;
}

/* Sets e from a failure's code and message: conflicts and invalid input
 * carry the store's message alone, the rest say what could not be done. */
static int fail_with(int code, const char *msg, const char *what, struct err *e)
{
    char m[400];
    snprintf(m, sizeof m, "%s", msg);
    size_t l = strlen(m);
    while (l && m[l - 1] == '\n')
        m[--l] = '\0';
    if (code == ERR_CONFLICT || code == ERR_INVALID)
        return err_set(e, code, "%s", m);
    return err_set(e, code, "could not %s: %s", what, m);
}

int es_fail(PGconn *pg, PGresult *r, const char *what, struct err *e)
{
    if (PQstatus(pg) != CONNECTION_OK) {
        if (r)
            PQclear(r);
        return err_set(e, ERR_UNAVAILABLE, "could not %s: database connection lost", what);
    }
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    int code = code_of(state, r ? PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME) : NULL);
    code = fail_with(code, msg ? msg : PQerrorMessage(pg), what, e);
    if (r)
        PQclear(r);
    return code;
}

/* Statements prepared on each connection, per thread: a connection is used by
 * one thread at a time, and a reset one (another backend pid) has none. */
#define PREPARED_MAX 128
static _Thread_local struct prepared {
    const PGconn *pg;
    int pid;
    uint64_t hash;
} prepared[PREPARED_MAX];
static _Thread_local size_t nprepared;

PGresult *es_exec(PGconn *pg, const char *sql, int n, const char *const *params)
{
    uint64_t h = util_fnv1a(sql);
    int pid = PQbackendPID(pg);
    char name[24];
    snprintf(name, sizeof name, "cq%016" PRIx64, h);
    size_t i;
    for (i = 0; i < nprepared; i++)
        if (prepared[i].pg == pg && prepared[i].pid == pid && prepared[i].hash == h)
            break;
    if (i == nprepared) {
        PGresult *r = PQprepare(pg, name, sql, n, NULL);
        const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (PQresultStatus(r) != PGRES_COMMAND_OK && !(st && !strcmp(st, "42P05")))
            return r; /* the caller's status check reports it; 42P05: prepared already */
        PQclear(r);
        if (nprepared == PREPARED_MAX) { /* keep this connection's, drop the others' */
            size_t k = 0;
            for (size_t j = 0; j < nprepared; j++)
                if (prepared[j].pg == pg && prepared[j].pid == pid)
                    prepared[k++] = prepared[j];
            nprepared = k < PREPARED_MAX ? k : 0;
        }
        prepared[nprepared++] = (struct prepared){pg, pid, h};
    }
    PGresult *r = PQexecPrepared(pg, name, n, params, NULL, NULL, 0);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (state && !strcmp(state, "26000")) {
        /* the session lost it (DISCARD ALL, a pooler's new backend): again */
        PQclear(r);
        PQclear(PQprepare(pg, name, sql, n, NULL));
        r = PQexecPrepared(pg, name, n, params, NULL, NULL, 0);
    }
    return r;
}

/* libpq's notices (a WARNING the server sends, e.g. "terminating connection
 * due to immediate shutdown command") as log records, not raw lines on
 * stderr among the JSON ones. */
static void notice_to_log(void *arg, const char *message)
{
    (void)arg;
    size_t n = strlen(message);
    while (n && (message[n - 1] == '\n' || message[n - 1] == ' '))
        n--;
    log_warn("PostgreSQL: %.*s", (int)n, message);
}

PGconn *es_connect(const char *url, struct err *e)
{
    const char *keys[] = {"dbname", "options", "connect_timeout", "application_name", NULL};
    const char *vals[] = {url, "-c TimeZone=UTC -c statement_timeout=30000 -c client_min_messages=warning", "5", "cqrsd", NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(pg) != CONNECTION_OK) {
        char m[300];
        snprintf(m, sizeof m, "%s", PQerrorMessage(pg));
        size_t l = strlen(m);
        while (l && (m[l - 1] == '\n' || m[l - 1] == ' '))
            m[--l] = '\0';
        err_set(e, ERR_UNAVAILABLE, "could not connect to PostgreSQL: %s", m);
        PQfinish(pg);
        return NULL;
    }
    PQsetNoticeProcessor(pg, notice_to_log, NULL);
    return pg;
}

int es_ensure(PGconn *pg, struct err *e)
{
    if (PQstatus(pg) == CONNECTION_OK)
        return 0;
    PQreset(pg);
    if (PQstatus(pg) == CONNECTION_OK)
        return 0;
    return err_set(e, ERR_UNAVAILABLE, "could not reconnect to PostgreSQL");
}

int es_command(PGconn *pg, const char *sql, int n, const char *const *params, const char *what,
               struct err *e)
{
    PGresult *r = es_exec(pg, sql, n, params);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        return es_fail(pg, r, what, e);
    PQclear(r);
    return 0;
}

/* Drains the notifications libpq holds; 1 when there was one. */
static int drain_notifies(PGconn *pg)
{
    PGnotify *n;
    int got = 0;
    while ((n = PQnotifies(pg))) {
        PQfreemem(n);
        got = 1;
    }
    return got;
}

int es_wait_notify(PGconn *pg, int ms, const atomic_int *stop)
{
    struct pollfd pfd = {PQsocket(pg), POLLIN, 0};
    if (pfd.fd < 0)
        return 0;
    /* libpq reads a notification that arrives during a query along with the
     * query's result and keeps it: the socket then has nothing new, and a
     * poll alone would sleep the whole ms with a wake-up already here */
    if (drain_notifies(pg))
        return 1;
    for (int waited = 0; waited < ms && !atomic_load(stop); waited += 100) {
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        PQconsumeInput(pg);
        if (drain_notifies(pg))
            return 1;
    }
    return 0;
}

int es_position_valid(const char *tok)
{
    if (!tok)
        return 0;
    size_t n = strlen(tok);
    if (n == 0)
        return 1;
    if (n != ES_POSITION_LEN)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((tok[i] >= '0' && tok[i] <= '9') || (tok[i] >= 'a' && tok[i] <= 'f')))
            return 0;
    return 1;
}

static char *category_of(const char *stream_id)
{
    const char *dash = strchr(stream_id, '-');
    size_t n = dash ? (size_t)(dash - stream_id) : strlen(stream_id);
    char *c = xmalloc(n + 1);
    memcpy(c, stream_id, n);
    c[n] = '\0';
    return c;
}

/* The p_batch argument of cqrsd_append (migrations/0001_event_store.sql) for
 * streams. Returns a new reference, or NULL and sets e. */
static json_t *batch_of(const struct es_stream_append *streams, size_t nstreams, struct err *e)
{
    if (nstreams == 0)
        return err_set(e, ERR_INVALID, "nothing to append"), NULL;
    json_t *batch = json_array();
    for (size_t i = 0; i < nstreams; i++) {
        const struct es_stream_append *s = &streams[i];
        if (s->n == 0) {
            json_decref(batch);
            err_set(e, ERR_INVALID, "no events to append to stream \"%s\"", s->stream_id);
            return NULL;
        }
        json_t *evs = json_array();
        for (size_t j = 0; j < s->n; j++) {
            const struct es_new_event *ne = &s->events[j];
            json_t *o = json_pack("{s:s, s:O}", "type", ne->type, "data", ne->data);
            if (ne->metadata)
                json_object_set(o, "metadata", (json_t *)ne->metadata);
            if (ne->event_id)
                json_object_set_new(o, "event_id", json_string(ne->event_id));
            json_array_append_new(evs, o);
        }
        char *cat = s->category ? xstrdup(s->category) : category_of(s->stream_id);
        json_array_append_new(batch, json_pack("{s:s, s:s, s:I, s:o}", "stream", s->stream_id,
                                               "category", cat, "expected",
                                               (json_int_t)s->expected, "events", evs));
        free(cat);
    }
    return batch;
}

int es_append(PGconn *pg, const char *command_id, const char *request, int status,
              const json_t *reply_extra, const struct es_stream_append *streams, size_t nstreams,
              json_t **reply, struct err *e)
{
    json_t *batch = batch_of(streams, nstreams, e);
    if (!batch)
        return e->code;
    char *batch_txt = json_dumps(batch, JSON_COMPACT);
    json_decref(batch);
    char *extra_txt = reply_extra ? json_dumps(reply_extra, JSON_COMPACT) : NULL;
    char status_txt[16];
    snprintf(status_txt, sizeof status_txt, "%d", status);
    const char *params[5] = {command_id, request ? request : "", status_txt, extra_txt, batch_txt};
    PGresult *r = es_exec(pg, "SELECT cqrsd_append($1, $2, $3::int, $4::jsonb, $5::jsonb)::text",
                           5, params);
    free(batch_txt);
    free(extra_txt);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return es_fail(pg, r, "append", e);
    json_error_t je;
    *reply = json_loads(PQgetvalue(r, 0, 0), 0, &je);
    PQclear(r);
    if (!*reply)
        return err_set(e, ERR_INTERNAL, "could not decode append reply: %s", je.text);
    return 0;
}

int es_append_group(PGconn *pg, struct es_command_append *cmds, size_t n, struct err *e)
{
    json_t *all = json_array();
    for (size_t i = 0; i < n; i++) {
        struct es_command_append *c = &cmds[i];
        c->rc = 0;
        c->reply = NULL;
        json_t *batch = batch_of(c->streams, c->nstreams, &c->err);
        if (!batch) {
            c->rc = c->err.code;
            continue;
        }
        json_array_append_new(all, json_pack("{s:s?, s:s, s:i, s:O?, s:o}", "command_id",
                                             c->command_id, "request",
                                             c->request ? c->request : "", "status", c->status,
                                             "reply", c->reply_extra, "batch", batch));
    }
    if (json_array_size(all) == 0) {
        json_decref(all);
        return 0;
    }
    char *txt = json_dumps(all, JSON_COMPACT);
    json_decref(all);
    const char *params[1] = {txt};
    PGresult *r = es_exec(pg, "SELECT cqrsd_append_group($1::jsonb)::text", 1, params);
    free(txt);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return es_fail(pg, r, "append", e);
    json_error_t je;
    json_t *out = json_loads(PQgetvalue(r, 0, 0), 0, &je);
    PQclear(r);
    if (!json_is_array(out)) {
        json_decref(out);
        return err_set(e, ERR_INTERNAL, "could not decode the group append reply: %s", je.text);
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        struct es_command_append *c = &cmds[i];
        if (c->rc)
            continue;
        json_t *o = json_array_get(out, k++);
        json_t *reply = json_object_get(o, "reply");
        if (json_is_object(reply)) {
            c->reply = json_incref(reply);
            continue;
        }
        const char *msg = json_string_value(json_object_get(o, "message"));
        int code = o ? code_of(json_string_value(json_object_get(o, "sqlstate")),
                               json_string_value(json_object_get(o, "constraint")))
                     : ERR_INTERNAL;
        c->rc = fail_with(code, msg ? msg : "the store gave no outcome", "append", &c->err);
    }
    json_decref(out);
    return 0;
}

void es_events_clear(struct es_events *l)
{
    for (size_t i = 0; i < l->n; i++) {
        struct es_event *ev = &l->ev[i];
        free(ev->stream_id);
        free(ev->event_id);
        free(ev->type);
        json_decref(ev->data);
        json_decref(ev->metadata);
    }
    free(l->ev);
    l->ev = NULL;
    l->n = 0;
}

/* Columns: stream_id, version, event_id, type, data, metadata, position, recorded_at */
#define EVENT_COLUMNS                                                                    \
    "stream_id, version, event_id::text, type, data::text, metadata::text, "             \
    "cqrsd_position(txid, seq), "                                                        \
    "to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"

static int collect(PGresult *r, struct es_events *out, struct err *e)
{
    int rows = PQntuples(r);
    if (rows == 0) {
        PQclear(r);
        return 0;
    }
    out->ev = xrealloc(out->ev, (out->n + (size_t)rows) * sizeof *out->ev);
    for (int i = 0; i < rows; i++) {
        struct es_event *ev = &out->ev[out->n];
        json_error_t je;
        memset(ev, 0, sizeof *ev);
        ev->stream_id = xstrdup(PQgetvalue(r, i, 0));
        ev->version = strtoll(PQgetvalue(r, i, 1), NULL, 10);
        ev->event_id = xstrdup(PQgetvalue(r, i, 2));
        ev->type = xstrdup(PQgetvalue(r, i, 3));
        ev->data = json_loads(PQgetvalue(r, i, 4), JSON_DECODE_ANY, &je);
        ev->metadata = json_loads(PQgetvalue(r, i, 5), JSON_DECODE_ANY, &je);
        snprintf(ev->position, sizeof ev->position, "%s", PQgetvalue(r, i, 6));
        snprintf(ev->recorded_at, sizeof ev->recorded_at, "%s", PQgetvalue(r, i, 7));
        out->n++;
        if (!ev->data || !ev->metadata) {
            PQclear(r);
            return err_set(e, ERR_INTERNAL, "could not decode event %s/%" PRId64 ": %s",
                           ev->stream_id, ev->version, je.text);
        }
    }
    PQclear(r);
    return 0;
}

int es_read_stream(PGconn *pg, const char *stream_id, int64_t after_version, size_t max,
                   struct es_events *out, struct err *e)
{
    char after[24], lim[24];
    snprintf(after, sizeof after, "%" PRId64, after_version);
    snprintf(lim, sizeof lim, "%zu", max);
    const char *params[3] = {stream_id, after, lim};
    PGresult *r = es_exec(pg,
                          "SELECT " EVENT_COLUMNS " FROM events WHERE stream_id = $1 "
                          "AND version > $2::bigint ORDER BY version LIMIT $3::bigint",
                          3, params);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return es_fail(pg, r, "read stream", e);
    return collect(r, out, e);
}

/* The (txid, seq) of position token after, as the decimal parameters of
 * "(txid, seq) > ($1::text::xid8, $2::bigint)"; "" or NULL: before the first
 * event. ERR_INVALID for a string that is no token. */
static int position_params(const char *after, char tx[24], char seq[24], struct err *e)
{
    if (!es_position_valid(after ? after : ""))
        return err_set(e, ERR_INVALID, "position \"%.40s\" is not a position token", after);
    if (after && *after) {
        char h[17];
        memcpy(h, after, 16);
        h[16] = '\0';
        snprintf(tx, 24, "%" PRIu64, (uint64_t)strtoull(h, NULL, 16));
        snprintf(seq, 24, "%" PRId64, (int64_t)strtoull(after + 16, NULL, 16));
    } else {
        snprintf(tx, 24, "0");
        snprintf(seq, 24, "-1");
    }
    return 0;
}

int es_lag(PGconn *pg, const char *after, long long *events, double *age_s, struct err *e)
{
    char tx[24], seq[24];
    if (position_params(after, tx, seq, e))
        return e->code;
    const char *params[] = {tx, seq};
    PGresult *r = es_exec(pg,
                          "SELECT count(*), coalesce(extract(epoch FROM now() - min(recorded_at)), 0) "
                          "FROM (SELECT recorded_at FROM events "
                          "WHERE (txid, seq) > ($1::text::xid8, $2::bigint) "
                          "AND txid < (SELECT cqrsd_read_bound()) "
                          "ORDER BY txid, seq LIMIT 1000000) s",
                          2, params);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        return es_fail(pg, r, "measure a lag", e);
    *events = atoll(PQgetvalue(r, 0, 0));
    *age_s = atof(PQgetvalue(r, 0, 1));
    PQclear(r);
    return 0;
}

int es_read_all(PGconn *pg, const char *after, size_t max, struct es_events *out, struct err *e)
{
    char tx[24], seq[24], lim[24];
    if (position_params(after, tx, seq, e))
        return e->code;
    snprintf(lim, sizeof lim, "%zu", max);
    const char *params[3] = {tx, seq, lim};
    PGresult *r = es_exec(pg,
                          "SELECT " EVENT_COLUMNS " FROM events "
                          "WHERE (txid, seq) > ($1::text::xid8, $2::bigint) "
                          "AND txid < (SELECT cqrsd_read_bound()) "
                          "ORDER BY txid, seq LIMIT $3::bigint",
                          3, params);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return es_fail(pg, r, "read the global stream", e);
    return collect(r, out, e);
}

int es_head(PGconn *pg, char buf[ES_POSITION_LEN + 1], struct err *e)
{
    PGresult *r = es_exec(pg, "SELECT coalesce((SELECT cqrsd_position(txid, seq) FROM events "
                              "WHERE txid < (SELECT cqrsd_read_bound()) "
                              "ORDER BY txid DESC, seq DESC LIMIT 1), '')",
                          0, NULL);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return es_fail(pg, r, "read the head position", e);
    snprintf(buf, ES_POSITION_LEN + 1, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}

int es_command_lookup(PGconn *pg, const char *command_id, const char *request, int *status,
                      json_t **reply, int *same, struct err *e)
{
    const char *params[2] = {command_id, request ? request : ""};
    PGresult *r = es_exec(pg,
                          "SELECT status, reply::text, request_hash = "
                          "encode(sha256(convert_to($2, 'UTF8')), 'hex') "
                          "FROM commands WHERE command_id = $1",
                          2, params);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return es_fail(pg, r, "look up idempotency key", e);
    if (PQntuples(r) == 0) {
        PQclear(r);
        return 0;
    }
    *status = atoi(PQgetvalue(r, 0, 0));
    *reply = json_loads(PQgetvalue(r, 0, 1), 0, NULL);
    *same = PQgetvalue(r, 0, 2)[0] == 't';
    PQclear(r);
    if (!*reply)
        return err_set(e, ERR_INTERNAL, "could not decode the stored reply of \"%s\"", command_id);
    return 1;
}
