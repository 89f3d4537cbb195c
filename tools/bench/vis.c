/* tools/bench/vis.c — the visibility figure of `make bench`: how long from a
 * command's reply until the read model shows it. CLIENTS threads, each with a
 * cart of its own, for SECONDS: POST an add-item, take the time of the reply,
 * poll GET /carts/{id} (every 200 µs) until its units count the new item.
 * Prints one line: "visibility n N p50_ms X p99_ms Y max_ms Z".
 *
 *   vis BASE_URL CLIENTS SECONDS PREFIX
 */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *base, *prefix;
static int seconds;

struct buf {
    char *p;
    size_t n;
};

struct client {
    pthread_t t;
    int id;
    double *lat; /* ms */
    size_t n, cap;
    int failed;
};

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static size_t on_data(char *p, size_t s, size_t n, void *u)
{
    struct buf *b = u;
    b->p = realloc(b->p, b->n + s * n + 1);
    memcpy(b->p + b->n, p, s * n);
    b->n += s * n;
    b->p[b->n] = '\0';
    return s * n;
}

/* One request on c; returns the status, the body in b (reset first). */
static long call(CURL *c, const char *method, const char *url, const char *body, struct buf *b)
{
    b->n = 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    if (!strcmp(method, "POST"))
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    else
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    if (curl_easy_perform(c) != CURLE_OK)
        return 0;
    long st = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
    return st;
}

static void *run(void *arg)
{
    struct client *k = arg;
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    struct buf b = {0};
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    char url[512], view[512], body[256];
    snprintf(body, sizeof body, "{\"cart_id\":\"%s-%d\"}", prefix, k->id);
    snprintf(url, sizeof url, "%s/carts", base);
    if (call(c, "POST", url, body, &b) != 201) {
        k->failed = 1;
        goto out;
    }
    snprintf(url, sizeof url, "%s/carts/%s-%d/items", base, prefix, k->id);
    snprintf(view, sizeof view, "%s/carts/%s-%d", base, prefix, k->id);
    double end = now_ms() + seconds * 1e3;
    for (long units = 1; now_ms() < end; units++) {
        if (call(c, "POST", url, "{\"sku\":\"85123A\",\"quantity\":1,\"unit_price\":\"2.55\"}",
                 &b) != 200) {
            k->failed = 1;
            break;
        }
        double t0 = now_ms();
        for (;;) {
            if (call(c, "GET", view, NULL, &b) == 200) {
                json_t *j = json_loads(b.p, 0, NULL);
                long got = (long)json_integer_value(json_object_get(j, "units"));
                json_decref(j);
                if (got >= units)
                    break;
            }
            if (now_ms() - t0 > 10000) {
                k->failed = 1;
                goto out;
            }
            usleep(200);
        }
        if (k->n == k->cap)
            k->lat = realloc(k->lat, (k->cap = k->cap ? 2 * k->cap : 1024) * sizeof *k->lat);
        k->lat[k->n++] = now_ms() - t0;
    }
out:
    free(b.p);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: vis BASE_URL CLIENTS SECONDS PREFIX\n");
        return 2;
    }
    base = argv[1];
    int n = atoi(argv[2]);
    seconds = atoi(argv[3]);
    prefix = argv[4];
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct client *k = calloc((size_t)n, sizeof *k);
    for (int i = 0; i < n; i++) {
        k[i].id = i;
        pthread_create(&k[i].t, NULL, run, &k[i]);
    }
    size_t total = 0;
    int failed = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(k[i].t, NULL);
        total += k[i].n;
        failed |= k[i].failed;
    }
    double *all = malloc((total ? total : 1) * sizeof *all);
    size_t m = 0;
    for (int i = 0; i < n; i++) {
        memcpy(all + m, k[i].lat, k[i].n * sizeof *all);
        m += k[i].n;
        free(k[i].lat);
    }
    qsort(all, total, sizeof *all, cmp);
    if (failed || total == 0) {
        fprintf(stderr, "vis: a command failed or never showed in the read model\n");
        return 1;
    }
    printf("visibility n %zu p50_ms %.2f p99_ms %.2f max_ms %.2f\n", total, all[total / 2],
           all[(total * 99) / 100], all[total - 1]);
    free(all);
    free(k);
    curl_global_cleanup();
    return 0;
}
