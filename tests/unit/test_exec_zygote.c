/* test_exec_zygote.c -- warmpool's side of exec kinds (service/exec_zygote.c) against
 * real zygotes: the misbehaving C zygote of tests/exec/test_zygote.c (WP_TEST_ZYGOTE)
 * and small shell scripts. Command splitting, the start-up environment, ready and
 * every refusal, spawn, tasks and each way a child can break, kill by pid, and death
 * with the zygote. */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/clock.h"
#include "service/exec_zygote.h"

#ifndef WP_TEST_ZYGOTE
#error "WP_TEST_ZYGOTE: the path of wp-test-zygote"
#endif

#define MAX EXEC_PROTO_FRAME_MAX_DEFAULT

/* ---------------------------------------------------------------- splitting */

static void
split_is(const char *cmd, const char *const want[])
{
    char err[128];
    char **argv = exec_command_split(cmd, err, sizeof err);
    if (argv == NULL)
        fail_msg("%s: %s", cmd, err);
    size_t i;
    for (i = 0; want[i] != NULL; i++) {
        if (argv[i] == NULL)
            fail_msg("%s: word %zu missing", cmd, i);
        assert_string_equal(argv[i], want[i]);
    }
    assert_null(argv[i]);
    exec_argv_free(argv);
}

static void
test_split(void **state)
{
    (void)state;
    split_is("python3 kind.py", (const char *const[]){"python3", "kind.py", NULL});
    split_is("  a\t b\n c  ", (const char *const[]){"a", "b", "c", NULL});
    split_is("a 'b c' \"d e\"", (const char *const[]){"a", "b c", "d e", NULL});
    split_is("a'b'\"c\"d", (const char *const[]){"abcd", NULL});
    split_is("x '' \"\"", (const char *const[]){"x", "", "", NULL});
    split_is("a\\ b c\\\\d", (const char *const[]){"a b", "c\\d", NULL});
    split_is("'it''s' '\\n'", (const char *const[]){"its", "\\n", NULL});
    split_is("\"\\\"q\\\" \\$ \\a\"", (const char *const[]){"\"q\" $ \\a", NULL});
    split_is("a\\\nb", (const char *const[]){"ab", NULL});
    /* no expansion at all */
    split_is("$HOME ~ *.py `id` $(id)",
             (const char *const[]){"$HOME", "~", "*.py", "`id`", "$(id)", NULL});
    struct {
        const char *cmd, *says;
    } bad[] = {{"", "empty"}, {"   \t", "empty"}, {"a 'b", "unterminated '"},
               {"a \"b", "unterminated \""}, {"a \\", "backslash"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[128] = "";
        assert_null(exec_command_split(bad[i].cmd, err, sizeof err));
        assert_non_null(strstr(err, bad[i].says));
    }
    exec_argv_free(NULL);
}

/* ---------------------------------------------------------------- the zygote */

static int
start(struct exec_zygote *z, const char *mode, const char *config)
{
    char *const argv[] = {WP_TEST_ZYGOTE, (char *)mode, NULL};
    char err[256];
    int rc = exec_zygote_start(z, argv, "test.kind", config, MAX, err, sizeof err);
    if (rc != 0)
        fail_msg("start: %s", err);
    return rc;
}

static void
ready(struct exec_zygote *z, const char *mode)
{
    start(z, mode, "cfg");
    char err[256];
    int rc = exec_zygote_wait_ready(z, clock_mono_ms() + 10000, err, sizeof err);
    if (rc != EXEC_PROTO_OK)
        fail_msg("ready: %s %s", exec_proto_rc_name(rc), err);
}

static int
stop(struct exec_zygote *z)
{
    int st;
    exec_zygote_stop(z, 5000, &st);
    return st;
}

static void
test_ready_and_stop(void **state)
{
    (void)state;
    struct exec_zygote z;
    ready(&z, "ok");
    assert_int_equal(z.context_bytes, 12345);
    assert_int_equal(z.load_ms, 1);
    assert_int_equal(z.validate, 1);
    int st = stop(&z);               /* EOF on its channel: it leaves by itself */
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(z.ctl_fd, -1);
}

/* The zygote's start: fd 3 and 0-2 only, the protocol's variables, none of ours. */
static void
test_start_environment(void **state)
{
    (void)state;
    char dir[] = "/tmp/wp-exec-env.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char script[512];
    snprintf(script, sizeof script,
             "ls /proc/$$/fd > %s/fds; env > %s/env; ps -o pgid= -p $$ > %s/pgid", dir, dir,
             dir);
    setenv("WARMPOOL_API_TOKEN", "secret", 1);
    int leak[2];                /* open in this process, without close-on-exec */
    assert_int_equal(pipe(leak), 0);
    char *const argv[] = {"/bin/sh", "-c", script, NULL};
    struct exec_zygote z;
    char err[256];
    assert_int_equal(exec_zygote_start(&z, argv, "envkind", NULL, MAX, err, sizeof err), 0);
    assert_int_equal(exec_zygote_wait_ready(&z, clock_mono_ms() + 10000, err, sizeof err),
                     EXEC_PROTO_EOF);
    assert_non_null(strstr(err, "exited before it was ready"));
    pid_t zpid = z.pid;
    stop(&z);
    unsetenv("WARMPOOL_API_TOKEN");
    char path[600], text[4096];
    snprintf(path, sizeof path, "%s/fds", dir);
    FILE *f = fopen(path, "r");
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    /* 0-2 and the channel at 3; none of this process's descriptors (the shell may
     * hold one of its own, such as dash's 10) */
    char line[16];
    assert_true(strncmp(text, "0\n", 2) == 0);
    for (int i = 1; i <= 3; i++) {
        snprintf(line, sizeof line, "\n%d\n", i);
        assert_non_null(strstr(text, line));
    }
    for (int i = 0; i < 2; i++) {
        snprintf(line, sizeof line, "\n%d\n", leak[i]);
        assert_null(strstr(text, line));
        close(leak[i]);
    }
    snprintf(path, sizeof path, "%s/env", dir);
    f = fopen(path, "r");
    n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    assert_non_null(strstr(text, "WARMPOOL_EXEC_FD=3\n"));
    assert_non_null(strstr(text, "WARMPOOL_EXEC_PROTOCOL=1\n"));
    assert_non_null(strstr(text, "WARMPOOL_KIND=envkind\n"));
    assert_null(strstr(text, "WARMPOOL_API_TOKEN"));
    assert_non_null(strstr(text, "PATH="));
    snprintf(path, sizeof path, "%s/pgid", dir);
    f = fopen(path, "r");
    int pgid = 0;
    assert_int_equal(fscanf(f, "%d", &pgid), 1);
    fclose(f);
    assert_int_equal(pgid, zpid);           /* its own process group */
    char rm[600];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    assert_int_equal(system(rm), 0);
}

static void
refused(const char *mode, const char *const argv0, int want_rc, const char *says,
        int64_t wait_ms)
{
    struct exec_zygote z;
    char err[512] = "";
    char *const argv[] = {(char *)argv0, (char *)mode, NULL};
    assert_int_equal(exec_zygote_start(&z, argv, "k", "cfg", MAX, err, sizeof err), 0);
    int64_t t0 = clock_mono_ms();
    int rc = exec_zygote_wait_ready(&z, t0 + wait_ms, err, sizeof err);
    if (rc != want_rc || strstr(err, says) == NULL)
        fail_msg("%s: %s '%s', wanted %s '%s'", mode, exec_proto_rc_name(rc), err,
                 exec_proto_rc_name(want_rc), says);
    assert_true(clock_mono_ms() - t0 < wait_ms + 1000);
    stop(&z);
}

static void
test_not_ready(void **state)
{
    (void)state;
    refused("load_failed", WP_TEST_ZYGOTE, EXEC_PROTO_REFUSED, "no context for config cfg",
            5000);
    refused("version2", WP_TEST_ZYGOTE, EXEC_PROTO_REFUSED,
            "the zygote speaks protocol 2; this warmpool speaks 1", 5000);
    refused("garbage", WP_TEST_ZYGOTE, EXEC_PROTO_MALFORMED, "broke the protocol", 5000);
    refused("oversized", WP_TEST_ZYGOTE, EXEC_PROTO_TOO_BIG, "over the limit", 5000);
    refused("exit", WP_TEST_ZYGOTE, EXEC_PROTO_EOF, "exited before it was ready", 5000);
    refused("never_ready", WP_TEST_ZYGOTE, EXEC_PROTO_TIMEOUT, "not ready in time", 300);
    refused("x", "/nonexistent/zygote", EXEC_PROTO_REFUSED,
            "cannot execute '/nonexistent/zygote': No such file or directory", 5000);
}

/* ---------------------------------------------------------------- children */

static struct exec_buf g_buf;

static int
task(struct exec_child *c, int64_t id, const char *input, int64_t wait_ms,
     struct exec_msg *reply, char *err, size_t errlen)
{
    struct exec_task t = {.id = id, .attempt = 2, .timeout_ms = wait_ms,
                          .deadline_ms = clock_now_ms() + wait_ms, .input = input,
                          .input_len = strlen(input)};
    return exec_child_task(c, &g_buf, MAX, &t, clock_mono_ms() + wait_ms, reply, err, errlen);
}

static void
spawn(struct exec_zygote *z, struct exec_child *c)
{
    char err[256];
    int rc = exec_zygote_spawn(z, c, clock_mono_ms() + 5000, err, sizeof err);
    if (rc != EXEC_PROTO_OK)
        fail_msg("spawn: %s %s", exec_proto_rc_name(rc), err);
    assert_true(c->pid > 0 && c->fd >= 0);
}

static int
alive(pid_t pid)
{
    return kill(pid, 0) == 0;
}

static void
test_tasks_and_validate(void **state)
{
    (void)state;
    struct exec_zygote z;
    struct exec_child a, b;
    struct exec_msg r;
    char err[512];
    ready(&z, "ok");
    spawn(&z, &a);
    spawn(&z, &b);
    assert_int_not_equal(a.pid, b.pid);
    assert_int_equal(task(&a, 10, "{\"text\":\"a\\nb\"}", 5000, &r, err, sizeof err), 0);
    assert_int_equal(r.type, EXEC_MSG_RESULT);
    assert_int_equal(r.id, 10);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(r.value, "echo"), "text")), "a\nb");
    assert_int_equal(json_integer_value(json_object_get(r.value, "pid")), a.pid);
    assert_int_equal(json_integer_value(json_object_get(r.value, "attempt")), 2);
    exec_msg_clear(&r);
    assert_int_equal(task(&b, 11, "{\"error\":\"bad_input\",\"retryable\":true,"
                                  "\"message\":\"no\"}", 5000, &r, err, sizeof err), 0);
    assert_int_equal(r.type, EXEC_MSG_ERROR);
    assert_string_equal(r.code, "bad_input");
    assert_string_equal(r.message, "no");
    assert_int_equal(r.retryable, 1);
    exec_msg_clear(&r);
    assert_int_equal(exec_child_validate(&a, &g_buf, MAX, "{\"bad\":1}", 9,
                                         clock_mono_ms() + 5000, &r, err, sizeof err), 0);
    assert_int_equal(r.type, EXEC_MSG_INVALID);
    assert_string_equal(r.message, "the input has 'bad'");
    exec_msg_clear(&r);
    assert_int_equal(exec_child_validate(&a, &g_buf, MAX, "1", 1, clock_mono_ms() + 5000, &r,
                                         err, sizeof err), 0);
    assert_int_equal(r.type, EXEC_MSG_VALID);
    /* close: the child leaves at EOF by itself */
    pid_t apid = a.pid;
    assert_int_equal(exec_child_close(&a, 5000), 0);
    assert_int_equal(a.fd, -1);
    assert_false(alive(apid));
    assert_int_equal(exec_child_close(&a, 10), 0);     /* twice: a no-op */
    assert_int_equal(exec_child_kill(&b, 5000), 0);
    assert_int_equal(exec_child_kill(NULL, 10), 0);
    int st = stop(&z);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    exec_buf_free(&g_buf);
}

