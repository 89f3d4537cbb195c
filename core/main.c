/* core/main.c — the cqrsd command line: serve, migrate, load, replay.
 *
 * Configuration comes from the environment (DESIGN.md §6): DATABASE_URL,
 * REDIS_URL, CQRSD_MODULES (the e-commerce module beside the binary),
 * CQRSD_HTTP_ADDR (127.0.0.1:8080), CQRSD_WORKERS (16), CQRSD_READ_WORKERS (4),
 * CQRSD_LOG_LEVEL (info), CQRSD_LOG_FORMAT (json), CQRSD_TIMEZONE (Europe/London), CQRSD_MAX_BODY
 * (1048576 bytes), CQRSD_QUEUE (1024 jobs), CQRSD_STATE_CACHE (10000 streams),
 * CQRSD_HTTP_TIMEOUT (30 s, idle), CQRSD_BODY_TIMEOUT (30 s for a whole request body).
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>
#include <unistd.h>

#include "core/auth.h"
#include "core/builtin.h"
#include "core/cases.h"
#include "core/disp.h"
#include "core/es.h"
#include "core/hook.h"
#include "core/http.h"
#include "core/migrate.h"
#include "core/new.h"
#include "core/proj.h"
#include "core/rebuild.h"
#include "core/react.h"
#include "core/reg.h"
#include "core/rm.h"
#include "core/rtime.h"
#include "core/util.h"

#define DEFAULT_DATABASE_URL "postgresql://cqrsd@127.0.0.1:55432/cqrsd"
#define DEFAULT_REDIS_URL "redis://127.0.0.1:56379/0"

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

static int env_int(const char *name, int def, int lo, int hi)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return def;
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || n < lo || n > hi) {
        fprintf(stderr, "cqrsd: %s must be an integer from %d to %d, got \"%s\"\n", name, lo, hi, v);
        exit(2);
    }
    return (int)n;
}

static int usage(FILE *f, int code)
{
    fputs("usage: cqrsd COMMAND [ARGS]\n"
          "\n"
          "  serve                  serve the HTTP API and run the projections\n"
          "  migrate                apply the database migrations built into this binary\n"
          "  load FILE.csv[.gz]     replay the Online Retail file through the HTTP API\n"
          "       [--url URL] [--concurrency N] [--limit N] [--columns MAP] [--quiet]\n"
          "  replay NAME...|--all   rebuild read models blue/green from the first event\n"
          "  projections            list projections, their builds and checkpoints\n"
          "  cases [--no-redis] [DIR]  run the given/when/then cases of the loaded modules\n"
          "                         (DIR: cases)\n"
          "  new NAME [DIR]         write a new module folder (a command, a projection, a\n"
          "                         query, their cases, a Makefile)\n"
          "  keys create --scope command,query,admin [--name NAME] | list | revoke ID\n"
          "                         API keys (CQRSD_AUTH=on)\n"
          "\n"
          "`cqrsd COMMAND --help` shows the usage of one.\n"
          "environment: DATABASE_URL (libpq; several hosts with\n"
          "  target_session_attrs=read-write), REDIS_URL (redis://host:port/db, or\n"
          "  redis-sentinel://host:port,host:port/db#master), CQRSD_MODULES (modules/ecommerce.so beside\n"
          "  this binary), CQRSD_HTTP_ADDR (127.0.0.1:8080), CQRSD_HTTP_REUSEPORT (0),\n"
          "  CQRSD_WORKERS (16), CQRSD_READ_WORKERS (4), CQRSD_LOG_LEVEL (info),\n"
          "  CQRSD_LOG_FORMAT (json), CQRSD_ACCESS_LOG (1), CQRSD_SHUTDOWN_TIMEOUT (30 s),\n"
          "  CQRSD_READ_WAIT_MS (5000), CQRSD_AUTH (on), CQRSD_TLS_CERT, CQRSD_TLS_KEY,\n"
          "  CQRSD_PROJECTION_LEASE_MS (5000),\n"
          "  CQRSD_TIMEZONE (Europe/London), CQRSD_MAX_BODY (1048576 bytes), CQRSD_QUEUE (1024),\n"
          "  CQRSD_STATE_CACHE (10000), CQRSD_REBUILD_MEMORY_MB (1024),\n "
          " CQRSD_HTTP_TIMEOUT (30 s), CQRSD_BODY_TIMEOUT (30 s),\n"
          "  CQRSD_WEBHOOK_TIMEOUT_MS (10000), CQRSD_WEBHOOK_ATTEMPTS (12),\n"
          "  CQRSD_WEBHOOK_BACKOFF_MS (2000),\n"
          "  CQRSD_FN_<NAME>_CONCURRENCY|_TIMEOUT_MS|_RETRIES|_BACKOFF_MS|_DELAY_S\n",
          f);
    return code;
}

/* Loads the modules of CQRSD_MODULES (default: reg_default_modules) and makes
 * them the current generation; on a refusal prints why and exits 2. */
