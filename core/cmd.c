/* core/cmd.c — the command cycle (DESIGN.md §2): state (cached, or read and
 * folded from the store), decide, append with the version decided on as the
 * expected version, and on a version conflict the whole cycle again.
 *
 * Invariants: decide never runs on a state that is not the stream's at some
 * version; an append's compare-and-set is the only judge of staleness (the
 * state cache is a guess); a rejection is never decided on a cached state
 * alone; an idempotency key replays the first reply, never a second append.
 */
#include "core/cmd.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/es.h"
#include "core/fn_int.h"
#include "core/gc.h"
#include "core/proj.h"
#include "core/sc.h"
#include "core/util.h"

/* Returns 1 when the job was answered from its idempotency key (the stored
 * reply, or 422 when the key came with another request), 0 when the key is
 * unknown; on a lookup error answers the job and returns 1. */
static int replay_idempotent(PGconn *pg, struct disp_job *job, struct err *e)
{
    int status, same;
    json_t *reply = NULL;
    int rc = es_command_lookup(pg, job->idempotency_key, job->request, &status, &reply, &same, e);
    if (rc < 0) {
        disp_fail(job, e);
        return 1;
    }
    if (rc == 0)
        return 0;
    if (!same) {
        json_decref(reply);
        err_set(e, ERR_IDEMPOTENCY,
                "idempotency key \"%.200s\" was already used with a different request",
                job->idempotency_key);
        disp_fail(job, e);
        return 1;
    }
    disp_reply(job, status, reply);
    return 1;
}

/* Answers a command that failed with e: from its idempotency key when the
 * key holds a reply (the failure was the retry of a success), else with e. */
static void fail_command(PGconn *pg, struct disp_job *job, struct err *e)
{
    if (job->idempotency_key && replay_idempotent(pg, job, e))
        return;
    disp_fail(job, e);
}

/* Loads the stream from the store and folds it into a new cache entry.
 * Returns NULL and sets e on a read error. */
static struct sc_entry *load_state(PGconn *pg, const struct fn_command *fc, const char *stream_id,
                                   struct err *e)
{
    struct es_events evs = {0};
    if (es_read_stream(pg, stream_id, 0, SIZE_MAX >> 1, &evs, e))
        return NULL;
    struct sc_entry *ce = xcalloc(1, sizeof *ce);
    ce->stream_id = xstrdup(stream_id);
    ce->family = (const void *)fc->evolve;
    ce->state = xcalloc(1, fc->state_size ? fc->state_size : 1);
    ce->release = fc->release;
    for (size_t i = 0; i < evs.n; i++) {
        struct fn_event fe = fn_event_of(&evs.ev[i]);
        fc->evolve(ce->state, &fe);
    }
    ce->version = evs.n ? evs.ev[evs.n - 1].version : 0;
    es_events_clear(&evs);
    return ce;
}

/* Folds the events decide emitted for the command's own stream into the
 * cached state, as the store numbered them: version + 1, version + 2, ... */
static void fold_emitted(const struct fn_command *fc, struct sc_entry *ce,
                         const struct fn_decision *d)
{
    for (size_t i = 0; i < d->n; i++) {
        if (d->ev[i].stream_id)
            continue;
        ce->version++;
        struct fn_event fe = {ce->stream_id, ce->version, d->ev[i].type, d->ev[i].data, "", "", ""};
        fc->evolve(ce->state, &fe);
    }
}

/*
 * Runs a command: state (cached, or loaded and folded from the store), decide,
 * append with the version decided on as expected version. On a version
 * conflict the cycle runs again from the store (bounded), unless the client
 * gave Expected-Version. A rejection decided on a cached state is checked
 * again on a state read from the store, so a stale cache never rejects.
 * An idempotency key is looked up only when needed: before any failure (the
 * retry of a success fails on the state that success made: stream exists,
 * version moved, cart checked out), and when the store refuses the key as
 * already used.
 */
