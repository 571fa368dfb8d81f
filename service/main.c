/* main.c -- warmpool: parse the configuration, then hand over to the supervisor. */
#include "common/log.h"
#include "service/config.h"
#include "service/healthcheck.h"
#include "service/supervisor.h"

#include <stdio.h>

int
main(int argc, char **argv)
{
    static struct config cfg;       /* children read it after fork */
    char err[512];
    switch (config_parse(argc, argv, &cfg, err, sizeof err)) {
    case CONFIG_HELP:
        return 0;
    case CONFIG_ERROR:
        fprintf(stderr, "warmpool: %s\n", err);
        return 2;
    default:
        break;
    }
    if (cfg.healthcheck)
        return healthcheck_run(&cfg);
    log_set_level(cfg.log_level);
    log_set_format(cfg.log_format);
    return supervisor_run(&cfg);
}
