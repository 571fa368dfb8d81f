/* Integration-test harness for warmpool: see harness.h. */
#include "harness.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

extern char **environ;

/* When the tests themselves are built with AddressSanitizer, a failed cmocka
 * assertion longjmps past frees: leak reports of the test process are noise.
 * (The server's own ASan options are untouched.) */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "detect_leaks=0"; }

#define WP_FAIL(...) fail_msg(__VA_ARGS__)
#define WP_CHECK(cond, ...)          \
    do {                             \
        if (!(cond)) WP_FAIL(__VA_ARGS__); \
    } while (0)

/* ------------------------------------------------------------------ misc */

long long wp_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long wp_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void wp_sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

char *wp_fmt(const char *fmt, ...) {
    va_list ap;
    char *out = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&out, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && out != NULL);
    return out;
}

char *wp_dump(const json_t *j) {
    if (!j) return strdup("(null)");
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    return s ? s : strdup("(unprintable)");
}

const char *wp_binary_path(void) {
    const char *p = getenv("WARMPOOL_BIN");
    if (!p || !*p) {
        fprintf(stderr, "WARMPOOL_BIN is not set: it must name the warmpool binary\n");
        fail();
    }
    return p;
}

void wp_make_temp_dir(char *buf, size_t len) {
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) tmp = "/tmp";
    int n = snprintf(buf, len, "%s/warmpool-it-XXXXXX", tmp);
    assert_true(n > 0 && (size_t)n < len);
    WP_CHECK(mkdtemp(buf) != NULL, "mkdtemp(%s): %s", buf, strerror(errno));
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void wp_remove_tree(const char *path) {
    if (!path || !*path || strcmp(path, "/") == 0) return;
    nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int wp_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    WP_CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0, "bind: %s", strerror(errno));
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    int port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static char *read_file_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return NULL;
    }
    for (;;) {
        if (cap - n < 4096) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) break;
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        if (r == 0) break;
        n += r;
    }
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* ---------------------------------------------------------- /proc helpers */

/* Fields of /proc/PID/stat after the comm: state and ppid. */
static bool proc_stat(pid_t pid, char *state, pid_t *ppid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    char *txt = read_file_all(path);
    if (!txt) return false;
    char *rp = strrchr(txt, ')');
    bool ok = false;
    if (rp) {
        char st = 0;
        int pp = 0;
        if (sscanf(rp + 1, " %c %d", &st, &pp) == 2) {
            if (state) *state = st;
            if (ppid) *ppid = pp;
            ok = true;
        }
    }
    free(txt);
    return ok;
}

pid_t wp_ppid_of(pid_t pid) {
    pid_t pp = -1;
    if (!proc_stat(pid, NULL, &pp)) return -1;
    return pp;
}

bool wp_pid_alive(pid_t pid) {
    char st = 0;
    if (pid <= 0) return false;
    if (!proc_stat(pid, &st, NULL)) return false;
    return st != 'Z' && st != 'X' && st != 'x';
}

int wp_children_of(pid_t parent, pid_t *out, int max) {
    DIR *d = opendir("/proc");
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        pid_t pid = (pid_t)atoi(e->d_name);
        pid_t pp = -1;
        char st = 0;
        if (!proc_stat(pid, &st, &pp)) continue;
        if (pp == parent && n < max) out[n++] = pid;
    }
    closedir(d);
    return n;
}

int wp_children_named(const wp_server *s, const char *comm, pid_t *out, int max) {
    pid_t kids[256];
    int n = wp_children_of(s->pid, kids, 256), k = 0;
    for (int i = 0; i < n; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/comm", (int)kids[i]);
        char *c = read_file_all(path);
        if (c == NULL) continue;
        c[strcspn(c, "\n")] = '\0';
        if (strcmp(c, comm) == 0 && wp_pid_alive(kids[i]) && k < max) out[k++] = kids[i];
        free(c);
    }
    return k;
}

/* Whether every thread of pid has exited. A killed multi-threaded process shows
 * its leader as a zombie while its other threads still run and hold its
 * descriptors (and so any lock): count it gone only when the leader is all that
 * is left of it. */
static bool pid_fully_gone(pid_t pid) {
    char st = 0;
    if (!proc_stat(pid, &st, NULL)) return true;
    if (st != 'Z' && st != 'X' && st != 'x') return false;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d) return true;
    int tasks = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (isdigit((unsigned char)e->d_name[0])) tasks++;
    closedir(d);
    return tasks <= 1;
}

bool wp_wait_pids_gone(const pid_t *pids, int n, int timeout_ms) {
    long long deadline = wp_now_ms() + timeout_ms;
    for (;;) {
        wp_reap_orphans();
        bool any = false;
        for (int i = 0; i < n; i++)
            if (!pid_fully_gone(pids[i])) any = true;
        if (!any) return true;
        if (wp_now_ms() > deadline) return false;
        wp_sleep_ms(20);
    }
}

/* ------------------------------------------------------------- backends */

bool wp_pg_mode(void) {
    const char *b = getenv("WARMPOOL_IT_BACKEND");
    return b != NULL && strcmp(b, "postgres") == 0;
}

const char *wp_pg_admin(void) {
    const char *u = getenv("WARMPOOL_IT_PG");
    return u != NULL && u[0] != '\0' ? u : NULL;
}

/* The admin URI with its database replaced by name. */
static void pg_uri_for(const char *name, char *out, size_t cap) {
    const char *a = wp_pg_admin();
    const char *q = strchr(a, '?');
    size_t end = q != NULL ? (size_t)(q - a) : strlen(a);
    size_t slash = end;
    while (slash > 0 && a[slash - 1] != '/') slash--;
    snprintf(out, cap, "%.*s%s%s", (int)slash, a, name, q != NULL ? q : "");
}

void wp_pg_sql(const char *uri, const char *sql, char *out, size_t cap) {
    PGconn *c = PQconnectdb(uri != NULL ? uri : wp_pg_admin());
    if (PQstatus(c) != CONNECTION_OK) {
        char m[512];
        snprintf(m, sizeof m, "%s", PQerrorMessage(c));
        PQfinish(c);
        fail_msg("harness: connecting to PostgreSQL: %s", m);
    }
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char m[512];
        snprintf(m, sizeof m, "%s", PQresultErrorMessage(r));
        PQclear(r);
        PQfinish(c);
        fail_msg("harness: %s: %s", sql, m);
    }
    if (out != NULL && cap > 0)
        snprintf(out, cap, "%s",
                 st == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0 ? PQgetvalue(r, 0, 0)
                                                                              : "");
    PQclear(r);
    PQfinish(c);
}

/* Databases made during the current test: dropped at its teardown (a directory a test
 * manages itself may outlive every server that used it). */
#define WP_MAX_PG_DBS 64
static char g_pg_dbs[WP_MAX_PG_DBS][64];
static bool g_in_test;          /* between wp_test_begin and wp_test_teardown */
static int g_npg_dbs;

void wp_pg_create(char *uri, size_t cap, char *name, size_t name_cap) {
    static unsigned counter;
    snprintf(name, name_cap, "wpit_%ld_%u_%lld", (long)getpid(), ++counter,
             wp_wall_ms() % 100000);
    char sql[160];
    snprintf(sql, sizeof sql, "CREATE DATABASE %.63s", name);
    wp_pg_sql(NULL, sql, NULL, 0);
    pg_uri_for(name, uri, cap);
    /* a test's own: dropped at its end (a group's server drops its own when freed) */
    if (g_in_test && g_npg_dbs < WP_MAX_PG_DBS) snprintf(g_pg_dbs[g_npg_dbs++], 64, "%s", name);
}

