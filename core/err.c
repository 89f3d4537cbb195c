/* core/err.c — the error table of core/err.def, as functions. */
#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>

int err_set(struct err *e, int code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        e->code = code;
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void err_clear(struct err *e)
{
    if (e) {
        e->code = 0;
        e->msg[0] = '\0';
    }
}

int err_http_status(int code)
{
    switch (code) {
    case 0: return 200;
#define ERR(name, value, status, title) case value: return status;
#include "err.def"
#undef ERR
    default: return 500;
    }
}

const char *err_title(int code)
{
    switch (code) {
    case 0: return "ok";
#define ERR(name, value, status, title) case value: return title;
#include "err.def"
#undef ERR
    default: return "internal error";
    }
}

const char *err_name(int code)
{
    switch (code) {
    case 0: return "OK";
#define ERR(name, value, status, title) case value: return #name;
#include "err.def"
#undef ERR
    default: return "UNKNOWN";
    }
}
