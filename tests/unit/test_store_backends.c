/* test_store_backends.c -- store.h's contract, held against both implementations:
 * every test of the first part runs on SQLite (a fresh file) and on PostgreSQL (a fresh
 * database of the cluster named by WARMPOOL_TEST_PG, an admin URI such as
 * postgresql://postgres@127.0.0.1:5432/postgres; without it the PostgreSQL runs are
 * skipped, and with WARMPOOL_TEST_PG_REQUIRED=1 that is a failure). The second part is
 * PostgreSQL's own: concurrent migrations, sharded counts under concurrency, query plans,
 * instances and leases, events, connection loss. tests/unit/test_store.c keeps SQLite's
 * own (file locks, WAL, upgrades from schema 1, VM steps). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "common/clock.h"
#include "storage/store.h"

#define BUSY_MS 5000

enum { SQLITE = 0, PG = 1 };

struct fixture {
    int backend;
    char dir[64];           /* SQLite: the temporary directory */
    char dbname[64];        /* PostgreSQL: the database made for the test */
    char db[600];           /* what --db would be */
    store *s;
    store_instance inst;
};

static const char *
admin_uri(void)
{
    const char *u = getenv("WARMPOOL_TEST_PG");
    return u != NULL && u[0] != '\0' ? u : NULL;
}

/* The admin URI with its database replaced by dbname. */
static void
uri_for(const char *dbname, char *out, size_t outlen)
{
    const char *a = admin_uri();
    const char *q = strchr(a, '?');
    size_t end = q != NULL ? (size_t)(q - a) : strlen(a);
    size_t slash = end;
    while (slash > 0 && a[slash - 1] != '/')
        slash--;
    snprintf(out, outlen, "%.*s%s%s", (int)slash, a, dbname, q != NULL ? q : "");
}

