#!/usr/bin/python3
"""exec_sharing.py -- memory of a Python exec kind (a zygote and its forked children)
against concurrent.futures.ProcessPoolExecutor building the same context in each worker,
and the round trip of one task over the exec-kind protocol.

    exec_sharing.py WP_EXEC_DRIVE OUT_DIR [--mb 256] [--entries 1000000] [--workers 4]
                    [--noop-n 5000]

Cases, each measured after every process has read the whole context at least once:
  exec table   examples/python/table_kind.py, mb=MB: an array('q') built in the zygote;
               WORKERS children each hash all of it ({"op": "digest"})
  ppe table    ProcessPoolExecutor(WORKERS, initializer=...) building the same array in
               every worker; each worker hashes all of it
  exec dict    examples/python/dict_kind.py, entries=N: a dict of N 100-char strings;
               each child reads every key and value ({"op": "scan"})
  ppe dict     the same dict built by the initializer in every worker; the same scan
  noop rtt     wp-exec-drive's bench: NOOP_N one-at-a-time round trips of a no-op task
               to one child of a zygote whose run() returns its input
PSS comes from /proc/PID/smaps_rollup. wp-exec-drive stands in for warmpool's side (its
own PSS is reported apart). Writes OUT_DIR/exec_sharing.json and prints a table.
The target for the table (docs/exec-kinds.md, issue 11): zygote + children total PSS
<= 1.15 x the context + 10 MiB per process.
"""
import argparse
import hashlib
import json
import os
import select
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
sys.path.insert(0, os.path.join(ROOT, "examples", "python"))
sys.path.insert(0, os.path.join(ROOT, "sdk", "python"))
import dict_kind    # noqa: E402 -- the same load() as the exec kinds, for the PPE side
import table_kind   # noqa: E402

MIB = 1 << 20


def smaps(pid):
    """The kB fields of /proc/PID/smaps_rollup."""
    out = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


