/*
 * tests/unit/test_load.c — cmocka unit tests for the pure parts of
 * `cqrsd load` (tools/load/load.c): argument parsing, UK time to RFC 3339
 * across the 2011 DST changes, field normalisation, CSV reading and
 * grouping (plain and gzip), JSON request bodies and reply parsing.
 * Needs neither a server nor the Online Retail data file: CSV fixtures
 * are written to temporary files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zlib.h>

#include "tools/load/load.h"

/* ------------------------------------------------------------- fixtures */

static const char *const HEADER =
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,"
    "CustomerID,Country\r\n";

/* Writes text to a new temporary file (gzip-compressed when gz) and
 * returns its malloc'd path. */
static char *write_fixture(const char *text, int gz)
{
    char tmpl[] = "/tmp/test_load_XXXXXX";
    int fd = mkstemp(tmpl);
    char *path;

    assert_true(fd >= 0);
    close(fd);
    path = malloc(strlen(tmpl) + 8);
    assert_non_null(path);
    sprintf(path, "%s%s", tmpl, gz ? ".csv.gz" : ".csv");
    assert_int_equal(rename(tmpl, path), 0);
    if (gz) {
        gzFile f = gzopen(path, "wb");

        assert_non_null(f);
        assert_int_equal(gzwrite(f, text, (unsigned)strlen(text)),
                         (int)strlen(text));
        assert_int_equal(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");

        assert_non_null(f);
        assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
        assert_int_equal(fclose(f), 0);
    }
    return path;
}

static void remove_fixture(char *path)
{
    unlink(path);
    free(path);
}

static int setup_tz(void **state)
{
    char err[256];

    (void)state;
    return load_tz_init(err, sizeof err);
}

static char *dump_sorted(json_t *v)
{
    char *s;

    assert_non_null(v);
    s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    assert_non_null(s);
    json_decref(v);
    return s;
}

/* --------------------------------------------------------------- options */

static void test_args_defaults(void **state)
{
    char *argv[] = { "load", "data.csv.gz", NULL };
    struct load_options o;
    char err[256];

    (void)state;
    assert_int_equal(load_parse_args(2, argv, &o, err, sizeof err), 0);
    assert_string_equal(o.file, "data.csv.gz");
    assert_string_equal(o.url, LOAD_DEFAULT_URL);
    assert_int_equal(o.concurrency, 4);
    assert_int_equal(o.limit, -1);
    assert_int_equal(o.quiet, 0);
    assert_null(o.columns);
}

static void test_args_all(void **state)
{
    char *argv[] = { "load", "--url", "http://h:9/", "--concurrency=8",
                     "f.csv", "--limit", "2000", "--quiet", "--columns=invoice=Order", NULL };
    struct load_options o;
    char err[256];

    (void)state;
    assert_int_equal(load_parse_args(9, argv, &o, err, sizeof err), 0);
    assert_string_equal(o.columns, "invoice=Order");
    assert_string_equal(o.file, "f.csv");
    assert_string_equal(o.url, "http://h:9/");
    assert_int_equal(o.concurrency, 8);
    assert_int_equal(o.limit, 2000);
    assert_int_equal(o.quiet, 1);
}

static void test_args_help(void **state)
{
    char *argv[] = { "load", "--bogus", "--help", NULL };
    struct load_options o;

    (void)state;
    assert_int_equal(load_parse_args(3, argv, &o, NULL, 0), 1);
}

static void test_args_errors(void **state)
{
    struct {
        int argc;
        char *argv[5];
        const char *msg;
    } cases[] = {
        { 1, { "load" }, "no input file given" },
        { 3, { "load", "a", "b" },
          "more than one input file given (\"a\" and \"b\")" },
        { 3, { "load", "a", "--concurrency" },
          "option --concurrency needs a value" },
        { 4, { "load", "a", "--concurrency", "0" },
          "invalid --concurrency value \"0\": expected an integer from 1 "
          "to 256" },
        { 4, { "load", "a", "--concurrency", "4x" },
          "invalid --concurrency value \"4x\": expected an integer from 1 "
          "to 256" },
        { 3, { "load", "a", "--limit=-1" },
          "invalid --limit value \"-1\": expected a non-negative integer" },
        { 4, { "load", "a", "--url", "localhost:8080" },
          "invalid --url value \"localhost:8080\": expected "
          "http://HOST[:PORT]" },
        { 3, { "load", "a", "--quiet=1" }, "option --quiet takes no value" },
        { 3, { "load", "a", "--columns=" },
          "option --columns needs role=Name,... (at most 2000 bytes)" },
        { 3, { "load", "a", "--frobnicate" },
          "unknown option \"--frobnicate\"" },
    };
    struct load_options o;
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = '\0';
        assert_int_equal(load_parse_args(cases[i].argc, cases[i].argv, &o,
                                         err, sizeof err), -1);
        assert_string_equal(err, cases[i].msg);
    }
}

