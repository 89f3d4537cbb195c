/* core/reg.c — the function registry (see reg.h): loading modules, checking
 * them against each other, the route table, and the process-wide function
 * records.
 *
 * A generation is built in three steps, any of which may refuse it with
 * nothing left loaded: load (copy each module into this process's private
 * folder, dlopen the copy, look up its descriptor, check its ABI version),
 * collect (every descriptor checked on its own: names, routes, handlers),
 * and cross-check (module names, function names and their environment names,
 * routes against routes). Limits are resolved last, so a CQRSD_FN_* variable
 * naming no function refuses the generation too.
 */
#include "core/reg.h"

#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/rm.h"
#include "core/sc.h"

extern char **environ;

/* ---------- function records ---------- */

static struct {
    pthread_mutex_t mu;
    struct reg_fn **v;
    size_t n, cap;
} F = {.mu = PTHREAD_MUTEX_INITIALIZER};

static struct reg_fn *fn_record(const char *name, enum reg_kind kind)
{
    pthread_mutex_lock(&F.mu);
    for (size_t i = 0; i < F.n; i++)
        if (F.v[i]->kind == kind && !strcmp(F.v[i]->name, name)) {
            pthread_mutex_unlock(&F.mu);
            return F.v[i];
        }
    if (F.n == F.cap) {
        F.cap = F.cap ? F.cap * 2 : 32;
        F.v = xrealloc(F.v, F.cap * sizeof *F.v);
    }
    struct reg_fn *f = xcalloc(1, sizeof *f);
    f->name = xstrdup(name);
    f->kind = kind;
    F.v[F.n++] = f;
    pthread_mutex_unlock(&F.mu);
    return f;
}

void reg_fn_count(struct reg_fn *fn, int64_t t0_us, int failed)
{
    long long us = util_now_us() - t0_us;
    atomic_fetch_add(&fn->invocations, 1);
    atomic_fetch_add(&fn->duration_us, us);
    metrics_observe(&fn->duration, us);
    long long max = atomic_load(&fn->duration_max_us);
    while (us > max && !atomic_compare_exchange_weak(&fn->duration_max_us, &max, us))
        ;
    if (failed)
        atomic_fetch_add(&fn->errors, 1);
}

struct reg_fn *const *reg_functions(size_t *n)
{
    pthread_mutex_lock(&F.mu);
    *n = F.n;
    struct reg_fn *const *v = F.v;
    pthread_mutex_unlock(&F.mu);
    return v;
}

/* ---------- the current generation ---------- */

static struct {
    pthread_mutex_t mu;
    struct reg *current;
    unsigned long generations;
    pthread_mutex_t reload_mu; /* one reload at a time */
    char *spec;
} G = {.mu = PTHREAD_MUTEX_INITIALIZER, .reload_mu = PTHREAD_MUTEX_INITIALIZER};

void reg_acquire(struct reg *r)
{
    atomic_fetch_add(&r->refs, 1);
}

static void unload(struct reg *r)
{
    /* cached states of these commands point at their release functions */
    for (size_t i = 0; i < r->ncmds; i++)
        sc_drop_family((const void *)r->cmds[i].c->evolve);
    for (size_t i = 0; i < r->nmods; i++) {
        if (r->mods[i].handle)
            dlclose(r->mods[i].handle);
        if (r->mods[i].copy)
            unlink(r->mods[i].copy);
        free(r->mods[i].path);
        free(r->mods[i].copy);
    }
    free(r->mods);
    free(r->cmds);
    free(r->queries);
    for (size_t i = 0; i < r->nprojs; i++)
        rm_live_free(r->projs[i].live);
    free(r->projs);
    free(r->reactors);
    free(r->timers);
    free(r->routes);
    free(r->rebuilds);
    reg_release(r->query_source);
    arena_free(&r->arena);
    free(r);
}

void reg_release(struct reg *r)
{
    if (r && atomic_fetch_sub(&r->refs, 1) == 1) {
        if (r->generation)
            log_debug("modules: generation %lu unloaded", r->generation);
        unload(r);
    }
}

struct reg *reg_current(void)
{
    pthread_mutex_lock(&G.mu);
    struct reg *r = G.current;
    if (r)
        reg_acquire(r);
    pthread_mutex_unlock(&G.mu);
    return r;
}

void reg_set_current(struct reg *r)
{
    pthread_mutex_lock(&G.mu);
    struct reg *old = G.current;
    G.current = r;
    if (r && !r->generation)
        r->generation = ++G.generations;
    pthread_mutex_unlock(&G.mu);
    reg_release(old);
}

struct reg *reg_query_source(struct reg *r)
{
    pthread_mutex_lock(&G.mu);
    struct reg *src = r->query_source;
    if (src)
        reg_acquire(src);
    pthread_mutex_unlock(&G.mu);
    return src;
}

void reg_queries_switch(struct reg *r)
{
    pthread_mutex_lock(&G.mu);
    struct reg *src = r->query_source;
    r->query_source = NULL;
    pthread_mutex_unlock(&G.mu);
    if (src)
        log_info("modules: generation %lu rebuilt its projections; its queries answer now",
                 r->generation);
    reg_release(src);
}

void reg_set_spec(const char *spec)
{
    pthread_mutex_lock(&G.reload_mu);
    free(G.spec);
    G.spec = spec ? xstrdup(spec) : NULL;
    pthread_mutex_unlock(&G.reload_mu);
}

