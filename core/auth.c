/* core/auth.c — API keys (see auth.h). SHA-256 is OpenSSL's libcrypto
 * (already linked for the webhooks' signatures), FIPS 180-4. */
#include "core/auth.h"

#include <openssl/sha.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/es.h"
#include "core/reg.h"
#include "core/util.h"

#define KEY_PREFIX "cqrsd_"
#define KEY_HEX 64

struct key {
    unsigned char hash[32];
    long long id;
    int scopes;
};

/* The keys not revoked, sorted by hash; replaced whole by the reader. */
struct keyset {
    struct key *k;
    size_t n;
};

static struct {
    pthread_mutex_t mu;
    struct keyset *cur; /* NULL until a first read */
    char *database_url;
    pthread_t thread;
    atomic_int stop, started;
} A = {.mu = PTHREAD_MUTEX_INITIALIZER};

static const char *scope_names[] = {"command", "query", "admin"};

int auth_route_scope(const struct reg_route *r)
{
    if (r->kind == REG_COMMAND)
        return AUTH_COMMAND;
    if (r->kind == REG_QUERY)
        return AUTH_QUERY;
    switch (r->builtin) {
    case REG_HEALTH:
    case REG_READY:
    case REG_ADMIN_PAGE:
    case REG_PROBLEM:
    case REG_OPENAPI: return 0;
    default: return AUTH_ADMIN;
    }
}

int auth_scopes_parse(const char *list, int *scopes, struct err *e)
{
    *scopes = 0;
    const char *p = list ? list : "";
    while (*p) {
        size_t n = strcspn(p, ",");
        int found = 0;
        for (int i = 0; i < 3 && !found; i++)
            if (strlen(scope_names[i]) == n && !strncmp(p, scope_names[i], n)) {
                *scopes |= 1 << i;
                found = 1;
            }
        if (!found)
            return err_set(e, ERR_INVALID,
                           "scope \"%.*s\" is not one of command, query, admin", (int)(n > 40 ? 40 : n),
                           p);
        p += n + (p[n] == ',');
    }
    if (!*scopes)
        return err_set(e, ERR_INVALID, "--scope needs one or more of command, query, admin");
    return 0;
}

static int cmp_key(const void *a, const void *b)
{
    return memcmp(((const struct key *)a)->hash, ((const struct key *)b)->hash, 32);
}

/* Reads the keys not revoked into a new set; NULL when PostgreSQL fails. */
static struct keyset *read_keys(PGconn *pg)
{
    PGresult *r = PQexec(pg, "SELECT id, encode(hash, 'hex'), "
                             "('command' = ANY (scopes))::int + 2 * ('query' = ANY (scopes))::int"
                             " + 4 * ('admin' = ANY (scopes))::int "
                             "FROM api_keys WHERE revoked_at IS NULL");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        return NULL;
    }
    struct keyset *s = xcalloc(1, sizeof *s);
    s->n = (size_t)PQntuples(r);
    s->k = xcalloc(s->n + 1, sizeof *s->k);
    for (size_t i = 0; i < s->n; i++) {
        s->k[i].id = strtoll(PQgetvalue(r, (int)i, 0), NULL, 10);
        const char *hex = PQgetvalue(r, (int)i, 1);
        for (int b = 0; b < 32; b++) {
            unsigned v = 0;
            sscanf(hex + 2 * b, "%2x", &v);
            s->k[i].hash[b] = (unsigned char)v;
        }
        s->k[i].scopes = atoi(PQgetvalue(r, (int)i, 2));
    }
    PQclear(r);
    qsort(s->k, s->n, sizeof *s->k, cmp_key);
    return s;
}

static void keyset_free(struct keyset *s)
{
    if (s) {
        free(s->k);
        free(s);
    }
}

static void *reader(void *arg)
{
    (void)arg;
    PGconn *pg = NULL;
    int warned = 0;
    while (!atomic_load(&A.stop)) {
        struct err e = {0};
        if (pg && PQstatus(pg) != CONNECTION_OK) {
            PQfinish(pg);
            pg = NULL;
        }
        if (!pg)
            pg = es_connect(A.database_url, &e);
        struct keyset *s = pg ? read_keys(pg) : NULL;
        if (s) {
            pthread_mutex_lock(&A.mu);
            struct keyset *old = A.cur;
            A.cur = s;
            pthread_mutex_unlock(&A.mu);
            /* a check holds the lock while it reads the set: none reads old now */
            keyset_free(old);
            if (warned)
                log_info("API keys: read again");
            warned = 0;
        } else if (!warned++) {
            log_warn("API keys: cannot read them (%s); the last ones read stay in force",
                     pg ? PQerrorMessage(pg) : e.msg);
        }
        for (int i = 0; i < AUTH_REFRESH_MS / 50 && !atomic_load(&A.stop); i++)
            poll(NULL, 0, 50);
    }
    if (pg)
        PQfinish(pg);
    return NULL;
}

