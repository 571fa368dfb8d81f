/* names.h -- a table of short names in shared memory, each given a small number, so
 * that fixed-size records shared between processes can hold a kind or an error code
 * as a number (common/events.c, common/metrics.c).
 *
 * Any process may add a name while others read or add: an entry is claimed with a
 * compare-and-set, written, then published. A process that finds an entry being written
 * waits for it (at most 20 ms: the copy of a name), since it may be the same name, so
 * a name gets one number. Only if that writer stalls past the wait (or dies in the copy)
 * can a name get two; both read back as the same name. A table never forgets a name
 * (it lives as long as the instance). */
#ifndef WP_NAMES_H
#define WP_NAMES_H

#include <stdatomic.h>

#define NAMES_MAX_LEN 64           /* longer names are cut to this many bytes */

struct names_entry {
    atomic_int state;               /* 0 free, 1 being written, 2 ready, 3 given up
                                     * (its writer took too long: names.c) */
    char name[NAMES_MAX_LEN + 1];
};

/* The number (1..cap) of name in the table of cap entries, added if it is not there;
 * 0 for NULL or "" or when the table is full. Never blocks, but may wait up to 20 ms
 * for an entry another process is writing. */
int names_intern(struct names_entry *tab, int cap, const char *name);
/* The name of number ix (1..cap), or NULL when ix is 0, out of range or not ready. The
 * string lives as long as the table. */
const char *names_get(const struct names_entry *tab, int cap, int ix);

#endif
