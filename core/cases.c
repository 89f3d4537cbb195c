/* core/cases.c — the given/when/then runner of functions (`cqrsd cases`,
 * tests/unit/test_cases.c): one case per folder <root>/<function>/<case>/.
 *
 * Commands. given.jsonl holds the events already in the command's stream,
 * {"type","data"} per line (absent or empty: the stream does not exist);
 * when.json the cmd object exactly as decide receives it; then.jsonl the
 * expected emitted events, {"stream": null|"id", "type", "data"} per line,
 * with optionally reply.json, the exact reply fields; or error.json
 * {"code": "REJECTED"|"INVALID"|"NOT_FOUND"|"CONFLICT"|..., "message_contains"}.
 * The state is zeroed, evolved with versions 1..n, decided on, then evolved
 * further with what decide emitted, so evolve meets every event shape decide
 * writes.
 *
 * Reactors and timers. when.json is an event {type, data, stream_id?,
 * version?, recorded_at?} or, for a timer, {"fire": {key, payload, due_at?}};
 * then.jsonl lists what the function asked for: {"issue", "cmd"},
 * {"timer_start", "payload"}, {"timer_stop"} (commands first); no given.jsonl.
 *
 * Projections and queries, on a real Redis under a key prefix of the case's
 * own (removed after it): given.jsonl events (as above, each may name
 * stream_id and version) are applied by the projection (for a projection's
 * case) or by every projection loaded (for a query's); then.json is, for a
 * projection, every key it wrote ({"<relative key>": value}: an object for a
 * hash, an array of members for a set, of [member, score] for a sorted set,
 * a string for a string) and, for a query, its reply; a query's when.json
 * holds its parameters as strings; error.json as for commands.
 *
 * Invariants: a case is never skipped silently: an unknown function name,
 * neither or both of then and error, unreadable files, or a projection case
 * without Redis fail it (unless the caller asked to skip those, and then it
 * says so). Each failure names the folder and shows expected and actual JSON.
 */
#include "core/cases.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fn_int.h"
#include "core/query.h"
#include "core/react.h"
#include "core/reg.h"
#include "core/rm.h"
#include "core/util.h"

struct tcase {
    char *fn;    /* folder name = function name */
    char *dir;   /* path of the case folder */
    char *label; /* "<fn>/<case>" */
};

/* the generation the cases run against (cases_run's) */
static const struct reg *R;
static redisContext *RC;   /* for projection and query cases; may be NULL */
static int no_redis;       /* skip those cases instead of failing them */

/* ---------- small helpers ---------- */

/* Appends printf-style text to *msg (a malloc'd string or NULL). */
__attribute__((format(printf, 2, 3))) static void addf(char **msg, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        abort();
    va_end(ap);
    size_t old = *msg ? strlen(*msg) : 0, n = strlen(s);
    char *m = realloc(*msg, old + n + 1);
    if (!m)
        abort();
    memcpy(m + old, s, n + 1);
    *msg = m;
    free(s);
}

static char *path_join(const char *a, const char *b)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", a, b) < 0)
        abort();
    return p;
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int file_exists(const char *dir, const char *name)
{
    char *p = path_join(dir, name);
    struct stat st;
    int ok = stat(p, &st) == 0 && S_ISREG(st.st_mode);
    free(p);
    return ok;
}

/* Compact JSON with sorted keys; caller frees. */
static char *dump(const json_t *j)
{
    if (!j)
        return strdup("(nothing)");
    char *s = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT | JSON_SORT_KEYS);
    return s ? s : strdup("(unprintable)");
}

static const struct reg_command *find_command(const char *name)
{
    return reg_command_find(R, name);
}

/* A command whose stream category is cat (the evolve of that stream). */
static const struct fn_command *find_category(const char *cat, size_t len)
{
    for (size_t i = 0; i < R->ncmds; i++)
        if (strlen(R->cmds[i].c->category) == len && !strncmp(R->cmds[i].c->category, cat, len))
            return R->cmds[i].c;
    return NULL;
}

