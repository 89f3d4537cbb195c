/* core/query.c — running query functions, and the typed reads of read models
 * they use (core/fn.h: fn_hgetall and the others).
 *
 * A read resolves its projection by name in the query's own generation (so a
 * query reads the version of the read model its module was built with, even
 * while a newer generation rebuilds a newer version beside it), runs one
 * Redis command on the worker's connection, checks every element of the
 * reply, and copies what it returns into the query's arena: no hiredis type
 * crosses the ABI and the function frees nothing.
 *
 * Errors: Redis unreachable, or answering an error other than WRONGTYPE
 * (LOADING, BUSY, OOM), is ERR_UNAVAILABLE and marks the context, so the
 * query is answered 503 whatever it returns; WRONGTYPE or a reply of an
 * unexpected shape is ERR_INTERNAL (a damaged read model).
 */
#include "core/query.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fn_int.h"
#include "core/reg.h"
#include "core/rm.h"

const char *fn_param(const struct fn_query_ctx *q, const char *name)
{
    for (size_t i = 0; i < q->nparams; i++)
        if (!strcmp(q->names[i], name))
            return q->values[i];
    return NULL;
}

static int noted(struct fn_query_ctx *q, int rc, const struct err *e);

/* The full key of projection's relative key, in the arena; NULL and
 * ERR_INVALID for a projection the generation lacks. */
static char *full_key(struct fn_query_ctx *q, const char *projection, const char *key,
                      struct err *e)
{
    const struct reg_projection *p = q->reg ? reg_projection_find(q->reg, projection) : NULL;
    if (!p) {
        noted(q, err_set(e, ERR_INVALID, "no projection \"%.100s\" is loaded", projection), e);
        return NULL;
    }
    size_t idx = (size_t)(p - q->reg->projs);
    q->read |= idx < 64 ? (uint64_t)1 << idx : ~(uint64_t)0;
    /* the scratch namespace of the case runner has no builds */
    const char *ns = q->ns ? q->ns : "";
    /* the live build's refresh is a command of its own on the connection:
     * never while pipelined reads wait for their replies, or it would take
     * the first of them for its own (the cached build serves meanwhile) */
    long build = *ns ? 0
                     : rm_live_build(q->npending ? NULL : q->redis, p->p->name, p->p->version,
                                     p->live);
    char *space = rm_keyspace(p->p->name, p->p->version, build);
    size_t nl = strlen(ns), sl = strlen(space), kl = strlen(key);
    char *out = arena_alloc(&q->arena, nl + sl + kl + 1);
    memcpy(out, ns, nl);
    memcpy(out + nl, space, sl);
    memcpy(out + nl + sl, key, kl + 1);
    free(space);
    return out;
}

#define WANT(type) (1u << (type))

/* Checks reply r of cmd on key (the full key) against want; frees r and sets
 * e when it does not fit. */
static int check(struct fn_query_ctx *q, unsigned want, redisReply *r, struct err *e,
                 const char *cmd, const char *key)
{
    if (!r || q->redis->err) {
        if (r)
            freeReplyObject(r);
        q->redis_failed = 1;
        return err_set(e, ERR_UNAVAILABLE, "the read-model store is unavailable");
    }
    if (r->type == REDIS_REPLY_ERROR) {
        int code = r->str && !strncmp(r->str, "WRONGTYPE", 9) ? ERR_INTERNAL : ERR_UNAVAILABLE;
        err_set(e, code, "redis failed %s on key \"%.200s\": %.200s", cmd, key,
                r->str ? r->str : "");
        if (code == ERR_UNAVAILABLE)
            q->redis_failed = 1;
        freeReplyObject(r);
        return code;
    }
    if (r->type < 0 || r->type >= 32 || !(want & WANT(r->type))) {
        err_set(e, ERR_INTERNAL, "redis answered %s on key \"%.200s\" with a reply of type %d",
                cmd, key, r->type);
        freeReplyObject(r);
        return ERR_INTERNAL;
    }
    return 0;
}

static int unavailable(struct fn_query_ctx *q, struct err *e)
{
    q->redis_failed = 1;
    return err_set(e, ERR_UNAVAILABLE, "the read-model store is unavailable");
}

/* Keeps the first error met inside a pipeline (fn_pipeline_end returns it);
 * returns rc. */
static int noted(struct fn_query_ctx *q, int rc, const struct err *e)
{
    if (rc && q->depth && !q->pipe_err.code)
        q->pipe_err = *e;
    return rc;
}

