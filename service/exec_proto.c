/* exec_proto.c -- exec kinds' wire format: length-prefixed JSON frames, a strict
 * table-driven decoder for the twelve messages, and socket I/O with deadlines and
 * SCM_RIGHTS. The protocol itself is specified in docs/exec-kinds.md; when a message
 * or field changes here, change it there too (and EXEC_PROTO_VERSION). */
#include "service/exec_proto.h"
#include "common/clock.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_PASSED_FDS 8    /* descriptors taken per recvmsg; more are closed at once */

static int
fail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int
fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

const char *
exec_proto_rc_name(int rc)
{
    static const char *const names[] = {"ok", "eof", "timeout", "too_big", "malformed",
                                        "refused", "io"};
    return rc >= 0 && rc <= EXEC_PROTO_IO ? names[rc] : "?";
}

/* ---------------------------------------------------------------- messages */

enum ftype { F_INT, F_STR, F_STR_OR_NULL, F_BOOL, F_ANY };

struct field {
    const char *name;
    enum ftype type;
    int required;
};

struct spec {
    const char *name;
    const struct field *fields;     /* besides "type", which every message has */
    size_t nfields;
};

static const struct field F_HELLO[] = {{"protocol", F_INT, 1}, {"kind", F_STR, 1},
                                       {"config", F_STR_OR_NULL, 1},
                                       {"max_frame_bytes", F_INT, 1}};
static const struct field F_READY[] = {{"protocol", F_INT, 1}, {"context_bytes", F_INT, 1},
                                       {"load_ms", F_INT, 0}, {"validate", F_BOOL, 0}};
static const struct field F_MESSAGE[] = {{"message", F_STR, 1}};
static const struct field F_SPAWNED[] = {{"pid", F_INT, 1}};
static const struct field F_TASK[] = {{"id", F_INT, 1}, {"attempt", F_INT, 1},
                                      {"timeout_ms", F_INT, 1}, {"deadline_ms", F_INT, 1},
                                      {"input", F_ANY, 1}};
static const struct field F_VALIDATE[] = {{"input", F_ANY, 1}};
static const struct field F_RESULT[] = {{"id", F_INT, 1}, {"result", F_ANY, 1}};
static const struct field F_ERROR[] = {{"id", F_INT, 1}, {"code", F_STR, 1},
                                       {"message", F_STR, 1}, {"retryable", F_BOOL, 1}};

#define SPEC(n, f) {n, f, sizeof f / sizeof f[0]}
static const struct spec SPECS[EXEC_MSG_COUNT] = {
    [EXEC_MSG_HELLO] = SPEC("hello", F_HELLO),
    [EXEC_MSG_SPAWN] = {"spawn", NULL, 0},
    [EXEC_MSG_READY] = SPEC("ready", F_READY),
    [EXEC_MSG_LOAD_FAILED] = SPEC("load_failed", F_MESSAGE),
    [EXEC_MSG_SPAWNED] = SPEC("spawned", F_SPAWNED),
    [EXEC_MSG_SPAWN_FAILED] = SPEC("spawn_failed", F_MESSAGE),
    [EXEC_MSG_TASK] = SPEC("task", F_TASK),
    [EXEC_MSG_VALIDATE] = SPEC("validate", F_VALIDATE),
    [EXEC_MSG_RESULT] = SPEC("result", F_RESULT),
    [EXEC_MSG_ERROR] = SPEC("error", F_ERROR),
    [EXEC_MSG_VALID] = {"valid", NULL, 0},
    [EXEC_MSG_INVALID] = SPEC("invalid", F_MESSAGE),
};

const char *
exec_msg_type_name(int type)
{
    return type >= 0 && type < EXEC_MSG_COUNT ? SPECS[type].name : "?";
}

void
exec_msg_clear(struct exec_msg *m)
{
    if (m == NULL)
        return;
    free(m->config);
    json_decref(m->value);
    memset(m, 0, sizeof *m);
}

