/* store_sqlite.c -- the SQLite task store: the embedded implementation of store.h
 * (backend.h), one warmpool instance per database file.
 *
 * Invariants this file keeps:
 *  (1) Every statement is prepared once per connection and reset after every use,
 *      on every path (stmt_done()), so no read transaction is left open.
 *  (2) A task changes state only through a compare-and-set on its current state
 *      (and, out of `running`, its attempt number): see the WHERE clauses.
 *  (3) Claiming is one write transaction: two claimers can never get the same row.
 *  (4) SQLITE_BUSY is a normal outcome (STORE_BUSY), never an error to log as such.
 *  (5) Every statement reads only the rows it needs, through an index: no scan of
 *      the tasks table, no sort (tests/unit/test_store.c checks each query plan).
 *      The counts per (state, kind) live in task_counts, kept by triggers in the
 *      statement that changes a task (schema.c), so reading them costs the same at
 *      ten million tasks as at ten; `running` is counted from tasks_state_kind, where
 *      there is at most one running task per worker.
 *  (6) No constant IN (...) list on the path of a task: SQLite builds a temporary
 *      B-tree for one each time it runs (about 30,000 instructions); comparisons
 *      joined by OR / AND cost next to nothing.
 */
#include "storage/store_sqlite.h"
#include "storage/backend.h"
#include "storage/schema.h"
#include "common/clock.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- the SQL */

#define TASK_COLS                                                                     \
    "id, kind, state, priority, input, result, error_code, error_message, attempts, " \
    "max_attempts, timeout_ms, created_at, started_at, finished_at, run_after, "      \
    "previous_error_code, previous_error_message, "                                   \
    "callback_url, callback_state, callback_attempts, callback_error"
#define TASK_COLS_BRIEF                                                             \
    "id, kind, state, priority, NULL, NULL, error_code, error_message, attempts, " \
    "max_attempts, timeout_ms, created_at, started_at, finished_at, run_after, "    \
    "previous_error_code, previous_error_message, "                                 \
    "callback_url, callback_state, callback_attempts, callback_error"

/* the conflict target names the partial unique index of new databases; it matches
 * the version-1 UNIQUE index that upgraded databases keep just as well (schema.c) */
static const char SQL_INSERT[] =
    "INSERT INTO tasks (kind, state, priority, input, max_attempts, timeout_ms, created_at,"
    " idem_key, run_after, delayed, callback_url, callback_state)"
    " VALUES (?1, 'pending', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
    " ?10, CASE WHEN ?10 IS NULL THEN NULL ELSE 'pending' END)"
    " ON CONFLICT (idem_key) WHERE idem_key IS NOT NULL DO NOTHING RETURNING " TASK_COLS;
static const char SQL_GET[] = "SELECT " TASK_COLS " FROM tasks WHERE id = ?1";
/* completion callbacks (issue 13): a due delivery (a read first, so an idle deliverer
 * never takes the write lock), its claim (an attempt counted, hidden for a lease), and
 * how it ended (a compare-and-set on the attempt) */
static const char SQL_CB_DUE[] =
    "SELECT 1 FROM tasks INDEXED BY tasks_callback WHERE callback_state = 'pending'"
    " AND finished_at IS NOT NULL AND callback_next_at <= ?1 LIMIT 1";
static const char SQL_CB_CLAIM[] =
    "UPDATE tasks SET callback_attempts = callback_attempts + 1, callback_next_at = ?2"
    " WHERE id = (SELECT id FROM tasks INDEXED BY tasks_callback"
    "  WHERE callback_state = 'pending' AND finished_at IS NOT NULL AND callback_next_at <= ?1"
    "  ORDER BY callback_next_at LIMIT 1) RETURNING " TASK_COLS;
static const char SQL_CB_RECORD[] =
    "UPDATE tasks SET callback_state = ?3, callback_next_at = ?4, callback_error = ?5"
    " WHERE id = ?1 AND callback_attempts = ?2 AND callback_state = 'pending'";
static const char SQL_GET_BRIEF[] = "SELECT " TASK_COLS_BRIEF " FROM tasks WHERE id = ?1";
static const char SQL_GET_BY_KEY[] = "SELECT " TASK_COLS " FROM tasks WHERE idem_key = ?1";
static const char SQL_CANCEL[] =
    "UPDATE tasks SET state = 'canceled', finished_at = ?2"
    " WHERE id = ?1 AND state = 'pending' RETURNING " TASK_COLS;
/* Pending tasks are either ready (delayed = 0, in tasks_ready by priority, then id)
 * or waiting for their run_after (delayed = 1, in tasks_delayed by run_after). The
 * claim first moves the waiting ones that are due into tasks_ready (PROMOTE_BATCH at
 * most per claim), then takes the first ready one: neither steps over waiting tasks.
 * INDEXED BY: without ANALYZE statistics the planner may prefer another index and
 * sort (seen with version 1: 30 claims/s with 20,000 pending). */
#define PROMOTE_BATCH 100
static const char SQL_DUE[] =
    "SELECT 1 FROM tasks INDEXED BY tasks_delayed"
    " WHERE state = 'pending' AND delayed = 1 AND run_after <= ?1 LIMIT 1";
static const char SQL_HAS_READY[] =
    "SELECT EXISTS (SELECT 1 FROM tasks INDEXED BY tasks_ready"
    "               WHERE state = 'pending' AND delayed = 0)"
    " OR EXISTS (SELECT 1 FROM tasks INDEXED BY tasks_delayed"
    "            WHERE state = 'pending' AND delayed = 1 AND run_after <= ?1)";
/* only when SQL_DUE found one: the IN (SELECT ...) costs a temporary B-tree */
static const char SQL_PROMOTE[] =
    "UPDATE tasks SET delayed = 0"
    " WHERE id IN (SELECT id FROM tasks INDEXED BY tasks_delayed"
    "              WHERE state = 'pending' AND delayed = 1 AND run_after <= ?1"
    "              ORDER BY run_after LIMIT ?2)";
/* A subquery, not UPDATE ... ORDER BY ... LIMIT: that needs a compile option that
 * not every SQLite build has. */
/* ?4 = 1: a held task of a batch (store.h): started_at is set when it is recorded */
static const char SQL_CLAIM[] =
    "UPDATE tasks SET state = 'running', attempts = attempts + 1,"
    /* the clock was read before the lock: never start before the task was created */
    " started_at = CASE WHEN ?4 THEN NULL ELSE max(?1, created_at) END,"
    " finished_at = NULL, owner = ?2"
    " WHERE id = (SELECT id FROM tasks INDEXED BY tasks_ready"
    "             WHERE state = 'pending' AND delayed = 0"
    "             ORDER BY priority DESC, id LIMIT 1)"
    " RETURNING " TASK_COLS;
/* A claim with kinds to skip: the kinds that have pending tasks (a few rows), then for
 * each one not skipped its best ready task (tasks_ready_kind, one seek), the best of
 * those compared in C, then that one taken by id. No step over the skipped kinds' tasks,
 * however many wait. */
static const char SQL_PENDING_KINDS[] =
    "SELECT kind FROM task_counts WHERE state = 'pending' AND n > 0";
static const char SQL_KIND_HEAD[] =
    "SELECT id, priority FROM tasks INDEXED BY tasks_ready_kind"
    " WHERE state = 'pending' AND delayed = 0 AND kind = ?1"
    " ORDER BY priority DESC, id LIMIT 1";
static const char SQL_CLAIM_ID[] =
    "UPDATE tasks SET state = 'running', attempts = attempts + 1,"
    " started_at = CASE WHEN ?4 THEN NULL ELSE max(?1, created_at) END,"
    " finished_at = NULL, owner = ?2"
    " WHERE id = ?3 AND state = 'pending' AND delayed = 0"
    " RETURNING " TASK_COLS;
static const char SQL_FINISH[] =
    "UPDATE tasks SET state = ?3, result = ?4, error_code = ?5, error_message = ?6,"
    " finished_at = ?7, run_after = ?8, delayed = ?9,"
    " previous_error_code = NULL, previous_error_message = NULL,"
    " started_at = coalesce(started_at, ?10)"       /* a held task's: when it began */
    " WHERE id = ?1 AND attempts = ?2 AND state = 'running'";
/* a held task handed back by its worker: pending as if never claimed (store.h) */
static const char SQL_UNCLAIM[] =
    "UPDATE tasks SET state = 'pending', attempts = attempts - 1, owner = NULL"
    " WHERE id = ?1 AND attempts = ?2 AND state = 'running' AND owner = ?3"
    " AND started_at IS NULL";
/* issue 13: retry from the dead, a compare-and-set on the state; the error moves to
 * previous_error_* (the triggers move the counts) */
static const char SQL_RETRY[] =
    "UPDATE tasks SET state = 'pending', attempts = 0, result = NULL,"
    " previous_error_code = error_code, previous_error_message = error_message,"
    " error_code = NULL, error_message = NULL, started_at = NULL, finished_at = NULL,"
    " run_after = 0, delayed = 0, owner = NULL,"
    /* a completion callback is made again when the retried task ends */
    " callback_state = CASE WHEN callback_url IS NULL THEN NULL ELSE 'pending' END,"
    " callback_attempts = 0, callback_next_at = 0, callback_error = NULL"
    " WHERE id = ?1 AND (state = 'failed' OR state = 'canceled') RETURNING " TASK_COLS;
static const char SQL_PAUSE[] =
    "INSERT INTO paused_kinds (kind, paused_at) VALUES (?1, ?2) ON CONFLICT (kind) DO NOTHING";
static const char SQL_RESUME[] = "DELETE FROM paused_kinds WHERE kind = ?1";
static const char SQL_PAUSED[] = "SELECT kind FROM paused_kinds ORDER BY kind";
/* a kind's running tasks, up to its limit (an index range, at most max entries) */
static const char SQL_RUNNING_OF_KIND[] =
    "SELECT count(*) FROM (SELECT 1 FROM tasks INDEXED BY tasks_state_kind"
    " WHERE state = 'running' AND kind = ?1 LIMIT ?2)";
/* by owner, not by the slot's task id: a worker can die between committing its claim
 * and telling the supervisor which task it took */
/* A task it held (started_at unset) and was not running (?5, its slot's task) goes back
 * as never claimed (store.h); the others are lost attempts. */