/* ------------------------------------------------------------------ time */

static void expect_time(const char *local, const char *want)
{
    char out[LOAD_RFC3339_LEN + 1];

    assert_int_equal(load_uk_time_to_rfc3339(local, out, sizeof out), 0);
    assert_string_equal(out, want);
}

static void expect_bad_time(const char *local)
{
    char out[LOAD_RFC3339_LEN + 1];

    assert_int_equal(load_uk_time_to_rfc3339(local, out, sizeof out), -1);
    assert_string_equal(out, "");
}

static void test_time_examples(void **state)
{
    (void)state;
    expect_time("2010-12-01 08:26:00", "2010-12-01T08:26:00+00:00");
    expect_time("2011-06-01 10:00:00", "2011-06-01T10:00:00+01:00");
    expect_time("2011-12-09 12:50:00", "2011-12-09T12:50:00+00:00");
    expect_time(" 2011-07-04 09:05 ", "2011-07-04T09:05:00+01:00");
}

/* Clocks went forward at 01:00 UTC on 27 March 2011: 01:00-01:59 GMT
 * local time never happened. */
static void test_time_spring_forward(void **state)
{
    (void)state;
    expect_time("2011-03-26 12:00:00", "2011-03-26T12:00:00+00:00");
    expect_time("2011-03-27 00:00:00", "2011-03-27T00:00:00+00:00");
    expect_time("2011-03-27 00:59:59", "2011-03-27T00:59:59+00:00");
    expect_bad_time("2011-03-27 01:00:00");
    expect_bad_time("2011-03-27 01:30:00");
    expect_bad_time("2011-03-27 01:59:59");
    expect_time("2011-03-27 02:00:00", "2011-03-27T02:00:00+01:00");
    expect_time("2011-03-28 09:00:00", "2011-03-28T09:00:00+01:00");
}

/* Clocks went back at 01:00 UTC on 30 October 2011: 01:00-01:59 local
 * happened twice; the first occurrence (BST) is taken. */
static void test_time_fall_back(void **state)
{
    (void)state;
    expect_time("2011-10-29 23:59:59", "2011-10-29T23:59:59+01:00");
    expect_time("2011-10-30 00:59:59", "2011-10-30T00:59:59+01:00");
    expect_time("2011-10-30 01:00:00", "2011-10-30T01:00:00+01:00");
    expect_time("2011-10-30 01:59:59", "2011-10-30T01:59:59+01:00");
    expect_time("2011-10-30 02:00:00", "2011-10-30T02:00:00+00:00");
    expect_time("2011-10-31 08:00:00", "2011-10-31T08:00:00+00:00");
}

static void test_time_invalid(void **state)
{
    char small[LOAD_RFC3339_LEN];

    (void)state;
    expect_bad_time("");
    expect_bad_time("garbage");
    expect_bad_time("2011-02-30 10:00:00");
    expect_bad_time("2011-13-01 10:00:00");
    expect_bad_time("2011-01-01 24:00:00");
    expect_bad_time("2011-01-01 10:60:00");
    expect_bad_time("2011/01/01 10:00:00");
    expect_bad_time("2011-01-01 10:00:00Z");
    expect_bad_time("12/1/2010 8:26");
    assert_int_equal(load_uk_time_to_rfc3339("2011-06-01 10:00:00", small,
                                             sizeof small), -1);
}

/* ----------------------------------------------------------- field rules */

static void test_customer_id(void **state)
{
    char out[32];

    (void)state;
    assert_int_equal(load_normalise_customer_id("17850", out, sizeof out), 0);
    assert_string_equal(out, "17850");
    assert_int_equal(load_normalise_customer_id("17850.0", out, sizeof out),
                     0);
    assert_string_equal(out, "17850");
    assert_int_equal(load_normalise_customer_id(" 12346.00 ", out,
                                                sizeof out), 0);
    assert_string_equal(out, "12346");
    assert_int_equal(load_normalise_customer_id("", out, sizeof out), 0);
    assert_string_equal(out, "");
    assert_int_equal(load_normalise_customer_id("   ", out, sizeof out), 0);
    assert_string_equal(out, "");
    assert_int_equal(load_normalise_customer_id("17850.5", out, sizeof out),
                     -1);
    assert_int_equal(load_normalise_customer_id("17850.", out, sizeof out),
                     -1);
    assert_int_equal(load_normalise_customer_id("abc", out, sizeof out), -1);
    assert_int_equal(load_normalise_customer_id(".0", out, sizeof out), -1);
    assert_int_equal(load_normalise_customer_id("123456", out, 4), -1);
}

