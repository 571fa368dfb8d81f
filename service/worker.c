/* worker.c -- a worker process: claim the next task, run it against the preloaded
 * context, record the outcome, repeat; block on the wake-up channel when idle.
 *
 * The loop, and why it is in this order:
 *   1. look for a ready task with a read (no write lock), claim it if there is one;
 *   2. otherwise block in ppoll() on the wake-up channel (common/wake.h) until the
 *      next delayed retry is due, and at most a second (the safety net for a lost
 *      wake-up);
 *   3. a readable channel gives this worker one token, so n tokens wake up to n
 *      idle workers, and go back to 1.
 * A busy worker records a task's outcome and claims the next in one transaction
 * (store_record_batch), so back-to-back tasks cost one commit each, not two; while its
 * tasks are short it claims a few at a time, its share of the tasks waiting, and records
 * them together (see "batches" below). An idle worker claims one; a task that is not
 * short is claimed alone, so a short task never waits behind a long one for more than
 * a batch's budget. On SIGTERM, or when the supervisor retires it after a reload, it
 * finishes the task in hand and exits 0. */
#include "service/worker.h"
#include "common/clock.h"
#include "common/fault.h"
#include "common/wake.h"
#include "common/log.h"
#include "service/kinds.h"
#include "service/tasklog.h"
#include "storage/store.h"

#include <errno.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SAFETY_NET_MS 1000
#define RETRY_CAP_MS 300000
#define EXEC_WAIT_SLACK_MS 2000     /* past a deadline, before the worker kills the child
                                     * itself (the supervisor should have, at once) */
#define EXEC_KILL_WAIT_MS 1000      /* for a killed child's channel to reach end of file */

/* Signals. SIGTERM and SIGINT (stop after the task in hand) and SIGUSR1 (a nudge:
 * look at the retire flag) stay blocked except inside the idle wait's ppoll(), which
 * unblocks them atomically (issue 8):
 *  - a kind's run() is never interrupted by them, so its blocking calls never fail
 *    with EINTR (SA_RESTART would not be enough: poll() and nanosleep() are never
 *    restarted);
 *  - one that arrives between the last look at the flags and the wait is pending,
 *    so ppoll() returns at once instead of sleeping until the safety net.
 * A stop that arrives while busy is seen by stopping() through sigpending(). */
static volatile sig_atomic_t g_stop;
static sigset_t g_blocked;      /* SIGTERM, SIGINT, SIGUSR1 */
static sigset_t g_wait_mask;    /* the mask inside ppoll(): g_blocked unblocked */

static void
on_term(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void
on_usr1(int sig)
{
    (void)sig;                  /* only ends ppoll(): the retire flag is the message */
}

/* In a process that a kind's run() forks: the signals as a fresh process has them. */
static void
reset_signals_in_child(void)
{
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGUSR1, SIG_DFL);
    sigprocmask(SIG_UNBLOCK, &g_blocked, NULL);
}

static int
stopping(const struct worker_env *env)
{
    if (g_stop || atomic_load(&env->sh->draining) ||
        atomic_load(&env->sh->slots[env->slot].retire))
        return 1;
    sigset_t pending;
    if (sigpending(&pending) == 0 &&
        (sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1))
        g_stop = 1;             /* delivered at the next ppoll(); act on it now */
    return g_stop;
}

/* May this worker claim now? Only while the instance's lease holds (agent.h): an
 * instance that cannot renew it (its agent cut off from the database, its supervisor
 * stopped) must not take tasks that the other instances will soon take back. */
static int
lease_holds(const struct worker_env *env)
{
    return clock_mono_ms() < atomic_load(&env->sh->lease_until_ms);
}

/* Delay before retry number `attempt` (1-based): base * 2^(attempt-1), capped, with
 * up to 25% jitter so that tasks failing together do not retry together. */
