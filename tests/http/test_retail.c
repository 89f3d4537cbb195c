/* tests/http/test_retail.c — the Online Retail replay checked by an
 * independent route.
 *
 * The group setup
 *   1. streams the header and the first N data lines of the UCI Online Retail
 *      file (gzip, read with zlib) into a scratch PostgreSQL table
 *      retail_check.lines with COPY ... FROM STDIN (PQputCopyData), every
 *      column as text plus an identity column holding the file order, then
 *      typed tables retail_check.parsed (lines) and retail_check.invoices;
 *   2. computes with SQL (numeric, exact) the figures the read models should
 *      hold: per customer, per product, per UK day, and the loader's counts;
 *   3. runs `$CQRSD_BIN load FILE --url $CQRSD_URL --limit N` (its stderr, a
 *      file, must get plain progress lines, no carriage return) and
 *      keeps its exit status and summary;
 *   4. polls GET /readyz until every projection's checkpoint has reached the
 *      head position and says caught_up (60 s at most).
 * The tests then compare the SQL figures with the HTTP answers:
 *
 *   loader_summary  exit status 0, "errors 0", and lines read / sale lines /
 *                   accepted / rejected / return lines / returns / invoices /
 *                   orders / empty checkouts equal to the SQL counts
 *   customers       GET /customers/{id}: orders, revenue, units, returns,
 *                   returns_value, first_order_at, last_order_at; a customer
 *                   of the part with neither an order nor a return is a 404
 *   products        GET /products/{sku}: orders, units, revenue,
 *                   returned_units, returns_value; a sku seen only on
 *                   rejected lines is a 404
 *   days            GET /stats/daily over the part's whole date range:
 *                   orders, revenue, units, returns, returns_value per date
 *                   (zeros on dates of the range without an invoice)
 *
 * Rules the SQL encodes (docs/events.md, tools/load/load.c): an invoice whose
 * number starts with 'C' is a return of all its lines, quantities made
 * positive; any other invoice is a sale whose lines with quantity <= 0 or
 * unit price < 0 are rejected, and which becomes an order only when at least
 * one line was accepted. An invoice takes its customer, date and time from
 * its FIRST line in file order; InvoiceDate is UK local time, so the UK date
 * is invoice_date::date and the instant is invoice_date AT TIME ZONE
 * 'Europe/London'. A blank CustomerID is a guest (never in /customers).
 *
 * Money is compared exactly as integer thousandths parsed from the decimal
 * strings of both sides, never through floating point. Every mismatch is
 * printed with its key, the SQL figure and the HTTP figure (the first 20 of
 * each test), then the test fails.
 *
 * Other tests use random ids and 1990 dates, so only figures keyed by the
 * data set's customers, skus and 2010-2011 days are compared, never global
 * totals. A second run against the same database stores nothing new (the
 * loader's Idempotency-Keys), so the figures stay the same -- as long as N
 * stays the same: a database loaded with another N holds other figures.
 *
 * Environment: CQRSD_URL, DATABASE_URL (the server's database; the scratch
 * table lives in schema retail_check, dropped and recreated each run),
 * CQRSD_BIN (default build/cqrsd), CQRSD_RETAIL_LINES (N, default 10000),
 * CQRSD_RETAIL_FILE (default data/online-retail/online_retail_I.csv.gz, else
 * /work/shared/data/online-retail/online_retail_I.csv.gz).
 *
 * Skus containing '/' cannot be addressed as one path segment, and the sku
 * "top" is shadowed by the route GET /products/top: such skus are skipped and
 * counted (the Online Retail file has none).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <zlib.h>

#define DEFAULT_LINES 10000L
#define HEALTH_TIMEOUT_S 60
#define HEALTH_POLL_MS 200
#define HTTP_TIMEOUT_S 30L
#define MAX_REPORTED 20
#define DAILY_MAX_DAYS 400 /* the longest range GET /stats/daily answers */

static const char *const data_candidates[] = {
    "data/online-retail/online_retail_I.csv.gz",
    "/work/shared/data/online-retail/online_retail_I.csv.gz",
};

/* Everything the group setup prepares for the tests. */
static struct {
    const char *url;   /* CQRSD_URL without a trailing '/' (owned copy) */
    const char *bin;   /* the cqrsd binary */
    const char *file;  /* the data file */
    long n;            /* data lines to replay */
    PGconn *pg;
    CURL *curl;
    long copied;       /* data lines COPY stored */
    PGresult *customers, *products, *days, *totals;
    int load_status;   /* waitpid() status of the loader */
    char *load_out;    /* its standard output */
    double copy_s, sql_s, load_s, wait_s;
} R;

/* ---------- small helpers ---------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* Strict decimal string ("-12.5", "0.001", "15.30", "7") to thousandths.
 * Fraction digits past the third must be zeros. Returns 0, or -1. */
static int dec_milli(const char *s, int64_t *out)
{
    int neg = 0, fd = 0;
    int64_t v = 0;

    if (!s)
        return -1;
    if (*s == '-') {
        neg = 1;
        s++;
    }
    if (*s < '0' || *s > '9')
        return -1;
    for (; *s >= '0' && *s <= '9'; s++)
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *s - '0', &v))
            return -1;
    if (*s == '.') {
        s++;
        if (*s < '0' || *s > '9')
            return -1;
        for (; *s >= '0' && *s <= '9'; s++) {
            if (fd == 3) {
                if (*s != '0')
                    return -1;
                continue;
            }
            fd++;
            if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *s - '0', &v))
                return -1;
        }
    }
    if (*s)
        return -1;
    for (; fd < 3; fd++)
        if (__builtin_mul_overflow(v, 10, &v))
            return -1;
    *out = neg ? -v : v;
    return 0;
}

