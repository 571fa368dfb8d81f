/* store.c -- the SQLite task store: all of warmpool's SQL, behind store.h.
 *
 * Invariants this file keeps:
 *  (1) Every statement is prepared once per connection and reset after every use,
 *      on every path (stmt_done()), so no read transaction is left open.
 *  (2) A task changes state only through a compare-and-set on its current state
 *      (and, out of `running`, its attempt number): see the WHERE clauses.
 *  (3) Claiming is one UPDATE ... RETURNING statement, i.e. one write transaction:
 *      two claimers can never get the same row.
 *  (4) SQLITE_BUSY is a normal outcome (STORE_BUSY), never an error to log as such.
 */
#include "storage/store.h"
#include "storage/schema.h"
#include "common/clock.h"

#include <errno.h>
#include <signal.h>
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
    "max_attempts, timeout_ms, created_at, started_at, finished_at, run_after"
#define TASK_COLS_BRIEF                                                             \
    "id, kind, state, priority, NULL, NULL, error_code, error_message, attempts, " \
    "max_attempts, timeout_ms, created_at, started_at, finished_at, run_after"

static const char SQL_INSERT[] =
    "INSERT INTO tasks (kind, state, priority, input, max_attempts, timeout_ms, created_at,"
    " idem_key) VALUES (?1, 'pending', ?2, ?3, ?4, ?5, ?6, ?7)"
    " ON CONFLICT (idem_key) DO NOTHING RETURNING " TASK_COLS;
static const char SQL_GET[] = "SELECT " TASK_COLS " FROM tasks WHERE id = ?1";
static const char SQL_GET_BY_KEY[] = "SELECT " TASK_COLS " FROM tasks WHERE idem_key = ?1";
static const char SQL_CANCEL[] =
    "UPDATE tasks SET state = 'canceled', finished_at = ?2"
    " WHERE id = ?1 AND state = 'pending' RETURNING " TASK_COLS;
/* INDEXED BY: without ANALYZE statistics the planner prefers tasks_state and sorts
 * every pending task for each claim (seen: 30 claims/s with 20,000 pending) */
static const char SQL_HAS_READY[] =
    "SELECT 1 FROM tasks INDEXED BY tasks_pending"
    " WHERE state = 'pending' AND run_after <= ?1 LIMIT 1";
/* A subquery, not UPDATE ... ORDER BY ... LIMIT: that needs a compile option that
 * not every SQLite build has. It walks tasks_pending in order (EXPLAIN QUERY PLAN:
 * SCAN tasks USING COVERING INDEX tasks_pending, no temp B-tree). */
static const char SQL_CLAIM[] =
    "UPDATE tasks SET state = 'running', attempts = attempts + 1,"
    /* the clock was read before the lock: never start before the task was created */
    " started_at = max(?1, created_at),"
    " finished_at = NULL, owner = ?2"
    " WHERE id = (SELECT id FROM tasks INDEXED BY tasks_pending"
    "             WHERE state = 'pending' AND run_after <= ?1"
    "             ORDER BY priority DESC, id LIMIT 1)"
    " RETURNING " TASK_COLS;
static const char SQL_FINISH[] =
    "UPDATE tasks SET state = ?3, result = ?4, error_code = ?5, error_message = ?6,"
    " finished_at = ?7, run_after = ?8"
    " WHERE id = ?1 AND attempts = ?2 AND state = 'running'";
/* by owner, not by the slot's task id: a worker can die between committing its claim
 * and telling the supervisor which task it took */
static const char SQL_RELEASE[] =
    "UPDATE tasks SET"
    " state = CASE WHEN attempts < max_attempts THEN 'pending' ELSE 'failed' END,"
    " finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE ?2 END,"
    " error_code = ?3, error_message = ?4"
    " WHERE state = 'running' AND owner = ?1 RETURNING id, state";
static const char SQL_RECOVER[] =
    "UPDATE tasks SET"
    " state = CASE WHEN attempts < max_attempts THEN 'pending' ELSE 'failed' END,"
    " finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE ?1 END,"
    " error_code = 'worker_lost',"
    " error_message = 'the service stopped while this task was running'"
    " WHERE state = 'running' RETURNING state";
/* when the next delayed retry becomes ready: read when a worker is about to sleep */
static const char SQL_NEXT_RUN_AFTER[] =
    "SELECT min(run_after) FROM tasks INDEXED BY tasks_pending"
    " WHERE state = 'pending' AND run_after > ?1";