static void test_price(void **state)
{
    const char *good[][2] = {
        { "2.55", "2.55" }, { "0.001", "0.001" }, { "0", "0" },
        { "-11062.06", "-11062.06" }, { " 3.1 ", "3.1" },
        { "38970", "38970" },
    };
    const char *bad[] = { "", " ", "-", "1.", ".5", "1,5", "1e3", "--1",
                          "2.55x", "£2.55" };
    char out[32];

    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_int_equal(load_normalise_price(good[i][0], out, sizeof out),
                         0);
        assert_string_equal(out, good[i][1]);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(load_normalise_price(bad[i], out, sizeof out), -1);
}

static void test_quantity(void **state)
{
    long long q;

    (void)state;
    assert_int_equal(load_parse_quantity("6", &q), 0);
    assert_int_equal(q, 6);
    assert_int_equal(load_parse_quantity("-80995", &q), 0);
    assert_int_equal(q, -80995);
    assert_int_equal(load_parse_quantity(" 80995 ", &q), 0);
    assert_int_equal(q, 80995);
    assert_int_equal(load_parse_quantity("0", &q), 0);
    assert_int_equal(q, 0);
    assert_int_equal(load_parse_quantity("", &q), -1);
    assert_int_equal(load_parse_quantity("-", &q), -1);
    assert_int_equal(load_parse_quantity("1.0", &q), -1);
    assert_int_equal(load_parse_quantity("99999999999999999999", &q), -1);
}

static void test_invoice_kind_and_key(void **state)
{
    char key[64];

    (void)state;
    assert_true(load_is_return_invoice("C536379"));
    assert_false(load_is_return_invoice("536365"));
    assert_false(load_is_return_invoice("A563185"));
    assert_false(load_is_return_invoice(""));
    assert_int_equal(load_idempotency_key(key, sizeof key, "536365",
                                          "item-12"), 0);
    assert_string_equal(key, "load-536365-item-12");
    assert_int_equal(load_idempotency_key(key, 8, "536365", "open"), -1);
}

static void test_utf8(void **state)
{
    (void)state;
    assert_true(load_utf8_valid("\xC2\xA3" "2 OFF", 7));      /* £ */
    assert_true(load_utf8_valid("\xE2\x82\xAC", 3));          /* € */
    assert_true(load_utf8_valid("\xF0\x9F\x8E\x81", 4));      /* 🎁 */
    assert_false(load_utf8_valid("\xA3" "2", 2));             /* Latin-1 £ */
    assert_false(load_utf8_valid("\xC2", 1));                 /* truncated */
    assert_false(load_utf8_valid("\xC0\xAF", 2));             /* overlong */
    assert_false(load_utf8_valid("\xED\xA0\x80", 3));         /* surrogate */
    assert_false(load_utf8_valid("a\0b", 3));
}

/* --------------------------------------------------------------- dataset */

static const char *const SAMPLE_BODY =
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,"
    "2010-12-01 08:26:00,2.55,17850.0,United Kingdom\r\n"
    "536366,22633,\"HAND WARMER UNION JACK, \",6,2010-12-01 08:28:00,1.85,"
    ",United Kingdom\r\n"
    "536365,22041,\"RECORD FRAME 7\"\" SINGLE SIZE \",48,"
    "2010-12-01 08:27:00,2.1,17850.0,United Kingdom\r\n"
    "C536379,D,Discount,-1,2011-06-01 09:41:00,27.50,14527,United Kingdom\r\n"
    "536370,POST,\xC2\xA3" "5 POSTAGE ,3,2011-03-27 02:00:00,0.001,"
    "12583,France\r\n"
    "C536379,22556,\"PLASTERS IN TIN, CIRCUS\",-12,2011-06-01 09:42:00,"
    "1.65,14527,United Kingdom\r\n";

