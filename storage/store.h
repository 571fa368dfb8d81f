/* store.h -- the task store: every SQL statement of warmpool lives behind it.
 *
 * Two implementations, chosen at start by the database's name (store_backend_of):
 * a path is an SQLite file (storage/store_sqlite.c: the embedded default, one instance
 * per file), a postgres:// or postgresql:// URI is a PostgreSQL database
 * (storage/store_pg.c: any number of warmpool instances share it). Nothing outside
 * storage/ knows which one runs: every function below means the same with both.
 *
 * One `store` is one database connection; it belongs to one thread of one process and
 * is never carried across fork() (open it in the child). Functions return STORE_OK
 * (0) or another STORE_* code; store_errmsg() has the detail of the last failure.
 *
 * An instance is one warmpool (a supervisor and its processes). store_start() makes
 * the calling process one, before it forks; every process it forks acts for it
 * (store_instance_self()), and the workers' claims are owned by (instance, pid).
 *
 * Task states and who moves them (see docs/architecture.md):
 *   pending  -> running    store_claim_next()   (a worker)
 *   running  -> succeeded  store_finish()       (the worker)
 *   (a busy worker does both in one transaction: store_finish_claim())
 *   running  -> failed     store_finish() / store_release_lost() (supervisor) /
 *                          store_recover_running() (at start-up) / store_rescue() (an
 *                          instance whose lease ran out, by another instance)
 *   running  -> pending    the same four, when attempts remain
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
    STORE_UNAVAILABLE,  /* the database server cannot be reached (down, restarting,
                         * unreachable): retry later; the connection is made again by
                         * itself at a later call */
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
    int64_t run_after_ms;   /* a pending task (a scheduled one, or a retry waiting for its
                             * backoff) waits until then; 0 = now */
    /* issue 13: the error of the attempt before a retry from the dead (store_retry),
     * kept until the retried task's next attempt ends; NULL otherwise */
    char *previous_error_code;
    char *previous_error_message;
    /* completion callback (issue 13): POSTed to callback_url once the task is terminal */
    char *callback_url;     /* NULL: none */
    int callback_state;     /* enum store_callback_state */
    int callback_attempts;  /* deliveries tried (claimed) so far */
    char *callback_error;   /* why the last delivery failed, or NULL */
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
    const char *callback_url;   /* NULL = none (issue 13: POSTed the task when it ends) */
    int64_t run_after_ms;   /* a scheduled task: not claimed before then; 0 = now */
} store_new_task;

/* How an attempt ended, for store_finish(). Strings are borrowed. */
typedef struct store_outcome {
    enum task_state state;  /* SUCCEEDED, FAILED, or PENDING (a retry) */
    const char *result;     /* JSON text when SUCCEEDED */
    const char *error_code;
    const char *error_message;
    int64_t now_ms;
    int64_t run_after_ms;   /* for PENDING: when the retry may start */
    int64_t started_ms;     /* when the attempt began to run: becomes its started_at if
                             * the claim left that unset (a held task of a batch, see
                             * store_record_batch); 0: unknown */
} store_outcome;

typedef struct store_filter {
    int has_state;
    enum task_state state;
    const char *kind;       /* NULL = any */
    int64_t before_id;      /* 0 = from the newest; else ids strictly below */
    int limit;              /* 1..1000 */
} store_filter;

typedef struct store store;

/* store_open() flags. Durability of a connection's commits: */
#define STORE_DURABLE 0x0       /* a commit is on disk before it returns: it survives power
                                 * loss and a crash of the database server (SQLite:
                                 * synchronous=FULL; PostgreSQL: synchronous_commit=on) */
#define STORE_RELAXED 0x1       /* a commit survives a crash of warmpool at once; power loss
                                 * or a database crash may lose the last ones (SQLite:
                                 * synchronous=NORMAL, durable at the next fsync of the WAL;
                                 * PostgreSQL: synchronous_commit=off, durable within
                                 * 3 x wal_writer_delay). For workers: a lost result means
                                 * the task runs again (at least once). */
#define STORE_MAINTAINER 0x2    /* this connection keeps the store tidy (store_maintain();
                                 * SQLite: it alone checkpoints the WAL, after its commits,
                                 * or with STORE_RELAXED in a thread of its own);
                                 * one per instance: the HTTP writer thread's */

