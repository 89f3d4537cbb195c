/* tests/fuzz/fuzz_module.h — the e-commerce module as the fuzzers see it:
 * linked in (build-fuzz/modules/ecommerce.a), registered once as a
 * generation of its own (core/reg.h), with its routes and the built-in ones. */
#ifndef CQRSD_FUZZ_MODULE_H
#define CQRSD_FUZZ_MODULE_H

#include <stdlib.h>

#include "core/reg.h"

extern const struct fn_module cqrsd_module;

static inline struct reg *fuzz_module(void)
{
    static struct reg *r;
    const struct fn_module *m = &cqrsd_module;
    if (!r && reg_from_descriptors(&m, 1, &r, NULL))
        abort();
    return r;
}

#endif
