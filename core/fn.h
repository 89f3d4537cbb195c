/* core/fn.h — the function ABI: the one header a module includes, and with
 * the headers it includes (err.h, err.def, money.h, rtime.h) all that a
 * function sees of the platform. Installed as <cqrsd/fn.h> (`make install`,
 * pkg-config cqrsd); inside this repository the e-commerce module includes it
 * from build/include/cqrsd/ the same way.
 *
 * A module is a shared object that exports one descriptor, `cqrsd_module`
 * (FN_MODULE below), listing its functions: commands, projections, queries,
 * reactors and timers. Every descriptor carries the ABI version it was built
 * against (.abi = FN_ABI_VERSION); `cqrsd serve` refuses a module or a
 * descriptor of another version.
 *
 * Ownership: everything a function receives is borrowed for the duration of
 * the call. json_t values handed to fn_emit, fn_reply_set, fn_issue and
 * fn_timer_start are stolen (the platform decrefs them). What a query reads
 * (fn_hgetall and the other reads) lives in the query's arena and is freed by
 * the platform when the query returns. fn_strdup and fn_asprintf return
 * malloc'd strings the caller frees with free(); every allocation of the
 * platform aborts when memory is exhausted.
 *
 * No function does I/O: evolve and decide are pure, projections only describe
 * Redis writes, queries read Redis only through the typed reads below, and
 * reactors and timers only ask the platform to issue commands.
 */
#ifndef CQRSD_FN_H
#define CQRSD_FN_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "money.h"
#include "rtime.h"

/* The version of this header. A module built against another is refused. */
#define FN_ABI_VERSION 3

/* Marks the one symbol of a module that the platform looks up; modules are
 * built with -fvisibility=hidden, so nothing else of theirs is exported. */
#define FN_EXPORT __attribute__((visibility("default")))

/* ---------- strings ---------- */

/* A malloc'd copy of s; the caller frees it. */
char *fn_strdup(const char *s);
/* A malloc'd string formatted like printf; the caller frees it. */
char *fn_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---------- events ---------- */

/* An event as functions see it. */
struct fn_event {
    const char *stream_id;   /* e.g. "cart-536365" */
    int64_t version;         /* 1-based position of the event in its stream */
    const char *type;        /* e.g. "ItemAdded" */
    const json_t *data;      /* the event's JSON object */
    const char *position;    /* global position token, 32 lowercase hex; "" when not stored yet */
    const char *recorded_at; /* RFC 3339 time the store recorded it; "" when not stored yet */
    const char *event_id;    /* UUID; "" when not stored yet */
};

/* ---------- limits (every kind of function) ---------- */

/*
 * What a function declares about how the platform runs it. 0 in a field means
 * the platform's default; the environment overrides a field per function:
 * CQRSD_FN_<NAME>_CONCURRENCY, _TIMEOUT_MS, _RETRIES, _BACKOFF_MS (and a
 * timer's _DELAY_S), where NAME is the function's name in capitals with every
 * other character than a letter or digit made '_' ("cart.add_item" ->
 * CQRSD_FN_CART_ADD_ITEM_CONCURRENCY). A field of a kind that does not have it
 * is ignored in the descriptor and refused in the environment.
 */
struct fn_limits {
    int concurrency; /* invocations at once (commands, queries). Default:
                      * unlimited */
    int timeout_ms;  /* the longest a request may take (commands, queries); a
                      * timer's hold on a due fire. Default 30000 */
    int retries;     /* commands: runs again on a version conflict (default
                      * 20); projections, reactors, timers: attempts at an
                      * event or a due timer before it is parked (default 5) */
    int backoff_ms;  /* projections, reactors, timers: delay before the first
                      * retry of a failed event or fire, doubling each time
                      * up to 30 s (default 100) */
};

/* ---------- commands ---------- */

/* What decide produces: events for its own stream, events opening new
 * streams, and fields of the reply. Opaque; filled through the calls below. */
struct fn_decision;

/* Appends an event to the command's own stream. type must be one of the
 * module's declared event types (FN_MODULE .events); data is stolen. */
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
 * and, on a conflict, re-runs the whole cycle (limits.retries times) unless
 * the client gave an explicit Expected-Version.
 *
 * A command without a route (and method) is internal: only reactors and
 * timers issue it (fn_issue), by name.
 */
