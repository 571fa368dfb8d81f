/* test_kinds.c -- the kind registry, the built-in kinds and the shared worker table
 * (service/kinds.c, service/kinds_builtin.c, service/slots.c). */
#include <setjmp.h>
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
#include "common/log.h"
#include "service/config.h"
#include "service/kinds.h"
#include "service/slots.h"

static json_t *
load(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    if (v == NULL)
        fail_msg("bad test JSON %s: %s", text, e.text);
    return v;
}

static size_t g_count_without_test_kinds = 2;

static char g_rule_path[64];

static void
remove_rule_file(void)
{
    unlink(g_rule_path);
}

/* The scan kind gets one rule, not the 101 built-in ones: compiling those takes seconds
 * under valgrind at every load, and test_scan is where the rules are tested. */
static const char *
one_rule_file(void)
{
    char *path = g_rule_path;
    if (path[0] == '\0') {
        snprintf(path, sizeof g_rule_path, "/tmp/wp-test-kinds-XXXXXX");
        int fd = mkstemp(path);
        static const char rule[] = "test.rule\tneedle[0-9]+\n";
        if (fd < 0 || write(fd, rule, sizeof rule - 1) != (ssize_t)(sizeof rule - 1))
            fail_msg("cannot write %s", path);
        close(fd);
        atexit(remove_rule_file);
    }
    return path;
}

static int
load_kinds(int test_kinds)
{
    struct config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.enable_test_kinds = test_kinds;
    cfg.kind_configs[0].name = "scan";
    cfg.kind_configs[0].value = one_rule_file();
    cfg.nkind_configs = 1;
    char err[256] = "";
    int rc = kinds_load(&cfg, err, sizeof err);
    if (rc != 0)
        print_error("kinds_load: %s\n", err);
    return rc;
}

static int
setup_kinds(void **state)
{
    (void)state;
    log_set_level(LOG_ERROR);       /* kinds_load logs each kind at info */
    return load_kinds(0);
}

static int
teardown_kinds(void **state)
{
    (void)state;
    kinds_unload();
    return 0;
}

/* ---------------------------------------------------------------- registry */

static void
test_load_without_test_kinds(void **state)
{
    (void)state;
    size_t n = kinds_count();
    assert_true(n >= 2);
    assert_string_equal(kinds_at(0)->kind->name, "echo");
    assert_string_equal(kinds_at(1)->kind->name, "sleep");
    assert_null(kinds_at(n));
    g_count_without_test_kinds = n;
    assert_ptr_equal(kinds_find("echo")->kind, &KIND_ECHO);
    assert_ptr_equal(kinds_find("sleep")->kind, &KIND_SLEEP);
    assert_null(kinds_find("fail"));
    assert_null(kinds_find("Echo"));
    assert_null(kinds_find(""));
    for (size_t i = 0; i < 2; i++) {
        struct kind_entry *e = kinds_at(i);
        assert_null(e->ctx);
        assert_int_equal(e->ctx_bytes, 0);
        assert_true(e->load_ms >= 0);
    }
    char err[128] = "";
    assert_int_equal(kinds_worker_init(err, sizeof err), 0);
    kinds_worker_fini();

    kinds_unload();
    assert_int_equal(kinds_count(), 0);
    assert_null(kinds_find("echo"));
}

static void
test_load_with_test_kinds(void **state)
{
    (void)state;
    kinds_unload();
    assert_int_equal(load_kinds(1), 0);
    assert_int_equal(kinds_count(), g_count_without_test_kinds + 2);    /* fail, spin */
    assert_ptr_equal(kinds_find("fail")->kind, &KIND_FAIL);
    assert_ptr_equal(kinds_find("spin")->kind, &KIND_SPIN);
    assert_non_null(kinds_find("echo"));
    assert_non_null(kinds_find("sleep"));
}

