/* test_exec_proto.c -- the exec-kind wire format (service/exec_proto.c): encoding,
 * the strict decoder, and frame I/O over real socketpairs (timeouts, EOF inside a
 * frame, oversized headers, EINTR, descriptor passing, a peer in another process). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/clock.h"
#include "service/exec_proto.h"

#define MAX EXEC_PROTO_FRAME_MAX_DEFAULT

static int
open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1;               /* the directory's own descriptor */
}

/* decode text, expecting rc; on failure, err must contain want */
static void
decode_expect(const char *text, unsigned mask, int want_rc, const char *want_err)
{
    struct exec_msg m;
    char err[512] = "";
    int rc = exec_proto_decode(text, strlen(text), mask, &m, err, sizeof err);
    if (rc != want_rc)
        fail_msg("%s: rc %s, wanted %s (%s)", text, exec_proto_rc_name(rc),
                 exec_proto_rc_name(want_rc), err);
    if (want_err != NULL && strstr(err, want_err) == NULL)
        fail_msg("%s: error '%s' does not say '%s'", text, err, want_err);
    if (rc == EXEC_PROTO_OK)
        exec_msg_clear(&m);
    else
        assert_null(m.value);
}

/* ---------------------------------------------------------------- encoding */

static void
test_task_round_trip(void **state)
{
    (void)state;
    struct exec_buf b = {0};
    char err[256];
    /* newlines, quotes, non-ASCII and NUL inside strings: JSON escapes, framing does not care */
    const char *input = "{\"text\":\"line 1\\nline 2 \\\"q\\\" \\u00e9 \\u0000 end\",\"n\":[1,2]}";
    assert_int_equal(exec_proto_encode_task(42, 3, 5000, 1700000000123, input, strlen(input),
                                            MAX, &b, err, sizeof err), EXEC_PROTO_OK);
    size_t body = b.len - 4;
    assert_int_equal(((unsigned char)b.data[0] << 24 | (unsigned char)b.data[1] << 16 |
                      (unsigned char)b.data[2] << 8 | (unsigned char)b.data[3]), body);
    assert_null(memchr(b.data + 4, '\n', body));   /* compact: no raw newline at all */
    struct exec_msg m;
    assert_int_equal(exec_proto_decode(b.data + 4, body, EXEC_MSG_BIT(EXEC_MSG_TASK), &m, err,
                                       sizeof err), EXEC_PROTO_OK);
    assert_int_equal(m.type, EXEC_MSG_TASK);
    assert_int_equal(m.id, 42);
    assert_int_equal(m.attempt, 3);
    assert_int_equal(m.timeout_ms, 5000);
    assert_int_equal(m.deadline_ms, 1700000000123);
    const char *text = json_string_value(json_object_get(m.value, "text"));
    assert_int_equal(json_string_length(json_object_get(m.value, "text")), 26);
    assert_memory_equal(text, "line 1\nline 2 \"q\" \xc3\xa9 \0 end", 26);
    exec_msg_clear(&m);
    assert_null(m.value);
    exec_msg_clear(NULL);
    exec_buf_free(&b);
    exec_buf_free(NULL);
}