static void check_sample(const struct load_dataset *ds)
{
    const struct load_invoice *inv;

    assert_int_equal(ds->nlines, 6);
    assert_int_equal(ds->ninvoices, 4);
    assert_int_equal(ds->sale_lines, 4);
    assert_int_equal(ds->return_lines, 2);
    assert_int_equal(ds->return_invoices, 1);

    /* first-seen order; the non-contiguous 536365 gathers both lines */
    inv = &ds->invoices[0];
    assert_string_equal(inv->invoice_no, "536365");
    assert_string_equal(inv->customer_id, "17850");
    assert_string_equal(inv->country, "United Kingdom");
    assert_int_equal(inv->nlines, 2);
    assert_string_equal(inv->lines[0].sku, "85123A");
    assert_string_equal(inv->lines[0].unit_price, "2.55");
    assert_string_equal(inv->lines[0].occurred_at,
                        "2010-12-01T08:26:00+00:00");
    assert_string_equal(inv->lines[1].description,
                        "RECORD FRAME 7\" SINGLE SIZE ");
    assert_int_equal(inv->lines[1].quantity, 48);
    assert_string_equal(inv->lines[1].occurred_at,
                        "2010-12-01T08:27:00+00:00");

    inv = &ds->invoices[1];
    assert_string_equal(inv->invoice_no, "536366");
    assert_null(inv->customer_id);
    assert_string_equal(inv->lines[0].description,
                        "HAND WARMER UNION JACK, ");

    inv = &ds->invoices[2];
    assert_string_equal(inv->invoice_no, "C536379");
    assert_int_equal(inv->nlines, 2);
    assert_int_equal(inv->lines[0].quantity, -1);
    assert_string_equal(inv->lines[0].unit_price, "27.50");
    assert_string_equal(inv->lines[1].description, "PLASTERS IN TIN, CIRCUS");
    assert_string_equal(inv->lines[1].occurred_at,
                        "2011-06-01T09:42:00+01:00");

    inv = &ds->invoices[3];
    assert_string_equal(inv->invoice_no, "536370");
    assert_string_equal(inv->lines[0].description, "\xC2\xA3" "5 POSTAGE ");
    assert_string_equal(inv->lines[0].unit_price, "0.001");
    assert_string_equal(inv->country, "France");
    assert_string_equal(inv->lines[0].occurred_at,
                        "2011-03-27T02:00:00+01:00");
}

static char *sample_text(const char *body)
{
    char *text = malloc(strlen(HEADER) + strlen(body) + 1);

    assert_non_null(text);
    strcpy(text, HEADER);
    strcat(text, body);
    return text;
}

static void test_read_plain_and_gzip(void **state)
{
    char *text = sample_text(SAMPLE_BODY);
    struct load_dataset ds;
    char err[512];

    (void)state;
    for (int gz = 0; gz <= 1; gz++) {
        char *path = write_fixture(text, gz);

        assert_int_equal(load_dataset_read(path, -1, &ds, err, sizeof err),
                         0);
        check_sample(&ds);
        load_dataset_free(&ds);
        assert_int_equal(ds.ninvoices, 0);
        remove_fixture(path);
    }
    free(text);
}

static void test_read_lf_no_final_newline(void **state)
{
    const char *text =
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,"
        "CustomerID,Country\n"
        "\xEF\xBB\xBF"  /* a stray BOM inside a field stays in the field */
        "536365,85123A,X,6,2010-12-01 08:26:00,2.55,17850,United Kingdom\n"
        "536366,22633,\"MULTI\nLINE\",6,2010-12-01 08:28:00,1.85,,EIRE";
    char *path = write_fixture(text, 0);
    struct load_dataset ds;
    char err[512];

    (void)state;
    assert_int_equal(load_dataset_read(path, -1, &ds, err, sizeof err), 0);
    assert_int_equal(ds.nlines, 2);
    assert_string_equal(ds.invoices[0].invoice_no,
                        "\xEF\xBB\xBF" "536365");
    assert_string_equal(ds.invoices[1].lines[0].description, "MULTI\nLINE");
    assert_string_equal(ds.invoices[1].country, "EIRE");
    load_dataset_free(&ds);
    remove_fixture(path);
}

static void test_read_limit(void **state)
{
    char *text = sample_text(SAMPLE_BODY);
    char *path = write_fixture(text, 1);
    struct load_dataset ds;
    char err[512];

    (void)state;
    assert_int_equal(load_dataset_read(path, 3, &ds, err, sizeof err), 0);
    assert_int_equal(ds.nlines, 3);
    assert_int_equal(ds.ninvoices, 2);
    assert_int_equal(ds.invoices[0].nlines, 2);
    load_dataset_free(&ds);

    assert_int_equal(load_dataset_read(path, 0, &ds, err, sizeof err), 0);
    assert_int_equal(ds.nlines, 0);
    assert_int_equal(ds.ninvoices, 0);
    load_dataset_free(&ds);
    remove_fixture(path);
    free(text);
}

static void expect_read_error(const char *text, const char *suffix)
{
    char *path = write_fixture(text, 0);
    struct load_dataset ds;
    char err[512], want[768];

    assert_int_equal(load_dataset_read(path, -1, &ds, err, sizeof err), -1);
    snprintf(want, sizeof want, "file \"%s\"%s", path, suffix);
    assert_string_equal(err, want);
    assert_int_equal(ds.ninvoices, 0);
    assert_null(ds.invoices);
    remove_fixture(path);
}

