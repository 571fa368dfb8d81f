/* supervisor.c -- the parent of every warmpool process. Single-threaded.
 *
 * Start-up, in this order (main() calls supervisor_run()):
 *   1. lock the database (one instance per file), open it, migrate, hand back the
 *      tasks a previous run left `running`, and CLOSE it: no SQLite connection is
 *      ever carried across fork();
 *   2. bind the listening socket (kept here, so a restarted HTTP process reuses it);
 *   3. load every kind's context, once;
 *   4. create what the children share: the worker table (shared memory), the wake-up
 *      eventfd, and the notify pipe (workers -> HTTP process);
 *   5. fork the HTTP process and the workers, which inherit all of the above.
 * Then it only supervises: it reaps children, hands back the task of a worker that
 * died, kills a worker whose task ran past its timeout, restarts children from its
 * own preloaded context, and on SIGTERM/SIGINT drains and exits 0. */
#include "service/supervisor.h"
#include "api/api.h"
#include "common/clock.h"
#include "common/log.h"
#include "service/kinds.h"
#include "service/slots.h"
#include "service/worker.h"
#include "storage/store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define TICK_MS 100                 /* how often running tasks' deadlines are checked */
#define RESTART_MAX_BACKOFF_MS 5000

struct child {
    pid_t pid;                      /* 0: not running */
    int64_t started_ms;             /* monotonic */
    int64_t restart_at_ms;          /* monotonic; 0: no restart pending */
    int backoff_ms;                 /* grows while the child keeps dying young */
    int timed_out;                  /* killed by us because its task ran too long */
    int generation;                 /* of the contexts it was forked with */
};

static struct {
    const struct config *cfg;
    int lock_fd, listen_fd, wake_fd, notify_rd, notify_wr, sig_fd;
    sigset_t sigs;                  /* blocked here, taken through sig_fd */
    struct shared *sh;
    struct child http;
    struct child *workers;          /* cfg->workers of them; index = slot */
    int draining;
    int64_t drain_deadline_ms;
    int killed_stragglers;
    int64_t started_at_ms;
    unsigned max_connections;       /* --max-connections, as the open-file limit allows */
    int generation;                 /* of the contexts in this process; +1 per reload */
    int retiring;                   /* slot of the worker being replaced, or -1 */
} S;

/* ---------------------------------------------------------------- start-up */

