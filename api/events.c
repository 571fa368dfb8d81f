/* events.c -- GET /v1/events: task state changes as server-sent events, read from the
 * instance's event ring (common/events.h); and the HTTP process's own share of those
 * changes (submitted, canceled), which it publishes there and counts for /metrics.
 *
 * A stream is a libmicrohttpd response whose content comes from a callback
 * (stream_read). The callback sends what the ring holds for the stream, and when there
 * is nothing, suspends the connection and returns 0: no thread waits on a stream, and
 * nothing spins. One thread per HTTP process (notifier) waits for new events on the
 * ring (a futex the writers wake only when it waits), and resumes the suspended
 * streams that have something to send: new events, a heartbeat due (every 15 s, a
 * comment line), or the end (a drain). It wakes at most every COALESCE_MS while
 * events flow, so a burst costs one resume per stream, not one per event.
 *
 * Streams read only up to `done`, the notifier's view of the ring: every record at or
 * below it is either written, or a hole (a writer that died between taking its number
 * and writing: events.h (2)), declared after HOLE_MS. A stream that falls behind the
 * ring (or resumes from an id the ring no longer has) gets a `lost` event and goes on
 * from the present: its client re-reads the state (GET /v1/stats, /v1/tasks). */
#include "api/internal.h"
#include "common/clock.h"
#include "common/events.h"
#include "common/fault.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/names.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define HEARTBEAT_MS 15000
#define COALESCE_MS 10          /* the notifier's pause between two rounds of resumes */
#define HOLE_MS 1000            /* how long a record may stay unwritten below the head */
#define RETRY_MS 2000           /* the client's reconnection delay (the `retry:` field) */
#define EVENT_MAX 512           /* the longest event text, with its id and type */
#define MAX_FILTER_KINDS 16

struct stream {
    struct MHD_Connection *conn;
    uint64_t next;              /* the next sequence number to look at */
    int lost_pending;           /* a `lost` event is owed: missed events (-1 unknown) */
    int64_t missed;
    unsigned states;            /* bit per enum task_state; 0: every state */
    char kinds[MAX_FILTER_KINDS][NAMES_MAX_LEN + 1];
    int nkinds;                 /* 0: every kind */
    int64_t last_write_ms;      /* monotonic */
    int started;                /* the prelude (retry, a comment) was sent */
    int suspended;              /* by stream_read(); resumed by the notifier */
    int gone;                   /* the client closed its end (seen by the notifier) */
    struct stream *prev, *next_s;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* a stream opened, or stop */
    struct stream *head;        /* every open stream; guarded by mu */
    int n;                      /* open streams; guarded by mu */
    atomic_int open;            /* the same, for the cap, taken before the stream exists */
    int closing;                /* the drain: every stream ends; guarded by mu */
    int stop;                   /* the notifier leaves; guarded by mu */
    int running;
    pthread_t thread;
    atomic_ullong done;         /* see the top of this file */
    int64_t heartbeat_ms;
    int coalesce_ms;            /* COALESCE_MS, or the fault point events_coalesce_ms */
} E = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* ---------------------------------------------------------------- the HTTP process's changes */

void
api_events_submitted(const struct writer_job *jobs)
{
    for (const struct writer_job *j = jobs; j != NULL; j = j->next) {
        if (j->status != STORE_OK)
            continue;                   /* an idempotent repeat: nothing new */
        for (size_t i = 0; i < j->n; i++) {
            const store_task *t = &j->out[i];
            events_publish(t->kind, t->id, "pending", t->attempts, NULL, t->created_at_ms);
            metrics_task_submitted(t->kind);
        }
    }
}

void
api_events_canceled(const store_task *t)
{
    events_publish(t->kind, t->id, "canceled", t->attempts, NULL, t->finished_at_ms);
    metrics_task_finished(t->kind, METRICS_END_CANCELED);
}

/* ---------------------------------------------------------------- one stream */