void cmd_run(struct disp_job *job, PGconn *pg)
{
    const struct fn_command *fc = job->command->c;
    struct err e = {0};
    if (!pg) {
        err_set(&e, ERR_UNAVAILABLE, "the event store is unavailable");
        return disp_fail(job, &e);
    }
    const char *id = json_string_value(json_object_get(job->cmd, fc->id_field));
    char *stream_id = xasprintf("%s-%s", fc->category, id ? id : "");
    int status = fc->creates ? 201 : 200;
    int max = job->command->limits.retries + 1;
    int use_cache = job->expected == DISP_NO_EXPECTED;
    for (int attempt = 1;; attempt++) {
        struct sc_entry *ce = use_cache ? sc_take(stream_id, (const void *)fc->evolve) : NULL;
        int cached = ce != NULL;
        if (!ce && !(ce = load_state(pg, fc, stream_id, &e))) {
            disp_fail(job, &e);
            break;
        }
        int64_t version = ce->version;
        if (job->expected != DISP_NO_EXPECTED && job->expected != ES_ANY &&
            job->expected != version) {
            sc_entry_free(ce);
            if (job->expected == ES_NO_STREAM)
                err_set(&e, ERR_CONFLICT,
                        "could not append to stream \"%s\": version conflict (expected no "
                        "stream, found %" PRId64 ")",
                        stream_id, version);
            else
                err_set(&e, ERR_CONFLICT,
                        "could not append to stream \"%s\": version conflict (expected %" PRId64
                        ", found %" PRId64 ")",
                        stream_id, job->expected, version);
            fail_command(pg, job, &e);
            break;
        }
        if (fc->creates && version > 0) {
            sc_put(ce);
            err_set(&e, ERR_CONFLICT, "%s \"%s\" already exists (stream \"%s\", version %" PRId64 ")",
                    fc->category, id, stream_id, version);
            fail_command(pg, job, &e);
            break;
        }
        struct fn_decision d;
        fn_decision_init(&d, job->command->mod->desc->events);
        int rc = fc->decide(ce->state, version, job->cmd, &d, &e);
        if (rc == 0 && d.undeclared[0]) {
            rc = err_set(&e, ERR_INTERNAL,
                         "command %s emitted an event of type \"%s\", which module %s does not "
                         "declare",
                         fc->name, d.undeclared, job->command->mod->desc->name);
            log_error("%s", e.msg);
            fn_decision_free(&d);
            sc_entry_free(ce);
            disp_fail(job, &e);
            break;
        }
        if (rc) {
            fn_decision_free(&d);
            if (cached) { /* make sure on a fresh state before rejecting */
                sc_entry_free(ce);
                use_cache = 0;
                attempt--;
                continue;
            }
            if (version > 0)
                sc_put(ce);
            else
                sc_entry_free(ce);
            fail_command(pg, job, &e);
            break;
        }
        if (d.n == 0) { /* nothing to record: reply with the current version */
            json_t *body = json_deep_copy(d.reply);
            json_object_set_new(body, "stream", json_string(stream_id));
            json_object_set_new(body, "version", json_integer(version));
            fn_decision_free(&d);
            sc_put(ce);
            disp_reply(job, 200, body);
            break;
        }
        /* group emitted events by stream, own stream first */
        struct es_stream_append *sa = xcalloc(d.n, sizeof *sa);
        struct es_new_event *ne = xcalloc(d.n, sizeof *ne);
        size_t ns = 0, k = 0;
        int64_t expected = job->expected != DISP_NO_EXPECTED ? job->expected
                           : version == 0                  ? ES_NO_STREAM
                                                           : version;
        for (int pass = 0; pass < 2; pass++) {
            for (size_t i = 0; i < d.n; i++) {
                const char *sid = d.ev[i].stream_id;
                if ((pass == 0) != (sid == NULL))
                    continue;
                const char *target = sid ? sid : stream_id;
                if (ns == 0 || strcmp(sa[ns - 1].stream_id, target)) {
                    sa[ns] = (struct es_stream_append){target, NULL,
                                                       sid ? ES_NO_STREAM : expected, ne + k, 0};
                    ns++;
                }
                ne[k++] = (struct es_new_event){d.ev[i].type, d.ev[i].data, NULL, NULL};
                sa[ns - 1].n++;
            }
        }
        struct es_command_append ca = {job->idempotency_key, job->request, status, d.reply, sa, ns,
                                       0, {0}, NULL};
        rc = gc_append(pg, &ca);
        json_t *reply = ca.reply;
        e = ca.err;
        free(ne);
        free(sa);
        if (rc == 0) {
            fold_emitted(fc, ce, &d);
            fn_decision_free(&d);
            sc_put(ce);
            proj_poke();
            disp_reply(job, status, reply);
            break;
        }
        fn_decision_free(&d);
        sc_entry_free(ce);
        use_cache = 0;
        if (rc == ERR_IDEMPOTENCY && replay_idempotent(pg, job, &e))
            break;
        if (rc == ERR_CONFLICT && job->expected == DISP_NO_EXPECTED && attempt < max) {
            log_debug("command %s on %s: %s; running it again (attempt %d)", fc->name, stream_id,
                      e.msg, attempt + 1);
            continue;
        }
        if (rc == ERR_CONFLICT && job->expected == DISP_NO_EXPECTED)
            err_set(&e, ERR_CONFLICT,
                    "could not append to stream \"%s\": still conflicting after %d attempts",
                    stream_id, attempt);
        if (rc == ERR_CONFLICT)
            fail_command(pg, job, &e);
        else
            disp_fail(job, &e);
        break;
    }
    free(stream_id);
}

