/* store_pg.c -- the PostgreSQL task store (libpq): the implementation of store.h
 * (backend.h) that many warmpool instances share.
 *
 * Invariants this file keeps:
 *  (1) Every statement is a prepared statement of STMTS[], prepared on a connection the
 *      first time it is used there (again after a reconnection), and sent with the
 *      others of the same call in one pipeline: one round trip per store call. The
 *      statements of one pipeline form one transaction (the protocol's implicit one,
 *      up to the Sync), unless the caller holds one open (store_begin).
 *  (2) A task changes state only through a compare-and-set on its current state (and,
 *      out of `running`, its attempt number), as with SQLite.
 *  (3) Claims lock the row they take with FOR UPDATE SKIP LOCKED: two claimers never
 *      take the same attempt, and never wait for each other.
 *  (4) Every statement reads only the rows it needs, through an index (test_store_pg
 *      checks the plans). Counts come from task_counts (schema_pg.c).
 *  (5) Other instances learn what changed from NOTIFY, sent in the transaction that
 *      changed it (delivered at its commit): `warmpool_ready` "<instance>:<n>" when n
 *      tasks became ready (a group of submissions, a retry, a hand-back), and
 *      `warmpool_done` "<instance>:<task id>:<state>:<attempts>:<finished_at>:<kind>:
 *      <error code>" when a task became terminal (DONE_PAYLOAD). A listener ignores its
 *      own instance's (the local channels told it already).
 *  (6) A connection that breaks (the server restarts, the network fails) is made again
 *      at a later call, at most every RECONNECT_MS; meanwhile calls fail fast with
 *      STORE_UNAVAILABLE. Nothing is retried here: the callers retry (workers), or
 *      answer 503 (requests).
 *  (7) Passwords never reach a log or an error message: store_describe() prints the URI
 *      without it, and libpq's messages do not contain it.
 */
#include "storage/backend.h"
#include "storage/schema_pg.h"
#include "common/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RECONNECT_MS 250            /* a broken connection is tried again after this */
#define PROMOTE_BATCH "100"         /* due retries promoted per claim at most */
#define MAXP 12                     /* parameters of a statement at most */

/* ---------------------------------------------------------------- the SQL */

#define TASK_COLS                                                                     \
    "id, kind, state, priority, input, result, error_code, error_message, attempts, " \
    "max_attempts, timeout_ms, created_at, started_at, finished_at, run_after, "      \
    "previous_error_code, previous_error_message, "                                          \
    "callback_url, callback_state, callback_attempts, callback_error"
#define TASK_COLS_BRIEF                                                                      \
    "id, kind, state, priority, NULL::text, NULL::text, error_code, error_message, attempts, " \
    "max_attempts, timeout_ms, created_at, started_at, finished_at, run_after, "             \
    "previous_error_code, previous_error_message, "                                          \
    "callback_url, callback_state, callback_attempts, callback_error"
/* A terminal task's NOTIFY payload, from a row t with its columns (see (5) above) */
#define DONE_PAYLOAD(inst, t)                                                             \
    inst " || ':' || " t ".id || ':' || " t ".state || ':' || " t ".attempts || ':' || "  \
    "coalesce(" t ".finished_at, 0) || ':' || " t ".kind || ':' || coalesce(" t ".error_code, '')"
#define LIVE(t) "(" t ".lost_at IS NULL AND " t ".last_seen + " t ".lease_ms * interval '1 ms'" \
                " > clock_timestamp())"

static const char SQL_INSERT[] =
    "INSERT INTO tasks (kind, state, priority, input, max_attempts, timeout_ms, created_at,"
    " idem_key, run_after, delayed, callback_url, callback_state) VALUES ($1, 'pending',"
    " $2::integer, $3, $4::integer, $5::bigint, $6::bigint, $7, $8::bigint, $9::boolean,"
    " $10::text, CASE WHEN $10::text IS NULL THEN NULL ELSE 'pending' END)"
    " ON CONFLICT (idem_key) WHERE idem_key IS NOT NULL DO NOTHING RETURNING " TASK_COLS;
static const char SQL_GET[] = "SELECT " TASK_COLS " FROM tasks WHERE id = $1::bigint";
/* completion callbacks (issue 13): the claim of the delivery due first (an attempt
 * counted, hidden from other claims, of any instance, for a lease; SKIP LOCKED: two
 * deliverers never wait for each other), and how it ended (a compare-and-set on the
 * attempt) */
static const char SQL_CB_DUE[] =
    "SELECT id FROM tasks WHERE callback_state = 'pending' AND finished_at IS NOT NULL"
    " AND callback_next_at <= $1::bigint ORDER BY callback_next_at LIMIT 1";
static const char SQL_CB_CLAIM[] =
    "UPDATE tasks SET callback_attempts = callback_attempts + 1, callback_next_at = $2::bigint"
    " WHERE id = (SELECT id FROM tasks WHERE callback_state = 'pending'"
    "  AND finished_at IS NOT NULL AND callback_next_at <= $1::bigint"
    "  ORDER BY callback_next_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING " TASK_COLS;
static const char SQL_CB_RECORD[] =
    "UPDATE tasks SET callback_state = $3, callback_next_at = $4::bigint, callback_error = $5"
    " WHERE id = $1::bigint AND callback_attempts = $2::integer AND callback_state = 'pending'"
    " RETURNING id";
static const char SQL_GET_BY_KEY[] = "SELECT " TASK_COLS " FROM tasks WHERE idem_key = $1";
static const char SQL_NOTIFY_READY[] =
    "SELECT pg_notify('warmpool_ready', $1::text || ':' || $2::text)";
static const char SQL_CANCEL[] =
    "WITH c AS (UPDATE tasks SET state = 'canceled', finished_at = $2::bigint"
    "           WHERE id = $1::bigint AND state = 'pending' RETURNING " TASK_COLS ")"
    " SELECT c.*, pg_notify('warmpool_done', " DONE_PAYLOAD("$3::text", "c") ") FROM c";
/* each side in its index's order, LIMIT 1: an EXISTS would let the planner prefer a
 * scan of the table when it guesses that many rows match */
static const char SQL_HAS_READY[] =
    "SELECT (SELECT id FROM tasks WHERE state = 'pending' AND NOT delayed"
    "        ORDER BY priority DESC, id LIMIT 1) IS NOT NULL"
    " OR (SELECT run_after FROM tasks WHERE state = 'pending' AND delayed"
    "     AND run_after <= $1::bigint ORDER BY run_after LIMIT 1) IS NOT NULL";
/* Due waiting retries become ready (at most PROMOTE_BATCH per claim, oldest run_after
 * first), in the claim's transaction, before the claim: no claim steps over them. */
/* = ANY (ARRAY(...)), not IN (...): the ids are read first, then each row by its key,
 * whatever the planner guesses of the batch's size */
static const char SQL_PROMOTE[] =
    "UPDATE tasks SET delayed = false"
    " WHERE id = ANY (ARRAY(SELECT id FROM tasks WHERE state = 'pending' AND delayed"
    "                       AND run_after <= $1::bigint ORDER BY run_after"
    "                       LIMIT " PROMOTE_BATCH " FOR UPDATE SKIP LOCKED))";
/* The first ready task by priority, then id, that no other claimer has locked. The
 * outer state check is belt and braces: the row is locked, so it cannot have moved. */
static const char SQL_CLAIM[] =
    "UPDATE tasks SET state = 'running', attempts = attempts + 1,"
    " started_at = greatest($1::bigint, created_at), finished_at = NULL,"
    " owner_instance = $2::bigint, owner_pid = $3::bigint"
    " WHERE id = (SELECT id FROM tasks WHERE state = 'pending' AND NOT delayed"
    "             ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED)"
    /* not a paused kind: checked on the row taken, not in the walk of tasks_ready (a
     * filter there that the planner cannot estimate makes it scan and sort every pending
     * task). A head of a paused kind -- a pause committed since this connection last
     * looked -- is not taken: the claim comes back empty with paused_any true, and is
     * made again at once in the per-kind form (pg_claim_next) */
    " AND state = 'pending' AND kind <> ALL (ARRAY(SELECT kind FROM paused_kinds))"
    " RETURNING " TASK_COLS;
/* A claim that leaves the kinds of $4 alone (store_kind_set): the kinds with pending
 * tasks (task_counts), the first few ready tasks of each other kind (tasks_ready_kind,
 * one seek each: never a step over the left-alone kinds' tasks, however many wait),
 * then the best of those that no other claimer has locked. A few per kind, not one:
 * concurrent claimers lock the heads. The order is -priority, id: only tasks_ready_kind
 * gives it (tasks_ready's priority DESC is the same order, but the planner does not know
 * it); with ORDER BY priority DESC the planner may walk tasks_ready instead, filtering
 * by kind, or read every pending task of the kind and sort them. */
#define CLAIM_SKIP(STARTED, MORE)                                                     \
    "UPDATE tasks SET state = 'running', attempts = attempts + 1,"                     \
    " started_at = " STARTED ", finished_at = NULL,"                                    \
    " owner_instance = $2::bigint, owner_pid = $3::bigint"                             \
    " WHERE id = (SELECT id FROM tasks WHERE id = ANY (ARRAY("                         \
    "   SELECT c.id FROM (SELECT kind FROM task_counts WHERE state = 'pending' GROUP BY kind" \
    "                     HAVING sum(n) > 0) AS k"                                  \
    "   CROSS JOIN LATERAL (SELECT id FROM tasks WHERE state = 'pending' AND NOT delayed" \
    "     AND kind = k.kind ORDER BY kind, -priority, id LIMIT 8) AS c"             \
    "   WHERE k.kind <> ALL ($4::text[])"                                           \
    /* issue 13: not a paused kind; a kind with a concurrency limit ($5, $6) only when \
     * SQL_KIND_LOCK took its lock in this transaction (so this statement's snapshot, \
     * taken after, sees every claim of the kind committed before) and below the limit */ \
    "   AND k.kind <> ALL (ARRAY(SELECT kind FROM paused_kinds))"                   \
    "   AND NOT EXISTS (SELECT 1 FROM unnest($5::text[], $6::integer[]) AS l(kind, n)" \
    "     WHERE l.kind = k.kind AND (l.kind <> ALL (coalesce(nullif("               \
    "       current_setting('warmpool.kind_locks', true), ''), '{}')::text[])"      \
    "       OR (SELECT count(*) FROM (SELECT 1 FROM tasks r WHERE r.state = 'running'" \
    "           AND r.kind = l.kind LIMIT l.n) AS x) >= l.n))))"                    \
    "  AND state = 'pending' AND NOT delayed ORDER BY priority DESC, id LIMIT 1"    \
    "  FOR UPDATE SKIP LOCKED)"                                                     \
    " AND state = 'pending'" MORE " RETURNING " TASK_COLS
static const char SQL_CLAIM_SKIP[] = CLAIM_SKIP("greatest($1::bigint, created_at)", "");
/* ---- batches (store_record_batch, store.h) */
/* How many tasks a batch takes: the worker's want ($W), but not more than the tasks
 * waiting (task_counts: a few rows) divided by the workers ($S), at least one. A batch of
 * more than one is held: started_at unset until its worker starts or records each one
 * (SQL_MARK_STARTED, SQL_FINISH). */
#define BATCH_TAKE(W, S, PLUS)                                                         \
    "least(" W "::integer, greatest(1, ((SELECT coalesce(sum(n), 0)::bigint FROM task_counts" \
    " WHERE state = 'pending')" PLUS ") / " S "::integer))"
/* A batch with nothing to leave alone: the first ready tasks by priority, then id, that
 * no other claimer has locked, in one statement (paused kinds as in SQL_CLAIM: a batch
 * that comes back empty with paused_any true is made again per kind). $4: want, $5: the
 * share. The rows come back in the order to run them. */
static const char SQL_CLAIM_HELD[] =
    "WITH k AS (SELECT " BATCH_TAKE("$4", "$5", "") " AS n),"
    " c AS (UPDATE tasks SET state = 'running', attempts = attempts + 1,"
    " started_at = CASE WHEN (SELECT n FROM k) > 1 THEN NULL"
    "                   ELSE greatest($1::bigint, created_at) END, finished_at = NULL,"
    " owner_instance = $2::bigint, owner_pid = $3::bigint"
    " WHERE id = ANY (ARRAY(SELECT id FROM tasks WHERE state = 'pending' AND NOT delayed"
    "                       ORDER BY priority DESC, id LIMIT (SELECT n FROM k)"
    "                       FOR UPDATE SKIP LOCKED))"
    /* no state check here: the rows are locked pending, and with one the planner may
     * read the rows through tasks_state_kind, every pending task, when its statistics
     * are older than a backlog (test_pg_query_plans) */
    " AND kind <> ALL (ARRAY(SELECT kind FROM paused_kinds))"
    " RETURNING " TASK_COLS ")"
    " SELECT * FROM c ORDER BY priority DESC, id";
/* A batch with kinds to leave alone or limits: SQL_CLAIM_SKIP once per task, in one
 * pipeline and transaction (each sees the claims before it, so the limits hold); the
 * $7-th of them ($8: want, $9: the share) claims only when the batch's size, counted on
 * the tasks waiting before the first, is above $7. */
#define HELD_TAKE BATCH_TAKE("$8", "$9", " + $7::integer")
static const char SQL_CLAIM_SKIP_HELD[] =
    CLAIM_SKIP("CASE WHEN " HELD_TAKE " > 1 THEN NULL ELSE greatest($1::bigint, created_at) END",
               " AND $7::integer < " HELD_TAKE);
/* A held task handed back by its worker (store.h): pending as if never claimed. $1, $2:
 * the tasks and attempts; $3, $4: the owner. Tells the other instances. */