#define HELD_NOT_RUN "(started_at IS NULL AND id <> ?5)"
static const char SQL_RELEASE[] =
    "UPDATE tasks SET"
    " state = CASE WHEN " HELD_NOT_RUN " OR attempts < max_attempts"
    "  THEN 'pending' ELSE 'failed' END,"
    " finished_at = CASE WHEN " HELD_NOT_RUN " OR attempts < max_attempts"
    "  THEN NULL ELSE ?2 END,"
    " error_code = CASE WHEN " HELD_NOT_RUN " THEN error_code ELSE ?3 END,"
    " error_message = CASE WHEN " HELD_NOT_RUN " THEN error_message ELSE ?4 END,"
    " attempts = attempts - " HELD_NOT_RUN ", delayed = 0"
    " WHERE state = 'running' AND owner = ?1 RETURNING id, state, " HELD_NOT_RUN;
/* a held task (started_at unset) cannot be told from one that had begun: it goes back
 * as never claimed (store.h) */
static const char SQL_RECOVER[] =
    "UPDATE tasks SET"
    " state = CASE WHEN started_at IS NULL OR attempts < max_attempts"
    "  THEN 'pending' ELSE 'failed' END,"
    " finished_at = CASE WHEN started_at IS NULL OR attempts < max_attempts"
    "  THEN NULL ELSE ?1 END,"
    " error_code = CASE WHEN started_at IS NULL THEN error_code ELSE 'worker_lost' END,"
    " error_message = CASE WHEN started_at IS NULL THEN error_message"
    "  ELSE 'the service stopped while this task was running' END,"
    " attempts = attempts - (started_at IS NULL), delayed = 0"
    " WHERE state = 'running' RETURNING state, id";
/* when the next waiting retry becomes due: read when a worker is about to sleep */
static const char SQL_NEXT_RUN_AFTER[] =
    "SELECT run_after FROM tasks INDEXED BY tasks_delayed"
    " WHERE state = 'pending' AND delayed = 1 AND run_after > ?1"
    " ORDER BY run_after LIMIT 1";
/* retention: the oldest finished tasks first, a small batch at a time, so submissions
 * never wait long behind it */
static const char SQL_PURGE[] =
    "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks INDEXED BY tasks_finished"
    " WHERE finished_at < ?1 AND state <> 'pending' AND state <> 'running'"
    " ORDER BY finished_at LIMIT ?2)";
/* task_counts: a handful of rows (4 per kind); running tasks, at most one per worker,
 * from the index. One statement each: one snapshot. */
static const char SQL_COUNT[] =
    "SELECT state, sum(n) FROM task_counts GROUP BY state"
    " UNION ALL SELECT 'running', count(*) FROM tasks INDEXED BY tasks_state_kind"
    " WHERE state = 'running'";
static const char SQL_COUNT_PENDING[] =
    "SELECT coalesce(sum(n), 0) FROM task_counts WHERE state = 'pending'";
static const char SQL_COUNT_KINDS[] =
    "SELECT state, kind, n FROM task_counts WHERE n <> 0"
    " UNION ALL SELECT 'running', kind, count(*) FROM tasks INDEXED BY tasks_state_kind"
    " WHERE state = 'running' GROUP BY kind";
/* reads a table, so it opens a read transaction on the file (`SELECT 1` does not) */
static const char SQL_PING[] = "SELECT count(*) FROM meta";
static const char SQL_SECRET[] = "SELECT value FROM meta WHERE key = 'cursor_secret'";
/* Lists, newest first, one statement per filter so each walks its index from the
 * cursor and stops after the page. By state alone: tasks_state_kind holds each kind's
 * tasks of a state apart, so the store reads the page's ids from each kind that has
 * tasks in that state (task_counts says which) and merges them. */
static const char SQL_LIST_ALL[] =
    "SELECT " TASK_COLS_BRIEF " FROM tasks WHERE id < ?3 ORDER BY id DESC LIMIT ?4";
static const char SQL_LIST_KIND[] =
    "SELECT " TASK_COLS_BRIEF " FROM tasks INDEXED BY tasks_kind"
    " WHERE kind = ?2 AND id < ?3 ORDER BY id DESC LIMIT ?4";
static const char SQL_LIST_STATE_KIND[] =
    "SELECT " TASK_COLS_BRIEF " FROM tasks INDEXED BY tasks_state_kind"
    " WHERE state = ?1 AND kind = ?2 AND id < ?3 ORDER BY id DESC LIMIT ?4";
static const char SQL_LIST_STATE_KINDS[] =
    "SELECT kind FROM task_counts WHERE state = ?1 AND n > 0";
static const char SQL_LIST_RUNNING_KINDS[] =
    "SELECT DISTINCT kind FROM tasks INDEXED BY tasks_state_kind WHERE state = 'running'";
static const char SQL_LIST_STATE_IDS[] =
    "SELECT id FROM tasks INDEXED BY tasks_state_kind"
    " WHERE state = ?1 AND kind = ?2 AND id < ?3 ORDER BY id DESC LIMIT ?4";
/* A purge's commit waits for no fsync: the next submission's commit covers it.
 * Never prepared ahead: SQLite applies this pragma when it is prepared, not run. */
static const char SQL_SYNC_NORMAL[] = "PRAGMA synchronous = NORMAL";
static const char SQL_SYNC_FULL[] = "PRAGMA synchronous = FULL";
static const char SQL_SETTINGS[] =
    "SELECT s.synchronous, j.journal_mode FROM pragma_synchronous AS s,"
    " pragma_journal_mode AS j";

/* ---------------------------------------------------------------- the store */

static void sq_close(store *s);
static void sq_rollback(store *s);
static int64_t sq_count_pending(store *s);

enum stmt_id {
    S_INSERT, S_GET, S_GET_BRIEF, S_GET_BY_KEY, S_CANCEL, S_HAS_READY, S_DUE, S_PROMOTE,
    S_CLAIM, S_PENDING_KINDS, S_KIND_HEAD, S_CLAIM_ID, S_FINISH, S_UNCLAIM, S_RELEASE,
    S_RECOVER,
    S_NEXT_RUN_AFTER, S_PURGE, S_COUNT,
    S_COUNT_PENDING, S_COUNT_KINDS, S_LIST_ALL, S_LIST_KIND, S_LIST_STATE_KIND,
    S_LIST_STATE_KINDS, S_LIST_RUNNING_KINDS, S_LIST_STATE_IDS, S_PING, S_SECRET, S_BEGIN, S_BEGIN_READ, S_COMMIT, S_ROLLBACK,
    S_CB_DUE, S_CB_CLAIM, S_CB_RECORD,
    S_RETRY, S_PAUSE, S_RESUME, S_PAUSED, S_RUNNING_OF_KIND,
    S_COUNT_OF
};

static const struct {
    const char *name;       /* for sq_explain() */
    const char *sql;
} STMTS[S_COUNT_OF] = {
    [S_INSERT] = {"insert", SQL_INSERT},
    [S_GET] = {"get", SQL_GET},
    [S_GET_BRIEF] = {"get_brief", SQL_GET_BRIEF},
    [S_GET_BY_KEY] = {"get_by_key", SQL_GET_BY_KEY},
    [S_CANCEL] = {"cancel", SQL_CANCEL},
    [S_HAS_READY] = {"has_ready", SQL_HAS_READY},
    [S_DUE] = {"due", SQL_DUE},
    [S_PROMOTE] = {"promote", SQL_PROMOTE},
    [S_CLAIM] = {"claim", SQL_CLAIM},
    [S_PENDING_KINDS] = {"pending_kinds", SQL_PENDING_KINDS},
    [S_KIND_HEAD] = {"kind_head", SQL_KIND_HEAD},
    [S_CLAIM_ID] = {"claim_id", SQL_CLAIM_ID},
    [S_FINISH] = {"finish", SQL_FINISH},
    [S_UNCLAIM] = {"unclaim", SQL_UNCLAIM},
    [S_RELEASE] = {"release", SQL_RELEASE},
    [S_RECOVER] = {"recover", SQL_RECOVER},
    [S_NEXT_RUN_AFTER] = {"next_run_after", SQL_NEXT_RUN_AFTER},
    [S_PURGE] = {"purge", SQL_PURGE},
    [S_COUNT] = {"count", SQL_COUNT},
    [S_COUNT_PENDING] = {"count_pending", SQL_COUNT_PENDING},
    [S_COUNT_KINDS] = {"count_kinds", SQL_COUNT_KINDS},
    [S_LIST_ALL] = {"list_all", SQL_LIST_ALL},
    [S_LIST_KIND] = {"list_kind", SQL_LIST_KIND},
    [S_LIST_STATE_KIND] = {"list_state_kind", SQL_LIST_STATE_KIND},
    [S_LIST_STATE_KINDS] = {"list_state_kinds", SQL_LIST_STATE_KINDS},
    [S_LIST_RUNNING_KINDS] = {"list_running_kinds", SQL_LIST_RUNNING_KINDS},
    [S_LIST_STATE_IDS] = {"list_state_ids", SQL_LIST_STATE_IDS},
    [S_PING] = {"ping", SQL_PING},
    [S_SECRET] = {"secret", SQL_SECRET},
    [S_BEGIN] = {"begin", "BEGIN IMMEDIATE"},
    [S_BEGIN_READ] = {"begin_read", "BEGIN"},
    [S_COMMIT] = {"commit", "COMMIT"},
    [S_ROLLBACK] = {"rollback", "ROLLBACK"},
    [S_CB_DUE] = {"callback_due", SQL_CB_DUE},
    [S_CB_CLAIM] = {"callback_claim", SQL_CB_CLAIM},
    [S_CB_RECORD] = {"callback_record", SQL_CB_RECORD},
    [S_RETRY] = {"retry", SQL_RETRY},
    [S_PAUSE] = {"pause", SQL_PAUSE},
    [S_RESUME] = {"resume", SQL_RESUME},
    [S_PAUSED] = {"paused", SQL_PAUSED},
    [S_RUNNING_OF_KIND] = {"running_of_kind", SQL_RUNNING_OF_KIND},
};

struct store {
    struct store_base base;     /* first: see backend.h */
    sqlite3 *db;
    int flags;                  /* STORE_RELAXED, STORE_MAINTAINER */
    char *path;
    int busy_ms;                /* lock budget of one call */
    int64_t busy_since_ms;      /* monotonic time the current wait for the lock began */
    sqlite3_stmt *st[S_COUNT_OF];
    const store_kind_limit *limits;     /* store_set_kind_limits(): borrowed */
    size_t nlimits;
    struct checkpointer *ckpt;  /* the maintainer's (see "checkpoints" below) */
};

/* Maps an SQLite result code to ours, and records the message. */
static int
fail(store *s, const char *what, int rc)
{
    snprintf(s->base.errmsg, sizeof s->base.errmsg, "%s: %s (%d)", what, sqlite3_errmsg(s->db), rc);
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return STORE_BUSY;
    case SQLITE_FULL:
        return STORE_FULL;
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
        return STORE_IOERR;
    case SQLITE_CONSTRAINT:
        return STORE_CONFLICT;
    default:
        return STORE_ERR;
    }
}

