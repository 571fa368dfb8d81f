/* exec_zygote.h -- warmpool's side of an exec kind's processes (docs/exec-kinds.md):
 * split the kind's COMMAND, start its zygote with the control channel, wait for it
 * to be ready, ask it for children, and run tasks on a child's channel; kill a child
 * by pid. Built on exec_proto.h; knows nothing of the supervisor or the worker, which
 * call these functions from the process that owns each channel.
 *
 * Every function that waits takes a deadline on clock_mono_ms()'s clock (-1: none)
 * and returns an exec_proto_rc, with a sentence in err for anything but OK. */
#ifndef WP_EXEC_ZYGOTE_H
#define WP_EXEC_ZYGOTE_H

#include "service/exec_proto.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Splits cmd into words as a POSIX shell would, with no expansion at all: blanks
 * separate words; '...' keeps everything; "..." keeps everything but \" \\ \$ \` and
 * backslash-newline; a backslash outside quotes keeps the next character. $, `, *, ~
 * are plain characters. Returns a NULL-terminated array (free with exec_argv_free()),
 * or NULL with err: empty command, unterminated quote, trailing backslash, or out of
 * memory. */
char **exec_command_split(const char *cmd, char *err, size_t errlen);
void exec_argv_free(char **argv);

struct exec_zygote {
    pid_t pid;                  /* the zygote; a child of the process that started it */
    int ctl_fd;                 /* control channel; -1 once closed */
    size_t max_frame_bytes;     /* announced in hello; both directions */
    /* from its ready message */
    int64_t context_bytes;
    int64_t load_ms;            /* -1 when the zygote did not say */
    int validate;               /* its children answer validate messages */
    struct exec_buf buf;        /* reused for every control frame */
};

/* Starts argv[0] (searched in PATH) as the zygote of kind, in its own process group,
 * with stdin /dev/null, stdout sent to stderr, the control channel at descriptor 3
 * and every other descriptor closed, PR_SET_PDEATHSIG = SIGKILL, signals unblocked and
 * at their defaults, and the environment of this process less its WARMPOOL_*
 * variables plus WARMPOOL_EXEC_FD=3, WARMPOOL_EXEC_PROTOCOL and WARMPOOL_KIND. Sends
 * hello (config: NULL for none). Does not wait for ready. 0, or -1 with err (fork,
 * socketpair); a command that cannot be executed shows as a load_failed message that
 * exec_zygote_wait_ready() reports, and the zygote exits 127. */
int exec_zygote_start(struct exec_zygote *z, char *const argv[], const char *kind,
                      const char *config, size_t max_frame_bytes, char *err, size_t errlen);

/* Waits for ready. REFUSED: load_failed (its message in err) or a ready for another
 * protocol version; EOF: the zygote died first (reap it for its status); TIMEOUT;
 * MALFORMED or TOO_BIG: it wrote something else. After anything but OK the zygote is
 * of no use: stop it. */
int exec_zygote_wait_ready(struct exec_zygote *z, int64_t deadline_ms, char *err,
                           size_t errlen);

struct exec_child {
    pid_t pid;                  /* a child of the zygote, not of this process */
    int fd;                     /* its channel; -1 once closed */
    int pidfd;                  /* pidfd_open(pid), or -1 where the kernel has none */
};

/* Asks the zygote for a child: a new channel, one end passed with spawn, the pid from
 * spawned. The pid is checked: its parent must be the zygote and the channel must be
 * open (so the pidfd names that child, not a recycled pid). REFUSED: spawn_failed, or
 * the checks failed; c is then empty and the zygote may be asked again. After EOF,
 * TIMEOUT, MALFORMED, TOO_BIG or IO the control channel is out of step (a late answer
 * would be read as the next one's): stop the zygote. */
int exec_zygote_spawn(struct exec_zygote *z, struct exec_child *c, int64_t deadline_ms,
                      char *err, size_t errlen);

/* Closes the control channel (the zygote exits at EOF), waits up to grace_ms for it
 * to exit, then SIGKILLs it; reaps it and stores its wait status in *status
 * (NULL-safe). For callers that reap their own children (tests, the driver): the
 * supervisor reaps through its signalfd instead. Frees z->buf. */
void exec_zygote_stop(struct exec_zygote *z, int64_t grace_ms, int *status);

/* One task, as sent to a child. */
struct exec_task {
    int64_t id;
    int attempt;
    int64_t timeout_ms;         /* the attempt's budget */
    int64_t deadline_ms;        /* Unix epoch ms when warmpool kills the child */
    const char *input;          /* JSON text (not NUL-terminated), input_len bytes */
    size_t input_len;
};

/* Is the child's channel quiet, as it must be between tasks? 1 yes; 0 when it has
 * reached EOF (the child left) or holds bytes nobody asked for (a broken child). Call it
 * before sending a task, so that such a child is replaced without costing the task an
 * attempt. Does not block. */
int exec_child_usable(const struct exec_child *c);

/* Sends t and waits until deadline_ms (monotonic) for its answer: OK with *reply a
 * result or an error for t->id (release with exec_msg_clear()). EOF: the child died
 * or closed its channel; MALFORMED / TOO_BIG: it broke the protocol (a reply for
 * another id included); TIMEOUT. After anything but OK the child is of no use: kill
 * it. */
int exec_child_task(struct exec_child *c, struct exec_buf *buf, size_t max_frame_bytes,
                    const struct exec_task *t, int64_t deadline_ms, struct exec_msg *reply,
                    char *err, size_t errlen);

/* Sends a validate message; OK with *reply valid or invalid. Codes as exec_child_task. */
int exec_child_validate(struct exec_child *c, struct exec_buf *buf, size_t max_frame_bytes,
                        const char *input, size_t input_len, int64_t deadline_ms,
                        struct exec_msg *reply, char *err, size_t errlen);

/* SIGKILLs the child (through its pidfd when there is one), then waits up to wait_ms
 * for its channel to reach EOF, which proves it gone; closes the channel and pidfd.
 * 0 when it is gone, -1 when the wait ran out. NULL-safe; a closed child is a no-op. */
int exec_child_kill(struct exec_child *c, int64_t wait_ms);

/* Closes the channel: the child exits at EOF (after the task in hand). Waits up to
 * wait_ms for it to exit (through its pidfd), and SIGKILLs it if it has not: 0 when
 * it left by itself, 1 when it was killed, -1 when even that was not seen. */
int exec_child_close(struct exec_child *c, int64_t wait_ms);

#endif