void wp_pg_drop(const char *name) {
    if (name == NULL || name[0] == '\0' || wp_pg_admin() == NULL) return;
    PGconn *c = PQconnectdb(wp_pg_admin());
    if (PQstatus(c) == CONNECTION_OK) {
        char sql[160];
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %.63s WITH (FORCE)", name);
        PQclear(PQexec(c, sql));
    }
    PQfinish(c);
}

/* The database of a server's directory: made by the first server started on it, its URI
 * kept in DIR/pg-db-uri for a server restarted on the same directory. */
static void pg_db_of_dir(wp_server *s) {
    char path[600];
    snprintf(path, sizeof path, "%s/pg-db-uri", s->dir);
    FILE *f = fopen(path, "r");
    if (f != NULL) {
        if (fgets(s->db, sizeof s->db, f) == NULL) s->db[0] = '\0';
        fclose(f);
        s->db[strcspn(s->db, "\n")] = '\0';
        if (s->db[0] != '\0') return;
    }
    wp_pg_create(s->db, sizeof s->db, s->pg_name, sizeof s->pg_name);
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "%s\n", s->db);
    fclose(f);
}

/* ---------------------------------------------------------------- registry */

#define WP_MAX_SERVERS 64
static wp_server *g_servers[WP_MAX_SERVERS];
static bool g_test_finished;
static const char *g_test_name = "";
static int g_log_counter;

static void reg_add(wp_server *s) {
    for (int i = 0; i < WP_MAX_SERVERS; i++)
        if (!g_servers[i]) {
            g_servers[i] = s;
            return;
        }
    fprintf(stderr, "harness: too many servers\n");
    fail();
}

static void reg_del(wp_server *s) {
    for (int i = 0; i < WP_MAX_SERVERS; i++)
        if (g_servers[i] == s) g_servers[i] = NULL;
}

static bool is_registered_live_pid(pid_t pid) {
    for (int i = 0; i < WP_MAX_SERVERS; i++)
        if (g_servers[i] && !g_servers[i]->reaped && g_servers[i]->pid == pid) return true;
    return false;
}

void wp_reap_orphans(void) {
    pid_t kids[256];
    int n = wp_children_of(getpid(), kids, 256);
    for (int i = 0; i < n; i++) {
        if (is_registered_live_pid(kids[i])) continue;
        int st;
        waitpid(kids[i], &st, WNOHANG);
    }
}

/* Kill children of this process that are not live registered servers (a
 * server's orphans reparented to us as subreaper). */
static void kill_strays(void) {
    pid_t kids[256];
    int n = wp_children_of(getpid(), kids, 256);
    for (int i = 0; i < n; i++) {
        if (is_registered_live_pid(kids[i])) continue;
        if (wp_pid_alive(kids[i])) {
            fprintf(stderr, "harness: killing stray process %d\n", (int)kids[i]);
            kill(kids[i], SIGKILL);
        }
        int st;
        waitpid(kids[i], &st, 0);
    }
}

void wp_harness_init(void) {
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    curl_global_init(CURL_GLOBAL_ALL);
    /* Orphans of a killed server become our children so that we can reap and
     * kill them: nothing is left behind. */
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    /* WARMPOOL_IT_FILTER=test_name (wildcards * and ?) runs only the matching tests */
    const char *filter = getenv("WARMPOOL_IT_FILTER");
    if (filter && *filter) cmocka_set_test_filter(filter);
    if (wp_pg_mode() && wp_pg_admin() == NULL) {
        const char *req = getenv("WARMPOOL_IT_PG_REQUIRED");
        if (req != NULL && strcmp(req, "1") == 0) {
            fprintf(stderr, "WARMPOOL_IT_BACKEND=postgres without WARMPOOL_IT_PG\n");
            exit(1);
        }
        printf("skipped: WARMPOOL_IT_BACKEND=postgres but no cluster (WARMPOOL_IT_PG)\n");
        exit(77);
    }
}

void wp_test_begin(const char *name) {
    g_in_test = true;
    g_test_finished = false;
    g_test_name = name;
}

void wp_test_end(void) { g_test_finished = true; }

int wp_test_teardown(void **state) {
    (void)state;
    if (!g_test_finished) {
        fprintf(stderr, "==== %s failed; server logs follow ====\n", g_test_name);
        for (int i = 0; i < WP_MAX_SERVERS; i++)
            if (g_servers[i]) wp_server_dump_log(g_servers[i], 16384);
    }
    for (int i = 0; i < WP_MAX_SERVERS; i++) {
        wp_server *s = g_servers[i];
        if (s && s->test_scoped && !s->reaped) wp_server_stop(s, 15000, NULL);
    }
    for (int i = 0; i < WP_MAX_SERVERS; i++) {
        wp_server *s = g_servers[i];
        if (s && s->test_scoped) wp_server_free(s);
    }
    kill_strays();
    for (int i = 0; i < g_npg_dbs && !getenv("WARMPOOL_IT_KEEP"); i++) wp_pg_drop(g_pg_dbs[i]);
    g_npg_dbs = 0;
    g_in_test = false;
    return 0;
}

/* ---------------------------------------------------------------- servers */

static char **build_env(const char *const *extra) {
    size_t n = 0, m = 0;
    while (environ[n]) n++;
    if (extra)
        while (extra[m]) m++;
    char **env = calloc(n + m + 1, sizeof *env);
    assert_non_null(env);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        /* A WARMPOOL_* variable of the caller's shell must not leak in. */
        if (strncmp(environ[i], "WARMPOOL_", 9) == 0) continue;
        env[k++] = environ[i];
    }
    for (size_t i = 0; i < m; i++) env[k++] = (char *)extra[i];
    env[k] = NULL;
    return env;
}

static void child_exec(const char *log_path, char **argv, char **envp, long nofile) {
    setpgid(0, 0);
    if (nofile > 0) {
        struct rlimit rl = {(rlim_t)nofile, (rlim_t)nofile};
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            dprintf(2, "harness: setrlimit(RLIMIT_NOFILE, %ld): %s\n", nofile, strerror(errno));
            _exit(127);
        }
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0) dup2(null, 0);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
    }
    execve(argv[0], argv, envp);
    dprintf(2, "harness: execve(%s): %s\n", argv[0], strerror(errno));
    _exit(127);
}

static bool try_wait(wp_server *s, int *status) {
    if (s->reaped) {
        if (status) *status = s->exit_status;
        return true;
    }
    int st;
    pid_t r = waitpid(s->pid, &st, WNOHANG);
    if (r == s->pid) {
        s->reaped = true;
        s->exit_status = st;
        if (status) *status = st;
        return true;
    }
    return false;
}

static bool probe_ok(const wp_server *s, const char *path) {
    wp_req q = {.method = "GET", .path = path, .timeout_ms = 2000};
    wp_resp r;
    bool ok = wp_http_nc(s, &q, &r) && r.status == 200;
    wp_resp_free(&r);
    return ok;
}

