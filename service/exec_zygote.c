/* exec_zygote.c -- warmpool's side of an exec kind's zygote and children: command
 * splitting, starting the zygote, the ready handshake, spawning children, task and
 * validate round trips, killing a child by pid. See exec_zygote.h for the contract
 * and docs/exec-kinds.md for the protocol. */
#include "service/exec_zygote.h"
#include "common/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define CTL_FD 3                /* where the zygote finds its control channel */
#define HELLO_SEND_MS 5000

static int
fail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int
fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* ---------------------------------------------------------------- command splitting */

void
exec_argv_free(char **argv)
{
    if (argv == NULL)
        return;
    for (char **p = argv; *p != NULL; p++)
        free(*p);
    free(argv);
}

char **
exec_command_split(const char *cmd, char *err, size_t errlen)
{
    size_t n = strlen(cmd), nwords = 0;
    char **argv = calloc(n / 2 + 2, sizeof *argv);  /* at most one word per 2 bytes */
    char *word = malloc(n + 1);
    if (argv == NULL || word == NULL)
        goto oom;
    const char *p = cmd;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        if (*p == '\0')
            break;
        size_t w = 0;
        while (*p != '\0' && *p != ' ' && *p != '\t' && *p != '\n') {
            if (*p == '\\') {
                if (p[1] == '\0') {
                    fail(err, errlen, -1, "the command ends with a backslash");
                    goto bad;
                }
                if (p[1] != '\n')       /* backslash-newline joins lines */
                    word[w++] = p[1];
                p += 2;
            } else if (*p == '\'') {
                const char *end = strchr(p + 1, '\'');
                if (end == NULL) {
                    fail(err, errlen, -1, "unterminated ' in the command");
                    goto bad;
                }
                memcpy(word + w, p + 1, (size_t)(end - p - 1));
                w += (size_t)(end - p - 1);
                p = end + 1;
            } else if (*p == '"') {
                for (p++; *p != '"'; p++) {
                    if (*p == '\0') {
                        fail(err, errlen, -1, "unterminated \" in the command");
                        goto bad;
                    }
                    if (*p == '\\' && p[1] != '\0' && strchr("\\\"$`\n", p[1]) != NULL) {
                        if (p[1] != '\n')
                            word[w++] = p[1];
                        p++;
                    } else {
                        word[w++] = *p;
                    }
                }
                p++;
            } else {
                word[w++] = *p++;
            }
        }
        if ((argv[nwords] = malloc(w + 1)) == NULL)
            goto oom;
        memcpy(argv[nwords], word, w);
        argv[nwords++][w] = '\0';
    }
    if (nwords == 0) {
        fail(err, errlen, -1, "the command is empty");
        goto bad;
    }
    free(word);
    return argv;
oom:
    fail(err, errlen, -1, "out of memory");
bad:
    free(word);
    exec_argv_free(argv);
    return NULL;
}

/* ---------------------------------------------------------------- the zygote */

/* environ less WARMPOOL_*, plus the protocol's three variables. Built before fork, so
 * the child allocates nothing. Free with free() (the strings but the three are
 * environ's). */
static char **
zygote_env(const char *kind, char vars[3][128])
{
    size_t n = 0;
    for (char **e = environ; e != NULL && *e != NULL; e++)
        n++;
    char **env = calloc(n + 4, sizeof *env);
    if (env == NULL)
        return NULL;
    size_t k = 0;
    for (char **e = environ; e != NULL && *e != NULL; e++)
        if (strncmp(*e, "WARMPOOL_", 9) != 0)
            env[k++] = *e;
    snprintf(vars[0], 128, "%s=%d", EXEC_PROTO_ENV_FD, CTL_FD);
    snprintf(vars[1], 128, "%s=%d", EXEC_PROTO_ENV_VERSION, EXEC_PROTO_VERSION);
    snprintf(vars[2], 128, "%s=%s", EXEC_PROTO_ENV_KIND, kind);
    for (int i = 0; i < 3; i++)
        env[k++] = vars[i];
    return env;
}

