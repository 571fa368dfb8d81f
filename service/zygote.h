/* zygote.h -- the loader of one generation of kind contexts, and its protocol.
 *
 * The supervisor loads no context itself (a plugin's load() that crashes or hangs
 * must not take it down: issue 8). For each generation it forks a zygote, which
 * loads every kind's context (built-ins, --plugin kinds, --kind-config), reports
 * READY with each kind's figures (or FAILED with the load error), and then forks the
 * HTTP process and the workers when the supervisor asks. It forks twice, so that the
 * child is reparented to the supervisor (a PR_SET_CHILD_SUBREAPER), which waits for
 * it, times it out and restarts it as before; the child shares the zygote's
 * contexts copy-on-write.
 *
 * The protocol: a SOCK_SEQPACKET socketpair, one message per packet: a zygote_hdr
 * {type, len} and len bytes of payload. A receiver ignores types it does not know
 * and the tail of a payload longer than it knows, so that messages can be added
 * (issue 11's external zygotes will speak it too).
 *   zygote -> supervisor  ZYGOTE_READY        struct zygote_ready
 *                         ZYGOTE_FAILED       text: why loading failed; it exits 2
 *                         ZYGOTE_SPAWNED      struct zygote_spawned: the new child's
 *                                             pid (sent by the intermediate process
 *                                             of the double fork)
 *                         ZYGOTE_SPAWN_FAILED struct zygote_spawned, pid 0, err set
 *                         ZYGOTE_EXEC_STATE   struct zygote_exec_state: an exec kind's
 *                                             zygote went down, or is up (again)
 *   supervisor -> zygote  ZYGOTE_SPAWN        struct zygote_spawn
 *                         ZYGOTE_EXIT         no payload: exit (so does end of file)
 *                         ZYGOTE_PUSH_VALIDATORS  no payload: send the HTTP process a
 *                                             fresh validate child of each exec kind
 *                                             that validates (no answer)
 * Every SPAWN gets exactly one SPAWNED or SPAWN_FAILED, unless a process dies first;
 * end of file on the supervisor's end means that no answer can come any more.
 *
 * Exec kinds (service/exec_loader.h): the zygote also starts each --exec-kind's
 * zygote as part of its load, and hands each worker it forks one child of each. */
#ifndef WP_ZYGOTE_H
#define WP_ZYGOTE_H

#include "service/config.h"
#include "service/slots.h"

#include <stdint.h>
#include <sys/types.h>

struct wake;

/* What the zygote, and the children it forks, inherit from the supervisor. */
struct zygote_env {
    const struct config *cfg;
    pid_t supervisor;           /* the children's parent once reparented */
    struct shared *sh;          /* the worker table */
    struct wake *wake;          /* wakes idle workers */
    int listen_fd;              /* for the HTTP process */
    int notify_rd, notify_wr;   /* pipe: ids of terminal tasks, workers -> HTTP process */
    unsigned max_connections;   /* --max-connections, as the open-file limit allows */
    int64_t started_at_ms;      /* when the service started (epoch ms) */
    int validate_rd, validate_wr;   /* exec kinds' validate children, zygote -> HTTP
                                     * process (SOCK_SEQPACKET pair); -1 without */
};

enum zygote_msg_type {
    ZYGOTE_READY = 1,
    ZYGOTE_FAILED = 2,
    ZYGOTE_SPAWN = 3,
    ZYGOTE_SPAWNED = 4,
    ZYGOTE_SPAWN_FAILED = 5,
    ZYGOTE_EXIT = 6,
    ZYGOTE_EXEC_STATE = 7,
    ZYGOTE_PUSH_VALIDATORS = 8,
};

enum zygote_role { ZYGOTE_ROLE_HTTP = 1, ZYGOTE_ROLE_WORKER = 2 };

struct zygote_hdr {
    uint32_t type;              /* enum zygote_msg_type */
    uint32_t len;               /* payload bytes that follow */
};

#define ZYGOTE_MSG_MAX 8192     /* the largest payload */

struct zygote_kind {
    char name[65];
    int64_t ctx_bytes;
    int64_t load_ms;
    int32_t exec;               /* index among the exec kinds; -1 for a C kind */
};

struct zygote_ready {
    int32_t nkinds;
    struct zygote_kind kinds[SHARED_MAX_KINDS];
};

struct zygote_spawn {
    int32_t role;               /* enum zygote_role */
    int32_t slot;               /* the worker's slot; 0 for the HTTP process */
    uint64_t seq;               /* the supervisor's request number, echoed back */
};

struct zygote_spawned {
    int32_t role, slot;
    uint64_t seq;
    int32_t pid;                /* the new child; 0 with SPAWN_FAILED */
    int32_t err;                /* errno of the failed fork */
    uint64_t exec_missing;      /* a worker: bit i set = no child of exec kind i */
};

struct zygote_exec_state {
    int32_t kind;               /* index among the exec kinds (cfg->exec_kinds) */
    int32_t up;                 /* 1: its zygote is ready (again); 0: it went down */
    int64_t ctx_bytes;          /* with up: its new figures */
    int64_t load_ms;
    char name[65];
};

/* Runs the zygote of `generation` in a child the supervisor has just forked; sock is
 * its end of the socketpair. Never returns: exits 0 when told to (or at end of file),
 * 2 after reporting a load failure. */
void zygote_main(const struct zygote_env *env, int sock, int generation)
    __attribute__((noreturn));

/* Sends one message. 0, or -1 with errno. */
int zygote_send(int sock, uint32_t type, const void *payload, uint32_t len);
/* Receives one message into buf (cap bytes; a longer payload is cut to cap). Its
 * payload length (>= 0) with *type set; -2 at end of file (every other end closed);
 * -1 on error (errno; EAGAIN on a non-blocking socket with nothing waiting). */
int zygote_recv(int sock, uint32_t *type, void *buf, size_t cap);

#endif
