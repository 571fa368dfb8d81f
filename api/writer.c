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
#include "common/log.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct writer {
    struct api_ctx *ctx;
    store *st;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct writer_job *head, *tail;     /* FIFO; guarded by mu */
    int stopping;                       /* guarded by mu */
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

static void
run_group(struct writer *w, struct writer_job *jobs)
{
    size_t inserted = 0;
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
    if (inserted > 0) {
        /* one token per task, up to one per worker: each wakes one idle worker */
        uint64_t n = inserted < (size_t)w->ctx->cfg->nworkers ? inserted
                                                               : (uint64_t)w->ctx->cfg->nworkers;
        if (write(w->ctx->cfg->wake_fd, &n, sizeof n) != (ssize_t)sizeof n)
            log_warn("waking workers failed; they will look again within a second");
    }
    struct writer_job *next;
    for (struct writer_job *j = jobs; j != NULL; j = next) {
        next = j->next;                 /* j may be freed once its request ends */
        MHD_resume_connection(j->conn);
    }
}

static void *
writer_main(void *arg)
{
    struct writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->head == NULL && !w->stopping)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->head == NULL)
            break;                      /* stopping, and the queue is empty */
        struct writer_job *jobs = w->head;
        w->head = w->tail = NULL;
        pthread_mutex_unlock(&w->mu);
        run_group(w, jobs);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
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
    pthread_mutex_lock(&w->mu);
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
    w->stopping = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    store_close(w->st);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}
