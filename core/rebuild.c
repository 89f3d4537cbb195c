/* core/rebuild.c — blue/green rebuilds (see rebuild.h).
 *
 * The model is a hash table of keys (open addressing, linear probing, FNV-1a:
 * util_fnv1a), each key an object of one Redis type holding its entries in
 * an array, with an index of its own (open addressing again) once it has
 * more than OBJ_SMALL entries: most read-model keys hold a handful of
 * fields, where a scan beats hashing.
 */
#include "core/rebuild.h"

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/es.h"
#include "core/fn_int.h"
#include "core/park.h"
#include "core/proj.h"
#include "core/reg.h"
#include "core/rm.h"
#include "core/rtime.h"
#include "core/util.h"

/* ---------- the model ---------- */

enum { T_NONE, T_STRING, T_HASH, T_SET, T_ZSET };

static const char *const TYPE_NAME[] = {"none", "string", "hash", "set", "zset"};

#define OBJ_SMALL 8
#define INT_LIMIT ((__int128)1 << 62) /* the batch script's bound on HINCRBY results */

struct ent {
    char *name;   /* field or member; NULL: removed */
    char *s;      /* hash: the value as written; NULL when is_int */
    int64_t i;    /* hash: the value, when is_int */
    double score; /* zset */
    uint32_t h;
    uint8_t is_int;
};

struct obj {
    char *key;
    uint64_t h;
    uint8_t type; /* T_NONE: holds nothing (never written, deleted or emptied) */
    char *str;    /* T_STRING's value */
    struct ent *e;
    uint32_t n, cap, live; /* entries used (removed ones too), allocated, not removed */
    uint32_t *idx;         /* index + 1 of entries, by h; 0: free. NULL while small */
    uint32_t idx_cap;
};

struct model {
    struct obj **slot;
    size_t cap, n;
    long long entries; /* live fields and members */
    size_t bytes;      /* about what it holds, malloc's overhead included (never less) */
};

/* What malloc takes for n bytes, about: its 16-byte header and rounding. */
#define HEAP(n) (((size_t)(n) + 8 + 15) / 16 * 16)

static uint32_t hash32(const char *s)
{
    uint64_t h = util_fnv1a(s);
    return (uint32_t)(h ^ (h >> 32));
}

static void obj_index(struct obj *o)
{
    free(o->idx);
    o->idx_cap = 16;
    while (o->idx_cap < 2 * o->cap)
        o->idx_cap *= 2;
    o->idx = xcalloc(o->idx_cap, sizeof *o->idx);
    for (uint32_t j = 0; j < o->n; j++) {
        if (!o->e[j].name)
            continue;
        uint32_t k = o->e[j].h & (o->idx_cap - 1);
        while (o->idx[k])
            k = (k + 1) & (o->idx_cap - 1);
        o->idx[k] = j + 1;
    }
}

static struct ent *obj_find(const struct obj *o, const char *name, uint32_t h)
{
    if (!o->idx) {
        for (uint32_t j = 0; j < o->n; j++)
            if (o->e[j].h == h && o->e[j].name && !strcmp(o->e[j].name, name))
                return &o->e[j];
        return NULL;
    }
    for (uint32_t k = h & (o->idx_cap - 1); o->idx[k]; k = (k + 1) & (o->idx_cap - 1)) {
        struct ent *x = &o->e[o->idx[k] - 1];
        if (x->h == h && x->name && !strcmp(x->name, name))
            return x;
    }
    return NULL;
}

static void ent_free(struct ent *x)
{
    free(x->name);
    free(x->s);
    x->name = x->s = NULL;
}

/* Drops the removed entries once they outnumber the others. */
static void obj_compact(struct obj *o)
{
    if (o->n - o->live <= OBJ_SMALL || o->n - o->live <= o->live)
        return;
    uint32_t k = 0;
    for (uint32_t j = 0; j < o->n; j++)
        if (o->e[j].name)
            o->e[k++] = o->e[j];
    o->n = k;
    if (o->idx)
        obj_index(o);
}

static struct ent *obj_add(struct model *m, struct obj *o, const char *name, uint32_t h)
{
    if (o->n == o->cap) {
        o->cap = o->cap ? 2 * o->cap : 4;
        o->e = xrealloc(o->e, o->cap * sizeof *o->e);
    }
    struct ent *x = &o->e[o->n++];
    *x = (struct ent){.name = xstrdup(name), .h = h};
    m->bytes += sizeof *x + HEAP(strlen(name) + 1);
    o->live++;
    m->entries++;
    if (o->idx && 2 * o->n <= o->idx_cap) {
        uint32_t k = h & (o->idx_cap - 1);
        while (o->idx[k])
            k = (k + 1) & (o->idx_cap - 1);
        o->idx[k] = o->n;
    } else if (o->n > OBJ_SMALL) {
        obj_index(o);
    }
    return x;
}

static void obj_remove(struct model *m, struct obj *o, struct ent *x)
{
    ent_free(x);
    o->live--;
    m->entries--;
    if (o->live == 0) { /* Redis drops an emptied hash, set or sorted set */
        o->n = 0;
        o->type = T_NONE;
        free(o->idx);
        o->idx = NULL;
        return;
    }
    obj_compact(o);
}

static void obj_clear(struct model *m, struct obj *o)
{
    for (uint32_t j = 0; j < o->n; j++)
        if (o->e[j].name)
            ent_free(&o->e[j]);
    m->entries -= o->live;
    o->n = o->live = 0;
    free(o->str);
    o->str = NULL;
    o->type = T_NONE;
    if (o->idx) {
        free(o->idx);
        o->idx = NULL;
    }
}