static const char SQL_UNCLAIM[] =
    "WITH u AS (UPDATE tasks AS t SET state = 'pending', attempts = t.attempts - 1,"
    "           owner_instance = NULL, owner_pid = NULL"
    "           WHERE t.id = ANY ($1::bigint[])"      /* by its key */
    "           AND t.attempts = ($2::integer[])[array_position($1::bigint[], t.id)]"
    "           AND t.state = 'running'"
    "           AND t.owner_instance = $3::bigint AND t.owner_pid = $4::bigint"
    "           AND t.started_at IS NULL RETURNING t.id)"
    " SELECT pg_notify('warmpool_ready', $3::bigint::text || ':' || count(*)) FROM u"
    " HAVING count(*) > 0";
/* A held task runs long (store_mark_started, by the agent): its start is written, and
 * the one written before for the same worker ($4, $5, $6: only if it is still the value
 * written, the task still running this attempt) unset again, so that of a worker's held
 * tasks only the one running has a start: whoever hands back the tasks of a dead
 * instance tells it from those not run (or run, but whose outcome is lost with the
 * worker: run again, as with SQLite). */
static const char SQL_MARK_STARTED[] =
    "UPDATE tasks SET started_at = CASE WHEN id = $1::bigint THEN $3::bigint END"
    " WHERE id = ANY (ARRAY[$1::bigint, $4::bigint]) AND state = 'running'"
    " AND ((id = $1::bigint AND attempts = $2::integer AND started_at IS NULL)"
    "      OR (id = $4::bigint AND attempts = $5::integer AND started_at = $6::bigint))"
    " RETURNING id";
/* Before a claim with concurrency limits: the advisory lock of each limited kind ($1)
 * that has pending tasks, in one order (no deadlock between claimers), held to the end of
 * the transaction; their names kept in warmpool.kind_locks for SQL_CLAIM_SKIP. A kind
 * without pending tasks now is left alone by this claim (its next submission wakes a
 * worker). Two claimers of one limited kind thus take turns, and each counts the kind's
 * running tasks after the other's claim committed. */
static const char SQL_KIND_LOCK[] =
    "SELECT set_config('warmpool.kind_locks', coalesce(array_agg(x.kind)::text, '{}'),"
    " true), count(*)"
    " FROM (SELECT l.kind, hashtext(l.kind) AS h FROM unnest($1::text[]) AS l(kind)"
    "       WHERE (SELECT sum(n) FROM task_counts c WHERE c.state = 'pending'"
    "              AND c.kind = l.kind) > 0 ORDER BY 2 OFFSET 0) AS x"
    " CROSS JOIN LATERAL pg_advisory_xact_lock(22353, x.h)";
/* Are there paused kinds? Read at each claim for the next one: with paused kinds, claims
 * take the per-kind form, never stepping over a paused kind's ready tasks. */
static const char SQL_PAUSED_ANY[] = "SELECT EXISTS (SELECT 1 FROM paused_kinds)";
/* issue 13: retry from the dead (a compare-and-set on the state), telling the others */
static const char SQL_RETRY[] =
    "WITH r AS (UPDATE tasks SET state = 'pending', attempts = 0, result = NULL,"
    "           previous_error_code = error_code, previous_error_message = error_message,"
    "           error_code = NULL, error_message = NULL, started_at = NULL,"
    "           finished_at = NULL, run_after = 0, delayed = false, owner_instance = NULL,"
    "           owner_pid = NULL,"
    /* a completion callback is made again when the retried task ends */
    "           callback_state = CASE WHEN callback_url IS NULL THEN NULL ELSE 'pending' END,"
    "           callback_attempts = 0, callback_next_at = 0, callback_error = NULL"
    "           WHERE id = $1::bigint AND (state = 'failed' OR state = 'canceled')"
    "           RETURNING " TASK_COLS ")"
    " SELECT r.*, pg_notify('warmpool_ready', $2::text || ':1') FROM r";
static const char SQL_PAUSE[] =
    "INSERT INTO paused_kinds (kind, paused_at) VALUES ($1, $2::bigint)"
    " ON CONFLICT (kind) DO NOTHING RETURNING kind";
/* a resume wakes the idle workers of every instance: the kind's tasks may be ready */
static const char SQL_RESUME[] =
    "WITH d AS (DELETE FROM paused_kinds WHERE kind = $1 RETURNING kind)"
    " SELECT d.kind, pg_notify('warmpool_ready', $2::text || ':65536') FROM d";
static const char SQL_PAUSED[] = "SELECT kind FROM paused_kinds ORDER BY kind";
static const char SQL_HAS_READY_SKIP[] =
    "SELECT (SELECT run_after FROM tasks WHERE state = 'pending' AND delayed"
    "        AND run_after <= $1::bigint ORDER BY run_after LIMIT 1) IS NOT NULL"
    " OR EXISTS (SELECT 1 FROM (SELECT kind FROM task_counts WHERE state = 'pending'"
    "                          GROUP BY kind HAVING sum(n) > 0) AS k"
    "            WHERE k.kind <> ALL ($2::text[]) AND (SELECT id FROM tasks"
    "              WHERE state = 'pending' AND NOT delayed"
    "              AND kind = k.kind ORDER BY kind, -priority, id LIMIT 1) IS NOT NULL)";
/* The compare-and-set of an attempt's end; tells the other instances (a retry: ready,
 * to wake their idle workers, which set their sleep by its run_after; else done). */
static const char SQL_FINISH[] =
    "WITH f AS (UPDATE tasks SET state = $3, result = $4, error_code = $5,"
    "           error_message = $6, finished_at = $7::bigint, run_after = $8::bigint,"
    "           delayed = $9::boolean, previous_error_code = NULL,"
    "           previous_error_message = NULL,"
    "           started_at = coalesce(started_at, $11::bigint)"     /* a held task's */
    "           WHERE id = $1::bigint AND attempts = $2::integer AND state = 'running'"
    "           RETURNING id, state, attempts, finished_at, kind, error_code)"
    " SELECT f.id, pg_notify(CASE WHEN f.state = 'pending' THEN 'warmpool_ready'"
    "                        ELSE 'warmpool_done' END,"
    "                        CASE WHEN f.state = 'pending' THEN $10::text || ':1'"
    "                        ELSE " DONE_PAYLOAD("$10::text", "f") " END) FROM f";
/* running -> pending (attempts left) or failed; used for a dead worker (by owner), and
 * for dead or lost instances (by owner_instance). A held task not run (HELD: started_at
 * unset, and for a worker not the task its slot showed) goes back to pending as if never
 * claimed, as with SQLite (store_sqlite.c, SQL_RELEASE): its attempt not counted, no
 * error. */
#define RELEASE_SET(HELD, END, CODE, MESSAGE)                                           \
    " state = CASE WHEN " HELD " OR attempts < max_attempts THEN 'pending'"            \
    "  ELSE 'failed' END,"                                                             \
    " finished_at = CASE WHEN " HELD " OR attempts < max_attempts THEN NULL"           \
    "  ELSE " END "::bigint END,"                                                      \
    " error_code = CASE WHEN " HELD " THEN error_code ELSE " CODE " END,"              \
    " error_message = CASE WHEN " HELD " THEN error_message ELSE " MESSAGE " END,"     \
    " attempts = attempts - (" HELD ")::integer, delayed = false"
#define RELEASE_RETURNING(HELD) \
    " RETURNING id, state, attempts, finished_at, kind, error_code, " HELD " AS held)"
#define HELD_NOT_RUN "(started_at IS NULL AND id <> $6::bigint)"
#define HELD_ANY "(started_at IS NULL)"
#define RELEASE_NOTIFY                                                                \
    " SELECT r.id, r.state, r.held, pg_notify(CASE WHEN r.state = 'pending'"                  \
    " THEN 'warmpool_ready' ELSE 'warmpool_done' END, CASE WHEN r.state = 'pending'"  \
    " THEN $1::text || ':1' ELSE " DONE_PAYLOAD("$1::text", "r") " END) FROM r"
/* $6: the task the worker's slot showed running (0: none) */
static const char SQL_RELEASE[] =
    "WITH r AS (UPDATE tasks SET"
    RELEASE_SET(HELD_NOT_RUN, "$3", "$4", "$5")
    " WHERE state = 'running' AND owner_instance = $1::bigint AND owner_pid = $2::bigint"
    RELEASE_RETURNING(HELD_NOT_RUN) RELEASE_NOTIFY;
/* a dead instance's held tasks: the ones begun have their start written
 * (SQL_MARK_STARTED); those not begun go back as never claimed */
static const char SQL_RELEASE_INSTANCES[] =
    "WITH r AS (UPDATE tasks SET"
    RELEASE_SET(HELD_ANY, "$3", "'worker_lost'", "$4")
    " WHERE state = 'running' AND owner_instance = ANY ($2::bigint[])"
    RELEASE_RETURNING(HELD_ANY) RELEASE_NOTIFY;
static const char SQL_NEXT_RUN_AFTER[] =
    "SELECT run_after FROM tasks WHERE state = 'pending' AND delayed"
    " AND run_after > $1::bigint ORDER BY run_after LIMIT 1";
/* retention: the oldest finished tasks first, a small batch at a time; one instance at a
 * time (the others find the lock taken and delete nothing) */
static const char SQL_PURGE[] =
    "DELETE FROM tasks WHERE (SELECT pg_try_advisory_xact_lock(22352, 3))"
    " AND id = ANY (ARRAY(SELECT id FROM tasks WHERE finished_at IS NOT NULL"
    "                  AND finished_at < $1::bigint ORDER BY finished_at"
    "                  LIMIT $2::integer FOR UPDATE SKIP LOCKED))";
static const char SQL_NO_SYNC[] = "SELECT set_config('synchronous_commit', 'off', true)";
static const char SQL_COUNT[] =
    "SELECT state, sum(n)::bigint FROM task_counts GROUP BY state"
    " UNION ALL SELECT 'running', count(*) FROM tasks WHERE state = 'running'";
static const char SQL_COUNT_PENDING[] =
    "SELECT coalesce(sum(n), 0)::bigint FROM task_counts WHERE state = 'pending'";
static const char SQL_COUNT_KINDS[] =
    "SELECT state, kind, sum(n)::bigint FROM task_counts GROUP BY state, kind"
    " HAVING sum(n) <> 0"
    " UNION ALL SELECT 'running', kind, count(*) FROM tasks WHERE state = 'running'"
    " GROUP BY kind";
/* Lists, newest first, one statement per filter, each walking its index from the cursor.
 * By state alone: the newest ids of each kind that has tasks in that state (task_counts
 * says which; running ones from the index), merged: a sort of at most (kinds x limit)
 * rows, never of the table. */
static const char SQL_LIST_ALL[] =
    "SELECT " TASK_COLS_BRIEF " FROM tasks WHERE id < $1::bigint ORDER BY id DESC"
    " LIMIT $2::integer";
/* By kind (and state): the kind as a range bound and a row comparison rather than an
 * equality. With kind = $1 the planner drops kind from the ORDER BY (a constant) and may
 * then walk the primary key backwards, filtering by kind: a long walk for a rare kind.
 * Here only (kind, id) / (state, kind, id) give the order, and the row comparison starts
 * the walk at the cursor: (kind, id) < ($1, $2) AND kind >= $1 is kind = $1 AND id < $2. */
static const char SQL_LIST_KIND[] =
    "SELECT " TASK_COLS_BRIEF " FROM tasks WHERE (kind, id) < ($1, $2::bigint)"
    " AND kind >= $1 ORDER BY kind DESC, id DESC LIMIT $3::integer";
static const char SQL_LIST_STATE_KIND[] =
    "SELECT " TASK_COLS_BRIEF " FROM tasks WHERE state = $1"
    " AND (state, kind, id) < ($1, $2, $3::bigint) AND kind >= $2"
    " ORDER BY state DESC, kind DESC, id DESC LIMIT $4::integer";
static const char SQL_LIST_STATE[] =
    "SELECT t.* FROM (SELECT kind FROM task_counts WHERE state = $1 GROUP BY kind"
    "                 HAVING sum(n) > 0) AS k"
    " CROSS JOIN LATERAL (SELECT " TASK_COLS_BRIEF " FROM tasks"
    "   WHERE state = $1 AND (state, kind, id) < ($1, k.kind, $2::bigint)"
    "   AND kind >= k.kind ORDER BY state DESC, kind DESC, id DESC LIMIT $3::integer) AS t"
    " ORDER BY t.id DESC LIMIT $3::integer";
static const char SQL_LIST_RUNNING[] =
    "SELECT t.* FROM (SELECT DISTINCT kind FROM tasks WHERE state = 'running') AS k"
    " CROSS JOIN LATERAL (SELECT " TASK_COLS_BRIEF " FROM tasks"
    "   WHERE state = 'running' AND (state, kind, id) < ('running', k.kind, $1::bigint)"
    "   AND kind >= k.kind ORDER BY state DESC, kind DESC, id DESC LIMIT $2::integer) AS t"
    " ORDER BY t.id DESC LIMIT $2::integer";
static const char SQL_PING[] = "SELECT 1";
static const char SQL_SECRET[] = "SELECT value FROM meta WHERE key = 'cursor_secret'";
static const char SQL_SIZE[] = "SELECT pg_database_size(current_database())";
static const char SQL_VERSION[] = "SELECT value FROM meta WHERE key = 'schema_version'";
/* ---- instances */
static const char SQL_REGISTER[] =
    "INSERT INTO instances (name, host, pid, pidns, workers, lease_ms, beat_ms, started_at)"
    " VALUES ($1, $2, $3::bigint, $4, $5::integer, $6::bigint, $7::bigint, $8::bigint)"
    " RETURNING id";
static const char SQL_REREGISTER[] =
    "INSERT INTO instances (id, name, host, pid, pidns, workers, lease_ms, beat_ms,"
    " started_at) VALUES ($9::bigint, $1, $2, $3::bigint, $4, $5::integer, $6::bigint,"
    " $7::bigint, $8::bigint) ON CONFLICT (id) DO NOTHING";
/* The heartbeat: last_seen now; alive_since starts again after a gap of more than $2
 * ms (3 beats); lost_at cleared (the instance is back). Returns whether it had been
 * found lost, and how many others are alive. */
