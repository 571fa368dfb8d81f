/* supervisor.c -- the parent of every warmpool process. Single-threaded.
 *
 * Start-up, in this order (main() calls supervisor_run()):
 *   1. start the instance in the store (store_start: SQLite locks the file, PostgreSQL
 *      registers the instance), migrate, hand back the tasks a previous run left
 *      `running`, and close every connection: none is ever carried across fork();
 *   2. bind the listening socket (kept here, so a restarted HTTP process reuses it);
 *   3. create what the children share: the worker table (shared memory), the wake-up
 *      channel, and the notify pipe (workers -> HTTP process); become a
 *      PR_SET_CHILD_SUBREAPER;
 *   4. fork the zygote of generation 1 (service/zygote.c), which loads every kind's
 *      context: the supervisor itself never runs a kind's code. A load that fails,
 *      crashes or outlasts --load-timeout-ms stops the start (exit 2);
 *   5. once it reports ready, ask it for the HTTP process and the workers. It forks
 *      each twice, so that each is reparented to this process.
 * Then it only supervises: it reaps children (the orphans of their own children too),
 * hands back the task of a worker that died, kills a worker whose task ran past its
 * timeout, asks the zygote for replacements, and on SIGTERM/SIGINT drains and exits 0.
 * A reload (SIGHUP) forks the next generation's zygote; only when it is ready are the
 * workers replaced, one at a time, and the old zygote exits. A new zygote that
 * fails, crashes or hangs in load() is killed and logged, and nothing else changes. */
#include "service/supervisor.h"
#include "common/clock.h"
#include "common/events.h"
#include "common/fault.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/wake.h"
#include "service/agent.h"
#include "service/slots.h"
#include "service/tasklog.h"
#include "service/zygote.h"
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
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define TICK_MS 100                 /* how often running tasks' deadlines are checked */
#define RESTART_MAX_BACKOFF_MS 5000
#define ZYGOTE_MAX_BACKOFF_MS 60000 /* a zygote that keeps dying or failing to load */
#define SPAWN_TIMEOUT_MS 10000      /* a SPAWN without an answer is given up */
#define MAX_ZYGOTES 4               /* serving, loading, and exiting ones being drained */
#define DEAD_RING 32                /* unknown children reaped, remembered for SPAWNED */
#define LOAD_REPORT_SLACK_MS 1000   /* with exec kinds: the loader names a late zygote first */
#define REFRESH_YOUNG_MS 5000       /* replaced for a missing exec kind, and it was young */
#define REFRESH_MAX_BACKOFF_MS 5000

struct child {
    pid_t pid;                      /* 0: not running */
    int64_t started_ms;             /* monotonic */
    int64_t restart_at_ms;          /* monotonic; 0: no restart pending */
    int backoff_ms;                 /* grows while the child keeps dying young */
    int timed_out;                  /* killed by us because its task ran too long */
    int generation;                 /* of the contexts it was forked with */
    uint64_t spawn_seq;             /* non-zero: asked of a zygote, no answer yet */
    int spawn_zygote;               /* which one (index into S.zy) */
    int64_t spawn_deadline_ms;      /* monotonic */
    /* exec kinds (a worker): it is replaced when it lacks a usable child of a kind whose
     * zygote is up -- unless it came without one (the spawn was refused) and no newer
     * announcement of that kind came since: then it waits for one */
    uint64_t born_missing;
    int refreshing;                 /* retired to get the children it lacks */
    int refresh_backoff_ms;         /* grows while such replacements keep dying young */
    int64_t refresh_not_before_ms;  /* monotonic */
};

/* A zygote: its record lives until it is reaped AND its socket has reached end of
 * file (a child it forked may still send ZYGOTE_SPAWNED after the zygote died). */
struct zygote {
    int used;
    pid_t pid;                      /* 0 once reaped */
    int sock;                       /* our end; -1 once at end of file */
    int generation;
    int ready;                      /* ZYGOTE_READY received */
    int failed;                     /* ZYGOTE_FAILED received or load timed out */
    int exiting;                    /* asked to exit (a newer one serves, or a drain) */
    int64_t started_ms;             /* monotonic */
};

