/* core/rtime.h — RFC 3339 timestamps with an offset, and the business day.
 *
 * An instant is int64 microseconds since 1970-01-01T00:00:00Z. Text is RFC 3339
 * (https://www.rfc-editor.org/rfc/rfc3339 §5.6) with a numeric offset or Z.
 * The business time zone (CQRSD_TIMEZONE, default Europe/London) comes from
 * the system tz database through localtime_r; rtime_init sets it once, before
 * any thread starts.
 */
#ifndef CQRSD_RTIME_H
#define CQRSD_RTIME_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define RTIME_BUFSZ 40

/* Sets TZ for the process to CQRSD_TIMEZONE or Europe/London. Call once at
 * start. The platform calls it; it is not exported to modules. */
void rtime_init(void);

/* 0 when tz names a zone of the tz database (a TZif file under $TZDIR or
 * /usr/share/zoneinfo, tzfile(5)), else -1 with why[n] naming
 * CQRSD_TIMEZONE. Without this check an unknown name silently means UTC. */
int rtime_zone_check(const char *tz, char *why, size_t n);

/* Parses "YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)" ('t', 'z' and a space
 * for 'T' are accepted as RFC 3339 allows). Fractions beyond microseconds are
 * truncated. Sets *us (instant) and *offset_min (offset east of UTC, minutes).
 * Returns 0 or ERR_INVALID naming what is wrong. */
int rtime_parse(const char *s, int64_t *us, int *offset_min, struct err *e);

/* Formats an instant at the given offset: "2011-06-01T10:00:00+01:00", with
 * ".ffffff" only when the instant has a sub-second part. Returns buf. */
char *rtime_format(int64_t us, int offset_min, char buf[RTIME_BUFSZ]);

/* Normalises an RFC 3339 string (same instant, same offset, canonical form).
 * Returns 0 or ERR_INVALID. */
int rtime_normalize(const char *s, char buf[RTIME_BUFSZ], struct err *e);

/* Now, from the server's clock, in UTC ("...+00:00"). Returns buf. */
char *rtime_now(char buf[RTIME_BUFSZ]);

/* The business-time-zone calendar date of an instant, "YYYY-MM-DD". Returns buf. */
char *rtime_local_date(int64_t us, char buf[11]);

/* Same for an RFC 3339 string; returns 0 or ERR_INVALID. */
int rtime_local_date_of(const char *s, char buf[11], struct err *e);

/* Days since 1970-01-01 of a proleptic Gregorian date, and back (H. Hinnant,
 * "chrono-Compatible Low-Level Date Algorithms", days_from_civil). */
int64_t rtime_days_from_civil(int64_t y, unsigned m, unsigned d);
void rtime_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d);

/* Parses a calendar date "YYYY-MM-DD" (a real one) into days since
 * 1970-01-01. Returns 0 or -1. */
int rtime_parse_date(const char *s, int64_t *days);

/* Formats days since 1970-01-01 as "YYYY-MM-DD". Returns buf. */
char *rtime_format_date(int64_t days, char buf[11]);

#endif
