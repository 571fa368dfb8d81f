/* writer.c -- group commit: one thread inserts every queued submission in one
 * transaction, so one fsync covers all the requests that arrived meanwhile.
 *
 * A request handler suspends its connection, then queues a job; the writer takes
 * the whole queue, runs BEGIN IMMEDIATE, inserts, COMMIT, wakes the workers, and
 * resumes each connection, whose handler then answers 202. So a 202 is only ever
 * sent for a committed task, and the disk's fsync rate (about 700/s here) bounds
 * the number of groups per second, not the number of tasks. */
#include "api/internal.h"
#include "common/clock.h"
#include "common/fault.h"
#include "common/wake.h"
#include "common/log.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct writer {
    struct api_ctx *ctx;
    store *st;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct writer_job *head, *tail;     /* FIFO; guarded by mu */
    int stopping;                       /* writer_stop() asked; guarded by mu */
    int closed;                         /* the thread left its loop: no job is taken any
                                         * more (set by the thread); guarded by mu */
    int joined;                         /* writer_stop() joined the thread; guarded by mu */
    /* retention (writer thread only) */
    int purge_batch;                    /* tasks per purge step, adapted to its time */
    int purge_backlog;                  /* the last step was full: more are expired */
    int64_t last_purge_ms;              /* monotonic */
    int64_t purge_run, purge_run_start_ms;  /* deleted since the backlog began */
};

/* Inserts the jobs of one group, all in one store_insert_batch() (one round trip to a
 * database server). Returns STORE_OK, or the error that aborts the group. */
static int
insert_group(struct writer *w, struct writer_job *jobs, int64_t now_ms, size_t *inserted)
{
    *inserted = 0;
    size_t total = 0;
    for (struct writer_job *j = jobs; j != NULL; j = j->next)
        total += j->n;
    store_new_task *nt = malloc(total * sizeof *nt);
    store_task *out = calloc(total, sizeof *out);
    int *status = malloc(total * sizeof *status);
    if (nt == NULL || out == NULL || status == NULL) {
        free(nt);
        free(out);
        free(status);
        return STORE_ERR;
    }
    size_t k = 0;
    for (struct writer_job *j = jobs; j != NULL; j = j->next)
        for (size_t i = 0; i < j->n; i++)
            nt[k++] = j->tasks[i];
    int rc = store_insert_batch(w->st, nt, total, now_ms, out, status);
    if (rc == STORE_OK) {
        k = 0;
        for (struct writer_job *j = jobs; j != NULL; j = j->next) {
            j->status = STORE_OK;
            for (size_t i = 0; i < j->n; i++, k++) {
                j->out[i] = out[k];             /* the strings move to the job */
                if (status[k] == STORE_EXISTS)  /* idempotent repeat: nothing inserted */
                    j->status = STORE_EXISTS;
                else
                    (*inserted)++;
            }
        }
    }
    free(nt);
    free(out);
    free(status);
    return rc;
}

static void
clear_outputs(struct writer_job *jobs)
{
    for (struct writer_job *j = jobs; j != NULL; j = j->next)
        for (size_t i = 0; i < j->n; i++)
            store_task_clear(&j->out[i]);
}

/* --max-pending: refuses (WRITER_QUEUE_FULL) each job that would take the number of
 * pending tasks past the cap; those jobs are unlinked from the group. */
static struct writer_job *
admit(struct writer *w, struct writer_job *jobs)
{
    int64_t cap = w->ctx->cfg->max_pending;
    if (cap <= 0)
        return jobs;
    int64_t pending = store_count_pending(w->st);   /* a read: no lock held after */
    struct writer_job *keep = NULL, **tail = &keep, *next;
    for (struct writer_job *j = jobs; j != NULL; j = next) {
        next = j->next;
        if (pending >= 0 && pending + (int64_t)j->n > cap) {
            j->status = WRITER_QUEUE_FULL;
            j->next = NULL;
            MHD_resume_connection(j->conn);
            continue;
        }
        pending += (int64_t)j->n;
        *tail = j;
        tail = &j->next;
    }
    *tail = NULL;
    return keep;
}