static struct {
    const struct config *cfg;
    pid_t pid;
    int listen_fd, notify_rd, notify_wr, sig_fd;
    struct wake *wake;              /* wakes idle workers (common/wake.h) */
    sigset_t sigs;                  /* blocked here, taken through sig_fd */
    struct shared *sh;
    struct child http;
    struct child *workers;          /* cfg->workers of them; index = slot */
    struct zygote zy[MAX_ZYGOTES];
    int serving;                    /* index of the ready zygote children come from; -1 */
    int loading;                    /* index of the zygote loading a generation; -1 */
    int started;                    /* the first zygote was ready: the service runs */
    int exit_code;                  /* >= 0: leave the loop with it */
    int reload_again;               /* a SIGHUP came while a generation was loading */
    int64_t zygote_restart_at_ms;   /* monotonic; 0: none due */
    int zygote_backoff_ms;
    uint64_t spawn_seq;
    struct {
        pid_t pid;
        int status;
    } dead[DEAD_RING];              /* unknown children reaped (see on_spawned()) */
    int dead_next;
    int draining;
    int64_t drain_deadline_ms;
    int killed_stragglers;
    int64_t started_at_ms;
    unsigned max_connections;       /* --max-connections, as the open-file limit allows */
    int generation;                 /* the serving contexts'; +1 per reload */
    int retiring;                   /* slot of the worker being replaced, or -1 */
    pid_t retiring_pid;             /* the process asked to leave it */
    uint64_t exec_up;               /* exec kinds whose zygote is ready (serving loader) */
    int validate_rd, validate_wr;   /* exec kinds' validate children, loader -> HTTP */
    struct pending_release *releases;   /* hand-backs under way (retry_releases()) */
    size_t nreleases;
    struct child agent;             /* service/agent.h */
    int agent_ctl;                  /* write end of its control pipe; -1 */
    int agent_stopping;             /* AGENT_STOP sent: the drain's last step */
    int64_t agent_stop_deadline_ms; /* monotonic */
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

/* The instance as the store knows it: a name for people ("host:port"), this host, the
 * supervisor's pid, the number of workers and the lease. */
static void
describe_instance(const struct config *cfg, store_instance *inst)
{
    *inst = (store_instance){.pid = (long)getpid(), .workers = cfg->workers,
                             .lease_ms = cfg->lease_ms,
                             .started_at_ms = S.started_at_ms};
    if (gethostname(inst->host, sizeof inst->host) != 0)
        snprintf(inst->host, sizeof inst->host, "localhost");
    inst->host[sizeof inst->host - 1] = '\0';
    snprintf(inst->name, sizeof inst->name, "%.100s:%d", inst->host, cfg->listen_port);
}

/* The one place the schema is created or upgraded, and where what a previous run left
 * running is handed back: before any child exists. */
static int
prepare_database(const struct config *cfg)
{
    char err[1024], where[1024];
    store_instance inst;
    store_start_report rep;
    describe_instance(cfg, &inst);
    store_describe(cfg->db_path, where, sizeof where);
    if (store_start(cfg->db_path, &inst, log_migration, NULL, &rep, err, sizeof err) !=
        STORE_OK) {
        log_error("%s", err);
        return -1;
    }
    if (rep.nrecovered > 0) {  /* their events and counters: the kinds are read back */
        store *st = store_open(cfg->db_path, STORE_DURABLE, 5000, err, sizeof err);
        if (st != NULL) {
            tasklog_released(st, rep.recovered, rep.nrecovered, 0, 0);
            store_close(st);    /* before any fork */
        }
    }
    if (rep.requeued + rep.failed > 0)
        log_warn("%d task(s) were left running by the previous run: %d back to pending, "
                 "%d failed (worker_lost)", rep.requeued + rep.failed, rep.requeued,
                 rep.failed);
    log_info("database %s (schema version %d)", where, rep.version);
    return 0;
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

static int
is_loopback(const char *host)
{
    return strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 ||
           strcmp(host, "::1") == 0;
}

/* ---------------------------------------------------------------- zygotes */

static const char *
role_name(int role)
{
    return role == ZYGOTE_ROLE_HTTP ? "HTTP process" : "worker";
}

/* Forks the zygote that loads `generation`. Its index in S.zy, or -1 (logged). */
static int
start_zygote(int generation)
{
    int z = -1;
    for (int i = 0; i < MAX_ZYGOTES && z < 0; i++)
        if (!S.zy[i].used)
            z = i;
    if (z < 0) {
        log_error("too many zygotes at once; generation %d is not loaded", generation);
        return -1;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        log_error("socketpair (zygote): %s", strerror(errno));
        return -1;
    }
    struct zygote_env env = {
        .cfg = S.cfg, .supervisor = S.pid, .sh = S.sh, .wake = S.wake,
        .listen_fd = S.listen_fd, .notify_rd = S.notify_rd, .notify_wr = S.notify_wr,
        .max_connections = S.max_connections, .started_at_ms = S.started_at_ms,
        .validate_rd = S.validate_rd, .validate_wr = S.validate_wr,
    };
    pid_t pid = fork();
    if (pid < 0) {
        log_error("fork (zygote): %s", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (pid == 0) {
        /* what is the supervisor's alone: its signals, its ends of other zygotes */
        close(sv[0]);
        close(S.sig_fd);
        for (int i = 0; i < MAX_ZYGOTES; i++)
            if (S.zy[i].used && S.zy[i].sock >= 0)
                close(S.zy[i].sock);
        if (S.agent_ctl >= 0)
            close(S.agent_ctl);
        zygote_main(&env, sv[1], generation);
    }
    close(sv[1]);
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    S.zy[z] = (struct zygote){.used = 1, .pid = pid, .sock = sv[0], .generation = generation,
                              .started_ms = clock_mono_ms()};
    log_info("zygote %ld loads the contexts of generation %d", (long)pid, generation);
    return z;
}

/* Asks zygote z to exit after what it was already asked; its answers still come. */
static void
retire_zygote(int z)
{
    struct zygote *y = &S.zy[z];
    if (y->exiting)
        return;
    y->exiting = 1;
    if ((y->sock < 0 || zygote_send(y->sock, ZYGOTE_EXIT, NULL, 0) != 0) && y->pid > 0)
        kill(y->pid, SIGTERM);
}

/* A zygote died or failed while serving (or loading with none serving): another
 * one, later and later while they keep dying young. */
static void
schedule_zygote_restart(int64_t served_ms)
{
    if (served_ms > 60000 || S.zygote_backoff_ms == 0)
        S.zygote_backoff_ms = 100;
    else if ((S.zygote_backoff_ms *= 2) > ZYGOTE_MAX_BACKOFF_MS)
        S.zygote_backoff_ms = ZYGOTE_MAX_BACKOFF_MS;
    S.zygote_restart_at_ms = clock_mono_ms() + S.zygote_backoff_ms;
}

/* Copies a generation's figures where the HTTP process reads them (/v1/stats). */
static void
publish_kinds(const struct zygote_ready *r, int generation)
{
    int n = r->nkinds < 0 ? 0 : r->nkinds > SHARED_MAX_KINDS ? SHARED_MAX_KINDS : r->nkinds;
    for (int i = 0; i < n; i++) {
        struct kind_info *k = &S.sh->kinds[i];
        snprintf(k->name, sizeof k->name, "%.*s", (int)sizeof r->kinds[i].name - 1,
                 r->kinds[i].name);
        atomic_store(&k->ctx_bytes, (long long)r->kinds[i].ctx_bytes);
        atomic_store(&k->generation, generation);
        atomic_store(&k->load_ms, (long long)r->kinds[i].load_ms);
        k->exec = r->kinds[i].exec >= 0;
        atomic_store(&k->available, 1);
    }
    S.sh->nkinds = n;
}

static void reload(void);

/* The loading zygote will not serve: it reported a load error, died, or timed out.
 * At start that ends the service (exit 2); later the running generation goes on. */
static void
load_failed(const char *why)
{
    S.loading = -1;
    if (!S.started) {
        log_error("%s", why);
        S.exit_code = 2;
        return;
    }
    log_error("reload failed, keeping the current contexts and workers (generation %d): %s",
              S.generation, why);
    if (S.serving < 0)
        schedule_zygote_restart(0);     /* none serves: try again later */
    if (S.reload_again) {
        S.reload_again = 0;
        reload();
    }
}

/* A --schedule whose kind no loaded kind has (a plugin's kinds are known only now;
 * config.c checked the others): its name, or NULL. */
static const char *
schedule_kind_missing(const struct zygote_ready *r)
{
    int n = r->nkinds < 0 ? 0 : r->nkinds > SHARED_MAX_KINDS ? SHARED_MAX_KINDS : r->nkinds;
    for (int i = 0; i < S.cfg->nschedules; i++) {
        int found = 0;
        for (int k = 0; k < n && !found; k++)
            found = strncmp(r->kinds[k].name, S.cfg->schedules[i].kind,
                            sizeof r->kinds[k].name) == 0;
        if (!found)
            return S.cfg->schedules[i].name;
    }
    return NULL;
}

static void
on_ready(int z, const struct zygote_ready *r)
{
    struct zygote *y = &S.zy[z];
    int64_t now = clock_mono_ms();
    const char *sched = S.started ? NULL : schedule_kind_missing(r);
    if (sched != NULL) {
        char why[256] = "";
        for (int i = 0; i < S.cfg->nschedules; i++)
            if (strcmp(S.cfg->schedules[i].name, sched) == 0)
                snprintf(why, sizeof why, "--schedule %s: no kind is named '%s'", sched,
                         S.cfg->schedules[i].kind);
        y->failed = 1;
        load_failed(why);
        return;
    }
    y->ready = 1;
    S.loading = -1;
    S.zygote_restart_at_ms = 0;
    S.serving = z;
    S.generation = y->generation;
    publish_kinds(r, y->generation);
    /* every exec kind's zygote is ready, or the loader would not be. The old loader
     * exits once none of its workers is left (retire_idle_zygotes()): an exec kind's
     * children end with their zygote, which ends with its loader */
    S.exec_up = S.cfg->nexec_kinds >= 64 ? ~UINT64_C(0)
                                         : (UINT64_C(1) << S.cfg->nexec_kinds) - 1;
    if (S.started && S.cfg->nexec_kinds > 0 && y->sock >= 0)
        zygote_send(y->sock, ZYGOTE_PUSH_VALIDATORS, NULL, 0);  /* the HTTP process's */
    if (!S.started) {
        S.started = 1;
        S.http.restart_at_ms = now;
        for (int i = 0; i < S.cfg->workers; i++)
            S.workers[i].restart_at_ms = now;
        log_info("warmpool %s ready: %d workers, %d kinds loaded in %lld ms", WARMPOOL_VERSION,
                 S.cfg->workers, S.sh->nkinds, (long long)(now - y->started_ms));
    } else {
        log_info("reload: generation %d loaded in %lld ms; replacing workers one by one",
                 y->generation, (long long)(now - y->started_ms));
    }
    if (S.reload_again) {
        S.reload_again = 0;
        reload();
    }
}

/* SIGHUP: a new zygote loads the next generation; on_ready() switches to it. */
static void
reload(void)
{
    if (S.draining)
        return;
    if (S.loading >= 0) {
        S.reload_again = 1;
        log_info("reload: generation %d is still loading; another reload follows it",
                 S.zy[S.loading].generation);
        return;
    }
    S.zygote_restart_at_ms = 0;         /* this one restarts it, if none serves */
    S.loading = start_zygote(S.generation + 1);
    if (S.loading < 0)
        load_failed("no zygote could be started");
}

/* A zygote that loads for longer than --load-timeout-ms is killed. */
static void
check_load_timeout(void)
{
    if (S.loading < 0)
        return;
    struct zygote *y = &S.zy[S.loading];
    int64_t slack = S.cfg->nexec_kinds > 0 ? LOAD_REPORT_SLACK_MS : 0;
    if (clock_mono_ms() - y->started_ms <= S.cfg->load_timeout_ms + slack)
        return;
    if (y->pid > 0)
        kill(y->pid, SIGKILL);
    y->failed = 1;
    char why[256];
    snprintf(why, sizeof why, "loading the contexts of generation %d took longer than "
             "--load-timeout-ms (%lld ms): zygote %ld killed", y->generation,
             (long long)S.cfg->load_timeout_ms, (long)y->pid);
    load_failed(why);
}

/* ---------------------------------------------------------------- children */

static struct child *
child_of(int role, int slot)
{
    if (role == ZYGOTE_ROLE_HTTP)
        return &S.http;
    if (role == ZYGOTE_ROLE_WORKER && slot >= 0 && slot < S.cfg->workers)
        return &S.workers[slot];
    return NULL;
}

/* A spawn that will not happen (refused, timed out, its zygote gone): try later. */
static void
spawn_given_up(struct child *c, int role, int slot)
{
    c->spawn_seq = 0;
    c->restart_at_ms = clock_mono_ms() + 1000;
    if (role == ZYGOTE_ROLE_WORKER)
        atomic_store(&S.sh->slots[slot].state, SLOT_EMPTY);
}

/* Asks the serving zygote for the HTTP process or the worker of `slot`. */
static void
request_spawn(struct child *c, int role, int slot)
{
    if (role == ZYGOTE_ROLE_WORKER) {
        struct slot *s = &S.sh->slots[slot];
        atomic_store(&s->pid, 0);
        atomic_store(&s->task_id, 0);
        atomic_store(&s->retire, 0);
        atomic_store(&s->tasks_done, 0);    /* per worker process, not per slot */
        atomic_store(&s->child_pid, 0);
        atomic_store(&s->exec_missing, 0);
        atomic_store(&s->state, SLOT_STARTING);
    }
    c->restart_at_ms = 0;
    struct zygote_spawn req = {.role = role, .slot = slot, .seq = ++S.spawn_seq};
    if (zygote_send(S.zy[S.serving].sock, ZYGOTE_SPAWN, &req, sizeof req) != 0) {
        log_error("asking the zygote for a %s: %s", role_name(role), strerror(errno));
        spawn_given_up(c, role, slot);
        return;
    }
    c->spawn_seq = req.seq;
    c->spawn_zygote = S.serving;
    c->spawn_deadline_ms = clock_mono_ms() + SPAWN_TIMEOUT_MS;
}

/* Gives up the spawns asked of zygote z (its socket is at end of file), or, with
 * z < 0, those asked too long ago. */
static void
give_up_spawns(int z)
{
    int64_t now = clock_mono_ms();
    for (int i = -1; i < S.cfg->workers; i++) {
        struct child *c = i < 0 ? &S.http : &S.workers[i];
        int role = i < 0 ? ZYGOTE_ROLE_HTTP : ZYGOTE_ROLE_WORKER;
        if (c->spawn_seq == 0 || (z >= 0 ? c->spawn_zygote != z : now < c->spawn_deadline_ms))
            continue;
        log_warn("the zygote %s before the %s it was asked for started; asking again",
                 z >= 0 ? "went away" : "did not answer", role_name(role));
        spawn_given_up(c, role, i < 0 ? 0 : i);
    }
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

/* A dead worker's hand-back. The supervisor never waits on the database (a server
 * may be slow or out of reach): each try runs in a short-lived child (a "releaser")
 * that opens its own connection, hands the tasks back, tells the waiters and idle
 * workers, and exits 0; any other end is a failed try, retried from the loop with a
 * back-off (issue 8: the database cannot be opened or written, full disk, busy, I/O
 * error, unreachable). Until it works the task stays `running`, owned by a pid that no
 * longer runs anything. */
struct pending_release {
    pid_t pid;                  /* the dead worker */
    int64_t running_id;         /* the task its slot said it was running (0: none) */
    int timed_out;
    char why[96];
    int tries;                  /* tries that failed */
    pid_t releaser;             /* the child trying now; 0: none */
    int64_t next_try_ms;        /* monotonic */
};

#define RELEASE_RETRY_MAX_MS 5000

/* The releaser: hands back worker pid's tasks. Exits 0, or 1 (logged) to be retried. */
static void
releaser_main(pid_t pid, int64_t running_id, int timed_out, const char *why)
    __attribute__((noreturn));

static void
releaser_main(pid_t pid, int64_t running_id, int timed_out, const char *why)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    prctl(PR_SET_NAME, "warmpool-release");
    char err[512], msg[256];
    store *st = store_open(S.cfg->db_path, STORE_DURABLE, 10000, err, sizeof err);
    if (st == NULL) {
        log_error("cannot open the database to hand back worker %ld's task: %s (retrying)",
                  (long)pid, err);
        _exit(1);
    }
    if (timed_out)
        snprintf(msg, sizeof msg, "the task ran past its timeout_ms and its worker was killed");
    else
        snprintf(msg, sizeof msg, "the worker running this task %s", why);
    store_task_ref refs[64];    /* a worker's batch holds up to 16 (worker.c) */
    size_t n = 0;
    /* the tasks it held in a batch but had not started go back as never claimed */
    int rc = store_release_lost(st, (long)pid, running_id, clock_now_ms(),
                                timed_out ? "timeout" : "worker_lost", msg, refs, 64, &n);
    if (rc != STORE_OK) {
        log_error("handing back worker %ld's task: %s (retrying)", (long)pid, store_errmsg(st));
        store_close(st);
        _exit(1);
    }
    tasklog_released(st, refs, n, pid, timed_out);
    store_close(st);
    int requeued = 0;
    for (size_t i = 0; i < n; i++) {
        log_warn("task %" PRId64 " of worker %ld: %s", refs[i].id, (long)pid,
                 refs[i].not_started ? "back to pending (held in a batch, not started)"
                 : refs[i].state == TASK_PENDING ? "back to pending (attempts remain)"
                                                 : "failed");
        requeued += refs[i].state == TASK_PENDING;
        if (task_state_terminal(refs[i].state) &&
            write(S.notify_wr, &refs[i].id, sizeof refs[i].id) != (ssize_t)sizeof refs[i].id)
            log_debug("notify pipe full");
    }
    /* a task handed back is ready now: an idle worker takes it at once, rather than
     * the replacement or the safety net (issue 8) */
    wake_post(S.wake, requeued);
    _exit(0);
}

/* In a child of the supervisor: closes what is the supervisor's alone. */
static void
close_supervisor_fds(void)
{
    close(S.sig_fd);
    for (int i = 0; i < MAX_ZYGOTES; i++)
        if (S.zy[i].used && S.zy[i].sock >= 0)
            close(S.zy[i].sock);
    if (S.agent_ctl >= 0)
        close(S.agent_ctl);
    if (S.listen_fd >= 0)
        close(S.listen_fd);
    if (S.validate_rd >= 0) {
        close(S.validate_rd);
        close(S.validate_wr);
    }
}

/* Starts a try of hand-back r: a releaser child. */
static void
start_release(struct pending_release *r)
{
    /* supervisor_release_fail=N: the first N tries fail as if the open had */
    if (fault_countdown("supervisor_release_fail")) {
        log_error("cannot open the database to hand back worker %ld's task: fault point "
                  "supervisor_release_fail (retrying)", (long)r->pid);
        r->tries++;
        r->next_try_ms = clock_mono_ms() + 100;
        return;
    }
    fflush(NULL);
    pid_t c = fork();
    if (c < 0) {
        log_error("fork (hand-back of worker %ld's task): %s (retrying)", (long)r->pid,
                  strerror(errno));
        r->tries++;
        r->next_try_ms = clock_mono_ms() + 100;
        return;
    }
    if (c == 0) {
        close_supervisor_fds();
        releaser_main(r->pid, r->running_id, r->timed_out, r->why);
    }
    r->releaser = c;
}

/* Queues the hand-back of a dead worker's tasks; retry_releases() starts it at once. */
static void
release_or_queue(pid_t pid, int64_t running_id, int timed_out, const char *why)
{
    struct pending_release *grown =
        realloc(S.releases, (S.nreleases + 1) * sizeof *S.releases);
    if (grown == NULL) {
        log_error("out of memory: worker %ld's task is handed back at the next start",
                  (long)pid);
        return;
    }
    S.releases = grown;
    struct pending_release *r = &S.releases[S.nreleases++];
    *r = (struct pending_release){.pid = pid, .running_id = running_id, .timed_out = timed_out,
                                  .next_try_ms = clock_mono_ms()};
    snprintf(r->why, sizeof r->why, "%s", why);
    start_release(r);
}

/* A releaser ended: done, or to be tried again (100 ms doubling up to
 * RELEASE_RETRY_MAX_MS). 0 when pid is no releaser. */
static int
releaser_died(pid_t pid, int status)
{
    for (size_t i = 0; i < S.nreleases; i++) {
        struct pending_release *r = &S.releases[i];
        if (r->releaser != pid)
            continue;
        r->releaser = 0;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            if (r->tries > 0)
                log_info("worker %ld's task handed back after %d tries", (long)r->pid,
                         r->tries + 1);
            S.releases[i] = S.releases[--S.nreleases];
            return 1;
        }
        r->tries++;
        int64_t delay = 100;
        for (int k = 1; k < r->tries && delay < RELEASE_RETRY_MAX_MS; k++)
            delay *= 2;
        r->next_try_ms =
            clock_mono_ms() + (delay < RELEASE_RETRY_MAX_MS ? delay : RELEASE_RETRY_MAX_MS);
        return 1;
    }
    return 0;
}

/* Starts the tries that are due. */
static void
retry_releases(void)
{
    int64_t now = clock_mono_ms();
    for (size_t i = 0; i < S.nreleases; i++) {
        struct pending_release *r = &S.releases[i];
        if (r->releaser == 0 && now >= r->next_try_ms)
            start_release(r);
    }
}

/* Logs how the HTTP process or a worker died, hands back a dead worker's task and
 * schedules the restart. 0 when pid is neither. */
static int
child_died(pid_t pid, int status)
{
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
        return 1;
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
            log_info("worker %ld retired (%s); forking a fresh one", (long)pid,
                     c->refreshing ? "for a child of an exec kind it lacked"
                                   : "reload or recycling");
        else if (clean)
            log_debug("worker %ld %s", (long)pid, why);
        else
            log_warn("worker %ld %s%s", (long)pid, why,
                     c->timed_out ? " (its task ran past its timeout)" : "");
        if (!S.draining)                /* warmpool_worker_restarts_total */
            metrics_worker_restart(retired ? METRICS_RESTART_RETIRED : c->timed_out
                                   ? METRICS_RESTART_TIMEOUT : METRICS_RESTART_CRASHED);
        release_or_queue(pid, atomic_load(&slot->task_id), c->timed_out, why);
        c->timed_out = 0;
        if (c->refreshing) {
            /* replaced to get an exec kind's child: if it was young, its children may
             * be dying as soon as they start; the next such replacement waits longer */
            int young = clock_mono_ms() - c->started_ms < REFRESH_YOUNG_MS;
            c->refresh_backoff_ms = !young ? 0
                                    : c->refresh_backoff_ms == 0 ? 100
                                    : c->refresh_backoff_ms * 2 > REFRESH_MAX_BACKOFF_MS
                                        ? REFRESH_MAX_BACKOFF_MS : c->refresh_backoff_ms * 2;
            c->refreshing = 0;
        }
        atomic_store(&slot->pid, 0);
        atomic_store(&slot->task_id, 0);
        atomic_store(&slot->state, SLOT_EMPTY);
        if (retired && !S.draining) {
            c->restart_at_ms = clock_mono_ms();     /* at once: it did not crash */
            c->backoff_ms = 0;
        } else if (!S.draining) {
            schedule_restart(c);
        }
        return 1;
    }
    return 0;
}

static void read_zygote(int z);

static void
zygote_died(int z, int status)
{
    struct zygote *y = &S.zy[z];
    /* what a loading zygote said before it died (ZYGOTE_FAILED and its reason) is read
     * first: its death may be seen before its socket (a SIGCHLD read in the same round
     * of signals as the SIGHUP that started it) */
    if (z == S.loading && y->sock >= 0)
        read_zygote(z);
    char why[96];
    describe_exit(status, why, sizeof why);
    pid_t pid = y->pid;
    y->pid = 0;
    if (S.draining || y->exiting || y->failed) {
        log_debug("zygote %ld (generation %d) %s", (long)pid, y->generation, why);
    } else if (z == S.loading) {
        /* died before READY without saying why: a crash or an exit in a load() */
        char msg[256];
        snprintf(msg, sizeof msg, "loading the contexts of generation %d: zygote %ld %s "
                 "before it was ready", y->generation, (long)pid, why);
        y->failed = 1;
        load_failed(msg);
    } else if (z == S.serving) {
        S.serving = -1;
        /* its exec kinds' zygotes died with it (their parent-death signal) */
        S.exec_up = 0;
        for (int i = 0; i < S.sh->nkinds; i++)
            if (S.sh->kinds[i].exec)
                atomic_store(&S.sh->kinds[i].available, 0);
        log_error("the zygote of generation %d (%ld) %s; a new one loads the contexts "
                  "again, and the workers keep running", y->generation, (long)pid, why);
        schedule_zygote_restart(clock_mono_ms() - y->started_ms);
    }
    if (y->sock < 0)
        y->used = 0;
}

/* ZYGOTE_SPAWNED: a child that the serving zygote forked tells us its pid. */
static void
on_spawned(int z, const struct zygote_spawned *rep)
{
    struct child *c = child_of(rep->role, rep->slot);
    pid_t pid = (pid_t)rep->pid;
    if (pid <= 0)
        return;
    if (c == NULL || c->spawn_seq != rep->seq) {
        /* asked for and then given up: nobody expects it */
        log_warn("stopping %s %ld: it was not expected any more", role_name(rep->role),
                 (long)pid);
        kill(pid, SIGKILL);
        return;
    }
    c->spawn_seq = 0;
    c->pid = pid;
    c->started_ms = clock_mono_ms();
    c->generation = S.zy[z].generation;
    if (rep->role == ZYGOTE_ROLE_WORKER) {
        c->born_missing = rep->exec_missing;
        c->refresh_not_before_ms = c->started_ms + c->refresh_backoff_ms;
        if (rep->exec_missing != 0)
            log_debug("worker %ld came without a child of some exec kinds (mask %#llx)",
                      (long)pid, (unsigned long long)rep->exec_missing);
        atomic_store(&S.sh->slots[rep->slot].pid, (int)pid);
        log_debug("worker %ld started in slot %d (generation %d)", (long)pid, rep->slot,
                  c->generation);
    } else {
        log_info("HTTP process %ld started", (long)pid);
    }
    if (S.draining)
        kill(pid, SIGTERM);
    /* It may have died before we knew its pid. A pid in the ring is only this child if
     * no process has it now: the number may be an old orphan's, reused. */
    for (int i = 0; i < DEAD_RING; i++) {
        if (S.dead[i].pid != pid)
            continue;
        S.dead[i].pid = 0;
        if (kill(pid, 0) != 0 && errno == ESRCH)
            child_died(pid, S.dead[i].status);
        break;
    }
}

/* The serving loader's exec kind went down or came up: publish it; when it is up, the
 * workers without its child are replaced (rolling()), and the HTTP process gets a
 * fresh validate child. */
static void
on_exec_state(int z, const struct zygote_exec_state *m)
{
    if (m->kind < 0 || m->kind >= S.cfg->nexec_kinds)
        return;
    uint64_t bit = UINT64_C(1) << m->kind;
    const char *name = S.cfg->exec_kinds[m->kind].name;
    for (int i = 0; i < S.sh->nkinds; i++) {
        struct kind_info *k = &S.sh->kinds[i];
        if (strcmp(k->name, name) != 0)
            continue;
        atomic_store(&k->available, m->up != 0);
        if (m->up) {
            atomic_store(&k->ctx_bytes, (long long)m->ctx_bytes);
            atomic_store(&k->load_ms, (long long)m->load_ms);
        }
    }
    if (!m->up) {
        S.exec_up &= ~bit;
        log_warn("exec kind %s is down: its tasks wait, pending, until its zygote is ready "
                 "again", name);
        return;
    }
    S.exec_up |= bit;
    for (int i = 0; i < S.cfg->workers; i++)
        S.workers[i].born_missing &= ~bit;     /* a new chance for those without one */
    log_info("exec kind %s is up: workers without its child are replaced one at a time",
             name);
    if (S.zy[z].sock >= 0)
        zygote_send(S.zy[z].sock, ZYGOTE_PUSH_VALIDATORS, NULL, 0);
}

static void
on_zygote_message(int z, uint32_t type, const void *payload, int len)
{
    struct zygote *y = &S.zy[z];
    switch (type) {
    case ZYGOTE_READY:
        if (z == S.loading && !y->failed && len >= (int)sizeof(struct zygote_ready))
            on_ready(z, payload);
        break;
    case ZYGOTE_FAILED:
        if (z == S.loading && !y->failed) {
            char why[1100];
            snprintf(why, sizeof why, "%.*s", len < 1024 ? len : 1024, (const char *)payload);
            y->failed = 1;
            load_failed(why);
        }
        break;
    case ZYGOTE_SPAWNED:
        if (len >= (int)sizeof(struct zygote_spawned))
            on_spawned(z, payload);
        break;
    case ZYGOTE_SPAWN_FAILED:
        if (len >= (int)sizeof(struct zygote_spawned)) {
            const struct zygote_spawned *rep = payload;
            struct child *c = child_of(rep->role, rep->slot);
            if (c != NULL && c->spawn_seq == rep->seq) {
                log_error("the zygote could not fork a %s: %s", role_name(rep->role),
                          strerror(rep->err));
                spawn_given_up(c, rep->role, rep->slot);
            }
        }
        break;
    case ZYGOTE_EXEC_STATE:
        if (z == S.serving && len >= (int)sizeof(struct zygote_exec_state))
            on_exec_state(z, payload);
        break;
    default:
        break;                      /* a newer zygote's message: ignored */
    }
}

/* Reads what zygote z sent, up to end of file (then no answer can come any more). */
static void
read_zygote(int z)
{
    struct zygote *y = &S.zy[z];
    while (y->sock >= 0) {
        union {
            struct zygote_ready ready;
            struct zygote_spawned spawned;
            char text[ZYGOTE_MSG_MAX];
        } m;
        uint32_t type = 0;
        int len = zygote_recv(y->sock, &type, &m, sizeof m);
        if (len == -1 && errno == EAGAIN)
            return;
        if (len < 0) {
            close(y->sock);
            y->sock = -1;
            give_up_spawns(z);
            if (y->pid == 0)
                y->used = 0;
            return;
        }
        on_zygote_message(z, type, &m, len);
    }
}

/* ---------------------------------------------------------------- the agent */

/* Forks the agent (service/agent.h) with a fresh control pipe. */
static void
start_agent(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        log_error("pipe (agent): %s", strerror(errno));
        schedule_restart(&S.agent);
        return;
    }
    struct agent_env env = {.cfg = S.cfg, .supervisor = S.pid, .sh = S.sh, .wake = S.wake,
                            .notify_wr = S.notify_wr, .ctl_fd = p[0]};
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        log_error("fork (agent): %s", strerror(errno));
        close(p[0]);
        close(p[1]);
        schedule_restart(&S.agent);
        return;
    }
    if (pid == 0) {
        close(p[1]);
        close_supervisor_fds();
        close(S.notify_rd);
        agent_main(&env);
    }
    close(p[0]);
    S.agent_ctl = p[1];
    S.agent.pid = pid;
    S.agent.started_ms = clock_mono_ms();
    S.agent.restart_at_ms = 0;
    log_debug("agent %ld started", (long)pid);
}