/* Which implementation a database name selects. */
enum store_backend { STORE_SQLITE = 0, STORE_POSTGRES };
enum store_backend store_backend_of(const char *db);
/* 0 when db is a name the store can open; -1 with what is wrong in err (never the
 * name itself: a URI may hold a password). Paths always pass. */
int store_name_check(const char *db, char *err, size_t errlen);
/* The database's name as it may be logged: the path, or the URI without its password
 * (postgresql://user@host:port/dbname). */
void store_describe(const char *db, char *out, size_t outlen);

/* Creates the database's schema if missing and brings it up to this build's version.
 * All pending migrations run in one transaction (all or nothing); with PostgreSQL, under
 * an advisory lock, so that instances starting at once on an empty database migrate it
 * once. Upgrading a large database takes a while (a few seconds per million tasks):
 * progress(arg, line) is called at each step and every few seconds during a long one
 * (progress may be NULL). *from (may be NULL) gets the version found (0: a new
 * database). STORE_OK, or an error with the reason in err (a database newer than this
 * build is refused). store_start() calls it; tests and tools may too. */
typedef void store_progress_fn(void *arg, const char *line);
int store_migrate(const char *path, store_progress_fn *progress, void *arg, int *from,
                  char *err, size_t errlen);

/* ---------------------------------------------------------------- instances */

/* One warmpool instance, as the store knows it. */
typedef struct store_instance {
    int64_t id;             /* the store's id of the instance: set by store_start() */
    char name[128];         /* for people: "host:port" of its HTTP listener */
    char host[128];
    long pid;               /* its supervisor's */
    int workers;
    int64_t lease_ms;       /* how long it may stay silent before others take its running
                             * tasks back (store_rescue) */
    int64_t started_at_ms;  /* by this host's clock */
    int64_t last_seen_ms;   /* store_instances(): its last heartbeat, database clock */
} store_instance;

#define STORE_DEFAULT_LEASE_MS 10000
/* How often an instance with this lease renews it (store_heartbeat): a quarter of the
 * lease, at most once a second, at least every 100 ms. */
int64_t store_heartbeat_every_ms(int64_t lease_ms);

typedef struct store_task_ref {
    int64_t id;
    enum task_state state;
    int not_started;        /* store_release_lost: held in a batch, not run: back as never
                             * claimed (no attempt counted) */
} store_task_ref;
#define STORE_START_REFS 256

typedef struct store_start_report {
    int from_version;       /* the schema version found (0: a new database) */
    int version;            /* the schema version now */
    int requeued, failed;   /* tasks a previous run of this instance left running, handed
                             * back: to pending, or failed (worker_lost) */
    /* the first STORE_START_REFS of them (their events and counters are the caller's) */
    struct store_task_ref recovered[STORE_START_REFS];
    size_t nrecovered;
} store_start_report;

/* Start-up of an instance, once, in the supervisor, before it forks anything:
 *  - SQLite: takes the exclusive lock "<db>.lock" (one instance per file; the descriptor
 *    is inherited by every child, so the lock is held while any of them lives; a second
 *    instance gets STORE_LOCKED, with the lock file and the holder's pid in err), creates
 *    the database's directory if missing;
 *  - PostgreSQL: registers the instance (a row with *inst's fields, its lease starting
 *    now by the database's clock); the database unreachable is STORE_UNAVAILABLE with
 *    the host named in err (never the password);
 * then creates or upgrades the schema (store_migrate), and hands back what a previous
 * run of this instance left running (SQLite: every running task; PostgreSQL: those of
 * dead instances that ran in this pid namespace, found by their supervisor's pid; the
 * others wait for their lease). Sets inst->id and makes *inst this process's instance.
 * The connections it used are closed before it returns. */
int store_start(const char *db, store_instance *inst, store_progress_fn *progress, void *arg,
                store_start_report *rep, char *err, size_t errlen);
/* This process's instance (inherited across fork), or NULL before store_start(). */
const store_instance *store_instance_self(void);
/* Tests: act as *inst from now on in this process (no lock, no registration). */
void store_instance_adopt(const store_instance *inst);
/* The supervisor, at exit: lets go of what store_start() holds in this process (SQLite:
 * closes the lock's descriptor). */
void store_instance_end(void);

/* Opens the database, which store_start() (or store_migrate()) has set up: a missing
 * database, or one of another schema version, is refused (NULL, with what to do in
 * err). Never writes the schema. flags: STORE_DURABLE or STORE_RELAXED, | STORE_MAINTAINER.
 * busy_ms is the lock budget of every call (a lock not had in time: STORE_BUSY). A
 * PostgreSQL server that cannot be reached: NULL, and err names the host. */
