/* core/disp.c — the dispatcher (see disp.h): a bounded FIFO of jobs, worker
 * threads each owning one PostgreSQL and one Redis connection, and the
 * execution of commands (load stream, evolve, decide, append, re-run on a
 * version conflict), queries and the built-in read endpoints.
 *
 * Invariants: a job is owned by the queue from disp_submit until a worker
 * calls its done(); done() is called exactly once per submitted job; a worker
 * reconnects lazily, so a database outage answers 503 instead of stopping it.
 */
#include "core/disp.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/es.h"
#include "core/fn_int.h"
#include "core/proj.h"
#include "core/rm.h"
#include "core/sc.h"
#include "core/util.h"

static struct {
    struct disp_config cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct disp_job **q;
    size_t head, len, cap;
    int stopping;
    pthread_t *threads;
    int nthreads;
} D = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

void disp_job_free(struct disp_job *job)
{
    if (!job)
        return;
    json_decref(job->cmd);
    json_decref(job->body);
    free(job->request);
    free(job->idempotency_key);
    for (size_t i = 0; i < job->nparams; i++) {
        free(job->params[i].name);
        free(job->params[i].value);
    }
    free(job->params);
    free(job);
}

void disp_problem(struct disp_job *job, int code, const char *msg)
{
    char type[64];
    const char *name = err_name(code);
    size_t i = 0;
    i += (size_t)snprintf(type, sizeof type, "/problems/");
    for (; *name && i + 1 < sizeof type; name++)
        type[i++] = *name == '_' ? '-' : (char)tolower((unsigned char)*name);
    type[i] = '\0';
    json_decref(job->body);
    job->problem = 1;
    job->status = err_http_status(code);
    job->body = json_pack("{s:s, s:s, s:i, s:s}", "type", type, "title", err_title(code), "status",
                          job->status, "detail", msg && *msg ? msg : err_title(code));
    if (code == ERR_UNAVAILABLE || code == ERR_BUSY)
        job->retry_after = 1;
}

static void fail(struct disp_job *job, const struct err *e)
{
    disp_problem(job, e->code, e->msg);
}

/* ---------- commands ---------- */

static void reply_ok(struct disp_job *job, int status, json_t *body)
{
    json_decref(job->body);
    job->status = status;
    job->body = body;
}

/* Returns 1 when the job was answered from its idempotency key (the stored
 * reply, or 422 when the key came with another request), 0 when the key is
 * unknown; on a lookup error answers the job and returns 1. */
static int replay_idempotent(PGconn *pg, struct disp_job *job, struct err *e)
{
    int status, same;
    json_t *reply = NULL;
    int rc = es_command_lookup(pg, job->idempotency_key, job->request, &status, &reply, &same, e);
    if (rc < 0) {
        fail(job, e);
        return 1;
    }
    if (rc == 0)
        return 0;
    if (!same) {
        json_decref(reply);
        err_set(e, ERR_IDEMPOTENCY,
                "idempotency key \"%.200s\" was already used with a different request",
                job->idempotency_key);
        fail(job, e);
        return 1;
    }
    reply_ok(job, status, reply);
    return 1;
}

/* Answers a command that failed with e: from its idempotency key when the
 * key holds a reply (the failure was the retry of a success), else with e. */