static void load_modules_or_die(int verbose)
{
    const char *spec = env_or("CQRSD_MODULES", reg_default_modules());
    reg_set_spec(spec);
    struct reg *r = NULL;
    struct err e = {0};
    if (reg_open(spec, &r, &e)) {
        fprintf(stderr, "cqrsd: %s\n", e.msg);
        exit(2);
    }
    enum log_level lvl = verbose ? LOG_INFO : LOG_DEBUG;
    for (char *line = r->notes, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        log_msg(lvl, "modules: %.*s", (int)(nl - line), line);
    }
    for (size_t i = 0; i < r->nmods; i++)
        log_msg(lvl, "modules: loaded %s %s from %s", r->mods[i].desc->name,
                r->mods[i].desc->version ? r->mods[i].desc->version : "", r->mods[i].path);
    reg_set_current(r);
}

static PGconn *connect_pg_or_die(void)
{
    struct err e = {0};
    PGconn *pg = es_connect(env_or("DATABASE_URL", DEFAULT_DATABASE_URL), &e);
    if (!pg) {
        fprintf(stderr, "cqrsd: %s\n", e.msg);
        exit(1);
    }
    return pg;
}

static redisContext *connect_redis_or_die(void)
{
    struct err e = {0};
    redisContext *rc = rm_connect(env_or("REDIS_URL", DEFAULT_REDIS_URL), 10000, &e);
    if (!rc) {
        fprintf(stderr, "cqrsd: %s\n", e.msg);
        exit(1);
    }
    return rc;
}

static int cmd_migrate(void)
{
    PGconn *pg = connect_pg_or_die();
    struct err e = {0};
    int n = 0;
    int rc = migrate_run(pg, migrations_embedded, &n, &e);
    PQfinish(pg);
    if (rc) {
        fprintf(stderr, "cqrsd: %s\n", e.msg);
        return 1;
    }
    if (n)
        printf("applied %d migration%s\n", n, n == 1 ? "" : "s");
    else
        printf("database is up to date\n");
    return 0;
}

