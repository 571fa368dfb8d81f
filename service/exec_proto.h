/* exec_proto.h -- the wire format of exec kinds (docs/exec-kinds.md, protocol 1): frames,
 * the twelve messages, and the socket I/O that carries them, with deadlines and
 * descriptor passing. Depends on jansson and libc only: no supervisor, no worker.
 *
 * A frame is a 4-byte big-endian length N (1..max_frame_bytes) followed by N bytes of
 * UTF-8 JSON: one object whose "type" names the message. Decoding is strict: an
 * unknown type or field, a field of the wrong type, a missing field, a frame over the
 * limit or a message not expected at this point of the conversation is an error with
 * a sentence saying which. */
#ifndef WP_EXEC_PROTO_H
#define WP_EXEC_PROTO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define EXEC_PROTO_VERSION 1
#define EXEC_PROTO_HEADER_BYTES 4
#define EXEC_PROTO_FRAME_MAX_DEFAULT (16u << 20)   /* 16 MiB, announced in hello */
#define EXEC_PROTO_FRAME_MAX_FLOOR (64u << 10)     /* a hello may not announce less */
#define EXEC_PROTO_FRAME_MAX_CEIL (1u << 30)       /* ... nor more */
#define EXEC_PROTO_CODE_MAX 63                     /* bytes of an error code: [a-z0-9_] */
#define EXEC_PROTO_MESSAGE_MAX 1023                /* bytes of a message warmpool keeps */
#define EXEC_PROTO_KIND_MAX 64

/* The environment a zygote is started with. */
#define EXEC_PROTO_ENV_FD "WARMPOOL_EXEC_FD"               /* control channel's number */
#define EXEC_PROTO_ENV_VERSION "WARMPOOL_EXEC_PROTOCOL"    /* "1" */
#define EXEC_PROTO_ENV_KIND "WARMPOOL_KIND"                /* the kind's name */

/* What the functions below return. Every code but OK comes with a sentence in err. */
enum exec_proto_rc {
    EXEC_PROTO_OK = 0,
    EXEC_PROTO_EOF,         /* the peer closed the channel (between frames or inside one) */
    EXEC_PROTO_TIMEOUT,     /* the deadline passed first */
    EXEC_PROTO_TOO_BIG,     /* a frame (announced or to be sent) is over max_frame_bytes */
    EXEC_PROTO_MALFORMED,   /* not JSON, not a valid message, or not expected now */
    EXEC_PROTO_REFUSED,     /* the peer said no: load_failed, spawn_failed, wrong version */
    EXEC_PROTO_IO,          /* a system call failed (errno's text in err) */
};
const char *exec_proto_rc_name(int rc);

enum exec_msg_type {
    /* warmpool -> zygote */
    EXEC_MSG_HELLO = 0, EXEC_MSG_SPAWN,
    /* zygote -> warmpool */
    EXEC_MSG_READY, EXEC_MSG_LOAD_FAILED, EXEC_MSG_SPAWNED, EXEC_MSG_SPAWN_FAILED,
    /* warmpool -> child */
    EXEC_MSG_TASK, EXEC_MSG_VALIDATE,
    /* child -> warmpool */
    EXEC_MSG_RESULT, EXEC_MSG_ERROR, EXEC_MSG_VALID, EXEC_MSG_INVALID,
    EXEC_MSG_COUNT
};
#define EXEC_MSG_BIT(t) (1u << (t))
#define EXEC_MSG_ANY ((1u << EXEC_MSG_COUNT) - 1)
/* "hello", "ready", ...; "?" for a value out of range */
const char *exec_msg_type_name(int type);

/* A decoded message. Only the fields of its type are set; the rest stay zero. */
struct exec_msg {
    enum exec_msg_type type;
    /* hello */
    int protocol;                   /* also ready */
    char kind[EXEC_PROTO_KIND_MAX + 1];
    char *config;                   /* heap copy, NULL for JSON null */
    size_t max_frame_bytes;
    /* ready */
    int64_t context_bytes;
    int64_t load_ms;                /* -1 when the zygote did not say */
    int validate;                   /* 1: its children answer validate messages */
    /* spawned */
    pid_t pid;
    /* task (id also in result and error) */
    int64_t id;
    int attempt;
    int64_t timeout_ms;
    int64_t deadline_ms;            /* Unix epoch ms at which warmpool kills the child */
    /* task and validate: input; result: result. A new reference, released by
     * exec_msg_clear() */
    json_t *value;
    /* error (code, message, retryable); load_failed, spawn_failed, invalid (message) */
    char code[EXEC_PROTO_CODE_MAX + 1];
    char message[EXEC_PROTO_MESSAGE_MAX + 1];   /* cut at a character boundary */
    int retryable;
};
/* Releases config and value and zeroes m. NULL-safe. */
void exec_msg_clear(struct exec_msg *m);