void
exec_buf_free(struct exec_buf *b)
{
    if (b == NULL)
        return;
    free(b->data);
    memset(b, 0, sizeof *b);
}

static int
buf_reserve(struct exec_buf *b, size_t n)
{
    if (n <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < n)
        cap = cap > SIZE_MAX / 2 ? n : cap * 2;
    char *p = realloc(b->data, cap);
    if (p == NULL)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

/* "a, b or c" for the types in mask */
static void
describe_mask(unsigned mask, char *out, size_t outlen)
{
    size_t n = 0, total = 0, seen = 0;
    for (int t = 0; t < EXEC_MSG_COUNT; t++)
        total += (mask & EXEC_MSG_BIT(t)) != 0;
    out[0] = '\0';
    for (int t = 0; t < EXEC_MSG_COUNT && n < outlen; t++) {
        if (!(mask & EXEC_MSG_BIT(t)))
            continue;
        seen++;
        const char *sep = seen == 1 ? "" : seen == total ? " or " : ", ";
        int w = snprintf(out + n, outlen - n, "%s'%s'", sep, SPECS[t].name);
        if (w < 0)
            return;
        n += (size_t)w;
    }
}

static int
type_ok(const json_t *v, enum ftype t)
{
    switch (t) {
    case F_INT: return json_is_integer(v);
    case F_STR: return json_is_string(v);
    case F_STR_OR_NULL: return json_is_string(v) || json_is_null(v);
    case F_BOOL: return json_is_boolean(v);
    case F_ANY: return 1;
    }
    return 0;
}

static const char *
type_word(enum ftype t)
{
    switch (t) {
    case F_INT: return "an integer";
    case F_STR: return "a string";
    case F_STR_OR_NULL: return "a string or null";
    case F_BOOL: return "true or false";
    case F_ANY: return "any JSON value";
    }
    return "?";
}

/* Every key of obj is a field of spec s, of the right type; every required field is
 * there. */
static int
check_fields(const json_t *obj, const struct spec *s, char *err, size_t errlen)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        if (strcmp(key, "type") == 0)
            continue;
        size_t i;
        for (i = 0; i < s->nfields && strcmp(key, s->fields[i].name) != 0; i++)
            ;
        if (i == s->nfields)
            return fail(err, errlen, EXEC_PROTO_MALFORMED, "'%s': unknown field '%.64s'",
                        s->name, key);
        if (!type_ok(v, s->fields[i].type))
            return fail(err, errlen, EXEC_PROTO_MALFORMED, "'%s': field '%s' must be %s",
                        s->name, key, type_word(s->fields[i].type));
    }
    for (size_t i = 0; i < s->nfields; i++)
        if (s->fields[i].required && json_object_get(obj, s->fields[i].name) == NULL)
            return fail(err, errlen, EXEC_PROTO_MALFORMED, "'%s' lacks field '%s'", s->name,
                        s->fields[i].name);
    return EXEC_PROTO_OK;
}

/* Integer field name of obj (present, checked by check_fields) within [lo, hi]. */
static int
get_int(const json_t *obj, const char *type, const char *name, int64_t lo, int64_t hi,
        int64_t *out, char *err, size_t errlen)
{
    json_int_t v = json_integer_value(json_object_get(obj, name));
    if (v < lo || v > hi)
        return fail(err, errlen, EXEC_PROTO_MALFORMED,
                    "'%s': field '%s' is %" JSON_INTEGER_FORMAT ", out of %" PRId64 "..%" PRId64,
                    type, name, v, lo, hi);
    *out = v;
    return EXEC_PROTO_OK;
}

/* A message: no NUL inside; cut to EXEC_PROTO_MESSAGE_MAX bytes at a character
 * boundary (jansson has already checked the UTF-8). */
