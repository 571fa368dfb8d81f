/* exec_drive.c -- wp-exec-drive: plays warmpool's part of the exec-kind protocol
 * (docs/exec-kinds.md) against one zygote, without the rest of warmpool, so that a
 * zygote in any language can be tried and tested end to end.
 *
 *   wp-exec-drive [options] -- COMMAND [ARG...]      (or: -c 'COMMAND LINE')
 *     --kind NAME             the kind's name (default: demo)
 *     --config TEXT           the configuration string sent in hello (default: none)
 *     --max-frame BYTES       max_frame_bytes announced in hello (default 16 MiB)
 *     --ready-timeout-ms MS   wait for ready (default 120000)
 *     --task-timeout-ms MS    each task's timeout_ms, and how long to wait (default 60000)
 *
 * It starts the zygote, waits for ready, then reads commands on stdin, one a line,
 * and answers each with one line on stdout (N is a child's number, from 0):
 *   spawn                  -> spawned N PID | spawn_error RC MESSAGE
 *   task N JSON            -> result N JSON | error N CODE RETRYABLE MESSAGE | fail N RC MESSAGE
 *   validate N JSON        -> valid N | invalid N MESSAGE | fail N RC MESSAGE
 *   bench N COUNT JSON     -> bench N COUNT MEAN_US P50_US P99_US (round trips, one at a time)
 *   kill N                 -> killed N | kill_timeout N      (SIGKILL, then EOF awaited)
 *   close N                -> closed N exited|killed|stuck     (EOF sent; it should exit)
 *   pids                   -> pids ZYGOTE PID... (the live children, in order)
 *   sleep MS               -> slept MS
 *   quit (or end of input) -> exit STATUS (the zygote's, after its channel closed)
 * After a fail, the child is killed and its number is free. The first line is
 * "ready PID CONTEXT_BYTES LOAD_MS VALIDATE", or "not_ready RC MESSAGE" and exit 1. */
#include "common/clock.h"
#include "service/exec_zygote.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#define MAX_CHILDREN 256

static struct exec_child g_children[MAX_CHILDREN];
static int64_t g_task_timeout_ms = 60000;
static size_t g_max = EXEC_PROTO_FRAME_MAX_DEFAULT;
static struct exec_buf g_buf;
static int64_t g_next_id = 1;

static void
usage(void)
{
    fprintf(stderr, "usage: wp-exec-drive [--kind NAME] [--config TEXT] [--max-frame BYTES]\n"
                    "       [--ready-timeout-ms MS] [--task-timeout-ms MS]\n"
                    "       (-- COMMAND [ARG...] | -c 'COMMAND LINE')\n");
    exit(2);
}

static struct exec_child *
child_arg(char **rest)
{
    char *end;
    long n = strtol(*rest, &end, 10);
    if (end == *rest || n < 0 || n >= MAX_CHILDREN || g_children[n].fd < 0)
        return NULL;
    *rest = end + strspn(end, " ");
    return &g_children[n];
}

/* Prints s on one line: newlines become spaces. */
static void
put_line_text(const char *s)
{
    for (; *s; s++)
        putchar(*s == '\n' ? ' ' : *s);
}

