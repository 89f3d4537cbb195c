/* tests/unit/test_money_time.c — cmocka tests of core/money.c (exact money
 * as int64 thousandths) and core/rtime.c (RFC 3339 instants and the business
 * day in Europe/London).
 *
 * Invariants checked: parse and format are inverse on every accepted value;
 * every reject is ERR_INVALID with a PostgreSQL-style message; arithmetic
 * overflow is ERR_REJECTED, never wrap-around; instants compare across
 * offsets and DST changes; the business date follows the tz database.
 * The business time zone is forced to Europe/London before rtime_init, so the
 * results do not depend on the caller's environment.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "core/money.h"
#include "core/rtime.h"

/* Asserts a PostgreSQL-style message: non-empty, lowercase start, no period. */
static void assert_pg_style(const struct err *e)
{
    size_t n = strlen(e->msg);
    assert_true(n > 0);
    assert_false(e->msg[0] >= 'A' && e->msg[0] <= 'Z');
    assert_int_not_equal(e->msg[n - 1], '.');
}

/* ---------- money ---------- */

static void money_parse_accepts(void **st)
{
    (void)st;
    static const struct {
        const char *s;
        int64_t v;
    } ok[] = {
        {"12", 12000},
        {"2.5", 2500},
        {"2.55", 2550},
        {"0.001", 1},
        {"-3.10", -3100},
        {"0", 0},
        {"0.1", 100},
        {"0.2", 200},
        {"000012.5", 12500},
        {"1234.567", 1234567},
        {"999999999999.999", MONEY_MAX_INPUT},
        {"-999999999999.999", -MONEY_MAX_INPUT},
        {"999999999999", 999999999999000LL},
        {"0000000000000000000001", 1000},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct err e = {0};
        int64_t v = -42;
        int rc = money_parse(ok[i].s, &v, &e);
        if (rc)
            print_error("money_parse(\"%s\") failed: %s\n", ok[i].s, e.msg);
        assert_int_equal(rc, 0);
        assert_int_equal(e.code, 0);
        assert_true(v == ok[i].v);
    }
}

static void money_parse_rejects(void **st)
{
    (void)st;
    static const char *const bad[] = {
        "",      "-",     ".5",      "-.5",  "1.",    "1.2345", "0.0001", "1e3",
        "1E3",   "+1",    " 1",      "1 ",   "1,5",   "1.2.3",  "--1",    "1.-5",
        "abc",   "0x10",  "\xef\xbc\x99", "1000000000000", "-1000000000000",
        "9999999999999999999999", "Infinity", "NaN", "1_000", "-0", "-0.00", "-0.000",
        "-000",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct err e = {0};
        int64_t v = 7;
        int rc = money_parse(bad[i], &v, &e);
        if (rc != ERR_INVALID)
            print_error("money_parse(\"%s\") returned %d, value %lld\n", bad[i], rc, (long long)v);
        assert_int_equal(rc, ERR_INVALID);
        assert_int_equal(e.code, ERR_INVALID);
        assert_true(v == 7); /* *out untouched on failure */
        assert_pg_style(&e);
    }
    struct err e = {0};
    int64_t v;
    assert_int_equal(money_parse(NULL, &v, &e), ERR_INVALID);
    assert_int_equal(money_parse("1.2345", &v, NULL), ERR_INVALID); /* e may be NULL */
    assert_int_equal(money_parse("2.5500", &v, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "fractional"));
    assert_int_equal(money_parse("1000000000000", &v, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "too large"));
}

