/* core/metrics.c — see metrics.h. */
#include "core/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

const int64_t metrics_bucket_us[METRICS_NBUCKETS] = {
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000};

void metrics_observe(struct metrics_hist *h, int64_t us)
{
    if (us < 0)
        us = 0;
    int i = 0;
    while (i < METRICS_NBUCKETS && us > metrics_bucket_us[i])
        i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

void mtext_printf(struct mtext *t, const char *fmt, ...)
{
    for (;;) {
        size_t room = t->cap - t->len;
        va_list ap;
        va_start(ap, fmt);
        int n = t->p ? vsnprintf(t->p + t->len, room, fmt, ap) : -1;
        va_end(ap);
        if (n >= 0 && (size_t)n < room) {
            t->len += (size_t)n;
            return;
        }
        t->cap = t->cap ? t->cap * 2 : 4096;
        if (n >= 0 && t->cap < t->len + (size_t)n + 1)
            t->cap = t->len + (size_t)n + 1;
        t->p = xrealloc(t->p, t->cap);
    }
}

void mtext_family(struct mtext *t, const char *name, const char *type, const char *help)
{
    mtext_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

const char *metrics_escape(char *buf, size_t n, const char *v)
{
    size_t w = 0;
    for (; *v && w + 3 < n; v++) {
        if (*v == '\\' || *v == '"') {
            buf[w++] = '\\';
            buf[w++] = *v;
        } else if (*v == '\n') {
            buf[w++] = '\\';
            buf[w++] = 'n';
        } else {
            buf[w++] = *v;
        }
    }
    buf[w] = '\0';
    return buf;
}

void mtext_hist(struct mtext *t, const char *name, const char *labels,
                const struct metrics_hist *h)
{
    const char *sep = *labels ? "," : "";
    long long cum = 0;
    for (int i = 0; i < METRICS_NBUCKETS; i++) {
        cum += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        mtext_printf(t, "%s_bucket{%s%sle=\"%g\"} %lld\n", name, labels, sep,
                     (double)metrics_bucket_us[i] / 1e6, cum);
    }
    cum += atomic_load_explicit(&h->bucket[METRICS_NBUCKETS], memory_order_relaxed);
    mtext_printf(t, "%s_bucket{%s%sle=\"+Inf\"} %lld\n", name, labels, sep, cum);
    mtext_printf(t, "%s_sum{%s} %.6f\n", name, labels,
                 (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6);
    mtext_printf(t, "%s_count{%s} %lld\n", name, labels, cum);
}

/* ---------- HTTP requests ---------- */

#define HTTP_SLOTS 1024 /* open addressing, at most HTTP_MAX used */
#define HTTP_MAX 512

struct http_slot {
    char *method, *route; /* owned; NULL: free */
    int status;
    atomic_llong count;
    struct metrics_hist h;
};

static struct {
    pthread_mutex_t mu;
    struct http_slot slot[HTTP_SLOTS];
    size_t used;
} M = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* The slot of (method, route, status), made when new (under M.mu). */
static struct http_slot *http_slot(const char *method, const char *route, int status)
{
    uint64_t h = util_fnv1a(method) * 31 + util_fnv1a(route) * 7 + (uint64_t)status;
    for (size_t i = 0; i < HTTP_SLOTS; i++) {
        struct http_slot *s = &M.slot[(h + i) % HTTP_SLOTS];
        if (!s->method) {
            if (M.used >= HTTP_MAX && strcmp(route, "(other)"))
                return http_slot(method, "(other)", status);
            if (M.used + 1 >= HTTP_SLOTS)
                return NULL;
            s->method = xstrdup(method);
            s->route = xstrdup(route);
            s->status = status;
            M.used++;
            return s;
        }
        if (s->status == status && !strcmp(s->method, method) && !strcmp(s->route, route))
            return s;
    }
    return NULL;
}

void metrics_http_observe(const char *method, const char *route, int status, int64_t us)
{
    pthread_mutex_lock(&M.mu);
    struct http_slot *s = http_slot(method, route, status);
    if (s) {
        atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
        metrics_observe(&s->h, us);
    }
    pthread_mutex_unlock(&M.mu);
}

void metrics_http_write(struct mtext *t)
{
    char m[32], r[300], labels[400];
    pthread_mutex_lock(&M.mu);
    mtext_family(t, "cqrsd_http_requests_total", "counter",
                 "HTTP requests answered, by method, route pattern (\"\" when none matched) "
                 "and status.");
    for (size_t i = 0; i < HTTP_SLOTS; i++) {
        const struct http_slot *s = &M.slot[i];
        if (s->method)
            mtext_printf(t, "cqrsd_http_requests_total{method=\"%s\",route=\"%s\",status=\"%d\"} "
                            "%lld\n",
                         metrics_escape(m, sizeof m, s->method),
                         metrics_escape(r, sizeof r, s->route), s->status,
                         (long long)atomic_load(&s->count));
    }
    mtext_family(t, "cqrsd_http_request_duration_seconds", "histogram",
                 "Time from a request's headers to its reply being queued, in seconds.");
    for (size_t i = 0; i < HTTP_SLOTS; i++) {
        const struct http_slot *s = &M.slot[i];
        if (!s->method)
            continue;
        snprintf(labels, sizeof labels, "method=\"%s\",route=\"%s\",status=\"%d\"",
                 metrics_escape(m, sizeof m, s->method), metrics_escape(r, sizeof r, s->route),
                 s->status);
        mtext_hist(t, "cqrsd_http_request_duration_seconds", labels, &s->h);
    }
    pthread_mutex_unlock(&M.mu);
}
