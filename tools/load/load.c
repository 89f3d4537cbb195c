/*
 * tools/load/load.c — `cqrsd load`: the Online Retail replay client.
 *
 * Reads the UCI Online Retail CSV (plain or gzip, through zlib; RFC 4180
 * through libcsv), groups its lines by InvoiceNo in first-seen order, and
 * replays every invoice through the cqrsd HTTP API with N worker threads
 * (one libcurl easy handle each, connections kept alive):
 *
 *   sale    POST /carts, POST /carts/{id}/items per line,
 *           POST /carts/{id}/checkout, POST /orders/{order_id}/payments
 *   return  POST /returns (InvoiceNo starting with 'C')
 *
 * Every command carries Idempotency-Key "load-<InvoiceNo>-<step>", so a
 * second run stores nothing twice. 5xx, 429 and connection errors are
 * retried with backoff (honouring Retry-After); 422 counts as a rejected
 * line or an empty checkout; any other reply is an error, reported and
 * counted but never fatal. At the end the loader prints a summary, waits
 * for every projection checkpoint in GET /readyz to reach the largest
 * position it was given, and prints GET /stats/summary.
 *
 * Prices are never converted to floating point: UnitPrice goes to the
 * server as the decimal string it is in the file.
 */
#include "tools/load/load.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <csv.h>
#include <curl/curl.h>
#include <zlib.h>

#define LOAD_NFIELDS 8
#define LOAD_MAX_RETRIES 10          /* retries after the first attempt */
#define LOAD_PROGRESS_MS 500       /* the progress line's redraw on a terminal */
#define LOAD_PROGRESS_LINE_MS 5000 /* a progress line into a file or a pipe */
#define LOAD_HEALTH_POLL_MS 200
#define LOAD_HEALTH_TIMEOUT_S 120
#define LOAD_REQUEST_TIMEOUT_MS 60000L
#define LOAD_CONNECT_TIMEOUT_MS 5000L
#define LOAD_MAX_REPLY (16u * 1024u * 1024u)

#define LOAD_MAX_COLUMNS 64 /* columns a header may have */

/* The eight values the loader needs, in this order in a record; each is found
 * in the header by one of its names (any case, any column order): the layout
 * of Online Retail (2010-2011) first, of Online Retail II (2009-2011) second;
 * `--columns role=Name,...` names them for other exports. */
enum { C_INVOICE, C_SKU, C_DESCRIPTION, C_QUANTITY, C_DATE, C_PRICE, C_CUSTOMER, C_COUNTRY };

static const struct {
    const char *role;     /* its key in --columns */
    const char *names[2]; /* Online Retail, Online Retail II */
} load_roles[LOAD_NFIELDS] = {
    {"invoice", {"InvoiceNo", "Invoice"}},
    {"sku", {"StockCode", "StockCode"}},
    {"description", {"Description", "Description"}},
    {"quantity", {"Quantity", "Quantity"}},
    {"date", {"InvoiceDate", "InvoiceDate"}},
    {"price", {"UnitPrice", "Price"}},
    {"customer", {"CustomerID", "Customer ID"}},
    {"country", {"Country", "Country"}},
};

/* ---------------------------------------------------------------- helpers */

