/* kind_scan.h -- the `scan` kind: a signature scanner whose context is a Vectorscan
 * database compiled once, in the supervisor, from a rules file.
 *
 * Configuration string: the path of a rules file (format: scan_rules.h and the header
 * of rules/default.rules), or NULL for the rules built into the binary.
 * Input:  {"text": "..."} or {"base64": "..."} (exactly one, nothing else).
 * Result: {"bytes": n, "matches": [{"rule": id, "start": n|null, "end": n}, ...]}
 *         in the order Vectorscan reports them (by end offset), with "truncated": true
 *         when SCAN_MAX_MATCHES was reached and the scan stopped there. */
#ifndef WP_KIND_SCAN_H
#define WP_KIND_SCAN_H

#include "warmpool/kind.h"

#include <stddef.h>

#define SCAN_MAX_MATCHES 10000

extern const struct wp_kind KIND_SCAN;

/* rules/default.rules, embedded at build time (generated scan_default_rules.c, made
 * by cmake/embed.cmake). SCAN_DEFAULT_RULES is NUL-terminated; the length excludes
 * the NUL. */
extern const char SCAN_DEFAULT_RULES[];
extern const size_t SCAN_DEFAULT_RULES_LEN;

#endif