static int
open_listener(const struct config *cfg)
{
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->listen_port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(cfg->listen_host, port, &hints, &res);
    if (rc != 0) {
        log_error("--listen %s:%d: %s", cfg->listen_host, cfg->listen_port, gai_strerror(rc));
        return -1;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        log_error("cannot listen on %s:%d: %s", cfg->listen_host, cfg->listen_port,
                  strerror(err));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char host[128] = "?", serv[16] = "?";
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
        getnameinfo((struct sockaddr *)&ss, len, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV);
    log_info("listening on %s port %s", host, serv);
    return fd;
}

static void
log_migration(void *arg, const char *line)
{
    (void)arg;
    log_info("database: %s", line);
}

static int
prepare_database(const struct config *cfg)
{
    char err[1024];
    int rc = store_lock(cfg->db_path, &S.lock_fd, err, sizeof err);
    if (rc != STORE_OK) {
        log_error("%s", err);
        return -1;
    }
    /* the one place the schema is created or upgraded: before any child exists */
    if (store_migrate(cfg->db_path, log_migration, NULL, NULL, err, sizeof err) != STORE_OK) {
        log_error("%s", err);
        return -1;
    }
    store *st = store_open(cfg->db_path, STORE_SYNC_FULL, 5000, err, sizeof err);
    if (st == NULL) {
        log_error("%s", err);
        return -1;
    }
    int requeued = 0, failed = 0;
    rc = store_recover_running(st, clock_now_ms(), &requeued, &failed);
    if (rc != STORE_OK)
        log_error("recovering tasks left running: %s", store_errmsg(st));
    else if (requeued + failed > 0)
        log_warn("%d task(s) were left running by the previous run: %d back to pending, "
                 "%d failed (worker_lost)", requeued + failed, requeued, failed);
    log_info("database %s (schema version %d)", cfg->db_path, store_schema_version(st));
    store_close(st);            /* before any fork */
    return rc == STORE_OK ? 0 : -1;
}

/* Each HTTP connection is a descriptor of the HTTP process: raise the soft
 * RLIMIT_NOFILE (inherited by the children) to fit --max-connections, up to the hard
 * limit, and lower the connection limit, with a warning, if it still does not fit. */
static unsigned
connection_budget(const struct config *cfg)
{
    const rlim_t reserve = 64;  /* database, WAL, pipes, eventfds, epoll, log */
    rlim_t want = (rlim_t)cfg->max_connections + reserve;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return (unsigned)cfg->max_connections;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rlim_t soft = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
        struct rlimit raised = {soft, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
            rl.rlim_cur = soft;
    }
    unsigned n = (unsigned)cfg->max_connections;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rlim_t fit = rl.rlim_cur > reserve + (rlim_t)cfg->http_threads
                         ? rl.rlim_cur - reserve : (rlim_t)cfg->http_threads;
        n = (unsigned)fit;
        log_warn("--max-connections %lld does not fit in the open-file limit (%llu, hard "
                 "%llu): serving at most %u connections", (long long)cfg->max_connections,
                 (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max, n);
    }
    if (n < (unsigned)cfg->http_threads)
        n = (unsigned)cfg->http_threads;    /* libmicrohttpd gives each thread a share */
    return n;
}

/* ---------------------------------------------------------------- children */

/* What every child does first: die with the supervisor, and drop its descriptors. */
static void
child_common(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    close(S.sig_fd);
}

/* In the HTTP process: POST /v1/admin/reload asks its parent for a SIGHUP reload. */
static int
request_reload(void)
{
    return kill(getppid(), SIGHUP);
}

static int
is_loopback(const char *host)
{
    return strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 ||
           strcmp(host, "::1") == 0;
}

static void
spawn_http(void)
{
    pid_t pid = fork();
    if (pid < 0) {
        log_error("fork (HTTP process): %s", strerror(errno));
        S.http.restart_at_ms = clock_mono_ms() + 1000;
        return;
    }
    if (pid == 0) {
        child_common();
        log_set_role("http");
        close(S.notify_wr);
        /* SIGTERM and SIGINT stay blocked: api_server_run() takes them with sigwait */
        sigset_t unblock;
        sigemptyset(&unblock);
        sigaddset(&unblock, SIGCHLD);
        sigaddset(&unblock, SIGHUP);
        signal(SIGHUP, SIG_IGN);
        signal(SIGPIPE, SIG_IGN);
        sigprocmask(SIG_UNBLOCK, &unblock, NULL);
        struct api_config acfg = {
            .listen_fd = S.listen_fd,
            .db_path = S.cfg->db_path,
            .max_body_bytes = (size_t)S.cfg->max_body_bytes,
            .default_timeout_ms = S.cfg->task_timeout_ms,
            .threads = S.cfg->http_threads,
            .max_connections = S.max_connections,
            .max_connections_per_ip = (unsigned)S.cfg->max_connections_per_ip,
            .wake_fd = S.wake_fd,
            .notify_fd = S.notify_rd,
            .nworkers = S.cfg->workers,
            .started_at_ms = S.started_at_ms,
            .hooks = {.arg = NULL, .validate = kinds_validate, .kinds = slots_kinds_stats},
        };
        acfg.api_token = S.cfg->api_token;
        acfg.max_pending = S.cfg->max_pending;
        acfg.retention_ms = S.cfg->retention_ms;
        acfg.request_reload = request_reload;
        acfg.hooks.workers = slots_stats;
        acfg.hooks.workers_alive = slots_alive;
        acfg.hooks.arg = S.sh;
        _exit(api_server_run(&acfg));
    }
    S.http.pid = pid;
    S.http.started_ms = clock_mono_ms();
    S.http.restart_at_ms = 0;
    log_info("HTTP process %ld started", (long)pid);
}

static void
spawn_worker(int i)
{
    struct slot *slot = &S.sh->slots[i];
    atomic_store(&slot->task_id, 0);
    atomic_store(&slot->retire, 0);
    atomic_store(&slot->tasks_done, 0);     /* per worker process, not per slot */
    atomic_store(&slot->state, SLOT_STARTING);
    pid_t pid = fork();
    if (pid < 0) {
        log_error("fork (worker): %s", strerror(errno));
        atomic_store(&slot->state, SLOT_EMPTY);
        S.workers[i].restart_at_ms = clock_mono_ms() + 1000;
        return;
    }
    if (pid == 0) {
        child_common();
        close(S.listen_fd);
        close(S.notify_rd);
        /* signals stay blocked until worker_main() has its handlers in place */
        struct worker_env env = {.cfg = S.cfg, .sh = S.sh, .slot = i, .wake_fd = S.wake_fd,
                                 .notify_fd = S.notify_wr};
        worker_main(&env);
    }
    atomic_store(&slot->pid, (int)pid);
    S.workers[i] = (struct child){.pid = pid, .started_ms = clock_mono_ms(),
                                  .backoff_ms = S.workers[i].backoff_ms,
                                  .generation = S.generation};
    log_debug("worker %ld started in slot %d", (long)pid, i);
}

static void
describe_exit(int status, char *out, size_t outlen)
{
    if (WIFEXITED(status))
        snprintf(out, outlen, "exited with code %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, outlen, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(out, outlen, "ended (status %d)", status);
}

/* A child that dies young is restarted later and later, so a crash loop does not
 * become a fork loop. */
static void
schedule_restart(struct child *c)
{
    int64_t now = clock_mono_ms();
    if (now - c->started_ms < 1000)
        c->backoff_ms = c->backoff_ms == 0 ? 100
                        : c->backoff_ms * 2 > RESTART_MAX_BACKOFF_MS ? RESTART_MAX_BACKOFF_MS
                                                                     : c->backoff_ms * 2;
    else
        c->backoff_ms = 0;
    c->restart_at_ms = now + c->backoff_ms;
}

/* Hands back the tasks of a dead worker: to pending if attempts remain, else failed. */
static void
release_tasks_of(pid_t pid, int timed_out, const char *why)
{
    char err[512], msg[256];
    store *st = store_open(S.cfg->db_path, STORE_SYNC_FULL, 10000, err, sizeof err);
    if (st == NULL) {
        log_error("cannot open the database to release worker %ld's task: %s (it is "
                  "released at the next start)", (long)pid, err);
        return;
    }
    if (timed_out)
        snprintf(msg, sizeof msg, "the task ran past its timeout_ms and its worker was killed");
    else
        snprintf(msg, sizeof msg, "the worker running this task %s", why);
    store_set_autocheckpoint(st, 0);    /* leave it to the HTTP writer thread */
    store_task_ref refs[8];
    size_t n = 0;
    int rc = store_release_lost(st, (long)pid, clock_now_ms(),
                                timed_out ? "timeout" : "worker_lost", msg, refs, 8, &n);
    if (rc != STORE_OK)
        log_error("releasing worker %ld's task: %s", (long)pid, store_errmsg(st));
    store_close(st);            /* before the next fork */
    for (size_t i = 0; i < n; i++) {
        log_warn("task %" PRId64 " of worker %ld: %s", refs[i].id, (long)pid,
                 refs[i].state == TASK_PENDING ? "back to pending (attempts remain)"
                                               : "failed");
        if (task_state_terminal(refs[i].state) &&
            write(S.notify_wr, &refs[i].id, sizeof refs[i].id) != (ssize_t)sizeof refs[i].id)
            log_debug("notify pipe full");
    }
}

static void
reap(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        char why[96];
        describe_exit(status, why, sizeof why);
        if (pid == S.http.pid) {
            S.http.pid = 0;
            if (!S.draining) {
                log_error("HTTP process %ld %s; restarting it", (long)pid, why);
                schedule_restart(&S.http);
            } else {
                log_info("HTTP process %ld %s", (long)pid, why);
            }
            continue;
        }
        for (int i = 0; i < S.cfg->workers; i++) {
            struct child *c = &S.workers[i];
            if (c->pid != pid)
                continue;
            struct slot *slot = &S.sh->slots[i];
            c->pid = 0;
            int retired = atomic_load(&slot->retire) && WIFEXITED(status) &&
                          WEXITSTATUS(status) == 0;
            int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0 && S.draining;
            if (retired)
                log_info("worker %ld retired (reload or recycling); forking a fresh one",
                         (long)pid);
            else if (clean)
                log_debug("worker %ld %s", (long)pid, why);
            else
                log_warn("worker %ld %s%s", (long)pid, why,
                         c->timed_out ? " (its task ran past its timeout)" : "");
            release_tasks_of(pid, c->timed_out, why);
            c->timed_out = 0;
            atomic_store(&slot->pid, 0);
            atomic_store(&slot->task_id, 0);
            atomic_store(&slot->state, SLOT_EMPTY);
            if (retired && !S.draining) {
                c->restart_at_ms = clock_mono_ms();     /* at once: it did not crash */
                c->backoff_ms = 0;
            } else if (!S.draining) {
                schedule_restart(c);
            }
            break;
        }
    }
}

/* Kills each worker whose task ran past its deadline; reap() then hands it back. */
static void
enforce_timeouts(void)
{
    int64_t now = clock_mono_ms();
    for (int i = 0; i < S.cfg->workers; i++) {
        struct slot *slot = &S.sh->slots[i];
        struct child *c = &S.workers[i];
        if (c->pid == 0 || c->timed_out || atomic_load(&slot->state) != SLOT_BUSY)
            continue;
        if (atomic_load(&slot->deadline_ms) < now) {
            log_warn("task %lld ran past its timeout: killing worker %ld",
                     (long long)atomic_load(&slot->task_id), (long)c->pid);
            c->timed_out = 1;
            kill(c->pid, SIGKILL);
        }
    }
}

/* Copies the registry's figures where the HTTP process reads them (/v1/stats). */
static void
publish_kinds(void)
{
    size_t n = kinds_count();
    S.sh->nkinds = n < SHARED_MAX_KINDS ? (int)n : SHARED_MAX_KINDS;
    for (int i = 0; i < S.sh->nkinds; i++) {
        const struct kind_entry *e = kinds_at((size_t)i);
        struct kind_info *k = &S.sh->kinds[i];
        snprintf(k->name, sizeof k->name, "%s", e->kind->name);
        atomic_store(&k->ctx_bytes, (long long)e->ctx_bytes);
        atomic_store(&k->generation, e->generation);
        atomic_store(&k->load_ms, (long long)e->load_ms);
    }
}

/* SIGHUP: build new contexts; if all load, replace the workers one at a time, each
 * when it has finished its current task (rolling()). On failure keep everything. */
static void
reload(void)
{
    char err[1024];
    int64_t t0 = clock_mono_ms();
    if (kinds_reload(S.cfg, err, sizeof err) != 0) {
        log_error("reload failed, keeping the current contexts and workers: %s", err);
        return;
    }
    S.generation++;
    publish_kinds();
    log_info("reload: new contexts loaded in %lld ms; replacing workers one by one",
             (long long)(clock_mono_ms() - t0));
}

/* Advances the rolling replacement: one worker of an older generation at a time is
 * asked to exit after its current task (an idle one first); its replacement is
 * forked from the new contexts, and once it is ready the next one goes. */
static void
rolling(void)
{
    if (S.retiring >= 0) {
        struct child *c = &S.workers[S.retiring];
        int state = atomic_load(&S.sh->slots[S.retiring].state);
        if (c->pid == 0 || c->generation != S.generation || state == SLOT_STARTING)
            return;                     /* still going, or its replacement starting */
        S.retiring = -1;
    }
    int pick = -1;
    for (int i = 0; i < S.cfg->workers; i++) {
        if (S.workers[i].pid == 0 || S.workers[i].generation == S.generation)
            continue;
        if (pick < 0 || atomic_load(&S.sh->slots[i].state) == SLOT_IDLE)
            pick = i;
        if (atomic_load(&S.sh->slots[i].state) == SLOT_IDLE)
            break;
    }
    if (pick < 0)
        return;
    S.retiring = pick;
    atomic_store(&S.sh->slots[pick].retire, 1);
    kill(S.workers[pick].pid, SIGUSR1);     /* wakes it if it is idle in poll() */
}

static void
start_drain(int sig)
{
    if (S.draining)
        return;
    log_info("%s: draining (up to %lld ms for running tasks)", strsignal(sig),
             (long long)S.cfg->grace_ms);
    S.draining = 1;
    atomic_store(&S.sh->draining, 1);
    close(S.listen_fd);         /* the HTTP process closes its copy as it quiesces */
    S.listen_fd = -1;
    S.drain_deadline_ms = clock_mono_ms() + S.cfg->grace_ms;
    if (S.http.pid > 0)
        kill(S.http.pid, SIGTERM);
    for (int i = 0; i < S.cfg->workers; i++)
        if (S.workers[i].pid > 0)
            kill(S.workers[i].pid, SIGTERM);
}

static int
children_alive(void)
{
    int n = S.http.pid > 0;
    for (int i = 0; i < S.cfg->workers; i++)
        n += S.workers[i].pid > 0;
    return n;
}

static void
handle_signals(void)
{
    struct signalfd_siginfo si;
    while (read(S.sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        switch (si.ssi_signo) {
        case SIGCHLD:
            reap();
            break;
        case SIGTERM:
        case SIGINT:
            start_drain((int)si.ssi_signo);
            break;
        case SIGHUP:
            if (!S.draining)
                reload();
            break;
        default:
            break;
        }
    }
}

/* ---------------------------------------------------------------- the loop */

static int
supervise(void)
{
    for (;;) {
        int64_t now = clock_mono_ms();
        if (!S.draining) {
            if (S.http.pid == 0 && S.http.restart_at_ms != 0 && now >= S.http.restart_at_ms)
                spawn_http();
            for (int i = 0; i < S.cfg->workers; i++)
                if (S.workers[i].pid == 0 && S.workers[i].restart_at_ms != 0 &&
                    now >= S.workers[i].restart_at_ms)
                    spawn_worker(i);
            enforce_timeouts();
            rolling();
        } else {
            if (children_alive() == 0)
                return 0;
            if (!S.killed_stragglers && now >= S.drain_deadline_ms) {
                log_warn("grace period over: killing what still runs; its tasks go back "
                         "to pending, or fail if out of attempts");
                for (int i = 0; i < S.cfg->workers; i++)
                    if (S.workers[i].pid > 0)
                        kill(S.workers[i].pid, SIGKILL);
                if (S.http.pid > 0)
                    kill(S.http.pid, SIGKILL);
                S.killed_stragglers = 1;
            }
        }
        int timeout = TICK_MS;
        if (S.draining && !S.killed_stragglers && S.drain_deadline_ms - now < timeout)
            timeout = (int)(S.drain_deadline_ms - now) > 0 ? (int)(S.drain_deadline_ms - now) : 0;
        struct pollfd p = {.fd = S.sig_fd, .events = POLLIN};
        if (poll(&p, 1, timeout) > 0)
            handle_signals();
    }
}

int
supervisor_run(const struct config *cfg)
{
    memset(&S, 0, sizeof S);
    S.cfg = cfg;
    S.generation = 1;
    S.retiring = -1;
    S.lock_fd = S.listen_fd = S.sig_fd = -1;
    S.started_at_ms = clock_now_ms();
    log_set_role("supervisor");

    /* signals first, so that none is lost between fork and the first poll */
    sigemptyset(&S.sigs);
    sigaddset(&S.sigs, SIGCHLD);
    sigaddset(&S.sigs, SIGTERM);
    sigaddset(&S.sigs, SIGINT);
    sigaddset(&S.sigs, SIGHUP);
    sigaddset(&S.sigs, SIGUSR1);        /* the workers' retire nudge; ignored here */
    sigprocmask(SIG_BLOCK, &S.sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    S.sig_fd = signalfd(-1, &S.sigs, SFD_NONBLOCK | SFD_CLOEXEC);

    if (S.sig_fd < 0 || prepare_database(cfg) != 0)
        return 1;
    S.listen_fd = open_listener(cfg);
    if (S.listen_fd < 0)
        return 1;
    S.max_connections = connection_budget(cfg);
    if (!is_loopback(cfg->listen_host) && cfg->api_token[0] == '\0')
        log_warn("listening on %s without --api-token: anyone who can reach this port can "
                 "read and submit tasks", cfg->listen_host);
    char err[1024];
    if (kinds_load(cfg, err, sizeof err) != 0) {
        log_error("%s", err);
        return 2;
    }
    int pipefd[2];
    S.sh = slots_create(cfg->workers);
    S.wake_fd = eventfd(0, EFD_SEMAPHORE | EFD_NONBLOCK);
    S.workers = calloc((size_t)cfg->workers, sizeof *S.workers);
    if (S.sh == NULL || S.wake_fd < 0 || S.workers == NULL ||
        pipe2(pipefd, O_NONBLOCK) != 0) {
        log_error("creating the shared table, eventfd or pipe: %s", strerror(errno));
        return 1;
    }
    publish_kinds();
    S.notify_rd = pipefd[0];
    S.notify_wr = pipefd[1];
    fcntl(S.notify_wr, F_SETPIPE_SZ, 1 << 20);     /* room for 131072 ids; best effort */

    spawn_http();
    for (int i = 0; i < cfg->workers; i++)
        spawn_worker(i);
    log_info("warmpool %s ready: %d workers, %zu kinds", WARMPOOL_VERSION, cfg->workers,
             kinds_count());

    int rc = supervise();

    kinds_unload();
    slots_destroy(S.sh);
    free(S.workers);
    close(S.wake_fd);
    close(S.notify_rd);
    close(S.notify_wr);
    close(S.sig_fd);
    close(S.lock_fd);
    log_info("stopped");
    return rc;
}