/* In the forked child: set up descriptors, signals and the death signal, then exec.
 * Only async-signal-safe calls (and snprintf into a stack buffer) from here on. */
static void __attribute__((noreturn))
zygote_exec(char *const argv[], char **env, int end, int devnull, pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)            /* the parent died before prctl took effect */
        _exit(1);
    setpgid(0, 0);                      /* a terminal's ^C goes to warmpool alone */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);  /* the supervisor blocks what its signalfd reads */
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            signal(s, SIG_DFL);
    int hi = fcntl(end, F_DUPFD_CLOEXEC, 10);
    if (hi < 0 || dup2(devnull, 0) < 0 || dup2(2, 1) < 0 || dup2(hi, CTL_FD) < 0)
        _exit(126);
    syscall(SYS_close_range, CTL_FD + 1, ~0U, 0);
    execvpe(argv[0], argv, env);

    /* Tell warmpool why, in the protocol's words, on the channel. */
    int e = errno;
    char msg[400], frame[EXEC_PROTO_HEADER_BYTES + 512];
    snprintf(msg, sizeof msg, "cannot execute '%.200s': %s", argv[0], strerror(e));
    for (char *q = msg; *q != '\0'; q++)
        if (*q == '"' || *q == '\\' || (unsigned char)*q < 0x20 ||
            (unsigned char)*q >= 0x80)
            *q = '?';                   /* keep the JSON valid whatever the path holds */
    int body = snprintf(frame + EXEC_PROTO_HEADER_BYTES, sizeof frame - EXEC_PROTO_HEADER_BYTES,
                        "{\"type\":\"load_failed\",\"message\":\"%s\"}", msg);
    frame[0] = frame[1] = 0;
    frame[2] = (char)((body >> 8) & 0xFF);
    frame[3] = (char)(body & 0xFF);
    if (write(CTL_FD, frame, (size_t)body + EXEC_PROTO_HEADER_BYTES) < 0)
        e = 0;
    free(env);      /* for valgrind, which checks this child's leaks: one thread only here */
    _exit(127);
}

int
exec_zygote_start(struct exec_zygote *z, char *const argv[], const char *kind,
                  const char *config, size_t max_frame_bytes, char *err, size_t errlen)
{
    memset(z, 0, sizeof *z);
    z->pid = -1;
    z->ctl_fd = -1;
    z->load_ms = -1;
    z->max_frame_bytes = max_frame_bytes;
    int rc = exec_proto_encode_hello(kind, config, max_frame_bytes, &z->buf, err, errlen);
    if (rc != EXEC_PROTO_OK)
        return -1;
    char vars[3][128];
    char **env = zygote_env(kind, vars);
    int ch[2] = {-1, -1};
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (env == NULL || devnull < 0 || exec_proto_channel(ch) != 0) {
        fail(err, errlen, -1, "starting the zygote of %s: %s", kind,
             env == NULL ? "out of memory" : strerror(errno));
        goto fail;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fail(err, errlen, -1, "fork for the zygote of %s: %s", kind, strerror(errno));
        goto fail;
    }
    if (pid == 0)
        zygote_exec(argv, env, ch[1], devnull, parent);
    close(ch[1]);
    close(devnull);
    free(env);
    z->pid = pid;
    z->ctl_fd = ch[0];
    /* A hello of ordinary size fits the socket's buffer, so this does not wait for the
     * zygote to read it. If it fails (the zygote died at once, or never reads a huge
     * config), exec_zygote_wait_ready() reports what follows: EOF, or no ready in time. */
    char ignored[128];
    (void)exec_proto_send(z->ctl_fd, z->buf.data, z->buf.len, -1,
                          clock_mono_ms() + HELLO_SEND_MS, ignored, sizeof ignored);
    return 0;
fail:
    free(env);
    if (devnull >= 0)
        close(devnull);
    if (ch[0] >= 0) {
        close(ch[0]);
        close(ch[1]);
    }
    exec_buf_free(&z->buf);
    return -1;
}

