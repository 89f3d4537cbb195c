/* core/fn_int.h — the platform's side of the function ABI (core/fn.h):
 * the concrete decision, batch and query-context objects. Not for functions. */
#ifndef CQRSD_FN_INT_H
#define CQRSD_FN_INT_H

#include <hiredis/hiredis.h>

#include "core/es.h"
#include "core/fn.h"
#include "core/util.h"

struct reg;

/* A stored event as functions see it (every string borrowed from ev). */
static inline struct fn_event fn_event_of(const struct es_event *ev)
{
    return (struct fn_event){.stream_id = ev->stream_id,
                             .version = ev->version,
                             .type = ev->type,
                             .data = ev->data,
                             .position = ev->position,
                             .recorded_at = ev->recorded_at,
                             .event_id = ev->event_id};
}

/* One event decide emitted. */
struct fn_emitted {
    char *stream_id; /* NULL: the command's own stream */
    char *type;
    json_t *data;    /* owned reference */
};

struct fn_decision {
    struct fn_emitted *ev;
    size_t n, cap;
    json_t *reply;              /* object, owned */
    const char *const *events;  /* the module's declared event types (borrowed); NULL: any */
    char undeclared[64];        /* the first type emitted that events lacks; "" if none */
};

/* events: the declared types fn_emit accepts (NULL: any). */
void fn_decision_init(struct fn_decision *d, const char *const *events);
/* Frees everything the decision holds; it is unusable until fn_decision_init. */
void fn_decision_free(struct fn_decision *d);

/* Redis commands, flattened as Lua ARGV: for each command its argc, then args. */
struct fn_batch {
    char *prefix;       /* "<name>:v<version>:" of the projection applying; owned */
    char **argv;        /* strings in arena (or static) */
    size_t argc, cap;
    size_t ncmds;
    struct arena arena; /* the strings of argv */
};

void fn_batch_init(struct fn_batch *b);
/* Sets the key prefix for the following writes (copies it):
 * "<projection>:v<version>:", after ns when fn_batch_set_prefix_ns is given
 * one (the case runner's scratch keys). */
void fn_batch_set_prefix(struct fn_batch *b, const char *projection, int version);
void fn_batch_set_prefix_ns(struct fn_batch *b, const char *ns, const char *projection,
                            int version);
/* The same for one build of the projection version's keyspace (core/rm.h:
 * "<projection>:v<version>@<build>:", build 0 as above). */
void fn_batch_set_keyspace(struct fn_batch *b, const char *projection, int version, long build);
/* Appends a raw command whose key (argument 1) is already absolute. */
void fn_batch_raw(struct fn_batch *b, int argc, const char *const *argv);
/* Drops the commands from the n-th on (n <= b->ncmds): a failed handler's. */
void fn_batch_truncate(struct fn_batch *b, size_t argc, size_t ncmds);
void fn_batch_clear(struct fn_batch *b);
/* Empties b for the next event, keeping its prefix and its memory. */
void fn_batch_reset(struct fn_batch *b);

/* A read sent in a pipeline, waiting for its reply (core/query.c). */
enum fn_pending_kind {
    PENDING_HASH,    /* HGETALL into struct fn_hash */
    PENDING_VALUES,  /* HMGET into const char *[n] */
    PENDING_MEMBERS, /* ZRANGE, ZREVRANGE, SMEMBERS into struct fn_members */
    PENDING_SCORED,  /* the same WITHSCORES */
    PENDING_COUNT,   /* ZCARD, SCARD into int64_t */
    PENDING_EXISTS,  /* EXISTS into int */
};
struct fn_pending {
    enum fn_pending_kind kind;
    const char *cmd; /* static */
    const char *key; /* the full key, in the arena */
    void *out;       /* the caller's */
    size_t n;        /* PENDING_VALUES: how many */
};

struct fn_query_ctx {
    redisContext *redis; /* borrowed; may be NULL */
    int redis_failed;    /* set when a read found Redis unreachable */
    const char *const *names; /* parameter names, borrowed */
    const char *const *values;
    size_t nparams;
    const struct reg *reg; /* the generation whose projections are read; borrowed */
    const char *ns;        /* put before every key read ("" for the read models) */
    struct arena arena;    /* what the reads return; freed after the query */
    uint64_t read;         /* bit i: it read projection i of reg (all bits past 63) */
    int depth;             /* fn_pipeline_begin calls not ended yet */
    struct fn_pending *pending; /* reads sent in the pipeline, in order; owned */
    size_t npending, cap_pending;
    struct err pipe_err;   /* the first error met in the pipeline */
};

#endif
