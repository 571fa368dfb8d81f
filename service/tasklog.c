/* tasklog.c -- the task lifecycle records of workers and the supervisor (see tasklog.h):
 * log lines, events and counters. Kept apart from worker.c and supervisor.c so that
 * each of them reports a change with one call. */
#include "service/tasklog.h"
#include "common/clock.h"
#include "common/events.h"
#include "common/log.h"
#include "common/metrics.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What became of an attempt, for warmpool_task_attempts_total: the supervisor's two
 * causes (and an exec kind's worker reporting the same) first, then the kind's error. */
static enum metrics_outcome
outcome_of(enum task_state state, const char *code)
{
    if (state == TASK_SUCCEEDED)
        return METRICS_OUT_SUCCEEDED;
    if (code != NULL && strcmp(code, "timeout") == 0)
        return METRICS_OUT_TIMEOUT;
    if (code != NULL && strcmp(code, "worker_lost") == 0)
        return METRICS_OUT_WORKER_LOST;
    return state == TASK_PENDING ? METRICS_OUT_RETRIED : METRICS_OUT_FAILED;
}

/* The events and counters of an attempt that ended: the task is now `state` (pending
 * again, or terminal), after running run_ms (< 0: unknown). */
static void
observe_end(const char *kind, int64_t id, enum task_state state, int attempts,
            const char *code, int64_t at_ms, int64_t run_ms)
{
    events_publish(kind, id, task_state_name(state), attempts,
                   state == TASK_SUCCEEDED ? NULL : code, at_ms);
    metrics_task_attempt(kind, outcome_of(state, code), run_ms);
    if (state == TASK_SUCCEEDED)
        metrics_task_finished(kind, METRICS_END_SUCCEEDED);
    else if (state == TASK_FAILED)
        metrics_task_finished(kind, METRICS_END_FAILED);
}

void
tasklog_started(const store_task *t)
{
    events_publish(t->kind, t->id, "running", t->attempts, NULL, t->started_at_ms);
    metrics_task_started(t->kind, t->attempts, t->started_at_ms - t->created_at_ms);
    log_event(LOG_DEBUG, "task started", LOG_INT("task_id", t->id), LOG_STR("kind", t->kind),
              LOG_INT("worker_pid", getpid()), LOG_INT("attempt", t->attempts),
              LOG_INT("max_attempts", t->max_attempts));
}

void
tasklog_outcome(const store_task *t, const store_outcome *o, int recorded)
{
    if (!recorded)
        return;                         /* worker.c warns about the dropped outcome */
    int64_t ms = t->started_at_ms > 0 && o->now_ms >= t->started_at_ms
                     ? o->now_ms - t->started_at_ms : 0;
    observe_end(t->kind, t->id, o->state, t->attempts, o->error_code, o->now_ms, ms);
    if (o->state == TASK_PENDING)
        log_event(LOG_DEBUG, "task retried", LOG_INT("task_id", t->id), LOG_STR("kind", t->kind),
                  LOG_INT("worker_pid", getpid()), LOG_INT("attempt", t->attempts),
                  LOG_INT("duration_ms", ms), LOG_STR("error_code", o->error_code),
                  LOG_INT("retry_in_ms", o->run_after_ms - o->now_ms));
    else
        log_event(LOG_DEBUG, "task finished", LOG_INT("task_id", t->id),
                  LOG_STR("kind", t->kind), LOG_INT("worker_pid", getpid()),
                  LOG_STR("state", task_state_name(o->state)), LOG_INT("attempt", t->attempts),
                  LOG_INT("duration_ms", ms),
                  LOG_STR("error_code", o->state == TASK_SUCCEEDED ? NULL : o->error_code));
}

void
tasklog_released(store *st, const store_task_ref *refs, size_t n, pid_t worker, int timed_out)
{
    const char *code = timed_out ? "timeout" : "worker_lost";
    for (size_t i = 0; i < n; i++) {
        /* a dead worker's task: rare, so one read each for its kind and attempt */
        if (refs[i].not_started) {      /* held in a batch, never run: no attempt ended */
            log_event(LOG_DEBUG, "task handed back", LOG_INT("task_id", refs[i].id),
                      LOG_INT("worker_pid", worker));
            continue;
        }
        store_task t;
        int known = store_get(st, refs[i].id, &t) == STORE_OK;
        int64_t now = clock_now_ms();
        if (known)
            observe_end(t.kind, t.id, refs[i].state, t.attempts, code, now,
                        t.started_at_ms > 0 && now >= t.started_at_ms ? now - t.started_at_ms
                                                                      : -1);
        log_event(LOG_DEBUG, timed_out ? "task timeout" : "task worker lost",
                  LOG_INT("task_id", refs[i].id), LOG_STR("kind", known ? t.kind : NULL),
                  LOG_INT("worker_pid", worker),
                  LOG_STR("state", task_state_name(refs[i].state)),
                  LOG_INT("attempt", known ? t.attempts : 0));
        if (known)
            store_task_clear(&t);
    }
}