static void
agent_died(int status)
{
    char why[96];
    describe_exit(status, why, sizeof why);
    pid_t pid = S.agent.pid;
    S.agent.pid = 0;
    if (S.agent_ctl >= 0)
        close(S.agent_ctl);
    S.agent_ctl = -1;
    if (S.agent_stopping) {
        log_debug("agent %ld %s", (long)pid, why);
        return;
    }
    /* also during a drain: the lease is renewed until the last task is recorded */
    log_error("agent %ld %s; restarting it", (long)pid, why);
    schedule_restart(&S.agent);
}

/* The drain's last step, when no worker is left: the agent leaves the store (its
 * lease no longer matters) and exits. */
static void
stop_agent(void)
{
    S.agent_stopping = 1;
    S.agent_stop_deadline_ms = clock_mono_ms() + 5000;
    char c = AGENT_STOP;
    if (S.agent.pid > 0 && (S.agent_ctl < 0 || write(S.agent_ctl, &c, 1) != 1))
        kill(S.agent.pid, SIGKILL);
}

/* At exit after a start that failed: the agent leaves too, within a moment. */
static void
finish_agent(void)
{
    if (S.agent.pid <= 0)
        return;
    if (!S.agent_stopping)
        stop_agent();
    int64_t until = clock_mono_ms() + 2000;
    while (clock_mono_ms() < until && waitpid(S.agent.pid, NULL, WNOHANG) == 0)
        clock_sleep_ms(10);
    kill(S.agent.pid, SIGKILL);
    S.agent.pid = 0;
}

