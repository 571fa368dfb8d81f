/* config.c -- the table of flags, and the parser that reads defaults, then the
 * environment, then the command line into a struct config. */
#include "service/config.h"
#include "service/exec_zygote.h"
#include "service/kinds.h"
#include "storage/store.h"

#include <jansson.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum opt_type { OPT_INT, OPT_BOOL, OPT_PATH, OPT_LISTEN, OPT_LOG_LEVEL, OPT_PLUGIN,
                OPT_KIND_CONFIG, OPT_EXEC_KIND, OPT_SCAN_RULES, OPT_DURATION, OPT_TOKEN,
                OPT_TOKEN_FILE, OPT_LOG_FORMAT, OPT_CORS_ORIGIN, OPT_DURABILITY, OPT_SCHEDULE,
                OPT_CALLBACK_ALLOW, OPT_KIND_CONCURRENCY };

struct opt {
    const char *name;           /* without the leading "--" */
    enum opt_type type;
    size_t offset;              /* into struct config */
    int64_t min, max;           /* OPT_INT */
    const char *arg;            /* the value's name in --help */
    const char *help;
};

#define OFF(field) offsetof(struct config, field)

static const struct opt OPTS[] = {
    {"listen", OPT_LISTEN, 0, 0, 0, "HOST:PORT",
     "address to serve HTTP on (default 127.0.0.1:8080)"},
    {"db", OPT_PATH, OFF(db_path), 0, 0, "PATH|URI",
     "SQLite database file, created with its directory (default ./data/warmpool.db); or "
     "a postgres:// URI: a PostgreSQL database that many instances share"},
    {"workers", OPT_INT, OFF(workers), 1, 1024, "N",
     "worker processes (default: number of CPUs)"},
    {"max-body", OPT_INT, OFF(max_body_bytes), 1, 1LL << 30, "BYTES",
     "largest request body accepted (default 1048576)"},
    {"task-timeout-ms", OPT_INT, OFF(task_timeout_ms), 1, 86400000, "MS",
     "timeout_ms of a task that does not set one (default 300000)"},
    {"grace-ms", OPT_INT, OFF(grace_ms), 0, 86400000, "MS",
     "on SIGTERM, how long running tasks may take to finish (default 30000)"},
    {"load-timeout-ms", OPT_INT, OFF(load_timeout_ms), 1, 86400000, "MS",
     "how long loading every kind's context may take, at start and at a reload; a load "
     "that takes longer is killed (default 600000)"},
    {"retry-base-ms", OPT_INT, OFF(retry_base_ms), 0, 3600000, "MS",
     "delay before the first retry of a failed attempt, doubled each time (default 1000)"},
    {"enable-test-kinds", OPT_BOOL, OFF(enable_test_kinds), 0, 1, NULL,
     "register the `fail` and `spin` kinds, for tests"},
    {"log-level", OPT_LOG_LEVEL, OFF(log_level), 0, 0, "LEVEL",
     "error, warn, info or debug (default info)"},
    {"log-format", OPT_LOG_FORMAT, 0, 0, 0, "FORMAT",
     "text, or json: one JSON object per line (default text)"},
    {"http-threads", OPT_INT, OFF(http_threads), 1, 64, "N",
     "HTTP threads in the HTTP process (default 2)"},
    {"max-connections", OPT_INT, OFF(max_connections), 1, 1000000, "N",
     "open HTTP connections at once; more wait in the listen queue (default 1000)"},
    {"max-connections-per-ip", OPT_INT, OFF(max_connections_per_ip), 0, 1000000, "N",
     "open HTTP connections from one client address; more are closed at once "
     "(default 0: no cap)"},
    {"max-pending", OPT_INT, OFF(max_pending), 0, INT64_MAX / 2, "N",
     "refuse submissions (503 queue_full) while N tasks are pending (default 0: no cap)"},
    {"max-tasks-per-worker", OPT_INT, OFF(max_tasks_per_worker), 0, INT64_MAX / 2, "N",
     "a worker is replaced after N attempts (default 0: never)"},
    {"max-worker-rss", OPT_INT, OFF(max_worker_rss_mb), 0, 1 << 20, "MB",
     "a worker is replaced after a task leaves it above MB resident (default 0: never)"},
    {"lease-ms", OPT_INT, OFF(lease_ms), 500, 3600000, "MS",
     "with PostgreSQL: how long this instance may stay silent before the others take its "
     "running tasks back (default 10000)"},
    {"durability", OPT_DURABILITY, OFF(durability_normal), 0, 0, "full|normal",
     "full: a 202 is sent once its task is on disk (survives power loss); normal: once it "
     "is committed, not yet on disk (survives a crash of warmpool, not a power loss: "
     "docs/reliability.md) (default full)"},
    {"retention", OPT_DURATION, OFF(retention_ms), 0, 0, "AGE",
     "delete finished tasks older than AGE, e.g. 90s, 30m, 12h, 7d (default 0: keep)"},
    {"api-token", OPT_TOKEN, OFF(api_token), 0, 0, "TOKEN",
     "require `Authorization: Bearer TOKEN` on every /v1 request"},
    {"api-token-file", OPT_TOKEN_FILE, 0, 0, 0, "PATH",
     "read the API token from a file (first line)"},
    {"metrics-token", OPT_TOKEN, OFF(metrics_token), 0, 0, "TOKEN",
     "require `Authorization: Bearer TOKEN` on GET /metrics (default: open, like /healthz)"},
    {"max-event-streams", OPT_INT, OFF(max_event_streams), 0, 1000000, "N",
     "GET /v1/events streams open at once, fewer than --max-connections; more get 503 "
     "(default 64, or half of --max-connections if less)"},
    {"cors-origin", OPT_CORS_ORIGIN, 0, 0, 0, "ORIGIN",
     "let web pages from ORIGIN (scheme://host[:port], or * without a token) call the "
     "API; repeatable (variable: comma-separated)"},
    {"callback-allow", OPT_CALLBACK_ALLOW, 0, 0, 0, "HOST[:PORT]",
     "a host (and port; default 80) that tasks' callback_url may name; repeatable "
     "(variable: comma-separated); none by default: callback_url is refused"},
    {"callback-secret", OPT_TOKEN, OFF(callback_secret), 0, 0, "SECRET",
     "sign each callback with HMAC-SHA256 of its timestamp and body "
     "(X-Warmpool-Signature)"},
    {"plugin", OPT_PLUGIN, 0, 0, 0, "PATH.so",
     "load kinds from a shared library; repeatable (variable: comma-separated)"},
    {"kind-config", OPT_KIND_CONFIG, 0, 0, 0, "NAME=VALUE",
     "configuration string for kind NAME; repeatable (variable: ';'-separated)"},
    {"exec-kind", OPT_EXEC_KIND, 0, 0, 0, "NAME=COMMAND",
     "run kind NAME in another program: COMMAND is started (no shell) as its zygote "
     "(docs/exec-kinds.md); repeatable (variable: ';'-separated)"},
    {"kind-concurrency", OPT_KIND_CONCURRENCY, 0, 1, 100000, "NAME=N",
     "at most N tasks of kind NAME run at once, across the pool and every instance sharing "
     "the database; repeatable (variable: comma-separated)"},
    {"scan-rules", OPT_SCAN_RULES, 0, 0, 0, "PATH",
     "rules file of the scan kind (default: the built-in rules)"},
    {"schedule", OPT_SCHEDULE, 0, 0, 0, "NAME=CRON KIND INPUT",
     "submit a task of KIND with INPUT (JSON, default null) each time the five-field cron "
     "expression CRON (UTC) comes due, once per due time across restarts and instances; "
     "repeatable (variable: ';'-separated)"},
};
#define N_OPTS (sizeof OPTS / sizeof OPTS[0])