int reg_reload(const char *spec, unsigned long *generation, struct err *e)
{
    pthread_mutex_lock(&G.reload_mu);
    struct reg *n = NULL;
    int rc = reg_open(spec ? spec : G.spec ? G.spec : reg_default_modules(), &n, e);
    if (rc) {
        pthread_mutex_unlock(&G.reload_mu);
        log_error("modules: reload refused, the serving generation stays: %s", e->msg);
        return rc;
    }
    struct reg *cur = reg_current();
    /* the generation whose read models serve: the current one, or the one
     * still serving its queries while it rebuilds */
    struct reg *serving = cur ? reg_query_source(cur) : NULL;
    if (!serving && cur) {
        reg_acquire(cur);
        serving = cur;
    }
    n->rebuilds = xcalloc(n->nprojs + 1, 1);
    for (size_t i = 0; i < n->nprojs && serving; i++) {
        const struct fn_projection *p = n->projs[i].p;
        const struct reg_projection *old = reg_projection_find(serving, p->name);
        if (old && old->p->version != p->version) {
            n->rebuilds[i] = 1;
            n->nrebuilds++;
        }
    }
    if (n->nrebuilds)
        n->query_source = serving; /* its reference */
    else
        reg_release(serving);
    reg_release(cur);
    for (char *line = n->notes, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        log_info("modules: %.*s", (int)(nl - line), line);
    }
    reg_set_current(n); /* the current reference is the registry's now */
    *generation = n->generation;
    char names[512] = "";
    size_t len = 0;
    for (size_t i = 0; i < n->nmods && len + 1 < sizeof names; i++)
        len += (size_t)snprintf(names + len, sizeof names - len, "%s%s %s", i ? ", " : "",
                                n->mods[i].desc->name,
                                n->mods[i].desc->version ? n->mods[i].desc->version : "");
    log_info("modules: generation %lu serving: %s%s", n->generation, names,
             n->nrebuilds ? "; its new projection versions rebuild before its queries answer"
                          : "");
    pthread_mutex_unlock(&G.reload_mu);
    return 0;
}

/* ---------- lookups ---------- */

const struct reg_command *reg_command_find(const struct reg *r, const char *name)
{
    for (size_t i = 0; i < r->ncmds; i++)
        if (!strcmp(r->cmds[i].c->name, name))
            return &r->cmds[i];
    return NULL;
}

const struct reg_query *reg_query_find(const struct reg *r, const char *name)
{
    for (size_t i = 0; i < r->nqueries; i++)
        if (!strcmp(r->queries[i].q->name, name))
            return &r->queries[i];
    return NULL;
}

const struct reg_projection *reg_projection_find(const struct reg *r, const char *name)
{
    for (size_t i = 0; i < r->nprojs; i++)
        if (!strcmp(r->projs[i].p->name, name))
            return &r->projs[i];
    return NULL;
}

const struct reg_reactor *reg_reactor_find(const struct reg *r, const char *name)
{
    for (size_t i = 0; i < r->nreactors; i++)
        if (!strcmp(r->reactors[i].x->name, name))
            return &r->reactors[i];
    return NULL;
}

const struct reg_timer *reg_timer_find(const struct reg *r, const char *name)
{
    for (size_t i = 0; i < r->ntimers; i++)
        if (!strcmp(r->timers[i].t->name, name))
            return &r->timers[i];
    return NULL;
}

int (*reg_react_handler(const struct fn_on_react *on,
                        const char *type))(struct fn_react *, const struct fn_event *,
                                           struct err *)
{
    for (const struct fn_on_react *h = on; h->type; h++)
        if (!strcmp(h->type, type))
            return h->react;
    return NULL;
}

const char *reg_kind_name(enum reg_kind k)
{
    switch (k) {
    case REG_COMMAND: return "command";
    case REG_QUERY: return "query";
    case REG_PROJECTION: return "projection";
    case REG_REACTOR: return "reactor";
    case REG_TIMER: return "timer";
    case REG_BUILTIN: return "built-in";
    }
    return "?";
}

int (*reg_projection_handler(const struct fn_projection *p,
                             const char *type))(struct fn_batch *, const struct fn_event *,
                                                struct err *)
{
    for (const struct fn_on_event *h = p->on; h->type; h++)
        if (!strcmp(h->type, type))
            return h->apply;
    return NULL;
}

/* ---------- loading ---------- */

/* Empties folder path and removes it. */
static void remove_dir(const char *path)
{
    DIR *sd = opendir(path);
    struct dirent *f;
    while (sd && (f = readdir(sd))) {
        char fp[1400];
        snprintf(fp, sizeof fp, "%s/%s", path, f->d_name);
        if (f->d_name[0] != '.')
            unlink(fp);
    }
    if (sd)
        closedir(sd);
    rmdir(path);
}

static char private_path[512];
static pid_t private_pid;

/* At exit: the copies go with the process (the mapped ones stay mapped). */
static void remove_private_dir(void)
{
    if (private_path[0] && getpid() == private_pid) /* not in a forked child */
        remove_dir(private_path);
}

/* This process's folder of module copies, made on first use; stale folders
 * of processes that are gone (killed: an exit removes its own) are removed
 * then. */
static const char *private_dir(struct err *e)
{
    char *dir = private_path;
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
    if (!dir[0]) {
        const char *tmp = getenv("TMPDIR");
        if (!tmp || !*tmp)
            tmp = "/tmp";
        DIR *d = opendir(tmp);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            long pid;
            char suffix[16];
            if (sscanf(de->d_name, "cqrsd-modules.%ld.%15s", &pid, suffix) == 2 && pid > 0 &&
                kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
                char path[1024];
                snprintf(path, sizeof path, "%s/%s", tmp, de->d_name);
                remove_dir(path);
            }
        }
        if (d)
            closedir(d);
        snprintf(dir, sizeof private_path, "%s/cqrsd-modules.%ld.XXXXXX", tmp, (long)getpid());
        if (!mkdtemp(dir)) {
            err_set(e, ERR_INVALID, "could not make a folder for module copies in %s: %s", tmp,
                    strerror(errno));
            dir[0] = '\0';
        } else {
            private_pid = getpid();
            atexit(remove_private_dir);
        }
    }
    pthread_mutex_unlock(&mu);
    return dir[0] ? dir : NULL;
}

/* Copies src to a new file in the private folder; returns its path (caller
 * frees) or NULL with e set. */
