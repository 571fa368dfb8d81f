/* agent.c -- the instance's agent (see agent.h): heartbeat, rescue of lost instances,
 * other instances' events into the local channels, and leaving the store at the end. */
#include "service/agent.h"
#include "common/clock.h"
#include "common/events.h"
#include "common/fault.h"
#include "common/log.h"
#include "common/wake.h"
#include "service/callbacks.h"
#include "service/schedule.h"
#include "service/tasklog.h"
#include "storage/store.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define RETRY_OPEN_MS 250       /* the store could not be opened: again after this */
#define LEAVE_TRIES 10          /* store_leave at the end, 200 ms apart at most */
#define RESCUE_CAP 256          /* tasks reported by one rescue (more wait for the next) */
#define MARK_EVERY_MS 100       /* how often the workers' held tasks are looked at */
#define MARK_AFTER_MS 100       /* a held task running this long has its start written */
#define MARK_SLOTS 1024

/* The start of a held task of a batch (issue 12) that runs long is written in the store
 * (store_mark_started; PostgreSQL only), so that another instance rescuing this one if it
 * dies counts that task's attempt, and sends the others the worker held back as never
 * claimed. One write per long task (and one when it ends), none for short ones: a held
 * task that was running for less than about MARK_AFTER_MS + MARK_EVERY_MS when the whole
 * instance died goes back as never claimed, as all of them do after a crash on SQLite. */
struct mark {
    int64_t id;                 /* 0: nothing written for this slot */
    int attempt;
    int64_t started_ms;
};

static void
mark_held(const struct agent_env *env, store *st, struct mark *m)
{
    int64_t now = clock_now_ms();
    int n = env->sh->nslots < MARK_SLOTS ? env->sh->nslots : MARK_SLOTS;
    for (int i = 0; i < n; i++) {
        struct slot *sl = &env->sh->slots[i];
        int busy = atomic_load(&sl->state) == SLOT_BUSY;
        int64_t id = busy ? (int64_t)atomic_load(&sl->task_id) : 0;
        int attempt = busy ? atomic_load(&sl->attempt) : 0;
        int64_t started = busy ? (int64_t)atomic_load(&sl->held_started_ms) : 0;
        int mark = id != 0 && started > 0 && now - started >= MARK_AFTER_MS;
        if (mark && m[i].id == id && m[i].attempt == attempt)
            continue;                   /* written already */
        if (!mark && (m[i].id == 0 || (m[i].id == id && m[i].attempt == attempt)))
            continue;                   /* nothing to write or to unset */
        int rc = store_mark_started(st, mark ? id : 0, attempt, started, m[i].id,
                                    m[i].attempt, m[i].started_ms);
        if (rc == STORE_OK || rc == STORE_NOTFOUND) {
            m[i] = rc == STORE_OK && mark ? (struct mark){id, attempt, started}
                                          : (struct mark){0, 0, 0};
        } else {
            log_debug("writing the start of task %" PRId64 ": %s", id, store_errmsg(st));
        }
    }
}

/* Tells the HTTP process's waiters of task id (AGENT_RESYNC_ID: all of them look again).
 * A full pipe drops it: the waiter answers at its deadline. */
static void
notify(const struct agent_env *env, int64_t id)
{
    if (write(env->notify_wr, &id, sizeof id) != (ssize_t)sizeof id)
        log_debug("notify pipe full; task %" PRId64 " waiters answer at their deadline", id);
}

/* Events may have been lost (the connection was made again): every waiter reads its
 * task again, every idle worker looks for work. */
static void
resync(const struct agent_env *env)
{
    notify(env, AGENT_RESYNC_ID);
    wake_post(env->wake, env->cfg->workers);
}