static void
reap(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        int z = -1;
        for (int i = 0; i < MAX_ZYGOTES && z < 0; i++)
            if (S.zy[i].used && S.zy[i].pid == pid)
                z = i;
        if (z >= 0) {
            zygote_died(z, status);
            continue;
        }
        if (pid == S.agent.pid) {
            agent_died(status);
            continue;
        }
        if (releaser_died(pid, status))
            continue;
        if (child_died(pid, status))
            continue;
        /* not known (yet): a child whose ZYGOTE_SPAWNED is still unread, or the orphan
         * of a child's own child (we are their subreaper) */
        for (int i = 0; i < DEAD_RING; i++)
            if (S.dead[i].pid == pid)
                S.dead[i].pid = 0;      /* an older death of the same number */
        S.dead[S.dead_next].pid = pid;
        S.dead[S.dead_next].status = status;
        S.dead_next = (S.dead_next + 1) % DEAD_RING;
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
        if (atomic_load(&slot->deadline_ms) >= now)
            continue;
        /* a compare-and-set against the worker's BUSY -> RECORDING (slots.h): if the
         * task ended meanwhile, the worker won and nothing is killed */
        int busy = SLOT_BUSY;
        if (!atomic_compare_exchange_strong(&slot->state, &busy, SLOT_KILLED))
            continue;
        /* An exec kind's task: kill its child, not the worker, which records `timeout`
         * and goes on. The worker wrote child_pid before BUSY and clears it only after
         * its own compare-and-set, which has now failed: the pid is this task's child.
         * (It may have died a moment ago and been reaped by its zygote; its number could
         * only be another process's after a wrap of the whole pid space meanwhile.) */
        pid_t child = (pid_t)atomic_load(&slot->child_pid);
        if (child > 0) {
            log_warn("task %lld ran past its timeout: killing its exec child %ld (worker %ld "
                     "stays)", (long long)atomic_load(&slot->task_id), (long)child,
                     (long)c->pid);
            kill(child, SIGKILL);
            continue;
        }
        log_warn("task %lld ran past its timeout: killing worker %ld",
                 (long long)atomic_load(&slot->task_id), (long)c->pid);
        c->timed_out = 1;
        kill(c->pid, SIGKILL);
    }
}

