/* schema.c -- the tables, the indexes and the migrations that create them.
 *
 * PRAGMA user_version holds the schema version. Migration i (1-based) moves the
 * database from version i-1 to i; all pending ones run in one BEGIN IMMEDIATE
 * transaction at start-up, in the supervisor, before any child process exists. */
#include "storage/schema.h"

#include <stdio.h>

static const char *const MIGRATIONS[] = {
    /* 1: tasks, their indexes, and a key/value table for the store's own facts */
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE tasks ("
    "  id            INTEGER PRIMARY KEY AUTOINCREMENT,"   /* never reused */
    "  kind          TEXT    NOT NULL,"
    "  state         TEXT    NOT NULL CHECK (state IN"
    "                ('pending','running','succeeded','failed','canceled')),"
    "  priority      INTEGER NOT NULL,"
    "  input         TEXT    NOT NULL,"                     /* JSON text */
    "  result        TEXT,"                                 /* JSON text */
    "  error_code    TEXT,"
    "  error_message TEXT,"
    "  attempts      INTEGER NOT NULL DEFAULT 0,"
    "  max_attempts  INTEGER NOT NULL,"
    "  timeout_ms    INTEGER NOT NULL,"
    "  created_at    INTEGER NOT NULL,"                     /* ms since the epoch */
    "  started_at    INTEGER,"
    "  finished_at   INTEGER,"
    "  run_after     INTEGER NOT NULL DEFAULT 0,"
    "  idem_key      TEXT UNIQUE,"
    "  owner         INTEGER"                               /* pid of the worker running it */
    ");"
    /* the claim walks this partial index in order: no sort, no scan of old tasks;
     * run_after rides along so a delayed retry is skipped without reading its row */
    "CREATE INDEX tasks_pending ON tasks (priority DESC, id, run_after)"
    " WHERE state = 'pending';"
    "CREATE INDEX tasks_state ON tasks (state, id);"
    "CREATE INDEX tasks_kind ON tasks (kind, id);"
    "INSERT INTO meta (key, value) VALUES ('cursor_secret', lower(hex(randomblob(8))));",
};

#define N_MIGRATIONS ((int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]))
_Static_assert(N_MIGRATIONS == SCHEMA_VERSION, "one migration per schema version");

static int
user_version(sqlite3 *db, int *out)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int(st, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

int
schema_migrate(sqlite3 *db, char *err, size_t errlen)
{
    int version = 0;
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = user_version(db, &version);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "reading the schema version: %s", sqlite3_errmsg(db));
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    if (version > SCHEMA_VERSION) {
        snprintf(err, errlen, "database schema version %d is newer than this warmpool (%d)",
                 version, SCHEMA_VERSION);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return SQLITE_ERROR;
    }
    for (int v = version; v < SCHEMA_VERSION; v++) {
        char *msg = NULL;
        rc = sqlite3_exec(db, MIGRATIONS[v], NULL, NULL, &msg);
        if (rc != SQLITE_OK) {
            snprintf(err, errlen, "migration to version %d: %s", v + 1, msg ? msg : "?");
            sqlite3_free(msg);
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return rc;
        }
    }
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", SCHEMA_VERSION);
    rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "committing the schema: %s", sqlite3_errmsg(db));
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    return rc;
}
