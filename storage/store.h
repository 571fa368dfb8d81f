/* store.h -- the SQLite task store: every SQL statement of warmpool lives behind it.
 *
 * One `store` is one SQLite connection; it belongs to one thread of one process and
 * is never carried across fork() (open it in the child). Functions return STORE_OK
 * (0) or another STORE_* code; store_errmsg() has the detail of the last failure.
 *
 * Task states and who moves them (see docs/architecture.md):
 *   pending  -> running    store_claim_next()   (a worker)
 *   running  -> succeeded  store_finish()       (the worker)
 *   (a busy worker does both in one transaction: store_finish_claim())
 *   running  -> failed     store_finish() / store_release_lost() (supervisor) /
 *                          store_recover_running() (supervisor, at start-up)
 *   running  -> pending    the same three, when attempts remain
 *   pending  -> canceled   store_cancel()       (the HTTP process)
 * Every move out of `running` is a compare-and-set on (id, attempts, state), so a
 * worker whose task was already handed to someone else cannot overwrite it. */
#ifndef WP_STORE_H
#define WP_STORE_H

#include <stddef.h>
#include <stdint.h>

enum store_status {
    STORE_OK = 0,
    STORE_EMPTY,        /* nothing to claim */
    STORE_NOTFOUND,     /* no such task */
    STORE_CONFLICT,     /* the task is not in the state the change needs */
    STORE_EXISTS,       /* idempotency key already used: *out is the first task */
    STORE_BUSY,         /* the lock was not had within the busy budget: retry later */
    STORE_FULL,         /* disk or database full */
    STORE_IOERR,        /* I/O error from the disk */
    STORE_LOCKED,       /* another warmpool holds the database */
    STORE_ERR,          /* anything else: see store_errmsg() */
};

enum task_state {
    TASK_PENDING = 0,
    TASK_RUNNING,
    TASK_SUCCEEDED,
    TASK_FAILED,
    TASK_CANCELED,
    TASK_STATE_COUNT
};

/* "pending"... for a state; NULL for an out-of-range value */
const char *task_state_name(enum task_state st);
/* 0 and *out on a known name, -1 otherwise */
int task_state_parse(const char *name, enum task_state *out);
static inline int task_state_terminal(enum task_state st) { return st >= TASK_SUCCEEDED; }

/* A task as stored. Strings are heap copies owned by the struct: release them with
 * store_task_clear(). JSON fields (input, result) hold JSON text; NULL = SQL NULL.
 * Times are milliseconds since the epoch; 0 means "not yet" (null in the API). */
typedef struct store_task {
    int64_t id;
    char *kind;
    enum task_state state;
    int priority;
    char *input;            /* NULL in list results */
    char *result;           /* NULL unless succeeded (and in list results) */
    char *error_code;
    char *error_message;
    int attempts;
    int max_attempts;
    int64_t timeout_ms;
    int64_t created_at_ms;
    int64_t started_at_ms;
    int64_t finished_at_ms;
    int64_t run_after_ms;   /* a pending retry waits until then; 0 = now */
} store_task;

void store_task_clear(store_task *t);

/* A submission, as validated by the API. Strings are borrowed. */
typedef struct store_new_task {
    const char *kind;
    const char *input;      /* JSON text */
    int priority;
    int max_attempts;
    int64_t timeout_ms;
    const char *idem_key;   /* NULL = none */
} store_new_task;

/* How an attempt ended, for store_finish(). Strings are borrowed. */
typedef struct store_outcome {
    enum task_state state;  /* SUCCEEDED, FAILED, or PENDING (a retry) */
    const char *result;     /* JSON text when SUCCEEDED */
    const char *error_code;
    const char *error_message;
    int64_t now_ms;
    int64_t run_after_ms;   /* for PENDING: when the retry may start */
} store_outcome;

typedef struct store_filter {
    int has_state;
    enum task_state state;
    const char *kind;       /* NULL = any */
    int64_t before_id;      /* 0 = from the newest; else ids strictly below */
    int limit;              /* 1..1000 */
} store_filter;

