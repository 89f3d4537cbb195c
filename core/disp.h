/* core/disp.h — the function dispatcher: a bounded queue of invocations and
 * the worker threads that run them (DESIGN.md §5).
 *
 * The HTTP threads parse and validate a request into a disp_job, submit it
 * and suspend the connection; a worker (with its own PostgreSQL and Redis
 * connections) runs the function and calls job->done with the result, which
 * resumes the connection. The HTTP threads never wait on a database.
 *
 * The layers: this queue and its workers (core/disp.c); the command cycle
 * (core/cmd.c); queries (core/query.c); the built-in routes (core/builtin.c).
 */
#ifndef CQRSD_DISP_H
#define CQRSD_DISP_H

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdint.h>

#include "core/reg.h"

enum disp_kind {
    DISP_COMMAND,
    DISP_QUERY,
    DISP_BUILTIN, /* a route of the platform's own (job->builtin, core/builtin.c) */
};

/* A route parameter or query-string argument, owned by the job. */
struct disp_param {
    char *name;
    char *value;
};

struct disp_job {
    enum disp_kind kind;
    struct reg *reg;                  /* the generation it was routed in: one reference, owned */
    const struct reg_command *command; /* DISP_COMMAND, in reg */
    const struct reg_query *query;     /* DISP_QUERY, in reg */
    enum reg_builtin builtin;         /* DISP_BUILTIN */
    json_t *cmd;                      /* DISP_COMMAND: body + route params + occurred_at; owned */
    char *request;                    /* canonical request text for idempotency; owned */
    char *idempotency_key;            /* owned, may be NULL */
    int64_t expected;                 /* Expected-Version header; DISP_NO_EXPECTED = none given */
    struct disp_param *params;        /* owned */
    size_t nparams;
    char *request_id;                 /* owned, may be NULL: for the logs (core/http.h) */
    /* DISP_QUERY: read-your-writes. With min_position set, the query is
     * answered once every projection it reads has passed it, after waiting
     * at most wait_ms (then 504). */
    char min_position[33];
    int wait_ms;
    char position[33]; /* result: the position the reply reflects ("" unknown) */

    /* result, set by the worker before done() */
    int status;        /* HTTP status */
    json_t *body;      /* owned; a problem object when status >= 400 */
    int retry_after;   /* seconds, 0 = none */
    int problem;       /* body is an RFC 9457 problem (application/problem+json) */
    int code;          /* the ERR_* code of that problem; 0 for a reply */
    char *text;        /* owned; instead of body, a reply that is not JSON (disp_reply_text) */
    const char *content_type; /* static; text's media type */

    void (*done)(struct disp_job *job); /* called on a worker thread; owns nothing */
    void *user;                          /* for done() and expired() */
    /* Called instead of done() when the request cannot wait any longer (its
     * function's timeout passed while it was queued or running): code and msg
     * are the problem to answer. The job is then the dispatcher's: whatever
     * the function still does, done() is never called, and the job is freed
     * by the dispatcher. NULL: the job waits for its function, however long. */
    void (*expired)(struct disp_job *job, int code, const char *msg);

    /* the dispatcher's (disp_submit), under its watch lock */
    int64_t queued_ms, deadline_ms; /* util_now_ms() clock; deadline 0: none */
    int state;                      /* queued, running, done, expired */
    int holds_slot;                 /* counted in its function's in_flight */
    struct disp_job *wprev, *wnext; /* the watch list */
};

#define DISP_NO_EXPECTED (-2)

struct disp_config {
    const char *database_url;
    const char *redis_url;
    int workers;        /* threads running commands and queries */
    int read_workers;   /* at most this many of them run queries and built-in routes at
                         * once (0 or more than workers: workers); the others take
                         * commands, which wait on PostgreSQL and gather into groups */
    int queue_size;     /* bound of the invocation queue */
    size_t state_cache; /* streams whose folded state is kept (core/sc.h); 0 = none */
};

/* Starts the workers. Returns 0, or ERR_INVALID for a bad config. */
int disp_start(const struct disp_config *cfg, struct err *e);

/* Queues a job. Returns 0, or ERR_THROTTLED when its function is at its
 * concurrency limit (the caller answers 429 with Retry-After), ERR_BUSY when
 * the queue is full (503 with Retry-After) or ERR_UNAVAILABLE when stopping.
 * On error the job stays the caller's.
 *
 * A queued job has a deadline: its function's timeout_ms after now. Past it,
 * a job not started yet is answered 503 and never run; a job running is
 * answered 504 (a command may still complete: the client learns its outcome
 * by retrying with its Idempotency-Key). Deadlines are checked every 20 ms. */
int disp_submit(struct disp_job *job, struct err *e);

/* What the dispatcher holds now, for GET /metrics: its worker threads and
 * how many of them are running a job, their PostgreSQL and Redis
 * connections open, the jobs queued (commands; queries and built-in routes)
 * and the queue's bound. */
struct disp_stats {
    int workers, busy;
    int pg_open, redis_open;
    size_t queued_commands, queued_reads, capacity;
};
void disp_stats(struct disp_stats *s);

/* Stops taking jobs, finishes the queued ones, joins the workers. */
void disp_stop(void);

/* Frees a job and everything it owns, its generation reference included
 * (NULL: no-op). */
void disp_job_free(struct disp_job *job);

/* Sets job's result to an RFC 9457 problem for code with detail msg. */
void disp_problem(struct disp_job *job, int code, const char *msg);

/* disp_problem for e's code and message. */
void disp_fail(struct disp_job *job, const struct err *e);

/* Sets job's result to status with body (stolen). */
void disp_reply(struct disp_job *job, int status, json_t *body);

/* Sets job's result to status with text (stolen, NUL-terminated) of media
 * type content_type (a static string), e.g. GET /metrics's. */
void disp_reply_text(struct disp_job *job, int status, char *text, const char *content_type);

/* The function record and the limits of a job's function (NULL for a
 * built-in route). */
struct reg_fn *disp_job_fn(const struct disp_job *job);
const struct fn_limits *disp_job_limits(const struct disp_job *job);

/* The value of a job's parameter, or NULL. */
const char *disp_param(const struct disp_job *job, const char *name);

/* Runs one job on the calling thread with the given connections (either may
 * be NULL: the job then answers 503). For tests and the worker loop. */
void disp_run(struct disp_job *job, PGconn *pg, redisContext *redis);

#endif
