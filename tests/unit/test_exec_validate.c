/* test_exec_validate.c -- exec kinds' validation in the HTTP process
 * (service/exec_validate.c) with real children of the misbehaving C zygote
 * (tests/exec/test_zygote.c, WP_TEST_ZYGOTE): an input with "bad" is refused by them.
 * The hand-over of children over a SOCK_SEQPACKET pair and which one is kept (the
 * newest by generation, then hand-out number), a child that died (inputs accepted
 * unvalidated, logged), a child that breaks the protocol, an input over a frame. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/clock.h"
#include "common/log.h"
#include "service/config.h"
#include "service/exec_validate.h"
#include "service/kinds.h"

#ifndef WP_TEST_ZYGOTE
#error "WP_TEST_ZYGOTE: the path of wp-test-zygote"
#endif

static struct exec_zygote g_z;
static struct config g_cfg;
static int g_pair[2];           /* [0]: the HTTP process's end, [1]: the loaders' */

static struct exec_child
spawn_child(void)
{
    struct exec_child c;
    char err[256];
    if (exec_zygote_spawn(&g_z, &c, clock_mono_ms() + 10000, err, sizeof err) != EXEC_PROTO_OK)
        fail_msg("spawn: %s", err);
    return c;
}

/* kinds_validate() of kind `k` on JSON text: -1, 0 or 1, with the reason in err */
static int
check(const char *kind, const char *text, char *err, size_t errlen)
{
    json_error_t je;
    json_t *in = json_loads(text, JSON_DECODE_ANY, &je);
    assert_non_null(in);
    err[0] = '\0';
    int rc = kinds_validate(NULL, kind, in, err, errlen);
    json_decref(in);
    return rc;
}

static void
forget(struct exec_child *c)
{
    if (c->fd >= 0)
        close(c->fd);
    if (c->pidfd >= 0)
        close(c->pidfd);
    c->fd = c->pidfd = -1;
}