/* The object of key (h: util_fnv1a(key)); created when missing and create. */
static struct obj *model_get(struct model *m, const char *key, uint64_t h, int create)
{
    if (m->cap) {
        for (size_t k = h & (m->cap - 1); m->slot[k]; k = (k + 1) & (m->cap - 1))
            if (m->slot[k]->h == h && !strcmp(m->slot[k]->key, key))
                return m->slot[k];
    }
    if (!create)
        return NULL;
    if (2 * (m->n + 1) > m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 1024;
        struct obj **slot = xcalloc(cap, sizeof *slot);
        m->bytes += (cap - m->cap) * sizeof *slot;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->slot[i])
                continue;
            size_t k = m->slot[i]->h & (cap - 1);
            while (slot[k])
                k = (k + 1) & (cap - 1);
            slot[k] = m->slot[i];
        }
        free(m->slot);
        m->slot = slot;
        m->cap = cap;
    }
    struct obj *o = xcalloc(1, sizeof *o);
    o->key = xstrdup(key);
    m->bytes += HEAP(sizeof *o) + HEAP(strlen(key) + 1);
    o->h = h;
    size_t k = h & (m->cap - 1);
    while (m->slot[k])
        k = (k + 1) & (m->cap - 1);
    m->slot[k] = o;
    m->n++;
    return o;
}

static void model_free(struct model *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        struct obj *o = m->slot[i];
        if (!o)
            continue;
        obj_clear(m, o);
        free(o->e);
        free(o->key);
        free(o);
    }
    free(m->slot);
    *m = (struct model){0};
}

/* ---------- the batch script's checks, and the writes ---------- */

/* Redis's string2ll: "0", or an optional '-' and digits without a leading
 * zero, within int64. */
static int strict_int(const char *s, int64_t *v)
{
    if (!strcmp(s, "0")) {
        *v = 0;
        return 1;
    }
    const char *p = s + (*s == '-');
    if (*p < '1' || *p > '9')
        return 0;
    __int128 x = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return 0;
        x = 10 * x + (*p - '0');
        if (x > (__int128)INT64_MAX + 1)
            return 0;
    }
    x = *s == '-' ? -x : x;
    if (x > INT64_MAX)
        return 0;
    *v = (int64_t)x;
    return 1;
}

/* A ZREMRANGEBYLEX bound: "-", "+", "[member" or "(member". */
static int lex_bound_ok(const char *s)
{
    return !strcmp(s, "-") || !strcmp(s, "+") || *s == '[' || *s == '(';
}

static int lex_above_min(const char *m, const char *min)
{
    if (!strcmp(min, "-"))
        return 1;
    if (!strcmp(min, "+"))
        return 0;
    int c = strcmp(m, min + 1);
    return *min == '[' ? c >= 0 : c > 0;
}

static int lex_below_max(const char *m, const char *max)
{
    if (!strcmp(max, "+"))
        return 1;
    if (!strcmp(max, "-"))
        return 0;
    int c = strcmp(m, max + 1);
    return *max == '[' ? c <= 0 : c < 0;
}

/* The writes a batch holds (core/fn.c), and their key types. */
enum op { OP_DEL, OP_SET, OP_HSET, OP_HSETNX, OP_HDEL, OP_HINCRBY, OP_SADD, OP_ZADD, OP_ZINCRBY,
          OP_ZREMRANGEBYLEX, OP_OTHER };

static const struct {
    const char *name;
    int type;
} OPS[] = {{"DEL", T_NONE},    {"SET", T_STRING},      {"HSET", T_HASH},  {"HSETNX", T_HASH},
           {"HDEL", T_HASH},   {"HINCRBY", T_HASH},    {"SADD", T_SET},   {"ZADD", T_ZSET},
           {"ZINCRBY", T_ZSET}, {"ZREMRANGEBYLEX", T_ZSET}};

/* The arguments each op needs, its name and key included. */
static const int OP_ARGC[] = {2, 3, 4, 4, 3, 4, 3, 4, 4, 4};

static enum op op_of(const char *cmd)
{
    for (int i = 0; i < OP_OTHER; i++)
        if (!strcmp(OPS[i].name, cmd))
            return (enum op)i;
    return OP_OTHER;
}

/* One command of a batch: argv[0] the command, argv[1] the key. */
struct bcmd {
    enum op op;
    int argc;
    char **argv;
    uint64_t kh; /* util_fnv1a of the key */
    uint32_t fh; /* hash32 of the field of a hash write */
    struct obj *o; /* the key's object when check_event found one (objects never move) */
};

/* The commands of b. */
static size_t batch_cmds(const struct fn_batch *b, struct bcmd *out, size_t max)
{
    size_t n = 0, a = 0;
    while (a < b->argc && n < max) {
        int c = atoi(b->argv[a]);
        out[n] = (struct bcmd){c > 0 ? op_of(b->argv[a + 1]) : OP_OTHER, c, b->argv + a + 1, 0, 0,
                               NULL};
        if (out[n].op != OP_OTHER && c != OP_ARGC[out[n].op])
            out[n].op = OP_OTHER; /* not as core/fn.c writes it */
        if (c > 1)
            out[n].kh = util_fnv1a(out[n].argv[1]);
        if (out[n].op != OP_OTHER && OPS[out[n].op].type == T_HASH)
            out[n].fh = hash32(out[n].argv[2]);
        n++;
        a += (size_t)c + 1;
    }
    return n;
}

/* The check state of one key, or of one hash field, within one event. */
struct ck_key {
    const char *key;
    uint64_t h;
    struct obj *o; /* in the model before the event; NULL: absent */
    int type, deleted;
};
struct ck_field {
    const char *key, *field;
    uint64_t kh;
    uint32_t fh;
    int state; /* 0 absent, 1 an integer (v), 2 not an integer */
    int64_t v;
};

static int ent_int(const struct ent *x, int64_t *v)
{
    if (x->is_int) {
        *v = x->i;
        return 1;
    }
    return strict_int(x->s ? x->s : "", v);
}

