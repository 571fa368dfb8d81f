/* worker.c -- a worker process: claim the next task, run it against the preloaded
 * context, record the outcome, repeat; block on the wake-up eventfd when idle.
 *
 * The loop, and why it is in this order:
 *   1. look for a ready task with a read (no write lock), claim it if there is one;
 *   2. otherwise block in poll() on the wake eventfd until the next delayed retry is
 *      due, and at most a second (the safety net for a lost wake-up);
 *   3. a readable eventfd gives this worker one token (EFD_SEMAPHORE), so n tokens
 *      wake up to n idle workers, and go back to 1.
 * A busy worker records a task's outcome and claims the next in one transaction
 * (store_finish_claim), so back-to-back tasks cost one commit each, not two.
 * A worker claims only when idle (no prefetch), so a short task never waits behind
 * a long one. On SIGTERM, or when the supervisor retires it after a reload, it
 * finishes the task in hand and exits 0. */
#include "service/worker.h"
#include "common/clock.h"
#include "common/log.h"
#include "service/kinds.h"
#include "service/tasklog.h"
#include "storage/store.h"

#include <errno.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SAFETY_NET_MS 1000
#define RETRY_CAP_MS 300000

static volatile sig_atomic_t g_stop;

static void
on_term(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void
on_usr1(int sig)
{
    (void)sig;                  /* only interrupts poll(): the retire flag is the message */
}

static int
stopping(const struct worker_env *env)
{
    return g_stop || atomic_load(&env->sh->draining) ||
           atomic_load(&env->sh->slots[env->slot].retire);
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
};

/* Runs task t against its kind's preloaded context; fills *a. */
static void
run_task(const struct worker_env *env, const store_task *t, struct attempt *a)
{
    struct slot *slot = &env->sh->slots[env->slot];
    atomic_store(&slot->task_id, t->id);
    atomic_store(&slot->attempt, t->attempts);
    atomic_store(&slot->deadline_ms, clock_mono_ms() + t->timeout_ms);
    atomic_store(&slot->state, SLOT_BUSY);
    tasklog_started(t);

    *a = (struct attempt){.err = {.retryable = 1}};
    struct wp_task_error *err = &a->err;
    json_t *result = NULL;
    struct kind_entry *k = kinds_find(t->kind);
    if (k == NULL) {
        wp_task_error_set(err, "unknown_kind", 0, "no kind '%s' is loaded in this service",
                          t->kind);
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

    store_outcome *o = &a->o;
    o->now_ms = clock_now_ms();
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
            o->run_after_ms = o->now_ms + retry_delay_ms(env->cfg->retry_base_ms, t->attempts);
        } else {
            o->state = TASK_FAILED;
        }
    }
}

/* Resident set size of this process in MiB, from /proc/self/statm; -1 if unknown. */
static long
rss_mb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages_total, pages_resident = -1;
    if (f == NULL)
        return -1;
    if (fscanf(f, "%ld %ld", &pages_total, &pages_resident) != 2)
        pages_resident = -1;
    fclose(f);
    return pages_resident < 0 ? -1 : pages_resident * (sysconf(_SC_PAGESIZE) / 1024) / 1024;
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
    if (max_rss > 0 && (rss = rss_mb()) > max_rss) {
        if (!quiet)
            log_info("retiring: resident %ld MB is over --max-worker-rss %lld", rss,
                     (long long)max_rss);
        return 1;
    }
    return 0;
}

/* Records the outcome of t and, when this worker goes on working, claims the next
 * task in the same transaction (*claimed, *next). The database being busy, full or
 * failing is retried, never a lost result. 0 recorded, -1 dropped (the task was
 * taken from this worker). */
