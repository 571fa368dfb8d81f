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
#include <sys/stat.h>
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
};

/* Inserts the jobs of one group. Returns STORE_OK, or the error that aborts the group. */
static int
insert_group(struct writer *w, struct writer_job *jobs, int64_t now_ms, size_t *inserted)
{
    *inserted = 0;
    for (struct writer_job *j = jobs; j != NULL; j = j->next) {
        j->status = STORE_OK;
        for (size_t i = 0; i < j->n; i++) {
            int rc = store_insert(w->st, &j->tasks[i], now_ms, &j->out[i]);
            if (rc == STORE_EXISTS) {           /* idempotent repeat: nothing inserted */
                j->status = STORE_EXISTS;
                continue;
            }
            if (rc != STORE_OK)
                return rc;
            (*inserted)++;
        }
    }
    return STORE_OK;
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

/* Housekeeping between groups: the WAL's size four times a second, and expired tasks
 * (--retention) when the queue is empty, or every 10 s under constant load. */
#define PURGE_BATCH 500
#define MAINTAIN_EVERY_MS 250
#define WAL_CHECK_BYTES (32LL * 1024 * 1024)

static int
queue_empty(struct writer *w)
{
    pthread_mutex_lock(&w->mu);
    int empty = w->head == NULL;
    pthread_mutex_unlock(&w->mu);
    return empty;
}

/* --retention: deletes expired tasks, PURGE_BATCH per transaction, stopping as soon
 * as submissions are queued. */
static void
purge_expired(struct writer *w)
{
    int64_t keep = w->ctx->cfg->retention_ms;
    if (keep <= 0)
        return;
    int deleted, total = 0;
    do {
        if (store_purge(w->st, clock_now_ms() - keep, PURGE_BATCH, &deleted) != STORE_OK) {
            log_warn("retention: %s", store_errmsg(w->st));
            break;
        }
        total += deleted;
    } while (deleted == PURGE_BATCH && queue_empty(w));
    if (total > 0)
        log_debug("retention: deleted %d finished tasks", total);
}

/* Under constant load SQLite's own (passive) checkpoints cannot reset the WAL:
 * someone is always reading it, and at several tasks a second per worker it grows
 * by ~25 KB a task. Past WAL_CHECK_BYTES, copy it back and truncate it (this thread is
 * the only checkpointer: every other connection has autocheckpoint off, because a
 * checkpoint running elsewhere makes this one fail at once). A stat() four times a
 * second is all this costs when nothing is due. */
static void
limit_wal(struct writer *w)
{
    char wal[4200];
    struct stat st;
    snprintf(wal, sizeof wal, "%s-wal", w->ctx->cfg->db_path);
    if (stat(wal, &st) != 0 || st.st_size <= WAL_CHECK_BYTES)
        return;
    int64_t frames = 0, t0 = clock_mono_ms();
    if (store_checkpoint(w->st, &frames) == STORE_OK)
        log_debug("checkpoint: WAL of %lld MB copied back and truncated in %lld ms",
                  (long long)(st.st_size >> 20), (long long)(clock_mono_ms() - t0));
    else
        log_debug("checkpoint postponed: %s", store_errmsg(w->st));
}

static void *
writer_main(void *arg)
{
    struct writer *w = arg;
    int64_t next_maintenance = clock_mono_ms() + MAINTAIN_EVERY_MS;
    int64_t last_purge = clock_mono_ms();
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->head == NULL && !w->stopping) {
            if (clock_mono_ms() >= next_maintenance) {
                pthread_mutex_unlock(&w->mu);
                if (clock_mono_ms() >= last_purge + 1000) {
                    purge_expired(w);
                    last_purge = clock_mono_ms();
                }
                limit_wal(w);
                pthread_mutex_lock(&w->mu);
                next_maintenance = clock_mono_ms() + MAINTAIN_EVERY_MS;
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
        pthread_mutex_lock(&w->mu);
        if (clock_mono_ms() >= next_maintenance) {
            /* under constant load the queue is never empty: the WAL still needs a look,
             * and retention runs too if it has waited ten periods for a quiet moment */
            pthread_mutex_unlock(&w->mu);
            limit_wal(w);
            if (clock_mono_ms() >= last_purge + 10000) {
                purge_expired(w);
                last_purge = clock_mono_ms();
            }
            pthread_mutex_lock(&w->mu);
            next_maintenance = clock_mono_ms() + MAINTAIN_EVERY_MS;
        }
    }
    pthread_mutex_unlock(&w->mu);
    /* writer_exit_pause_ms: the window between leaving the loop and being joined */
    fault_pause("writer_exit_pause_ms");
    return NULL;
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
    w->st = store_open(ctx->cfg->db_path, STORE_SYNC_FULL, 5000, err, errlen);
    if (w->st == NULL) {
        free(w);
        return NULL;
    }
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
