/* waiters.c -- GET /v1/tasks/{id}?wait=S without polling the database.
 *
 * A request for a task that is not yet terminal suspends its connection and
 * registers here. Workers send the id of each task they bring to a terminal state
 * on a pipe (created by the supervisor before forking); one thread reads
 * it and resumes the connections waiting on that id. The same thread ends waits
 * whose deadline passed, on a 25 ms tick. A resumed request reads its task once
 * and answers. A lost datagram (the socket buffer was full) only means that waiter
 * answers at its deadline with the then-current state, which is what ?wait says.
 * With other instances sharing the store, the agent (service/agent.c) writes the ids
 * of tasks finished there too, and id 0 when events may have been lost (a connection
 * made again): then every waiter is resumed, reads its task, and one whose task is not
 * done before its deadline is held again. */
#include "api/internal.h"
#include "common/clock.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_BUCKETS 1024
#define TICK_MS 25

struct waiters {
    struct api_ctx *ctx;
    pthread_t thread;
    pthread_mutex_t mu;
    struct waiter *buckets[N_BUCKETS];  /* guarded by mu */
    size_t count;                       /* guarded by mu */
    int stopped;                        /* guarded by mu: no more registrations */
    int stop_pipe[2];
};

static size_t
bucket_of(int64_t id)
{
    return (size_t)((uint64_t)id * 11400714819323198485ULL >> 54);  /* top 10 bits */
}

/* Unlinks w from its bucket; mu held. */
static void
unlink_locked(struct waiters *ws, struct waiter *w)
{
    struct waiter **pp = &ws->buckets[bucket_of(w->task_id)];
    while (*pp != NULL && *pp != w)
        pp = &(*pp)->next;
    if (*pp == w) {
        *pp = w->next;
        ws->count--;
    }
    w->next = NULL;
    w->active = 0;
}

int
waiters_add(struct waiters *ws, struct waiter *w)
{
    pthread_mutex_lock(&ws->mu);
    if (ws->stopped) {
        pthread_mutex_unlock(&ws->mu);
        return -1;
    }
    /* suspend before anyone can find w, so a wake never precedes the suspend */
    MHD_suspend_connection(w->conn);
    size_t b = bucket_of(w->task_id);
    w->next = ws->buckets[b];
    ws->buckets[b] = w;
    w->active = 1;
    ws->count++;
    pthread_mutex_unlock(&ws->mu);
    return 0;
}

void
waiters_wake(struct waiters *ws, int64_t task_id)
{
    pthread_mutex_lock(&ws->mu);
    struct waiter **pp = &ws->buckets[bucket_of(task_id)];
    while (*pp != NULL) {
        struct waiter *w = *pp;
        if (w->task_id != task_id) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        ws->count--;
        w->next = NULL;
        w->active = 0;
        MHD_resume_connection(w->conn);
    }
    pthread_mutex_unlock(&ws->mu);
}

/* Resumes every waiter whose deadline is before now (all of them if now < 0). */
static void
expire(struct waiters *ws, int64_t now)
{
    pthread_mutex_lock(&ws->mu);
    if (ws->count > 0) {
        for (size_t b = 0; b < N_BUCKETS; b++) {
            struct waiter **pp = &ws->buckets[b];
            while (*pp != NULL) {
                struct waiter *w = *pp;
                if (now >= 0 && w->deadline_ms > now) {
                    pp = &w->next;
                    continue;
                }
                *pp = w->next;
                ws->count--;
                w->next = NULL;
                w->active = 0;
                MHD_resume_connection(w->conn);
            }
        }
    }
    pthread_mutex_unlock(&ws->mu);
}

void waiters_wake_all(struct waiters *ws) { expire(ws, -1); }

void
waiters_remove(struct waiters *ws, struct waiter *w)
{
    pthread_mutex_lock(&ws->mu);
    if (w->active)
        unlink_locked(ws, w);
    pthread_mutex_unlock(&ws->mu);
}

static void *
waiters_main(void *arg)
{
    struct waiters *ws = arg;
    struct pollfd fds[2] = {
        {.fd = ws->ctx->cfg->notify_fd, .events = POLLIN},
        {.fd = ws->stop_pipe[0], .events = POLLIN},
    };
    int64_t next_tick = clock_mono_ms() + TICK_MS;
    for (;;) {
        int64_t now = clock_mono_ms();
        int timeout = next_tick > now ? (int)(next_tick - now) : 0;
        int n = poll(fds, 2, timeout);
        if (n < 0 && errno != EINTR) {
            log_error("waiters: poll: %s", strerror(errno));
            break;
        }
        if (fds[1].revents != 0)
            break;
        if (n > 0 && (fds[0].revents & POLLIN)) {
            int64_t id;
            /* the pipe is non-blocking; writes of 8 bytes are atomic (< PIPE_BUF) */
            while (read(fds[0].fd, &id, sizeof id) == (ssize_t)sizeof id) {
                if (id == 0)
                    expire(ws, -1);     /* events may have been lost: everyone looks again
                                         * (tasks.c holds on those not yet done) */
                else
                    waiters_wake(ws, id);
            }
        }
        now = clock_mono_ms();
        if (now >= next_tick) {
            expire(ws, now);
            next_tick = now + TICK_MS;
        }
    }
    return NULL;
}

struct waiters *
waiters_start(struct api_ctx *ctx, char *err, size_t errlen)
{
    struct waiters *ws = calloc(1, sizeof *ws);
    if (ws == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ws->ctx = ctx;
    pthread_mutex_init(&ws->mu, NULL);
    if (pipe2(ws->stop_pipe, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        free(ws);
        return NULL;
    }
    if (pthread_create(&ws->thread, NULL, waiters_main, ws) != 0) {
        snprintf(err, errlen, "cannot start the waiters thread");
        close(ws->stop_pipe[0]);
        close(ws->stop_pipe[1]);
        free(ws);
        return NULL;
    }
    return ws;
}

void
waiters_stop(struct waiters *ws)
{
    if (ws == NULL)
        return;
    pthread_mutex_lock(&ws->mu);
    int running = !ws->stopped;
    ws->stopped = 1;                    /* from now on waiters_add() refuses */
    pthread_mutex_unlock(&ws->mu);
    if (running) {
        char c = 1;
        if (write(ws->stop_pipe[1], &c, 1) != 1)
            log_warn("waiters: cannot signal the thread to stop");
        pthread_join(ws->thread, NULL);
    }
    waiters_wake_all(ws);
}

void
waiters_free(struct waiters *ws)
{
    if (ws == NULL)
        return;
    waiters_stop(ws);
    close(ws->stop_pipe[0]);
    close(ws->stop_pipe[1]);
    pthread_mutex_destroy(&ws->mu);
    free(ws);
}