typedef struct store store;

enum store_sync {
    STORE_SYNC_FULL = 0,    /* fsync the WAL at every commit: a 202 survives power loss */
    STORE_SYNC_NORMAL,      /* fsync at checkpoints only: survives a crash of warmpool */
};

/* Start-up, once, in the supervisor, before any other process or thread opens the
 * database: creates it if missing and brings its schema up to this build's version.
 * All pending migrations run in one transaction (all or nothing). Upgrading a large
 * database takes a while (a few seconds per million tasks): progress(arg, line) is
 * called at each step and every few seconds during a long one (progress may be NULL).
 * *from (may be NULL) gets the version found (0: a new database). STORE_OK, or an
 * error with the reason in err (a database newer than this build is refused). */
typedef void store_progress_fn(void *arg, const char *line);
int store_migrate(const char *path, store_progress_fn *progress, void *arg, int *from,
                  char *err, size_t errlen);

/* Opens the database at path, which store_migrate() has set up: a missing database,
 * or one of another schema version, is refused (NULL, with what to do in err). Never
 * writes the schema. busy_ms is the lock budget of every call. */
store *store_open(const char *path, enum store_sync sync, int busy_ms, char *err, size_t errlen);
void store_close(store *s);                     /* NULL-safe */
const char *store_errmsg(const store *s);
int store_schema_version(store *s);

/* Write transactions spanning several calls (BEGIN IMMEDIATE / COMMIT / ROLLBACK). */
int store_begin(store *s);
int store_commit(store *s);
void store_rollback(store *s);

/* Inserts a pending task and fills *out. With an idempotency key already used,
 * returns STORE_EXISTS and fills *out with the first task. */
int store_insert(store *s, const store_new_task *nt, int64_t now_ms, store_task *out);
int store_get(store *s, int64_t id, store_task *out);
/* Fills *items (free each with store_task_clear, then free(*items)); *more = 1 when
 * further items exist past the last one returned. */
int store_list(store *s, const store_filter *f, store_task **items, size_t *n, int *more);
/* pending -> canceled. STORE_NOTFOUND, or STORE_CONFLICT with *out the current task. */
int store_cancel(store *s, int64_t id, int64_t now_ms, store_task *out);
/* A set of kinds: "claim the best ready task whose kind is not in this set" (the exec
 * kinds a worker has no child of; later, paused kinds). The names are borrowed. NULL or
 * n = 0: no kind is left alone. */
typedef struct store_kind_set {
    const char *const *names;
    size_t n;
} store_kind_set;

/* Claims the next pending task (priority desc, then id) whose run_after has come and
 * whose kind is not in skip, for the worker whose pid is owner: one write transaction.
 * With kinds to skip it compares the first ready task of each other kind that has
 * pending tasks (one index seek each), never stepping over the skipped kinds' tasks. */
int store_claim_next(store *s, int64_t now_ms, long owner, const store_kind_set *skip,
                     store_task *out);
/* Records the end of attempt `attempt` of task id. STORE_CONFLICT if the task is no
 * longer running that attempt (it was released, canceled or finished elsewhere). */
int store_finish(store *s, int64_t id, int attempt, const store_outcome *o);
/* store_finish() and then store_claim_next() in one write transaction: a busy worker
 * pays one commit per task instead of two. Returns what store_finish() would
 * (STORE_OK, or STORE_CONFLICT with the claim still made); *claimed is 1 when *next
 * holds the next task. Any other code: nothing was written, nothing claimed. */
int store_finish_claim(store *s, int64_t id, int attempt, const store_outcome *o,
                       int64_t now_ms, long owner, const store_kind_set *skip,
                       store_task *next, int *claimed);
/* The worker with pid owner is gone: each task it was running goes back to pending
 * if attempts remain, else to failed, with error code (default "worker_lost") and
 * message. Up to cap of them are reported in released[], their count in *n. */
