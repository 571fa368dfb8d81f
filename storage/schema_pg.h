/* schema_pg.h -- PostgreSQL's schema and its migrations (internal to storage/). */
#ifndef WP_SCHEMA_PG_H
#define WP_SCHEMA_PG_H

#include <libpq-fe.h>
#include <stddef.h>

/* The schema version this build writes. Checklist: raise it together with a new entry
 * at the end of PG_MIGRATIONS[] in schema_pg.c, never by editing an old entry (the
 * statements of store_pg.c that the migrations' functions contain are part of an
 * entry: a changed function is a new migration with CREATE OR REPLACE FUNCTION). */
#define PG_SCHEMA_VERSION 5

/* Advisory locks of warmpool: pg_advisory_xact_lock(PG_LOCK_CLASS, key). Transaction
 * scoped, so an instance that is stopped or cut off cannot hold one past its
 * transaction (the server ends the session, and its transaction, when the connection
 * goes). Advisory locks are per database: two warmpool databases on one server never
 * wait for each other. */
#define PG_LOCK_CLASS 22352         /* "WP" */
#define PG_LOCK_MIGRATE 1           /* schema migrations */
#define PG_LOCK_RESCUE 2            /* handing back the tasks of lost instances */
#define PG_LOCK_PURGE 3             /* the retention purge */
#define PG_LOCK_COUNT_SHARD 1000    /* + shard: the task_counts rows of one shard */
#define PG_LOCK_KIND_CLASS 22353    /* (this, hashtext(kind)): a kind's concurrency limit */
#define PG_COUNT_SHARDS 32

typedef void schema_pg_progress_fn(void *arg, const char *line);

/* Brings the database up to PG_SCHEMA_VERSION in one transaction, under the advisory
 * lock PG_LOCK_MIGRATE (an instance that starts while another migrates waits for it,
 * then finds the schema done). 0, or -1 with the reason in err. *from: the version
 * found. A database newer than this build is refused. */
int schema_pg_migrate(PGconn *conn, schema_pg_progress_fn *progress, void *arg, int *from,
                      char *err, size_t errlen);

/* 0 when the database is at PG_SCHEMA_VERSION; -1 with what to do in err. */
int schema_pg_check(PGconn *conn, char *err, size_t errlen);

#endif
