/* commands/registry.c — fn_commands[], the NULL-terminated list of every
 * command descriptor named in commands/registry.def, in that order.
 * Invariant: this file only expands the list; it defines nothing else. */
#include <stddef.h>

#include "core/fn.h"

#define FN_COMMAND(sym) extern const struct fn_command sym;
#include "commands/registry.def"
#undef FN_COMMAND

const struct fn_command *const fn_commands[] = {
#define FN_COMMAND(sym) &sym,
#include "commands/registry.def"
#undef FN_COMMAND
    NULL,
};
