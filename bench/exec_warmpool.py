#!/usr/bin/python3
"""exec_warmpool.py -- exec kinds through warmpool itself (--exec-kind), against
concurrent.futures.ProcessPoolExecutor and against a C kind.

    exec_warmpool.py WARMPOOL OUT_DIR [--mb 256] [--entries 1000000] [--workers 4]
                     [--n 20000] [--rtt-n 300]

  memory   warmpool --workers W with examples/python/table_kind.py (mb=MB) as an exec
           kind; digest tasks until every worker's child has read the whole table (its
           RSS holds it); then the PSS of every process of the service: supervisor,
           loader, HTTP process, workers, the kind's zygote and its children (one per
           worker, one for the HTTP process's validation), from /proc/PID/smaps_rollup.
           The same with examples/python/dict_kind.py (entries=N) and a scan per child.
           Against ProcessPoolExecutor(W, initializer=...) building the same context in
           every worker (bench/exec_sharing.py's ppe_case).
  rate     no-op tasks: N tasks submitted (batches of 500) while every worker is stopped
           (SIGSTOP), then the workers are continued and timed until all N are done: the
           rate of claiming, running and recording alone. The C kind `echo` against the
           exec kind bench/noop_kind.py (run() returns its input), with 1 and W workers;
           and ProcessPoolExecutor(1 and W).map() of the same number of no-op calls.
           Per-task overhead of the protocol = 1/rate(exec) - 1/rate(echo), 1 worker.
  rtt      one task at a time: POST, then GET ?wait until it is done; median and p99
           over RTT_N tasks, echo against the exec no-op kind.
  replace  a task whose child is killed for its timeout: from the task's end to the worker's
           replacement idle in /v1/stats (with its children from a zygote holding MB MiB);
           the cost of replacing a worker to replace its child.
Writes OUT_DIR/exec_warmpool.json and prints a table.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
sys.path.insert(0, HERE)
import exec_sharing  # noqa: E402 -- smaps(), ppe_case()
import wpbench       # noqa: E402 -- Client, batch_submit()

MIB = 1 << 20


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Service:
    """A warmpool on a fresh database in a temporary folder; its log in OUT_DIR/NAME.log."""

    def __init__(self, wp, out, name, args):
        self.dir = tempfile.mkdtemp(prefix="warmpool-bench-exec-")
        self.url = "http://127.0.0.1:%d" % free_port()
        self.log = open(os.path.join(out, name + ".log"), "w")
        cmd = [wp, "--listen", self.url[7:], "--db", os.path.join(self.dir, "w.db"),
               "--log-level", "warn"] + args
        self.cmd = " ".join(cmd)
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        self.c = wpbench.Client(self.url)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise SystemExit("warmpool (%s) exited at start; see %s" % (name, self.log.name))
            try:
                st, _ = self.c.req("GET", "/readyz")
                if st == 200 and len(self.c.stats()["workers"]) >= int(args[args.index("--workers") + 1]):
                    return
            except (OSError, RuntimeError):
                pass
            time.sleep(0.05)
        raise SystemExit("warmpool (%s) not ready" % name)

    def run(self, body, timeout=600):
        st, js = self.c.req("POST", "/v1/tasks", body)
        if st != 202:
            raise SystemExit("submit: %d %s" % (st, js))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st, js = self.c.req("GET", "/v1/tasks/%s?wait=5" % js["id"])
            if js["state"] in ("succeeded", "failed", "canceled"):
                return js
        raise SystemExit("task %s not done" % js["id"])

    def processes(self):
        """Every process of the service: (role, pid), the supervisor's tree."""
        out = [("supervisor", self.p.pid)]
        workers = {w["pid"] for w in self.c.stats()["workers"]}

        def kids(pid):
            try:
                with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
                    return [int(x) for x in f.read().split()]
            except OSError:
                return []

        for k in kids(self.p.pid):
            comm = open("/proc/%d/comm" % k).read().strip()
            if k in workers:
                out.append(("worker", k))
            elif comm == "warmpool-zygote":
                out.append(("loader", k))
                for z in kids(k):
                    out.append(("exec zygote", z))
                    out += [("exec child", c) for c in kids(z)]
            else:
                out.append(("http", k))
        return out

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(120)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def rss_kb(pid):
    return exec_sharing.smaps(pid).get("Rss", 0)