static void
stmt_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* SQLite's own busy handler sleeps in steps of up to 100 ms; under contention between
 * a few processes that wastes most of the budget. Sleep short, grow slowly, and give
 * up (SQLITE_BUSY -> STORE_BUSY) once the budget is spent. */
static int
busy_handler(void *arg, int count)
{
    store *s = arg;
    int64_t now = clock_mono_ms();
    if (count == 0)
        s->busy_since_ms = now;
    if (now - s->busy_since_ms >= s->busy_ms)
        return 0;
    long us = count < 20 ? 20 : count < 200 ? 100 : 1000;
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
    return 1;
}

static char *
col_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    if (t == NULL)
        return NULL;
    size_t n = (size_t)sqlite3_column_bytes(st, i);
    char *p = malloc(n + 1);
    if (p != NULL) {
        memcpy(p, t, n);
        p[n] = '\0';
    }
    return p;
}

/* Reads a row of TASK_COLS into *t. 0, or -1 when out of memory. */
static int
row_to_task(sqlite3_stmt *st, store_task *t)
{
    *t = (store_task){0};
    t->id = sqlite3_column_int64(st, 0);
    t->kind = col_dup(st, 1);
    const char *state = (const char *)sqlite3_column_text(st, 2);
    if (state == NULL || task_state_parse(state, &t->state) != 0)
        t->state = TASK_FAILED;     /* cannot happen: CHECK constraint */
    t->priority = sqlite3_column_int(st, 3);
    t->input = col_dup(st, 4);
    t->result = col_dup(st, 5);
    t->error_code = col_dup(st, 6);
    t->error_message = col_dup(st, 7);
    t->attempts = sqlite3_column_int(st, 8);
    t->max_attempts = sqlite3_column_int(st, 9);
    t->timeout_ms = sqlite3_column_int64(st, 10);
    t->created_at_ms = sqlite3_column_int64(st, 11);
    t->started_at_ms = sqlite3_column_int64(st, 12);
    t->finished_at_ms = sqlite3_column_int64(st, 13);
    t->run_after_ms = sqlite3_column_int64(st, 14);
    t->previous_error_code = col_dup(st, 15);
    t->previous_error_message = col_dup(st, 16);
    t->callback_url = col_dup(st, 17);
    const char *cb = (const char *)sqlite3_column_text(st, 18);
    for (int k = STORE_CB_PENDING; cb != NULL && k <= STORE_CB_FAILED; k++)
        if (strcmp(cb, store_callback_state_name(k)) == 0)
            t->callback_state = k;
    t->callback_attempts = sqlite3_column_int(st, 19);
    t->callback_error = col_dup(st, 20);
    if ((t->callback_url == NULL && sqlite3_column_type(st, 17) != SQLITE_NULL) ||
        (t->callback_error == NULL && sqlite3_column_type(st, 20) != SQLITE_NULL) ||
        (t->previous_error_code == NULL && sqlite3_column_type(st, 15) != SQLITE_NULL) ||
        (t->previous_error_message == NULL && sqlite3_column_type(st, 16) != SQLITE_NULL)) {
        store_task_clear(t);
        return -1;
    }
    if (t->kind == NULL || (t->input == NULL && sqlite3_column_type(st, 4) != SQLITE_NULL) ||
        (t->result == NULL && sqlite3_column_type(st, 5) != SQLITE_NULL)) {
        store_task_clear(t);
        return -1;
    }
    return 0;
}

/* Steps a statement expected to give at most one task row, then resets it.
 * STORE_OK with *t filled, `none` if no row came, or an error. */
static int
step_task(store *s, sqlite3_stmt *st, const char *what, store_task *t, int none)
{
    int rc, ret = none;
    *t = (store_task){0};
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (ret == STORE_OK)
            continue;           /* at most one row expected; drain to DONE */
        ret = row_to_task(st, t) == 0 ? STORE_OK : STORE_ERR;
        if (ret == STORE_ERR)
            snprintf(s->base.errmsg, sizeof s->base.errmsg, "%s: out of memory", what);
    }
    /* for a write, the statement commits only when it runs to DONE */
    if (rc != SQLITE_DONE) {
        ret = fail(s, what, rc);
        store_task_clear(t);
    }
    stmt_done(st);
    return ret;
}

/* Sets the connection up: busy handler and pragmas. SQLITE_OK or an error in err. */
static int
configure(sqlite3 *db, store *s, int relaxed, const char *path, char *err,
          size_t errlen)
{
    sqlite3_extended_result_codes(db, 1);
    if (s != NULL)
        sqlite3_busy_handler(db, busy_handler, s);
    else
        sqlite3_busy_timeout(db, 10000);
    char *msg = NULL;
    const char *pragmas = !relaxed
        ? "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;"
          "PRAGMA journal_size_limit = 67108864;"
        : "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY;"
          "PRAGMA journal_size_limit = 67108864;";
    int rc = sqlite3_exec(db, pragmas, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        snprintf(err, errlen, "setting up %s: %s", path, msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return rc;
}

static int
sq_migrate(const char *path, store_progress_fn *progress, void *arg, int *from, char *err,
              size_t errlen)
{
    sqlite3 *db = NULL;
    int version = 0;
    /* Task data is private: create the file 0600 ourselves (SQLite would make it 0644),
     * and SQLite gives the -wal and -shm files the database file's mode (issue 8).
     * O_EXCL: only a file that did not exist is opened (and closed) here. Closing any
     * descriptor of a file drops every POSIX lock the process holds on it, so closing
     * one on a database that this process's other connections have open and locked
     * would corrupt it (howtocorrupt §2.2). */
    int fd = strcmp(path, ":memory:") == 0
                 ? -1 : open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);              /* EEXIST is the usual case; other errors: SQLite says */
    int rc = sqlite3_open_v2(path, &db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "opening %s: %s", path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return STORE_IOERR;
    }
    rc = configure(db, NULL, 0, path, err, errlen);
    if (rc == SQLITE_OK)
        rc = schema_migrate(db, progress, arg, &version, err, errlen);
    if (rc == SQLITE_OK && version != 0 && version != SCHEMA_VERSION) {
        /* an upgrade wrote the new indexes through the WAL: copy them home now, so the
         * WAL starts small for the service */
        if (progress != NULL)
            progress(arg, "copying the upgrade into the database file (checkpoint)");
        int64_t t0 = clock_mono_ms();
        rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
        if (rc != SQLITE_OK)
            snprintf(err, errlen, "checkpoint after the upgrade: %s", sqlite3_errmsg(db));
        else if (progress != NULL) {
            char line[128];
            snprintf(line, sizeof line, "checkpoint done in %lld ms",
                     (long long)(clock_mono_ms() - t0));
            progress(arg, line);
        }
    }
    sqlite3_close(db);
    if (from != NULL)
        *from = version;
    if (rc == SQLITE_OK)
        return STORE_OK;
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return STORE_BUSY;
    case SQLITE_FULL:
        return STORE_FULL;
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
        return STORE_IOERR;
    default:
        return STORE_ERR;
    }
}

/* ---------------------------------------------------------------- checkpoints
 * A maintainer's connection (the HTTP process's writer) checkpoints inside its own
 * commits with SQLite's auto-checkpoint, every 1,000 WAL pages: the copy back and its
 * fsyncs, about 10 ms on this disk, land on one submission in a hundred. With
 * --durability normal that was the round trip's p99 (11-14 ms; p50 0.5), so a relaxed
 * maintainer has a thread, on a connection of its own, that does them instead: woken by the writer's commits
 * (sqlite3_wal_hook) once the WAL holds CKPT_FRAMES pages more than at its last
 * checkpoint, it runs a PASSIVE checkpoint, which never blocks a writer or a reader.
 * With STORE_RELAXED it also syncs the WAL at most RELAXED_SYNC_MS after a commit (of
 * any connection), so that power loss takes at most about the last second of commits.
 * A passive checkpoint alone is not enough: under constant writes it never finds the WAL
 * fully copied when a writer begins, so the WAL never starts again from its beginning (it
 * grew to 35-72 MB over 2,000 round trips, and the 32 MB truncation then stalled one
 * submission 53-590 ms). So once the WAL holds CKPT_RESTART_FRAMES pages, the passive pass
 * is followed by a RESTART: it holds new writers back only while it copies the few pages
 * written since the passive pass and syncs the database file, waits for the readers still
 * in the WAL (with a short budget, ckpt_busy(): else it gives up and tries again at the
 * next wake-up), and the next writer starts the WAL again from its beginning.
 * The TRUNCATE of a WAL grown too large stays with sq_maintain(), as a safety net. */
#define CKPT_FRAMES 1000
#define CKPT_RESTART_FRAMES 4096
#define CKPT_BUSY_TRIES 40          /* 100 us each: a RESTART waits 4 ms at most per lock */
#define RELAXED_SYNC_MS 1000

struct checkpointer {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    int relaxed;
    sqlite3 *db;                /* its own connection */
    int wal_frames;             /* the WAL's size at the writer's last commit (the hook's) */
    atomic_int since;           /* pages written to the WAL since the last checkpoint */
    atomic_int syncs;           /* checkpoints since sq_maintain() last looked */
    atomic_int restarts;        /* RESTARTs done, and given up (busy) since then */
    atomic_int restarts_busy;
    atomic_int last_log, last_done;     /* the last one's WAL frames, and those copied */
};

