/* store_sqlite.h -- what the SQLite implementation offers beyond store.h, for its own
 * unit tests (internal to storage/ and tests/unit/test_store.c). */
#ifndef WP_STORE_SQLITE_H
#define WP_STORE_SQLITE_H

#include "storage/store.h"

/* Takes an exclusive lock on "<db_path>.lock" (flock), which the caller holds for
 * its life (the fd is inherited by its children on purpose). Creates the database's
 * directory if missing. STORE_OK and *fd; STORE_LOCKED when another process holds
 * it (err names the lock file and the holder's pid); STORE_ERR otherwise.
 * When the pid recorded in the lock file is dead, the holders are that instance's
 * dying children: it waits up to STORE_LOCK_ORPHAN_WAIT_MS for them first.
 * store_start() calls it. */
#define STORE_LOCK_ORPHAN_WAIT_MS 5000
int store_lock(const char *db_path, int *fd, char *err, size_t errlen);

#endif