static int
get_message(const json_t *obj, const char *type, char out[EXEC_PROTO_MESSAGE_MAX + 1],
            char *err, size_t errlen)
{
    const json_t *v = json_object_get(obj, "message");
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (memchr(s, '\0', n) != NULL)
        return fail(err, errlen, EXEC_PROTO_MALFORMED, "'%s': the message contains NUL",
                    type);
    if (n > EXEC_PROTO_MESSAGE_MAX) {
        n = EXEC_PROTO_MESSAGE_MAX;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;            /* s[n] continues a character: cut before that character */
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return EXEC_PROTO_OK;
}

static int
code_ok(const char *s, size_t n)
{
    if (n == 0 || n > EXEC_PROTO_CODE_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

static int
kind_ok(const char *s, size_t n)
{
    if (n == 0 || n > EXEC_PROTO_KIND_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
              s[i] == '.' || s[i] == '-'))
            return 0;
    return 1;
}

/* Fills out's fields for a message of type t whose fields check_fields accepted. */
static int
extract(const json_t *o, enum exec_msg_type t, struct exec_msg *out, char *err, size_t errlen)
{
    const char *name = SPECS[t].name;
    int64_t v = 0;
    int rc = EXEC_PROTO_OK;
#define INT_FIELD(field, lo, hi, dst) \
    do { \
        if ((rc = get_int(o, name, field, lo, hi, &v, err, errlen)) != EXEC_PROTO_OK) \
            return rc; \
        dst = v; \
    } while (0)
    switch (t) {
    case EXEC_MSG_HELLO: {
        INT_FIELD("protocol", 1, INT_MAX, out->protocol);
        INT_FIELD("max_frame_bytes", EXEC_PROTO_FRAME_MAX_FLOOR, EXEC_PROTO_FRAME_MAX_CEIL,
                  out->max_frame_bytes);
        const json_t *k = json_object_get(o, "kind");
        if (!kind_ok(json_string_value(k), json_string_length(k)))
            return fail(err, errlen, EXEC_PROTO_MALFORMED,
                        "'hello': field 'kind' must match [a-z0-9_.-]{1,64}");
        memcpy(out->kind, json_string_value(k), json_string_length(k) + 1);
        const json_t *c = json_object_get(o, "config");
        if (json_is_string(c)) {
            if (memchr(json_string_value(c), '\0', json_string_length(c)) != NULL)
                return fail(err, errlen, EXEC_PROTO_MALFORMED,
                            "'hello': field 'config' contains NUL");
            if ((out->config = strdup(json_string_value(c))) == NULL)
                return fail(err, errlen, EXEC_PROTO_IO, "out of memory");
        }
        break;
    }
    case EXEC_MSG_READY:
        INT_FIELD("protocol", 1, INT_MAX, out->protocol);
        INT_FIELD("context_bytes", 0, INT64_MAX, out->context_bytes);
        out->load_ms = -1;
        if (json_object_get(o, "load_ms") != NULL)
            INT_FIELD("load_ms", 0, INT64_MAX, out->load_ms);
        out->validate = json_is_true(json_object_get(o, "validate"));
        break;
    case EXEC_MSG_SPAWNED:
        INT_FIELD("pid", 1, INT_MAX, out->pid);
        break;
    case EXEC_MSG_TASK:
        INT_FIELD("id", 1, INT64_MAX, out->id);
        INT_FIELD("attempt", 1, INT_MAX, out->attempt);
        INT_FIELD("timeout_ms", 0, INT64_MAX, out->timeout_ms);
        INT_FIELD("deadline_ms", 0, INT64_MAX, out->deadline_ms);
        out->value = json_incref(json_object_get(o, "input"));
        break;
    case EXEC_MSG_VALIDATE:
        out->value = json_incref(json_object_get(o, "input"));
        break;
    case EXEC_MSG_RESULT:
        INT_FIELD("id", 1, INT64_MAX, out->id);
        out->value = json_incref(json_object_get(o, "result"));
        break;
    case EXEC_MSG_ERROR: {
        INT_FIELD("id", 1, INT64_MAX, out->id);
        const json_t *c = json_object_get(o, "code");
        if (!code_ok(json_string_value(c), json_string_length(c)))
            return fail(err, errlen, EXEC_PROTO_MALFORMED,
                        "'error': field 'code' must match [a-z0-9_]{1,%d}",
                        EXEC_PROTO_CODE_MAX);
        memcpy(out->code, json_string_value(c), json_string_length(c) + 1);
        out->retryable = json_is_true(json_object_get(o, "retryable"));
        rc = get_message(o, name, out->message, err, errlen);
        break;
    }
    case EXEC_MSG_LOAD_FAILED:
    case EXEC_MSG_SPAWN_FAILED:
    case EXEC_MSG_INVALID:
        rc = get_message(o, name, out->message, err, errlen);
        break;
    case EXEC_MSG_SPAWN:
    case EXEC_MSG_VALID:
    case EXEC_MSG_COUNT:
        break;
    }
#undef INT_FIELD
    return rc;
}

int
exec_proto_decode(const char *body, size_t len, unsigned expect, struct exec_msg *out,
                  char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    json_error_t je;
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (o == NULL)
        return fail(err, errlen, EXEC_PROTO_MALFORMED, "the frame is not JSON: %s (byte %zu)",
                    je.text, (size_t)je.position);
    int rc;
    if (!json_is_object(o)) {
        rc = fail(err, errlen, EXEC_PROTO_MALFORMED, "the frame is not a JSON object");
        goto done;
    }
    const json_t *jt = json_object_get(o, "type");
    if (!json_is_string(jt)) {
        rc = fail(err, errlen, EXEC_PROTO_MALFORMED,
                  "the frame has no \"type\" string");
        goto done;
    }
    const char *tname = json_string_value(jt);
    int t;
    for (t = 0; t < EXEC_MSG_COUNT && strcmp(tname, SPECS[t].name) != 0; t++)
        ;
    if (t == EXEC_MSG_COUNT || strlen(tname) != json_string_length(jt)) {
        rc = fail(err, errlen, EXEC_PROTO_MALFORMED, "unknown message type '%.64s'", tname);
        goto done;
    }
    if (!(expect & EXEC_MSG_BIT(t))) {
        char want[160];
        describe_mask(expect, want, sizeof want);
        rc = fail(err, errlen, EXEC_PROTO_MALFORMED, "'%s' while waiting for %s",
                  SPECS[t].name, want);
        goto done;
    }
    if ((rc = check_fields(o, &SPECS[t], err, errlen)) != EXEC_PROTO_OK)
        goto done;
    out->type = (enum exec_msg_type)t;
    if ((rc = extract(o, out->type, out, err, errlen)) != EXEC_PROTO_OK)
        exec_msg_clear(out);
done:
    json_decref(o);
    return rc;
}

/* ---------------------------------------------------------------- encoding */

static void
put_header(char *p, size_t body_len)
{
    p[0] = (char)((body_len >> 24) & 0xFF);
    p[1] = (char)((body_len >> 16) & 0xFF);
    p[2] = (char)((body_len >> 8) & 0xFF);
    p[3] = (char)(body_len & 0xFF);
}

/* Frames head + middle + tail into out. */
static int
frame3(const char *head, size_t hlen, const char *mid, size_t mlen, const char *tail,
       size_t tlen, size_t max, struct exec_buf *out, char *err, size_t errlen)
{
    size_t body = hlen + mlen + tlen;
    if (body > max || body > UINT32_MAX)
        return fail(err, errlen, EXEC_PROTO_TOO_BIG,
                    "a frame of %zu bytes is over the limit of %zu bytes", body, max);
    if (buf_reserve(out, EXEC_PROTO_HEADER_BYTES + body + 1) != 0)
        return fail(err, errlen, EXEC_PROTO_IO, "out of memory for a frame of %zu bytes",
                    body);
    char *p = out->data;
    put_header(p, body);
    p += EXEC_PROTO_HEADER_BYTES;
    memcpy(p, head, hlen);
    if (mlen > 0)
        memcpy(p + hlen, mid, mlen);
    if (tlen > 0)
        memcpy(p + hlen + mlen, tail, tlen);
    out->len = EXEC_PROTO_HEADER_BYTES + body;
    out->data[out->len] = '\0';
    return EXEC_PROTO_OK;
}

int
exec_proto_encode_json(const json_t *msg, size_t max_frame_bytes, struct exec_buf *out,
                       char *err, size_t errlen)
{
    char *text = json_dumps(msg, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL)
        return fail(err, errlen, EXEC_PROTO_IO, "the message cannot be encoded");
    int rc = frame3(text, strlen(text), NULL, 0, NULL, 0, max_frame_bytes, out, err, errlen);
    free(text);
    return rc;
}

int
exec_proto_encode_hello(const char *kind, const char *config, size_t max_frame_bytes,
                        struct exec_buf *out, char *err, size_t errlen)
{
    json_t *m = json_pack("{s:s, s:i, s:s, s:s?, s:I}", "type", "hello", "protocol",
                          EXEC_PROTO_VERSION, "kind", kind, "config", config,
                          "max_frame_bytes", (json_int_t)max_frame_bytes);
    if (m == NULL)
        return fail(err, errlen, EXEC_PROTO_MALFORMED,
                    "hello: the kind or the configuration is not valid UTF-8");
    int rc = exec_proto_encode_json(m, max_frame_bytes, out, err, errlen);
    json_decref(m);
    return rc;
}

int
exec_proto_encode_spawn(size_t max_frame_bytes, struct exec_buf *out, char *err, size_t errlen)
{
    static const char body[] = "{\"type\":\"spawn\"}";
    return frame3(body, sizeof body - 1, NULL, 0, NULL, 0, max_frame_bytes, out, err, errlen);
}

#define TASK_HEAD "{\"type\":\"task\",\"id\":%" PRId64 ",\"attempt\":%d,\"timeout_ms\":%" \
    PRId64 ",\"deadline_ms\":%" PRId64 ",\"input\":"
static const char VALIDATE_HEAD[] = "{\"type\":\"validate\",\"input\":";

int
exec_proto_encode_task(int64_t id, int attempt, int64_t timeout_ms, int64_t deadline_ms,
                       const char *input_json, size_t input_len, size_t max_frame_bytes,
                       struct exec_buf *out, char *err, size_t errlen)
{
    if (input_len == 0)
        return fail(err, errlen, EXEC_PROTO_MALFORMED, "task %" PRId64 ": empty input", id);
    char head[160];
    int n = snprintf(head, sizeof head, TASK_HEAD, id, attempt, timeout_ms, deadline_ms);
    return frame3(head, (size_t)n, input_json, input_len, "}", 1, max_frame_bytes, out, err,
                  errlen);
}

size_t
exec_proto_task_bytes(int64_t id, int attempt, int64_t timeout_ms, int64_t deadline_ms,
                      size_t input_len)
{
    char head[160];
    int n = snprintf(head, sizeof head, TASK_HEAD, id, attempt, timeout_ms, deadline_ms);
    return (size_t)n + input_len + 1;
}

int
exec_proto_encode_validate(const char *input_json, size_t input_len, size_t max_frame_bytes,
                           struct exec_buf *out, char *err, size_t errlen)
{
    if (input_len == 0)
        return fail(err, errlen, EXEC_PROTO_MALFORMED, "validate: empty input");
    return frame3(VALIDATE_HEAD, sizeof VALIDATE_HEAD - 1, input_json, input_len, "}", 1,
                  max_frame_bytes, out, err, errlen);
}

size_t
exec_proto_validate_bytes(size_t input_len)
{
    return sizeof VALIDATE_HEAD - 1 + input_len + 1;
}

/* ---------------------------------------------------------------- I/O */

/* Waits until fd is ready for events, or the deadline. OK, TIMEOUT or IO. A hang-up
 * or an error counts as ready: the next call on fd reports it. */
static int
wait_fd(int fd, short events, int64_t deadline_ms, char *err, size_t errlen)
{
    for (;;) {
        int timeout = -1;
        if (deadline_ms >= 0) {
            int64_t left = deadline_ms - clock_mono_ms();
            if (left <= 0)
                return fail(err, errlen, EXEC_PROTO_TIMEOUT, "no answer in time");
            timeout = left > INT_MAX ? INT_MAX : (int)left;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, timeout);
        if (n > 0)
            return EXEC_PROTO_OK;
        if (n < 0 && errno != EINTR)
            return fail(err, errlen, EXEC_PROTO_IO, "poll: %s", strerror(errno));
    }
}

int
exec_proto_send(int fd, const char *frame, size_t len, int pass_fd, int64_t deadline_ms,
                char *err, size_t errlen)
{
    size_t off = 0;
    int attach = pass_fd >= 0;
    while (off < len) {
        struct iovec iov = {.iov_base = (void *)(frame + off), .iov_len = len - off};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } cm;
        if (attach) {   /* the descriptor rides on the first bytes the kernel takes */
            memset(&cm, 0, sizeof cm);
            mh.msg_control = cm.buf;
            mh.msg_controllen = sizeof cm.buf;
            struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
        }
        ssize_t n = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            attach = 0;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_fd(fd, POLLOUT, deadline_ms, err, errlen);
            if (rc != EXEC_PROTO_OK)
                return rc == EXEC_PROTO_TIMEOUT
                    ? fail(err, errlen, rc, "the peer read nothing in time (%zu of %zu bytes "
                           "sent)", off, len) : rc;
            continue;
        }
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
            return fail(err, errlen, EXEC_PROTO_EOF, "the peer closed the channel");
        return fail(err, errlen, EXEC_PROTO_IO, "sendmsg: %s",
                    n < 0 ? strerror(errno) : "sent nothing");
    }
    return EXEC_PROTO_OK;
}