/* Runs sql on the admin database (or on the test's, with f). Fails the test on error. */
static PGresult *
admin_sql(const struct fixture *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static PGresult *
admin_sql(const struct fixture *f, const char *fmt, ...)
{
    char sql[4096], uri[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    if (f != NULL)
        snprintf(uri, sizeof uri, "%s", f->db);
    else
        snprintf(uri, sizeof uri, "%s", admin_uri());
    PGconn *c = PQconnectdb(uri);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connecting to %s: %s", uri, PQerrorMessage(c));
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    PQfinish(c);
    return r;
}

static int64_t
sql_i64(const struct fixture *f, const char *sql)
{
    PGresult *r = admin_sql(f, "%s", sql);
    int64_t v = PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10)
                                                          : 0;
    PQclear(r);
    return v;
}

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void
describe_inst(store_instance *inst, const char *name)
{
    *inst = (store_instance){.pid = (long)getpid(), .workers = 2, .lease_ms = 10000,
                             .started_at_ms = clock_now_ms()};
    snprintf(inst->name, sizeof inst->name, "%s", name);
    snprintf(inst->host, sizeof inst->host, "testhost");
}

/* A fresh database (made, not started). */
static int
setup_db(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    f->backend = (int)(intptr_t)*state;
    if (f->backend == PG) {
        if (admin_uri() == NULL) {
            free(f);
            if (getenv("WARMPOOL_TEST_PG_REQUIRED") != NULL &&
                strcmp(getenv("WARMPOOL_TEST_PG_REQUIRED"), "1") == 0)
                fail_msg("WARMPOOL_TEST_PG is not set");
            *state = NULL;
            return 0;
        }
        static int counter;
        snprintf(f->dbname, sizeof f->dbname, "wpunit_%ld_%d", (long)getpid(), ++counter);
        PQclear(admin_sql(NULL, "DROP DATABASE IF EXISTS %s", f->dbname));
        PQclear(admin_sql(NULL, "CREATE DATABASE %s", f->dbname));
        uri_for(f->dbname, f->db, sizeof f->db);
    } else {
        snprintf(f->dir, sizeof f->dir, "/tmp/wp-unit-backends-XXXXXX");
        if (mkdtemp(f->dir) == NULL) {
            free(f);
            return -1;
        }
        snprintf(f->db, sizeof f->db, "%s/tasks.db", f->dir);
    }
    describe_inst(&f->inst, "test:1");
    *state = f;
    return 0;
}

/* A fresh database, started as the supervisor does (store_start), and a connection. */
static int
setup_open(void **state)
{
    if (setup_db(state) != 0)
        return -1;
    struct fixture *f = *state;
    if (f == NULL)
        return 0;
    char err[512] = "";
    if (store_start(f->db, &f->inst, NULL, NULL, NULL, err, sizeof err) != STORE_OK) {
        fprintf(stderr, "store_start: %s\n", err);
        return -1;
    }
    f->s = store_open(f->db, STORE_RELAXED, BUSY_MS, err, sizeof err);
    if (f->s == NULL) {
        fprintf(stderr, "store_open: %s\n", err);
        return -1;
    }
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;
    if (f == NULL)
        return 0;
    store_close(f->s);
    store_instance_end();
    if (f->backend == PG)
        PQclear(admin_sql(NULL, "DROP DATABASE IF EXISTS %s WITH (FORCE)", f->dbname));
    else
        nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

#define FIXTURE()                                   \
    struct fixture *f = *state;                     \
    if (f == NULL) {                                \
        print_message("no WARMPOOL_TEST_PG: skipped\n"); \
        skip();                                     \
    }                                               \
    store *s = f->s;                                \
    (void)s

/* ---------------------------------------------------------------- helpers */

static int64_t
add(store *s, const char *kind, int priority, int max_attempts, const char *key, int64_t now)
{
    store_new_task nt = {.kind = kind, .input = "{\"n\":1}", .priority = priority,
                         .max_attempts = max_attempts, .timeout_ms = 1000, .idem_key = key};
    store_task t;
    int rc = store_insert(s, &nt, now, &t);
    if (rc != STORE_OK)
        fail_msg("insert: %d %s", rc, store_errmsg(s));
    int64_t id = t.id;
    store_task_clear(&t);
    return id;
}

static int64_t
claim(store *s, int64_t now, long owner)
{
    store_task t;
    int rc = store_claim_next(s, now, owner, NULL, &t);
    if (rc != STORE_OK)
        fail_msg("claim: %d %s", rc, store_errmsg(s));
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

static int64_t
count_of(store *s, enum task_state st)
{
    int64_t c[TASK_STATE_COUNT];
    assert_int_equal(store_count_states(s, c), STORE_OK);
    return c[st];
}

static void
count_progress(void *arg, const char *line)
{
    (void)line;
    (*(int *)arg)++;
}

/* ---------------------------------------------------------------- the contract */

static void
test_round_trip(void **state)
{
    FIXTURE();
    assert_int_equal(store_schema_version(s) > 0, 1);
    assert_int_equal(store_ping(s), STORE_OK);
    assert_true(store_secret(s) != 0);
    store_new_task nt = {.kind = "echo", .input = "{\"a\":[1,2,\"x\"],\"b\":\"\xc3\xa9\"}",
                         .priority = -7, .max_attempts = 3, .timeout_ms = 86400000};
    store_task t;
    assert_int_equal(store_insert(s, &nt, 1767323045678, &t), STORE_OK);
    int64_t id = t.id;
    assert_true(id > 0);
    store_task_clear(&t);
    assert_int_equal(store_get(s, id, &t), STORE_OK);
    assert_string_equal(t.kind, "echo");
    assert_int_equal(t.state, TASK_PENDING);
    assert_int_equal(t.priority, -7);
    assert_string_equal(t.input, nt.input);     /* byte for byte */
    assert_null(t.result);
    assert_null(t.error_code);
    assert_int_equal(t.max_attempts, 3);
    assert_int_equal(t.timeout_ms, 86400000);
    assert_int_equal(t.created_at_ms, 1767323045678);
    assert_int_equal(t.started_at_ms, 0);
    assert_int_equal(t.finished_at_ms, 0);
    store_task_clear(&t);

    assert_int_equal(store_claim_next(s, 2000000000000, 42, NULL, &t), STORE_OK);
    assert_int_equal(t.id, id);
    assert_int_equal(t.state, TASK_RUNNING);
    assert_int_equal(t.attempts, 1);
    assert_int_equal(t.started_at_ms, 2000000000000);
    store_task_clear(&t);
    store_outcome o = {.state = TASK_SUCCEEDED, .result = "{\"out\":\"\xc3\xa9\"}",
                       .now_ms = 2000000000123};
    assert_int_equal(store_finish(s, id, 1, &o), STORE_OK);
    assert_int_equal(store_get(s, id, &t), STORE_OK);
    assert_int_equal(t.state, TASK_SUCCEEDED);
    assert_string_equal(t.result, "{\"out\":\"\xc3\xa9\"}");
    assert_int_equal(t.finished_at_ms, 2000000000123);
    store_task_clear(&t);
    assert_int_equal(store_get(s, id + 1000, &t), STORE_NOTFOUND);
}

static void
test_idempotency_keys(void **state)
{
    FIXTURE();
    int64_t a = add(s, "echo", 0, 1, "key-a", 1);
    store_new_task nt = {.kind = "echo", .input = "2", .max_attempts = 1, .timeout_ms = 5,
                         .idem_key = "key-a"};
    store_task t;
    assert_int_equal(store_insert(s, &nt, 2, &t), STORE_EXISTS);
    assert_int_equal(t.id, a);
    assert_string_equal(t.input, "{\"n\":1}");
    store_task_clear(&t);

    /* a batch in a transaction: a new key twice, an old key, no key */
    store_new_task b[4] = {
        {.kind = "echo", .input = "1", .max_attempts = 1, .timeout_ms = 5, .idem_key = "k2"},
        {.kind = "echo", .input = "2", .max_attempts = 1, .timeout_ms = 5, .idem_key = "k2"},
        {.kind = "echo", .input = "3", .max_attempts = 1, .timeout_ms = 5, .idem_key = "key-a"},
        {.kind = "echo", .input = "4", .max_attempts = 1, .timeout_ms = 5},
    };
    store_task out[4];
    int st[4];
    assert_int_equal(store_begin(s), STORE_OK);
    assert_int_equal(store_insert_batch(s, b, 4, 3, out, st), STORE_OK);
    assert_int_equal(store_commit(s), STORE_OK);
    assert_int_equal(st[0], STORE_OK);
    assert_int_equal(st[1], STORE_EXISTS);
    assert_int_equal(out[1].id, out[0].id);
    assert_int_equal(st[2], STORE_EXISTS);
    assert_int_equal(out[2].id, a);
    assert_int_equal(st[3], STORE_OK);
    for (int i = 0; i < 4; i++)
        store_task_clear(&out[i]);
    assert_int_equal(count_of(s, TASK_PENDING), 3);

    /* a rolled back batch leaves nothing, keys included */
    store_new_task r = {.kind = "echo", .input = "5", .max_attempts = 1, .timeout_ms = 5,
                        .idem_key = "k-rolled"};
    assert_int_equal(store_begin(s), STORE_OK);
    assert_int_equal(store_insert_batch(s, &r, 1, 4, out, st), STORE_OK);
    store_task_clear(&out[0]);
    store_rollback(s);
    assert_int_equal(count_of(s, TASK_PENDING), 3);
    assert_int_equal(store_insert(s, &r, 5, &t), STORE_OK);
    store_task_clear(&t);
}

static void
test_claim_order_and_cas(void **state)
{
    FIXTURE();
    int64_t a = add(s, "echo", 0, 2, NULL, 1);
    int64_t b = add(s, "echo", 5, 2, NULL, 1);
    int64_t c = add(s, "echo", 5, 2, NULL, 1);
    int64_t d = add(s, "echo", -3, 2, NULL, 1);
    int64_t want[] = {b, c, a, d};
    for (int i = 0; i < 4; i++)
        assert_int_equal(claim(s, 10, 7), want[i]);
    store_task t;
    assert_int_equal(store_claim_next(s, 10, 7, NULL, &t), STORE_EMPTY);
    assert_int_equal(store_has_ready(s, 10, NULL), 0);

    /* the attempt's compare-and-set: a wrong attempt, a finished task */
    store_outcome ok = {.state = TASK_SUCCEEDED, .result = "1", .now_ms = 20};
    assert_int_equal(store_finish(s, b, 2, &ok), STORE_CONFLICT);
    assert_int_equal(store_finish(s, b, 1, &ok), STORE_OK);
    assert_int_equal(store_finish(s, b, 1, &ok), STORE_CONFLICT);
    /* released by its owner, claimed again: the first attempt cannot record any more */
    store_task_ref refs[4];
    size_t n = 0;
    assert_int_equal(store_release_lost(s, 99, 0, 30, NULL, NULL, refs, 4, &n), STORE_OK);
    assert_int_equal(n, 0);                     /* nobody's */
    assert_int_equal(store_release_lost(s, 7, 0, 30, NULL, NULL, refs, 4, &n), STORE_OK);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(refs[i].state, TASK_PENDING);
    assert_int_equal(claim(s, 40, 8), c);
    assert_int_equal(store_finish(s, c, 1, &ok), STORE_CONFLICT);
    assert_int_equal(store_finish(s, c, 2, &ok), STORE_OK);
    /* no attempts left: released to failed/worker_lost */
    assert_int_equal(claim(s, 41, 8), a);
    assert_int_equal(store_release_lost(s, 8, 0, 50, NULL, NULL, refs, 4, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(refs[0].state, TASK_FAILED);
    assert_int_equal(store_get(s, a, &t), STORE_OK);
    assert_string_equal(t.error_code, "worker_lost");
    assert_int_equal(t.finished_at_ms, 50);
    store_task_clear(&t);
    /* cancel: pending only */
    assert_int_equal(store_cancel(s, d, 60, &t), STORE_OK);
    assert_int_equal(t.state, TASK_CANCELED);
    store_task_clear(&t);
    assert_int_equal(store_cancel(s, d, 61, &t), STORE_CONFLICT);
    assert_int_equal(t.state, TASK_CANCELED);
    store_task_clear(&t);
    assert_int_equal(store_cancel(s, d + 1000, 61, &t), STORE_NOTFOUND);
}

static void
test_finish_claim(void **state)
{
    FIXTURE();
    int64_t a = add(s, "echo", 0, 1, NULL, 1);
    int64_t b = add(s, "echo", 0, 1, NULL, 1);
    assert_int_equal(claim(s, 5, 3), a);
    store_outcome ok = {.state = TASK_SUCCEEDED, .result = "1", .now_ms = 6};
    store_task next;
    int claimed = -1;
    assert_int_equal(store_finish_claim(s, a, 1, &ok, 7, 3, NULL, &next, &claimed), STORE_OK);
    assert_int_equal(claimed, 1);
    assert_int_equal(next.id, b);
    assert_int_equal(next.state, TASK_RUNNING);
    store_task_clear(&next);
    /* a conflict still claims (nothing left here), and says so */
    assert_int_equal(store_finish_claim(s, a, 1, &ok, 8, 3, NULL, &next, &claimed), STORE_CONFLICT);
    assert_int_equal(claimed, 0);
    assert_int_equal(store_finish_claim(s, b, 1, &ok, 9, 3, NULL, &next, &claimed), STORE_OK);
    assert_int_equal(claimed, 0);
    assert_int_equal(count_of(s, TASK_SUCCEEDED), 2);
    assert_int_equal(count_of(s, TASK_RUNNING), 0);
}

static store_task
get_task(store *s, int64_t id)
{
    store_task t;
    assert_int_equal(store_get(s, id, &t), STORE_OK);
    return t;
}

/* Batches (issue 12): outcomes recorded, tasks handed back and the next claimed in one
 * transaction; a batch never takes more than its share of what waits; its tasks are
 * held (started_at unset until recorded); a held task handed back, or released when it
 * was not the one running, goes back as never claimed. Both backends batch
 * (store_batch_max 16). */
static void
test_record_batch(void **state)
{
    FIXTURE();
    size_t max = store_batch_max(s);
    assert_true(max >= 1);
    int64_t ids[12];
    for (int i = 0; i < 12; i++)
        ids[i] = add(s, "echo", 0, 1, NULL, 1);
    assert_int_equal(claim(s, 5, 3), ids[0]);
    store_done done[2] = {{.id = ids[0], .attempt = 1,
                           .o = {.state = TASK_SUCCEEDED, .result = "1", .now_ms = 6,
                                 .started_ms = 5}},
                          {.id = ids[0], .attempt = 2,       /* not its attempt */
                           .o = {.state = TASK_SUCCEEDED, .result = "2", .now_ms = 6}}};
    store_task next[16];
    size_t n = 99;
    /* 11 wait, shared by 4 workers: at most 2 (11 / 4) */
    assert_int_equal(store_record_batch(s, done, 2, NULL, 0, 7, 3, NULL, 16, 4, next, &n),
                     STORE_OK);
    assert_int_equal(done[0].rc, STORE_OK);
    assert_int_equal(done[1].rc, STORE_CONFLICT);
    size_t want = max < 2 ? max : 2;
    assert_int_equal(n, want);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(next[i].id, ids[1 + i]);
        assert_int_equal(next[i].state, TASK_RUNNING);
        assert_int_equal(next[i].attempts, 1);
        /* held in a batch: started when it runs */
        assert_int_equal(next[i].started_at_ms, max > 1 ? 0 : 7);
    }
    store_task t = get_task(s, ids[0]);
    assert_int_equal(t.state, TASK_SUCCEEDED);
    assert_string_equal(t.result, "1");
    assert_int_equal(t.started_at_ms, 5);      /* the claim's: kept */
    store_task_clear(&t);
    if (max > 1) {
        /* the first ran (started at 8), the second is handed back; one worker now: all 9
         * waiting may be taken, up to 16 */
        store_done d1 = {.id = ids[1], .attempt = 1,
                         .o = {.state = TASK_SUCCEEDED, .result = "3", .now_ms = 9,
                               .started_ms = 8}};
        store_claim_ref back = {ids[2], 1};
        size_t m = 0;
        store_task more[16];
        assert_int_equal(store_record_batch(s, &d1, 1, &back, 1, 10, 3, NULL, 16, 1, more,
                                            &m), STORE_OK);
        assert_int_equal(d1.rc, STORE_OK);
        t = get_task(s, ids[1]);
        assert_int_equal(t.started_at_ms, 8);   /* when it began, from the outcome */
        assert_int_equal(t.finished_at_ms, 9);
        store_task_clear(&t);
        /* handed back, then claimed again first (it is the oldest): attempt 1 again */
        assert_int_equal(m, 10);
        assert_int_equal(more[0].id, ids[2]);
        assert_int_equal(more[0].attempts, 1);
        assert_int_equal(more[9].id, ids[11]);
        for (size_t i = 0; i < m; i++)
            store_task_clear(&more[i]);
        /* the worker dies running ids[5]: that one is a lost attempt (max_attempts 1:
         * failed), the nine others it held go back as never claimed */
        store_task_ref refs[16];
        size_t nr = 0;
        assert_int_equal(store_release_lost(s, 3, ids[5], 20, NULL, NULL, refs, 16, &nr),
                         STORE_OK);
        assert_int_equal(nr, 10);
        for (size_t i = 0; i < nr; i++)             /* which ones ran: only ids[5] */
            assert_int_equal(refs[i].not_started, refs[i].id != ids[5]);
        t = get_task(s, ids[5]);
        assert_int_equal(t.state, TASK_FAILED);
        assert_string_equal(t.error_code, "worker_lost");
        assert_int_equal(t.attempts, 1);
        store_task_clear(&t);
        t = get_task(s, ids[6]);
        assert_int_equal(t.state, TASK_PENDING);
        assert_int_equal(t.attempts, 0);
        assert_null(t.error_code);
        store_task_clear(&t);
        assert_int_equal(count_of(s, TASK_PENDING), 9);
        assert_int_equal(count_of(s, TASK_RUNNING), 0);
        /* a hand-back of a task no longer held (pending now) changes nothing */
        store_claim_ref stale = {ids[6], 1};
        assert_int_equal(store_record_batch(s, NULL, 0, &stale, 1, 21, 3, NULL, 0, 1, more,
                                            &m), STORE_OK);
        assert_int_equal(m, 0);
        t = get_task(s, ids[6]);
        assert_int_equal(t.state, TASK_PENDING);
        assert_int_equal(t.attempts, 0);
        store_task_clear(&t);
        /* held when the whole instance stopped: back as never claimed at the next start */
        assert_int_equal(store_record_batch(s, NULL, 0, NULL, 0, 22, 4, NULL, 16, 1, more,
                                            &m), STORE_OK);
        assert_int_equal(m, 9);
        for (size_t i = 0; i < m; i++)
            store_task_clear(&more[i]);
        if (f->backend == PG) {
            /* here the start is of another instance (store_rescue, test_pg_batch_rescue):
             * a dead worker that ran none of them */
            assert_int_equal(store_release_lost(s, 4, 0, 23, NULL, NULL, refs, 16, &nr),
                             STORE_OK);
            assert_int_equal(nr, 9);
            for (size_t i = 0; i < nr; i++)
                assert_int_equal(refs[i].not_started, 1);
        } else {
            int requeued = 0, failed = 0;
            assert_int_equal(store_recover_running(s, 23, &requeued, &failed), STORE_OK);
            assert_int_equal(requeued, 9);
            assert_int_equal(failed, 0);
        }
        t = get_task(s, ids[6]);
        assert_int_equal(t.state, TASK_PENDING);
        assert_int_equal(t.attempts, 0);
        assert_null(t.error_code);
        store_task_clear(&t);
    }
    for (size_t i = 0; i < n; i++)
        store_task_clear(&next[i]);
}

/* A claim that leaves some kinds alone (store_kind_set) takes the best task of the
 * others, in order, and says there is nothing when only the left-alone kinds wait. */
static void
test_claim_skips_kinds(void **state)
{
    FIXTURE();
    int64_t s1 = add(s, "scan", 9, 2, NULL, 1);
    int64_t e1 = add(s, "echo", 0, 2, NULL, 1);
    int64_t z1 = add(s, "sleep", 5, 2, NULL, 1);
    int64_t e2 = add(s, "echo", 5, 2, NULL, 1);
    int64_t s2 = add(s, "scan", 0, 2, NULL, 1);
    const char *const names[] = {"scan", "nosuch\"kind"};
    store_kind_set skip = {names, 2};
    assert_int_equal(store_has_ready(s, 2, &skip), 1);
    store_task t;
    assert_int_equal(store_claim_next(s, 3, 4, &skip, &t), STORE_OK);
    assert_int_equal(t.id, z1);
    store_task_clear(&t);
    store_outcome ok = {.state = TASK_SUCCEEDED, .result = "1", .now_ms = 4};
    store_task next;
    int claimed = 0;
    assert_int_equal(store_finish_claim(s, z1, 1, &ok, 5, 4, &skip, &next, &claimed), STORE_OK);
    assert_int_equal(claimed, 1);
    assert_int_equal(next.id, e2);
    store_task_clear(&next);
    assert_int_equal(store_claim_next(s, 6, 5, &skip, &t), STORE_OK);
    assert_int_equal(t.id, e1);
    store_task_clear(&t);
    assert_int_equal(store_claim_next(s, 7, 5, &skip, &t), STORE_EMPTY);
    assert_int_equal(store_has_ready(s, 7, &skip), 0);
    assert_int_equal(store_has_ready(s, 7, NULL), 1);
    store_kind_set none = {names, 0};
    assert_int_equal(store_claim_next(s, 8, 6, &none, &t), STORE_OK);
    assert_int_equal(t.id, s1);
    store_task_clear(&t);
    /* a due retry of a kind left alone: has_ready says yes (the claim promotes it), the
     * claim leaves it */
    store_outcome retry = {.state = TASK_PENDING, .error_code = "x", .now_ms = 9,
                           .run_after_ms = 10};
    assert_int_equal(store_finish(s, s1, 1, &retry), STORE_OK);
    assert_int_equal(store_has_ready(s, 11, &skip), 1);
    assert_int_equal(store_claim_next(s, 11, 6, &skip, &t), STORE_EMPTY);
    assert_int_equal(claim(s, 12, 6), s1);
    assert_int_equal(claim(s, 12, 6), s2);
}

/* A retry waits in tasks_delayed; a claim promotes it when due, by priority and id as if
 * it had never waited; claims never step over waiting ones. */
static void
test_delayed_retries(void **state)
{
    FIXTURE();
    int64_t r = add(s, "echo", 5, 3, NULL, 1);
    assert_int_equal(claim(s, 10, 1), r);
    store_outcome retry = {.state = TASK_PENDING, .error_code = "task_failed",
                           .error_message = "again", .now_ms = 20, .run_after_ms = 1000};
    assert_int_equal(store_finish(s, r, 1, &retry), STORE_OK);
    int64_t low = add(s, "echo", 0, 1, NULL, 30);
    assert_int_equal(store_has_ready(s, 500, NULL), 1);
    assert_int_equal(store_next_run_after(s, 500), 1000);
    assert_int_equal(claim(s, 500, 1), low);            /* the retry is not due yet */
    assert_int_equal(store_has_ready(s, 500, NULL), 0);
    assert_int_equal(store_next_run_after(s, 500), 1000);
    store_task t;
    assert_int_equal(store_claim_next(s, 999, 1, NULL, &t), STORE_EMPTY);
    int64_t low2 = add(s, "echo", 0, 1, NULL, 40);
    assert_int_equal(store_has_ready(s, 1000, NULL), 1);
    assert_int_equal(claim(s, 1000, 1), r);             /* due: priority 5 first */
    assert_int_equal(claim(s, 1000, 1), low2);
    assert_int_equal(store_next_run_after(s, 1000), 0);
    assert_int_equal(store_get(s, r, &t), STORE_OK);
    assert_int_equal(t.attempts, 2);
    store_task_clear(&t);
}

static void
test_lists(void **state)
{
    FIXTURE();
    int64_t ids[30];
    for (int i = 0; i < 30; i++)
        ids[i] = add(s, i % 3 == 0 ? "echo" : i % 3 == 1 ? "sleep" : "scan", 0, 1, NULL, i);
    /* 10 succeeded (of every kind), 2 running, the rest pending */
    store_outcome ok = {.state = TASK_SUCCEEDED, .result = "1", .now_ms = 100};
    for (int i = 0; i < 10; i++) {
        int64_t id = claim(s, 50, 1);
        assert_int_equal(store_finish(s, id, 1, &ok), STORE_OK);
    }
    claim(s, 60, 2);
    claim(s, 60, 2);
    struct {
        int has_state;
        enum task_state st;
        const char *kind;
        int want;
    } cases[] = {
        {0, 0, NULL, 30}, {0, 0, "echo", 10}, {1, TASK_SUCCEEDED, NULL, 10},
        {1, TASK_PENDING, NULL, 18}, {1, TASK_RUNNING, NULL, 2},
        {1, TASK_SUCCEEDED, "sleep", 3}, {1, TASK_FAILED, NULL, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int limit = 1; limit <= 7; limit += 3) {
            store_filter fl = {.has_state = cases[c].has_state, .state = cases[c].st,
                               .kind = cases[c].kind, .limit = limit};
            int total = 0, more = 1;
            int64_t last = INT64_MAX;
            while (more) {
                store_task *items;
                size_t n;
                assert_int_equal(store_list(s, &fl, &items, &n, &more), STORE_OK);
                for (size_t i = 0; i < n; i++) {
                    assert_true(items[i].id < last);        /* newest first, no repeats */
                    last = items[i].id;
                    assert_null(items[i].input);
                    if (cases[c].has_state)
                        assert_int_equal(items[i].state, cases[c].st);
                    if (cases[c].kind)
                        assert_string_equal(items[i].kind, cases[c].kind);
                    store_task_clear(&items[i]);
                }
                free(items);
                total += (int)n;
                fl.before_id = last;
                assert_true(n <= (size_t)limit);
            }
            if (total != cases[c].want)
                fail_msg("case %zu limit %d: %d tasks, want %d", c, limit, total, cases[c].want);
        }
    }
    (void)ids;
}

static void
test_counts_and_purge(void **state)
{
    FIXTURE();
    for (int i = 0; i < 50; i++)
        add(s, i % 2 ? "echo" : "sleep", 0, 2, NULL, i);
    store_outcome ok = {.state = TASK_SUCCEEDED, .result = "1"};
    for (int i = 0; i < 40; i++) {
        int64_t id = claim(s, 100, 1);
        ok.now_ms = 1000 + i;
        assert_int_equal(store_finish(s, id, 1, &ok), STORE_OK);
    }
    store_task t;
    int64_t x = add(s, "echo", 0, 1, NULL, 200);
    assert_int_equal(store_cancel(s, x, 2000, &t), STORE_OK);
    store_task_clear(&t);
    claim(s, 300, 2);
    int64_t c[TASK_STATE_COUNT];
    assert_int_equal(store_count_states(s, c), STORE_OK);
    assert_int_equal(c[TASK_PENDING], 9);
    assert_int_equal(c[TASK_RUNNING], 1);
    assert_int_equal(c[TASK_SUCCEEDED], 40);
    assert_int_equal(c[TASK_CANCELED], 1);
    assert_int_equal(store_count_pending(s), 9);
    store_kind_counts *k;
    size_t nk;
    assert_int_equal(store_count_kinds(s, &k, &nk), STORE_OK);
    assert_int_equal(nk, 2);
    int64_t sum = 0;
    for (size_t i = 0; i < nk; i++)
        for (int j = 0; j < TASK_STATE_COUNT; j++)
            sum += k[i].n[j];
    assert_int_equal(sum, 51);
    store_kind_counts_free(k, nk);

    /* the oldest finished first, in batches; pending and running never */
    int deleted = -1;
    assert_int_equal(store_purge(s, 1010, 4, &deleted), STORE_OK);
    assert_int_equal(deleted, 4);
    assert_int_equal(store_purge(s, 1010, 100, &deleted), STORE_OK);
    assert_int_equal(deleted, 6);
    assert_int_equal(store_purge(s, 1010, 100, &deleted), STORE_OK);
    assert_int_equal(deleted, 0);
    assert_int_equal(store_purge(s, 1 << 30, 1000, &deleted), STORE_OK);
    assert_int_equal(deleted, 31);
    assert_int_equal(store_count_states(s, c), STORE_OK);
    assert_int_equal(c[TASK_PENDING], 9);
    assert_int_equal(c[TASK_RUNNING], 1);
    assert_int_equal(c[TASK_SUCCEEDED], 0);
    assert_int_equal(c[TASK_CANCELED], 0);
}

/* Two processes claim 300 tasks as fast as they can: no task twice. */
static void
test_concurrent_claims_never_double(void **state)
{
    FIXTURE();
    enum { N = 300 };
    store_task out[N];
    store_new_task nt[N];
    int st[N];
    for (int i = 0; i < N; i++)
        nt[i] = (store_new_task){.kind = "echo", .input = "1", .max_attempts = 1,
                                 .timeout_ms = 1};
    assert_int_equal(store_begin(s), STORE_OK);
    assert_int_equal(store_insert_batch(s, nt, N, 1, out, st), STORE_OK);
    assert_int_equal(store_commit(s), STORE_OK);
    for (int i = 0; i < N; i++)
        store_task_clear(&out[i]);
    int p[2][2];
    pid_t kid[2];
    for (int k = 0; k < 2; k++) {
        assert_int_equal(pipe(p[k]), 0);
        kid[k] = fork();
        if (kid[k] == 0) {
            char err[256];
            store *c = store_open(f->db, STORE_RELAXED, BUSY_MS, err, sizeof err);
            if (c == NULL)
                _exit(2);
            store_task t;
            store_outcome ok = {.state = TASK_SUCCEEDED, .result = "1", .now_ms = 5};
            for (;;) {
                int rc = store_claim_next(c, 2, 100 + k, NULL, &t);
                if (rc == STORE_EMPTY)
                    break;
                if (rc == STORE_BUSY)
                    continue;
                if (rc != STORE_OK)
                    _exit(3);
                if (write(p[k][1], &t.id, sizeof t.id) != sizeof t.id ||
                    store_finish(c, t.id, 1, &ok) != STORE_OK)
                    _exit(4);
                store_task_clear(&t);
            }
            store_close(c);
            _exit(0);
        }
        close(p[k][1]);
    }
    static int seen[N * 4];
    memset(seen, 0, sizeof seen);
    int total = 0;
    for (int k = 0; k < 2; k++) {
        int64_t id;
        while (read(p[k][0], &id, sizeof id) == sizeof id) {
            assert_true(id > 0 && id < N * 4);
            if (seen[id]++)
                fail_msg("task %lld claimed twice", (long long)id);
            total++;
        }
        close(p[k][0]);
        int status;
        assert_int_equal(waitpid(kid[k], &status, 0), kid[k]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail_msg("claimer %d: status %d", k, status);
    }
    assert_int_equal(total, N);
    assert_int_equal(count_of(s, TASK_SUCCEEDED), N);
}

/* Instances: this one is listed; with SQLite only this one, and no events ever. */
static void
test_instances_contract(void **state)
{
    FIXTURE();
    int live = 0, was_lost = 1;
    assert_int_equal(store_heartbeat(s, &live, &was_lost), STORE_OK);
    assert_int_equal(live, 1);
    assert_int_equal(was_lost, 0);
    store_instance *v;
    size_t n;
    assert_int_equal(store_instances(s, &v, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].name, "test:1");
    assert_int_equal(v[0].pid, getpid());
    assert_int_equal(v[0].workers, 2);
    assert_true(v[0].id == store_instance_self()->id);
    assert_true(llabs(v[0].last_seen_ms - clock_now_ms()) < 5000);
    free(v);
    store_task_ref refs[4];
    size_t nr = 9;
    int lost = 9;
    assert_int_equal(store_rescue(s, 1, refs, 4, &nr, &lost), STORE_OK);
    assert_int_equal(nr, 0);
    assert_int_equal(lost, 0);
    assert_int_equal(store_listen(s), STORE_OK);
    store_event ev[4];
    size_t ne = 9;
    add(s, "echo", 0, 1, NULL, 1);             /* our own: never an event */
    assert_int_equal(store_events(s, ev, 4, &ne), STORE_OK);
    assert_int_equal(ne, 0);
    char note[128];
    assert_int_equal(store_maintain(s, note, sizeof note), STORE_OK);
    assert_int_equal(store_leave(s), STORE_OK);
}

/* ---------------------------------------------------------------- PostgreSQL only */

#define PG_ONLY()                                   \
    FIXTURE();                                      \
    if (f->backend != PG)                           \
        return

/* Four instances start at once on an empty database: one migrates, the others wait
 * for it and find the schema done. */
static void
test_pg_concurrent_migrations(void **state)
{
    struct fixture *f = *state;
    if (f == NULL)
        skip();
    enum { K = 4 };
    pid_t kid[K];
    int hold[2], done[2];
    assert_int_equal(pipe(hold), 0);
    assert_int_equal(pipe(done), 0);
    for (int k = 0; k < K; k++) {
        kid[k] = fork();
        if (kid[k] == 0) {
            char err[512], c;
            store_instance in;
            describe_inst(&in, "racer");
            close(hold[1]);
            int rc = store_start(f->db, &in, NULL, NULL, NULL, err, sizeof err);
            if (rc != STORE_OK)
                fprintf(stderr, "racer %d: %s\n", k, err);
            c = rc == STORE_OK ? 'y' : 'n';
            if (write(done[1], &c, 1) != 1)
                _exit(2);
            /* alive until the parent has counted: a dead one's row is recovered (and
             * removed) by a racer that starts after it in the same pid namespace */
            while (read(hold[0], &c, 1) > 0)
                ;
            _exit(rc == STORE_OK ? 0 : 1);
        }
    }
    close(hold[0]);
    for (int k = 0; k < K; k++) {
        char c = 0;
        assert_int_equal(read(done[0], &c, 1), 1);
        assert_int_equal(c, 'y');
    }
    assert_int_equal(sql_i64(f, "SELECT count(*) FROM instances"), K);
    close(hold[1]);
    for (int k = 0; k < K; k++) {
        int status;
        assert_int_equal(waitpid(kid[k], &status, 0), kid[k]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    close(done[0]);
    close(done[1]);
    assert_int_equal(sql_i64(f, "SELECT value::int FROM meta WHERE key = 'schema_version'"), 5);
    char err[256];
    store *s = store_open(f->db, STORE_DURABLE, BUSY_MS, err, sizeof err);
    assert_non_null(s);
    store_close(s);
}

static void
test_pg_unreachable_names_host_not_password(void **state)
{
    (void)state;
    /* a port nobody listens on (bound, not listening) */
    char err[512] = "";
    const char *uri = "postgresql://alice:s3cr3t-pw@127.0.0.1:1/wp?connect_timeout=2";
    store *s = store_open(uri, STORE_DURABLE, BUSY_MS, err, sizeof err);
    assert_null(s);
    assert_non_null(strstr(err, "127.0.0.1"));
    assert_null(strstr(err, "s3cr3t"));
    store_instance in;
    describe_inst(&in, "x");
    err[0] = '\0';
    assert_int_equal(store_start(uri, &in, NULL, NULL, NULL, err, sizeof err), STORE_UNAVAILABLE);
    assert_non_null(strstr(err, "127.0.0.1"));
    assert_null(strstr(err, "s3cr3t"));
    char d[256];
    store_describe(uri, d, sizeof d);
    assert_string_equal(d, "postgresql://alice@127.0.0.1:1/wp");
    store_describe("/var/lib/warmpool/w.db", d, sizeof d);
    assert_string_equal(d, "/var/lib/warmpool/w.db");
    assert_int_equal(store_backend_of("postgres://h/d"), STORE_POSTGRES);
    assert_int_equal(store_backend_of("POSTGRESQL://h/d"), STORE_POSTGRES);
    assert_int_equal(store_backend_of("./postgres://x"), STORE_SQLITE);
}

/* A database of PostgreSQL schema 1 (the first release with PostgreSQL) with a task in it
 * is upgraded to 5 (versions 2 to 4 are empty there; 5 adds the callback columns): the task
 * keeps its fields and has no callback, and new tasks may have one. */
static void
test_pg_upgrade_1_to_5(void **state)
{
    struct fixture *f = *state;
    if (f == NULL)
        skip();
    char err[512] = "";
    int from = -1;
    assert_int_equal(store_migrate(f->db, NULL, NULL, &from, err, sizeof err), STORE_OK);
    /* what version 1 had */
    PQclear(admin_sql(f, "DROP INDEX tasks_callback; DROP TABLE paused_kinds;"
                         " ALTER TABLE tasks DROP COLUMN callback_url,"
                         " DROP COLUMN callback_state, DROP COLUMN callback_attempts,"
                         " DROP COLUMN callback_next_at, DROP COLUMN callback_error,"
                         " DROP COLUMN previous_error_code, DROP COLUMN previous_error_message;"
                         " UPDATE meta SET value = '1' WHERE key = 'schema_version';"
                         " INSERT INTO tasks (kind, state, priority, input, max_attempts, timeout_ms,"
                         " created_at) VALUES ('echo', 'pending', 3, '{\"old\":1}', 2, 1000, 5)"));
    assert_null(store_open(f->db, STORE_DURABLE, BUSY_MS, err, sizeof err));
    assert_non_null(strstr(err, "needs 5"));
    int lines = 0;
    assert_int_equal(store_migrate(f->db, count_progress, &lines, &from, err, sizeof err), STORE_OK);
    assert_int_equal(from, 1);
    assert_true(lines > 0);
    f->s = store_open(f->db, STORE_RELAXED, BUSY_MS, err, sizeof err);
    assert_non_null(f->s);
    assert_int_equal(store_schema_version(f->s), 5);
    store_task t;
    assert_int_equal(store_claim_next(f->s, 10, 1, NULL, &t), STORE_OK);
    assert_string_equal(t.input, "{\"old\":1}");
    assert_int_equal(t.priority, 3);
    assert_null(t.callback_url);
    assert_int_equal(t.callback_state, STORE_CB_NONE);
    store_task_clear(&t);
    store_new_task nt = {.kind = "echo", .input = "1", .max_attempts = 1, .timeout_ms = 5,
                         .callback_url = "http://h/x"};
    assert_int_equal(store_insert(f->s, &nt, 1, &t), STORE_OK);
    assert_int_equal(t.callback_state, STORE_CB_PENDING);
    store_task_clear(&t);
}

static void
test_pg_schema_refusals(void **state)
{
    struct fixture *f = *state;
    if (f == NULL)
        skip();
    char err[512] = "";
    /* not migrated yet */
    assert_null(store_open(f->db, STORE_DURABLE, BUSY_MS, err, sizeof err));
    assert_non_null(strstr(err, "no warmpool schema"));
    int from = -1;
    assert_int_equal(store_migrate(f->db, NULL, NULL, &from, err, sizeof err), STORE_OK);
    assert_int_equal(from, 0);
    assert_int_equal(store_migrate(f->db, NULL, NULL, &from, err, sizeof err), STORE_OK);
    assert_int_equal(from, 5);
    PQclear(admin_sql(f, "UPDATE meta SET value = '99' WHERE key = 'schema_version'"));
    assert_int_equal(store_migrate(f->db, NULL, NULL, &from, err, sizeof err), STORE_ERR);
    assert_non_null(strstr(err, "newer"));
    assert_null(store_open(f->db, STORE_DURABLE, BUSY_MS, err, sizeof err));
    assert_non_null(strstr(err, "newer"));
}

/* Exact counts while four processes insert, claim, finish, retry, cancel and purge at
 * once: the sum of the shards equals COUNT(*) per state and kind, and no transaction
 * ever waited on another's count rows (no deadlock, no lock timeout). */
static void
test_pg_counts_exact_under_concurrency(void **state)
{
    PG_ONLY();
    enum { K = 4, ROUNDS = 60 };
    pid_t kid[K];
    for (int k = 0; k < K; k++) {
        kid[k] = fork();
        if (kid[k] == 0) {
            char err[256];
            srandom((unsigned)getpid());
            store *c = store_open(f->db, STORE_RELAXED, 2000, err, sizeof err);
            if (c == NULL)
                _exit(2);
            const char *kinds[] = {"echo", "sleep", "scan"};
            for (int r = 0; r < ROUNDS; r++) {
                int n = 1 + (int)(random() % 8);
                store_new_task nt[8];
                store_task out[8];
                int st[8];
                for (int i = 0; i < n; i++)
                    nt[i] = (store_new_task){.kind = kinds[random() % 3], .input = "1",
                                             .max_attempts = 2, .timeout_ms = 1};
                int rc = store_begin(c);
                if (rc == STORE_OK)
                    rc = store_insert_batch(c, nt, (size_t)n, r, out, st);
                if (rc == STORE_OK && random() % 5 == 0) {
                    for (int i = 0; i < n; i++)
                        store_task_clear(&out[i]);
                    store_rollback(c);
                    rc = STORE_EMPTY;
                } else if (rc == STORE_OK) {
                    rc = store_commit(c);
                } else {
                    store_rollback(c);
                }
                if (rc == STORE_OK)
                    for (int i = 0; i < n; i++)
                        store_task_clear(&out[i]);
                else if (rc != STORE_EMPTY)
                    _exit(10 + rc);
                store_task t;
                rc = store_claim_next(c, 1000 + r, 100 + k, NULL, &t);
                if (rc == STORE_OK) {
                    int what = (int)(random() % 3);
                    store_outcome o = {.state = what == 0 ? TASK_SUCCEEDED
                                              : what == 1 ? TASK_FAILED : TASK_PENDING,
                                       .result = "1", .error_code = "x", .now_ms = r,
                                       .run_after_ms = r + 1};
                    store_task next;
                    int got;
                    rc = store_finish_claim(c, t.id, t.attempts, &o, 1000 + r, 100 + k, NULL, &next,
                                            &got);
                    if (rc != STORE_OK)
                        _exit(30 + rc);
                    if (got) {
                        store_task_ref refs[4];
                        size_t nr;
                        rc = store_release_lost(c, 100 + k, 0, r, NULL, NULL, refs, 4, &nr);
                        if (rc != STORE_OK)
                            _exit(40 + rc);
                        store_task_clear(&next);
                    }
                    store_task_clear(&t);
                } else if (rc != STORE_EMPTY) {
                    _exit(20 + rc);
                }
                if (random() % 4 == 0) {
                    int del;
                    if (store_purge(c, r, 10, &del) != STORE_OK)
                        _exit(50);
                }
                if (random() % 4 == 0 && store_count_pending(c) < 0)
                    _exit(60);
            }
            store_close(c);
            _exit(0);
        }
    }
    for (int k = 0; k < K; k++) {
        int status;
        assert_int_equal(waitpid(kid[k], &status, 0), kid[k]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail_msg("process %d: status %d (exit %d)", k, status, WEXITSTATUS(status));
    }
    int64_t drift = sql_i64(f,
        "SELECT count(*) FROM (SELECT state, kind, sum(n) AS n FROM task_counts"
        " GROUP BY state, kind HAVING sum(n) <> 0) AS kept FULL JOIN"
        " (SELECT state, kind, count(*) AS n FROM tasks WHERE state <> 'running'"
        "  GROUP BY state, kind) AS real USING (state, kind)"
        " WHERE kept.n IS DISTINCT FROM real.n");
    if (drift != 0)
        fail_msg("%lld (state, kind) counts differ from COUNT(*)", (long long)drift);
    assert_true(sql_i64(f, "SELECT count(*) FROM tasks") > 0);
    assert_true(sql_i64(f, "SELECT count(DISTINCT shard) FROM task_counts") >= 2);
}

struct plans {
    char text[64][4096];
    char name[64][64];
    int n;
};

static void
collect_plan(void *arg, const char *name, const char *plan)
{
    struct plans *p = arg;
    if (p->n < 64) {
        snprintf(p->name[p->n], sizeof p->name[p->n], "%s", name);
        snprintf(p->text[p->n], sizeof p->text[p->n], "%s", plan);
        p->n++;
    }
}

static const char *
plan_of(const struct plans *p, const char *name)
{
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->name[i], name) == 0)
            return p->text[i];
    fail_msg("no plan for %s", name);
    return "";
}

/* A connection's durability, as store_explain() reads it back from the database (the
 * HTTP process logs it for --durability): relaxed and durable connections differ. */
static void
test_durability_read_back(void **state)
{
    FIXTURE();
    static const char *const want[2][2] = {
        {"synchronous=FULL journal_mode=wal\n", "synchronous=NORMAL journal_mode=wal\n"},
        {"synchronous_commit=on\n", "synchronous_commit=off\n"}};
    for (int relaxed = 0; relaxed < 2; relaxed++) {
        char err[256];
        store *c = store_open(f->db, relaxed ? STORE_RELAXED : STORE_DURABLE, BUSY_MS, err,
                              sizeof err);
        assert_non_null(c);
        struct plans *p = calloc(1, sizeof *p);
        assert_non_null(p);
        assert_int_equal(store_explain(c, collect_plan, p), STORE_OK);
        assert_string_equal(plan_of(p, "connection"), want[f->backend == PG][relaxed]);
        free(p);
        store_close(c);
    }
}

/* Every statement reads through an index with 20,000 tasks stored (ANALYZEd): no
 * sequential scan of tasks, and the intended index. */
static void
test_pg_query_plans(void **state)
{
    PG_ONLY();
    PQclear(admin_sql(f, "%s",
        "INSERT INTO tasks (kind, state, priority, input, max_attempts, timeout_ms,"
        " created_at, finished_at, result, delayed, run_after, idem_key)"
        " SELECT (ARRAY['echo','sleep','scan'])[1 + i % 3],"
        "  CASE WHEN i % 10 = 0 THEN 'pending' WHEN i % 97 = 0 THEN 'failed'"
        "  ELSE 'succeeded' END, 0, '1', 3, 1000, i,"
        "  CASE WHEN i % 10 = 0 THEN NULL ELSE i END, NULL, i % 20 = 0,"
        "  CASE WHEN i % 20 = 0 THEN i ELSE 0 END,"
        "  CASE WHEN i % 7 = 0 THEN 'k' || i END"
        " FROM generate_series(1, 20000) AS i; ANALYZE tasks; ANALYZE task_counts"));
    struct plans *p = calloc(1, sizeof *p);
    assert_int_equal(store_explain(s, collect_plan, p), STORE_OK);
    static const struct {
        const char *stmt, *index;
    } want[] = {
        {"get", "tasks_pkey"},
        {"get_by_key", "tasks_idem"},
        {"cancel", "tasks_pkey|tasks_state_kind"},
        {"has_ready", "tasks_ready"},
        {"promote", "tasks_delayed"},
        {"claim", "tasks_ready"},
        {"claim_skip", "tasks_ready_kind"},
        {"claim_held", "tasks_ready"},              /* batches */
        {"claim_skip_held", "tasks_ready_kind"},
        {"unclaim", "tasks_pkey|tasks_state_kind"},         /* as finish: running tasks */
        {"mark_started", "tasks_pkey|tasks_state_kind"},    /* are a few per worker */
        {"has_ready_skip", "tasks_ready_kind"},
        {"finish", "tasks_pkey|tasks_state_kind"},    /* either: a running task is one of
                                                        * at most a worker's each */
        {"release", "tasks_state_kind"},
        {"release_instances", "tasks_state_kind"},
        {"next_run_after", "tasks_delayed"},
        {"purge", "tasks_finished"},
        {"list_all", "tasks_pkey"},
        {"list_kind", "tasks_kind"},
        {"list_state_kind", "tasks_state_kind"},
        {"list_state", "tasks_state_kind"},
        {"list_running", "tasks_state_kind"},
        {"count", "tasks_state_kind"},
        {"count_kinds", "tasks_state_kind"},
        {"release_lost", "tasks_state_kind"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const char *plan = plan_of(p, want[i].stmt);
        char alt[64];
        snprintf(alt, sizeof alt, "%s", want[i].index);
        char *bar = strchr(alt, '|');
        if (bar != NULL)
            *bar = '\0';
        int uses = strstr(plan, alt) != NULL || (bar != NULL && strstr(plan, bar + 1) != NULL);
        if (getenv("WARMPOOL_TEST_PLANS") != NULL)
            printf("---- %s\n%s", want[i].stmt, plan);
        if (strstr(plan, "Seq Scan on tasks") != NULL || !uses)
            fail_msg("%s: want a read through %s, no scan of tasks; the plan:\n%s",
                     want[i].stmt, want[i].index, plan);
    }
    /* no statement sorts the table (the by-state list sorts at most kinds x limit rows
     * it merged) */
    for (int i = 0; i < p->n; i++)
        if (strstr(p->text[i], "Seq Scan on tasks") != NULL)
            fail_msg("%s scans tasks:\n%s", p->name[i], p->text[i]);
    /* a backlog that the statistics have not seen yet (a burst of submissions before
     * autovacuum's next ANALYZE): most stored tasks pending. The claim still walks
     * tasks_ready from its head: a filter on the kind inside that walk (paused kinds) made
     * the planner scan and sort every pending task, 20 ms a claim at 10,000 pending */
    PQclear(admin_sql(f, "%s",
        "UPDATE tasks SET state = 'succeeded', finished_at = 1 WHERE state = 'pending';"
        " ANALYZE tasks; ALTER TABLE tasks SET (autovacuum_enabled = false);"
        " UPDATE tasks SET state = 'pending', finished_at = NULL, result = NULL,"
        " delayed = false, run_after = 0 WHERE id % 10 <> 0"));
    memset(p, 0, sizeof *p);
    assert_int_equal(store_explain(s, collect_plan, p), STORE_OK);
    const char *claim = plan_of(p, "claim");
    if (strstr(claim, "Seq Scan on tasks") != NULL || strstr(claim, "Sort") != NULL ||
        strstr(claim, "tasks_ready") == NULL)
        fail_msg("claim with a backlog: want a walk of tasks_ready, no scan, no sort; the "
                 "plan:\n%s", claim);
    /* a batch's claim: the same walk; the only sort is of the rows it took (at most 16,
     * into the order to run them), above the update */
    const char *held = plan_of(p, "claim_held");
    const char *sort = strstr(held, "Sort Key");
    if (getenv("WARMPOOL_TEST_PLANS") != NULL)
        printf("---- claim_held with a backlog\n%s", held);
    if (strstr(held, "Seq Scan on tasks") != NULL || strstr(held, "tasks_ready") == NULL ||
        sort == NULL || strstr(sort + 1, "Sort Key") != NULL || strncmp(sort, "Sort Key: c.", 12) != 0)
        fail_msg("batch claim with a backlog: want a walk of tasks_ready, no scan, one sort "
                 "of the rows taken; the plan:\n%s", held);
    free(p);
}

/* Makes another instance (a row) as a second warmpool would, without touching ours. */
static int64_t
other_instance(const struct fixture *f, const char *name, int64_t lease_ms)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO instances (name, host, pid, pidns, workers, lease_ms, beat_ms,"
             " started_at) VALUES ('%s', 'elsewhere', 1, 'other', 1, %lld, 100, 0)"
             " RETURNING id", name, (long long)lease_ms);
    return sql_i64(f, sql);
}

/* Leases: an instance silent past its lease loses its running tasks to the rescue (to
 * pending with the attempt counted, or failed); it may come back (was_lost), and its
 * late result is refused. A rescuer that has not itself been alive for a lease rescues
 * nobody. */
static void
test_pg_leases(void **state)
{
    PG_ONLY();
    const store_instance me = *store_instance_self();
    int64_t other = other_instance(f, "b:2", 300);
    /* B runs two tasks (a claim with B's identity) */
    int64_t t1 = add(s, "echo", 0, 2, NULL, 1), t2 = add(s, "echo", 0, 1, NULL, 1);
    store_instance b = me;
    b.id = other;
    b.lease_ms = 300;
    store_instance_adopt(&b);
    assert_int_equal(claim(s, 2, 77), t1);
    assert_int_equal(claim(s, 2, 77), t2);
    store_instance_adopt(&me);
    /* our own run of heartbeats began at registration: make it older than B's lease */
    PQclear(admin_sql(f, "UPDATE instances SET alive_since = clock_timestamp() - interval '1 s'"
                         " WHERE id = %lld", (long long)me.id));
    int live = 0, was_lost = 0;
    assert_int_equal(store_heartbeat(s, &live, &was_lost), STORE_OK);
    assert_int_equal(live, 2);
    store_task_ref refs[8];
    size_t n = 0;
    int lost = 0;
    assert_int_equal(store_rescue(s, 5, refs, 8, &n, &lost), STORE_OK);
    assert_int_equal(n, 0);                     /* B's lease has not run out */
    clock_sleep_ms(400);
    assert_int_equal(store_heartbeat(s, &live, &was_lost), STORE_OK);
    assert_int_equal(live, 1);
    assert_int_equal(store_rescue(s, 6, refs, 8, &n, &lost), STORE_OK);
    assert_int_equal(lost, 1);
    assert_int_equal(n, 2);
    assert_int_equal(state_of(s, t1), TASK_PENDING);
    assert_int_equal(state_of(s, t2), TASK_FAILED);
    store_task t;
    assert_int_equal(store_get(s, t2, &t), STORE_OK);
    assert_string_equal(t.error_code, "worker_lost");
    store_task_clear(&t);
    assert_int_equal(store_rescue(s, 7, refs, 8, &n, &lost), STORE_OK);
    assert_int_equal(n + (size_t)lost, 0);       /* once */
    /* B comes back: its late result is refused; its heartbeat says it was lost */
    store_instance_adopt(&b);
    store_outcome ok = {.state = TASK_SUCCEEDED, .result = "1", .now_ms = 8};
    assert_int_equal(store_finish(s, t1, 1, &ok), STORE_CONFLICT);
    assert_int_equal(store_heartbeat(s, &live, &was_lost), STORE_OK);
    assert_int_equal(was_lost, 1);
    assert_int_equal(live, 2);
    assert_int_equal(store_heartbeat(s, &live, &was_lost), STORE_OK);
    assert_int_equal(was_lost, 0);
    store_instance_adopt(&me);

    /* after an outage for everyone: our run of heartbeats starts again (a gap of more
     * than 3 beats), and nobody is found lost until we have been back for a lease */
    int64_t c = other_instance(f, "c:3", 200);
    PQclear(admin_sql(f, "UPDATE instances SET last_seen = clock_timestamp() - interval '5 s'"));
    assert_int_equal(store_heartbeat(s, &live, &was_lost), STORE_OK);
    assert_int_equal(store_rescue(s, 9, refs, 8, &n, &lost), STORE_OK);
    assert_int_equal(lost, 0);
    clock_sleep_ms(450);
    assert_int_equal(store_heartbeat(s, &live, &was_lost), STORE_OK);
    assert_int_equal(store_rescue(s, 10, refs, 8, &n, &lost), STORE_OK);
    assert_int_equal(lost, 2);                  /* B (silent again) and C */
    (void)c;
    /* a clean leave removes our row; with a task of ours still running, the row stays,
     * silent, for the next rescue */
    int64_t t3 = add(s, "echo", 10, 1, NULL, 11);   /* before t1, pending again */
    assert_int_equal(claim(s, 12, 5), t3);
    assert_int_equal(store_leave(s), STORE_OK);
    assert_int_equal(sql_i64(f, "SELECT count(*) FROM instances WHERE last_seen = '-infinity'"), 1);
    store_release_lost(s, 5, 0, 13, NULL, NULL, refs, 8, &n);
    assert_int_equal(store_leave(s), STORE_OK);
    char q[128];
    snprintf(q, sizeof q, "SELECT count(*) FROM instances WHERE id = %lld", (long long)me.id);
    assert_int_equal(sql_i64(f, q), 0);
}

/* Batches on PostgreSQL: an instance lost while its worker held a batch. The task it
 * was running (its start written by the agent, store_mark_started) is a lost attempt;
 * the one marked before (its outcome lost with the worker: its start unset again by the
 * next mark) and those not begun go back as never claimed. */
static void
test_pg_batch_rescue(void **state)
{
    PG_ONLY();
    const store_instance me = *store_instance_self();
    int64_t other = other_instance(f, "b:2", 300);
    int64_t ids[5];
    for (int i = 0; i < 5; i++)
        ids[i] = add(s, "echo", 0, 1, NULL, 1);
    store_instance b = me;
    b.id = other;
    b.lease_ms = 300;
    store_instance_adopt(&b);
    store_task next[16];
    size_t m = 0;
    assert_int_equal(store_record_batch(s, NULL, 0, NULL, 0, 2, 77, NULL, 16, 1, next, &m),
                     STORE_OK);
    assert_int_equal(m, 5);
    for (size_t i = 0; i < m; i++) {
        assert_int_equal(next[i].id, ids[i]);
        assert_int_equal(next[i].started_at_ms, 0);         /* held */
    }
    /* it runs ids[0], then ids[1] (ids[0]'s outcome not yet recorded) */
    assert_int_equal(store_mark_started(s, ids[0], 1, 3, 0, 0, 0), STORE_OK);
    assert_int_equal(store_mark_started(s, ids[0], 1, 3, 0, 0, 0), STORE_NOTFOUND);
    store_task t = get_task(s, ids[0]);
    assert_int_equal(t.started_at_ms, 3);
    store_task_clear(&t);
    assert_int_equal(store_mark_started(s, ids[1], 1, 4, ids[0], 1, 3), STORE_OK);
    t = get_task(s, ids[0]);
    assert_int_equal(t.started_at_ms, 0);
    store_task_clear(&t);
    store_instance_adopt(&me);
    PQclear(admin_sql(f, "UPDATE instances SET alive_since = clock_timestamp() - interval '1 s'"
                         " WHERE id = %lld", (long long)me.id));
    clock_sleep_ms(400);
    int live = 0, was_lost = 0, lost = 0;
    assert_int_equal(store_heartbeat(s, &live, &was_lost), STORE_OK);
    store_task_ref refs[8];
    size_t n = 0;
    assert_int_equal(store_rescue(s, 6, refs, 8, &n, &lost), STORE_OK);
    assert_int_equal(lost, 1);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(refs[i].not_started, refs[i].id != ids[1]);
    t = get_task(s, ids[1]);
    assert_int_equal(t.state, TASK_FAILED);
    assert_string_equal(t.error_code, "worker_lost");
    assert_int_equal(t.attempts, 1);
    store_task_clear(&t);
    for (int i = 0; i < 5; i++) {
        if (i == 1)
            continue;
        t = get_task(s, ids[i]);
        assert_int_equal(t.state, TASK_PENDING);
        assert_int_equal(t.attempts, 0);
        assert_null(t.error_code);
        assert_int_equal(t.started_at_ms, 0);
        store_task_clear(&t);
    }
    for (size_t i = 0; i < m; i++)
        store_task_clear(&next[i]);
}

/* A warmpool killed with its supervisor, restarted in the same pid namespace: its
 * running tasks are handed back at once, not after its lease. */
static void
test_pg_restart_recovers_dead_instance(void **state)
{
    PG_ONLY();
    const store_instance me = *store_instance_self();
    pid_t dead = fork();
    if (dead == 0)
        _exit(0);
    waitpid(dead, NULL, 0);
    int64_t t1 = add(s, "echo", 0, 3, NULL, 1);
    /* a previous instance in this pid namespace, with a dead supervisor */
    char ns[256];
    PGresult *r = admin_sql(f, "SELECT pidns FROM instances WHERE id = %lld", (long long)me.id);
    snprintf(ns, sizeof ns, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    r = admin_sql(f, "INSERT INTO instances (name, host, pid, pidns, workers, lease_ms, beat_ms,"
                     " started_at) VALUES ('prev', 'h', %d, '%s', 1, 3600000, 1000, 0)"
                     " RETURNING id", (int)dead, ns);
    int64_t prev = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    store_instance p = me;
    p.id = prev;
    store_instance_adopt(&p);
    assert_int_equal(claim(s, 2, 5), t1);
    store_instance_adopt(&me);
    int requeued = 0, failed = 0;
    assert_int_equal(store_recover_running(s, 3, &requeued, &failed), STORE_OK);
    assert_int_equal(requeued, 1);
    assert_int_equal(failed, 0);
    assert_int_equal(state_of(s, t1), TASK_PENDING);
    char q[128];
    snprintf(q, sizeof q, "SELECT count(*) FROM instances WHERE id = %lld", (long long)prev);
    assert_int_equal(sql_i64(f, q), 0);
}

/* Events: another instance's submissions, retries, results and cancels reach a
 * listener; our own never do. */
static void
test_pg_events(void **state)
{
    PG_ONLY();
    const store_instance me = *store_instance_self();
    char err[256];
    store *l = store_open(f->db, STORE_DURABLE, BUSY_MS, err, sizeof err);
    assert_non_null(l);
    assert_int_equal(store_listen(l), STORE_OK);
    assert_true(store_events_fd(l) >= 0);
    store_instance b = me;
    b.id = other_instance(f, "b", 10000);
    store_instance_adopt(&b);
    /* a group of three submissions: one event for three tasks */
    store_new_task nt[3] = {{.kind = "echo", .input = "1", .max_attempts = 2, .timeout_ms = 1},
                            {.kind = "echo", .input = "2", .max_attempts = 2, .timeout_ms = 1},
                            {.kind = "echo", .input = "3", .max_attempts = 2, .timeout_ms = 1}};
    store_task out[3];
    int st[3];
    assert_int_equal(store_begin(s), STORE_OK);
    assert_int_equal(store_insert_batch(s, nt, 3, 1, out, st), STORE_OK);
    assert_int_equal(store_commit(s), STORE_OK);
    int64_t a = out[0].id, c = out[2].id;
    for (int i = 0; i < 3; i++)
        store_task_clear(&out[i]);
    assert_int_equal(claim(s, 2, 9), a);
    store_outcome ok = {.state = TASK_SUCCEEDED, .result = "1", .now_ms = 3};
    assert_int_equal(store_finish(s, a, 1, &ok), STORE_OK);
    store_task t;
    assert_int_equal(store_cancel(s, c, 4, &t), STORE_OK);
    store_task_clear(&t);
    store_instance_adopt(&me);
    add(s, "echo", 0, 1, NULL, 5);              /* ours: not an event */

    struct pollfd p = {.fd = store_events_fd(l), .events = POLLIN};
    assert_true(poll(&p, 1, 2000) == 1);
    store_event ev[16];
    size_t n = 0, total = 0;
    int ready = 0, done_a = 0, done_c = 0;
    int64_t t0 = clock_mono_ms();
    while (total < 3 && clock_mono_ms() - t0 < 2000) {
        assert_int_equal(store_events(l, ev, 16, &n), STORE_OK);
        for (size_t i = 0; i < n; i++) {
            if (ev[i].type == STORE_EV_READY)
                ready += (int)ev[i].n;
            if (ev[i].type == STORE_EV_DONE && ev[i].n == a) {
                done_a++;
                assert_int_equal(ev[i].state, TASK_SUCCEEDED);
                assert_int_equal(ev[i].attempts, 1);
                assert_int_equal(ev[i].at_ms, 3);
                assert_string_equal(ev[i].kind, "echo");
                assert_string_equal(ev[i].error_code, "");
            }
            if (ev[i].type == STORE_EV_DONE && ev[i].n == c) {
                done_c++;
                assert_int_equal(ev[i].state, TASK_CANCELED);
                assert_int_equal(ev[i].at_ms, 4);
            }
        }
        total += n;
        if (n == 0)
            poll(&p, 1, 100);
    }
    assert_int_equal(ready, 3);
    assert_int_equal(done_a, 1);
    assert_int_equal(done_c, 1);
    assert_int_equal(total, 3);

    /* the listening connection is cut (the server restarts): the next call finds it
     * down, a later one makes it again and says RESYNC first */
    char q[256];
    snprintf(q, sizeof q,
             "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
             " WHERE datname = '%s' AND query LIKE 'LISTEN%%'", f->dbname);
    assert_int_equal(sql_i64(NULL, q), 1);
    int64_t until = clock_mono_ms() + 3000;
    int resync = 0;
    while (!resync && clock_mono_ms() < until) {
        int rc = store_events(l, ev, 16, &n);
        for (size_t i = 0; rc == STORE_OK && i < n; i++)
            resync |= ev[i].type == STORE_EV_RESYNC;
        clock_sleep_ms(50);
    }
    assert_true(resync);
    assert_true(store_events_fd(l) >= 0);
    store_close(l);
}

/* A connection the server drops: STORE_UNAVAILABLE at once, then it is made again. */
static void
test_pg_connection_loss(void **state)
{
    PG_ONLY();
    add(s, "echo", 0, 1, NULL, 1);
    char q[256];
    snprintf(q, sizeof q,
             "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
             " WHERE datname = '%s' AND pid <> pg_backend_pid()", f->dbname);
    assert_true(sql_i64(NULL, q) >= 1);
    clock_sleep_ms(50);
    int64_t c[TASK_STATE_COUNT];
    int rc = store_count_states(s, c);
    if (rc != STORE_OK)
        assert_int_equal(rc, STORE_UNAVAILABLE);
    int64_t until = clock_mono_ms() + 3000;
    while (rc != STORE_OK && clock_mono_ms() < until) {
        clock_sleep_ms(100);
        rc = store_count_states(s, c);
    }
    assert_int_equal(rc, STORE_OK);
    assert_int_equal(c[TASK_PENDING], 1);
}

/* Completion callbacks (issue 13): a delivery is due once its task is terminal, is claimed
 * by one claimer at a time (an attempt counted, hidden for a lease), and ends delivered or
 * failed by a compare-and-set on its attempt. */
static void
test_callback_deliveries(void **state)
{
    FIXTURE();
    store_new_task nt = {.kind = "echo", .input = "1", .max_attempts = 1, .timeout_ms = 5,
                         .callback_url = "http://127.0.0.1:9/hook"};
    store_task t;
    assert_int_equal(store_insert(s, &nt, 1000, &t), STORE_OK);
    int64_t id = t.id;
    assert_string_equal(t.callback_url, "http://127.0.0.1:9/hook");
    assert_int_equal(t.callback_state, STORE_CB_PENDING);
    assert_int_equal(t.callback_attempts, 0);
    assert_null(t.callback_error);
    store_task_clear(&t);
    int64_t plain = add(s, "echo", 0, 1, NULL, 1000);          /* no callback */
    assert_int_equal(store_get(s, plain, &t), STORE_OK);
    assert_null(t.callback_url);
    assert_int_equal(t.callback_state, STORE_CB_NONE);
    store_task_clear(&t);

    /* not due while the task is not terminal */
    assert_int_equal(store_callback_claim(s, 2000, 100, &t), STORE_EMPTY);
    assert_int_equal(claim(s, 2000, 7), id);
    assert_int_equal(store_callback_claim(s, 2000, 100, &t), STORE_EMPTY);
    store_outcome o = {.state = TASK_SUCCEEDED, .result = "2", .now_ms = 3000};
    assert_int_equal(store_finish(s, id, 1, &o), STORE_OK);
    assert_int_equal(claim(s, 3000, 7), plain);                /* its own finish: no callback */
    assert_int_equal(store_finish(s, plain, 1, &o), STORE_OK);

    /* due now: claimed once, hidden for the lease */
    assert_int_equal(store_callback_claim(s, 3000, 100, &t), STORE_OK);
    assert_int_equal(t.id, id);
    assert_int_equal(t.state, TASK_SUCCEEDED);
    assert_string_equal(t.result, "2");
    assert_int_equal(t.callback_attempts, 1);
    store_task_clear(&t);
    assert_int_equal(store_callback_claim(s, 3099, 100, &t), STORE_EMPTY);
    /* the deliverer died: claimed again after the lease; the first attempt's record is
     * refused */
    assert_int_equal(store_callback_claim(s, 3100, 100, &t), STORE_OK);
    assert_int_equal(t.callback_attempts, 2);
    store_task_clear(&t);
    assert_int_equal(store_callback_record(s, id, 1, STORE_CB_DELIVERED, 0, NULL),
                     STORE_CONFLICT);
    /* attempt 2 failed: again at 5000 */
    assert_int_equal(store_callback_record(s, id, 2, STORE_CB_PENDING, 5000, "HTTP 500"),
                     STORE_OK);
    assert_int_equal(store_get(s, id, &t), STORE_OK);
    assert_int_equal(t.callback_state, STORE_CB_PENDING);
    assert_string_equal(t.callback_error, "HTTP 500");
    store_task_clear(&t);
    assert_int_equal(store_callback_claim(s, 4999, 100, &t), STORE_EMPTY);
    assert_int_equal(store_callback_claim(s, 5000, 100, &t), STORE_OK);
    assert_int_equal(t.callback_attempts, 3);
    store_task_clear(&t);
    assert_int_equal(store_callback_record(s, id, 3, STORE_CB_DELIVERED, 0, NULL), STORE_OK);
    assert_int_equal(store_callback_record(s, id, 3, STORE_CB_DELIVERED, 0, NULL),
                     STORE_CONFLICT);                           /* once */
    assert_int_equal(store_get(s, id, &t), STORE_OK);
    assert_int_equal(t.callback_state, STORE_CB_DELIVERED);
    assert_int_equal(t.callback_attempts, 3);
    store_task_clear(&t);
    assert_int_equal(store_callback_claim(s, 999999, 100, &t), STORE_EMPTY);

    /* a canceled task's delivery, given up: failed, with the reason */
    nt.callback_url = "http://h/x";
    assert_int_equal(store_insert(s, &nt, 6000, &t), STORE_OK);
    int64_t c = t.id;
    store_task_clear(&t);
    assert_int_equal(store_cancel(s, c, 6001, &t), STORE_OK);
    store_task_clear(&t);
    assert_int_equal(store_callback_claim(s, 6001, 100, &t), STORE_OK);
    assert_int_equal(t.id, c);
    assert_int_equal(t.state, TASK_CANCELED);
    store_task_clear(&t);
    assert_int_equal(store_callback_record(s, c, 1, STORE_CB_FAILED, 0, "timeout"), STORE_OK);
    assert_int_equal(store_get(s, c, &t), STORE_OK);
    assert_int_equal(t.callback_state, STORE_CB_FAILED);
    assert_string_equal(t.callback_error, "timeout");
    store_task_clear(&t);
    assert_int_equal(store_callback_claim(s, 999999, 100, &t), STORE_EMPTY);
    assert_string_equal(store_callback_state_name(STORE_CB_PENDING), "pending");
    assert_null(store_callback_state_name(STORE_CB_NONE));

    /* a retry from the dead makes the callback pending again, due when the task ends */
    assert_int_equal(store_retry(s, c, 7000, &t), STORE_OK);
    assert_int_equal(t.callback_state, STORE_CB_PENDING);
    assert_int_equal(t.callback_attempts, 0);
    assert_null(t.callback_error);
    store_task_clear(&t);
    assert_int_equal(store_callback_claim(s, 999999, 100, &t), STORE_EMPTY);  /* pending task */
    assert_int_equal(claim(s, 7001, 7), c);
    o.now_ms = 7002;
    assert_int_equal(store_finish(s, c, 1, &o), STORE_OK);
    assert_int_equal(store_callback_claim(s, 7002, 100, &t), STORE_OK);
    assert_int_equal(t.id, c);
    assert_int_equal(t.state, TASK_SUCCEEDED);
    assert_int_equal(t.callback_attempts, 1);
    store_task_clear(&t);
    /* a task without a callback has none after a retry */
    int64_t p2 = add(s, "echo", 0, 1, NULL, 7003);
    assert_int_equal(store_cancel(s, p2, 7004, &t), STORE_OK);
    store_task_clear(&t);
    assert_int_equal(store_retry(s, p2, 7005, &t), STORE_OK);
    assert_null(t.callback_url);
    assert_int_equal(t.callback_state, STORE_CB_NONE);
    store_task_clear(&t);
}

/* Two connections claim the same due deliveries at once: each is claimed once. */
static void
test_callback_claims_never_double(void **state)
{
    FIXTURE();
    enum { N = 40 };
    for (int i = 0; i < N; i++) {
        store_new_task nt = {.kind = "echo", .input = "1", .max_attempts = 1, .timeout_ms = 5,
                             .callback_url = "http://h/x"};
        store_task t;
        assert_int_equal(store_insert(s, &nt, 1, &t), STORE_OK);
        int64_t id = t.id;
        store_task_clear(&t);
        assert_int_equal(store_cancel(s, id, 2, &t), STORE_OK);
        store_task_clear(&t);
    }
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t kid = fork();
    if (kid == 0) {
        char err[256];
        store *c = store_open(f->db, STORE_RELAXED, BUSY_MS, err, sizeof err);
        int n = 0;
        store_task t;
        while (c != NULL && store_callback_claim(c, 10, 1000000, &t) == STORE_OK) {
            n++;
            store_task_clear(&t);
        }
        store_close(c);
        _exit(write(pipefd[1], &n, sizeof n) == sizeof n ? 0 : 1);
    }
    int mine = 0;
    store_task t;
    int rc;
    while ((rc = store_callback_claim(s, 10, 1000000, &t)) == STORE_OK) {
        mine++;
        store_task_clear(&t);
    }
    assert_int_equal(rc, STORE_EMPTY);
    int st, theirs = -1;
    assert_int_equal(waitpid(kid, &st, 0), kid);
    assert_int_equal(read(pipefd[0], &theirs, sizeof theirs), (ssize_t)sizeof theirs);
    close(pipefd[0]);
    close(pipefd[1]);
    assert_int_equal(mine + theirs, N);
}

/* ---------------------------------------------------------------- issue 13 */

static int64_t
add_at(store *s, const char *kind, int64_t now, int64_t run_after)
{
    store_new_task nt = {.kind = kind, .input = "1", .max_attempts = 1, .timeout_ms = 1000,
                         .run_after_ms = run_after};
    store_task t;
    int rc = store_insert(s, &nt, now, &t);
    if (rc != STORE_OK)
        fail_msg("insert: %d %s", rc, store_errmsg(s));
    int64_t id = t.id;
    assert_int_equal(t.state, TASK_PENDING);
    assert_int_equal(t.run_after_ms, run_after > now ? run_after : 0);
    store_task_clear(&t);
    return id;
}

static int
try_claim(store *s, int64_t now, long owner, const store_kind_set *skip, int64_t *id)
{
    store_task t;
    int rc = store_claim_next(s, now, owner, skip, &t);
    *id = rc == STORE_OK ? t.id : 0;
    if (rc != STORE_OK && rc != STORE_EMPTY)
        fail_msg("claim: %d %s", rc, store_errmsg(s));
    store_task_clear(&t);
    return rc;
}

/* A scheduled task is pending with its run_after, not claimed before, found by the
 * worker's sleep (next_run_after), claimed when due; one in the past is ready now; a
 * scheduled task can be canceled and is listed as pending. */
static void
test_scheduled_tasks(void **state)
{
    FIXTURE();
    int64_t id;
    int64_t later = add_at(s, "echo", 1000, 61000);
    int64_t past = add_at(s, "echo", 1000, 500);
    int64_t gone = add_at(s, "echo", 1000, 5000);
    assert_int_equal(try_claim(s, 1001, 1, NULL, &id), STORE_OK);
    assert_int_equal(id, past);
    assert_int_equal(store_has_ready(s, 1002, NULL), 0);
    assert_int_equal(try_claim(s, 1002, 1, NULL, &id), STORE_EMPTY);
    assert_int_equal(store_next_run_after(s, 1002), 5000);
    store_task t;
    assert_int_equal(store_cancel(s, gone, 1003, &t), STORE_OK);
    store_task_clear(&t);
    assert_int_equal(store_next_run_after(s, 1003), 61000);
    store_filter flt = {.has_state = 1, .state = TASK_PENDING, .limit = 10};
    store_task *items;
    size_t n;
    int more;
    assert_int_equal(store_list(s, &flt, &items, &n, &more), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(items[0].id, later);
    assert_int_equal(items[0].run_after_ms, 61000);
    store_task_clear(&items[0]);
    free(items);
    assert_int_equal(count_of(s, TASK_PENDING), 1);
    assert_int_equal(try_claim(s, 60999, 1, NULL, &id), STORE_EMPTY);
    assert_int_equal(store_has_ready(s, 61000, NULL), 1);
    assert_int_equal(try_claim(s, 61000, 1, NULL, &id), STORE_OK);
    assert_int_equal(id, later);
    /* a batch with one scheduled and one not */
    store_new_task nt[2] = {
        {.kind = "echo", .input = "1", .max_attempts = 1, .timeout_ms = 1, .run_after_ms = 90000},
        {.kind = "echo", .input = "2", .max_attempts = 1, .timeout_ms = 1}};
    store_task out[2];
    int st[2];
    assert_int_equal(store_begin(s), STORE_OK);
    assert_int_equal(store_insert_batch(s, nt, 2, 62000, out, st), STORE_OK);
    assert_int_equal(store_commit(s), STORE_OK);
    assert_int_equal(out[0].run_after_ms, 90000);
    assert_int_equal(try_claim(s, 62001, 1, NULL, &id), STORE_OK);
    assert_int_equal(id, out[1].id);
    assert_int_equal(try_claim(s, 62002, 1, NULL, &id), STORE_EMPTY);
    store_task_clear(&out[0]);
    store_task_clear(&out[1]);
}

/* Retry from the dead: failed or canceled -> pending, attempts 0, the error kept as the
 * previous one until the next attempt ends; 409 (CONFLICT) from any other state, 404
 * (NOTFOUND) for no task; the counts follow. */
static void
test_retry_from_dead(void **state)
{
    FIXTURE();
    int64_t a = add(s, "echo", 0, 2, NULL, 1);
    assert_int_equal(claim(s, 2, 7), a);
    store_task t;
    assert_int_equal(store_retry(s, a, 3, &t), STORE_CONFLICT);     /* running */
    assert_int_equal(t.state, TASK_RUNNING);
    store_task_clear(&t);
    store_outcome o = {.state = TASK_FAILED, .error_code = "boom", .error_message = "it broke",
                       .now_ms = 4};
    assert_int_equal(store_finish(s, a, 1, &o), STORE_OK);
    assert_int_equal(count_of(s, TASK_FAILED), 1);
    assert_int_equal(store_retry(s, a, 5, &t), STORE_OK);
    assert_int_equal(t.state, TASK_PENDING);
    assert_int_equal(t.attempts, 0);
    assert_int_equal(t.max_attempts, 2);
    assert_null(t.error_code);
    assert_int_equal(t.finished_at_ms, 0);
    assert_string_equal(t.previous_error_code, "boom");
    assert_string_equal(t.previous_error_message, "it broke");
    store_task_clear(&t);
    assert_int_equal(count_of(s, TASK_FAILED), 0);
    assert_int_equal(count_of(s, TASK_PENDING), 1);
    /* a second call finds it pending: the compare-and-set lets one through */
    assert_int_equal(store_retry(s, a, 6, &t), STORE_CONFLICT);
    assert_int_equal(t.state, TASK_PENDING);
    store_task_clear(&t);
    assert_int_equal(store_retry(s, 999999, 6, &t), STORE_NOTFOUND);
    /* the new attempt runs; the previous error stays until it ends */
    assert_int_equal(claim(s, 7, 7), a);
    assert_int_equal(store_get(s, a, &t), STORE_OK);
    assert_int_equal(t.attempts, 1);
    assert_string_equal(t.previous_error_code, "boom");
    store_task_clear(&t);
    store_outcome ok = {.state = TASK_SUCCEEDED, .result = "1", .now_ms = 8};
    assert_int_equal(store_finish(s, a, 1, &ok), STORE_OK);
    assert_int_equal(store_get(s, a, &t), STORE_OK);
    assert_null(t.previous_error_code);
    store_task_clear(&t);
    assert_int_equal(store_retry(s, a, 9, &t), STORE_CONFLICT);     /* succeeded */
    assert_int_equal(t.state, TASK_SUCCEEDED);
    store_task_clear(&t);
    /* canceled -> pending too */
    int64_t b = add(s, "echo", 0, 1, NULL, 10);
    assert_int_equal(store_cancel(s, b, 11, &t), STORE_OK);
    store_task_clear(&t);
    assert_int_equal(count_of(s, TASK_CANCELED), 1);
    assert_int_equal(store_retry(s, b, 12, &t), STORE_OK);
    assert_int_equal(t.state, TASK_PENDING);
    assert_null(t.previous_error_code);
    store_task_clear(&t);
    assert_int_equal(count_of(s, TASK_CANCELED), 0);
    assert_int_equal(claim(s, 13, 7), b);
}

/* Concurrent retries of one failed task: exactly one succeeds. */
static void
test_retry_concurrent(void **state)
{
    FIXTURE();
    enum { K = 4 };
    int64_t a = add(s, "echo", 0, 1, NULL, 1);
    assert_int_equal(claim(s, 2, 7), a);
    store_outcome o = {.state = TASK_FAILED, .error_code = "boom", .now_ms = 4};
    assert_int_equal(store_finish(s, a, 1, &o), STORE_OK);
    pid_t kid[K];
    for (int k = 0; k < K; k++) {
        kid[k] = fork();
        if (kid[k] == 0) {
            char err[256];
            store *c = store_open(f->db, STORE_RELAXED, BUSY_MS, err, sizeof err);
            if (c == NULL)
                _exit(2);
            store_task t;
            int rc;
            while ((rc = store_retry(c, a, 5, &t)) == STORE_BUSY)
                ;
            store_task_clear(&t);
            store_close(c);
            _exit(rc == STORE_OK ? 0 : rc == STORE_CONFLICT ? 1 : 3);
        }
    }
    int ok = 0, conflict = 0;
    for (int k = 0; k < K; k++) {
        int status;
        assert_int_equal(waitpid(kid[k], &status, 0), kid[k]);
        assert_true(WIFEXITED(status));
        ok += WEXITSTATUS(status) == 0;
        conflict += WEXITSTATUS(status) == 1;
    }
    assert_int_equal(ok, 1);
    assert_int_equal(conflict, K - 1);
    assert_int_equal(count_of(s, TASK_PENDING), 1);
    assert_int_equal(count_of(s, TASK_FAILED), 0);
}

/* A paused kind's tasks stay pending (with or without a skip set); submissions go on;
 * the pause is stored (a new connection sees it); a resume lets them be claimed. */
static void
test_pause_kinds(void **state)
{
    FIXTURE();
    int64_t a1 = add(s, "a", 5, 1, NULL, 1), b1 = add(s, "b", 0, 1, NULL, 1);
    int changed = -1;
    assert_int_equal(store_kind_pause(s, "a", 1, 2, &changed), STORE_OK);
    assert_int_equal(changed, 1);
    assert_int_equal(store_kind_pause(s, "a", 1, 3, &changed), STORE_OK);
    assert_int_equal(changed, 0);
    int64_t a2 = add(s, "a", 5, 1, NULL, 4);
    char **names;
    size_t n;
    char err[256];
    store *c = store_open(f->db, STORE_RELAXED, BUSY_MS, err, sizeof err);
    assert_non_null(c);
    assert_int_equal(store_paused_kinds(c, &names, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(names[0], "a");
    store_names_free(names, n);
    int64_t id;
    /* twice each way: the first claim of a connection may not know of the pause yet */
    assert_int_equal(try_claim(c, 5, 1, NULL, &id), STORE_OK);
    assert_int_equal(id, b1);
    assert_int_equal(try_claim(c, 5, 1, NULL, &id), STORE_EMPTY);
    const char *x[] = {"x"};
    store_kind_set skip = {x, 1};
    assert_int_equal(try_claim(s, 5, 1, &skip, &id), STORE_EMPTY);
    assert_int_equal(try_claim(s, 5, 1, NULL, &id), STORE_EMPTY);
    assert_int_equal(count_of(s, TASK_PENDING), 2);
    assert_int_equal(store_kind_pause(s, "a", 0, 6, &changed), STORE_OK);
    assert_int_equal(changed, 1);
    assert_int_equal(store_kind_pause(s, "a", 0, 6, &changed), STORE_OK);
    assert_int_equal(changed, 0);
    assert_int_equal(store_paused_kinds(c, &names, &n), STORE_OK);
    assert_int_equal(n, 0);
    store_names_free(names, n);
    assert_int_equal(try_claim(c, 7, 1, NULL, &id), STORE_OK);
    assert_int_equal(id, a1);
    assert_int_equal(try_claim(s, 7, 1, &skip, &id), STORE_OK);
    assert_int_equal(id, a2);
    store_close(c);
}

/* A kind's concurrency limit: at most N running, others go on, the kind resumes as
 * its tasks end; a connection without the limit is not held to it. */
static void
test_kind_limits(void **state)
{
    FIXTURE();
    store_kind_limit lim[] = {{"a", 2}};
    assert_int_equal(store_set_kind_limits(s, lim, 1), STORE_OK);
    int64_t a[4];
    for (int i = 0; i < 4; i++)
        a[i] = add(s, "a", 5, 1, NULL, 1);
    int64_t b = add(s, "b", 0, 1, NULL, 1);
    int64_t id;
    assert_int_equal(try_claim(s, 2, 1, NULL, &id), STORE_OK);
    assert_int_equal(id, a[0]);
    assert_int_equal(try_claim(s, 2, 2, NULL, &id), STORE_OK);
    assert_int_equal(id, a[1]);
    assert_int_equal(try_claim(s, 2, 3, NULL, &id), STORE_OK);
    assert_int_equal(id, b);
    assert_int_equal(try_claim(s, 2, 4, NULL, &id), STORE_EMPTY);
    const char *x[] = {"x"};
    store_kind_set skip = {x, 1};
    assert_int_equal(try_claim(s, 2, 4, &skip, &id), STORE_EMPTY);
    store_outcome ok = {.state = TASK_SUCCEEDED, .result = "1", .now_ms = 3};
    store_task next;
    int claimed = -1;
    assert_int_equal(store_finish_claim(s, a[0], 1, &ok, 3, 1, NULL, &next, &claimed), STORE_OK);
    assert_int_equal(claimed, 1);
    assert_int_equal(next.id, a[2]);
    store_task_clear(&next);
    assert_int_equal(try_claim(s, 4, 4, NULL, &id), STORE_EMPTY);
    /* limits off: the rest can be claimed */
    assert_int_equal(store_set_kind_limits(s, NULL, 0), STORE_OK);
    assert_int_equal(try_claim(s, 4, 4, NULL, &id), STORE_OK);
    assert_int_equal(id, a[3]);
}

/* Four processes with the limit a=2 claim, hold a little, and finish 40 tasks of kind a
 * and 20 of b at once: never more than 2 of a running, and every task done. */
static void
test_kind_limits_concurrent(void **state)
{
    FIXTURE();
    enum { K = 4, NA = 40, NB = 20, MAX = 2 };
    for (int i = 0; i < NA; i++)
        add(s, "a", 1, 1, NULL, 1);
    for (int i = 0; i < NB; i++)
        add(s, "b", 0, 1, NULL, 1);
    pid_t kid[K];
    for (int k = 0; k < K; k++) {
        kid[k] = fork();
        if (kid[k] == 0) {
            char err[256];
            store *c = store_open(f->db, STORE_RELAXED, BUSY_MS, err, sizeof err);
            if (c == NULL)
                _exit(2);
            store_kind_limit lim[] = {{"a", MAX}};
            store_set_kind_limits(c, lim, 1);
            store_outcome ok = {.state = TASK_SUCCEEDED, .result = "1", .now_ms = 5};
            int empty = 0;
            while (empty < 50) {
                store_task t;
                int rc = store_claim_next(c, 2, 100 + k, NULL, &t);
                if (rc == STORE_BUSY)
                    continue;
                if (rc == STORE_EMPTY) {
                    empty++;
                    clock_sleep_ms(2);
                    continue;
                }
                if (rc != STORE_OK)
                    _exit(3);
                empty = 0;
                store_kind_counts *v;
                size_t n;
                while ((rc = store_count_kinds(c, &v, &n)) == STORE_BUSY)
                    ;
                if (rc != STORE_OK)
                    _exit(4);
                for (size_t i = 0; i < n; i++)
                    if (strcmp(v[i].kind, "a") == 0 && v[i].n[TASK_RUNNING] > MAX)
                        _exit(5);
                store_kind_counts_free(v, n);
                clock_sleep_ms(3);
                while ((rc = store_finish(c, t.id, 1, &ok)) == STORE_BUSY)
                    ;
                if (rc != STORE_OK)
                    _exit(6);
                store_task_clear(&t);
            }
            store_close(c);
            _exit(0);
        }
    }
    for (int k = 0; k < K; k++) {
        int status;
        assert_int_equal(waitpid(kid[k], &status, 0), kid[k]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail_msg("claimer %d: status %d", k, status);
    }
    assert_int_equal(count_of(s, TASK_SUCCEEDED), NA + NB);
}

/* PostgreSQL's schema 1 to 5 (issue 13): a failed task of version 1 can be retried from
 * the dead at once; kinds can be paused. */
static void
test_pg_upgrade_from_v1(void **state)
{
    PG_ONLY();
    int64_t a = add(s, "a", 0, 1, NULL, 1);
    assert_int_equal(claim(s, 2, 1), a);
    store_outcome o = {.state = TASK_FAILED, .error_code = "boom", .now_ms = 3};
    assert_int_equal(store_finish(s, a, 1, &o), STORE_OK);
    store_close(f->s);
    f->s = NULL;
    PQclear(admin_sql(f, "DROP TABLE paused_kinds; DROP INDEX tasks_callback;"
                         " ALTER TABLE tasks DROP COLUMN previous_error_code,"
                         " DROP COLUMN previous_error_message, DROP COLUMN callback_url,"
                         " DROP COLUMN callback_state, DROP COLUMN callback_attempts,"
                         " DROP COLUMN callback_next_at, DROP COLUMN callback_error;"
                         " UPDATE meta SET value = '1' WHERE key = 'schema_version'"));
    char err[512] = "";
    assert_null(store_open(f->db, STORE_DURABLE, BUSY_MS, err, sizeof err));
    assert_non_null(strstr(err, "needs 5"));
    int from = -1;
    assert_int_equal(store_migrate(f->db, NULL, NULL, &from, err, sizeof err), STORE_OK);
    assert_int_equal(from, 1);
    f->s = store_open(f->db, STORE_RELAXED, BUSY_MS, err, sizeof err);
    assert_non_null(f->s);
    store_task t;
    assert_int_equal(store_retry(f->s, a, 4, &t), STORE_OK);
    assert_string_equal(t.previous_error_code, "boom");
    store_task_clear(&t);
    assert_int_equal(store_kind_pause(f->s, "a", 1, 5, NULL), STORE_OK);
    assert_int_equal(store_claim_next(f->s, 6, 1, NULL, &t), STORE_EMPTY);
    assert_int_equal(store_claim_next(f->s, 6, 1, NULL, &t), STORE_EMPTY);
    assert_int_equal(count_of(f->s, TASK_PENDING), 1);
}

#define BOTH(fn)                                                                      \
    cmocka_unit_test_prestate_setup_teardown(fn, setup_open, teardown, (void *)SQLITE), \
        cmocka_unit_test_prestate_setup_teardown(fn, setup_open, teardown, (void *)PG)
#define PG_TEST(fn, setup) cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, (void *)PG)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_round_trip),
        BOTH(test_callback_deliveries),
        BOTH(test_callback_claims_never_double),
        BOTH(test_idempotency_keys),
        BOTH(test_claim_order_and_cas),
        BOTH(test_finish_claim),
        BOTH(test_record_batch),
        BOTH(test_delayed_retries),
        BOTH(test_claim_skips_kinds),
        BOTH(test_lists),
        BOTH(test_counts_and_purge),
        BOTH(test_concurrent_claims_never_double),
        BOTH(test_instances_contract),
        BOTH(test_durability_read_back),
        BOTH(test_scheduled_tasks),
        BOTH(test_retry_from_dead),
        BOTH(test_retry_concurrent),
        BOTH(test_pause_kinds),
        BOTH(test_kind_limits),
        BOTH(test_kind_limits_concurrent),
        PG_TEST(test_pg_concurrent_migrations, setup_db),
        cmocka_unit_test(test_pg_unreachable_names_host_not_password),
        PG_TEST(test_pg_schema_refusals, setup_db),
        PG_TEST(test_pg_upgrade_1_to_5, setup_db),
        PG_TEST(test_pg_upgrade_from_v1, setup_open),
        PG_TEST(test_pg_counts_exact_under_concurrency, setup_open),
        PG_TEST(test_pg_query_plans, setup_open),
        PG_TEST(test_pg_leases, setup_open),
        PG_TEST(test_pg_batch_rescue, setup_open),
        PG_TEST(test_pg_restart_recovers_dead_instance, setup_open),
        PG_TEST(test_pg_events, setup_open),
        PG_TEST(test_pg_connection_loss, setup_open),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