/* The whole of a file, NUL-terminated, or NULL with errno set. */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t len = 0, cap = 4096;
    char *buf = xmalloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (len + 1 == cap)
            buf = xrealloc(buf, cap *= 2);
    }
    int bad = ferror(f);
    fclose(f);
    if (bad || len > (1 << 20)) {
        free(buf);
        errno = bad ? EIO : EFBIG;
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

/* Refuses to serve a database with migrations not yet applied. */
static int check_schema(void)
{
    struct err e = {0};
    PGconn *pg = es_connect(env_or("DATABASE_URL", DEFAULT_DATABASE_URL), &e);
    if (!pg) {
        log_warn("%s; serving anyway, answering 503 until it is back", e.msg);
        return 0;
    }
    int pending = 0, unknown = 0;
    int rc = migrate_status(pg, migrations_embedded, &pending, &unknown, &e);
    PQfinish(pg);
    if (rc) {
        log_warn("%s; serving anyway", e.msg);
        return 0;
    }
    if (pending) {
        fprintf(stderr, "cqrsd: the database lacks %d migration%s of this binary: run `cqrsd migrate`\n",
                pending, pending == 1 ? "" : "s");
        return -1;
    }
    return 0;
}

/* The settings serve reads as text, checked before anything starts: exit 2
 * naming the variable (the numbers are env_int's). */
static void check_settings_or_die(void)
{
    struct err e = {0};
    struct rm_url u;
    if (rm_url_parse(env_or("REDIS_URL", DEFAULT_REDIS_URL), &u, &e)) {
        fprintf(stderr, "cqrsd: %s\n", e.msg);
        exit(2);
    }
    memset(u.password, 0, sizeof u.password);
    char *why = NULL;
    PQconninfoOption *o = PQconninfoParse(env_or("DATABASE_URL", DEFAULT_DATABASE_URL), &why);
    if (!o) {
        size_t l = why ? strlen(why) : 0;
        while (l && why[l - 1] == '\n')
            why[--l] = '\0';
        fprintf(stderr, "cqrsd: DATABASE_URL is not a PostgreSQL connection string or URI "
                        "(PostgreSQL docs §34.1.1): %s\n", why ? why : "out of memory");
        PQfreemem(why);
        exit(2);
    }
    PQconninfoFree(o);
}

/* The bound of a shutdown (CQRSD_SHUTDOWN_TIMEOUT): past it the process
 * exits 1, saying what was still open. */
static _Atomic int64_t shutdown_deadline_ms;

static void *shutdown_guard(void *arg)
{
    (void)arg;
    while (util_now_ms() < atomic_load(&shutdown_deadline_ms))
        usleep(50000);
    log_error("shutdown did not finish within CQRSD_SHUTDOWN_TIMEOUT: %d request%s still in "
              "flight; exiting with status 1",
              http_in_flight(NULL), http_in_flight(NULL) == 1 ? "" : "s");
    _exit(1);
}

static int cmd_serve(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* threads inherit: only sigwait sees them */
    signal(SIGPIPE, SIG_IGN);
    check_settings_or_die();
    load_modules_or_die(1);
    if (check_schema())
        return 1;
    struct err e = {0};
    struct disp_config dc = {
        .database_url = env_or("DATABASE_URL", DEFAULT_DATABASE_URL),
        .redis_url = env_or("REDIS_URL", DEFAULT_REDIS_URL),
        .workers = env_int("CQRSD_WORKERS", 16, 1, 256),
        .read_workers = env_int("CQRSD_READ_WORKERS", 4, 1, 256),
        .queue_size = env_int("CQRSD_QUEUE", 1024, 1, 1000000),
        .state_cache = (size_t)env_int("CQRSD_STATE_CACHE", 10000, 0, 10000000),
    };
    struct http_config hc = {
        .addr = env_or("CQRSD_HTTP_ADDR", "127.0.0.1:8080"),
        .max_body = (size_t)env_int("CQRSD_MAX_BODY", 1 << 20, 1024, 64 << 20),
        .timeout_s = (unsigned)env_int("CQRSD_HTTP_TIMEOUT", 30, 1, 3600),
        .body_timeout_s = (unsigned)env_int("CQRSD_BODY_TIMEOUT", 30, 1, 3600),
        .threads = 2,
        .reuse_port = env_int("CQRSD_HTTP_REUSEPORT", 0, 0, 1),
        .access_log = env_int("CQRSD_ACCESS_LOG", 1, 0, 1),
        .read_wait_ms = env_int("CQRSD_READ_WAIT_MS", 5000, 0, 60000),
    };
    int shutdown_s = env_int("CQRSD_SHUTDOWN_TIMEOUT", 30, 1, 3600);
    const char *auth = env_or("CQRSD_AUTH", "on");
    if (strcmp(auth, "on") && strcmp(auth, "off")) {
        fprintf(stderr, "cqrsd: CQRSD_AUTH must be on or off, got \"%.40s\"\n", auth);
        return 2;
    }
    hc.auth = builtin_auth_on = !strcmp(auth, "on");
    char *tls_cert = NULL, *tls_key = NULL;
    const char *cert_path = getenv("CQRSD_TLS_CERT"), *key_path = getenv("CQRSD_TLS_KEY");
    if (!!(cert_path && *cert_path) != !!(key_path && *key_path)) {
        fprintf(stderr, "cqrsd: CQRSD_TLS_CERT and CQRSD_TLS_KEY go together: set both or "
                        "neither\n");
        return 2;
    }
    if (cert_path && *cert_path) {
        if (!(tls_cert = read_file(cert_path)) || !(tls_key = read_file(key_path))) {
            fprintf(stderr, "cqrsd: cannot read %s (%s): %s\n",
                    tls_cert ? key_path : cert_path, tls_cert ? "CQRSD_TLS_KEY" : "CQRSD_TLS_CERT",
                    strerror(errno));
            free(tls_cert);
            return 2;
        }
        hc.tls_cert_pem = tls_cert;
        hc.tls_key_pem = tls_key;
    }
    struct proj_config pc = {dc.database_url, dc.redis_url, 1000, 1000,
                             env_int("CQRSD_PROJECTION_LEASE_MS", 5000, 1000, 600000)};
    struct hook_config kc = {
        .database_url = dc.database_url,
        .timeout_ms = env_int("CQRSD_WEBHOOK_TIMEOUT_MS", 10000, 100, 600000),
        .attempts = env_int("CQRSD_WEBHOOK_ATTEMPTS", 12, 1, 100),
        .backoff_ms = env_int("CQRSD_WEBHOOK_BACKOFF_MS", 2000, 10, 3600000),
    };
    if (hc.auth)
        auth_start(dc.database_url, &e);
    /* read before any thread starts: a bad value exits, and exit() beside a
     * thread inside libpq (the keys' reader) aborts in its libraries' cleanup */
    size_t rebuild_memory = (size_t)env_int("CQRSD_REBUILD_MEMORY_MB", 1024, 0, 1 << 20) << 20;
    int rc = disp_start(&dc, &e), dispatching = rc == 0;
    if (!rc)
        rc = http_start(&hc, &e);
    if (rc) {
        fprintf(stderr, "cqrsd: %s\n", e.msg);
        /* the threads already running stop first (see above) */
        if (dispatching)
            disp_stop();
        auth_stop();
        free(tls_cert);
        free(tls_key);
        return e.code == ERR_INVALID ? 2 : 1; /* 2: a setting to fix */
    }
    proj_start(&pc, &e);
    rebuild_configure(dc.database_url, dc.redis_url, rebuild_memory);
    struct react_config xc = {dc.database_url, 500, 500};
    react_start(&xc, &e);
    hook_start(&kc, &e);
    log_info("cqrsd serving on %s://%s (%d workers, API keys %s)", tls_cert ? "https" : "http",
             hc.addr, dc.workers,
             hc.auth ? "required: CQRSD_AUTH=on" : "not required: CQRSD_AUTH=off");
    int sig = 0;
    for (;;) {
        sigwait(&set, &sig);
        if (sig != SIGHUP)
            break;
        unsigned long gen = 0;
        log_info("got SIGHUP: reloading the modules");
        reg_reload(NULL, &gen, &e); /* a refusal is logged; the serving generation stays */
    }
    const char *signame = sig == SIGINT ? "SIGINT" : "SIGTERM";
    int64_t t0 = util_now_ms();
    shutdown_deadline_ms = t0 + (int64_t)shutdown_s * 1000;
    pthread_t guard;
    pthread_create(&guard, NULL, shutdown_guard, NULL);
    pthread_detach(guard);
    int refused = 0, open_at_signal = http_in_flight(NULL);
    log_info("got %s: draining (no new connections; new requests answered 503) with %d "
             "request%s in flight, for at most %d s (CQRSD_SHUTDOWN_TIMEOUT)",
             signame, open_at_signal, open_at_signal == 1 ? "" : "s", shutdown_s);
    http_drain();
    while (http_in_flight(&refused) > 0)
        usleep(10000);
    log_info("drained in %lld ms: the %d request%s in flight answered, %d new one%s answered 503",
             (long long)(util_now_ms() - t0), open_at_signal, open_at_signal == 1 ? "" : "s",
             refused, refused == 1 ? "" : "s");
    disp_stop();
    hook_stop();
    react_stop();
    rebuild_stop_all();
    proj_stop();
    http_stop();
    auth_stop();
    reg_set_current(NULL);
    reg_set_spec(NULL);
    if (tls_key)
        memset(tls_key, 0, strlen(tls_key));
    free(tls_cert);
    free(tls_key);
    log_info("stopped in %lld ms: the projections at the end of their batch in flight, the "
             "reactors, timers and webhook deliveries at their last step",
             (long long)(util_now_ms() - t0));
    return 0;
}

/* The progress of `cqrsd replay` on stderr: a bar redrawn in place on a
 * terminal, else a plain line every 5 s (a log file gets lines, not
 * carriage returns). */
struct replay_progress {
    int tty;
    int64_t last_line_ms;
    enum rebuild_phase phase;
    double phase_s; /* when the phase began, in the rebuild's seconds */
};

static void replay_progress(void *arg, enum rebuild_phase ph, long long done, long long total,
                            double secs)
{
    struct replay_progress *rp = arg;
    int changed = ph != rp->phase;
    int64_t now = util_now_ms();
    if (!rp->tty && !changed && now - rp->last_line_ms < 5000 && done != total)
        return;
    if (rp->tty && changed)
        fputc('\n', stderr);
    if (changed)
        rp->phase_s = secs;
    rp->phase = ph;
    rp->last_line_ms = now;
    double rate = secs > rp->phase_s ? (double)done / (secs - rp->phase_s) : 0;
    char line[160];
    if (ph == REBUILD_FOLD || ph == REBUILD_WRITE) {
        int width = 30, fill = total > 0 ? (int)(width * (double)done / (double)total) : 0;
        char bar[32];
        for (int i = 0; i < width; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[width] = '\0';
        double eta = rate > 0 && total > done ? (double)(total - done) / rate : 0;
        snprintf(line, sizeof line, "%-8s [%s] %lld/%lld %s, %.0f/s, ETA %.0f s (%.1f s)",
                 ph == REBUILD_FOLD ? "events" : "keys", bar, done, total,
                 ph == REBUILD_FOLD ? "events" : "keys", rate, eta, secs);
    } else {
        snprintf(line, sizeof line, "%s (%.1f s)", rebuild_phase_name(ph), secs);
    }
    fprintf(stderr, rp->tty ? "\r%-100s" : "%s\n", line);
    if (rp->tty && ph == REBUILD_DONE)
        fputc('\n', stderr);
    fflush(stderr);
}

static int cmd_replay(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr, 2);
    load_modules_or_die(0);
    struct reg *r = reg_current();
    int all = argc == 2 && !strcmp(argv[1], "--all");
    for (int i = 1; i < argc && !all; i++)
        if (!reg_projection_find(r, argv[i])) {
            fprintf(stderr, "cqrsd: no projection \"%s\" (see `cqrsd projections`)\n", argv[i]);
            reg_release(r);
            return 2;
        }
    unsigned char *chosen = xcalloc(r->nprojs + 1, 1);
    for (size_t i = 0; i < r->nprojs; i++) {
        chosen[i] = (unsigned char)all;
        for (int k = 1; k < argc && !chosen[i]; k++)
            chosen[i] = !strcmp(argv[k], r->projs[i].p->name);
    }
    redisContext *rc = connect_redis_or_die();
    PGconn *pg = connect_pg_or_die();
    struct replay_progress pr = {isatty(STDERR_FILENO), 0, REBUILD_FOLD, 0};
    struct rebuild_opts o = {chosen, replay_progress, &pr, NULL,
                             env_or("DATABASE_URL", DEFAULT_DATABASE_URL),
                             (size_t)env_int("CQRSD_REBUILD_MEMORY_MB", 1024, 0, 1 << 20) << 20};
    struct rebuild_stats st = {0};
    struct err e = {0};
    int code = rebuild_run(pg, rc, r, &o, &st, &e);
    if (code) {
        fprintf(stderr, "cqrsd: %s\n", e.msg);
    } else {
        for (size_t i = 0; i < r->nprojs; i++)
            if (chosen[i])
                printf("rebuilt %s v%d\n", r->projs[i].p->name, r->projs[i].p->version);
        printf("%lld events rebuilt in %.1f s (%.0f events/s): folded in %.1f s, %lld keys "
               "(%lld fields and members) written in %.1f s, caught up and switched in %.1f s; "
               "%lld events parked; %lld keys of the old builds deleted by %.1f s\n",
               st.events, st.switch_s, st.switch_s > 0 ? (double)st.events / st.switch_s : 0,
               st.fold_s, st.keys, st.entries, st.write_s, st.catch_s, st.parked, st.dropped,
               st.total_s);
        if (st.bounded)
            printf("the fold reached CQRSD_REBUILD_MEMORY_MB after %lld events: the batch path "
                   "did the rest\n", st.events);
    }
    free(chosen);
    PQfinish(pg);
    redisFree(rc);
    reg_release(r);
    reg_set_current(NULL);
    return code ? 1 : 0;
}

static int cmd_projections(void)
{
    load_modules_or_die(0);
    struct reg *r = reg_current();
    redisContext *rc = connect_redis_or_die();
    struct err e = {0};
    int code = 0;
    for (size_t i = 0; i < r->nprojs && !code; i++) {
        const struct fn_projection *p = r->projs[i].p;
        char cp[33];
        long build = 0;
        if (rm_checkpoint_get(rc, p->name, p->version, cp, &build, &e)) {
            fprintf(stderr, "cqrsd: %s\n", e.msg);
            code = 1;
            break;
        }
        printf("%-12s v%-3d build %-3ld checkpoint %s\n", p->name, p->version, build,
               *cp ? cp : "(none)");
    }
    redisFree(rc);
    reg_release(r);
    reg_set_current(NULL);
    return code;
}

/* `cqrsd cases [--no-redis] [DIR]`: core/cases.c on the modules of
 * CQRSD_MODULES, projection and query cases on the Redis of REDIS_URL. */
static int cmd_cases(int argc, char **argv)
{
    int skip_redis = 0;
    const char *root = "cases";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--no-redis"))
            skip_redis = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            puts("usage: cqrsd cases [--no-redis] [DIR]\n"
                 "  runs every case DIR/<function>/<case>/ (DIR: cases) against the modules of\n"
                 "  CQRSD_MODULES; projection and query cases use the Redis of REDIS_URL under\n"
                 "  keys of their own, removed after each (--no-redis: skip them).\n"
                 "  exit status: 0 all passed, 1 a case failed, 2 no case or bad arguments");
            return 0;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "cqrsd cases: unknown option \"%s\"\n", argv[i]);
            return 2;
        } else
            root = argv[i];
    }
    load_modules_or_die(0);
    struct reg *r = reg_current();
    struct err e = {0};
    redisContext *rc = skip_redis ? NULL : rm_connect(env_or("REDIS_URL", DEFAULT_REDIS_URL), 5000, &e);
    int failed = cases_run(r, root, rc, skip_redis, 1, stdout);
    if (rc)
        redisFree(rc);
    reg_release(r);
    reg_set_current(NULL);
    return failed < 0 ? 2 : failed ? 1 : 0;
}