static char *copy_module(const char *src, struct err *e)
{
    static atomic_ulong seq;
    const char *dir = private_dir(e);
    if (!dir)
        return NULL;
    const char *base = strrchr(src, '/');
    base = base ? base + 1 : src;
    char *dst = xasprintf("%s/%lu.%s", dir, atomic_fetch_add(&seq, 1) + 1, base);
    int in = open(src, O_RDONLY | O_CLOEXEC), out = -1;
    struct stat st;
    if (in < 0 || fstat(in, &st) || !S_ISREG(st.st_mode)) {
        err_set(e, ERR_INVALID, "could not read module \"%s\": %s", src,
                in < 0 ? strerror(errno) : "not a regular file");
        goto fail;
    }
    out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0700);
    if (out < 0) {
        err_set(e, ERR_INVALID, "could not copy module \"%s\" to %s: %s", src, dst,
                strerror(errno));
        goto fail;
    }
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        for (ssize_t w = 0; w < n;) {
            ssize_t k = write(out, buf + w, (size_t)(n - w));
            if (k < 0) {
                err_set(e, ERR_INVALID, "could not copy module \"%s\": %s", src, strerror(errno));
                goto fail;
            }
            w += k;
        }
    if (n < 0) {
        err_set(e, ERR_INVALID, "could not read module \"%s\": %s", src, strerror(errno));
        goto fail;
    }
    close(in);
    close(out);
    return dst;
fail:
    if (in >= 0)
        close(in);
    if (out >= 0) {
        close(out);
        unlink(dst);
    }
    free(dst);
    return NULL;
}

static int load_one(const char *path, struct reg_module *m, struct err *e)
{
    memset(m, 0, sizeof *m);
    m->path = xstrdup(path);
    if (!(m->copy = copy_module(path, e)))
        return ERR_INVALID;
    dlerror();
    m->handle = dlopen(m->copy, RTLD_NOW | RTLD_LOCAL);
    if (!m->handle) {
        /* dlerror names the private copy: name the module's own path */
        const char *why = dlerror();
        const char *at = why ? strstr(why, m->copy) : NULL;
        if (at)
            return err_set(e, ERR_INVALID, "could not load module \"%s\": %.*s%s%s", path,
                           (int)(at - why), why, path, at + strlen(m->copy));
        return err_set(e, ERR_INVALID, "could not load module \"%s\": %s", path,
                       why ? why : "unknown error");
    }
    m->desc = dlsym(m->handle, FN_MODULE_SYMBOL);
    if (!m->desc)
        return err_set(e, ERR_INVALID,
                       "\"%s\" is not a cqrsd module: it exports no symbol " FN_MODULE_SYMBOL
                       " (define it with FN_MODULE, see <cqrsd/fn.h>)",
                       path);
    return 0;
}

static void unload_modules(struct reg_module *mods, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (mods[i].handle)
            dlclose(mods[i].handle);
        if (mods[i].copy)
            unlink(mods[i].copy);
    }
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && !strcmp(s + n - k, suffix);
}

static int so_filter(const struct dirent *de)
{
    return de->d_name[0] != '.' && has_suffix(de->d_name, ".so");
}

/* Appends the paths spec names to *paths (owned strings). */
static int expand_spec(const char *spec, char ***paths, size_t *n, struct err *e)
{
    char *copy = xstrdup(spec), *save = NULL;
    int rc = 0;
    for (char *tok = strtok_r(copy, ":,", &save); tok && !rc; tok = strtok_r(NULL, ":,", &save)) {
        while (*tok == ' ')
            tok++;
        if (!*tok)
            continue;
        struct stat st;
        if (stat(tok, &st)) {
            rc = err_set(e, ERR_INVALID, "CQRSD_MODULES names \"%s\": %s", tok, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            struct dirent **de = NULL;
            int k = scandir(tok, &de, so_filter, alphasort);
            for (int i = 0; i < k; i++) {
                *paths = xrealloc(*paths, (*n + 1) * sizeof **paths);
                (*paths)[(*n)++] = xasprintf("%s/%s", tok, de[i]->d_name);
                free(de[i]);
            }
            free(de);
            if (k <= 0 && !rc)
                rc = err_set(e, ERR_INVALID, "CQRSD_MODULES names the folder \"%s\", which holds "
                                             "no module (*.so)", tok);
        } else {
            *paths = xrealloc(*paths, (*n + 1) * sizeof **paths);
            (*paths)[(*n)++] = xstrdup(tok);
        }
    }
    free(copy);
    if (!rc && *n == 0)
        rc = err_set(e, ERR_INVALID, "CQRSD_MODULES names no module");
    return rc;
}

static char default_modules[8192];

/* reg_default_modules's search, once: beside the binary in the build tree,
 * then where `make install` puts the modules. */
static void find_default_modules(void)
{
    char exe[4000];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        snprintf(default_modules, sizeof default_modules, "modules/ecommerce.so");
        return;
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    snprintf(default_modules, sizeof default_modules, "%s/modules/ecommerce.so", exe);
    if (access(default_modules, R_OK) == 0)
        return;
    char installed[sizeof exe + 64];
    snprintf(installed, sizeof installed, "%s/../lib/cqrsd/modules/ecommerce.so", exe);
    if (access(installed, R_OK) == 0)
        snprintf(default_modules, sizeof default_modules, "%s", installed);
}

const char *reg_default_modules(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, find_default_modules);
    return default_modules;
}

/* ---------- building a generation ---------- */

struct build {
    struct reg *r;
    struct err *e;
};

static int name_ok(const char *s, const char *extra)
{
    if (!s || !*s || strlen(s) > 100)
        return 0;
    for (const char *c = s; *c; c++)
        if (!islower((unsigned char)*c) && !isdigit((unsigned char)*c) && !strchr(extra, *c))
            return 0;
    return 1;
}

/* "CART_ADD_ITEM" for "cart.add_item", into buf. */
static void env_name(const char *name, char buf[128])
{
    size_t i = 0;
    for (; name[i] && i < 127; i++)
        buf[i] = isalnum((unsigned char)name[i]) ? (char)toupper((unsigned char)name[i]) : '_';
    buf[i] = '\0';
}

