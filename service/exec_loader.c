/* exec_loader.c -- the exec kinds' zygotes in a generation's loader (see exec_loader.h).
 *
 * Each zygote is in a process group of its own (exec_zygote_start), which its children
 * join: killing the group (kill(-pgid)) stops a zygote and everything it forked. That
 * is safe even after the zygote was reaped: Linux gives no new process a number that
 * is still a living process group's id, so the signal reaches the group's members or
 * nobody. */
#include "service/exec_loader.h"
#include "common/clock.h"
#include "common/fault.h"
#include "common/log.h"
#include "service/exec_validate.h"
#include "service/kinds.h"
#include "service/zygote.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 60000
#define SERVED_LONG_MS 60000        /* a zygote that served this long starts a new back-off */
#define READY_FRAME_MS 2000         /* a restarted zygote's ready, once its first byte came */
#define REAP_TICK_MS 500            /* how often zygotes are looked at with waitpid() */
#define EXIT_WAIT_MS 200            /* a zygote whose channel ended: time to see it exit */

enum xk_state { XK_DOWN = 0, XK_LOADING, XK_UP };

struct xk {
    const char *name;
    char **argv;
    const char *config;
    struct exec_zygote z;           /* z.pid > 0 while it runs (not yet reaped) */
    enum xk_state state;
    int64_t started_ms;             /* monotonic: when this zygote was started */
    int64_t load_deadline_ms;       /* LOADING: ready by then, or it is killed */
    int64_t up_ms;                  /* UP: since when */
    int64_t restart_at_ms;          /* DOWN: start a new one then */
    int backoff_ms;                 /* grows while zygotes keep dying young */
    int64_t announce_at_ms;         /* UP: announce it up again then (0: no) */
    int refuse_backoff_ms;          /* grows while spawns are refused */
};

static struct {
    const struct config *cfg;
    int n;
    struct xk k[CONFIG_MAX_EXEC_KINDS];
    int64_t next_reap_ms;
    int push_seq;                   /* orders the validate children sent to HTTP */
    int sock;                       /* the supervisor's channel: ZYGOTE_EXEC_STATE */
} L;

