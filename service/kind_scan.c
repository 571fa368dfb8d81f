/* kind_scan.c -- the scan kind: many regexes at once over a task's bytes, with
 * Vectorscan, against a rule database compiled once and shared by every worker.
 *
 * Processes (see warmpool/kind.h): load() and unload() run in the zygote, so the
 * compiled database is built before fork and read copy-on-write by the workers;
 * worker_init() gives each worker its own Vectorscan scratch space (scratch may not
 * be shared between processes scanning at once); validate() runs in HTTP threads and
 * reads nothing but its input.
 *
 * Invariants:
 *   1. A context is never written after load() returns (it is shared by fork).
 *   2. Rule i of the rules file is Vectorscan expression id i, so a match's id indexes
 *      ids[] and has_som[] directly.
 *   3. A worker's scratch was allocated for the context it scans (w->ctx == ctx). */
#include "service/kind_scan.h"
#include "service/scan_rules.h"
#include "common/log.h"

#include <hs/hs.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Flags of every rule (documented in rules/default.rules); SOM_LEFTMOST is added per
 * rule when Vectorscan accepts it. */
#define SCAN_FLAGS HS_FLAG_MULTILINE
#define SCAN_BUILTIN_NAME "<built-in default.rules>"

struct scan_ctx {
    hs_database_t *db;
    size_t count;               /* number of rules */
    char **ids;                 /* count ids, pointing into id_blob */
    char *id_blob;
    unsigned char *has_som;     /* count flags: 1 if the rule reports start offsets */
};

struct scan_match {
    unsigned int rule;
    unsigned long long start;   /* meaningful only if has_som[rule] */
    unsigned long long end;     /* offset just past the match */
};

struct scan_worker {            /* one per worker process, from worker_init() */
    const struct scan_ctx *ctx; /* the context the scratch was allocated for */
    hs_scratch_t *scratch;
    struct scan_match *m;       /* SCAN_MAX_MATCHES slots; n used by the current scan */
    size_t n;
    int truncated;              /* the current scan stopped at SCAN_MAX_MATCHES */
    uint32_t scan_no;           /* current scan, for stamp[] */
    uint32_t *stamp;            /* per rule: scan_no when last[rule] was set */
    size_t *last;               /* per rule: index in m[] of its latest match */
};

/* ---- Loading: read, parse, compile -------------------------------------------- */

/* Reads a whole file into *text (free() it). 0, or -1 with err naming the path. */
static int
read_file(const char *path, char **text, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "rules file %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 4096, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (buf == NULL) {
            snprintf(err, errlen, "rules file %s: out of memory", path);
            close(fd);
            return -1;
        }
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            snprintf(err, errlen, "rules file %s: %s", path, strerror(errno));
            free(buf);
            close(fd);
            return -1;
        }
        if (got == 0)
            break;
        n += (size_t)got;
        if (n == cap) {                 /* grew since fstat, or not a regular file */
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL)
                free(buf);
            buf = bigger;
            cap *= 2;
        }
    }
    close(fd);
    *text = buf;
    *len = n;
    return 0;
}

/* Vectorscan's message for one expression compiled alone, or NULL if it compiles. */
static char *
compile_alone(const char *pattern, unsigned int flags)
{
    hs_database_t *db = NULL;
    hs_compile_error_t *ce = NULL;
    if (hs_compile(pattern, flags, HS_MODE_BLOCK, NULL, &db, &ce) == HS_SUCCESS) {
        hs_free_database(db);
        return NULL;
    }
    char *msg = strdup(ce && ce->message ? ce->message : "unknown compile error");
    hs_free_compile_error(ce);
    return msg != NULL ? msg : strdup("out of memory");
}