/* Loads a JSON file (must hold one value). NULL with a message on failure. */
static json_t *load_json(const char *dir, const char *name, char **msg)
{
    char *p = path_join(dir, name);
    json_error_t je;
    json_t *j = json_load_file(p, JSON_DECODE_ANY, &je);
    if (!j)
        addf(msg, "%s: line %d: %s\n", p, je.line, je.text);
    free(p);
    return j;
}

/* Loads a JSON-lines file into a new array (blank lines skipped). A missing
 * file gives an empty array when optional, else an error. NULL on error. */
static json_t *load_jsonl(const char *dir, const char *name, int optional, char **msg)
{
    char *p = path_join(dir, name);
    FILE *f = fopen(p, "r");
    json_t *arr = json_array();
    if (!f) {
        if (!optional) {
            addf(msg, "%s: cannot open\n", p);
            json_decref(arr);
            arr = NULL;
        }
        free(p);
        return arr;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t k = strspn(line, " \t\r\n");
        if ((ssize_t)k == len)
            continue;
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (!j || !json_is_object(j)) {
            addf(msg, "%s:%d: %s\n", p, lineno, j ? "not a JSON object" : je.text);
            json_decref(j);
            json_decref(arr);
            arr = NULL;
            break;
        }
        json_array_append_new(arr, j);
    }
    free(line);
    fclose(f);
    free(p);
    return arr;
}

/* given.jsonl of dir, every line an event {type: string, data: object,
 * ...}; NULL with msg naming the line otherwise (an absent file: none). */
static json_t *load_given(const char *dir, char **msg)
{
    json_t *given = load_jsonl(dir, "given.jsonl", 1, msg);
    size_t i;
    const json_t *g;
    json_array_foreach(given, i, g) {
        if (!json_is_string(json_object_get(g, "type")) ||
            !json_is_object(json_object_get(g, "data"))) {
            addf(msg, "%s/given.jsonl event %zu: an event has a string \"type\" and an object "
                      "\"data\"\n",
                 dir, i + 1);
            json_decref(given);
            return NULL;
        }
    }
    return given;
}

/* Folds the events of a given/then array into state, versions from+1.. */
static void fold(const struct fn_command *c, void *state, const char *stream, json_t *events,
                 int64_t from)
{
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev) {
        struct fn_event fe = {
            .stream_id = stream,
            .version = from + (int64_t)i + 1,
            .type = json_string_value(json_object_get(ev, "type")),
            .data = json_object_get(ev, "data"),
            .position = "",
            .recorded_at = "",
            .event_id = "",
        };
        c->evolve(state, &fe);
    }
}

/* Folds what decide emitted: own-stream events into state (after version n),
 * new-stream events into a fresh state of their category's command. */
static void fold_emitted(const struct fn_command *c, void *state, int64_t n,
                         const struct fn_decision *d, char **msg)
{
    int64_t v = n;
    for (size_t i = 0; i < d->n; i++) {
        const struct fn_emitted *em = &d->ev[i];
        struct fn_event fe = {
            .stream_id = em->stream_id,
            .version = 1,
            .type = em->type,
            .data = em->data,
            .position = "",
            .recorded_at = "",
            .event_id = "",
        };
        if (!em->stream_id) {
            fe.version = ++v;
            c->evolve(state, &fe);
            continue;
        }
        const char *dash = strchr(em->stream_id, '-');
        const struct fn_command *other =
            dash ? find_category(em->stream_id, (size_t)(dash - em->stream_id)) : NULL;
        if (!other) {
            addf(msg, "emitted event %zu opens stream \"%s\", of no known category\n", i + 1,
                 em->stream_id);
            continue;
        }
        void *st = calloc(1, other->state_size ? other->state_size : 1);
        other->evolve(st, &fe);
        if (other->release)
            other->release(st);
        free(st);
    }
}

/* ---------- comparing ---------- */

static json_t *emitted_json(const struct fn_emitted *em)
{
    return json_pack("{s:o, s:s, s:O}", "stream",
                     em->stream_id ? json_string(em->stream_id) : json_null(), "type", em->type,
                     "data", em->data);
}

static json_t *all_emitted(const struct fn_decision *d)
{
    json_t *a = json_array();
    for (size_t i = 0; i < d->n; i++)
        json_array_append_new(a, emitted_json(&d->ev[i]));
    return a;
}

