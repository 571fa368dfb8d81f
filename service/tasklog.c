/* tasklog.c -- the task lifecycle records of workers and the supervisor (see tasklog.h).
 * Kept apart from worker.c and supervisor.c so that each of them logs with one call. */
#include "service/tasklog.h"
#include "common/log.h"

#include <unistd.h>

void
tasklog_started(const store_task *t)
{
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
    if (log_get_level() < LOG_DEBUG)
        return;                         /* not even the reads below */
    for (size_t i = 0; i < n; i++) {
        store_task t;
        int known = store_get(st, refs[i].id, &t) == STORE_OK;
        log_event(LOG_DEBUG, timed_out ? "task timeout" : "task worker lost",
                  LOG_INT("task_id", refs[i].id), LOG_STR("kind", known ? t.kind : NULL),
                  LOG_INT("worker_pid", worker),
                  LOG_STR("state", task_state_name(refs[i].state)),
                  LOG_INT("attempt", known ? t.attempts : 0));
        if (known)
            store_task_clear(&t);
    }
}