static const char SQL_HEARTBEAT[] =
    "WITH old AS (SELECT id, last_seen, lost_at FROM instances WHERE id = $1::bigint"
    "             FOR UPDATE)"
    " UPDATE instances AS i SET last_seen = clock_timestamp(), lost_at = NULL,"
    "  alive_since = CASE WHEN clock_timestamp() - old.last_seen >"
    "                $2::bigint * interval '1 ms' THEN clock_timestamp()"
    "                ELSE i.alive_since END"
    " FROM old WHERE i.id = old.id"
    " RETURNING old.lost_at IS NOT NULL,"
    "  (SELECT count(*) FROM instances AS o WHERE o.id <> $1::bigint AND " LIVE("o") ")";
/* The rescue (one instance at a time: PG_LOCK_RESCUE): 1. instances whose lease ran
 * out, counted from when this one began its current run of heartbeats, are marked
 * lost; 2. the running tasks of every instance marked lost are handed back (also those
 * a lost instance claimed after it was marked: it may still run, unaware); 3. rows of
 * instances gone for an hour with nothing running are removed. */
static const char SQL_MARK_LOST[] =
    "UPDATE instances AS v SET lost_at = clock_timestamp() FROM instances AS me"
    " WHERE (SELECT pg_try_advisory_xact_lock(22352, 2)) AND me.id = $1::bigint"
    " AND v.id <> me.id AND v.lost_at IS NULL"
    " AND greatest(v.last_seen, me.alive_since) + v.lease_ms * interval '1 ms'"
    "     < clock_timestamp()"
    " RETURNING v.id";
static const char SQL_RELEASE_LOST[] =
    "WITH r AS (UPDATE tasks SET"
    RELEASE_SET(HELD_ANY, "$2", "'worker_lost'",
                "'the instance running this task was silent past its lease'")
    " WHERE (SELECT pg_try_advisory_xact_lock(22352, 2)) AND state = 'running'"
    " AND owner_instance IN (SELECT id FROM instances WHERE lost_at IS NOT NULL)"
    RELEASE_RETURNING(HELD_ANY) RELEASE_NOTIFY;
static const char SQL_FORGET_LOST[] =
    "DELETE FROM instances AS v WHERE (SELECT pg_try_advisory_xact_lock(22352, 2))"
    " AND v.lost_at IS NOT NULL AND v.last_seen < clock_timestamp() - interval '1 hour'"
    " AND NOT EXISTS (SELECT 1 FROM tasks WHERE state = 'running'"
    "                 AND owner_instance = v.id)";
static const char SQL_INSTANCES[] =
    "SELECT id, name, host, pid, workers, lease_ms, started_at,"
    " (extract(epoch FROM last_seen) * 1000)::bigint FROM instances AS i"
    " WHERE " LIVE("i") " ORDER BY id";
static const char SQL_SAME_PIDNS[] =
    "SELECT id, pid FROM instances WHERE pidns = $1 AND id <> $2::bigint";
static const char SQL_DROP_INSTANCES[] =
    "DELETE FROM instances WHERE id = ANY ($1::bigint[])";
/* a clean stop: the row goes; if tasks of it still run (a hand-back that failed), it is
 * marked silent forever instead, so that the next rescue hands them back */
static const char SQL_LEAVE[] =
    "DELETE FROM instances AS i WHERE id = $1::bigint AND NOT EXISTS"
    " (SELECT 1 FROM tasks WHERE state = 'running' AND owner_instance = i.id)";
static const char SQL_LEAVE_SILENT[] =
    "UPDATE instances SET last_seen = '-infinity' WHERE id = $1::bigint";

enum stmt_id {
    S_INSERT, S_GET, S_GET_BY_KEY, S_NOTIFY_READY, S_CANCEL, S_HAS_READY, S_HAS_READY_SKIP,
    S_PROMOTE, S_CLAIM, S_CLAIM_SKIP, S_CLAIM_HELD, S_CLAIM_SKIP_HELD, S_UNCLAIM,
    S_MARK_STARTED,
    S_FINISH, S_RELEASE, S_RELEASE_INSTANCES, S_NEXT_RUN_AFTER, S_PURGE, S_NO_SYNC, S_COUNT,
    S_COUNT_PENDING, S_COUNT_KINDS, S_LIST_ALL, S_LIST_KIND, S_LIST_STATE_KIND, S_LIST_STATE,
    S_LIST_RUNNING, S_PING, S_SECRET,
    S_SIZE, S_VERSION, S_REGISTER, S_REREGISTER, S_HEARTBEAT,
    S_MARK_LOST, S_RELEASE_LOST, S_FORGET_LOST, S_INSTANCES, S_SAME_PIDNS, S_DROP_INSTANCES,
    S_LEAVE, S_LEAVE_SILENT, S_CB_DUE, S_CB_CLAIM, S_CB_RECORD,
    S_KIND_LOCK, S_PAUSED_ANY, S_RETRY, S_PAUSE, S_RESUME, S_PAUSED,
    S_COUNT_OF
};

/* name: the prepared statement's, and store_explain()'s; sample: parameters for
 * EXPLAIN (store_explain shows the generic plan, the one any values get) */
static const struct {
    const char *name;
    const char *sql;
    const char *sample[MAXP];
} STMTS[S_COUNT_OF] = {
    [S_INSERT] = {"insert", SQL_INSERT,
                  {"echo", "0", "{}", "1", "1000", "1", "key", "0", "false", NULL}},
    [S_CB_DUE] = {"callback_due", SQL_CB_DUE, {"1"}},
    [S_CB_CLAIM] = {"callback_claim", SQL_CB_CLAIM, {"1", "1"}},
    [S_CB_RECORD] = {"callback_record", SQL_CB_RECORD, {"1", "1", "delivered", "0", NULL}},
    [S_GET] = {"get", SQL_GET, {"1"}},
    [S_GET_BY_KEY] = {"get_by_key", SQL_GET_BY_KEY, {"key"}},
    [S_NOTIFY_READY] = {"notify_ready", SQL_NOTIFY_READY, {"0", "0"}},
    [S_CANCEL] = {"cancel", SQL_CANCEL, {"1", "1", "0"}},
    [S_HAS_READY] = {"has_ready", SQL_HAS_READY, {"1"}},
    [S_PROMOTE] = {"promote", SQL_PROMOTE, {"1"}},
    [S_CLAIM] = {"claim", SQL_CLAIM, {"1", "1", "1"}},
    [S_CLAIM_SKIP] = {"claim_skip", SQL_CLAIM_SKIP, {"1", "1", "1", "{scan}", "{}", "{}"}},
    [S_CLAIM_HELD] = {"claim_held", SQL_CLAIM_HELD, {"1", "1", "1", "16", "4"}},
    [S_CLAIM_SKIP_HELD] = {"claim_skip_held", SQL_CLAIM_SKIP_HELD,
                           {"1", "1", "1", "{scan}", "{}", "{}", "1", "16", "4"}},
    [S_UNCLAIM] = {"unclaim", SQL_UNCLAIM, {"{1,2}", "{1,1}", "1", "1"}},
    [S_MARK_STARTED] = {"mark_started", SQL_MARK_STARTED, {"1", "1", "1", "0", "0", "0"}},
    [S_HAS_READY_SKIP] = {"has_ready_skip", SQL_HAS_READY_SKIP, {"1", "{scan}"}},
    [S_FINISH] = {"finish", SQL_FINISH,
                  {"1", "1", "succeeded", "{}", NULL, NULL, "1", "0", "false", "0", NULL}},
    [S_RELEASE] = {"release", SQL_RELEASE, {"1", "1", "1", "worker_lost", "died", "0"}},
    [S_RELEASE_INSTANCES] = {"release_instances", SQL_RELEASE_INSTANCES,
                             {"1", "{1}", "1", "died"}},
    [S_NEXT_RUN_AFTER] = {"next_run_after", SQL_NEXT_RUN_AFTER, {"1"}},
    [S_PURGE] = {"purge", SQL_PURGE, {"1", "16"}},
    [S_NO_SYNC] = {"no_sync", SQL_NO_SYNC, {NULL}},
    [S_COUNT] = {"count", SQL_COUNT, {NULL}},
    [S_COUNT_PENDING] = {"count_pending", SQL_COUNT_PENDING, {NULL}},
    [S_COUNT_KINDS] = {"count_kinds", SQL_COUNT_KINDS, {NULL}},
    [S_LIST_ALL] = {"list_all", SQL_LIST_ALL, {"100", "10"}},
    [S_LIST_KIND] = {"list_kind", SQL_LIST_KIND, {"echo", "100", "10"}},
    [S_LIST_STATE_KIND] = {"list_state_kind", SQL_LIST_STATE_KIND,
                           {"succeeded", "echo", "100", "10"}},
    [S_LIST_STATE] = {"list_state", SQL_LIST_STATE, {"succeeded", "100", "10"}},
    [S_LIST_RUNNING] = {"list_running", SQL_LIST_RUNNING, {"100", "10"}},
    [S_PING] = {"ping", SQL_PING, {NULL}},
    [S_SECRET] = {"secret", SQL_SECRET, {NULL}},
    [S_SIZE] = {"size", SQL_SIZE, {NULL}},
    [S_VERSION] = {"version", SQL_VERSION, {NULL}},
    [S_REGISTER] = {"register", SQL_REGISTER, {"n", "h", "1", "ns", "1", "1", "1", "1"}},
    [S_REREGISTER] = {"reregister", SQL_REREGISTER,
                      {"n", "h", "1", "ns", "1", "1", "1", "1", "1"}},
    [S_HEARTBEAT] = {"heartbeat", SQL_HEARTBEAT, {"1", "3000"}},
    [S_MARK_LOST] = {"mark_lost", SQL_MARK_LOST, {"1"}},
    [S_RELEASE_LOST] = {"release_lost", SQL_RELEASE_LOST, {"1", "1"}},
    [S_FORGET_LOST] = {"forget_lost", SQL_FORGET_LOST, {NULL}},
    [S_INSTANCES] = {"instances", SQL_INSTANCES, {NULL}},
    [S_SAME_PIDNS] = {"same_pidns", SQL_SAME_PIDNS, {"ns", "1"}},
    [S_DROP_INSTANCES] = {"drop_instances", SQL_DROP_INSTANCES, {"{1}"}},
    [S_LEAVE] = {"leave", SQL_LEAVE, {"1"}},
    [S_LEAVE_SILENT] = {"leave_silent", SQL_LEAVE_SILENT, {"1"}},
    [S_KIND_LOCK] = {"kind_lock", SQL_KIND_LOCK, {"{echo}"}},
    [S_PAUSED_ANY] = {"paused_any", SQL_PAUSED_ANY, {NULL}},
    [S_RETRY] = {"retry", SQL_RETRY, {"1", "0"}},
    [S_PAUSE] = {"pause", SQL_PAUSE, {"echo", "1"}},
    [S_RESUME] = {"resume", SQL_RESUME, {"echo", "0"}},
    [S_PAUSED] = {"paused", SQL_PAUSED, {NULL}},
};

/* ---------------------------------------------------------------- the store */

struct store {
    struct store_base base;     /* first: see backend.h */
    PGconn *conn;               /* NULL while the connection is down */
    char *uri;
    int flags;                  /* STORE_RELAXED, STORE_MAINTAINER */
    int busy_ms;
    unsigned char prepared[S_COUNT_OF];
    int in_tx;                  /* between store_begin() and its end */
    int begin_due;              /* store_begin() was called, its BEGIN not yet sent: it
                                 * goes in front of the transaction's first pipeline */
    int64_t tx_inserted;        /* tasks inserted in the open transaction */
    int listening;              /* store_listen() was called */
    int resync;                 /* a RESYNC event is due */
    int beat_ok;                /* the last heartbeat worked */
    int reclaim;                /* a connection was lost: a claim's answer may have been
                                 * lost with it (see q_claim) */
    int64_t next_try_ms;        /* monotonic: no connection attempt before */
    /* issue 13 */
    int paused_seen;            /* the last claim found paused kinds (SQL_PAUSED_ANY) */
    char *limit_kinds;          /* store_set_kind_limits(): a text[] literal, or NULL */
    char *limit_maxes;          /* the same limits' integer[] literal */
    char where[256];            /* store_describe() of the URI */
};

/* One statement of a pipeline: its id, parameters (text; NULL = SQL NULL), result. */
struct q {
    int id;
    int n;
    const char *v[MAXP];
    char buf[MAXP][32];
    PGresult *res;
};

static void
q_init(struct q *q, int id)
{
    q->id = id;
    q->n = 0;
    q->res = NULL;
}

static void
q_str(struct q *q, const char *v)
{
    q->v[q->n++] = v;
}

static void
q_i64(struct q *q, int64_t v)
{
    snprintf(q->buf[q->n], sizeof q->buf[q->n], "%" PRId64, v);
    q->v[q->n] = q->buf[q->n];
    q->n++;
}

static void
q_clear(struct q *q, int n)
{
    for (int i = 0; i < n; i++) {
        PQclear(q[i].res);
        q[i].res = NULL;
    }
}

static int64_t
self_id(void)
{
    const store_instance *me = store_instance_self();
    return me != NULL ? me->id : 0;
}

/* A text[] literal of a kind set ({"a","b"}), into buf: NULL when it does not fit. */
static const char *
kind_array(const store_kind_set *set, char *buf, size_t cap)
{
    size_t k = 0;
    buf[k++] = '{';
    for (size_t i = 0; i < set->n; i++) {
        if (k + 4 >= cap)
            return NULL;
        if (i > 0)
            buf[k++] = ',';
        buf[k++] = '"';
        for (const char *p = set->names[i]; *p; p++) {
            if (k + 4 >= cap)
                return NULL;
            if (*p == '"' || *p == '\\')
                buf[k++] = '\\';
            buf[k++] = *p;
        }
        buf[k++] = '"';
    }
    buf[k++] = '}';
    buf[k] = '\0';
    return buf;
}

/* ---------------------------------------------------------------- errors */

