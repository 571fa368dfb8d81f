/* store_cost.c -- what a task costs the database, measured through the store itself
 * (bench/run.sh pg; the figures of docs/scaling.md). Not part of warmpool.
 *
 *   store_cost costs DB [--n N] [--group G]
 *       a fresh instance on DB (store_start), then N no-op tasks as warmpool handles
 *       them: inserted in groups of G in one transaction each (the HTTP writer's group
 *       commit, durable), then run by one "worker" connection (relaxed) that records
 *       each and claims the next in one call (store_finish_claim). Prints, per task and
 *       per phase: wall time, bytes the process sent and received and its read/write
 *       system calls (from /proc/self/io: this process does nothing else meanwhile, so
 *       they are its traffic with the database), and with PostgreSQL the WAL written
 *       (pg_current_wal_lsn) and, where pg_stat_statements is loaded, the statements the
 *       server ran and their execution time.
 *   store_cost claims DB --procs P --n N [--durable]
 *       N tasks inserted, then P processes each claiming and finishing as fast as they
 *       can (store_finish_claim, like busy workers): the claims per second the database
 *       sustains through warmpool's own calls, with nothing else running.
 *
 * Each prints one JSON object on stdout. */
#include "common/clock.h"
#include "storage/store.h"

#include <dirent.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
die(const char *what, const char *why)
{
    fprintf(stderr, "store_cost: %s: %s\n", what, why);
    exit(1);
}

struct io {
    long long rchar, wchar, syscr, syscw;   /* file I/O: SQLite's traffic */
    long long tcp_out, tcp_in, segs_out, segs_in;   /* TCP: PostgreSQL's */
};

static int g_skip_fd = -1;      /* the side connection's socket: not the store's traffic */

/* The bytes and data segments of this process's TCP connections (TCP_INFO), but for the
 * side connection's. */
static void
tcp_now(struct io *v)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);
        struct stat sb;
        if (e->d_name[0] == '.' || fd == g_skip_fd || fd == dirfd(d) || fstat(fd, &sb) != 0 ||
            !S_ISSOCK(sb.st_mode))
            continue;
        struct tcp_info ti;
        socklen_t len = sizeof ti;
        memset(&ti, 0, sizeof ti);
        if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
            continue;
        v->tcp_out += (long long)ti.tcpi_bytes_acked;
        v->tcp_in += (long long)ti.tcpi_bytes_received;
        v->segs_out += ti.tcpi_data_segs_out;
        v->segs_in += ti.tcpi_data_segs_in;
    }
    if (d != NULL)
        closedir(d);
}

static struct io
io_now(void)
{
    struct io v = {0};
    tcp_now(&v);
    FILE *f = fopen("/proc/self/io", "r");
    char key[32];
    long long val;
    while (f != NULL && fscanf(f, "%31[^:]: %lld\n", key, &val) == 2) {
        if (strcmp(key, "rchar") == 0)
            v.rchar = val;
        else if (strcmp(key, "wchar") == 0)
            v.wchar = val;
        else if (strcmp(key, "syscr") == 0)
            v.syscr = val;
        else if (strcmp(key, "syscw") == 0)
            v.syscw = val;
    }
    if (f != NULL)
        fclose(f);
    return v;
}

/* PostgreSQL's own view, on a side connection: WAL position, statements run. */
struct pgview {
    PGconn *c;
    int stmts;              /* pg_stat_statements is there */
};

static long long
pg_value(struct pgview *v, const char *sql)
{
    PGresult *r = PQexec(v->c, sql);
    long long n = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 &&
                          !PQgetisnull(r, 0, 0)
                      ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    return n;
}