int cmd_check_fields(const struct fn_command *fc, const json_t *body,
                     const struct disp_param *params, size_t nparams, struct err *e)
{
    if (!fc->fields)
        return 0;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)body, key, v) {
        int known = !strcmp(key, fc->id_field) || !strcmp(key, "occurred_at");
        for (size_t i = 0; i < nparams && !known; i++)
            known = !strcmp(key, params[i].name);
        for (const char *const *f = fc->fields; *f && !known; f++)
            known = !strcmp(key, *f);
        if (known)
            continue;
        char list[400];
        size_t w = (size_t)snprintf(list, sizeof list, "%s", fc->id_field);
        for (const char *const *f = fc->fields; *f && w < sizeof list; f++)
            w += (size_t)snprintf(list + w, sizeof list - w, ", %s", *f);
        if (w < sizeof list)
            snprintf(list + w, sizeof list - w, ", occurred_at");
        return err_set(e, ERR_INVALID, "unknown field \"%.60s\" in the body of %s (its fields: %s)",
                       util_text_ok(key, 60, 1) ? key : "?", fc->name, list);
    }
    return 0;
}

int cmd_prepare(const struct fn_command *fc, json_t *cmd, int generate_id,
                const char *default_at, struct err *e)
{
    json_t *id = json_object_get(cmd, fc->id_field);
    if (!id || json_is_null(id)) {
        if (!fc->creates || !generate_id)
            return err_set(e, ERR_INVALID, "%s is required", fc->id_field);
        char uuid[37];
        util_uuid4(uuid);
        json_object_set_new(cmd, fc->id_field, json_string(uuid));
    } else if (!json_is_string(id) || !util_text_ok(json_string_value(id), UTIL_ID_MAX, 0)) {
        return err_set(e, ERR_INVALID,
                       "%s must be a string of 1 to %d bytes without control characters or '/'",
                       fc->id_field, UTIL_ID_MAX);
    }
    json_t *at = json_object_get(cmd, "occurred_at");
    char t[RTIME_BUFSZ];
    int rc;
    if (!at || json_is_null(at)) {
        if (!default_at)
            rtime_now(t);
        else if (rtime_normalize(default_at, t, NULL))
            rtime_now(t);
    } else if (!json_is_string(at)) {
        return err_set(e, ERR_INVALID, "occurred_at must be an RFC 3339 string");
    } else if ((rc = rtime_normalize(json_string_value(at), t, e))) {
        return err_wrap(e, rc, "occurred_at");
    }
    json_object_set_new(cmd, "occurred_at", json_string(t));
    return 0;
}

int cmd_issue(struct reg *r, PGconn *pg, const char *name, json_t *cmd, const char *key,
              const char *default_at, int *status, struct err *e)
{
    *status = 0;
    const struct reg_command *rc = reg_command_find(r, name);
    if (!rc) {
        json_decref(cmd);
        return err_set(e, ERR_INVALID, "no command \"%.100s\" is loaded", name);
    }
    if (!json_is_object(cmd)) {
        json_decref(cmd);
        return err_set(e, ERR_INVALID, "command %s was issued with a body that is not an object",
                       name);
    }
    int code = cmd_prepare(rc->c, cmd, 0, default_at, e);
    if (code) {
        json_decref(cmd);
        return err_wrap(e, code, "command %s was issued malformed", name);
    }
    struct disp_job *job = xcalloc(1, sizeof *job);
    job->kind = DISP_COMMAND;
    reg_acquire(r);
    job->reg = r;
    job->command = rc;
    job->cmd = cmd;
    char *canon = json_dumps(cmd, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    job->request = xasprintf("ISSUE %s\n%s", name, canon);
    free(canon);
    job->idempotency_key = xstrdup(key);
    job->expected = DISP_NO_EXPECTED;
    int64_t t0 = util_now_us();
    atomic_fetch_add(&rc->fn->in_flight, 1);
    cmd_run(job, pg);
    atomic_fetch_sub(&rc->fn->in_flight, 1);
    reg_fn_count(rc->fn, t0, job->status >= 500);
    *status = job->status;
    /* a malformed command, a reused key, a store down or a bug is a failure;
     * 404, 409 and 422 are the command's own answer */
    code = job->status >= 500 ? (job->code ? job->code : ERR_INTERNAL)
           : job->code == ERR_INVALID || job->code == ERR_IDEMPOTENCY ? job->code
                                                                     : 0;
    const char *detail = json_string_value(json_object_get(job->body, "detail"));
    if (job->status >= 400)
        err_set(e, code, "command %s answered %d: %s", name, job->status, detail ? detail : "");
    disp_job_free(job);
    return code;
}