/* The first line of a libpq or server message. */
static void
set_err(store *s, const char *what, const char *msg)
{
    snprintf(s->base.errmsg, sizeof s->base.errmsg, "%s: %.*s", what,
             (int)strcspn(msg ? msg : "?", "\n"), msg ? msg : "?");
}

/* The connection is gone: drop it (made again at a later call). */
static void
drop_conn(store *s)
{
    if (s->conn != NULL)
        PQfinish(s->conn);
    s->conn = NULL;
    s->in_tx = 0;
    s->begin_due = 0;
    s->tx_inserted = 0;
    memset(s->prepared, 0, sizeof s->prepared);
    s->reclaim = 1;
    if (s->listening)
        s->resync = 1;
    s->next_try_ms = clock_mono_ms() + RECONNECT_MS;
}

/* Maps a failed result (or a NULL one: the connection failed) to a STORE_* code, and
 * records the message. A broken connection is dropped (made again at a later call). */
static int
fail_res(store *s, const char *what, const PGresult *r)
{
    const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r != NULL && PQresultErrorMessage(r)[0] != '\0' ? PQresultErrorMessage(r)
                      : s->conn != NULL ? PQerrorMessage(s->conn) : "no connection";
    char ctx[320];
    snprintf(ctx, sizeof ctx, "%s (PostgreSQL %s)", what, s->where);
    set_err(s, ctx, msg);
    int gone = s->conn == NULL || PQstatus(s->conn) != CONNECTION_OK;
    /* no SQLSTATE is libpq's own failure; 08: connection exception; 57P0x: the server
     * is shutting down or starting */
    if (gone || state == NULL || strncmp(state, "08", 2) == 0 ||
        strncmp(state, "57P0", 4) == 0) {
        drop_conn(s);
        return STORE_UNAVAILABLE;
    }
    if (strcmp(state, "53300") == 0)
        return STORE_UNAVAILABLE;       /* too many connections: later */
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
        strcmp(state, "55P03") == 0 || strcmp(state, "57014") == 0)
        return STORE_BUSY;              /* serialization, deadlock, lock or statement timeout */
    if (strcmp(state, "53100") == 0)
        return STORE_FULL;              /* disk full */
    if (strcmp(state, "58030") == 0)
        return STORE_IOERR;
    if (strcmp(state, "23505") == 0)
        return STORE_CONFLICT;
    return STORE_ERR;
}

/* ---------------------------------------------------------------- connecting */

static void
pg_describe(const char *db, char *out, size_t outlen)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(db, &perr);
    if (opts == NULL) {
        PQfreemem(perr);        /* it may quote the URI: never shown */
        snprintf(out, outlen, "postgresql://(a URI libpq cannot parse)");
        return;
    }
    const char *user = "", *host = "", *port = "", *dbname = "";
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        if (strcmp(o->keyword, "user") == 0)
            user = o->val;
        else if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            dbname = o->val;
    }
    snprintf(out, outlen, "postgresql://%s%s%s%s%s/%s", user, user[0] ? "@" : "",
             host[0] ? host : "localhost", port[0] ? ":" : "", port, dbname);
    PQconninfoFree(opts);
}

static int
pg_name_check(const char *db, char *err, size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(db, &perr);
    if (opts == NULL) {
        /* libpq's message may quote the URI: say only that it is wrong */
        snprintf(err, errlen, "not a PostgreSQL connection URI libpq can read "
                 "(postgresql://[user[:password]@][host][:port][/dbname][?param=value&...])");
        PQfreemem(perr);
        return -1;
    }
    PQconninfoFree(opts);
    return 0;
}

/* Connects to uri; the URI's own parameters win over these defaults: a bounded connect,
 * TCP keepalives and a send timeout, so that a server that vanishes without a word (a
 * partition) is noticed within seconds. NULL with the reason in err. */
static PGconn *
connect_uri(const char *uri, const char *where, char *err, size_t errlen)
{
    static const char *const keys[] = {
        "connect_timeout", "application_name", "keepalives", "keepalives_idle",
        "keepalives_interval", "keepalives_count", "tcp_user_timeout", "dbname", NULL};
    const char *vals[] = {"5", "warmpool", "1", "10", "5", "3", "15000", uri, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        const char *m = c != NULL ? PQerrorMessage(c) : "out of memory";
        /* libpq's message names the host and the reason; it never holds the password */
        snprintf(err, errlen, "cannot connect to PostgreSQL %s: %.*s", where,
                 (int)strcspn(m, "\n"), m);
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Makes the connection (again): settings, and LISTEN if this connection listens.
 * STORE_OK or STORE_UNAVAILABLE (err in errmsg). */
static int
reconnect(store *s)
{
    char err[512];
    s->conn = connect_uri(s->uri, s->where, err, sizeof err);
    if (s->conn == NULL) {
        snprintf(s->base.errmsg, sizeof s->base.errmsg, "%s", err);
        s->next_try_ms = clock_mono_ms() + RECONNECT_MS;
        return STORE_UNAVAILABLE;
    }
    char sql[400];
    int busy = s->busy_ms > 0 ? s->busy_ms : 5000;
    /* relaxed: commits do not wait for the WAL's flush (the durability level of store.h);
     * lock_timeout is the busy budget; a statement never runs for ever */
    snprintf(sql, sizeof sql,
             "SET synchronous_commit = %s; SET lock_timeout = '%dms';"
             " SET statement_timeout = '%dms'; SET idle_in_transaction_session_timeout = '60s'",
             (s->flags & STORE_RELAXED) ? "off" : "on", busy, busy * 4 > 30000 ? busy * 4 : 30000);
    PGresult *r = PQexec(s->conn, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        int rc = fail_res(s, "setting up the connection", r);
        PQclear(r);
        drop_conn(s);
        return rc == STORE_OK ? STORE_UNAVAILABLE : rc;
    }
    PQclear(r);
    if (s->listening) {
        r = PQexec(s->conn, "LISTEN warmpool_ready; LISTEN warmpool_done");
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            int rc = fail_res(s, "listen", r);
            PQclear(r);
            drop_conn(s);
            return rc;
        }
        PQclear(r);
    }
    PQsetnonblocking(s->conn, 1);
    return STORE_OK;
}

/* Before every call: the connection, made again if it broke. A server that closed it
 * (a restart) is seen here, by a look at the socket, rather than in the middle of the
 * next write. */
static int
ensure(store *s)
{
    if (s->conn != NULL && PQstatus(s->conn) == CONNECTION_OK) {
        if (s->in_tx)
            return STORE_OK;
        /* a server that ended the session sends an error, then closes: reading it may
         * take more than one call before libpq sees the end */
        for (int i = 0; i < 4; i++) {
            struct pollfd p = {.fd = PQsocket(s->conn), .events = POLLIN};
            if (poll(&p, 1, 0) <= 0)
                return STORE_OK;
            if (!PQconsumeInput(s->conn) || PQstatus(s->conn) != CONNECTION_OK) {
                fail_res(s, "connection", NULL);
                break;
            }
        }
        if (s->conn != NULL)
            return STORE_OK;            /* only notifications kept coming */
        s->next_try_ms = 0;             /* found broken before use: try again at once */
    }
    if (s->conn != NULL)
        drop_conn(s);
    if (clock_mono_ms() < s->next_try_ms) {
        if (strstr(s->base.errmsg, "PostgreSQL") == NULL)
            snprintf(s->base.errmsg, sizeof s->base.errmsg,
                     "the connection to PostgreSQL %s is down; trying again", s->where);
        return STORE_UNAVAILABLE;
    }
    return reconnect(s);
}

/* ---------------------------------------------------------------- pipelines */

/* Sends q[0..nq) as one pipeline (each statement prepared first where it is not yet on
 * this connection), reads every result: one round trip. flags: RUN_TX wraps them in
 * BEGIN ... COMMIT; RUN_COMMIT commits the caller's open transaction after them; without
 * either they are the protocol's implicit transaction, or part of the caller's open one
 * (whose BEGIN, when still due, goes first). STORE_OK with q[i].res set (free with
 * q_clear), or the error of the first statement that failed (the whole transaction then
 * did nothing, unless the caller holds it). */
enum cmd_kind { C_BEGIN, C_PREP, C_EXEC, C_COMMIT };
#define RUN_TX 1
#define RUN_COMMIT 2

static int
run(store *s, struct q *q, int nq, int flags, const char *what)
{
    int tx = (flags & RUN_TX) != 0;
    int rc = ensure(s);
    if (rc != STORE_OK)
        return rc;
    PGconn *c = s->conn;
    struct cmd {
        enum cmd_kind kind;
        int qi;
    } *cmds = malloc(((size_t)nq * 2 + 2) * sizeof *cmds);
    if (cmds == NULL) {
        snprintf(s->base.errmsg, sizeof s->base.errmsg, "%s: out of memory", what);
        return STORE_ERR;
    }
    unsigned char prepping[S_COUNT_OF] = {0};
    int nc = 0, ok = PQenterPipelineMode(c);
    if (ok && (tx || s->begin_due)) {
        ok = PQsendQueryParams(c, "BEGIN", 0, NULL, NULL, NULL, NULL, 0);
        cmds[nc++] = (struct cmd){C_BEGIN, -1};
    }
    for (int i = 0; ok && i < nq; i++) {
        int id = q[i].id;
        if (!s->prepared[id] && !prepping[id]) {
            ok = PQsendPrepare(c, STMTS[id].name, STMTS[id].sql, 0, NULL);
            cmds[nc++] = (struct cmd){C_PREP, i};
            prepping[id] = 1;
        }
        ok = ok && PQsendQueryPrepared(c, STMTS[id].name, q[i].n, q[i].v, NULL, NULL, 0);
        cmds[nc++] = (struct cmd){C_EXEC, i};
    }
    if (ok && (tx || (flags & RUN_COMMIT))) {
        ok = PQsendQueryParams(c, "COMMIT", 0, NULL, NULL, NULL, NULL, 0);
        cmds[nc++] = (struct cmd){C_COMMIT, -1};
    }
    ok = ok && PQpipelineSync(c);
    /* send it all, reading what comes back meanwhile, so that neither side can block
     * on a full socket buffer while the other waits for it */
    while (ok) {
        int f = PQflush(c);
        if (f <= 0) {
            ok = f == 0;
            break;
        }
        struct pollfd p = {.fd = PQsocket(c), .events = POLLIN | POLLOUT};
        if (poll(&p, 1, 1000) > 0 && (p.revents & POLLIN) && !PQconsumeInput(c))
            ok = 0;
    }
    if (!ok) {
        free(cmds);
        rc = fail_res(s, what, NULL);
        if (s->conn != NULL)
            drop_conn(s);       /* never reuse a half-sent pipeline */
        return rc == STORE_OK ? STORE_UNAVAILABLE : rc;
    }
    /* each command's results end with a NULL; a command after a failed one is
     * PGRES_PIPELINE_ABORTED; the Sync's result comes last */
    for (int k = 0; k < nc && s->conn != NULL; k++) {
        PGresult *r;
        while ((r = PQgetResult(c)) != NULL) {
            ExecStatusType st = PQresultStatus(r);
            if (st == PGRES_FATAL_ERROR) {
                if (rc == STORE_OK)
                    rc = fail_res(s, what, r);      /* the first error is the one to say */
                else if (PQstatus(c) != CONNECTION_OK)
                    drop_conn(s);
                PQclear(r);
                if (s->conn == NULL)
                    break;      /* the connection is gone: nothing more to read */
                continue;
            }
            struct q *qq = cmds[k].qi >= 0 ? &q[cmds[k].qi] : NULL;
            if (cmds[k].kind == C_PREP && st == PGRES_COMMAND_OK)
                s->prepared[qq->id] = 1;
            if (cmds[k].kind == C_EXEC && st != PGRES_PIPELINE_ABORTED && qq->res == NULL)
                qq->res = r;
            else
                PQclear(r);
        }
        if (s->conn != NULL && PQstatus(c) != CONNECTION_OK && rc == STORE_OK)
            rc = fail_res(s, what, NULL);
    }
    free(cmds);
    if (s->conn != NULL) {
        PGresult *r = PQgetResult(c);
        int synced = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
        PQclear(r);
        if (!synced || !PQexitPipelineMode(c)) {
            if (rc == STORE_OK)
                rc = fail_res(s, what, NULL);
            if (s->conn != NULL)
                drop_conn(s);   /* out of step with the server: start afresh */
        }
    }
    if (s->conn != NULL && (tx || (flags & RUN_COMMIT)) &&
        PQtransactionStatus(s->conn) == PQTRANS_INERROR)
        PQclear(PQexec(s->conn, "ROLLBACK"));
    if (rc == STORE_OK)
        s->begin_due = 0;
    if (rc == STORE_OK) {
        for (int i = 0; i < nq; i++) {
            if (q[i].res == NULL) {     /* cannot happen: every statement answered */
                snprintf(s->base.errmsg, sizeof s->base.errmsg, "%s: no result", what);
                rc = STORE_ERR;
            }
        }
    }
    if (rc != STORE_OK)
        q_clear(q, nq);
    return rc;
}

/* run() for statements that only read (or whose repetition changes nothing): when the
 * connection turns out broken during the call (a server restarted since the last one),
 * it is made again at once and the call tried once more, so that the first request
 * after a restart does not fail. Writes are never repeated here: a commit whose answer
 * was lost may have happened. */
static int
run_read(store *s, struct q *q, int nq, const char *what)
{
    int was_up = s->conn != NULL && !s->in_tx;
    int rc = run(s, q, nq, 0, what);
    if (rc == STORE_UNAVAILABLE && was_up && s->conn == NULL && !s->in_tx) {
        s->next_try_ms = 0;
        rc = run(s, q, nq, 0, what);
    }
    return rc;
}

/* ---------------------------------------------------------------- rows */

static char *
val_dup(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return NULL;
    return strdup(PQgetvalue(r, row, col));
}

static int64_t
val_i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* Reads row `row` of TASK_COLS into *t. 0, or -1 out of memory. */
static int
row_to_task(const PGresult *r, int row, store_task *t)
{
    *t = (store_task){0};
    t->id = val_i64(r, row, 0);
    t->kind = val_dup(r, row, 1);
    if (task_state_parse(PQgetvalue(r, row, 2), &t->state) != 0)
        t->state = TASK_FAILED;         /* cannot happen: CHECK constraint */
    t->priority = (int)val_i64(r, row, 3);
    t->input = val_dup(r, row, 4);
    t->result = val_dup(r, row, 5);
    t->error_code = val_dup(r, row, 6);
    t->error_message = val_dup(r, row, 7);
    t->attempts = (int)val_i64(r, row, 8);
    t->max_attempts = (int)val_i64(r, row, 9);
    t->timeout_ms = val_i64(r, row, 10);
    t->created_at_ms = val_i64(r, row, 11);
    t->started_at_ms = val_i64(r, row, 12);
    t->finished_at_ms = val_i64(r, row, 13);
    t->run_after_ms = val_i64(r, row, 14);
    t->previous_error_code = val_dup(r, row, 15);
    t->previous_error_message = val_dup(r, row, 16);
    t->callback_url = val_dup(r, row, 17);
    const char *cb = PQgetisnull(r, row, 18) ? NULL : PQgetvalue(r, row, 18);
    for (int k = STORE_CB_PENDING; cb != NULL && k <= STORE_CB_FAILED; k++)
        if (strcmp(cb, store_callback_state_name(k)) == 0)
            t->callback_state = k;
    t->callback_attempts = (int)val_i64(r, row, 19);
    t->callback_error = val_dup(r, row, 20);
    if ((t->callback_url == NULL && !PQgetisnull(r, row, 17)) ||
        (t->callback_error == NULL && !PQgetisnull(r, row, 20)) ||
        (t->previous_error_code == NULL && !PQgetisnull(r, row, 15)) ||
        (t->previous_error_message == NULL && !PQgetisnull(r, row, 16))) {
        store_task_clear(t);
        return -1;
    }
    if (t->kind == NULL || (t->input == NULL && !PQgetisnull(r, row, 4)) ||
        (t->result == NULL && !PQgetisnull(r, row, 5)) ||
        (t->error_code == NULL && !PQgetisnull(r, row, 6)) ||
        (t->error_message == NULL && !PQgetisnull(r, row, 7))) {
        store_task_clear(t);
        return -1;
    }
    return 0;
}

/* The task of a one-row result: STORE_OK, `none` when there is no row. */
static int
one_task(store *s, const PGresult *r, store_task *t, int none)
{
    *t = (store_task){0};
    if (PQntuples(r) == 0)
        return none;
    if (row_to_task(r, 0, t) != 0) {
        snprintf(s->base.errmsg, sizeof s->base.errmsg, "out of memory");
        return STORE_ERR;
    }
    return STORE_OK;
}

/* ---------------------------------------------------------------- open, close */

static store *
pg_open(const char *db, int flags, int busy_ms, char *err, size_t errlen)
{
    store *s = calloc(1, sizeof *s);
    if (s == NULL || (s->uri = strdup(db)) == NULL) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->base.ops = &store_pg_ops;
    s->flags = flags;
    s->busy_ms = busy_ms > 0 ? busy_ms : 5000;
    pg_describe(db, s->where, sizeof s->where);
    if (reconnect(s) != STORE_OK) {
        snprintf(err, errlen, "%s", s->base.errmsg);
        goto fail;
    }
    if (schema_pg_check(s->conn, err, errlen) != 0)
        goto fail;
    return s;
fail:
    if (s->conn != NULL)
        PQfinish(s->conn);
    free(s->uri);
    free(s);
    return NULL;
}

static void
pg_close(store *s)
{
    if (s->conn != NULL)
        PQfinish(s->conn);
    free(s->limit_kinds);
    free(s->limit_maxes);
    free(s->uri);
    free(s);
}

/* A single statement returning one value (text), or NULL; *rc its status. */
static char *
one_value(store *s, int id, const char *what, int *rc)
{
    struct q q;
    q_init(&q, id);
    *rc = run_read(s, &q, 1, what);
    if (*rc != STORE_OK)
        return NULL;
    char *v = PQntuples(q.res) > 0 ? val_dup(q.res, 0, 0) : NULL;
    q_clear(&q, 1);
    return v;
}

static int
pg_schema_version(store *s)
{
    int rc;
    char *v = one_value(s, S_VERSION, "schema version", &rc);
    int n = v != NULL ? atoi(v) : -1;
    free(v);
    return n;
}

/* ---------------------------------------------------------------- transactions */

/* No round trip: the connection is looked at (and made again if it broke), and the
 * BEGIN goes in front of the transaction's first pipeline. */
static int
pg_begin(store *s)
{
    int rc = ensure(s);
    s->in_tx = rc == STORE_OK;
    s->begin_due = s->in_tx;
    s->tx_inserted = 0;
    return rc;
}

/* The commit, in one round trip with the NOTIFY that tells the other instances how
 * many tasks it made ready. */
static int
pg_commit(store *s)
{
    int rc = STORE_OK;
    if (s->begin_due) {
        /* nothing was sent: nothing to commit */
    } else if (!s->in_tx || s->conn == NULL) {
        snprintf(s->base.errmsg, sizeof s->base.errmsg, "commit: the transaction is lost");
        rc = STORE_UNAVAILABLE;
    } else {
        struct q q;
        int nq = 0;
        if (s->tx_inserted > 0) {
            q_init(&q, S_NOTIFY_READY);
            q_i64(&q, self_id());
            q_i64(&q, s->tx_inserted);
            nq = 1;
        }
        rc = run(s, &q, nq, RUN_COMMIT, "commit");
        q_clear(&q, nq);
        if (rc != STORE_OK && s->conn != NULL &&
            PQtransactionStatus(s->conn) != PQTRANS_IDLE)
            PQclear(PQexec(s->conn, "ROLLBACK"));
    }
    s->in_tx = 0;
    s->begin_due = 0;
    s->tx_inserted = 0;
    return rc;
}

static void
pg_rollback(store *s)
{
    if (!s->begin_due && s->conn != NULL && PQtransactionStatus(s->conn) != PQTRANS_IDLE)
        PQclear(PQexec(s->conn, "ROLLBACK"));
    s->in_tx = 0;
    s->begin_due = 0;
    s->tx_inserted = 0;
}

/* ---------------------------------------------------------------- tasks */

static void
q_insert(struct q *q, const store_new_task *nt, int64_t now_ms)
{
    q_init(q, S_INSERT);
    q_str(q, nt->kind);
    q_i64(q, nt->priority);
    q_str(q, nt->input);
    q_i64(q, nt->max_attempts);
    q_i64(q, nt->timeout_ms);
    q_i64(q, now_ms);
    q_str(q, nt->idem_key);
    /* a scheduled task waits in tasks_delayed until its time (a past one is ready) */
    int later = nt->run_after_ms > now_ms;
    q_i64(q, later ? nt->run_after_ms : 0);
    q_str(q, later ? "true" : "false");
    q_str(q, nt->callback_url);
}

/* n inserts in one pipeline; then, for those whose key was used before, the first tasks
 * of those keys in a second one. Outside a transaction, the first pipeline also tells
 * the other instances. */
static int
pg_insert_batch(store *s, const store_new_task *nt, size_t n, int64_t now_ms, store_task *out,
                int *status)
{
    if (n == 0)
        return STORE_OK;
    for (size_t i = 0; i < n; i++)
        out[i] = (store_task){0};       /* cleared on every failure path below */
    int own = !s->in_tx;
    size_t nq = n + (own ? 1 : 0);
    struct q *q = calloc(nq, sizeof *q);
    if (q == NULL) {
        snprintf(s->base.errmsg, sizeof s->base.errmsg, "insert: out of memory");
        return STORE_ERR;
    }
    for (size_t i = 0; i < n; i++)
        q_insert(&q[i], &nt[i], now_ms);
    if (own) {
        q_init(&q[n], S_NOTIFY_READY);
        q_i64(&q[n], self_id());
        q_i64(&q[n], (int64_t)n);
    }
    int rc = run(s, q, (int)nq, 0, "insert");
    size_t exists = 0, inserted = 0;
    for (size_t i = 0; rc == STORE_OK && i < n; i++) {
        rc = one_task(s, q[i].res, &out[i], STORE_EXISTS);
        if (rc == STORE_EXISTS) {
            status[i] = STORE_EXISTS;
            exists++;
            rc = STORE_OK;
        } else if (rc == STORE_OK) {
            status[i] = STORE_OK;
            inserted++;
        }
    }
    q_clear(q, (int)nq);
    if (rc == STORE_OK && exists > 0) {
        /* ON CONFLICT DO NOTHING returned no row: the key was used before */
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (status[i] != STORE_EXISTS)
                continue;
            q_init(&q[k], S_GET_BY_KEY);
            q_str(&q[k], nt[i].idem_key);
            k++;
        }
        rc = run(s, q, (int)k, 0, "get by key");
        k = 0;
        for (size_t i = 0; rc == STORE_OK && i < n; i++) {
            if (status[i] != STORE_EXISTS)
                continue;
            rc = one_task(s, q[k++].res, &out[i], STORE_ERR);
            if (rc == STORE_ERR && s->base.errmsg[0] == '\0')
                snprintf(s->base.errmsg, sizeof s->base.errmsg,
                         "idempotency key conflict without a task");
        }
        q_clear(q, (int)k);
    }
    free(q);
    if (rc != STORE_OK) {
        for (size_t i = 0; i < n; i++)
            store_task_clear(&out[i]);
        return rc;
    }
    if (!own)
        s->tx_inserted += (int64_t)inserted;
    return STORE_OK;
}

