/* test_zygote.c -- a minimal zygote in C for the edge cases of the exec-kind protocol
 * (docs/exec-kinds.md): it misbehaves on purpose, as told by argv[1] (the zygote) or
 * by the task's input (its children). Used by tests/unit/test_exec_zygote.c,
 * tests/unit/test_exec_validate.c and tests/integration/test_exec.c.
 *
 *   wp-test-zygote [MODE]   MODE, what the zygote does after hello:
 *     ok (default)   ready (context_bytes 12345, load_ms 1, validate true)
 *     never_ready    nothing: waits for EOF
 *     load_failed    load_failed "no context for config <config>"
 *     exit           exits 3 before reading hello
 *     garbage        a frame that is not JSON instead of ready
 *     oversized      a header announcing 2 GiB instead of ready
 *     version2       ready with protocol 2
 *     spawn_failed   ready; every spawn answered spawn_failed
 *     spawn_lies     ready; every spawn answered with pid 1
 *     spawn_dies     ready; exits 4 at the first spawn
 *
 * A child answers a task by its input: {"sleep_ms": N} sleeps, then answers;
 * {"exit": N} exits N without answering; {"garbage": true} / {"oversized": true}
 * write a bad frame; {"wrong_id": true} answers for id + 1; {"error": "code",
 * "retryable": B, "message": "..."} answers an error; anything else answers
 * {"echo": input, "pid": PID, "attempt": A}. Validate: an object with "bad" is
 * invalid; with "exit": N the child exits N without answering; with "garbage" it writes
 * a frame that is not JSON. SIGTERM: finish the task in hand, then exit 0. */
#include "service/exec_proto.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_term, g_busy;
static size_t g_max = EXEC_PROTO_FRAME_MAX_DEFAULT;

static void
on_term(int sig)
{
    (void)sig;
    if (!g_busy)
        _exit(0);
    g_term = 1;
}

static void
die(const char *what, const char *err)
{
    fprintf(stderr, "wp-test-zygote[%d]: %s: %s\n", (int)getpid(), what, err);
    exit(9);
}

static void
send_json(int fd, json_t *m)      /* steals m */
{
    struct exec_buf b = {0};
    char err[256];
    if (exec_proto_encode_json(m, g_max, &b, err, sizeof err) != EXEC_PROTO_OK ||
        exec_proto_send(fd, b.data, b.len, -1, -1, err, sizeof err) != EXEC_PROTO_OK)
        die("send", err);
    json_decref(m);
    exec_buf_free(&b);
}

static void
send_raw(int fd, const char *bytes, size_t n)
{
    if (write(fd, bytes, n) != (ssize_t)n)
        die("write", strerror(errno));
}

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void __attribute__((noreturn))
child_main(int fd)
{
    struct sigaction sa = {.sa_handler = on_term};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGCHLD, SIG_DFL);
    struct exec_buf b = {0};
    for (;;) {
        struct exec_msg m;
        char err[512];
        int rc = exec_proto_recv_msg(fd, &b, g_max, -1,
                                     EXEC_MSG_BIT(EXEC_MSG_TASK) |
                                     EXEC_MSG_BIT(EXEC_MSG_VALIDATE), &m, NULL, err,
                                     sizeof err);
        if (rc == EXEC_PROTO_EOF)
            _exit(0);
        if (rc != EXEC_PROTO_OK)
            die("child recv", err);
        g_busy = 1;
        json_t *in = m.value;
        if (m.type == EXEC_MSG_VALIDATE && json_is_object(in) && json_object_get(in, "exit")) {
            _exit((int)json_integer_value(json_object_get(in, "exit")));
        } else if (m.type == EXEC_MSG_VALIDATE && json_is_object(in) &&
                   json_object_get(in, "garbage")) {
            send_raw(fd, "\0\0\0\5hello", 9);
        } else if (m.type == EXEC_MSG_VALIDATE) {
            send_json(fd, json_is_object(in) && json_object_get(in, "bad")
                              ? json_pack("{s:s, s:s}", "type", "invalid", "message",
                                          "the input has 'bad'")
                              : json_pack("{s:s}", "type", "valid"));
        } else if (json_is_object(in) && json_object_get(in, "exit")) {
            _exit((int)json_integer_value(json_object_get(in, "exit")));
        } else if (json_is_object(in) && json_object_get(in, "garbage")) {
            send_raw(fd, "\0\0\0\5hello", 9);
        } else if (json_is_object(in) && json_object_get(in, "oversized")) {
            send_raw(fd, "\x7f\xff\xff\xff{", 5);
        } else if (json_is_object(in) && json_object_get(in, "error")) {
            json_t *msg = json_object_get(in, "message");
            send_json(fd, json_pack("{s:s, s:I, s:O, s:s, s:b}", "type", "error", "id",
                                    (json_int_t)m.id, "code", json_object_get(in, "error"),
                                    "message", msg ? json_string_value(msg) : "told to fail",
                                    "retryable",
                                    json_is_true(json_object_get(in, "retryable"))));
        } else {
            if (json_is_object(in) && json_object_get(in, "sleep_ms"))
                sleep_ms((long)json_integer_value(json_object_get(in, "sleep_ms")));
            int64_t id = m.id + (json_is_object(in) && json_object_get(in, "wrong_id"));
            send_json(fd, json_pack("{s:s, s:I, s:{s:O, s:i, s:i}}", "type", "result", "id",
                                    (json_int_t)id, "result", "echo", in, "pid",
                                    (int)getpid(), "attempt", m.attempt));
        }
        exec_msg_clear(&m);
        g_busy = 0;
        if (g_term)
            _exit(0);
    }
}