static int
ckpt_wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    (void)db;
    (void)name;
    struct checkpointer *c = arg;
    /* a WAL that restarted from its beginning is smaller than before */
    int grew = frames >= c->wal_frames ? frames - c->wal_frames : frames;
    c->wal_frames = frames;
    if (atomic_fetch_add(&c->since, grew) + grew >= CKPT_FRAMES) {
        pthread_mutex_lock(&c->mu);
        pthread_cond_signal(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
    return SQLITE_OK;
}

/* The checkpointer's busy handler: a RESTART holds new writers back while it waits for
 * the readers, so it waits a little (CKPT_BUSY_TRIES x 100 us) and then gives up. */
static int
ckpt_busy(void *arg, int count)
{
    (void)arg;
    if (count >= CKPT_BUSY_TRIES)
        return 0;
    struct timespec ts = {0, 100 * 1000};
    nanosleep(&ts, NULL);
    return 1;
}

/* A number that changes with every commit of any connection, or -1. */
static int64_t
ckpt_data_version(sqlite3 *db)
{
    sqlite3_stmt *st;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA data_version", -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void *
ckpt_main(void *arg)
{
    struct checkpointer *c = arg;
    /* -1: the first look syncs whatever is there, even commits made before this thread
     * read the version (else those would wait for the next commit to be synced) */
    int64_t synced_ms = clock_mono_ms(), synced_version = -1;
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 250 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&c->cv, &c->mu, &until);
        if (c->stop)
            break;
        pthread_mutex_unlock(&c->mu);
        int due = atomic_load(&c->since) >= CKPT_FRAMES;
        int64_t now = clock_mono_ms(), seen = -1;
        if (!due && c->relaxed && now - synced_ms >= RELAXED_SYNC_MS)
            due = (seen = ckpt_data_version(c->db)) != synced_version;
        if (due) {
            int log = 0, done = 0;
            atomic_store(&c->since, 0);
            /* PASSIVE: copies what no reader still needs, syncing the WAL first */
            if (sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log,
                                          &done) == SQLITE_OK) {
                atomic_store(&c->last_log, log);
                atomic_store(&c->last_done, done);
                atomic_fetch_add(&c->syncs, 1);
                synced_ms = now;
                synced_version = seen >= 0 ? seen : ckpt_data_version(c->db);
                if (log >= CKPT_RESTART_FRAMES) {
                    int rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_RESTART,
                                                       &log, &done);
                    atomic_fetch_add(rc == SQLITE_OK ? &c->restarts : &c->restarts_busy, 1);
                }
            }
        }
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void
ckpt_stop(struct checkpointer *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    sqlite3_close(c->db);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Starts s's checkpointer: its connection, the writer's hook, the thread. */
static int
ckpt_start(store *s, char *err, size_t errlen)
{
    struct checkpointer *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->relaxed = (s->flags & STORE_RELAXED) != 0;
    atomic_init(&c->since, 0);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    int rc = sqlite3_open_v2(s->path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK)
        rc = configure(c->db, NULL, c->relaxed, s->path, err, errlen);
    else
        snprintf(err, errlen, "opening %s for checkpoints: %s", s->path, sqlite3_errstr(rc));
    if (rc == SQLITE_OK) {
        sqlite3_wal_autocheckpoint(c->db, 0);
        sqlite3_busy_handler(c->db, ckpt_busy, NULL);
    }
    if (rc != SQLITE_OK || pthread_create(&c->thread, NULL, ckpt_main, c) != 0) {
        if (rc == SQLITE_OK)
            snprintf(err, errlen, "starting the checkpoint thread: %s", strerror(errno));
        sqlite3_close(c->db);
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return -1;
    }
    s->ckpt = c;
    /* replaces SQLite's auto-checkpoint on this connection */
    sqlite3_wal_hook(s->db, ckpt_wal_hook, c);
    return 0;
}

static store *
sq_open(const char *path, int flags, int busy_ms, char *err, size_t errlen)
{
    store *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->base.ops = &store_sqlite_ops;
    s->flags = flags;
    if ((s->path = strdup(path)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    s->busy_ms = busy_ms > 0 ? busy_ms : 5000;
    /* no SQLITE_OPEN_CREATE: only sq_migrate() creates the database */
    int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "opening %s: %s", path,
                 s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        goto fail;
    }
    if (configure(s->db, s, flags & STORE_RELAXED, path, err, errlen) != SQLITE_OK)
        goto fail;
    if (schema_check(s->db, err, errlen) != SQLITE_OK)
        goto fail;
    for (int i = 0; i < S_COUNT_OF; i++) {
        rc = sqlite3_prepare_v3(s->db, STMTS[i].sql, -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                                NULL);
        if (rc != SQLITE_OK) {
            snprintf(err, errlen, "preparing %s: %s", STMTS[i].name, sqlite3_errmsg(s->db));
            goto fail;
        }
    }
    /* Only one connection checkpoints (SQLite runs one checkpoint at a time and fails
     * a second one at once, so with every connection checkpointing the WAL grew to
     * gigabytes under load): the maintainer, passively as the WAL grows, and with
     * TRUNCATE in sq_maintain(). With STORE_RELAXED its checkpointer thread does the
     * passive ones; a durable maintainer does them in its own commits, as SQLite's
     * auto-checkpoint (see "checkpoints" above: off its commits, they made every
     * durable round trip slower, p50 0.95 -> 1.2-1.45 ms, competing for the disk's
     * flushes). */
    sqlite3_wal_autocheckpoint(s->db, (flags & STORE_MAINTAINER) && !(flags & STORE_RELAXED)
                                          ? CKPT_FRAMES : 0);
    if ((flags & STORE_MAINTAINER) && (flags & STORE_RELAXED) && ckpt_start(s, err, errlen) != 0)
        goto fail;
    return s;
fail:
    sq_close(s);
    return NULL;
}

static void
sq_close(store *s)
{
    if (s == NULL)
        return;
    if (s->ckpt != NULL) {
        sqlite3_wal_hook(s->db, NULL, NULL);
        ckpt_stop(s->ckpt);
    }
    for (int i = 0; i < S_COUNT_OF; i++)
        sqlite3_finalize(s->st[i]);         /* NULL-safe */
    sqlite3_close(s->db);                   /* NULL-safe */
    free(s->path);
    free(s);
}

static int
sq_schema_version(store *s)
{
    sqlite3_stmt *st;
    int v = -1;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    return v;
}

static int
exec_stmt(store *s, enum stmt_id id)
{
    sqlite3_stmt *st = s->st[id];
    int rc = sqlite3_step(st);
    stmt_done(st);
    return rc == SQLITE_DONE ? STORE_OK : fail(s, STMTS[id].name, rc);
}

static int sq_begin(store *s) { return exec_stmt(s, S_BEGIN); }

static int
sq_commit(store *s)
{
    int ret = exec_stmt(s, S_COMMIT);
    if (ret != STORE_OK && !sqlite3_get_autocommit(s->db))
        sq_rollback(s);      /* a failed COMMIT may leave the transaction open */
    return ret;
}

static void
sq_rollback(store *s)
{
    if (!sqlite3_get_autocommit(s->db)) {
        sqlite3_step(s->st[S_ROLLBACK]);
        stmt_done(s->st[S_ROLLBACK]);
    }
}

/* Ends a read transaction begun with S_BEGIN_READ (nothing to keep: a COMMIT that
 * fails is followed by a ROLLBACK). */
static void
end_read(store *s)
{
    if (sqlite3_get_autocommit(s->db))
        return;
    if (sqlite3_step(s->st[S_COMMIT]) != SQLITE_DONE) {
        stmt_done(s->st[S_COMMIT]);
        sq_rollback(s);
        return;
    }
    stmt_done(s->st[S_COMMIT]);
}

static int
sq_insert(store *s, const store_new_task *nt, int64_t now_ms, store_task *out)
{
    sqlite3_stmt *st = s->st[S_INSERT];
    sqlite3_bind_text(st, 1, nt->kind, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, nt->priority);
    sqlite3_bind_text(st, 3, nt->input, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, nt->max_attempts);
    sqlite3_bind_int64(st, 5, nt->timeout_ms);
    sqlite3_bind_int64(st, 6, now_ms);
    if (nt->idem_key != NULL)
        sqlite3_bind_text(st, 7, nt->idem_key, -1, SQLITE_STATIC);
    /* a scheduled task waits in tasks_delayed until its time (a past one is ready) */
    sqlite3_bind_int64(st, 8, nt->run_after_ms > now_ms ? nt->run_after_ms : 0);
    sqlite3_bind_int(st, 9, nt->run_after_ms > now_ms);
    if (nt->callback_url != NULL)
        sqlite3_bind_text(st, 10, nt->callback_url, -1, SQLITE_STATIC);
    int ret = step_task(s, st, "insert", out, STORE_EXISTS);
    if (ret != STORE_EXISTS)
        return ret;
    /* ON CONFLICT DO NOTHING returned no row: the key was used before */
    sqlite3_stmt *byk = s->st[S_GET_BY_KEY];
    sqlite3_bind_text(byk, 1, nt->idem_key, -1, SQLITE_STATIC);
    ret = step_task(s, byk, "get by key", out, STORE_ERR);
    if (ret == STORE_OK)
        return STORE_EXISTS;
    if (ret == STORE_ERR)
        snprintf(s->base.errmsg, sizeof s->base.errmsg, "idempotency key conflict without a task");
    return ret;
}

static int
sq_callback_claim(store *s, int64_t now_ms, int64_t lease_ms, store_task *out)
{
    *out = (store_task){0};
    sqlite3_stmt *due = s->st[S_CB_DUE];
    sqlite3_bind_int64(due, 1, now_ms);
    int rc = sqlite3_step(due);
    int ret = rc == SQLITE_ROW ? STORE_OK : rc == SQLITE_DONE ? STORE_EMPTY
              : fail(s, "callback due", rc);
    stmt_done(due);
    if (ret != STORE_OK)
        return ret;
    sqlite3_stmt *st = s->st[S_CB_CLAIM];
    sqlite3_bind_int64(st, 1, now_ms);
    sqlite3_bind_int64(st, 2, now_ms + lease_ms);
    return step_task(s, st, "callback claim", out, STORE_EMPTY);
}

static int
sq_callback_record(store *s, int64_t id, int attempt, int state, int64_t next_at_ms,
                   const char *error)
{
    sqlite3_stmt *st = s->st[S_CB_RECORD];
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int(st, 2, attempt);
    sqlite3_bind_text(st, 3, store_callback_state_name(state), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, next_at_ms);
    if (error != NULL)
        sqlite3_bind_text(st, 5, error, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int ret = rc != SQLITE_DONE ? fail(s, "callback record", rc)
              : sqlite3_changes(s->db) == 1 ? STORE_OK : STORE_CONFLICT;
    stmt_done(st);
    return ret;
}

static int
sq_get(store *s, int64_t id, store_task *out)
{
    sqlite3_bind_int64(s->st[S_GET], 1, id);
    return step_task(s, s->st[S_GET], "get", out, STORE_NOTFOUND);
}

/* Steps a list statement (bound by the caller) into v[*got..cap). */
static int
list_rows(store *s, sqlite3_stmt *st, store_task *v, size_t cap, size_t *got)
{
    int rc, ret = STORE_OK;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && *got < cap) {
        if (row_to_task(st, &v[*got]) != 0) {
            snprintf(s->base.errmsg, sizeof s->base.errmsg, "list: out of memory");
            ret = STORE_ERR;
            break;
        }
        (*got)++;
    }
    if (ret == STORE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
        ret = fail(s, "list", rc);
    stmt_done(st);
    return ret;
}

static int
cmp_id_desc(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The kinds that have tasks in state (from task_counts, or for `running` from the
 * index): *kinds[*nk], each freed by the caller, then the array. */
static int
kinds_in_state(store *s, const char *state, char ***kinds, size_t *nk)
{
    int running = strcmp(state, "running") == 0;
    sqlite3_stmt *st = s->st[running ? S_LIST_RUNNING_KINDS : S_LIST_STATE_KINDS];
    size_t cap = 0;
    int rc, ret = STORE_OK;
    *kinds = NULL;
    *nk = 0;
    if (!running)
        sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*nk == cap) {
            cap = cap ? cap * 2 : 8;
            char **p = realloc(*kinds, cap * sizeof *p);
            if (p == NULL)
                break;
            *kinds = p;
        }
        if (((*kinds)[*nk] = col_dup(st, 0)) == NULL)
            break;
        (*nk)++;
    }
    if (rc == SQLITE_ROW) {
        snprintf(s->base.errmsg, sizeof s->base.errmsg, "list: out of memory");
        ret = STORE_ERR;
    } else if (rc != SQLITE_DONE) {
        ret = fail(s, "list kinds", rc);
    }
    stmt_done(st);
    return ret;
}

/* By state alone: each kind's newest ids of that state from tasks_state_kind (an
 * index read, no row), merged, then the rows of the page's ids. */
static int
list_by_state(store *s, const char *state, int64_t before, size_t want, store_task *v,
              size_t *got)
{
    char **kinds;
    size_t nk;
    int ret = kinds_in_state(s, state, &kinds, &nk);
    if (ret == STORE_OK && nk == 1) {
        sqlite3_stmt *st = s->st[S_LIST_STATE_KIND];
        sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, kinds[0], -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, before);
        sqlite3_bind_int64(st, 4, (int64_t)want);
        ret = list_rows(s, st, v, want, got);
    } else if (ret == STORE_OK && nk > 1) {
        int64_t *ids = malloc(nk * want * sizeof *ids);
        size_t nids = 0;
        sqlite3_stmt *st = s->st[S_LIST_STATE_IDS];
        if (ids == NULL) {
            snprintf(s->base.errmsg, sizeof s->base.errmsg, "list: out of memory");
            ret = STORE_ERR;
        }
        for (size_t k = 0; ret == STORE_OK && k < nk; k++) {
            int rc;
            sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, kinds[k], -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 3, before);
            sqlite3_bind_int64(st, 4, (int64_t)want);
            while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                ids[nids++] = sqlite3_column_int64(st, 0);
            if (rc != SQLITE_DONE)
                ret = fail(s, "list ids", rc);
            stmt_done(st);
        }
        if (ret == STORE_OK) {
            qsort(ids, nids, sizeof *ids, cmp_id_desc);
            sqlite3_stmt *g = s->st[S_GET_BRIEF];
            for (size_t i = 0; ret == STORE_OK && i < nids && *got < want; i++) {
                sqlite3_bind_int64(g, 1, ids[i]);
                ret = step_task(s, g, "list", &v[*got], STORE_NOTFOUND);
                if (ret == STORE_OK)
                    (*got)++;
                else if (ret == STORE_NOTFOUND)
                    ret = STORE_OK;     /* cannot happen inside one read transaction */
            }
        }
        free(ids);
    }
    for (size_t k = 0; k < nk; k++)
        free(kinds[k]);
    free(kinds);
    return ret;
}