static void
describe_status(int status, char *out, size_t outlen)
{
    if (WIFEXITED(status))
        snprintf(out, outlen, "exited with code %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, outlen, "was killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(out, outlen, "ended (status %d)", status);
}

/* Stops zygote k's process group and reaps it; says how it ended into how. wait_ms:
 * how long to let it exit by itself first (to report its own status). */
static void
kill_and_reap(struct xk *x, int64_t wait_ms, char *how, size_t howlen)
{
    if (x->z.ctl_fd >= 0) {
        close(x->z.ctl_fd);
        x->z.ctl_fd = -1;
    }
    snprintf(how, howlen, "is gone");
    if (x->z.pid <= 0)
        return;
    int status = 0;
    pid_t r;
    int64_t until = clock_mono_ms() + wait_ms;
    while ((r = waitpid(x->z.pid, &status, WNOHANG)) == 0 && clock_mono_ms() < until)
        clock_sleep_ms(2);
    /* the children (and the zygote, if it still runs): they go with it */
    kill(-x->z.pid, SIGKILL);
    if (r == 0) {
        kill(x->z.pid, SIGKILL);        /* our unreaped child: the number is still its */
        while ((r = waitpid(x->z.pid, &status, 0)) < 0 && errno == EINTR)
            ;
        describe_status(status, how, howlen);
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
            snprintf(how, howlen, "was stopped (killed by warmpool)");
    } else if (r > 0) {
        describe_status(status, how, howlen);
    }
    x->z.pid = -1;
}

static void
send_state(int i, int up)
{
    struct xk *x = &L.k[i];
    struct kind_entry *e = kinds_exec(i);
    struct zygote_exec_state m = {.kind = i, .up = up};
    if (up && e != NULL) {
        m.ctx_bytes = (int64_t)e->ctx_bytes;
        m.load_ms = e->load_ms;
    }
    snprintf(m.name, sizeof m.name, "%s", x->name);
    if (L.sock >= 0 && zygote_send(L.sock, ZYGOTE_EXEC_STATE, &m, sizeof m) != 0)
        log_debug("exec kind %s: telling the supervisor: %s", x->name, strerror(errno));
}

/* Zygote i is gone or broken: stop what is left of it, log, restart it later. */
static void
went_down(int i, const char *why)
{
    struct xk *x = &L.k[i];
    char how[128];
    pid_t pid = x->z.pid;
    kill_and_reap(x, EXIT_WAIT_MS, how, sizeof how);
    int64_t now = clock_mono_ms();
    int was_up = x->state == XK_UP;
    if (was_up && now - x->up_ms > SERVED_LONG_MS)
        x->backoff_ms = BACKOFF_MIN_MS;     /* it served a long time: start afresh */
    else
        x->backoff_ms = x->backoff_ms == 0 ? BACKOFF_MIN_MS
                        : x->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                             : x->backoff_ms * 2;
    /* fault point exec_loader_restart_ms: the back-off before a restart, for tests that
     * watch a kind's tasks wait */
    if (fault_value("exec_loader_restart_ms") > 0)
        x->backoff_ms = (int)fault_value("exec_loader_restart_ms");
    x->state = XK_DOWN;
    x->restart_at_ms = now + x->backoff_ms;
    x->announce_at_ms = 0;
    exec_buf_free(&x->z.buf);
    log_error("exec kind %s: its zygote %ld %s (%s); its children are stopped, and its "
              "tasks wait until a new zygote is ready (started in %d ms)", x->name,
              (long)pid, how, why, x->backoff_ms);
    if (was_up)
        send_state(i, 0);
}

static int
start_one(int i, int64_t deadline_ms, char *err, size_t errlen)
{
    struct xk *x = &L.k[i];
    if (exec_zygote_start(&x->z, x->argv, x->name, x->config, EXEC_PROTO_FRAME_MAX_DEFAULT,
                          err, errlen) != 0)
        return -1;
    x->state = XK_LOADING;
    x->started_ms = clock_mono_ms();
    x->load_deadline_ms = deadline_ms;
    log_info("exec kind %s: zygote %ld started: %s", x->name, (long)x->z.pid,
             L.cfg->exec_kinds[i].command);
    return 0;
}

/* Records zygote i's ready figures in its registry entry. */
static void
became_ready(int i)
{
    struct xk *x = &L.k[i];
    struct kind_entry *e = kinds_exec(i);
    int64_t now = clock_mono_ms();
    if (e != NULL) {
        e->ctx_bytes = x->z.context_bytes > 0 ? (size_t)x->z.context_bytes : 0;
        e->load_ms = x->z.load_ms >= 0 ? x->z.load_ms : now - x->started_ms;
    }
    x->state = XK_UP;
    x->up_ms = now;
    x->announce_at_ms = 0;
    x->refuse_backoff_ms = 0;
    log_info("exec kind %s: zygote %ld ready in %lld ms (context %lld bytes%s)", x->name,
             (long)x->z.pid, (long long)(now - x->started_ms), (long long)x->z.context_bytes,
             x->z.validate ? ", validates inputs" : "");
}

int
exec_loader_start(const struct config *cfg, int sock, int64_t deadline_ms, char *err,
                  size_t errlen)
{
    memset(&L, 0, sizeof L);
    L.cfg = cfg;
    L.sock = sock;
    L.n = cfg->nexec_kinds;
    for (int i = 0; i < L.n; i++) {
        L.k[i] = (struct xk){.name = cfg->exec_kinds[i].name, .argv = cfg->exec_kinds[i].argv,
                             .config = config_kind_config(cfg, cfg->exec_kinds[i].name),
                             .z = {.pid = -1, .ctl_fd = -1}};
    }
    char why[700];
    for (int i = 0; i < L.n; i++) {     /* all at once: they load side by side */
        if (start_one(i, deadline_ms, why, sizeof why) != 0) {
            snprintf(err, errlen, "exec kind %s: %s", L.k[i].name, why);
            exec_loader_stop(0);
            return -1;
        }
    }
    for (int i = 0; i < L.n; i++) {
        struct xk *x = &L.k[i];
        int rc = exec_zygote_wait_ready(&x->z, deadline_ms, why, sizeof why);
        if (rc == EXEC_PROTO_OK) {
            became_ready(i);
            continue;
        }
        char how[128];
        kill_and_reap(x, rc == EXEC_PROTO_EOF ? 1000 : 0, how, sizeof how);
        if (rc == EXEC_PROTO_TIMEOUT)
            snprintf(err, errlen, "exec kind %s: the zygote was not ready within "
                     "--load-timeout-ms (%lld ms); it was stopped", x->name,
                     (long long)cfg->load_timeout_ms);
        else if (rc == EXEC_PROTO_EOF)
            snprintf(err, errlen, "exec kind %s: the zygote %s before it was ready", x->name,
                     how);
        else
            snprintf(err, errlen, "exec kind %s: %s", x->name, why);
        exec_loader_stop(0);
        return -1;
    }
    L.next_reap_ms = clock_mono_ms() + REAP_TICK_MS;
    return 0;
}

int
exec_loader_pollfds(struct pollfd *p, int cap)
{
    int n = 0;
    for (int i = 0; i < L.n && n < cap; i++)
        if (L.k[i].z.ctl_fd >= 0)
            p[n++] = (struct pollfd){.fd = L.k[i].z.ctl_fd, .events = POLLIN};
    return n;
}

int
exec_loader_timeout_ms(void)
{
    if (L.n == 0)
        return -1;
    int64_t now = clock_mono_ms(), next = L.next_reap_ms;
    for (int i = 0; i < L.n; i++) {
        const struct xk *x = &L.k[i];
        if (x->state == XK_DOWN && x->restart_at_ms < next)
            next = x->restart_at_ms;
        if (x->state == XK_LOADING && x->load_deadline_ms < next)
            next = x->load_deadline_ms;
        if (x->state == XK_UP && x->announce_at_ms != 0 && x->announce_at_ms < next)
            next = x->announce_at_ms;
    }
    return next <= now ? 0 : (int)(next - now);
}

/* The channel of zygote i is readable: ready (when loading), or the end of it. */
static void
readable(int i)
{
    struct xk *x = &L.k[i];
    char why[700];
    if (x->state == XK_LOADING) {
        int64_t deadline = clock_mono_ms() + READY_FRAME_MS;
        if (deadline > x->load_deadline_ms)
            deadline = x->load_deadline_ms;
        int rc = exec_zygote_wait_ready(&x->z, deadline, why, sizeof why);
        if (rc == EXEC_PROTO_OK) {
            became_ready(i);
            send_state(i, 1);
        } else {
            went_down(i, rc == EXEC_PROTO_EOF ? "it ended before it was ready" : why);
        }
        return;
    }
    /* between spawns a zygote says nothing: this is end of file, or a broken zygote */
    char c;
    ssize_t n = recv(x->z.ctl_fd, &c, 1, MSG_DONTWAIT | MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    went_down(i, n == 0 ? "its control channel closed"
                              : "it wrote to its control channel unasked");
}

void
exec_loader_service(const struct pollfd *p, int n)
{
    for (int j = 0; j < n; j++) {
        if (p[j].revents == 0)
            continue;
        for (int i = 0; i < L.n; i++)
            if (L.k[i].z.ctl_fd == p[j].fd)
                readable(i);
    }
    int64_t now = clock_mono_ms();
    for (int i = 0; i < L.n; i++) {
        struct xk *x = &L.k[i];
        char why[700];
        if (x->state == XK_LOADING && now >= x->load_deadline_ms) {
            snprintf(why, sizeof why, "not ready within --load-timeout-ms (%lld ms)",
                     (long long)L.cfg->load_timeout_ms);
            went_down(i, why);
        } else if (x->state == XK_DOWN && now >= x->restart_at_ms) {
            if (start_one(i, now + L.cfg->load_timeout_ms, why, sizeof why) != 0) {
                log_error("exec kind %s: %s", x->name, why);
                went_down(i, "it could not be started");
            }
        } else if (x->state == XK_UP && x->announce_at_ms != 0 && now >= x->announce_at_ms) {
            x->announce_at_ms = 0;
            send_state(i, 1);     /* workers without its child are replaced now */
        }
    }
    if (now >= L.next_reap_ms) {
        /* a zygote that died while a child of its own holds its channel open */
        L.next_reap_ms = now + REAP_TICK_MS;
        for (int i = 0; i < L.n; i++) {
            struct xk *x = &L.k[i];
            siginfo_t si = {0};
            /* WNOWAIT: look without reaping; went_down() reaps it with its group */
            if (x->z.pid > 0 && x->state != XK_DOWN &&
                waitid(P_PID, (id_t)x->z.pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                si.si_pid == x->z.pid)
                went_down(i, "it exited");
        }
    }
}

/* One child of zygote i into *c; 0, or -1 (logged; c empty). */
static int
spawn_one(int i, struct exec_child *c, int64_t deadline_ms)
{
    struct xk *x = &L.k[i];
    char why[700];
    *c = (struct exec_child){.pid = -1, .fd = -1, .pidfd = -1};
    if (x->state != XK_UP)
        return -1;
    int rc = exec_zygote_spawn(&x->z, c, deadline_ms, why, sizeof why);
    if (rc == EXEC_PROTO_OK)
        return 0;
    if (rc == EXEC_PROTO_REFUSED) {
        /* the zygote is in step and may do better later: announce it again after a
         * back-off, so that the workers left without its child are replaced then */
        x->refuse_backoff_ms = x->refuse_backoff_ms == 0 ? BACKOFF_MIN_MS
                               : x->refuse_backoff_ms * 2 > BACKOFF_MAX_MS
                                   ? BACKOFF_MAX_MS : x->refuse_backoff_ms * 2;
        if (x->announce_at_ms == 0)
            x->announce_at_ms = clock_mono_ms() + x->refuse_backoff_ms;
        log_warn("exec kind %s: %s; a worker goes without it (tried again in %d ms)",
                 x->name, why, x->refuse_backoff_ms);
        return -1;
    }
    /* out of step: a late answer would be read as the next one's */
    went_down(i, why);
    return -1;
}

static uint64_t
spawn_set(struct exec_child out[CONFIG_MAX_EXEC_KINDS], int64_t deadline_ms, int validators)
{
    uint64_t missing = 0;
    for (int i = 0; i < CONFIG_MAX_EXEC_KINDS; i++)
        out[i] = (struct exec_child){.pid = -1, .fd = -1, .pidfd = -1};
    for (int i = 0; i < L.n; i++) {
        if (validators && !(L.k[i].state == XK_UP && L.k[i].z.validate))
            continue;
        if (spawn_one(i, &out[i], deadline_ms) != 0)
            missing |= UINT64_C(1) << i;
    }
    return missing;
}

uint64_t
exec_loader_spawn(struct exec_child out[CONFIG_MAX_EXEC_KINDS], int64_t deadline_ms)
{
    return spawn_set(out, deadline_ms, 0);
}

uint64_t
exec_loader_spawn_validators(struct exec_child out[CONFIG_MAX_EXEC_KINDS], int64_t deadline_ms,
                             int *seq)
{
    *seq = ++L.push_seq;
    return spawn_set(out, deadline_ms, 1);
}

void
exec_loader_push_validators(int http_sock, int generation)
{
    struct exec_child c[CONFIG_MAX_EXEC_KINDS];
    int seq;
    exec_loader_spawn_validators(c, clock_mono_ms() + EXEC_LOADER_SPAWN_MS, &seq);
    for (int i = 0; i < L.n; i++) {
        if (c[i].fd < 0)
            continue;
        if (exec_validate_send(http_sock, i, generation, seq, &c[i]) != 0)
            log_warn("exec kind %s: a validate child could not be handed to the HTTP "
                     "process: %s", L.k[i].name, strerror(errno));
        close(c[i].fd);                 /* ours: the HTTP process has its own copies */
        if (c[i].pidfd >= 0)
            close(c[i].pidfd);
    }
}

void
exec_loader_close_inherited(void)
{
    for (int i = 0; i < L.n; i++) {
        if (L.k[i].z.ctl_fd >= 0)
            close(L.k[i].z.ctl_fd);
        L.k[i].z.ctl_fd = -1;
        L.k[i].z.pid = -1;
    }
}

void
exec_loader_stop(int64_t grace_ms)
{
    for (int i = 0; i < L.n; i++) {
        if (L.k[i].z.ctl_fd >= 0)
            close(L.k[i].z.ctl_fd);     /* end of file: the zygote exits */
        L.k[i].z.ctl_fd = -1;
    }
    int64_t until = clock_mono_ms() + grace_ms;
    for (int i = 0; i < L.n; i++) {
        char how[128];
        int64_t left = until - clock_mono_ms();
        /* one still loading (a restart) is of no use to anyone: at once */
        if (L.k[i].state == XK_LOADING)
            left = 0;
        kill_and_reap(&L.k[i], left > 0 ? left : 0, how, sizeof how);
        exec_buf_free(&L.k[i].z.buf);
        L.k[i].state = XK_DOWN;
    }
}