static void
test_load_twice_refused(void **state)
{
    (void)state;
    struct config cfg;
    memset(&cfg, 0, sizeof cfg);
    char err[256] = "";
    assert_int_equal(kinds_load(&cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "echo"));
    assert_int_equal(kinds_count(), g_count_without_test_kinds);
}

static void
test_validate(void **state)
{
    (void)state;
    char err[256];
    json_t *in = load("{\"ms\": 5}");
    assert_int_equal(kinds_validate(NULL, "nope", in, err, sizeof err), -1);
    assert_int_equal(kinds_validate(NULL, "fail", in, err, sizeof err), -1);   /* not loaded */
    assert_int_equal(kinds_validate(NULL, "sleep", in, err, sizeof err), 0);
    assert_int_equal(kinds_validate(NULL, "echo", in, err, sizeof err), 0);
    json_decref(in);
    assert_int_equal(kinds_validate(NULL, "echo", json_null(), err, sizeof err), 0);

    const char *bad[] = {
        "null", "{}", "[]", "5", "{\"ms\": -1}", "{\"ms\": 600001}", "{\"ms\": 601000}",
        "{\"ms\": \"5\"}", "{\"ms\": 1.5}", "{\"ms\": null}", "{\"msec\": 5}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        in = load(bad[i]);
        err[0] = '\0';
        int rc = kinds_validate(NULL, "sleep", in, err, sizeof err);
        if (rc != 1)
            fail_msg("sleep %s: want 1, got %d", bad[i], rc);
        assert_non_null(strstr(err, "ms"));
        json_decref(in);
    }
    const char *good[] = {"{\"ms\": 0}", "{\"ms\": 600000}", "{\"ms\": 20, \"extra\": 1}"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        in = load(good[i]);
        assert_int_equal(kinds_validate(NULL, "sleep", in, err, sizeof err), 0);
        json_decref(in);
    }
}

/* Exec kinds are registered by name after the C kinds (their contexts are their
 * zygotes'); one that takes a loaded kind's name is refused; --kind-config may name one;
 * validation goes to the hook, or accepts when there is none. */
static void
test_exec_kinds_registered(void **state)
{
    (void)state;
    struct config cfg;
    memset(&cfg, 0, sizeof cfg);
    char *argv0[] = {(char *)"python3", NULL};
    cfg.exec_kinds[0].name = "table";
    cfg.exec_kinds[0].command = "python3";
    cfg.exec_kinds[0].argv = argv0;
    cfg.exec_kinds[1].name = "squares";
    cfg.exec_kinds[1].command = "python3";
    cfg.exec_kinds[1].argv = argv0;
    cfg.nexec_kinds = 2;
    cfg.kind_configs[0].name = "squares";
    cfg.kind_configs[0].value = "n=10";
    cfg.kind_configs[1].name = "scan";
    cfg.kind_configs[1].value = one_rule_file();
    cfg.nkind_configs = 2;
    char err[256] = "";
    assert_int_equal(kinds_load(&cfg, err, sizeof err), 0);
    assert_int_equal(kinds_count(), g_count_without_test_kinds + 2);
    struct kind_entry *e = kinds_find("squares");
    assert_non_null(e);
    assert_int_equal(e->exec, 1);
    assert_ptr_equal(kinds_exec(1), e);
    assert_ptr_equal(kinds_exec(0), kinds_find("table"));
    assert_null(kinds_exec(2));
    assert_int_equal(kinds_find("echo")->exec, -1);
    json_t *in = load("{\"x\": 1}");
    assert_int_equal(kinds_validate(NULL, "table", in, err, sizeof err), 0);   /* no hook */
    json_decref(in);
    kinds_unload();

    /* a name a loaded kind has: refused when the kinds load */
    cfg.exec_kinds[1].name = "sleep";
    cfg.nkind_configs = 0;
    assert_int_equal(kinds_load(&cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "--exec-kind sleep"));
    kinds_unload();
    assert_int_equal(kinds_builtin_name("sleep", 0), 1);
    assert_int_equal(kinds_builtin_name("spin", 0), 0);
    assert_int_equal(kinds_builtin_name("spin", 1), 1);
    assert_int_equal(kinds_builtin_name("table", 1), 0);
}