static void test_read_errors(void **state)
{
    char *text;

    (void)state;
    expect_read_error("", " is empty");
    expect_read_error("InvoiceNo,StockCode\n",
                      " line 1: header has no column for description (\"Description\" in "
                      "Online Retail, \"Description\" in Online Retail II); it has "
                      "\"InvoiceNo\", \"StockCode\": name the columns with --columns "
                      "description=NAME,...");
    expect_read_error("InvoiceNo,StockCode,Description,Qty,InvoiceDate,"
                      "UnitPrice,CustomerID,Country\n",
                      " line 1: header has no column for quantity (\"Quantity\" in Online "
                      "Retail, \"Quantity\" in Online Retail II); it has \"InvoiceNo\", "
                      "\"StockCode\", \"Description\", \"Qty\", \"InvoiceDate\", "
                      "\"UnitPrice\", \"CustomerID\", \"Country\": name the columns with "
                      "--columns quantity=NAME,...");

    text = sample_text("536365,85123A,X,six,2010-12-01 08:26:00,2.55,,UK\n");
    expect_read_error(text, " line 2: invalid Quantity \"six\"");
    free(text);
    text = sample_text("536365,85123A,X,6,2010-12-01 08:26:00,2.55,,UK\n"
                       "536365,85123A,X,6,2010-12-01,2.55,,UK\n");
    expect_read_error(text, " line 3: invalid InvoiceDate \"2010-12-01\"");
    free(text);
    text = sample_text("536365,85123A,X,6,2011-03-27 01:30:00,2.55,,UK\n");
    expect_read_error(text,
                      " line 2: invalid InvoiceDate \"2011-03-27 01:30:00\"");
    free(text);
    text = sample_text("536365,85123A,X,6,2010-12-01 08:26:00,2,55,,UK\n");
    expect_read_error(text, " line 2: expected 8 fields (as the header), found 9");
    free(text);
    text = sample_text("536365,85123A,X,6,2010-12-01 08:26:00,abc,,UK\n");
    expect_read_error(text, " line 2: invalid UnitPrice \"abc\"");
    free(text);
    text = sample_text("536365,85123A,X,6,2010-12-01 08:26:00,1,17850.5,UK\n");
    expect_read_error(text, " line 2: invalid CustomerID \"17850.5\"");
    free(text);
    text = sample_text(",85123A,X,6,2010-12-01 08:26:00,1,,UK\n");
    expect_read_error(text, " line 2: InvoiceNo is empty");
    free(text);
    text = sample_text("536365,85123A,\xA3" "5,6,2010-12-01 08:26:00,1,,UK\n");
    expect_read_error(text, " line 2: Description is not valid UTF-8");
    free(text);
    text = sample_text("536365,85123A,\"OPEN,6,2010-12-01 08:26:00,1,,UK\n"
                       "536366,85123A,X,6,2010-12-01 08:26:00,1,,UK\n");
    expect_read_error(text, " line 2: unterminated quoted field");
    free(text);
    text = sample_text("536365,85123A,X,6,2010-12-01 08:26:00,1,,UK\n"
                       "536365,85\"123A,X,6,2010-12-01 08:26:00,1,,UK\n");
    expect_read_error(text, " line 3: malformed CSV: error parsing data "
                      "while strict checking enabled");
    free(text);
    /* blank lines are skipped and still counted */
    text = sample_text("\n536365,85123A,X,6,2010-12-01 08:26:00,1,,UK\r\n"
                       "\r\n\"536366\",85123A,\"MULTI\nLINE\",6,"
                       "2010-12-01 08:26:00,1,,UK\n"
                       "536367,85123A,X,-,2010-12-01 08:26:00,1,,UK\n");
    expect_read_error(text, " line 7: invalid Quantity \"-\"");
    free(text);
}

/* The same sale read from three spellings of its header: Online Retail's,
 * Online Retail II's (with a column more, in another order), and an export
 * of its own named by --columns. */