def memory_case(wp, out, name, script, config, task, workers):
    t0 = time.monotonic()
    s = Service(wp, out, name, ["--workers", str(workers), "--load-timeout-ms", "900000",
                                "--exec-kind", "%s %s" % ("ctx=" + PY, os.path.join(ROOT, "examples", "python", script)),
                                "--kind-config", "ctx=" + config])
    ready_s = time.monotonic() - t0
    try:
        kind = [k for k in s.c.stats()["kinds"] if k["name"] == "ctx"][0]
        ctx_kb = kind["context_bytes"] // 1024
        rounds = 0
        for rounds in range(1, 9):          # until every worker's child holds the context
            ids, _, errors = wpbench.batch_submit(s.url, [{"kind": "ctx", "input": task}] * workers,
                                                  per_batch=workers, threads=1)
            if errors:
                raise SystemExit("submit: %s" % errors[0])
            for tid in ids:
                while s.c.req("GET", "/v1/tasks/%s?wait=10" % tid)[1]["state"] not in ("succeeded", "failed"):
                    pass
            kids = [pid for role, pid in s.processes() if role == "exec child"]
            read = [pid for pid in kids if rss_kb(pid) >= 0.9 * ctx_kb]
            if len(read) >= workers:
                break
        time.sleep(0.5)
        procs = []
        for role, pid in s.processes():
            sm = exec_sharing.smaps(pid)
            procs.append({"role": role, "pid": pid, **sm})
        total = sum(p["Pss"] for p in procs) / 1024
        exec_side = sum(p["Pss"] for p in procs if p["role"].startswith("exec")) / 1024
        return {"command": s.cmd, "ready_s": ready_s, "context_bytes": kind["context_bytes"],
                "load_ms": kind["load_ms"], "rounds": rounds, "children_that_read": len(read),
                "processes": procs, "total_pss_mib": total, "exec_pss_mib": exec_side}
    finally:
        s.stop()


def stopped_rate(s, kind, n):
    """n no-op tasks submitted while the workers are stopped; the time to run them all."""
    workers = [w["pid"] for w in s.c.stats()["workers"]]
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        ids, _, errors = wpbench.batch_submit(s.url, [{"kind": kind, "input": {"i": i}} for i in range(n)],
                                              per_batch=500, threads=2)
        if errors:
            raise SystemExit("submit: %s" % errors[0])
    finally:
        t0 = time.monotonic()
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    # wait on the last task (claimed last: same priority, ids in order) without polling,
    # so that the measuring costs no CPU the workers and children could use; then look at
    # the counts until the others are done too
    while s.c.req("GET", "/v1/tasks/%s?wait=30" % ids[-1])[1]["state"] not in ("succeeded", "failed"):
        pass
    while True:
        t = s.c.stats()["tasks"]
        if t["pending"] + t["running"] == 0:
            break
        time.sleep(0.002)
    el = time.monotonic() - t0
    t = s.c.stats()["tasks"]
    return {"tasks": n, "seconds": el, "per_s": n / el, "failed_so_far": t["failed"]}


