/* core/fn_int.h — the platform's side of the function ABI (core/fn.h):
 * the concrete decision, batch and query-context objects. Not for functions. */
#ifndef CQRSD_FN_INT_H
#define CQRSD_FN_INT_H

#include "core/fn.h"

/* One event decide emitted. */
struct fn_emitted {
    char *stream_id; /* NULL: the command's own stream */
    char *type;
    json_t *data;    /* owned reference */
};

struct fn_decision {
    struct fn_emitted *ev;
    size_t n, cap;
    json_t *reply; /* object, owned */
};

void fn_decision_init(struct fn_decision *d);
/* Frees everything the decision holds; it is unusable until fn_decision_init. */
void fn_decision_free(struct fn_decision *d);

/* Redis commands, flattened as Lua ARGV: for each command its argc, then args. */
struct fn_batch {
    char *prefix;       /* "<name>:v<version>:" of the projection applying; owned */
    char **argv;        /* owned strings */
    size_t argc, cap;
    size_t ncmds;
};

void fn_batch_init(struct fn_batch *b);
/* Sets the key prefix for the following writes (copies it). */
void fn_batch_set_prefix(struct fn_batch *b, const char *projection, int version);
/* Appends a raw command whose key (argument 1) is already absolute. */
void fn_batch_raw(struct fn_batch *b, int argc, const char *const *argv);
void fn_batch_clear(struct fn_batch *b);

struct fn_query_ctx {
    redisContext *redis; /* borrowed; may be NULL */
    int redis_failed;    /* set when a fn_redis call found Redis unreachable */
    const char *const *names; /* parameter names, borrowed */
    const char *const *values;
    size_t nparams;
};

/* Looks a projection up by exact name; NULL when unknown. */
const struct fn_projection *fn_projection_find(const char *name);

#endif