static char *describe_status(int st) {
    if (WIFEXITED(st)) return wp_fmt("exit code %d", WEXITSTATUS(st));
    if (WIFSIGNALED(st)) return wp_fmt("signal %d", WTERMSIG(st));
    return wp_fmt("raw status %d", st);
}

wp_server *wp_server_start(const wp_opts *o) {
    static const wp_opts dflt;
    if (!o) o = &dflt;
    wp_server *s = calloc(1, sizeof *s);
    assert_non_null(s);
    if (o->dir) {
        snprintf(s->dir, sizeof s->dir, "%s", o->dir);
        s->owns_dir = false;
    } else {
        wp_make_temp_dir(s->dir, sizeof s->dir);
        s->owns_dir = true;
    }
    if (o->db)
        snprintf(s->db, sizeof s->db, "%s", o->db);
    else if (wp_pg_mode())
        pg_db_of_dir(s);
    else
        snprintf(s->db, sizeof s->db, "%s/warmpool.db", s->dir);
    s->port = o->port ? o->port : wp_free_port();
    snprintf(s->base_url, sizeof s->base_url, "http://127.0.0.1:%d", s->port);
    snprintf(s->log_path, sizeof s->log_path, "%s/server-%d-%d.log", s->dir,
             ++g_log_counter, s->port);
    s->test_scoped = g_in_test;

    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", s->port);
    const char *argv[128];
    int k = 0;
    argv[k++] = wp_binary_path();
    if (!o->no_listen_flag) {
        argv[k++] = "--listen";
        argv[k++] = listen;
    }
    if (!o->no_db_flag) {
        argv[k++] = "--db";
        argv[k++] = s->db;
    }
    if (o->args)
        for (int i = 0; o->args[i] && k < 126; i++) argv[k++] = o->args[i];
    argv[k] = NULL;

    char **envp = build_env(o->env);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) child_exec(s->log_path, (char **)argv, envp, o->nofile);
    free(envp);
    s->pid = pid;
    reg_add(s);

    double to = o->ready_timeout_s > 0 ? o->ready_timeout_s : 20.0;
    long long deadline = wp_now_ms() + (long long)(to * 1000);
    for (;;) {
        int st;
        if (try_wait(s, &st)) {
            wp_server_dump_log(s, 0);
            char *d = describe_status(st);
            WP_FAIL("server (pid %d, port %d) exited during start-up: %s", (int)pid, s->port, d);
        }
        if (probe_ok(s, "/healthz") && probe_ok(s, "/readyz")) break;
        if (wp_now_ms() > deadline) {
            wp_server_dump_log(s, 0);
            WP_FAIL("server (pid %d, port %d) not ready (healthz+readyz 200) within %.0f s",
                    (int)pid, s->port, to);
        }
        wp_sleep_ms(25);
    }
    return s;
}

wp_server *wp_server_start_args(const char *first, ...) {
    const char *args[64];
    int n = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && n < 63; a = va_arg(ap, const char *)) args[n++] = a;
    va_end(ap);
    args[n] = NULL;
    wp_opts o = {.args = args};
    return wp_server_start(&o);
}

bool wp_server_wait_exit(wp_server *s, int timeout_ms, int *status) {
    long long deadline = wp_now_ms() + timeout_ms;
    for (;;) {
        if (try_wait(s, status)) return true;
        if (wp_now_ms() > deadline) return false;
        wp_sleep_ms(10);
    }
}

int wp_server_stop(wp_server *s, int timeout_ms, long *elapsed_ms) {
    long long t0 = wp_now_ms();
    int st = 0;
    if (!s->reaped) {
        kill(s->pid, SIGTERM);
        if (!wp_server_wait_exit(s, timeout_ms, &st)) {
            fprintf(stderr, "harness: server %d did not exit within %d ms of SIGTERM; SIGKILL\n",
                    (int)s->pid, timeout_ms);
            kill(-s->pid, SIGKILL);
            kill(s->pid, SIGKILL);
            wp_server_wait_exit(s, 10000, &st);
        }
    }
    if (elapsed_ms) *elapsed_ms = (long)(wp_now_ms() - t0);
    return s->exit_status;
}

void wp_server_free(wp_server *s) {
    if (!s) return;
    if (!s->reaped) {
        /* Make sure no process of this server outlives it. */
        pid_t kids[256];
        int n = wp_children_of(s->pid, kids, 256);
        wp_server_stop(s, 15000, NULL);
        for (int i = 0; i < n; i++)
            if (wp_pid_alive(kids[i])) kill(kids[i], SIGKILL);
    }
    reg_del(s);
    kill_strays();
    /* a directory and its database go together */
    if (s->owns_dir && s->pg_name[0] != '\0' && !getenv("WARMPOOL_IT_KEEP")) wp_pg_drop(s->pg_name);
    if (s->owns_dir && !getenv("WARMPOOL_IT_KEEP")) wp_remove_tree(s->dir);
    free(s);
}

char *wp_server_read_log(const wp_server *s) {
    char *t = read_file_all(s->log_path);
    return t ? t : strdup("");
}

void wp_server_dump_log(const wp_server *s, size_t max_bytes) {
    char *t = wp_server_read_log(s);
    size_t n = strlen(t);
    const char *p = t;
    if (max_bytes && n > max_bytes) p = t + n - max_bytes;
    fprintf(stderr, "---- log of server pid %d port %d (%s)%s ----\n%s\n---- end of log ----\n",
            (int)s->pid, s->port, s->log_path, p != t ? " [tail]" : "", p);
    free(t);
}

int wp_run_binary(const char *const *args, const char *const *env, int timeout_ms,
                  char **output, bool *timed_out, long *elapsed_ms) {
    char dir[512];
    wp_make_temp_dir(dir, sizeof dir);
    char *log = wp_fmt("%s/out.txt", dir);
    const char *argv[64];
    int k = 0;
    argv[k++] = wp_binary_path();
    if (args)
        for (int i = 0; args[i] && k < 63; i++) argv[k++] = args[i];
    argv[k] = NULL;
    char **envp = build_env(env);
    fflush(NULL);
    long long t0 = wp_now_ms();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) child_exec(log, (char **)argv, envp, 0);
    free(envp);
    int st = -1;
    bool done = false;
    long long deadline = t0 + timeout_ms;
    while (!done) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            done = true;
            break;
        }
        if (wp_now_ms() > deadline) break;
        wp_sleep_ms(10);
    }
    if (elapsed_ms) *elapsed_ms = (long)(wp_now_ms() - t0);
    if (timed_out) *timed_out = !done;
    if (!done) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        st = -1;
    }
    kill_strays();
    if (output) *output = read_file_all(log);
    if (output && !*output) *output = strdup("");
    free(log);
    wp_remove_tree(dir);
    return st;
}

/* ------------------------------------------------------------------- HTTP */

typedef struct {
    const char *p;
    size_t n, off;
} rd_t;

static size_t write_cb(char *ptr, size_t sz, size_t nm, void *ud) {
    wp_resp *r = ud;
    size_t len = sz * nm;
    char *nb = realloc(r->body, r->body_len + len + 1);
    if (!nb) return 0;
    r->body = nb;
    memcpy(r->body + r->body_len, ptr, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return len;
}

static void copy_hval(char *dst, size_t cap, const char *v, size_t len) {
    while (len && (*v == ' ' || *v == '\t')) {
        v++;
        len--;
    }
    while (len && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' ')) len--;
    if (len >= cap) len = cap - 1;
    memcpy(dst, v, len);
    dst[len] = '\0';
}

