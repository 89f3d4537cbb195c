/* core/reg.h — the function registry: the modules loaded, their functions,
 * and the routes they answer.
 *
 * A registry is one generation of loaded modules. It is immutable once built
 * and reference-counted: an HTTP request, a projection batch or a reactor
 * pass holds a reference to the generation it started with, so code is never
 * unloaded under a running function. `reg_set_current` installs a new
 * generation (start-up, SIGHUP); the old one is unloaded (dlclose) when its
 * last reference is released.
 *
 * Modules are shared objects exporting FN_MODULE_SYMBOL (core/fn.h). Each is
 * dlopen'd from a private copy, so a file replaced on disk (a rebuilt module)
 * is loaded as new code on the next generation even while the old code still
 * runs. A registry refuses, naming both parties: another ABI version, two
 * modules of one name, two functions of one name (or of one environment name,
 * see fn_limits), two routes of one method that match the same paths with
 * the same specificity (an ambiguity no rule resolves), and a route of a
 * module on a built-in route. Routes of one method where one shadows the other
 * for some paths (GET /products/top and GET /products/{sku}: the one with more
 * literal segments wins) are reported in the registry's notes.
 *
 * Function records (struct reg_fn: counters) belong to the
 * process, not to a generation: they are looked up by name and survive
 * reloads, so counters run on and a concurrency limit holds across two
 * generations serving at once.
 */
#ifndef CQRSD_REG_H
#define CQRSD_REG_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/fn.h"
#include "core/metrics.h"
#include "core/util.h"

enum reg_kind { REG_COMMAND, REG_QUERY, REG_PROJECTION, REG_REACTOR, REG_TIMER, REG_BUILTIN };

/* Defaults of struct fn_limits (core/fn.h). */
#define REG_DEFAULT_TIMEOUT_MS 30000
#define REG_DEFAULT_COMMAND_RETRIES 20
#define REG_DEFAULT_EVENT_RETRIES 5
#define REG_DEFAULT_BACKOFF_MS 100

/* Which limits apply to which kind of function (the others are refused in
 * the environment and not shown): a mask of REG_LIMIT_* bits. */
enum {
    REG_LIMIT_CONCURRENCY = 1, /* commands, queries */
    REG_LIMIT_TIMEOUT = 2,     /* commands, queries; a timer's claim on a fire */
    REG_LIMIT_RETRIES = 4,     /* commands (version conflicts), event handlers, timers */
    REG_LIMIT_BACKOFF = 8,     /* projections, reactors, timers */
    REG_LIMIT_DELAY = 16,      /* timers */
};
/* The mask of a kind of function. */
int reg_limits_of_kind(enum reg_kind kind);

/* The process-wide record of one function name. Counters are monotonic. */
struct reg_fn {
    char *name;
    enum reg_kind kind;
    atomic_int in_flight;
    atomic_llong invocations, errors, rejections;
    atomic_llong duration_us, duration_max_us;
    struct metrics_hist duration; /* the same invocations, for GET /metrics */
};

struct reg_module {
    char *path;   /* as named in CQRSD_MODULES; "(built in)" for a static one */
    char *copy;   /* the private copy dlopen'd; NULL for a static one */
    void *handle; /* dlopen handle; NULL for a static one */
    const struct fn_module *desc;
};

struct reg_command {
    const struct fn_command *c;
    const struct reg_module *mod;
    struct reg_fn *fn;
    struct fn_limits limits; /* resolved: descriptor, then defaults, then environment */
};

struct reg_query {
    const struct fn_query *q;
    const struct reg_module *mod;
    struct reg_fn *fn;
    struct fn_limits limits; /* resolved: descriptor, then defaults, then environment */
};

struct rm_live;

struct reg_projection {
    const struct fn_projection *p;
    const struct reg_module *mod;
    struct reg_fn *fn;
    struct fn_limits limits; /* resolved: descriptor, then defaults, then environment */
    struct rm_live *live;    /* the live build queries read (core/rm.h); owned */
};

struct reg_reactor {
    const struct fn_reactor *x;
    const struct reg_module *mod;
    struct reg_fn *fn;
    struct fn_limits limits;
};

struct reg_timer {
    const struct fn_timer *t;
    const struct reg_module *mod;
    struct reg_fn *fn;
    struct fn_limits limits;
    int delay_s; /* resolved: the descriptor's, or CQRSD_FN_<NAME>_DELAY_S */
};

/* A built-in route of the platform (its handler is core/builtin.c's). */
enum reg_builtin {
    REG_STREAM,
    REG_HEALTH,
    REG_FUNCTIONS,
    REG_PARKED,
    REG_PARKED_RETRY,
    REG_RELOAD,
    REG_MODULES,
    REG_HOOK_CREATE,
    REG_HOOK_LIST,
    REG_HOOK_DELETE,
    REG_HOOK_DELIVERIES,
    REG_HOOK_RETRY,
    REG_PROJECTIONS,
    REG_REBUILD,
    REG_READY,
    REG_METRICS,
    REG_PAUSE,
    REG_RESUME,
    REG_ADMIN_PAGE,
    REG_ERRORS,
    REG_PROBLEM,
    REG_OPENAPI,
};

