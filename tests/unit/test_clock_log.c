/* test_clock_log.c -- common/: time, RFC 3339 text, log levels and log records. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/clock.h"
#include "common/fault.h"
#include "common/log.h"

static void
expect_time(int64_t ms, const char *want)
{
    char out[CLOCK_RFC3339_LEN];
    memset(out, 'x', sizeof out);
    clock_format_rfc3339(ms, out);
    if (strcmp(out, want) != 0)
        fail_msg("%lld: want %s, got %s", (long long)ms, want, out);
}

static void
test_rfc3339_known_instants(void **state)
{
    (void)state;
    expect_time(0, "1970-01-01T00:00:00.000Z");
    expect_time(1, "1970-01-01T00:00:00.001Z");
    expect_time(999, "1970-01-01T00:00:00.999Z");
    expect_time(1000, "1970-01-01T00:00:01.000Z");
    expect_time(1767323045678, "2026-01-02T03:04:05.678Z");
    expect_time(951782400000, "2000-02-29T00:00:00.000Z");
    expect_time(951868799999, "2000-02-29T23:59:59.999Z");
    expect_time(253402300799999, "9999-12-31T23:59:59.999Z");
}

static void
test_rfc3339_negative_floors(void **state)
{
    (void)state;
    expect_time(-1, "1969-12-31T23:59:59.999Z");
    expect_time(-999, "1969-12-31T23:59:59.001Z");
    expect_time(-1000, "1969-12-31T23:59:59.000Z");
    expect_time(-1001, "1969-12-31T23:59:58.999Z");
    expect_time(-86400000, "1969-12-31T00:00:00.000Z");
}

static void
test_now_and_mono(void **state)
{
    (void)state;
    int64_t now = clock_now_ms();
    int64_t t = (int64_t)time(NULL) * 1000;
    assert_true(now >= t - 2000 && now <= t + 2000);
    char out[CLOCK_RFC3339_LEN];
    clock_format_rfc3339(now, out);
    assert_int_equal(strlen(out), 24);
    assert_int_equal(out[4], '-');
    assert_int_equal(out[10], 'T');
    assert_int_equal(out[19], '.');
    assert_int_equal(out[23], 'Z');

    int64_t m0 = clock_mono_ms();
    assert_int_equal(clock_sleep_ms(30), 0);
    int64_t m1 = clock_mono_ms();
    assert_true(m1 - m0 >= 30);
    assert_true(m1 - m0 < 5000);
}

static void
test_log_level_parse(void **state)
{
    (void)state;
    struct { const char *text; enum log_level want; } ok[] = {
        {"error", LOG_ERROR}, {"warn", LOG_WARN}, {"info", LOG_INFO}, {"debug", LOG_DEBUG},
    };
    for (size_t i = 0; i < 4; i++) {
        enum log_level l = (enum log_level)99;
        assert_int_equal(log_level_parse(ok[i].text, &l), 0);
        assert_int_equal(l, ok[i].want);
    }
    const char *bad[] = {"", "ERROR", "Info", "warning", "loud", "info ", " debug", "trace"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        enum log_level l = LOG_WARN;
        assert_int_equal(log_level_parse(bad[i], &l), -1);
        assert_int_equal(l, LOG_WARN);
    }
}

/* Runs fn with stderr sent to a temporary file; returns what was written (static). */
static const char *
capture_stderr(void (*fn)(void))
{
    static char buf[4096];
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
    fn();
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    rewind(tmp);
    size_t n = fread(buf, 1, sizeof buf - 1, tmp);
    buf[n] = '\0';
    fclose(tmp);
    return buf;
}

static void
log_some(void)
{
    log_set_role("unit");
    log_set_level(LOG_WARN);
    log_info("not shown %d", 1);
    log_debug("not shown %d", 2);
    log_warn("shown %d", 3);
    log_error("also %s", "shown");
}

static void
test_log_records(void **state)
{
    (void)state;
    const char *out = capture_stderr(log_some);
    assert_int_equal(log_get_level(), LOG_WARN);
    char want_warn[128], want_err[128];
    snprintf(want_warn, sizeof want_warn, "Z warn  [unit %ld] shown 3\n", (long)getpid());
    snprintf(want_err, sizeof want_err, "Z error [unit %ld] also shown\n", (long)getpid());
    /* two lines, each starting with an RFC 3339 time */
    const char *nl = strchr(out, '\n');
    assert_non_null(nl);
    assert_int_equal(nl - out + 1, 24 - 1 + (int)strlen(want_warn));
    assert_int_equal(strncmp(out + 23, want_warn, strlen(want_warn)), 0);
    assert_int_equal(out[10], 'T');
    const char *second = nl + 1;
    assert_string_equal(second + 23, want_err);
    assert_int_equal(second[10], 'T');
    assert_null(strstr(out, "not shown"));
    log_set_level(LOG_INFO);
}

/* fault points: armed from WARMPOOL_FAULTS, read once per process */
static void
test_fault_points(void **state)
{
    (void)state;
#ifdef WARMPOOL_FAULT_HOOKS
    setenv("WARMPOOL_FAULTS", "alpha=3,beta_ms=25,bare,toolong_name_that_is_far_over_the_limit_of_47_characters=1,neg=-4",
           1);
    assert_int_equal(fault_value("alpha"), 3);
    assert_int_equal(fault_value("beta_ms"), 25);
    assert_int_equal(fault_value("bare"), 1);
    assert_int_equal(fault_value("neg"), 0);
    assert_int_equal(fault_value("absent"), 0);
    assert_int_equal(fault_value("toolong_name_that_is_far_over_the_limit_of_47_characters"), 0);
    int hits = 0;
    for (int i = 0; i < 5; i++)
        hits += fault_countdown("alpha");
    assert_int_equal(hits, 3);
    assert_int_equal(fault_countdown("absent"), 0);
    int64_t t0 = clock_mono_ms();
    fault_pause("beta_ms");
    assert_true(clock_mono_ms() - t0 >= 24);
    /* read once: a later change of the environment is not seen */
    setenv("WARMPOOL_FAULTS", "alpha=9", 1);
    assert_int_equal(fault_value("alpha"), 3);
#else
    assert_int_equal(fault_value("alpha"), 0);
    assert_int_equal(fault_countdown("alpha"), 0);
#endif
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc3339_known_instants),
        cmocka_unit_test(test_rfc3339_negative_floors),
        cmocka_unit_test(test_now_and_mono),
        cmocka_unit_test(test_log_level_parse),
        cmocka_unit_test(test_log_records),
        cmocka_unit_test(test_fault_points),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
