/* exec_validate.c -- exec kinds' validation in the HTTP process (see exec_validate.h). */
#include "service/exec_validate.h"
#include "common/clock.h"
#include "common/log.h"
#include "service/kinds.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct delivery {               /* the payload of one message on the channel */
    int32_t kind;
    int32_t generation;
    int32_t seq;
    int32_t pid;
};

struct vk {
    pthread_mutex_t mu;         /* one validation at a time per kind */
    struct exec_child c;        /* fd -1: none */
    int generation, seq;        /* of c: a newer delivery replaces it */
    struct exec_buf buf;
};

static struct {
    const struct config *cfg;
    int sock;
    pthread_mutex_t inbox;      /* reading sock; taken before a kind's mu */
    struct vk k[CONFIG_MAX_EXEC_KINDS];
} V = {.sock = -1, .inbox = PTHREAD_MUTEX_INITIALIZER};

int
exec_validate_send(int sock, int kind, int generation, int seq, const struct exec_child *c)
{
    struct delivery d = {.kind = kind, .generation = generation, .seq = seq, .pid = c->pid};
    int fds[2] = {c->fd, c->pidfd};
    int nfds = c->pidfd >= 0 ? 2 : 1;
    union {
        char buf[CMSG_SPACE(sizeof fds)];
        struct cmsghdr align;
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {.iov_base = &d, .iov_len = sizeof d};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                        .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds)};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
    ssize_t n;
    do
        n = sendmsg(sock, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n == (ssize_t)sizeof d ? 0 : -1;
}

static void
forget(struct exec_child *c)
{
    if (c->fd >= 0)
        close(c->fd);
    if (c->pidfd >= 0)
        close(c->pidfd);
    *c = (struct exec_child){.pid = -1, .fd = -1, .pidfd = -1};
}

/* Installs c as kind i's child if it is newer than the one held; else closes it. */
static void
install(int i, struct exec_child *c, int generation, int seq)
{
    struct vk *k = &V.k[i];
    pthread_mutex_lock(&k->mu);
    if (generation > k->generation || (generation == k->generation && seq > k->seq)) {
        forget(&k->c);
        k->c = *c;
        k->generation = generation;
        k->seq = seq;
        *c = (struct exec_child){.pid = -1, .fd = -1, .pidfd = -1};
        log_debug("exec kind %s: validating with child %ld (generation %d)",
                  V.cfg->exec_kinds[i].name, (long)k->c.pid, generation);
    }
    pthread_mutex_unlock(&k->mu);
    forget(c);
}

/* Takes every child the loaders sent since the last look. */
static void
take_deliveries(void)
{
    if (V.sock < 0)
        return;
    pthread_mutex_lock(&V.inbox);
    for (;;) {
        struct delivery d;
        union {
            char buf[CMSG_SPACE(sizeof(int) * 4)];
            struct cmsghdr align;
        } ctl;
        struct iovec iov = {.iov_base = &d, .iov_len = sizeof d};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                            .msg_controllen = sizeof ctl.buf};
        ssize_t n = recvmsg(V.sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        int fds[4], nfds = 0;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm != NULL; cm = CMSG_NXTHDR(&mh, cm)) {
            if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                continue;
            size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t j = 0; j < k && nfds < 4; j++)
                memcpy(&fds[nfds++], CMSG_DATA(cm) + j * sizeof(int), sizeof(int));
        }
        struct exec_child c = {.pid = d.pid, .fd = nfds > 0 ? fds[0] : -1,
                               .pidfd = nfds > 1 ? fds[1] : -1};
        for (int j = 2; j < nfds; j++)
            close(fds[j]);
        if (n == (ssize_t)sizeof d && c.fd >= 0 && d.kind >= 0 &&
            d.kind < V.cfg->nexec_kinds)
            install(d.kind, &c, d.generation, d.seq);
        else
            forget(&c);
    }
    pthread_mutex_unlock(&V.inbox);
}

static int
validate(int i, const json_t *input, char *err, size_t errlen)
{
    struct vk *k = &V.k[i];
    const char *name = V.cfg->exec_kinds[i].name;
    char *text = NULL;
    /* an input over a frame could never be sent to a child: refuse it now (only
     * possible when --max-body lets such a body in) */
    if ((size_t)V.cfg->max_body_bytes + 256 > EXEC_PROTO_FRAME_MAX_DEFAULT) {
        text = json_dumps(input, JSON_COMPACT | JSON_ENCODE_ANY);
        if (text != NULL &&
            exec_proto_task_bytes(INT64_MAX, INT32_MAX, INT64_MAX, INT64_MAX, strlen(text)) >
                EXEC_PROTO_FRAME_MAX_DEFAULT) {
            snprintf(err, errlen, "the input takes %zu bytes: over what an exec kind's frame "
                     "holds (%u bytes)", strlen(text), EXEC_PROTO_FRAME_MAX_DEFAULT);
            free(text);
            return 1;
        }
    }
    take_deliveries();
    int rc = 0;
    pthread_mutex_lock(&k->mu);
    if (k->c.fd >= 0 && !exec_child_usable(&k->c)) {
        log_warn("exec kind %s: validate child %ld is gone; inputs are accepted without "
                 "validation until a new one comes", name, (long)k->c.pid);
        exec_child_kill(&k->c, 100);
    }
    if (k->c.fd >= 0 && text == NULL)
        text = json_dumps(input, JSON_COMPACT | JSON_ENCODE_ANY);
    if (k->c.fd >= 0 && text != NULL) {
        struct exec_msg reply;
        char why[600];
        int r = exec_child_validate(&k->c, &k->buf, EXEC_PROTO_FRAME_MAX_DEFAULT, text,
                                    strlen(text), clock_mono_ms() + EXEC_VALIDATE_TIMEOUT_MS,
                                    &reply, why, sizeof why);
        if (r == EXEC_PROTO_OK) {
            if (reply.type == EXEC_MSG_INVALID) {
                snprintf(err, errlen, "%s", reply.message);
                rc = 1;
            }
            exec_msg_clear(&reply);
        } else {
            log_warn("exec kind %s: validating an input: %s; the child is stopped, and "
                     "inputs are accepted without validation until a new one comes",
                     name, why);
            exec_child_kill(&k->c, 100);
        }
    }
    pthread_mutex_unlock(&k->mu);
    free(text);
    return rc;
}

void
exec_validate_init(const struct config *cfg, int sock, struct exec_child *initial,
                   int generation, int seq)
{
    V.cfg = cfg;
    V.sock = sock;
    for (int i = 0; i < CONFIG_MAX_EXEC_KINDS; i++) {
        pthread_mutex_init(&V.k[i].mu, NULL);
        V.k[i].c = (struct exec_child){.pid = -1, .fd = -1, .pidfd = -1};
        if (i < cfg->nexec_kinds && initial != NULL && initial[i].fd >= 0)
            install(i, &initial[i], generation, seq);
        else if (initial != NULL && initial[i].fd >= 0)
            forget(&initial[i]);
    }
    kinds_exec_validate = validate;
}