int
exec_zygote_wait_ready(struct exec_zygote *z, int64_t deadline_ms, char *err, size_t errlen)
{
    struct exec_msg m;
    char why[600];
    int rc = exec_proto_recv_msg(z->ctl_fd, &z->buf, z->max_frame_bytes, deadline_ms,
                                 EXEC_MSG_BIT(EXEC_MSG_READY) |
                                 EXEC_MSG_BIT(EXEC_MSG_LOAD_FAILED),
                                 &m, NULL, why, sizeof why);
    if (rc == EXEC_PROTO_EOF)
        return fail(err, errlen, rc, "the zygote exited before it was ready");
    if (rc == EXEC_PROTO_TIMEOUT)
        return fail(err, errlen, rc, "the zygote was not ready in time");
    if (rc != EXEC_PROTO_OK)
        return fail(err, errlen, rc, "the zygote broke the protocol: %s", why);
    if (m.type == EXEC_MSG_LOAD_FAILED) {
        rc = fail(err, errlen, EXEC_PROTO_REFUSED, "%s", m.message);
    } else if (m.protocol != EXEC_PROTO_VERSION) {
        rc = fail(err, errlen, EXEC_PROTO_REFUSED,
                  "the zygote speaks protocol %d; this warmpool speaks %d", m.protocol,
                  EXEC_PROTO_VERSION);
    } else {
        z->context_bytes = m.context_bytes;
        z->load_ms = m.load_ms;
        z->validate = m.validate;
    }
    exec_msg_clear(&m);
    return rc;
}

static int
pidfd_open_compat(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

/* The parent pid of pid from /proc/PID/stat, or -1. */
static pid_t
parent_of(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');     /* the command name may hold spaces and ')' */
    int ppid;
    char state;
    if (p == NULL || sscanf(p + 1, " %c %d", &state, &ppid) != 2)
        return -1;
    return ppid;
}

int
exec_zygote_spawn(struct exec_zygote *z, struct exec_child *c, int64_t deadline_ms, char *err,
                  size_t errlen)
{
    *c = (struct exec_child){.pid = -1, .fd = -1, .pidfd = -1};
    int ch[2];
    char why[600];
    if (exec_proto_channel(ch) != 0)
        return fail(err, errlen, EXEC_PROTO_IO, "socketpair: %s", strerror(errno));
    int rc = exec_proto_encode_spawn(z->max_frame_bytes, &z->buf, why, sizeof why);
    if (rc == EXEC_PROTO_OK)
        rc = exec_proto_send(z->ctl_fd, z->buf.data, z->buf.len, ch[1], deadline_ms, why,
                             sizeof why);
    close(ch[1]);               /* the zygote has its copy now; the child will keep it */
    struct exec_msg m = {.type = EXEC_MSG_COUNT};
    if (rc == EXEC_PROTO_OK)
        rc = exec_proto_recv_msg(z->ctl_fd, &z->buf, z->max_frame_bytes, deadline_ms,
                                 EXEC_MSG_BIT(EXEC_MSG_SPAWNED) |
                                 EXEC_MSG_BIT(EXEC_MSG_SPAWN_FAILED),
                                 &m, NULL, why, sizeof why);
    if (rc != EXEC_PROTO_OK) {
        close(ch[0]);
        if (rc == EXEC_PROTO_EOF)
            return fail(err, errlen, rc, "the zygote is gone (%s)", why);
        if (rc == EXEC_PROTO_TIMEOUT)
            return fail(err, errlen, rc, "the zygote did not answer spawn in time");
        return fail(err, errlen, rc, "spawn: %s", why);
    }
    if (m.type == EXEC_MSG_SPAWN_FAILED) {
        close(ch[0]);
        rc = fail(err, errlen, EXEC_PROTO_REFUSED, "the zygote could not spawn: %s",
                  m.message);
        exec_msg_clear(&m);
        return rc;
    }
    pid_t pid = m.pid;
    exec_msg_clear(&m);
    /* Order matters: open the pidfd first, then see the channel still open. A child
     * alive after the pidfd was opened was alive when it was, so the pidfd is its. */
    int pidfd = pidfd_open_compat(pid);
    struct pollfd p = {.fd = ch[0], .events = POLLIN};
    int hung = poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR));
    pid_t ppid = parent_of(pid);
    if (hung || ppid != z->pid) {
        if (pidfd >= 0)
            close(pidfd);
        close(ch[0]);
        return fail(err, errlen, EXEC_PROTO_REFUSED,
                    hung ? "child %d closed its channel at once"
                         : "the zygote named pid %d, which is not its child", (int)pid);
    }
    *c = (struct exec_child){.pid = pid, .fd = ch[0], .pidfd = pidfd};
    return EXEC_PROTO_OK;
}