static const char SQL_COUNT_PENDING[] =
    "SELECT count(*) FROM tasks INDEXED BY tasks_pending WHERE state = 'pending'";
/* retention: a small batch at a time, so submissions never wait long behind it */
static const char SQL_PURGE[] =
    "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks"
    " WHERE state IN ('succeeded', 'failed', 'canceled') AND finished_at < ?1 LIMIT ?2)";
static const char SQL_COUNT[] = "SELECT state, count(*) FROM tasks GROUP BY state";
/* reads a table, so it opens a read transaction on the file (`SELECT 1` does not) */
static const char SQL_PING[] = "SELECT count(*) FROM meta";
static const char SQL_SECRET[] = "SELECT value FROM meta WHERE key = 'cursor_secret'";
/* list: one statement for each filter combination, so each can use its index */
static const char *const SQL_LIST[4] = {
    "SELECT " TASK_COLS_BRIEF " FROM tasks WHERE id < ?3 ORDER BY id DESC LIMIT ?4",
    "SELECT " TASK_COLS_BRIEF " FROM tasks WHERE state = ?1 AND id < ?3"
    " ORDER BY id DESC LIMIT ?4",
    "SELECT " TASK_COLS_BRIEF " FROM tasks WHERE kind = ?2 AND id < ?3"
    " ORDER BY id DESC LIMIT ?4",
    "SELECT " TASK_COLS_BRIEF " FROM tasks WHERE state = ?1 AND kind = ?2 AND id < ?3"
    " ORDER BY id DESC LIMIT ?4",
};

/* ---------------------------------------------------------------- the store */

struct store {
    sqlite3 *db;
    int busy_ms;                /* lock budget of one call */
    int64_t busy_since_ms;      /* monotonic time the current wait for the lock began */
    sqlite3_stmt *insert, *get, *get_by_key, *cancel, *has_ready, *claim, *finish,
        *release, *recover, *count, *ping, *secret, *begin, *commit, *rollback,
        *count_pending, *purge, *next_run_after;
    sqlite3_stmt *list[4];
    char errmsg[512];
};

static const char *const STATE_NAMES[TASK_STATE_COUNT] = {
    "pending", "running", "succeeded", "failed", "canceled",
};

const char *
task_state_name(enum task_state st)
{
    return (unsigned)st < TASK_STATE_COUNT ? STATE_NAMES[st] : NULL;
}

int
task_state_parse(const char *name, enum task_state *out)
{
    for (int i = 0; i < TASK_STATE_COUNT; i++) {
        if (strcmp(name, STATE_NAMES[i]) == 0) {
            *out = (enum task_state)i;
            return 0;
        }
    }
    return -1;
}

void
store_task_clear(store_task *t)
{
    if (t == NULL)
        return;
    free(t->kind);
    free(t->input);
    free(t->result);
    free(t->error_code);
    free(t->error_message);
    *t = (store_task){0};
}

const char *
store_errmsg(const store *s)
{
    return s ? s->errmsg : "no store";
}

/* Maps an SQLite result code to ours, and records the message. */
static int
fail(store *s, const char *what, int rc)
{
    snprintf(s->errmsg, sizeof s->errmsg, "%s: %s (%d)", what, sqlite3_errmsg(s->db), rc);
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
            snprintf(s->errmsg, sizeof s->errmsg, "%s: out of memory", what);
    }
    /* for a write, the statement commits only when it runs to DONE */
    if (rc != SQLITE_DONE) {
        ret = fail(s, what, rc);
        store_task_clear(t);
    }
    stmt_done(st);
    return ret;
}

static int
prepare(store *s, const char *sql, sqlite3_stmt **st)
{
    int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
    return rc == SQLITE_OK ? STORE_OK : fail(s, "prepare", rc);
}