static void
test_kinds_stats_shape(void **state)
{
    (void)state;
    struct shared *sh = slots_create(1);
    assert_non_null(sh);
    json_t *arr = slots_kinds_stats(sh);
    assert_true(json_is_array(arr));
    assert_int_equal(json_array_size(arr), 0);
    json_decref(arr);

    /* as the supervisor fills it at start and on reload */
    const char *names[] = {"echo", "sleep", "fail"};
    for (int i = 0; i < 3; i++) {
        snprintf(sh->kinds[i].name, sizeof sh->kinds[i].name, "%s", names[i]);
        atomic_store(&sh->kinds[i].ctx_bytes, (long long)i * 1000);
        atomic_store(&sh->kinds[i].generation, i + 1);
        atomic_store(&sh->kinds[i].load_ms, (long long)i * 7);
        sh->kinds[i].exec = i == 2;
        atomic_store(&sh->kinds[i].available, i != 2);
    }
    sh->nkinds = 3;
    arr = slots_kinds_stats(sh);
    assert_true(json_is_array(arr));
    assert_int_equal(json_array_size(arr), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *o = json_array_get(arr, i);
        assert_true(json_is_object(o));
        assert_int_equal(json_object_size(o), 6);
        assert_string_equal(json_string_value(json_object_get(o, "name")), names[i]);
        assert_string_equal(json_string_value(json_object_get(o, "runtime")), i == 2 ? "exec" : "c");
        assert_true(json_is_boolean(json_object_get(o, "available")));
        assert_int_equal(json_is_true(json_object_get(o, "available")), i != 2);
        assert_true(json_is_integer(json_object_get(o, "context_bytes")));
        assert_int_equal(json_integer_value(json_object_get(o, "context_bytes")), i * 1000);
        assert_true(json_is_integer(json_object_get(o, "generation")));
        assert_int_equal(json_integer_value(json_object_get(o, "generation")), i + 1);
        assert_true(json_is_integer(json_object_get(o, "load_ms")));
        assert_int_equal(json_integer_value(json_object_get(o, "load_ms")), i * 7);
    }
    json_decref(arr);
    slots_destroy(sh);
}

/* ---------------------------------------------------------------- built-in run() */

static void
test_echo_run(void **state)
{
    (void)state;
    const char *inputs[] = {"{\"a\": [1, {\"b\": null}], \"c\": \"d\"}", "null", "3", "\"s\"",
                            "[]"};
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        json_t *in = load(inputs[i]);
        struct wp_task_error err = {.code = ""};
        json_t *out = KIND_ECHO.run(NULL, NULL, in, &err);
        assert_non_null(out);
        assert_true(json_equal(out, in));
        if (json_is_object(in) || json_is_array(in))
            assert_ptr_not_equal(out, in);      /* a copy, not the borrowed input */
        assert_string_equal(err.code, "");
        json_decref(out);
        json_decref(in);
    }
}

static void
test_sleep_run(void **state)
{
    (void)state;
    json_t *in = load("{\"ms\": 20}");
    struct wp_task_error err = {.code = ""};
    int64_t t0 = clock_mono_ms();
    json_t *out = KIND_SLEEP.run(NULL, NULL, in, &err);
    int64_t took = clock_mono_ms() - t0;
    assert_non_null(out);
    json_t *want = load("{\"slept_ms\": 20}");
    assert_true(json_equal(out, want));
    assert_true(took >= 20);
    assert_true(took < 5000);
    json_decref(want);
    json_decref(out);
    json_decref(in);

    /* bad input at run time: an error, not a crash and not a sleep */
    in = load("{\"ms\": -5}");
    out = KIND_SLEEP.run(NULL, NULL, in, &err);
    assert_null(out);
    assert_true(strlen(err.code) > 0);
    assert_int_equal(err.retryable, 0);
    json_decref(in);
}