static void
run_group(struct writer *w, struct writer_job *jobs)
{
    size_t inserted = 0;
    jobs = admit(w, jobs);
    if (jobs == NULL)
        return;
    int rc = store_begin(w->st);
    if (rc == STORE_OK) {
        rc = insert_group(w, jobs, clock_now_ms(), &inserted);
        rc = rc == STORE_OK ? store_commit(w->st) : rc;
        if (rc != STORE_OK)
            store_rollback(w->st);              /* nothing half-written */
    }
    if (rc != STORE_OK) {
        clear_outputs(jobs);
        for (struct writer_job *j = jobs; j != NULL; j = j->next) {
            j->status = rc;
            snprintf(j->errmsg, sizeof j->errmsg, "%s", store_errmsg(w->st));
        }
        inserted = 0;
    }
    if (inserted > 0)                   /* GET /v1/events and /metrics */
        api_events_submitted(jobs);
    /* one token per task, each wakes one idle worker; wake.h caps what is pending */
    if (inserted > 0)
        wake_post(w->ctx->cfg->wake, inserted > INT32_MAX ? INT32_MAX : (int)inserted);
    struct writer_job *next;
    for (struct writer_job *j = jobs; j != NULL; j = next) {
        next = j->next;                 /* j may be freed once its request ends */
        MHD_resume_connection(j->conn);
    }
}

/* Housekeeping between groups: the store's maintenance four times a second, and
 * expired tasks (--retention), see purge_step(). */
#define MAINTAIN_EVERY_MS 250

/* --retention deletes expired tasks in purge steps: one short write transaction each
 * (store_purge reads only the tasks it deletes), whose batch adapts so that a step
 * holds the write lock about PURGE_STEP_US. Idle, steps follow each other, checking
 * the queue in between, until none is left; under load, one step between two groups
 * at most every PURGE_LOAD_EVERY_MS while some are left, so a group waits behind one
 * step at most. With nothing left, it looks again every PURGE_CHECK_EVERY_MS. */
#define PURGE_STEP_US 4000
#define PURGE_BATCH_MIN 16
#define PURGE_BATCH_MAX 4096
#define PURGE_LOAD_EVERY_MS 20
#define PURGE_CHECK_EVERY_MS 1000
#define PURGE_LOG_AT 10000          /* a backlog this big is worth an info line */

static int64_t
mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Is a purge step due? idle: the queue is empty */
static int
purge_due(const struct writer *w, int idle)
{
    if (w->ctx->cfg->retention_ms <= 0)
        return 0;
    int64_t every = !w->purge_backlog ? PURGE_CHECK_EVERY_MS : idle ? 0 : PURGE_LOAD_EVERY_MS;
    return clock_mono_ms() >= w->last_purge_ms + every;
}

/* One purge step. */
static void
purge_step(struct writer *w)
{
    int deleted = 0, batch = w->purge_batch;
    int64_t t0 = mono_us();
    int rc = store_purge(w->st, clock_now_ms() - w->ctx->cfg->retention_ms, batch, &deleted);
    int64_t took = mono_us() - t0;
    w->last_purge_ms = clock_mono_ms();
    if (rc != STORE_OK) {
        if (rc != STORE_BUSY)
            log_warn("retention: %s", store_errmsg(w->st));
        w->purge_backlog = 0;           /* try again at the next check */
        return;
    }
    /* aim at PURGE_STEP_US: halve a step that took too long, grow a full one that was
     * quick */
    if (took > PURGE_STEP_US && batch > PURGE_BATCH_MIN)
        w->purge_batch = batch / 2;
    else if (deleted == batch && took < PURGE_STEP_US / 2 && batch < PURGE_BATCH_MAX)
        w->purge_batch = batch * 2;
    if (deleted > 0 && w->purge_run == 0)
        w->purge_run_start_ms = w->last_purge_ms;
    w->purge_run += deleted;
    w->purge_backlog = deleted == batch;
    if (!w->purge_backlog && w->purge_run > 0) {
        int64_t secs = w->last_purge_ms - w->purge_run_start_ms;
        if (w->purge_run >= PURGE_LOG_AT)
            log_info("retention: deleted %lld expired tasks in %.1f s",
                     (long long)w->purge_run, (double)secs / 1000);
        else
            log_debug("retention: deleted %lld expired tasks", (long long)w->purge_run);
        w->purge_run = 0;
    }
}

/* The store's housekeeping (store_maintain: SQLite truncates a WAL that grew too
 * large), between groups: this thread's connection is the instance's maintainer. */