/*
 * The batch script's checks (core/rm.c) for one event's n commands against
 * the model, without writing: 0, or -1 and why. Like the script, a key's
 * type within the event is the one its last write gave it. Sets each
 * command's o (its key's object, for apply_cmd).
 */
#define CK_STACK 32
static int check_event(struct model *m, struct bcmd *c, size_t n, char *why, size_t wl)
{
    struct ck_key ks_stack[CK_STACK];
    struct ck_field fs_stack[CK_STACK];
    struct ck_key *ks = n <= CK_STACK ? ks_stack : xcalloc(n, sizeof *ks);
    struct ck_field *fs = n <= CK_STACK ? fs_stack : xcalloc(n, sizeof *fs);
    size_t nk = 0, nf = 0;
    int bad = 0;
    for (size_t i = 0; i < n && !bad; i++) {
        const char *cmd = c[i].argv[0], *key = c[i].argc > 1 ? c[i].argv[1] : "";
        enum op op = c[i].op;
        struct ck_key *k = NULL;
        for (size_t j = 0; j < nk && !k; j++)
            if (ks[j].h == c[i].kh && !strcmp(ks[j].key, key))
                k = &ks[j];
        if (!k) {
            struct obj *o = model_get(m, key, c[i].kh, 0);
            k = &ks[nk++];
            *k = (struct ck_key){key, c[i].kh, o, o ? o->type : T_NONE, 0};
        }
        c[i].o = k->o;
        if (op == OP_DEL) {
            k->type = T_NONE;
            k->deleted = 1;
            for (size_t j = 0; j < nf; j++)
                if (fs[j].kh == c[i].kh && !strcmp(fs[j].key, key))
                    fs[j].state = 0;
            continue;
        }
        if (op == OP_OTHER) {
            snprintf(why, wl, "REFUSED command %s is not a projection write", cmd);
            bad = 1;
            break;
        }
        int t = OPS[op].type;
        if (k->type != T_NONE && k->type != t) {
            snprintf(why, wl, "REFUSED %s on %s, a %s", cmd, key, TYPE_NAME[k->type]);
            bad = 1;
            break;
        }
        k->type = t;
        if (op == OP_ZREMRANGEBYLEX &&
            (!lex_bound_ok(c[i].argv[2]) || !lex_bound_ok(c[i].argv[3]))) {
            snprintf(why, wl, "REFUSED ZREMRANGEBYLEX on %s, a bound is not - + [x or (x", key);
            bad = 1;
            break;
        }
        if (t != T_HASH)
            continue;
        const char *field = c[i].argv[2];
        struct ck_field *f = NULL;
        for (size_t j = 0; j < nf && !f; j++)
            if (fs[j].fh == c[i].fh && fs[j].kh == c[i].kh && !strcmp(fs[j].key, key) &&
                !strcmp(fs[j].field, field))
                f = &fs[j];
        if (!f) {
            f = &fs[nf++];
            *f = (struct ck_field){key, field, c[i].kh, c[i].fh, 0, 0};
            const struct obj *o = k->deleted ? NULL : k->o;
            const struct ent *x = o && o->type == T_HASH ? obj_find(o, field, c[i].fh) : NULL;
            if (x)
                f->state = ent_int(x, &f->v) ? 1 : 2;
        }
        if (op == OP_HINCRBY) {
            int64_t by = 0;
            strict_int(c[i].argv[3], &by);
            if (f->state == 2) {
                snprintf(why, wl, "REFUSED HINCRBY on %s %s, not an integer", key, field);
                bad = 1;
                break;
            }
            __int128 v = (__int128)(f->state ? f->v : 0) + by;
            if (v >= INT_LIMIT || v <= -INT_LIMIT) {
                snprintf(why, wl, "REFUSED HINCRBY on %s %s would pass 2^62", key, field);
                bad = 1;
                break;
            }
            f->state = 1;
            f->v = (int64_t)v;
        } else if (op == OP_HSET || (op == OP_HSETNX && f->state == 0)) {
            f->state = strict_int(c[i].argv[3], &f->v) ? 1 : 2;
        } else if (op == OP_HDEL) {
            f->state = 0;
        }
    }
    if (ks != ks_stack)
        free(ks);
    if (fs != fs_stack)
        free(fs);
    return bad ? -1 : 0;
}

static struct ent *field_of(struct model *m, struct obj *o, const char *name, uint32_t h)
{
    struct ent *x = obj_find(o, name, h);
    return x ? x : obj_add(m, o, name, h);
}