static void
test_fail_run(void **state)
{
    (void)state;
    json_t *in = load("{\"message\": \"it went wrong on purpose\"}");
    struct wp_task_error err = {.code = ""};
    assert_null(KIND_FAIL.run(NULL, NULL, in, &err));
    assert_string_equal(err.code, "task_failed");
    assert_string_equal(err.message, "it went wrong on purpose");
    json_decref(in);

    in = load("{}");
    memset(&err, 0, sizeof err);
    assert_null(KIND_FAIL.run(NULL, NULL, in, &err));
    assert_string_equal(err.code, "task_failed");
    assert_true(strlen(err.message) > 0);
    json_decref(in);
}

/* ---------------------------------------------------------------- slots */

static void
test_slots(void **state)
{
    (void)state;
    struct shared *sh = slots_create(4);
    assert_non_null(sh);
    assert_int_equal(sh->nslots, 4);
    assert_int_equal(atomic_load(&sh->draining), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(atomic_load(&sh->slots[i].pid), 0);
        assert_int_equal(atomic_load(&sh->slots[i].state), SLOT_EMPTY);
        assert_int_equal(atomic_load(&sh->slots[i].tasks_done), 0);
    }
    json_t *arr = slots_stats(sh);
    assert_true(json_is_array(arr));
    assert_int_equal(json_array_size(arr), 0);
    json_decref(arr);
    assert_int_equal(slots_alive(sh), 0);

    atomic_store(&sh->slots[0].pid, 100);
    atomic_store(&sh->slots[0].state, SLOT_IDLE);
    atomic_store(&sh->slots[0].tasks_done, 5);
    atomic_store(&sh->slots[1].pid, 101);
    atomic_store(&sh->slots[1].state, SLOT_BUSY);
    atomic_store(&sh->slots[1].task_id, 42);
    atomic_store(&sh->slots[1].tasks_done, 7);
    atomic_store(&sh->slots[2].pid, 102);
    atomic_store(&sh->slots[2].state, SLOT_STARTING);
    atomic_store(&sh->slots[3].pid, 0);                 /* cleared slot, stale state */
    atomic_store(&sh->slots[3].state, SLOT_BUSY);

    assert_int_equal(slots_alive(sh), 2);
    arr = slots_stats(sh);
    json_t *want = load("[{\"pid\": 100, \"state\": \"idle\", \"task_id\": null,"
                        "  \"tasks_done\": 5},"
                        " {\"pid\": 101, \"state\": \"busy\", \"task_id\": \"42\","
                        "  \"tasks_done\": 7}]");
    /* a starting worker is neither listed nor alive until it says it is ready */
    if (!json_equal(arr, want)) {
        char *got = json_dumps(arr, JSON_COMPACT);
        print_error("slots_stats: %s\n", got);
        free(got);
    }
    assert_true(json_equal(arr, want));
    json_decref(want);
    json_decref(arr);

    /* the table is shared with a child process, as with the workers */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        atomic_store(&sh->slots[2].state, SLOT_IDLE);
        atomic_fetch_add(&sh->slots[0].tasks_done, 1);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(slots_alive(sh), 3);
    assert_int_equal(atomic_load(&sh->slots[0].tasks_done), 6);
    slots_destroy(sh);
    slots_destroy(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_load_without_test_kinds, setup_kinds,
                                        teardown_kinds),
        cmocka_unit_test_setup_teardown(test_load_with_test_kinds, setup_kinds, teardown_kinds),
        cmocka_unit_test_setup_teardown(test_load_twice_refused, setup_kinds, teardown_kinds),
        cmocka_unit_test_setup_teardown(test_validate, setup_kinds, teardown_kinds),
        cmocka_unit_test(test_exec_kinds_registered),
        cmocka_unit_test(test_kinds_stats_shape),
        cmocka_unit_test(test_echo_run),
        cmocka_unit_test(test_sleep_run),
        cmocka_unit_test(test_fail_run),
        cmocka_unit_test(test_slots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