static const char *owner(struct build *b, const char *kind, const char *name,
                         const struct reg_module *m)
{
    char *s = xasprintf("%s %s (module %s)", kind, name, m->desc->name);
    char *o = arena_strndup(&b->r->arena, s, strlen(s));
    free(s);
    return o;
}

/* Checks a route pattern: "/seg/{param}/...", at most 8 parameters, no
 * parameter twice. */
static int route_ok(const char *pattern, char why[128])
{
    if (!pattern || pattern[0] != '/') {
        snprintf(why, 128, "does not start with '/'");
        return 0;
    }
    const char *names[8];
    size_t lens[8], np = 0;
    for (const char *p = pattern; *p;) {
        p++; /* '/' */
        size_t l = strcspn(p, "/");
        if (l == 0 && strcmp(pattern, "/")) {
            snprintf(why, 128, "has an empty segment");
            return 0;
        }
        if (p[0] == '{') {
            if (l < 3 || p[l - 1] != '}') {
                snprintf(why, 128, "has a malformed parameter segment");
                return 0;
            }
            for (size_t i = 1; i + 1 < l; i++)
                if (!islower((unsigned char)p[i]) && !isdigit((unsigned char)p[i]) && p[i] != '_') {
                    snprintf(why, 128, "has a parameter name that is not [a-z0-9_]");
                    return 0;
                }
            if (np == 8) {
                snprintf(why, 128, "has more than 8 parameters");
                return 0;
            }
            for (size_t k = 0; k < np; k++)
                if (lens[k] == l - 2 && !strncmp(names[k], p + 1, l - 2)) {
                    snprintf(why, 128, "names the parameter {%.*s} twice", (int)(l - 2), p + 1);
                    return 0;
                }
            names[np] = p + 1;
            lens[np++] = l - 2;
        } else {
            for (size_t i = 0; i < l; i++)
                if (p[i] == '{' || p[i] == '}' || p[i] == '?' || p[i] == '#' ||
                    (unsigned char)p[i] <= 0x20) {
                    snprintf(why, 128, "has a literal segment with '%c'", p[i]);
                    return 0;
                }
        }
        p += l;
    }
    return 1;
}

static void add_route(struct build *b, const char *method, const char *pattern,
                      enum reg_kind kind, const void *target, enum reg_builtin bi,
                      const char *who)
{
    struct reg *r = b->r;
    r->routes = xrealloc(r->routes, (r->nroutes + 1) * sizeof *r->routes);
    r->routes[r->nroutes++] = (struct reg_route){method, pattern, kind, target, bi, who};
}

static int check_limits(struct build *b, const char *who, const struct fn_limits *l)
{
    if (l->concurrency < 0 || l->timeout_ms < 0 || l->retries < 0 || l->backoff_ms < 0)
        return err_set(b->e, ERR_INVALID, "%s declares a negative limit", who);
    return 0;
}

/* The checks a reactor and a timer share: ABI, name, handler table. */
static int check_react(struct build *b, const char *who, int abi, const char *name,
                       const struct fn_on_react *on, const struct fn_limits *l)
{
    if (abi != FN_ABI_VERSION)
        return err_set(b->e, ERR_INVALID, "%s was built for ABI version %d, not %d", who, abi,
                       FN_ABI_VERSION);
    if (!name_ok(name, "._") || !on)
        return err_set(b->e, ERR_INVALID,
                       "%s: needs a name of a-z, 0-9, '.' and '_', and a table of handlers", who);
    for (const struct fn_on_react *h = on; h->type; h++) {
        if (!*h->type || !h->react)
            return err_set(b->e, ERR_INVALID, "%s has a handler without a type or function", who);
        for (const struct fn_on_react *k = on; k < h; k++)
            if (!strcmp(k->type, h->type))
                return err_set(b->e, ERR_INVALID, "%s has two handlers of %s", who, h->type);
    }
    return check_limits(b, who, l);
}