/* Compiles all rules into *db, with SOM for each rule whose has_som[] is 1; clears
 * has_som[] for the rules that Vectorscan cannot compile with SOM. Each failed attempt
 * names one expression: if it had SOM, it is tried alone without SOM (cheaper than a
 * full compile) and, if that works, the whole set is compiled again without its SOM;
 * otherwise its message is the answer. An error tied to no expression (e.g. the
 * database too large) drops SOM everywhere once before giving up. 0, or -1 with err. */
static int
compile_rules(const struct scan_rules *r, const char *name, unsigned char *has_som,
              hs_database_t **db, char *err, size_t errlen)
{
    unsigned int *flags = malloc(r->count * sizeof *flags);
    unsigned int *ids = malloc(r->count * sizeof *ids);
    int ret = -1;
    if (flags == NULL || ids == NULL) {
        snprintf(err, errlen, "rules file %s: out of memory", name);
        goto out;
    }
    for (size_t i = 0; i < r->count; i++)
        ids[i] = (unsigned int)i;

    for (;;) {
        for (size_t i = 0; i < r->count; i++)
            flags[i] = SCAN_FLAGS | (has_som[i] ? HS_FLAG_SOM_LEFTMOST : 0);
        hs_compile_error_t *ce = NULL;
        if (hs_compile_multi((const char *const *)r->patterns, flags, ids,
                             (unsigned int)r->count, HS_MODE_BLOCK, NULL, db,
                             &ce) == HS_SUCCESS) {
            ret = 0;
            goto out;
        }
        int e = ce ? ce->expression : -1;
        if (e >= 0 && (size_t)e < r->count) {
            char *msg = has_som[e] ? compile_alone(r->patterns[e], SCAN_FLAGS) : NULL;
            if (has_som[e] && msg == NULL) {
                log_info("scan: rules file %s line %zu (id %s): no start offsets (%s)",
                         name, r->lines[e], r->ids[e], ce->message);
                has_som[e] = 0;         /* fine without SOM: try the whole set again */
                hs_free_compile_error(ce);
                continue;
            }
            snprintf(err, errlen, "rules file %s line %zu (id %s): %s", name, r->lines[e],
                     r->ids[e], msg ? msg : ce->message);
            free(msg);
            hs_free_compile_error(ce);
            goto out;
        }
        size_t som = 0;
        for (size_t i = 0; i < r->count; i++)
            som += has_som[i];
        if (som > 0) {
            log_warn("scan: rules file %s: %s; compiling every rule without start offsets",
                     name, ce && ce->message ? ce->message : "compile failed");
            memset(has_som, 0, r->count);
            hs_free_compile_error(ce);
            continue;
        }
        snprintf(err, errlen, "rules file %s: %s", name,
                 ce && ce->message ? ce->message : "compile failed");
        hs_free_compile_error(ce);
        goto out;
    }
out:
    free(flags);
    free(ids);
    return ret;
}

static void
scan_unload(void *ctx)
{
    struct scan_ctx *c = ctx;
    if (c == NULL)
        return;
    hs_free_database(c->db);
    free(c->ids);
    free(c->id_blob);
    free(c->has_som);
    free(c);
}

/* Copies the ids into one block, so the context owns nothing of the parsed text. */
static int
keep_ids(struct scan_ctx *c, const struct scan_rules *r, size_t *bytes)
{
    size_t total = 0;
    for (size_t i = 0; i < r->count; i++)
        total += strlen(r->ids[i]) + 1;
    c->id_blob = malloc(total);
    c->ids = malloc(r->count * sizeof *c->ids);
    if (c->id_blob == NULL || c->ids == NULL)
        return -1;
    char *p = c->id_blob;
    for (size_t i = 0; i < r->count; i++) {
        size_t n = strlen(r->ids[i]) + 1;
        memcpy(p, r->ids[i], n);
        c->ids[i] = p;
        p += n;
    }
    *bytes = total + r->count * sizeof *c->ids;
    return 0;
}

