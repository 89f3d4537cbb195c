/* queries/common.c — helpers every query shares (declared in
 * projections/keys.h): checked Redis calls, hash replies as sorted field
 * tables, strict integer parsing, parameter validation, calendar dates.
 *
 * Invariants: no reply is trusted: every element's type is checked before
 * use and every stored integer is parsed strictly, so a missing, partly
 * written or foreign read model yields zeros, 404 or a 500 problem, never a
 * crash. Redis unreachable or answering an error is ERR_UNAVAILABLE (503).
 */
#include "projections/keys.h"

#include <errno.h>
#include <inttypes.h>

int query_exec(struct fn_query_ctx *q, unsigned want, redisReply **out, struct err *e, int argc,
               const char **argv)
{
    const char *key = argc > 1 ? argv[1] : "";
    redisReply *r = fn_redis_argv(q, argc, argv);
    *out = NULL;
    if (!r)
        return err_set(e, ERR_UNAVAILABLE, "redis is unreachable");
    if (r->type == REDIS_REPLY_ERROR) {
        /* WRONGTYPE: the read model itself is damaged (500); any other error
         * (LOADING, BUSY, OOM, ...) is Redis being unavailable (503) */
        int code = r->str && !strncmp(r->str, "WRONGTYPE", 9) ? ERR_INTERNAL : ERR_UNAVAILABLE;
        err_set(e, code, "redis failed %s on key \"%.200s\": %.200s", argv[0], key,
                r->str ? r->str : "");
        freeReplyObject(r);
        return code;
    }
    if (r->type < 0 || r->type >= 32 || !(want & QUERY_WANT(r->type))) {
        err_set(e, ERR_INTERNAL, "redis answered %s on key \"%.200s\" with a reply of type %d",
                argv[0], key, r->type);
        freeReplyObject(r);
        return ERR_INTERNAL;
    }
    *out = r;
    return 0;
}

char *query_key(const char *projection, int version, const char *prefix, const char *id,
                const char *suffix)
{
    char *rel = proj_key(prefix, id, suffix);
    char *key = fn_key(projection, version, rel);
    free(rel);
    return key;
}

static int query_kv_cmp(const void *a, const void *b)
{
    const struct query_kv *x = a, *y = b;
    size_t n = x->flen < y->flen ? x->flen : y->flen;
    int c = memcmp(x->field, y->field, n);
    if (c)
        return c;
    return (x->flen > y->flen) - (x->flen < y->flen);
}

int query_hgetall(struct fn_query_ctx *q, const char *key, struct query_hash *h, struct err *e)
{
    memset(h, 0, sizeof *h);
    h->key = strdup(key);
    if (!h->key)
        abort();
    int rc = query_exec(q, QUERY_WANT(REDIS_REPLY_ARRAY), &h->reply, e, 2,
                        (const char *[]){"HGETALL", key});
    if (rc)
        return rc;
    redisReply *r = h->reply;
    if (r->elements % 2)
        return err_set(e, ERR_INTERNAL, "redis answered HGETALL on key \"%.200s\" with %zu elements",
                       key, r->elements);
    h->kv = malloc((r->elements / 2 + 1) * sizeof *h->kv);
    if (!h->kv)
        abort();
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *f = r->element[i], *v = r->element[i + 1];
        if (!f || !v || f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || !f->str ||
            !v->str)
            return err_set(e, ERR_INTERNAL,
                           "redis answered HGETALL on key \"%.200s\" with a non-string element",
                           key);
        h->kv[h->n++] = (struct query_kv){f->str, v->str, f->len, v->len};
    }
    qsort(h->kv, h->n, sizeof *h->kv, query_kv_cmp);
    return 0;
}

const char *query_hash_get(const struct query_hash *h, const char *field)
{
    if (!h->n)
        return NULL;
    struct query_kv k = {.field = field, .flen = strlen(field)};
    const struct query_kv *hit = bsearch(&k, h->kv, h->n, sizeof *h->kv, query_kv_cmp);
    return hit ? hit->value : NULL;
}