int
main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "ok";
    const char *fdtext = getenv(EXEC_PROTO_ENV_FD);
    if (fdtext == NULL)
        die("start", "WARMPOOL_EXEC_FD is not set");
    int ctl = atoi(fdtext);
    if (strcmp(mode, "exit") == 0)
        return 3;
    signal(SIGTERM, SIG_IGN);           /* the zygote leaves when its channel closes */
    signal(SIGINT, SIG_IGN);
    signal(SIGCHLD, SIG_IGN);           /* children are reaped by the kernel */
    static struct exec_buf b;           /* static: still reachable at exit, for LSan */
    struct exec_msg m;
    char err[512];
    if (exec_proto_recv_msg(ctl, &b, EXEC_PROTO_FRAME_MAX_DEFAULT, -1,
                            EXEC_MSG_BIT(EXEC_MSG_HELLO), &m, NULL, err, sizeof err) != 0)
        die("hello", err);
    g_max = m.max_frame_bytes;
    char config[256];
    snprintf(config, sizeof config, "%s", m.config ? m.config : "(none)");
    exec_msg_clear(&m);

    if (strcmp(mode, "never_ready") == 0) {
        char c;
        while (read(ctl, &c, 1) > 0)
            ;
        return 0;
    } else if (strcmp(mode, "load_failed") == 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "no context for config %s", config);
        send_json(ctl, json_pack("{s:s, s:s}", "type", "load_failed", "message", msg));
        return 1;
    } else if (strcmp(mode, "garbage") == 0) {
        send_raw(ctl, "\0\0\0\3{{{", 7);
    } else if (strcmp(mode, "oversized") == 0) {
        send_raw(ctl, "\x80\0\0\0", 4);
    } else {
        send_json(ctl, json_pack("{s:s, s:i, s:i, s:i, s:b}", "type", "ready", "protocol",
                                 strcmp(mode, "version2") == 0 ? 2 : EXEC_PROTO_VERSION,
                                 "context_bytes", 12345, "load_ms", 1, "validate", 1));
    }
    for (;;) {
        int child_fd;
        int rc = exec_proto_recv_msg(ctl, &b, g_max, -1, EXEC_MSG_BIT(EXEC_MSG_SPAWN), &m,
                                     &child_fd, err, sizeof err);
        if (rc == EXEC_PROTO_EOF)
            return 0;
        if (rc != EXEC_PROTO_OK)
            die("spawn", err);
        exec_msg_clear(&m);
        if (strcmp(mode, "spawn_dies") == 0)
            return 4;
        if (child_fd < 0 || strcmp(mode, "spawn_failed") == 0) {
            send_json(ctl, json_pack("{s:s, s:s}", "type", "spawn_failed", "message",
                                     child_fd < 0 ? "no descriptor came" : "told to fail"));
            if (child_fd >= 0)
                close(child_fd);
            continue;
        }
        if (strcmp(mode, "spawn_lies") == 0) {
            close(child_fd);
            send_json(ctl, json_pack("{s:s, s:i}", "type", "spawned", "pid", 1));
            continue;
        }
        pid_t zygote = getpid();
        pid_t pid = fork();
        if (pid == 0) {
            close(ctl);
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != zygote)
                _exit(0);
            exec_buf_free(&b);
            child_main(child_fd);
        }
        close(child_fd);
        if (pid < 0)
            send_json(ctl, json_pack("{s:s, s:s}", "type", "spawn_failed", "message",
                                     strerror(errno)));
        else
            send_json(ctl, json_pack("{s:s, s:i}", "type", "spawned", "pid", (int)pid));
    }
}