static double
pg_double(struct pgview *v, const char *sql)
{
    PGresult *r = PQexec(v->c, sql);
    double n = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 &&
                       !PQgetisnull(r, 0, 0)
                   ? atof(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return n;
}

static const char SQL_WAL[] = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint";
/* the store's statements only: the database of the test, not this side connection */
static const char SQL_CALLS[] =
    "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements"
    " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '%pg_wal_lsn_diff%'";
static const char SQL_TIME[] =
    "SELECT coalesce(sum(total_exec_time), 0) FROM pg_stat_statements"
    " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '%pg_wal_lsn_diff%'";

struct mark {
    double t;
    struct io io;
    long long wal, calls;
    double exec_ms;
};

static struct mark
mark_now(struct pgview *v)
{
    struct mark m = {.t = now_s(), .io = io_now()};
    if (v->c != NULL) {
        m.wal = pg_value(v, SQL_WAL);
        if (v->stmts) {
            m.calls = pg_value(v, SQL_CALLS);
            m.exec_ms = pg_double(v, SQL_TIME);
        }
    }
    return m;
}

static void
print_phase(const char *name, struct mark a, struct mark b, struct mark after_a, long n,
            int pg, int stmts, int last)
{
    /* after_a: the mark taken right after a (its own reads of the side connection are
     * in a..after_a, not in the phase) */
    double secs = b.t - after_a.t;
    printf("  \"%s\": {\"tasks\": %ld, \"seconds\": %.3f, \"per_s\": %.0f", name, n, secs,
           (double)n / secs);
    if (pg)     /* the connections' traffic with the server */
        printf(", \"bytes_sent_per_task\": %.0f, \"bytes_received_per_task\": %.0f,"
               " \"segments_sent_per_task\": %.2f, \"segments_received_per_task\": %.2f",
               (double)(b.io.tcp_out - after_a.io.tcp_out) / (double)n,
               (double)(b.io.tcp_in - after_a.io.tcp_in) / (double)n,
               (double)(b.io.segs_out - after_a.io.segs_out) / (double)n,
               (double)(b.io.segs_in - after_a.io.segs_in) / (double)n);
    else        /* SQLite: the file I/O (the database, its WAL) */
        printf(", \"file_bytes_written_per_task\": %.0f, \"file_bytes_read_per_task\": %.0f,"
               " \"file_writes_per_task\": %.2f",
               (double)(b.io.wchar - after_a.io.wchar) / (double)n,
               (double)(b.io.rchar - after_a.io.rchar) / (double)n,
               (double)(b.io.syscw - after_a.io.syscw) / (double)n);
    if (pg) {
        printf(", \"wal_bytes_per_task\": %.0f", (double)(b.wal - a.wal) / (double)n);
        if (stmts)
            printf(", \"statements_per_task\": %.2f, \"server_exec_us_per_task\": %.1f",
                   (double)(b.calls - a.calls) / (double)n,
                   (b.exec_ms - a.exec_ms) * 1000 / (double)n);
    }
    printf("}%s\n", last ? "" : ",");
}

static void
start_instance(const char *db)
{
    char err[512];
    store_instance inst = {.pid = (long)getpid(), .workers = 1, .lease_ms = 10000,
                           .started_at_ms = clock_now_ms()};
    snprintf(inst.name, sizeof inst.name, "store_cost:%ld", (long)getpid());
    snprintf(inst.host, sizeof inst.host, "bench");
    if (store_start(db, &inst, NULL, NULL, NULL, err, sizeof err) != STORE_OK)
        die("store_start", err);
}

static void
insert_n(store *w, long n, int group)
{
    store_new_task *nt = calloc((size_t)group, sizeof *nt);
    store_task *out = calloc((size_t)group, sizeof *out);
    int *st = calloc((size_t)group, sizeof *st);
    char (*inputs)[32] = calloc((size_t)group, sizeof *inputs);
    if (nt == NULL || out == NULL || st == NULL || inputs == NULL)
        die("insert", "out of memory");
    for (long done = 0; done < n;) {
        int k = (int)(n - done < group ? n - done : group);
        for (int i = 0; i < k; i++) {
            snprintf(inputs[i], sizeof inputs[i], "{\"n\":%ld}", done + i);
            nt[i] = (store_new_task){.kind = "echo", .input = inputs[i], .max_attempts = 1,
                                     .timeout_ms = 300000};
        }
        if (store_begin(w) != STORE_OK ||
            store_insert_batch(w, nt, (size_t)k, clock_now_ms(), out, st) != STORE_OK ||
            store_commit(w) != STORE_OK)
            die("insert", store_errmsg(w));
        for (int i = 0; i < k; i++)
            store_task_clear(&out[i]);
        done += k;
    }
    free(nt);
    free(out);
    free(st);
    free(inputs);
}

/* Claims and finishes until nothing is left; returns how many. */
static long
work(store *s, long owner)
{
    store_task t, next;
    long n = 0;
    int rc;
    while ((rc = store_claim_next(s, clock_now_ms(), owner, NULL, &t)) == STORE_BUSY)
        ;
    if (rc == STORE_EMPTY)
        return 0;
    if (rc != STORE_OK)
        die("claim", store_errmsg(s));
    for (;;) {
        store_outcome o = {.state = TASK_SUCCEEDED, .result = t.input, .now_ms = clock_now_ms()};
        int claimed = 0;
        rc = store_finish_claim(s, t.id, t.attempts, &o, clock_now_ms(), owner, NULL, &next,
                                &claimed);
        if (rc == STORE_BUSY)
            continue;
        if (rc != STORE_OK)
            die("finish", store_errmsg(s));
        n++;
        store_task_clear(&t);
        if (!claimed)
            return n;
        t = next;
    }
}

static int
cmd_costs(const char *db, long n, int group)
{
    char err[512];
    int pg = store_backend_of(db) == STORE_POSTGRES;
    start_instance(db);
    struct pgview v = {0};
    if (pg) {
        v.c = PQconnectdb(db);
        if (PQstatus(v.c) != CONNECTION_OK)
            die("side connection", PQerrorMessage(v.c));
        g_skip_fd = PQsocket(v.c);
        v.stmts = pg_value(&v, "SELECT count(*) FROM pg_extension WHERE extname = "
                               "'pg_stat_statements'") > 0;
        if (!v.stmts) {
            PGresult *r = PQexec(v.c, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
            PQclear(r);
            v.stmts = pg_value(&v, "SELECT count(*) FROM pg_stat_statements") >= 0;
        }
    }
    store *w = store_open(db, STORE_DURABLE | STORE_MAINTAINER, 5000, err, sizeof err);
    store *k = store_open(db, STORE_RELAXED, 5000, err, sizeof err);
    if (w == NULL || k == NULL)
        die("store_open", err);
    /* warm up: the statements prepared on both connections */
    insert_n(w, group, group);
    work(k, 1);

    struct mark a = mark_now(&v), a2 = mark_now(&v);
    insert_n(w, n, group);
    struct mark b = mark_now(&v), b2 = mark_now(&v);
    long done = work(k, 1);
    struct mark c = mark_now(&v);
    if (done != n)
        die("work", "not every task was claimed");
    printf("{\"backend\": \"%s\", \"n\": %ld, \"group\": %d, \"pg_stat_statements\": %s,\n",
           pg ? "postgresql" : "sqlite", n, group, v.stmts ? "true" : "false");
    print_phase("insert", a, b, a2, n, pg, v.stmts, 0);
    print_phase("finish_claim", b, c, b2, n, pg, v.stmts, 1);
    printf("}\n");
    store_close(w);
    store_close(k);
    if (v.c != NULL)
        PQfinish(v.c);
    return 0;
}

static int
cmd_claims(const char *db, int procs, long n, int durable)
{
    char err[512];
    start_instance(db);
    store *w = store_open(db, STORE_DURABLE, 5000, err, sizeof err);
    if (w == NULL)
        die("store_open", err);
    insert_n(w, n, 500);
    store_close(w);
    int p[2];
    if (pipe(p) != 0)
        die("pipe", "failed");
    double t0 = now_s();
    for (int i = 0; i < procs; i++) {
        if (fork() == 0) {
            store *s = store_open(db, durable ? STORE_DURABLE : STORE_RELAXED, 5000, err,
                                  sizeof err);
            if (s == NULL)
                die("store_open", err);
            long done = work(s, 100 + i);
            if (write(p[1], &done, sizeof done) != (ssize_t)sizeof done)
                _exit(1);
            store_close(s);
            _exit(0);
        }
    }
    long total = 0;
    for (int i = 0; i < procs; i++) {
        long done = 0;
        if (read(p[0], &done, sizeof done) == (ssize_t)sizeof done)
            total += done;
        wait(NULL);
    }
    double secs = now_s() - t0;
    printf("{\"backend\": \"%s\", \"procs\": %d, \"durable\": %s, \"tasks\": %ld,"
           " \"seconds\": %.3f, \"claims_per_s\": %.0f}\n",
           store_backend_of(db) == STORE_POSTGRES ? "postgresql" : "sqlite", procs,
           durable ? "true" : "false", total, secs, (double)total / secs);
    return total == n ? 0 : 1;
}

int
main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: store_cost costs DB [--n N] [--group G]\n"
                        "       store_cost claims DB --procs P --n N [--durable]\n");
        return 2;
    }
    long n = 10000;
    int group = 100, procs = 2, durable = 0;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--n") == 0 && i + 1 < argc)
            n = atol(argv[++i]);
        else if (strcmp(argv[i], "--group") == 0 && i + 1 < argc)
            group = atoi(argv[++i]);
        else if (strcmp(argv[i], "--procs") == 0 && i + 1 < argc)
            procs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--durable") == 0)
            durable = 1;
        else
            die("argument", argv[i]);
    }
    if (strcmp(argv[1], "costs") == 0)
        return cmd_costs(argv[2], n, group);
    if (strcmp(argv[1], "claims") == 0)
        return cmd_claims(argv[2], procs, n, durable);
    die("command", argv[1]);
    return 2;
}