static void test_read_layouts(void **state)
{
    static const char *const files[][2] = {
        {"InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
         "536365,85123A,WHITE HEART,6,2010-12-01 08:26,2.55,17850.0,United Kingdom\n",
         NULL},
        {"Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n"
         "536365,85123A,WHITE HEART,6,2010-12-01 08:26:00,2.55,17850,United Kingdom\n",
         NULL},
        {"Country,customer id,INVOICE,Extra,StockCode,Description,Quantity,InvoiceDate,Price\n"
         "United Kingdom,17850,536365,x,85123A,WHITE HEART,6,2010-12-01 08:26,2.55\n",
         NULL},
        {"Order,Item,Text,Qty,When,Each,Client,Land\n"
         "536365,85123A,WHITE HEART,6,2010-12-01 08:26,2.55,17850,United Kingdom\n",
         "invoice=Order,sku=Item,description=Text,quantity=Qty,date=When,price=each,"
         "customer=Client,country=Land"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char *path = write_fixture(files[i][0], (int)(i % 2));
        struct load_dataset ds;
        char err[512];
        if (load_dataset_read_columns(path, -1, files[i][1], &ds, err, sizeof err) != 0)
            fail_msg("layout %zu: %s", i, err);
        assert_int_equal(ds.ninvoices, 1);
        assert_string_equal(ds.invoices[0].invoice_no, "536365");
        assert_string_equal(ds.invoices[0].customer_id, "17850");
        assert_string_equal(ds.invoices[0].country, "United Kingdom");
        assert_string_equal(ds.invoices[0].lines[0].sku, "85123A");
        assert_string_equal(ds.invoices[0].lines[0].unit_price, "2.55");
        assert_int_equal(ds.invoices[0].lines[0].quantity, 6);
        assert_string_equal(ds.invoices[0].lines[0].occurred_at, "2010-12-01T08:26:00+00:00");
        load_dataset_free(&ds);
        remove_fixture(path);
    }
}

/* A --columns mapping that does not fit is one clear error, before anything. */
static void test_read_bad_columns(void **state)
{
    static const char *const cases[][2] = {
        {"invoice=Order", "--columns does not map sku"},
        {"invoice=Order,sku=Nope,description=Text,quantity=Qty,date=When,price=Each,"
         "customer=Client,country=Land",
         "--columns maps sku to \"Nope\", which the header lacks (it has \"Order\", "
         "\"Item\", \"Text\", \"Qty\", \"When\", \"Each\", \"Client\", \"Land\")"},
        {"invoice=Order,colour=Item", "--columns names no value \"colour\""},
        {"invoice", "--columns \"invoice\" is not role=Name"},
    };
    (void)state;
    char *path = write_fixture("Order,Item,Text,Qty,When,Each,Client,Land\n"
                               "1,A,x,1,2010-12-01 08:26,1,,UK\n",
                               0);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct load_dataset ds;
        char err[512];
        assert_int_equal(load_dataset_read_columns(path, -1, cases[i][0], &ds, err, sizeof err),
                         -1);
        if (!strstr(err, cases[i][1]))
            fail_msg("--columns %s: \"%s\" lacks \"%s\"", cases[i][0], err, cases[i][1]);
        assert_int_equal(ds.ninvoices, 0);
    }
    remove_fixture(path);
}

/* tests/data/online_retail_II_slice.csv.gz: the first lines of the Online
 * Retail file written in the Online Retail II layout (its header, its column
 * order, its date format with seconds, "Customer ID" with ".0" as the UCI
 * export has it) read to exactly the dataset the same lines of the original
 * give. */
static void test_read_online_retail_II_slice(void **state)
{
    (void)state;
    struct load_dataset a, b;
    char err[512];
    if (load_dataset_read("tests/data/online_retail_II_slice.csv.gz", -1, &b, err, sizeof err))
        fail_msg("%s", err);
    if (load_dataset_read("data/online-retail/online_retail_I.csv.gz", (long)b.nlines, &a, err,
                          sizeof err))
        fail_msg("%s", err);
    assert_true(b.nlines >= 1000);
    assert_int_equal(a.nlines, b.nlines);
    assert_int_equal(a.ninvoices, b.ninvoices);
    assert_int_equal(a.return_lines, b.return_lines);
    for (size_t i = 0; i < a.ninvoices; i++) {
        const struct load_invoice *x = &a.invoices[i], *y = &b.invoices[i];
        char *s1, *s2;
        assert_string_equal(x->invoice_no, y->invoice_no);
        s1 = dump_sorted(load_is_return_invoice(x->invoice_no) ? load_body_return(x)
                                                               : load_body_cart_open(x));
        s2 = dump_sorted(load_is_return_invoice(y->invoice_no) ? load_body_return(y)
                                                               : load_body_cart_open(y));
        assert_string_equal(s1, s2);
        free(s1);
        free(s2);
        assert_int_equal(x->nlines, y->nlines);
        for (size_t k = 0; k < x->nlines; k++) {
            s1 = dump_sorted(load_body_cart_item(&x->lines[k]));
            s2 = dump_sorted(load_body_cart_item(&y->lines[k]));
            assert_string_equal(s1, s2);
            free(s1);
            free(s2);
        }
    }
    print_message("Online Retail II layout: %zu lines, %zu invoices, the same as the original\n",
                  b.nlines, b.ninvoices);
    load_dataset_free(&a);
    load_dataset_free(&b);
}

static void test_read_missing_file(void **state)
{
    struct load_dataset ds;
    char err[512];

    (void)state;
    assert_int_equal(load_dataset_read("/nonexistent/x.csv.gz", -1, &ds,
                                       err, sizeof err), -1);
    assert_string_equal(err, "could not open file \"/nonexistent/x.csv.gz\": "
                        "No such file or directory");
}

/* ----------------------------------------------------------- JSON bodies */