static void compare_events(json_t *then, const struct fn_decision *d, char **msg)
{
    if (json_array_size(then) != d->n) {
        json_t *act = all_emitted(d);
        char *es = dump(then), *as = dump(act);
        addf(msg, "expected %zu events, decide emitted %zu\n  expected: %s\n  actual:   %s\n",
             json_array_size(then), d->n, es, as);
        free(es);
        free(as);
        json_decref(act);
        return;
    }
    for (size_t i = 0; i < d->n; i++) {
        json_t *exp = json_array_get(then, i);
        json_t *act = emitted_json(&d->ev[i]);
        const json_t *es = json_object_get(exp, "stream");
        int stream_ok = es ? json_equal(es, json_object_get(act, "stream")) : !d->ev[i].stream_id;
        const char *et = json_string_value(json_object_get(exp, "type"));
        int type_ok = et && !strcmp(et, d->ev[i].type);
        int data_ok = json_equal(json_object_get(exp, "data"), d->ev[i].data);
        if (!stream_ok || !type_ok || !data_ok) {
            char *xs = dump(exp), *as = dump(act);
            addf(msg, "event %zu differs (%s%s%s)\n  expected: %s\n  actual:   %s\n", i + 1,
                 stream_ok ? "" : "stream ", type_ok ? "" : "type ", data_ok ? "" : "data", xs,
                 as);
            free(xs);
            free(as);
        }
        json_decref(act);
    }
}

/* Messages are PostgreSQL style: non-empty, lowercase start, no final period. */
static void check_message_style(const char *m, char **msg)
{
    size_t n = strlen(m);
    if (n == 0)
        addf(msg, "error message is empty\n");
    else if (m[0] >= 'A' && m[0] <= 'Z')
        addf(msg, "error message \"%s\" starts with a capital\n", m);
    else if (m[n - 1] == '.')
        addf(msg, "error message \"%s\" ends with a period\n", m);
}

/* produced: what the function asked for (events, or a reactor's effects),
 * for the message. */
static void compare_error(const json_t *want, int rc, const struct err *e, json_t *produced,
                          char **msg)
{
    size_t n = json_array_size(produced);
    const char *code = json_string_value(json_object_get(want, "code"));
    const char *sub = json_string_value(json_object_get(want, "message_contains"));
    if (!code) {
        addf(msg, "error.json has no string \"code\"\n");
        return;
    }
    if (rc == 0) {
        char *as = dump(produced);
        addf(msg, "expected error %s (message containing \"%s\"), the function succeeded\n"
                  "  it produced: %s\n", code, sub ? sub : "", as);
        free(as);
        return;
    }
    if (strcmp(err_name(rc), code))
        addf(msg, "expected error %s, got %s: %s\n", code, err_name(rc), e->msg);
    if (e->code != rc)
        addf(msg, "the function returned %s but set err.code to %s\n", err_name(rc),
             err_name(e->code));
    if (sub && !strstr(e->msg, sub))
        addf(msg, "expected the message to contain \"%s\"\n  actual message: \"%s\"\n", sub,
             e->msg);
    check_message_style(e->msg, msg);
    if (n)
        addf(msg, "the function failed with %s but produced %zu effects\n", err_name(rc), n);
}

/* ---------- reactors and timers ---------- */

/* What a reactor or timer invocation asked for, as then.jsonl lines:
 * {"issue": command, "cmd": {...}}, {"timer_start": key, "payload": {...}},
 * {"timer_stop": key}. */
static json_t *react_effects(const struct fn_react *x)
{
    json_t *a = json_array();
    for (size_t i = 0; i < x->nissued; i++)
        json_array_append_new(a, json_pack("{s:s, s:O}", "issue", x->issued[i].command, "cmd",
                                           x->issued[i].cmd));
    for (size_t i = 0; i < x->nops; i++)
        json_array_append_new(a, x->ops[i].start
                                     ? json_pack("{s:s, s:O}", "timer_start", x->ops[i].key,
                                                 "payload", x->ops[i].payload)
                                     : json_pack("{s:s}", "timer_stop", x->ops[i].key));
    return a;
}