store *store_open(const char *db, int flags, int busy_ms, char *err, size_t errlen);
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
/* store_insert() for each of n tasks, in one round trip to the database (PostgreSQL
 * pipelines them), inside the caller's transaction: status[i] is STORE_OK or
 * STORE_EXISTS and out[i] the task. Returns STORE_OK, or the error that aborts the
 * batch (then every out[i] is cleared; roll the transaction back). */
int store_insert_batch(store *s, const store_new_task *nt, size_t n, int64_t now_ms,
                       store_task *out, int *status);
int store_get(store *s, int64_t id, store_task *out);
/* Fills *items (free each with store_task_clear, then free(*items)); *more = 1 when
 * further items exist past the last one returned. */
int store_list(store *s, const store_filter *f, store_task **items, size_t *n, int *more);
/* pending -> canceled. STORE_NOTFOUND, or STORE_CONFLICT with *out the current task. */
int store_cancel(store *s, int64_t id, int64_t now_ms, store_task *out);
/* A set of kinds: "claim the best ready task whose kind is not in this set" (the exec
 * kinds a worker has no child of; paused kinds and kinds at their concurrency limit are
 * added by the store itself, see below). The names are borrowed. NULL or
 * n = 0: no kind is left alone. */
typedef struct store_kind_set {
    const char *const *names;
    size_t n;
} store_kind_set;

/* Claims the next pending task (priority desc, then id) whose run_after has come and
 * whose kind is not in skip, not paused (store_kind_pause) and not at its concurrency
 * limit (store_set_kind_limits), for the worker whose pid is owner (in this process's
 * instance): one write transaction. Two claimers never get the same attempt of a task.
 * With kinds to skip it compares the first ready task of each other kind that has
 * pending tasks (one index seek each), never stepping over the skipped kinds' tasks. */
int store_claim_next(store *s, int64_t now_ms, long owner, const store_kind_set *skip,
                     store_task *out);
/* ---------------------------------------------------------------- queue controls
 * (issue 13: retry from the dead, paused kinds, per-kind concurrency) */

/* failed or canceled -> pending, attempts back to 0, its error kept as the previous
 * error (store_task.previous_error_*), ready now. A compare-and-set on the state: of
 * concurrent calls one succeeds, the others get STORE_CONFLICT with *out the task as it
 * is then (pending). STORE_NOTFOUND for no such task; STORE_CONFLICT for any other
 * state. With PostgreSQL it tells the other instances a task is ready. */
int store_retry(store *s, int64_t id, int64_t now_ms, store_task *out);
/* Pauses (paused = 1) or resumes (0) a kind: stored, so it holds across restarts and,
 * with PostgreSQL, for every instance. Claims leave a paused kind's tasks pending.
 * *changed (may be NULL) is 1 when the kind was not already in that state. A resume,
 * with PostgreSQL, tells the other instances tasks may be ready. */
int store_kind_pause(store *s, const char *kind, int paused, int64_t now_ms, int *changed);
/* The paused kinds, by name: *names (free with store_names_free), *n of them. */
int store_paused_kinds(store *s, char ***names, size_t *n);
void store_names_free(char **names, size_t n);
/* At most `max` tasks of `kind` running at once, across every instance sharing the
 * store: this connection's claims count the kind's running tasks inside the claim's
 * transaction (PostgreSQL: under a per-kind advisory lock, taken only while the kind has
 * ready tasks) and leave the kind alone while it is at its limit. The names are
 * borrowed for the connection's life; n = 0 removes every limit. */
typedef struct store_kind_limit {
    const char *kind;
    int max;                /* >= 1 */
} store_kind_limit;
int store_set_kind_limits(store *s, const store_kind_limit *limits, size_t n);

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
/* ---------------------------------------------------------------- batches (issue 12)
 * A busy worker whose tasks are short records its outcomes and claims its next tasks k
 * at a time: one write transaction (one lock, one commit) per k tasks. The tasks of a
 * batch are *held*: running, owned by the worker, with started_at unset until their
 * outcome is recorded (then it is the time they began, store_outcome.started_ms). A held task that its worker hands back, or
 * that was not running when its worker or its instance died, goes back to pending as
 * if never claimed: its attempt is not counted and it gets no error. Both backends batch
 * (store_batch_max 16); on PostgreSQL the agent also writes the start of a held task
 * that runs long (store_mark_started), for the rescue by another instance. */

