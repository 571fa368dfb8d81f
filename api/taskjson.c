/* taskjson.c -- the API's JSON shapes: task objects out, submissions in, ids, cursors. */
#include "api/internal.h"
#include "common/clock.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static json_t *
time_or_null(int64_t ms)
{
    if (ms == 0)
        return json_null();
    char buf[CLOCK_RFC3339_LEN];
    clock_format_rfc3339(ms, buf);
    return json_string(buf);
}

static json_t *
json_text_or_null(const char *text)
{
    if (text == NULL)
        return json_null();
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    return v ? v : json_null();     /* we wrote it; it parses */
}

json_t *
taskjson_from_store(const store_task *t, int brief)
{
    char id[24];
    snprintf(id, sizeof id, "%" PRId64, t->id);
    json_t *error = t->error_code == NULL ? json_null()
        : json_pack("{s:s, s:s}", "code", t->error_code, "message",
                    t->error_message ? t->error_message : "");
    json_t *o = json_object();
    if (o == NULL || error == NULL) {
        json_decref(o);
        json_decref(error);
        return NULL;
    }
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "kind", json_string(t->kind));
    json_object_set_new(o, "state", json_string(task_state_name(t->state)));
    json_object_set_new(o, "priority", json_integer(t->priority));
    if (!brief) {
        json_object_set_new(o, "input", json_text_or_null(t->input));
        json_object_set_new(o, "result", json_text_or_null(t->result));
    }
    json_object_set_new(o, "error", error);
    json_object_set_new(o, "attempts", json_integer(t->attempts));
    json_object_set_new(o, "max_attempts", json_integer(t->max_attempts));
    json_object_set_new(o, "timeout_ms", json_integer(t->timeout_ms));
    json_object_set_new(o, "created_at", time_or_null(t->created_at_ms));
    json_object_set_new(o, "started_at", time_or_null(t->started_at_ms));
    json_object_set_new(o, "finished_at", time_or_null(t->finished_at_ms));
    /* when a pending task (scheduled, or a retry waiting for its backoff) may start;
     * null otherwise */
    json_object_set_new(o, "run_after",
                        time_or_null(t->state == TASK_PENDING ? t->run_after_ms : 0));
    /* issue 13: the error before a retry from the dead, until the next attempt ends */
    json_object_set_new(o, "previous_error",
                        t->previous_error_code == NULL ? json_null()
                        : json_pack("{s:s, s:s}", "code", t->previous_error_code, "message",
                                    t->previous_error_message ? t->previous_error_message : ""));
    /* issue 13: only on tasks submitted with a callback_url */
    if (t->callback_url != NULL)
        json_object_set_new(o, "callback",
                            json_pack("{s:s, s:s, s:i, s:s?}", "url", t->callback_url,
                                      "state", t->callback_state == STORE_CB_DELIVERED ? "delivered"
                                               : t->callback_state == STORE_CB_FAILED ? "failed"
                                               : "pending",
                                      "attempts", t->callback_attempts,
                                      "last_error", t->callback_error));
    return o;
}

/* ---------------------------------------------------------------- the same, as text */

/* A text being built; oom set once an allocation failed (then p may be NULL). */
struct tbuf {
    char *p;
    size_t len, cap;
    int oom;
};