static int
sq_list(store *s, const store_filter *f, store_task **items, size_t *n, int *more)
{
    *items = NULL;
    *n = 0;
    *more = 0;
    size_t want = (size_t)f->limit + 1;         /* one more tells whether more exist */
    int64_t before = f->before_id > 0 ? f->before_id : INT64_MAX;
    store_task *v = calloc(want, sizeof *v);
    if (v == NULL) {
        snprintf(s->base.errmsg, sizeof s->base.errmsg, "list: out of memory");
        return STORE_ERR;
    }
    const char *state = f->has_state ? task_state_name(f->state) : NULL;
    size_t got = 0;
    int ret;
    if (state != NULL && f->kind == NULL) {
        /* several statements: one read transaction, so they see the same tasks */
        int own = sqlite3_get_autocommit(s->db);
        ret = own ? exec_stmt(s, S_BEGIN_READ) : STORE_OK;
        if (ret == STORE_OK)
            ret = list_by_state(s, state, before, want, v, &got);
        if (own)
            end_read(s);
    } else {
        enum stmt_id which = state != NULL ? S_LIST_STATE_KIND
                           : f->kind != NULL ? S_LIST_KIND : S_LIST_ALL;
        sqlite3_stmt *st = s->st[which];
        if (state != NULL)
            sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
        if (f->kind != NULL)
            sqlite3_bind_text(st, 2, f->kind, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, before);
        sqlite3_bind_int64(st, 4, (int64_t)want);
        ret = list_rows(s, st, v, want, &got);
    }
    if (ret != STORE_OK) {
        for (size_t i = 0; i < got; i++)
            store_task_clear(&v[i]);
        free(v);
        return ret;
    }
    if (got == want) {
        *more = 1;
        store_task_clear(&v[--got]);
    }
    *items = v;
    *n = got;
    return STORE_OK;
}

static int
sq_cancel(store *s, int64_t id, int64_t now_ms, store_task *out)
{
    sqlite3_stmt *st = s->st[S_CANCEL];
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, now_ms);
    int ret = step_task(s, st, "cancel", out, STORE_NOTFOUND);
    if (ret != STORE_NOTFOUND)
        return ret;
    /* nothing canceled: either no such task, or it is no longer pending */
    ret = sq_get(s, id, out);
    return ret == STORE_OK ? STORE_CONFLICT : ret;
}

static int
in_set(const store_kind_set *set, const char *kind)
{
    for (size_t i = 0; i < set->n; i++)
        if (strcmp(set->names[i], kind) == 0)
            return 1;
    return 0;
}

/* The best ready task of a kind not in skip: its id into *id (0: none). STORE_OK, or an
 * error. Each kind with pending tasks costs one seek in tasks_ready_kind. */
static int
best_head(store *s, const store_kind_set *skip, int64_t *id)
{
    *id = 0;
    int64_t best_prio = 0;
    sqlite3_stmt *kinds = s->st[S_PENDING_KINDS], *head = s->st[S_KIND_HEAD];
    int rc;
    while ((rc = sqlite3_step(kinds)) == SQLITE_ROW) {
        const char *kind = (const char *)sqlite3_column_text(kinds, 0);
        if (kind == NULL || in_set(skip, kind))
            continue;
        /* the text stays valid until kinds steps again: head is reset before that */
        sqlite3_bind_text(head, 1, kind, -1, SQLITE_STATIC);
        int hr = sqlite3_step(head);
        if (hr == SQLITE_ROW) {
            int64_t hid = sqlite3_column_int64(head, 0), prio = sqlite3_column_int64(head, 1);
            if (*id == 0 || prio > best_prio || (prio == best_prio && hid < *id)) {
                *id = hid;
                best_prio = prio;
            }
        }
        stmt_done(head);
        if (hr != SQLITE_ROW && hr != SQLITE_DONE) {
            stmt_done(kinds);
            return fail(s, "kind_head", hr);
        }
    }
    stmt_done(kinds);
    return rc == SQLITE_DONE ? STORE_OK : fail(s, "pending_kinds", rc);
}

static int
sq_has_ready(store *s, int64_t now_ms, const store_kind_set *skip)
{
    if (skip != NULL && skip->n > 0) {
        /* a due retry of any kind: the claim promotes it (yes, once in vain if it is of
         * a kind skipped); then the heads of the kinds not skipped */
        sqlite3_stmt *due = s->st[S_DUE];
        sqlite3_bind_int64(due, 1, now_ms);
        int rc = sqlite3_step(due);
        stmt_done(due);
        if (rc == SQLITE_ROW)
            return 1;
        if (rc != SQLITE_DONE)
            return -fail(s, "due", rc);
        int64_t id;
        rc = best_head(s, skip, &id);
        return rc != STORE_OK ? -rc : id != 0;
    }
    sqlite3_stmt *st = s->st[S_HAS_READY];
    sqlite3_bind_int64(st, 1, now_ms);
    int rc = sqlite3_step(st);
    int yes = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    stmt_done(st);
    if (rc == SQLITE_ROW)
        return yes != 0;
    return -fail(s, "has_ready", rc);
}

/* The kinds a claim leaves alone: the caller's (borrowed), the paused ones and those
 * at their concurrency limit (copies, freed by excl_free). Read inside the claim's
 * write transaction: with one writer at a time, what it reads stays true until the
 * claim commits. */
struct excl {
    store_kind_set set;
    const char **names;
    char **owned;
    size_t nowned;
};

static void
excl_free(struct excl *x)
{
    for (size_t i = 0; i < x->nowned; i++)
        free(x->owned[i]);
    free(x->owned);
    free(x->names);
}

static int
excl_add(struct excl *x, size_t *cap, const char *kind)
{
    if (x->set.n == *cap) {
        size_t c = *cap ? *cap * 2 : 16;
        const char **n = realloc(x->names, c * sizeof *n);
        if (n == NULL)
            return -1;
        x->names = n;
        char **o = realloc(x->owned, c * sizeof *o);
        if (o == NULL)
            return -1;
        x->owned = o;
        *cap = c;
    }
    char *copy = strdup(kind);
    if (copy == NULL)
        return -1;
    x->owned[x->nowned++] = copy;
    x->names[x->set.n++] = copy;
    x->set.names = x->names;
    return 0;
}