static int
want(const struct stream *s, const struct events_view *v)
{
    if (s->states != 0) {
        enum task_state st;
        if (task_state_parse(v->state, &st) != 0 || !(s->states & (1u << st)))
            return 0;
    }
    if (s->nkinds == 0)
        return 1;
    for (int i = 0; i < s->nkinds; i++)
        if (strcmp(s->kinds[i], v->kind) == 0)
            return 1;
    return 0;
}

/* Copies s into out as the inside of a JSON string; names are short and plain, but
 * they come from other processes (and, later, other instances). */
static size_t
json_str(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s != '\0' && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n] = '\0';
    return n;
}

static size_t
format_task(char *buf, const struct events_view *v)
{
    char kind[2 * NAMES_MAX_LEN + 8], error[2 * NAMES_MAX_LEN + 8], at[CLOCK_RFC3339_LEN];
    json_str(kind, sizeof kind, v->kind);
    if (v->error != NULL) {
        error[0] = '"';
        size_t e = json_str(error + 1, sizeof error - 2, v->error);
        error[e + 1] = '"';
        error[e + 2] = '\0';
    } else {
        snprintf(error, sizeof error, "null");
    }
    clock_format_rfc3339(v->at_ms, at);
    int n = snprintf(buf, EVENT_MAX,
                     "id: %" PRIu64 "\nevent: task\ndata: {\"id\":\"%" PRId64 "\",\"kind\":\"%s\","
                     "\"state\":\"%s\",\"attempts\":%d,\"error\":%s,\"at\":\"%s\"}\n\n",
                     v->seq, v->task_id, kind, v->state, v->attempts, error, at);
    return n > 0 && n < EVENT_MAX ? (size_t)n : 0;
}

static size_t
format_lost(char *buf, uint64_t id, int64_t missed)
{
    char m[24];
    if (missed >= 0)
        snprintf(m, sizeof m, "%" PRId64, missed);
    else
        snprintf(m, sizeof m, "null");
    return (size_t)snprintf(buf, EVENT_MAX, "id: %" PRIu64 "\nevent: lost\ndata: {\"missed\":%s}"
                            "\n\n", id, m);
}

/* libmicrohttpd's content reader of a stream: up to max bytes of events into buf. */
static ssize_t
stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct stream *s = cls;
    char one[EVENT_MAX];
    size_t n = 0;
    pthread_mutex_lock(&E.mu);
    if (E.closing || s->gone) {
        pthread_mutex_unlock(&E.mu);
        return s->gone ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
    }
    if (!s->started && max >= EVENT_MAX) {
        n += (size_t)snprintf(buf, max, "retry: %d\n: warmpool events\n\n", RETRY_MS);
        s->started = 1;
    }
    uint64_t done = atomic_load(&E.done);
    if (s->lost_pending && n + EVENT_MAX <= max) {      /* from start_at() */
        n += format_lost(buf + n, s->next - 1, s->missed);
        s->lost_pending = 0;
    }
    while (s->next <= done && n + EVENT_MAX <= max) {
        struct events_view v;
        int rc = events_read(s->next, &v);
        size_t k = 0;
        if (rc == EVENTS_OK) {
            if (want(s, &v))
                k = format_task(one, &v);
            s->next++;
        } else if (rc == EVENTS_NOT_YET) {
            k = format_lost(one, s->next, 1);   /* a hole: its writer died (events.h (2)) */
            s->next++;
        } else {
            /* fell behind the ring: go on from the present (see the top), which is the
             * ring's head: the notifier's `done` may itself be behind the ring (it moves
             * every COALESCE_MS), and a jump to it would fall behind again at once and
             * skip what happens after this `lost` */
            uint64_t head = events_head();
            if (head < done)
                head = done;
            k = format_lost(one, head, (int64_t)(head + 1 - s->next));
            s->next = head + 1;
        }
        memcpy(buf + n, one, k);
        n += k;
    }
    int64_t now = clock_mono_ms();
    if (n == 0 && now - s->last_write_ms >= E.heartbeat_ms && max >= 16) {
        memcpy(buf, ": keep-alive\n\n", 14);
        n = 14;
    }
    if (n > 0) {
        s->last_write_ms = now;
        pthread_mutex_unlock(&E.mu);
        return (ssize_t)n;
    }
    /* nothing to send: the notifier resumes the connection when there is (suspended
     * under the lock it resumes under, so it never resumes a running connection) */
    s->suspended = 1;
    MHD_suspend_connection(s->conn);
    pthread_mutex_unlock(&E.mu);
    return 0;
}

