/* commands/events.h — the e-commerce event types as constants (one per
 * EVENT line of commands/events.def): EV_CartOpened is "CartOpened". */
#ifndef ECOM_EVENTS_H
#define ECOM_EVENTS_H

#define EVENT(name) extern const char EV_##name[];
#include "events.def"
#undef EVENT

/* Every type above, NULL-terminated (the module descriptor's .events). */
extern const char *const ecom_events[];

#endif
