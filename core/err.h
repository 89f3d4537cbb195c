/* core/err.h — errors as values.
 *
 * Every fallible cqrsd function returns int: 0 on success, a negative ERR_*
 * code from core/err.def on failure, and fills an optional struct err with a
 * human message in PostgreSQL's message style (lowercase, no final period,
 * naming the object). A business rejection is such a value, never a crash.
 */
#ifndef CQRSD_ERR_H
#define CQRSD_ERR_H

enum {
    ERR_OK = 0,
#define ERR(name, value, status, title) ERR_##name = (value),
#include "err.def"
#undef ERR
};

/* Detail of an error. msg is always NUL-terminated; empty when code is 0. */
struct err {
    int code;
    char msg[512];
};

/* Sets e->code = code and formats the message (printf-style). e may be NULL.
 * Returns code, so callers can write `return err_set(e, ERR_INVALID, ...)`. */
int err_set(struct err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Clears e (code 0, empty message). e may be NULL. */
void err_clear(struct err *e);

/* HTTP status for code (500 for unknown codes, 200 for 0). */
int err_http_status(int code);

/* Static title for code, e.g. "version conflict"; never NULL. */
const char *err_title(int code);

/* Static short name for code, e.g. "CONFLICT"; never NULL. */
const char *err_name(int code);

#endif