static int
pg_insert(store *s, const store_new_task *nt, int64_t now_ms, store_task *out)
{
    int status = STORE_OK;
    int rc = pg_insert_batch(s, nt, 1, now_ms, out, &status);
    return rc == STORE_OK ? status : rc;
}

static int
pg_get(store *s, int64_t id, store_task *out)
{
    struct q q;
    q_init(&q, S_GET);
    q_i64(&q, id);
    *out = (store_task){0};
    int rc = run_read(s, &q, 1, "get");
    if (rc == STORE_OK)
        rc = one_task(s, q.res, out, STORE_NOTFOUND);
    q_clear(&q, 1);
    return rc;
}

static int
pg_list(store *s, const store_filter *f, store_task **items, size_t *n, int *more)
{
    *items = NULL;
    *n = 0;
    *more = 0;
    int64_t want = (int64_t)f->limit + 1;       /* one more tells whether more exist */
    int64_t before = f->before_id > 0 ? f->before_id : INT64_MAX;
    const char *state = f->has_state ? task_state_name(f->state) : NULL;
    struct q q;
    if (state != NULL && f->kind != NULL) {
        q_init(&q, S_LIST_STATE_KIND);
        q_str(&q, state);
        q_str(&q, f->kind);
    } else if (state != NULL && f->state == TASK_RUNNING) {
        q_init(&q, S_LIST_RUNNING);
    } else if (state != NULL) {
        q_init(&q, S_LIST_STATE);
        q_str(&q, state);
    } else if (f->kind != NULL) {
        q_init(&q, S_LIST_KIND);
        q_str(&q, f->kind);
    } else {
        q_init(&q, S_LIST_ALL);
    }
    q_i64(&q, before);
    q_i64(&q, want);
    int rc = run_read(s, &q, 1, "list");
    if (rc != STORE_OK)
        return rc;
    int rows = PQntuples(q.res);
    store_task *v = calloc(rows > 0 ? (size_t)rows : 1, sizeof *v);
    if (v == NULL) {
        q_clear(&q, 1);
        snprintf(s->base.errmsg, sizeof s->base.errmsg, "list: out of memory");
        return STORE_ERR;
    }
    for (int i = 0; i < rows; i++) {
        if (row_to_task(q.res, i, &v[i]) != 0) {
            for (int j = 0; j < i; j++)
                store_task_clear(&v[j]);
            free(v);
            q_clear(&q, 1);
            snprintf(s->base.errmsg, sizeof s->base.errmsg, "list: out of memory");
            return STORE_ERR;
        }
    }
    q_clear(&q, 1);
    size_t got = (size_t)rows;
    if ((int64_t)got == want) {
        *more = 1;
        store_task_clear(&v[--got]);
    }
    *items = v;
    *n = got;
    return STORE_OK;
}

static int
pg_cancel(store *s, int64_t id, int64_t now_ms, store_task *out)
{
    struct q q;
    q_init(&q, S_CANCEL);
    q_i64(&q, id);
    q_i64(&q, now_ms);
    q_i64(&q, self_id());
    *out = (store_task){0};
    int rc = run(s, &q, 1, 0, "cancel");
    if (rc == STORE_OK)
        rc = one_task(s, q.res, out, STORE_NOTFOUND);
    q_clear(&q, 1);
    if (rc != STORE_NOTFOUND)
        return rc;
    /* nothing canceled: either no such task, or it is no longer pending */
    rc = pg_get(s, id, out);
    return rc == STORE_OK ? STORE_CONFLICT : rc;
}

static int
pg_callback_claim(store *s, int64_t now_ms, int64_t lease_ms, store_task *out)
{
    struct q q;
    *out = (store_task){0};
    /* a read first: an idle deliverer's look fires no trigger and takes no lock */
    q_init(&q, S_CB_DUE);
    q_i64(&q, now_ms);
    int rc = run_read(s, &q, 1, "callback due");
    int due = rc == STORE_OK && PQntuples(q.res) > 0;
    q_clear(&q, 1);
    if (rc != STORE_OK || !due)
        return rc != STORE_OK ? rc : STORE_EMPTY;
    q_init(&q, S_CB_CLAIM);
    q_i64(&q, now_ms);
    q_i64(&q, now_ms + lease_ms);
    rc = run(s, &q, 1, 0, "callback claim");
    if (rc == STORE_OK)
        rc = one_task(s, q.res, out, STORE_EMPTY);
    q_clear(&q, 1);
    return rc;
}