void
exec_zygote_stop(struct exec_zygote *z, int64_t grace_ms, int *status)
{
    int st = 0;
    if (z->ctl_fd >= 0) {
        close(z->ctl_fd);
        z->ctl_fd = -1;
    }
    if (z->pid > 0) {
        int64_t until = clock_mono_ms() + grace_ms;
        pid_t r;
        while ((r = waitpid(z->pid, &st, WNOHANG)) == 0 && clock_mono_ms() < until)
            clock_sleep_ms(5);
        if (r == 0) {
            kill(z->pid, SIGKILL);
            while ((r = waitpid(z->pid, &st, 0)) < 0 && errno == EINTR)
                ;
        }
        z->pid = -1;
    }
    if (status != NULL)
        *status = st;
    exec_buf_free(&z->buf);
}

/* ---------------------------------------------------------------- children */

static int
round_trip(struct exec_child *c, struct exec_buf *buf, size_t max, int64_t deadline_ms,
           unsigned expect, struct exec_msg *reply, char *err, size_t errlen)
{
    char why[600];
    int rc = exec_proto_send(c->fd, buf->data, buf->len, -1, deadline_ms, why, sizeof why);
    if (rc == EXEC_PROTO_OK)
        rc = exec_proto_recv_msg(c->fd, buf, max, deadline_ms, expect, reply, NULL, why,
                                 sizeof why);
    if (rc != EXEC_PROTO_OK)
        return fail(err, errlen, rc, "child %d: %s", (int)c->pid, why);
    return rc;
}

int
exec_child_usable(const struct exec_child *c)
{
    if (c == NULL || c->fd < 0)
        return 0;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    int n;
    while ((n = poll(&p, 1, 0)) < 0 && errno == EINTR)
        ;
    return n == 0;              /* readable means EOF or unasked bytes: either way, done */
}

int
exec_child_task(struct exec_child *c, struct exec_buf *buf, size_t max_frame_bytes,
                const struct exec_task *t, int64_t deadline_ms, struct exec_msg *reply,
                char *err, size_t errlen)
{
    memset(reply, 0, sizeof *reply);
    int rc = exec_proto_encode_task(t->id, t->attempt, t->timeout_ms, t->deadline_ms, t->input,
                                    t->input_len, max_frame_bytes, buf, err, errlen);
    if (rc != EXEC_PROTO_OK)
        return rc;
    rc = round_trip(c, buf, max_frame_bytes, deadline_ms,
                    EXEC_MSG_BIT(EXEC_MSG_RESULT) | EXEC_MSG_BIT(EXEC_MSG_ERROR), reply, err,
                    errlen);
    if (rc == EXEC_PROTO_OK && reply->id != t->id) {
        rc = fail(err, errlen, EXEC_PROTO_MALFORMED,
                  "child %d: '%s' for task %" PRId64 " while task %" PRId64 " runs",
                  (int)c->pid, exec_msg_type_name(reply->type), reply->id, t->id);
        exec_msg_clear(reply);
    }
    return rc;
}

