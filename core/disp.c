/* core/disp.c — the dispatcher (see disp.h): a bounded FIFO of jobs and the
 * worker threads, each owning one PostgreSQL and one Redis connection, that
 * take jobs from it and hand each to its layer: core/cmd.c, core/query.c,
 * core/builtin.c.
 *
 * Invariants: a job is owned by the queue from disp_submit until a worker
 * calls its done(); done() is called exactly once per submitted job; a worker
 * reconnects lazily, so a database outage answers 503 instead of stopping it.
 */
#include "core/disp.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/builtin.h"
#include "core/cmd.h"
#include "core/es.h"
#include "core/query.h"
#include "core/rm.h"
#include "core/sc.h"
#include "core/util.h"

/* A job's state, under D.wmu. */
enum { QUEUED, RUNNING, DONE, EXPIRED };

#define WATCH_MS 20 /* how often the watchdog looks at deadlines */

/* An idle worker, on its own stack, waiting on its own condition variable. */
struct idle {
    pthread_cond_t cv;
    int woken;
    struct idle *next;
};

static struct {
    struct disp_config cfg;
    pthread_mutex_t mu;
    /* idle workers, the most recently idle on top: a job goes to the worker
     * that idled last (its caches are warm, and under a light load a few
     * workers do all the work instead of all of them in turn, with a context
     * switch each) */
    struct idle *idle;
    /* two rings of queued jobs, each in arrival order: commands, and reads
     * (queries and built-in routes); len counts both, against cap */
    struct ring {
        struct disp_job **q;
        size_t head, len;
    } ring[2];
    size_t len, cap;
    int reads_running; /* workers running a read, at most read_cap */
    int read_cap;
    int stopping;
    pthread_t *threads;
    int nthreads;
    /* the watch list: every submitted job with a deadline, until answered */
    pthread_mutex_t wmu;
    struct disp_job *watched;
    pthread_t watchdog;
    int watch_stop;
} D = {.mu = PTHREAD_MUTEX_INITIALIZER,
       .wmu = PTHREAD_MUTEX_INITIALIZER};

struct reg_fn *disp_job_fn(const struct disp_job *job)
{
    return job->kind == DISP_COMMAND ? job->command->fn
           : job->kind == DISP_QUERY ? job->query->fn
                                     : NULL;
}

const struct fn_limits *disp_job_limits(const struct disp_job *job)
{
    return job->kind == DISP_COMMAND ? &job->command->limits
           : job->kind == DISP_QUERY ? &job->query->limits
                                     : NULL;
}

static void unwatch(struct disp_job *job)
{
    if (job->wprev)
        job->wprev->wnext = job->wnext;
    else if (D.watched == job)
        D.watched = job->wnext;
    if (job->wnext)
        job->wnext->wprev = job->wprev;
    job->wprev = job->wnext = NULL;
}

/* Gives back the job's concurrency slot. */
static void release_slot(struct disp_job *job)
{
    if (job->holds_slot) {
        atomic_fetch_sub(&disp_job_fn(job)->in_flight, 1);
        job->holds_slot = 0;
    }
}

/* The watchdog: answers the jobs whose deadline passed (see disp_submit). */
static void *watchdog_main(void *arg)
{
    (void)arg;
    for (;;) {
        poll(NULL, 0, WATCH_MS);
        pthread_mutex_lock(&D.wmu);
        if (D.watch_stop) {
            pthread_mutex_unlock(&D.wmu);
            break;
        }
        int64_t now = util_now_ms();
        for (struct disp_job *job = D.watched, *next; job; job = next) {
            next = job->wnext;
            if (now < job->deadline_ms)
                continue;
            unwatch(job);
            struct reg_fn *fn = disp_job_fn(job);
            const char *name = fn ? fn->name : "built-in";
            int timeout = disp_job_limits(job) ? disp_job_limits(job)->timeout_ms
                                               : REG_DEFAULT_TIMEOUT_MS;
            char msg[400];
            int code;
            if (job->state == QUEUED) {
                code = ERR_BUSY;
                snprintf(msg, sizeof msg,
                         "the request waited %lld ms in the queue, past the timeout of %s (%d "
                         "ms); it was not run: try again",
                         (long long)(now - job->queued_ms), name, timeout);
            } else if (job->kind == DISP_COMMAND) {
                code = ERR_TIMEOUT;
                snprintf(msg, sizeof msg,
                         "command %s did not finish within its timeout of %d ms; it may still "
                         "complete: retry with the same Idempotency-Key to learn its outcome",
                         name, timeout);
            } else {
                code = ERR_TIMEOUT;
                snprintf(msg, sizeof msg, "%s did not finish within its timeout of %d ms", name,
                         timeout);
            }
            log_warn("%s", msg);
            if (fn) /* a reply of 500 or more: an error of the function */
                atomic_fetch_add(&fn->errors, 1);
            job->state = EXPIRED;
            job->expired(job, code, msg); /* the job is ours from now on */
        }
        pthread_mutex_unlock(&D.wmu);
    }
    return NULL;
}