/* Does worker i need replacing: it is of an older generation, or it lacks a usable
 * child of an exec kind whose zygote is up (see struct child)? */
static int
needs_replacing(int i, int64_t now)
{
    const struct child *c = &S.workers[i];
    if (c->pid == 0)
        return 0;
    if (c->generation != S.generation)
        return 1;
    uint64_t missing = atomic_load(&S.sh->slots[i].exec_missing);
    return (missing & ~c->born_missing & S.exec_up) != 0 && now >= c->refresh_not_before_ms;
}

/* Advances the rolling replacement: one worker at a time that needs replacing (an older
 * generation's, or one without an exec kind's child it could have) is asked to exit
 * after its current task (an idle one first); its replacement comes from the serving
 * zygote, and once it is ready the next one goes. */
static void
rolling(void)
{
    if (S.serving < 0)
        return;
    if (S.retiring >= 0) {
        struct child *c = &S.workers[S.retiring];
        int state = atomic_load(&S.sh->slots[S.retiring].state);
        if (c->pid == 0 || c->pid == S.retiring_pid || state == SLOT_STARTING)
            return;                     /* still going, or its replacement starting */
        S.retiring = -1;
    }
    int64_t now = clock_mono_ms();
    int pick = -1;
    for (int i = 0; i < S.cfg->workers; i++) {
        if (!needs_replacing(i, now))
            continue;
        if (pick < 0 || atomic_load(&S.sh->slots[i].state) == SLOT_IDLE)
            pick = i;
        if (atomic_load(&S.sh->slots[i].state) == SLOT_IDLE)
            break;
    }
    if (pick < 0)
        return;
    struct child *c = &S.workers[pick];
    S.retiring = pick;
    S.retiring_pid = c->pid;
    c->refreshing = c->generation == S.generation;
    atomic_store(&S.sh->slots[pick].retire, 1);
    kill(c->pid, SIGUSR1);              /* wakes it if it is idle */
}