static size_t header_cb(char *buf, size_t sz, size_t nm, void *ud) {
    wp_resp *r = ud;
    size_t len = sz * nm;
    if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
        /* New response (e.g. after 100 Continue): forget earlier headers. */
        r->location[0] = r->allow[0] = r->retry_after[0] = r->content_type[0] = '\0';
        r->has_allow = r->has_location = r->has_retry_after = r->has_content_type = false;
        free(r->headers);
        r->headers = NULL;
        return len;
    }
    size_t have = r->headers ? strlen(r->headers) : 0;
    char *nh = realloc(r->headers, have + len + 1);
    if (nh) {
        memcpy(nh + have, buf, len);
        nh[have + len] = '\0';
        r->headers = nh;
    }
    const char *colon = memchr(buf, ':', len);
    if (!colon) return len;
    size_t nlen = (size_t)(colon - buf);
    const char *v = colon + 1;
    size_t vlen = len - nlen - 1;
#define HDR(name, field, flag)                                          \
    if (nlen == strlen(name) && strncasecmp(buf, name, nlen) == 0) {   \
        copy_hval(r->field, sizeof r->field, v, vlen);                  \
        r->flag = true;                                                 \
    }
    HDR("Location", location, has_location)
    HDR("Allow", allow, has_allow)
    HDR("Retry-After", retry_after, has_retry_after)
    HDR("Content-Type", content_type, has_content_type)
#undef HDR
    return len;
}

static size_t read_cb(char *buf, size_t sz, size_t nm, void *ud) {
    rd_t *rd = ud;
    size_t want = sz * nm;
    size_t left = rd->n - rd->off;
    if (want > left) want = left;
    if (want > 700) want = 700; /* several chunks */
    memcpy(buf, rd->p + rd->off, want);
    rd->off += want;
    return want;
}

bool wp_resp_header(const wp_resp *r, const char *name, char *out, size_t cap) {
    size_t n = strlen(name);
    for (const char *p = r->headers; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        size_t llen = eol ? (size_t)(eol - p) : strlen(p);
        if (llen > n && p[n] == ':' && strncasecmp(p, name, n) == 0) {
            copy_hval(out, cap, p + n + 1, llen - n - 1);
            return true;
        }
        p += llen + (eol ? 2 : 0);
    }
    return false;
}

/* ------------------------------------------------- answers recorded for the contract test */

/* "GET 200 /v1/tasks/N": the method, status and path with digit runs as N, no query. */
static void record_key(const wp_req *q, long status, char *out, size_t cap) {
    int n = snprintf(out, cap, "%.16s %ld ", q->method ? q->method : "GET", status);
    size_t k = n > 0 ? (size_t)n : 0;
    for (const char *p = q->path; *p && *p != '?' && k + 2 < cap; p++) {
        if (isdigit((unsigned char)*p)) {
            while (isdigit((unsigned char)p[1])) p++;
            out[k++] = 'N';
        } else {
            out[k++] = *p;
        }
    }
    out[k] = '\0';
}

#define RECORD_PER_KEY 40
#define RECORD_KEYS 1024
#define RECORD_MAX_BODY (256 * 1024)

static void record_answer(const wp_req *q, const wp_resp *r) {
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static char keys[RECORD_KEYS][96];
    static int counts[RECORD_KEYS], nkeys;
    const char *file = getenv("WARMPOOL_IT_RECORD");
    if (!file || !*file || r->status == 0) return;
    char key[96];
    record_key(q, r->status, key, sizeof key);
    pthread_mutex_lock(&mu);
    int i = 0;
    while (i < nkeys && strcmp(keys[i], key) != 0) i++;
    bool take = false;
    if (i < nkeys) {
        take = counts[i]++ < RECORD_PER_KEY;
    } else if (nkeys < RECORD_KEYS) {
        snprintf(keys[nkeys], sizeof keys[nkeys], "%s", key);
        counts[nkeys++] = 1;
        take = true;
    }
    pthread_mutex_unlock(&mu);
    if (!take) return;
    json_t *hdrs = json_object();
    for (const char *p = r->headers; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        size_t llen = eol ? (size_t)(eol - p) : strlen(p);
        const char *colon = memchr(p, ':', llen);
        if (colon) {
            char name[64], value[1024];
            size_t nlen = (size_t)(colon - p) < sizeof name - 1 ? (size_t)(colon - p) : sizeof name - 1;
            for (size_t k = 0; k < nlen; k++) name[k] = (char)tolower((unsigned char)p[k]);
            name[nlen] = '\0';
            copy_hval(value, sizeof value, colon + 1, llen - (size_t)(colon - p) - 1);
            json_object_set_new(hdrs, name, json_string(value));
        }
        p += llen + (eol ? 2 : 0);
    }
    json_t *rec = json_pack("{s:s, s:s, s:i, s:o}", "method", q->method ? q->method : "GET",
                            "path", q->path, "status", (int)r->status, "headers", hdrs);
    if (rec && r->body_len <= RECORD_MAX_BODY) {
        json_t *b = json_stringn(r->body ? r->body : "", r->body_len);
        if (b) json_object_set_new(rec, "body", b);     /* NULL when not UTF-8: left out */
    }
    char *line = rec ? json_dumps(rec, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(rec);
    if (!line) return;
    size_t n = strlen(line);
    line[n] = '\n';                     /* replaces the NUL: written with its length */
    int fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        ssize_t w = write(fd, line, n + 1);     /* one write: lines never interleave */
        (void)w;
        close(fd);
    }
    free(line);
}

bool wp_http_nc(const wp_server *s, const wp_req *q, wp_resp *r) {
    memset(r, 0, sizeof *r);
    CURL *h = q->handle;
    bool own = false;
    if (h) {
        curl_easy_reset(h);
    } else {
        h = curl_easy_init();
        own = true;
    }
    if (!h) {
        snprintf(r->errbuf, sizeof r->errbuf, "curl_easy_init failed");
        r->curl_code = CURLE_FAILED_INIT;
        return false;
    }
    size_t ulen = strlen(s->base_url) + strlen(q->path) + 1;
    char *url = malloc(ulen);
    if (!url) {
        if (own) curl_easy_cleanup(h);
        r->curl_code = CURLE_OUT_OF_MEMORY;
        return false;
    }
    snprintf(url, ulen, "%s%s", s->base_url, q->path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, q->timeout_ms > 0 ? q->timeout_ms : 30000L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);

    struct curl_slist *hl = NULL;
    bool custom_ct = false;
    if (q->headers)
        for (int i = 0; q->headers[i]; i++)
            if (strncasecmp(q->headers[i], "Content-Type", 12) == 0) custom_ct = true;
    rd_t rd = {0};
    if (q->body) {
        size_t blen = q->body_len ? q->body_len : strlen(q->body);
        if (q->chunked) {
            rd.p = q->body;
            rd.n = blen;
            curl_easy_setopt(h, CURLOPT_POST, 1L);
            curl_easy_setopt(h, CURLOPT_READFUNCTION, read_cb);
            curl_easy_setopt(h, CURLOPT_READDATA, &rd);
            hl = curl_slist_append(hl, "Transfer-Encoding: chunked");
        } else {
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, q->body);
        }
        if (!q->no_default_content_type && !custom_ct)
            hl = curl_slist_append(hl, "Content-Type: application/json");
    }
    if (!q->keep_expect) hl = curl_slist_append(hl, "Expect:");
    if (q->headers)
        for (int i = 0; q->headers[i]; i++) hl = curl_slist_append(hl, q->headers[i]);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    const char *method = q->method ? q->method : "GET";
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    else if (!(strcmp(method, "GET") == 0 && !q->body))
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);

    long long t0 = wp_now_ms();
    CURLcode rc = curl_easy_perform(h);
    r->elapsed_ms = (long)(wp_now_ms() - t0);
    r->curl_code = (int)rc;
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    r->status = (rc == CURLE_OK) ? code : 0;
    if (rc != CURLE_OK && !r->errbuf[0])
        snprintf(r->errbuf, sizeof r->errbuf, "%s", curl_easy_strerror(rc));
    if (r->body_len) {
        json_error_t err;
        r->json = json_loadb(r->body, r->body_len, JSON_DECODE_ANY, &err);
    }
    curl_slist_free_all(hl);
    if (own) curl_easy_cleanup(h);
    free(url);
    record_answer(q, r);
    return r->status != 0;
}

