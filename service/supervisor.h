/* supervisor.h -- the supervisor process: loads, forks, supervises, drains. */
#ifndef WP_SUPERVISOR_H
#define WP_SUPERVISOR_H

#include "service/config.h"

/* Runs the service until SIGTERM/SIGINT. Returns the process exit code: 0 after a
 * drain, 1 when it cannot start (database locked, port taken...), 2 when a kind's
 * context cannot be loaded. */
int supervisor_run(const struct config *cfg);

#endif