struct rx {
    int fds[MAX_PASSED_FDS];
    int nfds;
    int lost_fds;       /* more came than fit, or the kernel cut them (MSG_CTRUNC) */
};

static void
rx_close(struct rx *x)
{
    for (int i = 0; i < x->nfds; i++)
        close(x->fds[i]);
    x->nfds = 0;
}

static void
rx_take(struct rx *x, struct msghdr *mh)
{
    if (mh->msg_flags & MSG_CTRUNC)
        x->lost_fds = 1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c != NULL; c = CMSG_NXTHDR(mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (x->nfds < MAX_PASSED_FDS) {
                x->fds[x->nfds++] = fd;
            } else {
                close(fd);
                x->lost_fds = 1;
            }
        }
    }
}

/* Reads exactly want bytes into p. *got counts what arrived (for the EOF message). */
static int
recv_exact(int fd, char *p, size_t want, int64_t deadline_ms, struct rx *x, size_t *got,
           char *err, size_t errlen)
{
    *got = 0;
    while (*got < want) {
        struct iovec iov = {.iov_base = p + *got, .iov_len = want - *got};
        union {
            char buf[CMSG_SPACE(MAX_PASSED_FDS * sizeof(int))];
            struct cmsghdr align;
        } cm;
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
                            .msg_controllen = sizeof cm.buf};
        ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n > 0) {
            rx_take(x, &mh);
            *got += (size_t)n;
            continue;
        }
        if (n == 0)
            return EXEC_PROTO_EOF;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = wait_fd(fd, POLLIN, deadline_ms, err, errlen);
            if (rc != EXEC_PROTO_OK)
                return rc;
            continue;
        }
        if (errno == ECONNRESET)
            return EXEC_PROTO_EOF;
        return fail(err, errlen, EXEC_PROTO_IO, "recvmsg: %s", strerror(errno));
    }
    return EXEC_PROTO_OK;
}