typedef struct store_task_ref {
    int64_t id;
    enum task_state state;
} store_task_ref;
int store_release_lost(store *s, long owner, int64_t now_ms, const char *code,
                       const char *message, store_task_ref *released, size_t cap, size_t *n);
/* Start-up: every task left running by a previous run is handled as lost. */
int store_recover_running(store *s, int64_t now_ms, int *requeued, int *failed);
/* Number of tasks in each state. Kept by the store as tasks change, so reading it
 * costs the same however many tasks are stored. */
int store_count_states(store *s, int64_t counts[TASK_STATE_COUNT]);
/* Number of tasks in each state, per kind: *out (free with store_kind_counts_free)
 * holds one entry for every kind with at least one task, *n of them. Cheap, as above. */
typedef struct store_kind_counts {
    char *kind;
    int64_t n[TASK_STATE_COUNT];
} store_kind_counts;
int store_count_kinds(store *s, store_kind_counts **out, size_t *n);
void store_kind_counts_free(store_kind_counts *v, size_t n);
/* Is there a pending task ready at now_ms whose kind is not in skip (NULL: any)? A read,
 * no write lock: 1 yes (or a waiting retry is due, of any kind: the claim makes it
 * ready), 0 no, <0 error */
int store_has_ready(store *s, int64_t now_ms, const store_kind_set *skip);
/* The earliest run_after after now_ms among pending tasks (a retry waiting for its
 * backoff), or 0 if there is none (or on error). A read. */
int64_t store_next_run_after(store *s, int64_t now_ms);
/* Number of pending tasks (as store_count_states), or -1 on error. */
int64_t store_count_pending(store *s);
/* Deletes up to limit terminal tasks that finished before before_ms, oldest first
 * (their idempotency keys go with them), in one short write transaction; it reads only
 * the tasks it deletes. *deleted says how many. The deletion becomes durable with the
 * connection's next durable commit (losing it to a power cut only means deleting the
 * same tasks again). */
int store_purge(store *s, int64_t before_ms, int limit, int *deleted);
/* SQLite checkpoints after a commit that leaves the WAL over `pages` pages (1000 by
 * default); 0 turns that off for this connection. Only one connection can checkpoint
 * at a time, so warmpool leaves it to one (the HTTP writer thread). */
void store_set_autocheckpoint(store *s, int pages);
/* Copies the WAL back into the database and truncates it (waits for readers within
 * the busy budget). *wal_frames: frames the WAL held. */
int store_checkpoint(store *s, int64_t *wal_frames);
/* A cheap read that proves the database file can be read now: it opens a read
 * transaction and reads from the file, not from this connection's page cache. */
int store_ping(store *s);
/* A random secret kept in the database, for signing list cursors. */
uint64_t store_secret(store *s);
/* Bytes the database takes on disk now (SQLite: the file and its WAL), or -1. */
int64_t store_size_bytes(store *s);

/* Diagnostics, for tests and benchmarks. store_explain() calls fn(arg, name, plan)
 * for each statement the store runs: how the database will execute it (SQLite: the
 * lines of EXPLAIN QUERY PLAN). store_work() returns the work the store's statements
 * did since the previous call (SQLite: virtual machine steps), so a test can show that
 * a call costs the same whatever the number of stored tasks. */
typedef void store_plan_fn(void *arg, const char *name, const char *plan);
int store_explain(store *s, store_plan_fn *fn, void *arg);
int64_t store_work(store *s);

/* Takes an exclusive lock on "<db_path>.lock" (flock), which the caller holds for
 * its life (the fd is inherited by its children on purpose). Creates the database's
 * directory if missing. STORE_OK and *fd; STORE_LOCKED when another process holds
 * it (err names the lock file and the holder's pid); STORE_ERR otherwise.
 * When the pid recorded in the lock file is dead, the holders are that instance's
 * dying children: it waits up to STORE_LOCK_ORPHAN_WAIT_MS for them first. */
#define STORE_LOCK_ORPHAN_WAIT_MS 5000
int store_lock(const char *db_path, int *fd, char *err, size_t errlen);

#endif