static void test_bodies(void **state)
{
    char *text = sample_text(SAMPLE_BODY);
    char *path = write_fixture(text, 0);
    struct load_dataset ds;
    char err[512], *s;

    (void)state;
    assert_int_equal(load_dataset_read(path, -1, &ds, err, sizeof err), 0);

    s = dump_sorted(load_body_cart_open(&ds.invoices[0]));
    assert_string_equal(s, "{\"cart_id\":\"536365\",\"country\":"
                        "\"United Kingdom\",\"customer_id\":\"17850\","
                        "\"occurred_at\":\"2010-12-01T08:26:00+00:00\"}");
    free(s);
    s = dump_sorted(load_body_cart_open(&ds.invoices[1]));
    assert_string_equal(s, "{\"cart_id\":\"536366\",\"country\":"
                        "\"United Kingdom\",\"customer_id\":null,"
                        "\"occurred_at\":\"2010-12-01T08:28:00+00:00\"}");
    free(s);
    s = dump_sorted(load_body_cart_item(&ds.invoices[0].lines[1]));
    assert_string_equal(s, "{\"description\":\"RECORD FRAME 7\\\" SINGLE "
                        "SIZE \",\"occurred_at\":\"2010-12-01T08:27:00+00:00"
                        "\",\"quantity\":48,\"sku\":\"22041\","
                        "\"unit_price\":\"2.1\"}");
    free(s);
    s = dump_sorted(load_body_cart_item(&ds.invoices[3].lines[0]));
    assert_non_null(strstr(s, "\"description\":\"\xC2\xA3" "5 POSTAGE \""));
    assert_non_null(strstr(s, "\"unit_price\":\"0.001\""));
    free(s);
    s = dump_sorted(load_body_checkout(&ds.invoices[0]));
    assert_string_equal(s, "{\"occurred_at\":\"2010-12-01T08:26:00+00:00\"}");
    free(s);
    s = dump_sorted(load_body_payment("15.30", "2010-12-01T08:26:00+00:00"));
    assert_string_equal(s, "{\"amount\":\"15.30\",\"occurred_at\":"
                        "\"2010-12-01T08:26:00+00:00\"}");
    free(s);
    s = dump_sorted(load_body_return(&ds.invoices[2]));
    assert_string_equal(s, "{\"country\":\"United Kingdom\",\"customer_id\":"
                        "\"14527\",\"lines\":[{\"description\":\"Discount\","
                        "\"quantity\":1,\"sku\":\"D\",\"unit_price\":\"27.50\""
                        "},{\"description\":\"PLASTERS IN TIN, CIRCUS\","
                        "\"quantity\":12,\"sku\":\"22556\",\"unit_price\":"
                        "\"1.65\"}],\"occurred_at\":\"2011-06-01T09:41:00+01"
                        ":00\",\"return_id\":\"C536379\"}");
    free(s);
    assert_null(load_body_payment(NULL, "x"));

    load_dataset_free(&ds);
    remove_fixture(path);
    free(text);
}

/* ---------------------------------------------------------- reply parsing */

static void test_problem_message(void **state)
{
    char out[64];

    (void)state;
    load_problem_message("{\"type\":\"about:blank\",\"title\":\"Conflict\","
                         "\"status\":409,\"detail\":\"cart 536365 is "
                         "checked out\"}", out, sizeof out);
    assert_string_equal(out, "cart 536365 is checked out");
    load_problem_message("{\"title\":\"Conflict\",\"status\":409}", out,
                         sizeof out);
    assert_string_equal(out, "Conflict");
    load_problem_message("  <html>bad\ngateway</html>\n", out, sizeof out);
    assert_string_equal(out, "<html>bad gateway</html>");
    load_problem_message("", out, sizeof out);
    assert_string_equal(out, "(empty reply)");
    load_problem_message(NULL, out, sizeof out);
    assert_string_equal(out, "(empty reply)");
    load_problem_message("{\"detail\":\"0123456789012345678901234567890123"
                         "456789012345678901234567890123456789\"}", out, 11);
    assert_string_equal(out, "0123456789");
}

static void test_retry_after(void **state)
{
    time_t now = 1300000000; /* Sun, 13 Mar 2011 07:06:40 GMT */

    (void)state;
    assert_int_equal(load_retry_after_ms("3", now), 3000);
    assert_int_equal(load_retry_after_ms(" 0 ", now), 0);
    assert_int_equal(load_retry_after_ms("120", now), 60000);
    assert_int_equal(load_retry_after_ms("99999999999999999999", now), 60000);
    assert_int_equal(load_retry_after_ms("Sun, 13 Mar 2011 07:06:45 GMT",
                                         now), 5000);
    assert_int_equal(load_retry_after_ms("Sun, 13 Mar 2011 07:00:00 GMT",
                                         now), 0);
    assert_int_equal(load_retry_after_ms("", now), -1);
    assert_int_equal(load_retry_after_ms("soon", now), -1);
    assert_int_equal(load_retry_after_ms(NULL, now), -1);
}