static void
take_events(const struct agent_env *env, store *st)
{
    store_event ev[64];
    size_t n;
    do {
        if (store_events(st, ev, 64, &n) != STORE_OK)
            return;
        for (size_t i = 0; i < n; i++) {
            switch (ev[i].type) {
            case STORE_EV_READY:
                wake_post(env->wake, ev[i].n > INT32_MAX ? INT32_MAX : (int)ev[i].n);
                break;
            case STORE_EV_DONE:     /* a task ended on another instance */
                notify(env, ev[i].n);
                /* of a kind with a concurrency limit (issue 13): it has a free slot,
                 * which an idle worker here may take */
                for (int k = 0; k < env->cfg->nkind_limits; k++)
                    if (strcmp(env->cfg->kind_limits[k].name, ev[i].kind) == 0)
                        wake_post(env->wake, 1);
                events_publish(ev[i].kind, ev[i].n, task_state_name(ev[i].state),
                               ev[i].attempts, ev[i].error_code, ev[i].at_ms);
                break;
            case STORE_EV_RESYNC:
                log_info("the connection to the database is back: looking at every waiting "
                         "request and for work again");
                resync(env);
                break;
            }
        }
    } while (n == 64);
}

/* Is the supervisor's loop running? Its tick is at most 100 ms old while it is; a
 * stopped or wedged supervisor must not leave the instance looking alive. */
static int
supervisor_alive(const struct agent_env *env, int64_t now)
{
    int64_t limit = env->cfg->lease_ms / 2 > 1000 ? env->cfg->lease_ms / 2 : 1000;
    return now - atomic_load(&env->sh->supervisor_tick_ms) < limit;
}

/* The heartbeat, then the rescue of lost instances. */
static void
beat(const struct agent_env *env, store *st, int64_t *fails)
{
    int64_t t0 = clock_mono_ms();
    if (!supervisor_alive(env, t0)) {
        if ((*fails)++ % 20 == 0)
            log_warn("the supervisor has not run for %lld ms: the lease is not renewed",
                     (long long)(t0 - atomic_load(&env->sh->supervisor_tick_ms)));
        return;
    }
    /* agent_beat_fail=N: the first N heartbeats fail as if the database had */
    int live = 1, was_lost = 0;
    int rc = fault_countdown("agent_beat_fail") ? STORE_UNAVAILABLE
             : store_heartbeat(st, &live, &was_lost);
    if (rc != STORE_OK) {
        if ((*fails)++ % 20 == 0)
            log_warn("heartbeat: %s (retrying; the lease runs out %lld ms after the last "
                     "one that worked)", store_errmsg(st), (long long)env->cfg->lease_ms);
        return;
    }
    if (*fails > 0)
        log_info("heartbeat works again after %lld failed tries", (long long)*fails);
    *fails = 0;
    /* the database counts the lease from when it ran the statement, after t0: by our
     * clock it holds until t0 + lease at least; a beat's period is kept in hand */
    int64_t every = store_heartbeat_every_ms(env->cfg->lease_ms);
    atomic_store(&env->sh->lease_until_ms, t0 + env->cfg->lease_ms - every);
    atomic_store(&env->sh->instances_live, live);
    if (was_lost)
        log_warn("this instance was silent past its lease (%lld ms) and was found lost: its "
                 "running tasks were handed back to be run elsewhere (their results here "
                 "will be refused); it goes on", (long long)env->cfg->lease_ms);

    store_task_ref refs[RESCUE_CAP];
    size_t n = 0;
    int lost = 0;
    rc = store_rescue(st, clock_now_ms(), refs, RESCUE_CAP, &n, &lost);
    if (rc != STORE_OK) {
        log_debug("rescue: %s", store_errmsg(st));
        return;
    }
    if (lost > 0 || n > 0)
        log_warn("%d instance(s) silent past their lease found lost; %zu running task(s) "
                 "handed back", lost, n);
    tasklog_released(st, refs, n, 0, 0);    /* their events and counters */
    int requeued = 0;
    for (size_t i = 0; i < n; i++) {
        if (task_state_terminal(refs[i].state))
            notify(env, refs[i].id);
        else
            requeued++;
    }
    wake_post(env->wake, requeued);
}

