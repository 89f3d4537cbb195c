/* core/metrics.h — the server's counters and latency histograms, and their
 * exposition in the Prometheus text format, version 0.0.4 (Prometheus docs,
 * "Exposition formats": one "# HELP" and one "# TYPE" line per family, then
 * `name{label="value",...} value` lines; label values escape \, " and
 * newline; a histogram is cumulative `_bucket{le="..."}` lines ending with
 * le="+Inf", then `_sum` and `_count`).
 *
 * GET /metrics (core/builtin.c) writes them; README "Operations" lists each
 * family. All functions are thread-safe.
 */
#ifndef CQRSD_METRICS_H
#define CQRSD_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* The upper bounds of the histogram buckets, in microseconds: 0.5 ms to 10 s. */
#define METRICS_NBUCKETS 14
extern const int64_t metrics_bucket_us[METRICS_NBUCKETS];

/* A latency histogram: bucket[i] counts the observations of at most
 * metrics_bucket_us[i] (and more than the bound before), bucket[NBUCKETS] the
 * others; sum_us their total. Zero-initialised is empty. */
struct metrics_hist {
    atomic_llong bucket[METRICS_NBUCKETS + 1];
    atomic_llong sum_us;
};

/* Counts one observation of us microseconds (negative counts as 0). */
void metrics_observe(struct metrics_hist *h, int64_t us);

/* A growing text buffer; zero-initialised is empty. p is NUL-terminated once
 * anything was written; the owner frees p. */
struct mtext {
    char *p;
    size_t len, cap;
};
void mtext_printf(struct mtext *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The "# HELP" and "# TYPE" lines of a family (type: counter, gauge, histogram). */
void mtext_family(struct mtext *t, const char *name, const char *type, const char *help);

/* v as a label value, escaped, into buf (cut to fit n bytes); returns buf. */
const char *metrics_escape(char *buf, size_t n, const char *v);

/* The _bucket, _sum and _count lines of histogram name with labels (the text
 * inside the braces, without them, "" for none); the family lines are the
 * caller's. Seconds, as Prometheus's base unit. */
void mtext_hist(struct mtext *t, const char *name, const char *labels,
                const struct metrics_hist *h);

/* One HTTP request answered: method (the caller maps unknown ones to one
 * name), route (the pattern it matched, e.g. "/carts/{cart_id}", or "" for
 * none), status, and the microseconds from its headers to its reply.
 * Distinct (method, route, status) are kept up to 512; past that they count
 * under route "(other)". */
void metrics_http_observe(const char *method, const char *route, int status, int64_t us);

/* The families cqrsd_http_requests_total and
 * cqrsd_http_request_duration_seconds. */
void metrics_http_write(struct mtext *t);

#endif