/* Applies one checked command to the model, as Redis would. */
static void apply_cmd(struct model *m, const struct bcmd *c)
{
    char *const *a = c->argv;
    struct obj *o = c->o ? c->o : model_get(m, a[1], c->kh, 1);
    if (c->op == OP_DEL) {
        obj_clear(m, o);
        return;
    }
    if (o->type == T_NONE)
        o->type = (uint8_t)OPS[c->op].type;
    struct ent *x;
    int64_t cur = 0, by = 0;
    switch (c->op) {
    case OP_SET:
        free(o->str);
        o->str = xstrdup(a[2]);
        break;
    case OP_HSET:
    case OP_HSETNX:
        x = obj_find(o, a[2], c->fh);
        if (x && c->op == OP_HSETNX)
            break;
        if (!x)
            x = obj_add(m, o, a[2], c->fh);
        free(x->s);
        x->s = xstrdup(a[3]);
        m->bytes += HEAP(strlen(a[3]) + 1); /* the value it replaced is not taken off */
        x->is_int = 0;
        break;
    case OP_HDEL:
        if ((x = obj_find(o, a[2], c->fh)))
            obj_remove(m, o, x);
        break;
    case OP_HINCRBY:
        x = field_of(m, o, a[2], c->fh);
        if (x->s || x->is_int)
            ent_int(x, &cur);
        strict_int(a[3], &by);
        free(x->s);
        x->s = NULL;
        x->i = cur + by;
        x->is_int = 1;
        break;
    case OP_SADD:
        field_of(m, o, a[2], hash32(a[2]));
        break;
    case OP_ZADD:
        field_of(m, o, a[3], hash32(a[3]))->score = strtod(a[2], NULL);
        break;
    case OP_ZINCRBY:
        field_of(m, o, a[3], hash32(a[3]))->score += strtod(a[2], NULL);
        break;
    case OP_ZREMRANGEBYLEX:
        for (uint32_t j = 0; j < o->n && o->type == T_ZSET; j++) {
            x = &o->e[j];
            if (x->name && lex_above_min(x->name, a[2]) && lex_below_max(x->name, a[3])) {
                uint32_t n0 = o->n;
                obj_remove(m, o, x);
                if (o->n != n0)
                    j = (uint32_t)-1; /* compacted or emptied: the entries moved */
            }
        }
        break;
    default:
        break;
    }
    if (o->live == 0 && o->type != T_STRING)
        o->type = T_NONE; /* a write that left nothing (HDEL, ZREMRANGEBYLEX on nothing) */
}

/* ---------- writing the model ---------- */

#define WRITE_FIELDS 512 /* fields or members per command */
#define WRITE_PIPELINE 256 /* commands per round trip */

struct writer {
    redisContext *rc;
    int pending;
    struct err *e;
    int failed;
};

static int writer_drain(struct writer *w)
{
    for (; w->pending > 0; w->pending--) {
        redisReply *r = NULL;
        if (redisGetReply(w->rc, (void **)&r) != REDIS_OK || !r) {
            if (!w->failed)
                err_set(w->e, ERR_UNAVAILABLE, "could not write the new build: %s",
                        w->rc->err ? w->rc->errstr : "no reply from Redis");
            w->failed = 1;
            return -1;
        }
        if (r->type == REDIS_REPLY_ERROR && !w->failed) {
            err_set(w->e, ERR_INTERNAL, "Redis refused a write of the new build: %s", r->str);
            w->failed = 1;
        }
        freeReplyObject(r);
    }
    return w->failed ? -1 : 0;
}

static int writer_send(struct writer *w, int argc, const char **argv, const size_t *lens)
{
    if (redisAppendCommandArgv(w->rc, argc, argv, lens) != REDIS_OK)
        return err_set(w->e, ERR_UNAVAILABLE, "could not write the new build: out of memory");
    if (++w->pending >= WRITE_PIPELINE)
        return writer_drain(w);
    return 0;
}

/* Writes o with one command per WRITE_FIELDS entries. */
static int write_obj(struct writer *w, const struct obj *o)
{
    const char *argv[2 + 2 * WRITE_FIELDS];
    size_t lens[2 + 2 * WRITE_FIELDS];
    char nums[WRITE_FIELDS][32];
    static const char *const CMD[] = {NULL, "SET", "HSET", "SADD", "ZADD"};
    argv[0] = CMD[o->type];
    argv[1] = o->key;
    if (o->type == T_STRING) {
        argv[2] = o->str;
        for (int i = 0; i < 3; i++)
            lens[i] = strlen(argv[i]);
        return writer_send(w, 3, argv, lens);
    }
    uint32_t j = 0;
    while (j < o->n) {
        int argc = 2, k = 0;
        for (; j < o->n && k < WRITE_FIELDS; j++) {
            const struct ent *x = &o->e[j];
            if (!x->name)
                continue;
            if (o->type == T_ZSET) {
                snprintf(nums[k], sizeof nums[k], "%.17g", x->score);
                argv[argc++] = nums[k];
            }
            argv[argc++] = x->name;
            if (o->type == T_HASH) {
                if (x->is_int)
                    snprintf(nums[k], sizeof nums[k], "%" PRId64, x->i);
                argv[argc++] = x->is_int ? nums[k] : x->s;
            }
            k++;
        }
        if (k == 0)
            break;
        for (int i = 0; i < argc; i++)
            lens[i] = strlen(argv[i]);
        if (writer_send(w, argc, argv, lens))
            return -1;
    }
    return 0;
}

/* ---------- the rebuild ---------- */

const char *rebuild_phase_name(enum rebuild_phase p)
{
    static const char *const N[] = {"folding", "writing", "catching up", "switched", "done"};
    return p <= REBUILD_DONE ? N[p] : "?";
}

/* One chosen projection. */
struct job {
    const struct reg_projection *rp;
    long live, build; /* the build serving, the one being built */
    int locked, switched;
};

int rebuild_lock_objid(const char *projection, int version)
{
    char *name = xasprintf("%s:v%d", projection, version);
    int objid = (int)(util_fnv1a(name) & 0x7fffffff);
    free(name);
    return objid;
}

static int lock_job(PGconn *pg, struct job *j, int take, struct err *e)
{
    char cls[16], obj[16];
    snprintf(cls, sizeof cls, "%d", REBUILD_LOCK_CLASS);
    snprintf(obj, sizeof obj, "%d", rebuild_lock_objid(j->rp->p->name, j->rp->p->version));
    const char *params[] = {cls, obj};
    PGresult *r = es_exec(pg,
                          take ? "SELECT pg_try_advisory_lock($1::int, $2::int)"
                               : "SELECT pg_advisory_unlock($1::int, $2::int)",
                          2, params);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    int got = ok && !strcmp(PQgetvalue(r, 0, 0), "t");
    PQclear(r);
    if (!ok)
        return err_set(e, ERR_UNAVAILABLE, "could not %s the rebuild lock of %s: %s",
                       take ? "take" : "release", j->rp->p->name, PQerrorMessage(pg));
    if (take && !got)
        return err_set(e, ERR_CONFLICT, "a rebuild of %s v%d is already running",
                       j->rp->p->name, j->rp->p->version);
    j->locked = take;
    return 0;
}