/* A loader that no longer serves (a newer one does, or the service drains) exits once
 * none of its workers runs: exec kinds' children end with their zygotes, which end with
 * their loader, and a C kind's context costs nothing more while its workers hold it. */
static void
retire_idle_zygotes(void)
{
    for (int z = 0; z < MAX_ZYGOTES; z++) {
        struct zygote *y = &S.zy[z];
        if (!y->used || !y->ready || y->exiting || (z == S.serving && !S.draining))
            continue;
        int busy = S.http.spawn_seq != 0 && S.http.spawn_zygote == z;
        for (int i = 0; i < S.cfg->workers && !busy; i++) {
            const struct child *c = &S.workers[i];
            busy = (c->pid != 0 && c->generation == y->generation) ||
                   (c->spawn_seq != 0 && c->spawn_zygote == z);
        }
        if (!busy) {
            log_debug("zygote %ld (generation %d): none of its workers is left; it exits",
                      (long)y->pid, y->generation);
            retire_zygote(z);
        }
    }
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
    /* the HTTP process shuts the socket down once it has quiesced (so that new
     * connections are refused, not queued and reset); with none running, do it here */
    if (S.http.pid == 0)
        shutdown(S.listen_fd, SHUT_RD);
    close(S.listen_fd);
    S.listen_fd = -1;
    S.drain_deadline_ms = clock_mono_ms() + S.cfg->grace_ms;
    /* a loading zygote is stopped (SIGTERM ends it in the middle of a load); a ready one
     * exits once its workers have (retire_idle_zygotes()): its exec kinds' children run
     * their tasks in hand to the end. A child one of them forked meanwhile is told to
     * stop when its ZYGOTE_SPAWNED arrives */
    for (int i = 0; i < MAX_ZYGOTES; i++) {
        if (!S.zy[i].used || S.zy[i].ready)
            continue;
        retire_zygote(i);
        if (S.zy[i].pid > 0)
            kill(S.zy[i].pid, SIGTERM);
    }
    if (S.http.pid > 0)
        kill(S.http.pid, SIGTERM);
    for (int i = 0; i < S.cfg->workers; i++)
        if (S.workers[i].pid > 0)
            kill(S.workers[i].pid, SIGTERM);
}