static int collect_module(struct build *b, const struct reg_module *m)
{
    const struct fn_module *d = m->desc;
    struct reg *r = b->r;
    if (d->abi != FN_ABI_VERSION)
        return err_set(b->e, ERR_INVALID,
                       "module \"%s\" was built for ABI version %d; this cqrsd has ABI version %d: "
                       "rebuild it against this cqrsd's <cqrsd/fn.h>",
                       m->path, d->abi, FN_ABI_VERSION);
    if (!name_ok(d->name, "_-"))
        return err_set(b->e, ERR_INVALID,
                       "module \"%s\" has the name \"%s\": it must be 1 to 100 of a-z, 0-9, '_' "
                       "and '-'",
                       m->path, d->name ? d->name : "");
    char why[128];
    for (size_t i = 0; d->commands && d->commands[i]; i++) {
        const struct fn_command *c = d->commands[i];
        const char *who = owner(b, "command", c->name ? c->name : "(unnamed)", m);
        if (c->abi != FN_ABI_VERSION)
            return err_set(b->e, ERR_INVALID, "%s was built for ABI version %d, not %d", who,
                           c->abi, FN_ABI_VERSION);
        if (!name_ok(c->name, "._"))
            return err_set(b->e, ERR_INVALID, "%s: a name is 1 to 100 of a-z, 0-9, '.' and '_'",
                           who);
        if (!c->category || !name_ok(c->category, "_") || !c->id_field || !*c->id_field ||
            !c->evolve || !c->decide)
            return err_set(b->e, ERR_INVALID,
                           "%s lacks a category of a-z, 0-9 and '_', an id_field, evolve or decide",
                           who);
        if ((c->route == NULL) != (c->method == NULL))
            return err_set(b->e, ERR_INVALID, "%s has a route without a method or the other way "
                                              "round", who);
        if (c->method && strcmp(c->method, "POST") && strcmp(c->method, "PUT") &&
            strcmp(c->method, "PATCH") && strcmp(c->method, "DELETE"))
            return err_set(b->e, ERR_INVALID, "%s has the method \"%s\": commands are POST, PUT, "
                                              "PATCH or DELETE", who, c->method);
        if (c->route && !route_ok(c->route, why))
            return err_set(b->e, ERR_INVALID, "%s: route \"%s\" %s", who, c->route, why);
        int rc = check_limits(b, who, &c->limits);
        if (rc)
            return rc;
        r->cmds = xrealloc(r->cmds, (r->ncmds + 1) * sizeof *r->cmds);
        r->cmds[r->ncmds++] = (struct reg_command){c, m, fn_record(c->name, REG_COMMAND),
                                                   c->limits};
    }
    for (size_t i = 0; d->queries && d->queries[i]; i++) {
        const struct fn_query *q = d->queries[i];
        const char *who = owner(b, "query", q->name ? q->name : "(unnamed)", m);
        if (q->abi != FN_ABI_VERSION)
            return err_set(b->e, ERR_INVALID, "%s was built for ABI version %d, not %d", who,
                           q->abi, FN_ABI_VERSION);
        if (!name_ok(q->name, "._") || !q->run)
            return err_set(b->e, ERR_INVALID, "%s: needs a name of a-z, 0-9, '.' and '_', and run",
                           who);
        if (!route_ok(q->route, why))
            return err_set(b->e, ERR_INVALID, "%s: route \"%s\" %s", who,
                           q->route ? q->route : "", why);
        int rc = check_limits(b, who, &q->limits);
        if (rc)
            return rc;
        r->queries = xrealloc(r->queries, (r->nqueries + 1) * sizeof *r->queries);
        r->queries[r->nqueries++] = (struct reg_query){q, m, fn_record(q->name, REG_QUERY),
                                                       q->limits};
    }
    for (size_t i = 0; d->projections && d->projections[i]; i++) {
        const struct fn_projection *p = d->projections[i];
        const char *who = owner(b, "projection", p->name ? p->name : "(unnamed)", m);
        if (p->abi != FN_ABI_VERSION)
            return err_set(b->e, ERR_INVALID, "%s was built for ABI version %d, not %d", who,
                           p->abi, FN_ABI_VERSION);
        /* the name is part of every Redis key: no ':' */
        if (!name_ok(p->name, "_") || p->version < 1 || !p->on)
            return err_set(b->e, ERR_INVALID,
                           "%s: needs a name of a-z, 0-9 and '_', a version >= 1 and a table of "
                           "handlers",
                           who);
        for (const struct fn_on_event *h = p->on; h->type; h++) {
            if (!*h->type || !h->apply)
                return err_set(b->e, ERR_INVALID, "%s has a handler without a type or function",
                               who);
            for (const struct fn_on_event *k = p->on; k < h; k++)
                if (!strcmp(k->type, h->type))
                    return err_set(b->e, ERR_INVALID, "%s has two handlers of %s", who, h->type);
        }
        int rc = check_limits(b, who, &p->limits);
        if (rc)
            return rc;
        r->projs = xrealloc(r->projs, (r->nprojs + 1) * sizeof *r->projs);
        r->projs[r->nprojs++] = (struct reg_projection){
            p, m, fn_record(p->name, REG_PROJECTION), p->limits, rm_live_new()};
    }
    for (size_t i = 0; d->reactors && d->reactors[i]; i++) {
        const struct fn_reactor *x = d->reactors[i];
        const char *who = owner(b, "reactor", x->name ? x->name : "(unnamed)", m);
        int rc = check_react(b, who, x->abi, x->name, x->on, &x->limits);
        if (rc)
            return rc;
        r->reactors = xrealloc(r->reactors, (r->nreactors + 1) * sizeof *r->reactors);
        r->reactors[r->nreactors++] = (struct reg_reactor){x, m, fn_record(x->name, REG_REACTOR),
                                                           x->limits};
    }
    for (size_t i = 0; d->timers && d->timers[i]; i++) {
        const struct fn_timer *t = d->timers[i];
        const char *who = owner(b, "timer", t->name ? t->name : "(unnamed)", m);
        int rc = check_react(b, who, t->abi, t->name, t->on, &t->limits);
        if (rc)
            return rc;
        if (!t->fire || t->delay_s < 1)
            return err_set(b->e, ERR_INVALID, "%s needs fire and a delay_s >= 1 (seconds)", who);
        r->timers = xrealloc(r->timers, (r->ntimers + 1) * sizeof *r->timers);
        r->timers[r->ntimers++] = (struct reg_timer){t, m, fn_record(t->name, REG_TIMER),
                                                     t->limits, t->delay_s};
    }
    return 0;
}

/* ---------- cross-checks ---------- */

struct named {
    const char *name, *who;
};

static int check_names(struct build *b)
{
    struct reg *r = b->r;
    size_t n = r->ncmds + r->nqueries + r->nprojs + r->nreactors + r->ntimers, k = 0;
    struct named *v = xcalloc(n, sizeof *v);
    for (size_t i = 0; i < r->ncmds; i++)
        v[k++] = (struct named){r->cmds[i].c->name, owner(b, "command", r->cmds[i].c->name,
                                                          r->cmds[i].mod)};
    for (size_t i = 0; i < r->nqueries; i++)
        v[k++] = (struct named){r->queries[i].q->name, owner(b, "query", r->queries[i].q->name,
                                                             r->queries[i].mod)};
    for (size_t i = 0; i < r->nprojs; i++)
        v[k++] = (struct named){r->projs[i].p->name, owner(b, "projection", r->projs[i].p->name,
                                                           r->projs[i].mod)};
    for (size_t i = 0; i < r->nreactors; i++)
        v[k++] = (struct named){r->reactors[i].x->name,
                                owner(b, "reactor", r->reactors[i].x->name, r->reactors[i].mod)};
    for (size_t i = 0; i < r->ntimers; i++)
        v[k++] = (struct named){r->timers[i].t->name,
                                owner(b, "timer", r->timers[i].t->name, r->timers[i].mod)};
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++)
        for (size_t j = 0; j < i && !rc; j++) {
            char a[128], c[128];
            env_name(v[i].name, a);
            env_name(v[j].name, c);
            if (!strcmp(v[i].name, v[j].name))
                rc = err_set(b->e, ERR_INVALID, "duplicate function name: %s and %s", v[j].who,
                             v[i].who);
            else if (!strcmp(a, c))
                rc = err_set(b->e, ERR_INVALID,
                             "%s and %s share the environment name CQRSD_FN_%s_*: rename one",
                             v[j].who, v[i].who, a);
        }
    free(v);
    return rc;
}