static void
test_validation_and_hand_over(void **state)
{
    (void)state;
    char err[512];
    log_set_level(LOG_ERROR);
    char *argv[] = {(char *)WP_TEST_ZYGOTE, (char *)"ok", NULL};
    assert_int_equal(exec_zygote_start(&g_z, argv, "z", NULL, EXEC_PROTO_FRAME_MAX_DEFAULT, err,
                                       sizeof err), 0);
    assert_int_equal(exec_zygote_wait_ready(&g_z, clock_mono_ms() + 10000, err, sizeof err),
                     EXEC_PROTO_OK);
    memset(&g_cfg, 0, sizeof g_cfg);
    g_cfg.exec_kinds[0].name = "z";
    g_cfg.exec_kinds[0].command = WP_TEST_ZYGOTE;
    g_cfg.exec_kinds[0].argv = argv;
    g_cfg.nexec_kinds = 1;
    g_cfg.max_body_bytes = 1 << 20;
    assert_int_equal(kinds_load(&g_cfg, err, sizeof err), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, g_pair), 0);

    /* the HTTP process's own child, from the loader of generation 1, hand-out 5 */
    struct exec_child initial[CONFIG_MAX_EXEC_KINDS];
    for (int i = 0; i < CONFIG_MAX_EXEC_KINDS; i++)
        initial[i] = (struct exec_child){.pid = -1, .fd = -1, .pidfd = -1};
    initial[0] = spawn_child();
    pid_t a = initial[0].pid;
    exec_validate_init(&g_cfg, g_pair[0], initial, 1, 5);
    assert_int_equal(initial[0].fd, -1);            /* taken over */
    assert_int_equal(check("z", "{\"x\": 1}", err, sizeof err), 0);
    assert_int_equal(check("z", "{\"bad\": 1}", err, sizeof err), 1);
    assert_string_equal(err, "the input has 'bad'");
    assert_int_equal(check("nope", "{}", err, sizeof err), -1);

    /* a hand-over older than the child held (queued before the fork: hand-out 3) is
     * dropped: with child a killed, nothing validates any more */
    struct exec_child b = spawn_child();
    assert_int_equal(exec_validate_send(g_pair[1], 0, 1, 3, &b), 0);
    forget(&b);
    assert_int_equal(kill(a, SIGKILL), 0);
    for (int i = 0; i < 200 && kill(a, 0) == 0; i++)
        clock_sleep_ms(5);
    clock_sleep_ms(20);
    assert_int_equal(check("z", "{\"bad\": 1}", err, sizeof err), 0);   /* unvalidated */
    assert_int_equal(check("z", "{\"bad\": 1}", err, sizeof err), 0);

    /* a newer one (the next generation) is taken */
    struct exec_child c = spawn_child();
    assert_int_equal(exec_validate_send(g_pair[1], 0, 2, 1, &c), 0);
    forget(&c);
    assert_int_equal(check("z", "{\"bad\": 1}", err, sizeof err), 1);
    /* a later hand-out of the same generation too, and an older generation's is not */
    struct exec_child d = spawn_child(), e = spawn_child();
    pid_t dpid = d.pid;
    assert_int_equal(exec_validate_send(g_pair[1], 0, 2, 2, &d), 0);
    assert_int_equal(exec_validate_send(g_pair[1], 0, 1, 99, &e), 0);
    forget(&d);
    forget(&e);
    assert_int_equal(check("z", "{\"bad\": 1}", err, sizeof err), 1);
    assert_int_equal(kill(dpid, SIGKILL), 0);       /* d held: now nothing validates */
    for (int i = 0; i < 200 && kill(dpid, 0) == 0; i++)
        clock_sleep_ms(5);
    clock_sleep_ms(20);
    assert_int_equal(check("z", "{\"bad\": 1}", err, sizeof err), 0);

    /* garbage on the channel (no descriptor, a short message, a kind out of range) is
     * dropped without harm */
    assert_int_equal(send(g_pair[1], "xy", 2, 0), 2);
    struct exec_child f = spawn_child();
    assert_int_equal(exec_validate_send(g_pair[1], 7, 3, 1, &f), 0);   /* kind 7: none */
    forget(&f);
    assert_int_equal(check("z", "{\"bad\": 1}", err, sizeof err), 0);

    /* a child that answers a validate with garbage, or dies in one, is stopped; the input
     * passes, and the next ones too, until a new child comes */
    const char *breaks[] = {"{\"garbage\": true}", "{\"exit\": 3}"};
    for (int i = 0; i < 2; i++) {
        struct exec_child g = spawn_child();
        pid_t gpid = g.pid;
        assert_int_equal(exec_validate_send(g_pair[1], 0, 3, 2 + i, &g), 0);
        forget(&g);
        assert_int_equal(check("z", "{\"bad\": 1}", err, sizeof err), 1);
        assert_int_equal(check("z", breaks[i], err, sizeof err), 0);
        for (int k = 0; k < 200 && kill(gpid, 0) == 0; k++)
            clock_sleep_ms(5);
        assert_int_equal(kill(gpid, 0), -1);        /* gone */
        assert_int_equal(check("z", "{\"bad\": 1}", err, sizeof err), 0);
    }
}

/* With --max-body over a frame, an input too big for one is refused for any exec kind
 * (it could never be sent to a child). */
static void
test_input_over_a_frame(void **state)
{
    (void)state;
    char err[512];
    g_cfg.max_body_bytes = 32 << 20;
    size_t n = EXEC_PROTO_FRAME_MAX_DEFAULT;
    char *text = malloc(n);
    assert_non_null(text);
    memset(text, 'a', n);
    json_t *big = json_stringn_nocheck(text, n);
    free(text);
    assert_int_equal(kinds_validate(NULL, "z", big, err, sizeof err), 1);
    json_decref(big);
    assert_non_null(strstr(err, "frame"));
    assert_int_equal(check("z", "\"small\"", err, sizeof err), 0);
    g_cfg.max_body_bytes = 1 << 20;
}

static int
teardown_all(void **state)
{
    (void)state;
    int status;
    exec_zygote_stop(&g_z, 2000, &status);
    kinds_unload();
    close(g_pair[0]);
    close(g_pair[1]);
    return 0;
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validation_and_hand_over),
        cmocka_unit_test(test_input_over_a_frame),
    };
    return cmocka_run_group_tests(tests, NULL, teardown_all);
}