static int
scan_load(const char *config, void **ctx, size_t *ctx_bytes, char *err, size_t errlen)
{
    const char *name = config != NULL ? config : SCAN_BUILTIN_NAME;
    const char *text = SCAN_DEFAULT_RULES;
    size_t len = SCAN_DEFAULT_RULES_LEN, id_bytes = 0, db_bytes = 0;
    char *file = NULL, why[512];
    struct scan_rules rules;

    if (hs_valid_platform() != HS_SUCCESS) {
        snprintf(err, errlen, "scan: this CPU lacks SSSE3, which Vectorscan needs");
        return -1;
    }
    if (config != NULL) {
        if (read_file(config, &file, &len, err, errlen) != 0)
            return -1;
        text = file;
    }
    int rc = scan_rules_parse(text, len, &rules, why, sizeof why);
    free(file);
    if (rc != 0) {
        snprintf(err, errlen, "rules file %s %s", name, why);
        return -1;
    }
    if (rules.count == 0 || rules.count > UINT_MAX / 2) {
        snprintf(err, errlen, "rules file %s: %s", name,
                 rules.count == 0 ? "no rules (only comments and blank lines)"
                                  : "too many rules");
        scan_rules_free(&rules);
        return -1;
    }

    struct scan_ctx *c = calloc(1, sizeof *c);
    if (c == NULL || (c->has_som = malloc(rules.count)) == NULL) {
        snprintf(err, errlen, "rules file %s: out of memory", name);
        goto fail;
    }
    c->count = rules.count;
    memset(c->has_som, 1, rules.count);
    if (compile_rules(&rules, name, c->has_som, &c->db, err, errlen) != 0)
        goto fail;
    if (keep_ids(c, &rules, &id_bytes) != 0 || hs_database_size(c->db, &db_bytes) !=
        HS_SUCCESS) {
        snprintf(err, errlen, "rules file %s: out of memory", name);
        goto fail;
    }
    scan_rules_free(&rules);
    *ctx = c;
    *ctx_bytes = db_bytes + id_bytes + c->count + sizeof *c;
    return 0;

fail:
    scan_rules_free(&rules);
    scan_unload(c);
    return -1;
}

/* ---- Per worker ---------------------------------------------------------------- */

static void
scan_worker_fini(void *ctx, void *worker_state)
{
    struct scan_worker *w = worker_state;
    (void)ctx;
    if (w == NULL)
        return;
    hs_free_scratch(w->scratch);            /* NULL-safe */
    free(w->m);
    free(w->stamp);
    free(w->last);
    free(w);
}

static int
scan_worker_init(void *ctx, void **worker_state, char *err, size_t errlen)
{
    const struct scan_ctx *c = ctx;
    struct scan_worker *w = calloc(1, sizeof *w);
    if (w == NULL || (w->m = malloc(SCAN_MAX_MATCHES * sizeof *w->m)) == NULL ||
        (w->stamp = calloc(c->count, sizeof *w->stamp)) == NULL ||
        (w->last = malloc(c->count * sizeof *w->last)) == NULL) {
        snprintf(err, errlen, "scan: out of memory for the worker's match buffer");
        scan_worker_fini(ctx, w);
        return -1;
    }
    hs_error_t rc = hs_alloc_scratch(c->db, &w->scratch);
    if (rc != HS_SUCCESS) {
        snprintf(err, errlen, "scan: cannot allocate Vectorscan scratch space (error %d)",
                 (int)rc);
        scan_worker_fini(ctx, w);
        return -1;
    }
    w->ctx = c;
    *worker_state = w;
    return 0;
}

/* ---- Input: {"text": s} or {"base64": s} ---------------------------------------- */

static int
b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Checks standard base64 (RFC 4648 section 4: A-Z a-z 0-9 + /, padded with '=' to a
 * multiple of 4, no blanks). 0 with the decoded length; or -1 and why. */