static void set_err(char *err, size_t errsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errsz, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errsz == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Trims spaces and tabs off [s, s+len); returns the new start and length. */
static const char *trim_span(const char *s, size_t len, size_t *outlen)
{
    while (len > 0 && is_blank(*s)) {
        s++;
        len--;
    }
    while (len > 0 && is_blank(s[len - 1]))
        len--;
    *outlen = len;
    return s;
}

/* Trims a NUL-terminated buffer in place; returns the trimmed start. */
static char *trim_inplace(char *s)
{
    size_t len;
    char *start = (char *)trim_span(s, strlen(s), &len);

    start[len] = '\0';
    return start;
}

static int copy_span(char *out, size_t outsz, const char *s, size_t len)
{
    if (outsz == 0)
        return -1;
    if (len >= outsz) {
        out[0] = '\0';
        return -1;
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

static int parse_long_strict(const char *s, long *out)
{
    char *end;
    long v;

    if (s == NULL || *s == '\0' || isspace((unsigned char)*s))
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts;

    if (ms <= 0)
        return;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* ---------------------------------------------------------------- options */

void load_usage(FILE *f)
{
    fprintf(f,
        "usage: cqrsd load FILE.csv[.gz] [--url URL] [--concurrency N]\n"
        "                  [--limit N] [--columns MAP] [--quiet]\n"
        "\n"
        "Replays the Online Retail CSV through the cqrsd HTTP API: one cart,\n"
        "its items, checkout and payment per sale invoice, one return per\n"
        "invoice starting with C. Safe to run twice (Idempotency-Key).\n"
        "\n"
        "  --url URL          server base URL (default %s)\n"
        "  --concurrency N    worker threads, 1..%d (default %d)\n"
        "  --limit N          replay only the first N data lines\n"
        "  --columns MAP      the columns of another export, e.g.\n"
        "                     invoice=Order,sku=Item,description=Text,quantity=Qty,\n"
        "                     date=When,price=Price,customer=Client,country=Country\n"
        "                     (default: the header of Online Retail or Online Retail II)\n"
        "  --quiet            no progress on stderr (a line redrawn on a terminal,\n"
        "                     else a line every 5 s)\n"
        "  --help             show this text\n"
        "\n"
        "FILE may be \"-\" for standard input. A server with CQRSD_AUTH=on\n"
        "needs a key of scopes command,query in CQRSD_API_KEY. Exit status: 0\n"
        "when every command succeeded and the read models caught up, 1\n"
        "otherwise, 2 on bad arguments.\n",
        LOAD_DEFAULT_URL, LOAD_MAX_CONCURRENCY, LOAD_DEFAULT_CONCURRENCY);
}

static int option_is(const char *arg, size_t namelen, const char *name)
{
    return strlen(name) == namelen && strncmp(arg, name, namelen) == 0;
}

int load_parse_args(int argc, char **argv, struct load_options *opts,
                    char *err, size_t errsz)
{
    int positional_only = 0;

    opts->file = NULL;
    opts->url = LOAD_DEFAULT_URL;
    opts->concurrency = LOAD_DEFAULT_CONCURRENCY;
    opts->limit = -1;
    opts->quiet = 0;
    opts->columns = NULL;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    }

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *eq, *val;
        size_t namelen;
        long n;

        if (!positional_only && strcmp(arg, "--") == 0) {
            positional_only = 1;
            continue;
        }
        if (positional_only || arg[0] != '-' || arg[1] == '\0') {
            if (opts->file != NULL) {
                set_err(err, errsz,
                        "more than one input file given (\"%s\" and \"%s\")",
                        opts->file, arg);
                return -1;
            }
            opts->file = arg;
            continue;
        }

        eq = strchr(arg, '=');
        namelen = eq ? (size_t)(eq - arg) : strlen(arg);
        if (option_is(arg, namelen, "--quiet")) {
            if (eq) {
                set_err(err, errsz, "option --quiet takes no value");
                return -1;
            }
            opts->quiet = 1;
            continue;
        }
        if (!option_is(arg, namelen, "--url") &&
            !option_is(arg, namelen, "--concurrency") &&
            !option_is(arg, namelen, "--limit") &&
            !option_is(arg, namelen, "--columns")) {
            set_err(err, errsz, "unknown option \"%s\"", arg);
            return -1;
        }
        if (eq)
            val = eq + 1;
        else if (i + 1 < argc)
            val = argv[++i];
        else {
            set_err(err, errsz, "option %.*s needs a value", (int)namelen,
                    arg);
            return -1;
        }

        if (option_is(arg, namelen, "--columns")) {
            if (*val == '\0' || strlen(val) > 2000) {
                set_err(err, errsz, "option --columns needs role=Name,... (at most 2000 "
                                    "bytes)");
                return -1;
            }
            opts->columns = val;
        } else if (option_is(arg, namelen, "--url")) {
            const char *host = NULL;

            if (strncmp(val, "http://", 7) == 0)
                host = val + 7;
            else if (strncmp(val, "https://", 8) == 0)
                host = val + 8;
            if (host == NULL || *host == '\0' || *host == '/' ||
                strpbrk(val, " \t\r\n") != NULL) {
                set_err(err, errsz,
                        "invalid --url value \"%s\": expected "
                        "http://HOST[:PORT]", val);
                return -1;
            }
            opts->url = val;
        } else if (option_is(arg, namelen, "--concurrency")) {
            if (parse_long_strict(val, &n) != 0 || n < 1 ||
                n > LOAD_MAX_CONCURRENCY) {
                set_err(err, errsz,
                        "invalid --concurrency value \"%s\": expected an "
                        "integer from 1 to %d", val, LOAD_MAX_CONCURRENCY);
                return -1;
            }
            opts->concurrency = (int)n;
        } else {
            if (parse_long_strict(val, &n) != 0 || n < 0) {
                set_err(err, errsz,
                        "invalid --limit value \"%s\": expected a "
                        "non-negative integer", val);
                return -1;
            }
            opts->limit = n;
        }
    }

    if (opts->file == NULL) {
        set_err(err, errsz, "no input file given");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------- time */

int load_tz_init(char *err, size_t errsz)
{
    struct tm summer = {0}, winter = {0};

    if (setenv("TZ", "Europe/London", 1) != 0) {
        set_err(err, errsz, "could not set TZ: %s", strerror(errno));
        return -1;
    }
    tzset();

    /* tzset() falls back to UTC without a word when the zone is missing. */
    summer.tm_year = 2011 - 1900;
    summer.tm_mon = 5;
    summer.tm_mday = 1;
    summer.tm_hour = 12;
    summer.tm_isdst = -1;
    winter = summer;
    winter.tm_mon = 0;
    if (mktime(&summer) == (time_t)-1 || mktime(&winter) == (time_t)-1 ||
        summer.tm_gmtoff != 3600 || winter.tm_gmtoff != 0) {
        set_err(err, errsz,
                "time zone \"Europe/London\" is not in the tz database "
                "(install tzdata)");
        return -1;
    }
    return 0;
}

static int parse_digits(const char *s, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/*
 * mktime() of *want with the given tm_isdst; succeeds only when the local
 * time exists as written (mktime did not normalise it away) and, for
 * isdst >= 0, has that DST flag.
 */
static int local_mktime(const struct tm *want, int isdst, struct tm *got)
{
    struct tm t = *want;

    t.tm_isdst = isdst;
    if (mktime(&t) == (time_t)-1 && errno == EOVERFLOW)
        return -1;
    if (t.tm_year != want->tm_year || t.tm_mon != want->tm_mon ||
        t.tm_mday != want->tm_mday || t.tm_hour != want->tm_hour ||
        t.tm_min != want->tm_min || t.tm_sec != want->tm_sec)
        return -1;
    if (isdst >= 0 && (t.tm_isdst > 0) != (isdst > 0))
        return -1;
    *got = t;
    return 0;
}

int load_uk_time_to_rfc3339(const char *local, char *out, size_t outsz)
{
    int year, mon, day, hour, min, sec = 0;
    struct tm want = {0}, got, alt;
    const char *s;
    size_t n;
    long off;
    char sign;

    if (outsz > 0)
        out[0] = '\0';
    if (local == NULL || outsz < LOAD_RFC3339_LEN + 1)
        return -1;
    s = trim_span(local, strlen(local), &n);
    if (n != 16 && n != 19)
        return -1;
    if (parse_digits(s, 4, &year) || s[4] != '-' ||
        parse_digits(s + 5, 2, &mon) || s[7] != '-' ||
        parse_digits(s + 8, 2, &day) || (s[10] != ' ' && s[10] != 'T') ||
        parse_digits(s + 11, 2, &hour) || s[13] != ':' ||
        parse_digits(s + 14, 2, &min))
        return -1;
    if (n == 19 && (s[16] != ':' || parse_digits(s + 17, 2, &sec)))
        return -1;
    if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 ||
        min > 59 || sec > 59)
        return -1;

    want.tm_year = year - 1900;
    want.tm_mon = mon - 1;
    want.tm_mday = day;
    want.tm_hour = hour;
    want.tm_min = min;
    want.tm_sec = sec;
    if (local_mktime(&want, -1, &got) != 0)
        return -1; /* impossible date, or skipped by spring-forward */
    /* Repeated by fall-back: both flags are valid; take the first (DST). */
    if (local_mktime(&want, got.tm_isdst > 0 ? 0 : 1, &alt) == 0 &&
        alt.tm_gmtoff > got.tm_gmtoff)
        got = alt;

    off = got.tm_gmtoff;
    sign = off < 0 ? '-' : '+';
    if (off < 0)
        off = -off;
    if (off >= 24 * 3600)
        return -1;
    snprintf(out, outsz, "%04d-%02d-%02dT%02d:%02d:%02d%c%02ld:%02ld",
             year, mon, day, hour, min, sec, sign, off / 3600,
             (off % 3600) / 60);
    return 0;
}

/* ------------------------------------------------------------ field rules */

int load_normalise_customer_id(const char *in, char *out, size_t outsz)
{
    const char *s;
    size_t n, digits = 0;

    if (outsz > 0)
        out[0] = '\0';
    if (in == NULL || outsz == 0)
        return -1;
    s = trim_span(in, strlen(in), &n);
    while (digits < n && s[digits] >= '0' && s[digits] <= '9')
        digits++;
    if (digits < n) {
        /* only "digits.000" may follow */
        if (digits == 0 || s[digits] != '.' || digits + 1 == n)
            return -1;
        for (size_t i = digits + 1; i < n; i++)
            if (s[i] != '0')
                return -1;
    }
    return copy_span(out, outsz, s, digits);
}

int load_normalise_price(const char *in, char *out, size_t outsz)
{
    const char *s;
    size_t n, i = 0, intdigits = 0, fracdigits = 0;

    if (outsz > 0)
        out[0] = '\0';
    if (in == NULL || outsz == 0)
        return -1;
    s = trim_span(in, strlen(in), &n);
    if (i < n && s[i] == '-')
        i++;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        i++;
        intdigits++;
    }
    if (intdigits == 0)
        return -1;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            i++;
            fracdigits++;
        }
        if (fracdigits == 0)
            return -1;
    }
    if (i != n)
        return -1;
    return copy_span(out, outsz, s, n);
}

int load_parse_quantity(const char *in, long long *out)
{
    const char *s;
    size_t n, i = 0;
    long long v = 0;
    int neg = 0;

    if (in == NULL)
        return -1;
    s = trim_span(in, strlen(in), &n);
    if (i < n && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    if (i == n)
        return -1;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        if (v > (INT64_MAX - (s[i] - '0')) / 10)
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return 0;
}

int load_is_return_invoice(const char *invoice_no)
{
    return invoice_no != NULL && invoice_no[0] == 'C';
}

int load_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;

    while (i < len) {
        unsigned char c = s[i];
        size_t need;
        unsigned long cp;

        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (len - i <= need)
            return 0;
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += need + 1;
    }
    return 1;
}

int load_idempotency_key(char *out, size_t outsz, const char *invoice_no,
                         const char *step)
{
    int n;

    if (outsz == 0)
        return -1;
    n = snprintf(out, outsz, "load-%s-%s", invoice_no, step);
    if (n < 0 || (size_t)n >= outsz) {
        out[0] = '\0';
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- dataset */

struct load_arena_chunk {
    struct load_arena_chunk *next;
    size_t used;
    size_t cap;
    char data[];
};

struct load_arena {
    struct load_arena_chunk *head;
};

#define LOAD_ARENA_CHUNK (1u << 20)

static char *arena_strndup(struct load_arena *a, const char *s, size_t n)
{
    struct load_arena_chunk *c = a->head;
    char *p;

    if (c == NULL || c->cap - c->used < n + 1) {
        size_t cap = n + 1 > LOAD_ARENA_CHUNK ? n + 1 : LOAD_ARENA_CHUNK;

        c = malloc(sizeof *c + cap);
        if (c == NULL)
            return NULL;
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    p = c->data + c->used;
    memcpy(p, s, n);
    p[n] = '\0';
    c->used += n + 1;
    return p;
}

static void arena_free(struct load_arena *a)
{
    struct load_arena_chunk *c, *next;

    if (a == NULL)
        return;
    for (c = a->head; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    free(a);
}

void load_dataset_free(struct load_dataset *ds)
{
    if (ds == NULL)
        return;
    for (size_t i = 0; i < ds->ninvoices; i++)
        free(ds->invoices[i].lines);
    free(ds->invoices);
    free(ds->index);
    arena_free(ds->arena);
    memset(ds, 0, sizeof *ds);
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static int index_grow(struct load_dataset *ds)
{
    size_t cap = ds->index_cap ? ds->index_cap * 2 : 1024;
    size_t *idx = calloc(cap, sizeof *idx);

    if (idx == NULL)
        return -1;
    for (size_t i = 0; i < ds->ninvoices; i++) {
        size_t j = hash_str(ds->invoices[i].invoice_no) & (cap - 1);

        while (idx[j] != 0)
            j = (j + 1) & (cap - 1);
        idx[j] = i + 1;
    }
    free(ds->index);
    ds->index = idx;
    ds->index_cap = cap;
    return 0;
}

/* Finds the invoice for key, creating it (in first-seen order) if new. */
static struct load_invoice *invoice_get(struct load_dataset *ds,
                                        const char *key, int *created)
{
    struct load_invoice *inv;
    size_t j;

    *created = 0;
    if ((ds->ninvoices + 1) * 2 > ds->index_cap && index_grow(ds) != 0)
        return NULL;
    j = hash_str(key) & (ds->index_cap - 1);
    while (ds->index[j] != 0) {
        inv = &ds->invoices[ds->index[j] - 1];
        if (strcmp(inv->invoice_no, key) == 0)
            return inv;
        j = (j + 1) & (ds->index_cap - 1);
    }
    if (ds->ninvoices == ds->invoices_cap) {
        size_t cap = ds->invoices_cap ? ds->invoices_cap * 2 : 1024;
        struct load_invoice *p = realloc(ds->invoices, cap * sizeof *p);

        if (p == NULL)
            return NULL;
        ds->invoices = p;
        ds->invoices_cap = cap;
    }
    inv = &ds->invoices[ds->ninvoices];
    memset(inv, 0, sizeof *inv);
    inv->invoice_no = arena_strndup(ds->arena, key, strlen(key));
    if (inv->invoice_no == NULL)
        return NULL;
    ds->index[j] = ++ds->ninvoices;
    *created = 1;
    return inv;
}

struct csv_reader {
    struct load_dataset *ds;
    const char *path;
    const char *columns;   /* the --columns mapping, or NULL */
    char *field[LOAD_MAX_COLUMNS];
    size_t field_cap[LOAD_MAX_COLUMNS];
    size_t nfields;        /* fields seen in the current record */
    size_t ncolumns;       /* the header's */
    int col[LOAD_NFIELDS]; /* the column of each value */
    char *value[LOAD_NFIELDS]; /* the current record's values (field[col[i]]) */
    unsigned long line_no; /* physical line being parsed, 1-based */
    unsigned long record_line; /* line where the current record starts */
    long limit;
    int header_done;
    int done;
    int failed;
    char *err;
    size_t errsz;
};

static void reader_fail_at(struct csv_reader *r, unsigned long line,
                           const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void reader_fail_at(struct csv_reader *r, unsigned long line,
                           const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    set_err(r->err, r->errsz, "file \"%s\" line %lu: %s", r->path, line,
            msg);
    r->failed = 1;
}

/* Fails the read, blaming the line where the current record starts. */
#define reader_fail(r, ...) reader_fail_at((r), (r)->record_line, __VA_ARGS__)

static void on_csv_field(void *s, size_t len, void *data)
{
    struct csv_reader *r = data;
    size_t i = r->nfields++;

    if (r->failed || r->done || i >= LOAD_MAX_COLUMNS)
        return;
    if (r->field_cap[i] < len + 1) {
        size_t cap = len + 1 < 64 ? 64 : (len + 1) * 2;
        char *p = realloc(r->field[i], cap);

        if (p == NULL) {
            reader_fail(r, "out of memory");
            return;
        }
        r->field[i] = p;
        r->field_cap[i] = cap;
    }
    if (len > 0)
        memcpy(r->field[i], s, len);
    r->field[i][len] = '\0';
}

/* The header's columns, "a", "b", ... into out. */
static void header_list(const struct csv_reader *r, char *out, size_t outsz)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < r->ncolumns && len + 1 < outsz; i++)
        len += (size_t)snprintf(out + len, outsz - len, "%s\"%.30s\"", i ? ", " : "",
                                r->field[i]);
}

/* The column named name (trimmed, any case), or -1. */
static int header_find(const struct csv_reader *r, const char *name, size_t len)
{
    for (size_t i = 0; i < r->ncolumns; i++)
        if (strlen(r->field[i]) == len && strncasecmp(r->field[i], name, len) == 0)
            return (int)i;
    return -1;
}

/* Maps the values to columns by --columns "role=Name,role=Name,...". */
static void header_map_columns(struct csv_reader *r)
{
    char list[400];
    const char *p = r->columns;
    while (*p && !r->failed) {
        size_t n = strcspn(p, ","), k = strcspn(p, "=");
        if (k >= n) {
            reader_fail(r, "--columns \"%.*s\" is not role=Name", (int)n, p);
            return;
        }
        int role = -1;
        for (int i = 0; i < LOAD_NFIELDS && role < 0; i++)
            if (strlen(load_roles[i].role) == k && strncmp(load_roles[i].role, p, k) == 0)
                role = i;
        if (role < 0) {
            reader_fail(r, "--columns names no value \"%.*s\": the values are invoice, sku, "
                           "description, quantity, date, price, customer, country",
                        (int)k, p);
            return;
        }
        int c = header_find(r, p + k + 1, n - k - 1);
        if (c < 0) {
            header_list(r, list, sizeof list);
            reader_fail(r, "--columns maps %s to \"%.*s\", which the header lacks (it has %s)",
                        load_roles[role].role, (int)(n - k - 1), p + k + 1, list);
            return;
        }
        r->col[role] = c;
        p += n;
        if (*p == ',')
            p++;
    }
    for (int i = 0; i < LOAD_NFIELDS && !r->failed; i++)
        if (r->col[i] < 0)
            reader_fail(r, "--columns does not map %s", load_roles[i].role);
}

static void reader_header(struct csv_reader *r)
{
    char list[400];
    if (r->nfields > LOAD_MAX_COLUMNS) {
        reader_fail(r, "header has %zu columns, more than %d", r->nfields, LOAD_MAX_COLUMNS);
        return;
    }
    r->ncolumns = r->nfields;
    for (size_t i = 0; i < r->ncolumns; i++) {
        char *name = trim_inplace(r->field[i]);
        if (i == 0 && strncmp(name, "\xEF\xBB\xBF", 3) == 0)
            name += 3; /* UTF-8 byte order mark */
        memmove(r->field[i], name, strlen(name) + 1);
    }
    for (int i = 0; i < LOAD_NFIELDS; i++)
        r->col[i] = -1;
    if (r->columns) {
        header_map_columns(r);
    } else {
        for (int i = 0; i < LOAD_NFIELDS; i++) {
            for (int k = 0; k < 2 && r->col[i] < 0; k++)
                r->col[i] = header_find(r, load_roles[i].names[k],
                                        strlen(load_roles[i].names[k]));
            if (r->col[i] < 0) {
                header_list(r, list, sizeof list);
                reader_fail(r,
                            "header has no column for %s (\"%s\" in Online Retail, \"%s\" in "
                            "Online Retail II); it has %s: name the columns with --columns "
                            "%s=NAME,...",
                            load_roles[i].role, load_roles[i].names[0], load_roles[i].names[1],
                            list, load_roles[i].role);
                return;
            }
        }
    }
    if (r->failed)
        return;
    r->header_done = 1;
    if (r->limit == 0)
        r->done = 1;
}

static void reader_record(struct csv_reader *r)
{
    struct load_dataset *ds = r->ds;
    struct load_invoice *inv;
    struct load_line *line;
    char price[64], customer[64];
    const char *invoice_no, *sku, *desc, *country, *date;
    long long quantity;
    int created;

    if (r->nfields != r->ncolumns) {
        reader_fail(r, "expected %zu fields (as the header), found %zu", r->ncolumns,
                    r->nfields);
        return;
    }
    for (int i = 0; i < LOAD_NFIELDS; i++) {
        r->value[i] = r->field[r->col[i]];
        if (!load_utf8_valid(r->value[i], strlen(r->value[i]))) {
            reader_fail(r, "%s is not valid UTF-8", load_roles[i].names[0]); /* Online Retail's name */
            return;
        }
    }
    invoice_no = trim_inplace(r->value[C_INVOICE]);
    sku = trim_inplace(r->value[C_SKU]);
    desc = r->value[C_DESCRIPTION];
    date = trim_inplace(r->value[C_DATE]);
    country = trim_inplace(r->value[C_COUNTRY]);
    if (*invoice_no == '\0') {
        reader_fail(r, "InvoiceNo is empty");
        return;
    }
    if (*sku == '\0') {
        reader_fail(r, "StockCode is empty");
        return;
    }
    if (load_parse_quantity(r->value[C_QUANTITY], &quantity) != 0) {
        reader_fail(r, "invalid Quantity \"%.40s\"", r->value[C_QUANTITY]);
        return;
    }
    if (load_normalise_price(r->value[C_PRICE], price, sizeof price) != 0) {
        reader_fail(r, "invalid UnitPrice \"%.40s\"", r->value[C_PRICE]);
        return;
    }
    if (load_normalise_customer_id(r->value[C_CUSTOMER], customer,
                                   sizeof customer) != 0) {
        reader_fail(r, "invalid CustomerID \"%.40s\"", r->value[C_CUSTOMER]);
        return;
    }

    inv = invoice_get(ds, invoice_no, &created);
    if (inv == NULL) {
        reader_fail(r, "out of memory");
        return;
    }
    if (created) {
        inv->customer_id = customer[0]
            ? arena_strndup(ds->arena, customer, strlen(customer)) : NULL;
        inv->country = arena_strndup(ds->arena, country, strlen(country));
        if ((customer[0] && inv->customer_id == NULL) ||
            inv->country == NULL) {
            reader_fail(r, "out of memory");
            return;
        }
        if (load_is_return_invoice(invoice_no))
            ds->return_invoices++;
    }
    if (inv->nlines == inv->cap) {
        size_t cap = inv->cap ? inv->cap * 2 : 4;
        struct load_line *p = realloc(inv->lines, cap * sizeof *p);

        if (p == NULL) {
            reader_fail(r, "out of memory");
            return;
        }
        inv->lines = p;
        inv->cap = cap;
    }
    line = &inv->lines[inv->nlines];
    if (load_uk_time_to_rfc3339(date, line->occurred_at,
                                sizeof line->occurred_at) != 0) {
        reader_fail(r, "invalid InvoiceDate \"%.40s\"", date);
        return;
    }
    line->quantity = quantity;
    line->sku = arena_strndup(ds->arena, sku, strlen(sku));
    line->description = arena_strndup(ds->arena, desc, strlen(desc));
    line->unit_price = arena_strndup(ds->arena, price, strlen(price));
    if (line->sku == NULL || line->description == NULL ||
        line->unit_price == NULL) {
        reader_fail(r, "out of memory");
        return;
    }
    inv->nlines++;
    ds->nlines++;
    if (load_is_return_invoice(invoice_no))
        ds->return_lines++;
    else
        ds->sale_lines++;
    if (r->limit >= 0 && ds->nlines >= (size_t)r->limit)
        r->done = 1;
}

/* With CSV_REPALL_NL every unquoted CR and LF ends a (possibly empty)
 * record, which keeps record_line right across blank lines and CRLF. */
static void on_csv_record(int c, void *data)
{
    struct csv_reader *r = data;

    if (!r->failed && !r->done && r->nfields > 0) {
        if (!r->header_done)
            reader_header(r);
        else
            reader_record(r);
    }
    r->nfields = 0;
    if (c == '\n')
        r->record_line = r->line_no + 1;
}

static int csv_never_space(unsigned char c)
{
    (void)c;
    return 0; /* RFC 4180: spaces belong to the field */
}

int load_dataset_read(const char *path, long limit, struct load_dataset *ds,
                      char *err, size_t errsz)
{
    return load_dataset_read_columns(path, limit, NULL, ds, err, errsz);
}

int load_dataset_read_columns(const char *path, long limit, const char *columns,
                              struct load_dataset *ds, char *err, size_t errsz)
{
    struct csv_reader r;
    struct csv_parser parser;
    char buf[65536];
    gzFile gz;
    int errnum, first = 1;

    memset(ds, 0, sizeof *ds);
    memset(&r, 0, sizeof r);
    r.ds = ds;
    r.path = path;
    r.columns = columns && *columns ? columns : NULL;
    r.limit = limit;
    r.line_no = 1;
    r.record_line = 1;
    r.err = err;
    r.errsz = errsz;

    ds->arena = calloc(1, sizeof *ds->arena);
    if (ds->arena == NULL) {
        set_err(err, errsz, "out of memory");
        return -1;
    }
    if (csv_init(&parser, CSV_STRICT | CSV_STRICT_FINI | CSV_REPALL_NL)
        != 0) {
        set_err(err, errsz, "out of memory");
        load_dataset_free(ds);
        return -1;
    }
    csv_set_space_func(&parser, csv_never_space);

    errno = 0;
    if (strcmp(path, "-") == 0) {
        int fd = dup(STDIN_FILENO);

        gz = fd >= 0 ? gzdopen(fd, "rb") : NULL;
        if (gz == NULL && fd >= 0)
            close(fd);
    } else {
        gz = gzopen(path, "rb");
    }
    if (gz == NULL) {
        set_err(err, errsz, "could not open file \"%s\": %s", path,
                errno ? strerror(errno) : "out of memory");
        csv_free(&parser);
        load_dataset_free(ds);
        return -1;
    }
    gzbuffer(gz, 1u << 18);

    while (!r.done && !r.failed && gzgets(gz, buf, sizeof buf) != NULL) {
        size_t n = strlen(buf);
        const char *p = buf;

        if (first && n >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0) {
            p += 3;
            n -= 3;
        }
        first = 0;
        if (csv_parse(&parser, p, n, on_csv_field, on_csv_record, &r) != n) {
            if (!r.failed)
                reader_fail_at(&r, r.line_no, "malformed CSV: %s",
                               csv_strerror(csv_error(&parser)));
            break;
        }
        if (n > 0 && p[n - 1] == '\n')
            r.line_no++;
    }
    if (!r.done && !r.failed) {
        const char *msg = gzerror(gz, &errnum);

        if (errnum != Z_OK) {
            set_err(err, errsz, "could not read file \"%s\": %s", path,
                    errnum == Z_ERRNO ? strerror(errno) : msg);
            r.failed = 1;
        } else if (csv_fini(&parser, on_csv_field, on_csv_record, &r) != 0
                   && !r.failed) {
            /* the only csv_fini() failure under CSV_STRICT_FINI */
            reader_fail(&r, "unterminated quoted field");
        }
    }
    if (!r.failed && !r.header_done) {
        set_err(err, errsz, "file \"%s\" is empty", path);
        r.failed = 1;
    }

    gzclose(gz);
    csv_free(&parser);
    for (int i = 0; i < LOAD_MAX_COLUMNS; i++)
        free(r.field[i]);
    if (r.failed) {
        load_dataset_free(ds);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ JSON bodies */

json_t *load_body_cart_open(const struct load_invoice *inv)
{
    if (inv == NULL || inv->nlines == 0)
        return NULL;
    return json_pack("{s:s, s:s?, s:s, s:s}",
                     "cart_id", inv->invoice_no,
                     "customer_id", inv->customer_id,
                     "country", inv->country,
                     "occurred_at", inv->lines[0].occurred_at);
}

json_t *load_body_cart_item(const struct load_line *line)
{
    if (line == NULL)
        return NULL;
    return json_pack("{s:s, s:s, s:I, s:s, s:s}",
                     "sku", line->sku,
                     "description", line->description,
                     "quantity", (json_int_t)line->quantity,
                     "unit_price", line->unit_price,
                     "occurred_at", line->occurred_at);
}

json_t *load_body_checkout(const struct load_invoice *inv)
{
    if (inv == NULL || inv->nlines == 0)
        return NULL;
    return json_pack("{s:s}", "occurred_at", inv->lines[0].occurred_at);
}

json_t *load_body_payment(const char *amount, const char *occurred_at)
{
    if (amount == NULL || occurred_at == NULL)
        return NULL;
    return json_pack("{s:s, s:s}", "amount", amount,
                     "occurred_at", occurred_at);
}

json_t *load_body_return(const struct load_invoice *inv)
{
    json_t *lines;

    if (inv == NULL || inv->nlines == 0)
        return NULL;
    lines = json_array();
    if (lines == NULL)
        return NULL;
    for (size_t i = 0; i < inv->nlines; i++) {
        const struct load_line *l = &inv->lines[i];
        long long q = l->quantity < 0 ? -l->quantity : l->quantity;
        json_t *item = json_pack("{s:s, s:s, s:I, s:s}",
                                 "sku", l->sku,
                                 "description", l->description,
                                 "quantity", (json_int_t)q,
                                 "unit_price", l->unit_price);

        if (item == NULL || json_array_append_new(lines, item) != 0) {
            json_decref(lines);
            return NULL;
        }
    }
    /* "o" steals the reference to lines, also when json_pack fails */
    return json_pack("{s:s, s:s?, s:s, s:s, s:o}",
                     "return_id", inv->invoice_no,
                     "customer_id", inv->customer_id,
                     "country", inv->country,
                     "occurred_at", inv->lines[0].occurred_at,
                     "lines", lines);
}

/* ----------------------------------------------------------- reply parsing */

static void sanitise_copy(char *out, size_t outsz, const char *s, size_t n)
{
    size_t k = 0;

    if (outsz == 0)
        return;
    for (size_t i = 0; i < n && k + 1 < outsz; i++) {
        unsigned char c = (unsigned char)s[i];

        out[k++] = (c < 0x20 || c == 0x7F) ? ' ' : (char)c;
    }
    out[k] = '\0';
}

void load_problem_message(const char *body, char *out, size_t outsz)
{
    const char *keys[] = { "detail", "title" };
    json_t *root;
    size_t n = 0;
    const char *s = "";

    if (outsz == 0)
        return;
    if (body != NULL) {
        s = body;
        n = strlen(body);
        while (n > 0 && isspace((unsigned char)*s)) {
            s++;
            n--;
        }
        while (n > 0 && isspace((unsigned char)s[n - 1]))
            n--;
    }
    if (n == 0) {
        snprintf(out, outsz, "(empty reply)");
        return;
    }
    root = json_loads(body, 0, NULL);
    if (json_is_object(root)) {
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            json_t *v = json_object_get(root, keys[k]);

            if (json_is_string(v) && json_string_length(v) > 0) {
                sanitise_copy(out, outsz, json_string_value(v),
                              json_string_length(v));
                json_decref(root);
                return;
            }
        }
    }
    json_decref(root);
    sanitise_copy(out, outsz, s, n < 200 ? n : 200);
}

long load_retry_after_ms(const char *value, time_t now)
{
    const char *s;
    size_t n, i;
    char tmp[128];
    long secs = 0;
    time_t t;

    if (value == NULL)
        return -1;
    s = trim_span(value, strlen(value), &n);
    if (n == 0 || n >= sizeof tmp)
        return -1;
    for (i = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++)
        if (secs < 60)
            secs = secs * 10 + (s[i] - '0');
    if (i == n)
        return (secs > 60 ? 60 : secs) * 1000L;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    t = curl_getdate(tmp, NULL);
    if (t == (time_t)-1)
        return -1;
    if (t <= now)
        return 0;
    return t - now >= 60 ? 60000L : (long)(t - now) * 1000L;
}

long load_backoff_ms(int attempt, long retry_after_ms, unsigned *seed)
{
    long base;

    if (retry_after_ms >= 0)
        return retry_after_ms;
    base = attempt < 0 ? 100 : attempt >= 6 ? 5000 : 100L << attempt;
    if (base > 5000)
        base = 5000;
    return base + (long)(rand_r(seed) % (unsigned)(base / 4 + 1));
}

int load_readyz_caught_up(const char *body, const char *target)
{
    json_t *root, *projections, *p;
    size_t i;
    int result = 1;

    if (body == NULL || target == NULL)
        return -1;
    root = json_loads(body, 0, NULL);
    projections = json_object_get(root, "projections");
    if (!json_is_object(root) || !json_is_array(projections)) {
        json_decref(root);
        return -1;
    }
    json_array_foreach(projections, i, p) {
        json_t *cp = json_object_get(p, "checkpoint");

        if (!json_is_object(p)) {
            result = -1;
            break;
        }
        if (!json_is_string(cp) || strcmp(json_string_value(cp), target) < 0)
            result = 0;
    }
    json_decref(root);
    return result;
}

/* Text of a scalar JSON value: string as is, numbers as JSON. */
static int json_scalar_text(json_t *v, char *out, size_t outsz)
{
    char *s;
    int rc;

    if (json_is_string(v))
        return copy_span(out, outsz, json_string_value(v),
                         json_string_length(v));
    if (!json_is_number(v))
        return -1;
    s = json_dumps(v, JSON_ENCODE_ANY);
    if (s == NULL)
        return -1;
    rc = copy_span(out, outsz, s, strlen(s));
    free(s);
    return rc;
}

int load_format_stats(const char *body, char *out, size_t outsz)
{
    const char *keys[] = { "orders", "revenue", "returns", "returns_value",
                           "customers" };
    char val[5][64];
    json_t *root;
    int n;

    if (outsz > 0)
        out[0] = '\0';
    if (body == NULL)
        return -1;
    root = json_loads(body, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return -1;
    }
    for (int i = 0; i < 5; i++) {
        if (json_scalar_text(json_object_get(root, keys[i]), val[i],
                             sizeof val[i]) != 0) {
            json_decref(root);
            return -1;
        }
    }
    json_decref(root);
    n = snprintf(out, outsz,
                 "read models: orders %s  revenue %s  returns %s  "
                 "returns value %s  customers %s",
                 val[0], val[1], val[2], val[3], val[4]);
    return n < 0 || (size_t)n >= outsz ? -1 : 0;
}

/* ------------------------------------------------------------- HTTP client */

struct http_client {
    CURL *curl;
    char *body;            /* reply body, NUL-terminated */
    size_t body_len;
    size_t body_cap;
    int body_overflow;
    char retry_after[128]; /* Retry-After of the last reply, or "" */
    char errbuf[CURL_ERROR_SIZE];
    CURLcode last_code;
};

static size_t on_http_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct http_client *c = ud;
    size_t n = size * nmemb;

    if (c->body_len + n + 1 > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap : 4096;
        char *p;

        while (cap < c->body_len + n + 1)
            cap *= 2;
        if (cap > LOAD_MAX_REPLY) {
            c->body_overflow = 1;
            return 0;
        }
        p = realloc(c->body, cap);
        if (p == NULL)
            return 0;
        c->body = p;
        c->body_cap = cap;
    }
    memcpy(c->body + c->body_len, ptr, n);
    c->body_len += n;
    c->body[c->body_len] = '\0';
    return n;
}

static size_t on_http_header(char *buf, size_t size, size_t nitems, void *ud)
{
    struct http_client *c = ud;
    size_t n = size * nitems;
    static const char name[] = "retry-after:";

    if (n > sizeof name - 1 && strncasecmp(buf, name, sizeof name - 1) == 0) {
        size_t len;
        const char *v = buf + sizeof name - 1;

        len = n - (sizeof name - 1);
        while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n'))
            len--;
        v = trim_span(v, len, &len);
        if (copy_span(c->retry_after, sizeof c->retry_after, v, len) != 0)
            c->retry_after[0] = '\0';
    }
    return n;
}

static int http_client_init(struct http_client *c, long timeout_ms)
{
    memset(c, 0, sizeof *c);
    c->curl = curl_easy_init();
    if (c->curl == NULL)
        return -1;
    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_http_body);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(c->curl, CURLOPT_HEADERFUNCTION, on_http_header);
    curl_easy_setopt(c->curl, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT_MS,
                     LOAD_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c->curl, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(c->curl, CURLOPT_USERAGENT, "cqrsd-load/1");
    return 0;
}

static void http_client_free(struct http_client *c)
{
    if (c->curl != NULL)
        curl_easy_cleanup(c->curl);
    free(c->body);
    memset(c, 0, sizeof *c);
}

/*
 * One HTTP exchange: POST payload (JSON) when payload != NULL, else GET.
 * Returns the status code, or 0 on a transport error (c->last_code set).
 * The reply body is in c->body (always NUL-terminated afterwards).
 */
static long http_perform(struct http_client *c, const char *url,
                         struct curl_slist *headers, const char *payload)
{
    long status = 0;

    c->body_len = 0;
    c->body_overflow = 0;
    if (c->body != NULL)
        c->body[0] = '\0';
    c->retry_after[0] = '\0';
    c->errbuf[0] = '\0';
    curl_easy_setopt(c->curl, CURLOPT_URL, url);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, headers);
    if (payload != NULL) {
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
    } else {
        curl_easy_setopt(c->curl, CURLOPT_HTTPGET, 1L);
    }
    c->last_code = curl_easy_perform(c->curl);
    if (c->last_code != CURLE_OK)
        return 0;
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

static const char *http_client_error(const struct http_client *c)
{
    if (c->body_overflow)
        return "reply larger than 16 MiB";
    return c->errbuf[0] ? c->errbuf : curl_easy_strerror(c->last_code);
}

/* ------------------------------------------------------------------ replay */

struct load_run {
    const struct load_options *opts;
    const struct load_dataset *ds;
    char *base_url;          /* opts->url without trailing '/' */
    int progress;            /* progress lines are on */
    int tty;                 /* stderr is a terminal: one line redrawn in place */
    double t0;               /* now_s() at the start, for the ETA */
    pthread_mutex_t out_mu;  /* serialises stderr output */
    atomic_size_t next;      /* next invoice to hand out */
    atomic_int stop;         /* server unreachable: stop handing out */
    atomic_int finished;     /* workers that have returned */
    atomic_ulong lines_done;
    atomic_ulong accepted;
    atomic_ulong rejected;
    atomic_ulong returns;
    atomic_ulong orders;
    atomic_ulong empty_checkouts;
    atomic_ulong payments;
    atomic_ulong commands;
    atomic_ulong retries;
    atomic_ulong errors;
};

struct load_worker {
    struct load_run *run;
    struct http_client http;
    pthread_t thread;
    unsigned seed;
    char max_position[LOAD_POSITION_MAX];
};

#define BUMP(counter, n) \
    atomic_fetch_add_explicit(&(counter), (n), memory_order_relaxed)

/* Status codes of worker_command() besides real HTTP ones. */
#define CMD_UNREACHABLE 0L
#define CMD_STOPPED (-1L)
#define CMD_NOBODY (-2L)

static void run_message(struct load_run *run, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prints "cqrsd load: <message>" on stderr, above the progress line. */
static void run_message(struct load_run *run, const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&run->out_mu);
    if (run->progress && run->tty)
        fprintf(stderr, "\r%-79s\r", "");
    fputs("cqrsd load: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    pthread_mutex_unlock(&run->out_mu);
}

static void note_position(char *max, const char *pos)
{
    if (strlen(pos) < LOAD_POSITION_MAX && strcmp(pos, max) > 0)
        strcpy(max, pos);
}

/*
 * Sends one command: POST base_url+path with body (stolen) and header
 * Idempotency-Key load-<invoice>-<step>, retrying 5xx, 429 and transport
 * errors. Returns the final HTTP status, CMD_UNREACHABLE when every attempt
 * failed at transport level (the run is then stopped), CMD_STOPPED when the
 * run was stopped, CMD_NOBODY when the body could not be built. On 2xx the
 * reply's position is noted and, when reply != NULL, *reply receives the
 * parsed reply (a new reference, possibly NULL).
 */
static long worker_command(struct load_worker *w, const char *invoice_no,
                           const char *path, const char *step, json_t *body,
                           json_t **reply)
{
    struct load_run *run = w->run;
    struct curl_slist *headers = NULL, *h;
    char key[256], keyhdr[300], url[2048];
    char *payload;
    long status = CMD_STOPPED;

    if (reply != NULL)
        *reply = NULL;
    payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (payload == NULL ||
        load_idempotency_key(key, sizeof key, invoice_no, step) != 0 ||
        (size_t)snprintf(url, sizeof url, "%s%s", run->base_url, path)
            >= sizeof url) {
        free(payload);
        return CMD_NOBODY;
    }
    snprintf(keyhdr, sizeof keyhdr, "Idempotency-Key: %s", key);
    const char *lines[] = {
        "Content-Type: application/json",
        "Accept: application/json, application/problem+json",
        "Expect:", keyhdr,
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        h = curl_slist_append(headers, lines[i]);
        if (h == NULL) {
            curl_slist_free_all(headers);
            free(payload);
            return CMD_NOBODY;
        }
        headers = h;
    }
    if (getenv("CQRSD_API_KEY") && *getenv("CQRSD_API_KEY")) {
        /* a server with CQRSD_AUTH=on: a key with the command scope */
        char auth[300];
        snprintf(auth, sizeof auth, "Authorization: Bearer %.200s", getenv("CQRSD_API_KEY"));
        h = curl_slist_append(headers, auth);
        if (h == NULL) {
            curl_slist_free_all(headers);
            free(payload);
            return CMD_NOBODY;
        }
        headers = h;
    }

    for (int attempt = 0;; attempt++) {
        long wait;

        if (atomic_load(&run->stop)) {
            status = CMD_STOPPED;
            break;
        }
        status = http_perform(&w->http, url, headers, payload);
        if (status >= 100 && status < 500 && status != 429)
            break;
        if (attempt >= LOAD_MAX_RETRIES)
            break;
        BUMP(run->retries, 1);
        wait = load_backoff_ms(attempt,
                               status ? load_retry_after_ms(
                                            w->http.retry_after, time(NULL))
                                      : -1,
                               &w->seed);
        for (long slept = 0; slept < wait && !atomic_load(&run->stop);
             slept += 100)
            sleep_ms(wait - slept < 100 ? wait - slept : 100);
    }
    curl_slist_free_all(headers);
    free(payload);

    if (status >= 100)
        BUMP(run->commands, 1);
    if (status == CMD_UNREACHABLE && !atomic_exchange(&run->stop, 1))
        run_message(run, "giving up: server %s is unreachable: %s",
                    run->base_url, http_client_error(&w->http));
    if (status >= 200 && status < 300) {
        json_t *root = json_loadb(w->http.body ? w->http.body : "",
                                  w->http.body_len, 0, NULL);
        json_t *pos = json_object_get(root, "position");

        if (json_is_string(pos))
            note_position(w->max_position, json_string_value(pos));
        if (reply != NULL)
            *reply = root;
        else
            json_decref(root);
    }
    return status;
}

/* Counts and reports a command that did not get the reply it needed. */
static void worker_failed(struct load_worker *w, const char *invoice_no,
                          const char *path, long status)
{
    struct load_run *run = w->run;
    char detail[512];

    if (status == CMD_STOPPED)
        return; /* the reason was reported once by whoever stopped the run */
    BUMP(run->errors, 1);
    if (status == CMD_UNREACHABLE)
        return;
    if (status == CMD_NOBODY) {
        run_message(run, "invoice %s: could not build request for POST %s",
                    invoice_no, path);
        return;
    }
    load_problem_message(w->http.body, detail, sizeof detail);
    if (status >= 500 || status == 429)
        run_message(run, "invoice %s: POST %s answered %ld after %d "
                    "attempts: %s", invoice_no, path, status,
                    LOAD_MAX_RETRIES + 1, detail);
    else
        run_message(run, "invoice %s: POST %s answered %ld: %s",
                    invoice_no, path, status, detail);
}

static int is_2xx(long status)
{
    return status >= 200 && status < 300;
}

static void replay_sale(struct load_worker *w, const struct load_invoice *inv,
                        const char *esc_id)
{
    struct load_run *run = w->run;
    char path[512], step[64], order_id[256], total[64];
    json_t *reply = NULL;
    size_t done = 0;
    long st;

    st = worker_command(w, inv->invoice_no, "/carts", "open",
                        load_body_cart_open(inv), NULL);
    if (!is_2xx(st)) {
        worker_failed(w, inv->invoice_no, "/carts", st);
        goto out;
    }

    snprintf(path, sizeof path, "/carts/%s/items", esc_id);
    for (size_t i = 0; i < inv->nlines; i++) {
        snprintf(step, sizeof step, "item-%zu", i + 1);
        st = worker_command(w, inv->invoice_no, path, step,
                            load_body_cart_item(&inv->lines[i]), NULL);
        if (is_2xx(st))
            BUMP(run->accepted, 1);
        else if (st == 422)
            BUMP(run->rejected, 1);
        else
            worker_failed(w, inv->invoice_no, path, st);
        if (st == CMD_STOPPED || st == CMD_UNREACHABLE)
            goto out;
        BUMP(run->lines_done, 1);
        done++;
    }

    snprintf(path, sizeof path, "/carts/%s/checkout", esc_id);
    st = worker_command(w, inv->invoice_no, path, "checkout",
                        load_body_checkout(inv), &reply);
    if (st == 422) {
        BUMP(run->empty_checkouts, 1);
        goto out;
    }
    if (!is_2xx(st)) {
        worker_failed(w, inv->invoice_no, path, st);
        goto out;
    }
    if (json_scalar_text(json_object_get(reply, "order_id"), order_id,
                         sizeof order_id) != 0 || order_id[0] == '\0' ||
        !json_is_string(json_object_get(reply, "total")) ||
        json_scalar_text(json_object_get(reply, "total"), total,
                         sizeof total) != 0) {
        BUMP(run->errors, 1);
        run_message(run, "invoice %s: reply to POST %s has no order_id or "
                    "no total string", inv->invoice_no, path);
        goto out;
    }
    BUMP(run->orders, 1);

    {
        char *esc_order = curl_easy_escape(w->http.curl, order_id, 0);

        if (esc_order == NULL) {
            worker_failed(w, inv->invoice_no, "/orders", CMD_NOBODY);
            goto out;
        }
        snprintf(path, sizeof path, "/orders/%s/payments", esc_order);
        curl_free(esc_order);
    }
    st = worker_command(w, inv->invoice_no, path, "pay",
                        load_body_payment(total, inv->lines[0].occurred_at),
                        NULL);
    if (is_2xx(st))
        BUMP(run->payments, 1);
    else
        worker_failed(w, inv->invoice_no, path, st);

out:
    json_decref(reply);
    BUMP(run->lines_done, inv->nlines - done);
}

static void replay_return(struct load_worker *w,
                          const struct load_invoice *inv)
{
    struct load_run *run = w->run;
    long st;

    st = worker_command(w, inv->invoice_no, "/returns", "return",
                        load_body_return(inv), NULL);
    if (is_2xx(st))
        BUMP(run->returns, 1);
    else
        worker_failed(w, inv->invoice_no, "/returns", st);
    BUMP(run->lines_done, inv->nlines);
}

static void *worker_main(void *arg)
{
    struct load_worker *w = arg;
    struct load_run *run = w->run;

    for (;;) {
        const struct load_invoice *inv;
        size_t i;

        if (atomic_load(&run->stop))
            break;
        i = atomic_fetch_add(&run->next, 1);
        if (i >= run->ds->ninvoices)
            break;
        inv = &run->ds->invoices[i];
        if (load_is_return_invoice(inv->invoice_no)) {
            replay_return(w, inv);
        } else {
            char *esc = curl_easy_escape(w->http.curl, inv->invoice_no, 0);

            if (esc == NULL) {
                worker_failed(w, inv->invoice_no, "/carts", CMD_NOBODY);
                BUMP(run->lines_done, inv->nlines);
                continue;
            }
            replay_sale(w, inv, esc);
            curl_free(esc);
        }
    }
    atomic_fetch_add(&run->finished, 1);
    return NULL;
}

/* On a terminal, one line redrawn in place; otherwise (a log file, a pipe)
 * a plain line each time. */
static void print_progress(struct load_run *run, double rate)
{
    unsigned long done = atomic_load(&run->lines_done);
    double spent = now_s() - run->t0;
    double eta = done > 0 && done < run->ds->nlines
                     ? spent * (double)(run->ds->nlines - done) / (double)done
                     : 0.0;

    pthread_mutex_lock(&run->out_mu);
    fprintf(stderr, "%s%lu/%zu lines  %.0f commands/s  rejected %lu  "
            "errors %lu  ETA %.0f s%s",
            run->tty ? "\r" : "", done, run->ds->nlines, rate,
            atomic_load(&run->rejected), atomic_load(&run->errors), eta,
            run->tty ? "   " : "\n");
    fflush(stderr);
    pthread_mutex_unlock(&run->out_mu);
}

static void print_summary(FILE *f, struct load_run *run, double elapsed)
{
    const struct load_dataset *ds = run->ds;
    unsigned long commands = atomic_load(&run->commands);

    fprintf(f, "%-18s%zu\n", "lines read", ds->nlines);
    fprintf(f, "%-18s%-6zu  accepted %lu  rejected %lu\n", "sale lines",
            ds->sale_lines, atomic_load(&run->accepted),
            atomic_load(&run->rejected));
    fprintf(f, "%-18s%-6zu  returns %lu\n", "return lines",
            ds->return_lines, atomic_load(&run->returns));
    fprintf(f, "%-18s%-6zu  orders %lu  empty checkouts rejected %lu\n",
            "invoices", ds->ninvoices, atomic_load(&run->orders),
            atomic_load(&run->empty_checkouts));
    fprintf(f, "%-18s%-6lu  in  %.1fs  (%.0f commands/s)  retries %lu\n",
            "commands", commands, elapsed,
            elapsed > 0 ? (double)commands / elapsed : 0.0,
            atomic_load(&run->retries));
    fprintf(f, "%-18s%lu\n", "errors", atomic_load(&run->errors));
    fflush(f);
}

/*
 * Polls GET /readyz until every projection checkpoint reaches position,
 * then prints GET /stats/summary. Returns 0, or -1 after reporting why.
 */
static int wait_for_read_models(struct load_run *run, const char *position)
{
    struct http_client c;
    struct curl_slist *headers = NULL;
    char url[2048], line[512], last[256] = "no reply yet";
    double deadline = now_s() + LOAD_HEALTH_TIMEOUT_S;
    int rc = -1;
    long st;

    if (http_client_init(&c, 5000) != 0) {
        run_message(run, "out of memory");
        return -1;
    }
    headers = curl_slist_append(NULL, "Accept: application/json");
    if (getenv("CQRSD_API_KEY") && *getenv("CQRSD_API_KEY")) {
        char auth[300];
        snprintf(auth, sizeof auth, "Authorization: Bearer %.200s", getenv("CQRSD_API_KEY"));
        headers = curl_slist_append(headers, auth);
    }
    if (!run->opts->quiet)
        run_message(run, "waiting for projections to reach position %s",
                    position[0] ? position : "(none)");
    snprintf(url, sizeof url, "%s/readyz", run->base_url);
    for (;;) {
        st = http_perform(&c, url, headers, NULL);
        if (st == 200) {
            int up = load_readyz_caught_up(c.body ? c.body : "", position);
            if (up == 1)
                break;
            if (up < 0)
                snprintf(last, sizeof last, "GET /readyz reply is not "
                         "{\"projections\":[...]}");
            else
                sanitise_copy(last, sizeof last, c.body, c.body_len);
        } else if (st == 0) {
            snprintf(last, sizeof last, "%s", http_client_error(&c));
        } else {
            char detail[200];

            load_problem_message(c.body, detail, sizeof detail);
            snprintf(last, sizeof last, "GET /readyz answered %ld: %s", st,
                     detail);
        }
        if (now_s() >= deadline) {
            run_message(run, "projections did not catch up with position %s "
                        "within %d s; last: %s", position,
                        LOAD_HEALTH_TIMEOUT_S, last);
            goto done;
        }
        sleep_ms(LOAD_HEALTH_POLL_MS);
    }

    snprintf(url, sizeof url, "%s/stats/summary", run->base_url);
    for (int attempt = 0; attempt < 5; attempt++) {
        st = http_perform(&c, url, headers, NULL);
        if (st > 0 && st < 500)
            break;
        sleep_ms(500);
    }
    if (st == 200 && load_format_stats(c.body, line, sizeof line) == 0) {
        printf("%s\n", line);
        fflush(stdout);
        rc = 0;
    } else if (st == 0) {
        run_message(run, "could not read /stats/summary: %s",
                    http_client_error(&c));
    } else {
        char detail[200];

        if (st == 200)
            snprintf(detail, sizeof detail, "reply is not the expected "
                     "{\"orders\":...,\"customers\":...} object");
        else
            load_problem_message(c.body, detail, sizeof detail);
        run_message(run, "could not read /stats/summary (%ld): %s", st,
                    detail);
    }
done:
    curl_slist_free_all(headers);
    http_client_free(&c);
    return rc;
}

static int run_replay(const struct load_options *opts,
                      const struct load_dataset *ds)
{
    struct load_run run;
    struct load_worker *workers;
    char position[LOAD_POSITION_MAX] = "";
    size_t len, nworkers, started = 0;
    double t0, last_t, elapsed;
    unsigned long last_commands = 0;
    int exit_code = 1;

    memset(&run, 0, sizeof run);
    run.opts = opts;
    run.ds = ds;
    run.progress = !opts->quiet;
    run.tty = isatty(STDERR_FILENO);
    pthread_mutex_init(&run.out_mu, NULL);
    atomic_init(&run.next, 0);
    atomic_init(&run.stop, 0);
    atomic_init(&run.finished, 0);
    run.base_url = strdup(opts->url);
    if (run.base_url == NULL) {
        fprintf(stderr, "cqrsd load: out of memory\n");
        pthread_mutex_destroy(&run.out_mu);
        return 1;
    }
    len = strlen(run.base_url);
    while (len > 0 && run.base_url[len - 1] == '/')
        run.base_url[--len] = '\0';

    nworkers = (size_t)opts->concurrency;
    if (nworkers > ds->ninvoices)
        nworkers = ds->ninvoices > 0 ? ds->ninvoices : 1;
    workers = calloc(nworkers, sizeof *workers);
    if (workers == NULL) {
        fprintf(stderr, "cqrsd load: out of memory\n");
        goto out;
    }

    t0 = last_t = run.t0 = now_s();
    for (; started < nworkers; started++) {
        struct load_worker *w = &workers[started];

        w->run = &run;
        w->seed = (unsigned)(started * 2654435761u) ^ (unsigned)time(NULL);
        if (http_client_init(&w->http, LOAD_REQUEST_TIMEOUT_MS) != 0) {
            fprintf(stderr, "cqrsd load: could not create HTTP client\n");
            break;
        }
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            fprintf(stderr, "cqrsd load: could not start worker thread: "
                    "%s\n", strerror(errno));
            http_client_free(&w->http);
            break;
        }
    }
    if (started < nworkers)
        atomic_store(&run.stop, 1); /* let the ones started finish early */

    while ((size_t)atomic_load(&run.finished) < started) {
        sleep_ms(50);
        if (run.progress && now_s() - last_t >= (run.tty ? LOAD_PROGRESS_MS
                                                          : LOAD_PROGRESS_LINE_MS) / 1000.0) {
            double t = now_s();
            unsigned long cmds = atomic_load(&run.commands);

            print_progress(&run, (double)(cmds - last_commands) / (t - last_t));
            last_commands = cmds;
            last_t = t;
        }
    }
    elapsed = now_s() - t0;
    for (size_t i = 0; i < started; i++) {
        pthread_join(workers[i].thread, NULL);
        note_position(position, workers[i].max_position);
        http_client_free(&workers[i].http);
    }
    if (run.progress) {
        print_progress(&run, elapsed > 0
                       ? (double)atomic_load(&run.commands) / elapsed : 0.0);
        if (run.tty)
            fputc('\n', stderr);
    }

    print_summary(stdout, &run, elapsed);
    if (started < nworkers || atomic_load(&run.stop)) {
        fprintf(stderr, "cqrsd load: replay stopped early, not waiting for "
                "read models\n");
        goto out;
    }
    run.progress = 0;
    if (wait_for_read_models(&run, position) == 0 &&
        atomic_load(&run.errors) == 0)
        exit_code = 0;

out:
    free(workers);
    free(run.base_url);
    pthread_mutex_destroy(&run.out_mu);
    return exit_code;
}

int load_main(int argc, char **argv)
{
    struct load_options opts;
    struct load_dataset ds;
    struct sigaction ign, old_pipe;
    char err[512];
    double t0;
    int rc;

    rc = load_parse_args(argc, argv, &opts, err, sizeof err);
    if (rc == 1) {
        load_usage(stdout);
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "cqrsd load: %s\n"
                "try \"cqrsd load --help\" for usage\n", err);
        return 2;
    }
    if (load_tz_init(err, sizeof err) != 0) {
        fprintf(stderr, "cqrsd load: %s\n", err);
        return 1;
    }

    t0 = now_s();
    if (load_dataset_read_columns(opts.file, opts.limit, opts.columns, &ds, err, sizeof err) != 0) {
        fprintf(stderr, "cqrsd load: %s\n", err);
        return 1;
    }
    if (!opts.quiet)
        fprintf(stderr, "cqrsd load: read %zu lines in %zu invoices from "
                "\"%s\" in %.1fs; replaying to %s with %d workers\n",
                ds.nlines, ds.ninvoices, opts.file, now_s() - t0, opts.url,
                opts.concurrency);

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "cqrsd load: could not initialise libcurl\n");
        load_dataset_free(&ds);
        return 1;
    }
    /* A peer closing a kept-alive socket must not kill the process. */
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, &old_pipe);

    rc = run_replay(&opts, &ds);

    sigaction(SIGPIPE, &old_pipe, NULL);
    curl_global_cleanup();
    load_dataset_free(&ds);
    return rc;
}
