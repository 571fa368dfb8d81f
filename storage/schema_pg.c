/* schema_pg.c -- PostgreSQL's tables, indexes, count triggers and their migrations.
 *
 * The same semantics as SQLite's schema 2 (schema.c), in PostgreSQL's terms:
 *  - ids are a bigint identity: unique across every instance, never reused;
 *  - a pending task is ready (delayed = false, in tasks_ready by priority, then id) or
 *    waiting for its run_after (delayed = true, in tasks_delayed by run_after); claims
 *    promote the due ones first, so no claim steps over a waiting retry;
 *  - exact counts per (state, kind) in task_counts, kept by statement-level triggers
 *    with transition tables, in the statement that changes the tasks. Many hosts must
 *    not all update one hot row: the counts are sharded. A transaction adds its changes
 *    to one shard of PG_COUNT_SHARDS, one that no other transaction holds (an advisory
 *    lock per shard, tried from pg_backend_pid() % shards on), so two transactions never
 *    wait for, nor deadlock on, the same count rows. A reader sums the shards (a few
 *    hundred rows at most). `running` is not kept (every task passes through it): it is
 *    counted from tasks_state_kind, at most one running task per worker;
 *  - instances: one row per live warmpool instance, its lease by the database's clock.
 *
 * The version is meta.schema_version. Migration i (1-based) moves the database from
 * version i-1 to i; all pending ones run in one transaction, under the advisory lock
 * PG_LOCK_MIGRATE, from store_start() (the supervisor, once, at start). */
#include "storage/schema_pg.h"
#include "common/clock.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pg_step {
    const char *what;       /* for the progress log */
    const char *sql;        /* one or more statements, run as one simple query */
};

/* ---------------------------------------------------------------- version 1 */