/* One attempt's end, for store_record_batch(). */
typedef struct store_done {
    int64_t id;
    int attempt;
    store_outcome o;
    int rc;                 /* out: STORE_OK, or STORE_CONFLICT (no longer this attempt) */
} store_done;

/* A claimed task, by id and attempt. */
typedef struct store_claim_ref {
    int64_t id;
    int attempt;
} store_claim_ref;

/* In one write transaction: records done[0..ndone) (each as store_finish(), its code in
 * done[i].rc), hands back back[0..nback) (claimed by owner, not started: pending again,
 * the attempt not counted; one no longer held is left alone), then claims up to `want`
 * tasks for owner as store_claim_next() would, one after the other, into next[]
 * (*nclaimed of them; with want > 1 all held, else claimed as usual) -- but not more than
 * the tasks waiting divided by `share` (at least one), so that a batch never takes what
 * the other idle workers could run now. want = 0 claims nothing. Returns STORE_OK, or an
 * error: then nothing was written and nothing claimed. */
int store_record_batch(store *s, store_done *done, size_t ndone, const store_claim_ref *back,
                       size_t nback, int64_t now_ms, long owner, const store_kind_set *skip,
                       size_t want, size_t share, store_task *next, size_t *nclaimed);
/* The most tasks store_record_batch() claims at once on this backend (1: no batches). */
size_t store_batch_max(store *s);
/* A held task (started_at unset), attempt `attempt`, has been running since started_ms
 * (the agent calls it for a worker's held task that runs long): its started_at becomes
 * started_ms, and prev_id's (0: none; the task marked before for the same worker) is
 * unset again if it is still prev_started_ms and that attempt still runs; id 0 only
 * unsets. So of a worker's held tasks only the one running long has a start: another
 * instance rescuing a dead one (store_rescue), which has no slot to ask, counts that
 * task's attempt and hands back the others as never claimed (those not begun, and those
 * run whose outcome died with the worker). One asynchronous commit (no wait for the
 * disk). STORE_OK when id's start was written (or id is 0), STORE_NOTFOUND when id is
 * not held (or SQLite, which writes nothing: the slot says which task runs,
 * store_release_lost; after a crash every held task goes back as never claimed). An
 * error is harmless: the task then looks not begun. */
int store_mark_started(store *s, int64_t id, int attempt, int64_t started_ms,
                       int64_t prev_id, int prev_attempt, int64_t prev_started_ms);
/* 1 when this backend writes held tasks' starts (store_mark_started), so the agent
 * looks at the workers' held tasks; 0 (SQLite): it need not wake for them. */
int store_marks_started(store *s);

/* The worker with pid owner (of this instance) is gone: each task it was running goes
 * back to pending if attempts remain, else to failed, with error code (default
 * "worker_lost") and message; a task it held but had not started (held, and not
 * `running_id`, the task its slot said it ran; 0: none) goes back to pending as if
 * never claimed. Up to cap of them are reported in released[], their count in *n. */
int store_release_lost(store *s, long owner, int64_t running_id, int64_t now_ms,
                       const char *code, const char *message, store_task_ref *released,
                       size_t cap, size_t *n);
/* Every task a previous run of this instance left running is handled as lost (see
 * store_start(), which calls it). */
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
/* The earliest run_after after now_ms among pending tasks (a scheduled task, or a
 * retry waiting for its backoff), or 0 if there is none (or on error). A read. */
int64_t store_next_run_after(store *s, int64_t now_ms);
/* Number of pending tasks (as store_count_states), or -1 on error. */
int64_t store_count_pending(store *s);
/* Deletes up to limit terminal tasks that finished before before_ms, oldest first
 * (their idempotency keys go with them), in one short write transaction; it reads only
 * the tasks it deletes. *deleted says how many. The deletion becomes durable with the
 * connection's next durable commit (losing it to a power cut only means deleting the
 * same tasks again). */
int store_purge(store *s, int64_t before_ms, int limit, int *deleted);
/* Housekeeping, called now and then (four times a second) by the STORE_MAINTAINER
 * connection between its transactions: SQLite copies a WAL that passed 32 MB back into
 * the database and truncates it. A STORE_RELAXED maintainer has a thread of its own that
 * checkpoints the WAL as it grows, off the maintainer's commits, and syncs it at most
 * about a second after anyone committed (so relaxed commits are on disk within about a
 * second); store_maintain reports those syncs. STORE_OK; when something was done, a line
 * saying what in note (else note is ""). */