void disp_job_free(struct disp_job *job)
{
    if (!job)
        return;
    json_decref(job->cmd);
    json_decref(job->body);
    free(job->text);
    free(job->request_id);
    free(job->request);
    free(job->idempotency_key);
    for (size_t i = 0; i < job->nparams; i++) {
        free(job->params[i].name);
        free(job->params[i].value);
    }
    free(job->params);
    reg_release(job->reg);
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
    free(job->text);
    job->text = NULL;
    job->problem = 1;
    job->code = code;
    job->status = err_http_status(code);
    job->body = json_pack("{s:s, s:s, s:i, s:s}", "type", type, "title", err_title(code), "status",
                          job->status, "detail", msg && *msg ? msg : err_title(code));
    if (code == ERR_UNAVAILABLE || code == ERR_BUSY || code == ERR_THROTTLED)
        job->retry_after = 1;
}

void disp_fail(struct disp_job *job, const struct err *e)
{
    disp_problem(job, e->code, e->msg);
}

void disp_reply(struct disp_job *job, int status, json_t *body)
{
    json_decref(job->body);
    free(job->text);
    job->text = NULL;
    job->problem = 0; /* a read run again after a 503 may answer 200 */
    job->code = 0;
    job->status = status;
    job->body = body;
}

void disp_reply_text(struct disp_job *job, int status, char *text, const char *content_type)
{
    disp_reply(job, status, NULL); /* frees a text set before */
    job->text = text;
    job->content_type = content_type;
}

const char *disp_param(const struct disp_job *job, const char *name)
{
    for (size_t i = 0; i < job->nparams; i++)
        if (!strcmp(job->params[i].name, name))
            return job->params[i].value;
    return NULL;
}

/* The oldest of cps[i] over the projections i of r in mask (bit i:
 * r->projs[i], query_call's read mask) into out; *which gets its index.
 * Returns 0 when mask holds none of them (out is then ""). */
static int oldest_read(const struct reg *r, const char (*cps)[33], uint64_t mask,
                       char out[33], size_t *which)
{
    out[0] = '\0';
    int any = 0;
    for (size_t i = 0; i < r->nprojs; i++) {
        if (!(mask >> (i < 63 ? i : 63) & 1))
            continue;
        if (!any || strcmp(cps[i], out) < 0) {
            memcpy(out, cps[i], 33);
            *which = i;
        }
        any = 1;
    }
    return any;
}

/* The checkpoints known here of every projection of r into cps. */
static void known_checkpoints(const struct reg *r, char (*cps)[33])
{
    for (size_t i = 0; i < r->nprojs; i++)
        rm_live_checkpoint(r->projs[i].live, cps[i]);
}

/* Reads the checkpoints from Redis when this instance's copy is older than
 * RM_LIVE_REFRESH_MS (an instance whose runner is not the one applying the
 * events learns them so), or always when force. */
static void refresh_checkpoints(const struct reg *r, redisContext *rc, int force)
{
    if (!rc || r->nprojs == 0)
        return;
    long long oldest = -1;
    for (size_t i = 0; i < r->nprojs; i++) {
        char cp[33];
        long long at = rm_live_checkpoint(r->projs[i].live, cp);
        if (oldest < 0 || at < oldest)
            oldest = at;
    }
    if (!force && util_now_ms() - oldest <= RM_LIVE_REFRESH_MS)
        return;
    char(*cps)[33] = xcalloc(r->nprojs, sizeof *cps);
    struct err e = {0};
    rm_checkpoints_get(rc, r, cps, NULL, &e); /* raises the copies; a failure keeps them */
    free(cps);
}

