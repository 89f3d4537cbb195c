/*
 * tools/load/load.h — `cqrsd load`: replays the UCI Online Retail CSV through
 * the cqrsd HTTP API (carts, items, checkout, payment, returns).
 *
 * load_main() is the only entry point the cqrsd binary needs. The other
 * declarations are the pure parts of the loader (argument parsing, CSV
 * reading and grouping, UK time conversion, JSON body building, reply
 * parsing), exposed under the load_ prefix so tests/unit/test_load.c can
 * exercise them without a server.
 *
 * Conventions for every function below unless it says otherwise:
 *   - returns 0 on success and -1 on failure;
 *   - err/errsz, where present, receive a lowercase message without a final
 *     period that names the object (PostgreSQL style); err may be NULL;
 *   - out/outsz buffers are always NUL-terminated when outsz > 0.
 */
#ifndef CQRSD_TOOLS_LOAD_H
#define CQRSD_TOOLS_LOAD_H

#include <stddef.h>
#include <stdio.h>
#include <time.h>

#include <jansson.h>

/*
 * Runs `cqrsd load FILE.csv[.gz] [--url URL] [--concurrency N] [--limit N]
 * [--quiet]`. argv[0] is "load". Returns the process exit code: 0 when every
 * command succeeded (422 rejections are not errors) and the read models
 * caught up, 1 on errors or time-out, 2 on bad arguments.
 */
int load_main(int argc, char **argv);

#define LOAD_DEFAULT_URL "http://127.0.0.1:8080"
#define LOAD_DEFAULT_CONCURRENCY 4
#define LOAD_MAX_CONCURRENCY 256
/* strlen("2010-12-01T08:26:00+00:00") */
#define LOAD_RFC3339_LEN 25
/* Largest position token kept (the API sends 32 hex characters). */
#define LOAD_POSITION_MAX 128

/* ---------------------------------------------------------------- options */

struct load_options {
    const char *file; /* borrowed from argv */
    const char *url;  /* borrowed from argv or LOAD_DEFAULT_URL */
    int concurrency;  /* worker threads, 1..LOAD_MAX_CONCURRENCY */
    long limit;       /* data lines to replay; -1 = all */
    int quiet;        /* 1 = no live progress line */
    const char *columns; /* --columns "role=Name,...", borrowed; NULL: by the header */
};

/*
 * Parses argv (argv[0] is the subcommand name and is skipped) into *opts.
 * Accepts "--opt VALUE" and "--opt=VALUE". Returns 0 when the options are
 * valid, 1 when --help/-h was given (nothing else is checked), -1 on a bad
 * argument with the reason in err.
 */
int load_parse_args(int argc, char **argv, struct load_options *opts,
                    char *err, size_t errsz);

/* Writes the usage text (several lines) to f. */
void load_usage(FILE *f);

/* ------------------------------------------------------------------- time */

/*
 * Sets TZ=Europe/London and calls tzset(). Must run once, before any thread
 * starts and before load_uk_time_to_rfc3339(). Fails when the tz database
 * has no Europe/London (tzset() would silently fall back to UTC).
 */
int load_tz_init(char *err, size_t errsz);

/*
 * Converts a UK local time "YYYY-MM-DD HH:MM:SS" (or "YYYY-MM-DD HH:MM";
 * a 'T' may replace the space; surrounding spaces ignored) to RFC 3339
 * with the UK offset of that instant, e.g. "2011-06-01 10:00:00" ->
 * "2011-06-01T10:00:00+01:00".
 * out needs outsz >= LOAD_RFC3339_LEN + 1. Needs load_tz_init() first.
 * Fails on a malformed date, an impossible date, or a local time skipped by
 * the spring-forward change (01:00-01:59 on the last Sunday of March). A
 * time repeated by the autumn change is taken as its first occurrence
 * (+01:00).
 */
int load_uk_time_to_rfc3339(const char *local, char *out, size_t outsz);

/* ------------------------------------------------------------ field rules */

/*
 * Normalises a CustomerID: trims spaces and drops a fractional part made of
 * zeros ("17850.0" -> "17850"). A blank input gives "" (guest). Fails on
 * anything but digits with an optional all-zero fraction, or on overflow of
 * out.
 */
int load_normalise_customer_id(const char *in, char *out, size_t outsz);

/*
 * Checks a UnitPrice and copies it trimmed of spaces: an optional '-',
 * one or more digits, optionally '.' and one or more digits ("2.55",
 * "0.001", "-11062.06"). The digits are passed through unchanged; no
 * floating point is involved.
 */
int load_normalise_price(const char *in, char *out, size_t outsz);

/* Parses a Quantity (optional sign, digits, surrounding spaces allowed). */
int load_parse_quantity(const char *in, long long *out);

/* 1 when the invoice is a return (InvoiceNo starts with 'C'), else 0. */
int load_is_return_invoice(const char *invoice_no);

/* 1 when the len bytes at s are valid UTF-8 without NUL bytes, else 0. */
int load_utf8_valid(const char *s, size_t len);

/*
 * Writes the Idempotency-Key "load-<invoice_no>-<step>" into out; steps are
 * "open", "item-<n>", "checkout", "pay", "return". Fails on overflow.
 */
