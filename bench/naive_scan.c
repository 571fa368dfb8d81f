/* naive_scan.c -- the spawn-per-task baseline of bench/run.sh's "preload" benchmark.
 *
 * One process per task, doing what warmpool's scan kind does once at start, every time:
 * read the rules file, compile every rule with Vectorscan (hs_compile_multi), allocate
 * scratch, then scan ONE input file and print the matches as JSON, and exit.
 *
 *   naive_scan RULES_FILE INPUT_FILE  ->  {"bytes": n, "matches": [{"rule", "start", "end"}]}
 *
 * Rules format: id<TAB>regex per line, blank lines and '#' comments ignored (the format
 * of rules/default.rules). Flags: HS_FLAG_MULTILINE | HS_FLAG_SOM_LEFTMOST; a rule that
 * Vectorscan cannot compile with SOM is retried without it (its matches print "start":
 * null), as the scan kind documents. Reports of one rule with the same start fold into
 * one match with the longest end. Build: gcc -O2 naive_scan.c -lhs
 * Exit: 0 scanned, 1 usage or I/O error, 2 rules do not compile. */
#include <hs/hs.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct match {
    unsigned id;
    unsigned long long from, to;
};

struct matches {
    struct match *v;
    size_t n, cap;
    const unsigned *flags;
};

static char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    size_t got;
    while (buf != NULL && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (nb == NULL)
                free(buf);
            buf = nb;
        }
    }
    fclose(f);
    if (buf != NULL) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}

static int
on_match(unsigned id, unsigned long long from, unsigned long long to, unsigned flags,
         void *ctx)
{
    struct matches *m = ctx;
    (void)flags;
    int som = (m->flags[id] & HS_FLAG_SOM_LEFTMOST) != 0;
    if (som) { /* fold: same rule, same start -> keep the longest end */
        for (size_t i = m->n; i-- > 0;) {
            if (m->v[i].id == id && m->v[i].from == from) {
                if (to > m->v[i].to)
                    m->v[i].to = to;
                return 0;
            }
        }
    }
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 64;
        m->v = realloc(m->v, m->cap * sizeof *m->v);
        if (m->v == NULL)
            return 1;
    }
    m->v[m->n++] = (struct match){id, som ? from : (unsigned long long)-1, to};
    return m->n >= 10000; /* the scan kind's SCAN_MAX_MATCHES */
}

int
main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s RULES_FILE INPUT_FILE\n", argv[0]);
        return 1;
    }
    size_t rlen, ilen;
    char *rules = slurp(argv[1], &rlen);
    if (rules == NULL) {
        perror(argv[1]);
        return 1;
    }
    /* parse: id<TAB>regex */
    size_t cap = 1024, n = 0;
    char **ids = malloc(cap * sizeof *ids), **pats = malloc(cap * sizeof *pats);
    unsigned *flags = malloc(cap * sizeof *flags), *hsids = malloc(cap * sizeof *hsids);
    for (char *line = rules, *next; line != NULL && *line != '\0'; line = next) {
        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        size_t l = strlen(line);
        while (l > 0 && (line[l - 1] == '\r' || line[l - 1] == ' ' || line[l - 1] == '\t'))
            line[--l] = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '#')
            continue;
        char *tab = strchr(line, '\t');
        if (tab == NULL || tab == line || tab[1] == '\0') {
            fprintf(stderr, "bad rule line: %s\n", line);
            return 2;
        }
        *tab = '\0';
        if (n == cap) {
            cap *= 2;
            ids = realloc(ids, cap * sizeof *ids);
            pats = realloc(pats, cap * sizeof *pats);
            flags = realloc(flags, cap * sizeof *flags);
            hsids = realloc(hsids, cap * sizeof *hsids);
        }
        ids[n] = line;
        pats[n] = tab + 1;
        flags[n] = HS_FLAG_MULTILINE | HS_FLAG_SOM_LEFTMOST;
        hsids[n] = (unsigned)n;
        n++;
    }
    hs_database_t *db = NULL;
    hs_compile_error_t *cerr = NULL;
    for (;;) {
        if (hs_compile_multi((const char *const *)pats, flags, hsids, (unsigned)n,
                             HS_MODE_BLOCK, NULL, &db, &cerr) == HS_SUCCESS)
            break;
        int e = cerr->expression;
        if (e >= 0 && (flags[e] & HS_FLAG_SOM_LEFTMOST)) { /* retry that rule without SOM */
            flags[e] &= ~(unsigned)HS_FLAG_SOM_LEFTMOST;
            hs_free_compile_error(cerr);
            continue;
        }
        fprintf(stderr, "rule %s: %s\n", e >= 0 ? ids[e] : "?", cerr->message);
        return 2;
    }
    hs_scratch_t *scratch = NULL;
    if (hs_alloc_scratch(db, &scratch) != HS_SUCCESS) {
        fprintf(stderr, "hs_alloc_scratch failed\n");
        return 1;
    }
    char *text = slurp(argv[2], &ilen);
    if (text == NULL) {
        perror(argv[2]);
        return 1;
    }
    struct matches m = {.flags = flags};
    hs_error_t rc = hs_scan(db, text, (unsigned)ilen, 0, scratch, on_match, &m);
    if (rc != HS_SUCCESS && rc != HS_SCAN_TERMINATED) {
        fprintf(stderr, "hs_scan failed: %d\n", rc);
        return 1;
    }
    printf("{\"bytes\": %zu, \"matches\": [", ilen);
    for (size_t i = 0; i < m.n; i++) {
        if (m.v[i].from == (unsigned long long)-1)
            printf("%s{\"rule\": \"%s\", \"start\": null, \"end\": %llu}", i ? ", " : "",
                   ids[m.v[i].id], m.v[i].to);
        else
            printf("%s{\"rule\": \"%s\", \"start\": %llu, \"end\": %llu}", i ? ", " : "",
                   ids[m.v[i].id], m.v[i].from, m.v[i].to);
    }
    printf("]%s}\n", rc == HS_SCAN_TERMINATED ? ", \"truncated\": true" : "");
    /* a real one-shot tool would just exit; free for valgrind-cleanliness anyway */
    hs_free_scratch(scratch);
    hs_free_database(db);
    free(m.v);
    free(text);
    free(ids);
    free(pats);
    free(flags);
    free(hsids);
    free(rules);
    return 0;
}
