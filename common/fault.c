/* fault.c -- the fault points of fault.h, armed by WARMPOOL_FAULTS. */
#include "common/fault.h"

#ifdef WARMPOOL_FAULT_HOOKS
#include "common/clock.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAULT_MAX 32

static struct {
    char name[48];
    long value;
    atomic_long used;           /* fault_countdown() calls so far */
} g_points[FAULT_MAX];
static int g_npoints;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* "a=1,b=250": names up to 47 characters, values decimal */
static void
parse_env(void)
{
    const char *spec = getenv("WARMPOOL_FAULTS");
    while (spec != NULL && *spec != '\0' && g_npoints < FAULT_MAX) {
        size_t len = strcspn(spec, ",");
        const char *eq = memchr(spec, '=', len);
        size_t nlen = eq ? (size_t)(eq - spec) : len;
        if (nlen > 0 && nlen < sizeof g_points[0].name) {
            memcpy(g_points[g_npoints].name, spec, nlen);
            g_points[g_npoints].name[nlen] = '\0';
            g_points[g_npoints].value = eq ? strtol(eq + 1, NULL, 10) : 1;
            g_npoints++;
        }
        spec += len + (spec[len] == ',');
    }
}

static int
find(const char *name)
{
    pthread_once(&g_once, parse_env);
    for (int i = 0; i < g_npoints; i++)
        if (strcmp(g_points[i].name, name) == 0)
            return i;
    return -1;
}

long
fault_value(const char *name)
{
    int i = find(name);
    return i < 0 || g_points[i].value < 0 ? 0 : g_points[i].value;
}

void
fault_pause(const char *name)
{
    long ms = fault_value(name);
    if (ms > 0)
        clock_sleep_ms(ms);
}

int
fault_countdown(const char *name)
{
    int i = find(name);
    if (i < 0)
        return 0;
    return atomic_fetch_add(&g_points[i].used, 1) < g_points[i].value;
}
#endif
