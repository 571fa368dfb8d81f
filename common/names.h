/* names.h -- a table of short names in shared memory, each given a small number, so
 * that fixed-size records shared between processes can hold a kind or an error code
 * as a number (common/events.c, common/metrics.c).
 *
 * Any process may add a name while others read or add: an entry is claimed with a
 * compare-and-set, written, then published. Two processes adding the same name at the
 * same moment can give it two numbers; both read back as the same name, so the only
 * cost is an entry. A table never forgets a name (it lives as long as the instance). */
#ifndef WP_NAMES_H
#define WP_NAMES_H

#include <stdatomic.h>

#define NAMES_MAX_LEN 64           /* longer names are cut to this many bytes */

struct names_entry {
    atomic_int state;               /* 0 free, 1 being written, 2 ready */
    char name[NAMES_MAX_LEN + 1];
};

/* The number (1..cap) of name in the table of cap entries, added if it is not there;
 * 0 for NULL or "" or when the table is full. Never blocks. */
int names_intern(struct names_entry *tab, int cap, const char *name);
/* The name of number ix (1..cap), or NULL when ix is 0, out of range or not ready. The
 * string lives as long as the table. */
const char *names_get(const struct names_entry *tab, int cap, int ix);

#endif
