/* scan_rules.h -- the rules-file parser of the scan kind: text in, (id, regex) pairs out.
 *
 * Pure text processing, no Vectorscan: kind_scan.c compiles what this returns.
 *
 * Format, one rule a line:   id<TAB>regex
 *   - id: 1 to 64 of [A-Za-z0-9_.:-], unique in the file;
 *   - regex: the rest of the line after the first TAB, trailing spaces and TABs
 *     removed (write `[ ]` or `\x20` for a significant trailing space); not empty;
 *   - blank lines, and lines whose first non-blank character is `#`, are comments;
 *   - lines end with LF or CRLF; a UTF-8 byte-order mark at the very start is skipped.
 * Line numbers are 1-based, counted in the text as given. */
#ifndef WP_SCAN_RULES_H
#define WP_SCAN_RULES_H

#include <stddef.h>

#define SCAN_RULES_ID_MAX 64

struct scan_rules {
    size_t count;           /* number of rules; 0 for a file of comments only */
    char **ids;             /* count NUL-terminated ids, pointing into buf */
    char **patterns;        /* count NUL-terminated regexes, pointing into buf */
    size_t *lines;          /* count 1-based line numbers */
    char *buf;              /* a private copy of the text that the strings live in */
};

/* Parses len bytes of text (need not be NUL-terminated). 0 with *out filled (free it
 * with scan_rules_free()); or -1 with *out empty and err = "line N: why". Linear in
 * len: 20,000 rules parse in milliseconds. */
int scan_rules_parse(const char *text, size_t len, struct scan_rules *out, char *err,
                     size_t errlen);

/* Releases what scan_rules_parse() allocated and empties *rules. NULL-safe. */
void scan_rules_free(struct scan_rules *rules);

#endif
