/* core/util.h — small shared helpers: allocation that aborts, ids, logging.
 *
 * Allocation failure of a size cqrsd chose aborts the process (xmalloc);
 * sizes taken from input are checked by the caller before allocating.
 */
#ifndef CQRSD_UTIL_H
#define CQRSD_UTIL_H

#include <stddef.h>
#include <stdint.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* printf into a new string; caller frees. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* An arena: allocations freed all at once by arena_free (one per request or
 * batch, as PostgreSQL's memory contexts). Zero-initialise it; arena_free
 * leaves it empty and reusable. */
struct arena_chunk;
struct arena {
    struct arena_chunk *head;
};
/* n bytes, zeroed, aligned for any type; aborts when out of memory. */
void *arena_alloc(struct arena *a, size_t n);
/* A NUL-terminated copy of the n bytes at s (which may hold NULs). */
char *arena_strndup(struct arena *a, const char *s, size_t n);
void arena_free(struct arena *a);
/* Frees all but one chunk and empties it: the next allocations reuse it. */
void arena_reset(struct arena *a);

struct err;
/* Sets e->code = code and puts the formatted text before e's message, as
 * "<text>: <message>" (cut to fit). Returns code. For the platform (the
 * ABI's err.h has err_set only). */
int err_wrap(struct err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Writes a random (version 4, RFC 9562 §5.4) UUID, 36 chars + NUL, into out. */
void util_uuid4(char out[37]);

/* Longest id (cart_id, sku, ...) in a path or a command, in bytes. */
#define UTIL_ID_MAX 200

/* 1 when s is 1 to max bytes of valid UTF-8 (RFC 3629 §4) without C0
 * control characters or DEL, and without '/' unless allow_slash. */
int util_text_ok(const char *s, size_t max, int allow_slash);

/* The wait before the attempt after the attempt-th failure (from 1):
 * first_ms doubled each time (exponential back-off), at most max_ms. */
int64_t util_backoff_ms(int64_t first_ms, int attempt, int64_t max_ms);

/* Monotonic clock in milliseconds. */
int64_t util_now_ms(void);
/* The same in microseconds. */
int64_t util_now_us(void);

/* FNV-1a, 64 bits, of the NUL-terminated s (Fowler, Noll, Vo: the FNV hash,
 * draft-eastlake-fnv; offset basis 14695981039346656037, prime 1099511628211).
 * Not for anything an attacker chooses the keys of and needs to be slow on. */
uint64_t util_fnv1a(const char *s);

/* Logs: one line per record on stderr, each a JSON object
 * {"time","level","msg", and the fields given, and those of the thread's
 * context} (CQRSD_LOG_FORMAT=json, the default), or "time level msg
 * key=value ..." (text). time is RFC 3339 in UTC with milliseconds
 * ("2026-12-04T01:05:19.941+00:00"). Thread-safe: one write per line. */
enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Reads CQRSD_LOG_LEVEL (debug|info|warn|error, default info) and
 * CQRSD_LOG_FORMAT (json|text, default json). Returns 0, or -1 with why
 * (naming the variable) in why[n] and nothing changed. */
int log_configure(char *why, size_t n);

/* A field of a record: a string (str) or, when str is NULL, the number num. */
struct log_field {
    const char *key;
    const char *str;
    double num;
};

/* The calling thread's context, added to each of its records until changed:
 * the request id and the function it serves (either may be NULL). Borrowed:
 * the caller keeps them alive until it sets others (log_context(NULL, NULL)). */
void log_context(const char *request_id, const char *function);

/* One record with the fields f[0..nf). */
void log_with(enum log_level lvl, const struct log_field *f, size_t nf, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* One record without fields of its own. */
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* 1 when records of lvl are written (to skip building an access record). */
int log_enabled(enum log_level lvl);

/* The last warn and error records (at most LOG_RECENT, whatever the level
 * written), newest first, for GET /admin/errors: fn is called with each
 * time, level and msg (valid during the call only), under a lock. */
#define LOG_RECENT 50
void log_recent(void (*fn)(void *arg, const char *time, const char *level, const char *msg),
                void *arg);
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