int query_hash_i64(const struct query_hash *h, const char *field, int64_t *out, struct err *e)
{
    const char *v = query_hash_get(h, field);
    *out = 0;
    if (!v)
        return 0;
    if (query_parse_i64(v, strlen(v), out))
        return err_set(e, ERR_INTERNAL,
                       "read model key \"%.200s\" field \"%.100s\" holds \"%.40s\", not an integer",
                       h->key ? h->key : "", field, v);
    return 0;
}

int query_put_int(json_t *o, const struct query_hash *h, const char *field, struct err *e)
{
    int64_t v;
    int rc = query_hash_i64(h, field, &v, e);
    if (!rc)
        json_object_set_new(o, field, json_integer((json_int_t)v));
    return rc;
}

int query_put_money(json_t *o, const struct query_hash *h, const char *field, struct err *e)
{
    int64_t v;
    int rc = query_hash_i64(h, field, &v, e);
    if (!rc)
        json_object_set_new(o, field, query_money(v));
    return rc;
}

void query_put_str(json_t *o, const struct query_hash *h, const char *field)
{
    const char *v = query_hash_get(h, field);
    json_object_set_new(o, field, v && *v ? json_string(v) : json_null());
}

int query_put_fields(json_t *o, const struct query_hash *h, const struct query_field *f, size_t n,
                     struct err *e)
{
    for (size_t i = 0; i < n; i++) {
        int rc = 0;
        switch (f[i].kind) {
        case QUERY_INT:
            rc = query_put_int(o, h, f[i].name, e);
            break;
        case QUERY_MONEY:
            rc = query_put_money(o, h, f[i].name, e);
            break;
        case QUERY_STR:
            query_put_str(o, h, f[i].name);
            break;
        }
        if (rc)
            return rc;
    }
    return 0;
}

void query_hash_free(struct query_hash *h)
{
    free(h->key);
    free(h->kv);
    if (h->reply)
        freeReplyObject(h->reply);
    memset(h, 0, sizeof *h);
}

int query_parse_i64(const char *s, size_t len, int64_t *out)
{
    if (!s || len == 0 || len > 20 || strlen(s) != len)
        return -1;
    const char *digits = s[0] == '-' ? s + 1 : s;
    if (*digits < '0' || *digits > '9')
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end != s + len)
        return -1;
    *out = (int64_t)v;
    return 0;
}

int query_reply_i64(const redisReply *r, int64_t *out)
{
    if (!r)
        return -1;
    switch (r->type) {
    case REDIS_REPLY_INTEGER:
        *out = (int64_t)r->integer;
        return 0;
    case REDIS_REPLY_NIL:
        *out = 0;
        return 0;
    case REDIS_REPLY_STRING:
        return query_parse_i64(r->str, r->len, out);
    default:
        return -1;
    }
}

json_t *query_money(int64_t thousandths)
{
    char buf[MONEY_BUFSZ];
    return json_string(money_format(thousandths, buf));
}

int query_param_id(const struct fn_query_ctx *q, const char *name, const char **out,
                   struct err *e)
{
    const char *v = fn_param(q, name);
    if (!v || !*v)
        return err_set(e, ERR_INVALID, "parameter \"%s\" is required", name);
    *out = v;
    return 0;
}

int query_param_int(const struct fn_query_ctx *q, const char *name, int64_t def, int64_t min,
                    int64_t max, int64_t *out, struct err *e)
{
    const char *v = fn_param(q, name);
    int64_t n;
    if (!v) {
        *out = def;
        return 0;
    }
    if (*v < '0' || *v > '9' || query_parse_i64(v, strlen(v), &n) || n < min || n > max)
        return err_set(e, ERR_INVALID,
                       "invalid value \"%.40s\" for parameter \"%s\": expected an integer from "
                       "%" PRId64 " to %" PRId64,
                       v, name, min, max);
    *out = n;
    return 0;
}