store *
store_open(const char *path, enum store_sync sync, int busy_ms, char *err, size_t errlen)
{
    store *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->busy_ms = busy_ms > 0 ? busy_ms : 5000;
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
    int rc = sqlite3_open_v2(path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "opening %s: %s", path,
                 s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_handler(s->db, busy_handler, s);
    char *msg = NULL;
    const char *pragmas = sync == STORE_SYNC_FULL
        ? "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;"
          "PRAGMA journal_size_limit = 67108864;"
        : "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY;"
          "PRAGMA journal_size_limit = 67108864;";
    rc = sqlite3_exec(s->db, pragmas, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "setting up %s: %s", path, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        goto fail;
    }
    if (schema_migrate(s->db, err, errlen) != SQLITE_OK)
        goto fail;

    struct { const char *sql; sqlite3_stmt **st; } stmts[] = {
        {SQL_INSERT, &s->insert}, {SQL_GET, &s->get}, {SQL_GET_BY_KEY, &s->get_by_key},
        {SQL_CANCEL, &s->cancel}, {SQL_HAS_READY, &s->has_ready}, {SQL_CLAIM, &s->claim},
        {SQL_FINISH, &s->finish}, {SQL_RELEASE, &s->release}, {SQL_RECOVER, &s->recover},
        {SQL_COUNT, &s->count}, {SQL_PING, &s->ping}, {SQL_SECRET, &s->secret},
        {"BEGIN IMMEDIATE", &s->begin}, {"COMMIT", &s->commit}, {"ROLLBACK", &s->rollback},
        {SQL_COUNT_PENDING, &s->count_pending}, {SQL_PURGE, &s->purge},
        {SQL_NEXT_RUN_AFTER, &s->next_run_after},
        {SQL_LIST[0], &s->list[0]}, {SQL_LIST[1], &s->list[1]},
        {SQL_LIST[2], &s->list[2]}, {SQL_LIST[3], &s->list[3]},
    };
    for (size_t i = 0; i < sizeof stmts / sizeof stmts[0]; i++) {
        if (prepare(s, stmts[i].sql, stmts[i].st) != STORE_OK) {
            snprintf(err, errlen, "%s", s->errmsg);
            goto fail;
        }
    }
    return s;
fail:
    store_close(s);
    return NULL;
}

void
store_close(store *s)
{
    if (s == NULL)
        return;
    sqlite3_stmt *all[] = {s->insert, s->get, s->get_by_key, s->cancel, s->has_ready,
                           s->claim, s->finish, s->release, s->recover, s->count, s->ping,
                           s->secret, s->begin, s->commit, s->rollback, s->count_pending,
                           s->purge, s->next_run_after, s->list[0],
                           s->list[1], s->list[2], s->list[3]};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        sqlite3_finalize(all[i]);          /* NULL-safe */
    sqlite3_close(s->db);                   /* NULL-safe */
    free(s);
}

int
store_schema_version(store *s)
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
exec_stmt(store *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    stmt_done(st);
    return rc == SQLITE_DONE ? STORE_OK : fail(s, what, rc);
}

int store_begin(store *s) { return exec_stmt(s, s->begin, "begin"); }

int
store_commit(store *s)
{
    int ret = exec_stmt(s, s->commit, "commit");
    if (ret != STORE_OK && !sqlite3_get_autocommit(s->db))
        store_rollback(s);      /* a failed COMMIT may leave the transaction open */
    return ret;
}

void
store_rollback(store *s)
{
    if (!sqlite3_get_autocommit(s->db)) {
        sqlite3_step(s->rollback);
        stmt_done(s->rollback);
    }
}

int
store_insert(store *s, const store_new_task *nt, int64_t now_ms, store_task *out)
{
    sqlite3_stmt *st = s->insert;
    sqlite3_bind_text(st, 1, nt->kind, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, nt->priority);
    sqlite3_bind_text(st, 3, nt->input, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, nt->max_attempts);
    sqlite3_bind_int64(st, 5, nt->timeout_ms);
    sqlite3_bind_int64(st, 6, now_ms);
    if (nt->idem_key != NULL)
        sqlite3_bind_text(st, 7, nt->idem_key, -1, SQLITE_STATIC);
    int ret = step_task(s, st, "insert", out, STORE_EXISTS);
    if (ret != STORE_EXISTS)
        return ret;
    /* ON CONFLICT DO NOTHING returned no row: the key was used before */
    sqlite3_bind_text(s->get_by_key, 1, nt->idem_key, -1, SQLITE_STATIC);
    ret = step_task(s, s->get_by_key, "get by key", out, STORE_ERR);
    if (ret == STORE_OK)
        return STORE_EXISTS;
    if (ret == STORE_ERR)
        snprintf(s->errmsg, sizeof s->errmsg, "idempotency key conflict without a task");
    return ret;
}

int
store_get(store *s, int64_t id, store_task *out)
{
    sqlite3_bind_int64(s->get, 1, id);
    return step_task(s, s->get, "get", out, STORE_NOTFOUND);
}

int
store_list(store *s, const store_filter *f, store_task **items, size_t *n, int *more)
{
    int which = (f->has_state ? 1 : 0) | (f->kind != NULL ? 2 : 0);
    sqlite3_stmt *st = s->list[which];
    *items = NULL;
    *n = 0;
    *more = 0;
    if (f->has_state)
        sqlite3_bind_text(st, 1, task_state_name(f->state), -1, SQLITE_STATIC);
    if (f->kind != NULL)
        sqlite3_bind_text(st, 2, f->kind, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, f->before_id > 0 ? f->before_id : INT64_MAX);
    sqlite3_bind_int(st, 4, f->limit + 1);     /* one more tells whether more exist */

    store_task *v = calloc((size_t)f->limit + 1, sizeof *v);
    if (v == NULL) {
        stmt_done(st);
        snprintf(s->errmsg, sizeof s->errmsg, "list: out of memory");
        return STORE_ERR;
    }
    int rc, ret = STORE_OK;
    size_t got = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (got == (size_t)f->limit) {
            *more = 1;
            continue;
        }
        if (row_to_task(st, &v[got]) != 0) {
            snprintf(s->errmsg, sizeof s->errmsg, "list: out of memory");
            ret = STORE_ERR;
            break;
        }
        got++;
    }
    if (ret == STORE_OK && rc != SQLITE_DONE)
        ret = fail(s, "list", rc);
    stmt_done(st);
    if (ret != STORE_OK) {
        for (size_t i = 0; i < got; i++)
            store_task_clear(&v[i]);
        free(v);
        *more = 0;
        return ret;
    }
    *items = v;
    *n = got;
    return STORE_OK;
}