void wp_resp_free(wp_resp *r) {
    if (!r) return;
    free(r->body);
    r->body = NULL;
    free(r->headers);
    r->headers = NULL;
    if (r->json) json_decref(r->json);
    r->json = NULL;
}

void wp_assert_json_resp(const wp_resp *r, const char *what) {
    WP_CHECK(r->status != 0, "%s: no HTTP answer: curl error %d: %s", what, r->curl_code, r->errbuf);
    WP_CHECK(r->has_content_type && strncasecmp(r->content_type, "application/json", 16) == 0,
             "%s: status %ld: Content-Type is '%s', want application/json (body: %.300s)", what,
             r->status, r->has_content_type ? r->content_type : "(none)",
             r->body ? r->body : "");
    WP_CHECK(r->json != NULL, "%s: status %ld: body is not JSON: '%.500s'", what, r->status,
             r->body ? r->body : "(empty)");
}

void wp_http(const wp_server *s, const wp_req *q, wp_resp *r) {
    wp_http_nc(s, q, r);
    char what[200];
    snprintf(what, sizeof what, "%s %.120s", q->method ? q->method : "GET", q->path);
    wp_assert_json_resp(r, what);
}

void wp_call_h(const wp_server *s, const char *method, const char *path, const char *body,
               const char *const *headers, wp_resp *r) {
    wp_req q = {.method = method, .path = path, .body = body, .headers = headers};
    wp_http(s, &q, r);
}

void wp_call(const wp_server *s, const char *method, const char *path, const char *body,
             wp_resp *r) {
    wp_call_h(s, method, path, body, NULL, r);
}

void wp_assert_error(const wp_resp *r, long status, const char *code, const char *msg_has) {
    WP_CHECK(r->status == status, "want status %ld (%s), got %ld: %.500s", status, code, r->status,
             r->body ? r->body : "");
    wp_assert_json_resp(r, "error answer");
    const json_t *j = r->json;
    WP_CHECK(json_is_object(j) && json_object_size(j) == 1, "error body must be {\"error\":{...}} only: %.500s",
             r->body);
    json_t *e = json_object_get(j, "error");
    WP_CHECK(json_is_object(e) && json_object_size(e) == 2, "error must have exactly code and message: %.500s",
             r->body);
    json_t *c = json_object_get(e, "code"), *m = json_object_get(e, "message");
    WP_CHECK(json_is_string(c) && json_is_string(m), "error code/message must be strings: %.500s",
             r->body);
    WP_CHECK(strlen(json_string_value(m)) > 0, "error message is empty: %.500s", r->body);
    if (code)
        WP_CHECK(strcmp(json_string_value(c), code) == 0, "want error.code '%s', got '%s' (%.500s)",
                 code, json_string_value(c), r->body);
    if (msg_has)
        WP_CHECK(strstr(json_string_value(m), msg_has) != NULL,
                 "error.message should name '%s': '%s'", msg_has, json_string_value(m));
}

int wp_raw_http(const wp_server *s, const char *request, size_t len, int timeout_ms,
                char **headers_out, char **body_out, long *elapsed_ms) {
    if (headers_out) *headers_out = NULL;
    if (body_out) *body_out = NULL;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)s->port);
    long long t0 = wp_now_ms();
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(fd, request + off, len - off, MSG_NOSIGNAL);
        if (w <= 0) break;
        off += (size_t)w;
    }
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);
    long long deadline = t0 + timeout_ms;
    size_t hdr_end = 0;
    long clen = -1;
    for (;;) {
        long long left = deadline - wp_now_ms();
        if (left <= 0) break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)left);
        if (pr <= 0) break;
        if (n == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) break;
            buf = nb;
        }
        ssize_t rd = recv(fd, buf + n, cap - n, 0);
        if (rd <= 0) break;
        n += (size_t)rd;
        buf[n] = '\0';
        if (!hdr_end) {
            char *e = strstr(buf, "\r\n\r\n");
            if (e) {
                hdr_end = (size_t)(e - buf) + 4;
                const char *cl = strcasestr(buf, "\r\nContent-Length:");
                if (cl && cl < e) clen = strtol(cl + 17, NULL, 10);
            }
        }
        if (hdr_end && clen >= 0 && n >= hdr_end + (size_t)clen) break;
    }
    if (elapsed_ms) *elapsed_ms = (long)(wp_now_ms() - t0);
    close(fd);
    buf[n] = '\0';
    int status = 0;
    if (n > 12 && strncmp(buf, "HTTP/1.", 7) == 0) status = atoi(buf + 9);
    if (hdr_end) {
        if (headers_out) *headers_out = strndup(buf, hdr_end);
        if (body_out) *body_out = strdup(buf + hdr_end);
    } else if (headers_out) {
        *headers_out = strdup(buf);
    }
    free(buf);
    return status;
}

/* ----------------------------------------------------------- task helpers */

const char *wp_str(const json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : "";
}

long long wp_int(const json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v)) {
        char *d = wp_dump(obj);
        WP_FAIL("field '%s' is not an integer in %.600s", key, d);
    }
    return json_integer_value(v);
}

bool wp_is_terminal(const char *st) {
    return strcmp(st, "succeeded") == 0 || strcmp(st, "failed") == 0 ||
           strcmp(st, "canceled") == 0;
}

int wp_id_cmp(const char *a, const char *b) {
    while (*a == '0' && a[1]) a++;
    while (*b == '0' && b[1]) b++;
    size_t la = strlen(a), lb = strlen(b);
    if (la != lb) return la < lb ? -1 : 1;
    return strcmp(a, b);
}

long long wp_parse_ts(const char *s) {
    static const char pat[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (!s || strlen(s) != sizeof pat - 1) return -1;
    for (size_t i = 0; pat[i]; i++) {
        if (pat[i] == 'd') {
            if (!isdigit((unsigned char)s[i])) return -1;
        } else if (s[i] != pat[i]) {
            return -1;
        }
    }
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    tm.tm_year = atoi(s) - 1900;
    tm.tm_mon = atoi(s + 5) - 1;
    tm.tm_mday = atoi(s + 8);
    tm.tm_hour = atoi(s + 11);
    tm.tm_min = atoi(s + 14);
    tm.tm_sec = atoi(s + 17);
    if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
        tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    time_t t = timegm(&tm);
    return (long long)t * 1000 + atoi(s + 20);
}

bool wp_valid_ts(const char *s) { return wp_parse_ts(s) >= 0; }

static bool is_digits(const char *s) {
    if (!*s) return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s)) return false;
    return true;
}