/* `cqrsd load ...` runs the loader, a client of the HTTP API built as its own
 * binary (cqrsd-load, beside this one) so the server links no CSV or gzip
 * library. */
static int cmd_load(char **argv)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        fprintf(stderr, "cqrsd: cannot find my own path (/proc/self/exe): %s\n", strerror(errno));
        return 1;
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    char *path = xasprintf("%.*s/cqrsd-load", slash ? (int)(slash - exe) : 0, exe);
    argv[0] = path;
    execv(path, argv);
    fprintf(stderr, "cqrsd: cannot run the loader %s: %s\n", path, strerror(errno));
    free(path);
    return 1;
}

/* The usage of the subcommands that take no argument or only names
 * (cases, new and load answer --help themselves). */
static const struct {
    const char *name;
    int max_args; /* -1: any number of projection names */
    const char *text;
} SUBCOMMANDS[] = {
    {"serve", 0,
     "usage: cqrsd serve\n"
     "  serves the HTTP API on CQRSD_HTTP_ADDR, runs the commands, queries, projections,\n"
     "  reactors, timers and webhooks of CQRSD_MODULES; stops on SIGTERM or SIGINT,\n"
     "  reloads the modules on SIGHUP. Settings: the environment (cqrsd --help).\n"},
    {"migrate", 0,
     "usage: cqrsd migrate\n"
     "  applies the migrations built into this binary to DATABASE_URL, each in its own\n"
     "  transaction, under an advisory lock; exit status 0 when the database is current.\n"},
    {"projections", 0,
     "usage: cqrsd projections\n"
     "  lists each projection of CQRSD_MODULES: version, the build that serves, checkpoint.\n"},
    {"replay", -1,
     "usage: cqrsd replay NAME... | --all\n"
     "  rebuilds the named projections (or all) blue/green: folds every event into a new\n"
     "  build of their keyspace while the live one serves, catches up, switches queries,\n"
     "  then deletes the old build. Ctrl-C before the switch leaves the live build as it\n"
     "  was. Progress on stderr: a bar on a terminal, a line every 5 s otherwise.\n"
     "  CQRSD_REBUILD_MEMORY_MB (1024) bounds the in-memory model.\n"
     "  exit status: 0 rebuilt, 1 failed (another rebuild of one runs, say), 2 bad names\n"},
};