int auth_start(const char *database_url, struct err *e)
{
    (void)e;
    A.database_url = xstrdup(database_url);
    atomic_store(&A.stop, 0);
    pthread_create(&A.thread, NULL, reader, NULL);
    atomic_store(&A.started, 1);
    return 0;
}

void auth_stop(void)
{
    if (!atomic_load(&A.started))
        return;
    atomic_store(&A.stop, 1);
    pthread_join(A.thread, NULL);
    pthread_mutex_lock(&A.mu);
    keyset_free(A.cur);
    A.cur = NULL;
    pthread_mutex_unlock(&A.mu);
    free(A.database_url);
    A.database_url = NULL;
    atomic_store(&A.started, 0);
}

static void sha256(const char *s, size_t n, unsigned char out[32])
{
    SHA256((const unsigned char *)s, n, out);
}

int auth_check(const char *authorization, int scope, long long *key_id, struct err *e)
{
    if (key_id)
        *key_id = 0;
    if (!authorization || !*authorization)
        return err_set(e, ERR_UNAUTHORIZED,
                       "this route needs an API key: send Authorization: Bearer <key> (cqrsd "
                       "keys create makes one)");
    if (strncasecmp(authorization, "Bearer ", 7))
        return err_set(e, ERR_UNAUTHORIZED,
                       "the Authorization header must be \"Bearer <key>\" (RFC 6750)");
    const char *key = authorization + 7;
    while (*key == ' ')
        key++;
    size_t n = strlen(key);
    while (n && key[n - 1] == ' ')
        n--;
    struct key probe = {0};
    sha256(key, n, probe.hash);
    pthread_mutex_lock(&A.mu);
    if (!A.cur) {
        pthread_mutex_unlock(&A.mu);
        return err_set(e, ERR_UNAVAILABLE, "the API keys cannot be read yet (PostgreSQL)");
    }
    const struct key *k = bsearch(&probe, A.cur->k, A.cur->n, sizeof *A.cur->k, cmp_key);
    struct key found = k ? *k : probe;
    pthread_mutex_unlock(&A.mu);
    if (!k)
        return err_set(e, ERR_UNAUTHORIZED, "the API key is not valid (unknown or revoked)");
    if (key_id)
        *key_id = found.id;
    if (!(found.scopes & scope)) {
        int bit = scope == AUTH_COMMAND ? 0 : scope == AUTH_QUERY ? 1 : 2;
        return err_set(e, ERR_FORBIDDEN, "API key %lld has no %s scope", found.id,
                       scope_names[bit]);
    }
    return 0;
}

/* ---------- cqrsd keys ---------- */

static int keys_usage(FILE *f, int code)
{
    fputs("usage: cqrsd keys create --scope command,query,admin [--name NAME]\n"
          "       cqrsd keys list\n"
          "       cqrsd keys revoke ID\n"
          "  create prints a new API key once (only its SHA-256 is stored); clients send it\n"
          "  as Authorization: Bearer <key>. Scopes: command (commands), query (queries),\n"
          "  admin (/admin, /metrics, /streams and the other built-in routes). revoke takes\n"
          "  effect within a second on every instance.\n",
          f);
    return code;
}

