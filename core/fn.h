/* core/fn.h — the function ABI: all that commands/, projections/ and queries/
 * see of the platform.
 *
 * A function is a const descriptor listed in its folder's registry.def
 * (an X-macro list): commands/registry.def, projections/registry.def,
 * queries/registry.def. The platform routes HTTP requests to commands and
 * queries by the descriptor's method and route, and feeds projections from
 * the global event stream.
 *
 * Ownership: everything a function receives is borrowed for the duration of
 * the call. json_t values handed to fn_emit/fn_reply_set are stolen (the
 * platform decrefs them). No function does I/O: decide and evolve are pure,
 * projections only describe Redis writes, and only queries read (Redis).
 */
#ifndef CQRSD_FN_H
#define CQRSD_FN_H

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/money.h"
#include "core/rtime.h"

#define FN_ABI_VERSION 1

/* An event as functions see it. */
struct fn_event {
    const char *stream_id;   /* e.g. "cart-536365" */
    int64_t version;         /* 1-based position of the event in its stream */
    const char *type;        /* e.g. "ItemAdded" */
    const json_t *data;      /* the event's JSON object */
    const char *position;    /* global position token, 32 lowercase hex; "" when not stored yet */
    const char *recorded_at; /* RFC 3339 time the store recorded it; "" when not stored yet */
};

/* ---------- commands ---------- */

/* What decide produces: events for its own stream, events opening new
 * streams, and fields of the reply. Opaque; filled through the calls below. */
struct fn_decision;

/* Appends an event to the command's own stream. data is stolen. */
void fn_emit(struct fn_decision *d, const char *type, json_t *data);

/* Appends an event that opens another stream (expected version: no stream),
 * in the same atomic append, e.g. the order a checkout creates. data is stolen. */
void fn_emit_new_stream(struct fn_decision *d, const char *stream_id, const char *type,
                        json_t *data);

/* Sets a field of the command's JSON reply. value is stolen. */
void fn_reply_set(struct fn_decision *d, const char *key, json_t *value);

/*
 * A command function. The request body (a JSON object) plus route parameters
 * (`{name}` segments of route, by name) plus "occurred_at" (the client's RFC
 * 3339 value, normalised, or the server's clock) form `cmd`. The stream is
 * "<category>-<cmd[id_field]>"; when id_field is absent from the body of a
 * creating command, the platform generates a UUID and sets it in cmd.
 *
 * The dispatcher loads the stream, runs evolve over its events, then decide;
 * it appends what decide emitted with the version it read as expected version
 * and, on a conflict, re-runs the whole cycle (bounded) unless the client gave
 * an explicit Expected-Version.
 */
struct fn_command {
    const char *name;     /* "cart.add_item" */
    const char *method;   /* "POST" or "DELETE" */
    const char *route;    /* "/carts/{cart_id}/items" */
    const char *category; /* "cart" */
    const char *id_field; /* "cart_id" */
    int creates;          /* 1: the stream must not exist yet; replies 201 */
    size_t state_size;    /* bytes of state; zeroed before evolve */
    /* Folds one event of the stream into state. */
    void (*evolve)(void *state, const struct fn_event *ev);
    /* Decides: returns 0 after emitting events, or ERR_INVALID (400) /
     * ERR_REJECTED (422) / ERR_NOT_FOUND (404) with a message in e. */
    int (*decide)(const void *state, int64_t version, const json_t *cmd, struct fn_decision *d,
                  struct err *e);
    /* Frees what evolve allocated inside state (not state itself); may be NULL. */
    void (*release)(void *state);
};

/* ---------- projections ---------- */

/* The Redis writes of one batch. Opaque. Every key is prefixed by the
 * platform with "<projection name>:v<version>:", so projections name keys
 * relative to their namespace. Integers only: money is int64 thousandths
 * (HINCRBY), never HINCRBYFLOAT. */
struct fn_batch;

void fn_set(struct fn_batch *b, const char *key, const char *value);
void fn_del(struct fn_batch *b, const char *key);
void fn_hset(struct fn_batch *b, const char *key, const char *field, const char *value);
void fn_hsetnx(struct fn_batch *b, const char *key, const char *field, const char *value);
void fn_hdel(struct fn_batch *b, const char *key, const char *field);
void fn_hincrby(struct fn_batch *b, const char *key, const char *field, int64_t by);
void fn_sadd(struct fn_batch *b, const char *key, const char *member);
void fn_zadd(struct fn_batch *b, const char *key, int64_t score, const char *member);
/* Removes the members of a sorted set between min and max in lexical order
 * (ZREMRANGEBYLEX syntax: "[a" inclusive, "(a" exclusive). */
void fn_zremrangebylex(struct fn_batch *b, const char *key, const char *min, const char *max);
/* Scores are doubles in Redis: exact for integers up to 2^53, used for
 * ordering only; exact figures live in hashes. */
void fn_zincrby(struct fn_batch *b, const char *key, int64_t by, const char *member);

/*
 * A projection function. apply is called for every event whose type is in
 * types (NULL: every event), in global order, exactly once per version of the
 * projection: the platform applies a batch's writes and its checkpoint in one
 * atomic Redis script that first checks the checkpoint it started from.
 */
struct fn_projection {
    const char *name;          /* "product" */
    int version;               /* bump to rebuild into new keys */
    const char *const *types;  /* NULL-terminated event types, or NULL for all */
    void (*apply)(struct fn_batch *b, const struct fn_event *ev);
};

/* ---------- queries ---------- */

struct fn_query_ctx;

/* A route parameter ({name}) or query-string parameter; NULL when absent. */
const char *fn_param(const struct fn_query_ctx *q, const char *name);

/* Runs one Redis command (hiredis redisCommand format) on the worker's
 * connection. Returns a reply the caller frees with freeReplyObject, or NULL
 * when Redis is unreachable (the platform then answers 503). */
redisReply *fn_redis(struct fn_query_ctx *q, const char *fmt, ...);

/* Runs one Redis command given as argv (binary-safe). Same contract. */
redisReply *fn_redis_argv(struct fn_query_ctx *q, int argc, const char **argv);

/* The full key of a projection's relative key: "<name>:v<version>:<key>".
 * Caller frees. */
char *fn_key(const char *projection, int version, const char *key);

/*
 * A query function: answers GET route from Redis. Returns 0 and sets *out
 * (a new reference, sent as the 200 body), or ERR_NOT_FOUND / ERR_INVALID /
 * ERR_UNAVAILABLE with a message.
 */
struct fn_query {
    const char *name;  /* "product.get" */
    const char *route; /* "/products/{sku}" */
    int (*run)(struct fn_query_ctx *q, json_t **out, struct err *e);
};

/* ---------- registries ---------- */

extern const struct fn_command *const fn_commands[];  /* NULL-terminated */
extern const struct fn_projection *const fn_projections[];
extern const struct fn_query *const fn_queries[];

#endif
