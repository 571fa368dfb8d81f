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
#include <jansson.h>

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

/* ---------------------------------------------------------------- structured records */

static void
log_structured_text(void)
{
    log_set_role("unit");
    log_set_level(LOG_DEBUG);
    log_event(LOG_DEBUG, "task finished", LOG_INT("task_id", 42), LOG_STR("kind", "echo"),
              LOG_STR("note", "two words"), LOG_STR("q", "say \"hi\""), LOG_STR("none", NULL),
              LOG_STR("empty", ""), LOG_NUM("duration_ms", 1.25));
    log_set_level(LOG_INFO);
    log_event(LOG_DEBUG, "not shown", LOG_INT("task_id", 1));
    log_info("line\nbreak");
}

static void
test_log_fields_text(void **state)
{
    (void)state;
    const char *out = capture_stderr(log_structured_text);
    const char *want = "task finished task_id=42 kind=echo note=\"two words\" q=\"say \\\"hi\\\"\" "
                       "none=- empty=\"\" duration_ms=1.250\n";
    const char *body = strstr(out, "] ");
    assert_non_null(body);
    assert_int_equal(strncmp(body + 2, want, strlen(want)), 0);
    assert_null(strstr(out, "not shown"));
    /* a message is always one line */
    assert_non_null(strstr(out, "line break\n"));
}

static void
log_json_records(void)
{
    log_set_role("unit");
    log_set_format(LOG_FORMAT_JSON);
    log_set_level(LOG_DEBUG);
    log_event(LOG_INFO, "request", LOG_STR("method", "GET"), LOG_INT("status", 200),
              LOG_NUM("duration_ms", 0.5), LOG_STR("none", NULL));
    /* quotes, backslashes, control characters, UTF-8, and bytes that are not UTF-8 */
    log_warn("q\" b\\ nl\n tab\t bell\a del\x7f caf\xc3\xa9 bad\xff\xc3 over\xc0\xaf "
             "sur\xed\xa0\x80 snow\xe2\x98\x83");
    log_set_format(LOG_FORMAT_TEXT);
    log_set_level(LOG_INFO);
}

/* Splits out into lines and parses each as a JSON object; returns how many. */
static size_t
parse_lines(const char *out, json_t **objs, size_t max)
{
    size_t n = 0;
    for (const char *p = out; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        json_error_t e;
        json_t *o = json_loadb(p, (size_t)(nl - p), JSON_REJECT_DUPLICATES, &e);
        if (o == NULL)
            fail_msg("not JSON (%s): %.*s", e.text, (int)(nl - p), p);
        assert_true(json_is_object(o));
        assert_true(n < max);
        objs[n++] = o;
        p = nl + 1;
    }
    return n;
}

static void
test_log_json(void **state)
{
    (void)state;
    const char *out = capture_stderr(log_json_records);
    json_t *o[4];
    assert_int_equal(parse_lines(out, o, 4), 2);
    for (int i = 0; i < 2; i++) {
        assert_string_equal(json_string_value(json_object_get(o[i], "role")), "unit");
        assert_int_equal(json_integer_value(json_object_get(o[i], "pid")), getpid());
        const char *ts = json_string_value(json_object_get(o[i], "ts"));
        assert_non_null(ts);
        assert_int_equal(strlen(ts), 24);
    }
    assert_string_equal(json_string_value(json_object_get(o[0], "level")), "info");
    assert_string_equal(json_string_value(json_object_get(o[0], "msg")), "request");
    assert_string_equal(json_string_value(json_object_get(o[0], "method")), "GET");
    assert_int_equal(json_integer_value(json_object_get(o[0], "status")), 200);
    assert_true(json_real_value(json_object_get(o[0], "duration_ms")) == 0.5);
    assert_true(json_is_null(json_object_get(o[0], "none")));
    assert_int_equal(json_object_size(o[0]), 9);
    assert_string_equal(json_string_value(json_object_get(o[1], "level")), "warn");
    assert_string_equal(json_string_value(json_object_get(o[1], "msg")),
                        "q\" b\\ nl\n tab\t bell\a del\x7f caf\xc3\xa9 bad\xef\xbf\xbd\xef\xbf\xbd "
                        "over\xef\xbf\xbd\xef\xbf\xbd sur\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd "
                        "snow\xe2\x98\x83");
    json_decref(o[0]);
    json_decref(o[1]);
}

