/* tasklog.h -- a task's lifecycle as the workers and the supervisor see it: in the log,
 * at debug (started, finished, retried; timeout and worker lost), as events for
 * GET /v1/events (common/events.h) and in the counters of GET /metrics
 * (common/metrics.h). Submissions and cancels are the HTTP process's (api/). Each
 * record names the task, its kind and the worker's pid, and never holds the task's
 * input, result or error message (which a kind may build from the input): only the
 * error code. */
#ifndef WP_TASKLOG_H
#define WP_TASKLOG_H

#include "storage/store.h"

#include <stddef.h>
#include <sys/types.h>

/* A worker claimed t (attempt t->attempts). */
void tasklog_started(const store_task *t);
/* A worker recorded the outcome o of t: finished (o->state terminal) or retried
 * (o->state pending). recorded 0: the outcome was dropped (the task was taken away). */
void tasklog_outcome(const store_task *t, const store_outcome *o, int recorded);
/* The supervisor handed back the n tasks of a dead worker (refs from
 * store_release_lost): timeout when it killed the worker for running too long, else
 * worker lost. Also the tasks that a previous run left running (worker 0, refs from
 * store_start's report) and those of lost instances that the agent rescued (worker 0). st is open; it reads each task's kind. */
void tasklog_released(store *st, const store_task_ref *refs, size_t n, pid_t worker,
                      int timed_out);

#endif