/* A money string as the API writes it: -?digits.dd or -?digits.ddd. */
static int api_money(const char *s, int64_t *out)
{
    const char *dot = s ? strchr(s, '.') : NULL;
    size_t fd = dot ? strlen(dot + 1) : 0;
    if (!dot || fd < 2 || fd > 3)
        return -1;
    return dec_milli(s, out);
}

static int parse_i64(const char *s, int64_t *out)
{
    char *end;
    long long v;
    if (!s || !*s)
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = (int64_t)v;
    return 0;
}

/* ---------- mismatch reports ---------- */

struct report {
    const char *what;
    size_t n;
};

static void mismatch(struct report *r, const char *f, ...) __attribute__((format(printf, 2, 3)));
static void mismatch(struct report *r, const char *f, ...)
{
    char m[1024];
    va_list ap;

    if (++r->n > MAX_REPORTED)
        return;
    va_start(ap, f);
    vsnprintf(m, sizeof m, f, ap);
    va_end(ap);
    print_error("mismatch: %s\n", m);
}

/* Fails the test at the caller's line when r holds mismatches. */
static void report_end_at(const char *file, int line, const struct report *r)
{
    if (r->n > MAX_REPORTED)
        print_error("... and %zu more mismatches\n", r->n - MAX_REPORTED);
    if (r->n) {
        print_error("%s: %zu mismatches between the SQL figures and the replay\n", r->what, r->n);
        _fail(file, line);
    }
}
#define report_end(r) report_end_at(__FILE__, __LINE__, (r))

/* Integer field: SQL text vs JSON integer. */
static void cmp_int(struct report *r, const char *key, const json_t *o, const char *field,
                    const char *sqlv)
{
    const json_t *v = json_object_get(o, field);
    int64_t want;

    if (parse_i64(sqlv, &want)) {
        mismatch(r, "%s %s: SQL figure \"%s\" is not an integer", key, field, sqlv);
        return;
    }
    if (!json_is_integer(v)) {
        char *d = v ? json_dumps(v, JSON_ENCODE_ANY) : NULL;
        mismatch(r, "%s %s: SQL %" PRId64 ", HTTP %s (not an integer)", key, field, want,
                 d ? d : "(absent)");
        free(d);
        return;
    }
    if ((int64_t)json_integer_value(v) != want)
        mismatch(r, "%s %s: SQL %" PRId64 ", HTTP %" PRId64, key, field, want,
                 (int64_t)json_integer_value(v));
}

/* Money field: SQL numeric text vs the API's decimal string, in thousandths. */
static void cmp_money(struct report *r, const char *key, const json_t *o, const char *field,
                      const char *sqlv)
{
    const json_t *v = json_object_get(o, field);
    int64_t want, got;

    if (dec_milli(sqlv, &want)) {
        mismatch(r, "%s %s: SQL figure \"%s\" is not a money amount", key, field, sqlv);
        return;
    }
    if (!json_is_string(v) || api_money(json_string_value(v), &got)) {
        char *d = v ? json_dumps(v, JSON_ENCODE_ANY) : NULL;
        mismatch(r, "%s %s: SQL %s, HTTP %s (not a decimal string with 2 or 3 fractional "
                 "digits)", key, field, sqlv, d ? d : "(absent)");
        free(d);
        return;
    }
    if (got != want)
        mismatch(r, "%s %s: SQL %s, HTTP %s", key, field, sqlv, json_string_value(v));
}

/* RFC 3339 "YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm)" to Unix seconds. */
static int rfc3339_epoch(const char *s, int64_t *out)
{
    int Y, M, D, h, m, sec, n = 0;
    struct tm tm = {0};
    const char *p;
    long off = 0;

    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &Y, &M, &D, &h, &m, &sec, &n) != 6 ||
        n != 19)
        return -1;
    p = s + n;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            ;
    if (*p == 'Z' && p[1] == '\0') {
        off = 0;
    } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
        int oh, om;
        if (sscanf(p + 1, "%2d:%2d", &oh, &om) != 2)
            return -1;
        off = (oh * 60L + om) * 60L * (*p == '-' ? -1 : 1);
    } else {
        return -1;
    }
    tm.tm_year = Y - 1900;
    tm.tm_mon = M - 1;
    tm.tm_mday = D;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = sec;
    *out = (int64_t)timegm(&tm) - off;
    return 0;
}

/* Time field: SQL epoch seconds ("" = NULL) vs an RFC 3339 string or null. */
static void cmp_time(struct report *r, const char *key, const json_t *o, const char *field,
                     const char *sqlv, int sql_null)
{
    const json_t *v = json_object_get(o, field);
    int64_t want = 0, got;

    if (!sql_null && parse_i64(sqlv, &want)) {
        mismatch(r, "%s %s: SQL figure \"%s\" is not an epoch", key, field, sqlv);
        return;
    }
    if (sql_null) {
        if (!json_is_null(v))
            mismatch(r, "%s %s: SQL null (no order), HTTP %s", key, field,
                     json_is_string(v) ? json_string_value(v) : "(absent or not a string)");
        return;
    }
    if (!json_is_string(v) || rfc3339_epoch(json_string_value(v), &got)) {
        mismatch(r, "%s %s: SQL epoch %" PRId64 ", HTTP %s", key, field, want,
                 json_is_string(v) ? json_string_value(v) : "(absent, null or not a string)");
        return;
    }
    if (got != want) {
        char w[32];
        time_t t = (time_t)want;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(w, sizeof w, "%Y-%m-%dT%H:%M:%SZ", &tm);
        mismatch(r, "%s %s: SQL %s, HTTP %s", key, field, w, json_string_value(v));
    }
}