static void
maintain(struct writer *w)
{
    char note[256];
    if (store_maintain(w->st, note, sizeof note) != STORE_OK)
        log_debug("maintenance postponed: %s", store_errmsg(w->st));
    else if (note[0] != '\0')
        log_debug("%s", note);
}

static void *
writer_main(void *arg)
{
    struct writer *w = arg;
    int64_t next_maintenance = clock_mono_ms() + MAINTAIN_EVERY_MS;
    w->last_purge_ms = clock_mono_ms() - PURGE_CHECK_EVERY_MS;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->head == NULL && !w->stopping) {
            if (clock_mono_ms() >= next_maintenance) {
                pthread_mutex_unlock(&w->mu);
                maintain(w);
                pthread_mutex_lock(&w->mu);
                next_maintenance = clock_mono_ms() + MAINTAIN_EVERY_MS;
                continue;
            }
            if (purge_due(w, 1)) {
                /* idle: one step, then look at the queue again */
                pthread_mutex_unlock(&w->mu);
                purge_step(w);
                pthread_mutex_lock(&w->mu);
                continue;
            }
            struct timespec until;          /* wake for the next maintenance */
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += MAINTAIN_EVERY_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec += 1;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&w->cv, &w->mu, &until);
        }
        if (w->head == NULL) {
            /* stopping, and the queue is empty. Closed under the same lock that found
             * it empty: a writer_submit() from now on is answered "shutting down"
             * instead of queueing a job nobody commits, whose suspended connection
             * would make MHD_stop_daemon() panic (issue 8) */
            w->closed = 1;
            break;
        }
        struct writer_job *jobs = w->head;
        w->head = w->tail = NULL;
        pthread_mutex_unlock(&w->mu);
        run_group(w, jobs);
        /* under constant load the queue is never empty: maintenance still gets its
         * turn, and retention a step now and then */
        if (clock_mono_ms() >= next_maintenance) {
            maintain(w);
            next_maintenance = clock_mono_ms() + MAINTAIN_EVERY_MS;
        }
        if (purge_due(w, 0))
            purge_step(w);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    /* writer_exit_pause_ms: the window between leaving the loop and being joined */
    fault_pause("writer_exit_pause_ms");
    return NULL;
}

/* store_explain()'s callback: keeps the "connection" line (the durability setting). */
static void
connection_setting(void *arg, const char *name, const char *plan)
{
    if (strcmp(name, "connection") == 0) {
        snprintf(arg, 128, "%s", plan);
        ((char *)arg)[strcspn(arg, "\n")] = '\0';
    }
}

struct writer *
writer_start(struct api_ctx *ctx, char *err, size_t errlen)
{
    struct writer *w = calloc(1, sizeof *w);
    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->ctx = ctx;
    w->purge_batch = 256;
    int durability = ctx->cfg->submit_relaxed ? STORE_RELAXED : STORE_DURABLE;
    w->st = store_open(ctx->cfg->db_path, durability | STORE_MAINTAINER, 5000, err, errlen);
    if (w->st == NULL) {
        free(w);
        return NULL;
    }
    /* read the connection's setting back from the store, so the log says what a 202
     * is worth (tests check that --durability reaches the database) */
    char conn[128] = "";
    store_explain(w->st, connection_setting, conn);
    log_info("submissions: --durability %s (%s)", ctx->cfg->submit_relaxed ? "normal" : "full",
             conn[0] != '\0' ? conn : "setting unknown");
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        snprintf(err, errlen, "cannot start the writer thread");
        store_close(w->st);
        free(w);
        return NULL;
    }
    return w;
}

void
writer_submit(struct writer *w, struct writer_job *job)
{
    job->next = NULL;
    /* writer_submit_pause_ms: a handler that passed the drain check comes late */
    fault_pause("writer_submit_pause_ms");
    pthread_mutex_lock(&w->mu);
    if (w->closed) {
        /* a handler that passed the drain check just before the drain began */
        pthread_mutex_unlock(&w->mu);
        job->status = WRITER_SHUTTING_DOWN;
        MHD_resume_connection(job->conn);
        return;
    }
    if (w->tail != NULL)
        w->tail->next = job;
    else
        w->head = job;
    w->tail = job;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void
writer_stop(struct writer *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    int join = !w->joined;
    w->stopping = 1;
    w->joined = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (join)
        pthread_join(w->thread, NULL);
}

void
writer_free(struct writer *w)
{
    if (w == NULL)
        return;
    writer_stop(w);
    store_close(w->st);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}
