#!/usr/bin/env python3
"""insert_cost.py -- what one submission's INSERT costs SQLite, by schema variant.

    bench/insert_cost.py WARMPOOL_BIN OUT.json [--n 20000] [--reps 6]

Makes a database with warmpool's own schema (starts WARMPOOL_BIN on a free loopback port
until /readyz, then stops it), copies it once per variant, and times N inserts in groups
of 20 per transaction (synchronous=NORMAL: no fsync, so only CPU and page writes count),
the variants taking turns REPS times. Python's sqlite3 module adds a constant per statement,
so read differences, not absolute figures. Variants: the statement as warmpool runs it
(RETURNING the 21 columns of a task, TASK_COLS), RETURNING only the id, without the index tasks_kind,
without tasks_ready_kind, without the count trigger. Writes medians and runs to OUT.json.
"""
import argparse, json, os, shutil, sqlite3, statistics, subprocess, sys, tempfile, time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exec_warmpool import free_port  # noqa: E402 -- the bench scripts' one

COLS = ("id, kind, state, priority, input, result, error_code, error_message, attempts,"
        " max_attempts, timeout_ms, created_at, started_at, finished_at, run_after,"
        " previous_error_code, previous_error_message,"
        " callback_url, callback_state, callback_attempts, callback_error")  # TASK_COLS
INSERT = ("INSERT INTO tasks (kind, state, priority, input, max_attempts, timeout_ms, created_at,"
          " idem_key, run_after, delayed, callback_url, callback_state)"
          " VALUES (?, 'pending', 0, ?, 1, 0, ?, NULL, 0, 0, NULL, NULL)"
          " ON CONFLICT (idem_key) WHERE idem_key IS NOT NULL DO NOTHING RETURNING ")
VARIANTS = [  # name, DDL applied to the copy, RETURNING
    ("as_is", None, COLS),
    ("returning_id", None, "id"),
    ("no_tasks_kind", "DROP INDEX tasks_kind", COLS),
    ("no_tasks_ready_kind", "DROP INDEX tasks_ready_kind", COLS),
    ("no_count_trigger", "DROP TRIGGER task_counts_insert", COLS),
]


def make_db(binary, path):
    port = free_port()
    p = subprocess.Popen([binary, "--listen", "127.0.0.1:%d" % port, "--db", path,
                          "--workers", "1", "--log-level", "warn"])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port, timeout=1).status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("warmpool did not become ready")
    finally:
        p.terminate()
        p.wait(timeout=30)


def run(path, returning, n):
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=NORMAL")
    sql = INSERT + returning
    t = time.perf_counter()
    for g in range(n // 20):
        c.execute("BEGIN IMMEDIATE")
        for i in range(20):
            c.execute(sql, ("echo", '{"n":%d}' % i, 1700000000000 + g)).fetchall()
        c.execute("COMMIT")
    dt = time.perf_counter() - t
    c.close()
    return dt / n * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=6)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="warmpool-insert-")
    try:
        base = os.path.join(work, "base.db")
        make_db(a.binary, base)
        runs = {name: [] for name, _, _ in VARIANTS}
        for r in range(a.reps):
            for name, ddl, returning in VARIANTS:
                path = os.path.join(work, "%s-%d.db" % (name, r))
                shutil.copy(base, path)
                if ddl:
                    c = sqlite3.connect(path)
                    c.execute(ddl)
                    c.commit()
                    c.close()
                runs[name].append(run(path, returning, a.n))
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(path + suffix):
                        os.unlink(path + suffix)
        res = {"n": a.n, "reps": a.reps, "sqlite": sqlite3.sqlite_version, "runs_us": runs,
               "median_us": {k: statistics.median(v) for k, v in runs.items()}}
        base_us = res["median_us"]["as_is"]
        res["ratio_to_as_is"] = {k: v / base_us for k, v in res["median_us"].items()}
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
        for k, v in res["median_us"].items():
            print("%-22s %7.2f us/insert  (%.2fx)  runs %s" % (
                k, v, res["ratio_to_as_is"][k], " ".join("%.1f" % x for x in runs[k])))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