def rtt(s, kind, n):
    times = []
    for i in range(n):
        t0 = time.monotonic()
        js = s.run({"kind": kind, "input": i})
        if js["state"] != "succeeded":
            raise SystemExit("rtt task: %s" % js)
        times.append((time.monotonic() - t0) * 1e6)
    times.sort()
    return {"tasks": n, "p50_us": times[n // 2], "p99_us": times[min(n - 1, n * 99 // 100)],
            "mean_us": sum(times) / n}


def replacement(wp, out, mb, workers, reps=5):
    """How long a worker whose child was killed for a timeout takes to be replaced, with
    a context of MB MiB in the zygote (tests/exec/it_kind.py): from the task's end
    (recorded `timeout`) to the new worker idle in /v1/stats, with its own children."""
    it_kind = "py=%s %s" % (PY, os.path.join(ROOT, "tests", "exec", "it_kind.py"))
    s = Service(wp, out, "replace", ["--workers", str(workers), "--load-timeout-ms", "900000",
                                     "--exec-kind", it_kind, "--kind-config", "py=mb=%d" % mb])
    times = []
    try:
        for _ in range(reps):
            before = {w["pid"] for w in s.c.stats()["workers"]}
            js = s.run({"kind": "py", "input": {"sleep_ms": 60000}, "timeout_ms": 300})
            if js["error"]["code"] != "timeout":
                raise SystemExit("replacement: want a timeout, got %s" % js)
            t0 = time.monotonic()
            while True:
                ws = s.c.stats()["workers"]
                pids = {w["pid"] for w in ws}
                if len(ws) == workers and pids != before and all(w["state"] == "idle" for w in ws):
                    break
                if time.monotonic() - t0 > 60:
                    raise SystemExit("replacement: no new worker in 60 s")
                time.sleep(0.002)
            times.append((time.monotonic() - t0) * 1000)
    finally:
        s.stop()
    times.sort()
    return {"mb": mb, "reps": reps, "ms": times, "median_ms": times[len(times) // 2]}


def noop(i):
    return i


def ppe_rate(workers, n):
    with ProcessPoolExecutor(workers) as ex:
        list(ex.map(noop, range(workers * 2)))      # started
        t0 = time.monotonic()
        list(ex.map(noop, range(n), chunksize=1))
        el = time.monotonic() - t0
    return {"tasks": n, "workers": workers, "seconds": el, "per_s": n / el}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("warmpool")
    ap.add_argument("out")
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--entries", type=int, default=1000000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--rtt-n", type=int, default=300)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    W = a.workers
    res = {"workers": W, "mb": a.mb, "entries": a.entries, "n": a.n,
           "loadavg_start": open("/proc/loadavg").read().split()[:3]}

    tconf, dconf = "mb=%d" % a.mb, "entries=%d" % a.entries
    res["table"] = memory_case(a.warmpool, a.out, "mem-table", "table_kind.py", tconf,
                               {"op": "digest", "slice": 0, "of": 1}, W)
    res["ppe_table"] = exec_sharing.ppe_case("table", tconf, W)
    res["dict"] = memory_case(a.warmpool, a.out, "mem-dict", "dict_kind.py", dconf, {"op": "scan"}, W)
    res["ppe_dict"] = exec_sharing.ppe_case("dict", dconf, W)

    res["replacement"] = replacement(a.warmpool, a.out, a.mb, W)
    noop_kind = "noop=%s %s" % (PY, os.path.join(HERE, "noop_kind.py"))
    for w in sorted({1, W}):
        s = Service(a.warmpool, a.out, "rate-%d" % w, ["--workers", str(w), "--exec-kind", noop_kind])
        try:
            res["rate_echo_%d" % w] = stopped_rate(s, "echo", a.n)
            res["rate_exec_%d" % w] = stopped_rate(s, "noop", a.n)
            if w == 1:
                res["rtt_echo"] = rtt(s, "echo", a.rtt_n)
                res["rtt_exec"] = rtt(s, "noop", a.rtt_n)
        finally:
            s.stop()
        res["rate_ppe_%d" % w] = ppe_rate(w, a.n)
    res["loadavg_end"] = open("/proc/loadavg").read().split()[:3]

    ctx_mib = res["table"]["context_bytes"] / MIB
    nproc = len(res["table"]["processes"])
    res["table_target_mib"] = 1.15 * ctx_mib + 10 * nproc
    res["table_target_met"] = res["table"]["total_pss_mib"] <= res["table_target_mib"]
    over = 1e6 / res["rate_exec_1"]["per_s"] - 1e6 / res["rate_echo_1"]["per_s"]
    res["overhead_us_per_task"] = over
    res["overhead_target_met"] = over <= 100
    with open(os.path.join(a.out, "exec_warmpool.json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
        f.write("\n")

    print("\nexec kinds through warmpool, %d workers (results in %s)" % (W, a.out))
    for name, ppe, ctx in (("table", "ppe_table", ctx_mib),
                           ("dict", "ppe_dict", res["dict"]["context_bytes"] / MIB)):
        r = res[name]
        print(" %-5s context %.0f MiB: warmpool + zygote + children %.1f MiB PSS (%.2f x; exec side "
              "%.1f MiB) in %d processes; PPE(%d) %.1f MiB (%.2f x)"
              % (name, ctx, r["total_pss_mib"], r["total_pss_mib"] / ctx, r["exec_pss_mib"],
                 len(r["processes"]), W, res[ppe]["total_pss_mib"], res[ppe]["total_pss_mib"] / ctx))
    print(" table target: <= 1.15 x %.0f + 10 x %d = %.1f MiB -> %s"
          % (ctx_mib, nproc, res["table_target_mib"], "met" if res["table_target_met"] else "MISSED"))
    for w in sorted({1, W}):
        print(" no-op rate, %d worker(s): echo %8.0f/s  exec %8.0f/s  PPE %8.0f/s"
              % (w, res["rate_echo_%d" % w]["per_s"], res["rate_exec_%d" % w]["per_s"],
                 res["rate_ppe_%d" % w]["per_s"]))
    print(" a worker replaced after its child's timeout (context %d MiB): median %.0f ms (%s)"
          % (a.mb, res["replacement"]["median_ms"], ", ".join("%.0f" % x for x in res["replacement"]["ms"])))
    print(" protocol overhead per task (1 worker, exec - echo): %.0f us (target <= 100 us) -> %s"
          % (over, "met" if over <= 100 else "MISSED"))
    print(" one task's round trip (POST + GET ?wait), %d tasks: echo p50 %.0f us p99 %.0f us; "
          "exec p50 %.0f us p99 %.0f us" % (a.rtt_n, res["rtt_echo"]["p50_us"], res["rtt_echo"]["p99_us"],
                                          res["rtt_exec"]["p50_us"], res["rtt_exec"]["p99_us"]))
    print(" load average %s -> %s: other work on this machine makes these noisier"
          % (" ".join(res["loadavg_start"]), " ".join(res["loadavg_end"])))


if __name__ == "__main__":
    main()
