/* core/park.h — what a function could not handle: the retry book (failures
 * in memory, with back-off) and the parked items in PostgreSQL
 * (migrations/0002_functions.sql, table parked; GET /admin/parked).
 *
 * The rule every event-handling function follows (projections, reactors,
 * timers): an invocation that fails is tried again after backoff_ms, then
 * twice that, up to 30 s, until it has failed limits.retries times; then the
 * event (or the due timer) is parked with its error and the function moves
 * on. A parked item can be tried again after a fix (park_retry in
 * core/builtin.c: POST /admin/parked/{id}/retry).
 */
#ifndef CQRSD_PARK_H
#define CQRSD_PARK_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdint.h>

#include "core/err.h"
#include "core/es.h"

/* ---------- the retry book ---------- */

/* The failures of one function (at one version) at one position. */
struct park_retry {
    char *function;
    int version;
    char position[ES_POSITION_LEN + 1]; /* of the event failing; "" for a timer */
    int attempts;                       /* failures so far at this position */
    int64_t next_ms;                    /* util_now_ms() at which to try again */
    char error[512];                    /* the last failure */
    struct park_retry *next;
};

/* Zero-initialise; one per runner thread (not thread-safe). */
struct park_book {
    struct park_retry *head;
};

/* The entry of (function, version), or NULL when it is not failing. */
struct park_retry *park_book_get(struct park_book *b, const char *function, int version);

/* The wait after the attempts-th failure: backoff_ms * 2^(attempts-1), at
 * most 30 s (the rule above, for every event-handling function). */
int64_t park_backoff_ms(int backoff_ms, int attempts);

/* Records a failure at position (a new position starts counting at 1) and
 * sets the next attempt backoff_ms * 2^(attempts-1) from now, at most 30 s.
 * Returns the entry (owned by the book). */
struct park_retry *park_book_fail(struct park_book *b, const char *function, int version,
                                  const char *position, const char *error, int backoff_ms);

/* Forgets (function, version): it got past its failure. */
void park_book_clear(struct park_book *b, const char *function, int version);

/* 1 when (function, version) waits for its next attempt at now_ms. */
int park_book_waiting(struct park_book *b, const char *function, int version, int64_t now_ms);

void park_book_free(struct park_book *b);

/* ---------- parked items ---------- */

/*
 * The rule above, for a failure of function (kind "projection", "reactor" or
 * "timer"; version: a projection's, else 0) at event ev, the last error
 * why: records it in book; below retries attempts logs it and returns 1 (the
 * caller stops before ev and tries it again after the back-off); at retries
 * parks ev (park_put) and returns 0 (the caller moves past it), or returns 1
 * when it could not be parked (it stays the failure it was).
 */
int park_event_failed(PGconn *pg, struct park_book *book, const char *function,
                      const char *kind, int version, int retries, int backoff_ms,
                      const struct es_event *ev, const char *why);

/* The subject of an event: {stream_id, version, type, event_id, position,
 * recorded_at, data}. A new reference. */
json_t *park_event_subject(const struct es_event *ev);

/*
 * Parks subject for function (kind "projection", "reactor" or "timer";
 * version: a projection's, else 0; position: the event's, "" for a due
 * timer) after attempts failures, the last with error. Parking one event
 * again (a rebuild met it again) updates the row and gives it a new token.
 * Sets *id (may be NULL). Returns 0 or an es.h error.
 */
int park_put(PGconn *pg, const char *function, const char *kind, int version,
             const char *position, const json_t *subject, const char *error, int attempts,
             int64_t *id, struct err *e);

/* One parked item, as park_get reads it. Strings and subject owned. */
struct park_item {
    int64_t id;
    char *function, *kind, *position, *error, *state, *token, *parked_at;
    int version, attempts;
    json_t *subject;
};

/* Reads item id into *it (free with park_item_clear). Returns 1 when found,
 * 0 when not, or an es.h error. */
int park_get(PGconn *pg, int64_t id, struct park_item *it, struct err *e);
void park_item_clear(struct park_item *it);

/* The item as JSON for /admin/parked: {id, function, kind, version?,
 * position?, state, attempts, error, parked_at, subject}. New reference. */
json_t *park_item_json(const struct park_item *it);

/* Lists the items of state ("parked", "resolved" or NULL for both) and of
 * function (NULL: every one) with an id greater than after, oldest first, at
 * most limit. *out gets a JSON array (new reference). */
int park_list(PGconn *pg, const char *state, const char *function, int64_t after, int limit,
              json_t **out, struct err *e);

/* Marks item id resolved (tried again with success), or records a failed
 * retry (error, attempts + 1) when error is not NULL. */
int park_settle(PGconn *pg, int64_t id, const char *error, struct err *e);

/* Counts the items still parked ("parked" state). */
int park_count(PGconn *pg, int64_t *n, struct err *e);

#endif