static void
do_task(int n, struct exec_child *c, const char *input)
{
    if (!exec_child_usable(c)) {    /* it left, or wrote unasked, since its last task */
        printf("fail %d eof child %d is gone or broken (found before sending)\n", n,
               (int)c->pid);
        exec_child_kill(c, 5000);
        return;
    }
    struct exec_task t = {.id = g_next_id++, .attempt = 1, .timeout_ms = g_task_timeout_ms,
                          .deadline_ms = clock_now_ms() + g_task_timeout_ms,
                          .input = input, .input_len = strlen(input)};
    struct exec_msg r;
    char err[1200];
    int rc = exec_child_task(c, &g_buf, g_max, &t, clock_mono_ms() + g_task_timeout_ms, &r,
                             err, sizeof err);
    if (rc != EXEC_PROTO_OK) {
        printf("fail %d %s ", n, exec_proto_rc_name(rc));
        put_line_text(err);
        putchar('\n');
        exec_child_kill(c, 5000);
        return;
    }
    if (r.type == EXEC_MSG_RESULT) {
        char *text = json_dumps(r.value, JSON_COMPACT | JSON_ENCODE_ANY);
        printf("result %d %s\n", n, text ? text : "?");
        free(text);
    } else {
        printf("error %d %s %d ", n, r.code, r.retryable);
        put_line_text(r.message);
        putchar('\n');
    }
    exec_msg_clear(&r);
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void
do_bench(int n, struct exec_child *c, long count, const char *input)
{
    int64_t *us = calloc((size_t)count, sizeof *us);
    double sum = 0;
    if (us == NULL || count <= 0) {
        printf("fail %d io bad count\n", n);
        free(us);
        return;
    }
    for (long i = 0; i < count; i++) {
        struct exec_task t = {.id = g_next_id++, .attempt = 1,
                              .timeout_ms = g_task_timeout_ms,
                              .deadline_ms = clock_now_ms() + g_task_timeout_ms,
                              .input = input, .input_len = strlen(input)};
        struct exec_msg r;
        char err[1200];
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        int rc = exec_child_task(c, &g_buf, g_max, &t, clock_mono_ms() + g_task_timeout_ms,
                                 &r, err, sizeof err);
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (rc != EXEC_PROTO_OK) {
            printf("fail %d %s ", n, exec_proto_rc_name(rc));
            put_line_text(err);
            putchar('\n');
            exec_child_kill(c, 5000);
            free(us);
            return;
        }
        exec_msg_clear(&r);
        us[i] = (b.tv_sec - a.tv_sec) * 1000000 + (b.tv_nsec - a.tv_nsec) / 1000;
        sum += (double)us[i];
    }
    qsort(us, (size_t)count, sizeof *us, cmp_i64);
    printf("bench %d %ld %.1f %lld %lld\n", n, count, sum / (double)count,
           (long long)us[count / 2], (long long)us[(count * 99) / 100]);
    free(us);
}

int
main(int argc, char **argv)
{
    const char *kind = "demo", *config = NULL, *line = NULL;
    int64_t ready_ms = 120000;
    int i;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            line = argv[++i];
        } else if (strcmp(argv[i], "--kind") == 0 && i + 1 < argc) {
            kind = argv[++i];
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--max-frame") == 0 && i + 1 < argc) {
            g_max = (size_t)strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--ready-timeout-ms") == 0 && i + 1 < argc) {
            ready_ms = strtoll(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--task-timeout-ms") == 0 && i + 1 < argc) {
            g_task_timeout_ms = strtoll(argv[++i], NULL, 10);
        } else {
            usage();
        }
    }
    char err[1200];
    char **cmd = NULL;
    if (line != NULL) {
        if ((cmd = exec_command_split(line, err, sizeof err)) == NULL) {
            fprintf(stderr, "wp-exec-drive: %s\n", err);
            return 2;
        }
    } else if (i >= argc) {
        usage();
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    for (int k = 0; k < MAX_CHILDREN; k++)
        g_children[k] = (struct exec_child){.pid = -1, .fd = -1, .pidfd = -1};

    struct exec_zygote z;
    if (exec_zygote_start(&z, cmd ? cmd : argv + i, kind, config, g_max, err, sizeof err) != 0) {
        printf("not_ready io %s\n", err);
        return 1;
    }
    exec_argv_free(cmd);
    int rc = exec_zygote_wait_ready(&z, clock_mono_ms() + ready_ms, err, sizeof err);
    if (rc != EXEC_PROTO_OK) {
        printf("not_ready %s ", exec_proto_rc_name(rc));
        put_line_text(err);
        putchar('\n');
        int st;
        exec_zygote_stop(&z, 1000, &st);
        return 1;
    }
    printf("ready %d %lld %lld %d\n", (int)z.pid, (long long)z.context_bytes,
           (long long)z.load_ms, z.validate);

    char *buf = NULL;
    size_t cap = 0;
    ssize_t got;
    while ((got = getline(&buf, &cap, stdin)) >= 0) {
        if (got > 0 && buf[got - 1] == '\n')
            buf[--got] = '\0';
        char *rest = buf + strcspn(buf, " ");
        if (*rest)
            *rest++ = '\0';
        struct exec_child *c;
        if (strcmp(buf, "spawn") == 0) {
            int k;
            for (k = 0; k < MAX_CHILDREN && g_children[k].fd >= 0; k++)
                ;
            if (k == MAX_CHILDREN) {
                printf("spawn_error io too many children\n");
                continue;
            }
            rc = exec_zygote_spawn(&z, &g_children[k], clock_mono_ms() + 10000, err, sizeof err);
            if (rc == EXEC_PROTO_OK) {
                printf("spawned %d %d\n", k, (int)g_children[k].pid);
            } else {
                printf("spawn_error %s ", exec_proto_rc_name(rc));
                put_line_text(err);
                putchar('\n');
            }
        } else if (strcmp(buf, "task") == 0 && (c = child_arg(&rest)) != NULL) {
            do_task((int)(c - g_children), c, rest);
        } else if (strcmp(buf, "validate") == 0 && (c = child_arg(&rest)) != NULL) {
            struct exec_msg r;
            int n = (int)(c - g_children);
            rc = exec_child_validate(c, &g_buf, g_max, rest, strlen(rest),
                                     clock_mono_ms() + g_task_timeout_ms, &r, err, sizeof err);
            if (rc != EXEC_PROTO_OK) {
                printf("fail %d %s ", n, exec_proto_rc_name(rc));
                put_line_text(err);
                putchar('\n');
                exec_child_kill(c, 5000);
            } else if (r.type == EXEC_MSG_VALID) {
                printf("valid %d\n", n);
            } else {
                printf("invalid %d ", n);
                put_line_text(r.message);
                putchar('\n');
            }
            exec_msg_clear(&r);
        } else if (strcmp(buf, "bench") == 0 && (c = child_arg(&rest)) != NULL) {
            char *end;
            long count = strtol(rest, &end, 10);
            do_bench((int)(c - g_children), c, count, end + strspn(end, " "));
        } else if (strcmp(buf, "kill") == 0 && (c = child_arg(&rest)) != NULL) {
            int n = (int)(c - g_children);
            printf("%s %d\n", exec_child_kill(c, 5000) == 0 ? "killed" : "kill_timeout", n);
        } else if (strcmp(buf, "close") == 0 && (c = child_arg(&rest)) != NULL) {
            int n = (int)(c - g_children), how = exec_child_close(c, 5000);
            printf("closed %d %s\n", n, how == 0 ? "exited" : how == 1 ? "killed" : "stuck");
        } else if (strcmp(buf, "pids") == 0) {
            printf("pids %d", (int)z.pid);
            for (int k = 0; k < MAX_CHILDREN; k++)
                if (g_children[k].fd >= 0)
                    printf(" %d", (int)g_children[k].pid);
            putchar('\n');
        } else if (strcmp(buf, "sleep") == 0) {
            long ms = strtol(rest, NULL, 10);
            clock_sleep_ms(ms);
            printf("slept %ld\n", ms);
        } else if (strcmp(buf, "quit") == 0) {
            break;
        } else if (buf[0] != '\0') {
            printf("unknown %s\n", buf);
        }
    }
    free(buf);
    for (int k = 0; k < MAX_CHILDREN; k++)
        exec_child_close(&g_children[k], 5000);
    int st;
    exec_zygote_stop(&z, 5000, &st);
    exec_buf_free(&g_buf);
    if (WIFEXITED(st))
        printf("exit %d\n", WEXITSTATUS(st));
    else
        printf("exit signal %d\n", WIFSIGNALED(st) ? WTERMSIG(st) : -1);
    return 0;
}