static int
pg_callback_record(store *s, int64_t id, int attempt, int state, int64_t next_at_ms,
                   const char *error)
{
    struct q q;
    q_init(&q, S_CB_RECORD);
    q_i64(&q, id);
    q_i64(&q, attempt);
    q_str(&q, store_callback_state_name(state));
    q_i64(&q, next_at_ms);
    q_str(&q, error);
    int rc = run(s, &q, 1, 0, "callback record");
    if (rc == STORE_OK && PQntuples(q.res) != 1)
        rc = STORE_CONFLICT;
    q_clear(&q, 1);
    return rc;
}

static int
pg_has_ready(store *s, int64_t now_ms, const store_kind_set *skip)
{
    struct q q;
    char kinds[4096];
    int skipping = skip != NULL && skip->n > 0;
    q_init(&q, skipping ? S_HAS_READY_SKIP : S_HAS_READY);
    q_i64(&q, now_ms);
    if (skipping && (q.v[q.n++] = kind_array(skip, kinds, sizeof kinds)) == NULL) {
        snprintf(s->base.errmsg, sizeof s->base.errmsg, "has_ready: too many kinds to skip");
        return -STORE_ERR;
    }
    int rc = run_read(s, &q, 1, "has_ready");
    if (rc != STORE_OK)
        return -rc;
    int yes = PQntuples(q.res) > 0 && PQgetvalue(q.res, 0, 0)[0] == 't';
    q_clear(&q, 1);
    return yes;
}

/* The claim: [a hand-back of this worker's lost claims,] due retries promoted, the
 * first ready task taken. A worker runs one task at a time and claims only when it runs
 * none, so a task `running` under its name when it claims is a claim whose answer was
 * lost with a connection (it committed, the worker never learnt of it): once a
 * connection was lost, the next claim hands such tasks back first, rather than leaving
 * them running under a worker that does not know them until it dies. Returns how many
 * statements it set: 2 or 3, the claim last. */
static int
q_claim(store *s, struct q *q, int64_t now_ms, long owner, const store_kind_set *skip,
        char *kinds, size_t kinds_cap)
{
    int k = 0;
    if (s->reclaim) {
        q_init(&q[k], S_RELEASE);
        q_i64(&q[k], self_id());
        q_i64(&q[k], owner);
        q_i64(&q[k], now_ms);
        q_str(&q[k], "worker_lost");
        q_str(&q[k], "the answer to this task's claim was lost with the connection to the "
                     "database");
        q_i64(&q[k], 0);        /* held tasks of a lost batch claim: as never claimed */
        k++;
    }
    q_init(&q[k], S_PROMOTE);
    q_i64(&q[k], now_ms);
    k++;
    if (s->limit_kinds != NULL) {       /* after the promotion: its tasks count too */
        q_init(&q[k], S_KIND_LOCK);
        q_str(&q[k], s->limit_kinds);
        k++;
    }
    int skipping = (skip != NULL && skip->n > 0) || s->limit_kinds != NULL || s->paused_seen;
    q_init(&q[k], skipping ? S_CLAIM_SKIP : S_CLAIM);
    q_i64(&q[k], now_ms);
    q_i64(&q[k], self_id());
    q_i64(&q[k], owner);
    if (skipping) {
        static const store_kind_set none = {NULL, 0};
        if ((q[k].v[q[k].n++] = kind_array(skip != NULL ? skip : &none, kinds, kinds_cap)) ==
            NULL) {
            snprintf(s->base.errmsg, sizeof s->base.errmsg, "claim: too many kinds to skip");
            return -1;
        }
        q_str(&q[k], s->limit_kinds != NULL ? s->limit_kinds : "{}");
        q_str(&q[k], s->limit_maxes != NULL ? s->limit_maxes : "{}");
    }
    k++;
    q_init(&q[k], S_PAUSED_ANY);
    return k + 1;
}

/* After a claim's pipeline: remembers whether paused kinds exist (the last result). */
static void
note_paused(store *s, const struct q *last)
{
    s->paused_seen = last->res != NULL && PQntuples(last->res) > 0 &&
                     PQgetvalue(last->res, 0, 0)[0] == 't';
}

static int
pg_claim_next(store *s, int64_t now_ms, long owner, const store_kind_set *skip,
              store_task *out)
{
    struct q q[6];
    char kinds[4096];
    *out = (store_task){0};
    int nq = q_claim(s, q, now_ms, owner, skip, kinds, sizeof kinds);
    if (nq < 0)
        return STORE_ERR;
    int was_paused = s->paused_seen;
    int rc = run(s, q, nq, 0, "claim");
    if (rc == STORE_OK) {
        s->reclaim = 0;
        note_paused(s, &q[nq - 1]);
        rc = one_task(s, q[nq - 2].res, out, STORE_EMPTY);
    }
    q_clear(q, nq);
    /* the plain claim found the head of a kind paused meanwhile: again, per kind */
    if (rc == STORE_EMPTY && !was_paused && s->paused_seen)
        return pg_claim_next(s, now_ms, owner, skip, out);
    return rc;
}

static void
q_finish(struct q *q, int64_t id, int attempt, const store_outcome *o)
{
    int retry = o->state == TASK_PENDING;
    q_init(q, S_FINISH);
    q_i64(q, id);
    q_i64(q, attempt);
    q_str(q, task_state_name(o->state));
    q_str(q, o->result);
    q_str(q, o->error_code);
    q_str(q, o->error_message);
    if (retry)
        q_str(q, NULL);
    else
        q_i64(q, o->now_ms);
    q_i64(q, retry ? o->run_after_ms : 0);
    /* a retry that must wait goes to tasks_delayed; one due already is ready */
    q_str(q, retry && o->run_after_ms > o->now_ms ? "true" : "false");
    q_i64(q, self_id());
    if (o->started_ms > 0)      /* a held task's start, if the claim left it unset */
        q_i64(q, o->started_ms);
    else
        q_str(q, NULL);
}

static int
conflict(store *s, int64_t id, int attempt)
{
    snprintf(s->base.errmsg, sizeof s->base.errmsg,
             "task %" PRId64 " attempt %d is no longer running", id, attempt);
    return STORE_CONFLICT;
}

static int
pg_finish(store *s, int64_t id, int attempt, const store_outcome *o)
{
    struct q q;
    q_finish(&q, id, attempt, o);
    int rc = run(s, &q, 1, 0, "finish");
    int changed = rc == STORE_OK && PQntuples(q.res) > 0;
    q_clear(&q, 1);
    if (rc != STORE_OK)
        return rc;
    return changed ? STORE_OK : conflict(s, id, attempt);
}

/* finish, [hand back lost claims,] promote, claim: one pipeline, one transaction, one
 * round trip. The finish comes first: the task it records is this worker's own. */
static int
pg_finish_claim(store *s, int64_t id, int attempt, const store_outcome *o, int64_t now_ms,
                long owner, const store_kind_set *skip, store_task *next, int *claimed)
{
    *claimed = 0;
    *next = (store_task){0};
    struct q q[7];
    char kinds[4096];
    q_finish(&q[0], id, attempt, o);
    int nc = q_claim(s, &q[1], now_ms, owner, skip, kinds, sizeof kinds);
    if (nc < 0)
        return STORE_ERR;
    int nq = 1 + nc;
    int rc = run(s, q, nq, 0, "finish and claim");
    if (rc != STORE_OK)
        return rc;
    s->reclaim = 0;
    note_paused(s, &q[nq - 1]);
    int changed = PQntuples(q[0].res) > 0;
    rc = one_task(s, q[nq - 2].res, next, STORE_EMPTY);
    q_clear(q, nq);
    if (rc == STORE_ERR)
        return rc;      /* out of memory reading a row that was claimed: its worker's
                         * death hands it back */
    *claimed = rc == STORE_OK;
    return changed ? STORE_OK : conflict(s, id, attempt);
}

static int
refs_of(const PGresult *r, store_task_ref *refs, size_t cap, size_t *n)
{
    int rows = PQntuples(r);
    for (int i = 0; i < rows; i++) {
        if (*n >= cap)
            break;
        refs[*n].id = val_i64(r, i, 0);
        refs[*n].not_started = PQgetvalue(r, i, 2)[0] == 't';   /* held, not run */
        if (task_state_parse(PQgetvalue(r, i, 1), &refs[*n].state) != 0)
            refs[*n].state = TASK_FAILED;
        (*n)++;
    }
    return rows;
}

/* store_record_batch(): the outcomes (SQL_FINISH each), the hand-backs (SQL_UNCLAIM, all
 * in one), [the hand-back of lost claims,] the promotion and the claim: one pipeline,
 * one transaction, one round trip. The claim of one task is q_claim's; a batch is
 * SQL_CLAIM_HELD, or SQL_CLAIM_SKIP_HELD once per task when kinds are left alone, limited
 * or paused. One outcome and a claim of one, the common case, is pg_finish_claim. */
static int
pg_record_batch(store *s, store_done *done, size_t ndone, const store_claim_ref *back,
                size_t nback, int64_t now_ms, long owner, const store_kind_set *skip,
                size_t want, size_t share, store_task *next, size_t *nclaimed)
{
    *nclaimed = 0;
    if (ndone == 1 && nback == 0 && want == 1) {
        int claimed = 0;
        int rc = pg_finish_claim(s, done[0].id, done[0].attempt, &done[0].o, now_ms, owner,
                                 skip, &next[0], &claimed);
        if (rc != STORE_OK && rc != STORE_CONFLICT)
            return rc;
        done[0].rc = rc;
        *nclaimed = (size_t)claimed;
        return STORE_OK;
    }
    if (ndone == 1 && nback == 0 && want == 0) {    /* a worker that stops: the finish alone */
        done[0].rc = pg_finish(s, done[0].id, done[0].attempt, &done[0].o);
        return done[0].rc == STORE_CONFLICT ? STORE_OK : done[0].rc;
    }
    if (share == 0)
        share = 1;
    size_t cap = ndone + 8 + (want > 1 ? want : 1);
    struct q *q = malloc(cap * sizeof *q);
    char *ids = NULL, *atts = NULL;
    char kinds[4096];
    if (q == NULL)
        goto oom;
    int nq = 0;
    for (size_t i = 0; i < ndone; i++)
        q_finish(&q[nq++], done[i].id, done[i].attempt, &done[i].o);
    if (nback > 0) {
        ids = malloc(nback * 24 + 4);
        atts = malloc(nback * 12 + 4);
        if (ids == NULL || atts == NULL)
            goto oom;
        size_t li = 0, la = 0;
        ids[li++] = '{';
        atts[la++] = '{';
        for (size_t i = 0; i < nback; i++) {
            li += (size_t)sprintf(ids + li, "%s%" PRId64, i ? "," : "", back[i].id);
            la += (size_t)sprintf(atts + la, "%s%d", i ? "," : "", back[i].attempt);
        }
        strcpy(ids + li, "}");
        strcpy(atts + la, "}");
        q_init(&q[nq], S_UNCLAIM);
        q_str(&q[nq], ids);
        q_str(&q[nq], atts);
        q_i64(&q[nq], self_id());
        q_i64(&q[nq], owner);
        nq++;
    }
    int first = -1, nclaims = 0;    /* the claim statements: q[first .. first + nclaims) */
    if (want == 1) {
        int nc = q_claim(s, &q[nq], now_ms, owner, skip, kinds, sizeof kinds);
        if (nc < 0) {
            free(q), free(ids), free(atts);
            return STORE_ERR;
        }
        first = nq + nc - 2;
        nclaims = 1;
        nq += nc;
    } else if (want > 1) {
        /* q_claim's steps, the claim made for a batch */
        int nc = q_claim(s, &q[nq], now_ms, owner, skip, kinds, sizeof kinds);
        if (nc < 0) {
            free(q), free(ids), free(atts);
            return STORE_ERR;
        }
        int at = nq + nc - 2;       /* q_claim's claim: replaced */
        int skipping = q[at].id == S_CLAIM_SKIP;
        const char *left = skipping ? q[at].v[3] : NULL, *lk = skipping ? q[at].v[4] : NULL,
                   *lm = skipping ? q[at].v[5] : NULL;
        nq = at;
        first = nq;
        if (!skipping) {
            q_init(&q[nq], S_CLAIM_HELD);
            q_i64(&q[nq], now_ms);
            q_i64(&q[nq], self_id());
            q_i64(&q[nq], owner);
            q_i64(&q[nq], (int64_t)want);
            q_i64(&q[nq], (int64_t)share);
            nq++;
            nclaims = 1;
        } else {
            for (size_t k = 0; k < want; k++) {
                q_init(&q[nq], S_CLAIM_SKIP_HELD);
                q_i64(&q[nq], now_ms);
                q_i64(&q[nq], self_id());
                q_i64(&q[nq], owner);
                q_str(&q[nq], left);        /* the kinds left alone, the limits */
                q_str(&q[nq], lk);
                q_str(&q[nq], lm);
                q_i64(&q[nq], (int64_t)k);
                q_i64(&q[nq], (int64_t)want);
                q_i64(&q[nq], (int64_t)share);
                nq++;
            }
            nclaims = (int)want;
        }
        q_init(&q[nq++], S_PAUSED_ANY);
    }
    int was_paused = s->paused_seen;
    int rc = run(s, q, nq, RUN_TX, "record a batch");
    free(ids);
    free(atts);
    if (rc != STORE_OK) {
        free(q);
        return rc;
    }
    for (size_t i = 0; i < ndone; i++)
        done[i].rc = PQntuples(q[i].res) > 0 ? STORE_OK : conflict(s, done[i].id, done[i].attempt);
    if (want > 0) {
        s->reclaim = 0;
        note_paused(s, &q[nq - 1]);
        for (int c = first; c < first + nclaims && rc == STORE_OK; c++) {
            for (int r = 0; r < PQntuples(q[c].res) && *nclaimed < want; r++) {
                if (row_to_task(q[c].res, r, &next[*nclaimed]) != 0) {
                    /* out of memory reading a claimed row: its worker's death hands
                     * the claims back; what was read is dropped */
                    snprintf(s->base.errmsg, sizeof s->base.errmsg, "out of memory");
                    rc = STORE_ERR;
                    break;
                }
                (*nclaimed)++;
            }
        }
    }
    q_clear(q, nq);
    free(q);
    if (rc != STORE_OK) {
        for (size_t k = 0; k < *nclaimed; k++)
            store_task_clear(&next[k]);
        *nclaimed = 0;
        return rc;
    }
    /* the plain claim found the head of a kind paused meanwhile: again, per kind (its
     * own transaction: the outcomes are recorded) */
    if (want > 0 && *nclaimed == 0 && !was_paused && s->paused_seen) {
        if (pg_claim_next(s, now_ms, owner, skip, &next[0]) == STORE_OK)
            *nclaimed = 1;      /* else none: the worker looks again when woken */
    }
    return STORE_OK;
oom:
    free(q);
    free(ids);
    free(atts);
    snprintf(s->base.errmsg, sizeof s->base.errmsg, "record a batch: out of memory");
    return STORE_ERR;
}