static void run_query(struct disp_job *job, PGconn *pg, redisContext *rc)
{
    const char **names = xcalloc(job->nparams + 1, sizeof *names);
    const char **values = xcalloc(job->nparams + 1, sizeof *values);
    for (size_t i = 0; i < job->nparams; i++) {
        names[i] = job->params[i].name;
        values[i] = job->params[i].value;
    }
    const struct reg *r = job->reg;
    int64_t deadline = util_now_ms() + job->wait_ms;
    json_t *out = NULL;
    struct err e = {0};
    int code;
    for (;;) {
        refresh_checkpoints(r, rc, 0);
        /* what the read models held before the query read them: a lower
         * bound of what its reply reflects */
        char(*cps)[33] = xcalloc(r->nprojs + 1, sizeof *cps);
        known_checkpoints(r, cps);
        uint64_t read = 0;
        code = query_call(r, job->query->q, rc, NULL, names, values, job->nparams, &out, &read,
                          &e);
        char pos[33];
        size_t which = 0;
        int any = oldest_read(r, (const char(*)[33])cps, read, pos, &which);
        memcpy(job->position, pos, 33);
        /* a 404 from read models behind is what read-your-writes is for: any
         * answer of the function waits; a store that failed does not */
        if (code == ERR_UNAVAILABLE || code == ERR_INTERNAL || !job->min_position[0] || !any ||
            strcmp(pos, job->min_position) >= 0) {
            free(cps);
            break;
        }
        /* behind the position asked for: wait until the projections read pass
         * it, then read again */
        json_decref(out);
        out = NULL;
        code = 0;
        err_clear(&e);
        char now[33];
        for (;;) {
            refresh_checkpoints(r, rc, 1);
            known_checkpoints(r, cps);
            oldest_read(r, (const char(*)[33])cps, read, now, &which);
            if (strcmp(now, job->min_position) >= 0 || util_now_ms() >= deadline)
                break;
            poll(NULL, 0, 5);
        }
        free(cps);
        if (strcmp(now, job->min_position) >= 0)
            continue;
        const struct fn_projection *p = r->projs[which].p;
        long long lag = 0;
        double secs = 0;
        struct err le = {0};
        char behind[120] = "";
        if (pg && es_lag(pg, now, &lag, &secs, &le) == 0)
            snprintf(behind, sizeof behind, ", %lld event%s behind the newest (%.1f s)", lag,
                     lag == 1 ? "" : "s", secs);
        code = err_set(&e, ERR_TIMEOUT,
                       "projection %s v%d has not reached position %s within %d ms: it is at "
                       "%s%s",
                       p->name, p->version, job->min_position, job->wait_ms,
                       *now ? now : "(no event yet)", behind);
        break;
    }
    free(names);
    free(values);
    if (code)
        disp_problem(job, code, e.msg);
    else
        disp_reply(job, 200, out);
}

void disp_run(struct disp_job *job, PGconn *pg, redisContext *redis)
{
    switch (job->kind) {
    case DISP_COMMAND: cmd_run(job, pg); break;
    case DISP_QUERY: run_query(job, pg, redis); break;
    case DISP_BUILTIN: builtin_run(job, pg, redis); break;
    }
    if (!job->body && !job->text)
        disp_problem(job, ERR_INTERNAL, "no reply");
}

/* ---------- workers ---------- */

struct worker {
    PGconn *pg;
    redisContext *rc;
};

/* the workers' connections open now (disp_stats) */
static atomic_int pg_open, redis_open;

