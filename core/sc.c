/* core/sc.c — the stream-state cache (see sc.h): a chained hash table of
 * entries plus a doubly linked LRU list, under one mutex. Invariant: every
 * entry in the table is in the list and the other way round; an entry taken
 * out is in neither and belongs to its taker. */
#include "core/sc.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

#define NBUCKETS 16384

static struct {
    pthread_mutex_t mu;
    struct sc_entry *buckets[NBUCKETS];
    struct sc_entry *head, *tail; /* head = most recently used */
    size_t n, cap;
} C = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* The bucket of a stream id and state family: FNV-1a of the id, mixed with
 * the family's address. */
static size_t bucket(const char *s, const void *family)
{
    uint64_t h = util_fnv1a(s);
    h ^= (uint64_t)(uintptr_t)family;
    return (size_t)(h % NBUCKETS);
}

void sc_init(size_t capacity)
{
    pthread_mutex_lock(&C.mu);
    C.cap = capacity;
    pthread_mutex_unlock(&C.mu);
}

void sc_entry_free(struct sc_entry *e)
{
    if (!e)
        return;
    if (e->release)
        e->release(e->state);
    free(e->state);
    free(e->stream_id);
    free(e);
}

static void unlink_entry(struct sc_entry *e)
{
    struct sc_entry **p = &C.buckets[bucket(e->stream_id, e->family)];
    while (*p != e)
        p = &(*p)->hnext;
    *p = e->hnext;
    if (e->prev)
        e->prev->next = e->next;
    else
        C.head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        C.tail = e->prev;
    e->hnext = e->prev = e->next = NULL;
    C.n--;
}

struct sc_entry *sc_take(const char *stream_id, const void *family)
{
    pthread_mutex_lock(&C.mu);
    struct sc_entry *e = C.buckets[bucket(stream_id, family)];
    while (e && !(e->family == family && !strcmp(e->stream_id, stream_id)))
        e = e->hnext;
    if (e)
        unlink_entry(e);
    pthread_mutex_unlock(&C.mu);
    return e;
}

void sc_put(struct sc_entry *e)
{
    struct sc_entry *drop = NULL, *old;
    pthread_mutex_lock(&C.mu);
    if (C.cap == 0) {
        pthread_mutex_unlock(&C.mu);
        sc_entry_free(e);
        return;
    }
    size_t b = bucket(e->stream_id, e->family);
    for (old = C.buckets[b]; old; old = old->hnext)
        if (old->family == e->family && !strcmp(old->stream_id, e->stream_id))
            break;
    if (old) { /* someone put a state meanwhile: keep the newer one */
        if (old->version >= e->version) {
            pthread_mutex_unlock(&C.mu);
            sc_entry_free(e);
            return;
        }
        unlink_entry(old);
        drop = old;
    }
    e->hnext = C.buckets[b];
    C.buckets[b] = e;
    e->prev = NULL;
    e->next = C.head;
    if (C.head)
        C.head->prev = e;
    C.head = e;
    if (!C.tail)
        C.tail = e;
    C.n++;
    struct sc_entry *evict = NULL;
    if (C.n > C.cap) {
        evict = C.tail;
        unlink_entry(evict);
    }
    pthread_mutex_unlock(&C.mu);
    sc_entry_free(drop);
    sc_entry_free(evict);
}

void sc_drop_family(const void *family)
{
    struct sc_entry *dropped = NULL;
    pthread_mutex_lock(&C.mu);
    for (struct sc_entry *e = C.head, *next; e; e = next) {
        next = e->next;
        if (e->family != family)
            continue;
        unlink_entry(e);
        e->next = dropped;
        dropped = e;
    }
    pthread_mutex_unlock(&C.mu);
    while (dropped) {
        struct sc_entry *next = dropped->next;
        sc_entry_free(dropped);
        dropped = next;
    }
}

void sc_clear(void)
{
    pthread_mutex_lock(&C.mu);
    struct sc_entry *e = C.head;
    memset(C.buckets, 0, sizeof C.buckets);
    C.head = C.tail = NULL;
    C.n = 0;
    pthread_mutex_unlock(&C.mu);
    while (e) {
        struct sc_entry *next = e->next;
        sc_entry_free(e);
        e = next;
    }
}