/* Each way a child breaks the protocol is reported, and the child is then killed. */
static void
test_child_failures(void **state)
{
    (void)state;
    struct {
        const char *input;
        int rc;
        const char *says;
    } cases[] = {
        {"{\"exit\":3}", EXEC_PROTO_EOF, "closed the channel"},
        {"{\"garbage\":true}", EXEC_PROTO_MALFORMED, "not JSON"},
        {"{\"oversized\":true}", EXEC_PROTO_TOO_BIG, "over the limit"},
        {"{\"wrong_id\":true}", EXEC_PROTO_MALFORMED, "'result' for task 8 while task 7 runs"},
        {"{\"sleep_ms\":10000}", EXEC_PROTO_TIMEOUT, "no answer in time"},
    };
    struct exec_zygote z;
    ready(&z, "ok");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct exec_child c;
        struct exec_msg r;
        char err[512] = "";
        spawn(&z, &c);
        int64_t t0 = clock_mono_ms();
        int rc = task(&c, 7, cases[i].input, 300, &r, err, sizeof err);
        if (rc != cases[i].rc || strstr(err, cases[i].says) == NULL)
            fail_msg("%s: %s '%s'", cases[i].input, exec_proto_rc_name(rc), err);
        assert_true(clock_mono_ms() - t0 < 3000);
        assert_null(r.value);
        pid_t pid = c.pid;
        assert_int_equal(exec_child_kill(&c, 5000), 0);   /* EOF seen: it is gone */
        for (int k = 0; k < 100 && alive(pid); k++)       /* and reaped by the zygote */
            clock_sleep_ms(10);
        assert_false(alive(pid));
    }
    /* between tasks: a child that left, or wrote unasked, is seen before a task is sent */
    {
        struct exec_child c;
        struct exec_msg r;
        char err[256];
        spawn(&z, &c);
        assert_true(exec_child_usable(&c));
        assert_int_equal(task(&c, 1, "{}", 5000, &r, err, sizeof err), 0);
        exec_msg_clear(&r);
        assert_true(exec_child_usable(&c));
        kill(c.pid, SIGTERM);               /* idle: it leaves */
        struct pollfd p = {.fd = c.fd, .events = POLLIN};
        assert_int_equal(poll(&p, 1, 5000), 1);
        assert_false(exec_child_usable(&c));
        exec_child_kill(&c, 100);
        assert_false(exec_child_usable(&c));
        assert_false(exec_child_usable(NULL));
        int ch[2];
        assert_int_equal(exec_proto_channel(ch), 0);
        struct exec_child fake = {.pid = -1, .fd = ch[0], .pidfd = -1};
        assert_true(exec_child_usable(&fake));
        assert_int_equal(write(ch[1], "x", 1), 1);          /* bytes nobody asked for */
        assert_false(exec_child_usable(&fake));
        close(ch[0]);
        close(ch[1]);
    }
    /* the zygote still serves */
    struct exec_child c;
    struct exec_msg r;
    char err[256];
    spawn(&z, &c);
    assert_int_equal(task(&c, 1, "[]", 5000, &r, err, sizeof err), 0);
    exec_msg_clear(&r);
    exec_child_kill(&c, 5000);
    stop(&z);
    exec_buf_free(&g_buf);
}

