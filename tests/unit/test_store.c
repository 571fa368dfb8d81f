/* test_store.c -- the SQLite task store (storage/store.c, storage/schema.c) on real
 * database files, one fresh temporary directory per test. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "common/clock.h"
#include "storage/store.h"

#define BUSY_MS 5000

struct fixture {
    char dir[64];
    char path[128];
    store *s;
};

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/wp-unit-store-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof f->path, "%s/tasks.db", f->dir);
    *state = f;
    return 0;
}

/* What the supervisor does at start (store_migrate), then what every other process
 * does (store_open). NULL, with the reason printed, on failure. */
static store *
open_new(const char *path, enum store_sync sync)
{
    char err[512] = "";
    if (store_migrate(path, NULL, NULL, NULL, err, sizeof err) != STORE_OK) {
        fprintf(stderr, "store_migrate: %s\n", err);
        return NULL;
    }
    store *s = store_open(path, sync, BUSY_MS, err, sizeof err);
    if (s == NULL)
        fprintf(stderr, "store_open: %s\n", err);
    return s;
}

/* setup, then open the store */
static int
setup_open(void **state)
{
    if (setup(state) != 0)
        return -1;
    struct fixture *f = *state;
    f->s = open_new(f->path, STORE_SYNC_NORMAL);
    return f->s != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;
    store_close(f->s);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Inserts a task and returns its id. */
static int64_t
add(store *s, const char *kind, int priority, int max_attempts, const char *key,
    int64_t now_ms)
{
    store_new_task nt = {.kind = kind, .input = "{\"n\":1}", .priority = priority,
                         .max_attempts = max_attempts, .timeout_ms = 1000,
                         .idem_key = key};
    store_task t;
    assert_int_equal(store_insert(s, &nt, now_ms, &t), STORE_OK);
    int64_t id = t.id;
    store_task_clear(&t);
    return id;
}

static int64_t
claim(store *s, int64_t now_ms, long owner)
{
    store_task t;
    assert_int_equal(store_claim_next(s, now_ms, owner, &t), STORE_OK);
    int64_t id = t.id;
    store_task_clear(&t);
    return id;
}

static enum task_state
state_of(store *s, int64_t id)
{
    store_task t;
    assert_int_equal(store_get(s, id, &t), STORE_OK);
    enum task_state st = t.state;
    store_task_clear(&t);
    return st;
}

static void
finish_ok(store *s, int64_t id, int attempt, enum task_state st, int64_t now_ms)
{
    store_outcome o = {.state = st, .now_ms = now_ms};
    if (st == TASK_SUCCEEDED)
        o.result = "true";
    else {
        o.error_code = "task_failed";
        o.error_message = "boom";
    }
    assert_int_equal(store_finish(s, id, attempt, &o), STORE_OK);
}

/* The supervisor hands back the one task of a dead worker (owner). */
static void
release_one(store *s, long owner, int64_t now_ms)
{
    store_task_ref refs[4];
    size_t n = 99;
    assert_int_equal(store_release_lost(s, owner, now_ms, NULL, NULL, refs, 4, &n), STORE_OK);
    assert_int_equal(n, 1);
}

static int64_t
total_tasks(store *s)
{
    int64_t c[TASK_STATE_COUNT];
    assert_int_equal(store_count_states(s, c), STORE_OK);
    int64_t n = 0;
    for (int i = 0; i < TASK_STATE_COUNT; i++)
        n += c[i];
    return n;
}

/* ---------------------------------------------------------------- open, migrate */

static void
test_open_creates_and_migrates(void **state)
{
    struct fixture *f = *state;
    struct stat sb;
    assert_int_equal(stat(f->path, &sb), -1);
    /* store_open creates nothing: only the supervisor's store_migrate does */
    char err[512] = "";
    assert_null(store_open(f->path, STORE_SYNC_FULL, BUSY_MS, err, sizeof err));
    assert_non_null(strstr(err, f->path));
    assert_int_equal(stat(f->path, &sb), -1);

    int from = -1;
    assert_int_equal(store_migrate(f->path, NULL, NULL, &from, err, sizeof err), STORE_OK);
    assert_int_equal(from, 0);
    f->s = store_open(f->path, STORE_SYNC_FULL, BUSY_MS, err, sizeof err);
    assert_non_null(f->s);
    assert_int_equal(stat(f->path, &sb), 0);
    assert_int_equal(store_schema_version(f->s), 2);
    assert_int_equal(store_ping(f->s), STORE_OK);
    assert_int_equal(total_tasks(f->s), 0);
    assert_int_equal(store_has_ready(f->s, 0), 0);

    /* WAL mode is a property of the file: another connection sees it */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void
test_reopen_is_idempotent(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    f->s = open_new(f->path, STORE_SYNC_NORMAL);
    assert_non_null(f->s);
    int64_t id = add(f->s, "echo", 0, 1, "key-1", 1000);
    uint64_t secret = store_secret(f->s);
    assert_true(secret != 0);
    store_close(f->s);

    for (int round = 0; round < 2; round++) {
        int from = -1;
        assert_int_equal(store_migrate(f->path, NULL, NULL, &from, err, sizeof err), STORE_OK);
        assert_int_equal(from, 2);                      /* nothing to do */
        f->s = store_open(f->path, STORE_SYNC_NORMAL, BUSY_MS, err, sizeof err);
        assert_non_null(f->s);
        assert_int_equal(store_schema_version(f->s), 2);
        assert_int_equal(total_tasks(f->s), 1);
        assert_int_equal(state_of(f->s, id), TASK_PENDING);
        assert_true(store_secret(f->s) == secret);      /* the migration did not rerun */
        if (round == 0)
            store_close(f->s);
    }
}

static int
user_version_of(const char *path)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void
test_newer_schema_refused(void **state)
{
    struct fixture *f = *state;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    char err[256] = "";
    assert_int_equal(store_migrate(f->path, NULL, NULL, NULL, err, sizeof err), STORE_ERR);
    assert_non_null(strstr(err, "99"));
    assert_non_null(strstr(err, "newer"));
    err[0] = '\0';
    f->s = store_open(f->path, STORE_SYNC_NORMAL, BUSY_MS, err, sizeof err);
    assert_null(f->s);
    assert_non_null(strstr(err, "99"));
    assert_non_null(strstr(err, "newer"));

    /* and it was left as it was */
    assert_int_equal(user_version_of(f->path), 99);
}

/* ---------------------------------------------------------------- insert, get */

static void
test_insert_get_round_trip(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    store_new_task nt = {.kind = "echo", .input = "{\"a\":[1,2,\"x\"]}", .priority = -7,
                         .max_attempts = 3, .timeout_ms = 86400000, .idem_key = NULL};
    store_task t;
    assert_int_equal(store_insert(s, &nt, 1767323045678, &t), STORE_OK);
    for (int pass = 0; pass < 2; pass++) {      /* what insert returned, then what get reads */
        assert_true(t.id > 0);
        assert_string_equal(t.kind, "echo");
        assert_int_equal(t.state, TASK_PENDING);
        assert_int_equal(t.priority, -7);
        assert_string_equal(t.input, "{\"a\":[1,2,\"x\"]}");
        assert_null(t.result);
        assert_null(t.error_code);
        assert_null(t.error_message);
        assert_int_equal(t.attempts, 0);
        assert_int_equal(t.max_attempts, 3);
        assert_int_equal(t.timeout_ms, 86400000);
        assert_int_equal(t.created_at_ms, 1767323045678);
        assert_int_equal(t.started_at_ms, 0);
        assert_int_equal(t.finished_at_ms, 0);
        assert_int_equal(t.run_after_ms, 0);
        int64_t id = t.id;
        store_task_clear(&t);
        assert_null(t.kind);
        if (pass == 0)
            assert_int_equal(store_get(s, id, &t), STORE_OK);
    }

    /* running, then succeeded: started_at, finished_at and result come back */
    store_task c;
    assert_int_equal(store_claim_next(s, 2000000000000, 42, &c), STORE_OK);
    assert_int_equal(c.state, TASK_RUNNING);
    assert_int_equal(c.attempts, 1);
    assert_int_equal(c.started_at_ms, 2000000000000);
    assert_int_equal(c.finished_at_ms, 0);
    store_outcome o = {.state = TASK_SUCCEEDED, .result = "{\"out\":\"\xc3\xa9\"}",
                       .now_ms = 2000000000123};
    assert_int_equal(store_finish(s, c.id, 1, &o), STORE_OK);
    assert_int_equal(store_get(s, c.id, &t), STORE_OK);
    assert_int_equal(t.state, TASK_SUCCEEDED);
    assert_string_equal(t.result, "{\"out\":\"\xc3\xa9\"}");
    assert_null(t.error_code);
    assert_null(t.error_message);
    assert_int_equal(t.attempts, 1);
    assert_int_equal(t.started_at_ms, 2000000000000);
    assert_int_equal(t.finished_at_ms, 2000000000123);
    store_task_clear(&t);
    store_task_clear(&c);

    /* a failure keeps its error code and message, and no result */
    int64_t id2 = add(s, "sleep", 0, 1, NULL, 5);
    assert_int_equal(claim(s, 10, 42), id2);
    o = (store_outcome){.state = TASK_FAILED, .error_code = "task_failed",
                        .error_message = "it broke", .now_ms = 20};
    assert_int_equal(store_finish(s, id2, 1, &o), STORE_OK);
    assert_int_equal(store_get(s, id2, &t), STORE_OK);
    assert_int_equal(t.state, TASK_FAILED);
    assert_null(t.result);
    assert_string_equal(t.error_code, "task_failed");
    assert_string_equal(t.error_message, "it broke");
    assert_int_equal(t.finished_at_ms, 20);
    store_task_clear(&t);

    assert_int_equal(store_get(s, 999999, &t), STORE_NOTFOUND);
    assert_null(t.kind);
}

static void
test_ids_increase(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    int64_t prev = 0;
    for (int i = 0; i < 20; i++) {
        int64_t id = add(s, "echo", 0, 1, NULL, 1000);
        assert_true(id > prev);
        prev = id;
    }
}

/* ---------------------------------------------------------------- claim */

static void
test_claim_order_priority_then_id(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    int64_t a = add(s, "echo", 0, 1, NULL, 1);
    int64_t b = add(s, "echo", 5, 1, NULL, 1);
    int64_t c = add(s, "echo", 5, 1, NULL, 1);
    int64_t d = add(s, "echo", -3, 1, NULL, 1);
    int64_t e = add(s, "echo", 0, 1, NULL, 1);
    int64_t g = add(s, "echo", 1000, 1, NULL, 1);
    int64_t want[] = {g, b, c, a, e, d};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        store_task t;
        assert_int_equal(store_claim_next(s, 100 + (int64_t)i, 7, &t), STORE_OK);
        assert_int_equal(t.id, want[i]);
        assert_int_equal(t.state, TASK_RUNNING);
        assert_int_equal(t.attempts, 1);
        assert_int_equal(t.started_at_ms, 100 + (int64_t)i);
        assert_string_equal(t.input, "{\"n\":1}");
        store_task_clear(&t);
    }
    store_task t;
    assert_int_equal(store_claim_next(s, 200, 7, &t), STORE_EMPTY);
    assert_null(t.kind);
}

static void
test_claim_empty(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    store_task t;
    assert_int_equal(store_claim_next(s, 1000, 1, &t), STORE_EMPTY);
    assert_int_equal(store_has_ready(s, 1000), 0);
    /* canceled and finished tasks are not claimable either */
    int64_t id = add(s, "echo", 0, 1, NULL, 1);
    assert_int_equal(store_cancel(s, id, 2, &t), STORE_OK);
    store_task_clear(&t);
    assert_int_equal(store_claim_next(s, 1000, 1, &t), STORE_EMPTY);
    assert_int_equal(store_has_ready(s, 1000), 0);
}

static void
test_retry_waits_for_run_after(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    int64_t id = add(s, "echo", 0, 3, NULL, 1000);
    assert_int_equal(store_has_ready(s, 1000), 1);
    assert_int_equal(claim(s, 1500, 9), id);
    assert_int_equal(store_has_ready(s, 1500), 0);

    store_outcome o = {.state = TASK_PENDING, .error_code = "task_failed",
                       .error_message = "try again", .now_ms = 2000, .run_after_ms = 5000};
    assert_int_equal(store_finish(s, id, 1, &o), STORE_OK);
    store_task t;
    assert_int_equal(store_get(s, id, &t), STORE_OK);
    assert_int_equal(t.state, TASK_PENDING);
    assert_int_equal(t.attempts, 1);
    assert_int_equal(t.run_after_ms, 5000);
    assert_int_equal(t.finished_at_ms, 0);
    assert_null(t.result);
    store_task_clear(&t);

    assert_int_equal(store_has_ready(s, 4999), 0);
    assert_int_equal(store_claim_next(s, 4999, 9, &t), STORE_EMPTY);
    assert_int_equal(state_of(s, id), TASK_PENDING);

    assert_int_equal(store_has_ready(s, 5000), 1);
    assert_int_equal(store_claim_next(s, 5000, 9, &t), STORE_OK);
    assert_int_equal(t.id, id);
    assert_int_equal(t.attempts, 2);
    assert_int_equal(t.state, TASK_RUNNING);
    assert_int_equal(t.started_at_ms, 5000);
    store_task_clear(&t);

    /* the first attempt's number no longer fits: fenced off */
    o = (store_outcome){.state = TASK_SUCCEEDED, .result = "1", .now_ms = 6000};
    assert_int_equal(store_finish(s, id, 1, &o), STORE_CONFLICT);
    assert_int_equal(store_finish(s, id, 2, &o), STORE_OK);
    assert_int_equal(store_get(s, id, &t), STORE_OK);
    assert_int_equal(t.state, TASK_SUCCEEDED);
    assert_null(t.error_code);          /* the retry's error is gone with the success */
    assert_string_equal(t.result, "1");
    store_task_clear(&t);
}

static void
test_future_task_does_not_block_ready_ones(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    int64_t hi = add(s, "echo", 100, 2, NULL, 1);
    int64_t lo = add(s, "echo", 0, 1, NULL, 1);
    assert_int_equal(claim(s, 10, 1), hi);
    store_outcome o = {.state = TASK_PENDING, .now_ms = 20, .run_after_ms = 10000};
    assert_int_equal(store_finish(s, hi, 1, &o), STORE_OK);
    /* the high-priority retry waits; the low-priority task runs meanwhile */
    assert_int_equal(claim(s, 30, 1), lo);
    store_task t;
    assert_int_equal(store_claim_next(s, 9999, 1, &t), STORE_EMPTY);
    assert_int_equal(claim(s, 10000, 1), hi);
}

/* ---------------------------------------------------------------- finish (CAS) */

static void
test_finish_wrong_attempt_conflicts(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    int64_t id = add(s, "echo", 0, 1, NULL, 1);
    assert_int_equal(claim(s, 2, 5), id);
    store_outcome o = {.state = TASK_SUCCEEDED, .result = "\"x\"", .now_ms = 3};
    assert_int_equal(store_finish(s, id, 2, &o), STORE_CONFLICT);
    assert_int_equal(store_finish(s, id, 0, &o), STORE_CONFLICT);
    store_task t;
    assert_int_equal(store_get(s, id, &t), STORE_OK);
    assert_int_equal(t.state, TASK_RUNNING);
    assert_int_equal(t.attempts, 1);
    assert_null(t.result);
    assert_int_equal(t.finished_at_ms, 0);
    store_task_clear(&t);

    assert_int_equal(store_finish(s, id, 1, &o), STORE_OK);
    /* a second finish of the same attempt: no longer running */
    store_outcome o2 = {.state = TASK_FAILED, .error_code = "late", .now_ms = 4};
    assert_int_equal(store_finish(s, id, 1, &o2), STORE_CONFLICT);
    assert_int_equal(store_get(s, id, &t), STORE_OK);
    assert_int_equal(t.state, TASK_SUCCEEDED);
    assert_string_equal(t.result, "\"x\"");
    assert_null(t.error_code);
    assert_int_equal(t.finished_at_ms, 3);
    store_task_clear(&t);

    /* unknown task */
    assert_int_equal(store_finish(s, 424242, 1, &o), STORE_CONFLICT);
}

static void
test_finish_canceled_conflicts(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    int64_t id = add(s, "echo", 0, 1, NULL, 1);
    store_task t;
    assert_int_equal(store_cancel(s, id, 2, &t), STORE_OK);
    store_task_clear(&t);
    store_outcome o = {.state = TASK_SUCCEEDED, .result = "1", .now_ms = 3};
    assert_int_equal(store_finish(s, id, 0, &o), STORE_CONFLICT);
    assert_int_equal(store_finish(s, id, 1, &o), STORE_CONFLICT);
    assert_int_equal(store_get(s, id, &t), STORE_OK);
    assert_int_equal(t.state, TASK_CANCELED);
    assert_null(t.result);
    assert_int_equal(t.finished_at_ms, 2);
    store_task_clear(&t);
}

static void
test_finish_after_release_conflicts(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    int64_t id = add(s, "echo", 0, 2, NULL, 1);
    assert_int_equal(claim(s, 2, 100), id);
    release_one(s, 100, 3);
    /* the old worker comes back late: fenced off */
    store_outcome o = {.state = TASK_SUCCEEDED, .result = "1", .now_ms = 4};
    assert_int_equal(store_finish(s, id, 1, &o), STORE_CONFLICT);
    assert_int_equal(state_of(s, id), TASK_PENDING);
    /* another worker takes attempt 2; the old one still cannot write */
    assert_int_equal(claim(s, 5, 200), id);
    assert_int_equal(store_finish(s, id, 1, &o), STORE_CONFLICT);
    assert_int_equal(state_of(s, id), TASK_RUNNING);
    assert_int_equal(store_finish(s, id, 2, &o), STORE_OK);
    assert_int_equal(state_of(s, id), TASK_SUCCEEDED);
}

/* ---------------------------------------------------------------- finish + claim */

static void
test_finish_claim_runs_back_to_back(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    int64_t a = add(s, "echo", 0, 1, NULL, 1);
    int64_t b = add(s, "echo", 0, 1, NULL, 1);
    assert_int_equal(claim(s, 2, 7), a);
    store_outcome o = {.state = TASK_SUCCEEDED, .result = "\"a\"", .now_ms = 3};
    store_task next;
    int claimed = -1;
    assert_int_equal(store_finish_claim(s, a, 1, &o, 3, 7, &next, &claimed), STORE_OK);
    assert_int_equal(claimed, 1);
    assert_int_equal(next.id, b);
    assert_int_equal(next.state, TASK_RUNNING);
    assert_int_equal(next.attempts, 1);
    assert_int_equal(next.started_at_ms, 3);
    store_task_clear(&next);
    store_task t;
    assert_int_equal(store_get(s, a, &t), STORE_OK);
    assert_int_equal(t.state, TASK_SUCCEEDED);
    assert_string_equal(t.result, "\"a\"");
    assert_int_equal(t.finished_at_ms, 3);
    store_task_clear(&t);
    assert_int_equal(state_of(s, b), TASK_RUNNING);

    /* b fails retryably: it is not claimed again before its run_after */
    store_outcome r = {.state = TASK_PENDING, .error_code = "task_failed", .error_message = "x",
                       .now_ms = 4, .run_after_ms = 1004};
    assert_int_equal(store_finish_claim(s, b, 1, &r, 4, 7, &next, &claimed), STORE_OK);
    assert_int_equal(claimed, 0);
    assert_int_equal(next.id, 0);
    assert_int_equal(state_of(s, b), TASK_PENDING);
    /* and is, after it */
    assert_int_equal(claim(s, 1004, 7), b);
}

static void
test_finish_claim_conflict_still_claims(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    int64_t a = add(s, "echo", 0, 2, NULL, 1);
    int64_t b = add(s, "echo", 0, 1, NULL, 1);
    assert_int_equal(claim(s, 2, 7), a);
    release_one(s, 7, 3);
    /* the fenced-off worker's outcome is dropped, but its claim stands */
    store_outcome o = {.state = TASK_SUCCEEDED, .result = "1", .now_ms = 4};
    store_task next;
    int claimed = 0;
    assert_int_equal(store_finish_claim(s, a, 1, &o, 4, 8, &next, &claimed), STORE_CONFLICT);
    assert_non_null(strstr(store_errmsg(s), "no longer running"));
    assert_int_equal(claimed, 1);
    assert_int_equal(next.id, a);           /* requeued, lower id than b */
    assert_int_equal(next.attempts, 2);
    assert_null(next.result);
    store_task_clear(&next);
    assert_int_equal(state_of(s, b), TASK_PENDING);
}

static void
test_finish_claim_busy_writes_nothing(void **state)
{
    struct fixture *f = *state;
    store *s = f->s;
    int64_t a = add(s, "echo", 0, 1, NULL, 1);
    int64_t b = add(s, "echo", 0, 1, NULL, 1);
    char err[256] = "";
    store *w = store_open(f->path, STORE_SYNC_NORMAL, 100, err, sizeof err);
    assert_non_null(w);
    assert_int_equal(claim(w, 2, 7), a);
    assert_int_equal(store_begin(s), STORE_OK);        /* another holds the write lock */
    store_outcome o = {.state = TASK_SUCCEEDED, .result = "1", .now_ms = 3};
    store_task next;
    int claimed = -1;
    assert_int_equal(store_finish_claim(w, a, 1, &o, 3, 7, &next, &claimed), STORE_BUSY);
    assert_int_equal(claimed, 0);
    store_rollback(s);
    assert_int_equal(state_of(s, a), TASK_RUNNING);
    assert_int_equal(state_of(s, b), TASK_PENDING);
    /* and once the lock is free, both happen */
    assert_int_equal(store_finish_claim(w, a, 1, &o, 3, 7, &next, &claimed), STORE_OK);
    assert_int_equal(claimed, 1);
    assert_int_equal(next.id, b);
    store_task_clear(&next);
    store_close(w);
    assert_int_equal(state_of(s, a), TASK_SUCCEEDED);
    assert_int_equal(state_of(s, b), TASK_RUNNING);
}

/* ---------------------------------------------------------------- cancel */

static void
test_cancel_pending(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    int64_t id = add(s, "echo", 0, 1, NULL, 1);
    store_task t;
    assert_int_equal(store_cancel(s, id, 777, &t), STORE_OK);
    assert_int_equal(t.id, id);
    assert_int_equal(t.state, TASK_CANCELED);
    assert_int_equal(t.finished_at_ms, 777);
    assert_int_equal(t.attempts, 0);
    assert_string_equal(t.input, "{\"n\":1}");
    store_task_clear(&t);
    assert_int_equal(store_get(s, id, &t), STORE_OK);
    assert_int_equal(t.state, TASK_CANCELED);
    assert_int_equal(t.finished_at_ms, 777);
    store_task_clear(&t);
}

static void
test_cancel_running_or_terminal_conflicts(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    int64_t running = add(s, "echo", 3, 1, NULL, 1);
    int64_t done = add(s, "echo", 2, 1, NULL, 1);
    int64_t failed = add(s, "echo", 1, 1, NULL, 1);
    int64_t canceled = add(s, "echo", 0, 1, NULL, 1);
    assert_int_equal(claim(s, 2, 1), running);
    assert_int_equal(claim(s, 2, 1), done);
    assert_int_equal(claim(s, 2, 1), failed);
    finish_ok(s, done, 1, TASK_SUCCEEDED, 3);
    finish_ok(s, failed, 1, TASK_FAILED, 3);
    store_task t;
    assert_int_equal(store_cancel(s, canceled, 4, &t), STORE_OK);
    store_task_clear(&t);

    struct { int64_t id; enum task_state st; int64_t fin; } cases[] = {
        {running, TASK_RUNNING, 0}, {done, TASK_SUCCEEDED, 3},
        {failed, TASK_FAILED, 3}, {canceled, TASK_CANCELED, 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(store_cancel(s, cases[i].id, 50, &t), STORE_CONFLICT);
        assert_int_equal(t.id, cases[i].id);
        assert_int_equal(t.state, cases[i].st);
        assert_int_equal(t.finished_at_ms, cases[i].fin);     /* not overwritten */
        assert_string_equal(t.kind, "echo");
        store_task_clear(&t);
        assert_int_equal(state_of(s, cases[i].id), cases[i].st);
    }
}

static void
test_cancel_unknown(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    store_task t;
    assert_int_equal(store_cancel(s, 12345, 1, &t), STORE_NOTFOUND);
    assert_null(t.kind);
    add(s, "echo", 0, 1, NULL, 1);
    assert_int_equal(store_cancel(s, 12345, 1, &t), STORE_NOTFOUND);
    assert_int_equal(total_tasks(s), 1);
}

/* ---------------------------------------------------------------- lost workers */

static int
find_ref(const store_task_ref *refs, size_t n, int64_t id, enum task_state *st)
{
    for (size_t i = 0; i < n; i++) {
        if (refs[i].id == id) {
            *st = refs[i].state;
            return 1;
        }
    }
    return 0;
}

static void
test_release_lost(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    int64_t retry = add(s, "echo", 3, 2, NULL, 1);     /* attempts left */
    int64_t last = add(s, "echo", 2, 1, NULL, 1);      /* none left */
    int64_t other = add(s, "echo", 1, 1, NULL, 1);     /* another worker's */
    int64_t pending = add(s, "echo", 0, 1, NULL, 1);   /* nobody's yet */
    assert_int_equal(claim(s, 10, 111), retry);
    assert_int_equal(claim(s, 10, 111), last);
    assert_int_equal(claim(s, 10, 222), other);

    store_task_ref refs[8];
    size_t n = 0;
    assert_int_equal(store_release_lost(s, 111, 50, NULL, NULL, refs, 8, &n), STORE_OK);
    assert_int_equal(n, 2);
    enum task_state st;
    assert_true(find_ref(refs, n, retry, &st));
    assert_int_equal(st, TASK_PENDING);
    assert_true(find_ref(refs, n, last, &st));
    assert_int_equal(st, TASK_FAILED);

    store_task t;
    assert_int_equal(store_get(s, retry, &t), STORE_OK);
    assert_int_equal(t.state, TASK_PENDING);
    assert_int_equal(t.attempts, 1);
    assert_int_equal(t.finished_at_ms, 0);
    store_task_clear(&t);
    assert_int_equal(store_get(s, last, &t), STORE_OK);
    assert_int_equal(t.state, TASK_FAILED);
    assert_int_equal(t.attempts, 1);
    assert_int_equal(t.finished_at_ms, 50);
    assert_string_equal(t.error_code, "worker_lost");
    assert_non_null(t.error_message);
    assert_true(strlen(t.error_message) > 0);
    store_task_clear(&t);
    assert_int_equal(state_of(s, other), TASK_RUNNING);
    assert_int_equal(state_of(s, pending), TASK_PENDING);

    /* nothing left for 111 */
    n = 99;
    assert_int_equal(store_release_lost(s, 111, 60, NULL, NULL, refs, 8, &n), STORE_OK);
    assert_int_equal(n, 0);

    /* a caller's own code and message */
    assert_int_equal(store_release_lost(s, 222, 70, "timeout", "took too long", refs, 8, &n),
                     STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(refs[0].id, other);
    assert_int_equal(refs[0].state, TASK_FAILED);
    assert_int_equal(store_get(s, other, &t), STORE_OK);
    assert_string_equal(t.error_code, "timeout");
    assert_string_equal(t.error_message, "took too long");
    assert_int_equal(t.finished_at_ms, 70);
    store_task_clear(&t);

    /* the requeued task runs again as attempt 2 and is then out of attempts */
    assert_int_equal(claim(s, 80, 333), retry);
    assert_int_equal(store_release_lost(s, 333, 90, NULL, NULL, refs, 8, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(refs[0].state, TASK_FAILED);
    assert_int_equal(state_of(s, retry), TASK_FAILED);
}

static void
test_release_lost_cap(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    for (int i = 0; i < 3; i++)
        add(s, "echo", 0, 1, NULL, 1);
    for (int i = 0; i < 3; i++)
        claim(s, 2, 5);
    store_task_ref refs[1];
    size_t n = 0;
    assert_int_equal(store_release_lost(s, 5, 3, NULL, NULL, refs, 1, &n), STORE_OK);
    assert_int_equal(n, 1);     /* reported up to cap... */
    int64_t c[TASK_STATE_COUNT];
    assert_int_equal(store_count_states(s, c), STORE_OK);
    assert_int_equal(c[TASK_RUNNING], 0);       /* ...but all released */
    assert_int_equal(c[TASK_FAILED], 3);
}

static void
test_recover_running(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    int64_t a = add(s, "echo", 4, 2, NULL, 1);
    int64_t b = add(s, "echo", 3, 1, NULL, 1);
    int64_t c = add(s, "echo", 2, 3, NULL, 1);
    int64_t d = add(s, "echo", 1, 1, NULL, 1);
    int64_t e = add(s, "echo", 0, 1, NULL, 1);
    assert_int_equal(claim(s, 10, 1), a);
    assert_int_equal(claim(s, 10, 2), b);
    assert_int_equal(claim(s, 10, 3), c);
    assert_int_equal(claim(s, 10, 4), d);
    finish_ok(s, d, 1, TASK_SUCCEEDED, 11);

    int requeued = -1, failed = -1;
    assert_int_equal(store_recover_running(s, 20, &requeued, &failed), STORE_OK);
    assert_int_equal(requeued, 2);
    assert_int_equal(failed, 1);
    assert_int_equal(state_of(s, a), TASK_PENDING);
    assert_int_equal(state_of(s, c), TASK_PENDING);
    assert_int_equal(state_of(s, d), TASK_SUCCEEDED);
    assert_int_equal(state_of(s, e), TASK_PENDING);
    store_task t;
    assert_int_equal(store_get(s, b, &t), STORE_OK);
    assert_int_equal(t.state, TASK_FAILED);
    assert_string_equal(t.error_code, "worker_lost");
    assert_int_equal(t.finished_at_ms, 20);
    store_task_clear(&t);
    assert_int_equal(store_get(s, d, &t), STORE_OK);
    assert_null(t.error_code);
    store_task_clear(&t);

    assert_int_equal(store_recover_running(s, 30, &requeued, &failed), STORE_OK);
    assert_int_equal(requeued, 0);
    assert_int_equal(failed, 0);
}

static void
test_count_states(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    int64_t c[TASK_STATE_COUNT];
    assert_int_equal(store_count_states(s, c), STORE_OK);
    for (int i = 0; i < TASK_STATE_COUNT; i++)
        assert_int_equal(c[i], 0);

    /* 2 running, 3 succeeded, 4 failed, 5 canceled, 1 pending */
    int64_t ids[15];
    for (int i = 0; i < 15; i++)
        ids[i] = add(s, "echo", 0, 1, NULL, 1);
    store_task t;
    for (int i = 10; i < 15; i++) {
        assert_int_equal(store_cancel(s, ids[i], 2, &t), STORE_OK);
        store_task_clear(&t);
    }
    for (int i = 0; i < 9; i++)
        assert_int_equal(claim(s, 3, 1), ids[i]);
    for (int i = 0; i < 3; i++)
        finish_ok(s, ids[i], 1, TASK_SUCCEEDED, 4);
    for (int i = 3; i < 7; i++)
        finish_ok(s, ids[i], 1, TASK_FAILED, 4);

    assert_int_equal(store_count_states(s, c), STORE_OK);
    assert_int_equal(c[TASK_PENDING], 1);
    assert_int_equal(c[TASK_RUNNING], 2);
    assert_int_equal(c[TASK_SUCCEEDED], 3);
    assert_int_equal(c[TASK_FAILED], 4);
    assert_int_equal(c[TASK_CANCELED], 5);
}

/* ---------------------------------------------------------------- list */

static void
free_list(store_task *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_task_clear(&items[i]);
    free(items);
}

static void
test_list_filters(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    /* ids[0..9]; odd ones are "sleep", even ones "echo"; ids 0, 3, 6 canceled */
    int64_t ids[10];
    for (int i = 0; i < 10; i++)
        ids[i] = add(s, i % 2 ? "sleep" : "echo", 0, 1, NULL, 1);
    store_task t;
    for (int i = 0; i < 10; i += 3) {
        if (i == 9)
            break;
        assert_int_equal(store_cancel(s, ids[i], 2, &t), STORE_OK);
        store_task_clear(&t);
    }

    store_task *items;
    size_t n;
    int more;
    store_filter f = {.limit = 100};
    assert_int_equal(store_list(s, &f, &items, &n, &more), STORE_OK);
    assert_int_equal(n, 10);
    assert_int_equal(more, 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(items[i].id, ids[9 - i]);     /* newest first */
        assert_null(items[i].input);                   /* brief */
        assert_null(items[i].result);
        assert_string_equal(items[i].kind, (9 - i) % 2 ? "sleep" : "echo");
        assert_int_equal(items[i].max_attempts, 1);
        assert_int_equal(items[i].created_at_ms, 1);
    }
    free_list(items, n);

    f = (store_filter){.has_state = 1, .state = TASK_CANCELED, .limit = 100};
    assert_int_equal(store_list(s, &f, &items, &n, &more), STORE_OK);
    assert_int_equal(n, 3);
    assert_int_equal(more, 0);
    assert_int_equal(items[0].id, ids[6]);
    assert_int_equal(items[1].id, ids[3]);
    assert_int_equal(items[2].id, ids[0]);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(items[i].state, TASK_CANCELED);
    free_list(items, n);

    f = (store_filter){.kind = "sleep", .limit = 100};
    assert_int_equal(store_list(s, &f, &items, &n, &more), STORE_OK);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(items[i].id, ids[9 - 2 * i]);
        assert_string_equal(items[i].kind, "sleep");
    }
    free_list(items, n);

    f = (store_filter){.has_state = 1, .state = TASK_PENDING, .kind = "echo", .limit = 100};
    assert_int_equal(store_list(s, &f, &items, &n, &more), STORE_OK);
    assert_int_equal(n, 3);     /* even ids 2, 4, 8; 0 and 6 are canceled */
    assert_int_equal(items[0].id, ids[8]);
    assert_int_equal(items[1].id, ids[4]);
    assert_int_equal(items[2].id, ids[2]);
    free_list(items, n);

    f = (store_filter){.kind = "nosuchkind", .limit = 100};
    assert_int_equal(store_list(s, &f, &items, &n, &more), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(more, 0);
    free_list(items, n);

    f = (store_filter){.has_state = 1, .state = TASK_RUNNING, .limit = 100};
    assert_int_equal(store_list(s, &f, &items, &n, &more), STORE_OK);
    assert_int_equal(n, 0);
    free_list(items, n);
}

static void
test_list_limit_and_more(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    int64_t ids[5];
    for (int i = 0; i < 5; i++)
        ids[i] = add(s, "echo", 0, 1, NULL, 1);
    store_task *items;
    size_t n;
    int more;
    store_filter f = {.limit = 3};
    assert_int_equal(store_list(s, &f, &items, &n, &more), STORE_OK);
    assert_int_equal(n, 3);
    assert_int_equal(more, 1);
    assert_int_equal(items[0].id, ids[4]);
    assert_int_equal(items[2].id, ids[2]);
    free_list(items, n);

    f.limit = 5;                /* exactly all: no more */
    assert_int_equal(store_list(s, &f, &items, &n, &more), STORE_OK);
    assert_int_equal(n, 5);
    assert_int_equal(more, 0);
    free_list(items, n);

    f.limit = 1;
    f.before_id = ids[1];       /* strictly below */
    assert_int_equal(store_list(s, &f, &items, &n, &more), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(items[0].id, ids[0]);
    assert_int_equal(more, 0);
    free_list(items, n);

    f.before_id = ids[0];
    assert_int_equal(store_list(s, &f, &items, &n, &more), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(more, 0);
    free_list(items, n);
}

static void
test_list_paging_covers_all_once(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    enum { N = 25, LIMIT = 7 };
    int64_t ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = add(s, i % 3 ? "echo" : "sleep", 0, 1, NULL, 1);

    int64_t seen[N];
    size_t nseen = 0;
    int pages = 0, more = 1;
    int64_t before = 0;
    while (more) {
        store_task *items;
        size_t n;
        store_filter f = {.limit = LIMIT, .before_id = before};
        assert_int_equal(store_list(s, &f, &items, &n, &more), STORE_OK);
        pages++;
        assert_true(n > 0);
        assert_true(n <= LIMIT);
        if (more)
            assert_int_equal(n, LIMIT);
        for (size_t i = 0; i < n; i++) {
            assert_true(nseen < N);
            seen[nseen++] = items[i].id;
        }
        before = items[n - 1].id;
        free_list(items, n);
        assert_true(pages <= 10);
    }
    assert_int_equal(pages, 4);         /* 7 + 7 + 7 + 4 */
    assert_int_equal(nseen, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], ids[N - 1 - i]);  /* each once, newest first */
}

/* ---------------------------------------------------------------- idempotency, transactions */

static void
test_idempotency_key(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    store_new_task nt = {.kind = "echo", .input = "{\"first\":true}", .priority = 1,
                         .max_attempts = 2, .timeout_ms = 10, .idem_key = "abc"};
    store_task first, again;
    assert_int_equal(store_insert(s, &nt, 100, &first), STORE_OK);

    store_new_task other = {.kind = "sleep", .input = "{\"ms\":1}", .priority = 9,
                            .max_attempts = 5, .timeout_ms = 99, .idem_key = "abc"};
    assert_int_equal(store_insert(s, &other, 200, &again), STORE_EXISTS);
    assert_int_equal(again.id, first.id);
    assert_string_equal(again.kind, "echo");
    assert_string_equal(again.input, "{\"first\":true}");
    assert_int_equal(again.priority, 1);
    assert_int_equal(again.max_attempts, 2);
    assert_int_equal(again.created_at_ms, 100);
    assert_int_equal(total_tasks(s), 1);
    store_task_clear(&again);

    /* still the same after the first one moved on */
    assert_int_equal(claim(s, 300, 1), first.id);
    assert_int_equal(store_insert(s, &nt, 400, &again), STORE_EXISTS);
    assert_int_equal(again.id, first.id);
    assert_int_equal(again.state, TASK_RUNNING);
    store_task_clear(&again);
    assert_int_equal(total_tasks(s), 1);

    /* another key, or none at all, inserts */
    other.idem_key = "abd";
    assert_int_equal(store_insert(s, &other, 500, &again), STORE_OK);
    assert_true(again.id > first.id);
    store_task_clear(&again);
    nt.idem_key = NULL;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(store_insert(s, &nt, 600, &again), STORE_OK);
        store_task_clear(&again);
    }
    assert_int_equal(total_tasks(s), 5);
    store_task_clear(&first);
}

static void
test_begin_insert_rollback(void **state)
{
    store *s = ((struct fixture *)*state)->s;
    assert_int_equal(store_begin(s), STORE_OK);
    int64_t a = add(s, "echo", 0, 1, NULL, 1);
    int64_t b = add(s, "echo", 0, 1, "key", 1);
    store_rollback(s);
    assert_int_equal(total_tasks(s), 0);
    store_task t;
    assert_int_equal(store_get(s, a, &t), STORE_NOTFOUND);
    assert_int_equal(store_get(s, b, &t), STORE_NOTFOUND);
    /* the key was rolled back with its task */
    store_new_task nt = {.kind = "echo", .input = "1", .max_attempts = 1, .timeout_ms = 1,
                         .idem_key = "key"};
    assert_int_equal(store_insert(s, &nt, 2, &t), STORE_OK);
    store_task_clear(&t);
    assert_int_equal(total_tasks(s), 1);

    assert_int_equal(store_begin(s), STORE_OK);
    int64_t c = add(s, "echo", 0, 1, NULL, 1);
    int64_t d = add(s, "echo", 0, 1, NULL, 1);
    assert_int_equal(store_commit(s), STORE_OK);
    assert_int_equal(total_tasks(s), 3);
    assert_int_equal(state_of(s, c), TASK_PENDING);
    assert_int_equal(state_of(s, d), TASK_PENDING);
}

/* ---------------------------------------------------------------- store_lock */

static void
test_lock_conflicts(void **state)
{
    struct fixture *f = *state;
    char err[512] = "";
    int fd1 = -1, fd2 = -1;
    assert_int_equal(store_lock(f->path, &fd1, err, sizeof err), STORE_OK);
    assert_true(fd1 >= 0);
    char lock_path[256];
    snprintf(lock_path, sizeof lock_path, "%s.lock", f->path);
    struct stat sb;
    assert_int_equal(stat(lock_path, &sb), 0);

    /* a second open file description in this process */
    assert_int_equal(store_lock(f->path, &fd2, err, sizeof err), STORE_LOCKED);
    assert_int_equal(fd2, -1);
    assert_non_null(strstr(err, lock_path));
    char pid[32];
    snprintf(pid, sizeof pid, "pid %ld", (long)getpid());
    assert_non_null(strstr(err, pid));

    /* another process, promptly: the holder (this process) is alive */
    int64_t t0 = clock_mono_ms();
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        char e[512];
        int fd = -1;
        _exit(store_lock(f->path, &fd, e, sizeof e) == STORE_LOCKED ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(clock_mono_ms() - t0 < 1000);

    /* released with its fd */
    close(fd1);
    assert_int_equal(store_lock(f->path, &fd2, err, sizeof err), STORE_OK);
    close(fd2);
}

/* A holder of the lock that outlives the process whose pid is in the lock file,
 * as the children of a SIGKILLed supervisor do for a moment. Returns, with the
 * orphan's pid in *orphan, once the pid in the file is dead. The orphan holds the
 * lock until it is killed (or for 60 s at most, should the test die first). */
static void
leave_orphan_holding_lock(const char *db_path, pid_t *orphan)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t a = fork();
    assert_true(a >= 0);
    if (a == 0) {
        char e[512];
        int fd = -1;
        if (store_lock(db_path, &fd, e, sizeof e) != STORE_OK)
            _exit(1);
        pid_t b = fork();
        if (b < 0)
            _exit(1);
        if (b == 0) {
            alarm(60);
            for (;;)
                pause();
        }
        if (write(p[1], &b, sizeof b) != (ssize_t)sizeof b)
            _exit(1);
        _exit(0);
    }
    close(p[1]);
    int status;
    assert_int_equal(waitpid(a, &status, 0), a);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(read(p[0], orphan, sizeof *orphan), (ssize_t)sizeof *orphan);
    close(p[0]);
}

static volatile pid_t g_orphan;

static void
kill_orphan(int sig)
{
    (void)sig;
    kill(g_orphan, SIGKILL);
}

static void
test_lock_waits_for_orphans_of_dead_holder(void **state)
{
    struct fixture *f = *state;
    pid_t orphan = -1;
    leave_orphan_holding_lock(f->path, &orphan);
    /* the orphan dies 300 ms into store_lock's wait, as a killed instance's children do */
    g_orphan = orphan;
    struct sigaction sa = {.sa_handler = kill_orphan}, old;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
    struct itimerval it = {.it_value = {0, 300 * 1000}};
    assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
    int64_t t0 = clock_mono_ms();
    char err[512] = "";
    int fd = -1;
    int rc = store_lock(f->path, &fd, err, sizeof err);
    int64_t waited = clock_mono_ms() - t0;
    kill(orphan, SIGKILL);
    sigaction(SIGALRM, &old, NULL);
    if (rc != STORE_OK)
        fail_msg("the lock held only by a dead instance's orphan was not taken: %s", err);
    /* it waited for the orphan rather than failing, and no longer than needed */
    assert_true(waited >= 290);
    assert_true(waited < STORE_LOCK_ORPHAN_WAIT_MS);
    close(fd);
}

static void
test_lock_gives_up_on_orphans_after_limit(void **state)
{
    struct fixture *f = *state;
    pid_t orphan = -1;
    leave_orphan_holding_lock(f->path, &orphan);
    int64_t t0 = clock_mono_ms();
    char err[512] = "";
    int fd = -1;
    int rc = store_lock(f->path, &fd, err, sizeof err);
    int64_t waited = clock_mono_ms() - t0;
    kill(orphan, SIGKILL);
    assert_int_equal(rc, STORE_LOCKED);
    assert_int_equal(fd, -1);
    assert_true(waited >= STORE_LOCK_ORPHAN_WAIT_MS);
    assert_non_null(strstr(err, "died"));
}

static void
test_lock_creates_parent_dirs(void **state)
{
    struct fixture *f = *state;
    char path[320], dir[256];
    snprintf(dir, sizeof dir, "%s/a/b/c", f->dir);
    snprintf(path, sizeof path, "%s/db.sqlite", dir);
    char err[512] = "";
    int fd = -1;
    assert_int_equal(store_lock(path, &fd, err, sizeof err), STORE_OK);
    struct stat sb;
    assert_int_equal(stat(dir, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    /* and the store opens there */
    f->s = open_new(path, STORE_SYNC_NORMAL);
    assert_non_null(f->s);
    close(fd);
}

static void
test_lock_relative_path(void **state)
{
    struct fixture *f = *state;
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(f->dir), 0);
    char err[512] = "";
    int fd = -1;
    int rc = store_lock("./data/warmpool.db", &fd, err, sizeof err);   /* the default */
    struct stat sb;
    int dir_rc = stat("data", &sb);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(rc, STORE_OK);
    assert_int_equal(dir_rc, 0);
    assert_true(S_ISDIR(sb.st_mode));
    char lock_path[256];
    snprintf(lock_path, sizeof lock_path, "%s/data/warmpool.db.lock", f->dir);
    assert_int_equal(stat(lock_path, &sb), 0);
    close(fd);
}

/* ---------------------------------------------------------------- concurrent claims */

enum { NTASKS = 200, NCHILD = 2 };

/* Child: wait for the start signal, claim until empty, write each id to out. */
static void
claimer(const char *path, int start_fd, int out_fd)
{
    char err[256];
    store *s = store_open(path, STORE_SYNC_NORMAL, 10000, err, sizeof err);
    if (s == NULL)
        _exit(10);
    char c;
    if (read(start_fd, &c, 1) < 0)
        _exit(11);
    for (;;) {
        store_task t;
        int rc = store_claim_next(s, 1000, (long)getpid(), &t);
        if (rc == STORE_EMPTY)
            break;
        if (rc == STORE_BUSY)
            continue;
        if (rc != STORE_OK)
            _exit(12);
        int64_t id = t.id;
        store_task_clear(&t);
        if (write(out_fd, &id, sizeof id) != sizeof id)
            _exit(13);
        /* let the other claimer in: otherwise one process often takes all 200 */
        struct timespec ts = {0, 200 * 1000};
        nanosleep(&ts, NULL);
    }
    store_close(s);
    _exit(0);
}

static void
test_concurrent_claims_never_duplicate(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    f->s = open_new(f->path, STORE_SYNC_NORMAL);
    assert_non_null(f->s);
    for (int i = 0; i < NTASKS; i++)
        add(f->s, "echo", i % 5, 1, NULL, 1);
    store_close(f->s);          /* no connection crosses fork() */
    f->s = NULL;

    int start[2];
    assert_int_equal(pipe(start), 0);
    int out[NCHILD][2];
    pid_t kids[NCHILD];
    for (int k = 0; k < NCHILD; k++) {
        assert_int_equal(pipe(out[k]), 0);
        kids[k] = fork();
        assert_true(kids[k] >= 0);
        if (kids[k] == 0) {
            close(start[1]);
            close(out[k][0]);
            claimer(f->path, start[0], out[k][1]);
        }
        close(out[k][1]);
    }
    close(start[0]);
    close(start[1]);            /* EOF on start: both children go at once */

    static int64_t got[NCHILD][NTASKS + 1];
    size_t ngot[NCHILD] = {0};
    for (int k = 0; k < NCHILD; k++) {
        /* 200 ids fit in a pipe buffer: read after the child is done */
        int status;
        assert_int_equal(waitpid(kids[k], &status, 0), kids[k]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        ssize_t r;
        char *p = (char *)got[k];
        size_t cap = sizeof got[k], have = 0;
        while (have < cap && (r = read(out[k][0], p + have, cap - have)) > 0)
            have += (size_t)r;
        close(out[k][0]);
        assert_int_equal(have % sizeof(int64_t), 0);
        ngot[k] = have / sizeof(int64_t);
    }
    /* SQLite's lock is not fair: one process may take most of them; either is fine */
    print_message("claims per process: %zu and %zu\n", ngot[0], ngot[1]);
    assert_int_equal(ngot[0] + ngot[1], NTASKS);

    static unsigned char seen[NTASKS + 1];
    memset(seen, 0, sizeof seen);
    for (int k = 0; k < NCHILD; k++) {
        for (size_t i = 0; i < ngot[k]; i++) {
            int64_t id = got[k][i];
            assert_in_range(id, 1, NTASKS);
            assert_int_equal(seen[id], 0);      /* never claimed twice */
            seen[id] = 1;
        }
    }
    f->s = store_open(f->path, STORE_SYNC_NORMAL, BUSY_MS, err, sizeof err);
    assert_non_null(f->s);
    int64_t c[TASK_STATE_COUNT];
    assert_int_equal(store_count_states(f->s, c), STORE_OK);
    assert_int_equal(c[TASK_RUNNING], NTASKS);
    assert_int_equal(c[TASK_PENDING], 0);
}

/* ---------------------------------------------------------------- state names */

static void
test_state_names(void **state)
{
    (void)state;
    const char *names[] = {"pending", "running", "succeeded", "failed", "canceled"};
    for (int i = 0; i < TASK_STATE_COUNT; i++) {
        assert_string_equal(task_state_name((enum task_state)i), names[i]);
        enum task_state st = TASK_STATE_COUNT;
        assert_int_equal(task_state_parse(names[i], &st), 0);
        assert_int_equal(st, i);
    }
    assert_null(task_state_name(TASK_STATE_COUNT));
    enum task_state st = TASK_RUNNING;
    assert_int_equal(task_state_parse("done", &st), -1);
    assert_int_equal(task_state_parse("", &st), -1);
    assert_int_equal(task_state_parse("Pending", &st), -1);
    assert_int_equal(st, TASK_RUNNING);
    assert_false(task_state_terminal(TASK_PENDING));
    assert_false(task_state_terminal(TASK_RUNNING));
    assert_true(task_state_terminal(TASK_SUCCEEDED));
    assert_true(task_state_terminal(TASK_FAILED));
    assert_true(task_state_terminal(TASK_CANCELED));
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_creates_and_migrates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_is_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_insert_get_round_trip, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_ids_increase, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_claim_order_priority_then_id, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_claim_empty, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_retry_waits_for_run_after, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_future_task_does_not_block_ready_ones, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_finish_wrong_attempt_conflicts, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_finish_canceled_conflicts, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_finish_after_release_conflicts, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_finish_claim_runs_back_to_back, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_finish_claim_conflict_still_claims, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_finish_claim_busy_writes_nothing, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_pending, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_running_or_terminal_conflicts, setup_open,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cancel_unknown, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_release_lost, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_release_lost_cap, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_recover_running, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_count_states, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_list_filters, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_list_limit_and_more, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_list_paging_covers_all_once, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_idempotency_key, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_begin_insert_rollback, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_lock_conflicts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_waits_for_orphans_of_dead_holder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_gives_up_on_orphans_after_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_creates_parent_dirs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_relative_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_claims_never_duplicate, setup, teardown),
        cmocka_unit_test(test_state_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