/* ---------- HTTP ---------- */

struct buf {
    char *p;
    size_t n;
};

static size_t on_body(char *p, size_t sz, size_t nm, void *u)
{
    struct buf *b = u;
    size_t add = sz * nm;
    char *q = realloc(b->p, b->n + add + 1);
    if (!q)
        return 0;
    memcpy(q + b->n, p, add);
    b->p = q;
    b->n += add;
    b->p[b->n] = '\0';
    return add;
}

/* GET base+path on the shared keep-alive handle. Returns the status and sets
 * *json to the parsed body (new reference, NULL when not JSON) and, when
 * body != NULL, *body to the raw body (caller frees); 0 on transport errors
 * with the reason in err. */
static long http_get(const char *path, json_t **json, char **body, char *err, size_t errsz)
{
    struct buf b = {NULL, 0};
    char ebuf[CURL_ERROR_SIZE] = "";
    long status = 0;
    char *url;
    CURLcode rc;

    *json = NULL;
    if (body)
        *body = NULL;
    if (asprintf(&url, "%s%s", R.url, path) < 0)
        abort();
    curl_easy_setopt(R.curl, CURLOPT_URL, url);
    curl_easy_setopt(R.curl, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(R.curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(R.curl, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(R.curl, CURLOPT_ERRORBUFFER, ebuf);
    curl_easy_setopt(R.curl, CURLOPT_TIMEOUT, HTTP_TIMEOUT_S);
    curl_easy_setopt(R.curl, CURLOPT_NOSIGNAL, 1L);
    rc = curl_easy_perform(R.curl);
    free(url);
    curl_easy_setopt(R.curl, CURLOPT_ERRORBUFFER, NULL);
    if (rc != CURLE_OK) {
        snprintf(err, errsz, "%s (%s)", curl_easy_strerror(rc), ebuf);
        free(b.p);
        return 0;
    }
    curl_easy_getinfo(R.curl, CURLINFO_RESPONSE_CODE, &status);
    if (b.p)
        *json = json_loadb(b.p, b.n, 0, NULL);
    if (body)
        *body = b.p;
    else
        free(b.p);
    return status;
}

/* ---------- the independent route: COPY into PostgreSQL ---------- */

static const char *const sql_setup =
    "CREATE SCHEMA IF NOT EXISTS retail_check;"
    "DROP TABLE IF EXISTS retail_check.lines CASCADE;"
    "DROP TABLE IF EXISTS retail_check.parsed, retail_check.invoices;"
    "CREATE TABLE retail_check.lines ("
    "  line_no bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    "  invoice_no text, stock_code text, description text, quantity text,"
    "  invoice_date text, unit_price text, customer_id text, country text);";

static const char *const sql_copy =
    "COPY retail_check.lines (invoice_no, stock_code, description, quantity,"
    " invoice_date, unit_price, customer_id, country)"
    " FROM STDIN WITH (FORMAT csv, HEADER true)";

/* Tables (recomputed each run) of typed lines, and of invoices with the customer, date and time of their first
 * line in file order. Spaces and tabs around fields are dropped as the loader
 * does; a CustomerID "17850.0" is customer 17850. */
static const char *const sql_views =
    "CREATE TABLE retail_check.parsed AS"
    " SELECT s.*, NOT s.is_return AND s.qty > 0 AND s.price >= 0 AS accepted FROM ("
    "  SELECT line_no,"
    "         btrim(invoice_no, E' \\t') AS inv,"
    "         btrim(stock_code, E' \\t') AS sku,"
    "         btrim(quantity, E' \\t')::bigint AS qty,"
    "         btrim(unit_price, E' \\t')::numeric AS price,"
    "         btrim(invoice_date, E' \\t')::timestamp AS ts,"
    "         NULLIF(regexp_replace(btrim(coalesce(customer_id, ''), E' \\t'),"
    "                               '\\.0+$', ''), '') AS cust,"
    "         left(btrim(invoice_no, E' \\t'), 1) = 'C' AS is_return"
    "  FROM retail_check.lines) s;"
    "ANALYZE retail_check.parsed;"
    "CREATE TABLE retail_check.invoices AS"
    " SELECT i.inv, i.cust, i.day, i.first_at, i.is_return,"
    "        o.inv IS NOT NULL AS placed,"
    "        coalesce(o.units, 0) AS units, coalesce(o.revenue, 0) AS revenue,"
    "        coalesce(r.value, 0) AS returns_value"
    " FROM (SELECT DISTINCT ON (inv) inv, cust, ts::date AS day,"
    "              ts AT TIME ZONE 'Europe/London' AS first_at, is_return"
    "       FROM retail_check.parsed ORDER BY inv, line_no) i"
    " LEFT JOIN (SELECT inv, sum(qty) AS units, sum(qty * price) AS revenue"
    "            FROM retail_check.parsed WHERE accepted GROUP BY inv) o USING (inv)"
    " LEFT JOIN (SELECT inv, sum(abs(qty) * price) AS value"
    "            FROM retail_check.parsed WHERE is_return GROUP BY inv) r USING (inv);"
    "ANALYZE retail_check.invoices;";

/* 0 cust, 1 orders, 2 revenue, 3 units, 4 returns, 5 returns_value,
 * 6 first order (epoch, NULL without orders), 7 last order */
static const char *const sql_customers =
    "SELECT cust, count(*) FILTER (WHERE placed),"
    "       coalesce(sum(revenue) FILTER (WHERE placed), 0),"
    "       coalesce(sum(units) FILTER (WHERE placed), 0),"
    "       count(*) FILTER (WHERE is_return),"
    "       coalesce(sum(returns_value) FILTER (WHERE is_return), 0),"
    "       extract(epoch FROM min(first_at) FILTER (WHERE placed))::bigint,"
    "       extract(epoch FROM max(first_at) FILTER (WHERE placed))::bigint"
    " FROM retail_check.invoices WHERE cust IS NOT NULL GROUP BY cust ORDER BY cust";

/* 0 sku, 1 orders, 2 units, 3 revenue, 4 returned_units, 5 returns_value,
 * 6 exists ('t' when an order or a return holds the sku) */
static const char *const sql_products =
    "SELECT sku, count(DISTINCT inv) FILTER (WHERE accepted),"
    "       coalesce(sum(qty) FILTER (WHERE accepted), 0),"
    "       coalesce(sum(qty * price) FILTER (WHERE accepted), 0),"
    "       coalesce(sum(abs(qty)) FILTER (WHERE is_return), 0),"
    "       coalesce(sum(abs(qty) * price) FILTER (WHERE is_return), 0),"
    "       bool_or(accepted OR is_return)"
    " FROM retail_check.parsed GROUP BY sku ORDER BY sku";

/* 0 date, 1 orders, 2 revenue, 3 units, 4 returns, 5 returns_value; every
 * date from the first to the last of the part */
static const char *const sql_days =
    "WITH d AS (SELECT day, count(*) FILTER (WHERE placed) AS orders,"
    "                  sum(revenue) AS revenue, sum(units) AS units,"
    "                  count(*) FILTER (WHERE is_return) AS returns,"
    "                  sum(returns_value) AS returns_value"
    "           FROM retail_check.invoices GROUP BY day)"
    " SELECT to_char(g, 'YYYY-MM-DD'), coalesce(d.orders, 0), coalesce(d.revenue, 0),"
    "        coalesce(d.units, 0), coalesce(d.returns, 0), coalesce(d.returns_value, 0)"
    " FROM generate_series((SELECT min(day) FROM d)::timestamp,"
    "                      (SELECT max(day) FROM d)::timestamp, interval '1 day') g"
    " LEFT JOIN d ON d.day = g::date ORDER BY g";

/* The loader summary's counts: 0 lines read, 1 sale lines, 2 accepted,
 * 3 rejected, 4 return lines, 5 invoices, 6 orders, 7 empty checkouts,
 * 8 returns */
static const char *const sql_totals =
    "SELECT (SELECT count(*) FROM retail_check.parsed),"
    "       (SELECT count(*) FILTER (WHERE NOT is_return) FROM retail_check.parsed),"
    "       (SELECT count(*) FILTER (WHERE accepted) FROM retail_check.parsed),"
    "       (SELECT count(*) FILTER (WHERE NOT is_return AND (qty <= 0 OR price < 0))"
    "        FROM retail_check.parsed),"
    "       (SELECT count(*) FILTER (WHERE is_return) FROM retail_check.parsed),"
    "       (SELECT count(*) FROM retail_check.invoices),"
    "       (SELECT count(*) FILTER (WHERE placed) FROM retail_check.invoices),"
    "       (SELECT count(*) FILTER (WHERE NOT is_return AND NOT placed)"
    "        FROM retail_check.invoices),"
    "       (SELECT count(*) FILTER (WHERE is_return) FROM retail_check.invoices)";

static int pg_ok(PGresult *res, ExecStatusType want, const char *what)
{
    if (PQresultStatus(res) == want)
        return 1;
    fprintf(stderr, "test_retail: %s failed: %s", what,
            res ? PQresultErrorMessage(res) : PQerrorMessage(R.pg));
    return 0;
}

static int pg_exec(const char *sql, const char *what)
{
    PGresult *res = PQexec(R.pg, sql);
    int ok = pg_ok(res, PGRES_COMMAND_OK, what);
    PQclear(res);
    return ok;
}

static PGresult *pg_query(const char *sql, const char *what)
{
    PGresult *res = PQexec(R.pg, sql);
    if (!pg_ok(res, PGRES_TUPLES_OK, what)) {
        PQclear(res);
        return NULL;
    }
    return res;
}

/* Streams the header and the first R.n data records of R.file into the COPY
 * in progress. A record ends at a newline outside double quotes (RFC 4180:
 * a quoted field may hold newlines; the Online Retail file has none). Sets
 * R.copied to the data records sent. Returns 0, or -1 after a message. */
static int copy_stream(void)
{
    static char chunk[1 << 16];
    gzFile gz = gzopen(R.file, "rb");
    long records = 0; /* complete records sent, header included */
    int in_quotes = 0, pending = 0, errnum;

    if (!gz) {
        fprintf(stderr, "test_retail: cannot open \"%s\": %s\n", R.file, strerror(errno));
        return -1;
    }
    gzbuffer(gz, 1u << 18);
    while (records < R.n + 1) {
        int got = gzread(gz, chunk, sizeof chunk);
        size_t send;
        if (got < 0) {
            fprintf(stderr, "test_retail: cannot read \"%s\": %s\n", R.file,
                    gzerror(gz, &errnum));
            gzclose(gz);
            return -1;
        }
        if (got == 0)
            break;
        send = (size_t)got;
        for (int i = 0; i < got; i++) {
            if (chunk[i] == '"')
                in_quotes = !in_quotes;
            else if (chunk[i] == '\n' && !in_quotes && ++records == R.n + 1) {
                send = (size_t)i + 1;
                break;
            }
        }
        pending = chunk[send - 1] != '\n';
        if (PQputCopyData(R.pg, chunk, (int)send) != 1) {
            fprintf(stderr, "test_retail: COPY failed: %s", PQerrorMessage(R.pg));
            gzclose(gz);
            return -1;
        }
    }
    gzclose(gz);
    if (records < R.n + 1 && pending) {
        /* the file's last record has no final newline */
        if (PQputCopyData(R.pg, "\n", 1) != 1) {
            fprintf(stderr, "test_retail: COPY failed: %s", PQerrorMessage(R.pg));
            return -1;
        }
        records++;
    }
    R.copied = records > 0 ? records - 1 : 0;
    return 0;
}

static int copy_part(void)
{
    PGresult *res;
    int rc;

    if (!pg_exec("BEGIN", "BEGIN") || !pg_exec(sql_setup, "creating retail_check.lines"))
        return -1;
    res = PQexec(R.pg, sql_copy);
    if (!pg_ok(res, PGRES_COPY_IN, "COPY")) {
        PQclear(res);
        return -1;
    }
    PQclear(res);
    rc = copy_stream();
    if (PQputCopyEnd(R.pg, rc ? "test_retail: reading the file failed" : NULL) != 1) {
        fprintf(stderr, "test_retail: COPY end failed: %s", PQerrorMessage(R.pg));
        return -1;
    }
    res = PQgetResult(R.pg);
    if (!rc && !pg_ok(res, PGRES_COMMAND_OK, "COPY"))
        rc = -1;
    if (!rc && strtol(PQcmdTuples(res), NULL, 10) != R.copied) {
        fprintf(stderr, "test_retail: COPY stored %s rows, %ld data lines were sent\n",
                PQcmdTuples(res), R.copied);
        rc = -1;
    }
    PQclear(res);
    while ((res = PQgetResult(R.pg)))
        PQclear(res);
    if (rc)
        return -1;
    if (!pg_exec(sql_views, "computing retail_check.parsed and .invoices") || !pg_exec("COMMIT", "COMMIT"))
        return -1;
    return 0;
}

/* ---------- the loader ---------- */

static int run_loader(void)
{
    char limit[32];
    char *argv[] = {(char *)R.bin, "load",   (char *)R.file, "--url", (char *)R.url,
                    "--limit",     limit,    NULL};
    char errpath[] = "/tmp/test_retail_load_XXXXXX";
    int errfd = mkstemp(errpath);
    struct buf out = {NULL, 0};
    char chunk[4096];
    int fd[2];
    pid_t pid;
    ssize_t k;

    snprintf(limit, sizeof limit, "%ld", R.n);
    if (errfd < 0) {
        fprintf(stderr, "test_retail: mkstemp: %s\n", strerror(errno));
        return -1;
    }
    unlink(errpath);
    if (pipe2(fd, O_CLOEXEC) != 0) {
        fprintf(stderr, "test_retail: pipe: %s\n", strerror(errno));
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) {
        fprintf(stderr, "test_retail: fork: %s\n", strerror(errno));
        close(fd[0]);
        close(fd[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fd[1], STDOUT_FILENO);
        dup2(errfd, STDERR_FILENO);
        close(fd[0]);
        close(fd[1]);
        execv(R.bin, argv);
        fprintf(stderr, "test_retail: cannot run %s: %s\n", R.bin, strerror(errno));
        _exit(127);
    }
    close(fd[1]);
    for (;;) {
        k = read(fd[0], chunk, sizeof chunk);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        if (on_body(chunk, 1, (size_t)k, &out) != (size_t)k)
            abort();
    }
    close(fd[0]);
    while (waitpid(pid, &R.load_status, 0) < 0) {
        if (errno != EINTR) {
            fprintf(stderr, "test_retail: waitpid: %s\n", strerror(errno));
            free(out.p);
            return -1;
        }
    }
    R.load_out = out.p ? out.p : strdup("");
    if (!R.load_out)
        abort();
    /* progress into a file: plain lines, never a line rewritten with \r */
    char err[65536];
    ssize_t n = pread(errfd, err, sizeof err - 1, 0);
    close(errfd);
    err[n > 0 ? n : 0] = '\0';
    if (memchr(err, '\r', n > 0 ? (size_t)n : 0) || !strstr(err, " lines  ")) {
        fprintf(stderr, "test_retail: the loader's stderr into a file is not plain progress "
                        "lines:\n%s\n", err);
        return -1;
    }
    return 0;
}

/* The number after `word` on the summary line starting with `prefix`, or the
 * first number on that line when word is NULL. Returns 0, or -1. */
static int summary_value(const char *prefix, const char *word, long *out)
{
    size_t pl = strlen(prefix);
    const char *line = R.load_out, *p, *eol;
    char *end;

    while (line && *line && strncmp(line, prefix, pl))
        line = (line = strchr(line, '\n')) ? line + 1 : NULL;
    if (!line || !*line)
        return -1;
    eol = strchr(line, '\n');
    if (!eol)
        eol = line + strlen(line);
    p = line + pl;
    if (word) {
        size_t wl = strlen(word);
        for (; p < eol; p++)
            if (!strncmp(p, word, wl) && p[-1] == ' ' && p[wl] == ' ')
                break;
        if (p >= eol)
            return -1;
        p += wl;
    }
    while (p < eol && *p == ' ')
        p++;
    if (p >= eol || *p < '0' || *p > '9')
        return -1;
    *out = strtol(p, &end, 10);
    return end <= eol ? 0 : -1;
}

/* ---------- waiting for the read models ---------- */

/* 1 when every projection is caught up with the head position, 0 when one is
 * behind, -1 when the body is not a /readyz object. */
static int health_caught_up(const json_t *h, char *why, size_t whysz)
{
    const json_t *pos = json_object_get(h, "position");
    const json_t *projs = json_object_get(h, "projections"), *p;
    size_t i;

    if (!json_is_string(pos) || !json_is_array(projs) || json_array_size(projs) == 0) {
        snprintf(why, whysz, "reply has no position or no projections");
        return -1;
    }
    json_array_foreach(projs, i, p) {
        const json_t *cp = json_object_get(p, "checkpoint");
        const json_t *up = json_object_get(p, "caught_up");
        const json_t *name = json_object_get(p, "name");
        if (!json_is_string(cp) || !json_is_boolean(up)) {
            snprintf(why, whysz, "projection entry without checkpoint or caught_up");
            return -1;
        }
        if (strcmp(json_string_value(cp), json_string_value(pos)) < 0 || !json_is_true(up)) {
            snprintf(why, whysz, "projection %s at %s, head %s, caught_up %s",
                     json_is_string(name) ? json_string_value(name) : "?",
                     json_string_value(cp), json_string_value(pos),
                     json_is_true(up) ? "true" : "false");
            return 0;
        }
    }
    return 1;
}

static int wait_caught_up(void)
{
    double deadline = now_s() + HEALTH_TIMEOUT_S;
    char why[512] = "no reply yet", err[512];

    for (;;) {
        json_t *h;
        long st = http_get("/readyz", &h, NULL, err, sizeof err);
        int up = -1;
        if (st == 200)
            up = health_caught_up(h, why, sizeof why);
        else if (st == 0)
            snprintf(why, sizeof why, "GET /readyz: %.400s", err);
        else
            snprintf(why, sizeof why, "GET /readyz answered %ld", st);
        json_decref(h);
        if (up == 1)
            return 0;
        if (now_s() >= deadline) {
            fprintf(stderr, "test_retail: projections did not catch up within %d s: %s\n",
                    HEALTH_TIMEOUT_S, why);
            return -1;
        }
        sleep_ms(HEALTH_POLL_MS);
    }
}

/* ---------- group setup and teardown ---------- */

static int group_setup(void **state)
{
    const char *url = getenv("CQRSD_URL"), *db = getenv("DATABASE_URL");
    const char *lines = getenv("CQRSD_RETAIL_LINES"), *file = getenv("CQRSD_RETAIL_FILE");
    double t;
    size_t len;
    char *u;

    (void)state;
    if (!url || !*url || !db || !*db) {
        fprintf(stderr, "test_retail: needs CQRSD_URL and DATABASE_URL (run it with make "
                        "test)\n");
        return -1;
    }
    if ((u = strdup(url)) == NULL)
        abort();
    len = strlen(u);
    while (len > 0 && u[len - 1] == '/')
        u[--len] = '\0';
    R.url = u;
    R.bin = getenv("CQRSD_BIN") && *getenv("CQRSD_BIN") ? getenv("CQRSD_BIN") : "build/cqrsd";
    R.n = DEFAULT_LINES;
    if (lines && *lines) {
        char *end;
        errno = 0;
        R.n = strtol(lines, &end, 10);
        if (errno || *end || R.n < 1) {
            fprintf(stderr, "test_retail: CQRSD_RETAIL_LINES=\"%s\" is not a positive integer\n",
                    lines);
            return -1;
        }
    }
    if (file && *file) {
        R.file = file;
    } else {
        for (size_t i = 0; i < sizeof data_candidates / sizeof *data_candidates; i++)
            if (access(data_candidates[i], R_OK) == 0) {
                R.file = data_candidates[i];
                break;
            }
    }
    if (!R.file || access(R.file, R_OK) != 0) {
        fprintf(stderr, "test_retail: no readable Online Retail file (tried %s and %s)\n",
                data_candidates[0], data_candidates[1]);
        return -1;
    }
    if (access(R.bin, X_OK) != 0) {
        fprintf(stderr, "test_retail: cannot run the cqrsd binary \"%s\"\n", R.bin);
        return -1;
    }

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(R.curl = curl_easy_init()))
        return -1;
    R.pg = PQconnectdb(db);
    if (PQstatus(R.pg) != CONNECTION_OK) {
        fprintf(stderr, "test_retail: cannot connect to DATABASE_URL: %s", PQerrorMessage(R.pg));
        return -1;
    }
    pg_exec("SET client_min_messages = warning", "SET");

    /* 1-2. the independent figures */
    t = now_s();
    if (copy_part())
        return -1;
    R.copy_s = now_s() - t;
    t = now_s();
    if (!(R.customers = pg_query(sql_customers, "customer figures")) ||
        !(R.products = pg_query(sql_products, "product figures")) ||
        !(R.days = pg_query(sql_days, "daily figures")) ||
        !(R.totals = pg_query(sql_totals, "loader counts")))
        return -1;
    R.sql_s = now_s() - t;

    /* 3-4. the replay */
    t = now_s();
    if (run_loader())
        return -1;
    R.load_s = now_s() - t;
    printf("%s", R.load_out);
    fflush(stdout);
    t = now_s();
    if (wait_caught_up())
        return -1;
    R.wait_s = now_s() - t;
    print_message("test_retail: %s, N = %ld (%ld lines copied): COPY %.1f s, SQL %.1f s, "
                  "load %.1f s, projections caught up %.1f s later\n",
                  R.file, R.n, R.copied, R.copy_s, R.sql_s, R.load_s, R.wait_s);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    PQclear(R.customers);
    PQclear(R.products);
    PQclear(R.days);
    PQclear(R.totals);
    if (R.pg)
        PQfinish(R.pg);
    if (R.curl)
        curl_easy_cleanup(R.curl);
    curl_global_cleanup();
    free(R.load_out);
    free((char *)R.url);
    memset(&R, 0, sizeof R);
    return 0;
}

/* ---------- 1. the loader's own account ---------- */

static void loader_summary(void **state)
{
    static const struct {
        const char *prefix, *word;
    } fields[] = {
        {"lines read", NULL},       {"sale lines", NULL}, {"sale lines", "accepted"},
        {"sale lines", "rejected"}, {"return lines", NULL}, {"invoices", NULL},
        {"invoices", "orders"},     {"invoices", "empty checkouts rejected"},
        {"return lines", "returns"},
    };
    struct report r = {"loader summary", 0};
    long errors;

    (void)state;
    if (!WIFEXITED(R.load_status) || WEXITSTATUS(R.load_status) != 0)
        mismatch(&r, "cqrsd load exit status: expected 0, got %s %d",
                 WIFEXITED(R.load_status) ? "exit" : "signal",
                 WIFEXITED(R.load_status) ? WEXITSTATUS(R.load_status)
                                          : WTERMSIG(R.load_status));
    if (summary_value("errors", NULL, &errors))
        mismatch(&r, "the summary has no \"errors N\" line");
    else if (errors != 0)
        mismatch(&r, "the summary says errors %ld, expected 0", errors);
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        const char *sqlv = PQgetvalue(R.totals, 0, (int)i);
        char key[96];
        long got;
        snprintf(key, sizeof key, "\"%s\"%s%s", fields[i].prefix, fields[i].word ? " / " : "",
                 fields[i].word ? fields[i].word : "");
        if (summary_value(fields[i].prefix, fields[i].word, &got))
            mismatch(&r, "summary %s: not found in the loader output", key);
        else if (strtol(sqlv, NULL, 10) != got)
            mismatch(&r, "summary %s: SQL %s, loader %ld", key, sqlv, got);
    }
    if (strtol(PQgetvalue(R.totals, 0, 0), NULL, 10) != R.copied)
        mismatch(&r, "lines copied %ld, SQL sees %s", R.copied, PQgetvalue(R.totals, 0, 0));
    print_message("loader summary: %zu counts compared; rejected lines SQL %s\n",
                  sizeof fields / sizeof *fields, PQgetvalue(R.totals, 0, 3));
    report_end(&r);
}

/* ---------- 2. customers ---------- */

static void customers(void **state)
{
    struct report r = {"customers", 0};
    int rows = PQntuples(R.customers);
    size_t absent = 0;
    char err[512];

    (void)state;
    for (int i = 0; i < rows; i++) {
        const char *id = PQgetvalue(R.customers, i, 0);
        int exists = strcmp(PQgetvalue(R.customers, i, 1), "0") ||
                     strcmp(PQgetvalue(R.customers, i, 4), "0");
        char *esc = curl_easy_escape(R.curl, id, 0), *path, *body, key[160];
        json_t *j;
        long st;

        if (!esc || asprintf(&path, "/customers/%s", esc) < 0)
            abort();
        curl_free(esc);
        snprintf(key, sizeof key, "customer %s", id);
        st = http_get(path, &j, &body, err, sizeof err);
        free(path);
        if (st == 0) {
            mismatch(&r, "%s: GET failed: %s", key, err);
        } else if (!exists) {
            absent++;
            if (st != 404)
                mismatch(&r, "%s: SQL has no order and no return (all lines rejected), "
                         "expected 404, HTTP %ld %.300s", key, st, body ? body : "");
        } else if (st != 200 || !json_is_object(j)) {
            mismatch(&r, "%s: SQL orders %s returns %s, HTTP %ld %.300s", key,
                     PQgetvalue(R.customers, i, 1), PQgetvalue(R.customers, i, 4), st,
                     body ? body : "");
        } else {
            cmp_int(&r, key, j, "orders", PQgetvalue(R.customers, i, 1));
            cmp_money(&r, key, j, "revenue", PQgetvalue(R.customers, i, 2));
            cmp_int(&r, key, j, "units", PQgetvalue(R.customers, i, 3));
            cmp_int(&r, key, j, "returns", PQgetvalue(R.customers, i, 4));
            cmp_money(&r, key, j, "returns_value", PQgetvalue(R.customers, i, 5));
            cmp_time(&r, key, j, "first_order_at", PQgetvalue(R.customers, i, 6),
                     PQgetisnull(R.customers, i, 6));
            cmp_time(&r, key, j, "last_order_at", PQgetvalue(R.customers, i, 7),
                     PQgetisnull(R.customers, i, 7));
        }
        json_decref(j);
        free(body);
    }
    print_message("customers: %d compared (%zu of them expected 404)\n", rows, absent);
    assert_true(rows > 0);
    report_end(&r);
}

/* ---------- 3. products ---------- */

static void products(void **state)
{
    struct report r = {"products", 0};
    int rows = PQntuples(R.products);
    size_t absent = 0, skipped = 0;
    char err[512];

    (void)state;
    for (int i = 0; i < rows; i++) {
        const char *sku = PQgetvalue(R.products, i, 0);
        int exists = !strcmp(PQgetvalue(R.products, i, 6), "t");
        char *esc, *path, *body, key[300];
        json_t *j;
        long st;

        if (strchr(sku, '/') || !strcmp(sku, "top")) {
            skipped++;
            print_message("products: skipped sku \"%s\" (cannot be addressed as "
                          "/products/{sku})\n", sku);
            continue;
        }
        esc = curl_easy_escape(R.curl, sku, 0);
        if (!esc || asprintf(&path, "/products/%s", esc) < 0)
            abort();
        curl_free(esc);
        snprintf(key, sizeof key, "product \"%.200s\"", sku);
        st = http_get(path, &j, &body, err, sizeof err);
        free(path);
        if (st == 0) {
            mismatch(&r, "%s: GET failed: %s", key, err);
        } else if (!exists) {
            absent++;
            if (st != 404)
                mismatch(&r, "%s: SQL has it on rejected lines only, expected 404, HTTP %ld "
                         "%.300s", key, st, body ? body : "");
        } else if (st != 200 || !json_is_object(j)) {
            mismatch(&r, "%s: SQL orders %s units %s, HTTP %ld %.300s", key,
                     PQgetvalue(R.products, i, 1), PQgetvalue(R.products, i, 2), st,
                     body ? body : "");
        } else {
            const json_t *s = json_object_get(j, "sku");
            if (!json_is_string(s) || strcmp(json_string_value(s), sku))
                mismatch(&r, "%s sku: HTTP %s", key,
                         json_is_string(s) ? json_string_value(s) : "(absent)");
            cmp_int(&r, key, j, "orders", PQgetvalue(R.products, i, 1));
            cmp_int(&r, key, j, "units", PQgetvalue(R.products, i, 2));
            cmp_money(&r, key, j, "revenue", PQgetvalue(R.products, i, 3));
            cmp_int(&r, key, j, "returned_units", PQgetvalue(R.products, i, 4));
            cmp_money(&r, key, j, "returns_value", PQgetvalue(R.products, i, 5));
        }
        json_decref(j);
        free(body);
    }
    print_message("products: %d skus, %d compared (%zu of them expected 404), %zu skipped\n",
                  rows, rows - (int)skipped, absent, skipped);
    assert_true(rows > 0);
    report_end(&r);
}

/* ---------- 4. days ---------- */

static void days(void **state)
{
    struct report r = {"days", 0};
    int rows = PQntuples(R.days);
    char err[512];

    (void)state;
    assert_true(rows > 0);
    for (int start = 0; start < rows; start += DAILY_MAX_DAYS) {
        int end = start + DAILY_MAX_DAYS < rows ? start + DAILY_MAX_DAYS : rows;
        const char *from = PQgetvalue(R.days, start, 0), *to = PQgetvalue(R.days, end - 1, 0);
        char path[96], *body;
        const json_t *list;
        json_t *j;
        long st;

        snprintf(path, sizeof path, "/stats/daily?from=%s&to=%s", from, to);
        st = http_get(path, &j, &body, err, sizeof err);
        list = json_object_get(j, "days");
        if (st != 200 || !json_is_array(list)) {
            mismatch(&r, "GET %s: HTTP %ld %.300s", path, st, st ? (body ? body : "") : err);
        } else if ((int)json_array_size(list) != end - start) {
            mismatch(&r, "GET %s: SQL %d dates, HTTP %zu", path, end - start,
                     json_array_size(list));
        } else {
            for (int i = start; i < end; i++) {
                const char *date = PQgetvalue(R.days, i, 0);
                const json_t *d = json_array_get(list, (size_t)(i - start));
                const json_t *dv = json_object_get(d, "date");
                char key[32];
                snprintf(key, sizeof key, "day %s", date);
                if (!json_is_string(dv) || strcmp(json_string_value(dv), date)) {
                    mismatch(&r, "%s: HTTP entry %d has date %s", key, i - start,
                             json_is_string(dv) ? json_string_value(dv) : "(absent)");
                    continue;
                }
                cmp_int(&r, key, d, "orders", PQgetvalue(R.days, i, 1));
                cmp_money(&r, key, d, "revenue", PQgetvalue(R.days, i, 2));
                cmp_int(&r, key, d, "units", PQgetvalue(R.days, i, 3));
                cmp_int(&r, key, d, "returns", PQgetvalue(R.days, i, 4));
                cmp_money(&r, key, d, "returns_value", PQgetvalue(R.days, i, 5));
            }
        }
        json_decref(j);
        free(body);
    }
    print_message("days: %d compared, %s to %s\n", rows, PQgetvalue(R.days, 0, 0),
                  PQgetvalue(R.days, rows - 1, 0));
    report_end(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(loader_summary),
        cmocka_unit_test(customers),
        cmocka_unit_test(products),
        cmocka_unit_test(days),
    };
    return cmocka_run_group_tests_name("http_retail", tests, group_setup, group_teardown);
}
