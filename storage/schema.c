/* schema.c -- the tables, the indexes and the migrations that create them.
 *
 * PRAGMA user_version holds the schema version. Migration i (1-based) moves the
 * database from version i-1 to i. All pending ones run in one BEGIN IMMEDIATE
 * transaction, only in schema_migrate(), which the supervisor calls once at start-up
 * before any child process exists; every other connection only checks the version
 * (schema_check). A migration is a list of steps, each named for the progress log. */
#include "storage/schema.h"
#include "common/clock.h"

#include <stdarg.h>
#include <stdio.h>

struct migration;
/* A step written in C, for what SQL alone cannot decide. */
typedef int step_fn(sqlite3 *db, struct migration *m);

struct step {
    const char *what;       /* for the progress log */
    const char *sql;        /* run with sqlite3_exec, or NULL when fn is set */
    step_fn *fn;
};

/* ---------------------------------------------------------------- version 1 */

static const struct step V1[] = {
    {"tasks, their indexes, and a key/value table for the store's own facts",
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
     NULL},
    {NULL, NULL, NULL},
};

/* ---------------------------------------------------------------- version 2 */

/* Version 1 declared idem_key UNIQUE, which indexes every row, keys or not. Dropping
 * that index means rebuilding the table: fine when it is empty (a new database goes
 * through version 1 a moment before), too slow for a large one (measured at 10^7
 * tasks: the copy and the extra index builds alone take over a minute). So a table
 * with rows keeps its version-1 index; an empty one is rebuilt with the partial
 * index. The insert's upsert target (idem_key) WHERE idem_key IS NOT NULL matches
 * either. The rebuilt table also checks `state` with comparisons instead of version
 * 1's IN list (the same constraint, cheaper to check). The sequence of ids carries
 * over: ids are never reused. */
static const char SQL_REBUILD_EMPTY_TASKS[] =
    "ALTER TABLE tasks RENAME TO tasks_v1;"
    "CREATE TABLE tasks ("
    "  id            INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  kind          TEXT    NOT NULL,"
    /* comparisons, not IN (...): SQLite builds a temporary B-tree for a constant IN
     * list each time it checks one, i.e. on every insert and state change */
    "  state         TEXT    NOT NULL CHECK (state = 'pending' OR state = 'running'"
    "                OR state = 'succeeded' OR state = 'failed' OR state = 'canceled'),"
    "  priority      INTEGER NOT NULL,"
    "  input         TEXT    NOT NULL,"
    "  result        TEXT,"
    "  error_code    TEXT,"
    "  error_message TEXT,"
    "  attempts      INTEGER NOT NULL DEFAULT 0,"
    "  max_attempts  INTEGER NOT NULL,"
    "  timeout_ms    INTEGER NOT NULL,"
    "  created_at    INTEGER NOT NULL,"
    "  started_at    INTEGER,"
    "  finished_at   INTEGER,"
    "  run_after     INTEGER NOT NULL DEFAULT 0,"
    "  idem_key      TEXT,"
    "  owner         INTEGER"
    ");"
    "INSERT INTO sqlite_sequence (name, seq)"
    " SELECT 'tasks', seq FROM sqlite_sequence WHERE name = 'tasks_v1';"
    "DROP TABLE tasks_v1;"
    "CREATE INDEX tasks_kind ON tasks (kind, id);"
    "CREATE UNIQUE INDEX tasks_idem ON tasks (idem_key) WHERE idem_key IS NOT NULL;";

static int run_sql(sqlite3 *db, struct migration *m, const char *sql);
static void report(struct migration *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
idem_keys_partial(sqlite3 *db, struct migration *m)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, "SELECT EXISTS (SELECT 1 FROM tasks)", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    int rows = 0;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        rows = sqlite3_column_int(st, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_OK)
        return rc;
    if (rows) {
        report(m, "the table holds tasks: idempotency keys keep their version-1 index");
        return SQLITE_OK;
    }
    return run_sql(db, m, SQL_REBUILD_EMPTY_TASKS);
}