int store_maintain(store *s, char *note, size_t notelen);
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

/* ---------------------------------------------------------------- completion callbacks
 * A task submitted with a callback_url has a delivery: `pending` from its submission, due
 * once the task is terminal (succeeded, failed, canceled) and its next_at has come; then
 * `delivered`, or `failed` once the deliverer gives up (service/callbacks.c). Deliveries
 * are stored with the task, so they survive restarts; a claim hides one from the other
 * deliverers (every instance's) for a lease. */
enum store_callback_state {
    STORE_CB_NONE = 0, STORE_CB_PENDING, STORE_CB_DELIVERED, STORE_CB_FAILED
};
/* "pending"...; NULL for STORE_CB_NONE */
const char *store_callback_state_name(int state);
/* Claims the delivery due first at now_ms, if any: its attempt is counted
 * (callback_attempts) and it is hidden from other claims until now_ms + lease_ms (if its
 * deliverer dies, it is claimed again then). STORE_OK with *out the whole task (release
 * with store_task_clear), STORE_EMPTY when none is due. A read first: no write when none
 * is due. */
int store_callback_claim(store *s, int64_t now_ms, int64_t lease_ms, store_task *out);
/* Records how attempt `attempt` of task id's delivery ended: STORE_CB_DELIVERED or
 * STORE_CB_FAILED (final), or STORE_CB_PENDING to try again at next_at_ms; error (may be
 * NULL) says why it failed. STORE_CONFLICT when that attempt is no longer the delivery's
 * (it was claimed again after its lease). */
int store_callback_record(store *s, int64_t id, int attempt, int state, int64_t next_at_ms,
                          const char *error);

/* ---------------------------------------------------------------- many instances
 * What an instance does so that others sharing the store know it is alive and learn of
 * its tasks (the agent process does these, service/agent.c). With SQLite there are no
 * others: the heartbeat and the rescue do nothing, store_instances() lists this one,
 * and no event ever comes. */

/* Renews this instance's lease (PostgreSQL: last_seen = the database's clock). After
 * a silence longer than its lease it may have been declared lost meanwhile (its running
 * tasks handed to others): *was_lost is then 1, and the instance is alive again from
 * now on. *live: instances alive now, this one included. */
int store_heartbeat(store *s, int *live, int *was_lost);
/* Hands back the running tasks of every instance whose lease has run out (to pending if
 * attempts remain, else failed with worker_lost), one instance of the store at a time
 * (the others get *n = 0 meanwhile). An instance is lost only once this one has itself
 * been heartbeating for a whole lease: after the database was out of reach for everyone,
 * nobody is declared lost for a silence nobody could end. Up to cap tasks are reported in
 * refs; *n their count, *lost the instances found lost. Notifies the other instances. */
int store_rescue(store *s, int64_t now_ms, store_task_ref *refs, size_t cap, size_t *n,
                 int *lost);
/* The instances alive now (their lease not run out), oldest first: *out (free() it),
 * *n of them. */
int store_instances(store *s, store_instance **out, size_t *n);
/* A clean stop: this instance leaves the store (its row is removed). Only when none of
 * its tasks is running any more. */
int store_leave(store *s);

/* Events from other instances, for this connection once store_listen() was called:
 * READY: n tasks became ready to claim (submitted, retried or handed back) on another
 * instance; DONE: task id became terminal there; RESYNC: events may have been lost (the
 * connection was made again): look at everything again. */
enum store_event_type { STORE_EV_READY = 1, STORE_EV_DONE, STORE_EV_RESYNC };
typedef struct store_event {
    enum store_event_type type;
    int64_t n;              /* READY: how many tasks; DONE: the task's id */
    /* DONE: the task as it ended there */
    enum task_state state;
    int attempts;
    int64_t at_ms;          /* its finished_at (the other host's clock) */
    char kind[65];
    char error_code[65];    /* "" for none */
} store_event;
int store_listen(store *s);
/* The descriptor to poll() for POLLIN before store_events(); -1 when none (SQLite, or
 * while the connection is down: call store_events() now and then to make it again). */
int store_events_fd(store *s);
/* Takes up to cap events without blocking; *n of them. */
int store_events(store *s, store_event *ev, size_t cap, size_t *n);

#endif
