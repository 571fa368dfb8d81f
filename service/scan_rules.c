/* scan_rules.c -- parses the scan kind's rules text (format in scan_rules.h).
 *
 * One pass over a private copy of the text: each rule line is cut in place (the TAB
 * and the line end become NULs), so ids and patterns point into that copy and a
 * 20,000-line file costs three allocations. Duplicate ids are found with an
 * open-addressing hash set of rule indexes. */
#include "service/scan_rules.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
is_id_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == ':' || c == '-';
}

static uint64_t
hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ULL;        /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* The id, quoted for an error message: at most 64 bytes, non-printables as '?'. */
static void
quote_id(const char *id, size_t n, char *out, size_t outlen)
{
    size_t j = 0;
    if (n > SCAN_RULES_ID_MAX)
        n = SCAN_RULES_ID_MAX;
    for (size_t i = 0; i < n && j + 1 < outlen; i++) {
        unsigned char c = (unsigned char)id[i];
        out[j++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (outlen > 0)
        out[j] = '\0';
}

/* Checks one id. 0, or -1 with err. */
static int
check_id(const char *id, size_t n, size_t line, char *err, size_t errlen)
{
    char shown[SCAN_RULES_ID_MAX + 1];
    if (n == 0) {
        snprintf(err, errlen, "line %zu: empty id before the TAB", line);
        return -1;
    }
    quote_id(id, n, shown, sizeof shown);
    if (n > SCAN_RULES_ID_MAX) {
        snprintf(err, errlen, "line %zu: id \"%s...\" is longer than %d characters", line,
                 shown, SCAN_RULES_ID_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!is_id_char((unsigned char)id[i])) {
            snprintf(err, errlen,
                     "line %zu: bad id \"%s\" (use 1-%d of A-Z a-z 0-9 _ . : -)", line,
                     shown, SCAN_RULES_ID_MAX);
            return -1;
        }
    }
    return 0;
}

/* Adds rule r to the set; -1 (and *first = the earlier rule) if its id is taken. */
static int
set_add(size_t *slots, size_t mask, char *const *ids, size_t r, size_t *first)
{
    for (size_t i = (size_t)hash_id(ids[r]) & mask;; i = (i + 1) & mask) {
        if (slots[i] == 0) {
            slots[i] = r + 1;
            return 0;
        }
        if (strcmp(ids[slots[i] - 1], ids[r]) == 0) {
            *first = slots[i] - 1;
            return -1;
        }
    }
}

int
scan_rules_parse(const char *text, size_t len, struct scan_rules *out, char *err,
                 size_t errlen)
{
    *out = (struct scan_rules){0};
    if (len == 0)
        text = "";
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {    /* UTF-8 BOM */
        text += 3;
        len -= 3;
    }

    /* Sizes first: one rule at most per line, and a set twice as large. */
    size_t max_rules = 1;
    for (const char *p = text; (p = memchr(p, '\n', len - (size_t)(p - text))) != NULL; p++)
        max_rules++;
    size_t cap = 16;
    while (cap < 2 * max_rules)
        cap *= 2;

    struct scan_rules r = {0};
    size_t *slots = calloc(cap, sizeof *slots);
    r.buf = malloc(len + 1);
    r.ids = malloc(max_rules * sizeof *r.ids);
    r.patterns = malloc(max_rules * sizeof *r.patterns);
    r.lines = malloc(max_rules * sizeof *r.lines);
    if (slots == NULL || r.buf == NULL || r.ids == NULL || r.patterns == NULL ||
        r.lines == NULL) {
        snprintf(err, errlen, "line 1: out of memory for %zu bytes of rules", len);
        goto fail;
    }
    memcpy(r.buf, text, len);
    r.buf[len] = '\0';

    char *p = r.buf, *end = r.buf + len;
    for (size_t line = 1; p < end; line++) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        char *next = eol ? eol + 1 : end;
        if (eol == NULL)
            eol = end;
        if (eol > p && eol[-1] == '\r')             /* CRLF */
            eol--;
        *eol = '\0';
        if (strlen(p) != (size_t)(eol - p)) {       /* a NUL before the line end */
            snprintf(err, errlen, "line %zu: contains a NUL byte", line);
            goto fail;
        }

        /* Blank or comment? */
        char *q = p;
        while (q < eol && (*q == ' ' || *q == '\t'))
            q++;
        if (q == eol || *q == '#') {
            p = next;
            continue;
        }

        char *tab = memchr(p, '\t', (size_t)(eol - p));
        if (tab == NULL) {
            snprintf(err, errlen, "line %zu: no TAB between the id and the regex", line);
            goto fail;
        }
        if (check_id(p, (size_t)(tab - p), line, err, errlen) != 0)
            goto fail;
        *tab = '\0';
        char *re = tab + 1, *re_end = eol;
        while (re_end > re && (re_end[-1] == ' ' || re_end[-1] == '\t'))
            re_end--;
        *re_end = '\0';
        if (re_end == re) {
            snprintf(err, errlen, "line %zu: empty regex for id \"%s\"", line, p);
            goto fail;
        }

        size_t i = r.count, first;
        r.ids[i] = p;
        r.patterns[i] = re;
        r.lines[i] = line;
        if (set_add(slots, cap - 1, r.ids, i, &first) != 0) {
            snprintf(err, errlen, "line %zu: duplicate id \"%s\" (first on line %zu)", line,
                     p, r.lines[first]);
            goto fail;
        }
        r.count++;
        p = next;
    }
    free(slots);
    *out = r;
    return 0;

fail:
    free(slots);
    scan_rules_free(&r);
    return -1;
}

void
scan_rules_free(struct scan_rules *rules)
{
    if (rules == NULL)
        return;
    free(rules->ids);
    free(rules->patterns);
    free(rules->lines);
    free(rules->buf);
    *rules = (struct scan_rules){0};
}