/* The response is destroyed: the connection is closed, whatever ended it. */
static void
stream_free(void *cls)
{
    struct stream *s = cls;
    pthread_mutex_lock(&E.mu);
    if (s->prev != NULL)
        s->prev->next_s = s->next_s;
    else
        E.head = s->next_s;
    if (s->next_s != NULL)
        s->next_s->prev = s->prev;
    E.n--;
    pthread_mutex_unlock(&E.mu);
    atomic_fetch_sub(&E.open, 1);
    free(s);
}

/* ---------------------------------------------------------------- GET /v1/events */

/* A comma-separated list of kind names into s. 0, or -1 (not names). */
static int
parse_kinds(const char *text, struct stream *s)
{
    for (const char *p = text;;) {
        size_t n = strcspn(p, ",");
        if (n == 0 || n > NAMES_MAX_LEN || s->nkinds == MAX_FILTER_KINDS ||
            strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789_.-") < n)
            return -1;
        memcpy(s->kinds[s->nkinds], p, n);
        s->kinds[s->nkinds++][n] = '\0';
        if (p[n] == '\0')
            return 0;
        p += n + 1;
    }
}

static int
parse_states(const char *text, unsigned *mask)
{
    char name[16];
    for (const char *p = text;;) {
        size_t n = strcspn(p, ",");
        enum task_state st;
        if (n == 0 || n >= sizeof name)
            return -1;
        memcpy(name, p, n);
        name[n] = '\0';
        if (task_state_parse(name, &st) != 0)
            return -1;
        *mask |= 1u << st;
        if (p[n] == '\0')
            return 0;
        p += n + 1;
    }
}

/* Last-Event-ID: a sequence number (1 to 20 digits). 0 and *id, or -1. */
static int
parse_event_id(const char *text, uint64_t *id)
{
    size_t n = strlen(text);
    if (n == 0 || n > 20 || strspn(text, "0123456789") != n)
        return -1;
    errno = 0;
    unsigned long long v = strtoull(text, NULL, 10);
    if (errno != 0)
        return -1;
    *id = v;
    return 0;
}

/* Where a stream starts. Without Last-Event-ID: with the next change. With it: after
 * it, when the ring still has what follows; else as far back as the ring goes, after a
 * `lost` event: an id of an earlier run (the client was there before a restart: it
 * gets this run from its first event, start-up recovery included), or one older than
 * the ring keeps. An id the ring never gave: `lost`, and the next change. */
static void
start_at(struct stream *s, const char *last_id, uint64_t id)
{
    uint64_t head = events_head(), oldest = events_oldest(), base = events_base();
    s->next = head + 1;
    if (last_id == NULL)
        return;
    if (id > head) {
        s->lost_pending = 1;
        s->missed = -1;
    } else if (id <= base) {
        s->lost_pending = 1;
        s->missed = -1;
        s->next = oldest > base + 1 ? oldest : base + 1;
    } else if (id + 1 < oldest) {
        s->lost_pending = 1;
        s->missed = (int64_t)(oldest - id - 1);
        s->next = oldest;
    } else {
        s->next = id + 1;
    }
}

enum MHD_Result
api_events(struct api_ctx *ctx, struct MHD_Connection *conn, struct req *r)
{
    (void)r;
    struct stream probe = {.nkinds = 0};
    const char *kind = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "kind");
    const char *state = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "state");
    if (kind != NULL && kind[0] != '\0' && parse_kinds(kind, &probe) != 0)
        return api_reply_errorf(conn, MHD_HTTP_BAD_REQUEST, "invalid_query",
                                "kind: a kind name, or up to %d separated by commas",
                                MAX_FILTER_KINDS);
    if (state != NULL && state[0] != '\0' && parse_states(state, &probe.states) != 0)
        return api_reply_error(conn, MHD_HTTP_BAD_REQUEST, "invalid_query",
                               "state: pending, running, succeeded, failed or canceled, or "
                               "several separated by commas");
    const char *last = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Last-Event-ID");
    uint64_t last_id = 0;
    if (last != NULL && last[0] == '\0')
        last = NULL;
    if (last != NULL && parse_event_id(last, &last_id) != 0)
        return api_reply_error(conn, MHD_HTTP_BAD_REQUEST, "invalid_request",
                               "Last-Event-ID: must be the id of an event (digits)");
    if (atomic_load(&ctx->draining))
        return api_reply_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting_down",
                               "the service is shutting down; retry on its next start");
    unsigned cap = ctx->cfg->max_event_streams;
    if ((unsigned)atomic_fetch_add(&E.open, 1) >= cap) {
        atomic_fetch_sub(&E.open, 1);
        return api_reply_errorf(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "too_many_streams",
                                "%u event streams are open (--max-event-streams); retry "
                                "later", cap);
    }
    struct stream *s = malloc(sizeof *s);
    if (s == NULL) {
        atomic_fetch_sub(&E.open, 1);
        return MHD_NO;
    }
    *s = probe;
    s->conn = conn;
    s->last_write_ms = clock_mono_ms();
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, s,
                                          stream_free);
    if (resp == NULL) {
        atomic_fetch_sub(&E.open, 1);
        free(s);
        return api_reply_queue(conn, MHD_HTTP_OK, NULL, 0);
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");   /* nginx: do not buffer */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    /* fault point events_stream_sndbuf=BYTES: a small socket buffer, so that a test's
     * client that stops reading makes its stream fall behind the ring */
    const union MHD_ConnectionInfo *ci;
    int sndbuf = (int)fault_value("events_stream_sndbuf");
    if (sndbuf > 0 &&
        (ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD)) != NULL)
        setsockopt(ci->connect_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    pthread_mutex_lock(&E.mu);
    start_at(s, last, last_id);
    s->prev = NULL;
    s->next_s = E.head;
    if (E.head != NULL)
        E.head->prev = s;
    E.head = s;
    E.n++;
    pthread_cond_signal(&E.cv);         /* the notifier follows the ring from now on */
    pthread_mutex_unlock(&E.mu);
    /* from here the response owns s: stream_free() unlinks and frees it */
    return api_reply_queue(conn, MHD_HTTP_OK, resp, 0);
}