static const struct pg_step PG_V1[] = {
    {"a key/value table for the store's own facts",
     "CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);"
     "INSERT INTO meta (key, value) VALUES"
     " ('cursor_secret', substr(md5(random()::text || clock_timestamp()::text), 1, 16));"},
    /* JSON as text, not jsonb: a task's input and result come back byte for byte as
     * submitted, and nothing parses them on the way. Times are milliseconds since the
     * epoch by the clock of the host that wrote them, as with SQLite; leases use the
     * database's clock (instances). A queue table churns: vacuum it early. */
    {"tasks",
     "CREATE TABLE tasks ("
     "  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
     "  kind           text    NOT NULL,"
     "  state          text    NOT NULL CHECK (state IN"
     "                 ('pending','running','succeeded','failed','canceled')),"
     "  priority       integer NOT NULL,"
     "  input          text    NOT NULL,"
     "  result         text,"
     "  error_code     text,"
     "  error_message  text,"
     "  attempts       integer NOT NULL DEFAULT 0,"
     "  max_attempts   integer NOT NULL,"
     "  timeout_ms     bigint  NOT NULL,"
     "  created_at     bigint  NOT NULL,"
     "  started_at     bigint,"
     "  finished_at    bigint,"
     "  run_after      bigint  NOT NULL DEFAULT 0,"
     "  delayed        boolean NOT NULL DEFAULT false,"
     "  idem_key       text,"
     "  owner_instance bigint,"             /* (instance, pid) of the worker running it */
     "  owner_pid      bigint"
     ") WITH (autovacuum_vacuum_scale_factor = 0.02,"
     "        autovacuum_vacuum_insert_scale_factor = 0.02,"
     "        autovacuum_analyze_scale_factor = 0.02);"},
    /* every statement of store_pg.c reads through one of these (test_store_pg checks
     * the plans): the claim and has_ready walk tasks_ready, the promotion and a
     * worker's sleep tasks_delayed, lists and the running tasks tasks_state_kind and
     * tasks_kind, the purge tasks_finished, idempotency keys tasks_idem */
    {"indexes",
     "CREATE INDEX tasks_ready ON tasks (priority DESC, id)"
     " WHERE state = 'pending' AND NOT delayed;"
     "CREATE INDEX tasks_delayed ON tasks (run_after) WHERE state = 'pending' AND delayed;"
     /* a claim that leaves some kinds alone (store_kind_set) reads the head of each other
      * kind here, never stepping over the ready tasks of the kinds it leaves alone.
      * -priority rather than priority DESC: an order that no other index gives, so that
      * the planner cannot walk another one instead (see SQL_CLAIM_SKIP) */
     "CREATE INDEX tasks_ready_kind ON tasks (kind, (-priority), id)"
     " WHERE state = 'pending' AND NOT delayed;"
     "CREATE INDEX tasks_state_kind ON tasks (state, kind, id);"
     "CREATE INDEX tasks_kind ON tasks (kind, id);"
     "CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;"
     "CREATE UNIQUE INDEX tasks_idem ON tasks (idem_key) WHERE idem_key IS NOT NULL;"},
    /* n may be negative in a shard (a task inserted in one and claimed in another):
     * only the sum over shards means something. fillfactor leaves room on each page for
     * the new versions of its rows (HOT updates, pruned without a vacuum). */
    {"counts per state and kind, sharded, kept by triggers",
     "CREATE TABLE task_counts ("
     "  state text NOT NULL, kind text NOT NULL, shard smallint NOT NULL,"
     "  n bigint NOT NULL, PRIMARY KEY (state, kind, shard)"
     ") WITH (fillfactor = 50);"
     /* this transaction's shard: the one it already holds, else the first free one
      * from pg_backend_pid() % shards on (waiting for that one only if all are held) */
     "CREATE FUNCTION task_counts_shard() RETURNS integer LANGUAGE plpgsql AS $$"
     " DECLARE held text := current_setting('warmpool.count_shard', true); k integer;"
     " BEGIN"
     "  IF held IS NOT NULL AND held <> '' THEN RETURN held::integer; END IF;"
     "  FOR i IN 0..31 LOOP"
     "   k := (pg_backend_pid() + i) % 32;"
     "   IF pg_try_advisory_xact_lock(22352, 1000 + k) THEN"
     "    PERFORM set_config('warmpool.count_shard', k::text, true);"
     "    RETURN k;"
     "   END IF;"
     "  END LOOP;"
     "  k := pg_backend_pid() % 32;"
     "  PERFORM pg_advisory_xact_lock(22352, 1000 + k);"
     "  PERFORM set_config('warmpool.count_shard', k::text, true);"
     "  RETURN k;"
     " END $$;"
     "CREATE FUNCTION task_counts_insert() RETURNS trigger LANGUAGE plpgsql AS $$"
     " BEGIN"
     "  INSERT INTO task_counts AS c (state, kind, shard, n)"
     "   SELECT state, kind, task_counts_shard(), count(*) FROM new_rows"
     "   WHERE state <> 'running' GROUP BY state, kind"
     "   ON CONFLICT (state, kind, shard) DO UPDATE SET n = c.n + EXCLUDED.n;"
     "  RETURN NULL;"
     " END $$;"
     "CREATE FUNCTION task_counts_update() RETURNS trigger LANGUAGE plpgsql AS $$"
     " BEGIN"
     "  INSERT INTO task_counts AS c (state, kind, shard, n)"
     "   SELECT state, kind, task_counts_shard(), sum(d) FROM ("
     "     SELECT state, kind, -1 AS d FROM old_rows WHERE state <> 'running'"
     "     UNION ALL SELECT state, kind, 1 FROM new_rows WHERE state <> 'running') AS x"
     "   GROUP BY state, kind HAVING sum(d) <> 0"
     "   ON CONFLICT (state, kind, shard) DO UPDATE SET n = c.n + EXCLUDED.n;"
     "  RETURN NULL;"
     " END $$;"
     "CREATE FUNCTION task_counts_delete() RETURNS trigger LANGUAGE plpgsql AS $$"
     " BEGIN"
     "  INSERT INTO task_counts AS c (state, kind, shard, n)"
     "   SELECT state, kind, task_counts_shard(), -count(*) FROM old_rows"
     "   WHERE state <> 'running' GROUP BY state, kind"
     "   ON CONFLICT (state, kind, shard) DO UPDATE SET n = c.n + EXCLUDED.n;"
     "  RETURN NULL;"
     " END $$;"
     "CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks"
     " REFERENCING NEW TABLE AS new_rows"
     " FOR EACH STATEMENT EXECUTE FUNCTION task_counts_insert();"
     "CREATE TRIGGER task_counts_update AFTER UPDATE ON tasks"
     " REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
     " FOR EACH STATEMENT EXECUTE FUNCTION task_counts_update();"
     "CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks"
     " REFERENCING OLD TABLE AS old_rows"
     " FOR EACH STATEMENT EXECUTE FUNCTION task_counts_delete();"},
    /* One row per instance. last_seen is renewed by its heartbeat, by the database's
     * clock; it is lost when last_seen + lease_ms passes. alive_since: when its current
     * run of heartbeats began (reset after a gap of more than 3 beats): an instance
     * only declares others lost once it has itself been heartbeating for their whole
     * lease, so that after an outage of the database nobody is found lost for a silence
     * nobody could end. lost_at: set by the instance that handed its running tasks back;
     * its next heartbeat (if it comes back) clears it. pidns: its host's boot id and
     * pid namespace, where its supervisor's pid means something. */
    {"instances",
     "CREATE TABLE instances ("
     "  id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
     "  name        text    NOT NULL,"
     "  host        text    NOT NULL,"
     "  pid         bigint  NOT NULL,"
     "  pidns       text    NOT NULL,"
     "  workers     integer NOT NULL,"
     "  lease_ms    bigint  NOT NULL,"
     "  beat_ms     bigint  NOT NULL,"
     "  started_at  bigint  NOT NULL,"
     "  last_seen   timestamptz NOT NULL DEFAULT clock_timestamp(),"
     "  alive_since timestamptz NOT NULL DEFAULT clock_timestamp(),"
     "  lost_at     timestamptz"
     ");"},
    {NULL, NULL},
};

