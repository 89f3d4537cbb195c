/* core/fn.c — the platform's implementation of the function ABI's writing
 * side: strings, the decisions that commands fill and the Redis write batches
 * that projections fill (the reads of queries are core/query.c's).
 * Invariant: every string a batch holds is owned by it; every json_t a
 * decision holds is one reference it owns. */
#include "core/fn_int.h"
#include "core/rm.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *fn_strdup(const char *s)
{
    return xstrdup(s);
}

char *fn_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = NULL;
    if (vasprintf(&p, fmt, ap) < 0) {
        fprintf(stderr, "cqrsd: out of memory formatting a string\n");
        abort();
    }
    va_end(ap);
    return p;
}

void fn_decision_init(struct fn_decision *d, const char *const *events)
{
    memset(d, 0, sizeof *d);
    d->reply = json_object();
    d->events = events;
}

void fn_decision_free(struct fn_decision *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->ev[i].stream_id);
        free(d->ev[i].type);
        json_decref(d->ev[i].data);
    }
    free(d->ev);
    json_decref(d->reply);
    memset(d, 0, sizeof *d);
}

static int declared(const struct fn_decision *d, const char *type)
{
    if (!d->events)
        return 1;
    for (const char *const *t = d->events; *t; t++)
        if (!strcmp(*t, type))
            return 1;
    return 0;
}

static void emit(struct fn_decision *d, const char *stream_id, const char *type, json_t *data)
{
    if (!type || !declared(d, type)) { /* the command then fails (core/cmd.c) */
        if (!d->undeclared[0])
            snprintf(d->undeclared, sizeof d->undeclared, "%s", type ? type : "(null)");
        json_decref(data);
        return;
    }
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 4;
        d->ev = xrealloc(d->ev, d->cap * sizeof *d->ev);
    }
    d->ev[d->n].stream_id = stream_id ? xstrdup(stream_id) : NULL;
    d->ev[d->n].type = xstrdup(type);
    d->ev[d->n].data = data ? data : json_object();
    d->n++;
}

void fn_emit(struct fn_decision *d, const char *type, json_t *data)
{
    emit(d, NULL, type, data);
}

void fn_emit_new_stream(struct fn_decision *d, const char *stream_id, const char *type,
                        json_t *data)
{
    emit(d, stream_id, type, data);
}

void fn_reply_set(struct fn_decision *d, const char *key, json_t *value)
{
    json_object_set_new(d->reply, key, value);
}

/* ---------- batches ---------- */

void fn_batch_init(struct fn_batch *b)
{
    memset(b, 0, sizeof *b);
}

void fn_batch_clear(struct fn_batch *b)
{
    arena_free(&b->arena);
    free(b->argv);
    free(b->prefix);
    fn_batch_init(b);
}

void fn_batch_reset(struct fn_batch *b)
{
    arena_reset(&b->arena);
    b->argc = b->ncmds = 0;
}

static char *bstr(struct fn_batch *b, const char *s)
{
    return arena_strndup(&b->arena, s, strlen(s));
}

/* The argument count of a command, as the batch script reads it. */
static char *count_str(struct fn_batch *b, int argc)
{
    static const char *const N[] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
    if (argc >= 0 && argc < 10)
        return (char *)N[argc]; /* never written: argv's strings are read-only */
    char n[16];
    snprintf(n, sizeof n, "%d", argc);
    return bstr(b, n);
}

void fn_batch_set_prefix_ns(struct fn_batch *b, const char *ns, const char *projection,
                            int version)
{
    free(b->prefix);
    b->prefix = xasprintf("%s%s:v%d:", ns ? ns : "", projection, version);
}

void fn_batch_set_prefix(struct fn_batch *b, const char *projection, int version)
{
    fn_batch_set_prefix_ns(b, NULL, projection, version);
}

void fn_batch_set_keyspace(struct fn_batch *b, const char *projection, int version, long build)
{
    free(b->prefix);
    b->prefix = rm_keyspace(projection, version, build);
}

static void push(struct fn_batch *b, char *s)
{
    if (b->argc == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->argv = xrealloc(b->argv, b->cap * sizeof *b->argv);
    }
    b->argv[b->argc++] = s;
}

void fn_batch_truncate(struct fn_batch *b, size_t argc, size_t ncmds)
{
    b->argc = argc; /* the strings stay in the arena until the batch is cleared */
    b->ncmds = ncmds;
}

void fn_batch_raw(struct fn_batch *b, int argc, const char *const *argv)
{
    push(b, count_str(b, argc));
    for (int i = 0; i < argc; i++)
        push(b, bstr(b, argv[i]));
    b->ncmds++;
}

/* A command on a relative key: argv[1] gets the projection's prefix. */
static void cmd(struct fn_batch *b, int argc, const char *const *argv)
{
    push(b, count_str(b, argc));
    push(b, (char *)argv[0]); /* a literal of the fn_* below */
    size_t pl = b->prefix ? strlen(b->prefix) : 0, kl = strlen(argv[1]);
    char *key = arena_alloc(&b->arena, pl + kl + 1);
    memcpy(key, b->prefix ? b->prefix : "", pl);
    memcpy(key + pl, argv[1], kl + 1);
    push(b, key);
    for (int i = 2; i < argc; i++)
        push(b, bstr(b, argv[i]));
    b->ncmds++;
}

void fn_set(struct fn_batch *b, const char *key, const char *value)
{
    cmd(b, 3, (const char *[]){"SET", key, value});
}

void fn_del(struct fn_batch *b, const char *key)
{
    cmd(b, 2, (const char *[]){"DEL", key});
}

void fn_hset(struct fn_batch *b, const char *key, const char *field, const char *value)
{
    cmd(b, 4, (const char *[]){"HSET", key, field, value});
}

void fn_hsetnx(struct fn_batch *b, const char *key, const char *field, const char *value)
{
    cmd(b, 4, (const char *[]){"HSETNX", key, field, value});
}

void fn_hdel(struct fn_batch *b, const char *key, const char *field)
{
    cmd(b, 3, (const char *[]){"HDEL", key, field});
}

void fn_hincrby(struct fn_batch *b, const char *key, const char *field, int64_t by)
{
    char n[24];
    snprintf(n, sizeof n, "%" PRId64, by);
    cmd(b, 4, (const char *[]){"HINCRBY", key, field, n});
}

void fn_sadd(struct fn_batch *b, const char *key, const char *member)
{
    cmd(b, 3, (const char *[]){"SADD", key, member});
}

void fn_zadd(struct fn_batch *b, const char *key, int64_t score, const char *member)
{
    char n[24];
    snprintf(n, sizeof n, "%" PRId64, score);
    cmd(b, 4, (const char *[]){"ZADD", key, n, member});
}

void fn_zremrangebylex(struct fn_batch *b, const char *key, const char *min, const char *max)
{
    cmd(b, 4, (const char *[]){"ZREMRANGEBYLEX", key, min, max});
}

void fn_zincrby(struct fn_batch *b, const char *key, int64_t by, const char *member)
{
    char n[24];
    snprintf(n, sizeof n, "%" PRId64, by);
    cmd(b, 4, (const char *[]){"ZINCRBY", key, n, member});
}