struct fn_command {
    int abi;              /* FN_ABI_VERSION */
    const char *name;     /* "cart.add_item" */
    const char *method;   /* "POST" or "DELETE"; NULL with route NULL */
    const char *route;    /* "/carts/{cart_id}/items"; NULL: internal */
    const char *category; /* "cart" */
    const char *id_field; /* "cart_id" */
    int creates;          /* 1: the stream must not exist yet; replies 201 */
    size_t state_size;    /* bytes of state; zeroed before evolve */
    /* Folds one event of the stream into state. */
    void (*evolve)(void *state, const struct fn_event *ev);
    /* Decides: returns 0 after emitting events, or ERR_INVALID (400) /
     * ERR_REJECTED (422) / ERR_NOT_FOUND (404) / ERR_CONFLICT (409) with a
     * message in e. */
    int (*decide)(const void *state, int64_t version, const json_t *cmd, struct fn_decision *d,
                  struct err *e);
    /* Frees what evolve allocated inside state (not state itself); may be NULL. */
    void (*release)(void *state);
    struct fn_limits limits;
    /* The body fields decide reads besides id_field, occurred_at and the
     * route's parameters, NULL-terminated (ABI 3). An HTTP request carrying
     * any other field is refused with 400 naming it, before decide runs: a
     * typo ("customerid") is an error, not an absent field. NULL: every
     * field is passed on unchecked. */
    const char *const *fields;
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

/* One entry of a projection's table: the handler of one event type. It
 * describes writes into b and returns 0, or an ERR_* code with a message in e
 * when it cannot project the event: the platform retries it with back-off
 * (limits.retries, limits.backoff_ms), then parks the event with the error
 * (GET /admin/parked) and moves on; nothing of a failed call is written. */
struct fn_on_event {
    const char *type;
    int (*apply)(struct fn_batch *b, const struct fn_event *ev, struct err *e);
};

/*
 * A projection function. on is a table of {event type, handler} ending with
 * {NULL, NULL}; a handler is called for every event of its type, in global
 * order, exactly once per version of the projection: the platform applies a
 * batch's writes and its checkpoint in one atomic Redis script that first
 * checks the checkpoint it started from.
 */
struct fn_projection {
    int abi;                       /* FN_ABI_VERSION */
    const char *name;              /* "product" */
    int version;                   /* bump to rebuild into new keys */
    const struct fn_on_event *on;  /* {type, handler} ..., {NULL, NULL} */
    struct fn_limits limits;
};

/* ---------- queries ---------- */

struct fn_query_ctx;

/* A route parameter ({name}) or query-string parameter; NULL when absent. */
const char *fn_param(const struct fn_query_ctx *q, const char *name);

/*
 * Typed reads of read models. `projection` names a projection of the query's
 * own module generation; key is relative to its namespace, as projections
 * write it; the platform adds "<projection>:v<version>:". Results live in the
 * query's arena until the query returns. Every read returns 0, or:
 * ERR_UNAVAILABLE when Redis is unreachable or answers an error (the platform
 * answers 503), ERR_INTERNAL when the key holds another type or a malformed
 * value (a damaged read model: 500), ERR_INVALID for an unknown projection.
 */

/* One field of a hash; name and value are NUL-terminated (and may hold NULs
 * before their length). */
struct fn_field {
    const char *name, *value;
    size_t name_len, value_len;
};

/* A whole hash, its fields sorted by name (bytewise); n == 0 when absent. */
struct fn_hash {
    const struct fn_field *f;
    size_t n;
    const char *key; /* the full key read, for messages */
};

/* One member of a set or sorted set, with its score for sorted sets
 * (integers only: fn_zadd and fn_zincrby write int64). */
struct fn_member {
    const char *member;
    size_t len;
    int64_t score;
};

struct fn_members {
    const struct fn_member *m;
    size_t n;
};

/* HGETALL. */
int fn_hgetall(struct fn_query_ctx *q, const char *projection, const char *key,
               struct fn_hash *out, struct err *e);
/* HGETALL of keys[0..n) into out[0..n) (the caller's array), pipelined: one
 * round trip to Redis for all n. Errors as fn_hgetall's, the first one met;
 * on an error the contents of out are unspecified. */
int fn_hgetall_many(struct fn_query_ctx *q, const char *projection, const char *const *keys,
                    size_t n, struct fn_hash *out, struct err *e);
/* The value of field in h, or NULL when absent. */
const char *fn_hash_get(const struct fn_hash *h, const char *field);
/* The integer in field of h: 0 and *out = 0 when absent; ERR_INTERNAL, naming
 * key and field, when it holds no strict decimal int64. */
int fn_hash_int(const struct fn_hash *h, const char *field, int64_t *out, struct err *e);
/* Parses the len bytes at s as a strict decimal int64: an optional '-', then
 * digits, nothing else (no spaces, no '+'). Returns 0 and *out, or -1. */
int fn_parse_int(const char *s, size_t len, int64_t *out);
/* HMGET: values[i] gets field i's value, or NULL when absent. */
int fn_hmget(struct fn_query_ctx *q, const char *projection, const char *key, size_t n,
             const char *const *fields, const char **values, struct err *e);

/* Flags of fn_zrange. */
#define FN_DESC 1   /* highest score first (ZREVRANGE) */
#define FN_SCORES 2 /* fill fn_member.score (else 0) */

/* ZRANGE key start stop, ranks from 0, negative from the end. */
int fn_zrange(struct fn_query_ctx *q, const char *projection, const char *key, int64_t start,
              int64_t stop, int flags, struct fn_members *out, struct err *e);
/* ZRANGEBYSCORE key min max WITHSCORES LIMIT offset count: members with
 * min <= score <= max, lowest first, ties by member. */
int fn_zrangebyscore(struct fn_query_ctx *q, const char *projection, const char *key,
                     int64_t min, int64_t max, int64_t offset, int64_t count,
                     struct fn_members *out, struct err *e);
/* SMEMBERS, in no particular order. */
int fn_smembers(struct fn_query_ctx *q, const char *projection, const char *key,
                struct fn_members *out, struct err *e);
/* ZCARD, SCARD, EXISTS. */
int fn_zcard(struct fn_query_ctx *q, const char *projection, const char *key, int64_t *n,
             struct err *e);
int fn_scard(struct fn_query_ctx *q, const char *projection, const char *key, int64_t *n,
             struct err *e);
int fn_exists(struct fn_query_ctx *q, const char *projection, const char *key, int *exists,
              struct err *e);

/*
 * Pipelined reads (Redis pipelining, https://redis.io/docs/latest/develop/use/pipelining/):
 * between fn_pipeline_begin and fn_pipeline_end every read above is sent
 * without waiting for its reply, so a query that needs several reads pays one
 * round trip to Redis for all of them. Inside a pipeline a read returns 0 at
 * once (or ERR_INVALID for an unknown projection, ERR_UNAVAILABLE when Redis
 * is unreachable) and its outputs are filled when fn_pipeline_end returns 0;
 * they must stay valid until then. fn_pipeline_end returns an error of a read
 * in the pipeline as that read would have returned it: the first read refused
 * when it was sent, else the first reply (in the order sent) that is an
 * error; all replies are read, and on an error the outputs are unspecified.
 * ERR_INTERNAL without a begin.
 * Pipelines nest: only the outermost end sends. A query that returns with a
 * pipeline open has its replies dropped. A read cannot depend on another's
 * result in the same pipeline. So the reads' own returns may be ignored:
 *
 *   fn_pipeline_begin(q);
 *   fn_hgetall(q, "cart_view", key, &cart, e);
 *   fn_zrange(q, "cart_view", pkey, 0, -1, 0, &prices, e);
 *   if ((rc = fn_pipeline_end(q, e))) return rc;
 */
void fn_pipeline_begin(struct fn_query_ctx *q);
int fn_pipeline_end(struct fn_query_ctx *q, struct err *e);

/*
 * A query function: answers GET route from read models. Returns 0 and sets
 * *out (a new reference, sent as the 200 body), or ERR_NOT_FOUND /
 * ERR_INVALID / ERR_UNAVAILABLE / ERR_INTERNAL with a message.
 */
struct fn_query {
    int abi;           /* FN_ABI_VERSION */
    const char *name;  /* "product.get" */
    const char *route; /* "/products/{sku}" */
    int (*run)(struct fn_query_ctx *q, json_t **out, struct err *e);
    struct fn_limits limits;
};

/* ---------- reactors and timers ---------- */

/* What a reactor or a timer asks of the platform. Opaque. */
struct fn_react;

/*
 * Issues the command named `command` (of any loaded module; internal ones
 * included) with cmd (stolen): the object decide receives, its id field
 * included. Without "occurred_at" the platform sets the triggering event's
 * occurred_at (or recorded_at), for a timer its due time. The commands run
 * in order after the handler returns, each with an idempotency key derived
 * from the function's name and the event's id (a timer's: its schedule) and
 * the command's rank, so a handler run again after a crash issues nothing
 * twice. A command's business answer (404, 409, 422) is its outcome, not a
 * failure; a malformed command (400) or an unreachable store fails the
 * invocation, which is retried and then parked.
 */
void fn_issue(struct fn_react *r, const char *command, json_t *cmd);

/* In a timer's event handlers only: starts (or restarts, with a new due time
 * and payload) the timer for key, due the timer's delay after the event was
 * recorded; payload (stolen, an object or NULL) is handed to fire. Stopping a
 * timer that is not running does nothing. */
void fn_timer_start(struct fn_react *r, const char *key, json_t *payload);
void fn_timer_stop(struct fn_react *r, const char *key);

/* One entry of a reactor's or a timer's table: the handler of one event
 * type. Returns 0, or an ERR_* code with a message in e (retried, then
 * parked); what it issued is then dropped. */
struct fn_on_react {
    const char *type;
    int (*react)(struct fn_react *r, const struct fn_event *ev, struct err *e);
};

/*
 * A reactor: receives the events of its table's types from the global
 * stream, in order, from its own checkpoint (kept in PostgreSQL), and issues
 * commands. Several instances: one runs it at a time.
 */
struct fn_reactor {
    int abi;                      /* FN_ABI_VERSION */
    const char *name;             /* "loyalty.earn_on_payment" */
    const struct fn_on_react *on; /* {type, handler} ..., {NULL, NULL} */
    struct fn_limits limits;
};

/* A due timer, as fire receives it. */
struct fn_timer_due {
    const char *key;
    const json_t *payload; /* an object */
    const char *due_at;    /* RFC 3339 */
};

/*
 * A timer: its table's handlers start and stop timers (by key) as events
 * arrive, from its own checkpoint; when one is due, fire runs (once, across
 * any number of instances) and issues commands. Timers are stored in
 * PostgreSQL and survive restarts. delay_s is the default delay;
 * CQRSD_FN_<NAME>_DELAY_S overrides it.
 */
struct fn_timer {
    int abi;                      /* FN_ABI_VERSION */
    const char *name;             /* "order.payment_timeout" */
    int delay_s;                  /* seconds from the starting event to the fire */
    const struct fn_on_react *on; /* {type, handler} ..., {NULL, NULL} */
    int (*fire)(struct fn_react *r, const struct fn_timer_due *t, struct err *e);
    struct fn_limits limits;
};

/* ---------- modules ---------- */

/*
 * A module: one shared object, one descriptor. Lists are NULL-terminated and
 * may be NULL. events lists every event type its commands emit (declare them
 * once, in an X-macro list such as the e-commerce module's events.def, and
 * use the names it defines: a typo then fails the build); fn_emit refuses
 * any other type.
 */
struct fn_module {
    int abi;               /* FN_ABI_VERSION */
    const char *name;      /* "ecommerce": letters, digits, '_' and '-' */
    const char *version;   /* the module's own version, e.g. "1.2.0" */
    const char *const *events;
    const struct fn_command *const *commands;
    const struct fn_projection *const *projections;
    const struct fn_query *const *queries;
    const struct fn_reactor *const *reactors;
    const struct fn_timer *const *timers;
};

/* The name of the descriptor's symbol. */
#define FN_MODULE_SYMBOL "cqrsd_module"

/* Defines the module's descriptor, in exactly one file of the module:
 *   FN_MODULE = {.abi = FN_ABI_VERSION, .name = "loyalty", ...};        */
#define FN_MODULE                                                                            \
    extern FN_EXPORT const struct fn_module cqrsd_module;                                   \
    FN_EXPORT const struct fn_module cqrsd_module

#endif
