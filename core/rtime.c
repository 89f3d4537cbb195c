/* core/rtime.c — RFC 3339 parsing and formatting (RFC 3339 §5.6), business day
 * through the system tz database. Days from civil date: H. Hinnant,
 * "chrono-Compatible Low-Level Date Algorithms" (days_from_civil). */
#include "core/rtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void rtime_init(void)
{
    const char *tz = getenv("CQRSD_TIMEZONE");
    setenv("TZ", tz && *tz ? tz : "Europe/London", 1);
    tzset();
}

int rtime_zone_check(const char *tz, char *why, size_t n)
{
    const char *dir = getenv("TZDIR");
    if (!dir || !*dir)
        dir = "/usr/share/zoneinfo";
    char path[512], magic[4] = {0};
    int ok = tz && *tz && *tz != '/' && !strstr(tz, "..") && strlen(tz) < 200;
    if (ok) {
        snprintf(path, sizeof path, "%s/%s", dir, tz);
        FILE *f = fopen(path, "rb");
        ok = f && fread(magic, 1, 4, f) == 4 && !memcmp(magic, "TZif", 4);
        if (f)
            fclose(f);
    }
    if (!ok)
        snprintf(why, n, "CQRSD_TIMEZONE \"%.60s\" is not a zone of the tz database in %s "
                         "(a name such as Europe/London or UTC; is tzdata installed?)",
                 tz ? tz : "", dir);
    return ok ? 0 : -1;
}

int64_t rtime_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

void rtime_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t z = days + 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int digits(const char *p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 0;
}

static int date_ok(int y, int m, int d)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m >= 1 && m <= 12 && d >= 1 && d <= mdays[m - 1] && !(m == 2 && d == 29 && !leap);
}

int rtime_parse_date(const char *s, int64_t *days)
{
    int y, m, d;
    if (!s || strlen(s) != 10 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &m) ||
        s[7] != '-' || digits(s + 8, 2, &d) || !date_ok(y, m, d))
        return -1;
    *days = rtime_days_from_civil(y, (unsigned)m, (unsigned)d);
    return 0;
}

char *rtime_format_date(int64_t days, char buf[11])
{
    int64_t y;
    unsigned m, d;
    rtime_civil_from_days(days, &y, &m, &d);
    snprintf(buf, 11, "%04u-%02u-%02u", (unsigned)(((y % 10000) + 10000) % 10000), m % 100, d % 100);
    return buf;
}

/* 0001-01-02T00:00:00Z and 9999-12-30T23:59:59Z: a day inside 0001..9999, so no
 * offset or time zone moves a local date out of four-digit years */
#define RTIME_MIN_S (-62135510400LL)
#define RTIME_MAX_S (253402214399LL)

int rtime_parse(const char *s, int64_t *us, int *offset_min, struct err *e)
{
    int y, mo, d, h, mi, sec;
    if (!s)
        return err_set(e, ERR_INVALID, "time is missing");
    size_t len = strlen(s);
    if (len < 20 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) || s[7] != '-' ||
        digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        digits(s + 11, 2, &h) || s[13] != ':' || digits(s + 14, 2, &mi) || s[16] != ':' ||
        digits(s + 17, 2, &sec))
        goto bad;
    if (!date_ok(y, mo, d) || h > 23 || mi > 59 || sec > 60)
        goto bad;
    if (sec == 60)
        sec = 59; /* a leap second maps onto the second before it */
    const char *p = s + 19;
    int64_t frac = 0;
    if (*p == '.') {
        p++;
        int n = 0;
        while (*p >= '0' && *p <= '9') {
            if (n < 6) {
                frac = frac * 10 + (*p - '0');
                n++;
            }
            p++;
        }
        if (n == 0)
            goto bad;
        for (; n < 6; n++)
            frac *= 10;
    }
    int off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (digits(p + 1, 2, &oh) || p[3] != ':' || digits(p + 4, 2, &om) || oh > 23 || om > 59)
            goto bad;
        off = (oh * 60 + om) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        goto bad;
    }
    if (*p)
        goto bad;
    int64_t days = rtime_days_from_civil(y, (unsigned)mo, (unsigned)d);
    int64_t secs = days * 86400 + h * 3600 + mi * 60 + sec - (int64_t)off * 60;
    /* keep every instant's local date, in any zone, within years 0001..9999 */
    if (secs < RTIME_MIN_S || secs > RTIME_MAX_S)
        return err_set(e, ERR_INVALID,
                       "time \"%.60s\" is out of range (0001-01-02 to 9999-12-30 UTC)", s);
    *us = secs * 1000000 + frac;
    *offset_min = off;
    return 0;
bad:
    return err_set(e, ERR_INVALID,
                   "time \"%.60s\" is not RFC 3339 with an offset (YYYY-MM-DDTHH:MM:SS+HH:MM)", s);
}

char *rtime_format(int64_t us, int offset_min, char buf[RTIME_BUFSZ])
{
    int64_t local_us = us + (int64_t)offset_min * 60 * 1000000;
    int64_t secs = local_us / 1000000, frac = local_us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        secs--;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    /* %04d, not strftime's %Y, which glibc does not pad below year 1000 */
    int n = snprintf(buf, RTIME_BUFSZ, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (frac)
        n += snprintf(buf + n, RTIME_BUFSZ - (size_t)n, ".%06lld", (long long)frac);
    int a = offset_min < 0 ? -offset_min : offset_min;
    snprintf(buf + n, RTIME_BUFSZ - (size_t)n, "%c%02d:%02d", offset_min < 0 ? '-' : '+', a / 60,
             a % 60);
    return buf;
}

int rtime_normalize(const char *s, char buf[RTIME_BUFSZ], struct err *e)
{
    int64_t us;
    int off;
    int rc = rtime_parse(s, &us, &off, e);
    if (rc)
        return rc;
    rtime_format(us, off, buf);
    return 0;
}

char *rtime_now(char buf[RTIME_BUFSZ])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return rtime_format((int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000, 0, buf);
}

char *rtime_local_date(int64_t us, char buf[11])
{
    int64_t secs = us / 1000000 - (us % 1000000 < 0);
    time_t t = (time_t)secs;
    struct tm tm;
    if (!localtime_r(&t, &tm) || tm.tm_year + 1900 < 1 || tm.tm_year + 1900 > 9999) {
        snprintf(buf, 11, "0000-00-00"); /* out of range: never a real day */
        return buf;
    }
    snprintf(buf, 11, "%04u-%02u-%02u", (unsigned)(tm.tm_year + 1900) % 10000u,
             (unsigned)(tm.tm_mon + 1) % 100u, (unsigned)tm.tm_mday % 100u);
    return buf;
}

int rtime_local_date_of(const char *s, char buf[11], struct err *e)
{
    int64_t us;
    int off;
    int rc = rtime_parse(s, &us, &off, e);
    if (rc)
        return rc;
    rtime_local_date(us, buf);
    return 0;
}
