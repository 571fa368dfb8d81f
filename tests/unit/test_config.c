/* test_config.c -- flags, their WARMPOOL_* twins and defaults (service/config.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "service/config.h"

static const char *const ENV_VARS[] = {
    "WARMPOOL_LISTEN", "WARMPOOL_DB", "WARMPOOL_WORKERS", "WARMPOOL_MAX_BODY",
    "WARMPOOL_TASK_TIMEOUT_MS", "WARMPOOL_GRACE_MS", "WARMPOOL_LOAD_TIMEOUT_MS",
    "WARMPOOL_RETRY_BASE_MS",
    "WARMPOOL_ENABLE_TEST_KINDS", "WARMPOOL_LOG_LEVEL", "WARMPOOL_HTTP_THREADS",
    "WARMPOOL_MAX_CONNECTIONS", "WARMPOOL_MAX_CONNECTIONS_PER_IP", "WARMPOOL_LOG_FORMAT",
    "WARMPOOL_CORS_ORIGIN", "WARMPOOL_API_TOKEN", "WARMPOOL_EXEC_KIND", "WARMPOOL_KIND_CONFIG",
    "WARMPOOL_LEASE_MS",
    "WARMPOOL_METRICS_TOKEN", "WARMPOOL_MAX_EVENT_STREAMS", "WARMPOOL_DURABILITY",
    "WARMPOOL_SCHEDULE", "WARMPOOL_PLUGIN", "WARMPOOL_CALLBACK_ALLOW", "WARMPOOL_CALLBACK_SECRET",
    "WARMPOOL_KIND_CONCURRENCY",
};

static int
clear_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof ENV_VARS / sizeof ENV_VARS[0]; i++)
        unsetenv(ENV_VARS[i]);
    return 0;
}

static char g_err[512];
static struct config g_cfg;
static int g_parsed;            /* g_cfg holds what a parse allocated */

/* config_parse over a NULL-terminated list of arguments after the program name */
static int
parse_v(const char *first, va_list ap)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"warmpool";
    for (const char *a = first; a != NULL; a = va_arg(ap, const char *)) {
        assert_true(argc < 31);
        argv[argc++] = (char *)a;
    }
    argv[argc] = NULL;
    g_err[0] = '\0';
    if (g_parsed)
        config_free(&g_cfg);
    memset(&g_cfg, 0xa5, sizeof g_cfg);
    g_parsed = 1;
    return config_parse(argc, argv, &g_cfg, g_err, sizeof g_err);
}

static int
parse(const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    int rc = parse_v(first, ap);
    va_end(ap);
    return rc;
}

/* Expects CONFIG_ERROR with a message that contains `needle`. */
static void
expect_error(const char *needle, const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    int rc = parse_v(first, ap);
    va_end(ap);
    if (rc != CONFIG_ERROR || strstr(g_err, needle) == NULL)
        print_error("want CONFIG_ERROR naming '%s'; got %d, '%s'\n", needle, rc, g_err);
    assert_int_equal(rc, CONFIG_ERROR);
    assert_non_null(strstr(g_err, needle));
}

static void
test_defaults(void **state)
{
    (void)state;
    assert_int_equal(parse(NULL), CONFIG_OK);
    assert_string_equal(g_cfg.listen_host, "127.0.0.1");
    assert_int_equal(g_cfg.listen_port, 8080);
    assert_string_equal(g_cfg.db_path, "./data/warmpool.db");
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    assert_true(ncpu >= 1);
    assert_int_equal(g_cfg.workers, ncpu > 1024 ? 1024 : ncpu);
    assert_int_equal(g_cfg.max_body_bytes, 1048576);
    assert_int_equal(g_cfg.task_timeout_ms, 300000);
    assert_int_equal(g_cfg.grace_ms, 30000);
    assert_int_equal(g_cfg.load_timeout_ms, 600000);
    assert_int_equal(g_cfg.retry_base_ms, 1000);
    assert_int_equal(g_cfg.enable_test_kinds, 0);
    assert_int_equal(g_cfg.log_level, LOG_INFO);
    assert_int_equal(g_cfg.http_threads, 2);
    assert_int_equal(g_cfg.max_connections, 1000);
    assert_int_equal(g_cfg.max_connections_per_ip, 0);
    assert_int_equal(g_cfg.healthcheck, 0);
    assert_int_equal(g_cfg.log_format, LOG_FORMAT_TEXT);
    assert_int_equal(g_cfg.ncors_origins, 0);
    assert_int_equal(g_cfg.lease_ms, 10000);
    assert_string_equal(g_cfg.metrics_token, "");
    assert_int_equal(g_cfg.max_event_streams, 64);
    assert_int_equal(g_cfg.durability_normal, 0);
}