/* A growable byte buffer, reused from frame to frame. Release with exec_buf_free(). */
struct exec_buf {
    char *data;
    size_t len;
    size_t cap;
};
void exec_buf_free(struct exec_buf *b);

/* ---------------------------------------------------------------- encoding
 * Each encoder writes one whole frame, header included, into out (replacing what it
 * held): OK, TOO_BIG when it would exceed max_frame_bytes, IO when out of memory. */

/* Any message as a jansson object (used for the zygote side in tests; the object is
 * borrowed). It is not validated: a test may encode a wrong message on purpose. */
int exec_proto_encode_json(const json_t *msg, size_t max_frame_bytes, struct exec_buf *out,
                           char *err, size_t errlen);
int exec_proto_encode_hello(const char *kind, const char *config, size_t max_frame_bytes,
                            struct exec_buf *out, char *err, size_t errlen);
int exec_proto_encode_spawn(size_t max_frame_bytes, struct exec_buf *out, char *err,
                            size_t errlen);
/* input_json: the task's input as JSON text (as stored: the API validated it), spliced
 * in without being parsed again; input_len bytes, not NUL-terminated. */
int exec_proto_encode_task(int64_t id, int attempt, int64_t timeout_ms, int64_t deadline_ms,
                           const char *input_json, size_t input_len, size_t max_frame_bytes,
                           struct exec_buf *out, char *err, size_t errlen);
int exec_proto_encode_validate(const char *input_json, size_t input_len,
                               size_t max_frame_bytes, struct exec_buf *out, char *err,
                               size_t errlen);
/* The body bytes of those two frames (no header): compare with max_frame_bytes to tell
 * an input too big for a frame before sending anything. */
size_t exec_proto_task_bytes(int64_t id, int attempt, int64_t timeout_ms, int64_t deadline_ms,
                             size_t input_len);
size_t exec_proto_validate_bytes(size_t input_len);

/* ---------------------------------------------------------------- decoding
 * Decodes one frame's body (len bytes, no header) into *out. expect is a mask of
 * EXEC_MSG_BIT()s: a valid message of another type is MALFORMED ("'spawned' while
 * waiting for result or error"). OK fills *out (release with exec_msg_clear()); any
 * other code leaves it zeroed. */
int exec_proto_decode(const char *body, size_t len, unsigned expect, struct exec_msg *out,
                      char *err, size_t errlen);

/* ---------------------------------------------------------------- I/O
 * fd is a connected AF_UNIX SOCK_STREAM socket, blocking or not: every call uses
 * MSG_DONTWAIT and poll(), so deadline_ms (on clock_mono_ms()'s clock; -1 = none)
 * bounds the whole frame. EINTR is retried; SIGPIPE is never raised (MSG_NOSIGNAL). */

/* Sends frame[0..len) (header included). pass_fd >= 0 is sent with it (SCM_RIGHTS);
 * the caller keeps its own copy. EOF: the peer is gone (EPIPE, ECONNRESET). */
int exec_proto_send(int fd, const char *frame, size_t len, int pass_fd, int64_t deadline_ms,
                    char *err, size_t errlen);

/* Receives one frame's body into b (b->len = body bytes; a NUL follows them). A length
 * of 0 is MALFORMED; over max_frame_bytes is TOO_BIG, and the body is left unread
 * (the channel is then unusable: the caller drops it). Descriptors that arrive with
 * the frame: with passed_fd NULL, any is closed and the frame is MALFORMED; with
 * passed_fd non-NULL, *passed_fd gets the one that came (close-on-exec), or -1 if none,
 * and more than one is MALFORMED (all closed). */
int exec_proto_recv(int fd, struct exec_buf *b, size_t max_frame_bytes, int64_t deadline_ms,
                    int *passed_fd, char *err, size_t errlen);

/* recv + decode: the usual way to wait for the answer to a request. */
int exec_proto_recv_msg(int fd, struct exec_buf *b, size_t max_frame_bytes,
                        int64_t deadline_ms, unsigned expect, struct exec_msg *out,
                        int *passed_fd, char *err, size_t errlen);

/* socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC): a channel. 0, or -1 with errno. */
int exec_proto_channel(int fds[2]);

#endif