static void worker_connect(struct worker *w)
{
    struct err e = {0};
    /* an idle connection the server has closed (PostgreSQL restarted since
     * the last job) has its goodbye (a FATAL message) and EOF waiting: the
     * first non-blocking read takes the message, the second meets the EOF and
     * marks the connection bad, so the job gets a new one instead of a 503 */
    for (int i = 0; i < 2 && w->pg && PQstatus(w->pg) == CONNECTION_OK; i++)
        if (!PQconsumeInput(w->pg))
            log_info("a PostgreSQL connection was closed by the server: reconnecting");
    if (w->pg && PQstatus(w->pg) != CONNECTION_OK) {
        PQfinish(w->pg);
        w->pg = NULL;
        atomic_fetch_sub(&pg_open, 1);
    }
    if (!w->pg) {
        if ((w->pg = es_connect(D.cfg.database_url, &e)))
            atomic_fetch_add(&pg_open, 1);
        else
            log_warn("%s", e.msg);
    }
    if (w->rc && w->rc->err) {
        redisFree(w->rc);
        w->rc = NULL;
        atomic_fetch_sub(&redis_open, 1);
    }
    if (!w->rc) {
        if ((w->rc = rm_connect(D.cfg.redis_url, 2000, &e)))
            atomic_fetch_add(&redis_open, 1);
        else
            log_warn("%s", e.msg);
    }
}

/* Wakes the idle worker on top (under D.mu). */
static void wake_one(void)
{
    if (D.idle) {
        struct idle *w = D.idle;
        D.idle = w->next;
        w->woken = 1;
        pthread_cond_signal(&w->cv);
    }
}

/* A read ended. The worker that ran it looks at the queue next, so a read
 * waiting for the slot needs no other thread woken; at stop every idle worker
 * looks again, so the last ones see the queue empty and leave. */
static void read_done(void)
{
    pthread_mutex_lock(&D.mu);
    D.reads_running--;
    if (D.stopping)
        while (D.idle)
            wake_one();
    pthread_mutex_unlock(&D.mu);
}

static void *worker_main(void *arg)
{
    (void)arg;
    struct worker w = {0};
    struct idle me = {.woken = 0};
    pthread_cond_init(&me.cv, NULL);
    for (;;) {
        pthread_mutex_lock(&D.mu);
        struct disp_job *job = NULL;
        int read = 0;
        for (;;) {
            if (D.ring[1].len && D.reads_running < D.read_cap) {
                read = 1;
                break;
            }
            if (D.ring[0].len)
                break;
            if (D.len == 0 && D.stopping)
                break;
            me.woken = 0;
            me.next = D.idle;
            D.idle = &me;
            while (!me.woken)
                pthread_cond_wait(&me.cv, &D.mu); /* popped by disp_submit or disp_stop */
        }
        if (D.len == 0 && D.stopping) {
            pthread_mutex_unlock(&D.mu);
            break;
        }
        struct ring *rg = &D.ring[read];
        job = rg->q[rg->head];
        rg->head = (rg->head + 1) % D.cap;
        rg->len--;
        D.len--;
        D.reads_running += read;
        pthread_mutex_unlock(&D.mu);
        pthread_mutex_lock(&D.wmu);
        int expired = job->state == EXPIRED; /* answered while queued: never run */
        job->state = RUNNING;
        pthread_mutex_unlock(&D.wmu);
        if (expired) {
            release_slot(job);
            disp_job_free(job);
            if (read)
                read_done();
            continue;
        }
        int64_t t0 = util_now_us();
        struct reg_fn *jfn = disp_job_fn(job);
        log_context(job->request_id, jfn ? jfn->name : NULL);
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
        struct reg_fn *fn = disp_job_fn(job);
        release_slot(job);
        pthread_mutex_lock(&D.wmu);
        int late = job->state == EXPIRED;
        job->state = DONE;
        unwatch(job);
        pthread_mutex_unlock(&D.wmu);
        /* a late job's 504 was counted by the watchdog that sent it */
        if (fn)
            reg_fn_count(fn, t0, job->status >= 500 && !late);
        if (read)
            read_done();
        if (late) { /* the watchdog answered the client: nobody waits for this */
            log_warn("%s finished %lld ms after its deadline, with status %d", fn ? fn->name : "a "
                     "built-in route", (long long)(util_now_ms() - job->deadline_ms), job->status);
            log_context(NULL, NULL);
            disp_job_free(job);
        } else {
            log_context(NULL, NULL); /* the job, and its request id, are the caller's now */
            job->done(job);
        }
    }
    if (w.pg) {
        PQfinish(w.pg);
        atomic_fetch_sub(&pg_open, 1);
    }
    if (w.rc) {
        redisFree(w.rc);
        atomic_fetch_sub(&redis_open, 1);
    }
    pthread_cond_destroy(&me.cv);
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
    for (int i = 0; i < 2; i++)
        D.ring[i] = (struct ring){xcalloc(D.cap, sizeof *D.ring[i].q), 0, 0};
    D.len = 0;
    D.reads_running = 0;
    D.read_cap = cfg->read_workers > 0 && cfg->read_workers < cfg->workers ? cfg->read_workers
                                                                            : cfg->workers;
    D.stopping = 0;
    D.nthreads = cfg->workers;
    D.threads = xcalloc((size_t)cfg->workers, sizeof *D.threads);
    for (int i = 0; i < cfg->workers; i++)
        pthread_create(&D.threads[i], NULL, worker_main, NULL);
    D.watch_stop = 0;
    pthread_create(&D.watchdog, NULL, watchdog_main, NULL);
    return 0;
}

