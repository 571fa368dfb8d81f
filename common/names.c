/* names.c -- the shared table of short names of names.h: open addressing, FNV-1a. */
#include "common/names.h"

#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* How long names_intern() waits for an entry another process is writing (a copy of at
 * most 64 bytes: only a writer preempted or killed in the middle takes longer) */
#define WRITING_WAIT_NS (20 * 1000 * 1000L)

static int64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* The entry's state once its writer is done (2). One still being written after
 * WRITING_WAIT_NS is marked given up (3), so that nobody waits for it again: its writer
 * died in the copy, or is so late that it publishes the entry later (it stores 2
 * whatever the state), when the name may already have another number. */
static int
settled(struct names_entry *e)
{
    int st = atomic_load_explicit(&e->state, memory_order_acquire);
    if (st != 1)
        return st;
    int64_t until = mono_ns() + WRITING_WAIT_NS;
    while ((st = atomic_load_explicit(&e->state, memory_order_acquire)) == 1) {
        if (mono_ns() >= until) {
            int writing = 1;
            if (atomic_compare_exchange_strong(&e->state, &writing, 3))
                return 3;
            return writing;
        }
        sched_yield();
    }
    return st;
}

static uint32_t
hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

int
names_intern(struct names_entry *tab, int cap, const char *name)
{
    if (name == NULL || name[0] == '\0' || cap <= 0)
        return 0;
    size_t n = strnlen(name, NAMES_MAX_LEN);
    uint32_t start = hash(name, n) % (uint32_t)cap;
    for (int probe = 0; probe < cap; probe++) {
        int i = (int)((start + (uint32_t)probe) % (uint32_t)cap);
        struct names_entry *e = &tab[i];
        /* an entry being written may be our name, written by another process at the
         * same moment: wait for it, or the name would get a second number (names.h);
         * and one taken under us is looked at again, for the same reason */
        for (;;) {
            int st = settled(e);
            if (st == 2) {
                if (strncmp(e->name, name, n) == 0 && e->name[n] == '\0')
                    return i + 1;
                break;
            }
            if (st != 0)
                break;              /* given up (3): its writer stalled or died */
            int free_state = 0;
            if (!atomic_compare_exchange_strong(&e->state, &free_state, 1))
                continue;           /* taken meanwhile: see by whom */
            memcpy(e->name, name, n);
            e->name[n] = '\0';
            atomic_store_explicit(&e->state, 2, memory_order_release);
            return i + 1;
        }
    }
    return 0;
}

const char *
names_get(const struct names_entry *tab, int cap, int ix)
{
    if (ix < 1 || ix > cap)
        return NULL;
    const struct names_entry *e = &tab[ix - 1];
    return atomic_load_explicit((atomic_int *)&e->state, memory_order_acquire) == 2 ? e->name
                                                                                  : NULL;
}