static void
tb_put(struct tbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 512;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void
tb_lit(struct tbuf *b, const char *s)
{
    tb_put(b, s, strlen(s));
}

/* s as a JSON string, escaped as json_dumps() does. Only printable ASCII is written
 * here: 0 done, -1 for anything else (the caller falls back to jansson, which checks
 * UTF-8 and escapes control characters its own way). */
static int
tb_str(struct tbuf *b, const char *s)
{
    tb_put(b, "\"", 1);
    for (const char *run = s;; s++) {
        unsigned char c = (unsigned char)*s;
        if (c != '\0' && c != '"' && c != '\\' && c >= 0x20 && c < 0x7f)
            continue;
        tb_put(b, run, (size_t)(s - run));
        if (c == '\0')
            break;
        if (c != '"' && c != '\\')
            return -1;
        tb_put(b, c == '"' ? "\\\"" : "\\\\", 2);
        run = s + 1;
    }
    tb_put(b, "\"", 1);
    return 0;
}

static void
tb_time(struct tbuf *b, int64_t ms)
{
    if (ms == 0) {
        tb_lit(b, "null");
        return;
    }
    char buf[CLOCK_RFC3339_LEN + 2];
    buf[0] = '"';
    clock_format_rfc3339(ms, buf + 1);
    size_t n = strlen(buf);
    buf[n] = '"';
    tb_put(b, buf, n + 1);
}

/* key (the text before the value, e.g. ",\"attempts\":"), then v in decimal */
static void
tb_int(struct tbuf *b, const char *key, int64_t v)
{
    char buf[24];
    int n = snprintf(buf, sizeof buf, "%" PRId64, v);
    tb_lit(b, key);
    tb_put(b, buf, (size_t)n);
}

char *
taskjson_text(const store_task *t, int brief, size_t *len)
{
    const char *state = task_state_name(t->state);
    if (state == NULL)
        return NULL;
    struct tbuf b = {0};
    int bad = 0;
    tb_int(&b, "{\"id\":\"", t->id);
    tb_lit(&b, "\",\"kind\":");
    bad |= tb_str(&b, t->kind);
    tb_lit(&b, ",\"state\":");
    bad |= tb_str(&b, state);
    tb_int(&b, ",\"priority\":", t->priority);
    if (!brief) {
        /* stored as json_dumps() wrote them: compact, so they are copied as they are */
        tb_lit(&b, ",\"input\":");
        tb_lit(&b, t->input != NULL ? t->input : "null");
        tb_lit(&b, ",\"result\":");
        tb_lit(&b, t->result != NULL ? t->result : "null");
    }
    tb_lit(&b, ",\"error\":");
    if (t->error_code == NULL) {
        tb_lit(&b, "null");
    } else {
        tb_lit(&b, "{\"code\":");
        bad |= tb_str(&b, t->error_code);
        tb_lit(&b, ",\"message\":");
        bad |= tb_str(&b, t->error_message ? t->error_message : "");
        tb_lit(&b, "}");
    }
    tb_int(&b, ",\"attempts\":", t->attempts);
    tb_int(&b, ",\"max_attempts\":", t->max_attempts);
    tb_int(&b, ",\"timeout_ms\":", t->timeout_ms);
    tb_lit(&b, ",\"created_at\":");
    tb_time(&b, t->created_at_ms);
    tb_lit(&b, ",\"started_at\":");
    tb_time(&b, t->started_at_ms);
    tb_lit(&b, ",\"finished_at\":");
    tb_time(&b, t->finished_at_ms);
    tb_lit(&b, ",\"run_after\":");
    tb_time(&b, t->state == TASK_PENDING ? t->run_after_ms : 0);
    tb_lit(&b, ",\"previous_error\":");
    if (t->previous_error_code == NULL) {
        tb_lit(&b, "null");
    } else {
        tb_lit(&b, "{\"code\":");
        bad |= tb_str(&b, t->previous_error_code);
        tb_lit(&b, ",\"message\":");
        bad |= tb_str(&b, t->previous_error_message ? t->previous_error_message : "");
        tb_lit(&b, "}");
    }
    if (t->callback_url != NULL) {      /* as taskjson_from_store() writes it */
        tb_lit(&b, ",\"callback\":{\"url\":");
        bad |= tb_str(&b, t->callback_url);
        tb_lit(&b, t->callback_state == STORE_CB_DELIVERED ? ",\"state\":\"delivered\""
                   : t->callback_state == STORE_CB_FAILED  ? ",\"state\":\"failed\""
                                                           : ",\"state\":\"pending\"");
        tb_int(&b, ",\"attempts\":", t->callback_attempts);
        tb_lit(&b, ",\"last_error\":");
        if (t->callback_error != NULL)
            bad |= tb_str(&b, t->callback_error);
        else
            tb_lit(&b, "null");
        tb_lit(&b, "}");
    }
    tb_lit(&b, "}");
    if (bad || b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

json_t *
api_task_json(const store_task *t)
{
    return taskjson_from_store(t, 0);
}

/* RFC 3339 (date-time): YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM), 'T' or 't', 'Z' or
 * 'z'. 0 and *ms (epoch, milliseconds; finer fractions are cut), or -1. */
static int
parse_rfc3339(const char *p, int64_t *ms)
{
    int f[6];
    static const int width[6] = {4, 2, 2, 2, 2, 2};
    static const char sep[6] = {'-', '-', 'T', ':', ':', '\0'};
    for (int i = 0; i < 6; i++) {
        f[i] = 0;
        for (int k = 0; k < width[i]; k++, p++) {
            if (*p < '0' || *p > '9')
                return -1;
            f[i] = f[i] * 10 + (*p - '0');
        }
        if (sep[i] != '\0') {
            if (*p != sep[i] && !(sep[i] == 'T' && *p == 't'))
                return -1;
            p++;
        }
    }
    int64_t frac = 0;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (digits < 3)
                frac = frac * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (digits == 0)
            return -1;
        for (int d = digits; d < 3; d++)
            frac *= 10;
    }
    int64_t offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1;
        p++;
        if (p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9' || p[2] != ':' ||
            p[3] < '0' || p[3] > '9' || p[4] < '0' || p[4] > '9')
            return -1;
        int oh = (p[0] - '0') * 10 + (p[1] - '0'), om = (p[3] - '0') * 10 + (p[4] - '0');
        if (oh > 23 || om > 59)
            return -1;
        offset_min = sign * (oh * 60 + om);
        p += 5;
    } else {
        return -1;
    }
    if (*p != '\0')
        return -1;
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y = f[0], mo = f[1], d = f[2];
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
        (mo == 2 && d == 29 && !leap) || f[3] > 23 || f[4] > 59 || f[5] > 60)
        return -1;
    /* days since the epoch (civil calendar, H. Hinnant's days_from_civil) */
    int64_t yy = mo <= 2 ? y - 1 : y;
    int64_t era = yy / 400, yoe = yy - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = era * 146097 + doe - 719468;
    int64_t secs = days * 86400 + f[3] * 3600 + f[4] * 60 + (f[5] > 59 ? 59 : f[5]);
    *ms = (secs - offset_min * 60) * 1000 + frac;
    return 0;
}