/*
 * A reactor's or timer's case: when.json is an event {type, data, stream_id?,
 * version?, recorded_at?} handed to the function's handler of that type, or
 * for a timer {"fire": {key, payload, due_at?}}; then.jsonl lists what it
 * asked for (react_effects, in order: commands first, then timer starts and
 * stops; an empty file: nothing), or error.json its failure. No given.jsonl:
 * these functions keep no state of their own.
 */
static void check_react_case(const struct tcase *tc, const char *name,
                             const struct fn_on_react *on, const struct fn_timer *timer,
                             char **msg)
{
    int has_then = file_exists(tc->dir, "then.jsonl");
    int has_error = file_exists(tc->dir, "error.json");
    if (has_then == has_error) {
        addf(msg, "%s: needs exactly one of then.jsonl and error.json\n", tc->dir);
        return;
    }
    if (file_exists(tc->dir, "given.jsonl")) {
        addf(msg, "%s: a reactor or timer case has no given.jsonl (it keeps no state)\n", tc->dir);
        return;
    }
    json_t *when = load_json(tc->dir, "when.json", msg);
    json_t *then = has_then ? load_jsonl(tc->dir, "then.jsonl", 0, msg) : NULL;
    json_t *want_err = has_error ? load_json(tc->dir, "error.json", msg) : NULL;
    if (*msg || !json_is_object(when)) {
        if (when && !json_is_object(when))
            addf(msg, "when.json is not a JSON object\n");
        goto out;
    }
    struct fn_react x;
    struct err e = {0};
    int rc;
    const json_t *fire = json_object_get(when, "fire");
    if (fire) {
        if (!timer) {
            addf(msg, "%s is a reactor: it has no fire\n", name);
            goto out;
        }
        const char *due_at = json_string_value(json_object_get(fire, "due_at"));
        struct fn_timer_due due = {json_string_value(json_object_get(fire, "key")),
                                   json_object_get(fire, "payload"),
                                   due_at ? due_at : "2011-01-01T00:30:00+00:00"};
        if (!due.key || !json_is_object(due.payload)) {
            addf(msg, "when.json's fire needs a string key and an object payload\n");
            goto out;
        }
        react_ctx_init(&x, REACT_TIMER_FIRE);
        rc = timer->fire(&x, &due, &e);
    } else {
        const char *type = json_string_value(json_object_get(when, "type"));
        const char *sid = json_string_value(json_object_get(when, "stream_id"));
        const char *rec = json_string_value(json_object_get(when, "recorded_at"));
        const json_t *v = json_object_get(when, "version");
        struct fn_event ev = {sid ? sid : "case-1", json_is_integer(v) ? json_integer_value(v) : 1,
                              type, json_object_get(when, "data"),
                              "00000000000000010000000000000001",
                              rec ? rec : "2011-01-01T00:00:00+00:00",
                              "00000000-0000-4000-8000-000000000001"};
        int (*h)(struct fn_react *, const struct fn_event *, struct err *) =
            type ? reg_react_handler(on, type) : NULL;
        if (!h || !json_is_object(ev.data)) {
            addf(msg, "%s handles no event of type \"%s\" (or data is not an object)\n", name,
                 type ? type : "(none)");
            goto out;
        }
        react_ctx_init(&x, timer ? REACT_TIMER_EVENT : REACT_REACTOR);
        rc = h(&x, &ev, &e);
    }
    if (!rc && x.misuse[0]) {
        addf(msg, "the function misused the ABI: %s\n", x.misuse);
    } else if (then) {
        json_t *act = react_effects(&x);
        if (rc)
            addf(msg, "expected effects, the function failed with %s: %s\n", err_name(rc), e.msg);
        else if (!json_equal(act, then)) {
            char *xs = dump(then), *as = dump(act);
            addf(msg, "effects differ\n  expected: %s\n  actual:   %s\n", xs, as);
            free(xs);
            free(as);
        }
        json_decref(act);
    } else {
        json_t *act = rc ? json_array() : react_effects(&x);
        compare_error(want_err, rc, &e, act, msg);
        json_decref(act);
    }
    react_ctx_clear(&x);
out:
    json_decref(when);
    json_decref(then);
    json_decref(want_err);
}

/* ---------- projections and queries ---------- */