static void
leave(store *st)
{
    for (int i = 0; st != NULL && i < LEAVE_TRIES; i++) {
        if (store_leave(st) == STORE_OK) {
            log_debug("left the store");
            return;
        }
        clock_sleep_ms(200);
    }
    log_warn("could not leave the store (%s): the other instances find it lost after its "
             "lease", st != NULL ? store_errmsg(st) : "no connection");
}

void
agent_main(const struct agent_env *env)
{
    log_set_role("agent");
    prctl(PR_SET_NAME, "warmpool-agent");
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != env->supervisor)
        _exit(0);                       /* the supervisor died before the line above */
    /* only the supervisor stops it (AGENT_STOP): a drain needs the lease until the end */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGUSR1, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);

    /* completion callbacks: deliverer threads, when callbacks may be submitted here */
    if (env->cfg->ncallback_allow > 0)
        callbacks_start(env->cfg);

    int64_t every = store_heartbeat_every_ms(env->cfg->lease_ms);
    int64_t next_beat = 0, next_open = 0, fails = 0, open_fails = 0, next_sched = 0,
            next_mark = 0;
    static struct mark marks[MARK_SLOTS];
    struct schedule_state sched = {{0}};
    store *st = NULL;
    for (;;) {
        int64_t now = clock_mono_ms();
        if (st == NULL && now >= next_open) {
            char err[512];
            st = store_open(env->cfg->db_path, STORE_DURABLE, (int)every, err, sizeof err);
            if (st == NULL) {
                if (open_fails++ % 20 == 0)
                    log_warn("opening the database: %s (retrying)", err);
                next_open = now + RETRY_OPEN_MS;
            } else {
                if (open_fails > 0)
                    log_info("the database can be opened again");
                open_fails = 0;
                if (store_listen(st) != STORE_OK)
                    log_warn("listening for other instances: %s (retrying)", store_errmsg(st));
                resync(env);            /* what happened while no agent listened */
                next_beat = now;
            }
        }
        if (st != NULL && now >= next_beat) {
            beat(env, st, &fails);
            next_beat = clock_mono_ms() + every;
        }
        /* periodic tasks (--schedule): none are submitted once a drain has begun */
        if (st != NULL && env->cfg->nschedules > 0 && !slots_draining(env->sh) &&
            clock_mono_ms() >= next_sched)
            next_sched = schedule_run(&sched, env->cfg, st, env->wake);
        if (st != NULL && store_marks_started(st) && clock_mono_ms() >= next_mark) {
            mark_held(env, st, marks);
            next_mark = clock_mono_ms() + MARK_EVERY_MS;
        }
        now = clock_mono_ms();
        int64_t until = st != NULL ? next_beat : next_open;
        if (st != NULL && store_marks_started(st) && next_mark < until)
            until = next_mark;
        if (st != NULL && env->cfg->nschedules > 0 && next_sched < until)
            until = next_sched;
        int timeout = until > now ? (int)(until - now) : 0;
        struct pollfd p[2] = {{.fd = env->ctl_fd, .events = POLLIN},
                              {.fd = st != NULL ? store_events_fd(st) : -1, .events = POLLIN}};
        if (poll(p, 2, timeout) < 0 && errno != EINTR)
            log_warn("poll: %s", strerror(errno));
        if (p[0].revents != 0) {
            char c = 0;
            ssize_t r = read(env->ctl_fd, &c, 1);
            if (r == 1 && c == AGENT_STOP) {
                leave(st);
                store_close(st);
                _exit(0);
            }
            if (r == 0) {               /* the supervisor is gone: so is the instance */
                store_close(st);
                _exit(0);
            }
        }
        /* the events (none is waited for: it reads what came), and a connection to make
         * again (store_events does; its first event is then RESYNC, also when a heartbeat
         * made it again) */
        if (st != NULL)
            take_events(env, st);
    }
}