/* When the submission may run (issue 13): run_at (RFC 3339) or delay_ms, not both; at
 * most a year ahead; a time past runs now. *at: 0 for now. 0, or -1 with err. */
static int
schedule_fields(const json_t *obj, const char *where, int64_t *at, char *err, size_t errlen)
{
    const json_t *run_at = json_object_get(obj, "run_at");
    const json_t *delay = json_object_get(obj, "delay_ms");
    if (run_at != NULL && json_is_null(run_at))
        run_at = NULL;
    if (delay != NULL && json_is_null(delay))
        delay = NULL;
    *at = 0;
    if (run_at != NULL && delay != NULL) {
        snprintf(err, errlen, "%srun_at, %sdelay_ms: give one or the other, not both", where,
                 where);
        return -1;
    }
    int64_t now = clock_now_ms();
    if (delay != NULL) {
        if (!json_is_integer(delay) || json_integer_value(delay) < 0 ||
            json_integer_value(delay) > API_MAX_SCHEDULE_MS) {
            snprintf(err, errlen, "%sdelay_ms: must be an integer between 0 and %lld (a year)",
                     where, (long long)API_MAX_SCHEDULE_MS);
            return -1;
        }
        *at = json_integer_value(delay) > 0 ? now + json_integer_value(delay) : 0;
        return 0;
    }
    if (run_at == NULL)
        return 0;
    int64_t t;
    if (!json_is_string(run_at) || parse_rfc3339(json_string_value(run_at), &t) != 0) {
        snprintf(err, errlen, "%srun_at: must be an RFC 3339 time, such as "
                 "2026-01-02T03:04:05Z or 2026-01-02T04:04:05.678+01:00", where);
        return -1;
    }
    if (t - now > API_MAX_SCHEDULE_MS) {
        snprintf(err, errlen, "%srun_at: more than a year ahead", where);
        return -1;
    }
    *at = t > now ? t : 0;
    return 0;
}

/* An optional integer field: absent or null takes def. 0 ok, -1 with err. */
static int
int_field(const json_t *obj, const char *name, const char *where, json_int_t lo,
          json_int_t hi, json_int_t def, json_int_t *out, char *err, size_t errlen)
{
    const json_t *v = json_object_get(obj, name);
    if (v == NULL || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v)) {
        snprintf(err, errlen, "%s%s: must be an integer", where, name);
        return -1;
    }
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) {
        snprintf(err, errlen, "%s%s: must be between %lld and %lld", where, name,
                 (long long)lo, (long long)hi);
        return -1;
    }
    *out = x;
    return 0;
}