static void
env_name(const struct opt *o, char *out, size_t outlen)
{
    size_t n = (size_t)snprintf(out, outlen, "WARMPOOL_");
    for (const char *p = o->name; *p && n + 1 < outlen; p++)
        out[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

static int
parse_int64(const char *text, int64_t *out)
{
    if (text[0] == '\0' || isspace((unsigned char)text[0]))
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

static int
parse_listen(const char *text, struct config *cfg)
{
    const char *colon = strrchr(text, ':');
    if (colon == NULL || colon == text)
        return -1;
    size_t hlen = (size_t)(colon - text);
    const char *host = text;
    if (text[0] == '[') {                   /* [::1]:8080 */
        if (hlen < 3 || text[hlen - 1] != ']')
            return -1;
        host = text + 1;
        hlen -= 2;
    }
    if (hlen >= sizeof cfg->listen_host)
        return -1;
    int64_t port;
    if (parse_int64(colon + 1, &port) != 0 || port < 0 || port > 65535)
        return -1;
    memcpy(cfg->listen_host, host, hlen);
    cfg->listen_host[hlen] = '\0';
    cfg->listen_port = (int)port;
    return 0;
}

/* Is text HOST[:PORT]: a name of letters, digits, '.', '-', or an [IPv6] address; a
 * port 1..65535? */
static int
valid_host_port(const char *text)
{
    size_t n;
    if (text[0] == '[') {
        n = strspn(text + 1, "0123456789abcdefABCDEF:.");
        if (n == 0 || text[1 + n] != ']')
            return 0;
        n += 2;
    } else {
        n = strspn(text, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-");
        if (n == 0)
            return 0;
    }
    const char *rest = text + n;
    if (rest[0] == '\0')
        return 1;
    int64_t port;
    return rest[0] == ':' && rest[1] != '\0' && strspn(rest + 1, "0123456789") == strlen(rest + 1) &&
           parse_int64(rest + 1, &port) == 0 && port >= 1 && port <= 65535;
}

/* Is text a browser's serialized origin: http(s)://host[:port], lower case, no path? */
static int
valid_origin(const char *text)
{
    const char *host = strncmp(text, "http://", 7) == 0    ? text + 7
                       : strncmp(text, "https://", 8) == 0 ? text + 8 : NULL;
    if (host == NULL)
        return 0;
    size_t n;
    if (host[0] == '[') {                       /* [::1] */
        n = strspn(host + 1, "0123456789abcdef:.");
        if (n == 0 || host[1 + n] != ']')
            return 0;
        n += 2;
    } else {
        n = strspn(host, "abcdefghijklmnopqrstuvwxyz0123456789.-");
        if (n == 0)
            return 0;
    }
    const char *rest = host + n;
    if (rest[0] == '\0')
        return 1;
    if (rest[0] != ':')
        return 0;
    int64_t port;
    return strspn(rest + 1, "0123456789") == strlen(rest + 1) &&
           parse_int64(rest + 1, &port) == 0 && port >= 1 && port <= 65535;
}

static int
add_kind_config(struct config *cfg, const char *name, size_t nlen, const char *value,
                const char *source, char *err, size_t errlen)
{
    if (cfg->nkind_configs == CONFIG_MAX_KIND_CONFIGS || nlen > 64) {
        snprintf(err, errlen, "%s: more than %d kind configurations, or a name too long",
                 source, CONFIG_MAX_KIND_CONFIGS);
        return -1;
    }
    char *n = strndup(name, nlen);      /* lives as long as the configuration */
    if (n == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    cfg->kind_configs[cfg->nkind_configs].name = n;
    cfg->kind_configs[cfg->nkind_configs].value = value;
    cfg->nkind_configs++;
    return 0;
}

/* --exec-kind NAME=COMMAND: a kind name of its own and a command that splits. */
static int
add_exec_kind(struct config *cfg, const char *text, const char *source, char *err,
              size_t errlen)
{
    const char *eq = strchr(text, '=');
    size_t nlen = eq == NULL ? 0 : (size_t)(eq - text);
    if (eq == NULL || nlen == 0 || nlen > 64 ||
        strspn(text, "abcdefghijklmnopqrstuvwxyz0123456789_.-") != nlen) {
        snprintf(err, errlen, "%s: '%.100s' is not NAME=COMMAND with NAME of 1 to 64 of "
                 "a-z 0-9 _ . -", source, text);
        return -1;
    }
    for (int i = 0; i < cfg->nexec_kinds; i++) {
        if (strlen(cfg->exec_kinds[i].name) == nlen &&
            strncmp(cfg->exec_kinds[i].name, text, nlen) == 0) {
            snprintf(err, errlen, "%s: kind '%.*s' is given twice", source, (int)nlen, text);
            return -1;
        }
    }
    if (cfg->nexec_kinds == CONFIG_MAX_EXEC_KINDS) {
        snprintf(err, errlen, "%s: more than %d exec kinds", source, CONFIG_MAX_EXEC_KINDS);
        return -1;
    }
    char why[200];
    char **argv = exec_command_split(eq + 1, why, sizeof why);
    if (argv == NULL) {
        snprintf(err, errlen, "%s: kind '%.*s': %s", source, (int)nlen, text, why);
        return -1;
    }
    char *name = strndup(text, nlen);
    if (name == NULL) {
        exec_argv_free(argv);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    cfg->exec_kinds[cfg->nexec_kinds].name = name;
    cfg->exec_kinds[cfg->nexec_kinds].command = eq + 1;
    cfg->exec_kinds[cfg->nexec_kinds].argv = argv;
    cfg->nexec_kinds++;
    return 0;
}

/* --schedule 'NAME=CRON KIND INPUT': a name of its own, a cron expression (five
 * fields or one @macro), a kind name, and JSON (the rest of the text; default null). */
static int
add_schedule(struct config *cfg, const char *text, const char *source, char *err,
             size_t errlen)
{
    const char *eq = strchr(text, '=');
    size_t nlen = eq == NULL ? 0 : (size_t)(eq - text);
    if (eq == NULL || nlen == 0 || nlen > 64 ||
        strspn(text, "abcdefghijklmnopqrstuvwxyz0123456789_.-") != nlen) {
        snprintf(err, errlen, "%s: '%.100s' is not NAME=CRON KIND INPUT with NAME of 1 to 64 "
                 "of a-z 0-9 _ . -", source, text);
        return -1;
    }
    for (int i = 0; i < cfg->nschedules; i++) {
        if (strlen(cfg->schedules[i].name) == nlen &&
            strncmp(cfg->schedules[i].name, text, nlen) == 0) {
            snprintf(err, errlen, "%s: schedule '%.*s' is given twice", source, (int)nlen,
                     text);
            return -1;
        }
    }
    if (cfg->nschedules == CONFIG_MAX_SCHEDULES) {
        snprintf(err, errlen, "%s: more than %d schedules", source, CONFIG_MAX_SCHEDULES);
        return -1;
    }
    struct config_schedule *sc = &cfg->schedules[cfg->nschedules];
    memset(sc, 0, sizeof *sc);
    memcpy(sc->name, text, nlen);
    /* the words: a macro is one, a cron expression five; then the kind */
    const char *p = eq + 1, *w[7];
    size_t wl[7];
    int nw = 0, want = 0;
    while (nw < 7) {
        p += strspn(p, " \t");
        if (*p == '\0')
            break;
        if (nw == 0)
            want = *p == '@' ? 2 : 6;
        if (nw == want)
            break;                      /* the input starts here */
        w[nw] = p;
        wl[nw] = strcspn(p, " \t");
        p += wl[nw++];
    }
    if (nw < want || want == 0) {
        snprintf(err, errlen, "%s: schedule '%s': '%.200s' is not CRON KIND INPUT (a cron "
                 "expression of five fields or an @macro, a kind, JSON)", source, sc->name,
                 eq + 1);
        return -1;
    }
    size_t elen = (size_t)(w[want - 2] + wl[want - 2] - w[0]);
    if (elen >= sizeof sc->expr || wl[want - 1] >= sizeof sc->kind) {
        snprintf(err, errlen, "%s: schedule '%s': the cron expression or the kind is too long",
                 source, sc->name);
        return -1;
    }
    memcpy(sc->expr, w[0], elen);
    memcpy(sc->kind, w[want - 1], wl[want - 1]);
    char why[256];
    if (cron_parse(sc->expr, &sc->cron, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s: schedule '%s': %s", source, sc->name, why);
        return -1;
    }
    json_error_t jerr;
    json_t *input = json_loads(*p != '\0' ? p : "null", JSON_DECODE_ANY | JSON_REJECT_DUPLICATES,
                               &jerr);
    if (input == NULL) {
        snprintf(err, errlen, "%s: schedule '%s': the input is not JSON: %s", source, sc->name,
                 jerr.text);
        return -1;
    }
    sc->input = json_dumps(input, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(input);
    if (sc->input == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    cfg->nschedules++;
    return 0;
}

/* --kind-concurrency NAME=N (issue 13): a kind name, once, and a limit in [min, max]. */
static int
add_kind_limit(struct config *cfg, const struct opt *o, const char *text, const char *source,
               char *err, size_t errlen)
{
    const char *eq = strchr(text, '=');
    size_t nlen = eq == NULL ? 0 : (size_t)(eq - text);
    int64_t n;
    if (eq == NULL || nlen == 0 || nlen > 64 ||
        strspn(text, "abcdefghijklmnopqrstuvwxyz0123456789_.-") != nlen ||
        parse_int64(eq + 1, &n) != 0 || n < o->min || n > o->max) {
        snprintf(err, errlen, "%s: '%.100s' is not NAME=N with NAME of 1 to 64 of a-z 0-9 _ . - "
                 "and N from %lld to %lld", source, text, (long long)o->min, (long long)o->max);
        return -1;
    }
    for (int i = 0; i < cfg->nkind_limits; i++) {
        if (strlen(cfg->kind_limits[i].name) == nlen &&
            strncmp(cfg->kind_limits[i].name, text, nlen) == 0) {
            snprintf(err, errlen, "%s: kind '%.*s' is given twice", source, (int)nlen, text);
            return -1;
        }
    }
    if (cfg->nkind_limits == CONFIG_MAX_KIND_LIMITS) {
        snprintf(err, errlen, "%s: more than %d kinds", source, CONFIG_MAX_KIND_LIMITS);
        return -1;
    }
    memcpy(cfg->kind_limits[cfg->nkind_limits].name, text, nlen);
    cfg->kind_limits[cfg->nkind_limits].name[nlen] = '\0';
    cfg->kind_limits[cfg->nkind_limits].max = (int)n;
    cfg->nkind_limits++;
    return 0;
}

const char *
config_kind_config(const struct config *cfg, const char *name)
{
    const char *v = NULL;
    for (int i = 0; i < cfg->nkind_configs; i++)
        if (strcmp(cfg->kind_configs[i].name, name) == 0)
            v = cfg->kind_configs[i].value;
    return v;
}

/* Sets option o from text; `source` names where the text came from, for messages. */
static int
set_opt(const struct opt *o, const char *text, struct config *cfg, const char *source,
        char *err, size_t errlen)
{
    char *base = (char *)cfg;
    int64_t v;
    switch (o->type) {
    case OPT_INT:
        if (parse_int64(text, &v) != 0 || v < o->min || v > o->max) {
            snprintf(err, errlen, "%s: '%.100s' is not an integer from %lld to %lld", source,
                     text, (long long)o->min, (long long)o->max);
            return -1;
        }
        if (o->offset == OFF(workers) || o->offset == OFF(http_threads))
            *(int *)(base + o->offset) = (int)v;
        else
            *(int64_t *)(base + o->offset) = v;
        return 0;
    case OPT_BOOL:
        if (strcmp(text, "1") == 0 || strcmp(text, "true") == 0)
            *(int *)(base + o->offset) = 1;
        else if (strcmp(text, "0") == 0 || strcmp(text, "false") == 0)
            *(int *)(base + o->offset) = 0;
        else {
            snprintf(err, errlen, "%s: '%.100s' is not a boolean (1, 0, true, false)", source,
                     text);
            return -1;
        }
        return 0;
    case OPT_PATH:
        if (text[0] == '\0' || strlen(text) >= sizeof cfg->db_path) {
            snprintf(err, errlen, "%s: the path is empty or too long", source);
            return -1;
        }
        if (store_name_check(text, err, errlen) != 0) {
            /* err says what is wrong, without the URI (it may hold a password) */
            char why[512];
            snprintf(why, sizeof why, "%s", err);
            snprintf(err, errlen, "%s: %s", source, why);
            return -1;
        }
        snprintf(cfg->db_path, sizeof cfg->db_path, "%s", text);
        return 0;
    case OPT_LISTEN:
        if (parse_listen(text, cfg) != 0) {
            snprintf(err, errlen, "%s: '%.100s' is not HOST:PORT (port 0 to 65535)", source,
                     text);
            return -1;
        }
        return 0;
    case OPT_PLUGIN:
        if (text[0] == '\0' || cfg->nplugins == CONFIG_MAX_PLUGINS) {
            snprintf(err, errlen, "%s: empty path, or more than %d plugins", source,
                     CONFIG_MAX_PLUGINS);
            return -1;
        }
        cfg->plugins[cfg->nplugins++] = text;
        return 0;
    case OPT_SCAN_RULES:
        if (text[0] == '\0') {
            snprintf(err, errlen, "%s: empty path", source);
            return -1;
        }
        return add_kind_config(cfg, "scan", 4, text, source, err, errlen);
    case OPT_KIND_CONFIG: {
        const char *eq = strchr(text, '=');
        if (eq == NULL || eq == text) {
            snprintf(err, errlen, "%s: '%.100s' is not NAME=VALUE", source, text);
            return -1;
        }
        return add_kind_config(cfg, text, (size_t)(eq - text), eq + 1, source, err, errlen);
    }
    case OPT_EXEC_KIND:
        return add_exec_kind(cfg, text, source, err, errlen);
    case OPT_SCHEDULE:
        return add_schedule(cfg, text, source, err, errlen);
    case OPT_CALLBACK_ALLOW:
        if (!valid_host_port(text)) {
            snprintf(err, errlen, "%s: '%.100s' is not HOST[:PORT] (a name or address, and a "
                     "port 1 to 65535)", source, text);
            return -1;
        }
        if (cfg->ncallback_allow == CONFIG_MAX_CALLBACK_ALLOW) {
            snprintf(err, errlen, "%s: more than %d hosts", source, CONFIG_MAX_CALLBACK_ALLOW);
            return -1;
        }
        cfg->callback_allow[cfg->ncallback_allow++] = text;
        return 0;
    case OPT_KIND_CONCURRENCY:
        return add_kind_limit(cfg, o, text, source, err, errlen);
    case OPT_DURATION: {
        char *end;
        errno = 0;
        long long n = strtoll(text, &end, 10);
        long long unit = strcmp(end, "d") == 0 ? 86400000LL : strcmp(end, "h") == 0 ? 3600000LL
                         : strcmp(end, "m") == 0 ? 60000LL
                         : strcmp(end, "s") == 0 || (*end == '\0' && n == 0) ? 1000LL : 0;
        if (errno != 0 || end == text || n < 0 || unit == 0 || n > 36500LL * 86400) {
            snprintf(err, errlen, "%s: '%.100s' is not an age like 90s, 30m, 12h or 7d", source,
                     text);
            return -1;
        }
        *(int64_t *)(base + o->offset) = n * unit;
        return 0;
    }
    case OPT_TOKEN:     /* api_token, metrics_token or callback_secret: the same size */
        if (strlen(text) >= sizeof cfg->api_token) {
            snprintf(err, errlen, "%s: the token is longer than %zu bytes", source,
                     sizeof cfg->api_token - 1);
            return -1;
        }
        snprintf(base + o->offset, sizeof cfg->api_token, "%s", text);
        return 0;
    case OPT_TOKEN_FILE: {
        FILE *f = fopen(text, "r");
        char line[sizeof cfg->api_token + 2] = "";
        if (f == NULL || fgets(line, sizeof line, f) == NULL) {
            snprintf(err, errlen, "%s: cannot read '%.200s': %s", source, text,
                     f == NULL ? strerror(errno) : "empty file");
            if (f != NULL)
                fclose(f);
            return -1;
        }
        fclose(f);
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0') {
            snprintf(err, errlen, "%s: '%.200s' holds an empty token", source, text);
            return -1;
        }
        if (strlen(line) >= sizeof cfg->api_token) {
            snprintf(err, errlen, "%s: the token is longer than %zu bytes", source,
                     sizeof cfg->api_token - 1);
            return -1;
        }
        memcpy(cfg->api_token, line, strlen(line) + 1);
        return 0;
    }
    case OPT_DURABILITY:
        if (strcmp(text, "full") != 0 && strcmp(text, "normal") != 0) {
            snprintf(err, errlen, "%s: '%.100s' is not one of full, normal", source, text);
            return -1;
        }
        *(int *)(base + o->offset) = strcmp(text, "normal") == 0;
        return 0;
    case OPT_LOG_FORMAT:
        if (log_format_parse(text, &cfg->log_format) != 0) {
            snprintf(err, errlen, "%s: '%.100s' is not one of text, json", source, text);
            return -1;
        }
        return 0;
    case OPT_CORS_ORIGIN:
        if (strcmp(text, "*") != 0 && !valid_origin(text)) {
            snprintf(err, errlen, "%s: '%.100s' is not an origin: write it as a browser sends "
                     "it, scheme://host[:port] in lower case without a path (e.g. "
                     "https://app.example.com or http://localhost:3000), or *", source, text);
            return -1;
        }
        if (cfg->ncors_origins == CONFIG_MAX_CORS_ORIGINS) {
            snprintf(err, errlen, "%s: more than %d origins", source, CONFIG_MAX_CORS_ORIGINS);
            return -1;
        }
        cfg->cors_origins[cfg->ncors_origins++] = text;
        return 0;
    case OPT_LOG_LEVEL:
        if (log_level_parse(text, &cfg->log_level) != 0) {
            snprintf(err, errlen, "%s: '%.100s' is not one of error, warn, info, debug", source,
                     text);
            return -1;
        }
        return 0;
    }
    return -1;
}

/* Rules that involve more than one flag, checked once everything is read. */
static int
check_combinations(struct config *cfg, char *err, size_t errlen)
{
    /* streams hold their connections: some must be left for everything else */
    if (cfg->max_event_streams < 0) {
        cfg->max_event_streams = cfg->max_connections / 2 < 64 ? cfg->max_connections / 2 : 64;
    } else if (cfg->max_event_streams >= cfg->max_connections) {
        snprintf(err, errlen, "--max-event-streams %lld must be less than --max-connections "
                 "%lld: each stream holds a connection, and the API needs some too",
                 (long long)cfg->max_event_streams, (long long)cfg->max_connections);
        return CONFIG_ERROR;
    }
    for (int i = 0; i < cfg->ncors_origins; i++) {
        if (strcmp(cfg->cors_origins[i], "*") == 0 && cfg->api_token[0] != '\0') {
            snprintf(err, errlen, "--cors-origin '*' is refused with an API token: any web "
                     "page could then use a token it finds in a browser; name the origins "
                     "(e.g. --cors-origin https://app.example.com)");
            return CONFIG_ERROR;
        }
    }
    /* an exec kind may not take a built-in kind's name (a plugin's clash shows when
     * the kinds load: kinds_load()) */
    for (int k = 0; k < cfg->nexec_kinds; k++) {
        if (kinds_builtin_name(cfg->exec_kinds[k].name, cfg->enable_test_kinds)) {
            snprintf(err, errlen, "--exec-kind %s: a built-in kind has that name",
                     cfg->exec_kinds[k].name);
            return CONFIG_ERROR;
        }
    }
    /* a schedule's kind: built-in or exec; a plugin's kinds are known only once loaded
     * (the supervisor checks them then, and exits 2 the same way) */
    for (int i = 0; i < cfg->nschedules && cfg->nplugins == 0; i++) {
        const char *kind = cfg->schedules[i].kind;
        int known = kinds_builtin_name(kind, cfg->enable_test_kinds);
        for (int k = 0; k < cfg->nexec_kinds && !known; k++)
            known = strcmp(cfg->exec_kinds[k].name, kind) == 0;
        if (!known) {
            snprintf(err, errlen, "--schedule %s: no kind is named '%s'",
                     cfg->schedules[i].name, kind);
            return CONFIG_ERROR;
        }
    }
    return CONFIG_OK;
}

static void
set_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->listen_host, sizeof cfg->listen_host, "127.0.0.1");
    cfg->listen_port = 8080;
    snprintf(cfg->db_path, sizeof cfg->db_path, "./data/warmpool.db");
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->workers = ncpu < 1 ? 1 : ncpu > 1024 ? 1024 : (int)ncpu;
    cfg->max_body_bytes = 1048576;
    cfg->task_timeout_ms = 300000;
    cfg->grace_ms = 30000;
    cfg->load_timeout_ms = 600000;
    cfg->retry_base_ms = 1000;
    cfg->log_level = LOG_INFO;
    cfg->log_format = LOG_FORMAT_TEXT;
    cfg->http_threads = 2;
    cfg->max_connections = 1000;
    cfg->lease_ms = STORE_DEFAULT_LEASE_MS;
    cfg->max_event_streams = -1;        /* check_combinations() sets the default */
}

void
config_print_help(const char *prog)
{
    printf("usage: %s [healthcheck] [flags]\n\n"
           "An HTTP job server whose workers share a context loaded once.\n"
           "  healthcheck   GET /healthz on --listen and exit 0 if it answered 200\n\n"
           "Every flag --foo-bar can also be set with WARMPOOL_FOO_BAR; the flag wins.\n\n",
           prog);
    for (size_t i = 0; i < N_OPTS; i++) {
        char env[64], left[64];
        env_name(&OPTS[i], env, sizeof env);
        snprintf(left, sizeof left, "--%s%s%s", OPTS[i].name, OPTS[i].arg ? " " : "",
                 OPTS[i].arg ? OPTS[i].arg : "");
        printf("  %-28s %s\n  %-28s   [%s]\n", left, OPTS[i].help, "", env);
    }
    printf("  %-28s %s\n", "--help", "print this and exit");
}

/* Is flag `name` on the command line? Its variable is then not read at all. */
static int
on_command_line(int argc, char **argv, const char *name)
{
    size_t n = strlen(name);
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], "--", 2) == 0 && strncmp(argv[i] + 2, name, n) == 0 &&
            (argv[i][2 + n] == '\0' || argv[i][2 + n] == '='))
            return 1;
    return 0;
}

int
config_parse(int argc, char **argv, struct config *cfg, char *err, size_t errlen)
{
    set_defaults(cfg);
    for (size_t i = 0; i < N_OPTS; i++) {
        char env[64];
        env_name(&OPTS[i], env, sizeof env);
        const char *v = getenv(env);
        if (v == NULL || on_command_line(argc, argv, OPTS[i].name))
            continue;           /* a flag beats its variable, even a bad one */
        if (OPTS[i].type == OPT_PLUGIN || OPTS[i].type == OPT_KIND_CONFIG ||
            OPTS[i].type == OPT_CORS_ORIGIN || OPTS[i].type == OPT_EXEC_KIND ||
            OPTS[i].type == OPT_SCHEDULE || OPTS[i].type == OPT_CALLBACK_ALLOW ||
            OPTS[i].type == OPT_KIND_CONCURRENCY) {
            /* a list: plugins and origins comma-separated, kind configurations and
             * exec kinds ';'-separated */
            /* the copy lives as long as the configuration, which points into it; a
             * later parse (tests) replaces it */
            static char *copies[N_OPTS];
            char *copy = strdup(v);
            free(copies[i]);
            copies[i] = copy;
            const char *sep = OPTS[i].type == OPT_KIND_CONFIG ||
                              OPTS[i].type == OPT_EXEC_KIND ? ";"
                              : OPTS[i].type == OPT_SCHEDULE ? ";\n" : ",";
            char *save = NULL;
            for (char *tok = copy ? strtok_r(copy, sep, &save) : NULL; tok != NULL;
                 tok = strtok_r(NULL, sep, &save))
                if (set_opt(&OPTS[i], tok, cfg, env, err, errlen) != 0)
                    return CONFIG_ERROR;
            continue;
        }
        if (set_opt(&OPTS[i], v, cfg, env, err, errlen) != 0)
            return CONFIG_ERROR;
    }
    int i = 1, argv_plugins = 0, argv_origins = 0, argv_allow = 0;
    if (argc > 1 && strcmp(argv[1], "healthcheck") == 0) {
        cfg->healthcheck = 1;
        i = 2;
    }
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            config_print_help(argv[0]);
            return CONFIG_HELP;
        }
        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%.100s' (see --help)", a);
            return CONFIG_ERROR;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const struct opt *o = NULL;
        for (size_t k = 0; k < N_OPTS; k++)
            if (strlen(OPTS[k].name) == nlen && strncmp(OPTS[k].name, name, nlen) == 0)
                o = &OPTS[k];
        if (o == NULL) {
            snprintf(err, errlen, "unknown flag '%.100s' (see --help)", a);
            return CONFIG_ERROR;
        }
        const char *value;
        if (eq != NULL)
            value = eq + 1;
        else if (o->type == OPT_BOOL)
            value = "1";
        else if (i + 1 < argc)
            value = argv[++i];
        else {
            snprintf(err, errlen, "flag --%s needs a value", o->name);
            return CONFIG_ERROR;
        }
        char source[80];
        snprintf(source, sizeof source, "--%s", o->name);
        if (o->type == OPT_PLUGIN && !argv_plugins++)
            cfg->nplugins = 0;          /* --plugin replaces WARMPOOL_PLUGIN's list */
        if (o->type == OPT_CORS_ORIGIN && !argv_origins++)
            cfg->ncors_origins = 0;     /* the same for --cors-origin */
        if (o->type == OPT_CALLBACK_ALLOW && !argv_allow++)
            cfg->ncallback_allow = 0;   /* and --callback-allow */
        if (set_opt(o, value, cfg, source, err, errlen) != 0)
            return CONFIG_ERROR;
    }
    return check_combinations(cfg, err, errlen);
}

void
config_free(struct config *cfg)
{
    for (int i = 0; i < cfg->nkind_configs; i++)
        free((char *)cfg->kind_configs[i].name);
    for (int i = 0; i < cfg->nexec_kinds; i++) {
        free((char *)cfg->exec_kinds[i].name);
        exec_argv_free(cfg->exec_kinds[i].argv);
    }
    for (int i = 0; i < cfg->nschedules; i++)
        free(cfg->schedules[i].input);
    cfg->nkind_configs = cfg->nexec_kinds = cfg->nschedules = 0;
}
