/* zygote.c -- a generation's loader: loads every kind's context, then forks the HTTP
 * process and the workers for the supervisor (see zygote.h).
 *
 * A child is forked twice: the zygote forks A; A forks B, sends ZYGOTE_SPAWNED with
 * B's pid (so that the supervisor learns it even if the zygote dies meanwhile) and
 * exits; B (the HTTP process or a worker) is reparented to the nearest living
 * subreaper, the supervisor. B then, in this order:
 *   1. waits until A is gone and the supervisor is its parent;
 *   2. sets PR_SET_PDEATHSIG: fork() clears it, and it fires when the parent *at the
 *      time it is set* dies, so set earlier it would fire when A exits;
 *   3. checks getppid() again: if the supervisor died between 1 and 2, B was
 *      reparented elsewhere and no signal will ever come, so it exits;
 *   4. becomes the HTTP process or a worker.
 * B can die before the supervisor has read its pid (A's message is sent before A
 * exits, so before B is even the supervisor's child, but the supervisor may reap
 * first): the supervisor remembers the unknown children it reaped and matches them
 * when the message arrives. */
#include "service/zygote.h"
#include "api/api.h"
#include "common/clock.h"
#include "common/fault.h"
#include "common/log.h"
#include "common/wake.h"
#include "service/exec_loader.h"
#include "service/exec_validate.h"
#include "service/kinds.h"
#include "service/worker.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXEC_STOP_GRACE_MS 5000     /* exec kinds' zygotes: to exit at end of file */

static pid_t g_supervisor;
static int g_generation;

/* ---------------------------------------------------------------- messages */

int
zygote_send(int sock, uint32_t type, const void *payload, uint32_t len)
{
    unsigned char buf[sizeof(struct zygote_hdr) + ZYGOTE_MSG_MAX];
    if (len > ZYGOTE_MSG_MAX) {
        errno = EMSGSIZE;
        return -1;
    }
    struct zygote_hdr h = {.type = type, .len = len};
    memcpy(buf, &h, sizeof h);
    if (len > 0)
        memcpy(buf + sizeof h, payload, len);
    ssize_t n;
    do
        n = send(sock, buf, sizeof h + len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n == (ssize_t)(sizeof h + len) ? 0 : -1;
}

int
zygote_recv(int sock, uint32_t *type, void *out, size_t cap)
{
    unsigned char buf[sizeof(struct zygote_hdr) + ZYGOTE_MSG_MAX];
    ssize_t n;
    do
        n = recv(sock, buf, sizeof buf, 0);
    while (n < 0 && errno == EINTR);
    if (n == 0)
        return -2;
    if (n < 0)
        return -1;
    struct zygote_hdr h;
    if ((size_t)n < sizeof h) {
        errno = EPROTO;
        return -1;
    }
    memcpy(&h, buf, sizeof h);
    if (h.len != (size_t)n - sizeof h) {
        errno = EPROTO;
        return -1;
    }
    size_t keep = h.len < cap ? h.len : cap;
    memcpy(out, buf + sizeof h, keep);
    *type = h.type;
    return (int)keep;
}

/* ---------------------------------------------------------------- the children */

/* POST /v1/admin/reload, in the HTTP process: ask the supervisor for a reload. */
static int
request_reload(void)
{
    return kill(g_supervisor, SIGHUP);
}

static void __attribute__((noreturn))
run_http(const struct zygote_env *env, struct exec_child *validators, int validators_seq)
{
    log_set_role("http");
    close(env->notify_wr);
    if (env->validate_wr >= 0)
        close(env->validate_wr);
    /* exec kinds' inputs are validated by children of their zygotes, handed over now
     * and, after each reload or zygote restart, through validate_rd */
    exec_validate_init(env->cfg, env->validate_rd, validators, g_generation, validators_seq);
    /* SIGTERM and SIGINT stay blocked: api_server_run() takes them with sigwait */
    sigset_t unblock;
    sigemptyset(&unblock);
    sigaddset(&unblock, SIGCHLD);
    sigaddset(&unblock, SIGHUP);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    sigprocmask(SIG_UNBLOCK, &unblock, NULL);
    const struct config *cfg = env->cfg;
    struct api_config acfg = {
        .listen_fd = env->listen_fd,
        .db_path = cfg->db_path,
        .max_body_bytes = (size_t)cfg->max_body_bytes,
        .default_timeout_ms = cfg->task_timeout_ms,
        .threads = cfg->http_threads,
        .max_connections = env->max_connections,
        .max_connections_per_ip = (unsigned)cfg->max_connections_per_ip,
        .wake = env->wake,
        .notify_fd = env->notify_rd,
        .started_at_ms = env->started_at_ms,
        .api_token = cfg->api_token,
        .metrics_token = cfg->metrics_token,
        .max_event_streams = (unsigned)cfg->max_event_streams,
        .max_pending = cfg->max_pending,
        .retention_ms = cfg->retention_ms,
        .submit_relaxed = cfg->durability_normal,
        .request_reload = request_reload,
        .cors_origins = cfg->cors_origins,
        .ncors_origins = cfg->ncors_origins,
        .callback_allow = cfg->callback_allow,
        .ncallback_allow = cfg->ncallback_allow,
        /* validate with the contexts this process was forked with (kinds.h) */
        .hooks = {.arg = env->sh, .validate = kinds_validate, .kinds = slots_kinds_stats,
                  .workers = slots_stats, .workers_alive = slots_alive,
                  .service_draining = slots_draining},
    };
    _exit(api_server_run(&acfg));
}

static void __attribute__((noreturn))
run_worker(const struct zygote_env *env, int slot, struct exec_child *children,
           uint64_t missing)
{
    close(env->listen_fd);
    close(env->notify_rd);
    if (env->validate_rd >= 0) {
        close(env->validate_rd);
        close(env->validate_wr);
    }
    /* signals stay blocked until worker_main() has its handlers in place */
    struct worker_env wenv = {.cfg = env->cfg, .sh = env->sh, .slot = slot, .wake = env->wake,
                              .notify_fd = env->notify_wr, .exec = children,
                              .exec_missing = missing};
    worker_main(&wenv);
}

/* In B, the grandchild (see the top of this file): steps 1 to 4. */
static void __attribute__((noreturn))
become_child(const struct zygote_env *env, int sock, pid_t a, const struct zygote_spawned *rep,
             int die_at_once, struct exec_child *children, int validators_seq)
{
    close(sock);
    exec_loader_close_inherited();      /* the zygotes' channels are the loader's alone */
    int64_t until = clock_mono_ms() + 5000;
    while (getppid() == a && clock_mono_ms() < until) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 100 * 1000};
        nanosleep(&ts, NULL);
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != env->supervisor)
        _exit(1);               /* the supervisor is gone: so is the service */
    if (die_at_once)
        _exit(7);               /* zygote_child_dies_at_once */
    if (rep->role == ZYGOTE_ROLE_HTTP) {
        prctl(PR_SET_NAME, "warmpool-http");
        run_http(env, children, validators_seq);
    }
    prctl(PR_SET_NAME, "warmpool-worker");
    run_worker(env, rep->slot, children, rep->exec_missing);
}