static void
test_spawn_refusals(void **state)
{
    (void)state;
    struct {
        const char *mode;
        int rc;
        const char *says;
    } cases[] = {
        {"spawn_failed", EXEC_PROTO_REFUSED, "could not spawn: told to fail"},
        {"spawn_lies", EXEC_PROTO_REFUSED, "child 1 closed its channel at once"},
        {"spawn_dies", EXEC_PROTO_EOF, "the zygote is gone"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct exec_zygote z;
        struct exec_child c;
        char err[512] = "";
        ready(&z, cases[i].mode);
        int rc = exec_zygote_spawn(&z, &c, clock_mono_ms() + 5000, err, sizeof err);
        if (rc != cases[i].rc || strstr(err, cases[i].says) == NULL)
            fail_msg("%s: %s '%s'", cases[i].mode, exec_proto_rc_name(rc), err);
        assert_int_equal(c.fd, -1);
        assert_int_equal(c.pidfd, -1);
        stop(&z);
    }
}

/* A child dies with its zygote (PR_SET_PDEATHSIG), which dies with its starter. */
static void
test_children_die_with_the_zygote(void **state)
{
    (void)state;
    struct exec_zygote z;
    struct exec_child c;
    ready(&z, "ok");
    spawn(&z, &c);
    kill(z.pid, SIGKILL);
    struct pollfd p = {.fd = c.fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1);             /* EOF: the child is gone */
    char x;
    assert_int_equal(read(c.fd, &x, 1), 0);
    stop(&z);
    exec_child_kill(&c, 100);

    /* the zygote's starter dies: the zygote and its child follow */
    int sync[2];
    assert_int_equal(pipe(sync), 0);
    pid_t starter = fork();
    if (starter == 0) {
        struct exec_zygote z2;
        struct exec_child c2;
        char *const argv[] = {WP_TEST_ZYGOTE, NULL};
        char err[256];
        if (exec_zygote_start(&z2, argv, "k", NULL, MAX, err, sizeof err) != 0 ||
            exec_zygote_wait_ready(&z2, clock_mono_ms() + 5000, err, sizeof err) != 0 ||
            exec_zygote_spawn(&z2, &c2, clock_mono_ms() + 5000, err, sizeof err) != 0)
            _exit(1);
        int pids[2] = {z2.pid, c2.pid};
        if (write(sync[1], pids, sizeof pids) != sizeof pids)
            _exit(1);
        pause();
        _exit(0);
    }
    int pids[2];
    assert_int_equal(read(sync[0], pids, sizeof pids), sizeof pids);
    kill(starter, SIGKILL);
    waitpid(starter, NULL, 0);
    for (int k = 0; k < 200 && (alive(pids[0]) || alive(pids[1])); k++)
        clock_sleep_ms(10);
    assert_false(alive(pids[0]));
    assert_false(alive(pids[1]));
    close(sync[0]);
    close(sync[1]);
}

/* SIGTERM to a busy child: it finishes the task in hand, answers, then leaves. */
static void
test_sigterm_finishes_the_task(void **state)
{
    (void)state;
    struct exec_zygote z;
    struct exec_child c;
    struct exec_msg r;
    char err[256];
    ready(&z, "ok");
    spawn(&z, &c);
    struct exec_task t = {.id = 5, .attempt = 1, .timeout_ms = 5000, .deadline_ms = 0,
                          .input = "{\"sleep_ms\":300}", .input_len = 16};
    assert_int_equal(exec_proto_encode_task(t.id, t.attempt, t.timeout_ms, t.deadline_ms,
                                            t.input, t.input_len, MAX, &g_buf, err, sizeof err),
                     0);
    assert_int_equal(exec_proto_send(c.fd, g_buf.data, g_buf.len, -1, -1, err, sizeof err), 0);
    clock_sleep_ms(100);
    kill(c.pid, SIGTERM);
    assert_int_equal(exec_proto_recv_msg(c.fd, &g_buf, MAX, clock_mono_ms() + 5000,
                                         EXEC_MSG_BIT(EXEC_MSG_RESULT), &r, NULL, err,
                                         sizeof err), 0);
    assert_int_equal(r.id, 5);
    exec_msg_clear(&r);
    assert_int_equal(exec_proto_recv(c.fd, &g_buf, MAX, clock_mono_ms() + 5000, NULL, err,
                                     sizeof err), EXEC_PROTO_EOF);
    exec_child_kill(&c, 100);
    stop(&z);
    exec_buf_free(&g_buf);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_ready_and_stop),
        cmocka_unit_test(test_start_environment),
        cmocka_unit_test(test_not_ready),
        cmocka_unit_test(test_tasks_and_validate),
        cmocka_unit_test(test_child_failures),
        cmocka_unit_test(test_spawn_refusals),
        cmocka_unit_test(test_children_die_with_the_zygote),
        cmocka_unit_test(test_sigterm_finishes_the_task),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