/* Fills *x; *eff is skip itself when nothing is added (no allocation: the common case). */
static int
exclusions(store *s, const store_kind_set *skip, struct excl *x, const store_kind_set **eff)
{
    *x = (struct excl){0};
    *eff = skip;
    size_t cap = 0;
    int added = 0, rc;
    sqlite3_stmt *p = s->st[S_PAUSED];
    while ((rc = sqlite3_step(p)) == SQLITE_ROW) {
        const char *kind = (const char *)sqlite3_column_text(p, 0);
        if (kind == NULL)
            continue;
        if (!added++ && skip != NULL)
            for (size_t i = 0; i < skip->n; i++)
                if (excl_add(x, &cap, skip->names[i]) != 0)
                    goto oom;
        if (excl_add(x, &cap, kind) != 0)
            goto oom;
    }
    stmt_done(p);
    if (rc != SQLITE_DONE)
        return fail(s, "paused kinds", rc);
    for (size_t l = 0; l < s->nlimits; l++) {
        sqlite3_stmt *c = s->st[S_RUNNING_OF_KIND];
        sqlite3_bind_text(c, 1, s->limits[l].kind, -1, SQLITE_STATIC);
        sqlite3_bind_int(c, 2, s->limits[l].max);
        rc = sqlite3_step(c);
        int64_t running = rc == SQLITE_ROW ? sqlite3_column_int64(c, 0) : 0;
        stmt_done(c);
        if (rc != SQLITE_ROW)
            return fail(s, "running of kind", rc);
        if (running < s->limits[l].max)
            continue;
        if (!added++ && skip != NULL)
            for (size_t i = 0; i < skip->n; i++)
                if (excl_add(x, &cap, skip->names[i]) != 0)
                    goto oom;
        if (excl_add(x, &cap, s->limits[l].kind) != 0)
            goto oom;
    }
    if (added)
        *eff = &x->set;
    return STORE_OK;
oom:
    stmt_done(p);
    snprintf(s->base.errmsg, sizeof s->base.errmsg, "claim: out of memory");
    return STORE_ERR;
}

static int claim_skipping(store *s, int64_t now_ms, long owner, const store_kind_set *skip,
                          int held, store_task *out);

/* The claim, inside a write transaction: due waiting tasks become ready, then the
 * first ready one of a kind not left alone is taken. */
static int
claim_locked(store *s, int64_t now_ms, long owner, const store_kind_set *skip, int held,
             store_task *out)
{
    struct excl x;
    const store_kind_set *eff;
    *out = (store_task){0};
    int rc = exclusions(s, skip, &x, &eff);
    if (rc == STORE_OK)
        rc = claim_skipping(s, now_ms, owner, eff, held, out);
    excl_free(&x);
    return rc;
}

static int
claim_skipping(store *s, int64_t now_ms, long owner, const store_kind_set *skip, int held,
               store_task *out)
{
    sqlite3_stmt *due = s->st[S_DUE];
    sqlite3_bind_int64(due, 1, now_ms);
    int rc = sqlite3_step(due);
    stmt_done(due);
    if (rc == SQLITE_ROW) {
        sqlite3_stmt *p = s->st[S_PROMOTE];
        sqlite3_bind_int64(p, 1, now_ms);
        sqlite3_bind_int(p, 2, PROMOTE_BATCH);
        rc = sqlite3_step(p);
        stmt_done(p);
    }
    if (rc != SQLITE_DONE)
        return fail(s, "promote", rc);
    if (skip != NULL && skip->n > 0) {
        int64_t id;
        rc = best_head(s, skip, &id);
        if (rc != STORE_OK || id == 0)
            return rc != STORE_OK ? rc : STORE_EMPTY;
        sqlite3_stmt *st = s->st[S_CLAIM_ID];
        sqlite3_bind_int64(st, 1, now_ms);
        sqlite3_bind_int64(st, 2, owner);
        sqlite3_bind_int64(st, 3, id);
        sqlite3_bind_int(st, 4, held);
        return step_task(s, st, "claim_id", out, STORE_EMPTY);
    }
    sqlite3_stmt *st = s->st[S_CLAIM];
    sqlite3_bind_int64(st, 1, now_ms);
    sqlite3_bind_int64(st, 2, owner);
    sqlite3_bind_int(st, 4, held);
    return step_task(s, st, "claim", out, STORE_EMPTY);
}

static int
sq_claim_next(store *s, int64_t now_ms, long owner, const store_kind_set *skip,
              store_task *out)
{
    if (!sqlite3_get_autocommit(s->db))     /* inside the caller's transaction */
        return claim_locked(s, now_ms, owner, skip, 0, out);
    *out = (store_task){0};
    int rc = sq_begin(s);
    if (rc != STORE_OK)
        return rc;
    rc = claim_locked(s, now_ms, owner, skip, 0, out);
    if (rc != STORE_OK && rc != STORE_EMPTY) {
        sq_rollback(s);
        return rc;
    }
    int c = sq_commit(s);
    if (c != STORE_OK) {
        store_task_clear(out);
        return c;
    }
    return rc;
}

static int
sq_finish(store *s, int64_t id, int attempt, const store_outcome *o)
{
    sqlite3_stmt *st = s->st[S_FINISH];
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int(st, 2, attempt);
    sqlite3_bind_text(st, 3, task_state_name(o->state), -1, SQLITE_STATIC);
    if (o->result != NULL)
        sqlite3_bind_text(st, 4, o->result, -1, SQLITE_STATIC);
    if (o->error_code != NULL)
        sqlite3_bind_text(st, 5, o->error_code, -1, SQLITE_STATIC);
    if (o->error_message != NULL)
        sqlite3_bind_text(st, 6, o->error_message, -1, SQLITE_STATIC);
    if (o->state != TASK_PENDING)
        sqlite3_bind_int64(st, 7, o->now_ms);
    int retry = o->state == TASK_PENDING;
    sqlite3_bind_int64(st, 8, retry ? o->run_after_ms : 0);
    /* a retry that must wait goes to tasks_delayed; one due already is ready */
    sqlite3_bind_int(st, 9, retry && o->run_after_ms > o->now_ms);
    if (o->started_ms > 0)
        sqlite3_bind_int64(st, 10, o->started_ms);
    int rc = sqlite3_step(st);
    stmt_done(st);
    if (rc != SQLITE_DONE)
        return fail(s, "finish", rc);
    if (sqlite3_changes(s->db) == 0) {
        snprintf(s->base.errmsg, sizeof s->base.errmsg,
                 "task %lld attempt %d is no longer running", (long long)id, attempt);
        return STORE_CONFLICT;
    }
    return STORE_OK;
}

static int
sq_finish_claim(store *s, int64_t id, int attempt, const store_outcome *o, int64_t now_ms,
                long owner, const store_kind_set *skip, store_task *next, int *claimed)
{
    *claimed = 0;
    *next = (store_task){0};
    int rc = sq_begin(s);
    if (rc != STORE_OK)
        return rc;
    int finished = sq_finish(s, id, attempt, o);
    if (finished != STORE_OK && finished != STORE_CONFLICT) {
        sq_rollback(s);
        return finished;
    }
    char why[sizeof s->base.errmsg];
    if (finished == STORE_CONFLICT)
        snprintf(why, sizeof why, "%s", s->base.errmsg);
    rc = claim_locked(s, now_ms, owner, skip, 0, next);
    if (rc != STORE_OK && rc != STORE_EMPTY) {
        sq_rollback(s);
        return rc;
    }
    int got = rc == STORE_OK;
    rc = sq_commit(s);
    if (rc != STORE_OK) {
        store_task_clear(next);
        return rc;
    }
    *claimed = got;
    if (finished == STORE_CONFLICT)
        snprintf(s->base.errmsg, sizeof s->base.errmsg, "%s", why);
    return finished;
}

/* store_record_batch(), inside the write transaction: the outcomes, the hand-backs, the
 * claims. STORE_OK or an error (the caller rolls back). */
static int
record_locked(store *s, store_done *done, size_t ndone, const store_claim_ref *back,
              size_t nback, int64_t now_ms, long owner, const store_kind_set *skip,
              size_t want, size_t share, store_task *next, size_t *nclaimed)
{
    for (size_t i = 0; i < ndone; i++) {
        done[i].rc = sq_finish(s, done[i].id, done[i].attempt, &done[i].o);
        if (done[i].rc != STORE_OK && done[i].rc != STORE_CONFLICT)
            return done[i].rc;
    }
    sqlite3_stmt *u = s->st[S_UNCLAIM];
    for (size_t i = 0; i < nback; i++) {
        sqlite3_bind_int64(u, 1, back[i].id);
        sqlite3_bind_int(u, 2, back[i].attempt);
        sqlite3_bind_int64(u, 3, owner);
        int rc = sqlite3_step(u);
        stmt_done(u);
        if (rc != SQLITE_DONE)
            return fail(s, "unclaim", rc);
    }
    if (want > 1) {
        /* the batch's share of what waits (task_counts: a few rows) */
        int64_t pending = sq_count_pending(s);
        if (pending < 0)
            return STORE_ERR;
        if ((size_t)pending / share < want)
            want = (size_t)pending / share > 0 ? (size_t)pending / share : 1;
    }
    /* a batch's tasks are all held: whichever runs when its worker dies is the one that
     * counts (the slot says which, store_release_lost) */
    int held = want > 1;
    for (size_t k = 0; k < want; k++) {
        int rc = claim_locked(s, now_ms, owner, skip, held, &next[k]);
        if (rc == STORE_EMPTY)
            break;
        if (rc != STORE_OK)
            return rc;
        (*nclaimed)++;
    }
    return STORE_OK;
}

static int
sq_record_batch(store *s, store_done *done, size_t ndone, const store_claim_ref *back,
                size_t nback, int64_t now_ms, long owner, const store_kind_set *skip,
                size_t want, size_t share, store_task *next, size_t *nclaimed)
{
    *nclaimed = 0;
    int rc = sq_begin(s);
    if (rc != STORE_OK)
        return rc;
    rc = record_locked(s, done, ndone, back, nback, now_ms, owner, skip, want, share, next,
                       nclaimed);
    if (rc == STORE_OK)
        rc = sq_commit(s);
    else
        sq_rollback(s);
    if (rc != STORE_OK) {
        for (size_t k = 0; k < *nclaimed; k++)
            store_task_clear(&next[k]);
        *nclaimed = 0;
    }
    return rc;
}

static int
sq_release_lost(store *s, long owner, int64_t running_id, int64_t now_ms, const char *code,
                const char *message, store_task_ref *released, size_t cap, size_t *n)
{
    sqlite3_stmt *st = s->st[S_RELEASE];
    *n = 0;
    sqlite3_bind_int64(st, 1, owner);
    sqlite3_bind_int64(st, 5, running_id);
    sqlite3_bind_int64(st, 2, now_ms);
    sqlite3_bind_text(st, 3, code ? code : "worker_lost", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, message ? message : "the worker running this task died", -1,
                      SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 1);
        if (*n < cap) {
            released[*n].id = sqlite3_column_int64(st, 0);
            released[*n].not_started = sqlite3_column_int(st, 2);
            if (name == NULL || task_state_parse(name, &released[*n].state) != 0)
                released[*n].state = TASK_FAILED;
            (*n)++;
        }
    }
    int ret = rc == SQLITE_DONE ? STORE_OK : fail(s, "release", rc);
    stmt_done(st);
    return ret;
}

