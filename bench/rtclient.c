/* rtclient.c -- one client, one request at a time, on one kept-alive connection: the
 * round trip of bench/run.sh hot, without a Python client's own 0.1-0.2 ms per request.
 *
 *   rtclient task HOST PORT N WARMUP   POST /v1/tasks?wait=10 {"kind":"echo",...}: each
 *                                      answer must be 200 with "state":"succeeded"
 *   rtclient plain HOST PORT N WARMUP  POST / (nginx's `return 200`: the floor of one
 *                                      HTTP round trip on this machine with this client)
 *
 * Prints one JSON object: n, p50_ms, p90_ms, p99_ms, p999_ms, max_ms, mean_ms (the first
 * WARMUP round trips are not counted). Exit 1 on a wrong answer or a broken connection. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double
pct(const double *v, int n, double q)
{
    int i = (int)(q / 100 * (n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* Reads one HTTP answer into buf (NUL-terminated). Its status, or -1. */
static int
read_answer(int fd, char *buf, size_t cap, const char **body)
{
    size_t len = 0;
    char *end = NULL;
    while (end == NULL) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n <= 0)
            return -1;
        len += (size_t)n;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end == NULL && len == cap - 1)
            return -1;
    }
    size_t head = (size_t)(end + 4 - buf), clen = 0;
    for (char *p = buf; p < end; p = strstr(p, "\r\n") + 2) {
        if (strncasecmp(p, "Content-Length:", 15) == 0)
            clen = strtoul(p + 15, NULL, 10);
        if (strstr(p, "\r\n") == NULL)
            break;
    }
    if (head + clen > cap - 1)
        return -1;
    while (len < head + clen) {
        ssize_t n = read(fd, buf + len, head + clen - len);
        if (n <= 0)
            return -1;
        len += (size_t)n;
    }
    buf[len] = '\0';
    *body = buf + head;
    return (int)strtol(buf + 9, NULL, 10);     /* "HTTP/1.1 200" */
}

int
main(int argc, char **argv)
{
    if (argc != 6 || (strcmp(argv[1], "task") != 0 && strcmp(argv[1], "plain") != 0)) {
        fprintf(stderr, "usage: %s task|plain HOST PORT N WARMUP\n", argv[0]);
        return 2;
    }
    int task = strcmp(argv[1], "task") == 0, n = atoi(argv[4]), warm = atoi(argv[5]);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3]))};
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (n < 1 || warm < 0 || inet_pton(AF_INET, argv[2], &sa.sin_addr) != 1 || fd < 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("rtclient: connect");
        return 1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    double *t = malloc(sizeof *t * (size_t)n);
    static char buf[65536];
    for (int i = 0; t != NULL && i < n + warm; i++) {
        char body[128], req[512];
        int blen = snprintf(body, sizeof body, "{\"kind\":\"echo\",\"input\":{\"rt\":%d}}", i);
        int rlen = snprintf(req, sizeof req,
                            "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                            "Content-Length: %d\r\n\r\n%s",
                            task ? "/v1/tasks?wait=10" : "/", argv[2], blen, body);
        double t0 = now_ms();
        const char *answer = "";
        int status = write(fd, req, (size_t)rlen) == rlen
                         ? read_answer(fd, buf, sizeof buf, &answer) : -1;
        double dt = now_ms() - t0;
        if (status != 200 || (task && strstr(answer, "\"state\":\"succeeded\"") == NULL)) {
            fprintf(stderr, "rtclient: round trip %d: status %d: %.300s\n", i, status, answer);
            return 1;
        }
        if (i >= warm)
            t[i - warm] = dt;
    }
    if (t == NULL)
        return 1;
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += t[i];
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    printf("{\"client\": \"rtclient %s\", \"n\": %d, \"p50_ms\": %.4f, \"p90_ms\": %.4f, "
           "\"p99_ms\": %.4f, \"p999_ms\": %.4f, \"max_ms\": %.4f, \"mean_ms\": %.4f}\n",
           argv[1], n, pct(t, n, 50), pct(t, n, 90), pct(t, n, 99), pct(t, n, 99.9), t[n - 1],
           sum / n);
    free(t);
    close(fd);
    return 0;
}
