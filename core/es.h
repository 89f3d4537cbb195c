/* core/es.h — the event store: streams with optimistic concurrency and the
 * commit-safe global stream, in PostgreSQL 15 through libpq (DESIGN.md §3,
 * migrations/0001_event_store.sql).
 *
 * Every call takes the caller's PGconn (one per thread; libpq connections are
 * not shared between threads) and returns 0 or a negative ERR_* code:
 * ERR_UNAVAILABLE when PostgreSQL cannot be reached (the caller may retry
 * after es_reconnect), ERR_CONFLICT on a version conflict, ERR_INVALID on bad
 * arguments, ERR_INTERNAL otherwise; details in struct err.
 */
#ifndef CQRSD_ES_H
#define CQRSD_ES_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Longest stream id, in bytes (the CHECK on streams.stream_id). */
#define ES_STREAM_ID_MAX 512

/* Expected versions. N >= 1 means "exactly N". */
#define ES_ANY (-1)
#define ES_NO_STREAM 0

/* A global position token: 32 lowercase hex digits (16 of txid, 16 of seq);
 * tokens compare with strcmp in global order. "" is before everything. */
#define ES_POSITION_LEN 32

/* One event to append; all borrowed. event_id NULL: the store makes one
 * (derived from the command id when there is one). metadata may be NULL. */
struct es_new_event {
    const char *type;
    const json_t *data;
    const json_t *metadata;
    const char *event_id;
};

/* The events of one stream in an append. category: the stream id up to its
 * first '-' when NULL. */
struct es_stream_append {
    const char *stream_id;
    const char *category;
    int64_t expected;          /* ES_ANY, ES_NO_STREAM or exact version */
    const struct es_new_event *events;
    size_t n;
};

/*
 * Appends to one or more streams in one transaction. command_id (may be NULL)
 * is the Idempotency-Key, stored with request (the canonical request text,
 * hashed by the store) and status (the HTTP status to replay) in the same
 * transaction. reply_extra (borrowed, may be NULL) is merged into the reply.
 * On success *reply is a new reference {..extra, stream, version, streams,
 * position}; the caller decrefs it.
 * Errors: ERR_CONFLICT (version conflict, message names stream and versions),
 * ERR_IDEMPOTENCY (the command id was stored concurrently: look it up again),
 * ERR_UNAVAILABLE, ERR_INVALID, ERR_INTERNAL.
 */
int es_append(PGconn *pg, const char *command_id, const char *request, int status,
              const json_t *reply_extra, const struct es_stream_append *streams, size_t nstreams,
              json_t **reply, struct err *e);

/* One command's append in a group (es_append_group). The inputs are
 * borrowed, as es_append's arguments; rc, err and reply are its outcome. */
struct es_command_append {
    const char *command_id;
    const char *request;
    int status;
    const json_t *reply_extra;
    const struct es_stream_append *streams;
    size_t nstreams;
    int rc;        /* out: 0 or es_append's error for this command alone */
    struct err err; /* out: set when rc != 0 */
    json_t *reply; /* out: new reference when rc == 0; the caller decrefs it */
};

/*
 * Group commit: appends the commands of cmds[0..n) in one transaction (one
 * round trip, one commit), each in its own subtransaction, so each keeps its
 * own expected-version checks, idempotency key and outcome: a conflict or
 * refused key in one rolls back that one alone. n <= ES_GROUP_MAX.
 * Returns 0 when the transaction committed (each command's outcome is in its
 * rc/err/reply), or an error for the whole group (ERR_UNAVAILABLE: whether it
 * committed is unknown, as for es_append), leaving the outcomes unset.
 */
#define ES_GROUP_MAX 64
int es_append_group(PGconn *pg, struct es_command_append *cmds, size_t n, struct err *e);