int
exec_proto_recv(int fd, struct exec_buf *b, size_t max_frame_bytes, int64_t deadline_ms,
                int *passed_fd, char *err, size_t errlen)
{
    struct rx x = {.nfds = 0};
    unsigned char h[EXEC_PROTO_HEADER_BYTES];
    size_t got;
    int rc;
    b->len = 0;
    if (passed_fd != NULL)
        *passed_fd = -1;
    rc = recv_exact(fd, (char *)h, sizeof h, deadline_ms, &x, &got, err, errlen);
    if (rc == EXEC_PROTO_EOF)
        rc = got == 0 ? fail(err, errlen, rc, "the peer closed the channel")
                      : fail(err, errlen, rc, "the peer closed the channel inside a frame "
                             "header (%zu of 4 bytes)", got);
    else if (rc == EXEC_PROTO_TIMEOUT && got > 0)
        rc = fail(err, errlen, rc, "a frame header came only in part (%zu of 4 bytes) in "
                  "time", got);
    if (rc != EXEC_PROTO_OK)
        goto out;
    size_t len = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
    if (len == 0) {
        rc = fail(err, errlen, EXEC_PROTO_MALFORMED, "an empty frame (length 0)");
        goto out;
    }
    if (len > max_frame_bytes) {
        rc = fail(err, errlen, EXEC_PROTO_TOO_BIG,
                  "a frame of %zu bytes is over the limit of %zu bytes", len, max_frame_bytes);
        goto out;
    }
    if (buf_reserve(b, len + 1) != 0) {
        rc = fail(err, errlen, EXEC_PROTO_IO, "out of memory for a frame of %zu bytes", len);
        goto out;
    }
    rc = recv_exact(fd, b->data, len, deadline_ms, &x, &got, err, errlen);
    if (rc == EXEC_PROTO_EOF)
        rc = fail(err, errlen, rc, "the peer closed the channel inside a frame (%zu of %zu "
                  "bytes)", got, len);
    else if (rc == EXEC_PROTO_TIMEOUT)
        rc = fail(err, errlen, rc, "a frame came only in part (%zu of %zu bytes) in time",
                  got, len);
    if (rc != EXEC_PROTO_OK)
        goto out;
    b->len = len;
    b->data[len] = '\0';
    if (x.lost_fds || (passed_fd == NULL && x.nfds > 0) || x.nfds > 1) {
        rc = fail(err, errlen, EXEC_PROTO_MALFORMED, "%s descriptor came with the frame",
                  passed_fd == NULL ? "an unexpected" : "more than one");
        goto out;
    }
    if (passed_fd != NULL && x.nfds == 1) {
        *passed_fd = x.fds[0];
        x.nfds = 0;
    }
out:
    rx_close(&x);
    if (rc != EXEC_PROTO_OK)
        b->len = 0;
    return rc;
}

int
exec_proto_recv_msg(int fd, struct exec_buf *b, size_t max_frame_bytes, int64_t deadline_ms,
                    unsigned expect, struct exec_msg *out, int *passed_fd, char *err,
                    size_t errlen)
{
    memset(out, 0, sizeof *out);
    int rc = exec_proto_recv(fd, b, max_frame_bytes, deadline_ms, passed_fd, err, errlen);
    if (rc == EXEC_PROTO_OK)
        rc = exec_proto_decode(b->data, b->len, expect, out, err, errlen);
    if (rc != EXEC_PROTO_OK && passed_fd != NULL && *passed_fd >= 0) {
        close(*passed_fd);
        *passed_fd = -1;
    }
    return rc;
}

int
exec_proto_channel(int fds[2])
{
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds);
}
