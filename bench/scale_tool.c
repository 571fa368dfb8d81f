/* scale_tool.c -- the scale benchmark's helper (bench/run.sh scale): fills a database
 * with finished tasks straight through SQL in the real schema (seconds per million,
 * not hours of HTTP), times the upgrade of a schema-1 database, and times claims
 * through the store with and without tasks waiting for their run_after.
 *
 *   scale_tool fill PATH N [--schema 1|2] [--days D]
 *       a new database at PATH (--schema 2: the current schema, 2 or later, through
 *       store_migrate; 1: the schema-1 SQL of the release before 2) holding N finished
 *       tasks, created over the last D days
 *       (10): kinds echo 70 %, sleep 20 %, scan 10 %; 98 % succeeded, 1 % failed, 1 %
 *       canceled; an idempotency key on one in 50
 *   scale_tool migrate PATH
 *       store_migrate() as the supervisor runs it; its progress lines on stderr
 *   scale_tool claims PATH --ready R --delayed D
 *       adds D tasks waiting for a retry a day away (SQL) and R ready ones (the
 *       store), then claims the R one at a time (a transaction each, as a worker does)
 *
 * Each prints one JSON object on stdout. Nothing here is part of warmpool itself. */
#include "common/clock.h"
#include "storage/store.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
die(const char *what, const char *why)
{
    fprintf(stderr, "scale_tool: %s: %s\n", what, why);
    exit(1);
}

static long long
file_size(const char *path, const char *suffix)
{
    char p[4200];
    struct stat sb;
    snprintf(p, sizeof p, "%s%s", path, suffix);
    return stat(p, &sb) == 0 ? (long long)sb.st_size : 0;
}

static void
exec_or_die(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        die(sql, msg ? msg : sqlite3_errmsg(db));
}

/* ---------------------------------------------------------------- fill */

/* The schema-1 SQL, as the release before schema 2 wrote it (git show
 * 8e7da98:storage/schema.c). */
static const char V1_SCHEMA[] =
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE tasks ("
    "  id            INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  kind          TEXT    NOT NULL,"
    "  state         TEXT    NOT NULL CHECK (state IN"
    "                ('pending','running','succeeded','failed','canceled')),"
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
    "  idem_key      TEXT UNIQUE,"
    "  owner         INTEGER"
    ");"
    "CREATE INDEX tasks_pending ON tasks (priority DESC, id, run_after)"
    " WHERE state = 'pending';"
    "CREATE INDEX tasks_state ON tasks (state, id);"
    "CREATE INDEX tasks_kind ON tasks (kind, id);"
    "INSERT INTO meta (key, value) VALUES ('cursor_secret', lower(hex(randomblob(8))));"
    "PRAGMA user_version = 1;";

/* ?1..?2: the task numbers; created at ?3 + i * ?4 (ms), finished 3 ms later */
static const char SQL_FILL[] =
    "WITH RECURSIVE c(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM c WHERE i < ?2)"
    " INSERT INTO tasks (kind, state, priority, input, result, error_code, error_message,"
    "  attempts, max_attempts, timeout_ms, created_at, started_at, finished_at, run_after,"
    "  idem_key, owner)"
    " SELECT CASE i % 10 WHEN 0 THEN 'scan' WHEN 1 THEN 'sleep' WHEN 2 THEN 'sleep'"
    "        ELSE 'echo' END,"
    "  CASE i % 100 WHEN 7 THEN 'failed' WHEN 13 THEN 'canceled' ELSE 'succeeded' END,"
    "  0, '{\"n\":' || i || '}',"
    "  CASE WHEN i % 100 IN (7, 13) THEN NULL ELSE '{\"n\":' || i || '}' END,"
    "  CASE WHEN i % 100 = 7 THEN 'task_failed' END,"
    "  CASE WHEN i % 100 = 7 THEN 'it failed' END,"
    "  CASE WHEN i % 100 = 13 THEN 0 ELSE 1 END, 1, 300000,"
    "  ?3 + i * ?4, CASE WHEN i % 100 = 13 THEN NULL ELSE ?3 + i * ?4 + 1 END,"
    "  ?3 + i * ?4 + 3, 0,"
    "  CASE WHEN i % 50 = 0 THEN printf('key-%010d', i) END, NULL"
    " FROM c";

#define FILL_CHUNK 500000

static int
cmd_fill(const char *path, long long n, int schema, double days)
{
    char err[1024];
    unlink(path);
    double t0 = now_s();
    if (schema == 2) {
        if (store_migrate(path, NULL, NULL, NULL, err, sizeof err) != STORE_OK)
            die("creating the database", err);
    }
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        die(path, sqlite3_errmsg(db));
    /* a fill is a benchmark's set-up: no journal, no fsync; WAL again at the end */
    exec_or_die(db, "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;"
                    " PRAGMA cache_size = -262144; PRAGMA locking_mode = EXCLUSIVE;");
    if (schema == 1)
        exec_or_die(db, V1_SCHEMA);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, SQL_FILL, -1, &st, NULL) != SQLITE_OK)
        die("fill", sqlite3_errmsg(db));
    int64_t span = (int64_t)(days * 86400000.0);
    int64_t first = clock_now_ms() - span, step = n > 0 ? span / n : 0;
    for (long long lo = 1; lo <= n; lo += FILL_CHUNK) {
        long long hi = lo + FILL_CHUNK - 1 < n ? lo + FILL_CHUNK - 1 : n;
        exec_or_die(db, "BEGIN");
        sqlite3_bind_int64(st, 1, lo);
        sqlite3_bind_int64(st, 2, hi);
        sqlite3_bind_int64(st, 3, first);
        sqlite3_bind_int64(st, 4, step);
        if (sqlite3_step(st) != SQLITE_DONE)
            die("fill", sqlite3_errmsg(db));
        sqlite3_reset(st);
        exec_or_die(db, "COMMIT");
        fprintf(stderr, "scale_tool: fill %s: %lld of %lld tasks, %.1f s\n", path, hi, n,
                now_s() - t0);
    }
    sqlite3_finalize(st);
    exec_or_die(db, "PRAGMA locking_mode = NORMAL; PRAGMA journal_mode = WAL;");
    sqlite3_close(db);
    printf("{\"fill\": {\"path\": \"%s\", \"tasks\": %lld, \"schema\": %d, \"days\": %g,"
           " \"seconds\": %.2f, \"db_bytes\": %lld, \"wal_bytes\": %lld}}\n",
           path, n, schema, days, now_s() - t0, file_size(path, ""), file_size(path, "-wal"));
    return 0;
}