/* Compares two route patterns: -1 when no path matches both; else sets
 * *la and *lb to their literal segment counts and returns 1 when they have the
 * same shape (the same route twice), 0 when they only overlap. */
static int overlap(const char *a, const char *b, int *la, int *lb)
{
    *la = *lb = 0;
    int same = 1;
    while (*a && *b) {
        a++;
        b++;
        size_t na = strcspn(a, "/"), nb = strcspn(b, "/");
        int pa = *a == '{', pb = *b == '{';
        if (!pa && !pb && (na != nb || strncmp(a, b, na)))
            return -1;
        if (pa != pb)
            same = 0;
        *la += !pa;
        *lb += !pb;
        a += na;
        b += nb;
    }
    if (*a || *b)
        return -1;
    return same;
}

static int check_routes(struct build *b)
{
    struct reg *r = b->r;
    for (size_t i = 0; i < r->nroutes; i++)
        for (size_t j = 0; j < i; j++) {
            const struct reg_route *x = &r->routes[j], *y = &r->routes[i];
            if (strcmp(x->method, y->method))
                continue;
            int lx, ly, o = overlap(x->pattern, y->pattern, &lx, &ly);
            if (o < 0)
                continue;
            if (o == 1 || lx == ly)
                return err_set(b->e, ERR_INVALID,
                               "route %s %s of %s clashes with %s %s of %s: no rule tells which "
                               "one answers",
                               y->method, y->pattern, y->owner, x->method, x->pattern, x->owner);
            if (y->kind == REG_BUILTIN || x->kind == REG_BUILTIN)
                return err_set(b->e, ERR_INVALID,
                               "route %s %s of %s overlaps the built-in route %s %s",
                               (x->kind == REG_BUILTIN ? y : x)->method,
                               (x->kind == REG_BUILTIN ? y : x)->pattern,
                               (x->kind == REG_BUILTIN ? y : x)->owner,
                               (x->kind == REG_BUILTIN ? x : y)->method,
                               (x->kind == REG_BUILTIN ? x : y)->pattern);
            const struct reg_route *win = lx > ly ? x : y, *lose = lx > ly ? y : x;
            char *note = xasprintf("%sroute %s %s of %s shadows %s %s of %s for the paths both "
                                   "match (more literal segments win)\n",
                                   r->notes ? r->notes : "", win->method, win->pattern, win->owner,
                                   lose->method, lose->pattern, lose->owner);
            r->notes = arena_strndup(&r->arena, note, strlen(note));
            free(note);
        }
    return 0;
}

/* Notes every handler of an event type no loaded module declares (a typo,
 * or a module that is not loaded). */
static void note(struct build *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct build *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *line = NULL;
    if (vasprintf(&line, fmt, ap) < 0)
        abort();
    va_end(ap);
    char *all = xasprintf("%s%s\n", b->r->notes ? b->r->notes : "", line);
    b->r->notes = arena_strndup(&b->r->arena, all, strlen(all));
    free(all);
    free(line);
}

int reg_event_declared(const struct reg *r, const char *type)
{
    for (size_t i = 0; i < r->nmods; i++)
        for (const char *const *t = r->mods[i].desc->events; t && *t; t++)
            if (!strcmp(*t, type))
                return 1;
    return 0;
}

static void check_types(struct build *b)
{
    const struct reg *r = b->r;
    for (size_t i = 0; i < r->nprojs; i++)
        for (const struct fn_on_event *h = r->projs[i].p->on; h->type; h++)
            if (!reg_event_declared(r, h->type))
                note(b, "projection %s (module %s) handles event type %s, which no loaded module "
                        "declares",
                     r->projs[i].p->name, r->projs[i].mod->desc->name, h->type);
    for (size_t i = 0; i < r->nreactors; i++)
        for (const struct fn_on_react *h = r->reactors[i].x->on; h->type; h++)
            if (!reg_event_declared(r, h->type))
                note(b, "reactor %s (module %s) handles event type %s, which no loaded module "
                        "declares",
                     r->reactors[i].x->name, r->reactors[i].mod->desc->name, h->type);
    for (size_t i = 0; i < r->ntimers; i++)
        for (const struct fn_on_react *h = r->timers[i].t->on; h->type; h++)
            if (!reg_event_declared(r, h->type))
                note(b, "timer %s (module %s) handles event type %s, which no loaded module "
                        "declares",
                     r->timers[i].t->name, r->timers[i].mod->desc->name, h->type);
}

/* ---------- limits ---------- */

struct limit_field {
    const char *suffix;
    size_t offset;
    int min, max;
    int bit;
};

static const struct limit_field limit_fields[] = {
    {"_CONCURRENCY", offsetof(struct fn_limits, concurrency), 1, 1000000, REG_LIMIT_CONCURRENCY},
    {"_TIMEOUT_MS", offsetof(struct fn_limits, timeout_ms), 1, 3600000, REG_LIMIT_TIMEOUT},
    {"_RETRIES", offsetof(struct fn_limits, retries), 0, 1000, REG_LIMIT_RETRIES},
    {"_BACKOFF_MS", offsetof(struct fn_limits, backoff_ms), 1, 3600000, REG_LIMIT_BACKOFF},
    /* timers only: struct reg_timer's delay_s, at most about 3 years */
    {"_DELAY_S", 0, 1, 100000000, REG_LIMIT_DELAY},
};