static void
test_hello_spawn_validate_encode(void **state)
{
    (void)state;
    struct exec_buf b = {0};
    struct exec_msg m;
    char err[256];
    assert_int_equal(exec_proto_encode_hello("py.table", "mb=256;seed=7", 1 << 20, &b, err,
                                             sizeof err), EXEC_PROTO_OK);
    assert_int_equal(exec_proto_decode(b.data + 4, b.len - 4, EXEC_MSG_BIT(EXEC_MSG_HELLO), &m,
                                       err, sizeof err), EXEC_PROTO_OK);
    assert_int_equal(m.protocol, EXEC_PROTO_VERSION);
    assert_string_equal(m.kind, "py.table");
    assert_string_equal(m.config, "mb=256;seed=7");
    assert_int_equal(m.max_frame_bytes, 1 << 20);
    exec_msg_clear(&m);
    assert_int_equal(exec_proto_encode_hello("k", NULL, MAX, &b, err, sizeof err),
                     EXEC_PROTO_OK);
    assert_non_null(strstr(b.data + 4, "\"config\":null"));
    assert_int_equal(exec_proto_decode(b.data + 4, b.len - 4, EXEC_MSG_ANY, &m, err,
                                       sizeof err), EXEC_PROTO_OK);
    assert_null(m.config);
    exec_msg_clear(&m);
    assert_int_equal(exec_proto_encode_spawn(MAX, &b, err, sizeof err), EXEC_PROTO_OK);
    assert_int_equal(exec_proto_decode(b.data + 4, b.len - 4, EXEC_MSG_ANY, &m, err,
                                       sizeof err), EXEC_PROTO_OK);
    assert_int_equal(m.type, EXEC_MSG_SPAWN);
    assert_int_equal(exec_proto_encode_validate("[1,2]", 5, MAX, &b, err, sizeof err),
                     EXEC_PROTO_OK);
    assert_int_equal(exec_proto_decode(b.data + 4, b.len - 4, EXEC_MSG_ANY, &m, err,
                                       sizeof err), EXEC_PROTO_OK);
    assert_int_equal(m.type, EXEC_MSG_VALIDATE);
    assert_int_equal(json_array_size(m.value), 2);
    exec_msg_clear(&m);
    exec_buf_free(&b);
}

static void
test_encode_limits(void **state)
{
    (void)state;
    struct exec_buf b = {0};
    char err[256];
    size_t n = 100000;
    char *big = malloc(n + 3);
    big[0] = '"';
    memset(big + 1, 'x', n);
    big[n + 1] = '"';
    /* the limit is the body's size: just under passes, one over fails */
    assert_int_equal(exec_proto_encode_validate(big, n + 2, 200000, &b, err, sizeof err),
                     EXEC_PROTO_OK);
    size_t body = b.len - 4;
    assert_int_equal(exec_proto_encode_validate(big, n + 2, body, &b, err, sizeof err),
                     EXEC_PROTO_OK);
    assert_int_equal(exec_proto_encode_validate(big, n + 2, body - 1, &b, err, sizeof err),
                     EXEC_PROTO_TOO_BIG);
    assert_non_null(strstr(err, "over the limit"));
    assert_int_equal(exec_proto_encode_task(1, 1, 1, 1, big, 0, MAX, &b, err, sizeof err),
                     EXEC_PROTO_MALFORMED);
    assert_non_null(strstr(err, "empty input"));
    assert_int_equal(exec_proto_encode_hello("k", "\xff", MAX, &b, err, sizeof err),
                     EXEC_PROTO_MALFORMED);
    free(big);
    exec_buf_free(&b);
}

/* ---------------------------------------------------------------- decoding */