static void
spawn(const struct zygote_env *env, int sock, const struct zygote_spawn *req)
{
    struct zygote_spawned rep = {.role = req->role, .slot = req->slot, .seq = req->seq};
    if ((req->role != ZYGOTE_ROLE_HTTP && req->role != ZYGOTE_ROLE_WORKER) ||
        (req->role == ZYGOTE_ROLE_WORKER && (req->slot < 0 || req->slot >= env->sh->nslots))) {
        rep.err = EINVAL;
        zygote_send(sock, ZYGOTE_SPAWN_FAILED, &rep, sizeof rep);
        return;
    }
    /* the children start with SIGTERM and SIGINT blocked, like the rest of the
     * supervisor's signals; each role unblocks what it takes */
    sigset_t term, old;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigaddset(&term, SIGINT);
    sigprocmask(SIG_BLOCK, &term, &old);
    /* exec kinds: a worker gets a child of each, the HTTP process a validating child of
     * each that validates; they inherit the channels */
    struct exec_child children[CONFIG_MAX_EXEC_KINDS];
    int64_t spawn_deadline = clock_mono_ms() + EXEC_LOADER_SPAWN_MS;
    int validators_seq = 0;
    if (req->role == ZYGOTE_ROLE_WORKER)
        rep.exec_missing = exec_loader_spawn(children, spawn_deadline);
    else
        exec_loader_spawn_validators(children, spawn_deadline, &validators_seq);
    /* zygote_child_dies_at_once=N: the first N children exit (code 7) as soon as they
     * are the supervisor's, before anything else */
    int die_at_once = fault_countdown("zygote_child_dies_at_once");
    pid_t a = fork();
    if (a == 0) {
        pid_t self = getpid();
        pid_t b = fork();
        if (b == 0)
            become_child(env, sock, self, &rep, die_at_once, children, validators_seq);
        if (b < 0)
            rep.err = errno;
        else
            rep.pid = (int32_t)b;
        if (zygote_send(sock, b < 0 ? ZYGOTE_SPAWN_FAILED : ZYGOTE_SPAWNED, &rep,
                        sizeof rep) != 0 && b > 0)
            kill(b, SIGKILL);   /* the supervisor would never know of it */
        _exit(0);               /* B is reparented to the supervisor, the subreaper */
    }
    if (a < 0) {
        rep.err = errno;
        log_error("fork: %s", strerror(errno));
        zygote_send(sock, ZYGOTE_SPAWN_FAILED, &rep, sizeof rep);
    } else {
        while (waitpid(a, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    /* the new process has its copies of the children's channels (or none came) */
    for (int i = 0; i < CONFIG_MAX_EXEC_KINDS; i++) {
        if (children[i].fd >= 0)
            close(children[i].fd);
        if (children[i].pidfd >= 0)
            close(children[i].pidfd);
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
}

/* ---------------------------------------------------------------- the zygote */

void
zygote_main(const struct zygote_env *env, int sock, int generation)
{
    g_supervisor = env->supervisor;
    g_generation = generation;
    int64_t t0 = clock_mono_ms();
    /* a direct child of the supervisor: the death signal can be set at once */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != env->supervisor)
        _exit(1);
    prctl(PR_SET_NAME, "warmpool-zygote");
    log_set_role("zygote");
    /* SIGTERM and SIGINT end it, also in the middle of a load() */
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigaddset(&term, SIGINT);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    sigprocmask(SIG_UNBLOCK, &term, NULL);

    char err[1024];
    /* the C kinds, then the exec kinds' zygotes, all within --load-timeout-ms */
    if (kinds_load(env->cfg, err, sizeof err) != 0 ||
        exec_loader_start(env->cfg, sock, t0 + env->cfg->load_timeout_ms, err,
                          sizeof err) != 0) {
        zygote_send(sock, ZYGOTE_FAILED, err, (uint32_t)strlen(err));
        _exit(2);
    }
    static struct zygote_ready ready;
    size_t n = kinds_count();
    ready.nkinds = (int32_t)(n < SHARED_MAX_KINDS ? n : SHARED_MAX_KINDS);
    for (int i = 0; i < ready.nkinds; i++) {
        const struct kind_entry *e = kinds_at((size_t)i);
        snprintf(ready.kinds[i].name, sizeof ready.kinds[i].name, "%s", e->kind->name);
        ready.kinds[i].ctx_bytes = (int64_t)e->ctx_bytes;
        ready.kinds[i].load_ms = e->load_ms;
        ready.kinds[i].exec = e->exec;
    }
    if (zygote_send(sock, ZYGOTE_READY, &ready, sizeof ready) != 0)
        _exit(1);
    log_debug("generation %d: %zu kinds loaded in %lld ms", generation, n,
              (long long)(clock_mono_ms() - t0));

    for (;;) {
        /* the supervisor's requests, and the exec kinds' zygotes */
        struct pollfd p[1 + CONFIG_MAX_EXEC_KINDS];
        p[0] = (struct pollfd){.fd = sock, .events = POLLIN};
        int np = 1 + exec_loader_pollfds(p + 1, CONFIG_MAX_EXEC_KINDS);
        if (poll(p, (nfds_t)np, exec_loader_timeout_ms()) < 0 && errno != EINTR)
            _exit(1);
        if (np > 1)
            exec_loader_service(p + 1, np - 1);
        if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        union {
            struct zygote_spawn spawn;
            unsigned char raw[ZYGOTE_MSG_MAX];
        } m;
        uint32_t type = 0;
        int len = zygote_recv(sock, &type, &m, sizeof m);
        if (len == -2 || (len < 0 && errno != EAGAIN) || type == ZYGOTE_EXIT) {
            /* told to, or the supervisor closed its end: this generation is over (its
             * children keep their copies of the contexts; the supervisor asks only once
             * none of its workers runs, since the exec kinds' children end with their
             * zygotes) */
            exec_loader_stop(EXEC_STOP_GRACE_MS);
            kinds_unload();
            _exit(0);
        }
        if (len < 0)
            continue;
        if (type == ZYGOTE_SPAWN && (size_t)len >= sizeof m.spawn)
            spawn(env, sock, &m.spawn);
        else if (type == ZYGOTE_PUSH_VALIDATORS && env->validate_wr >= 0)
            exec_loader_push_validators(env->validate_wr, generation);
        /* any other type: from a newer supervisor; ignored */
    }
}