static int field_cmp(const void *a, const void *b)
{
    const struct fn_field *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    if (c)
        return c;
    return (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

static int is_str(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_STRING && r->str;
}

/* Decodes and frees HGETALL reply r of key k (in the arena) into out. */
static int decode_hash(struct fn_query_ctx *q, redisReply *r, const char *k, struct fn_hash *out,
                       struct err *e)
{
    if (r->elements % 2) {
        freeReplyObject(r);
        return err_set(e, ERR_INTERNAL, "redis answered HGETALL on key \"%.200s\" with %zu elements",
                       k, r->elements);
    }
    size_t n = r->elements / 2;
    struct fn_field *f = arena_alloc(&q->arena, (n ? n : 1) * sizeof *f);
    for (size_t i = 0; i < n; i++) {
        const redisReply *name = r->element[2 * i], *value = r->element[2 * i + 1];
        if (!is_str(name) || !is_str(value)) {
            freeReplyObject(r);
            return err_set(e, ERR_INTERNAL,
                           "redis answered HGETALL on key \"%.200s\" with a non-string element", k);
        }
        f[i] = (struct fn_field){arena_strndup(&q->arena, name->str, name->len),
                                 arena_strndup(&q->arena, value->str, value->len), name->len,
                                 value->len};
    }
    freeReplyObject(r);
    qsort(f, n, sizeof *f, field_cmp);
    out->f = f;
    out->n = n;
    return 0;
}

/* A score as Redis writes it ("12", "-3", "1e+20") into an int64; scores
 * the ABI writes are integers, so anything else is a damaged read model. */
static int parse_score(const redisReply *s, int64_t *out)
{
    if (!is_str(s))
        return -1;
    if (fn_parse_int(s->str, s->len, out) == 0)
        return 0;
    char *end;
    double d = strtod(s->str, &end);
    if (*end || !isfinite(d) || d != floor(d) || d >= 9.2233720368547758e18 ||
        d < -9.2233720368547758e18)
        return -1;
    *out = (int64_t)d;
    return 0;
}

/* Copies and frees a member list (with scores when scores) from r into out. */
static int members(struct fn_query_ctx *q, redisReply *r, int scores, const char *cmd,
                   const char *key, struct fn_members *out, struct err *e)
{
    size_t step = scores ? 2 : 1;
    if (r->elements % step) {
        freeReplyObject(r);
        return err_set(e, ERR_INTERNAL, "redis answered %s on key \"%.200s\" with %zu elements",
                       cmd, key, r->elements);
    }
    size_t n = r->elements / step;
    struct fn_member *m = arena_alloc(&q->arena, (n ? n : 1) * sizeof *m);
    for (size_t i = 0; i < n; i++) {
        const redisReply *mem = r->element[i * step];
        if (!is_str(mem) || (scores && parse_score(r->element[i * step + 1], &m[i].score))) {
            freeReplyObject(r);
            return err_set(e, ERR_INTERNAL,
                           "redis answered %s on key \"%.200s\" with a malformed member or score",
                           cmd, key);
        }
        m[i].member = arena_strndup(&q->arena, mem->str, mem->len);
        m[i].len = mem->len;
    }
    freeReplyObject(r);
    out->m = m;
    out->n = n;
    return 0;
}

/* Decodes reply r of read p into p's output, and frees r. */
static int finish(struct fn_query_ctx *q, const struct fn_pending *p, redisReply *r,
                  struct err *e)
{
    int integer = p->kind == PENDING_COUNT || p->kind == PENDING_EXISTS;
    int rc = check(q, integer ? WANT(REDIS_REPLY_INTEGER) : WANT(REDIS_REPLY_ARRAY), r, e, p->cmd,
                   p->key);
    if (rc)
        return rc;
    switch (p->kind) {
    case PENDING_HASH: return decode_hash(q, r, p->key, p->out, e);
    case PENDING_MEMBERS: return members(q, r, 0, p->cmd, p->key, p->out, e);
    case PENDING_SCORED: return members(q, r, 1, p->cmd, p->key, p->out, e);
    case PENDING_VALUES: {
        const char **values = p->out;
        for (size_t i = 0; i < p->n; i++) {
            const redisReply *v = i < r->elements ? r->element[i] : NULL;
            values[i] = is_str(v) ? arena_strndup(&q->arena, v->str, v->len) : NULL;
        }
        break;
    }
    case PENDING_COUNT: *(int64_t *)p->out = (int64_t)r->integer; break;
    case PENDING_EXISTS: *(int *)p->out = r->integer > 0; break;
    }
    freeReplyObject(r);
    return 0;
}

/* Sends read p (argv: the command, argv[1] its full key): in a pipeline it
 * is queued and its reply read by fn_pipeline_end; else it runs now. */
static int issue(struct fn_query_ctx *q, const struct fn_pending *p, int argc, const char **argv,
                 struct err *e)
{
    if (!q->redis || q->redis->err)
        return noted(q, unavailable(q, e), e);
    if (!q->depth)
        return finish(q, p, redisCommandArgv(q->redis, argc, argv, NULL), e);
    if (redisAppendCommandArgv(q->redis, argc, argv, NULL) != REDIS_OK)
        return noted(q, unavailable(q, e), e);
    if (q->npending == q->cap_pending) {
        q->cap_pending = q->cap_pending ? 2 * q->cap_pending : 8;
        q->pending = xrealloc(q->pending, q->cap_pending * sizeof *q->pending);
    }
    q->pending[q->npending++] = *p;
    return 0;
}

void fn_pipeline_begin(struct fn_query_ctx *q)
{
    q->depth++;
}

/* Reads the replies of the queued reads: decoded into their outputs, or
 * (discard) only freed, for a query that returned with a pipeline open,
 * whose outputs may be gone. Returns the first error met. */
static int pipeline_read(struct fn_query_ctx *q, int discard, struct err *e)
{
    int rc = q->pipe_err.code;
    if (rc)
        *e = q->pipe_err;
    q->pipe_err = (struct err){0};
    for (size_t i = 0; i < q->npending; i++) {
        void *v = NULL;
        if (!q->redis || redisGetReply(q->redis, &v) != REDIS_OK) {
            /* the connection is broken (hiredis marks it): nothing more to read */
            if (!rc)
                rc = unavailable(q, e);
            break;
        }
        if (rc || discard)
            freeReplyObject(v);
        else
            rc = finish(q, &q->pending[i], v, e);
    }
    q->npending = 0;
    return rc;
}

int fn_pipeline_end(struct fn_query_ctx *q, struct err *e)
{
    if (q->depth == 0)
        return err_set(e, ERR_INTERNAL, "fn_pipeline_end without fn_pipeline_begin");
    if (--q->depth)
        return 0;
    return pipeline_read(q, 0, e);
}

int fn_hgetall(struct fn_query_ctx *q, const char *projection, const char *key,
               struct fn_hash *out, struct err *e)
{
    return fn_hgetall_many(q, projection, &key, 1, out, e);
}

int fn_hgetall_many(struct fn_query_ctx *q, const char *projection, const char *const *keys,
                    size_t n, struct fn_hash *out, struct err *e)
{
    memset(out, 0, n * sizeof *out);
    for (size_t i = 0; i < n; i++)
        if (!(out[i].key = full_key(q, projection, keys[i], e)))
            return ERR_INVALID;
    if (n == 1) /* one read: no pipeline needed */
        return issue(q, &(struct fn_pending){PENDING_HASH, "HGETALL", out[0].key, out, 0}, 2,
                     (const char *[]){"HGETALL", out[0].key}, e);
    fn_pipeline_begin(q);
    for (size_t i = 0; i < n; i++)
        if (issue(q, &(struct fn_pending){PENDING_HASH, "HGETALL", out[i].key, &out[i], 0}, 2,
                  (const char *[]){"HGETALL", out[i].key}, e))
            break;
    return fn_pipeline_end(q, e);
}

const char *fn_hash_get(const struct fn_hash *h, const char *field)
{
    if (!h->n)
        return NULL;
    struct fn_field k = {.name = field, .name_len = strlen(field)};
    const struct fn_field *hit = bsearch(&k, h->f, h->n, sizeof *h->f, field_cmp);
    return hit ? hit->value : NULL;
}

int fn_parse_int(const char *s, size_t len, int64_t *out)
{
    if (!s || len == 0 || len > 20 || strlen(s) != len)
        return -1;
    const char *d = s[0] == '-' ? s + 1 : s;
    if (*d < '0' || *d > '9')
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end != s + len)
        return -1;
    *out = (int64_t)v;
    return 0;
}

int fn_hash_int(const struct fn_hash *h, const char *field, int64_t *out, struct err *e)
{
    const char *v = fn_hash_get(h, field);
    *out = 0;
    if (!v)
        return 0;
    if (fn_parse_int(v, strlen(v), out))
        return err_set(e, ERR_INTERNAL,
                       "read model key \"%.200s\" field \"%.100s\" holds \"%.40s\", not an integer",
                       h->key ? h->key : "", field, v);
    return 0;
}

int fn_hmget(struct fn_query_ctx *q, const char *projection, const char *key, size_t n,
             const char *const *fields, const char **values, struct err *e)
{
    for (size_t i = 0; i < n; i++)
        values[i] = NULL;
    char *k = full_key(q, projection, key, e);
    if (!k)
        return ERR_INVALID;
    if (n == 0)
        return 0;
    const char **argv = xmalloc((n + 2) * sizeof *argv);
    argv[0] = "HMGET";
    argv[1] = k;
    for (size_t i = 0; i < n; i++)
        argv[i + 2] = fields[i];
    int rc = issue(q, &(struct fn_pending){PENDING_VALUES, "HMGET", k, values, n}, (int)n + 2,
                   argv, e);
    free(argv);
    return rc;
}

int fn_zrange(struct fn_query_ctx *q, const char *projection, const char *key, int64_t start,
              int64_t stop, int flags, struct fn_members *out, struct err *e)
{
    memset(out, 0, sizeof *out);
    char *k = full_key(q, projection, key, e);
    if (!k)
        return ERR_INVALID;
    char a[24], b[24];
    snprintf(a, sizeof a, "%" PRId64, start);
    snprintf(b, sizeof b, "%" PRId64, stop);
    const char *cmd = flags & FN_DESC ? "ZREVRANGE" : "ZRANGE";
    int scores = flags & FN_SCORES;
    return issue(q,
                 &(struct fn_pending){scores ? PENDING_SCORED : PENDING_MEMBERS, cmd, k, out, 0},
                 scores ? 5 : 4, (const char *[]){cmd, k, a, b, "WITHSCORES"}, e);
}

int fn_zrangebyscore(struct fn_query_ctx *q, const char *projection, const char *key,
                     int64_t min, int64_t max, int64_t offset, int64_t count,
                     struct fn_members *out, struct err *e)
{
    memset(out, 0, sizeof *out);
    char *k = full_key(q, projection, key, e);
    if (!k)
        return ERR_INVALID;
    char lo[24], hi[24], off[24], cnt[24];
    snprintf(lo, sizeof lo, "%" PRId64, min);
    snprintf(hi, sizeof hi, "%" PRId64, max);
    snprintf(off, sizeof off, "%" PRId64, offset);
    snprintf(cnt, sizeof cnt, "%" PRId64, count);
    return issue(q, &(struct fn_pending){PENDING_SCORED, "ZRANGEBYSCORE", k, out, 0}, 8,
                 (const char *[]){"ZRANGEBYSCORE", k, lo, hi, "WITHSCORES", "LIMIT", off, cnt},
                 e);
}

int fn_smembers(struct fn_query_ctx *q, const char *projection, const char *key,
                struct fn_members *out, struct err *e)
{
    memset(out, 0, sizeof *out);
    char *k = full_key(q, projection, key, e);
    if (!k)
        return ERR_INVALID;
    return issue(q, &(struct fn_pending){PENDING_MEMBERS, "SMEMBERS", k, out, 0}, 2,
                 (const char *[]){"SMEMBERS", k}, e);
}

/* An integer-replying command on one key, into *out (int64_t, or int for
 * EXISTS). */
static int count(struct fn_query_ctx *q, const char *cmd, const char *projection,
                 const char *key, void *out, struct err *e)
{
    char *k = full_key(q, projection, key, e);
    if (!k)
        return ERR_INVALID;
    enum fn_pending_kind kind = strcmp(cmd, "EXISTS") ? PENDING_COUNT : PENDING_EXISTS;
    return issue(q, &(struct fn_pending){kind, cmd, k, out, 0}, 2, (const char *[]){cmd, k}, e);
}

int fn_zcard(struct fn_query_ctx *q, const char *projection, const char *key, int64_t *n,
             struct err *e)
{
    *n = 0;
    return count(q, "ZCARD", projection, key, n, e);
}

int fn_scard(struct fn_query_ctx *q, const char *projection, const char *key, int64_t *n,
             struct err *e)
{
    *n = 0;
    return count(q, "SCARD", projection, key, n, e);
}

int fn_exists(struct fn_query_ctx *q, const char *projection, const char *key, int *exists,
              struct err *e)
{
    *exists = 0;
    return count(q, "EXISTS", projection, key, exists, e);
}

/* ---------- running a query ---------- */

int query_call(const struct reg *reg, const struct fn_query *fq, redisContext *rc, const char *ns,
               const char *const *names, const char *const *values, size_t n, json_t **out,
               uint64_t *read, struct err *e)
{
    struct fn_query_ctx q = {.redis = rc,
                             .names = names,
                             .values = values,
                             .nparams = n,
                             .reg = reg,
                             .ns = ns ? ns : ""};
    *out = NULL;
    err_clear(e);
    int code = fq->run(&q, out, e);
    if (q.npending) {
        /* returned with a pipeline open (on an error, most likely): its
         * replies are read and dropped, so the connection stays in step for
         * the next query; the outputs they were for may be gone */
        struct err de = {0};
        pipeline_read(&q, 1, &de);
    }
    free(q.pending);
    arena_free(&q.arena);
    if (read)
        *read = q.read;
    if (q.redis_failed) {
        json_decref(*out);
        *out = NULL;
        return err_set(e, ERR_UNAVAILABLE, "the read-model store is unavailable");
    }
    if (code) {
        json_decref(*out);
        *out = NULL;
        if (!e->code)
            err_set(e, code, "query %s failed without a message", fq->name);
        return code;
    }
    if (!*out)
        *out = json_object();
    return 0;
}