int
exec_child_validate(struct exec_child *c, struct exec_buf *buf, size_t max_frame_bytes,
                    const char *input, size_t input_len, int64_t deadline_ms,
                    struct exec_msg *reply, char *err, size_t errlen)
{
    memset(reply, 0, sizeof *reply);
    int rc = exec_proto_encode_validate(input, input_len, max_frame_bytes, buf, err, errlen);
    if (rc != EXEC_PROTO_OK)
        return rc;
    return round_trip(c, buf, max_frame_bytes, deadline_ms,
                      EXEC_MSG_BIT(EXEC_MSG_VALID) | EXEC_MSG_BIT(EXEC_MSG_INVALID), reply,
                      err, errlen);
}

/* Waits up to wait_ms for fd to reach EOF (reading and dropping what comes). 0 at
 * EOF, -1 when the wait ran out. */
static int
wait_eof(int fd, int64_t wait_ms)
{
    int64_t until = clock_mono_ms() + wait_ms;
    char sink[4096];
    for (;;) {
        ssize_t n = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return 0;
        if (n > 0 || (n < 0 && errno == EINTR))
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return 0;           /* not a usable socket any more: nothing holds it open */
        int64_t left = until - clock_mono_ms();
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        poll(&p, 1, (int)(left > 1000 ? 1000 : left));
    }
}

static void
send_kill(const struct exec_child *c)
{
#ifdef SYS_pidfd_send_signal
    if (c->pidfd >= 0 && syscall(SYS_pidfd_send_signal, c->pidfd, SIGKILL, NULL, 0) == 0)
        return;
    if (c->pidfd >= 0)
        return;                 /* ESRCH: it is already gone; never kill a recycled pid */
#endif
    if (c->pid > 0)
        kill(c->pid, SIGKILL);
}

static void
child_forget(struct exec_child *c)
{
    if (c->fd >= 0)
        close(c->fd);
    if (c->pidfd >= 0)
        close(c->pidfd);
    *c = (struct exec_child){.pid = -1, .fd = -1, .pidfd = -1};
}

int
exec_child_kill(struct exec_child *c, int64_t wait_ms)
{
    if (c == NULL || c->fd < 0)
        return 0;
    send_kill(c);
    int rc = wait_eof(c->fd, wait_ms);
    child_forget(c);
    return rc;
}

/* Waits up to wait_ms for the child to exit: 0 gone, -1 still there. */
static int
wait_exit(const struct exec_child *c, int64_t wait_ms)
{
    int64_t until = clock_mono_ms() + wait_ms;
    for (;;) {
        if (c->pidfd >= 0) {
            struct pollfd p = {.fd = c->pidfd, .events = POLLIN};
            if (poll(&p, 1, 0) > 0)
                return 0;
        } else if (kill(c->pid, 0) != 0 && errno == ESRCH) {
            return 0;
        }
        int64_t left = until - clock_mono_ms();
        if (left <= 0)
            return -1;
        if (c->pidfd >= 0) {
            struct pollfd p = {.fd = c->pidfd, .events = POLLIN};
            poll(&p, 1, (int)(left > 1000 ? 1000 : left));
        } else {
            clock_sleep_ms(left > 5 ? 5 : left);
        }
    }
}

int
exec_child_close(struct exec_child *c, int64_t wait_ms)
{
    if (c == NULL || c->fd < 0)
        return 0;
    close(c->fd);
    c->fd = -1;
    int rc = 0;
    if (wait_exit(c, wait_ms) != 0) {
        send_kill(c);
        rc = wait_exit(c, 5000) == 0 ? 1 : -1;
    }
    child_forget(c);
    return rc;
}