int
taskjson_parse_submission(const struct api_ctx *ctx, const json_t *obj, const char *where,
                          store_new_task *nt, char **input_text, char *err, size_t errlen)
{
    static const char *const FIELDS[] = {"kind", "input", "priority", "max_attempts",
                                         "timeout_ms", "run_at", "delay_ms", "callback_url"};
    *input_text = NULL;
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)obj, key, value) {
        int known = 0;
        for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++)
            known |= strcmp(key, FIELDS[i]) == 0;
        if (!known) {
            snprintf(err, errlen, "%s%.200s: unknown field", where, key);
            return -1;
        }
    }
    const json_t *kind = json_object_get(obj, "kind");
    if (kind == NULL || json_is_null(kind)) {
        snprintf(err, errlen, "%skind: required", where);
        return -1;
    }
    if (!json_is_string(kind)) {
        snprintf(err, errlen, "%skind: must be a string", where);
        return -1;
    }
    json_int_t priority, max_attempts, timeout_ms;
    if (int_field(obj, "priority", where, -1000, 1000, 0, &priority, err, errlen) != 0 ||
        int_field(obj, "max_attempts", where, 1, 100, 1, &max_attempts, err, errlen) != 0 ||
        int_field(obj, "timeout_ms", where, 1, 86400000, ctx->cfg->default_timeout_ms,
                  &timeout_ms, err, errlen) != 0)
        return -1;
    const json_t *cb = json_object_get(obj, "callback_url");
    if (cb != NULL && !json_is_null(cb)) {
        char why[400];
        if (!json_is_string(cb)) {
            snprintf(err, errlen, "%scallback_url: must be a string", where);
            return -1;
        }
        if (taskjson_callback_allowed(json_string_value(cb), ctx->cfg->callback_allow,
                                      ctx->cfg->ncallback_allow, why, sizeof why) != 0) {
            snprintf(err, errlen, "%scallback_url: %s", where, why);
            return -1;
        }
    }
    int64_t run_after;
    if (schedule_fields(obj, where, &run_after, err, errlen) != 0)
        return -1;

    const json_t *input = json_object_get(obj, "input");
    json_t *null_input = NULL;
    if (input == NULL)
        input = null_input = json_null();
    const struct api_hooks *h = &ctx->cfg->hooks;
    char why[512] = "";
    int v = h->validate ? h->validate(h->arg, json_string_value(kind), input, why, sizeof why)
                        : 0;
    if (v < 0) {
        snprintf(err, errlen, "%skind: unknown kind '%.100s'", where, json_string_value(kind));
        return -1;
    }
    if (v > 0) {
        snprintf(err, errlen, "%sinput: %s", where, why);
        return -1;
    }
    *input_text = json_dumps(input, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(null_input);
    if (*input_text == NULL) {
        snprintf(err, errlen, "%sinput: cannot be encoded", where);
        return -1;
    }
    nt->kind = json_string_value(kind);     /* borrowed from obj */
    nt->input = *input_text;
    nt->priority = (int)priority;
    nt->max_attempts = (int)max_attempts;
    nt->timeout_ms = timeout_ms;
    nt->idem_key = NULL;
    nt->callback_url = cb != NULL && !json_is_null(cb) ? json_string_value(cb) : NULL;
    nt->run_after_ms = run_after;
    return 0;
}

#define CALLBACK_URL_MAX 2048