int main(int argc, char **argv)
{
    char why[300];
    if (log_configure(why, sizeof why)) {
        fprintf(stderr, "cqrsd: %s\n", why);
        return 2;
    }
    const char *tz = getenv("CQRSD_TIMEZONE");
    if (rtime_zone_check(tz && *tz ? tz : "Europe/London", why, sizeof why)) {
        fprintf(stderr, "cqrsd: %s\n", why);
        return 2;
    }
    rtime_init();
    if (argc < 2)
        return usage(stderr, 2);
    const char *c = argv[1];
    for (size_t i = 0; i < sizeof SUBCOMMANDS / sizeof *SUBCOMMANDS; i++) {
        if (strcmp(c, SUBCOMMANDS[i].name))
            continue;
        for (int k = 2; k < argc; k++)
            if (!strcmp(argv[k], "--help") || !strcmp(argv[k], "-h")) {
                fputs(SUBCOMMANDS[i].text, stdout);
                return 0;
            }
        if (SUBCOMMANDS[i].max_args >= 0 && argc - 2 > SUBCOMMANDS[i].max_args) {
            fprintf(stderr, "cqrsd %s: takes no arguments, got \"%s\"\n%s", c, argv[2],
                    SUBCOMMANDS[i].text);
            return 2;
        }
    }
    if (!strcmp(c, "serve"))
        return cmd_serve();
    if (!strcmp(c, "migrate"))
        return cmd_migrate();
    if (!strcmp(c, "load"))
        return cmd_load(argv + 1);
    if (!strcmp(c, "replay"))
        return cmd_replay(argc - 1, argv + 1);
    if (!strcmp(c, "projections"))
        return cmd_projections();
    if (!strcmp(c, "cases"))
        return cmd_cases(argc - 1, argv + 1);
    if (!strcmp(c, "new"))
        return new_main(argc - 1, argv + 1);
    if (!strcmp(c, "keys")) {
        for (int k = 2; k < argc; k++)
            if (!strcmp(argv[k], "--help") || !strcmp(argv[k], "-h"))
                return auth_keys_main(NULL, argc - 1, argv + 1);
        PGconn *pg = connect_pg_or_die();
        int st = auth_keys_main(pg, argc - 1, argv + 1);
        PQfinish(pg);
        return st;
    }
    if (!strcmp(c, "help") || !strcmp(c, "--help") || !strcmp(c, "-h"))
        return usage(stdout, 0);
    fprintf(stderr, "cqrsd: unknown command \"%s\"\n", c);
    return usage(stderr, 2);
}