static int
b64_check(const char *s, size_t n, size_t *out_len, char *err, size_t errlen)
{
    if (n % 4 != 0) {
        snprintf(err, errlen, "\"base64\" is not valid base64: its length (%zu) is not a "
                 "multiple of 4", n);
        return -1;
    }
    size_t pad = n >= 2 && s[n - 2] == '=' && s[n - 1] == '=' ? 2
               : n >= 1 && s[n - 1] == '=' ? 1 : 0;
    for (size_t i = 0; i < n - pad; i++) {
        if (b64_value((unsigned char)s[i]) < 0) {
            snprintf(err, errlen, "\"base64\" is not valid base64: unexpected character "
                     "at offset %zu", i);
            return -1;
        }
    }
    *out_len = n / 4 * 3 - pad;
    return 0;
}

/* Decodes base64 that b64_check() accepted; out holds its decoded length. */
static void
b64_decode(const char *s, size_t n, unsigned char *out)
{
    size_t j = 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        int k = 0;
        for (; k < 4 && s[i + k] != '='; k++)
            v = v << 6 | (uint32_t)b64_value((unsigned char)s[i + k]);
        v <<= 6 * (4 - k);
        out[j++] = (unsigned char)(v >> 16);
        if (k > 2)
            out[j++] = (unsigned char)(v >> 8);
        if (k > 3)
            out[j++] = (unsigned char)v;
    }
}

/* The one field of a valid input, or NULL with err (which names the field). */
static const json_t *
input_field(const json_t *input, int *is_base64, char *err, size_t errlen)
{
    if (!json_is_object(input)) {
        snprintf(err, errlen, "scan needs an object: {\"text\": a string} or "
                 "{\"base64\": a string}");
        return NULL;
    }
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)input, key, value) {
        if (strcmp(key, "text") != 0 && strcmp(key, "base64") != 0) {
            snprintf(err, errlen, "unknown field \"%.64s\": scan takes only \"text\" or "
                     "\"base64\"", key);
            return NULL;
        }
    }
    const json_t *text = json_object_get(input, "text");
    const json_t *b64 = json_object_get(input, "base64");
    if (text != NULL && b64 != NULL) {
        snprintf(err, errlen, "give only one of \"text\" and \"base64\", not both");
        return NULL;
    }
    if (text == NULL && b64 == NULL) {
        snprintf(err, errlen, "missing \"text\" (a string) or \"base64\" (a string)");
        return NULL;
    }
    *is_base64 = b64 != NULL;
    const json_t *v = b64 != NULL ? b64 : text;
    if (!json_is_string(v)) {
        snprintf(err, errlen, "\"%s\" must be a string", b64 != NULL ? "base64" : "text");
        return NULL;
    }
    return v;
}

static int
scan_validate(const void *ctx, const json_t *input, char *err, size_t errlen)
{
    (void)ctx;
    int is_base64;
    size_t n;
    const json_t *v = input_field(input, &is_base64, err, errlen);
    if (v == NULL)
        return -1;
    if (is_base64)
        return b64_check(json_string_value(v), json_string_length(v), &n, err, errlen);
    return 0;
}

/* ---- Run ----------------------------------------------------------------------- */

/* Vectorscan's match callback. Reports of one SOM rule with the same start as that
 * rule's previous match are folded into it (longest end): a trailing `+` or `{n,}`
 * would otherwise give one match per extra byte. Returns 1 (stop) at the cap. */
static int HS_CDECL
on_match(unsigned int id, unsigned long long from, unsigned long long to,
         unsigned int flags, void *arg)
{
    struct scan_worker *w = arg;
    (void)flags;
    if (w->ctx->has_som[id] && w->stamp[id] == w->scan_no) {
        struct scan_match *prev = &w->m[w->last[id]];
        if (prev->start == from) {
            if (to > prev->end)
                prev->end = to;
            return 0;
        }
    }
    if (w->n == SCAN_MAX_MATCHES) {
        w->truncated = 1;
        return 1;
    }
    w->m[w->n] = (struct scan_match){.rule = id, .start = from, .end = to};
    w->stamp[id] = w->scan_no;
    w->last[id] = w->n++;
    return 0;
}

