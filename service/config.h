/* config.h -- warmpool's configuration: flags, their WARMPOOL_* twins, defaults.
 *
 * Every flag --foo-bar has the environment variable WARMPOOL_FOO_BAR; a flag beats
 * its variable; booleans take 1/0/true/false. Bad values are refused before
 * anything starts (exit code 2). */
#ifndef WP_CONFIG_H
#define WP_CONFIG_H

#include "common/log.h"
#include "service/cron.h"

#include <stddef.h>
#include <stdint.h>

#define CONFIG_MAX_PLUGINS 16
#define CONFIG_MAX_KIND_CONFIGS 32
#define CONFIG_MAX_CORS_ORIGINS 16
#define CONFIG_MAX_EXEC_KINDS 16
#define CONFIG_MAX_SCHEDULES 32
#define CONFIG_MAX_CALLBACK_ALLOW 32
#define CONFIG_MAX_KIND_LIMITS 32

struct config {
    char listen_host[256];
    int listen_port;
    char db_path[4096];         /* a path (SQLite) or a postgres:// URI (store.h) */
    int workers;                /* 1..1024; default: number of CPUs */
    int64_t max_body_bytes;     /* request body cap */
    int64_t task_timeout_ms;    /* default timeout_ms of a task */
    int64_t grace_ms;           /* how long a SIGTERM drain waits for running tasks */
    int64_t load_timeout_ms;    /* how long a zygote may take to load every context */
    int64_t retry_base_ms;      /* first retry delay of a failed attempt; doubles */
    int enable_test_kinds;
    enum log_level log_level;
    enum log_format log_format; /* --log-format text|json */
    int http_threads;
    int64_t max_connections;    /* open HTTP connections at once */
    int64_t max_connections_per_ip; /* ... from one client address; 0 = no cap */
    int64_t max_pending;        /* submissions past this many pending tasks get 503; 0 = no cap */
    int64_t max_tasks_per_worker;   /* a worker exits after this many attempts; 0 = never */
    int64_t max_worker_rss_mb;  /* ... or once its RSS passes this; 0 = never */
    int64_t retention_ms;       /* terminal tasks older than this are deleted; 0 = keep */
    int64_t lease_ms;           /* silent this long, the others take its running tasks */
    int durability_normal;      /* --durability normal: submissions commit without waiting
                                 * for the disk (STORE_RELAXED); 0 = full (STORE_DURABLE) */
    char api_token[512];        /* "" = no authentication */
    char metrics_token[512];    /* "" = GET /metrics is open */
    int64_t max_event_streams;  /* GET /v1/events streams at once (< max_connections) */
    int healthcheck;            /* "warmpool healthcheck": probe /healthz and exit */
    const char *plugins[CONFIG_MAX_PLUGINS];    /* --plugin, in order given */
    int nplugins;
    struct {
        const char *name;       /* kind name */
        const char *value;      /* its configuration string */
    } kind_configs[CONFIG_MAX_KIND_CONFIGS];    /* --kind-config NAME=VALUE */
    int nkind_configs;
    const char *cors_origins[CONFIG_MAX_CORS_ORIGINS];  /* --cors-origin: "*" or
                                                         * scheme://host[:port] */
    int ncors_origins;
    struct {
        const char *name;       /* kind name, [a-z0-9_.-]{1,64} */
        const char *command;    /* COMMAND as given */
        char **argv;            /* COMMAND split into words (exec_command_split) */
    } exec_kinds[CONFIG_MAX_EXEC_KINDS];        /* --exec-kind NAME=COMMAND, in order */
    int nexec_kinds;
    /* --schedule NAME=CRON KIND INPUT_JSON (issue 13): periodic tasks, submitted by the
     * agent (service/schedule.c) */
    struct config_schedule {
        char name[65];          /* [a-z0-9_.-]{1,64} */
        char expr[128];         /* the cron expression as given */
        struct cron cron;
        char kind[65];
        char *input;            /* compact JSON text (allocated) */
    } schedules[CONFIG_MAX_SCHEDULES];
    int nschedules;
    /* completion callbacks (issue 13, service/callbacks.c) */
    const char *callback_allow[CONFIG_MAX_CALLBACK_ALLOW];  /* HOST[:PORT] */
    int ncallback_allow;
    char callback_secret[512];  /* "" = deliveries are not signed */
    struct {
        char name[65];          /* kind name, [a-z0-9_.-]{1,64} */
        int max;                /* at most this many of its tasks running at once */
    } kind_limits[CONFIG_MAX_KIND_LIMITS];      /* --kind-concurrency NAME=N (issue 13) */
    int nkind_limits;
};

/* The configuration string of kind `name` (--kind-config, or --scan-rules for
 * `scan`), or NULL. The last one given wins. */
const char *config_kind_config(const struct config *cfg, const char *name);

enum { CONFIG_OK = 0, CONFIG_HELP = 1, CONFIG_ERROR = 2 };

/* Fills cfg from defaults, then the environment (envp-style lookup via getenv), then
 * argv. CONFIG_OK; CONFIG_HELP after printing the help to stdout; CONFIG_ERROR with
 * the reason in err. */
int config_parse(int argc, char **argv, struct config *cfg, char *err, size_t errlen);
/* Prints every flag, its variable and default. */
void config_print_help(const char *prog);
/* Frees what config_parse() allocated (kind names, exec kinds' argv). */
void config_free(struct config *cfg);

#endif