static char g_huge[3 * LOG_LINE_MAX];

static void
log_huge(void)
{
    log_set_role("unit");
    memset(g_huge, 'x', sizeof g_huge - 1);
    g_huge[10] = '"';                   /* escapes count against the limit too */
    g_huge[sizeof g_huge - 1] = '\0';
    for (int f = 0; f < 2; f++) {
        log_set_format(f ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT);
        log_event(LOG_WARN, g_huge, LOG_INT("after", 1));
        log_event(LOG_WARN, "short", LOG_STR("big", g_huge), LOG_INT("small", 7));
        /* a cut that falls in the middle of a multi-byte character keeps it whole */
        for (size_t i = 0; i + 3 < sizeof g_huge; i += 3)
            memcpy(g_huge + i, "\xe2\x98\x83", 3);
        log_event(LOG_WARN, g_huge, LOG_INT("after", 1));
        memset(g_huge, 'x', sizeof g_huge - 1);
        g_huge[10] = '"';
    }
    log_set_format(LOG_FORMAT_TEXT);
}

static void
test_log_cut_records(void **state)
{
    (void)state;
    static char out[8 * LOG_LINE_MAX];
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
    log_huge();
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    rewind(tmp);
    size_t n = fread(out, 1, sizeof out - 1, tmp);
    out[n] = '\0';
    fclose(tmp);

    /* six records, each at most LOG_LINE_MAX bytes with its newline */
    const char *lines[6];
    size_t k = 0;
    for (const char *p = out; *p != '\0' && k < 6; k++) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        assert_true((size_t)(nl - p) + 1 <= LOG_LINE_MAX);
        lines[k] = p;
        p = nl + 1;
    }
    assert_int_equal(k, 6);
    /* text: the cut message drops the field; the field too big is left out whole */
    assert_null(strstr(lines[0], "after="));
    assert_non_null(strstr(lines[1], "short small=7\n"));
    assert_null(strstr(lines[1], "big="));
    /* json: each still parses */
    json_t *o[3];
    assert_int_equal(parse_lines(lines[3], o, 3), 3);
    assert_null(json_object_get(o[0], "after"));
    assert_true(strlen(json_string_value(json_object_get(o[0], "msg"))) > LOG_LINE_MAX / 2);
    assert_null(json_object_get(o[1], "big"));
    assert_int_equal(json_integer_value(json_object_get(o[1], "small")), 7);
    const char *snow = json_string_value(json_object_get(o[2], "msg"));
    assert_int_equal(strlen(snow) % 3, 0);
    for (int i = 0; i < 3; i++)
        json_decref(o[i]);
}

static void
test_log_format_parse(void **state)
{
    (void)state;
    enum log_format f = LOG_FORMAT_TEXT;
    assert_int_equal(log_format_parse("json", &f), 0);
    assert_int_equal(f, LOG_FORMAT_JSON);
    assert_int_equal(log_format_parse("text", &f), 0);
    assert_int_equal(f, LOG_FORMAT_TEXT);
    assert_int_equal(log_format_parse("JSON", &f), -1);
    assert_int_equal(log_format_parse("", &f), -1);
    assert_int_equal(f, LOG_FORMAT_TEXT);
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
        cmocka_unit_test(test_log_fields_text),
        cmocka_unit_test(test_log_json),
        cmocka_unit_test(test_log_cut_records),
        cmocka_unit_test(test_log_format_parse),
        cmocka_unit_test(test_fault_points),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