/* ---------------------------------------------------------------- versions 2 to 4 */

/* The versions are numbered as SQLite's (schema.c), so that one number means one
 * feature set on both: PostgreSQL's version 1 already had what SQLite's 2 and 3 added. */
static const struct pg_step PG_V2[] = {{NULL, NULL}};
static const struct pg_step PG_V3[] = {{NULL, NULL}};
/* Issue 13, items 1-4, as SQLite's version 4 (schema.c): a retried task's previous error,
 * and the paused kinds, which every claim reads (a few rows at most). Nullable columns
 * and a new table: no rewrite of the tasks table. */
static const struct pg_step PG_V4[] = {
    {"tasks.previous_error_code, tasks.previous_error_message",
     "ALTER TABLE tasks ADD COLUMN previous_error_code text,"
     " ADD COLUMN previous_error_message text;"},
    {"paused kinds",
     "CREATE TABLE paused_kinds (kind text PRIMARY KEY, paused_at bigint NOT NULL);"},
    {NULL, NULL},
};

/* ---------------------------------------------------------------- version 5 */

/* Completion callbacks (issue 13), as SQLite's version 5 (schema.c): a delivery is due
 * once its task is terminal and callback_next_at has come; claims take it with
 * FOR UPDATE SKIP LOCKED and push callback_next_at on by a lease. */
static const struct pg_step PG_V5[] = {
    {"completion callbacks: tasks.callback_*, index tasks_callback",
     "ALTER TABLE tasks ADD COLUMN callback_url text,"
     " ADD COLUMN callback_state text,"
     " ADD COLUMN callback_attempts integer NOT NULL DEFAULT 0,"
     " ADD COLUMN callback_next_at bigint NOT NULL DEFAULT 0,"
     " ADD COLUMN callback_error text;"
     "CREATE INDEX tasks_callback ON tasks (callback_next_at)"
     " WHERE callback_state = 'pending' AND finished_at IS NOT NULL;"},
    {NULL, NULL},
};

/* ---------------------------------------------------------------- the checklist */

/* PG_MIGRATIONS[i] takes a database from version i to version i + 1 */
static const struct pg_step *const PG_MIGRATIONS[] = {PG_V1, PG_V2, PG_V3, PG_V4, PG_V5};

#define N_PG_MIGRATIONS ((int)(sizeof PG_MIGRATIONS / sizeof PG_MIGRATIONS[0]))
_Static_assert(N_PG_MIGRATIONS == PG_SCHEMA_VERSION, "one migration per schema version");

/* ---------------------------------------------------------------- running them */

static void report(schema_pg_progress_fn *progress, void *arg, int version, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
report(schema_pg_progress_fn *progress, void *arg, int version, const char *fmt, ...)
{
    if (progress == NULL)
        return;
    char line[512];
    int n = snprintf(line, sizeof line, "schema %d: ", version);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    progress(arg, line);
}

/* Runs sql (a simple query: several statements allowed). 0, or -1 with the error. */
static int
exec_sql(PGconn *conn, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *r = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok) {
        const char *m = r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(conn);
        snprintf(err, errlen, "%s: %.*s", what, (int)strcspn(m, "\n"), m);
    }
    PQclear(r);
    return ok ? 0 : -1;
}