struct clock {
    const struct rebuild_opts *o;
    int64_t t0, last;
};

static void report(struct clock *c, enum rebuild_phase ph, long long done, long long total,
                   int force)
{
    int64_t now = util_now_ms();
    if (!c->o->progress || (!force && now - c->last < 200))
        return;
    c->last = now;
    c->o->progress(c->o->arg, ph, done, total, (double)(now - c->t0) / 1000.0);
}

static int stopped(const struct rebuild_opts *o, struct err *e)
{
    if (o->stop && atomic_load(o->stop))
        return err_set(e, ERR_UNAVAILABLE, "the rebuild was stopped before the switch: the "
                                           "live builds serve as before");
    return 0;
}

/* An event that j's projection cannot project: parked at once. */
static int park_now(PGconn *pg, const struct job *j, const struct es_event *ev, const char *why,
                    struct rebuild_stats *st, struct err *e)
{
    json_t *subject = park_event_subject(ev);
    int rc = park_put(pg, j->rp->p->name, "projection", j->rp->p->version, ev->position, subject,
                      why, 1, NULL, e);
    json_decref(subject);
    if (!rc) {
        st->parked++;
        log_warn("rebuild of %s v%d parked event %s (%s): %s", j->rp->p->name,
                 j->rp->p->version, ev->position, ev->type, why);
    }
    return rc;
}

/* The reader of the fold: batches of events in order, read ahead on a
 * connection of its own while the fold runs over the one before. */
#define FOLD_BATCH 5000

/* The read-ahead thread. It also frees the batches the fold is done with
 * (used): their events were allocated on it, and glibc's free of another
 * thread's memory takes that arena's lock and consolidates there, which
 * measured a third of the fold's time when the fold freed them. */
struct reader {
    PGconn *pg;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct es_events slot; /* the next batch, when full */
    struct es_events used; /* the last batch the fold took, to free */
    int full, end, quit, code;
    struct err e;
};

/* Frees the batch the fold gave back, on the reader's thread. */
static void reader_free_used(struct reader *rd)
{
    pthread_mutex_lock(&rd->mu);
    struct es_events used = rd->used;
    rd->used = (struct es_events){0};
    pthread_mutex_unlock(&rd->mu);
    es_events_clear(&used);
}

static void *reader_main(void *arg)
{
    struct reader *rd = arg;
    char after[ES_POSITION_LEN + 1] = "";
    for (;;) {
        struct es_events evs = {0};
        struct err e = {0};
        reader_free_used(rd);
        int code = es_read_all(rd->pg, after, FOLD_BATCH, &evs, &e);
        if (!code && evs.n)
            memcpy(after, evs.ev[evs.n - 1].position, sizeof after);
        pthread_mutex_lock(&rd->mu);
        while (rd->full && !rd->quit)
            pthread_cond_wait(&rd->cv, &rd->mu);
        struct es_events used = rd->used; /* given back while this one waited */
        rd->used = (struct es_events){0};
        int quit = rd->quit;
        if (!quit) {
            rd->slot = evs;
            rd->full = 1;
            rd->code = code;
            rd->e = e;
            rd->end = code || evs.n == 0;
            pthread_cond_broadcast(&rd->cv);
        }
        int end = quit || rd->end;
        pthread_mutex_unlock(&rd->mu);
        es_events_clear(&used);
        if (quit)
            es_events_clear(&evs);
        if (end)
            return NULL;
    }
}

/* Hands a batch the fold is done with to the reader to free (without one:
 * frees it here). */
static void give_back(struct reader *rd, struct es_events *evs)
{
    if (!rd) {
        es_events_clear(evs);
        return;
    }
    pthread_mutex_lock(&rd->mu);
    struct es_events old = rd->used; /* not freed yet (the reader is reading): freed here */
    rd->used = *evs;
    pthread_mutex_unlock(&rd->mu);
    *evs = (struct es_events){0};
    es_events_clear(&old);
}

/* The next batch into *evs: from the reader thread when there is one, else
 * read on pg after last. */
static int next_batch(struct reader *rd, PGconn *pg, const char *last, struct es_events *evs,
                      struct err *e)
{
    if (!rd)
        return es_read_all(pg, last, FOLD_BATCH, evs, e);
    pthread_mutex_lock(&rd->mu);
    while (!rd->full)
        pthread_cond_wait(&rd->cv, &rd->mu);
    *evs = rd->slot;
    rd->slot = (struct es_events){0};
    rd->full = 0;
    int code = rd->code;
    if (code)
        *e = rd->e;
    pthread_cond_broadcast(&rd->cv);
    pthread_mutex_unlock(&rd->mu);
    return code;
}

static struct reader *reader_start(const struct rebuild_opts *o)
{
    if (!o->database_url)
        return NULL;
    struct err e = {0};
    PGconn *pg = es_connect(o->database_url, &e);
    if (!pg) {
        log_warn("rebuild: no read-ahead connection (%s): reading on one", e.msg);
        return NULL;
    }
    struct reader *rd = xcalloc(1, sizeof *rd);
    rd->pg = pg;
    pthread_mutex_init(&rd->mu, NULL);
    pthread_cond_init(&rd->cv, NULL);
    if (pthread_create(&rd->thread, NULL, reader_main, rd)) {
        PQfinish(pg);
        free(rd);
        return NULL;
    }
    return rd;
}

