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

/* Writes a random (version 4, RFC 9562 §5.4) UUID, 36 chars + NUL, into out. */
void util_uuid4(char out[37]);

/* Monotonic clock in milliseconds. */
int64_t util_now_ms(void);

/* Log levels; CQRSD_LOG_LEVEL=debug|info|warn|error (default info). */
enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
void log_set_level_from_env(void);
/* One line to stderr: RFC 3339 UTC time, level, message. Thread-safe. */
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