static int64_t
retry_delay_ms(int64_t base, int attempt)
{
    if (base <= 0)
        return 0;
    int64_t d = base;
    for (int i = 1; i < attempt && d < RETRY_CAP_MS; i++)
        d *= 2;
    if (d > RETRY_CAP_MS)
        d = RETRY_CAP_MS;
    return d + (int64_t)(random() % (d / 4 + 1));
}

/* What one attempt produced. o's strings point into text and err. */
struct attempt {
    store_outcome o;
    char *text;
    struct wp_task_error err;
    int no_backoff;             /* an exec task's worker_lost or timeout: retried at once,
                                 * as the supervisor's hand-back of a C task would be */
};

/* ---------------------------------------------------------------- exec kinds
 * Each exec kind's task runs in this worker's child of that kind (env->exec[i]), which
 * the loader obtained from the kind's zygote when it forked this worker. A child that
 * dies or breaks is killed and not replaced here: its kind goes into this worker's
 * skip set (slot->exec_missing), so this worker claims no more of its tasks, and the
 * supervisor replaces the worker once the kind's zygote is up (rolling()). */

static struct exec_buf g_exec_buf;          /* reused for every frame */

static const char *
exec_name(const struct worker_env *env, int i)
{
    return env->cfg->exec_kinds[i].name;
}

/* Child i is of no more use: kill it (through its pidfd) and publish the gap. */
static void
exec_drop(const struct worker_env *env, int i, const char *why)
{
    struct exec_child *c = &env->exec[i];
    if (c->fd >= 0) {
        log_warn("exec kind %s: child %ld %s; this worker takes no more of its tasks and "
                 "is replaced", exec_name(env, i), (long)c->pid, why);
        exec_child_kill(c, EXEC_KILL_WAIT_MS);
    }
    uint64_t bit = UINT64_C(1) << i;
    if (!(atomic_fetch_or(&env->sh->slots[env->slot].exec_missing, bit) & bit)) {
        /* nudge the supervisor (our parent), so that it replaces this worker now rather
         * than at its next tick */
        pid_t sup = getppid();
        if (sup > 1)
            kill(sup, SIGUSR1);
    }
}

/* Before a claim: a child that left or wrote unasked (docs/exec-kinds.md section 7) is
 * dropped, so no task is sent to it. */
static void
exec_check_children(const struct worker_env *env)
{
    for (int i = 0; i < env->cfg->nexec_kinds; i++)
        if (env->exec[i].fd >= 0 && !exec_child_usable(&env->exec[i]))
            exec_drop(env, i, "left (or wrote unasked) between tasks");
}

/* Does this worker leave the tasks of `kind` to others (an exec kind it has no child
 * of)? */
static int
exec_skips(const struct worker_env *env, const char *kind)
{
    const struct kind_entry *k = kinds_find(kind);
    return k != NULL && k->exec >= 0 &&
           (atomic_load(&env->sh->slots[env->slot].exec_missing) & (UINT64_C(1) << k->exec));
}

/* Has kind a --kind-concurrency limit? */
static int
limited(const struct worker_env *env, const char *kind)
{
    for (int i = 0; i < env->cfg->nkind_limits; i++)
        if (strcmp(env->cfg->kind_limits[i].name, kind) == 0)
            return 1;
    return 0;
}

/* The kinds this worker's claims leave alone: the exec kinds it has no usable child of
 * (store.h's skip set, read by every claim; empty, the claim is the plain one). */
static const store_kind_set *
claim_skip(const struct worker_env *env)
{
    static const char *names[CONFIG_MAX_EXEC_KINDS];
    static store_kind_set set = {.names = names};
    uint64_t missing = atomic_load(&env->sh->slots[env->slot].exec_missing);
    set.n = 0;
    for (int i = 0; i < env->cfg->nexec_kinds; i++)
        if (missing & (UINT64_C(1) << i))
            names[set.n++] = exec_name(env, i);
    return &set;
}

/* How an exec task's round trip ended. */
enum exec_end { EXEC_END_ANSWER, EXEC_END_LOST, EXEC_END_PROTOCOL, EXEC_END_TIMEOUT };