/* Processes (and spawns that may still become one) the drain waits for. */
static int
children_alive(void)
{
    int n = S.http.pid > 0 || S.http.spawn_seq != 0;
    for (int i = 0; i < S.cfg->workers; i++)
        n += S.workers[i].pid > 0 || S.workers[i].spawn_seq != 0;
    for (int i = 0; i < MAX_ZYGOTES; i++)
        n += S.zy[i].used && S.zy[i].pid > 0;
    return n;
}

static void
kill_stragglers(void)
{
    log_warn("grace period over: killing what still runs; its tasks go back to pending, "
             "or fail if out of attempts");
    for (int i = 0; i < S.cfg->workers; i++) {
        if (S.workers[i].pid > 0)
            kill(S.workers[i].pid, SIGKILL);
        S.workers[i].spawn_seq = 0;
    }
    if (S.http.pid > 0)
        kill(S.http.pid, SIGKILL);
    S.http.spawn_seq = 0;
    for (int i = 0; i < MAX_ZYGOTES; i++)
        if (S.zy[i].used && S.zy[i].pid > 0)
            kill(S.zy[i].pid, SIGKILL);
    S.killed_stragglers = 1;
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
            if (S.started) {
                start_drain((int)si.ssi_signo);
            } else {
                log_info("%s before the contexts were loaded: stopping", strsignal((int)si.ssi_signo));
                S.exit_code = 0;        /* nothing runs yet: nothing to drain */
            }
            break;
        case SIGHUP:
            reload();
            /* fault point reload_signals_pause_ms: the new zygote's death then comes in
             * this same loop, before its socket is read (zygote_died) */
            fault_pause("reload_signals_pause_ms");
            break;
        default:
            break;
        }
    }
}

/* ---------------------------------------------------------------- the loop */