class Drive:
    def __init__(self, drive, command, config=None, env=None):
        args = [drive, "--ready-timeout-ms", "600000", "--task-timeout-ms", "600000"]
        if config:
            args += ["--config", config]
        self.p = subprocess.Popen(args + ["--"] + command, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        self.ready = self.line().split()
        if self.ready[0] != "ready":
            raise SystemExit("zygote not ready: %s" % " ".join(self.ready))

    def line(self, timeout=900):
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        if not r:
            self.p.kill()
            raise SystemExit("wp-exec-drive did not answer")
        return self.p.stdout.readline().rstrip("\n")

    def cmd(self, text):
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()
        return self.line()

    def quit(self):
        self.cmd("quit")
        self.p.wait(60)


def exec_case(drive, script, config, task, workers):
    t0 = time.monotonic()
    d = Drive(drive, [PY, os.path.join(ROOT, "examples", "python", script)], config)
    ready_s = time.monotonic() - t0
    zpid = int(d.ready[1])
    time.sleep(0.3)
    zygote_alone = smaps(zpid)
    children = []
    for _ in range(workers):
        words = d.cmd("spawn").split()
        assert words[0] == "spawned", words
        children.append(int(words[2]))
    answers = []
    t1 = time.monotonic()
    for i in range(workers):            # every child reads the whole context
        answers.append(d.cmd("task %d %s" % (i, json.dumps(task))))
        assert answers[-1].startswith("result"), answers[-1]
    run_s = time.monotonic() - t1
    time.sleep(0.5)
    procs = [{"role": "zygote", "pid": zpid, **smaps(zpid)}]
    procs += [{"role": "child", "pid": p, **smaps(p)} for p in children]
    driver = smaps(d.p.pid)
    d.quit()
    return {"context_bytes": int(d.ready[2]), "load_ms": int(d.ready[3]), "ready_s": ready_s,
            "tasks_s": run_s, "answers_identical": len(set(a.split(" ", 2)[2] for a in answers)) == 1,
            "zygote_alone_kb": zygote_alone, "processes": procs, "driver_kb": driver,
            "total_pss_mib": sum(p["Pss"] for p in procs) / 1024}


# ------------------------------------------------------------------ the PPE side

CONTEXT = None


def ppe_init(which, config):
    global CONTEXT
    CONTEXT = (table_kind if which == "table" else dict_kind).load(config)


def ppe_read(which, pause_s):
    if which == "table":
        h = hashlib.sha256(memoryview(CONTEXT)).hexdigest()
    else:
        h = dict_kind.run({"op": "scan"}, CONTEXT)["sha256"]
    time.sleep(pause_s)             # hold this worker, so the next task goes to another
    return os.getpid(), h


def ppe_case(which, config, workers):
    t0 = time.monotonic()
    seen = {}
    with ProcessPoolExecutor(workers, initializer=ppe_init, initargs=(which, config)) as ex:
        for rnd in range(5):        # until every worker has read the context
            for pid, h in ex.map(ppe_read, [which] * workers, [0.3] * workers):
                seen[pid] = h
            if len(seen) >= workers:
                break
        run_s = time.monotonic() - t0
        time.sleep(0.5)
        procs = [{"role": "parent", "pid": os.getpid(), **smaps(os.getpid())}]
        procs += [{"role": "worker", "pid": p, "read_context": p in seen, **smaps(p)}
                  for p in sorted(ex._processes)]
    workers_kb = sum(p["Pss"] for p in procs if p["role"] == "worker")
    return {"run_s": run_s, "rounds": rnd + 1, "all_workers_read": len(seen) >= workers,
            "processes": procs, "workers_pss_mib": workers_kb / 1024,
            "total_pss_mib": (workers_kb + procs[0]["Pss"]) / 1024}


def noop_rtt(drive, n):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "sdk", "python"))
    d = Drive(drive, [PY, "-c", "import warmpool_kind; "
                      "warmpool_kind.serve(load=lambda c: None, run=lambda i, c: i)"], env=env)
    d.cmd("spawn")
    d.cmd("bench 0 200 {}")                                  # warm up
    words = d.cmd("bench 0 %d {}" % n).split()
    d.quit()
    return {"tasks": int(words[2]), "mean_us": float(words[3]), "p50_us": int(words[4]),
            "p99_us": int(words[5])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("drive")
    ap.add_argument("out")
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--entries", type=int, default=1000000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--noop-n", type=int, default=5000)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    res = {"workers": a.workers, "mb": a.mb, "entries": a.entries,
           "loadavg_start": open("/proc/loadavg").read().split()[:3]}
    tconf, dconf = "mb=%d" % a.mb, "entries=%d" % a.entries
    res["exec_table"] = exec_case(a.drive, "table_kind.py", tconf, {"op": "digest"}, a.workers)
    res["ppe_table"] = ppe_case("table", tconf, a.workers)
    res["exec_dict"] = exec_case(a.drive, "dict_kind.py", dconf, {"op": "scan"}, a.workers)
    res["ppe_dict"] = ppe_case("dict", dconf, a.workers)
    res["noop_rtt"] = noop_rtt(a.drive, a.noop_n)
    res["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    ctx_mib = res["exec_table"]["context_bytes"] / MIB
    nproc = 1 + a.workers
    res["table_target_mib"] = 1.15 * ctx_mib + 10 * nproc
    res["table_target_met"] = res["exec_table"]["total_pss_mib"] <= res["table_target_mib"]
    with open(os.path.join(a.out, "exec_sharing.json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
        f.write("\n")

    def row(name, r, ctx):
        per = [p["Pss"] / 1024 for p in r["processes"]]
        print("  %-11s total PSS %8.1f MiB  (%.2f x the context; per process %s)"
              % (name, r["total_pss_mib"], r["total_pss_mib"] / ctx,
                 " ".join("%.0f" % x for x in per)))

    dict_mib = res["exec_dict"]["context_bytes"] / MIB
    print("\nexec kinds, memory with %d workers (PSS; results in %s)" % (a.workers, a.out))
    print(" table: array('q') of %.0f MiB; target <= %.1f MiB -> %s"
          % (ctx_mib, res["table_target_mib"], "met" if res["table_target_met"] else "MISSED"))
    row("exec", res["exec_table"], ctx_mib)
    row("PPE", res["ppe_table"], ctx_mib)
    print(" dict: %d entries, context_bytes %.0f MiB (sys.getsizeof)" % (a.entries, dict_mib))
    row("exec", res["exec_dict"], dict_mib)
    row("PPE", res["ppe_dict"], dict_mib)
    zd = res["exec_dict"]["zygote_alone_kb"]["Pss"] / 1024
    kids = [p for p in res["exec_dict"]["processes"] if p["role"] == "child"]
    print("  a dict child's private memory after the scan: %s MiB (the zygote alone: %.0f MiB)"
          % (" ".join("%.0f" % ((p["Private_Dirty"] + p["Private_Clean"]) / 1024) for p in kids), zd))
    n = res["noop_rtt"]
    print(" no-op round trip (wp-exec-drive -> Python child -> back), %d tasks: mean %.1f us, "
          "p50 %d us, p99 %d us" % (n["tasks"], n["mean_us"], n["p50_us"], n["p99_us"]))
    print(" load average %s -> %s: other work on this machine makes these noisier"
          % (" ".join(res["loadavg_start"]), " ".join(res["loadavg_end"])))


if __name__ == "__main__":
    main()