int disp_submit(struct disp_job *job, struct err *e)
{
    struct reg_fn *fn = disp_job_fn(job);
    const struct fn_limits *lim = disp_job_limits(job);
    if (fn && lim->concurrency > 0) {
        int cur = atomic_load(&fn->in_flight);
        do {
            if (cur >= lim->concurrency) {
                atomic_fetch_add(&fn->rejections, 1);
                return err_set(e, ERR_THROTTLED,
                               "%s is at its concurrency limit of %d requests at once; try again",
                               fn->name, lim->concurrency);
            }
        } while (!atomic_compare_exchange_weak(&fn->in_flight, &cur, cur + 1));
        job->holds_slot = 1;
    } else if (fn) {
        atomic_fetch_add(&fn->in_flight, 1);
        job->holds_slot = 1;
    }
    job->queued_ms = util_now_ms();
    job->deadline_ms = job->queued_ms + (lim ? lim->timeout_ms : REG_DEFAULT_TIMEOUT_MS);
    job->state = QUEUED;
    pthread_mutex_lock(&D.mu);
    if (D.stopping || D.len == D.cap) {
        int stopping = D.stopping;
        pthread_mutex_unlock(&D.mu);
        release_slot(job);
        if (stopping)
            return err_set(e, ERR_UNAVAILABLE, "server is shutting down");
        return err_set(e, ERR_BUSY, "server busy: %zu requests queued, try again", D.cap);
    }
    if (job->expired) {
        pthread_mutex_lock(&D.wmu);
        job->wprev = NULL;
        job->wnext = D.watched;
        if (D.watched)
            D.watched->wprev = job;
        D.watched = job;
        pthread_mutex_unlock(&D.wmu);
    }
    int read = job->kind != DISP_COMMAND;
    struct ring *rg = &D.ring[read];
    rg->q[(rg->head + rg->len) % D.cap] = job;
    rg->len++;
    D.len++;
    if (!read || D.reads_running < D.read_cap)
        wake_one();
    pthread_mutex_unlock(&D.mu);
    return 0;
}

void disp_stats(struct disp_stats *s)
{
    pthread_mutex_lock(&D.mu);
    int idle = 0;
    for (const struct idle *w = D.idle; w; w = w->next)
        idle++;
    s->workers = D.nthreads;
    s->busy = D.nthreads - idle;
    s->queued_commands = D.ring[0].len;
    s->queued_reads = D.ring[1].len;
    s->capacity = D.cap;
    pthread_mutex_unlock(&D.mu);
    s->pg_open = atomic_load(&pg_open);
    s->redis_open = atomic_load(&redis_open);
}

void disp_stop(void)
{
    pthread_mutex_lock(&D.mu);
    D.stopping = 1;
    while (D.idle)
        wake_one();
    pthread_mutex_unlock(&D.mu);
    for (int i = 0; i < D.nthreads; i++)
        pthread_join(D.threads[i], NULL);
    pthread_mutex_lock(&D.wmu);
    D.watch_stop = 1;
    pthread_mutex_unlock(&D.wmu);
    if (D.nthreads)
        pthread_join(D.watchdog, NULL);
    free(D.threads);
    for (int i = 0; i < 2; i++)
        free(D.ring[i].q);
    sc_clear();
    D.threads = NULL;
    memset(D.ring, 0, sizeof D.ring);
    D.nthreads = 0;
}