/* ---------------------------------------------------------------- the notifier */

/* libmicrohttpd does not watch a suspended connection's socket: a client that left
 * would hold its stream (and its place under --max-event-streams) until the next
 * heartbeat failed. Once a second, look for the end of file of every waiting stream's
 * socket, and end those. Called with E.mu held. */
static void
find_gone_clients(void)
{
    struct pollfd pfd[64];
    struct stream *who[64];
    struct stream *s = E.head;
    while (s != NULL) {
        int n = 0;
        for (; s != NULL && n < 64; s = s->next_s) {
            if (!s->suspended)
                continue;
            const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(s->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
            if (ci == NULL)
                continue;
            pfd[n] = (struct pollfd){.fd = ci->connect_fd, .events = POLLRDHUP};
            who[n++] = s;
        }
        if (n > 0 && poll(pfd, (nfds_t)n, 0) > 0)
            for (int i = 0; i < n; i++)
                if (pfd[i].revents & (POLLRDHUP | POLLHUP | POLLERR))
                    who[i]->gone = 1;
    }
}

/* Moves `done` over the records written since, and over a hole once it is HOLE_MS old.
 * *gap_since: when the record after `done` was first seen unwritten (0: it was not). */
static uint64_t
advance(uint64_t done, int64_t *gap_since)
{
    uint64_t head = events_head(), oldest = events_oldest();
    if (done + 1 < oldest)
        done = oldest - 1;          /* overwritten meanwhile: nobody can read them */
    while (done < head) {
        struct events_view v;
        int rc = events_read(done + 1, &v);
        if (rc == EVENTS_NOT_YET) {
            int64_t now = clock_mono_ms();
            if (*gap_since == 0)
                *gap_since = now;
            if (now - *gap_since < HOLE_MS)
                break;
        }
        *gap_since = 0;
        done++;
    }
    return done;
}

static void *
notifier(void *arg)
{
    (void)arg;
    int64_t gap_since = 0, last_trim = 0, last_look = 0;
    uint64_t done = atomic_load(&E.done);
    pthread_mutex_lock(&E.mu);
    while (!E.stop) {
        /* how long until a heartbeat is due (or a hole's wait ends) */
        int64_t now = clock_mono_ms(), wait_ms = 1000;
        for (struct stream *s = E.head; s != NULL; s = s->next_s) {
            int64_t due = s->last_write_ms + E.heartbeat_ms - now;
            if (s->suspended && due < wait_ms)
                wait_ms = due < 0 ? 0 : due;
        }
        if (gap_since != 0 && wait_ms > HOLE_MS / 4)
            wait_ms = HOLE_MS / 4;
        int idle = E.n == 0;
        pthread_mutex_unlock(&E.mu);

        if (now - last_trim >= 1000) {
            events_trim(clock_now_ms());
            last_trim = now;
        }
        if (!idle)                      /* woken by the writers: events.h */
            events_wait(done + 1, (int)wait_ms);
        done = advance(done, &gap_since);
        atomic_store(&E.done, done);

        pthread_mutex_lock(&E.mu);
        now = clock_mono_ms();
        if (now - last_look >= 1000) {
            find_gone_clients();
            last_look = now;
        }
        for (struct stream *s = E.head; s != NULL; s = s->next_s) {
            if (s->suspended && (s->next <= done || s->lost_pending || E.closing || s->gone ||
                                 now - s->last_write_ms >= E.heartbeat_ms)) {
                s->suspended = 0;
                MHD_resume_connection(s->conn);
            }
        }
        if (E.stop)
            break;
        if (E.n == 0) {
            /* nobody listens: follow the ring once a second, and at once when a stream
             * opens; the writers never see a waiting reader meanwhile */
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 1;
            pthread_cond_timedwait(&E.cv, &E.mu, &until);
        } else {
            pthread_mutex_unlock(&E.mu);
            /* fault point events_coalesce_ms: a slower notifier, whose `done` lags */
            clock_sleep_ms(E.coalesce_ms);
            pthread_mutex_lock(&E.mu);
        }
    }
    pthread_mutex_unlock(&E.mu);
    return NULL;
}

int
api_events_start(char *err, size_t errlen)
{
    /* fault point events_heartbeat_ms: a shorter heartbeat, for tests */
    E.coalesce_ms = fault_value("events_coalesce_ms") > 0 ? (int)fault_value("events_coalesce_ms")
                                                           : COALESCE_MS;
    E.heartbeat_ms = fault_value("events_heartbeat_ms") > 0 ? fault_value("events_heartbeat_ms")
                                                             : HEARTBEAT_MS;
    atomic_store(&E.done, events_head());
    E.stop = E.closing = 0;
    if (pthread_create(&E.thread, NULL, notifier, NULL) != 0) {
        snprintf(err, errlen, "cannot start the event notifier thread");
        return -1;
    }
    E.running = 1;
    return 0;
}

void
api_events_close_all(void)
{
    pthread_mutex_lock(&E.mu);
    E.closing = 1;
    for (struct stream *s = E.head; s != NULL; s = s->next_s) {
        if (s->suspended) {
            s->suspended = 0;
            MHD_resume_connection(s->conn);
        }
    }
    pthread_mutex_unlock(&E.mu);
}

void
api_events_stop(void)
{
    if (!E.running)
        return;
    pthread_mutex_lock(&E.mu);
    E.stop = 1;
    pthread_cond_signal(&E.cv);
    pthread_mutex_unlock(&E.mu);
    pthread_join(E.thread, NULL);
    E.running = 0;
}

int
api_events_open(void)
{
    return atomic_load(&E.open);
}