static const struct step V2[] = {
    {"idempotency keys: a partial unique index (new databases)", NULL, idem_keys_partial},
    /* A pending task waiting for its run_after (a retry's backoff) is `delayed`:
     * it sits in tasks_delayed, ordered by run_after, and the claim moves the due ones
     * to tasks_ready first, so no claim steps over waiting tasks. */
    {"tasks.delayed",
     "ALTER TABLE tasks ADD COLUMN delayed INTEGER NOT NULL DEFAULT 0;"
     "UPDATE tasks SET delayed = 1 WHERE state = 'pending' AND run_after > 0;",
     NULL},
    /* lists by state, and by state and kind, newest first; (state, id) would cost
     * its own pages on every state change, so the state-only list merges the kinds */
    {"index tasks_state_kind (state, kind, id)",
     "CREATE INDEX tasks_state_kind ON tasks (state, kind, id);"
     "DROP INDEX IF EXISTS tasks_state;",
     NULL},
    {"index tasks_ready (priority DESC, id) of ready pending tasks",
     "CREATE INDEX tasks_ready ON tasks (priority DESC, id)"
     " WHERE state = 'pending' AND delayed = 0;",
     NULL},
    {"index tasks_delayed (run_after) of waiting pending tasks",
     "CREATE INDEX tasks_delayed ON tasks (run_after) WHERE state = 'pending' AND delayed = 1;"
     "DROP INDEX IF EXISTS tasks_pending;",
     NULL},
    /* retention deletes the oldest finished tasks first, reading nothing else. A task
     * has a finished_at exactly when it is terminal (every statement that ends a task
     * sets it; every one that makes it pending or running clears it), and IS NOT NULL
     * is cheap to check on each update, where a constant IN list is not (see above) */
    {"index tasks_finished (finished_at) of finished tasks",
     "CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;",
     NULL},
    /* Counts per (state, kind), exact: triggers change them in the statement (so the
     * transaction) that changes a task, whoever runs it. `running` is not kept: it is
     * read from tasks_state_kind, where running tasks are at most one per worker (and
     * every task passes through it, so keeping it would double the triggers' work). */
    {"counts per state and kind",
     "CREATE TABLE task_counts ("
     "  state TEXT NOT NULL, kind TEXT NOT NULL, n INTEGER NOT NULL,"
     "  PRIMARY KEY (state, kind)) WITHOUT ROWID;"
     "INSERT INTO task_counts (state, kind, n)"
     " SELECT state, kind, count(*) FROM tasks INDEXED BY tasks_state_kind"
     " WHERE state <> 'running' GROUP BY state, kind;"
     "CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks"
     " WHEN NEW.state <> 'running' BEGIN"
     "  INSERT INTO task_counts (state, kind, n) VALUES (NEW.state, NEW.kind, 1)"
     "   ON CONFLICT (state, kind) DO UPDATE SET n = n + 1;"
     " END;"
     "CREATE TRIGGER task_counts_leave AFTER UPDATE OF state, kind ON tasks"
     " WHEN OLD.state <> 'running' AND (OLD.state <> NEW.state OR OLD.kind <> NEW.kind)"
     " BEGIN"
     "  UPDATE task_counts SET n = n - 1 WHERE state = OLD.state AND kind = OLD.kind;"
     " END;"
     "CREATE TRIGGER task_counts_enter AFTER UPDATE OF state, kind ON tasks"
     " WHEN NEW.state <> 'running' AND (OLD.state <> NEW.state OR OLD.kind <> NEW.kind)"
     " BEGIN"
     "  INSERT INTO task_counts (state, kind, n) VALUES (NEW.state, NEW.kind, 1)"
     "   ON CONFLICT (state, kind) DO UPDATE SET n = n + 1;"
     " END;"
     "CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks"
     " WHEN OLD.state <> 'running' BEGIN"
     "  UPDATE task_counts SET n = n - 1 WHERE state = OLD.state AND kind = OLD.kind;"
     " END;",
     NULL},
    {NULL, NULL, NULL},
};

/* ---------------------------------------------------------------- version 3 */

