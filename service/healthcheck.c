/* healthcheck.c -- a tiny HTTP/1.0 client for one GET /healthz. */
#include "service/healthcheck.h"

#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int
connect_to(const char *host, int port)
{
    char serv[16];
    snprintf(serv, sizeof serv, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, serv, &hints, &res) != 0)
        return -1;
    int fd = -1;
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0)
            continue;
        struct timeval tv = {.tv_sec = 3};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

int
healthcheck_run(const struct config *cfg)
{
    const char *host = cfg->listen_host;
    if (strcmp(host, "0.0.0.0") == 0 || host[0] == '\0')
        host = "127.0.0.1";
    else if (strcmp(host, "::") == 0)
        host = "::1";
    int fd = connect_to(host, cfg->listen_port);
    if (fd < 0) {
        fprintf(stderr, "healthcheck: cannot connect to %s:%d\n", host, cfg->listen_port);
        return 1;
    }
    const char req[] = "GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n";
    char buf[64] = "";
    ssize_t n = -1;
    if (write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1))
        n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    /* "HTTP/1.0 200 OK" or "HTTP/1.1 200 OK" */
    if (n >= 12 && strncmp(buf, "HTTP/1.", 7) == 0 && strncmp(buf + 8, " 200", 4) == 0)
        return 0;
    fprintf(stderr, "healthcheck: /healthz answered: %.40s\n", buf);
    return 1;
}
