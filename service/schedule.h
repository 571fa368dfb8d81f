/* schedule.h -- periodic tasks (--schedule, issue 13): each due time of each schedule
 * is submitted as one task, exactly once, whatever the number of instances and
 * restarts.
 *
 * The agent (service/agent.c) runs it: it is the instance's process with a database
 * connection and a loop (the supervisor never opens the database). Every instance's
 * agent submits every due time; the task's idempotency key is the due time,
 * "schedule:NAME:<minutes since the epoch>", so the store keeps the first and the
 * others find it there (STORE_EXISTS), through the same insert path as
 * POST /v1/tasks with an Idempotency-Key.
 *
 * Missed due times (warmpool down, the database out of reach) are not replayed, except
 * the most recent one: at start, and after a gap, a schedule submits its latest due
 * time at or before now (a no-op if it was submitted already), then waits for the
 * next one. */
#ifndef WP_SCHEDULE_H
#define WP_SCHEDULE_H

#include "service/config.h"
#include "storage/store.h"

#include <stdint.h>

struct wake;

struct schedule_state {
    int64_t due_s[CONFIG_MAX_SCHEDULES];    /* the next due time to submit; 0: not yet
                                             * computed (the first turn) */
};

/* The scheduler's clock, in ms since the epoch: the real one, or, in test builds, one
 * that runs N times as fast (fault point schedule_clock_speed=N: with N = 60 a minute
 * passes every second, the same on every process and instance, so `* * * * *` comes
 * due every second and restarts keep their place). */
int64_t schedule_clock_ms(void);

/* Submits every due time that has come (at most one per schedule and call) on st.
 * Returns the monotonic time (clock_mono_ms) at which to call again. */
int64_t schedule_run(struct schedule_state *ss, const struct config *cfg, store *st,
                     struct wake *wake);

/* The idempotency key of a schedule's due time (seconds since the epoch). */
void schedule_key(const char *name, int64_t due_s, char *out, size_t outlen);

#endif