static void
test_decode_every_reply(void **state)
{
    (void)state;
    struct {
        const char *text;
        enum exec_msg_type type;
    } ok[] = {
        {"{\"type\":\"ready\",\"protocol\":1,\"context_bytes\":268435456,\"load_ms\":812,"
         "\"validate\":true}", EXEC_MSG_READY},
        {"{\"type\":\"ready\",\"protocol\":1,\"context_bytes\":0}", EXEC_MSG_READY},
        {"{\"type\":\"load_failed\",\"message\":\"no such file\"}", EXEC_MSG_LOAD_FAILED},
        {"{\"type\":\"spawned\",\"pid\":1234}", EXEC_MSG_SPAWNED},
        {"{\"type\":\"spawn_failed\",\"message\":\"fork: EAGAIN\"}", EXEC_MSG_SPAWN_FAILED},
        {"{\"type\":\"result\",\"id\":7,\"result\":null}", EXEC_MSG_RESULT},
        {"{\"id\":7,\"result\":{\"a\":[1,\"\\u0000\"]},\"type\":\"result\"}", EXEC_MSG_RESULT},
        {"{\"type\":\"error\",\"id\":7,\"code\":\"value_error\",\"message\":\"ValueError: x\","
         "\"retryable\":false}", EXEC_MSG_ERROR},
        {"{\"type\":\"valid\"}", EXEC_MSG_VALID},
        {"{\"type\":\"invalid\",\"message\":\"field 'x' is missing\"}", EXEC_MSG_INVALID},
        {" {\"type\":\"valid\"}\n", EXEC_MSG_VALID},    /* JSON whitespace is allowed */
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct exec_msg m;
        char err[256] = "";
        int rc = exec_proto_decode(ok[i].text, strlen(ok[i].text), EXEC_MSG_ANY, &m, err,
                                   sizeof err);
        if (rc != EXEC_PROTO_OK)
            fail_msg("%s: %s", ok[i].text, err);
        assert_int_equal(m.type, ok[i].type);
        exec_msg_clear(&m);
    }
    struct exec_msg m;
    char err[256];
    const char *r = "{\"type\":\"ready\",\"protocol\":1,\"context_bytes\":5}";
    assert_int_equal(exec_proto_decode(r, strlen(r), EXEC_MSG_ANY, &m, err, sizeof err), 0);
    assert_int_equal(m.load_ms, -1);
    assert_int_equal(m.validate, 0);
    const char *e = "{\"type\":\"error\",\"id\":9,\"code\":\"retry_later\",\"message\":\"m\","
                    "\"retryable\":true}";
    assert_int_equal(exec_proto_decode(e, strlen(e), EXEC_MSG_ANY, &m, err, sizeof err), 0);
    assert_int_equal(m.id, 9);
    assert_string_equal(m.code, "retry_later");
    assert_string_equal(m.message, "m");
    assert_int_equal(m.retryable, 1);
    exec_msg_clear(&m);
}