/* Runs until the drain is over (0) or the first generation cannot load (2). */
static int
supervise(void)
{
    for (;;) {
        if (S.exit_code >= 0)
            return S.exit_code;
        int64_t now = clock_mono_ms();
        /* a sign of life for the agent's heartbeat (agent.h) */
        atomic_store(&S.sh->supervisor_tick_ms, now);
        if (S.agent.pid == 0 && !S.agent_stopping && S.agent.restart_at_ms != 0 &&
            now >= S.agent.restart_at_ms)
            start_agent();
        if (!S.draining) {
            if (S.serving >= 0 && S.zy[S.serving].sock >= 0) {
                if (S.http.pid == 0 && S.http.spawn_seq == 0 && S.http.restart_at_ms != 0 &&
                    now >= S.http.restart_at_ms)
                    request_spawn(&S.http, ZYGOTE_ROLE_HTTP, 0);
                for (int i = 0; i < S.cfg->workers; i++) {
                    struct child *c = &S.workers[i];
                    if (c->pid == 0 && c->spawn_seq == 0 && c->restart_at_ms != 0 &&
                        now >= c->restart_at_ms)
                        request_spawn(c, ZYGOTE_ROLE_WORKER, i);
                }
                rolling();
            } else if (S.loading < 0 && S.zygote_restart_at_ms != 0 &&
                       now >= S.zygote_restart_at_ms) {
                S.zygote_restart_at_ms = 0;
                reload();
            }
            enforce_timeouts();
            check_load_timeout();
            give_up_spawns(-1);
            retire_idle_zygotes();
        } else {
            retire_idle_zygotes();
            /* a hand-back that keeps failing gets until the end of the grace period;
             * what is still `running` after that is handed back at the next start (or,
             * with other instances, after the lease). Then the agent leaves the store */
            if (!S.agent_stopping && children_alive() == 0 &&
                (S.nreleases == 0 || now >= S.drain_deadline_ms)) {
                if (S.nreleases > 0)
                    log_warn("%zu dead worker(s)' tasks could not be handed back; the next "
                             "start hands them back", S.nreleases);
                stop_agent();
            }
            if (S.agent_stopping && (S.agent.pid == 0 || now >= S.agent_stop_deadline_ms))
                return 0;
            if (!S.killed_stragglers && now >= S.drain_deadline_ms)
                kill_stragglers();
        }
        retry_releases();
        int timeout = TICK_MS;
        if (S.draining && !S.killed_stragglers && S.drain_deadline_ms - now < timeout)
            timeout = (int)(S.drain_deadline_ms - now) > 0 ? (int)(S.drain_deadline_ms - now) : 0;
        struct pollfd p[1 + MAX_ZYGOTES];
        int zof[1 + MAX_ZYGOTES], np = 1;
        p[0] = (struct pollfd){.fd = S.sig_fd, .events = POLLIN};
        for (int i = 0; i < MAX_ZYGOTES; i++) {
            if (S.zy[i].used && S.zy[i].sock >= 0) {
                zof[np] = i;
                p[np++] = (struct pollfd){.fd = S.zy[i].sock, .events = POLLIN};
            }
        }
        if (poll(p, (nfds_t)np, timeout) <= 0)
            continue;
        /* the zygotes' messages first: a child's death is then matched to its pid */
        for (int i = 1; i < np; i++)
            if (p[i].revents != 0)
                read_zygote(zof[i]);
        if (p[0].revents & POLLIN)
            handle_signals();
    }
}

int
supervisor_run(const struct config *cfg)
{
    memset(&S, 0, sizeof S);
    S.cfg = cfg;
    S.pid = getpid();
    S.serving = S.loading = S.retiring = S.exit_code = -1;
    S.listen_fd = S.sig_fd = S.agent_ctl = S.validate_rd = S.validate_wr = -1;
    S.started_at_ms = clock_now_ms();
    log_set_role("supervisor");

    /* signals first, so that none is lost between fork and the first poll */
    sigemptyset(&S.sigs);
    sigaddset(&S.sigs, SIGCHLD);
    sigaddset(&S.sigs, SIGTERM);
    sigaddset(&S.sigs, SIGINT);
    sigaddset(&S.sigs, SIGHUP);
    sigaddset(&S.sigs, SIGUSR1);        /* a worker lost an exec kind's child: the loop
                                         * runs at once (rolling()) */
    sigprocmask(SIG_BLOCK, &S.sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    S.sig_fd = signalfd(-1, &S.sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    /* the HTTP process and the workers are forked by a zygote and reparented here */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
        log_error("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
        return 1;
    }

    /* the counters of /metrics and the events of /v1/events, before the first change
     * of a task's state (start-up recovery) and before any fork */
    if (metrics_create(cfg->workers) != 0 ||
        events_create(clock_now_ms(), EVENTS_RECORDS) != 0) {
        log_error("creating the shared metrics and event ring: %s", strerror(errno));
        return 1;
    }
    if (S.sig_fd < 0 || prepare_database(cfg) != 0)
        return 1;
    S.listen_fd = open_listener(cfg);
    if (S.listen_fd < 0)
        return 1;
    S.max_connections = connection_budget(cfg);
    if (!is_loopback(cfg->listen_host) && cfg->api_token[0] == '\0')
        log_warn("listening on %s without --api-token: anyone who can reach this port can "
                 "read and submit tasks", cfg->listen_host);
    int pipefd[2];
    S.sh = slots_create(cfg->workers);
    S.wake = wake_create(cfg->workers);
    S.workers = calloc((size_t)cfg->workers, sizeof *S.workers);
    if (S.sh == NULL || S.wake == NULL || S.workers == NULL ||
        pipe2(pipefd, O_NONBLOCK) != 0) {
        log_error("creating the shared table, eventfd or pipe: %s", strerror(errno));
        return 1;
    }
    S.notify_rd = pipefd[0];
    S.notify_wr = pipefd[1];
    if (cfg->nexec_kinds > 0) {
        int vp[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, vp) != 0) {
            log_error("socketpair (validate children): %s", strerror(errno));
            return 1;
        }
        S.validate_rd = vp[0];
        S.validate_wr = vp[1];
    }
    fcntl(S.notify_wr, F_SETPIPE_SZ, 1 << 20);     /* room for 131072 ids; best effort */

    /* the lease was renewed by the registration: it holds from now on */
    atomic_store(&S.sh->supervisor_tick_ms, clock_mono_ms());
    atomic_store(&S.sh->lease_until_ms, clock_mono_ms() + cfg->lease_ms -
                                            store_heartbeat_every_ms(cfg->lease_ms));
    atomic_store(&S.sh->instances_live, 1);
    start_agent();
    S.loading = start_zygote(1);
    int rc = S.loading < 0 ? 1 : supervise();
    finish_agent();
    for (size_t i = 0; i < S.nreleases; i++)
        if (S.releases[i].releaser > 0)
            kill(S.releases[i].releaser, SIGKILL);

    for (int i = 0; i < MAX_ZYGOTES; i++) {
        if (S.zy[i].used && S.zy[i].pid > 0) {
            kill(S.zy[i].pid, SIGKILL);         /* only after a failed start */
            waitpid(S.zy[i].pid, NULL, 0);      /* a ready one too (--schedule's kind check) */
        }
        if (S.zy[i].used && S.zy[i].sock >= 0)
            close(S.zy[i].sock);
    }
    slots_destroy(S.sh);
    events_destroy();
    metrics_destroy();
    free(S.workers);
    free(S.releases);
    wake_destroy(S.wake);
    close(S.notify_rd);
    close(S.notify_wr);
    if (S.validate_rd >= 0) {
        close(S.validate_rd);
        close(S.validate_wr);
    }
    if (S.listen_fd >= 0)
        close(S.listen_fd);
    close(S.sig_fd);
    if (S.agent_ctl >= 0)
        close(S.agent_ctl);
    store_instance_end();
    if (rc == 0)
        log_info("stopped");
    return rc;
}
