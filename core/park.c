/* core/park.c — the retry book and the parked items (see park.h). */
#include "core/park.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

#define PARK_BACKOFF_MAX_MS 30000

/* ---------- the retry book ---------- */

struct park_retry *park_book_get(struct park_book *b, const char *function, int version)
{
    for (struct park_retry *r = b->head; r; r = r->next)
        if (r->version == version && !strcmp(r->function, function))
            return r;
    return NULL;
}

int64_t park_backoff_ms(int backoff_ms, int attempts)
{
    return util_backoff_ms(backoff_ms > 0 ? backoff_ms : 1, attempts, PARK_BACKOFF_MAX_MS);
}

struct park_retry *park_book_fail(struct park_book *b, const char *function, int version,
                                  const char *position, const char *error, int backoff_ms)
{
    struct park_retry *r = park_book_get(b, function, version);
    if (!r) {
        r = xcalloc(1, sizeof *r);
        r->function = xstrdup(function);
        r->version = version;
        r->next = b->head;
        b->head = r;
    }
    if (strcmp(r->position, position)) {
        snprintf(r->position, sizeof r->position, "%s", position);
        r->attempts = 0;
    }
    r->attempts++;
    snprintf(r->error, sizeof r->error, "%s", error);
    r->next_ms = util_now_ms() + park_backoff_ms(backoff_ms, r->attempts);
    return r;
}

void park_book_clear(struct park_book *b, const char *function, int version)
{
    for (struct park_retry **p = &b->head; *p; p = &(*p)->next)
        if ((*p)->version == version && !strcmp((*p)->function, function)) {
            struct park_retry *r = *p;
            *p = r->next;
            free(r->function);
            free(r);
            return;
        }
}

int park_book_waiting(struct park_book *b, const char *function, int version, int64_t now_ms)
{
    struct park_retry *r = park_book_get(b, function, version);
    return r && now_ms < r->next_ms;
}

void park_book_free(struct park_book *b)
{
    while (b->head) {
        struct park_retry *r = b->head;
        b->head = r->next;
        free(r->function);
        free(r);
    }
}

/* ---------- parked items ---------- */

json_t *park_event_subject(const struct es_event *ev)
{
    return json_pack("{s:s, s:I, s:s, s:s, s:s, s:s, s:O}", "stream_id", ev->stream_id, "version",
                     (json_int_t)ev->version, "type", ev->type, "event_id", ev->event_id,
                     "position", ev->position, "recorded_at", ev->recorded_at, "data", ev->data);
}

int park_put(PGconn *pg, const char *function, const char *kind, int version,
             const char *position, const json_t *subject, const char *error, int attempts,
             int64_t *id, struct err *e)
{
    char v[16], a[16];
    snprintf(v, sizeof v, "%d", version);
    snprintf(a, sizeof a, "%d", attempts);
    char *subj = json_dumps(subject, JSON_COMPACT);
    const char *params[7] = {function, kind, v, position, subj, error, a};
    /* an event parked again (a rebuild met it again) updates its row */
    PGresult *r = PQexecParams(
        pg,
        "INSERT INTO parked (function, kind, version, position, subject, error, attempts) "
        "VALUES ($1, $2, $3::int, $4, $5::jsonb, $6, $7::int) "
        "ON CONFLICT (function, version, position) WHERE position <> '' DO UPDATE SET "
        "subject = EXCLUDED.subject, error = EXCLUDED.error, attempts = EXCLUDED.attempts, "
        "state = 'parked', token = gen_random_uuid(), parked_at = now(), resolved_at = NULL "
        "RETURNING id",
        7, NULL, params, NULL, NULL, 0);
    free(subj);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return es_fail(pg, r, "park an event", e);
    if (id)
        *id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return 0;
}

#define ITEM_COLUMNS                                                                           \
    "id, function, kind, version, position, subject::text, error, attempts, state, "         \
    "token::text, to_char(parked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"

static void item_from(PGresult *r, int row, struct park_item *it)
{
    memset(it, 0, sizeof *it);
    it->id = strtoll(PQgetvalue(r, row, 0), NULL, 10);
    it->function = xstrdup(PQgetvalue(r, row, 1));
    it->kind = xstrdup(PQgetvalue(r, row, 2));
    it->version = atoi(PQgetvalue(r, row, 3));
    it->position = xstrdup(PQgetvalue(r, row, 4));
    it->subject = json_loads(PQgetvalue(r, row, 5), 0, NULL);
    if (!it->subject)
        it->subject = json_object();
    it->error = xstrdup(PQgetvalue(r, row, 6));
    it->attempts = atoi(PQgetvalue(r, row, 7));
    it->state = xstrdup(PQgetvalue(r, row, 8));
    it->token = xstrdup(PQgetvalue(r, row, 9));
    it->parked_at = xstrdup(PQgetvalue(r, row, 10));
}