/* Sends task t to child i and waits for its answer. ANSWER fills a (a result or the
 * child's error); the others say what became of the child (dropped) and why (in a). */
static enum exec_end
exec_round_trip(const struct worker_env *env, int i, const store_task *t, int64_t deadline_ms,
                struct attempt *a, json_t **result)
{
    struct exec_child *c = &env->exec[i];
    struct slot *slot = &env->sh->slots[env->slot];
    const char *input = t->input ? t->input : "null";
    struct exec_task xt = {.id = t->id, .attempt = t->attempts, .timeout_ms = t->timeout_ms,
                           .deadline_ms = clock_now_ms() + t->timeout_ms, .input = input,
                           .input_len = strlen(input)};
    if (exec_proto_task_bytes(xt.id, xt.attempt, xt.timeout_ms, xt.deadline_ms,
                              xt.input_len) > EXEC_PROTO_FRAME_MAX_DEFAULT) {
        wp_task_error_set(&a->err, "input_too_large", 0, "the input takes %zu bytes: over "
                          "what an exec kind's frame holds (%u bytes)", xt.input_len,
                          EXEC_PROTO_FRAME_MAX_DEFAULT);
        return EXEC_END_ANSWER;
    }
    struct exec_msg reply;
    char why[700];
    int rc = exec_child_task(c, &g_exec_buf, EXEC_PROTO_FRAME_MAX_DEFAULT, &xt,
                             deadline_ms + EXEC_WAIT_SLACK_MS, &reply, why, sizeof why);
    if (rc == EXEC_PROTO_OK) {
        if (reply.type == EXEC_MSG_RESULT) {
            *result = reply.value;
            reply.value = NULL;
        } else {
            wp_task_error_set(&a->err, reply.code, reply.retryable, "%s", reply.message);
        }
        exec_msg_clear(&reply);
        return EXEC_END_ANSWER;
    }
    if (rc == EXEC_PROTO_TIMEOUT) {
        /* the supervisor did not kill it (it is stopped, or very late): do its part,
         * through the same compare-and-set */
        int busy = SLOT_BUSY;
        atomic_compare_exchange_strong(&slot->state, &busy, SLOT_KILLED);
        exec_drop(env, i, "outlived its task's deadline");
        return EXEC_END_TIMEOUT;
    }
    if ((rc == EXEC_PROTO_EOF || rc == EXEC_PROTO_IO) &&
        atomic_load(&slot->state) == SLOT_KILLED) {
        exec_drop(env, i, "was killed: its task ran past its timeout_ms");
        return EXEC_END_TIMEOUT;        /* the supervisor's kill (enforce_timeouts()) */
    }
    if (rc == EXEC_PROTO_EOF || rc == EXEC_PROTO_IO) {
        wp_task_error_set(&a->err, "worker_lost", 1, "the exec child running this task (%s "
                          "child %ld) ended during the task: it crashed, exited or was killed",
                          exec_name(env, i), (long)c->pid);
        exec_drop(env, i, "ended during a task");
        return EXEC_END_LOST;
    }
    /* MALFORMED, TOO_BIG: the same code would do it again; not retried */
    wp_task_error_set(&a->err, "exec_protocol", 0, "%s", why);
    exec_drop(env, i, "broke the protocol");
    return EXEC_END_PROTOCOL;
}

/* Closes every child's channel: each leaves at end of file. */
static void
exec_close_children(const struct worker_env *env)
{
    for (int i = 0; i < env->cfg->nexec_kinds; i++) {
        if (env->exec[i].fd >= 0)
            close(env->exec[i].fd);
        if (env->exec[i].pidfd >= 0)
            close(env->exec[i].pidfd);
        env->exec[i].fd = env->exec[i].pidfd = -1;
    }
    exec_buf_free(&g_exec_buf);
}

