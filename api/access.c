/* access.c -- request ids (X-Request-Id) and the access log: one line per request, at
 * info, with the route's template, never the raw path, query or any header but the id. */
#include "api/internal.h"
#include "common/log.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int64_t
mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int
access_request_id_ok(const char *id)
{
    size_t n = strlen(id);
    return n >= 1 && n <= API_MAX_REQUEST_ID &&
           strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:") == n;
}

/* 64 random bits as 16 hex digits: a per-thread xorshift64* seeded from getrandom(), so
 * ids are unique across threads, restarts and instances without a syscall per request. */
static void
new_request_id(char out[17])
{
    static _Thread_local uint64_t state;
    if (state == 0) {
        if (getrandom(&state, sizeof state, GRND_NONBLOCK) != (ssize_t)sizeof state)
            state = (uint64_t)mono_us() ^ ((uint64_t)getpid() << 32);
        state |= 1;                     /* xorshift's one forbidden state is 0 */
    }
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    uint64_t v = state * 2685821657736338717ULL;
    for (int i = 15; i >= 0; i--, v >>= 4)
        out[i] = "0123456789abcdef"[v & 15];
    out[16] = '\0';
}

void
access_begin(struct req *r, struct MHD_Connection *conn, const char *method)
{
    r->start_us = mono_us();
    snprintf(r->method, sizeof r->method, "%s", method);
    const char *given = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    if (given != NULL && access_request_id_ok(given))
        memcpy(r->request_id, given, strlen(given) + 1);
    else
        new_request_id(r->request_id);
}

static const char *
termination(enum MHD_RequestTerminationCode toe)
{
    switch (toe) {
    case MHD_REQUEST_TERMINATED_COMPLETED_OK: return NULL;
    case MHD_REQUEST_TERMINATED_WITH_ERROR: return "error";
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED: return "timeout";
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN: return "shutdown";
    case MHD_REQUEST_TERMINATED_READ_ERROR: return "read_error";
    case MHD_REQUEST_TERMINATED_CLIENT_ABORT: return "client_abort";
    }
    return "other";
}

void
access_log(const struct req *r, struct MHD_Connection *conn, enum MHD_RequestTerminationCode toe)
{
    if (log_get_level() < LOG_INFO)
        return;
    char client[INET6_ADDRSTRLEN] = "-";
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci != NULL ? ci->client_addr : NULL;
    if (sa != NULL && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, client,
                  sizeof client);
    else if (sa != NULL && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, client,
                  sizeof client);
    const char *ended = termination(toe);
    double ms = (double)(mono_us() - r->start_us) / 1000.0;
    const char *route = r->route != NULL ? r->route : "-";
    if (ended == NULL)
        log_event(LOG_INFO, "request", LOG_STR("method", r->method), LOG_STR("route", route),
                  LOG_INT("status", r->status), LOG_NUM("duration_ms", ms),
                  LOG_INT("bytes", r->bytes), LOG_STR("client", client),
                  LOG_STR("request_id", r->request_id));
    else    /* answered or not, the client did not get it all */
        log_event(LOG_INFO, "request", LOG_STR("method", r->method), LOG_STR("route", route),
                  LOG_INT("status", r->status), LOG_NUM("duration_ms", ms),
                  LOG_INT("bytes", r->bytes), LOG_STR("client", client),
                  LOG_STR("request_id", r->request_id), LOG_STR("ended", ended));
}