/* A stored event. Owned by the es_events list that holds it. */
struct es_event {
    char *stream_id;
    int64_t version;
    char *event_id;
    char *type;
    json_t *data;     /* owned reference */
    json_t *metadata; /* owned reference */
    char position[ES_POSITION_LEN + 1];
    char recorded_at[40];
};

struct es_events {
    struct es_event *ev;
    size_t n;
};

/* Frees the events (es_events_clear on a zeroed list is a no-op). */
void es_events_clear(struct es_events *l);

/* Reads up to max events of stream_id with version > after_version, in
 * version order, appending them to out. Returns 0 (no events: the stream does
 * not exist or has none after that version). */
int es_read_stream(PGconn *pg, const char *stream_id, int64_t after_version, size_t max,
                   struct es_events *out, struct err *e);

/* Reads up to max events of the global stream after position after ("" or
 * NULL: from the start), in (txid, seq) order, never past the oldest
 * appending transaction still in progress (so no event committed later can
 * appear before one already returned; transactions that do not append, in
 * this database or another, hold nothing back: migrations/0004_appenders.sql).
 * Appends to out. */
int es_read_all(PGconn *pg, const char *after, size_t max, struct es_events *out, struct err *e);

/* How far behind the newest readable event position after ("" or NULL: no
 * event yet) is: *events gets the readable events after it (counted up to
 * 1,000,000), *age_s the age in seconds of the oldest of them (0 when
 * none). Returns 0, ERR_INVALID for no token, or an error of es_fail. */
int es_lag(PGconn *pg, const char *after, long long *events, double *age_s, struct err *e);

/* The position of the newest readable event ("" when none) into buf. */
int es_head(PGconn *pg, char buf[ES_POSITION_LEN + 1], struct err *e);

/*
 * Looks up an idempotency key. Returns 1 when found (sets *status, *reply (new
 * reference), *same = whether request hashes equal), 0 when not found, or a
 * negative error.
 */
int es_command_lookup(PGconn *pg, const char *command_id, const char *request, int *status,
                      json_t **reply, int *same, struct err *e);

/* Connects to url (a libpq connection string or URI). Returns NULL and sets e
 * (ERR_UNAVAILABLE) on failure. The connection uses UTC and a statement
 * timeout of 30 s. Caller closes with PQfinish. */
PGconn *es_connect(const char *url, struct err *e);

/* Ensures pg is usable: resets it when the connection broke. Returns 0 or
 * ERR_UNAVAILABLE. */
int es_ensure(PGconn *pg, struct err *e);

/* Turns the failure of a statement (r, cleared; may be NULL) into an error:
 * ERR_UNAVAILABLE when the connection is gone or the server is shutting
 * down, ERR_CONFLICT for a version conflict or a unique violation,
 * ERR_IDEMPOTENCY for one on commands_pkey, ERR_INVALID for a data or check
 * error, ERR_INTERNAL otherwise; the message says what could not be done. */
int es_fail(PGconn *pg, PGresult *r, const char *what, struct err *e);

/* PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0) through a statement
 * prepared once per connection (and again after a reset): no parse and, once
 * PostgreSQL keeps a generic plan, no plan per call (PostgreSQL docs, PREPARE).
 * sql must be the same text for the same statement, with no values spliced in
 * (a new text is a new statement, kept for the connection's life: at most 128
 * per thread). Returns the result to check and PQclear, as PQexecParams. */
PGresult *es_exec(PGconn *pg, const char *sql, int n, const char *const *params);

/* Runs a statement that returns no rows, with n text parameters. Returns 0
 * or es_fail's error ("could not <what>: ..."). */
int es_command(PGconn *pg, const char *sql, int n, const char *const *params, const char *what,
               struct err *e);

/* Waits at most ms for a notification on pg (which LISTENs), looking at *stop
 * every 100 ms; drains what arrived. Returns 1 when notified, else 0. */
int es_wait_notify(PGconn *pg, int ms, const atomic_int *stop);

/* Checks a position token's syntax ("" allowed). */
int es_position_valid(const char *tok);

#endif