void wp_assert_task_shape(const json_t *t, bool full) {
    char *d = wp_dump(t);
    WP_CHECK(json_is_object(t), "task is not an object: %.600s", d);
    static const char *const keys_full[] = {"id", "kind", "state", "priority", "input", "result",
                                            "error", "attempts", "max_attempts", "timeout_ms",
                                            "created_at", "started_at", "finished_at", "run_after",
                                            "previous_error", NULL};
    size_t want = 0;
    for (int i = 0; keys_full[i]; i++) {
        bool listed_only_full = strcmp(keys_full[i], "input") == 0 || strcmp(keys_full[i], "result") == 0;
        if (!full && listed_only_full) {
            WP_CHECK(json_object_get(t, keys_full[i]) == NULL,
                     "list items must omit '%s': %.600s", keys_full[i], d);
            continue;
        }
        want++;
        WP_CHECK(json_object_get(t, keys_full[i]) != NULL, "task lacks field '%s': %.600s",
                 keys_full[i], d);
    }
    (void)want; /* extra fields are checked by wp_assert_task_keys_exact */
    json_t *id = json_object_get(t, "id");
    WP_CHECK(json_is_string(id) && is_digits(json_string_value(id)),
             "id must be a string of decimal digits: %.600s", d);
    WP_CHECK(json_is_string(json_object_get(t, "kind")), "kind must be a string: %.600s", d);
    const char *st = wp_str(t, "state");
    WP_CHECK(strcmp(st, "pending") == 0 || strcmp(st, "running") == 0 || wp_is_terminal(st),
             "bad state: %.600s", d);
    WP_CHECK(json_is_integer(json_object_get(t, "priority")), "priority not integer: %.600s", d);
    WP_CHECK(json_is_integer(json_object_get(t, "attempts")), "attempts not integer: %.600s", d);
    WP_CHECK(json_is_integer(json_object_get(t, "max_attempts")), "max_attempts not integer: %.600s",
             d);
    WP_CHECK(json_is_integer(json_object_get(t, "timeout_ms")), "timeout_ms not integer: %.600s", d);
    long long pr = json_integer_value(json_object_get(t, "priority"));
    long long at = json_integer_value(json_object_get(t, "attempts"));
    long long ma = json_integer_value(json_object_get(t, "max_attempts"));
    WP_CHECK(pr >= -1000 && pr <= 1000, "priority out of range: %.600s", d);
    WP_CHECK(ma >= 1 && ma <= 100, "max_attempts out of range: %.600s", d);
    WP_CHECK(at >= 0 && at <= ma, "attempts must be 0..max_attempts: %.600s", d);
    json_t *err = json_object_get(t, "error");
    WP_CHECK(json_is_null(err) || (json_is_object(err) && json_object_size(err) == 2 &&
                                   json_is_string(json_object_get(err, "code")) &&
                                   json_is_string(json_object_get(err, "message"))),
             "error must be null or {code,message}: %.600s", d);
    json_t *perr = json_object_get(t, "previous_error");       /* issue 13 */
    WP_CHECK(json_is_null(perr) || (json_is_object(perr) && json_object_size(perr) == 2 &&
                                    json_is_string(json_object_get(perr, "code")) &&
                                    json_is_string(json_object_get(perr, "message"))),
             "previous_error must be null or {code,message}: %.600s", d);
    long long ts[3];
    static const char *const tsk[] = {"created_at", "started_at", "finished_at"};
    for (int i = 0; i < 3; i++) {
        json_t *v = json_object_get(t, tsk[i]);
        ts[i] = -1;
        if (i > 0 && json_is_null(v)) continue;
        WP_CHECK(json_is_string(v) && wp_valid_ts(json_string_value(v)),
                 "%s must be an RFC 3339 UTC timestamp with milliseconds "
                 "(YYYY-MM-DDTHH:MM:SS.mmmZ): %.600s",
                 tsk[i], d);
        ts[i] = wp_parse_ts(json_string_value(v));
    }
    json_t *ra = json_object_get(t, "run_after");
    WP_CHECK(json_is_null(ra) || (json_is_string(ra) && wp_valid_ts(json_string_value(ra))),
             "run_after must be null or a timestamp: %.600s", d);
    /* State-consistency. */
    if (strcmp(st, "running") == 0) {
        /* started_at is null while the task is held in a worker's batch (issue 12) */
        WP_CHECK(ts[2] < 0, "running: finished_at null: %.600s", d);
        WP_CHECK(at >= 1, "running: attempts >= 1: %.600s", d);
        /* a retry keeps the error of its previous attempt until it ends */
        WP_CHECK(json_is_null(err) || at > 1, "running: error null on a first attempt: %.600s",
                 d);
    }
    if (strcmp(st, "pending") == 0) {
        WP_CHECK(ts[2] < 0, "pending: finished_at null: %.600s", d);
        WP_CHECK(at < ma, "pending: attempts < max_attempts: %.600s", d);
        if (full) WP_CHECK(json_is_null(json_object_get(t, "result")), "pending: result null: %.600s", d);
    }
    if (strcmp(st, "succeeded") == 0) {
        WP_CHECK(ts[1] >= 0 && ts[2] >= 0, "succeeded: started_at and finished_at set: %.600s", d);
        WP_CHECK(json_is_null(err), "succeeded: error null: %.600s", d);
        WP_CHECK(at >= 1, "succeeded: attempts >= 1: %.600s", d);
    }
    if (strcmp(st, "failed") == 0) {
        WP_CHECK(json_is_object(err), "failed: error object: %.600s", d);
        WP_CHECK(ts[2] >= 0, "failed: finished_at set: %.600s", d);
        if (full) WP_CHECK(json_is_null(json_object_get(t, "result")), "failed: result null: %.600s", d);
    }
    if (ts[1] >= 0) WP_CHECK(ts[1] >= ts[0], "started_at before created_at: %.600s", d);
    if (ts[2] >= 0) WP_CHECK(ts[2] >= ts[0], "finished_at before created_at: %.600s", d);
    if (ts[1] >= 0 && ts[2] >= 0) WP_CHECK(ts[2] >= ts[1], "finished_at before started_at: %.600s", d);
    free(d);
}

json_t *wp_submit(const wp_server *s, const char *body) {
    wp_resp r;
    wp_call(s, "POST", "/v1/tasks", body, &r);
    WP_CHECK(r.status == 202, "POST /v1/tasks %.300s: want 202, got %ld: %.500s", body, r.status,
             r.body);
    wp_assert_task_shape(r.json, true);
    const char *id = wp_str(r.json, "id");
    char want[128];
    snprintf(want, sizeof want, "/v1/tasks/%s", id);
    WP_CHECK(r.has_location && strcmp(r.location, want) == 0,
             "Location header: want '%s', got '%s'", want, r.has_location ? r.location : "(none)");
    json_t *t = json_incref(r.json);
    wp_resp_free(&r);
    return t;
}

json_t *wp_submitf(const wp_server *s, const char *fmt, ...) {
    va_list ap;
    char *body = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&body, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    json_t *t = wp_submit(s, body);
    free(body);
    return t;
}