static const struct step V3[] = {
    /* A claim that leaves some kinds alone (an exec kind whose child the worker lacks,
     * issue 11; a paused kind, issue 13) compares the head of each other kind with pending
     * tasks, one seek each, instead of stepping over the ready tasks of the kinds it
     * leaves alone in tasks_ready. */
    {"index tasks_ready_kind (kind, priority DESC, id) of ready pending tasks",
     "CREATE INDEX tasks_ready_kind ON tasks (kind, priority DESC, id)"
     " WHERE state = 'pending' AND delayed = 0;",
     NULL},
    {NULL, NULL, NULL},
};

/* ---------------------------------------------------------------- version 4 */

/* Issue 13, items 1-4. Scheduled tasks need nothing new: a task submitted with a
 * run_at is pending with delayed = 1 and its run_after, in tasks_delayed like a retry
 * waiting for its backoff. A retry from the dead keeps the error it had in
 * previous_error_* (until its next attempt ends). A paused kind is a row of
 * paused_kinds, read by every claim (a few rows at most). A kind's running tasks, for
 * its concurrency limit, are counted from tasks_state_kind. Adding nullable columns
 * and a table: no rewrite of the tasks table, however large. */
static const struct step V4[] = {
    {"tasks.previous_error_code, tasks.previous_error_message",
     "ALTER TABLE tasks ADD COLUMN previous_error_code TEXT;"
     "ALTER TABLE tasks ADD COLUMN previous_error_message TEXT;",
     NULL},
    {"paused kinds",
     "CREATE TABLE paused_kinds (kind TEXT PRIMARY KEY, paused_at INTEGER NOT NULL)"
     " WITHOUT ROWID;",
     NULL},
    {NULL, NULL, NULL},
};

/* ---------------------------------------------------------------- version 5 */

static const struct step V5[] = {
    /* Completion callbacks (issue 13): a task submitted with a callback_url has a
     * delivery, callback_state 'pending' until it is 'delivered' or 'failed'. It is due
     * once the task is terminal (finished_at set: every statement that ends a task sets
     * it, so none of them needs to know about callbacks) and callback_next_at has come;
     * a claim pushes callback_next_at on by a lease. tasks_callback holds only the
     * deliveries of finished tasks still to make, oldest due first. */
    {"completion callbacks: tasks.callback_*, index tasks_callback",
     "ALTER TABLE tasks ADD COLUMN callback_url TEXT;"
     "ALTER TABLE tasks ADD COLUMN callback_state TEXT;"
     "ALTER TABLE tasks ADD COLUMN callback_attempts INTEGER NOT NULL DEFAULT 0;"
     "ALTER TABLE tasks ADD COLUMN callback_next_at INTEGER NOT NULL DEFAULT 0;"
     "ALTER TABLE tasks ADD COLUMN callback_error TEXT;"
     "CREATE INDEX tasks_callback ON tasks (callback_next_at)"
     " WHERE callback_state = 'pending' AND finished_at IS NOT NULL;",
     NULL},
    {NULL, NULL, NULL},
};

/* ---------------------------------------------------------------- the checklist */

/* MIGRATIONS[i] takes a database from version i to version i + 1 */
static const struct step *const MIGRATIONS[] = {V1, V2, V3, V4, V5};

#define N_MIGRATIONS ((int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]))
_Static_assert(N_MIGRATIONS == SCHEMA_VERSION, "one migration per schema version");

/* ---------------------------------------------------------------- running them */

#define PROGRESS_EVERY_MS 5000      /* a "still working" line this often during a step */
#define PROGRESS_OPS 100000         /* SQLite calls the handler every this many VM steps */

struct migration {
    schema_progress_fn *progress;
    void *arg;
    int version;                    /* the one being built */
    const char *what;               /* the step being run */
    int64_t step_start_ms, last_report_ms;
    char *err;
    size_t errlen;
};

static void
report(struct migration *m, const char *fmt, ...)
{
    if (m->progress == NULL)
        return;
    char line[512];
    int n = snprintf(line, sizeof line, "schema %d: ", m->version);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    m->progress(m->arg, line);
}