/* A stored event from a given.jsonl line; position k (1-based) orders them. */
static struct es_event case_event(const json_t *g, size_t k)
{
    struct es_event ev;
    memset(&ev, 0, sizeof ev);
    const char *sid = json_string_value(json_object_get(g, "stream_id"));
    const char *rec = json_string_value(json_object_get(g, "recorded_at"));
    const json_t *v = json_object_get(g, "version");
    const char *type = json_string_value(json_object_get(g, "type"));
    ev.stream_id = xstrdup(sid ? sid : "case-1");
    ev.version = json_is_integer(v) ? json_integer_value(v) : (int64_t)k;
    ev.event_id = xasprintf("00000000-0000-4000-8000-%012zx", k);
    ev.type = xstrdup(type ? type : "");
    ev.data = json_incref(json_object_get(g, "data"));
    ev.metadata = json_object();
    snprintf(ev.position, sizeof ev.position, "%032zx", k);
    snprintf(ev.recorded_at, sizeof ev.recorded_at, "%s", rec ? rec : "2011-01-01T00:00:00+00:00");
    return ev;
}

static void case_event_clear(struct es_event *ev)
{
    free(ev->stream_id);
    free(ev->event_id);
    free(ev->type);
    json_decref(ev->data);
    json_decref(ev->metadata);
}

/* Applies the events of given to projection p under ns, through the same
 * checked script as the runner (rm_apply). */
static int case_project(const struct fn_projection *p, const char *ns, const json_t *given,
                        char **msg)
{
    struct fn_batch b;
    fn_batch_init(&b);
    fn_batch_set_prefix_ns(&b, ns, p->name, p->version);
    size_t i;
    const json_t *g;
    int ok = 1;
    json_array_foreach(given, i, g) {
        struct es_event ev = case_event(g, i + 1);
        int (*apply)(struct fn_batch *, const struct fn_event *, struct err *) =
            reg_projection_handler(p, ev.type);
        if (apply) {
            struct fn_event fe = fn_event_of(&ev);
            struct err e = {0};
            if (apply(&b, &fe, &e)) {
                addf(msg, "projection %s failed on given event %zu (%s): %s\n", p->name, i + 1,
                     ev.type, e.msg);
                ok = 0;
            }
        }
        case_event_clear(&ev);
        if (!ok)
            break;
    }
    struct err e = {0};
    if (ok && rm_apply(RC, &b, NULL, 0, &e)) {
        addf(msg, "Redis refused the writes of projection %s: %s\n", p->name, e.msg);
        ok = 0;
    }
    fn_batch_clear(&b);
    return ok;
}

/* Every key under prefix as then.json shows it (see the opening comment),
 * named relative to prefix. A new reference. */