/* store_mark_started(): with an asynchronous commit (no wait for the disk: losing it to
 * a crash of the server only makes the task look not begun). */
static int
pg_mark_started(store *s, int64_t id, int attempt, int64_t started_ms, int64_t prev_id,
                int prev_attempt, int64_t prev_started_ms)
{
    struct q q[2];
    q_init(&q[0], S_NO_SYNC);
    q_init(&q[1], S_MARK_STARTED);
    q_i64(&q[1], id);
    q_i64(&q[1], attempt);
    q_i64(&q[1], started_ms);
    q_i64(&q[1], prev_id);
    q_i64(&q[1], prev_attempt);
    q_i64(&q[1], prev_started_ms);
    int rc = run(s, q, 2, RUN_TX, "mark started");
    if (rc == STORE_OK && id != 0) {
        rc = STORE_NOTFOUND;
        for (int i = 0; i < PQntuples(q[1].res); i++)
            if (val_i64(q[1].res, i, 0) == id)
                rc = STORE_OK;
    }
    q_clear(q, 2);
    return rc;
}

static int
pg_release_lost(store *s, long owner, int64_t running_id, int64_t now_ms, const char *code,
                const char *message, store_task_ref *released, size_t cap, size_t *n)
{
    struct q q;
    *n = 0;
    q_init(&q, S_RELEASE);
    q_i64(&q, self_id());
    q_i64(&q, owner);
    q_i64(&q, now_ms);
    q_str(&q, code ? code : "worker_lost");
    q_str(&q, message ? message : "the worker running this task died");
    q_i64(&q, running_id);
    int rc = run(s, &q, 1, 0, "release");
    if (rc == STORE_OK)
        refs_of(q.res, released, cap, n);
    q_clear(&q, 1);
    return rc;
}

/* This host's boot and pid namespace: where a supervisor's pid means something. */
static void
pid_namespace(char *out, size_t outlen)
{
    char boot[64] = "?", ns[64] = "?";
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f != NULL) {
        if (fgets(boot, sizeof boot, f) == NULL)
            snprintf(boot, sizeof boot, "?");
        fclose(f);
    }
    boot[strcspn(boot, "\n")] = '\0';
    ssize_t len = readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
    ns[len > 0 ? len : 1] = '\0';
    snprintf(out, outlen, "%s/%s", boot, ns);
}

/* Hands back the running tasks of the instances in ids ("{1,2}"), with why. */
static int
release_instances(store *s, const char *ids, int64_t now_ms, const char *why, int *requeued,
                  int *failed, store_task_ref *refs, size_t cap, size_t *n)
{
    struct q q;
    q_init(&q, S_RELEASE_INSTANCES);
    q_i64(&q, self_id());
    q_str(&q, ids);
    q_i64(&q, now_ms);
    q_str(&q, why);
    int rc = run(s, &q, 1, 0, "release instances");
    if (rc == STORE_OK) {
        for (int i = 0; i < PQntuples(q.res); i++) {
            int pending = strcmp(PQgetvalue(q.res, i, 1), "pending") == 0;
            if (pending)
                (*requeued)++;
            else
                (*failed)++;
            if (*n < cap)
                refs[(*n)++] = (store_task_ref){val_i64(q.res, i, 0),
                                                pending ? TASK_PENDING : TASK_FAILED,
                                                PQgetvalue(q.res, i, 2)[0] == 't'};
        }
    }
    q_clear(&q, 1);
    return rc;
}

/* The instances that ran in this pid namespace and whose supervisor is dead (a killed
 * warmpool, restarted here): their running tasks are handed back now rather than after
 * their lease, and their rows go. A pid that lives may be another process now: that
 * instance is left to its lease. */
static int
pg_recover_running(store *s, int64_t now_ms, int *requeued, int *failed, store_task_ref *refs,
                   size_t cap, size_t *n)
{
    char ns[160];
    *requeued = *failed = 0;
    *n = 0;
    pid_namespace(ns, sizeof ns);
    struct q q;
    q_init(&q, S_SAME_PIDNS);
    q_str(&q, ns);
    q_i64(&q, self_id());
    int rc = run(s, &q, 1, 0, "recover");
    if (rc != STORE_OK)
        return rc;
    char ids[1024] = "{";
    size_t len = 1;
    int dead = 0;
    for (int i = 0; i < PQntuples(q.res) && len < sizeof ids - 32; i++) {
        pid_t pid = (pid_t)val_i64(q.res, i, 1);
        if (pid != getpid() && !(pid > 0 && kill(pid, 0) != 0 && errno == ESRCH))
            continue;
        len += (size_t)snprintf(ids + len, sizeof ids - len, "%s%s", dead ? "," : "",
                                PQgetvalue(q.res, i, 0));
        dead++;
    }
    q_clear(&q, 1);
    if (dead == 0)
        return STORE_OK;
    snprintf(ids + len, sizeof ids - len, "}");
    rc = release_instances(s, ids, now_ms, "the service stopped while this task was running",
                           requeued, failed, refs, cap, n);
    if (rc != STORE_OK)
        return rc;
    q_init(&q, S_DROP_INSTANCES);
    q_str(&q, ids);
    rc = run(s, &q, 1, 0, "recover");
    q_clear(&q, 1);
    return rc;
}

static int
pg_count_states(store *s, int64_t counts[TASK_STATE_COUNT])
{
    memset(counts, 0, sizeof(int64_t) * TASK_STATE_COUNT);
    struct q q;
    q_init(&q, S_COUNT);
    int rc = run_read(s, &q, 1, "count");
    if (rc != STORE_OK)
        return rc;
    for (int i = 0; i < PQntuples(q.res); i++) {
        enum task_state st;
        if (task_state_parse(PQgetvalue(q.res, i, 0), &st) == 0)
            counts[st] = val_i64(q.res, i, 1);
    }
    q_clear(&q, 1);
    return STORE_OK;
}

static int
pg_count_kinds(store *s, store_kind_counts **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    struct q q;
    q_init(&q, S_COUNT_KINDS);
    int rc = run_read(s, &q, 1, "count kinds");
    if (rc != STORE_OK)
        return rc;
    store_kind_counts *v = NULL;
    size_t len = 0, cap = 0;
    for (int i = 0; rc == STORE_OK && i < PQntuples(q.res); i++) {
        enum task_state st;
        const char *kind = PQgetvalue(q.res, i, 1);
        if (task_state_parse(PQgetvalue(q.res, i, 0), &st) != 0)
            continue;
        size_t k = 0;
        while (k < len && strcmp(v[k].kind, kind) != 0)
            k++;
        if (k == len) {
            if (len == cap) {
                cap = cap ? cap * 2 : 8;
                store_kind_counts *p = realloc(v, cap * sizeof *p);
                if (p == NULL) {
                    rc = STORE_ERR;
                    break;
                }
                v = p;
            }
            v[len] = (store_kind_counts){.kind = strdup(kind)};
            if (v[len].kind == NULL) {
                rc = STORE_ERR;
                break;
            }
            len++;
        }
        v[k].n[st] = val_i64(q.res, i, 2);
    }
    q_clear(&q, 1);
    if (rc != STORE_OK) {
        snprintf(s->base.errmsg, sizeof s->base.errmsg, "count kinds: out of memory");
        store_kind_counts_free(v, len);
        return rc;
    }
    *out = v;
    *n = len;
    return STORE_OK;
}

static int64_t
pg_next_run_after(store *s, int64_t now_ms)
{
    struct q q;
    q_init(&q, S_NEXT_RUN_AFTER);
    q_i64(&q, now_ms);
    if (run_read(s, &q, 1, "next run_after") != STORE_OK)
        return 0;
    int64_t t = PQntuples(q.res) > 0 ? val_i64(q.res, 0, 0) : 0;
    q_clear(&q, 1);
    return t;
}

static int64_t
pg_count_pending(store *s)
{
    int rc;
    char *v = one_value(s, S_COUNT_PENDING, "count pending", &rc);
    int64_t n = rc == STORE_OK && v != NULL ? strtoll(v, NULL, 10) : rc == STORE_OK ? 0 : -1;
    free(v);
    return n;
}

/* One purge step: its commit waits for no flush (the next durable commit covers it). */
static int
pg_purge(store *s, int64_t before_ms, int limit, int *deleted)
{
    *deleted = 0;
    struct q q[2];
    q_init(&q[0], S_NO_SYNC);
    q_init(&q[1], S_PURGE);
    q_i64(&q[1], before_ms);
    q_i64(&q[1], limit);
    int rc = run(s, q, 2, s->in_tx ? 0 : RUN_TX, "purge");
    if (rc == STORE_OK)
        *deleted = atoi(PQcmdTuples(q[1].res));
    q_clear(q, 2);
    return rc;
}

/* Nothing to do: the server checkpoints and vacuums (autovacuum) by itself. */
static int
pg_maintain(store *s, char *note, size_t notelen)
{
    (void)s, (void)note, (void)notelen;
    return STORE_OK;
}

static int
pg_ping(store *s)
{
    struct q q;
    q_init(&q, S_PING);
    int rc = run_read(s, &q, 1, "ping");
    q_clear(&q, 1);
    return rc;
}

static uint64_t
pg_secret(store *s)
{
    int rc;
    char *hex = one_value(s, S_SECRET, "secret", &rc);
    uint64_t v = hex != NULL ? strtoull(hex, NULL, 16) : 0;
    free(hex);
    return v;
}

/* The database's size on disk (every table and index, as the server counts it). */
static int64_t
pg_size_bytes(store *s)
{
    int rc;
    char *v = one_value(s, S_SIZE, "size", &rc);
    int64_t bytes = v != NULL ? strtoll(v, NULL, 10) : -1;
    free(v);
    return bytes;
}

/* EXPLAIN of every statement, as the server plans it for any values (a generic plan). */
static int
pg_explain(store *s, store_plan_fn *fn, void *arg)
{
    int rc = ensure(s);
    if (rc != STORE_OK)
        return rc;
    /* the connection's durability, read back from the server */
    char line[128];
    PGresult *r = PQexec(s->conn, "SHOW synchronous_commit");
    snprintf(line, sizeof line, "synchronous_commit=%s\n",
             PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? PQgetvalue(r, 0, 0)
                                                                       : "?");
    PQclear(r);
    fn(arg, "connection", line);
    r = PQexec(s->conn, "SET plan_cache_mode = force_generic_plan");
    PQclear(r);
    for (int i = 0; i < S_COUNT_OF; i++) {
        char name[64], sql[512];
        snprintf(name, sizeof name, "explain_%s", STMTS[i].name);
        r = PQprepare(s->conn, name, STMTS[i].sql, 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            rc = fail_res(s, STMTS[i].name, r);
            PQclear(r);
            return rc;
        }
        PQclear(r);
        int np = 0;
        size_t len = (size_t)snprintf(sql, sizeof sql, "EXPLAIN (COSTS OFF) EXECUTE %s", name);
        PGresult *d = PQdescribePrepared(s->conn, name);
        np = d != NULL ? PQnparams(d) : 0;
        PQclear(d);
        for (int k = 0; k < np && len < sizeof sql - 64; k++) {
            const char *v = STMTS[i].sample[k];
            char *lit = v != NULL ? PQescapeLiteral(s->conn, v, strlen(v)) : NULL;
            len += (size_t)snprintf(sql + len, sizeof sql - len, "%s%s", k ? ", " : "(",
                                    lit != NULL ? lit : "NULL");
            PQfreemem(lit);
        }
        if (np > 0)
            snprintf(sql + len, sizeof sql - len, ")");
        r = PQexec(s->conn, sql);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = fail_res(s, STMTS[i].name, r);
            PQclear(r);
            return rc;
        }
        char plan[4096] = "";
        size_t pl = 0;
        for (int k = 0; k < PQntuples(r) && pl < sizeof plan; k++)
            pl += (size_t)snprintf(plan + pl, sizeof plan - pl, "%s\n", PQgetvalue(r, k, 0));
        PQclear(r);
        snprintf(sql, sizeof sql, "DEALLOCATE %s", name);
        PQclear(PQexec(s->conn, sql));
        fn(arg, STMTS[i].name, plan);
    }
    PQclear(PQexec(s->conn, "RESET plan_cache_mode"));
    return STORE_OK;
}

/* The server's work is not counted here (test_store_pg reads plans and buffers). */
static int64_t
pg_work(store *s)
{
    (void)s;
    return -1;
}

/* ---------------------------------------------------------------- instances */

static void
q_register(struct q *q, int id, const store_instance *in, const char *ns)
{
    q_init(q, id);
    q_str(q, in->name);
    q_str(q, in->host);
    q_i64(q, in->pid);
    q_str(q, ns);
    q_i64(q, in->workers);
    q_i64(q, in->lease_ms);
    q_i64(q, store_heartbeat_every_ms(in->lease_ms));
    q_i64(q, in->started_at_ms);
}