int
store_cancel(store *s, int64_t id, int64_t now_ms, store_task *out)
{
    sqlite3_bind_int64(s->cancel, 1, id);
    sqlite3_bind_int64(s->cancel, 2, now_ms);
    int ret = step_task(s, s->cancel, "cancel", out, STORE_NOTFOUND);
    if (ret != STORE_NOTFOUND)
        return ret;
    /* nothing canceled: either no such task, or it is no longer pending */
    ret = store_get(s, id, out);
    return ret == STORE_OK ? STORE_CONFLICT : ret;
}

int
store_has_ready(store *s, int64_t now_ms)
{
    sqlite3_bind_int64(s->has_ready, 1, now_ms);
    int rc = sqlite3_step(s->has_ready);
    stmt_done(s->has_ready);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    return -fail(s, "has_ready", rc);
}

int
store_claim_next(store *s, int64_t now_ms, long owner, store_task *out)
{
    sqlite3_bind_int64(s->claim, 1, now_ms);
    sqlite3_bind_int64(s->claim, 2, owner);
    return step_task(s, s->claim, "claim", out, STORE_EMPTY);
}

int
store_finish(store *s, int64_t id, int attempt, const store_outcome *o)
{
    sqlite3_stmt *st = s->finish;
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
    sqlite3_bind_int64(st, 8, o->state == TASK_PENDING ? o->run_after_ms : 0);
    int rc = sqlite3_step(st);
    stmt_done(st);
    if (rc != SQLITE_DONE)
        return fail(s, "finish", rc);
    if (sqlite3_changes(s->db) == 0) {
        snprintf(s->errmsg, sizeof s->errmsg,
                 "task %lld attempt %d is no longer running", (long long)id, attempt);
        return STORE_CONFLICT;
    }
    return STORE_OK;
}

int
store_finish_claim(store *s, int64_t id, int attempt, const store_outcome *o, int64_t now_ms,
                   long owner, store_task *next, int *claimed)
{
    *claimed = 0;
    *next = (store_task){0};
    int rc = store_begin(s);
    if (rc != STORE_OK)
        return rc;
    int finished = store_finish(s, id, attempt, o);
    if (finished != STORE_OK && finished != STORE_CONFLICT) {
        store_rollback(s);
        return finished;
    }
    char why[sizeof s->errmsg];
    if (finished == STORE_CONFLICT)
        snprintf(why, sizeof why, "%s", s->errmsg);
    rc = store_claim_next(s, now_ms, owner, next);
    if (rc != STORE_OK && rc != STORE_EMPTY) {
        store_rollback(s);
        return rc;
    }
    int got = rc == STORE_OK;
    rc = store_commit(s);
    if (rc != STORE_OK) {
        store_task_clear(next);
        return rc;
    }
    *claimed = got;
    if (finished == STORE_CONFLICT)
        snprintf(s->errmsg, sizeof s->errmsg, "%s", why);
    return finished;
}

