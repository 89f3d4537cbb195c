/* core/money.c — decimal strings to int64 thousandths and back (see money.h). */
#include "core/money.h"

#include <stdio.h>
#include <string.h>

int money_parse_wide(const char *s, int64_t *out, struct err *e)
{
    const char *p = s;
    int neg = 0;
    if (!s || !*s)
        return err_set(e, ERR_INVALID, "amount is empty");
    if (*p == '-') {
        neg = 1;
        p++;
    }
    if (*p < '0' || *p > '9')
        return err_set(e, ERR_INVALID, "amount \"%.40s\" is not a decimal number", s);
    int64_t v = 0; /* accumulated negatively, so INT64_MIN fits */
    int too_large = 0;
    while (*p >= '0' && *p <= '9') {
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_sub_overflow(v, *p - '0', &v))
            too_large = 1;
        p++;
    }
    int fdigits = 0;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') {
            if (++fdigits > 3)
                return err_set(e, ERR_INVALID,
                               "amount \"%.40s\" has more than 3 fractional digits", s);
            if (__builtin_mul_overflow(v, 10, &v) || __builtin_sub_overflow(v, *p - '0', &v))
                too_large = 1;
            p++;
        }
        if (fdigits == 0)
            return err_set(e, ERR_INVALID, "amount \"%.40s\" has no digits after '.'", s);
    }
    if (*p)
        return err_set(e, ERR_INVALID, "amount \"%.40s\" is not a decimal number", s);
    for (; fdigits < 3; fdigits++)
        if (__builtin_mul_overflow(v, 10, &v))
            too_large = 1;
    if (too_large || (!neg && v == INT64_MIN))
        return err_set(e, ERR_INVALID, "amount \"%.40s\" is too large", s);
    if (neg && v == 0) /* zero has one spelling: a "-0" read back would differ */
        return err_set(e, ERR_INVALID, "amount \"%.40s\" is a negative zero: write 0", s);
    *out = neg ? v : -v;
    return 0;
}

int money_parse(const char *s, int64_t *out, struct err *e)
{
    int64_t v;
    int rc = money_parse_wide(s, &v, e);
    if (rc)
        return rc;
    if (v > MONEY_MAX_INPUT || v < -MONEY_MAX_INPUT)
        return err_set(e, ERR_INVALID, "amount \"%.40s\" is too large", s);
    *out = v;
    return 0;
}

char *money_format(int64_t v, char buf[MONEY_BUFSZ])
{
    /* work in uint64 so INT64_MIN formats too */
    uint64_t a = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    unsigned frac = (unsigned)(a % 1000);
    unsigned long long units = (unsigned long long)(a / 1000);
    if (frac % 10 == 0)
        snprintf(buf, MONEY_BUFSZ, "%s%llu.%02u", v < 0 ? "-" : "", units, frac / 10);
    else
        snprintf(buf, MONEY_BUFSZ, "%s%llu.%03u", v < 0 ? "-" : "", units, frac);
    return buf;
}

int money_add(int64_t a, int64_t b, int64_t *out, struct err *e)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r) || r > MONEY_MAX_INPUT || r < -MONEY_MAX_INPUT)
        return err_set(e, ERR_REJECTED, "amount is over the limit of 999999999999.999");
    *out = r;
    return 0;
}

int money_mul(int64_t amount, int64_t quantity, int64_t *out, struct err *e)
{
    int64_t r;
    if (__builtin_mul_overflow(amount, quantity, &r) || r > MONEY_MAX_INPUT || r < -MONEY_MAX_INPUT)
        return err_set(e, ERR_REJECTED, "amount is over the limit of 999999999999.999");
    *out = r;
    return 0;
}