static int keys_create(PGconn *pg, int argc, char **argv)
{
    const char *scope = NULL, *name = "";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--scope") && i + 1 < argc)
            scope = argv[++i];
        else if (!strcmp(argv[i], "--name") && i + 1 < argc)
            name = argv[++i];
        else {
            fprintf(stderr, "cqrsd keys create: unexpected \"%s\"\n", argv[i]);
            return keys_usage(stderr, 2);
        }
    }
    struct err e = {0};
    int scopes;
    if (!scope) {
        fprintf(stderr, "cqrsd keys create: --scope is required\n");
        return keys_usage(stderr, 2);
    }
    if (auth_scopes_parse(scope, &scopes, &e)) {
        fprintf(stderr, "cqrsd keys create: %s\n", e.msg);
        return 2;
    }
    if (!util_text_ok(name, 200, 1) && *name) {
        fprintf(stderr, "cqrsd keys create: --name must be 1 to 200 bytes of text\n");
        return 2;
    }
    unsigned char raw[32];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
        fprintf(stderr, "cqrsd keys create: getrandom failed\n");
        return 1;
    }
    char key[sizeof KEY_PREFIX + KEY_HEX];
    int w = snprintf(key, sizeof key, "%s", KEY_PREFIX);
    for (int i = 0; i < 32; i++)
        w += snprintf(key + w, sizeof key - (size_t)w, "%02x", raw[i]);
    unsigned char h[32];
    sha256(key, strlen(key), h);
    char hhex[65], prefix[9], arr[64] = "{";
    for (int i = 0; i < 32; i++)
        snprintf(hhex + 2 * i, 3, "%02x", h[i]);
    snprintf(prefix, sizeof prefix, "%.8s", key + strlen(KEY_PREFIX));
    for (int i = 0; i < 3; i++)
        if (scopes & (1 << i))
            snprintf(arr + strlen(arr), sizeof arr - strlen(arr), "%s%s", arr[1] ? "," : "",
                     scope_names[i]);
    strcat(arr, "}");
    const char *p[] = {name, prefix, hhex, arr};
    PGresult *r = es_exec(pg, "INSERT INTO api_keys (name, prefix, hash, scopes) VALUES "
                              "($1, $2, decode($3, 'hex'), $4::text[]) RETURNING id",
                          4, p);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "cqrsd keys create: %s", PQresultErrorMessage(r));
        PQclear(r);
        return 1;
    }
    printf("%s\n", key);
    fprintf(stderr, "API key %s created with scopes %.*s: it is shown only now; keep it in a "
                    "secret store\n",
            PQgetvalue(r, 0, 0), (int)strlen(arr) - 2, arr + 1);
    PQclear(r);
    memset(key, 0, sizeof key);
    return 0;
}

static int keys_list(PGconn *pg)
{
    PGresult *r = PQexec(pg, "SELECT id, prefix, array_to_string(scopes, ','), name, "
                             "to_char(created_at AT TIME ZONE 'UTC', "
                             "'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"'), coalesce(to_char(revoked_at "
                             "AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"'), '-') "
                             "FROM api_keys ORDER BY id");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "cqrsd keys list: %s", PQresultErrorMessage(r));
        PQclear(r);
        return 1;
    }
    printf("%-6s %-14s %-20s %-25s %-25s %s\n", "id", "key", "scopes", "created", "revoked",
           "name");
    for (int i = 0; i < PQntuples(r); i++)
        printf("%-6s cqrsd_%s… %-20s %-25s %-25s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
               PQgetvalue(r, i, 2), PQgetvalue(r, i, 4), PQgetvalue(r, i, 5),
               PQgetvalue(r, i, 3));
    PQclear(r);
    return 0;
}

static int keys_revoke(PGconn *pg, const char *id)
{
    char *end;
    long long v = strtoll(id, &end, 10);
    if (!*id || *end || v < 1) {
        fprintf(stderr, "cqrsd keys revoke: \"%s\" is not a key id (see cqrsd keys list)\n", id);
        return 2;
    }
    const char *p[] = {id};
    PGresult *r = es_exec(pg, "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) "
                              "WHERE id = $1::bigint RETURNING id",
                          1, p);
    int st = PQresultStatus(r) == PGRES_TUPLES_OK ? (PQntuples(r) == 1 ? 0 : 1) : 1;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fprintf(stderr, "cqrsd keys revoke: %s", PQresultErrorMessage(r));
    else if (st)
        fprintf(stderr, "cqrsd keys revoke: no API key %s\n", id);
    else
        printf("API key %s revoked\n", id);
    PQclear(r);
    return st;
}

int auth_keys_main(PGconn *pg, int argc, char **argv)
{
    if (argc < 2)
        return keys_usage(stderr, 2);
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return keys_usage(stdout, 0);
    if (!strcmp(argv[1], "create"))
        return keys_create(pg, argc - 1, argv + 1);
    if (!strcmp(argv[1], "list") && argc == 2)
        return keys_list(pg);
    if (!strcmp(argv[1], "revoke") && argc == 3)
        return keys_revoke(pg, argv[2]);
    return keys_usage(stderr, 2);
}