static json_t *case_dump(const char *prefix)
{
    json_t *out = json_object();
    char cursor[32] = "0";
    size_t plen = strlen(prefix);
    do {
        redisReply *r = redisCommand(RC, "SCAN %s MATCH %s* COUNT 1000", cursor, prefix);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            if (r)
                freeReplyObject(r);
            break;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            const char *key = r->element[1]->element[i]->str;
            redisReply *t = redisCommand(RC, "TYPE %s", key);
            json_t *v = json_null();
            if (t && t->type == REDIS_REPLY_STATUS) {
                redisReply *c = NULL;
                if (!strcmp(t->str, "hash") && (c = redisCommand(RC, "HGETALL %s", key))) {
                    v = json_object();
                    for (size_t k = 0; k + 1 < c->elements; k += 2)
                        json_object_set_new(v, c->element[k]->str,
                                            json_string(c->element[k + 1]->str));
                } else if (!strcmp(t->str, "set") && (c = redisCommand(RC, "SORT %s ALPHA", key))) {
                    v = json_array();
                    for (size_t k = 0; k < c->elements; k++)
                        json_array_append_new(v, json_string(c->element[k]->str));
                } else if (!strcmp(t->str, "zset") &&
                           (c = redisCommand(RC, "ZRANGE %s 0 -1 WITHSCORES", key))) {
                    v = json_array();
                    for (size_t k = 0; k + 1 < c->elements; k += 2)
                        json_array_append_new(v, json_pack("[s, I]", c->element[k]->str,
                                                           (json_int_t)strtoll(
                                                               c->element[k + 1]->str, NULL, 10)));
                } else if (!strcmp(t->str, "string") && (c = redisCommand(RC, "GET %s", key))) {
                    v = json_string(c->str ? c->str : "");
                }
                if (c)
                    freeReplyObject(c);
            }
            if (t)
                freeReplyObject(t);
            json_object_set_new(out, key + plen, v);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0"));
    return out;
}

/* Deletes every key under ns. */
static void case_cleanup(const char *ns)
{
    char cursor[32] = "0";
    do {
        redisReply *r = redisCommand(RC, "SCAN %s MATCH %s* COUNT 1000", cursor, ns);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            if (r)
                freeReplyObject(r);
            return;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            redisReply *d = redisCommand(RC, "UNLINK %s", r->element[1]->element[i]->str);
            if (d)
                freeReplyObject(d);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0"));
}

/* 1 when the case may run on Redis; otherwise fails (or skips) it. */
static int need_redis(const struct tcase *tc, char **msg, int *skipped)
{
    if (RC && !RC->err)
        return 1;
    if (no_redis)
        *skipped = 1;
    else
        addf(msg, "%s: a projection or query case needs Redis (REDIS_URL), which is not "
                  "reachable; run with --no-redis to skip these cases\n", tc->dir);
    return 0;
}

static void check_read_case(const struct tcase *tc, const struct reg_projection *rp,
                            const struct reg_query *rq, char **msg, int *skipped)
{
    int has_then = file_exists(tc->dir, "then.json");
    int has_error = file_exists(tc->dir, "error.json");
    if (has_then == has_error || (rp && has_error)) {
        addf(msg, "%s: needs %s\n", tc->dir,
             rp ? "then.json" : "exactly one of then.json and error.json");
        return;
    }
    if (!need_redis(tc, msg, skipped))
        return;
    static unsigned long seq;
    char ns[64];
    snprintf(ns, sizeof ns, "cqrsd-cases:%ld:%lu:", (long)getpid(), ++seq);
    json_t *given = load_given(tc->dir, msg);
    json_t *then = has_then ? load_json(tc->dir, "then.json", msg) : NULL;
    json_t *want_err = has_error ? load_json(tc->dir, "error.json", msg) : NULL;
    json_t *when = rq ? load_json(tc->dir, "when.json", msg) : NULL;
    if (*msg)
        goto out;
    if (rp) {
        if (case_project(rp->p, ns, given, msg)) {
            char *prefix = xasprintf("%s%s:v%d:", ns, rp->p->name, rp->p->version);
            json_t *act = case_dump(prefix);
            free(prefix);
            if (!json_equal(act, then)) {
                char *xs = dump(then), *as = dump(act);
                addf(msg, "the keys differ\n  expected: %s\n  actual:   %s\n", xs, as);
                free(xs);
                free(as);
            }
            json_decref(act);
        }
        goto out;
    }
    for (size_t i = 0; i < R->nprojs && !*msg; i++)
        case_project(R->projs[i].p, ns, given, msg);
    if (*msg)
        goto out;
    if (when && !json_is_object(when)) {
        addf(msg, "when.json is not a JSON object of parameters\n");
        goto out;
    }
    size_t n = when ? json_object_size(when) : 0, k = 0;
    const char **names = xcalloc(n + 1, sizeof *names), **values = xcalloc(n + 1, sizeof *values);
    const char *key;
    json_t *v;
    json_object_foreach(when, key, v) {
        names[k] = key;
        values[k++] = json_is_string(v) ? json_string_value(v) : "";
    }
    json_t *out = NULL;
    struct err e = {0};
    int rc = query_call(R, rq->q, RC, ns, names, values, n, &out, NULL, &e);
    free(names);
    free(values);
    if (then) {
        if (rc)
            addf(msg, "expected a reply, the query failed with %s: %s\n", err_name(rc), e.msg);
        else if (!json_equal(out, then)) {
            char *xs = dump(then), *as = dump(out);
            addf(msg, "the reply differs\n  expected: %s\n  actual:   %s\n", xs, as);
            free(xs);
            free(as);
        }
    } else {
        json_t *none = json_array();
        compare_error(want_err, rc, &e, none, msg);
        json_decref(none);
    }
    json_decref(out);
out:
    case_cleanup(ns);
    json_decref(given);
    json_decref(then);
    json_decref(want_err);
    json_decref(when);
}

/* Runs one case; appends every problem to *msg. */
static void check_case(const struct tcase *tc, char **msg, int *skipped)
{
    const struct reg_projection *rp = reg_projection_find(R, tc->fn);
    const struct reg_query *rq = reg_query_find(R, tc->fn);
    if (rp || rq) {
        check_read_case(tc, rp, rq, msg, skipped);
        return;
    }
    const struct reg_reactor *rx = reg_reactor_find(R, tc->fn);
    const struct reg_timer *rt = reg_timer_find(R, tc->fn);
    if (rx || rt) {
        check_react_case(tc, tc->fn, rx ? rx->x->on : rt->t->on, rt ? rt->t : NULL, msg);
        return;
    }
    const struct reg_command *rcmd = find_command(tc->fn);
    if (!rcmd) {
        addf(msg, "unknown function \"%s\": no function of that name is loaded\n", tc->fn);
        return;
    }
    const struct fn_command *c = rcmd->c;
    int has_then = file_exists(tc->dir, "then.jsonl");
    int has_error = file_exists(tc->dir, "error.json");
    if (has_then == has_error) {
        addf(msg, "%s: needs exactly one of then.jsonl and error.json\n", tc->dir);
        return;
    }
    if (has_error && file_exists(tc->dir, "reply.json")) {
        addf(msg, "%s: reply.json goes with then.jsonl, not error.json\n", tc->dir);
        return;
    }
    json_t *given = load_given(tc->dir, msg);
    json_t *cmd = load_json(tc->dir, "when.json", msg);
    json_t *then = has_then ? load_jsonl(tc->dir, "then.jsonl", 0, msg) : NULL;
    json_t *want_err = has_error ? load_json(tc->dir, "error.json", msg) : NULL;
    json_t *reply = file_exists(tc->dir, "reply.json") ? load_json(tc->dir, "reply.json", msg)
                                                        : NULL;
    if (*msg || !json_is_object(cmd)) {
        if (cmd && !json_is_object(cmd))
            addf(msg, "when.json is not a JSON object\n");
        goto out;
    }

    const char *id = json_string_value(json_object_get(cmd, c->id_field));
    char *stream = NULL;
    if (asprintf(&stream, "%s-%s", c->category, id ? id : "") < 0)
        abort();
    void *state = calloc(1, c->state_size ? c->state_size : 1);
    int64_t n = (int64_t)json_array_size(given);
    fold(c, state, stream, given, 0);

    struct fn_decision d;
    struct err e = {0};
    fn_decision_init(&d, rcmd->mod->desc->events);
    int rc = c->decide(state, n, cmd, &d, &e);
    if (rc == 0 && d.undeclared[0])
        addf(msg, "decide emitted the type \"%s\", which its module does not declare\n",
             d.undeclared);

    if (then) {
        if (rc) {
            addf(msg, "expected events, decide failed with %s: %s\n", err_name(rc), e.msg);
        } else {
            compare_events(then, &d, msg);
            if (reply && !json_equal(reply, d.reply)) {
                char *xs = dump(reply), *as = dump(d.reply);
                addf(msg, "reply differs\n  expected: %s\n  actual:   %s\n", xs, as);
                free(xs);
                free(as);
            }
        }
    } else {
        json_t *produced = all_emitted(&d);
        compare_error(want_err, rc, &e, produced, msg);
        json_decref(produced);
    }
    if (rc == 0)
        fold_emitted(c, state, n, &d, msg);

    fn_decision_free(&d);
    if (c->release)
        c->release(state);
    free(state);
    free(stream);
out:
    json_decref(given);
    json_decref(cmd);
    json_decref(then);
    json_decref(want_err);
    json_decref(reply);
}

/* ---------- discovery ---------- */

static int visible(const struct dirent *de)
{
    return de->d_name[0] != '.';
}

/* Appends every case folder under root to *cases; returns the count. */
static size_t discover(const char *root, struct tcase **cases)
{
    struct dirent **fns = NULL;
    size_t n = 0, cap = 0;
    int nf = scandir(root, &fns, visible, alphasort);
    for (int i = 0; i < nf; i++) {
        char *fdir = path_join(root, fns[i]->d_name);
        struct dirent **cs = NULL;
        int nc = is_dir(fdir) ? scandir(fdir, &cs, visible, alphasort) : 0;
        for (int j = 0; j < nc; j++) {
            char *cdir = path_join(fdir, cs[j]->d_name);
            if (!is_dir(cdir)) {
                free(cdir);
            } else {
                if (n == cap) {
                    cap = cap ? cap * 2 : 64;
                    *cases = realloc(*cases, cap * sizeof **cases);
                    if (!*cases)
                        abort();
                }
                (*cases)[n].fn = strdup(fns[i]->d_name);
                (*cases)[n].dir = cdir;
                (*cases)[n].label = path_join(fns[i]->d_name, cs[j]->d_name);
                n++;
            }
            free(cs[j]);
        }
        free(cs);
        free(fdir);
        free(fns[i]);
    }
    free(fns);
    return n;
}

int cases_run(const struct reg *r, const char *root, redisContext *rc, int skip_redis,
              int require_all, FILE *out)
{
    R = r;
    RC = rc;
    no_redis = skip_redis;
    struct tcase *cases = NULL;
    size_t n = is_dir(root) ? discover(root, &cases) : 0;
    if (n == 0) {
        fprintf(out, "no case folders under %s (a case is %s/<function>/<case>/)\n", root, root);
        free(cases);
        return -1;
    }
    int failed = 0, skipped = 0, missing = 0; /* missing: functions without a case folder */
    for (size_t i = 0; i < n; i++) {
        char *msg = NULL;
        int skip = 0;
        check_case(&cases[i], &msg, &skip);
        if (msg) {
            fprintf(out, "FAIL %s (%s)\n%s", cases[i].label, cases[i].dir, msg);
            failed++;
        } else if (skip) {
            fprintf(out, "skip %s (no Redis)\n", cases[i].label);
            skipped++;
        } else {
            fprintf(out, "ok   %s\n", cases[i].label);
        }
        free(msg);
    }
    if (require_all) {
        /* the commands, reactors and timers of every module root has cases of */
        size_t total = r->ncmds + r->nreactors + r->ntimers;
        const char **names = xcalloc(total + 1, sizeof *names);
        const struct reg_module **mods = xcalloc(total + 1, sizeof *mods);
        size_t k = 0;
        for (size_t i = 0; i < r->ncmds; i++)
            names[k] = r->cmds[i].c->name, mods[k++] = r->cmds[i].mod;
        for (size_t i = 0; i < r->nreactors; i++)
            names[k] = r->reactors[i].x->name, mods[k++] = r->reactors[i].mod;
        for (size_t i = 0; i < r->ntimers; i++)
            names[k] = r->timers[i].t->name, mods[k++] = r->timers[i].mod;
        for (size_t m = 0; m < r->nmods; m++) {
            int covered = 0;
            for (size_t i = 0; i < n && !covered; i++) {
                const struct reg_module *owner = NULL;
                for (size_t j = 0; j < k && !owner; j++)
                    if (!strcmp(names[j], cases[i].fn))
                        owner = mods[j];
                const struct reg_projection *p = reg_projection_find(r, cases[i].fn);
                const struct reg_query *q = reg_query_find(r, cases[i].fn);
                covered = owner == &r->mods[m] || (p && p->mod == &r->mods[m]) ||
                          (q && q->mod == &r->mods[m]);
            }
            for (size_t i = 0; i < k && covered; i++) {
                if (mods[i] != &r->mods[m])
                    continue;
                char *p = path_join(root, names[i]);
                if (!is_dir(p)) {
                    fprintf(out, "FAIL %s has no case folder %s\n", names[i], p);
                    missing++;
                }
                free(p);
            }
        }
        free(names);
        free(mods);
    }
    fprintf(out, "%zu cases: %zu passed, %d failed, %d skipped\n", n, n - (size_t)failed -
            (size_t)skipped, failed + missing, skipped);
    for (size_t i = 0; i < n; i++) {
        free(cases[i].fn);
        free(cases[i].dir);
        free(cases[i].label);
    }
    free(cases);
    return failed + missing;
}
