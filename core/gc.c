/* core/gc.c — group commit, leader and followers (see gc.h). */
#include "core/gc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "core/util.h"

/* A batch in flight longer than this is taken to be waiting on a lock (a
 * commit takes a few milliseconds here): the next batch may start beside it. */
#define GC_PATIENCE_US 10000
/* At most this many batches in flight at once. */
#define GC_MAX_BATCHES 16

/* One append waiting, on its caller's stack. Each waiter sleeps on its own
 * condition variable, so a batch's end wakes its members and the next leader
 * only, not every thread waiting. */
struct waiter {
    struct es_command_append *c;
    pthread_cond_t cv;
    int taken; /* in a batch in flight */
    int done;  /* outcome set */
    struct waiter *next;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct waiter *head, **tail = &head; /* not yet taken, oldest first */
static int64_t started[GC_MAX_BATCHES];       /* start of each batch in flight, 0: free */
static int inflight;
static atomic_ulong n_groups, n_commands;

void gc_stats(unsigned long *groups, unsigned long *commands)
{
    *groups = atomic_load(&n_groups);
    *commands = atomic_load(&n_commands);
}

static const char *first_stream(const struct waiter *w)
{
    return w->c->nstreams ? w->c->streams[0].stream_id : "";
}

/* Orders a batch by its commands' first stream, stably (arrival order within
 * a stream): batches that run side by side then lock the rows of streams in
 * the same order, so they do not deadlock on each other. */
static void sort_batch(struct waiter **w, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        struct waiter *x = w[i];
        size_t j = i;
        while (j > 0 && strcmp(first_stream(w[j - 1]), first_stream(x)) > 0) {
            w[j] = w[j - 1];
            j--;
        }
        w[j] = x;
    }
}

/* Commits the batch w[0..n) on pg, outside the lock; sets each outcome. */
static void commit(PGconn *pg, struct waiter **w, size_t n)
{
    struct err e = {0};
    if (n == 1) {
        struct es_command_append *c = w[0]->c;
        c->rc = es_append(pg, c->command_id, c->request, c->status, c->reply_extra, c->streams,
                          c->nstreams, &c->reply, &c->err);
    } else {
        struct es_command_append cmds[ES_GROUP_MAX];
        sort_batch(w, n);
        for (size_t i = 0; i < n; i++)
            cmds[i] = *w[i]->c;
        int rc = es_append_group(pg, cmds, n, &e);
        for (size_t i = 0; i < n; i++) {
            struct es_command_append *c = w[i]->c;
            if (rc) {
                c->rc = rc;
                c->err = e;
                c->reply = NULL;
            } else {
                c->rc = cmds[i].rc;
                c->err = cmds[i].err;
                c->reply = cmds[i].reply;
            }
        }
    }
    atomic_fetch_add(&n_groups, 1);
    atomic_fetch_add(&n_commands, n);
}

/* Whether the caller may lead a new batch now; else *wait_us > 0 is how long
 * until it may (the patience of the newest batch), 0 until woken. Under mu. */
static int may_lead(int64_t now, int64_t *wait_us)
{
    *wait_us = 0;
    if (inflight == 0)
        return 1;
    if (inflight >= GC_MAX_BATCHES)
        return 0;
    /* the newest batch decides: each stuck batch lets one more start */
    int64_t newest = 0;
    for (int i = 0; i < GC_MAX_BATCHES; i++)
        if (started[i] > newest)
            newest = started[i];
    if (now - newest >= GC_PATIENCE_US)
        return 1;
    *wait_us = GC_PATIENCE_US - (now - newest);
    return 0;
}

int gc_append(PGconn *pg, struct es_command_append *c)
{
    struct waiter me = {.c = c};
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&me.cv, &a);
    pthread_condattr_destroy(&a);
    pthread_mutex_lock(&mu);
    *tail = &me;
    tail = &me.next;
    while (!me.done) {
        int64_t now = util_now_us(), wait_us = 0; /* CLOCK_MONOTONIC, as the waits */
        /* the oldest waiter not taken leads the next batch */
        if (me.taken || head != &me || !may_lead(now, &wait_us)) {
            if (me.taken || wait_us == 0) {
                pthread_cond_wait(&me.cv, &mu);
            } else {
                int64_t until = now + wait_us;
                struct timespec ts = {(time_t)(until / 1000000), (long)(until % 1000000) * 1000};
                pthread_cond_timedwait(&me.cv, &mu, &ts);
            }
            continue;
        }
        /* lead: take the oldest waiters, this one first */
        struct waiter *batch[ES_GROUP_MAX];
        size_t n = 0;
        while (head && n < ES_GROUP_MAX) {
            batch[n++] = head;
            head->taken = 1;
            head = head->next;
        }
        if (!head)
            tail = &head;
        int slot = 0;
        while (started[slot])
            slot++;
        started[slot] = now ? now : 1;
        inflight++;
        if (head) /* more than a batch waits: its head may lead once patience runs out */
            pthread_cond_signal(&head->cv);
        pthread_mutex_unlock(&mu);
        commit(pg, batch, n);
        pthread_mutex_lock(&mu);
        for (size_t i = 0; i < n; i++) {
            batch[i]->done = 1;
            if (batch[i] != &me)
                pthread_cond_signal(&batch[i]->cv);
        }
        started[slot] = 0;
        inflight--;
        if (head)
            pthread_cond_signal(&head->cv);
    }
    pthread_mutex_unlock(&mu);
    pthread_cond_destroy(&me.cv);
    return c->rc;
}
