/* healthcheck.h -- "warmpool healthcheck": a probe for container HEALTHCHECKs that
 * needs no curl in the image. */
#ifndef WP_HEALTHCHECK_H
#define WP_HEALTHCHECK_H

#include "service/config.h"

/* GET /healthz on cfg's listen address (a wildcard address probes loopback).
 * 0 if it answered 200 within 3 s, else 1. */
int healthcheck_run(const struct config *cfg);

#endif