int load_idempotency_key(char *out, size_t outsz, const char *invoice_no,
                         const char *step);

/* ---------------------------------------------------------------- dataset */

/* One CSV data line. Strings point into the dataset's arena. */
struct load_line {
    const char *sku;          /* StockCode, trimmed */
    const char *description;  /* Description, verbatim (RFC 4180) */
    const char *unit_price;   /* decimal string, trimmed */
    long long quantity;       /* as in the file (negative for returns) */
    char occurred_at[LOAD_RFC3339_LEN + 1]; /* RFC 3339 with UK offset */
};

/* The lines of one InvoiceNo, in file order. */
struct load_invoice {
    const char *invoice_no;
    const char *customer_id;  /* normalised; NULL = guest */
    const char *country;      /* of the first line */
    struct load_line *lines;  /* nlines entries, owned by the dataset */
    size_t nlines;
    size_t cap;
};

struct load_arena;

/* A whole file, grouped by InvoiceNo in first-seen order. */
struct load_dataset {
    struct load_invoice *invoices; /* ninvoices entries */
    size_t ninvoices;
    size_t nlines;         /* data lines read */
    size_t sale_lines;     /* lines of invoices not starting with 'C' */
    size_t return_lines;   /* lines of invoices starting with 'C' */
    size_t return_invoices;
    /* private */
    size_t invoices_cap;
    size_t *index;         /* open-addressing hash: invoice position + 1 */
    size_t index_cap;
    struct load_arena *arena;
};

/*
 * Reads FILE (.csv or .csv.gz, through zlib) completely, or only its first
 * `limit` data lines when limit >= 0, into *ds (which it initialises). The
 * header names the columns, in any order and any case, as Online Retail
 * does (InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice,
 * CustomerID, Country) or Online Retail II does (Invoice, ..., Price,
 * Customer ID, ...); other columns are ignored. Every line is validated
 * (field count, Quantity, InvoiceDate, UnitPrice, CustomerID, UTF-8); the
 * first bad line fails the whole read with its line number in err and *ds
 * left empty. Needs load_tz_init() first. Free with load_dataset_free().
 */
int load_dataset_read(const char *path, long limit, struct load_dataset *ds,
                      char *err, size_t errsz);

/* Frees everything *ds owns and zeroes it; safe on a zeroed dataset. */
void load_dataset_free(struct load_dataset *ds);

/* The same, with the columns found by columns ("invoice=Name,sku=Name,...",
 * the eight values invoice, sku, description, quantity, date, price,
 * customer, country each mapped to a header name, any case) instead of by
 * the header names of Online Retail or Online Retail II (NULL). A header
 * that cannot be mapped fails the read, with what it has and what is
 * missing, before anything is sent. */
int load_dataset_read_columns(const char *path, long limit, const char *columns,
                              struct load_dataset *ds, char *err, size_t errsz);

/* ------------------------------------------------------------ JSON bodies */
/* Each returns a new reference (caller json_decref()s it), NULL on OOM. */

/* POST /carts: cart_id, customer_id (or null), country, occurred_at. */
json_t *load_body_cart_open(const struct load_invoice *inv);
/* POST /carts/{id}/items: sku, description, quantity, unit_price,
 * occurred_at. */
json_t *load_body_cart_item(const struct load_line *line);
/* POST /carts/{id}/checkout: occurred_at of the invoice's first line. */
json_t *load_body_checkout(const struct load_invoice *inv);
/* POST /orders/{id}/payments: amount (decimal string), occurred_at. */
json_t *load_body_payment(const char *amount, const char *occurred_at);
/* POST /returns: return_id, customer_id, country, occurred_at, lines[] with
 * quantity made positive. */
json_t *load_body_return(const struct load_invoice *inv);

/* ----------------------------------------------------------- reply parsing */

/*
 * Extracts a human message from an error reply body: the problem+json
 * "detail", else its "title", else the body itself with control characters
 * replaced and truncated to fit out. An empty body gives "(empty reply)".
 */
void load_problem_message(const char *body, char *out, size_t outsz);

/*
 * Retry-After header value (delay-seconds or HTTP-date, relative to `now`)
 * in milliseconds, capped at 60000; -1 when absent or unparsable.
 */
long load_retry_after_ms(const char *value, time_t now);

/*
 * Delay before retry number `attempt` (0-based) in milliseconds: 100 ms
 * doubling up to 5000 ms, plus up to 25% jitter drawn from *seed; a
 * Retry-After of retry_after_ms >= 0 takes precedence.
 */
long load_backoff_ms(int attempt, long retry_after_ms, unsigned *seed);

/*
 * Given a GET /readyz body, returns 1 when every entry of "projections"
 * has a "checkpoint" >= target (strcmp on the position tokens), 0 when one
 * is behind or has no checkpoint, -1 when the body is not such an object.
 */
int load_readyz_caught_up(const char *body, const char *target);

/*
 * Formats a GET /stats/summary body as "read models: orders N  revenue D
 * returns N  returns value D  customers N" into out. Fails when the body is
 * not a JSON object or a field is missing.
 */
int load_format_stats(const char *body, char *out, size_t outsz);

#endif /* CQRSD_TOOLS_LOAD_H */
