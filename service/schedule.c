/* schedule.c -- periodic tasks: the agent's turn that submits the due times of every
 * --schedule once (see schedule.h). */
#include "service/schedule.h"
#include "common/clock.h"
#include "common/events.h"
#include "common/fault.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/wake.h"

#include <inttypes.h>
#include <stdio.h>

#define RETRY_MS 1000           /* a submission that failed: again after this */

/* Fault point: schedule_clock_speed=N makes the scheduler's clock N times the real one */
static int64_t
speed(void)
{
    long n = fault_value("schedule_clock_speed");
    return n > 1 ? n : 1;
}

int64_t
schedule_clock_ms(void)
{
    return clock_now_ms() * speed();
}

void
schedule_key(const char *name, int64_t due_s, char *out, size_t outlen)
{
    snprintf(out, outlen, "schedule:%s:%" PRId64, name, due_s / 60);
}

/* One due time as a task. STORE_OK (submitted, or found submitted already) or the
 * error. */
static int
submit(const struct config *cfg, const struct config_schedule *sc, int64_t due_s, store *st,
       struct wake *wake)
{
    char key[128];
    schedule_key(sc->name, due_s, key, sizeof key);
    store_new_task nt = {.kind = sc->kind, .input = sc->input, .priority = 0,
                         .max_attempts = 1, .timeout_ms = cfg->task_timeout_ms,
                         .idem_key = key};
    store_task t = {0};
    /* fault point schedule_submit_fail=N: the first N submissions fail as if the database
     * were out of reach */
    int rc = fault_countdown("schedule_submit_fail") ? STORE_UNAVAILABLE
             : store_insert(st, &nt, clock_now_ms(), &t);
    if (rc == STORE_OK) {
        events_publish(t.kind, t.id, "pending", t.attempts, NULL, t.created_at_ms);
        metrics_task_submitted(t.kind);
        wake_post(wake, 1);
        log_event(LOG_INFO, "schedule submitted a task", LOG_STR("schedule", sc->name),
                  LOG_INT("due", due_s), LOG_INT("task_id", t.id), LOG_STR("kind", t.kind));
    } else if (rc == STORE_EXISTS) {
        log_event(LOG_DEBUG, "schedule: due time already submitted",
                  LOG_STR("schedule", sc->name), LOG_INT("due", due_s),
                  LOG_INT("task_id", t.id));
        rc = STORE_OK;
    } else {
        log_warn("schedule %s: submitting the task due at %" PRId64 ": %s (retrying)",
                 sc->name, due_s, t.kind == NULL && rc == STORE_UNAVAILABLE &&
                 fault_value("schedule_submit_fail") > 0 ? "fault point" : store_errmsg(st));
    }
    store_task_clear(&t);
    return rc;
}

int64_t
schedule_run(struct schedule_state *ss, const struct config *cfg, store *st,
             struct wake *wake)
{
    int64_t now_ms = schedule_clock_ms(), mono = clock_mono_ms(), k = speed();
    int64_t now_s = now_ms / 1000, next = mono + 60000;
    for (int i = 0; i < cfg->nschedules; i++) {
        const struct config_schedule *sc = &cfg->schedules[i];
        if (ss->due_s[i] == 0) {            /* first turn: the most recent one, replayed */
            int64_t prev = cron_prev(&sc->cron, now_s);
            ss->due_s[i] = prev > 0 ? prev : cron_next(&sc->cron, now_s);
        }
        if (ss->due_s[i] < 0)
            continue;                       /* never (cron_parse refuses those) */
        if (ss->due_s[i] <= now_s) {
            /* of several missed due times, only the latest is submitted */
            int64_t latest = cron_prev(&sc->cron, now_s);
            if (latest > ss->due_s[i])
                ss->due_s[i] = latest;
            if (submit(cfg, sc, ss->due_s[i], st, wake) != STORE_OK) {
                if (mono + RETRY_MS < next)
                    next = mono + RETRY_MS;
                continue;
            }
            ss->due_s[i] = cron_next(&sc->cron, now_s);
        }
        if (ss->due_s[i] < 0)
            continue;
        /* real milliseconds until it comes due, rounded up */
        int64_t wait = (ss->due_s[i] * 1000 - now_ms + k - 1) / k;
        if (mono + wait < next)
            next = mono + wait;
    }
    return next;
}
