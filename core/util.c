/* core/util.c — allocation that aborts, UUIDs from getrandom(2), logging. */
#include "core/util.h"

#include "core/err.h"

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static void oom(size_t n)
{
    fprintf(stderr, "cqrsd: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n);
    memcpy(p, s, n);
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *p = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    max_align_t data[];
};

void *arena_alloc(struct arena *a, size_t n)
{
    const size_t align = sizeof(max_align_t);
    n = (n + align - 1) / align * align;
    struct arena_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 8192 ? n : 8192;
        c = xmalloc(sizeof *c + cap);
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

char *arena_strndup(struct arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void arena_reset(struct arena *a)
{
    struct arena_chunk *keep = a->head;
    if (!keep)
        return;
    struct arena_chunk *c = keep->next;
    while (c) {
        struct arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    keep->next = NULL;
    keep->used = 0;
}

void arena_free(struct arena *a)
{
    struct arena_chunk *c = a->head;
    while (c) {
        struct arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
}

int err_wrap(struct err *e, int code, const char *fmt, ...)
{
    if (!e)
        return code;
    char was[sizeof e->msg], text[sizeof e->msg];
    snprintf(was, sizeof was, "%s", e->msg);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    return err_set(e, code, "%s: %s", text, was);
}

void util_uuid4(char out[37])
{
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t r = getrandom(b + got, sizeof b - got, 0);
        if (r > 0)
            got += (size_t)r;
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
             b[13], b[14], b[15]);
}

int64_t util_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t util_backoff_ms(int64_t first_ms, int attempt, int64_t max_ms)
{
    int64_t delay = first_ms;
    for (int i = 1; i < attempt && delay < max_ms; i++)
        delay *= 2;
    return delay < max_ms ? delay : max_ms;
}

uint64_t util_fnv1a(const char *s)
{
    uint64_t h = 14695981039346656037ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

int64_t util_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static enum log_level min_level = LOG_INFO;
static int log_json = 1;
static __thread const char *ctx_request_id, *ctx_function;

int log_configure(char *why, size_t n)
{
    static const char *levels[] = {"debug", "info", "warn", "error"};
    const char *v = getenv("CQRSD_LOG_LEVEL");
    int lvl = LOG_INFO;
    if (v && *v) {
        for (lvl = 0; lvl < 4 && strcmp(v, levels[lvl]); lvl++)
            ;
        if (lvl == 4) {
            snprintf(why, n, "CQRSD_LOG_LEVEL must be debug, info, warn or error, got \"%.40s\"",
                     v);
            return -1;
        }
    }
    const char *f = getenv("CQRSD_LOG_FORMAT");
    if (f && *f && strcmp(f, "json") && strcmp(f, "text")) {
        snprintf(why, n, "CQRSD_LOG_FORMAT must be json or text, got \"%.40s\"", f);
        return -1;
    }
    min_level = (enum log_level)lvl;
    log_json = !f || !*f || !strcmp(f, "json");
    return 0;
}

int log_enabled(enum log_level lvl)
{
    return lvl >= min_level;
}

void log_context(const char *request_id, const char *function)
{
    ctx_request_id = request_id;
    ctx_function = function;
}

/* Appends s to line[*w..n) as the inside of a JSON string (RFC 8259 §7):
 * quote, backslash and control characters escaped, a byte that is not part
 * of valid UTF-8 written as U+FFFD. Stops short when full. */
static void json_escape(char *line, size_t n, size_t *w, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p && *w + 8 < n) {
        unsigned c = *p;
        if (c == '"' || c == '\\') {
            line[(*w)++] = '\\';
            line[(*w)++] = (char)c;
            p++;
        } else if (c < 0x20 || c == 0x7f) {
            *w += (size_t)snprintf(line + *w, n - *w, "\\u%04x", c);
            p++;
        } else if (c < 0x80) {
            line[(*w)++] = (char)c;
            p++;
        } else {
            /* the length of a valid sequence here, 0 if none (util_text_ok's rules) */
            int len = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
            unsigned cp = c & (0x7f >> len);
            for (int i = 1; i < len; i++) {
                if ((p[i] & 0xc0) != 0x80) {
                    len = 0;
                    break;
                }
                cp = (cp << 6) | (p[i] & 0x3f);
            }
            if ((len == 2 && cp < 0x80) || (len == 3 && (cp < 0x800 || (cp >= 0xd800 &&
                                                                         cp <= 0xdfff))) ||
                (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
                len = 0;
            if (len) {
                memcpy(line + *w, p, (size_t)len);
                *w += (size_t)len;
                p += len;
            } else {
                memcpy(line + *w, "\xef\xbf\xbd", 3);
                *w += 3;
                p++;
            }
        }
    }
}

/* the ring of log_recent */
static struct {
    pthread_mutex_t mu;
    struct {
        char time[40];
        enum log_level level;
        char msg[512];
    } r[LOG_RECENT];
    size_t next, n;
} R = {.mu = PTHREAD_MUTEX_INITIALIZER};

static const char *level_names[] = {"debug", "info", "warn", "error"};

void log_recent(void (*fn)(void *arg, const char *time, const char *level, const char *msg),
                void *arg)
{
    pthread_mutex_lock(&R.mu);
    for (size_t k = 1; k <= R.n; k++) {
        size_t i = (R.next + LOG_RECENT - k) % LOG_RECENT;
        fn(arg, R.r[i].time, level_names[R.r[i].level], R.r[i].msg);
    }
    pthread_mutex_unlock(&R.mu);
}

static void vlog(enum log_level lvl, const struct log_field *f, size_t nf, const char *fmt,
                 va_list ap)
{
    const char *const *names = level_names;
    if (lvl < min_level && lvl < LOG_WARN)
        return;
    char msg[2048], line[4096], ts[40];
    vsnprintf(msg, sizeof msg, fmt, ap);
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t tl = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof ts - tl, ".%03ld+00:00", now.tv_nsec / 1000000);
    if (lvl >= LOG_WARN) {
        pthread_mutex_lock(&R.mu);
        snprintf(R.r[R.next].time, sizeof R.r[R.next].time, "%s", ts);
        R.r[R.next].level = lvl;
        size_t cut = strlen(msg);
        if (cut >= sizeof R.r[R.next].msg) { /* cut at a character boundary */
            cut = sizeof R.r[R.next].msg - 1;
            while (cut > 0 && ((unsigned char)msg[cut] & 0xc0) == 0x80)
                cut--;
        }
        memcpy(R.r[R.next].msg, msg, cut);
        R.r[R.next].msg[cut] = '\0';
        R.next = (R.next + 1) % LOG_RECENT;
        if (R.n < LOG_RECENT)
            R.n++;
        pthread_mutex_unlock(&R.mu);
        if (lvl < min_level)
            return;
    }
    struct log_field all[24];
    size_t na = 0;
    for (size_t i = 0; i < nf && na < 22; i++)
        all[na++] = f[i];
    if (ctx_request_id)
        all[na++] = (struct log_field){"request_id", ctx_request_id, 0};
    if (ctx_function)
        all[na++] = (struct log_field){"function", ctx_function, 0};
    size_t w = 0, n = sizeof line - 2;
    if (log_json) {
        w += (size_t)snprintf(line, n, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts,
                              names[lvl]);
        json_escape(line, n, &w, msg);
        line[w++] = '"';
        for (size_t i = 0; i < na && w + 40 < n; i++) {
            line[w++] = ',';
            line[w++] = '"';
            json_escape(line, n - 32, &w, all[i].key);
            line[w++] = '"';
            line[w++] = ':';
            if (all[i].str) {
                line[w++] = '"';
                json_escape(line, n - 4, &w, all[i].str);
                line[w++] = '"';
            } else {
                w += (size_t)snprintf(line + w, n - w, "%.15g", all[i].num);
            }
        }
        line[w++] = '}';
    } else {
        w += (size_t)snprintf(line, n, "%s %s %s", ts, names[lvl], msg);
        for (size_t i = 0; i < na && w + 4 < n; i++) {
            if (all[i].str)
                w += (size_t)snprintf(line + w, n - w, " %s=%s", all[i].key, all[i].str);
            else
                w += (size_t)snprintf(line + w, n - w, " %s=%.15g", all[i].key, all[i].num);
            if (w > n)
                w = n;
        }
    }
    line[w] = '\0';
    fprintf(stderr, "%s\n", line); /* one write per line: stdio locks the stream */
}

void log_with(enum log_level lvl, const struct log_field *f, size_t nf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(lvl, f, nf, fmt, ap);
    va_end(ap);
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(lvl, NULL, 0, fmt, ap);
    va_end(ap);
}

int util_text_ok(const char *s, size_t max, int allow_slash)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = 0;
    while (*p) {
        if (++n > max)
            return 0;
        if (*p < 0x20 || *p == 0x7f || (!allow_slash && *p == '/'))
            return 0;
        if (*p < 0x80) {
            p++;
            continue;
        }
        int len = (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 : (*p & 0xf8) == 0xf0 ? 4 : 0;
        if (!len || (*p == 0xc0 || *p == 0xc1) || *p > 0xf4)
            return 0;
        unsigned cp = *p & (0x7f >> len);
        for (int i = 1; i < len; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (len == 2 && cp < 0x80))
            return 0;
        p += len;
    }
    return n > 0;
}