/* ---------------------------------------------------------------- migrate */

static void
progress(void *arg, const char *line)
{
    double *t0 = arg;
    fprintf(stderr, "scale_tool: %6.1f s  %s\n", now_s() - *t0, line);
}

static int
cmd_migrate(const char *path)
{
    char err[1024];
    long long before = file_size(path, "");
    double t0 = now_s();
    int from = -1;
    if (store_migrate(path, progress, &t0, &from, err, sizeof err) != STORE_OK)
        die("migrate", err);
    double secs = now_s() - t0;
    store *s = store_open(path, STORE_RELAXED, 5000, err, sizeof err);
    if (s == NULL)
        die("open after the upgrade", err);
    int64_t c[TASK_STATE_COUNT];
    if (store_count_states(s, c) != STORE_OK)
        die("counts", store_errmsg(s));
    int64_t total = 0;
    for (int i = 0; i < TASK_STATE_COUNT; i++)
        total += c[i];
    store_close(s);
    printf("{\"migrate\": {\"path\": \"%s\", \"from\": %d, \"tasks\": %lld, \"seconds\": %.2f,"
           " \"db_bytes_before\": %lld, \"db_bytes\": %lld, \"wal_bytes\": %lld}}\n",
           path, from, (long long)total, secs, before, file_size(path, ""),
           file_size(path, "-wal"));
    return 0;
}

/* ---------------------------------------------------------------- claims */

/* ?1 tasks that failed their first attempt at ?2 and wait until ?3 */
static const char SQL_ADD_WAITING[] =
    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?1)"
    " INSERT INTO tasks (kind, state, priority, input, error_code, error_message, attempts,"
    "  max_attempts, timeout_ms, created_at, started_at, run_after, delayed)"
    " SELECT 'echo', 'pending', 0, '{}', 'task_failed', 'later', 1, 3, 300000, ?2, ?2, ?3, 1"
    " FROM c";