/* The result document of the scan just made, or NULL if out of memory. */
static json_t *
result_json(const struct scan_ctx *c, const struct scan_worker *w, size_t bytes)
{
    json_t *list = json_array();
    json_t *res = json_pack("{s:I, s:o}", "bytes", (json_int_t)bytes, "matches", list);
    if (res == NULL)
        return NULL;
    for (size_t i = 0; i < w->n; i++) {
        const struct scan_match *m = &w->m[i];
        json_t *start = c->has_som[m->rule] ? json_integer((json_int_t)m->start)
                                            : json_null();
        if (json_array_append_new(list, json_pack("{s:s, s:o, s:I}", "rule",
                                  c->ids[m->rule], "start", start, "end",
                                  (json_int_t)m->end)) != 0) {
            json_decref(res);
            return NULL;
        }
    }
    if (w->truncated && json_object_set_new(res, "truncated", json_true()) != 0) {
        json_decref(res);
        return NULL;
    }
    return res;
}

static json_t *
scan_run(const void *ctx, void *ws, const json_t *input, struct wp_task_error *err)
{
    const struct scan_ctx *c = ctx;
    struct scan_worker *w = ws;
    char why[256];
    int is_base64;

    const json_t *v = input_field(input, &is_base64, why, sizeof why);
    if (v == NULL) {
        wp_task_error_set(err, "invalid_input", 0, "%s", why);
        return NULL;
    }
    const char *data = json_string_value(v);
    size_t len = json_string_length(v), n = 0;
    if (is_base64 && b64_check(data, len, &n, why, sizeof why) != 0) {
        wp_task_error_set(err, "invalid_input", 0, "%s", why);
        return NULL;
    }
    if (c == NULL || w == NULL || w->ctx != c) {
        wp_task_error_set(err, "scan_failed", 0, "scan: the worker has no scratch space "
                          "for this rule set (worker_init was not run)");
        return NULL;
    }

    /* The bytes to scan: the string itself, or its decoding. */
    unsigned char *decoded = NULL;
    if (is_base64) {
        if ((decoded = malloc(n > 0 ? n : 1)) == NULL) {
            wp_task_error_set(err, "scan_failed", 1, "out of memory for %zu bytes", n);
            return NULL;
        }
        b64_decode(data, len, decoded);
        data = (const char *)decoded;
        len = n;
    }
    if (len > UINT_MAX) {
        free(decoded);
        wp_task_error_set(err, "invalid_input", 0, "input of %zu bytes is larger than "
                          "the %u bytes one scan takes", len, UINT_MAX);
        return NULL;
    }

    w->n = 0;
    w->truncated = 0;
    if (++w->scan_no == 0) {                /* wrapped: forget every stamp */
        memset(w->stamp, 0, c->count * sizeof *w->stamp);
        w->scan_no = 1;
    }
    hs_error_t rc = hs_scan(c->db, data, (unsigned int)len, 0, w->scratch, on_match, w);
    free(decoded);
    if (rc != HS_SUCCESS && rc != HS_SCAN_TERMINATED) {
        wp_task_error_set(err, "scan_failed", 0, "hs_scan failed (Vectorscan error %d)",
                          (int)rc);
        return NULL;
    }
    json_t *res = result_json(c, w, len);
    if (res == NULL)
        wp_task_error_set(err, "scan_failed", 1, "out of memory for the result of %zu "
                          "matches", w->n);
    return res;
}

const struct wp_kind KIND_SCAN = {
    .abi_version = WP_KIND_ABI_VERSION,
    .name = "scan",
    .load = scan_load,
    .validate = scan_validate,
    .worker_init = scan_worker_init,
    .run = scan_run,
    .worker_fini = scan_worker_fini,
    .unload = scan_unload,
};