/* The version recorded in meta (0 when there is no meta table yet). 0 or -1. Two
 * queries: a statement that names a table that does not exist fails to plan. */
static int
read_version(PGconn *conn, int *version, char *err, size_t errlen)
{
    *version = 0;
    PGresult *r = PQexec(conn, "SELECT to_regclass('meta') IS NOT NULL");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
        PQgetvalue(r, 0, 0)[0] != 't') {
        PQclear(r);
        return 0;
    }
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        PQclear(r);
        r = PQexec(conn, "SELECT value FROM meta WHERE key = 'schema_version'");
    }
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *m = r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(conn);
        snprintf(err, errlen, "reading the schema version: %.*s", (int)strcspn(m, "\n"), m);
        PQclear(r);
        return -1;
    }
    if (PQntuples(r) == 1)
        *version = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}

int
schema_pg_migrate(PGconn *conn, schema_pg_progress_fn *progress, void *arg, int *from,
                  char *err, size_t errlen)
{
    char sql[160];
    int version = 0;
    err[0] = '\0';
    *from = 0;
    /* no timeout for a migration: an upgrade of a large table takes what it takes */
    snprintf(sql, sizeof sql,
             "BEGIN; SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = 0;"
             " SELECT pg_advisory_xact_lock(%d, %d)", PG_LOCK_CLASS, PG_LOCK_MIGRATE);
    if (exec_sql(conn, sql, "locking the schema for migration", err, errlen) != 0 ||
        read_version(conn, &version, err, errlen) != 0) {
        PQclear(PQexec(conn, "ROLLBACK"));
        return -1;
    }
    *from = version;
    if (version > PG_SCHEMA_VERSION) {
        snprintf(err, errlen, "database schema version %d is newer than this warmpool (%d)",
                 version, PG_SCHEMA_VERSION);
        PQclear(PQexec(conn, "ROLLBACK"));
        return -1;
    }
    if (version == PG_SCHEMA_VERSION)
        return exec_sql(conn, "COMMIT", "reading the schema version", err, errlen);

    int quiet = version == 0;           /* a new database is made in a moment */
    int64_t t0 = clock_mono_ms();
    for (int v = version; v < PG_SCHEMA_VERSION; v++) {
        if (!quiet)
            report(progress, arg, v + 1, "upgrading from version %d", v);
        for (const struct pg_step *s = PG_MIGRATIONS[v]; s->what != NULL; s++) {
            int64_t t = clock_mono_ms();
            char what[256];
            snprintf(what, sizeof what, "migration to version %d, \"%s\"", v + 1, s->what);
            if (exec_sql(conn, s->sql, what, err, errlen) != 0) {
                PQclear(PQexec(conn, "ROLLBACK"));
                return -1;
            }
            if (!quiet)
                report(progress, arg, v + 1, "%s: done in %lld ms", s->what,
                       (long long)(clock_mono_ms() - t));
        }
    }
    snprintf(sql, sizeof sql,
             "INSERT INTO meta (key, value) VALUES ('schema_version', '%d')"
             " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value; COMMIT",
             PG_SCHEMA_VERSION);
    if (exec_sql(conn, sql, "committing the schema", err, errlen) != 0) {
        PQclear(PQexec(conn, "ROLLBACK"));
        return -1;
    }
    if (!quiet)
        report(progress, arg, PG_SCHEMA_VERSION, "upgraded from version %d in %lld ms", version,
               (long long)(clock_mono_ms() - t0));
    return 0;
}

int
schema_pg_check(PGconn *conn, char *err, size_t errlen)
{
    int version = 0;
    if (read_version(conn, &version, err, errlen) != 0)
        return -1;
    if (version == PG_SCHEMA_VERSION)
        return 0;
    if (version > PG_SCHEMA_VERSION)
        snprintf(err, errlen, "database schema version %d is newer than this warmpool (%d)",
                 version, PG_SCHEMA_VERSION);
    else if (version == 0)
        snprintf(err, errlen, "the database has no warmpool schema yet (version 0, this "
                 "warmpool needs %d): warmpool creates it when it starts", PG_SCHEMA_VERSION);
    else
        snprintf(err, errlen, "database schema version %d, this warmpool needs %d: the "
                 "database is upgraded when warmpool starts (once, by the supervisor), "
                 "not by this process", version, PG_SCHEMA_VERSION);
    return -1;
}