/* Checks every field set by test_each_flag's argument lists. */
static void
check_all_set(void)
{
    assert_string_equal(g_cfg.listen_host, "0.0.0.0");
    assert_int_equal(g_cfg.listen_port, 9090);
    assert_string_equal(g_cfg.db_path, "/var/tmp/x y/w.db");
    assert_int_equal(g_cfg.workers, 7);
    assert_int_equal(g_cfg.max_body_bytes, 2048);
    assert_int_equal(g_cfg.task_timeout_ms, 5000);
    assert_int_equal(g_cfg.grace_ms, 0);
    assert_int_equal(g_cfg.load_timeout_ms, 1500);
    assert_int_equal(g_cfg.retry_base_ms, 250);
    assert_int_equal(g_cfg.enable_test_kinds, 1);
    assert_int_equal(g_cfg.log_level, LOG_DEBUG);
    assert_int_equal(g_cfg.http_threads, 4);
    assert_int_equal(g_cfg.max_connections, 50);
    assert_int_equal(g_cfg.max_connections_per_ip, 8);
    assert_int_equal(g_cfg.lease_ms, 2500);
    assert_int_equal(g_cfg.healthcheck, 0);
}

static void
test_each_flag_separate_value(void **state)
{
    (void)state;
    assert_int_equal(parse("--listen", "0.0.0.0:9090", "--db", "/var/tmp/x y/w.db",
                           "--workers", "7", "--max-body", "2048", "--task-timeout-ms", "5000",
                           "--grace-ms", "0", "--load-timeout-ms", "1500", "--retry-base-ms", "250",
                           "--enable-test-kinds",
                           "--log-level", "debug", "--http-threads", "4", "--max-connections",
                           "50", "--max-connections-per-ip", "8", "--lease-ms", "2500", NULL),
                     CONFIG_OK);
    check_all_set();
}

static void
test_each_flag_equals_value(void **state)
{
    (void)state;
    assert_int_equal(parse("--listen=0.0.0.0:9090", "--db=/var/tmp/x y/w.db", "--workers=7",
                           "--max-body=2048", "--task-timeout-ms=5000", "--grace-ms=0",
                           "--load-timeout-ms=1500",
                           "--retry-base-ms=250", "--enable-test-kinds=1", "--log-level=debug",
                           "--http-threads=4", "--max-connections=50",
                           "--max-connections-per-ip=8", "--lease-ms=2500", NULL),
                     CONFIG_OK);
    check_all_set();
}

static void
test_env_twins(void **state)
{
    (void)state;
    setenv("WARMPOOL_LISTEN", "0.0.0.0:9090", 1);
    setenv("WARMPOOL_DB", "/var/tmp/x y/w.db", 1);
    setenv("WARMPOOL_WORKERS", "7", 1);
    setenv("WARMPOOL_MAX_BODY", "2048", 1);
    setenv("WARMPOOL_TASK_TIMEOUT_MS", "5000", 1);
    setenv("WARMPOOL_GRACE_MS", "0", 1);
    setenv("WARMPOOL_LOAD_TIMEOUT_MS", "1500", 1);
    setenv("WARMPOOL_RETRY_BASE_MS", "250", 1);
    setenv("WARMPOOL_ENABLE_TEST_KINDS", "true", 1);
    setenv("WARMPOOL_LOG_LEVEL", "debug", 1);
    setenv("WARMPOOL_HTTP_THREADS", "4", 1);
    setenv("WARMPOOL_MAX_CONNECTIONS", "50", 1);
    setenv("WARMPOOL_MAX_CONNECTIONS_PER_IP", "8", 1);
    setenv("WARMPOOL_LEASE_MS", "2500", 1);
    assert_int_equal(parse(NULL), CONFIG_OK);
    check_all_set();
}

