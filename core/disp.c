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
#include <pthread.h>
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
    job->problem = 1;
    job->status = err_http_status(code);
    job->body = json_pack("{s:s, s:s, s:i, s:s}", "type", type, "title", err_title(code), "status",
                          job->status, "detail", msg && *msg ? msg : err_title(code));
    if (code == ERR_UNAVAILABLE || code == ERR_BUSY)
        job->retry_after = 1;
}

void disp_reply(struct disp_job *job, int status, json_t *body)
{
    json_decref(job->body);
    job->status = status;
    job->body = body;
}

const char *disp_param(const struct disp_job *job, const char *name)
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
    json_t *out = NULL;
    struct err e = {0};
    int code = query_call(job->reg, job->query->q, rc, names, values, job->nparams, &out, &e);
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
    case DISP_QUERY: run_query(job, redis); break;
    case DISP_STREAM: builtin_stream(job, pg); break;
    case DISP_HEALTH: builtin_health(job, pg, redis); break;
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