static int
record(const struct worker_env *env, store *st, const store_task *t, const store_outcome *o,
       store_task *next, int *claimed)
{
    *claimed = 0;
    int fresh = next != NULL && !worn_out(env, 1, 1);
    for (int tries = 0;; tries++) {
        /* stopping is asked again on every try: a drain may begin meanwhile */
        int go_on = fresh && !stopping(env);
        int rc = go_on ? store_finish_claim(st, t->id, t->attempts, o, clock_now_ms(),
                                            (long)getpid(), next, claimed)
                       : store_finish(st, t->id, t->attempts, o);
        if (rc == STORE_OK)
            return 0;
        if (rc == STORE_CONFLICT) {
            log_warn("task %" PRId64 " attempt %d was taken from this worker; its outcome "
                     "is dropped", t->id, t->attempts);
            return -1;
        }
        if (tries % 50 == 0)
            log_warn("recording task %" PRId64 ": %s (try %d; retrying)", t->id,
                     store_errmsg(st), tries + 1);
        /* the supervisor SIGKILLs us at the end of a drain; until then keep trying */
        clock_sleep_ms(tries < 10 ? 10 : 200);
    }
}

/* Runs t and records it; when the same transaction claimed another task, it is in
 * *next and the function returns 1 (the caller runs it next), else 0. */
static int
run_one(const struct worker_env *env, store *st, const store_task *t, store_task *next)
{
    struct slot *slot = &env->sh->slots[env->slot];
    struct attempt a;
    run_task(env, t, &a);
    int claimed = 0;
    int recorded = record(env, st, t, &a.o, next, &claimed) == 0;
    tasklog_outcome(t, &a.o, recorded);
    free(a.text);

    atomic_fetch_add(&slot->tasks_done, 1);
    atomic_store(&slot->task_id, 0);
    atomic_store(&slot->state, SLOT_IDLE);
    if (recorded && task_state_terminal(a.o.state)) {
        /* tell the HTTP process, for ?wait; if the pipe is full, the waiter's deadline
         * answers instead */
        if (write(env->notify_fd, &t->id, sizeof t->id) != (ssize_t)sizeof t->id)
            log_debug("notify pipe full; task %" PRId64 " waiters answer at their deadline",
                      t->id);
    }
    return claimed;
}

void
worker_main(const struct worker_env *env)
{
    log_set_role("worker");
    struct sigaction sa = {.sa_handler = on_term};     /* no SA_RESTART: poll must return */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);     /* inherited blocked from the supervisor */
    srandom((unsigned)getpid() ^ (unsigned)clock_now_ms());

    struct slot *slot = &env->sh->slots[env->slot];
    atomic_store(&slot->pid, (int)getpid());
    char err[512];
    store *st = store_open(env->cfg->db_path, STORE_SYNC_NORMAL, 5000, err, sizeof err);
    if (st == NULL) {
        log_error("opening the database: %s", err);
        _exit(1);
    }
    store_set_autocheckpoint(st, 0);    /* the HTTP writer thread checkpoints, alone */
    if (kinds_worker_init(err, sizeof err) != 0) {
        log_error("%s", err);
        store_close(st);
        _exit(1);
    }
    atomic_store(&slot->state, SLOT_IDLE);
    long self = (long)getpid();
    long claim_errors = 0;
    log_debug("worker ready in slot %d", env->slot);

    while (!stopping(env)) {
        int ready = store_has_ready(st, clock_now_ms());
        if (ready != 0) {               /* yes, or unknown: try to claim */
            store_task t;
            int rc = store_claim_next(st, clock_now_ms(), self, &t);
            if (rc == STORE_OK) {
                /* while finishing one task claims the next, run them back to back */
                store_task next;
                while (run_one(env, st, &t, &next)) {
                    store_task_clear(&t);
                    t = next;
                }
                store_task_clear(&t);
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
        int timeout = SAFETY_NET_MS;
        int64_t now = clock_now_ms(), next = store_next_run_after(st, now);
        if (next > now && next - now < timeout)
            timeout = (int)(next - now) + 1;
        struct pollfd p = {.fd = env->wake_fd, .events = POLLIN};
        if (poll(&p, 1, timeout) > 0 && (p.revents & POLLIN)) {
            uint64_t token;
            if (read(env->wake_fd, &token, sizeof token) < 0 && errno != EAGAIN)
                log_warn("reading the wake-up channel: %s", strerror(errno));
        }
    }
    kinds_worker_fini();
    store_close(st);
    log_debug("worker exits");
    _exit(0);
}
