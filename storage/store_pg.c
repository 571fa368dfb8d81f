/* store_pg.c -- the PostgreSQL task store (comes in the next commits). */
#include "storage/backend.h"

#include <stdio.h>

static void
pg_describe(const char *db, char *out, size_t outlen)
{
    (void)db;
    snprintf(out, outlen, "postgresql://...");
}

static int
pg_migrate(const char *db, store_progress_fn *progress, void *arg, int *from, char *err,
           size_t errlen)
{
    (void)db, (void)progress, (void)arg, (void)from;
    snprintf(err, errlen, "PostgreSQL is not supported by this build yet");
    return STORE_ERR;
}

static int
pg_start(const char *db, store_instance *inst, store_progress_fn *progress, void *arg,
         store_start_report *rep, char *err, size_t errlen)
{
    (void)inst, (void)rep;
    return pg_migrate(db, progress, arg, NULL, err, errlen);
}

static store *
pg_open(const char *db, int flags, int busy_ms, char *err, size_t errlen)
{
    (void)flags, (void)busy_ms;
    pg_migrate(db, NULL, NULL, NULL, err, errlen);
    return NULL;
}

const struct store_ops store_pg_ops = {
    .name = "postgresql",
    .migrate = pg_migrate,
    .start = pg_start,
    .describe = pg_describe,
    .open = pg_open,
};