/* Resident set size of process pid (0: this one) in MiB, from /proc; -1 if unknown. */
static long
rss_mb_of(pid_t pid)
{
    char path[64];
    if (pid > 0)
        snprintf(path, sizeof path, "/proc/%ld/statm", (long)pid);
    else
        snprintf(path, sizeof path, "/proc/self/statm");
    FILE *f = fopen(path, "r");
    long pages_total, pages_resident = -1;
    if (f == NULL)
        return -1;
    if (fscanf(f, "%ld %ld", &pages_total, &pages_resident) != 2)
        pages_resident = -1;
    fclose(f);
    return pages_resident < 0 ? -1 : pages_resident * (sysconf(_SC_PAGESIZE) / 1024) / 1024;
}

/* Runs task t against its kind's preloaded context, or in its exec kind's child; fills
 * *a. Returns 0, or -1 when the supervisor timed a C kind's task out meanwhile (then
 * nothing is to be recorded: the SIGKILL is on its way). */
static int
run_task(const struct worker_env *env, const store_task *t, struct attempt *a)
{
    struct slot *slot = &env->sh->slots[env->slot];
    struct kind_entry *k = kinds_find(t->kind);
    int x = k != NULL ? k->exec : -1;       /* exec kind number, or -1 */
    atomic_store(&slot->task_id, t->id);
    atomic_store(&slot->attempt, t->attempts);
    /* an exec task's child: the supervisor kills it, not this worker, at the deadline */
    atomic_store(&slot->child_pid, x >= 0 && env->exec[x].fd >= 0 ? (int)env->exec[x].pid : 0);
    /* the deadline first: the supervisor only looks at it once the slot is BUSY, so it
     * never sees the previous task's (issue 8) */
    int64_t deadline = clock_mono_ms() + t->timeout_ms;
    atomic_store(&slot->deadline_ms, deadline);
    atomic_store(&slot->state, SLOT_BUSY);
    tasklog_started(t);

    *a = (struct attempt){.err = {.retryable = 1}};
    struct wp_task_error *err = &a->err;
    json_t *result = NULL;
    enum exec_end end = EXEC_END_ANSWER;
    if (k == NULL) {
        wp_task_error_set(err, "unknown_kind", 0, "no kind '%s' is loaded in this service",
                          t->kind);
    } else if (x >= 0 && env->exec[x].fd < 0) {
        /* claimed although this worker has no child of the kind: only when the claim
         * could not leave it out (it cannot happen with the skip set) */
        wp_task_error_set(err, "worker_lost", 1, "this worker has no child of exec kind %s",
                          t->kind);
        end = EXEC_END_LOST;
    } else if (x >= 0) {
        end = exec_round_trip(env, x, t, deadline, a, &result);
    } else {
        json_error_t je;
        json_t *input = json_loads(t->input ? t->input : "null", JSON_DECODE_ANY, &je);
        if (input == NULL)
            wp_task_error_set(err, "invalid_input", 0, "stored input does not parse: %s",
                              je.text);
        else
            result = k->kind->run(k->ctx, k->worker_state, input, err);
        json_decref(input);
    }
    /* the task's time ends here: recording it is not timed (slots.h) */
    int busy = SLOT_BUSY;
    if (!atomic_compare_exchange_strong(&slot->state, &busy, SLOT_RECORDING)) {
        json_decref(result);
        if (x < 0)
            return -1;                  /* KILLED: the SIGKILL is on its way */
        /* KILLED: the supervisor killed this task's child; the worker records it */
        exec_drop(env, x, "was killed: its task ran past its timeout_ms");
        result = NULL;
        end = EXEC_END_TIMEOUT;
        atomic_store(&slot->state, SLOT_RECORDING);
    }
    atomic_store(&slot->child_pid, 0);

    store_outcome *o = &a->o;
    o->now_ms = clock_now_ms();
    if (end == EXEC_END_TIMEOUT)
        wp_task_error_set(err, "timeout", 1, "the task ran past its timeout_ms (%lld ms) and "
                          "its exec child was killed", (long long)t->timeout_ms);
    a->no_backoff = end == EXEC_END_TIMEOUT || end == EXEC_END_LOST;
    if (result != NULL) {
        a->text = json_dumps(result, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(result);
        if (a->text == NULL)
            wp_task_error_set(err, "invalid_result", 0, "the result cannot be encoded");
    }
    if (a->text != NULL) {
        o->state = TASK_SUCCEEDED;
        o->result = a->text;
    } else {
        if (err->code[0] == '\0')
            wp_task_error_set(err, "task_failed", 1, "the kind reported no reason");
        o->error_code = err->code;
        o->error_message = err->message;
        if (err->retryable && t->attempts < t->max_attempts) {
            o->state = TASK_PENDING;
            o->run_after_ms = o->now_ms + (a->no_backoff ? 0
                                           : retry_delay_ms(env->cfg->retry_base_ms,
                                                            t->attempts));
        } else {
            o->state = TASK_FAILED;
        }
    }
    return 0;
}

/* --max-tasks-per-worker / --max-worker-rss: retire after this task? extra_tasks
 * counts a task done but not yet in tasks_done; quiet: do not log why. */
static int
worn_out(const struct worker_env *env, int64_t extra_tasks, int quiet)
{
    const struct slot *slot = &env->sh->slots[env->slot];
    int64_t max_tasks = env->cfg->max_tasks_per_worker, max_rss = env->cfg->max_worker_rss_mb;
    if (max_tasks > 0 && (int64_t)atomic_load(&slot->tasks_done) + extra_tasks >= max_tasks) {
        if (!quiet)
            log_debug("retiring after %lld tasks", (long long)max_tasks);
        return 1;
    }
    long rss;
    if (max_rss > 0 && (rss = rss_mb_of(0)) > max_rss) {
        if (!quiet)
            log_info("retiring: resident %ld MB is over --max-worker-rss %lld", rss,
                     (long long)max_rss);
        return 1;
    }
    /* an exec kind's child is held to the same limit: the worker retires with it */
    for (int i = 0; max_rss > 0 && i < env->cfg->nexec_kinds; i++) {
        if (env->exec[i].fd >= 0 && (rss = rss_mb_of(env->exec[i].pid)) > max_rss) {
            if (!quiet)
                log_info("retiring: exec kind %s's child %ld is resident %ld MB, over "
                         "--max-worker-rss %lld", exec_name(env, i), (long)env->exec[i].pid,
                         rss, (long long)max_rss);
            return 1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- batches (issue 12)
 * A busy worker records its outcomes and claims its next tasks in one write transaction
 * (store_record_batch). While its tasks are short (under BATCH_SHORT_US each, on
 * average, in its last batch) it claims up to store_batch_max() of them at once, but
 * never more than its share of the tasks waiting (the store divides them by the number
 * of workers), so an idle worker does not wait behind another's batch; a task that is
 * not short brings the batch size back to one. A batch runs for BATCH_BUDGET_MS at
 * most: past that, or when the worker is stopping, the tasks not started are handed
 * back (pending again, their attempt not counted) in the same transaction that records
 * the others. So a result waits at most about that long for its commit. */
#define BATCH_CAP 16
#define BATCH_SHORT_US 500
#define BATCH_BUDGET_MS 2

struct batch {
    store_task t[BATCH_CAP];            /* claimed, in the order to run them */
    size_t n;
    store_done done[BATCH_CAP];         /* what ran */
    struct attempt a[BATCH_CAP];
    const store_task *ran[BATCH_CAP];   /* done[i]'s task */
    size_t ndone;
    store_claim_ref back[BATCH_CAP];    /* what is handed back */
    size_t nback;
    int64_t run_us;                     /* the run time of done[] */
};

static int64_t
mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Runs b's tasks in order, until the budget is spent or the worker must stop; the rest
 * go to b->back. Returns -1 when the supervisor timed a C kind's task out (nothing is to
 * be recorded: the SIGKILL is on its way). */
static int
run_batch(const struct worker_env *env, struct batch *b)
{
    b->ndone = b->nback = 0;
    b->run_us = 0;
    int64_t begin = clock_mono_ms();
    /* fault point worker_batch_budget_ms: a longer budget, so that a test can kill the
     * worker while the tasks of its batch are still held */
    int64_t budget = fault_value("worker_batch_budget_ms") > 0
                         ? fault_value("worker_batch_budget_ms") : BATCH_BUDGET_MS;
    for (size_t i = 0; i < b->n; i++) {
        const store_task *t = &b->t[i];
        if (i > 0 && (stopping(env) || !lease_holds(env) || worn_out(env, (int64_t)b->ndone, 1) ||
                      clock_mono_ms() - begin >= budget || exec_skips(env, t->kind))) {
            b->back[b->nback++] = (store_claim_ref){t->id, t->attempts};
            continue;
        }
        if (i > 0)
            exec_check_children(env);
        int64_t started = clock_now_ms(), t0 = mono_us();
        /* a held task: its start, for the agent (which writes it in the store when the
         * task runs long, store_mark_started), before the slot shows the task */
        atomic_store(&env->sh->slots[env->slot].held_started_ms,
                     b->t[i].started_at_ms == 0 ? started : 0);
        if (b->t[i].started_at_ms == 0)     /* held: its start is now (events, metrics) */
            b->t[i].started_at_ms = started;
        struct attempt *a = &b->a[b->ndone];
        if (run_task(env, t, a) != 0)
            return -1;
        b->run_us += mono_us() - t0;
        a->o.started_ms = started;
        b->done[b->ndone] = (store_done){.id = t->id, .attempt = t->attempts, .o = a->o};
        b->ran[b->ndone++] = t;
    }
    return 0;
}

/* Records b's outcomes and hand-backs and, when this worker goes on working, claims its
 * next tasks in the same transaction (into next[], *nnext of them). The database being
 * busy, full or failing is retried, never a lost result. */
static void
record_batch(const struct worker_env *env, store *st, struct batch *b, store_task *next,
             size_t *nnext)
{
    size_t want = 1;
    if (b->run_us < (int64_t)b->ndone * BATCH_SHORT_US)
        want = store_batch_max(st) < BATCH_CAP ? store_batch_max(st) : BATCH_CAP;
    int64_t max_tasks = env->cfg->max_tasks_per_worker;
    if (max_tasks > 0) {
        int64_t left = max_tasks - (int64_t)atomic_load(&env->sh->slots[env->slot].tasks_done) -
                       (int64_t)b->ndone;
        if (left < (int64_t)want)
            want = left > 1 ? (size_t)left : 1;
    }
    int fresh = !worn_out(env, (int64_t)b->ndone, 1);
    for (int tries = 0;; tries++) {
        /* stopping is asked again on every try: a drain may begin meanwhile */
        int go_on = fresh && !stopping(env) && lease_holds(env);
        int rc = store_record_batch(st, b->done, b->ndone, b->back, b->nback, clock_now_ms(),
                                    (long)getpid(), claim_skip(env), go_on ? want : 0,
                                    (size_t)env->cfg->workers, next, nnext);
        if (rc == STORE_OK) {
            if (*nnext > 0)     /* fault point: the gap before the slot shows the claim */
                fault_pause("worker_claimed_pause_ms");
            return;
        }
        if (tries % 50 == 0)
            log_warn("recording task %" PRId64 "%s: %s (try %d; retrying)", b->done[0].id,
                     b->ndone > 1 ? " and the rest of its batch" : "", store_errmsg(st),
                     tries + 1);
        /* the supervisor SIGKILLs us at the end of a drain; until then keep trying */
        clock_sleep_ms(tries < 10 ? 10 : 200);
    }
}

/* After b was recorded (the next tasks claimed, or not): logs, counters, wake-ups and
 * the HTTP process's notices. */
static void
after_batch(const struct worker_env *env, struct batch *b, int claimed)
{
    struct slot *slot = &env->sh->slots[env->slot];
    for (size_t i = 0; i < b->ndone; i++) {
        const store_task *t = b->ran[i];
        const store_outcome *o = &b->done[i].o;
        int recorded = b->done[i].rc == STORE_OK;
        if (!recorded)
            log_warn("task %" PRId64 " attempt %d was taken from this worker; its outcome "
                     "is dropped", t->id, t->attempts);
        tasklog_outcome(t, o, recorded);
        free(b->a[i].text);
        atomic_fetch_add(&slot->tasks_done, 1);
        /* A retry waits for its run_after. Idle workers set their sleep by the earliest
         * one when they went to sleep; if this worker will not be idle to take it (it
         * claimed the next task, or it is leaving, or it lost its child of the task's
         * exec kind), wake one so that it looks again (issue 8). */
        if (recorded && o->state == TASK_PENDING &&
            (claimed || stopping(env) || worn_out(env, 0, 1) || exec_skips(env, t->kind)))
            wake_post(env->wake, 1);
        /* A kind with a concurrency limit (issue 13) has a free slot now: idle workers
         * that left its tasks alone while it was full look again (if this worker took
         * one of its tasks itself, the token costs one look). */
        else if (recorded && limited(env, t->kind))
            wake_post(env->wake, 1);
        if (recorded && task_state_terminal(o->state)) {
            /* tell the HTTP process, for ?wait; if the pipe is full, the waiter's
             * deadline answers instead */
            if (write(env->notify_fd, &t->id, sizeof t->id) != (ssize_t)sizeof t->id)
                log_debug("notify pipe full; task %" PRId64 " waiters answer at their "
                          "deadline", t->id);
        }
    }
    /* tasks handed back are ready: an idle worker may take them now */
    if (b->nback > 0)
        wake_post(env->wake, (int)b->nback);
    atomic_store(&slot->task_id, 0);
    atomic_store(&slot->state, SLOT_IDLE);
}

/* Runs the claimed task t and, while each record claims more, the batches after it. */
static void
run_claimed(const struct worker_env *env, store *st, store_task *t)
{
    static struct batch b;
    b.t[0] = *t;
    b.n = 1;
    while (b.n > 0) {
        if (run_batch(env, &b) != 0) {
            /* timed out: the supervisor hands the tasks back after our death (the one
             * running as `timeout`, those held as never claimed) */
            for (;;)
                pause();
        }
        store_task next[BATCH_CAP];
        size_t nnext = 0;
        exec_check_children(env);       /* the claim in record_batch() skips kinds gone */
        record_batch(env, st, &b, next, &nnext);
        after_batch(env, &b, nnext > 0);
        for (size_t i = 0; i < b.n; i++)
            store_task_clear(&b.t[i]);
        for (size_t i = 0; i < nnext; i++)
            b.t[i] = next[i];
        b.n = nnext;
    }
}

void
worker_main(const struct worker_env *env)
{
    log_set_role("worker");
    /* signals: see the top of this file */
    sigemptyset(&g_blocked);
    sigaddset(&g_blocked, SIGTERM);
    sigaddset(&g_blocked, SIGINT);
    sigaddset(&g_blocked, SIGUSR1);
    sigprocmask(SIG_SETMASK, &g_blocked, NULL);    /* the rest inherited blocked: unblock */
    sigemptyset(&g_wait_mask);
    struct sigaction sa = {.sa_handler = on_term, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    pthread_atfork(NULL, NULL, reset_signals_in_child);
    srandom((unsigned)getpid() ^ (unsigned)clock_now_ms());

    struct slot *slot = &env->sh->slots[env->slot];
    atomic_store(&slot->pid, (int)getpid());
    /* the exec kinds it came without: it takes none of their tasks */
    uint64_t missing = env->exec_missing;
    for (int i = 0; i < env->cfg->nexec_kinds; i++)
        if (env->exec[i].fd < 0)
            missing |= UINT64_C(1) << i;
    atomic_store(&slot->exec_missing, missing);
    char err[512];
    /* relaxed: a result lost to power loss or a database crash means the task runs
     * again (docs/reliability.md). Fault point worker_durable=1: durable commits instead,
     * for bench/run.sh pg's comparison of the two */
    int durability = fault_value("worker_durable") > 0 ? STORE_DURABLE : STORE_RELAXED;
    store *st = store_open(env->cfg->db_path, durability, 5000, err, sizeof err);
    if (st == NULL) {
        log_error("opening the database: %s", err);
        _exit(1);
    }
    /* --kind-concurrency: every claim of this connection counts them (issue 13) */
    static store_kind_limit limits[CONFIG_MAX_KIND_LIMITS];
    for (int i = 0; i < env->cfg->nkind_limits; i++)
        limits[i] = (store_kind_limit){env->cfg->kind_limits[i].name,
                                       env->cfg->kind_limits[i].max};
    if (store_set_kind_limits(st, limits, (size_t)env->cfg->nkind_limits) != STORE_OK) {
        log_error("setting the kinds' concurrency limits: %s", store_errmsg(st));
        store_close(st);
        _exit(1);
    }
    if (kinds_worker_init(err, sizeof err) != 0) {
        log_error("%s", err);
        store_close(st);
        _exit(1);
    }
    fault_pause("worker_start_pause_ms");  /* fault point: a slow start, before ready */
    atomic_store(&slot->state, SLOT_IDLE);
    long self = (long)getpid();
    long claim_errors = 0, idle_waits = 0, lease_lapsed = 0;
    log_debug("worker ready in slot %d", env->slot);

    while (!stopping(env)) {
        exec_check_children(env);
        int ready = 0;
        if (lease_holds(env)) {
            ready = store_has_ready(st, clock_now_ms(), claim_skip(env));
            lease_lapsed = 0;
        } else if (!lease_lapsed++) {
            log_debug("not claiming: this instance's lease is not renewed");
        }
        if (ready != 0) {               /* yes, or unknown: try to claim */
            store_task t;
            int rc = store_claim_next(st, clock_now_ms(), self, claim_skip(env), &t);
            if (rc == STORE_OK) {
                /* while recording claims more, run them back to back */
                run_claimed(env, st, &t);
                if (worn_out(env, 0, 0))
                    atomic_store(&slot->retire, 1);  /* the supervisor forks a fresh one */
                continue;
            }
            if (rc == STORE_BUSY)
                continue;               /* another process holds the lock: normal */
            if (rc != STORE_EMPTY) {
                /* a full disk or an I/O error: keep trying, without flooding the log */
                if (claim_errors++ % 100 == 0)
                    log_error("claiming a task: %s (retrying every 100 ms; %ld so far)",
                              store_errmsg(st), claim_errors);
                clock_sleep_ms(100);
                continue;
            }
            if (claim_errors > 0) {
                log_info("claiming works again after %ld failed tries", claim_errors);
                claim_errors = 0;
            }
        }
        /* sleep until woken, or until the next delayed retry is due, or the safety net */
        /* fault points: worker_idle_pause_ms holds the first idle wait between the last
         * checks and the wait; worker_safety_net_ms lengthens the safety net */
        if (idle_waits++ == 0)
            fault_pause("worker_idle_pause_ms");
        int64_t timeout = fault_value("worker_safety_net_ms") > 0
                              ? fault_value("worker_safety_net_ms") : SAFETY_NET_MS;
        int64_t now = clock_now_ms(), next = store_next_run_after(st, now);
        if (next > now && next - now < timeout)
            timeout = next - now + 1;
        struct timespec ts = {.tv_sec = (time_t)(timeout / 1000),
                              .tv_nsec = (long)(timeout % 1000) * 1000000L};
        struct pollfd p = {.fd = wake_fd(env->wake), .events = POLLIN};
        if (ppoll(&p, 1, &ts, &g_wait_mask) > 0 && (p.revents & POLLIN))
            wake_take(env->wake);       /* or another idle worker took it: look anyway */
    }
    kinds_worker_fini();
    exec_close_children(env);           /* each child leaves at end of file */
    store_close(st);
    log_debug("worker exits");
    _exit(0);
}
