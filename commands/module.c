/* commands/module.c — the e-commerce module's descriptor: its event types
 * (events.def) and the functions of commands/, projections/, queries/ and
 * reactors/,
 * each folder's list in its registry.def (X-macro lists: a misspelt symbol
 * fails the link). */
#include <cqrsd/fn.h>

#include "events.h"

#define EVENT(name) const char EV_##name[] = #name;
#include "events.def"
#undef EVENT

const char *const ecom_events[] = {
#define EVENT(name) EV_##name,
#include "events.def"
#undef EVENT
    NULL,
};

#define FN_COMMAND(sym) extern const struct fn_command sym;
#include "registry.def"
#undef FN_COMMAND
#define FN_PROJECTION(sym) extern const struct fn_projection sym;
#include "../projections/registry.def"
#undef FN_PROJECTION
#define FN_QUERY(sym) extern const struct fn_query sym;
#include "../queries/registry.def"
#undef FN_QUERY
#define FN_REACTOR(sym) extern const struct fn_reactor sym;
#define FN_TIMER(sym)
#include "../reactors/registry.def"
#undef FN_REACTOR
#undef FN_TIMER
#define FN_REACTOR(sym)
#define FN_TIMER(sym) extern const struct fn_timer sym;
#include "../reactors/registry.def"
#undef FN_REACTOR
#undef FN_TIMER

static const struct fn_command *const commands[] = {
#define FN_COMMAND(sym) &sym,
#include "registry.def"
#undef FN_COMMAND
    NULL,
};

static const struct fn_projection *const projections[] = {
#define FN_PROJECTION(sym) &sym,
#include "../projections/registry.def"
#undef FN_PROJECTION
    NULL,
};

static const struct fn_query *const queries[] = {
#define FN_QUERY(sym) &sym,
#include "../queries/registry.def"
#undef FN_QUERY
    NULL,
};

static const struct fn_reactor *const reactors[] = {
#define FN_REACTOR(sym) &sym,
#define FN_TIMER(sym)
#include "../reactors/registry.def"
#undef FN_REACTOR
#undef FN_TIMER
    NULL,
};

static const struct fn_timer *const timers[] = {
#define FN_REACTOR(sym)
#define FN_TIMER(sym) &sym,
#include "../reactors/registry.def"
#undef FN_REACTOR
#undef FN_TIMER
    NULL,
};

FN_MODULE = {
    .abi = FN_ABI_VERSION,
    .name = "ecommerce",
    .version = "1.0.0",
    .events = ecom_events,
    .commands = commands,
    .projections = projections,
    .queries = queries,
    .reactors = reactors,
    .timers = timers,
};
