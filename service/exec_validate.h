/* exec_validate.h -- the validation of exec kinds' inputs at submission, in the HTTP
 * process (docs/exec-kinds.md, "Validation at submission").
 *
 * The HTTP process holds one child of each exec kind whose zygote said `validate:
 * true`, and sends it a `validate` message for each submission of that kind, under a
 * mutex per kind (HTTP threads validate at once) and with a deadline. Its children
 * come from the loader that forked it, and later ones from the serving loader, after a
 * reload or a restart of the kind's zygote (the old ones end with their zygotes):
 * the loader sends them over a SOCK_SEQPACKET channel that the supervisor made, one
 * message per child with its channel and pidfd attached (SCM_RIGHTS); the HTTP process
 * reads that channel, without blocking, before each validation, and keeps the newest
 * child of each kind (by generation, then the loader's sequence number).
 *
 * When a kind has no usable child (its zygote is down or restarting, or the child broke
 * the protocol, timed out or died), its inputs are accepted without validation: they
 * wait, pending, like any task of a kind whose zygote is down, and run() sees them. */
#ifndef WP_EXEC_VALIDATE_H
#define WP_EXEC_VALIDATE_H

#include "service/config.h"
#include "service/exec_zygote.h"

#define EXEC_VALIDATE_TIMEOUT_MS 2000   /* one validate round trip */

/* Loader: hands child c of exec kind `kind` to the HTTP process over sock (the child's
 * channel and pidfd ride along; the caller keeps and closes its own). 0, or -1 with
 * errno (a full channel: the HTTP process is not reading; EAGAIN). */
int exec_validate_send(int sock, int kind, int generation, int seq, const struct exec_child *c);

/* HTTP process: takes over initial[] (CONFIG_MAX_EXEC_KINDS entries, fd -1 for none,
 * from the loader of `generation`, its hand-out number seq: one queued on sock before
 * this process was forked is older), reads later ones from sock (-1: none come), and
 * installs the kinds.h hook kinds_exec_validate. */
void exec_validate_init(const struct config *cfg, int sock, struct exec_child *initial,
                        int generation, int seq);

#endif
