/* log.c -- stderr logging with a timestamp, level, process role and pid. */
#include "common/log.h"
#include "common/clock.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static enum log_level g_level = LOG_INFO;
static const char *g_role = "warmpool";

void log_set_level(enum log_level level) { g_level = level; }
enum log_level log_get_level(void) { return g_level; }
void log_set_role(const char *role) { g_role = role; }

static const char *const NAMES[] = {"error", "warn", "info", "debug"};

int
log_level_parse(const char *text, enum log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(text, NAMES[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
    if (level > g_level)
        return;
    char line[2048];
    char ts[CLOCK_RFC3339_LEN];
    clock_format_rfc3339(clock_now_ms(), ts);
    int n = snprintf(line, sizeof line, "%s %-5s [%s %ld] ", ts, NAMES[level], g_role,
                     (long)getpid());
    if (n < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2)
        len = sizeof line - 2;      /* truncated: keep the newline */
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;                        /* nowhere to report a failed log write */
}