int reg_limits_of_kind(enum reg_kind kind)
{
    switch (kind) {
    case REG_COMMAND: return REG_LIMIT_CONCURRENCY | REG_LIMIT_TIMEOUT | REG_LIMIT_RETRIES;
    case REG_QUERY: return REG_LIMIT_CONCURRENCY | REG_LIMIT_TIMEOUT;
    case REG_PROJECTION:
    case REG_REACTOR: return REG_LIMIT_RETRIES | REG_LIMIT_BACKOFF;
    case REG_TIMER:
        return REG_LIMIT_TIMEOUT | REG_LIMIT_RETRIES | REG_LIMIT_BACKOFF | REG_LIMIT_DELAY;
    case REG_BUILTIN: break;
    }
    return 0;
}

static void defaults(struct fn_limits *l, int event_handler)
{
    if (!l->timeout_ms)
        l->timeout_ms = REG_DEFAULT_TIMEOUT_MS;
    if (!l->retries)
        l->retries = event_handler ? REG_DEFAULT_EVENT_RETRIES : REG_DEFAULT_COMMAND_RETRIES;
    if (!l->backoff_ms)
        l->backoff_ms = REG_DEFAULT_BACKOFF_MS;
}

/* The limits (and for a timer its delay) of the function whose environment
 * name is en, or NULL; *kind gets its kind. */
static struct fn_limits *limits_of(struct reg *r, const char *en, size_t len, int **delay,
                                   enum reg_kind *kind)
{
    char buf[128];
#define LIMITS_OF(array, count, desc)                                                        \
    for (size_t i = 0; i < r->count; i++) {                                                  \
        env_name(r->array[i].desc->name, buf);                                               \
        if (strlen(buf) == len && !strncmp(buf, en, len)) {                                  \
            *kind = r->array[i].fn->kind;                                                    \
            return &r->array[i].limits;                                                      \
        }                                                                                    \
    }
    *delay = NULL;
    LIMITS_OF(cmds, ncmds, c)
    LIMITS_OF(queries, nqueries, q)
    LIMITS_OF(projs, nprojs, p)
    LIMITS_OF(reactors, nreactors, x)
#undef LIMITS_OF
    for (size_t i = 0; i < r->ntimers; i++) {
        env_name(r->timers[i].t->name, buf);
        if (strlen(buf) == len && !strncmp(buf, en, len)) {
            *delay = &r->timers[i].delay_s;
            *kind = REG_TIMER;
            return &r->timers[i].limits;
        }
    }
    return NULL;
}

static int resolve_limits(struct build *b)
{
    struct reg *r = b->r;
    for (size_t i = 0; i < r->ncmds; i++)
        defaults(&r->cmds[i].limits, 0);
    for (size_t i = 0; i < r->nqueries; i++)
        defaults(&r->queries[i].limits, 0);
    for (size_t i = 0; i < r->nprojs; i++)
        defaults(&r->projs[i].limits, 1);
    for (size_t i = 0; i < r->nreactors; i++)
        defaults(&r->reactors[i].limits, 1);
    for (size_t i = 0; i < r->ntimers; i++)
        defaults(&r->timers[i].limits, 1);
    for (char **ep = environ; ep && *ep; ep++) {
        if (strncmp(*ep, "CQRSD_FN_", 9))
            continue;
        const char *name = *ep + 9, *eq = strchr(name, '=');
        if (!eq)
            continue;
        const struct limit_field *f = NULL;
        size_t nlen = 0;
        for (size_t k = 0; k < sizeof limit_fields / sizeof *limit_fields; k++) {
            size_t sl = strlen(limit_fields[k].suffix);
            if ((size_t)(eq - name) > sl && !strncmp(eq - sl, limit_fields[k].suffix, sl)) {
                f = &limit_fields[k];
                nlen = (size_t)(eq - name) - sl;
            }
        }
        if (!f)
            return err_set(b->e, ERR_INVALID,
                           "%.*s: a CQRSD_FN_ setting ends in _CONCURRENCY, _TIMEOUT_MS, _RETRIES, "
                           "_BACKOFF_MS or (timers) _DELAY_S",
                           (int)(eq - *ep), *ep);
        int *delay;
        enum reg_kind kind;
        struct fn_limits *l = limits_of(r, name, nlen, &delay, &kind);
        if (!l)
            return err_set(b->e, ERR_INVALID,
                           "%.*s names no function of the loaded modules (the name is the "
                           "function's in capitals, '.' as '_': CQRSD_FN_CART_ADD_ITEM_%s)",
                           (int)(eq - *ep), *ep, f->suffix + 1);
        if (!(reg_limits_of_kind(kind) & f->bit))
            return err_set(b->e, ERR_INVALID,
                           "%.*s: a %s has no %s (see the limits of each kind in the README)",
                           (int)(eq - *ep), *ep, reg_kind_name(kind), f->suffix + 1);
        const char *v_s = eq + 1;
        int digits = *v_s && strlen(v_s) <= 9 && strspn(v_s, "0123456789") == strlen(v_s);
        long v = digits ? strtol(v_s, NULL, 10) : -1;
        if (!digits || v < f->min || v > f->max)
            return err_set(b->e, ERR_INVALID, "%.*s must be an integer from %d to %d, got \"%s\"",
                           (int)(eq - *ep), *ep, f->min, f->max, eq + 1);
        if (!strcmp(f->suffix, "_DELAY_S"))
            *delay = (int)v;
        else
            *(int *)((char *)l + f->offset) = (int)v;
    }
    return 0;
}

/* ---------- assembling ---------- */

