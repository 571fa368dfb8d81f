/* names.c -- the shared table of short names of names.h: open addressing, FNV-1a. */
#include "common/names.h"

#include <stdint.h>
#include <string.h>

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
        int st = atomic_load_explicit(&e->state, memory_order_acquire);
        if (st == 2) {
            if (strncmp(e->name, name, n) == 0 && e->name[n] == '\0')
                return i + 1;
            continue;
        }
        if (st == 1)
            continue;               /* someone writes it now: maybe our name, see names.h */
        int free_state = 0;
        if (!atomic_compare_exchange_strong(&e->state, &free_state, 1))
            continue;               /* taken meanwhile: look further */
        memcpy(e->name, name, n);
        e->name[n] = '\0';
        atomic_store_explicit(&e->state, 2, memory_order_release);
        return i + 1;
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
