/* log.c -- stderr logging with a timestamp, level, process role and pid, as text or
 * as one JSON object per line (for container platforms that parse their logs). */
#include "common/log.h"
#include "common/clock.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static enum log_level g_level = LOG_INFO;
static enum log_format g_format = LOG_FORMAT_TEXT;
static const char *g_role = "warmpool";

void log_set_level(enum log_level level) { g_level = level; }
enum log_level log_get_level(void) { return g_level; }
void log_set_format(enum log_format format) { g_format = format; }
void log_set_role(const char *role) { g_role = role; }

static const char *const NAMES[] = {"error", "warn", "info", "debug"};

int
log_level_parse(const char *text, enum log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(text, NAMES[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int
log_format_parse(const char *text, enum log_format *out)
{
    if (strcmp(text, "text") == 0)
        *out = LOG_FORMAT_TEXT;
    else if (strcmp(text, "json") == 0)
        *out = LOG_FORMAT_JSON;
    else
        return -1;
    return 0;
}

/* ---------------------------------------------------------------- one record */

/* A record being built. Appends stop (full = 1) LINE_RESERVE bytes before the end, so
 * the closing quote, brace and newline always fit: a cut record is still well formed. */
#define LINE_RESERVE 8
struct line {
    char b[LOG_LINE_MAX];
    size_t n;
    int full;
};

static int
room(const struct line *l, size_t n)
{
    return !l->full && n <= sizeof l->b - LINE_RESERVE - l->n;
}

static void
put(struct line *l, const char *s, size_t n)
{
    if (!room(l, n)) {
        l->full = 1;
        return;
    }
    memcpy(l->b + l->n, s, n);
    l->n += n;
}

static void put_s(struct line *l, const char *s) { put(l, s, strlen(s)); }

/* Appends the closing bytes, which LINE_RESERVE keeps room for. */
static void
close_with(struct line *l, const char *s)
{
    size_t n = strlen(s);
    memcpy(l->b + l->n, s, n);
    l->n += n;
}

/* Integers by hand: an access line per request makes printf's cost show (issue 10). */
static void
put_int(struct line *l, long long v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        tmp[--i] = '-';
    put(l, tmp + i, sizeof tmp - i);
}

/* d with 3 decimals ("12.345"), as printf("%.3f") for the values logged here */
static void
put_num(struct line *l, double d)
{
    double scaled = d * 1000.0 + (d < 0 ? -0.5 : 0.5);
    if (scaled >= 9.2e18 || scaled <= -9.2e18) {
        char tmp[64];
        int n = snprintf(tmp, sizeof tmp, "%.3f", d);
        put(l, tmp, n > 0 && (size_t)n < sizeof tmp ? (size_t)n : 0);
        return;
    }
    long long m = (long long)scaled;
    if (m < 0) {
        put_s(l, "-");
        m = -m;
    }
    put_int(l, m / 1000);
    char frac[4] = {'.', (char)('0' + m / 100 % 10), (char)('0' + m / 10 % 10),
                    (char)('0' + m % 10)};
    put(l, frac, 4);
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if it is not one
 * (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF). */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;         /* range of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;                          /* overlong */
        if (c == 0xed)
            hi = 0x9f;                          /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        if (c == 0xf4)
            hi = 0x8f;
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

/* Appends s as the inside of a JSON string: escapes, and U+FFFD for bytes that are not
 * UTF-8, so any message gives valid JSON. Stops at a whole character when full. */
static void
put_json_chars(struct line *l, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t left = strlen(s);
    while (left > 0 && !l->full) {
        char esc[8];
        const char *out = esc;
        size_t n, adv = 1;
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            n = 2;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            esc[0] = '\\';
            esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            n = 2;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            n = 6;
        } else if ((adv = utf8_len(p, left)) == 0) {
            out = "\\ufffd";
            n = 6;
            adv = 1;
        } else {
            out = (const char *)p;
            n = adv;
        }
        if (!room(l, n)) {
            l->full = 1;
            break;
        }
        put(l, out, n);
        p += adv;
        left -= adv;
    }
}

/* Appends s for a text record: one line, whatever s holds. */
static void
put_text_chars(struct line *l, const char *s, int quoting)
{
    /* the usual case, nothing to replace or escape, in one copy */
    size_t run = 0;
    while (s[run] != '\0' && (unsigned char)s[run] >= 0x20 && s[run] != 0x7f &&
           !(quoting && (s[run] == '"' || s[run] == '\\')))
        run++;
    if (s[run] == '\0') {
        if (l->full)
            return;
        size_t fit = sizeof l->b - LINE_RESERVE - l->n;
        put(l, s, run <= fit ? run : fit);
        l->full = run > fit;            /* cut: as much as fits */
        return;
    }
    for (const char *p = s; *p != '\0' && !l->full; p++) {
        char c = *p;
        if (quoting && (c == '"' || c == '\\')) {
            char esc[2] = {'\\', c};
            put(l, esc, 2);
        } else {
            char plain = (unsigned char)c < 0x20 || c == 0x7f ? ' ' : c;
            put(l, &plain, 1);
        }
    }
}

/* The record's time. Formatting a date costs more than the rest of a short record, so
 * each thread formats it once a second and patches the milliseconds in between. */
static const char *
timestamp(void)
{
    static _Thread_local int64_t tl_second = INT64_MIN;
    static _Thread_local char tl_ts[CLOCK_RFC3339_LEN];
    int64_t now = clock_now_ms();
    int64_t second = now >= 0 ? now / 1000 : (now - 999) / 1000;
    int ms = (int)(now - second * 1000);
    if (second != tl_second) {
        clock_format_rfc3339(now, tl_ts);      /* "YYYY-MM-DDTHH:MM:SS.mmmZ" */
        tl_second = second;
    } else {
        tl_ts[20] = (char)('0' + ms / 100);
        tl_ts[21] = (char)('0' + ms / 10 % 10);
        tl_ts[22] = (char)('0' + ms % 10);
    }
    return tl_ts;
}

static void
begin(struct line *l, enum log_level level)
{
    const char *ts = timestamp();
    l->n = 0;
    l->full = 0;
    if (g_format == LOG_FORMAT_JSON) {
        put_s(l, "{\"ts\":\"");
        put_s(l, ts);
        put_s(l, "\",\"level\":\"");
        put_s(l, NAMES[level]);
        put_s(l, "\",\"role\":\"");
        put_json_chars(l, g_role);
        put_s(l, "\",\"pid\":");
        put_int(l, (long long)getpid());
        put_s(l, ",\"msg\":\"");
    } else {
        static const char *const PADDED[] = {"error ", "warn  ", "info  ", "debug "};
        put_s(l, ts);
        put_s(l, " ");
        put_s(l, PADDED[level]);
        put_s(l, "[");
        put_text_chars(l, g_role, 0);
        put_s(l, " ");
        put_int(l, (long long)getpid());
        put_s(l, "] ");
    }
}

static void
put_msg(struct line *l, const char *msg)
{
    if (g_format == LOG_FORMAT_JSON) {
        put_json_chars(l, msg);
        if (!l->full)
            put_s(l, "\"");
    } else {
        put_text_chars(l, msg, 0);
    }
}

/* Does a text value need quotes to read back as one value? */
static int
needs_quotes(const char *s)
{
    return s[0] == '\0' || strpbrk(s, " \"=\\\t\r\n") != NULL;
}

static void
put_field(struct line *l, const struct log_field *f)
{
    size_t mark = l->n;                 /* a field is written whole, or not at all */
    int json = g_format == LOG_FORMAT_JSON;
    put_s(l, json ? ",\"" : " ");
    put_s(l, f->key);
    put_s(l, json ? "\":" : "=");
    switch (f->type) {
    case LOG_F_STR:
        if (f->s == NULL) {
            put_s(l, json ? "null" : "-");
        } else if (json) {
            put_s(l, "\"");
            put_json_chars(l, f->s);
            put_s(l, "\"");
        } else if (needs_quotes(f->s)) {
            put_s(l, "\"");
            put_text_chars(l, f->s, 1);
            put_s(l, "\"");
        } else {
            put_text_chars(l, f->s, 0);
        }
        break;
    case LOG_F_INT:
        put_int(l, f->i);
        break;
    case LOG_F_NUM:
        if (isfinite(f->d))
            put_num(l, f->d);
        else
            put_s(l, json ? "null" : "-");
        break;
    }
    if (l->full) {                      /* too big: leave it out, try the next one */
        l->n = mark;
        l->full = 0;
    }
}

static void
finish(struct line *l)
{
    close_with(l, g_format == LOG_FORMAT_JSON ? "}\n" : "\n");
    ssize_t w = write(STDERR_FILENO, l->b, l->n);
    (void)w;                            /* nowhere to report a failed log write */
}

void
log_fields(enum log_level level, const char *msg, const struct log_field *fields, size_t n)
{
    if (level > g_level)
        return;
    struct line l;
    begin(&l, level);
    put_msg(&l, msg);
    if (l.full && g_format == LOG_FORMAT_JSON)
        close_with(&l, "\"");          /* the message was cut inside its string */
    for (size_t i = 0; i < n && !l.full; i++)
        put_field(&l, &fields[i]);
    finish(&l);
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
    if (level > g_level)
        return;
    char msg[LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    log_fields(level, msg, NULL, 0);
}