static int
cmd_claims(const char *path, int ready, int delayed)
{
    char err[1024];
    store *s = store_open(path, STORE_RELAXED, 5000, err, sizeof err);
    if (s == NULL)
        die("open", err);
    store_new_task nt = {.kind = "echo", .input = "{}", .max_attempts = 3,
                         .timeout_ms = 300000};
    store_task t;
    long owner = (long)getpid();
    double t0 = now_s();
    /* waiting retries (claimed once, failed, due in a day), written as the store
     * writes them, but with one statement */
    if (delayed > 0) {
        sqlite3 *db;
        if (sqlite3_open(path, &db) != SQLITE_OK)
            die(path, sqlite3_errmsg(db));
        sqlite3_busy_timeout(db, 10000);
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, SQL_ADD_WAITING, -1, &st, NULL) != SQLITE_OK)
            die("waiting tasks", sqlite3_errmsg(db));
        int64_t now = clock_now_ms();
        sqlite3_bind_int(st, 1, delayed);
        sqlite3_bind_int64(st, 2, now);
        sqlite3_bind_int64(st, 3, now + 86400000);
        if (sqlite3_step(st) != SQLITE_DONE)
            die("waiting tasks", sqlite3_errmsg(db));
        sqlite3_finalize(st);
        sqlite3_close(db);
    }
    if (store_begin(s) != STORE_OK)
        die("begin", store_errmsg(s));
    for (int i = 0; i < ready; i++) {
        if (store_insert(s, &nt, clock_now_ms(), &t) != STORE_OK)
            die("insert", store_errmsg(s));
        store_task_clear(&t);
    }
    if (store_commit(s) != STORE_OK)
        die("commit", store_errmsg(s));
    double added = now_s() - t0;

    store_work(s);
    t0 = now_s();
    int claimed = 0;
    for (;;) {
        int rc = store_claim_next(s, clock_now_ms(), owner, NULL, &t);
        if (rc == STORE_EMPTY)
            break;
        if (rc != STORE_OK)
            die("claim", store_errmsg(s));
        store_task_clear(&t);
        claimed++;
    }
    double secs = now_s() - t0;
    int64_t work = store_work(s);
    int64_t next = store_next_run_after(s, clock_now_ms());
    store_close(s);
    printf("{\"claims\": {\"path\": \"%s\", \"ready\": %d, \"delayed\": %d, \"claimed\": %d,"
           " \"seconds\": %.3f, \"claims_per_s\": %.0f, \"work_per_claim\": %.0f,"
           " \"setup_seconds\": %.1f, \"next_run_after_set\": %s}}\n",
           path, ready, delayed, claimed, secs, claimed / (secs > 0 ? secs : 1e-9),
           claimed ? (double)work / claimed : 0.0, added, next > 0 ? "true" : "false");
    return claimed == ready ? 0 : 1;
}

/* ---------------------------------------------------------------- main */

static void usage(void) __attribute__((noreturn));

static void
usage(void)
{
    fprintf(stderr, "usage: scale_tool fill PATH N [--schema 1|2] [--days D]\n"
                    "       scale_tool migrate PATH\n"
                    "       scale_tool claims PATH --ready R --delayed D\n");
    exit(2);
}

struct opts {
    int schema, ready, delayed;
    double days;
};

/* --name value pairs from argv[i] on */
static void
parse_opts(int argc, char **argv, int i, struct opts *o)
{
    for (; i < argc; i += 2) {
        if (i + 1 >= argc)
            usage();
        if (strcmp(argv[i], "--schema") == 0)
            o->schema = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--days") == 0)
            o->days = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--ready") == 0)
            o->ready = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--delayed") == 0)
            o->delayed = atoi(argv[i + 1]);
        else
            usage();
    }
}

int
main(int argc, char **argv)
{
    if (argc < 3)
        usage();
    const char *cmd = argv[1], *path = argv[2];
    struct opts o = {.schema = 2, .ready = 1000, .delayed = 0, .days = 10};
    if (strcmp(cmd, "fill") == 0 && argc >= 4) {
        parse_opts(argc, argv, 4, &o);
        if (o.schema != 1 && o.schema != 2)
            usage();
        return cmd_fill(path, atoll(argv[3]), o.schema, o.days);
    }
    if (strcmp(cmd, "migrate") == 0 && argc == 3)
        return cmd_migrate(path);
    if (strcmp(cmd, "claims") == 0) {
        parse_opts(argc, argv, 3, &o);
        return cmd_claims(path, o.ready, o.delayed);
    }
    usage();
    return 2;
}