int
taskjson_callback_allowed(const char *url, const char *const *allow, int nallow, char *err,
                          size_t errlen)
{
    if (nallow <= 0) {
        snprintf(err, errlen, "no callback host is allowed: start warmpool with "
                 "--callback-allow HOST[:PORT] to allow one");
        return -1;
    }
    size_t n = strlen(url);
    if (strncmp(url, "http://", 7) != 0) {
        snprintf(err, errlen, "must be an http:// URL");
        return -1;
    }
    if (n > CALLBACK_URL_MAX) {
        snprintf(err, errlen, "longer than %d characters", CALLBACK_URL_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= ' ' || c >= 0x7f || c == '#') {
            snprintf(err, errlen, "must be printable ASCII without spaces or a fragment");
            return -1;
        }
    }
    const char *host = url + 7;
    size_t alen = strcspn(host, "/?");
    size_t hlen = alen;
    const char *colon = NULL;
    if (host[0] == '[') {                       /* [::1]:8080 */
        const char *close = memchr(host, ']', alen);
        if (close == NULL) {
            hlen = 0;
        } else {
            hlen = (size_t)(close - host) + 1;
            colon = hlen < alen && host[hlen] == ':' ? host + hlen : NULL;
            if (hlen < alen && colon == NULL)
                hlen = 0;
        }
    } else {
        colon = memchr(host, ':', alen);
        if (colon != NULL)
            hlen = (size_t)(colon - host);
        for (size_t i = 0; i < hlen; i++)
            if (!isalnum((unsigned char)host[i]) && host[i] != '.' && host[i] != '-')
                hlen = 0;               /* userinfo (@), a second colon...: refused */
    }
    long port = 80;
    if (colon != NULL) {
        size_t plen = alen - (size_t)(colon + 1 - host);
        char digits[8] = "";
        if (plen == 0 || plen > 5 || strspn(colon + 1, "0123456789") < plen)
            hlen = 0;
        else {
            memcpy(digits, colon + 1, plen);
            port = strtol(digits, NULL, 10);
            if (port < 1 || port > 65535)
                hlen = 0;
        }
    }
    if (hlen == 0) {
        snprintf(err, errlen, "'%.100s' is not http://HOST[:PORT]/PATH", url);
        return -1;
    }
    for (int i = 0; i < nallow; i++) {
        const char *a = allow[i];
        size_t ahlen = strlen(a);
        long aport = 80;
        const char *ac = a[0] == '[' ? strstr(a, "]:") : strrchr(a, ':');
        if (ac != NULL) {
            if (a[0] == '[')
                ac++;
            ahlen = (size_t)(ac - a);
            aport = strtol(ac + 1, NULL, 10);
        }
        if (ahlen == hlen && strncasecmp(a, host, hlen) == 0 && aport == port)
            return 0;
    }
    snprintf(err, errlen, "host %.*s port %ld is not allowed (--callback-allow)", (int)hlen,
             host, port);
    return -1;
}

int
taskjson_same_submission(const store_task *t, const store_new_task *nt)
{
    if ((t->callback_url == NULL) != (nt->callback_url == NULL) ||
        (t->callback_url != NULL && strcmp(t->callback_url, nt->callback_url) != 0))
        return 0;
    if (strcmp(t->kind, nt->kind) != 0 || t->priority != nt->priority ||
        t->max_attempts != nt->max_attempts || t->timeout_ms != nt->timeout_ms)
        return 0;
    json_error_t e;
    json_t *a = json_loads(t->input ? t->input : "null", JSON_DECODE_ANY, &e);
    json_t *b = json_loads(nt->input, JSON_DECODE_ANY, &e);
    int same = a != NULL && b != NULL && json_equal(a, b);   /* key order does not count */
    json_decref(a);
    json_decref(b);
    return same;
}

int
taskjson_parse_id(const char *text, int64_t *id)
{
    size_t n = strlen(text);
    /* canonical form only: no sign, no leading zero, so one id has one spelling */
    if (n == 0 || n > 19 || strspn(text, "0123456789") != n || text[0] == '0')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(text, NULL, 10);
    if (errno != 0 || v == 0 || v > INT64_MAX)
        return -1;
    *id = (int64_t)v;
    return 0;
}

/* FNV-1a over the secret and the id: a checksum the client cannot forge by chance */
static uint64_t
cursor_mac(uint64_t secret, int64_t id)
{
    uint64_t h = 1469598103934665603ULL;
    uint64_t words[2] = {secret, (uint64_t)id};
    const unsigned char *p = (const unsigned char *)words;
    for (size_t i = 0; i < sizeof words; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

void
taskjson_cursor_encode(uint64_t secret, int64_t last_id, char out[64])
{
    snprintf(out, 64, "%" PRId64 ".%016" PRIx64, last_id, cursor_mac(secret, last_id));
}

int
taskjson_cursor_decode(uint64_t secret, const char *text, int64_t *last_id)
{
    const char *dot = strchr(text, '.');
    if (dot == NULL || dot - text > 19 || strlen(dot + 1) != 16)
        return -1;
    char idtext[20];
    memcpy(idtext, text, (size_t)(dot - text));
    idtext[dot - text] = '\0';
    int64_t id;
    if (taskjson_parse_id(idtext, &id) != 0)
        return -1;
    char mac[17];
    snprintf(mac, sizeof mac, "%016" PRIx64, cursor_mac(secret, id));
    if (strcmp(mac, dot + 1) != 0)
        return -1;
    *last_id = id;
    return 0;
}
