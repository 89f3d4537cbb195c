/* tools/bench/bare.c — the queries baseline of `make bench`: a bare
 * libmicrohttpd server with cqrsd's daemon flags and thread pool (core/http.c:
 * internal polling thread, epoll, a pool of THREADS), answering every request
 * with the bytes of BODY_FILE as application/json. No routing, no Redis, no
 * JSON building: the rate of HTTP alone on this machine.
 *
 *   bare PORT BODY_FILE [THREADS (2)]    runs until SIGTERM or SIGINT
 */
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *body;
static size_t body_len;

static enum MHD_Result answer(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_len, void **con_cls)
{
    (void)cls, (void)url, (void)method, (void)version, (void)upload, (void)upload_len;
    (void)con_cls;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(body_len, body, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ok;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bare PORT BODY_FILE [THREADS]\n");
        return 2;
    }
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        perror(argv[2]);
        return 1;
    }
    static char buf[1 << 20];
    body_len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    body = buf;
    unsigned threads = argc > 3 ? (unsigned)atoi(argv[3]) : 2;
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_EPOLL,
        (uint16_t)atoi(argv[1]), NULL, NULL, answer, NULL, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_LIMIT, 4000, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "bare: could not listen on port %s\n", argv[1]);
        return 1;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sig;
    sigwait(&set, &sig);
    MHD_stop_daemon(d);
    return 0;
}
