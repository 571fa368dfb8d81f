/* cron.h -- standard five-field cron expressions, in UTC, for --schedule.
 *
 * "MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK": each field is `*`, a number, a range
 * `a-b`, a step `*\/s`, `a-b/s` or `a/s` (a to the field's end), or a comma-separated
 * list of those; months may be named jan..dec and days sun..sat (any case); day of
 * week 0 or 7 is Sunday. The macros @yearly (@annually), @monthly, @weekly, @daily
 * (@midnight) and @hourly are accepted. As in Vixie cron, when both day fields are
 * restricted (neither starts with `*`) a day matches if EITHER matches; otherwise both
 * must (so `0 0 13 * 5` is every 13th and every Friday, `0 0 * * 5` only Fridays). */
#ifndef WP_CRON_H
#define WP_CRON_H

#include <stddef.h>
#include <stdint.h>

struct cron {
    uint64_t minute;        /* bit m: minute m (0..59) */
    uint32_t hour;          /* bit h: 0..23 */
    uint32_t dom;           /* bit d: day of month 1..31 */
    uint16_t month;         /* bit m: month 1..12 */
    uint8_t dow;            /* bit d: 0 (Sunday)..6 */
    int dom_star, dow_star; /* the field began with '*' (unrestricted for the OR rule) */
};

/* 0 and *c, or -1 with what is wrong in err. An expression that can never come due
 * (`0 0 30 2 *`) is refused too. */
int cron_parse(const char *text, struct cron *c, char *err, size_t errlen);
/* The first due time strictly after t (seconds since the epoch, UTC): a whole minute;
 * -1 if none within the next 8 years (cron_parse refuses those expressions). */
int64_t cron_next(const struct cron *c, int64_t t);
/* The last due time at or before t; -1 if none within the previous 8 years. */
int64_t cron_prev(const struct cron *c, int64_t t);

#endif