json_t *wp_get_task(const wp_server *s, const char *id) {
    char path[256];
    snprintf(path, sizeof path, "/v1/tasks/%s", id);
    wp_resp r;
    wp_call(s, "GET", path, NULL, &r);
    WP_CHECK(r.status == 200, "GET %s: want 200, got %ld: %.500s", path, r.status, r.body);
    wp_assert_task_shape(r.json, true);
    WP_CHECK(strcmp(wp_str(r.json, "id"), id) == 0, "GET %s returned another id", path);
    json_t *t = json_incref(r.json);
    wp_resp_free(&r);
    return t;
}

json_t *wp_wait_terminal(const wp_server *s, const char *id, double timeout_s) {
    long long deadline = wp_now_ms() + (long long)(timeout_s * 1000);
    for (;;) {
        long long left = deadline - wp_now_ms();
        int w = (int)(left / 1000);
        if (w > 5) w = 5;
        if (w < 0) w = 0;
        char path[256];
        snprintf(path, sizeof path, "/v1/tasks/%s?wait=%d", id, w);
        wp_req q = {.method = "GET", .path = path, .timeout_ms = (w + 15) * 1000L};
        wp_resp r;
        wp_http(s, &q, &r);
        WP_CHECK(r.status == 200, "GET %s: want 200, got %ld: %.500s", path, r.status, r.body);
        wp_assert_task_shape(r.json, true);
        if (wp_is_terminal(wp_str(r.json, "state"))) {
            json_t *t = json_incref(r.json);
            wp_resp_free(&r);
            return t;
        }
        if (wp_now_ms() >= deadline) {
            char *d = wp_dump(r.json);
            WP_FAIL("task %s not terminal within %.1f s: %.600s", id, timeout_s, d);
        }
        wp_resp_free(&r);
        if (w == 0) wp_sleep_ms(20);
    }
}

json_t *wp_wait_state(const wp_server *s, const char *id, const char *state, double timeout_s) {
    long long deadline = wp_now_ms() + (long long)(timeout_s * 1000);
    for (;;) {
        json_t *t = wp_get_task(s, id);
        if (strcmp(wp_str(t, "state"), state) == 0) return t;
        if (wp_now_ms() >= deadline) {
            char *d = wp_dump(t);
            WP_FAIL("task %s not '%s' within %.1f s: %.600s", id, state, timeout_s, d);
        }
        json_decref(t);
        wp_sleep_ms(15);
    }
}

static void assert_stats_shape(const json_t *st) {
    char *d = wp_dump(st);
    WP_CHECK(json_is_object(st), "stats not an object: %.800s", d);
    json_t *tasks = json_object_get(st, "tasks");
    static const char *const states[] = {"pending", "running", "succeeded", "failed", "canceled"};
    WP_CHECK(json_is_object(tasks) && json_object_size(tasks) == 5,
             "stats.tasks must have exactly the 5 states: %.800s", d);
    for (int i = 0; i < 5; i++) {
        json_t *v = json_object_get(tasks, states[i]);
        WP_CHECK(json_is_integer(v) && json_integer_value(v) >= 0, "stats.tasks.%s: %.800s",
                 states[i], d);
    }
    json_t *ws = json_object_get(st, "workers");
    WP_CHECK(json_is_array(ws), "stats.workers must be an array: %.800s", d);
    size_t i;
    json_t *w;
    json_array_foreach(ws, i, w) {
        WP_CHECK(json_is_object(w) && json_object_size(w) == 4, "worker shape: %.800s", d);
        WP_CHECK(json_is_integer(json_object_get(w, "pid")) &&
                     json_integer_value(json_object_get(w, "pid")) > 0,
                 "worker.pid: %.800s", d);
        const char *ws_state = wp_str(w, "state");
        WP_CHECK(strcmp(ws_state, "idle") == 0 || strcmp(ws_state, "busy") == 0,
                 "worker.state idle|busy: %.800s", d);
        json_t *tid = json_object_get(w, "task_id");
        WP_CHECK(json_is_null(tid) || (json_is_string(tid) && is_digits(json_string_value(tid))),
                 "worker.task_id null or id string: %.800s", d);
        WP_CHECK(json_is_integer(json_object_get(w, "tasks_done")) &&
                     json_integer_value(json_object_get(w, "tasks_done")) >= 0,
                 "worker.tasks_done: %.800s", d);
    }
    json_t *ks = json_object_get(st, "kinds");
    WP_CHECK(json_is_array(ks), "stats.kinds must be an array: %.800s", d);
    json_t *k;
    json_array_foreach(ks, i, k) {
        WP_CHECK(json_is_object(k) && json_object_size(k) == 7, "kind shape: %.800s", d);
        WP_CHECK(json_is_boolean(json_object_get(k, "paused")), "kind.paused: %.800s", d);
        const char *rt = wp_str(k, "runtime");
        WP_CHECK(strcmp(rt, "c") == 0 || strcmp(rt, "exec") == 0, "kind.runtime c|exec: %.800s", d);
        WP_CHECK(json_is_boolean(json_object_get(k, "available")), "kind.available: %.800s", d);
        WP_CHECK(json_is_string(json_object_get(k, "name")), "kind.name: %.800s", d);
        static const char *const ik[] = {"context_bytes", "generation", "load_ms"};
        for (int j = 0; j < 3; j++)
            WP_CHECK(json_is_integer(json_object_get(k, ik[j])) &&
                         json_integer_value(json_object_get(k, ik[j])) >= 0,
                     "kind.%s: %.800s", ik[j], d);
    }
    /* the live instances: at least this one, exactly one of them `self` */
    json_t *is = json_object_get(st, "instances");
    WP_CHECK(json_is_array(is) && json_array_size(is) >= 1, "stats.instances: %.800s", d);
    int selves = 0;
    json_array_foreach(is, i, k) {
        WP_CHECK(json_is_object(k) && json_object_size(k) == 9, "instance shape: %.800s", d);
        WP_CHECK(json_is_string(json_object_get(k, "id")) && is_digits(wp_str(k, "id")),
                 "instance.id: %.800s", d);
        static const char *const ss[] = {"name", "host"};
        for (int j = 0; j < 2; j++)
            WP_CHECK(json_is_string(json_object_get(k, ss[j])), "instance.%s: %.800s", ss[j], d);
        static const char *const ii[] = {"pid", "workers", "lease_ms"};
        for (int j = 0; j < 3; j++)
            WP_CHECK(json_is_integer(json_object_get(k, ii[j])) &&
                         json_integer_value(json_object_get(k, ii[j])) > 0,
                     "instance.%s: %.800s", ii[j], d);
        WP_CHECK(wp_valid_ts(wp_str(k, "started_at")) && wp_valid_ts(wp_str(k, "last_seen")),
                 "instance times: %.800s", d);
        WP_CHECK(json_is_boolean(json_object_get(k, "self")), "instance.self: %.800s", d);
        selves += json_is_true(json_object_get(k, "self"));
    }
    WP_CHECK(selves == 1, "stats.instances: exactly one is `self`: %.800s", d);
    json_t *up = json_object_get(st, "uptime_s");
    WP_CHECK(json_is_number(up) && json_number_value(up) >= 0, "uptime_s: %.800s", d);
    json_t *ver = json_object_get(st, "version");
    WP_CHECK(json_is_string(ver) && strlen(json_string_value(ver)) > 0, "version: %.800s", d);
    json_t *paused = json_object_get(st, "paused_kinds");      /* issue 13 */
    WP_CHECK(json_is_array(paused), "stats.paused_kinds: %.800s", d);
    WP_CHECK(json_object_size(st) == 7,
             "stats must have exactly tasks, workers, kinds, instances, paused_kinds, uptime_s, "
             "version: %.800s", d);
    free(d);
}