static int build(struct reg_module *mods, size_t nmods, struct reg **out, struct err *e)
{
    struct reg *r = xcalloc(1, sizeof *r);
    atomic_init(&r->refs, 1);
    r->mods = mods;
    r->nmods = nmods;
    struct build b = {r, e};
    int rc = 0;
    for (size_t i = 0; i < nmods && !rc; i++) {
        rc = collect_module(&b, &mods[i]);
        for (size_t j = 0; j < i && !rc; j++)
            if (!strcmp(mods[j].desc->name, mods[i].desc->name))
                rc = err_set(e, ERR_INVALID, "two modules are named \"%s\": \"%s\" and \"%s\"",
                             mods[i].desc->name, mods[j].path, mods[i].path);
    }
    if (!rc)
        rc = check_names(&b);
    if (!rc) {
        add_route(&b, "GET", "/streams/{stream_id}", REG_BUILTIN, NULL, REG_STREAM,
                  "the built-in stream reader");
        add_route(&b, "GET", "/healthz", REG_BUILTIN, NULL, REG_HEALTH,
                  "the built-in liveness check");
        add_route(&b, "GET", "/readyz", REG_BUILTIN, NULL, REG_READY,
                  "the built-in readiness check");
        add_route(&b, "GET", "/metrics", REG_BUILTIN, NULL, REG_METRICS,
                  "the built-in metrics");
        add_route(&b, "GET", "/admin/functions", REG_BUILTIN, NULL, REG_FUNCTIONS,
                  "the built-in function list");
        add_route(&b, "GET", "/admin/parked", REG_BUILTIN, NULL, REG_PARKED,
                  "the built-in list of parked events");
        add_route(&b, "POST", "/admin/parked/{id}/retry", REG_BUILTIN, NULL, REG_PARKED_RETRY,
                  "the built-in retry of a parked event");
        add_route(&b, "POST", "/admin/modules/reload", REG_BUILTIN, NULL, REG_RELOAD,
                  "the built-in reload of the modules");
        add_route(&b, "GET", "/admin/modules", REG_BUILTIN, NULL, REG_MODULES,
                  "the built-in list of modules");
        add_route(&b, "GET", "/admin/projections", REG_BUILTIN, NULL, REG_PROJECTIONS,
                  "the built-in projection status");
        add_route(&b, "POST", "/admin/projections/{name}/rebuild", REG_BUILTIN, NULL, REG_REBUILD,
                  "the built-in blue/green rebuild");
        add_route(&b, "POST", "/admin/projections/{name}/pause", REG_BUILTIN, NULL, REG_PAUSE,
                  "the built-in pause of a projection");
        add_route(&b, "POST", "/admin/projections/{name}/resume", REG_BUILTIN, NULL, REG_RESUME,
                  "the built-in resume of a projection");
        add_route(&b, "GET", "/admin", REG_BUILTIN, NULL, REG_ADMIN_PAGE,
                  "the built-in admin page");
        add_route(&b, "GET", "/admin/errors", REG_BUILTIN, NULL, REG_ERRORS,
                  "the built-in list of recent errors");
        add_route(&b, "GET", "/problems/{name}", REG_BUILTIN, NULL, REG_PROBLEM,
                  "the built-in problem pages");
        add_route(&b, "GET", "/openapi.json", REG_BUILTIN, NULL, REG_OPENAPI,
                  "the built-in OpenAPI document");
        add_route(&b, "POST", "/admin/webhooks", REG_BUILTIN, NULL, REG_HOOK_CREATE,
                  "the built-in webhook registration");
        add_route(&b, "GET", "/admin/webhooks", REG_BUILTIN, NULL, REG_HOOK_LIST,
                  "the built-in list of webhooks");
        add_route(&b, "DELETE", "/admin/webhooks/{id}", REG_BUILTIN, NULL, REG_HOOK_DELETE,
                  "the built-in webhook removal");
        add_route(&b, "GET", "/admin/webhooks/deliveries", REG_BUILTIN, NULL, REG_HOOK_DELIVERIES,
                  "the built-in list of webhook deliveries");
        add_route(&b, "POST", "/admin/webhooks/deliveries/{id}/retry", REG_BUILTIN, NULL,
                  REG_HOOK_RETRY, "the built-in retry of a webhook delivery");
        for (size_t i = 0; i < r->ncmds; i++)
            if (r->cmds[i].c->route)
                add_route(&b, r->cmds[i].c->method, r->cmds[i].c->route, REG_COMMAND, &r->cmds[i],
                          0, owner(&b, "command", r->cmds[i].c->name, r->cmds[i].mod));
        for (size_t i = 0; i < r->nqueries; i++)
            add_route(&b, "GET", r->queries[i].q->route, REG_QUERY, &r->queries[i], 0,
                      owner(&b, "query", r->queries[i].q->name, r->queries[i].mod));
        rc = check_routes(&b);
    }
    if (!rc)
        rc = resolve_limits(&b);
    if (!rc)
        check_types(&b);
    if (!r->notes)
        r->notes = arena_strndup(&r->arena, "", 0);
    if (rc) {
        r->ncmds = 0; /* nothing was cached for this generation */
        unload(r);
        return rc;
    }
    *out = r;
    return 0;
}

int reg_open(const char *spec, struct reg **out, struct err *e)
{
    char **paths = NULL;
    size_t n = 0;
    int rc = expand_spec(spec, &paths, &n, e);
    struct reg_module *mods = xcalloc(n ? n : 1, sizeof *mods);
    size_t loaded = 0;
    for (size_t i = 0; i < n && !rc; i++, loaded++)
        rc = load_one(paths[i], &mods[i], e);
    if (rc) {
        unload_modules(mods, loaded);
        for (size_t i = 0; i < loaded; i++)
            free(mods[i].path), free(mods[i].copy);
        free(mods);
    } else {
        rc = build(mods, n, out, e);
    }
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    return rc;
}

int reg_from_descriptors(const struct fn_module *const *descs, size_t n, struct reg **out,
                         struct err *e)
{
    struct reg_module *mods = xcalloc(n ? n : 1, sizeof *mods);
    for (size_t i = 0; i < n; i++) {
        mods[i].path = xstrdup("(linked in)");
        mods[i].desc = descs[i];
    }
    return build(mods, n, out, e);
}