static int
sq_recover_running(store *s, int64_t now_ms, int *requeued, int *failed, store_task_ref *refs,
                   size_t cap, size_t *n)
{
    sqlite3_stmt *st = s->st[S_RECOVER];
    *requeued = *failed = 0;
    *n = 0;
    sqlite3_bind_int64(st, 1, now_ms);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        int pending = name != NULL && strcmp(name, "pending") == 0;
        if (pending)
            (*requeued)++;
        else
            (*failed)++;
        if (*n < cap)
            refs[(*n)++] = (store_task_ref){sqlite3_column_int64(st, 1),
                                            pending ? TASK_PENDING : TASK_FAILED, 0};
    }
    int ret = rc == SQLITE_DONE ? STORE_OK : fail(s, "recover", rc);
    stmt_done(st);
    return ret;
}

static int
sq_count_states(store *s, int64_t counts[TASK_STATE_COUNT])
{
    sqlite3_stmt *st = s->st[S_COUNT];
    memset(counts, 0, sizeof(int64_t) * TASK_STATE_COUNT);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        enum task_state state;
        const char *name = (const char *)sqlite3_column_text(st, 0);
        if (name != NULL && task_state_parse(name, &state) == 0)
            counts[state] = sqlite3_column_int64(st, 1);
    }
    int ret = rc == SQLITE_DONE ? STORE_OK : fail(s, "count", rc);
    stmt_done(st);
    return ret;
}

static int
sq_count_kinds(store *s, store_kind_counts **out, size_t *n)
{
    sqlite3_stmt *st = s->st[S_COUNT_KINDS];
    store_kind_counts *v = NULL;
    size_t len = 0, cap = 0;
    int rc, ret = STORE_OK;
    *out = NULL;
    *n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        enum task_state state;
        const char *name = (const char *)sqlite3_column_text(st, 0);
        const char *kind = (const char *)sqlite3_column_text(st, 1);
        if (name == NULL || kind == NULL || task_state_parse(name, &state) != 0)
            continue;
        size_t i = 0;
        while (i < len && strcmp(v[i].kind, kind) != 0)
            i++;
        if (i == len) {
            if (len == cap) {
                cap = cap ? cap * 2 : 8;
                store_kind_counts *p = realloc(v, cap * sizeof *p);
                if (p == NULL)
                    break;
                v = p;
            }
            v[len] = (store_kind_counts){.kind = strdup(kind)};
            if (v[len].kind == NULL)
                break;
            len++;
        }
        v[i].n[state] = sqlite3_column_int64(st, 2);
    }
    if (rc == SQLITE_ROW) {
        snprintf(s->base.errmsg, sizeof s->base.errmsg, "count kinds: out of memory");
        ret = STORE_ERR;
    } else if (rc != SQLITE_DONE) {
        ret = fail(s, "count kinds", rc);
    }
    stmt_done(st);
    if (ret != STORE_OK) {
        store_kind_counts_free(v, len);
        return ret;
    }
    *out = v;
    *n = len;
    return STORE_OK;
}

static int64_t
sq_next_run_after(store *s, int64_t now_ms)
{
    sqlite3_stmt *st = s->st[S_NEXT_RUN_AFTER];
    int64_t t = 0;
    sqlite3_bind_int64(st, 1, now_ms);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        t = sqlite3_column_int64(st, 0);
    else if (rc != SQLITE_DONE)
        fail(s, "next run_after", rc);
    stmt_done(st);
    return t;
}

static int64_t
sq_count_pending(store *s)
{
    sqlite3_stmt *st = s->st[S_COUNT_PENDING];
    int64_t n = -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    else
        fail(s, "count pending", rc);
    stmt_done(st);
    return n;
}

static int
sq_purge(store *s, int64_t before_ms, int limit, int *deleted)
{
    *deleted = 0;
    /* no fsync for this commit (see store.h); the connection's mode comes back after */
    int relaxed = !(s->flags & STORE_RELAXED) && sqlite3_get_autocommit(s->db);
    int rc = relaxed ? sqlite3_exec(s->db, SQL_SYNC_NORMAL, NULL, NULL, NULL) : SQLITE_OK;
    if (rc != SQLITE_OK)
        return fail(s, "purge", rc);
    sqlite3_stmt *st = s->st[S_PURGE];
    sqlite3_bind_int64(st, 1, before_ms);
    sqlite3_bind_int(st, 2, limit);
    rc = sqlite3_step(st);
    stmt_done(st);
    int ret = rc == SQLITE_DONE ? STORE_OK : fail(s, "purge", rc);
    if (ret == STORE_OK)
        *deleted = sqlite3_changes(s->db);
    if (relaxed && (rc = sqlite3_exec(s->db, SQL_SYNC_FULL, NULL, NULL, NULL)) != SQLITE_OK &&
        ret == STORE_OK)
        ret = fail(s, "purge", rc);
    return ret;
}

static int
sq_explain(store *s, store_plan_fn *fn, void *arg)
{
    /* first the connection's own settings: how durable a commit is */
    sqlite3_stmt *set;
    int rc = sqlite3_prepare_v2(s->db, SQL_SETTINGS, -1, &set, NULL);
    if (rc != SQLITE_OK)
        return fail(s, "settings", rc);
    if ((rc = sqlite3_step(set)) == SQLITE_ROW) {
        static const char *const SYNC[] = {"OFF", "NORMAL", "FULL", "EXTRA"};
        int level = sqlite3_column_int(set, 0);
        char line[128];
        snprintf(line, sizeof line, "synchronous=%s journal_mode=%s\n",
                 level >= 0 && level < 4 ? SYNC[level] : "?",
                 (const char *)sqlite3_column_text(set, 1));
        fn(arg, "connection", line);
    }
    sqlite3_finalize(set);
    for (int i = 0; i < S_COUNT_OF; i++) {
        char sql[2048];
        snprintf(sql, sizeof sql, "EXPLAIN QUERY PLAN %s", STMTS[i].sql);
        sqlite3_stmt *st;
        rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
        if (rc != SQLITE_OK)
            return fail(s, STMTS[i].name, rc);
        char plan[4096] = "";
        size_t len = 0;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW && len < sizeof plan) {
            const char *detail = (const char *)sqlite3_column_text(st, 3);
            int n = snprintf(plan + len, sizeof plan - len, "%s\n", detail ? detail : "");
            len += n > 0 ? (size_t)n : 0;
        }
        sqlite3_finalize(st);
        /* temporary B-trees the plan does not show: constant IN lists, RETURNING */
        snprintf(sql, sizeof sql, "EXPLAIN %s", STMTS[i].sql);
        int ephemeral = 0;
        if ((rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL)) != SQLITE_OK)
            return fail(s, STMTS[i].name, rc);
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *op = (const char *)sqlite3_column_text(st, 1);
            ephemeral += op != NULL && strcmp(op, "OpenEphemeral") == 0;
        }
        sqlite3_finalize(st);
        if (ephemeral > 0 && len < sizeof plan)
            snprintf(plan + len, sizeof plan - len, "ephemeral tables: %d\n", ephemeral);
        if (plan[0] != '\0')
            fn(arg, STMTS[i].name, plan);
    }
    return STORE_OK;
}

static int64_t
sq_work(store *s)
{
    int64_t n = 0;
    for (int i = 0; i < S_COUNT_OF; i++)
        n += sqlite3_stmt_status(s->st[i], SQLITE_STMTSTATUS_VM_STEP, 1);
    return n;
}

static int
sq_checkpoint(store *s, int64_t *wal_frames)
{
    int log = 0, done = 0;
    /* TRUNCATE: wait for readers to move on, copy everything back, empty the WAL */
    int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, &log, &done);
    if (wal_frames != NULL)
        *wal_frames = log;
    return rc == SQLITE_OK ? STORE_OK : fail(s, "checkpoint", rc);
}

/* The WAL past this size is copied back and truncated by the maintainer. Under constant
 * load SQLite's own (passive) checkpoints cannot reset the WAL: someone is always
 * reading it, and at several tasks a second per worker it grows by ~25 KB a task. A
 * stat() is all a call costs when nothing is due. */
#define WAL_CHECK_BYTES (32LL * 1024 * 1024)

static int
sq_maintain(store *s, char *note, size_t notelen)
{
    int64_t now = clock_mono_ms();
    /* the checkpoints (and the WAL's syncs) are the checkpointer thread's: reported */
    note[0] = '\0';
    if (s->ckpt != NULL && atomic_exchange(&s->ckpt->syncs, 0) > 0) {
        int restarts = atomic_exchange(&s->ckpt->restarts, 0);
        int busy = atomic_exchange(&s->ckpt->restarts_busy, 0);
        snprintf(note, notelen, "WAL synced: %d of its %d frames in the database file; "
                 "restarted %d times (%d given up: readers)",
                 atomic_load(&s->ckpt->last_done), atomic_load(&s->ckpt->last_log),
                 restarts, busy);
    }
    char wal[4200];
    struct stat sb;
    snprintf(wal, sizeof wal, "%s-wal", s->path);
    if (stat(wal, &sb) != 0 || sb.st_size <= WAL_CHECK_BYTES)
        return STORE_OK;
    int64_t frames = 0, t0 = now;
    int rc = sq_checkpoint(s, &frames);
    if (rc == STORE_OK)
        snprintf(note, notelen, "checkpoint: WAL of %lld MB copied back and truncated in %lld ms",
                 (long long)(sb.st_size >> 20), (long long)(clock_mono_ms() - t0));
    return rc;
}

static int
sq_ping(store *s)
{
    /* drop this connection's page cache first, so the read goes to the file (or the
     * WAL) and not to pages cached before the database broke (issue 8) */
    sqlite3_db_release_memory(s->db);
    int rc = sqlite3_step(s->st[S_PING]);
    stmt_done(s->st[S_PING]);
    return rc == SQLITE_ROW ? STORE_OK : fail(s, "ping", rc);
}

static uint64_t
sq_secret(store *s)
{
    uint64_t v = 0;
    sqlite3_stmt *st = s->st[S_SECRET];
    if (sqlite3_step(st) == SQLITE_ROW) {
        const char *hex = (const char *)sqlite3_column_text(st, 0);
        if (hex != NULL)
            v = strtoull(hex, NULL, 16);
    }
    stmt_done(st);
    return v;
}

/* mkdir -p of the directory part of path; new directories are 0700 (less if the
 * umask says so): they hold task data */
static int
make_parent_dirs(const char *path, char *err, size_t errlen)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        snprintf(err, errlen, "database path too long");
        return -1;
    }
    char *slash = strrchr(buf, '/');
    if (slash == NULL || slash == buf)
        return 0;
    *slash = '\0';
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0700) != 0 && errno != EEXIST) {
                snprintf(err, errlen, "creating directory %s: %s", buf, strerror(errno));
                return -1;
            }
            *p = c;
            if (c == '\0')
                break;
        }
    }
    return 0;
}