static void
test_flag_beats_variable(void **state)
{
    (void)state;
    setenv("WARMPOOL_WORKERS", "3", 1);
    setenv("WARMPOOL_LOG_LEVEL", "error", 1);
    setenv("WARMPOOL_LISTEN", "10.0.0.1:1", 1);
    setenv("WARMPOOL_ENABLE_TEST_KINDS", "1", 1);
    assert_int_equal(parse("--workers", "5", "--log-level=warn", "--enable-test-kinds=false",
                           NULL),
                     CONFIG_OK);
    assert_int_equal(g_cfg.workers, 5);
    assert_int_equal(g_cfg.log_level, LOG_WARN);
    assert_int_equal(g_cfg.enable_test_kinds, 0);
    /* a variable with no flag still counts */
    assert_string_equal(g_cfg.listen_host, "10.0.0.1");
    assert_int_equal(g_cfg.listen_port, 1);

    /* the last of two flags wins */
    assert_int_equal(parse("--workers", "2", "--workers=9", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.workers, 9);
}

/* --db: a path, or a PostgreSQL URI; a URI libpq cannot read is refused without being
 * repeated (it may hold a password); --lease-ms within its range */
static void
test_db_uri_and_lease(void **state)
{
    (void)state;
    assert_int_equal(parse("--db", "postgresql://u:pw@db.example:5433/wp?sslmode=require", NULL),
                     CONFIG_OK);
    assert_string_equal(g_cfg.db_path, "postgresql://u:pw@db.example:5433/wp?sslmode=require");
    setenv("WARMPOOL_DB", "postgres://localhost/warmpool", 1);
    assert_int_equal(parse(NULL), CONFIG_OK);
    assert_string_equal(g_cfg.db_path, "postgres://localhost/warmpool");
    unsetenv("WARMPOOL_DB");
    expect_error("--db: not a PostgreSQL connection URI", "--db",
                 "postgresql://u:hunter2@h/db?nosuchparam=1", NULL);
    assert_null(strstr(g_err, "hunter2"));
    expect_error("--db: not a PostgreSQL connection URI", "--db", "postgres://u:hunter2@[::1/db",
                 NULL);
    assert_null(strstr(g_err, "hunter2"));
    expect_error("--lease-ms", "--lease-ms", "499", NULL);
    expect_error("--lease-ms", "--lease-ms", "3600001", NULL);
    setenv("WARMPOOL_LEASE_MS", "abc", 1);
    expect_error("WARMPOOL_LEASE_MS", NULL);
    unsetenv("WARMPOOL_LEASE_MS");
    assert_int_equal(parse("--lease-ms", "500", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.lease_ms, 500);
}

static void
test_booleans(void **state)
{
    (void)state;
    struct { const char *arg; int want; } cases[] = {
        {"--enable-test-kinds", 1},       {"--enable-test-kinds=1", 1},
        {"--enable-test-kinds=true", 1},  {"--enable-test-kinds=0", 0},
        {"--enable-test-kinds=false", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(parse(cases[i].arg, NULL), CONFIG_OK);
        assert_int_equal(g_cfg.enable_test_kinds, cases[i].want);
    }
    const char *env[] = {"1", "true", "0", "false"};
    int want[] = {1, 1, 0, 0};
    for (size_t i = 0; i < 4; i++) {
        setenv("WARMPOOL_ENABLE_TEST_KINDS", env[i], 1);
        assert_int_equal(parse(NULL), CONFIG_OK);
        assert_int_equal(g_cfg.enable_test_kinds, want[i]);
    }
    unsetenv("WARMPOOL_ENABLE_TEST_KINDS");
    expect_error("--enable-test-kinds", "--enable-test-kinds=yes", NULL);
    expect_error("--enable-test-kinds", "--enable-test-kinds=", NULL);
    setenv("WARMPOOL_ENABLE_TEST_KINDS", "2", 1);
    expect_error("WARMPOOL_ENABLE_TEST_KINDS", NULL);
}

static void
test_bad_workers(void **state)
{
    (void)state;
    expect_error("--workers", "--workers", "0", NULL);
    expect_error("--workers", "--workers", "1025", NULL);
    expect_error("--workers", "--workers", "abc", NULL);
    expect_error("--workers", "--workers=", NULL);
    expect_error("--workers", "--workers", "5x", NULL);
    expect_error("--workers", "--workers", "-1", NULL);
    expect_error("--workers", "--workers", "99999999999999999999", NULL);
    assert_int_equal(parse("--workers", "1", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.workers, 1);
    assert_int_equal(parse("--workers", "1024", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.workers, 1024);

    setenv("WARMPOOL_WORKERS", "0", 1);
    expect_error("WARMPOOL_WORKERS", NULL);
    setenv("WARMPOOL_WORKERS", "abc", 1);
    expect_error("WARMPOOL_WORKERS", NULL);
}

static void
test_bad_other_values(void **state)
{
    (void)state;
    expect_error("--log-level", "--log-level", "loud", NULL);
    expect_error("--log-level", "--log-level=INFO", NULL);
    expect_error("--listen", "--listen", "nohost", NULL);
    expect_error("--listen", "--listen", "1.2.3.4:70000", NULL);
    expect_error("--listen", "--listen", "1.2.3.4:65536", NULL);
    expect_error("--listen", "--listen", "1.2.3.4:", NULL);
    expect_error("--listen", "--listen", ":8080", NULL);
    expect_error("--listen", "--listen", "1.2.3.4:80a", NULL);
    expect_error("--listen", "--listen", "[::1]", NULL);
    expect_error("--max-body", "--max-body", "0", NULL);
    expect_error("--task-timeout-ms", "--task-timeout-ms", "0", NULL);
    expect_error("--task-timeout-ms", "--task-timeout-ms", "86400001", NULL);
    expect_error("--grace-ms", "--grace-ms", "-1", NULL);
    expect_error("--load-timeout-ms", "--load-timeout-ms", "0", NULL);
    expect_error("--load-timeout-ms", "--load-timeout-ms", "86400001", NULL);
    expect_error("--load-timeout-ms", "--load-timeout-ms", "soon", NULL);
    expect_error("--max-connections", "--max-connections", "0", NULL);
    expect_error("--max-connections", "--max-connections", "1000001", NULL);
    expect_error("--max-connections-per-ip", "--max-connections-per-ip", "-1", NULL);
    expect_error("--max-connections-per-ip", "--max-connections-per-ip", "lots", NULL);
    expect_error("--db", "--db=", NULL);
    setenv("WARMPOOL_LOG_LEVEL", "loud", 1);
    expect_error("WARMPOOL_LOG_LEVEL", NULL);
    unsetenv("WARMPOOL_LOG_LEVEL");
    setenv("WARMPOOL_LISTEN", "nohost", 1);
    expect_error("WARMPOOL_LISTEN", NULL);
}

static void
test_unknown_flag_and_missing_value(void **state)
{
    (void)state;
    expect_error("--bogus", "--bogus", NULL);
    expect_error("--bogus", "--bogus=1", NULL);
    expect_error("--work", "--work", "3", NULL);          /* no prefix matching */
    expect_error("--workers", "--workers", NULL);          /* missing value */
    expect_error("--listen", "--db", "x.db", "--listen", NULL);
    expect_error("extra", "extra", NULL);                  /* a stray argument */
    expect_error("healthcheck", "--workers", "2", "healthcheck", NULL);
}

static void
test_help(void **state)
{
    (void)state;
    assert_int_equal(parse("--help", NULL), CONFIG_HELP);
    assert_int_equal(parse("--workers", "2", "--help", NULL), CONFIG_HELP);
    assert_int_equal(parse("-h", NULL), CONFIG_HELP);
}

static void
test_healthcheck(void **state)
{
    (void)state;
    assert_int_equal(parse("healthcheck", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.healthcheck, 1);
    assert_int_equal(parse("healthcheck", "--listen", "127.0.0.1:9999", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.healthcheck, 1);
    assert_int_equal(g_cfg.listen_port, 9999);
    assert_int_equal(parse("--workers", "2", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.healthcheck, 0);
}

static void
test_log_format(void **state)
{
    (void)state;
    assert_int_equal(parse("--log-format", "json", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.log_format, LOG_FORMAT_JSON);
    assert_int_equal(parse("--log-format=text", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.log_format, LOG_FORMAT_TEXT);
    setenv("WARMPOOL_LOG_FORMAT", "json", 1);
    assert_int_equal(parse(NULL), CONFIG_OK);
    assert_int_equal(g_cfg.log_format, LOG_FORMAT_JSON);
    assert_int_equal(parse("--log-format", "text", NULL), CONFIG_OK);   /* flag wins */
    assert_int_equal(g_cfg.log_format, LOG_FORMAT_TEXT);
    expect_error("--log-format", "--log-format", "JSON", NULL);
    expect_error("--log-format", "--log-format", "logfmt", NULL);
    expect_error("--log-format", "--log-format=", NULL);
    setenv("WARMPOOL_LOG_FORMAT", "yaml", 1);
    expect_error("WARMPOOL_LOG_FORMAT", NULL);
}

/* --durability full|normal, and WARMPOOL_DURABILITY */
static void
test_durability(void **state)
{
    (void)state;
    assert_int_equal(parse("--durability", "normal", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.durability_normal, 1);
    assert_int_equal(parse("--durability=full", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.durability_normal, 0);
    setenv("WARMPOOL_DURABILITY", "normal", 1);
    assert_int_equal(parse(NULL), CONFIG_OK);
    assert_int_equal(g_cfg.durability_normal, 1);
    assert_int_equal(parse("--durability", "full", NULL), CONFIG_OK);   /* flag wins */
    assert_int_equal(g_cfg.durability_normal, 0);
    expect_error("--durability", "--durability", "FULL", NULL);
    expect_error("--durability", "--durability", "off", NULL);
    expect_error("--durability", "--durability=", NULL);
    setenv("WARMPOOL_DURABILITY", "relaxed", 1);
    expect_error("WARMPOOL_DURABILITY", NULL);
}

static void
test_cors_origins(void **state)
{
    (void)state;
    assert_int_equal(parse("--cors-origin", "https://app.example.com", "--cors-origin",
                           "http://localhost:3000", "--cors-origin=http://[::1]:8081", NULL),
                     CONFIG_OK);
    assert_int_equal(g_cfg.ncors_origins, 3);
    assert_string_equal(g_cfg.cors_origins[0], "https://app.example.com");
    assert_string_equal(g_cfg.cors_origins[1], "http://localhost:3000");
    assert_string_equal(g_cfg.cors_origins[2], "http://[::1]:8081");
    assert_int_equal(parse("--cors-origin", "*", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.ncors_origins, 1);
    assert_string_equal(g_cfg.cors_origins[0], "*");

    /* the variable is a comma-separated list; a flag replaces it */
    setenv("WARMPOOL_CORS_ORIGIN", "http://a.test,https://b.test:8443", 1);
    assert_int_equal(parse(NULL), CONFIG_OK);
    assert_int_equal(g_cfg.ncors_origins, 2);
    assert_string_equal(g_cfg.cors_origins[1], "https://b.test:8443");
    assert_int_equal(parse("--cors-origin", "http://c.test", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.ncors_origins, 1);
    assert_string_equal(g_cfg.cors_origins[0], "http://c.test");
    setenv("WARMPOOL_CORS_ORIGIN", "http://a.test,nope", 1);
    expect_error("WARMPOOL_CORS_ORIGIN", NULL);
    unsetenv("WARMPOOL_CORS_ORIGIN");

    /* not origins: a path, a trailing slash, upper case, another scheme, a bad port */
    const char *bad[] = {"https://app.example.com/", "https://app.example.com/x",
                         "https://App.example.com", "ftp://a.test", "a.test", "http://",
                         "http://a.test:0", "http://a.test:65536", "http://a.test:8x",
                         "http://a.test:", "null", "", "http://[::1", "**"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_error("--cors-origin", "--cors-origin", bad[i], NULL);

    /* "*" only without a token, however the token is given */
    expect_error("'*' is refused", "--cors-origin", "*", "--api-token", "t", NULL);
    expect_error("'*' is refused", "--api-token", "t", "--cors-origin", "*", NULL);
    setenv("WARMPOOL_API_TOKEN", "t", 1);
    expect_error("'*' is refused", "--cors-origin", "*", NULL);
    assert_int_equal(parse("--cors-origin", "https://app.example.com", NULL), CONFIG_OK);
    unsetenv("WARMPOOL_API_TOKEN");

    /* at most CONFIG_MAX_CORS_ORIGINS */
    char many[1024] = "";
    for (int i = 0; i <= CONFIG_MAX_CORS_ORIGINS; i++) {
        char one[40];
        snprintf(one, sizeof one, "%shttp://h%d.test", i ? "," : "", i);
        strcat(many, one);
    }
    setenv("WARMPOOL_CORS_ORIGIN", many, 1);
    expect_error("more than", NULL);
}

/* --metrics-token (GET /metrics) and --max-event-streams (GET /v1/events), with their
 * variables; the streams' cap must leave connections for the rest of the API. */
static void
test_metrics_and_streams(void **state)
{
    (void)state;
    assert_int_equal(parse("--metrics-token", "scrape-me", NULL), CONFIG_OK);
    assert_string_equal(g_cfg.metrics_token, "scrape-me");
    assert_string_equal(g_cfg.api_token, "");           /* a token of its own */
    assert_int_equal(parse("--metrics-token=m", "--api-token", "a", NULL), CONFIG_OK);
    assert_string_equal(g_cfg.metrics_token, "m");
    assert_string_equal(g_cfg.api_token, "a");
    setenv("WARMPOOL_METRICS_TOKEN", "from-env", 1);
    assert_int_equal(parse(NULL), CONFIG_OK);
    assert_string_equal(g_cfg.metrics_token, "from-env");
    assert_int_equal(parse("--metrics-token", "flag", NULL), CONFIG_OK);
    assert_string_equal(g_cfg.metrics_token, "flag");
    unsetenv("WARMPOOL_METRICS_TOKEN");
    char longtoken[600];
    memset(longtoken, 't', sizeof longtoken - 1);
    longtoken[sizeof longtoken - 1] = '\0';
    expect_error("--metrics-token", "--metrics-token", longtoken, NULL);

    /* the streams' default: 64, or half of --max-connections when that is less */
    assert_int_equal(parse("--max-connections", "50", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.max_event_streams, 25);
    assert_int_equal(parse("--max-connections", "1", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.max_event_streams, 0);
    assert_int_equal(parse("--max-event-streams", "10", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.max_event_streams, 10);
    assert_int_equal(parse("--max-event-streams=0", NULL), CONFIG_OK);   /* no streams */
    assert_int_equal(g_cfg.max_event_streams, 0);
    assert_int_equal(parse("--max-event-streams", "999", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.max_event_streams, 999);
    setenv("WARMPOOL_MAX_EVENT_STREAMS", "12", 1);
    assert_int_equal(parse(NULL), CONFIG_OK);
    assert_int_equal(g_cfg.max_event_streams, 12);
    assert_int_equal(parse("--max-event-streams", "7", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.max_event_streams, 7);
    setenv("WARMPOOL_MAX_EVENT_STREAMS", "many", 1);
    expect_error("WARMPOOL_MAX_EVENT_STREAMS", NULL);
    unsetenv("WARMPOOL_MAX_EVENT_STREAMS");
    expect_error("--max-event-streams", "--max-event-streams", "-1", NULL);
    expect_error("--max-event-streams", "--max-event-streams", "lots", NULL);
    expect_error("--max-event-streams", "--max-event-streams", "1000001", NULL);
    expect_error("must be less than --max-connections", "--max-event-streams", "1000", NULL);
    expect_error("must be less than --max-connections", "--max-connections", "20",
                 "--max-event-streams", "20", NULL);
    assert_int_equal(parse("--max-connections", "20", "--max-event-streams", "19", NULL),
                     CONFIG_OK);
}

static void
test_listen_forms(void **state)
{
    (void)state;
    assert_int_equal(parse("--listen", "[::1]:9000", NULL), CONFIG_OK);
    assert_string_equal(g_cfg.listen_host, "::1");
    assert_int_equal(g_cfg.listen_port, 9000);
    assert_int_equal(parse("--listen=localhost:0", NULL), CONFIG_OK);
    assert_string_equal(g_cfg.listen_host, "localhost");
    assert_int_equal(g_cfg.listen_port, 0);
    assert_int_equal(parse("--listen=127.0.0.1:65535", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.listen_port, 65535);
}

static void
test_exec_kinds(void **state)
{
    (void)state;
    assert_int_equal(parse(NULL), CONFIG_OK);
    assert_int_equal(g_cfg.nexec_kinds, 0);
    assert_int_equal(parse("--exec-kind", "table=python3 'my kind.py' --mb 64",
                           "--exec-kind=squares=node zygote.js", "--kind-config", "table=mb=8",
                           NULL), CONFIG_OK);
    assert_int_equal(g_cfg.nexec_kinds, 2);
    assert_string_equal(g_cfg.exec_kinds[0].name, "table");
    assert_string_equal(g_cfg.exec_kinds[0].command, "python3 'my kind.py' --mb 64");
    assert_string_equal(g_cfg.exec_kinds[0].argv[0], "python3");
    assert_string_equal(g_cfg.exec_kinds[0].argv[1], "my kind.py");
    assert_string_equal(g_cfg.exec_kinds[0].argv[2], "--mb");
    assert_string_equal(g_cfg.exec_kinds[0].argv[3], "64");
    assert_null(g_cfg.exec_kinds[0].argv[4]);
    assert_string_equal(g_cfg.exec_kinds[1].name, "squares");
    assert_string_equal(g_cfg.exec_kinds[1].argv[0], "node");
    assert_string_equal(config_kind_config(&g_cfg, "table"), "mb=8");

    /* the variable: ';'-separated, and a flag replaces all of it */
    setenv("WARMPOOL_EXEC_KIND", "a=python3 a.py;b.x-y_1=/bin/b --flag", 1);
    assert_int_equal(parse(NULL), CONFIG_OK);
    assert_int_equal(g_cfg.nexec_kinds, 2);
    assert_string_equal(g_cfg.exec_kinds[0].name, "a");
    assert_string_equal(g_cfg.exec_kinds[1].name, "b.x-y_1");
    assert_string_equal(g_cfg.exec_kinds[1].argv[1], "--flag");
    assert_int_equal(parse("--exec-kind", "c=cmd", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.nexec_kinds, 1);
    assert_string_equal(g_cfg.exec_kinds[0].name, "c");
    setenv("WARMPOOL_EXEC_KIND", "bad", 1);
    expect_error("WARMPOOL_EXEC_KIND", NULL);
    unsetenv("WARMPOOL_EXEC_KIND");

    /* bad names and commands: exit 2 with a reason */
    expect_error("NAME=COMMAND", "--exec-kind", "python3 x.py", NULL);
    expect_error("NAME=COMMAND", "--exec-kind", "=python3 x.py", NULL);
    expect_error("NAME=COMMAND", "--exec-kind", "Big=python3 x.py", NULL);
    expect_error("NAME=COMMAND", "--exec-kind", "a b=python3 x.py", NULL);
    expect_error("NAME=COMMAND",
                 "--exec-kind", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=x",
                 NULL);
    expect_error("the command is empty", "--exec-kind", "k=", NULL);
    expect_error("the command is empty", "--exec-kind", "k=   ", NULL);
    expect_error("unterminated '", "--exec-kind", "k=python3 'x.py", NULL);
    expect_error("unterminated \"", "--exec-kind", "k=python3 \"x.py", NULL);
    expect_error("backslash", "--exec-kind", "k=python3 x.py\\", NULL);
    expect_error("given twice", "--exec-kind", "k=a", "--exec-kind", "k=b", NULL);
    /* a built-in kind's name; fail and spin only exist with --enable-test-kinds */
    expect_error("built-in", "--exec-kind", "echo=python3 x.py", NULL);
    expect_error("built-in", "--exec-kind", "scan=python3 x.py", NULL);
    assert_int_equal(parse("--exec-kind", "spin=python3 x.py", NULL), CONFIG_OK);
    expect_error("built-in", "--exec-kind", "spin=python3 x.py", "--enable-test-kinds", NULL);
    expect_error("built-in", "--enable-test-kinds", "--exec-kind", "fail=x", NULL);
    /* at most CONFIG_MAX_EXEC_KINDS */
    char names[CONFIG_MAX_EXEC_KINDS + 1][16];
    char *argv[2 * CONFIG_MAX_EXEC_KINDS + 4];
    int argc = 0;
    argv[argc++] = (char *)"warmpool";
    for (int i = 0; i <= CONFIG_MAX_EXEC_KINDS; i++) {
        snprintf(names[i], sizeof names[i], "k%d=cmd", i);
        argv[argc++] = (char *)"--exec-kind";
        argv[argc++] = names[i];
    }
    argv[argc] = NULL;
    config_free(&g_cfg);
    memset(&g_cfg, 0, sizeof g_cfg);
    assert_int_equal(config_parse(argc, argv, &g_cfg, g_err, sizeof g_err), CONFIG_ERROR);
    assert_non_null(strstr(g_err, "more than"));
    config_free(&g_cfg);
    assert_int_equal(config_parse(argc - 2, argv, &g_cfg, g_err, sizeof g_err), CONFIG_OK);
    assert_int_equal(g_cfg.nexec_kinds, CONFIG_MAX_EXEC_KINDS);
}

/* --schedule 'NAME=CRON KIND INPUT' (issue 13): periodic tasks */
static void
test_schedules(void **state)
{
    (void)state;
    assert_int_equal(parse(NULL), CONFIG_OK);
    assert_int_equal(g_cfg.nschedules, 0);
    assert_int_equal(parse("--schedule", "tick=* * * * * echo {\"a\": [1, 2]}",
                           "--schedule=nightly.report-1=30 2 * * mon-fri  sleep {\"ms\":5}",
                           "--schedule", "hourly=@hourly echo", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.nschedules, 3);
    assert_string_equal(g_cfg.schedules[0].name, "tick");
    assert_string_equal(g_cfg.schedules[0].expr, "* * * * *");
    assert_string_equal(g_cfg.schedules[0].kind, "echo");
    assert_string_equal(g_cfg.schedules[0].input, "{\"a\":[1,2]}");     /* compact */
    assert_string_equal(g_cfg.schedules[1].name, "nightly.report-1");
    assert_string_equal(g_cfg.schedules[1].expr, "30 2 * * mon-fri");
    assert_string_equal(g_cfg.schedules[1].kind, "sleep");
    assert_int_equal(g_cfg.schedules[1].cron.hour, 1 << 2);
    assert_string_equal(g_cfg.schedules[2].expr, "@hourly");
    assert_string_equal(g_cfg.schedules[2].input, "null");              /* no input */

    /* the variable: ';'-separated (or one per line), and a flag replaces all of it */
    setenv("WARMPOOL_SCHEDULE", "a=*/5 * * * * echo 1;b=@daily echo \"x\"\nc=0 0 1 1 * echo []", 1);
    assert_int_equal(parse(NULL), CONFIG_OK);
    assert_int_equal(g_cfg.nschedules, 3);
    assert_string_equal(g_cfg.schedules[0].name, "a");
    assert_string_equal(g_cfg.schedules[0].input, "1");
    assert_string_equal(g_cfg.schedules[1].input, "\"x\"");
    assert_string_equal(g_cfg.schedules[2].name, "c");
    assert_int_equal(parse("--schedule", "z=@daily echo", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.nschedules, 1);
    assert_string_equal(g_cfg.schedules[0].name, "z");
    setenv("WARMPOOL_SCHEDULE", "bad", 1);
    expect_error("WARMPOOL_SCHEDULE", NULL);
    unsetenv("WARMPOOL_SCHEDULE");

    /* exec kinds count as kinds; a plugin's kinds are checked once loaded */
    assert_int_equal(parse("--exec-kind", "mine=python3 m.py", "--schedule", "m=@daily mine",
                           NULL), CONFIG_OK);
    assert_int_equal(parse("--plugin", "x.so", "--schedule", "p=@daily from_plugin", NULL),
                     CONFIG_OK);
    assert_int_equal(parse("--enable-test-kinds", "--schedule", "f=@daily fail {}", NULL),
                     CONFIG_OK);

    /* bad ones: exit 2, saying what is wrong */
    expect_error("NAME=CRON KIND INPUT", "--schedule", "* * * * * echo", NULL);
    expect_error("NAME=CRON KIND INPUT", "--schedule", "=* * * * * echo", NULL);
    expect_error("NAME=CRON KIND INPUT", "--schedule", "Big=* * * * * echo", NULL);
    expect_error("is not CRON KIND INPUT", "--schedule", "a=* * * * *", NULL);
    expect_error("is not CRON KIND INPUT", "--schedule", "a=@daily", NULL);
    expect_error("is not CRON KIND INPUT", "--schedule", "a=", NULL);
    expect_error("minute field", "--schedule", "a=61 * * * * echo", NULL);
    expect_error("day of week field", "--schedule", "a=* * * * funday echo", NULL);
    expect_error("never comes due", "--schedule", "a=0 0 30 2 * echo", NULL);
    expect_error("@hourly", "--schedule", "a=@often echo", NULL);
    expect_error("no kind is named 'nope'", "--schedule", "a=* * * * * nope {}", NULL);
    expect_error("no kind is named 'fail'", "--schedule", "a=* * * * * fail {}", NULL);
    expect_error("the input is not JSON", "--schedule", "a=* * * * * echo {bad", NULL);
    expect_error("the input is not JSON", "--schedule", "a=* * * * * echo {\"k\":1,\"k\":2}",
                 NULL);
    expect_error("the input is not JSON", "--schedule", "a=* * * * * echo 1 2", NULL);
    expect_error("given twice", "--schedule", "a=@daily echo", "--schedule", "a=@hourly echo",
                 NULL);
}

/* --callback-allow HOST[:PORT], --callback-secret (issue 13): completion callbacks */
static void
test_callbacks(void **state)
{
    (void)state;
    assert_int_equal(parse(NULL), CONFIG_OK);
    assert_int_equal(g_cfg.ncallback_allow, 0);
    assert_string_equal(g_cfg.callback_secret, "");
    assert_int_equal(parse("--callback-allow", "127.0.0.1:9000", "--callback-allow=hooks.example.com",
                           "--callback-allow", "[::1]:81", "--callback-secret", "s3cret", NULL),
                     CONFIG_OK);
    assert_int_equal(g_cfg.ncallback_allow, 3);
    assert_string_equal(g_cfg.callback_allow[0], "127.0.0.1:9000");
    assert_string_equal(g_cfg.callback_allow[1], "hooks.example.com");
    assert_string_equal(g_cfg.callback_allow[2], "[::1]:81");
    assert_string_equal(g_cfg.callback_secret, "s3cret");
    setenv("WARMPOOL_CALLBACK_ALLOW", "a:1,b", 1);
    setenv("WARMPOOL_CALLBACK_SECRET", "x", 1);
    assert_int_equal(parse(NULL), CONFIG_OK);
    assert_int_equal(g_cfg.ncallback_allow, 2);
    assert_string_equal(g_cfg.callback_allow[1], "b");
    assert_string_equal(g_cfg.callback_secret, "x");
    assert_int_equal(parse("--callback-allow", "c", NULL), CONFIG_OK);   /* replaces the list */
    assert_int_equal(g_cfg.ncallback_allow, 1);
    assert_string_equal(g_cfg.callback_allow[0], "c");
    setenv("WARMPOOL_CALLBACK_ALLOW", "a:0", 1);
    expect_error("WARMPOOL_CALLBACK_ALLOW", NULL);
    unsetenv("WARMPOOL_CALLBACK_ALLOW");
    expect_error("is not HOST[:PORT]", "--callback-allow", "", NULL);
    expect_error("is not HOST[:PORT]", "--callback-allow", "http://a", NULL);
    expect_error("is not HOST[:PORT]", "--callback-allow", "a:", NULL);
    expect_error("is not HOST[:PORT]", "--callback-allow", "a:65536", NULL);
    expect_error("is not HOST[:PORT]", "--callback-allow", "a/b", NULL);
    expect_error("is not HOST[:PORT]", "--callback-allow", "[::1", NULL);
    char big[600];
    memset(big, 'k', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    expect_error("longer than", "--callback-secret", big, NULL);
}

/* --kind-concurrency NAME=N (issue 13): repeatable, its variable comma-separated (a flag
 * replaces all of it), each name once, N from 1 to 100000. */
static void
test_kind_concurrency(void **state)
{
    (void)state;
    assert_int_equal(parse(NULL), CONFIG_OK);
    assert_int_equal(g_cfg.nkind_limits, 0);
    assert_int_equal(parse("--kind-concurrency", "sleep=2", "--kind-concurrency=echo.x-y_1=100000",
                           NULL), CONFIG_OK);
    assert_int_equal(g_cfg.nkind_limits, 2);
    assert_string_equal(g_cfg.kind_limits[0].name, "sleep");
    assert_int_equal(g_cfg.kind_limits[0].max, 2);
    assert_string_equal(g_cfg.kind_limits[1].name, "echo.x-y_1");
    assert_int_equal(g_cfg.kind_limits[1].max, 100000);
    setenv("WARMPOOL_KIND_CONCURRENCY", "a=1,b=3", 1);
    assert_int_equal(parse(NULL), CONFIG_OK);
    assert_int_equal(g_cfg.nkind_limits, 2);
    assert_string_equal(g_cfg.kind_limits[1].name, "b");
    assert_int_equal(g_cfg.kind_limits[1].max, 3);
    assert_int_equal(parse("--kind-concurrency", "c=4", NULL), CONFIG_OK);
    assert_int_equal(g_cfg.nkind_limits, 1);
    assert_string_equal(g_cfg.kind_limits[0].name, "c");
    setenv("WARMPOOL_KIND_CONCURRENCY", "a=0", 1);
    expect_error("WARMPOOL_KIND_CONCURRENCY", NULL);
    unsetenv("WARMPOOL_KIND_CONCURRENCY");
    expect_error("NAME=N", "--kind-concurrency", "sleep", NULL);
    expect_error("NAME=N", "--kind-concurrency", "=2", NULL);
    expect_error("NAME=N", "--kind-concurrency", "sleep=", NULL);
    expect_error("NAME=N", "--kind-concurrency", "sleep=0", NULL);
    expect_error("NAME=N", "--kind-concurrency", "sleep=-1", NULL);
    expect_error("NAME=N", "--kind-concurrency", "sleep=100001", NULL);
    expect_error("NAME=N", "--kind-concurrency", "sleep=2x", NULL);
    expect_error("NAME=N", "--kind-concurrency", "Sleep=2", NULL);
    expect_error("NAME=N",
                 "--kind-concurrency", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=1",
                 NULL);
    expect_error("given twice", "--kind-concurrency", "k=1", "--kind-concurrency", "k=2", NULL);
    expect_error("needs a value", "--kind-concurrency", NULL);
    char names[CONFIG_MAX_KIND_LIMITS + 1][16];
    char *argv[2 * CONFIG_MAX_KIND_LIMITS + 4];
    int argc = 0;
    argv[argc++] = (char *)"warmpool";
    for (int i = 0; i <= CONFIG_MAX_KIND_LIMITS; i++) {
        snprintf(names[i], sizeof names[i], "k%d=1", i);
        argv[argc++] = (char *)"--kind-concurrency";
        argv[argc++] = names[i];
    }
    argv[argc] = NULL;
    config_free(&g_cfg);
    memset(&g_cfg, 0, sizeof g_cfg);
    assert_int_equal(config_parse(argc, argv, &g_cfg, g_err, sizeof g_err), CONFIG_ERROR);
    assert_non_null(strstr(g_err, "more than"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, clear_env),
        cmocka_unit_test_setup(test_each_flag_separate_value, clear_env),
        cmocka_unit_test_setup(test_each_flag_equals_value, clear_env),
        cmocka_unit_test_setup_teardown(test_env_twins, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_flag_beats_variable, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_booleans, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_db_uri_and_lease, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_bad_workers, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_bad_other_values, clear_env, clear_env),
        cmocka_unit_test_setup(test_unknown_flag_and_missing_value, clear_env),
        cmocka_unit_test_setup(test_help, clear_env),
        cmocka_unit_test_setup(test_kind_concurrency, clear_env),
        cmocka_unit_test_setup(test_healthcheck, clear_env),
        cmocka_unit_test_setup(test_listen_forms, clear_env),
        cmocka_unit_test_setup_teardown(test_log_format, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_durability, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_cors_origins, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_exec_kinds, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_metrics_and_streams, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_schedules, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_callbacks, clear_env, clear_env),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (g_parsed)
        config_free(&g_cfg);
    return rc;
}