static void test_backoff(void **state)
{
    unsigned seed = 42;

    (void)state;
    for (int i = 0; i < 100; i++) {
        long d0 = load_backoff_ms(0, -1, &seed);
        long d3 = load_backoff_ms(3, -1, &seed);
        long d9 = load_backoff_ms(9, -1, &seed);

        assert_in_range(d0, 100, 125);
        assert_in_range(d3, 800, 1000);
        assert_in_range(d9, 5000, 6250);
    }
    assert_int_equal(load_backoff_ms(0, 2000, &seed), 2000);
    assert_int_equal(load_backoff_ms(7, 0, &seed), 0);
}

static void test_readyz(void **state)
{
    const char *t = "0000000000000000000000000000000f";

    (void)state;
    assert_int_equal(load_readyz_caught_up(
        "{\"status\":\"ok\",\"position\":\"00000000000000000000000000000010\","
        "\"projections\":[{\"name\":\"orders\",\"version\":1,\"checkpoint\":"
        "\"00000000000000000000000000000010\"},{\"name\":\"customers\","
        "\"version\":1,\"checkpoint\":\"0000000000000000000000000000000f\"}]}",
        t), 1);
    assert_int_equal(load_readyz_caught_up(
        "{\"projections\":[{\"name\":\"orders\",\"checkpoint\":"
        "\"00000000000000000000000000000010\"},{\"name\":\"customers\","
        "\"checkpoint\":\"0000000000000000000000000000000e\"}]}", t), 0);
    assert_int_equal(load_readyz_caught_up(
        "{\"projections\":[{\"name\":\"orders\",\"checkpoint\":null}]}", t), 0);
    assert_int_equal(load_readyz_caught_up("{\"projections\":[]}", t), 1);
    assert_int_equal(load_readyz_caught_up(
        "{\"projections\":[{\"name\":\"orders\",\"checkpoint\":"
        "\"00000000000000000000000000000000\"}]}", ""), 1);
    assert_int_equal(load_readyz_caught_up("{\"status\":\"ok\"}", t), -1);
    assert_int_equal(load_readyz_caught_up("{\"projections\":[1]}", t), -1);
    assert_int_equal(load_readyz_caught_up("not json", t), -1);
    assert_int_equal(load_readyz_caught_up(NULL, t), -1);
}

static void test_format_stats(void **state)
{
    char out[256];

    (void)state;
    assert_int_equal(load_format_stats(
        "{\"orders\":20726,\"revenue\":\"10666684.544\",\"returns\":3836,"
        "\"returns_value\":\"896812.49\",\"customers\":4339}", out,
        sizeof out), 0);
    assert_string_equal(out, "read models: orders 20726  revenue 10666684.544"
                        "  returns 3836  returns value 896812.49  customers "
                        "4339");
    assert_int_equal(load_format_stats(
        "{\"orders\":1,\"revenue\":\"1\",\"returns\":0,\"customers\":1}",
        out, sizeof out), -1);
    assert_int_equal(load_format_stats("[]", out, sizeof out), -1);
    assert_int_equal(load_format_stats(
        "{\"orders\":1,\"revenue\":\"1\",\"returns\":0,\"returns_value\":"
        "\"0\",\"customers\":1}", out, 20), -1);
}

int main(void)
{
    const struct CMUnitTest pure_tests[] = {
        cmocka_unit_test(test_args_defaults),
        cmocka_unit_test(test_args_all),
        cmocka_unit_test(test_args_help),
        cmocka_unit_test(test_args_errors),
        cmocka_unit_test(test_customer_id),
        cmocka_unit_test(test_price),
        cmocka_unit_test(test_quantity),
        cmocka_unit_test(test_invoice_kind_and_key),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_problem_message),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_readyz),
        cmocka_unit_test(test_format_stats),
    };
    const struct CMUnitTest tz_tests[] = {
        cmocka_unit_test(test_time_examples),
        cmocka_unit_test(test_time_spring_forward),
        cmocka_unit_test(test_time_fall_back),
        cmocka_unit_test(test_time_invalid),
        cmocka_unit_test(test_read_plain_and_gzip),
        cmocka_unit_test(test_read_lf_no_final_newline),
        cmocka_unit_test(test_read_limit),
        cmocka_unit_test(test_read_errors),
        cmocka_unit_test(test_read_missing_file),
        cmocka_unit_test(test_read_layouts),
        cmocka_unit_test(test_read_bad_columns),
        cmocka_unit_test(test_read_online_retail_II_slice),
        cmocka_unit_test(test_bodies),
    };
    int failed = 0;

    failed += cmocka_run_group_tests_name("load", pure_tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("load_tz", tz_tests, setup_tz,
                                          NULL);
    return failed == 0 ? 0 : 1;
}