static void
test_decode_is_strict(void **state)
{
    (void)state;
    const unsigned ANY = EXEC_MSG_ANY;
    const unsigned REPLY = EXEC_MSG_BIT(EXEC_MSG_RESULT) | EXEC_MSG_BIT(EXEC_MSG_ERROR);
    struct {
        const char *text;
        unsigned mask;
        const char *says;
    } bad[] = {
        {"", ANY, "not JSON"},
        {"hello", ANY, "not JSON"},
        {"{\"type\":\"valid\"} x", ANY, "not JSON"},
        {"{\"type\":\"valid\",\"type\":\"valid\"}", ANY, "duplicate"},
        {"[\"valid\"]", ANY, "not a JSON object"},
        {"{}", ANY, "no \"type\""},
        {"{\"type\":1}", ANY, "no \"type\""},
        {"{\"type\":\"resultx\"}", ANY, "unknown message type 'resultx'"},
        {"{\"type\":\"valid\\u0000\"}", ANY, "unknown message type"},
        {"{\"type\":\"spawned\",\"pid\":5}", REPLY,
         "'spawned' while waiting for 'result' or 'error'"},
        {"{\"type\":\"valid\",\"extra\":1}", ANY, "'valid': unknown field 'extra'"},
        {"{\"type\":\"result\",\"id\":1}", ANY, "'result' lacks field 'result'"},
        {"{\"type\":\"result\",\"result\":1}", ANY, "'result' lacks field 'id'"},
        {"{\"type\":\"result\",\"id\":\"1\",\"result\":1}", ANY,
         "field 'id' must be an integer"},
        {"{\"type\":\"result\",\"id\":1.0,\"result\":1}", ANY, "must be an integer"},
        {"{\"type\":\"result\",\"id\":0,\"result\":1}", ANY, "field 'id' is 0, out of 1.."},
        {"{\"type\":\"result\",\"id\":-5,\"result\":1}", ANY, "out of"},
        {"{\"type\":\"error\",\"id\":1,\"code\":\"x\",\"message\":\"m\",\"retryable\":1}", ANY,
         "'retryable' must be true or false"},
        {"{\"type\":\"error\",\"id\":1,\"code\":\"ValueError\",\"message\":\"m\","
         "\"retryable\":false}", ANY, "'code' must match"},
        {"{\"type\":\"error\",\"id\":1,\"code\":\"\",\"message\":\"m\",\"retryable\":false}",
         ANY, "'code' must match"},
        {"{\"type\":\"error\",\"id\":1,\"code\":\"a234567890123456789012345678901234567890"
         "1234567890123456789012345\",\"message\":\"m\",\"retryable\":false}", ANY,
         "'code' must match"},
        {"{\"type\":\"error\",\"id\":1,\"code\":\"x\",\"message\":\"a\\u0000b\","
         "\"retryable\":false}", ANY, "contains NUL"},
        {"{\"type\":\"error\",\"id\":1,\"code\":\"x\",\"message\":null,\"retryable\":false}",
         ANY, "'message' must be a string"},
        {"{\"type\":\"spawned\",\"pid\":0}", ANY, "out of"},
        {"{\"type\":\"spawned\",\"pid\":4294967296}", ANY, "out of"},
        {"{\"type\":\"ready\",\"protocol\":0,\"context_bytes\":1}", ANY, "out of"},
        {"{\"type\":\"ready\",\"protocol\":1,\"context_bytes\":-1}", ANY, "out of"},
        {"{\"type\":\"ready\",\"protocol\":1,\"context_bytes\":1,\"load_ms\":-1}", ANY,
         "out of"},
        {"{\"type\":\"ready\",\"protocol\":1,\"context_bytes\":1,\"validate\":\"yes\"}", ANY,
         "must be true or false"},
        {"{\"type\":\"hello\",\"protocol\":1,\"kind\":\"Bad Kind\",\"config\":null,"
         "\"max_frame_bytes\":1048576}", ANY, "'kind' must match"},
        {"{\"type\":\"hello\",\"protocol\":1,\"kind\":\"k\",\"config\":null,"
         "\"max_frame_bytes\":1024}", ANY, "out of"},
        {"{\"type\":\"hello\",\"protocol\":1,\"kind\":\"k\",\"config\":1,"
         "\"max_frame_bytes\":1048576}", ANY, "a string or null"},
        {"{\"type\":\"hello\",\"protocol\":1,\"kind\":\"k\",\"config\":\"a\\u0000\","
         "\"max_frame_bytes\":1048576}", ANY, "contains NUL"},
        {"{\"type\":\"task\",\"id\":1,\"attempt\":0,\"timeout_ms\":1,\"deadline_ms\":1,"
         "\"input\":1}", ANY, "'attempt' is 0"},
        {"{\"type\":\"spawn\",\"fd\":4}", ANY, "unknown field 'fd'"},
        {"{\"type\":\"load_failed\"}", ANY, "lacks field 'message'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        decode_expect(bad[i].text, bad[i].mask, EXEC_PROTO_MALFORMED, bad[i].says);
    /* not valid UTF-8 */
    decode_expect("{\"type\":\"invalid\",\"message\":\"\xff\"}", ANY, EXEC_PROTO_MALFORMED,
                  "not JSON");
}

static void
test_long_message_cut_at_a_character(void **state)
{
    (void)state;
    /* 1022 ASCII bytes then U+00E9 (2 bytes): the cut falls inside it, so it goes */
    char *text = malloc(2000);
    static const char head[] = "{\"type\":\"invalid\",\"message\":\"";
    static const char tail[] = "\xc3\xa9tail\"}";
    size_t n = 0;
    memcpy(text, head, sizeof head - 1);
    n += sizeof head - 1;
    memset(text + n, 'a', 1022);
    n += 1022;
    memcpy(text + n, tail, sizeof tail - 1);
    n += sizeof tail - 1;
    struct exec_msg m;
    char err[256];
    assert_int_equal(exec_proto_decode(text, n, EXEC_MSG_ANY, &m, err, sizeof err),
                     EXEC_PROTO_OK);
    assert_int_equal(strlen(m.message), 1022);
    exec_msg_clear(&m);
    free(text);
}

/* ---------------------------------------------------------------- I/O */

static void
pair(int fds[2])
{
    assert_int_equal(exec_proto_channel(fds), 0);
}

static void
send_frame(int fd, const char *body)
{
    char head[4] = {0, 0, (char)(strlen(body) >> 8), (char)(strlen(body) & 0xFF)};
    assert_int_equal(write(fd, head, 4), 4);
    assert_int_equal(write(fd, body, strlen(body)), (ssize_t)strlen(body));
}

static void
test_frames_back_to_back(void **state)
{
    (void)state;
    int ch[2];
    pair(ch);
    send_frame(ch[1], "{\"type\":\"valid\"}");
    send_frame(ch[1], "{\"type\":\"spawned\",\"pid\":77}");
    struct exec_buf b = {0};
    struct exec_msg m;
    char err[256];
    assert_int_equal(exec_proto_recv_msg(ch[0], &b, MAX, clock_mono_ms() + 1000, EXEC_MSG_ANY,
                                         &m, NULL, err, sizeof err), EXEC_PROTO_OK);
    assert_int_equal(m.type, EXEC_MSG_VALID);
    assert_int_equal(exec_proto_recv_msg(ch[0], &b, MAX, clock_mono_ms() + 1000, EXEC_MSG_ANY,
                                         &m, NULL, err, sizeof err), EXEC_PROTO_OK);
    assert_int_equal(m.pid, 77);
    assert_int_equal(b.data[b.len], '\0');
    close(ch[0]);
    close(ch[1]);
    exec_buf_free(&b);
}

static void
test_recv_timeout_and_partial(void **state)
{
    (void)state;
    int ch[2];
    pair(ch);
    struct exec_buf b = {0};
    char err[256];
    int64_t t0 = clock_mono_ms();
    assert_int_equal(exec_proto_recv(ch[0], &b, MAX, t0 + 100, NULL, err, sizeof err),
                     EXEC_PROTO_TIMEOUT);
    int64_t took = clock_mono_ms() - t0;
    assert_true(took >= 100 && took < 2000);
    assert_int_equal(write(ch[1], "\0\0", 2), 2);      /* half a header, then silence */
    assert_int_equal(exec_proto_recv(ch[0], &b, MAX, clock_mono_ms() + 50, NULL, err,
                                     sizeof err), EXEC_PROTO_TIMEOUT);
    assert_non_null(strstr(err, "2 of 4"));
    assert_int_equal(b.len, 0);
    close(ch[0]);
    close(ch[1]);
    pair(ch);
    assert_int_equal(write(ch[1], "\0\0\0\x10{\"type\"", 11), 11);     /* body in part */
    assert_int_equal(exec_proto_recv(ch[0], &b, MAX, clock_mono_ms() + 50, NULL, err,
                                     sizeof err), EXEC_PROTO_TIMEOUT);
    assert_non_null(strstr(err, "7 of 16 bytes"));
    close(ch[0]);
    close(ch[1]);
    exec_buf_free(&b);
}

static void
test_recv_eof(void **state)
{
    (void)state;
    int ch[2];
    struct exec_buf b = {0};
    char err[256];
    pair(ch);
    close(ch[1]);
    assert_int_equal(exec_proto_recv(ch[0], &b, MAX, -1, NULL, err, sizeof err),
                     EXEC_PROTO_EOF);
    assert_string_equal(err, "the peer closed the channel");
    close(ch[0]);
    pair(ch);
    assert_int_equal(write(ch[1], "\0\0\0", 3), 3);
    close(ch[1]);
    assert_int_equal(exec_proto_recv(ch[0], &b, MAX, -1, NULL, err, sizeof err),
                     EXEC_PROTO_EOF);
    assert_non_null(strstr(err, "inside a frame header (3 of 4 bytes)"));
    close(ch[0]);
    pair(ch);
    assert_int_equal(write(ch[1], "\0\0\0\x20{\"type\"", 11), 11);
    close(ch[1]);
    assert_int_equal(exec_proto_recv(ch[0], &b, MAX, -1, NULL, err, sizeof err),
                     EXEC_PROTO_EOF);
    assert_non_null(strstr(err, "inside a frame (7 of 32 bytes)"));
    close(ch[0]);
    exec_buf_free(&b);
}

static void
test_recv_size_limits(void **state)
{
    (void)state;
    int ch[2];
    struct exec_buf b = {0};
    char err[256];
    pair(ch);
    assert_int_equal(write(ch[1], "\0\0\0\0", 4), 4);
    assert_int_equal(exec_proto_recv(ch[0], &b, MAX, -1, NULL, err, sizeof err),
                     EXEC_PROTO_MALFORMED);
    assert_non_null(strstr(err, "empty frame"));
    /* 1 byte over the limit: refused after the header, nothing more read or allocated */
    assert_int_equal(write(ch[1], "\0\1\0\1xyz", 7), 7);
    assert_int_equal(exec_proto_recv(ch[0], &b, 65536, -1, NULL, err, sizeof err),
                     EXEC_PROTO_TOO_BIG);
    assert_string_equal(err, "a frame of 65537 bytes is over the limit of 65536 bytes");
    assert_true(b.cap < 65536);
    char rest[8];
    assert_int_equal(recv(ch[0], rest, sizeof rest, MSG_DONTWAIT), 3);
    /* exactly at the limit: accepted */
    char *body = malloc(65536 + 4);
    memcpy(body, "\0\1\0\0\"", 5);
    memset(body + 5, 'a', 65534);
    body[65536 + 3] = '"';
    int ok_rc;
    pid_t w = fork();
    if (w == 0) {       /* the frame is bigger than the socket buffer: write it from afar */
        ok_rc = write(ch[1], body, 65536 + 4) == 65536 + 4;
        _exit(ok_rc ? 0 : 1);
    }
    assert_int_equal(exec_proto_recv(ch[0], &b, 65536, clock_mono_ms() + 5000, NULL, err,
                                     sizeof err), EXEC_PROTO_OK);
    assert_int_equal(b.len, 65536);
    int st;
    waitpid(w, &st, 0);
    assert_int_equal(st, 0);
    free(body);
    close(ch[0]);
    close(ch[1]);
    exec_buf_free(&b);
}

static volatile int g_alarms;

static void
on_alarm(int sig)
{
    (void)sig;
    g_alarms++;
}

static void
test_recv_survives_eintr(void **state)
{
    (void)state;
    int ch[2];
    pair(ch);
    struct sigaction sa = {.sa_handler = on_alarm}, old;   /* no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, &old);
    struct itimerval every10 = {{0, 10000}, {0, 10000}}, off = {{0, 0}, {0, 0}};
    g_alarms = 0;
    pid_t w = fork();
    if (w == 0) {
        clock_sleep_ms(200);
        send_frame(ch[1], "{\"type\":\"valid\"}");
        _exit(0);
    }
    setitimer(ITIMER_REAL, &every10, NULL);
    struct exec_buf b = {0};
    struct exec_msg m;
    char err[256];
    int rc = exec_proto_recv_msg(ch[0], &b, MAX, clock_mono_ms() + 5000, EXEC_MSG_ANY, &m,
                                 NULL, err, sizeof err);
    setitimer(ITIMER_REAL, &off, NULL);
    sigaction(SIGALRM, &old, NULL);
    assert_int_equal(rc, EXEC_PROTO_OK);
    assert_true(g_alarms >= 5);
    waitpid(w, NULL, 0);
    close(ch[0]);
    close(ch[1]);
    exec_buf_free(&b);
}

static void
test_send_to_gone_peer_and_full_buffer(void **state)
{
    (void)state;
    int ch[2];
    char err[256];
    struct exec_buf b = {0};
    pair(ch);
    close(ch[1]);
    assert_int_equal(exec_proto_encode_spawn(MAX, &b, err, sizeof err), 0);
    /* no SIGPIPE (that would kill this test): EOF instead */
    assert_int_equal(exec_proto_send(ch[0], b.data, b.len, -1, -1, err, sizeof err),
                     EXEC_PROTO_EOF);
    close(ch[0]);
    pair(ch);
    size_t n = 8 << 20;
    char *big = malloc(n);
    memset(big, 'x', n);
    int64_t t0 = clock_mono_ms();
    assert_int_equal(exec_proto_send(ch[0], big, n, -1, t0 + 100, err, sizeof err),
                     EXEC_PROTO_TIMEOUT);
    assert_true(clock_mono_ms() - t0 < 2000);
    assert_non_null(strstr(err, "read nothing in time"));
    free(big);
    close(ch[0]);
    close(ch[1]);
    exec_buf_free(&b);
}

static void
test_pass_descriptor(void **state)
{
    (void)state;
    int ch[2], p[2];
    char err[256];
    struct exec_buf out = {0}, in = {0};
    struct exec_msg m;
    pair(ch);
    assert_int_equal(pipe(p), 0);
    int before = open_fds();
    assert_int_equal(exec_proto_encode_spawn(MAX, &out, err, sizeof err), 0);
    assert_int_equal(exec_proto_send(ch[0], out.data, out.len, p[1], -1, err, sizeof err), 0);
    int got;
    assert_int_equal(exec_proto_recv_msg(ch[1], &in, MAX, clock_mono_ms() + 1000,
                                         EXEC_MSG_BIT(EXEC_MSG_SPAWN), &m, &got, err,
                                         sizeof err), EXEC_PROTO_OK);
    assert_true(got >= 0 && got != p[1]);
    assert_int_equal(fcntl(got, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    assert_int_equal(write(got, "hi", 2), 2);       /* it is the pipe's write end */
    char buf[4];
    assert_int_equal(read(p[0], buf, sizeof buf), 2);
    close(got);
    /* a frame without a descriptor: -1 */
    assert_int_equal(exec_proto_send(ch[0], out.data, out.len, -1, -1, err, sizeof err), 0);
    assert_int_equal(exec_proto_recv_msg(ch[1], &in, MAX, clock_mono_ms() + 1000,
                                         EXEC_MSG_ANY, &m, &got, err, sizeof err), 0);
    assert_int_equal(got, -1);
    /* a descriptor nobody asked for: refused and closed (no leak) */
    assert_int_equal(exec_proto_send(ch[0], out.data, out.len, p[1], -1, err, sizeof err), 0);
    assert_int_equal(exec_proto_recv(ch[1], &in, MAX, clock_mono_ms() + 1000, NULL, err,
                                     sizeof err), EXEC_PROTO_MALFORMED);
    assert_non_null(strstr(err, "unexpected descriptor"));
    assert_int_equal(open_fds(), before);
    /* two descriptors on one frame: refused, both closed */
    union {
        char buf[CMSG_SPACE(2 * sizeof(int))];
        struct cmsghdr align;
    } cm;
    struct iovec iov = {.iov_base = out.data, .iov_len = out.len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
                        .msg_controllen = sizeof cm.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(2 * sizeof(int));
    int two[2] = {p[0], p[1]};
    memcpy(CMSG_DATA(c), two, sizeof two);
    assert_int_equal(sendmsg(ch[0], &mh, 0), (ssize_t)out.len);
    assert_int_equal(exec_proto_recv(ch[1], &in, MAX, clock_mono_ms() + 1000, &got, err,
                                     sizeof err), EXEC_PROTO_MALFORMED);
    assert_non_null(strstr(err, "more than one descriptor"));
    assert_int_equal(got, -1);
    assert_int_equal(open_fds(), before);
    close(p[0]);
    close(p[1]);
    close(ch[0]);
    close(ch[1]);
    exec_buf_free(&out);
    exec_buf_free(&in);
}

/* A real peer in another process: an echo child answers each task with its input. */
static void
test_peer_process_round_trips(void **state)
{
    (void)state;
    int ch[2];
    pair(ch);
    pid_t pid = fork();
    if (pid == 0) {
        close(ch[0]);
        struct exec_buf b = {0};
        struct exec_msg m;
        char err[256];
        while (exec_proto_recv_msg(ch[1], &b, MAX, -1, EXEC_MSG_BIT(EXEC_MSG_TASK), &m, NULL,
                                   err, sizeof err) == EXEC_PROTO_OK) {
            json_t *r = json_pack("{s:s, s:I, s:O}", "type", "result", "id",
                                  (json_int_t)m.id, "result", m.value);
            exec_msg_clear(&m);
            if (exec_proto_encode_json(r, MAX, &b, err, sizeof err) != 0 ||
                exec_proto_send(ch[1], b.data, b.len, -1, -1, err, sizeof err) != 0)
                _exit(1);
            json_decref(r);
        }
        exec_buf_free(&b);
        _exit(0);
    }
    close(ch[1]);
    struct exec_buf b = {0};
    char err[256];
    /* a 1 MiB input: more than a socket buffer in each direction */
    size_t n = 1 << 20;
    char *input = malloc(n + 2);
    input[0] = '"';
    for (size_t i = 1; i <= n; i++)
        input[i] = (char)('a' + i % 26);
    input[n + 1] = '"';
    for (int64_t id = 1; id <= 50; id++) {
        size_t len = id == 25 ? n + 2 : 3;
        const char *in = id == 25 ? input : "[1]";
        assert_int_equal(exec_proto_encode_task(id, 1, 1000, 0, in, len, MAX, &b, err,
                                                sizeof err), 0);
        assert_int_equal(exec_proto_send(ch[0], b.data, b.len, -1, clock_mono_ms() + 60000,
                                         err, sizeof err), 0);
        struct exec_msg m;
        assert_int_equal(exec_proto_recv_msg(ch[0], &b, MAX, clock_mono_ms() + 60000,
                                             EXEC_MSG_BIT(EXEC_MSG_RESULT), &m, NULL, err,
                                             sizeof err), 0);
        assert_int_equal(m.id, id);
        if (id == 25)
            assert_int_equal(json_string_length(m.value), n);
        exec_msg_clear(&m);
    }
    close(ch[0]);
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);    /* it saw EOF and left */
    free(input);
    exec_buf_free(&b);
}

static void
test_names(void **state)
{
    (void)state;
    assert_string_equal(exec_proto_rc_name(EXEC_PROTO_TOO_BIG), "too_big");
    assert_string_equal(exec_proto_rc_name(99), "?");
    assert_string_equal(exec_msg_type_name(EXEC_MSG_SPAWN_FAILED), "spawn_failed");
    assert_string_equal(exec_msg_type_name(-1), "?");
}

int
main(void)
{
    signal(SIGPIPE, SIG_DFL);       /* a SIGPIPE must not go unnoticed */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_task_round_trip),
        cmocka_unit_test(test_hello_spawn_validate_encode),
        cmocka_unit_test(test_encode_limits),
        cmocka_unit_test(test_decode_every_reply),
        cmocka_unit_test(test_decode_is_strict),
        cmocka_unit_test(test_long_message_cut_at_a_character),
        cmocka_unit_test(test_frames_back_to_back),
        cmocka_unit_test(test_recv_timeout_and_partial),
        cmocka_unit_test(test_recv_eof),
        cmocka_unit_test(test_recv_size_limits),
        cmocka_unit_test(test_recv_survives_eintr),
        cmocka_unit_test(test_send_to_gone_peer_and_full_buffer),
        cmocka_unit_test(test_pass_descriptor),
        cmocka_unit_test(test_peer_process_round_trips),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