static void money_format_shapes(void **st)
{
    (void)st;
    static const struct {
        int64_t v;
        const char *s;
    } cases[] = {
        {2550, "2.55"},
        {1, "0.001"},
        {12000, "12.00"},
        {-500, "-0.50"},
        {0, "0.00"},
        {10, "0.01"},
        {100, "0.10"},
        {-1, "-0.001"},
        {1234567, "1234.567"},
        {3401, "3.401"},
        {MONEY_MAX_INPUT, "999999999999.999"},
        {INT64_MAX, "9223372036854775.807"},
        {INT64_MIN, "-9223372036854775.808"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[MONEY_BUFSZ];
        assert_ptr_equal(money_format(cases[i].v, buf), buf);
        assert_string_equal(buf, cases[i].s);
    }
}

/* format then parse gives the value back; parse of a canonical string then
 * format gives the string back. */
static void money_round_trips(void **st)
{
    (void)st;
    char buf[MONEY_BUFSZ];
    for (int64_t v = -20000; v <= 20000; v++) {
        int64_t back = 0;
        assert_int_equal(money_parse(money_format(v, buf), &back, NULL), 0);
        assert_true(back == v);
    }
    for (int64_t v = 1; v > 0 && v <= MONEY_MAX_INPUT; v = v * 7 + 3) {
        int64_t back = 0;
        assert_int_equal(money_parse(money_format(v, buf), &back, NULL), 0);
        assert_true(back == v);
        assert_int_equal(money_parse(money_format(-v, buf), &back, NULL), 0);
        assert_true(back == -v);
    }
    static const char *const canon[] = {"2.55", "0.001", "12.00", "-0.50", "0.00", "1234.567"};
    for (size_t i = 0; i < sizeof canon / sizeof canon[0]; i++) {
        int64_t v;
        assert_int_equal(money_parse(canon[i], &v, NULL), 0);
        assert_string_equal(money_format(v, buf), canon[i]);
    }
}

/* The sum that binary floating point gets wrong is exact here. */
static void money_exact_sums(void **st)
{
    (void)st;
    int64_t a, b, c, sum = 0;
    assert_int_equal(money_parse("0.1", &a, NULL), 0);
    assert_int_equal(money_parse("0.2", &b, NULL), 0);
    assert_int_equal(money_parse("0.3", &c, NULL), 0);
    assert_int_equal(money_add(a, b, &sum, NULL), 0);
    assert_true(sum == c);
    int64_t t = 0, milli;
    assert_int_equal(money_parse("0.001", &milli, NULL), 0);
    for (int i = 0; i < 100000; i++)
        assert_int_equal(money_add(t, milli, &t, NULL), 0);
    char buf[MONEY_BUFSZ];
    assert_string_equal(money_format(t, buf), "100.00");
    int64_t amount;
    assert_int_equal(money_mul(2550, 6, &amount, NULL), 0);
    assert_string_equal(money_format(amount, buf), "15.30");
}

static void money_overflow(void **st)
{
    (void)st;
    struct err e = {0};
    int64_t out = 5;
    assert_int_equal(money_add(INT64_MAX, 1, &out, &e), ERR_REJECTED);
    assert_int_equal(e.code, ERR_REJECTED);
    assert_pg_style(&e);
    assert_int_equal(money_add(INT64_MIN, -1, &out, NULL), ERR_REJECTED);
    /* no command amount beyond MONEY_MAX_INPUT (read-model sums stay far from int64) */
    assert_int_equal(money_add(MONEY_MAX_INPUT, 1, &out, NULL), ERR_REJECTED);
    assert_int_equal(money_add(-MONEY_MAX_INPUT, -1, &out, NULL), ERR_REJECTED);
    assert_int_equal(money_add(MONEY_MAX_INPUT, 0, &out, NULL), 0);
    assert_true(out == MONEY_MAX_INPUT);
    assert_int_equal(money_mul(MONEY_MAX_INPUT, 1000000, &out, &e), ERR_REJECTED);
    assert_int_equal(money_mul(-MONEY_MAX_INPUT, 1000000, &out, NULL), ERR_REJECTED);
    assert_int_equal(money_mul(INT64_MIN, -1, &out, NULL), ERR_REJECTED);
    assert_int_equal(money_mul(MONEY_MAX_INPUT, 1, &out, NULL), 0);
    assert_true(out == MONEY_MAX_INPUT);
    assert_int_equal(money_mul(MONEY_MAX_INPUT, 2, &out, NULL), ERR_REJECTED);
    assert_int_equal(money_mul(-3100, 3, &out, NULL), 0);
    assert_true(out == -9300);
}

/* ---------- rtime ---------- */

static int64_t parse_us(const char *s, int *off)
{
    int64_t us = 0;
    int o = 0;
    struct err e = {0};
    int rc = rtime_parse(s, &us, &o, &e);
    if (rc)
        print_error("rtime_parse(\"%s\") failed: %s\n", s, e.msg);
    assert_int_equal(rc, 0);
    if (off)
        *off = o;
    return us;
}

static void rtime_parse_instants(void **st)
{
    (void)st;
    int off;
    assert_true(parse_us("1970-01-01T00:00:00Z", &off) == 0);
    assert_int_equal(off, 0);
    assert_true(parse_us("1970-01-01T01:00:00+01:00", &off) == 0);
    assert_int_equal(off, 60);
    assert_true(parse_us("1969-12-31T19:00:00-05:00", &off) == 0);
    assert_int_equal(off, -300);
    assert_true(parse_us("1969-12-31T23:59:59.999999Z", NULL) == -1);
    assert_true(parse_us("2011-06-01T10:00:00+01:00", NULL) == 1306918800LL * 1000000);
    assert_true(parse_us("2011-06-01 09:00:00z", NULL) == 1306918800LL * 1000000);
    assert_true(parse_us("2011-06-01t09:00:00Z", NULL) == 1306918800LL * 1000000);
    assert_true(parse_us("2011-06-01T09:00:00.1234567Z", NULL) == 1306918800LL * 1000000 + 123456);
    assert_true(parse_us("2011-06-01T09:00:00.5Z", NULL) == 1306918800LL * 1000000 + 500000);
    assert_true(parse_us("2000-02-29T00:00:00Z", NULL) == 951782400LL * 1000000);
    assert_true(parse_us("2012-02-29T12:00:00+05:30", NULL) == (1330473600LL + 43200 - 19800) * 1000000);
    assert_true(parse_us("2010-12-31T23:59:60Z", NULL) == parse_us("2010-12-31T23:59:59Z", NULL));
}

/* Europe/London springs forward at 01:00 UTC on 2011-03-27. */
static void rtime_dst_one_second(void **st)
{
    (void)st;
    int o1, o2;
    int64_t a = parse_us("2011-03-27T00:59:59+00:00", &o1);
    int64_t b = parse_us("2011-03-27T02:00:00+01:00", &o2);
    assert_true(b - a == 1000000);
    assert_int_equal(o1, 0);
    assert_int_equal(o2, 60);
    /* and falls back at 01:00 UTC on 2011-10-30: 01:30+01:00 is an hour before 01:30+00:00 */
    int64_t c = parse_us("2011-10-30T01:30:00+01:00", NULL);
    int64_t d = parse_us("2011-10-30T01:30:00+00:00", NULL);
    assert_true(d - c == 3600LL * 1000000);
}

static void rtime_parse_rejects(void **st)
{
    (void)st;
    static const char *const bad[] = {
        "",
        "2011-06-01",
        "2011-06-01T09:00:00",          /* no offset */
        "2011-06-01T09:00Z",            /* no seconds */
        "2011-06-01T09:00:00+0100",     /* offset without colon */
        "2011-06-01T09:00:00+01",
        "2011-06-01T09:00:00+24:00",
        "2011-06-01T09:00:00+01:60",
        "2011-06-01T09:00:00.Z",        /* empty fraction */
        "2011-06-01T09:00:00Z ",        /* trailing space */
        "2011-06-01X09:00:00Z",
        "2011-13-01T09:00:00Z",
        "2011-00-01T09:00:00Z",
        "2011-04-31T09:00:00Z",
        "2011-02-29T09:00:00Z",         /* not a leap year */
        "1900-02-29T09:00:00Z",         /* not a leap year */
        "2012-02-30T09:00:00Z",
        "2011-06-00T09:00:00Z",
        "2011-06-01T24:00:00Z",
        "2011-06-01T09:60:00Z",
        "2011-06-01T09:00:61Z",
        "11-06-01T09:00:00Z",
        "2011-6-1T09:00:00Z",
        "abcd-ef-ghTij:kl:mnZ",
        "2011-06-01T09:00:00+01:00:00",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct err e = {0};
        int64_t us = 99;
        int off = 99;
        int rc = rtime_parse(bad[i], &us, &off, &e);
        if (rc != ERR_INVALID)
            print_error("rtime_parse(\"%s\") returned %d\n", bad[i], rc);
        assert_int_equal(rc, ERR_INVALID);
        assert_int_equal(e.code, ERR_INVALID);
        assert_pg_style(&e);
    }
    int64_t us;
    int off;
    assert_int_equal(rtime_parse(NULL, &us, &off, NULL), ERR_INVALID);
    char buf[RTIME_BUFSZ];
    assert_int_equal(rtime_normalize("yesterday", buf, NULL), ERR_INVALID);
}

static void rtime_format_shapes(void **st)
{
    (void)st;
    char buf[RTIME_BUFSZ];
    assert_string_equal(rtime_format(0, 0, buf), "1970-01-01T00:00:00+00:00");
    assert_string_equal(rtime_format(-1, 0, buf), "1969-12-31T23:59:59.999999+00:00");
    assert_string_equal(rtime_format(1306918800LL * 1000000, 60, buf), "2011-06-01T10:00:00+01:00");
    assert_string_equal(rtime_format(1306918800LL * 1000000, -330, buf),
                        "2011-06-01T03:30:00-05:30");
    assert_string_equal(rtime_format(1306918800LL * 1000000 + 500000, 0, buf),
                        "2011-06-01T09:00:00.500000+00:00");
    struct err e = {0};
    assert_int_equal(rtime_normalize("2011-06-01t09:00:00z", buf, &e), 0);
    assert_string_equal(buf, "2011-06-01T09:00:00+00:00");
    assert_int_equal(rtime_normalize("2011-06-01 10:00:00.5-05:30", buf, &e), 0);
    assert_string_equal(buf, "2011-06-01T10:00:00.500000-05:30");
    assert_int_equal(rtime_normalize("2010-12-01T08:26:00+00:00", buf, &e), 0);
    assert_string_equal(buf, "2010-12-01T08:26:00+00:00");
}

/* parse(format(us, off)) == (us, off) across years, offsets and fractions,
 * and normalize is idempotent. */
static void rtime_round_trips(void **st)
{
    (void)st;
    static const int offs[] = {0, 60, -60, 330, -330, 840, -720, 1439, -1439};
    char buf[RTIME_BUFSZ], again[RTIME_BUFSZ];
    /* from 1000-01-01 to 9998-12-31 in steps of about 97 days and some seconds */
    int64_t lo = -30610224000LL * 1000000, hi = 253370764800LL * 1000000;
    size_t k = 0;
    for (int64_t us = lo; us < hi; us += 8380800123457LL, k++) {
        int off = offs[k % (sizeof offs / sizeof offs[0])];
        rtime_format(us, off, buf);
        int64_t back;
        int boff;
        struct err e = {0};
        int rc = rtime_parse(buf, &back, &boff, &e);
        if (rc || back != us || boff != off)
            print_error("round trip of %lld at %d: \"%s\" -> rc %d, %lld at %d (%s)\n",
                        (long long)us, off, buf, rc, (long long)back, boff, e.msg);
        assert_int_equal(rc, 0);
        assert_true(back == us);
        assert_int_equal(boff, off);
        assert_int_equal(rtime_normalize(buf, again, NULL), 0);
        assert_string_equal(again, buf);
    }
}

/* rtime_format once printed the year with strftime's %Y, which glibc does
 * not zero-pad below 1000, so normalised times failed to parse again. */
static void rtime_years_below_1000(void **st)
{
    (void)st;
    char buf[RTIME_BUFSZ];
    assert_int_equal(rtime_normalize("0999-01-01T00:00:00Z", buf, NULL), 0);
    assert_string_equal(buf, "0999-01-01T00:00:00+00:00");
    assert_int_equal(rtime_normalize("0001-03-01T00:00:00Z", buf, NULL), 0);
    assert_string_equal(buf, "0001-03-01T00:00:00+00:00");
    /* instants whose local date could leave years 0001..9999 in some zone are refused */
    struct err e = {0};
    assert_int_equal(rtime_normalize("0000-03-01T00:00:00Z", buf, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "out of range"));
    assert_int_equal(rtime_normalize("0001-01-01T12:00:00Z", buf, &e), ERR_INVALID);
    assert_int_equal(rtime_normalize("9999-12-31T23:59:59-23:59", buf, &e), ERR_INVALID);
    assert_int_equal(rtime_normalize("9999-12-30T23:59:59Z", buf, &e), 0);
    char day[11];
    assert_int_equal(rtime_local_date_of("9999-12-30T23:59:59Z", day, &e), 0);
    assert_string_equal(day, "9999-12-30");
}

static void local_date_is(const char *instant, const char *date)
{
    char buf[11];
    struct err e = {0};
    int rc = rtime_local_date_of(instant, buf, &e);
    if (rc)
        print_error("rtime_local_date_of(\"%s\") failed: %s\n", instant, e.msg);
    assert_int_equal(rc, 0);
    if (strcmp(buf, date))
        print_error("rtime_local_date_of(\"%s\") = %s, want %s\n", instant, buf, date);
    assert_string_equal(buf, date);
}

static void rtime_business_day_london(void **st)
{
    (void)st;
    local_date_is("2011-06-30T23:30:00+00:00", "2011-07-01"); /* BST: 00:30 local */
    local_date_is("2011-06-30T22:59:59Z", "2011-06-30");
    local_date_is("2011-06-30T23:00:00Z", "2011-07-01");
    local_date_is("2011-07-01T00:30:00+01:00", "2011-07-01");
    local_date_is("2011-12-31T23:30:00+00:00", "2011-12-31"); /* GMT in winter */
    local_date_is("2011-12-31T23:30:00-05:00", "2012-01-01");
    local_date_is("2011-03-27T00:59:59+00:00", "2011-03-27");
    local_date_is("2011-03-26T23:59:59+00:00", "2011-03-26"); /* still GMT */
    local_date_is("2011-10-29T23:30:00+00:00", "2011-10-30"); /* still BST */
    local_date_is("2011-10-30T23:30:00+00:00", "2011-10-30"); /* GMT again */
    local_date_is("2010-12-01T08:26:00+00:00", "2010-12-01");
    char buf[11];
    assert_int_equal(rtime_local_date_of("not a time", buf, NULL), ERR_INVALID);
    assert_string_equal(rtime_local_date(1309476600LL * 1000000, buf), "2011-07-01");
    /* a negative instant rounds towards the earlier second, not towards zero */
    assert_string_equal(rtime_local_date(parse_us("2011-01-01T00:00:00Z", NULL) - 1, buf),
                        "2010-12-31");
}

static void rtime_now_is_utc_rfc3339(void **st)
{
    (void)st;
    char buf[RTIME_BUFSZ];
    rtime_now(buf);
    int off = 99;
    int64_t us = parse_us(buf, &off);
    assert_int_equal(off, 0);
    assert_true(us > parse_us("2020-01-01T00:00:00Z", NULL));
    assert_non_null(strstr(buf, "+00:00"));
}

int main(void)
{
    setenv("CQRSD_TIMEZONE", "Europe/London", 1);
    rtime_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(money_parse_accepts),
        cmocka_unit_test(money_parse_rejects),
        cmocka_unit_test(money_format_shapes),
        cmocka_unit_test(money_round_trips),
        cmocka_unit_test(money_exact_sums),
        cmocka_unit_test(money_overflow),
        cmocka_unit_test(rtime_parse_instants),
        cmocka_unit_test(rtime_dst_one_second),
        cmocka_unit_test(rtime_parse_rejects),
        cmocka_unit_test(rtime_format_shapes),
        cmocka_unit_test(rtime_round_trips),
        cmocka_unit_test(rtime_years_below_1000),
        cmocka_unit_test(rtime_business_day_london),
        cmocka_unit_test(rtime_now_is_utc_rfc3339),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