int
store_release_lost(store *s, long owner, int64_t now_ms, const char *code,
                   const char *message, store_task_ref *released, size_t cap, size_t *n)
{
    sqlite3_stmt *st = s->release;
    *n = 0;
    sqlite3_bind_int64(st, 1, owner);
    sqlite3_bind_int64(st, 2, now_ms);
    sqlite3_bind_text(st, 3, code ? code : "worker_lost", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, message ? message : "the worker running this task died", -1,
                      SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 1);
        if (*n < cap) {
            released[*n].id = sqlite3_column_int64(st, 0);
            if (name == NULL || task_state_parse(name, &released[*n].state) != 0)
                released[*n].state = TASK_FAILED;
            (*n)++;
        }
    }
    int ret = rc == SQLITE_DONE ? STORE_OK : fail(s, "release", rc);
    stmt_done(st);
    return ret;
}

int
store_recover_running(store *s, int64_t now_ms, int *requeued, int *failed)
{
    sqlite3_stmt *st = s->recover;
    *requeued = *failed = 0;
    sqlite3_bind_int64(st, 1, now_ms);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        if (name != NULL && strcmp(name, "pending") == 0)
            (*requeued)++;
        else
            (*failed)++;
    }
    int ret = rc == SQLITE_DONE ? STORE_OK : fail(s, "recover", rc);
    stmt_done(st);
    return ret;
}

int
store_count_states(store *s, int64_t counts[TASK_STATE_COUNT])
{
    sqlite3_stmt *st = s->count;
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

int64_t
store_next_run_after(store *s, int64_t now_ms)
{
    int64_t t = 0;
    sqlite3_bind_int64(s->next_run_after, 1, now_ms);
    int rc = sqlite3_step(s->next_run_after);
    if (rc == SQLITE_ROW)
        t = sqlite3_column_int64(s->next_run_after, 0);     /* NULL reads as 0 */
    else
        fail(s, "next run_after", rc);
    stmt_done(s->next_run_after);
    return t;
}

int64_t
store_count_pending(store *s)
{
    int64_t n = -1;
    int rc = sqlite3_step(s->count_pending);
    if (rc == SQLITE_ROW)
        n = sqlite3_column_int64(s->count_pending, 0);
    else
        fail(s, "count pending", rc);
    stmt_done(s->count_pending);
    return n;
}

int
store_purge(store *s, int64_t before_ms, int limit, int *deleted)
{
    *deleted = 0;
    sqlite3_bind_int64(s->purge, 1, before_ms);
    sqlite3_bind_int(s->purge, 2, limit);
    int rc = sqlite3_step(s->purge);
    stmt_done(s->purge);
    if (rc != SQLITE_DONE)
        return fail(s, "purge", rc);
    *deleted = sqlite3_changes(s->db);
    return STORE_OK;
}

void
store_set_autocheckpoint(store *s, int pages)
{
    sqlite3_wal_autocheckpoint(s->db, pages);
}

int
store_checkpoint(store *s, int64_t *wal_frames)
{
    int log = 0, done = 0;
    /* TRUNCATE: wait for readers to move on, copy everything back, empty the WAL */
    int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, &log, &done);
    if (wal_frames != NULL)
        *wal_frames = log;
    return rc == SQLITE_OK ? STORE_OK : fail(s, "checkpoint", rc);
}

int
store_ping(store *s)
{
    /* drop this connection's page cache first, so the read goes to the file (or the
     * WAL) and not to pages cached before the database broke (issue 8) */
    sqlite3_db_release_memory(s->db);
    int rc = sqlite3_step(s->ping);
    stmt_done(s->ping);
    return rc == SQLITE_ROW ? STORE_OK : fail(s, "ping", rc);
}

uint64_t
store_secret(store *s)
{
    uint64_t v = 0;
    if (sqlite3_step(s->secret) == SQLITE_ROW) {
        const char *hex = (const char *)sqlite3_column_text(s->secret, 0);
        if (hex != NULL)
            v = strtoull(hex, NULL, 16);
    }
    stmt_done(s->secret);
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

/* The file and its WAL: what the database takes on disk (-shm is a small index). */
int64_t
store_size_bytes(store *s)
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