void park_item_clear(struct park_item *it)
{
    free(it->function);
    free(it->kind);
    free(it->position);
    free(it->error);
    free(it->state);
    free(it->token);
    free(it->parked_at);
    json_decref(it->subject);
    memset(it, 0, sizeof *it);
}

int park_get(PGconn *pg, int64_t id, struct park_item *it, struct err *e)
{
    char n[24];
    snprintf(n, sizeof n, "%" PRId64, id);
    const char *params[1] = {n};
    PGresult *r = PQexecParams(pg, "SELECT " ITEM_COLUMNS " FROM parked WHERE id = $1::bigint", 1,
                               NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return es_fail(pg, r, "read a parked item", e);
    int found = PQntuples(r) == 1;
    if (found)
        item_from(r, 0, it);
    PQclear(r);
    return found;
}

json_t *park_item_json(const struct park_item *it)
{
    json_t *o = json_pack("{s:I, s:s, s:s}", "id", (json_int_t)it->id, "function", it->function,
                          "kind", it->kind);
    if (!strcmp(it->kind, "projection"))
        json_object_set_new(o, "version", json_integer(it->version));
    if (*it->position)
        json_object_set_new(o, "position", json_string(it->position));
    json_object_set_new(o, "state", json_string(it->state));
    json_object_set_new(o, "attempts", json_integer(it->attempts));
    json_object_set_new(o, "error", json_string(it->error));
    json_object_set_new(o, "parked_at", json_string(it->parked_at));
    json_object_set(o, "subject", it->subject);
    return o;
}

int park_list(PGconn *pg, const char *state, const char *function, int64_t after, int limit,
              json_t **out, struct err *e)
{
    char a[24], l[16];
    snprintf(a, sizeof a, "%" PRId64, after);
    snprintf(l, sizeof l, "%d", limit);
    const char *params[4] = {state, function, a, l};
    PGresult *r = PQexecParams(pg,
                               "SELECT " ITEM_COLUMNS " FROM parked WHERE ($1::text IS NULL OR "
                               "state = $1) AND ($2::text IS NULL OR function = $2) AND id > "
                               "$3::bigint ORDER BY id LIMIT $4::int",
                               4, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return es_fail(pg, r, "list parked items", e);
    *out = json_array();
    for (int i = 0; i < PQntuples(r); i++) {
        struct park_item it;
        item_from(r, i, &it);
        json_array_append_new(*out, park_item_json(&it));
        park_item_clear(&it);
    }
    PQclear(r);
    return 0;
}

int park_event_failed(PGconn *pg, struct park_book *book, const char *function,
                      const char *kind, int version, int retries, int backoff_ms,
                      const struct es_event *ev, const char *why)
{
    char who[160];
    if (version)
        snprintf(who, sizeof who, "%s %s v%d", kind, function, version);
    else
        snprintf(who, sizeof who, "%s %s", kind, function);
    struct park_retry *f = park_book_fail(book, function, version, ev->position, why, backoff_ms);
    if (f->attempts < retries) {
        log_warn("%s: attempt %d of %d at event %s failed: %s; trying again in %lld ms", who,
                 f->attempts, retries, ev->position, why, (long long)(f->next_ms - util_now_ms()));
        return 1;
    }
    json_t *subject = park_event_subject(ev);
    struct err e = {0};
    int64_t id = 0;
    int rc = park_put(pg, function, kind, version, ev->position, subject, why, f->attempts, &id,
                      &e);
    json_decref(subject);
    if (rc) {
        log_error("%s: could not park event %s: %s", who, ev->position, e.msg);
        return 1;
    }
    log_error("%s: parked event %s (%s %s/%" PRId64 ") as #%lld after %d attempts: %s", who,
              ev->position, ev->type, ev->stream_id, ev->version, (long long)id, f->attempts, why);
    park_book_clear(book, function, version);
    return 0;
}

int park_settle(PGconn *pg, int64_t id, const char *error, struct err *e)
{
    char n[24];
    snprintf(n, sizeof n, "%" PRId64, id);
    const char *params[2] = {n, error};
    return es_command(pg,
                      error ? "UPDATE parked SET error = $2, attempts = attempts + 1 WHERE id = "
                              "$1::bigint"
                            : "UPDATE parked SET state = 'resolved', resolved_at = now() WHERE id "
                              "= $1::bigint",
                      error ? 2 : 1, params, "settle a parked item", e);
}

int park_count(PGconn *pg, int64_t *n, struct err *e)
{
    PGresult *r = PQexec(pg, "SELECT count(*) FROM parked WHERE state = 'parked'");
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return es_fail(pg, r, "count parked items", e);
    *n = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return 0;
}