/* sqlite3_progress_handler: tells how long the current step has run, now and then */
static int
on_progress(void *arg)
{
    struct migration *m = arg;
    int64_t now = clock_mono_ms();
    if (now - m->last_report_ms >= PROGRESS_EVERY_MS) {
        m->last_report_ms = now;
        report(m, "still at \"%s\" (%.0f s)", m->what, (double)(now - m->step_start_ms) / 1000);
    }
    return 0;
}

static int
run_sql(sqlite3 *db, struct migration *m, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        snprintf(m->err, m->errlen, "migration to version %d, \"%s\": %s", m->version, m->what,
                 msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return rc;
}

static int
run_steps(sqlite3 *db, struct migration *m, const struct step *steps, int quiet)
{
    for (const struct step *s = steps; s->what != NULL; s++) {
        m->what = s->what;
        m->step_start_ms = m->last_report_ms = clock_mono_ms();
        int rc = s->fn != NULL ? s->fn(db, m) : run_sql(db, m, s->sql);
        if (rc != SQLITE_OK) {
            if (m->err[0] == '\0')
                snprintf(m->err, m->errlen, "migration to version %d, \"%s\": %s", m->version,
                         s->what, sqlite3_errmsg(db));
            return rc;
        }
        if (!quiet)
            report(m, "%s: done in %lld ms", s->what,
                   (long long)(clock_mono_ms() - m->step_start_ms));
    }
    return SQLITE_OK;
}

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
schema_migrate(sqlite3 *db, schema_progress_fn *progress, void *arg, int *from, char *err,
               size_t errlen)
{
    int version = 0;
    err[0] = '\0';
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = user_version(db, &version);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "reading the schema version: %s", sqlite3_errmsg(db));
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    *from = version;
    if (version > SCHEMA_VERSION) {
        snprintf(err, errlen, "database schema version %d is newer than this warmpool (%d)",
                 version, SCHEMA_VERSION);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return SQLITE_ERROR;
    }
    if (version == SCHEMA_VERSION)
        return sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);

    /* a new database (version 0) is built in a moment: no step-by-step log */
    int quiet = version == 0;
    struct migration m = {.progress = progress, .arg = arg, .err = err, .errlen = errlen};
    int64_t t0 = clock_mono_ms();
    sqlite3_progress_handler(db, PROGRESS_OPS, on_progress, &m);
    for (int v = version; v < SCHEMA_VERSION && rc == SQLITE_OK; v++) {
        m.version = v + 1;
        if (!quiet)
            report(&m, "upgrading from version %d", v);
        rc = run_steps(db, &m, MIGRATIONS[v], quiet);
    }
    sqlite3_progress_handler(db, 0, NULL, NULL);
    if (rc == SQLITE_OK) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", SCHEMA_VERSION);
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            snprintf(err, errlen, "committing the schema: %s", sqlite3_errmsg(db));
    }
    if (rc != SQLITE_OK) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    if (!quiet) {
        m.version = SCHEMA_VERSION;
        report(&m, "upgraded from version %d in %lld ms", version,
               (long long)(clock_mono_ms() - t0));
    }
    return SQLITE_OK;
}

int
schema_check(sqlite3 *db, char *err, size_t errlen)
{
    int version = 0;
    int rc = user_version(db, &version);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "reading the schema version: %s", sqlite3_errmsg(db));
        return rc;
    }
    if (version == SCHEMA_VERSION)
        return SQLITE_OK;
    if (version > SCHEMA_VERSION)
        snprintf(err, errlen, "database schema version %d is newer than this warmpool (%d)",
                 version, SCHEMA_VERSION);
    else if (version == 0)
        snprintf(err, errlen, "the database has no warmpool schema yet (version 0, this "
                 "warmpool needs %d): warmpool creates it when it starts", SCHEMA_VERSION);
    else
        snprintf(err, errlen, "database schema version %d, this warmpool needs %d: the "
                 "database is upgraded when warmpool starts (once, by the supervisor), "
                 "not by this process", version, SCHEMA_VERSION);
    return SQLITE_ERROR;
}