static void fail_command(PGconn *pg, struct disp_job *job, struct err *e)
{
    if (job->idempotency_key && replay_idempotent(pg, job, e))
        return;
    fail(job, e);
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
        struct fn_event fe = {evs.ev[i].stream_id, evs.ev[i].version, evs.ev[i].type,
                              evs.ev[i].data,      evs.ev[i].position, evs.ev[i].recorded_at};
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
        struct fn_event fe = {ce->stream_id, ce->version, d->ev[i].type, d->ev[i].data, "", ""};
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
static void run_command(struct disp_job *job, PGconn *pg)
{
    const struct fn_command *fc = job->command;
    struct err e = {0};
    if (!pg) {
        err_set(&e, ERR_UNAVAILABLE, "the event store is unavailable");
        return fail(job, &e);
    }
    const char *id = json_string_value(json_object_get(job->cmd, fc->id_field));
    char *stream_id = xasprintf("%s-%s", fc->category, id ? id : "");
    int status = fc->creates ? 201 : 200;
    int max = D.cfg.max_attempts > 0 ? D.cfg.max_attempts : 20;
    int use_cache = job->expected == DISP_NO_EXPECTED;
    for (int attempt = 1;; attempt++) {
        struct sc_entry *ce = use_cache ? sc_take(stream_id, (const void *)fc->evolve) : NULL;
        int cached = ce != NULL;
        if (!ce && !(ce = load_state(pg, fc, stream_id, &e))) {
            fail(job, &e);
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
        fn_decision_init(&d);
        int rc = fc->decide(ce->state, version, job->cmd, &d, &e);
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
            reply_ok(job, 200, body);
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
        json_t *reply = NULL;
        rc = es_append(pg, job->idempotency_key, job->request, status, d.reply, sa, ns, &reply, &e);
        free(ne);
        free(sa);
        if (rc == 0) {
            fold_emitted(fc, ce, &d);
            fn_decision_free(&d);
            sc_put(ce);
            proj_poke();
            reply_ok(job, status, reply);
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
            fail(job, &e);
        break;
    }
    free(stream_id);
}

/* ---------- queries and built-ins ---------- */

static const char *param(const struct disp_job *job, const char *name)
{
    for (size_t i = 0; i < job->nparams; i++)
        if (!strcmp(job->params[i].name, name))
            return job->params[i].value;
    return NULL;
}

static void run_query(struct disp_job *job, redisContext *rc)
{
    const char **names = xcalloc(job->nparams + 1, sizeof *names);
    const char **values = xcalloc(job->nparams + 1, sizeof *values);
    for (size_t i = 0; i < job->nparams; i++) {
        names[i] = job->params[i].name;
        values[i] = job->params[i].value;
    }
    struct fn_query_ctx q = {rc, 0, names, values, job->nparams};
    json_t *out = NULL;
    struct err e = {0};
    int code = job->query->run(&q, &out, &e);
    free(names);
    free(values);
    if (q.redis_failed) {
        json_decref(out);
        err_set(&e, ERR_UNAVAILABLE, "the read-model store is unavailable");
        fail(job, &e);
    } else if (code) {
        json_decref(out);
        fail(job, &e);
    } else {
        reply_ok(job, 200, out ? out : json_object());
    }
}

static int parse_count(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end || errno == ERANGE || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static void run_stream(struct disp_job *job, PGconn *pg)
{
    struct err e = {0};
    const char *sid = param(job, "stream_id");
    long long from = 0, limit = 1000;
    if (param(job, "from") && parse_count(param(job, "from"), 0, INT64_MAX, &from)) {
        err_set(&e, ERR_INVALID, "from must be a version number >= 0");
        return fail(job, &e);
    }
    if (param(job, "limit") && parse_count(param(job, "limit"), 1, 10000, &limit)) {
        err_set(&e, ERR_INVALID, "limit must be an integer from 1 to 10000");
        return fail(job, &e);
    }
    if (!pg) {
        err_set(&e, ERR_UNAVAILABLE, "the event store is unavailable");
        return fail(job, &e);
    }
    struct es_events evs = {0};
    if (es_read_stream(pg, sid, from, (size_t)limit, &evs, &e))
        return fail(job, &e);
    if (evs.n == 0 && from > 0 && es_read_stream(pg, sid, 0, 1, &evs, &e))
        return fail(job, &e);
    if (evs.n == 0) {
        err_set(&e, ERR_NOT_FOUND, "no stream \"%.300s\"", sid);
        return fail(job, &e);
    }
    if (from > 0 && evs.ev[0].version <= from) /* the stream exists, nothing after from */
        es_events_clear(&evs);
    json_t *arr = json_array();
    for (size_t i = 0; i < evs.n; i++) {
        struct es_event *ev = &evs.ev[i];
        json_array_append_new(arr, json_pack("{s:I, s:s, s:s, s:O, s:O, s:s, s:s}", "version",
                                             (json_int_t)ev->version, "type", ev->type, "event_id",
                                             ev->event_id, "data", ev->data, "metadata",
                                             ev->metadata, "position", ev->position,
                                             "recorded_at", ev->recorded_at));
    }
    es_events_clear(&evs);
    reply_ok(job, 200, json_pack("{s:s, s:o}", "stream", sid, "events", arr));
}

static void run_health(struct disp_job *job, PGconn *pg, redisContext *rc)
{
    struct err e = {0};
    char head[ES_POSITION_LEN + 1] = "";
    int pg_up = pg && es_head(pg, head, &e) == 0;
    int redis_up = 0;
    json_t *projs = json_array();
    if (rc) {
        redisReply *r = redisCommand(rc, "PING");
        redis_up = r && r->type == REDIS_REPLY_STATUS;
        if (r)
            freeReplyObject(r);
        for (size_t i = 0; redis_up && fn_projections[i]; i++) {
            char cp[33];
            if (rm_checkpoint_get(rc, fn_projections[i]->name, fn_projections[i]->version, cp, &e)) {
                redis_up = 0;
                break;
            }
            json_array_append_new(projs, json_pack("{s:s, s:i, s:s, s:b}", "name",
                                                   fn_projections[i]->name, "version",
                                                   fn_projections[i]->version, "checkpoint", cp,
                                                   "caught_up", pg_up && strcmp(cp, head) >= 0));
        }
    }
    int ok = pg_up && redis_up;
    char halted[512];
    int failed = proj_failure(halted, sizeof halted);
    json_t *body = json_pack("{s:s, s:s, s:s, s:s, s:o}", "status",
                             !ok ? "unavailable" : failed ? "degraded" : "ok", "postgres",
                             pg_up ? "up" : "down", "redis", redis_up ? "up" : "down", "position",
                             head, "projections", projs);
    if (failed) /* queries still answer, from read models that no longer move */
        json_object_set_new(body, "projections_halted", json_string(halted));
    reply_ok(job, ok ? 200 : 503, body);
    if (!ok)
        job->retry_after = 1;
}

void disp_run(struct disp_job *job, PGconn *pg, redisContext *redis)
{
    switch (job->kind) {
    case DISP_COMMAND: run_command(job, pg); break;
    case DISP_QUERY: run_query(job, redis); break;
    case DISP_STREAM: run_stream(job, pg); break;
    case DISP_HEALTH: run_health(job, pg, redis); break;
    }
    if (!job->body)
        disp_problem(job, ERR_INTERNAL, "no reply");
}

/* ---------- workers ---------- */

struct worker {
    PGconn *pg;
    redisContext *rc;
};

static void worker_connect(struct worker *w)
{
    struct err e = {0};
    if (w->pg && PQstatus(w->pg) != CONNECTION_OK) {
        PQfinish(w->pg);
        w->pg = NULL;
    }
    if (!w->pg && !(w->pg = es_connect(D.cfg.database_url, &e)))
        log_warn("%s", e.msg);
    if (w->rc && w->rc->err) {
        redisFree(w->rc);
        w->rc = NULL;
    }
    if (!w->rc && !(w->rc = rm_connect(D.cfg.redis_url, 2000, &e)))
        log_warn("%s", e.msg);
}

static void *worker_main(void *arg)
{
    (void)arg;
    struct worker w = {0};
    for (;;) {
        pthread_mutex_lock(&D.mu);
        while (D.len == 0 && !D.stopping)
            pthread_cond_wait(&D.cv, &D.mu);
        if (D.len == 0 && D.stopping) {
            pthread_mutex_unlock(&D.mu);
            break;
        }
        struct disp_job *job = D.q[D.head];
        D.head = (D.head + 1) % D.cap;
        D.len--;
        pthread_mutex_unlock(&D.mu);
        worker_connect(&w);
        disp_run(job, w.pg, w.rc);
        if (job->kind != DISP_COMMAND && job->status == 503 &&
            ((w.rc && w.rc->err) || (w.pg && PQstatus(w.pg) != CONNECTION_OK))) {
            /* a connection broke under a read (PostgreSQL or Redis restarted):
             * reconnect and read once more. Never for a command: whether its
             * append committed before the connection broke is unknown, so
             * the client retries it, with its Idempotency-Key. */
            worker_connect(&w);
            json_decref(job->body);
            job->body = NULL;
            job->retry_after = 0;
            disp_run(job, w.pg, w.rc);
        }
        job->done(job);
    }
    if (w.pg)
        PQfinish(w.pg);
    if (w.rc)
        redisFree(w.rc);
    return NULL;
}

int disp_start(const struct disp_config *cfg, struct err *e)
{
    if (cfg->workers < 1 || cfg->workers > 256)
        return err_set(e, ERR_INVALID, "CQRSD_WORKERS must be from 1 to 256, got %d", cfg->workers);
    if (cfg->queue_size < 1)
        return err_set(e, ERR_INVALID, "queue size must be positive, got %d", cfg->queue_size);
    D.cfg = *cfg;
    sc_init(cfg->state_cache);
    D.cap = (size_t)cfg->queue_size;
    D.q = xcalloc(D.cap, sizeof *D.q);
    D.head = D.len = 0;
    D.stopping = 0;
    D.nthreads = cfg->workers;
    D.threads = xcalloc((size_t)cfg->workers, sizeof *D.threads);
    for (int i = 0; i < cfg->workers; i++)
        pthread_create(&D.threads[i], NULL, worker_main, NULL);
    return 0;
}

int disp_submit(struct disp_job *job, struct err *e)
{
    pthread_mutex_lock(&D.mu);
    if (D.stopping) {
        pthread_mutex_unlock(&D.mu);
        return err_set(e, ERR_UNAVAILABLE, "server is shutting down");
    }
    if (D.len == D.cap) {
        pthread_mutex_unlock(&D.mu);
        return err_set(e, ERR_BUSY, "server busy: %zu requests queued, try again", D.cap);
    }
    D.q[(D.head + D.len) % D.cap] = job;
    D.len++;
    pthread_cond_signal(&D.cv);
    pthread_mutex_unlock(&D.mu);
    return 0;
}

void disp_stop(void)
{
    pthread_mutex_lock(&D.mu);
    D.stopping = 1;
    pthread_cond_broadcast(&D.cv);
    pthread_mutex_unlock(&D.mu);
    for (int i = 0; i < D.nthreads; i++)
        pthread_join(D.threads[i], NULL);
    free(D.threads);
    free(D.q);
    sc_clear();
    D.threads = NULL;
    D.q = NULL;
    D.nthreads = 0;
}