static int
pg_heartbeat(store *s, int *live, int *was_lost)
{
    const store_instance *me = store_instance_self();
    *live = 1;
    *was_lost = 0;
    if (me == NULL)
        return STORE_OK;
    struct q q;
    q_init(&q, S_HEARTBEAT);
    q_i64(&q, me->id);
    q_i64(&q, 3 * store_heartbeat_every_ms(me->lease_ms));
    int rc = run(s, &q, 1, 0, "heartbeat");
    if (rc == STORE_OK && PQntuples(q.res) == 1) {
        *was_lost = PQgetvalue(q.res, 0, 0)[0] == 't';
        *live = 1 + (int)val_i64(q.res, 0, 1);
    } else if (rc == STORE_OK) {
        /* the row is gone (found lost, and forgotten an hour later): the same id again */
        char ns[160];
        pid_namespace(ns, sizeof ns);
        q_clear(&q, 1);
        q_register(&q, S_REREGISTER, me, ns);
        q_i64(&q, me->id);
        rc = run(s, &q, 1, 0, "heartbeat");
        *was_lost = 1;
    }
    q_clear(&q, 1);
    s->beat_ok = rc == STORE_OK;
    return rc;
}

static int
pg_rescue(store *s, int64_t now_ms, store_task_ref *refs, size_t cap, size_t *n, int *lost)
{
    *n = 0;
    *lost = 0;
    int64_t me = self_id();
    if (me == 0)
        return STORE_OK;
    struct q q[3];
    q_init(&q[0], S_MARK_LOST);
    q_i64(&q[0], me);
    q_init(&q[1], S_RELEASE_LOST);
    q_i64(&q[1], me);
    q_i64(&q[1], now_ms);
    q_init(&q[2], S_FORGET_LOST);
    int rc = run(s, q, 3, 0, "rescue");
    if (rc == STORE_OK) {
        *lost = PQntuples(q[0].res);
        refs_of(q[1].res, refs, cap, n);
    }
    q_clear(q, 3);
    return rc;
}

static int
pg_instances(store *s, store_instance **out, size_t *n)
{
    struct q q;
    q_init(&q, S_INSTANCES);
    int rc = run_read(s, &q, 1, "instances");
    if (rc != STORE_OK)
        return rc;
    int rows = PQntuples(q.res);
    store_instance *v = calloc(rows > 0 ? (size_t)rows : 1, sizeof *v);
    if (v == NULL) {
        q_clear(&q, 1);
        snprintf(s->base.errmsg, sizeof s->base.errmsg, "instances: out of memory");
        return STORE_ERR;
    }
    for (int i = 0; i < rows; i++) {
        v[i].id = val_i64(q.res, i, 0);
        snprintf(v[i].name, sizeof v[i].name, "%s", PQgetvalue(q.res, i, 1));
        snprintf(v[i].host, sizeof v[i].host, "%s", PQgetvalue(q.res, i, 2));
        v[i].pid = (long)val_i64(q.res, i, 3);
        v[i].workers = (int)val_i64(q.res, i, 4);
        v[i].lease_ms = val_i64(q.res, i, 5);
        v[i].started_at_ms = val_i64(q.res, i, 6);
        v[i].last_seen_ms = val_i64(q.res, i, 7);
    }
    q_clear(&q, 1);
    *out = v;
    *n = (size_t)rows;
    return STORE_OK;
}

static int
pg_leave(store *s)
{
    int64_t me = self_id();
    if (me == 0)
        return STORE_OK;
    struct q q[2];
    q_init(&q[0], S_LEAVE);
    q_i64(&q[0], me);
    q_init(&q[1], S_LEAVE_SILENT);
    q_i64(&q[1], me);
    int rc = run(s, q, 2, 0, "leave");
    q_clear(q, 2);
    return rc;
}

/* ---------------------------------------------------------------- events */

/* A DONE payload after its instance: id:state:attempts:finished_at:kind:error (the
 * error code last: anything after the sixth colon). */
static void
done_event(const char *p, store_event *ev)
{
    *ev = (store_event){.type = STORE_EV_DONE, .n = strtoll(p, NULL, 10),
                        .state = TASK_FAILED};
    const char *f[5];
    for (int i = 0; i < 5; i++) {
        p = p != NULL ? strchr(p, ':') : NULL;
        f[i] = p != NULL ? ++p : NULL;
    }
    if (f[4] == NULL)
        return;                 /* an older payload: the id alone */
    char state[16];
    snprintf(state, sizeof state, "%.*s", (int)strcspn(f[0], ":"), f[0]);
    if (task_state_parse(state, &ev->state) != 0)
        ev->state = TASK_FAILED;
    ev->attempts = atoi(f[1]);
    ev->at_ms = strtoll(f[2], NULL, 10);
    snprintf(ev->kind, sizeof ev->kind, "%.*s", (int)strcspn(f[3], ":"), f[3]);
    snprintf(ev->error_code, sizeof ev->error_code, "%s", f[4]);
}

static int
pg_listen(store *s)
{
    s->listening = 1;
    int rc = ensure(s);
    if (rc != STORE_OK)
        return rc;
    PGresult *r = PQexec(s->conn, "LISTEN warmpool_ready; LISTEN warmpool_done");
    rc = PQresultStatus(r) == PGRES_COMMAND_OK ? STORE_OK : fail_res(s, "listen", r);
    PQclear(r);
    return rc;
}

static int
pg_events_fd(store *s)
{
    return s->conn != NULL && PQstatus(s->conn) == CONNECTION_OK ? PQsocket(s->conn) : -1;
}

static int
pg_events(store *s, store_event *ev, size_t cap, size_t *n)
{
    *n = 0;
    if (cap == 0)
        return STORE_OK;
    int rc = ensure(s);
    if (s->resync && s->conn != NULL) {
        s->resync = 0;
        ev[(*n)++] = (store_event){.type = STORE_EV_RESYNC};
    }
    if (rc != STORE_OK)
        return rc;
    if (!PQconsumeInput(s->conn))
        return fail_res(s, "events", NULL);
    int64_t me = self_id();
    PGnotify *nt;
    while (*n < cap && (nt = PQnotifies(s->conn)) != NULL) {
        char *colon = strchr(nt->extra, ':');
        int64_t from = strtoll(nt->extra, NULL, 10);
        int64_t v = colon != NULL ? strtoll(colon + 1, NULL, 10) : 0;
        if (from != me && colon != NULL && v > 0) {
            if (strcmp(nt->relname, "warmpool_ready") == 0)
                ev[(*n)++] = (store_event){.type = STORE_EV_READY, .n = v};
            else if (strcmp(nt->relname, "warmpool_done") == 0)
                done_event(colon + 1, &ev[(*n)++]);
        }
        PQfreemem(nt);
    }
    return STORE_OK;
}

/* ---------------------------------------------------------------- start-up */

static int
pg_migrate(const char *db, store_progress_fn *progress, void *arg, int *from, char *err,
           size_t errlen)
{
    char where[256];
    int version = 0;
    pg_describe(db, where, sizeof where);
    PGconn *c = connect_uri(db, where, err, errlen);
    if (c == NULL)
        return STORE_UNAVAILABLE;
    int rc = schema_pg_migrate(c, progress, arg, &version, err, errlen) == 0 ? STORE_OK
                                                                           : STORE_ERR;
    if (rc != STORE_OK && PQstatus(c) != CONNECTION_OK)
        rc = STORE_UNAVAILABLE;
    PQfinish(c);
    if (from != NULL)
        *from = version;
    return rc;
}

static int
pg_start(const char *db, store_instance *inst, store_progress_fn *progress, void *arg,
         store_start_report *rep, char *err, size_t errlen)
{
    *rep = (store_start_report){0};
    int rc = pg_migrate(db, progress, arg, &rep->from_version, err, errlen);
    if (rc != STORE_OK)
        return rc;
    rep->version = PG_SCHEMA_VERSION;
    store *s = pg_open(db, STORE_DURABLE, 10000, err, errlen);
    if (s == NULL)
        return STORE_UNAVAILABLE;
    char ns[160];
    pid_namespace(ns, sizeof ns);
    struct q q;
    q_register(&q, S_REGISTER, inst, ns);
    rc = run(s, &q, 1, 0, "registering the instance");
    if (rc == STORE_OK && PQntuples(q.res) == 1) {
        inst->id = val_i64(q.res, 0, 0);
        store_set_self(inst);
        rc = pg_recover_running(s, clock_now_ms(), &rep->requeued, &rep->failed, rep->recovered,
                                STORE_START_REFS, &rep->nrecovered);
    }
    q_clear(&q, 1);
    if (rc != STORE_OK)
        snprintf(err, errlen, "%s", s->base.errmsg);
    pg_close(s);
    return rc;
}

/* Nothing is held in this process between calls. */
static void
pg_instance_end(void)
{
}

/* ---------------------------------------------------------------- issue 13 */

static int
pg_retry(store *s, int64_t id, int64_t now_ms, store_task *out)
{
    (void)now_ms;
    struct q q;
    q_init(&q, S_RETRY);
    q_i64(&q, id);
    q_i64(&q, self_id());
    *out = (store_task){0};
    int rc = run(s, &q, 1, 0, "retry");
    if (rc == STORE_OK)
        rc = one_task(s, q.res, out, STORE_NOTFOUND);
    q_clear(&q, 1);
    if (rc != STORE_NOTFOUND)
        return rc;
    /* nothing changed: no such task, or it is not failed nor canceled (any more) */
    rc = pg_get(s, id, out);
    return rc == STORE_OK ? STORE_CONFLICT : rc;
}

static int
pg_kind_pause(store *s, const char *kind, int paused, int64_t now_ms, int *changed)
{
    struct q q;
    q_init(&q, paused ? S_PAUSE : S_RESUME);
    q_str(&q, kind);
    q_i64(&q, paused ? now_ms : self_id());
    int rc = run(s, &q, 1, 0, paused ? "pause" : "resume");
    if (rc != STORE_OK)
        return rc;
    *changed = PQntuples(q.res) > 0;
    q_clear(&q, 1);
    return STORE_OK;
}

static int
pg_paused_kinds(store *s, char ***names, size_t *n)
{
    struct q q;
    q_init(&q, S_PAUSED);
    *names = NULL;
    *n = 0;
    int rc = run_read(s, &q, 1, "paused kinds");
    if (rc != STORE_OK)
        return rc;
    int rows = PQntuples(q.res);
    char **v = calloc(rows > 0 ? (size_t)rows : 1, sizeof *v);
    size_t len = 0;
    for (int i = 0; v != NULL && i < rows; i++) {
        if ((v[i] = val_dup(q.res, i, 0)) == NULL)
            break;
        len++;
    }
    q_clear(&q, 1);
    if (v == NULL || len < (size_t)rows) {
        store_names_free(v, len);
        snprintf(s->base.errmsg, sizeof s->base.errmsg, "paused kinds: out of memory");
        return STORE_ERR;
    }
    *names = v;
    *n = len;
    return STORE_OK;
}

/* The limits become two array literals, sent with every claim. */
static int
pg_set_kind_limits(store *s, const store_kind_limit *limits, size_t n)
{
    free(s->limit_kinds);
    free(s->limit_maxes);
    s->limit_kinds = s->limit_maxes = NULL;
    if (n == 0)
        return STORE_OK;
    const char **names = calloc(n, sizeof *names);
    size_t cap = 16 + n * 140;
    char *kinds = malloc(cap), *maxes = malloc(16 + n * 12);
    if (names == NULL || kinds == NULL || maxes == NULL) {
        free(names);
        free(kinds);
        free(maxes);
        snprintf(s->base.errmsg, sizeof s->base.errmsg, "kind limits: out of memory");
        return STORE_ERR;
    }
    size_t k = 0;
    maxes[k++] = '{';
    for (size_t i = 0; i < n; i++) {
        names[i] = limits[i].kind;
        k += (size_t)snprintf(maxes + k, 13, "%s%d", i > 0 ? "," : "", limits[i].max);
    }
    maxes[k++] = '}';
    maxes[k] = '\0';
    store_kind_set set = {names, n};
    int ok = kind_array(&set, kinds, cap) != NULL;
    free(names);
    if (!ok) {
        free(kinds);
        free(maxes);
        snprintf(s->base.errmsg, sizeof s->base.errmsg, "kind limits: names too long");
        return STORE_ERR;
    }
    s->limit_kinds = kinds;
    s->limit_maxes = maxes;
    return STORE_OK;
}

const struct store_ops store_pg_ops = {
    .name = "postgresql",
    .migrate = pg_migrate,
    .start = pg_start,
    .instance_end = pg_instance_end,
    .describe = pg_describe,
    .name_check = pg_name_check,
    .open = pg_open,
    .close = pg_close,
    .schema_version = pg_schema_version,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .insert = pg_insert,
    .insert_batch = pg_insert_batch,
    .get = pg_get,
    .list = pg_list,
    .cancel = pg_cancel,
    .claim_next = pg_claim_next,
    .finish = pg_finish,
    .finish_claim = pg_finish_claim,
    .record_batch = pg_record_batch,
    .batch_max = 16,
    .mark_started = pg_mark_started,
    .release_lost = pg_release_lost,
    .recover_running = pg_recover_running,
    .count_states = pg_count_states,
    .count_kinds = pg_count_kinds,
    .has_ready = pg_has_ready,
    .next_run_after = pg_next_run_after,
    .count_pending = pg_count_pending,
    .purge = pg_purge,
    .maintain = pg_maintain,
    .ping = pg_ping,
    .secret = pg_secret,
    .size_bytes = pg_size_bytes,
    .explain = pg_explain,
    .work = pg_work,
    .heartbeat = pg_heartbeat,
    .rescue = pg_rescue,
    .instances = pg_instances,
    .leave = pg_leave,
    .listen = pg_listen,
    .events_fd = pg_events_fd,
    .events = pg_events,
    .callback_claim = pg_callback_claim,
    .callback_record = pg_callback_record,
    .retry = pg_retry,
    .kind_pause = pg_kind_pause,
    .paused_kinds = pg_paused_kinds,
    .set_kind_limits = pg_set_kind_limits,
};
