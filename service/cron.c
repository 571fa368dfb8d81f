/* cron.c -- parse five-field cron expressions and find their due times (UTC). */
#include "service/cron.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define SEARCH_YEARS 8          /* Feb 29 on a given weekday comes within 28 years, but
                                 * with the OR rule a restricted day of week alone always
                                 * comes within a week; 8 covers every Feb 29 */

struct field {
    const char *name;
    int lo, hi;
    const char *const *names;   /* names[i] is value lo + i, or NULL */
};

static const char *const MONTHS[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul",
                                     "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const DAYS[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

static const struct field FIELDS[5] = {
    {"minute", 0, 59, NULL},
    {"hour", 0, 23, NULL},
    {"day of month", 1, 31, NULL},
    {"month", 1, 12, MONTHS},
    {"day of week", 0, 7, DAYS},
};

/* A number or a name at *p; advances *p. 0, or -1. */
static int
value(const struct field *f, const char **p, int *out)
{
    if (isdigit((unsigned char)**p)) {
        errno = 0;
        char *end;
        long v = strtol(*p, &end, 10);
        if (errno != 0 || end - *p > 2 || v < f->lo || v > f->hi)
            return -1;
        *p = end;
        *out = (int)v;
        return 0;
    }
    for (int i = 0; f->names != NULL && f->names[i] != NULL; i++) {
        if (strncasecmp(*p, f->names[i], 3) == 0 && !isalpha((unsigned char)(*p)[3])) {
            *p += 3;
            *out = f->lo + i;
            return 0;
        }
    }
    return -1;
}

/* One field's text (no spaces) into a bit set. 0, or -1 with err. */
static int
field_parse(const struct field *f, const char *text, uint64_t *bits, char *err, size_t errlen)
{
    *bits = 0;
    const char *p = text;
    for (;;) {
        int a, b, step = 1;
        if (*p == '*') {
            a = f->lo;
            b = f->hi;
            p++;
        } else {
            if (value(f, &p, &a) != 0)
                goto bad;
            b = a;
            if (*p == '-') {
                p++;
                if (value(f, &p, &b) != 0 || b < a)
                    goto bad;
            } else if (*p == '/') {
                b = f->hi;              /* a/s: from a to the field's end */
            }
        }
        if (*p == '/') {
            p++;
            errno = 0;
            char *end;
            long s = strtol(p, &end, 10);
            if (!isdigit((unsigned char)*p) || errno != 0 || s < 1 || s > f->hi)
                goto bad;
            p = end;
            step = (int)s;
        }
        for (int v = a; v <= b; v += step)
            *bits |= 1ULL << v;
        if (*p == '\0')
            return 0;
        if (*p != ',')
            goto bad;
        p++;
    }
bad:
    snprintf(err, errlen, "%s field '%.40s' is not a number, range, step or list within "
             "%d-%d", f->name, text, f->lo, f->hi);
    return -1;
}

static const struct {
    const char *name, *expr;
} MACROS[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

int
cron_parse(const char *text, struct cron *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < sizeof MACROS / sizeof MACROS[0]; i++)
        if (strcasecmp(text, MACROS[i].name) == 0)
            text = MACROS[i].expr;
    if (text[0] == '@') {
        snprintf(err, errlen, "'%.40s' is not one of @yearly, @annually, @monthly, @weekly, "
                 "@daily, @midnight, @hourly", text);
        return -1;
    }
    char buf[256];
    if (strlen(text) >= sizeof buf) {
        snprintf(err, errlen, "the cron expression is too long");
        return -1;
    }
    snprintf(buf, sizeof buf, "%s", text);
    char *save = NULL, *tok[6];
    int n = 0;
    for (char *t = strtok_r(buf, " \t", &save); t != NULL && n < 6;
         t = strtok_r(NULL, " \t", &save))
        tok[n++] = t;
    if (n != 5) {
        snprintf(err, errlen, "'%.100s' is not five fields (minute hour day-of-month month "
                 "day-of-week)", text);
        return -1;
    }
    uint64_t bits[5];
    for (int i = 0; i < 5; i++)
        if (field_parse(&FIELDS[i], tok[i], &bits[i], err, errlen) != 0)
            return -1;
    c->minute = bits[0];
    c->hour = (uint32_t)bits[1];
    c->dom = (uint32_t)bits[2];
    c->month = (uint16_t)bits[3];
    c->dow = (uint8_t)((bits[4] | (bits[4] >> 7)) & 0x7f);     /* 7 is Sunday too */
    c->dom_star = tok[2][0] == '*';
    c->dow_star = tok[4][0] == '*';
    if (cron_next(c, 0) < 0) {
        snprintf(err, errlen, "'%.100s' never comes due (no such day)", text);
        return -1;
    }
    return 0;
}

static int
day_matches(const struct cron *c, const struct tm *tm)
{
    int dom = (c->dom >> tm->tm_mday) & 1, dow = (c->dow >> tm->tm_wday) & 1;
    if (c->dom_star || c->dow_star)
        return dom && dow;
    return dom || dow;
}

/* Normalizes *tm (timegm also fills tm_wday) and returns its time. */
static int64_t
norm(struct tm *tm)
{
    time_t t = timegm(tm);
    struct tm out;
    gmtime_r(&t, &out);
    *tm = out;
    return (int64_t)t;
}

int64_t
cron_next(const struct cron *c, int64_t t)
{
    time_t start = (time_t)(t - (t % 60 + 60) % 60 + 60);  /* the next whole minute */
    struct tm tm;
    gmtime_r(&start, &tm);
    int last_year = tm.tm_year + SEARCH_YEARS;
    while (tm.tm_year <= last_year) {
        if (!((c->month >> (tm.tm_mon + 1)) & 1)) {
            tm.tm_mon++;
            tm.tm_mday = 1;
            tm.tm_hour = tm.tm_min = 0;
        } else if (!day_matches(c, &tm)) {
            tm.tm_mday++;
            tm.tm_hour = tm.tm_min = 0;
        } else if (!((c->hour >> tm.tm_hour) & 1)) {
            tm.tm_hour++;
            tm.tm_min = 0;
        } else if (!((c->minute >> tm.tm_min) & 1)) {
            tm.tm_min++;
        } else {
            return norm(&tm);
        }
        norm(&tm);
    }
    return -1;
}

int64_t
cron_prev(const struct cron *c, int64_t t)
{
    time_t start = (time_t)(t - (t % 60 + 60) % 60);          /* this whole minute */
    struct tm tm;
    gmtime_r(&start, &tm);
    int first_year = tm.tm_year - SEARCH_YEARS;
    while (tm.tm_year >= first_year) {
        if (!((c->month >> (tm.tm_mon + 1)) & 1)) {
            tm.tm_mday = 0;             /* the last day of the month before */
            tm.tm_hour = 23;
            tm.tm_min = 59;
        } else if (!day_matches(c, &tm)) {
            tm.tm_mday--;
            tm.tm_hour = 23;
            tm.tm_min = 59;
        } else if (!((c->hour >> tm.tm_hour) & 1)) {
            tm.tm_hour--;
            tm.tm_min = 59;
        } else if (!((c->minute >> tm.tm_min) & 1)) {
            tm.tm_min--;
        } else {
            return norm(&tm);
        }
        norm(&tm);
    }
    return -1;
}