static void reader_stop(struct reader *rd)
{
    if (!rd)
        return;
    pthread_mutex_lock(&rd->mu);
    rd->quit = 1;
    pthread_cond_broadcast(&rd->cv);
    pthread_mutex_unlock(&rd->mu);
    pthread_join(rd->thread, NULL);
    es_events_clear(&rd->slot);
    es_events_clear(&rd->used);
    PQfinish(rd->pg);
    pthread_mutex_destroy(&rd->mu);
    pthread_cond_destroy(&rd->cv);
    free(rd);
}

/* Step 1 for every job: the events from the first, into m. *last gets the
 * position of the last event read ("" when none). */
static int fold(PGconn *pg, struct job *jobs, size_t nj, struct model *m, struct clock *ck,
                char last[ES_POSITION_LEN + 1], struct rebuild_stats *st, struct err *e)
{
    long long total = 0;
    PGresult *cr = PQexec(pg, "SELECT count(*) FROM events");
    if (PQresultStatus(cr) == PGRES_TUPLES_OK)
        total = atoll(PQgetvalue(cr, 0, 0));
    PQclear(cr);
    report(ck, REBUILD_FOLD, 0, total, 1);
    last[0] = '\0';
    struct fn_batch *bs = xcalloc(nj + 1, sizeof *bs); /* one per job, its keyspace set once */
    for (size_t i = 0; i < nj; i++)
        fn_batch_set_keyspace(&bs[i], jobs[i].rp->p->name, jobs[i].rp->p->version, jobs[i].build);
    size_t maxc = 64;
    struct bcmd *cmds = xmalloc(maxc * sizeof *cmds);
    int code = 0;
    struct reader *rd = reader_start(ck->o);
    for (;;) {
        if ((code = stopped(ck->o, e)))
            break;
        struct es_events evs = {0};
        if ((code = next_batch(rd, pg, last, &evs, e)))
            break;
        for (size_t k = 0; k < evs.n && !code; k++) {
            const struct es_event *ev = &evs.ev[k];
            for (size_t i = 0; i < nj && !code; i++) {
                const struct reg_projection *rp = jobs[i].rp;
                int (*apply)(struct fn_batch *, const struct fn_event *, struct err *) =
                    reg_projection_handler(rp->p, ev->type);
                if (!apply)
                    continue;
                struct fn_batch *b = &bs[i];
                fn_batch_reset(b);
                struct fn_event fe = fn_event_of(ev);
                struct err fe_err = {0};
                int64_t t0 = util_now_us();
                int hrc = apply(b, &fe, &fe_err);
                reg_fn_count(rp->fn, t0, hrc != 0);
                char why[600];
                if (hrc) {
                    snprintf(why, sizeof why, "%s", fe_err.msg[0] ? fe_err.msg : err_title(hrc));
                    code = park_now(pg, &jobs[i], ev, why, st, e);
                    continue;
                }
                if (b->ncmds > maxc) {
                    maxc = b->ncmds;
                    cmds = xrealloc(cmds, maxc * sizeof *cmds);
                }
                size_t n = batch_cmds(b, cmds, maxc);
                if (check_event(m, cmds, n, why, sizeof why)) {
                    code = park_now(pg, &jobs[i], ev, why, st, e);
                    continue;
                }
                for (size_t c = 0; c < n; c++)
                    apply_cmd(m, &cmds[c]);
            }
            if (code)
                break;
            memcpy(last, ev->position, ES_POSITION_LEN + 1);
            st->events++;
            if (ck->o->memory_bytes && m->bytes > ck->o->memory_bytes) {
                log_warn("rebuild: the model reached about %zu kB (the bound is %zu kB) after "
                         "%lld events: writing it, the rest through the batch path",
                         m->bytes >> 10, ck->o->memory_bytes >> 10, st->events);
                st->bounded = 1;
                break;
            }
        }
        size_t got = evs.n;
        give_back(rd, &evs);
        report(ck, REBUILD_FOLD, st->events, total > st->events ? total : st->events, 0);
        if (got == 0 || st->bounded || code)
            break;
    }
    reader_stop(rd);
    report(ck, REBUILD_FOLD, st->events, st->events, 1);
    free(cmds);
    for (size_t i = 0; i < nj; i++)
        fn_batch_clear(&bs[i]);
    free(bs);
    return code;
}

/* Step 2: every key of m, then each build's checkpoint at last. */
static int write_model(redisContext *rc, const struct model *m, struct job *jobs, size_t nj,
                       const char *last, struct clock *ck, struct rebuild_stats *st,
                       struct err *e)
{
    struct writer w = {rc, 0, e, 0};
    long long nkeys = 0;
    for (size_t i = 0; i < m->cap; i++)
        nkeys += m->slot[i] && m->slot[i]->type != T_NONE;
    report(ck, REBUILD_WRITE, 0, nkeys, 1);
    for (size_t i = 0; i < m->cap && !w.failed; i++) {
        const struct obj *o = m->slot[i];
        if (!o || o->type == T_NONE)
            continue;
        if (write_obj(&w, o))
            break;
        st->keys++;
        st->entries += o->type == T_STRING ? 1 : o->live;
        if (st->keys % 4096 == 0)
            report(ck, REBUILD_WRITE, st->keys, nkeys, 0);
    }
    for (size_t i = 0; i < nj && !w.failed && *last; i++) {
        const struct fn_projection *p = jobs[i].rp->p;
        char *key = rm_checkpoint_key(p->name, p->version, jobs[i].build);
        const char *argv[] = {"SET", key, last};
        size_t lens[] = {3, strlen(key), strlen(last)};
        writer_send(&w, 3, argv, lens);
        free(key);
    }
    writer_drain(&w);
    report(ck, REBUILD_WRITE, st->keys, nkeys, 1);
    return w.failed ? (e->code ? e->code : ERR_UNAVAILABLE) : 0;
}

