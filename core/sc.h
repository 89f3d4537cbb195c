/* core/sc.h — the stream-state cache: the folded state of recently used
 * streams, so a command on a hot stream need not read and fold its whole
 * history again (snapshots in memory).
 *
 * A cached state is only ever a guess: the append that follows a decide on it
 * uses its version as the expected version, so a state made stale by another
 * writer (another worker, another instance) fails that compare-and-set and
 * the command runs again from the store. Entries are taken out while a
 * command uses them (one user at a time) and put back after a success.
 * Thread-safe; bounded (least recently used entries are dropped).
 */
#ifndef CQRSD_SC_H
#define CQRSD_SC_H

#include <stddef.h>
#include <stdint.h>

struct sc_entry {
    char *stream_id;          /* owned */
    const void *family;       /* states of one family share a layout: the evolve function */
    void *state;              /* owned, state_size bytes */
    void (*release)(void *);  /* frees what state holds; may be NULL */
    int64_t version;          /* stream version the state reflects */
    struct sc_entry *hnext, *prev, *next;
};

/* Sets the bound (entries); 0 disables the cache. Call before use. */
void sc_init(size_t capacity);

/* Removes and returns the entry of (stream_id, family), or NULL. */
struct sc_entry *sc_take(const char *stream_id, const void *family);

/* Puts e back (the cache owns it again); replaces an entry put meanwhile. */
void sc_put(struct sc_entry *e);

/* Frees an entry taken out (NULL: no-op). */
void sc_entry_free(struct sc_entry *e);

/* Drops every entry of one family, e.g. the commands of a module generation
 * about to be unloaded (their release functions are still mapped). */
void sc_drop_family(const void *family);

/* Drops every entry (tests). */
void sc_clear(void);

#endif
