/* schema.h -- the database schema and its migrations (internal to storage/). */
#ifndef WP_SCHEMA_H
#define WP_SCHEMA_H

#include <sqlite3.h>
#include <stddef.h>

/* The schema version this build writes. Checklist: raise it together with a new
 * entry at the end of MIGRATIONS[] in schema.c, never by editing an old entry. */
#define SCHEMA_VERSION 1

/* Brings the database up to SCHEMA_VERSION in one transaction. SQLITE_OK, or an
 * SQLite code with the reason in err. A database newer than this build is refused. */
int schema_migrate(sqlite3 *db, char *err, size_t errlen);

#endif