int rebuild_run(PGconn *pg, redisContext *rc, const struct reg *r, const struct rebuild_opts *o,
                struct rebuild_stats *stp, struct err *e)
{
    struct rebuild_stats st = {0};
    struct clock ck = {o, util_now_ms(), 0};
    struct job *jobs = xcalloc(r->nprojs + 1, sizeof *jobs);
    size_t nj = 0;
    int code = 0;
    for (size_t i = 0; i < r->nprojs; i++)
        if (o->chosen[i])
            jobs[nj++].rp = &r->projs[i];
    /* 0. the locks, the live builds, and what interrupted rebuilds left */
    for (size_t i = 0; i < nj && !code; i++) {
        const struct fn_projection *p = jobs[i].rp->p;
        char cp[33];
        if ((code = lock_job(pg, &jobs[i], 1, e)))
            break;
        if ((code = rm_checkpoint_get(rc, p->name, p->version, cp, &jobs[i].live, e)))
            break;
        jobs[i].build = jobs[i].live + 1;
        code = rm_builds_drop(rc, p->name, p->version, jobs[i].live, NULL, e);
        /* both registered: the old one is found and dropped after the switch
         * even by a later rebuild, should this one stop in between */
        if (!code)
            code = rm_build_register(rc, p->name, p->version, jobs[i].live, e);
        if (!code)
            code = rm_build_register(rc, p->name, p->version, jobs[i].build, e);
    }
    struct model m = {0};
    char last[ES_POSITION_LEN + 1] = "";
    long *only = xcalloc(r->nprojs + 1, sizeof *only);
    int64_t t = util_now_ms();
    if (!code)
        code = fold(pg, jobs, nj, &m, &ck, last, &st, e);
    st.fold_s = (double)(util_now_ms() - t) / 1000.0;
    t = util_now_ms();
    if (!code && !(code = stopped(o, e)))
        code = write_model(rc, &m, jobs, nj, last, &ck, &st, e);
    st.write_s = (double)(util_now_ms() - t) / 1000.0;
    /* 3-4. catch up and switch, until each has switched */
    t = util_now_ms();
    for (size_t i = 0; i < r->nprojs; i++)
        only[i] = -1;
    for (size_t i = 0; i < nj; i++)
        only[jobs[i].rp - r->projs] = jobs[i].build;
    for (int round = 0, left = (int)nj; !code && left > 0; round++) {
        report(&ck, REBUILD_CATCH, 0, 0, 1);
        if ((code = stopped(o, e)) || (code = proj_catch_up_builds(pg, rc, r, only, e)))
            break;
        for (size_t i = 0; i < nj && !code; i++) {
            if (jobs[i].switched)
                continue;
            const struct fn_projection *p = jobs[i].rp->p;
            int s = rm_switch(rc, p->name, p->version, jobs[i].live, jobs[i].build, e);
            if (s == 0) {
                jobs[i].switched = 1;
                only[jobs[i].rp - r->projs] = -1;
                left--;
                log_info("rebuild of %s v%d: build %ld serves (was %ld)", p->name, p->version,
                         jobs[i].build, jobs[i].live);
            } else if (s != ERR_CONFLICT || round >= 100) {
                code = s;
            }
        }
    }
    st.catch_s = (double)(util_now_ms() - t) / 1000.0;
    st.switch_s = (double)(util_now_ms() - ck.t0) / 1000.0;
    /* 5. the old builds, once no query can be reading them */
    int any = 0;
    for (size_t i = 0; i < nj; i++)
        any |= jobs[i].switched;
    int64_t grace_end = util_now_ms() + RM_SWITCH_GRACE_MS;
    if (any) {
        PQclear(PQexec(pg, "NOTIFY cqrsd_events")); /* the runners: read the new builds now */
        report(&ck, REBUILD_SWITCH, 0, 0, 1);
    }
    model_free(&m); /* (a second or so for millions of entries: while the grace runs) */
    if (any && util_now_ms() < grace_end)
        poll(NULL, 0, (int)(grace_end - util_now_ms()));
    for (size_t i = 0; i < nj; i++) {
        struct err de = {0};
        long long n = 0;
        const struct fn_projection *p = jobs[i].rp->p;
        if (jobs[i].switched && rm_builds_drop(rc, p->name, p->version, jobs[i].build, &n, &de))
            log_warn("rebuild of %s v%d: the old build stays: %s", p->name, p->version, de.msg);
        st.dropped += n;
        if (jobs[i].locked)
            lock_job(pg, &jobs[i], 0, &de);
    }
    st.total_s = (double)(util_now_ms() - ck.t0) / 1000.0;
    if (!code)
        report(&ck, REBUILD_DONE, st.events, st.events, 1);
    free(only);
    free(jobs);
    if (stp)
        *stp = st;
    return code;
}

/* ---------- rebuilds the server runs (POST /admin/projections/{name}/rebuild) ---------- */

/* One rebuild started by rebuild_start, running or the last one finished. */
struct bg {
    char *name;
    int version;
    struct reg *r;
    unsigned char *chosen;
    PGconn *pg;
    pthread_t thread;
    atomic_int stop;
    int finished, code;
    enum rebuild_phase phase;
    long long done, total;
    double secs;
    char started_at[RTIME_BUFSZ], error[512];
    struct rebuild_stats st;
    struct bg *next;
};

static struct {
    pthread_mutex_t mu;
    struct bg *head;
    char *database_url, *redis_url;
    size_t memory_bytes;
} BG = {.mu = PTHREAD_MUTEX_INITIALIZER};

void rebuild_configure(const char *database_url, const char *redis_url, size_t memory_bytes)
{
    pthread_mutex_lock(&BG.mu);
    BG.memory_bytes = memory_bytes;
    free(BG.database_url);
    free(BG.redis_url);
    BG.database_url = xstrdup(database_url);
    BG.redis_url = xstrdup(redis_url);
    pthread_mutex_unlock(&BG.mu);
}