/* store_lock */
int
store_lock(const char *db_path, int *fd_out, char *err, size_t errlen)
{
    char lock_path[4200];
    if (make_parent_dirs(db_path, err, errlen) != 0)
        return STORE_ERR;
    snprintf(lock_path, sizeof lock_path, "%s.lock", db_path);
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "opening lock file %s: %s", lock_path, strerror(errno));
        return STORE_ERR;
    }
    /* A warmpool whose supervisor was SIGKILLed leaves its children holding the
     * inherited lock for the moment they take to die (PR_SET_PDEATHSIG; a
     * multi-threaded child keeps its descriptors until its last thread exits).
     * So when the pid written in the lock file is dead, wait for them a while;
     * when it is alive (another instance), give up at once. */
    int64_t t0 = clock_mono_ms(), waited_ms = 0;
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char holder[32] = "";
        ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        if (e == EINTR)
            continue;
        long hp = strtol(holder, NULL, 10);
        bool holder_dead = hp > 0 && hp != (long)getpid() &&
                           kill((pid_t)hp, 0) != 0 && errno == ESRCH;
        waited_ms = clock_mono_ms() - t0;
        if (e == EWOULDBLOCK && holder_dead && waited_ms < STORE_LOCK_ORPHAN_WAIT_MS) {
            clock_sleep_ms(10);
            continue;
        }
        close(fd);
        if (e == EWOULDBLOCK) {
            if (holder_dead)
                snprintf(err, errlen,
                         "database %s is locked by processes left by a warmpool that died (pid %s), "
                         "still there after %lld ms: lock file %s",
                         db_path, holder, (long long)waited_ms, lock_path);
            else
                snprintf(err, errlen,
                         "database %s is locked by another warmpool (pid %s): lock file %s",
                         db_path, holder[0] ? holder : "?", lock_path);
            return STORE_LOCKED;
        }
        snprintf(err, errlen, "locking %s: %s", lock_path, strerror(e));
        return STORE_ERR;
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)len, 0) != len) {
        /* the pid is only a hint for the message above; the lock is what counts */
    }
    /* children inherit the lock on purpose: while any warmpool process of this
     * instance lives, no second instance may open the database */
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0)
        fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
    *fd_out = fd;
    return STORE_OK;
}

/* ---------------------------------------------------------------- the instance */

static int g_lock_fd = -1;      /* held by store_start() (and inherited by children) */

static void
sq_describe(const char *db, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s", db);
}

static int
sq_name_check(const char *db, char *err, size_t errlen)
{
    (void)db, (void)err, (void)errlen;
    return 0;
}

/* One instance per file: the lock, the schema, then what a previous run left running
 * (every running task: no other instance can have any). */
static int
sq_start(const char *db, store_instance *inst, store_progress_fn *progress, void *arg,
         store_start_report *rep, char *err, size_t errlen)
{
    *rep = (store_start_report){0};
    int fd = -1;
    int rc = store_lock(db, &fd, err, errlen);
    if (rc != STORE_OK)
        return rc;
    rc = sq_migrate(db, progress, arg, &rep->from_version, err, errlen);
    store *s = rc == STORE_OK ? sq_open(db, STORE_DURABLE, 5000, err, errlen) : NULL;
    if (s == NULL) {
        close(fd);
        return rc != STORE_OK ? rc : STORE_ERR;
    }
    rep->version = SCHEMA_VERSION;
    inst->id = 1;
    store_set_self(inst);
    rc = sq_recover_running(s, clock_now_ms(), &rep->requeued, &rep->failed, rep->recovered,
                            STORE_START_REFS, &rep->nrecovered);
    if (rc != STORE_OK)
        snprintf(err, errlen, "recovering tasks left running: %s", s->base.errmsg);
    sq_close(s);                /* before any fork */
    if (rc != STORE_OK) {
        close(fd);
        return rc;
    }
    g_lock_fd = fd;
    return STORE_OK;
}

static void
sq_instance_end(void)
{
    if (g_lock_fd >= 0)
        close(g_lock_fd);
    g_lock_fd = -1;
}

static int
sq_insert_batch(store *s, const store_new_task *nt, size_t n, int64_t now_ms, store_task *out,
                int *status)
{
    for (size_t i = 0; i < n; i++) {
        int rc = sq_insert(s, &nt[i], now_ms, &out[i]);
        if (rc != STORE_OK && rc != STORE_EXISTS) {
            for (size_t j = 0; j < i; j++)
                store_task_clear(&out[j]);
            return rc;
        }
        status[i] = rc;
    }
    return STORE_OK;
}

/* A file has one instance: nobody else to tell, nobody to rescue. */
static int
sq_heartbeat(store *s, int *live, int *was_lost)
{
    (void)s;
    *live = 1;
    *was_lost = 0;
    return STORE_OK;
}

static int
sq_rescue(store *s, int64_t now_ms, store_task_ref *refs, size_t cap, size_t *n, int *lost)
{
    (void)s, (void)now_ms, (void)refs, (void)cap;
    *n = 0;
    *lost = 0;
    return STORE_OK;
}

static int
sq_instances(store *s, store_instance **out, size_t *n)
{
    const store_instance *self = store_instance_self();
    *out = NULL;
    *n = 0;
    if (self == NULL)
        return STORE_OK;
    if ((*out = malloc(sizeof **out)) == NULL) {
        snprintf(s->base.errmsg, sizeof s->base.errmsg, "instances: out of memory");
        return STORE_ERR;
    }
    **out = *self;
    (*out)->last_seen_ms = clock_now_ms();
    *n = 1;
    return STORE_OK;
}

static int
sq_leave(store *s)
{
    (void)s;
    return STORE_OK;
}

static int
sq_listen(store *s)
{
    (void)s;
    return STORE_OK;
}

static int
sq_events_fd(store *s)
{
    (void)s;
    return -1;
}

static int
sq_events(store *s, store_event *ev, size_t cap, size_t *n)
{
    (void)s, (void)ev, (void)cap;
    *n = 0;
    return STORE_OK;
}

/* The file and its WAL: what the database takes on disk (-shm is a small index). */
/* ---------------------------------------------------------------- issue 13 */

static int
sq_retry(store *s, int64_t id, int64_t now_ms, store_task *out)
{
    (void)now_ms;
    sqlite3_stmt *st = s->st[S_RETRY];
    sqlite3_bind_int64(st, 1, id);
    int ret = step_task(s, st, "retry", out, STORE_NOTFOUND);
    if (ret != STORE_NOTFOUND)
        return ret;
    /* nothing changed: no such task, or it is not failed nor canceled (any more) */
    ret = sq_get(s, id, out);
    return ret == STORE_OK ? STORE_CONFLICT : ret;
}

static int
sq_kind_pause(store *s, const char *kind, int paused, int64_t now_ms, int *changed)
{
    sqlite3_stmt *st = s->st[paused ? S_PAUSE : S_RESUME];
    sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
    if (paused)
        sqlite3_bind_int64(st, 2, now_ms);
    int rc = sqlite3_step(st);
    stmt_done(st);
    if (rc != SQLITE_DONE)
        return fail(s, paused ? "pause" : "resume", rc);
    *changed = sqlite3_changes(s->db) > 0;
    return STORE_OK;
}

static int
sq_paused_kinds(store *s, char ***names, size_t *n)
{
    sqlite3_stmt *st = s->st[S_PAUSED];
    char **v = NULL;
    size_t len = 0, cap = 0;
    int rc;
    *names = NULL;
    *n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (len == cap) {
            cap = cap ? cap * 2 : 8;
            char **p = realloc(v, cap * sizeof *p);
            if (p == NULL)
                break;
            v = p;
        }
        if ((v[len] = col_dup(st, 0)) == NULL)
            break;
        len++;
    }
    stmt_done(st);
    if (rc != SQLITE_DONE) {
        store_names_free(v, len);
        if (rc == SQLITE_ROW) {
            snprintf(s->base.errmsg, sizeof s->base.errmsg, "paused kinds: out of memory");
            return STORE_ERR;
        }
        return fail(s, "paused kinds", rc);
    }
    *names = v;
    *n = len;
    return STORE_OK;
}

static int
sq_set_kind_limits(store *s, const store_kind_limit *limits, size_t n)
{
    s->limits = n > 0 ? limits : NULL;
    s->nlimits = n;
    return STORE_OK;
}

static int64_t
sq_size_bytes(store *s)
{
    const char *path = sqlite3_db_filename(s->db, "main");
    struct stat st;
    if (path == NULL || path[0] == '\0' || stat(path, &st) != 0)
        return -1;
    int64_t bytes = (int64_t)st.st_size;
    char wal[4200];
    if (snprintf(wal, sizeof wal, "%s-wal", path) < (int)sizeof wal && stat(wal, &st) == 0)
        bytes += (int64_t)st.st_size;
    return bytes;
}

const struct store_ops store_sqlite_ops = {
    .name = "sqlite",
    .migrate = sq_migrate,
    .start = sq_start,
    .instance_end = sq_instance_end,
    .describe = sq_describe,
    .name_check = sq_name_check,
    .open = sq_open,
    .close = sq_close,
    .schema_version = sq_schema_version,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .insert = sq_insert,
    .insert_batch = sq_insert_batch,
    .get = sq_get,
    .list = sq_list,
    .cancel = sq_cancel,
    .claim_next = sq_claim_next,
    .finish = sq_finish,
    .finish_claim = sq_finish_claim,
    .record_batch = sq_record_batch,
    .batch_max = 16,
    .release_lost = sq_release_lost,
    .recover_running = sq_recover_running,
    .count_states = sq_count_states,
    .count_kinds = sq_count_kinds,
    .has_ready = sq_has_ready,
    .next_run_after = sq_next_run_after,
    .count_pending = sq_count_pending,
    .purge = sq_purge,
    .maintain = sq_maintain,
    .ping = sq_ping,
    .secret = sq_secret,
    .size_bytes = sq_size_bytes,
    .explain = sq_explain,
    .work = sq_work,
    .heartbeat = sq_heartbeat,
    .rescue = sq_rescue,
    .instances = sq_instances,
    .leave = sq_leave,
    .listen = sq_listen,
    .events_fd = sq_events_fd,
    .events = sq_events,
    .callback_claim = sq_callback_claim,
    .callback_record = sq_callback_record,
    .retry = sq_retry,
    .kind_pause = sq_kind_pause,
    .paused_kinds = sq_paused_kinds,
    .set_kind_limits = sq_set_kind_limits,
};

