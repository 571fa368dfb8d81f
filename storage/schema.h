/* schema.h -- the database schema and its migrations (internal to storage/). */
#ifndef WP_SCHEMA_H
#define WP_SCHEMA_H

#include <sqlite3.h>
#include <stddef.h>

/* The schema version this build writes. Checklist: raise it together with a new
 * entry at the end of MIGRATIONS[] in schema.c, never by editing an old entry. */
#define SCHEMA_VERSION 4

/* Reports a step of a long migration (see store_migrate() in store.h). */
typedef void schema_progress_fn(void *arg, const char *message);

/* Brings the database up to SCHEMA_VERSION in one transaction (all or nothing).
 * SQLITE_OK, or an SQLite code with the reason in err. A database newer than this
 * build is refused. *from gets the version it found. Only the supervisor calls this,
 * once, at start-up, before any other connection exists. */
int schema_migrate(sqlite3 *db, schema_progress_fn *progress, void *arg, int *from, char *err,
                   size_t errlen);

/* SQLITE_OK when the database is at SCHEMA_VERSION; otherwise SQLITE_ERROR (or the
 * error of reading it) with a message in err that says what to do. No write, no lock
 * beyond a read. */
int schema_check(sqlite3 *db, char *err, size_t errlen);

#endif