struct reg_route {
    const char *method;  /* "GET", "POST", ... */
    const char *pattern; /* "/carts/{cart_id}" */
    enum reg_kind kind;  /* REG_COMMAND, REG_QUERY or REG_BUILTIN */
    const void *target;  /* struct reg_command / reg_query; NULL for a built-in */
    enum reg_builtin builtin;
    const char *owner;   /* "command cart.open (module ecommerce)", for messages */
};

struct reg {
    atomic_int refs;
    unsigned long generation;
    struct reg_module *mods;
    size_t nmods;
    struct reg_command *cmds;
    size_t ncmds;
    struct reg_query *queries;
    size_t nqueries;
    struct reg_projection *projs;
    size_t nprojs;
    struct reg_reactor *reactors;
    size_t nreactors;
    struct reg_timer *timers;
    size_t ntimers;
    struct reg_route *routes;
    size_t nroutes;
    char *notes; /* shadowed routes and other remarks, one per line; "" when none */
    /* set by reg_reload: projs[i] is at a (name, version) the generation it
     * replaced lacked, and rebuilds from the first event before queries
     * switch; nrebuilds counts them */
    unsigned char *rebuilds;
    size_t nrebuilds;
    struct reg *query_source; /* under reg.c's lock: see reg_query_source */
    struct arena arena; /* the strings above */
};

/*
 * Loads the modules spec names: paths separated by ':' or ','; a directory
 * stands for every *.so file in it, in name order. Returns 0 and *out (one
 * reference, the caller's), or ERR_INVALID with a message (a file that is not
 * a module, another ABI version, a conflict naming both parties); nothing
 * stays loaded then.
 */
int reg_open(const char *spec, struct reg **out, struct err *e);

/* The same from descriptors linked into the program (tests, fuzzers). */
int reg_from_descriptors(const struct fn_module *const *mods, size_t n, struct reg **out,
                         struct err *e);

/* The default of CQRSD_MODULES: the e-commerce module beside the binary
 * (<dir of cqrsd>/modules/ecommerce.so, or ../lib/cqrsd/modules/ecommerce.so
 * once installed). Static storage. */
const char *reg_default_modules(void);

/* Takes one more reference. */
void reg_acquire(struct reg *r);
/* Drops a reference (NULL: no-op); the last one unloads the generation: its
 * cached stream states are dropped, then its modules are dlclose'd. */
void reg_release(struct reg *r);

/* The current generation with a new reference (NULL before the first
 * reg_set_current). Thread-safe. */
struct reg *reg_current(void);
/* Installs r as the current generation, taking over the caller's reference,
 * and releases the previous one. Thread-safe. */
void reg_set_current(struct reg *r);

/*
 * Loads the modules of spec again (NULL: the spec of the first load, see
 * reg_set_spec) as a new generation and makes it current: requests routed
 * before finish on the old code, new ones run the new code, and the old
 * generation is unloaded when nothing uses it any more. When the new one has
 * projections at versions the old one lacks, they rebuild from the first
 * event into their own keys first; until they reach the head, the queries
 * the old generation also has are answered by it, from the old read models,
 * which its projections keep current. Returns 0 and the new generation's
 * number in *generation, or the refusal (ERR_INVALID with why; the serving
 * generation is untouched). Reloads run one at a time.
 */
int reg_reload(const char *spec, unsigned long *generation, struct err *e);

/* The spec reg_reload uses by default (copied). */
void reg_set_spec(const char *spec);

/* The generation whose queries answer while r rebuilds, with one more
 * reference; NULL when r answers its queries itself. */
struct reg *reg_query_source(struct reg *r);

/* r's rebuilding projections reached the head: its own queries answer from
 * now on (the old generation is released). */
void reg_queries_switch(struct reg *r);

const struct reg_command *reg_command_find(const struct reg *r, const char *name);
const struct reg_query *reg_query_find(const struct reg *r, const char *name);
const struct reg_projection *reg_projection_find(const struct reg *r, const char *name);
const struct reg_reactor *reg_reactor_find(const struct reg *r, const char *name);
const struct reg_timer *reg_timer_find(const struct reg *r, const char *name);

/* The handler of type in a reactor's or timer's table, or NULL. */
int (*reg_react_handler(const struct fn_on_react *on,
                        const char *type))(struct fn_react *, const struct fn_event *,
                                           struct err *);

/* 1 when a module of r declares the event type (FN_MODULE .events). */
int reg_event_declared(const struct reg *r, const char *type);

/* "command", "query", ... for a kind. */
const char *reg_kind_name(enum reg_kind k);

/* The handler of type in p's table, or NULL. */
int (*reg_projection_handler(const struct fn_projection *p,
                             const char *type))(struct fn_batch *, const struct fn_event *,
                                                struct err *);

/* Counts one invocation of fn that began at t0_us (util_now_us) and failed
 * or not: invocations, duration (total and max), errors. Thread-safe. */
void reg_fn_count(struct reg_fn *fn, int64_t t0_us, int failed);

/* Every function record created so far, in creation order; *n gets the count.
 * The array is the registry's; records never move or go away. */
struct reg_fn *const *reg_functions(size_t *n);

#endif