json_t *wp_stats(const wp_server *s) {
    wp_resp r;
    wp_call(s, "GET", "/v1/stats", NULL, &r);
    WP_CHECK(r.status == 200, "GET /v1/stats: %ld %.500s", r.status, r.body);
    assert_stats_shape(r.json);
    json_t *t = json_incref(r.json);
    wp_resp_free(&r);
    return t;
}

long long wp_stats_count(const json_t *stats, const char *state) {
    return json_integer_value(json_object_get(json_object_get(stats, "tasks"), state));
}

long long wp_stats_total(const json_t *stats) {
    static const char *const states[] = {"pending", "running", "succeeded", "failed", "canceled"};
    long long n = 0;
    for (int i = 0; i < 5; i++) n += wp_stats_count(stats, states[i]);
    return n;
}

pid_t wp_worker_pid_for_task(const wp_server *s, const char *id, double timeout_s) {
    long long deadline = wp_now_ms() + (long long)(timeout_s * 1000);
    for (;;) {
        json_t *st = wp_stats(s);
        size_t i;
        json_t *w;
        pid_t found = 0;
        json_array_foreach(json_object_get(st, "workers"), i, w) {
            if (strcmp(wp_str(w, "task_id"), id) == 0) found = (pid_t)wp_int(w, "pid");
        }
        json_decref(st);
        if (found) return found;
        if (wp_now_ms() >= deadline) return 0;
        wp_sleep_ms(20);
    }
}

json_t *wp_list_all(const wp_server *s, const char *query, int limit) {
    json_t *all = json_array();
    char *cursor = NULL;
    char prev[128] = "";
    for (int page = 0; page < 100000; page++) {
        char *path;
        if (cursor) {
            char *esc = curl_easy_escape(NULL, cursor, 0);
            path = wp_fmt("/v1/tasks?%s%slimit=%d&cursor=%s", query, *query ? "&" : "", limit, esc);
            curl_free(esc);
        } else {
            path = wp_fmt("/v1/tasks?%s%slimit=%d", query, *query ? "&" : "", limit);
        }
        wp_resp r;
        wp_call(s, "GET", path, NULL, &r);
        WP_CHECK(r.status == 200, "GET %s: %ld %.500s", path, r.status, r.body);
        json_t *tasks = json_object_get(r.json, "tasks");
        json_t *nc = json_object_get(r.json, "next_cursor");
        WP_CHECK(json_is_object(r.json) && json_object_size(r.json) == 2 && json_is_array(tasks) && nc,
                 "list answer must be {tasks:[...], next_cursor}: %.500s", r.body);
        WP_CHECK(json_array_size(tasks) <= (size_t)limit, "GET %s: %zu items > limit %d", path,
                 json_array_size(tasks), limit);
        WP_CHECK(json_is_null(nc) || (json_is_string(nc) && strlen(json_string_value(nc)) > 0),
                 "next_cursor must be null or a non-empty string: %.300s", r.body);
        if (cursor)
            WP_CHECK(json_array_size(tasks) > 0,
                     "a non-null next_cursor promised more items but page %d is empty (%s)", page, path);
        size_t i;
        json_t *t;
        json_array_foreach(tasks, i, t) {
            wp_assert_task_shape(t, false);
            const char *id = wp_str(t, "id");
            if (prev[0])
                WP_CHECK(wp_id_cmp(id, prev) < 0, "list not newest first: %s after %s (%s)", id, prev,
                         path);
            snprintf(prev, sizeof prev, "%s", id);
            json_array_append(all, t);
        }
        free(cursor);
        cursor = json_is_string(nc) ? strdup(json_string_value(nc)) : NULL;
        free(path);
        wp_resp_free(&r);
        if (!cursor) return all;
    }
    WP_FAIL("list paging did not end");
    return NULL;
}

wp_snap wp_snapshot(const wp_server *s) {
    wp_snap sn;
    memset(&sn, 0, sizeof sn);
    json_t *st = wp_stats(s);
    sn.total = wp_stats_total(st);
    json_decref(st);
    wp_resp r;
    wp_call(s, "GET", "/v1/tasks?limit=1", NULL, &r);
    WP_CHECK(r.status == 200, "GET /v1/tasks?limit=1: %ld %.300s", r.status, r.body);
    json_t *first = json_array_get(json_object_get(r.json, "tasks"), 0);
    snprintf(sn.newest, sizeof sn.newest, "%s", first ? wp_str(first, "id") : "");
    wp_resp_free(&r);
    return sn;
}

void wp_assert_unchanged(const wp_server *s, const wp_snap *before, const char *what) {
    wp_snap now = wp_snapshot(s);
    WP_CHECK(now.total == before->total && strcmp(now.newest, before->newest) == 0,
             "%s: bad input changed what is stored: %lld tasks (newest '%s') before, "
             "%lld (newest '%s') after",
             what, before->total, before->newest, now.total, now.newest);
}

void wp_assert_task_keys_exact(const json_t *t, bool full, const char *what) {
    static const char *const keys[] = {"id", "kind", "state", "priority", "input", "result", "error",
                                       "attempts", "max_attempts", "timeout_ms", "created_at", "started_at",
                                       "finished_at", "run_after", "previous_error", "callback",
                                       NULL};
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)t, k, v) {
        bool known = false;
        for (int i = 0; keys[i]; i++)
            if (strcmp(k, keys[i]) == 0) known = true;
        if (!full && (strcmp(k, "input") == 0 || strcmp(k, "result") == 0)) known = false;
        if (!known) {
            char *d = wp_dump(t);
            WP_FAIL("%s: the task object has field '%s', which the spec's task object does not have: %.600s", what,
                    k, d);
        }
    }
    wp_assert_task_shape(t, full);
}

int wp_wait_workers(const wp_server *s, int n, double timeout_s) {
    long long deadline = wp_now_ms() + (long long)(timeout_s * 1000);
    for (;;) {
        json_t *st = wp_stats(s);
        json_t *ws = json_object_get(st, "workers");
        int k = (int)json_array_size(ws);
        bool ok = k == n;
        size_t i;
        json_t *w;
        json_array_foreach(ws, i, w) {
            pid_t p = (pid_t)json_integer_value(json_object_get(w, "pid"));
            if (!wp_pid_alive(p) || wp_ppid_of(p) != s->pid) ok = false;
        }
        json_decref(st);
        if (ok || wp_now_ms() > deadline) return k;
        wp_sleep_ms(25);
    }
}

int wp_worker_pids(const wp_server *s, pid_t *out, int max) {
    json_t *st = wp_stats(s);
    int n = 0;
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(st, "workers"), i, w) {
        if (n < max) out[n++] = (pid_t)wp_int(w, "pid");
    }
    json_decref(st);
    return n;
}

bool wp_pid_in_list(pid_t p, const pid_t *l, int n) {
    for (int i = 0; i < n; i++)
        if (l[i] == p) return true;
    return false;
}
