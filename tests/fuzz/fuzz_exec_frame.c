/* fuzz_exec_frame.c -- libFuzzer target: the exec-kind frame decoder
 * (service/exec_proto.c) on any bytes, both as a frame body and as a whole frame read
 * from a socket. Checks, beyond "no crash, no leak": a decoded message has a known
 * type, its strings are within their limits (code [a-z0-9_]{1,63}, message at most
 * 1023 bytes of UTF-8 without NUL), and re-encoding what was decoded decodes again
 * to the same type; a refusal always says why.
 *
 * Run longer:  build/fuzz/tests/fuzz/fuzz_exec_frame -max_total_time=600 corpus/exec_frame */
#include "service/exec_proto.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(const struct exec_msg *m)
{
    if (m->type >= EXEC_MSG_COUNT)
        abort();
    if (m->type == EXEC_MSG_ERROR) {
        size_t n = strlen(m->code);
        if (n == 0 || n > EXEC_PROTO_CODE_MAX || strspn(m->code,
                "abcdefghijklmnopqrstuvwxyz0123456789_") != n)
            abort();
        if (m->id < 1)
            abort();
    }
    if (strlen(m->message) > EXEC_PROTO_MESSAGE_MAX)
        abort();
    /* the cut never splits a character: the last byte is not a UTF-8 lead byte alone */
    size_t n = strlen(m->message);
    if (n > 0 && ((unsigned char)m->message[n - 1] & 0xC0) == 0xC0)
        abort();
    if ((m->type == EXEC_MSG_RESULT || m->type == EXEC_MSG_TASK ||
         m->type == EXEC_MSG_VALIDATE) && m->value == NULL)
        abort();
}

/* The decoded value, spliced into a task frame, decodes as a task again. */
static void
reencode(const struct exec_msg *m)
{
    if (m->value == NULL)
        return;
    char *text = json_dumps(m->value, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL)
        return;
    struct exec_buf b = {0};
    struct exec_msg again;
    char err[256];
    if (exec_proto_encode_task(1, 1, 0, 0, text, strlen(text), EXEC_PROTO_FRAME_MAX_DEFAULT,
                               &b, err, sizeof err) != EXEC_PROTO_OK)
        abort();
    if (exec_proto_decode(b.data + EXEC_PROTO_HEADER_BYTES, b.len - EXEC_PROTO_HEADER_BYTES,
                          EXEC_MSG_BIT(EXEC_MSG_TASK), &again, err, sizeof err) != EXEC_PROTO_OK)
        abort();
    if (!json_equal(again.value, m->value))
        abort();
    exec_msg_clear(&again);
    exec_buf_free(&b);
    free(text);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct exec_msg m;
    char err[512] = "";
    /* 1. the bytes as a frame's body */
    int rc = exec_proto_decode((const char *)data, size, EXEC_MSG_ANY, &m, err, sizeof err);
    if (rc == EXEC_PROTO_OK) {
        check(&m);
        reencode(&m);
        exec_msg_clear(&m);
    } else if (err[0] == '\0' || m.value != NULL || m.config != NULL) {
        abort();
    }
    /* 2. the bytes as what a peer wrote on a channel, then hung up (64 KiB limit) */
    int ch[2];
    if (size > 100000 || socketpair(AF_UNIX, SOCK_STREAM, 0, ch) != 0)
        return 0;
    if (size > 0 && write(ch[1], data, size) != (ssize_t)size)
        abort();
    close(ch[1]);
    struct exec_buf b = {0};
    for (int i = 0; i < 4; i++) {
        err[0] = '\0';
        rc = exec_proto_recv_msg(ch[0], &b, EXEC_PROTO_FRAME_MAX_FLOOR, 0, EXEC_MSG_ANY, &m,
                                 NULL, err, sizeof err);
        if (rc != EXEC_PROTO_OK) {
            if (err[0] == '\0')
                abort();
            break;
        }
        check(&m);
        exec_msg_clear(&m);
    }
    exec_buf_free(&b);
    close(ch[0]);
    return 0;
}