static void bg_progress(void *arg, enum rebuild_phase ph, long long done, long long total,
                        double secs)
{
    struct bg *g = arg;
    pthread_mutex_lock(&BG.mu);
    g->phase = ph;
    g->done = done;
    g->total = total;
    g->secs = secs;
    pthread_mutex_unlock(&BG.mu);
}

static void *bg_main(void *arg)
{
    struct bg *g = arg;
    struct err e = {0};
    struct rebuild_stats st = {0};
    int code;
    redisContext *rc = rm_connect(BG.redis_url, 10000, &e);
    if (!rc) {
        code = e.code;
    } else {
        struct rebuild_opts o = {g->chosen, bg_progress, g, &g->stop, BG.database_url,
                                 BG.memory_bytes};
        code = rebuild_run(g->pg, rc, g->r, &o, &st, &e);
        redisFree(rc);
    }
    /* the lock rebuild_start took, released now: a backend's exit releases
     * its locks only a moment after PQfinish returns */
    struct job j = {.rp = reg_projection_find(g->r, g->name)};
    struct err ue = {0};
    if (j.rp)
        lock_job(g->pg, &j, 0, &ue);
    PQfinish(g->pg);
    g->pg = NULL;
    if (code)
        log_warn("rebuild of %s v%d failed: %s", g->name, g->version, e.msg);
    else
        log_info("rebuild of %s v%d: %lld events in %.1f s to the switch", g->name, g->version,
                 st.events, st.switch_s);
    pthread_mutex_lock(&BG.mu);
    g->finished = 1;
    g->code = code;
    g->st = st;
    snprintf(g->error, sizeof g->error, "%s", code ? e.msg : "");
    pthread_mutex_unlock(&BG.mu);
    return NULL;
}

static void bg_free(struct bg *g)
{
    pthread_join(g->thread, NULL);
    reg_release(g->r);
    free(g->chosen);
    free(g->name);
    free(g);
}

int rebuild_start(struct reg *r, const char *name, struct err *e)
{
    const struct reg_projection *rp = reg_projection_find(r, name);
    if (!rp)
        return err_set(e, ERR_NOT_FOUND, "no projection \"%.100s\" is loaded", name);
    pthread_mutex_lock(&BG.mu);
    struct bg **pp = &BG.head, *old = NULL;
    for (; *pp; pp = &(*pp)->next)
        if (!strcmp((*pp)->name, name))
            break;
    if (*pp && !(*pp)->finished) {
        pthread_mutex_unlock(&BG.mu);
        return err_set(e, ERR_STATE_CONFLICT, "a rebuild of %s is already running here", name);
    }
    if (*pp) { /* the last one finished: this one takes its place */
        old = *pp;
        *pp = old->next;
    }
    const char *dburl = BG.database_url;
    pthread_mutex_unlock(&BG.mu);
    if (old)
        bg_free(old);
    if (!dburl)
        return err_set(e, ERR_UNAVAILABLE, "rebuilds are not configured in this process");
    PGconn *pg = es_connect(dburl, e);
    if (!pg)
        return e->code;
    struct bg *g = xcalloc(1, sizeof *g);
    g->name = xstrdup(name);
    g->version = rp->p->version;
    g->pg = pg;
    g->chosen = xcalloc(r->nprojs + 1, 1);
    g->chosen[rp - r->projs] = 1;
    struct job j = {.rp = rp};
    int code = lock_job(pg, &j, 1, e); /* held until bg_main closes pg */
    if (code == ERR_CONFLICT)
        code = err_set(e, ERR_STATE_CONFLICT, "a rebuild of %s v%d is already running",
                       rp->p->name, rp->p->version);
    if (code) {
        PQfinish(pg);
        free(g->chosen);
        free(g->name);
        free(g);
        return code;
    }
    rtime_now(g->started_at);
    reg_acquire(r);
    g->r = r;
    pthread_mutex_lock(&BG.mu);
    g->next = BG.head;
    BG.head = g;
    if (pthread_create(&g->thread, NULL, bg_main, g)) {
        BG.head = g->next;
        pthread_mutex_unlock(&BG.mu);
        PQfinish(pg);
        reg_release(r);
        free(g->chosen);
        free(g->name);
        free(g);
        return err_set(e, ERR_INTERNAL, "could not start the rebuild thread");
    }
    pthread_mutex_unlock(&BG.mu);
    log_info("rebuild of %s v%d started", name, g->version);
    return 0;
}

json_t *rebuild_status(const char *name, int version)
{
    json_t *out = NULL;
    pthread_mutex_lock(&BG.mu);
    for (struct bg *g = BG.head; g && !out; g = g->next) {
        if (strcmp(g->name, name) || g->version != version)
            continue;
        out = json_pack("{s:s, s:s, s:s, s:I, s:I, s:f}", "state",
                        !g->finished ? "rebuilding" : g->code ? "failed" : "done", "phase",
                        rebuild_phase_name(g->finished && !g->code ? REBUILD_DONE : g->phase),
                        "started_at", g->started_at, "done", (json_int_t)g->done, "total",
                        (json_int_t)g->total, "seconds", g->secs);
        if (g->finished && g->code)
            json_object_set_new(out, "error", json_string(g->error));
        if (g->finished && !g->code)
            json_object_set_new(out, "events", json_integer(g->st.events));
    }
    pthread_mutex_unlock(&BG.mu);
    return out;
}

void rebuild_stop_all(void)
{
    pthread_mutex_lock(&BG.mu);
    for (struct bg *g = BG.head; g; g = g->next)
        atomic_store(&g->stop, 1);
    struct bg *g = BG.head;
    BG.head = NULL;
    pthread_mutex_unlock(&BG.mu);
    while (g) {
        struct bg *next = g->next;
        bg_free(g);
        g = next;
    }
}
