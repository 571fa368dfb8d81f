/* test_cron.c -- cron expressions and their due times (service/cron.c), in UTC. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "service/cron.h"

/* seconds since the epoch of a UTC time */
static int64_t
at(int y, int mo, int d, int h, int mi, int s)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
                    .tm_min = mi, .tm_sec = s};
    return (int64_t)timegm(&tm);
}

static void
expect_next(const char *expr, int64_t from, int64_t want)
{
    struct cron c;
    char err[256] = "";
    int rc = cron_parse(expr, &c, err, sizeof err);
    if (rc != 0)
        fail_msg("%s: %s", expr, err);
    int64_t got = cron_next(&c, from);
    if (got != want)
        fail_msg("next of '%s' after %lld: got %lld, want %lld", expr, (long long)from,
                 (long long)got, (long long)want);
}

static void
expect_prev(const char *expr, int64_t from, int64_t want)
{
    struct cron c;
    char err[256] = "";
    assert_int_equal(cron_parse(expr, &c, err, sizeof err), 0);
    int64_t got = cron_prev(&c, from);
    if (got != want)
        fail_msg("prev of '%s' at %lld: got %lld, want %lld", expr, (long long)from,
                 (long long)got, (long long)want);
}

static void
test_every_minute(void **state)
{
    (void)state;
    int64_t t = at(2026, 12, 2, 14, 30, 0);
    expect_next("* * * * *", t, t + 60);             /* strictly after */
    expect_next("* * * * *", t + 1, t + 60);
    expect_next("* * * * *", t + 59, t + 60);
    expect_prev("* * * * *", t, t);                  /* at or before */
    expect_prev("* * * * *", t + 59, t);
    expect_next("* * * * *", at(2026, 12, 31, 23, 59, 30), at(2027, 1, 1, 0, 0, 0));
}

static void
test_numbers_ranges_lists_steps(void **state)
{
    (void)state;
    int64_t t = at(2026, 12, 2, 14, 30, 0);
    expect_next("5 * * * *", t, at(2026, 12, 2, 15, 5, 0));
    expect_next("0 9 * * *", t, at(2026, 12, 3, 9, 0, 0));
    expect_next("*/15 * * * *", t, at(2026, 12, 2, 14, 45, 0));
    expect_next("0-10/5 * * * *", t, at(2026, 12, 2, 15, 0, 0));
    expect_next("7,31,59 * * * *", t, at(2026, 12, 2, 14, 31, 0));
    expect_next("20/20 * * * *", t, at(2026, 12, 2, 14, 40, 0));
    expect_next("0 0 1 */3 *", t, at(2027, 1, 1, 0, 0, 0));
    expect_next("0 12 * jan-mar *", t, at(2027, 1, 1, 12, 0, 0));
    expect_next("30 14 2 12 *", t, at(2027, 12, 2, 14, 30, 0));
    expect_prev("30 14 2 12 *", t, t);
    expect_prev("0 9 * * *", t, at(2026, 12, 2, 9, 0, 0));
    expect_prev("0 0 1 * *", t, at(2026, 12, 1, 0, 0, 0));
    expect_prev("59 23 31 * *", t, at(2026, 10, 31, 23, 59, 0));   /* November has 30 */
    expect_next("@hourly", t, at(2026, 12, 2, 15, 0, 0));
    expect_next("@daily", t, at(2026, 12, 3, 0, 0, 0));
    expect_next("@weekly", t, at(2026, 12, 6, 0, 0, 0));             /* a Sunday */
    expect_next("@monthly", t, at(2027, 1, 1, 0, 0, 0));
    expect_next("@yearly", t, at(2027, 1, 1, 0, 0, 0));
}

/* Day of month and day of week: both restricted, either matches; one of them `*`, the
 * other decides. 2026-12-02 is a Wednesday. */
static void
test_day_rules(void **state)
{
    (void)state;
    int64_t t = at(2026, 12, 2, 14, 30, 0);
    expect_next("0 0 * * 5", t, at(2026, 12, 4, 0, 0, 0));           /* Friday */
    expect_next("0 0 * * fri", t, at(2026, 12, 4, 0, 0, 0));
    expect_next("0 0 13 * *", t, at(2026, 12, 13, 0, 0, 0));
    expect_next("0 0 13 * 5", t, at(2026, 12, 4, 0, 0, 0));          /* OR: Friday first */
    expect_next("0 0 3 * 5", t, at(2026, 12, 3, 0, 0, 0));           /* OR: the 3rd first */
    expect_next("0 0 */2 * 5", t, at(2026, 12, 11, 0, 0, 0));        /* odd days AND Fridays */
    expect_next("0 0 * * 0", t, at(2026, 12, 6, 0, 0, 0));
    expect_next("0 0 * * 7", t, at(2026, 12, 6, 0, 0, 0));           /* 7 is Sunday too */
    expect_next("0 0 * * MON-FRI", at(2026, 12, 4, 12, 0, 0), at(2026, 12, 7, 0, 0, 0));
    expect_next("0 0 29 2 *", t, at(2028, 2, 29, 0, 0, 0));          /* the next leap day */
    expect_prev("0 0 29 2 *", t, at(2024, 2, 29, 0, 0, 0));
    expect_next("0 0 31 * *", at(2027, 1, 31, 1, 0, 0), at(2027, 3, 31, 0, 0, 0));
    expect_prev("0 0 * * 6", t, at(2026, 11, 28, 0, 0, 0));          /* a Saturday */
}

static void
expect_bad(const char *expr, const char *fragment)
{
    struct cron c;
    char err[256] = "";
    if (cron_parse(expr, &c, err, sizeof err) == 0)
        fail_msg("'%s' was accepted", expr);
    if (strstr(err, fragment) == NULL)
        fail_msg("'%s': '%s' does not say '%s'", expr, err, fragment);
}

static void
test_bad_expressions(void **state)
{
    (void)state;
    expect_bad("", "five fields");
    expect_bad("* * * *", "five fields");
    expect_bad("* * * * * *", "five fields");
    expect_bad("60 * * * *", "minute field");
    expect_bad("* 24 * * *", "hour field");
    expect_bad("* * 0 * *", "day of month field");
    expect_bad("* * 32 * *", "day of month field");
    expect_bad("* * * 13 *", "month field");
    expect_bad("* * * * 8", "day of week field");
    expect_bad("5-1 * * * *", "minute field");
    expect_bad("*/0 * * * *", "minute field");
    expect_bad("*/ * * * *", "minute field");
    expect_bad("1, * * * *", "minute field");
    expect_bad("a * * * *", "minute field");
    expect_bad("* * * foo *", "month field");
    expect_bad("* * * * sunday", "day of week field");
    expect_bad("-1 * * * *", "minute field");
    expect_bad("0 0 30 2 *", "never comes due");
    expect_bad("0 0 31 4,6,9,11 *", "never comes due");
    expect_bad("@sometimes", "@hourly");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_minute),
        cmocka_unit_test(test_numbers_ranges_lists_steps),
        cmocka_unit_test(test_day_rules),
        cmocka_unit_test(test_bad_expressions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
