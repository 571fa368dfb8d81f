#!/usr/bin/python3
"""wpbench.py -- the measuring client of bench/run.sh (Python standard library only).

Subcommands (each writes one JSON file with what it measured):
  wait-ready URL [--kind K] [--timeout S]     wait for /readyz (and kind K in /v1/stats)
  e2e URL OUT --mode wrk|batch --n N [--wrk-script F --wrk-threads T --wrk-conns C]
      [--poll-ms MS] [--allow-existing]
      submit N echo tasks (with wrk, or with /v1/tasks/batch, 100 per batch, 4 client
      threads), poll /v1/stats every 20 ms (--poll-ms), and time: first submission ->
      last 202 (submissions/s) and first submission -> pending+running == 0 (end to
      end). --allow-existing: the database may hold tasks already (counts are deltas).
  roundtrip URL OUT [--n N] [--wait-on URL2]   one task at a time, POST ?wait (then GET
      ?wait on URL2): p50, p90, p99, p999 and max in ms (Python's http.client adds
      about 0.1-0.2 ms of its own to each).
  idle-cpu PID OUT [--seconds S]               CPU time (utime + stime, /proc) of PID and
      its descendants over S seconds.
  latency URL OUT [--n N]                      N sequential requests (keep-alive) to
      /v1/stats, each list filter (a page of 20, and the next page by its cursor) and
      GET /v1/tasks/{id} of random ids: median, p90, p99 and max per request, in ms.
  sharing URL OUT --supervisor PID --of 64    lookup slices 0..of-1, then PSS of every
      warmpool process (supervisor + its children) from /proc/PID/smaps_rollup.
  preload URL OUT --texts DIR --n N --keep K  scan tasks, batch-submitted; tasks/s; the
      results of the first K tasks go to OUT's folder (scan_wp/NNNN.json) for comparison.
  naive OUT --bin B --rules F --texts DIR --n N --parallel P --max-seconds S
      run the spawn-per-task baseline once per text, P at a time; tasks/s.
  compare WP_DIR NAIVE_DIR OUT                 match lists of warmpool vs the baseline.
"""
import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

POLL_S = 0.020


def hostport(url):
    u = urllib.parse.urlsplit(url)
    return u.hostname, u.port


class Client:
    def __init__(self, url, timeout=60):
        self.host, self.port = hostport(url)
        self.timeout = timeout
        self.conn = None

    def req(self, method, path, body=None):
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
                hdrs = {"Content-Type": "application/json"} if data is not None else {}
                self.conn.request(method, path, body=data, headers=hdrs)
                r = self.conn.getresponse()
                raw = r.read()
                # /metrics is text: kept as bytes
                return r.status, (json.loads(raw) if raw[:1] in (b"{", b"[") else raw or None)
            except (ConnectionError, http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise

    def stats(self):
        st, js = self.req("GET", "/v1/stats")
        if st != 200:
            raise RuntimeError("GET /v1/stats -> %d %s" % (st, js))
        return js


class Poller(threading.Thread):
    """Polls /v1/stats every 20 ms. It becomes armed when .armed is set or the service
    holds `target` tasks (.reached is set then, with .t_reached); once armed, it stops
    at the first sample with pending + running == 0 and records that time (.t_done)."""

    def __init__(self, url, target=None, poll_s=POLL_S):
        super().__init__(daemon=True)
        self.c = Client(url)
        self.target = target
        self.poll_s = poll_s
        self.armed = threading.Event()
        self.reached = threading.Event()
        self.t_reached = None
        self.t_done = None
        self.last = None
        self.samples = 0
        self.max_pending = 0

    def run(self):
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            armed = self.armed.is_set() or self.reached.is_set()
            s = self.c.stats()
            now = time.monotonic()
            self.samples += 1
            self.last = s
            t = s["tasks"]
            self.max_pending = max(self.max_pending, t["pending"])
            if self.target is not None and not self.reached.is_set() and total(t) >= self.target:
                self.t_reached = now
                self.reached.set()
            if armed and t["pending"] + t["running"] == 0:
                self.t_done = now
                return
            time.sleep(self.poll_s)


def total(tasks):
    return sum(tasks[k] for k in ("pending", "running", "succeeded", "failed", "canceled"))


def write(out, obj):
    with open(out, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
    print(json.dumps(obj, sort_keys=True))


def batch_submit(url, bodies, per_batch=100, threads=4):
    """POST /v1/tasks/batch from `threads` connections; returns (ids in order, t_last_202, errors)."""
    chunks = [bodies[i:i + per_batch] for i in range(0, len(bodies), per_batch)]
    ids = [None] * len(chunks)
    errors = []
    lock = threading.Lock()
    nxt = [0]
    t_last = [0.0]

    def work():
        c = Client(url)
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(chunks):
                return
            payload = json.dumps({"tasks": chunks[i]}).encode()
            st, js = c.req("POST", "/v1/tasks/batch", payload)
            now = time.monotonic()
            with lock:
                t_last[0] = max(t_last[0], now)
                if st != 202:
                    errors.append({"batch": i, "status": st, "body": js})
                else:
                    ids[i] = [t["id"] for t in js["tasks"]]

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    flat = [x for chunk in ids if chunk for x in chunk]
    return flat, t_last[0], errors


def cmd_wait_ready(a):
    c = Client(a.url, timeout=2)
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        try:
            st, _ = c.req("GET", "/readyz")
            if st == 200:
                if not a.kind:
                    return 0
                kinds = [k["name"] for k in c.stats()["kinds"]]
                if a.kind in kinds:
                    return 0
                print("kind %s not in %s" % (a.kind, kinds), file=sys.stderr)
                return 3
        except (OSError, http.client.HTTPException, RuntimeError):
            pass
        time.sleep(0.05)
    print("warmpool at %s not ready after %ss" % (a.url, a.timeout), file=sys.stderr)
    return 1


def cmd_e2e(a):
    c = Client(a.url)
    before = c.stats()["tasks"]
    if total(before) != 0 and not a.allow_existing:
        raise SystemExit("e2e wants an empty database, found %s" % before)
    if before["pending"] + before["running"] != 0:
        raise SystemExit("e2e wants no pending or running task, found %s" % before)
    res = {"mode": a.mode, "requested": a.n, "tasks_before": total(before),
           "poll_ms": a.poll_ms}
    bodies = [{"kind": "echo", "input": {"n": i}} for i in range(a.n)] if a.mode == "batch" else None
    poller = Poller(a.url, target=a.n + total(before), poll_s=a.poll_ms / 1000)
    poller.start()
    if a.mode == "wrk":
        wrk_out = a.out[:-5] + ".wrk.txt"
        cmd = ["wrk", "-t%d" % a.wrk_threads, "-c%d" % a.wrk_conns, "-d%ds" % a.wrk_seconds,
               "--timeout", "10s", "--latency", "-s", a.wrk_script, a.url]
        env = dict(os.environ, WP_BENCH_N=str(a.n), WP_BENCH_THREADS=str(a.wrk_threads))
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # wrk returns only after -d: once the service holds N tasks, let the last 202s
        # arrive, then SIGINT (wrk then prints its report and runs done()).
        if poller.reached.wait(a.wrk_seconds + 5):
            time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=60)
        with open(wrk_out, "w") as f:
            f.write(" ".join(cmd) + "\n" + out)
        res["wrk_cmd"] = " ".join(cmd)
        for line in out.splitlines():
            if line.startswith("WPBENCH "):
                res.update(json.loads(line[len("WPBENCH "):]))
        res["wrk_rc"] = p.returncode
        if res.get("wrk_t_first", 0) > 0 and res.get("wrk_t_last", 0) > 0:
            t0, t_sub = res["wrk_t_first"], res["wrk_t_last"]
        else:
            t_sub = poller.t_reached or time.monotonic()
    else:
        t0 = time.monotonic()
        ids, t_sub, errors = batch_submit(a.url, bodies, per_batch=a.per_batch, threads=a.threads)
        res.update({"batch_size": a.per_batch, "client_threads": a.threads,
                    "batch_errors": len(errors)})
        if errors:
            res["first_error"] = errors[0]
    poller.armed.set()
    poller.join()
    after = c.stats()["tasks"]
    submitted = total(after) - total(before)
    succeeded = after["succeeded"] - before["succeeded"]
    res.update({
        "submitted": submitted,
        "submit_s": t_sub - t0,
        "submit_per_s": res.get("wrk_202", submitted) / (t_sub - t0),
        "e2e_s": poller.t_done - t0 if poller.t_done else None,
        "e2e_per_s": (succeeded / (poller.t_done - t0)) if poller.t_done else None,
        "drain_after_submit_s": (poller.t_done - t_sub) if poller.t_done else None,
        "max_pending_seen": poller.max_pending,
        "stats_samples": poller.samples,
        "final_tasks": after,
        "workers": c.stats()["workers"],
    })
    write(a.out, res)
    return 0 if after["failed"] == before["failed"] and poller.t_done else 1


def cmd_roundtrip(a):
    """One task at a time: POST /v1/tasks?wait to --submit (then, with --wait-on, GET
    ?wait of it on another instance); the time from the POST to the finished task."""
    sub = Client(a.submit)
    other = Client(a.wait_on) if a.wait_on else None
    times = []
    for i in range(a.n):
        body = {"kind": "echo", "input": {"rt": i}}
        t0 = time.monotonic()
        if other is None:
            status, t = sub.req("POST", "/v1/tasks?wait=10", body)
        else:
            status, t = sub.req("POST", "/v1/tasks", body)
            status, t = other.req("GET", "/v1/tasks/%s?wait=10" % t["id"])
        dt = (time.monotonic() - t0) * 1000
        if status != 200 or t.get("state") != "succeeded":
            raise SystemExit("round trip %d: %s %s" % (i, status, t))
        if i >= a.warmup:
            times.append(dt)
    res = {"n": len(times), "submit": a.submit, "wait_on": a.wait_on,
           "p50_ms": pct(times, 50), "p90_ms": pct(times, 90), "p99_ms": pct(times, 99),
           "p999_ms": pct(times, 99.9), "max_ms": max(times),
           "mean_ms": sum(times) / len(times)}
    write(a.out, res)
    return 0


def cmd_idle_cpu(a):
    """CPU time of a process and all its descendants over --seconds: utime + stime from
    /proc/PID/stat at the start and the end (a process that appears or goes meanwhile
    counts from when it is seen)."""
    hz = os.sysconf("SC_CLK_TCK")

    def tree(root):
        kids = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    st = open("/proc/%s/stat" % d).read()
                except OSError:
                    continue
                ppid = int(st.rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
        out, todo = [], [root]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(kids.get(p, []))
        return out

    def ticks(pid):
        try:
            f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return int(f[11]) + int(f[12])     # utime, stime

    before = {p: ticks(p) for p in tree(a.pid)}
    t0 = time.monotonic()
    time.sleep(a.seconds)
    wall = time.monotonic() - t0
    after = {p: ticks(p) for p in tree(a.pid)}
    per = {}
    for p, t1 in after.items():
        if t1 is None:
            continue
        name = open("/proc/%d/comm" % p).read().strip() if os.path.exists("/proc/%d/comm" % p) else "?"
        per["%d %s" % (p, name)] = (t1 - (before.get(p) or 0)) * 1000 / hz
    cpu_ms = sum(per.values())
    res = {"seconds": wall, "processes": len(after), "cpu_ms": cpu_ms,
           "cpu_percent_of_one_core": 100 * cpu_ms / 1000 / wall, "per_process_ms": per,
           "clock_ticks_per_s": hz}
    write(a.out, res)
    return 0


def pct(vals, q):
    v = sorted(vals)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


def cmd_latency(a):
    """Sequential requests on one keep-alive connection; ms per request."""
    import random
    c = Client(a.url)
    st = c.stats()
    n_tasks = total(st["tasks"])
    rnd = random.Random(42)
    first = c.req("GET", "/v1/tasks?limit=1")[1]["tasks"]
    max_id = int(first[0]["id"]) if first else 0
    cases = [("stats", lambda: "/v1/stats"),
             ("metrics", lambda: "/metrics"),
             ("list", lambda: "/v1/tasks?limit=20"),
             ("list_state_succeeded", lambda: "/v1/tasks?state=succeeded&limit=20"),
             ("list_state_failed", lambda: "/v1/tasks?state=failed&limit=20"),
             ("list_kind", lambda: "/v1/tasks?kind=scan&limit=20"),
             ("list_state_kind", lambda: "/v1/tasks?state=failed&kind=echo&limit=20")]
    # the next page by the cursor, for the slowest-looking filter
    st_, page = c.req("GET", "/v1/tasks?state=failed&kind=echo&limit=20")
    cursor = page.get("next_cursor") if st_ == 200 else None
    if cursor:
        cases.append(("list_state_kind_cursor",
                      lambda: "/v1/tasks?state=failed&kind=echo&limit=20&cursor=" + cursor))
    if max_id:
        cases.append(("get", lambda: "/v1/tasks/%d" % rnd.randint(1, max_id)))
    out = {"tasks": n_tasks, "requests_each": a.n, "ms": {}}
    for name, path in cases:
        for _ in range(5):                  # warm the connection and the caches
            c.req("GET", path())
        times, items, bad = [], None, 0
        for _ in range(a.n):
            p = path()
            t0 = time.perf_counter()
            code, body = c.req("GET", p)
            times.append((time.perf_counter() - t0) * 1000)
            if code != 200 and not (name == "get" and code == 404):
                bad += 1
            elif name.startswith("list"):
                items = len(body["tasks"])
        out["ms"][name] = {"median": statistics.median(times), "p90": pct(times, 90),
                           "p99": pct(times, 99), "max": max(times), "errors": bad,
                           "items": items}
    write(a.out, out)
    return 0 if all(v["errors"] == 0 for v in out["ms"].values()) else 1


def pss_kb(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def role_of(pid, worker_pids):
    """A child's role: workers are the pids /v1/stats lists; the others are named by
    their comm (warmpool-zygote, warmpool-http; older builds: the HTTP process)."""
    if pid in worker_pids:
        return "worker"
    try:
        with open("/proc/%d/comm" % pid) as f:
            comm = f.read().strip()
    except OSError:
        comm = ""
    return "zygote" if comm == "warmpool-zygote" else "http"


def wait_idle(c, deadline_s=300):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        s = c.stats()
        if s["tasks"]["pending"] + s["tasks"]["running"] == 0:
            return s
        time.sleep(POLL_S)
    raise SystemExit("tasks did not finish in %ss" % deadline_s)


def cmd_sharing(a):
    c = Client(a.url)
    t0 = time.monotonic()
    rounds, results_ok = 0, True
    # Every worker must have run tasks: resubmit the full set (at most 3 times) if one did not.
    while True:
        rounds += 1
        bodies = [{"kind": "lookup", "input": {"slice": i, "of": a.of}} for i in range(a.of)]
        ids, _, errors = batch_submit(a.url, bodies, per_batch=a.of, threads=1)
        if errors:
            raise SystemExit("lookup batch refused: %s" % errors[0])
        s = wait_idle(c)
        for tid in ids:
            st, js = c.req("GET", "/v1/tasks/%s" % tid)
            if st != 200 or js["state"] != "succeeded":
                results_ok = False
        if all(w["tasks_done"] > 0 for w in s["workers"]) or rounds == 3:
            break
    elapsed = time.monotonic() - t0
    time.sleep(0.5)  # let everything settle (allocator frees, SQLite caches)
    s = c.stats()
    kind = [k for k in s["kinds"] if k["name"] == "lookup"][0]
    wpids = {w["pid"] for w in s["workers"]}
    procs = [{"role": "supervisor", "pid": a.supervisor}]
    for p in children(a.supervisor):
        procs.append({"role": role_of(p, wpids), "pid": p})
    for p in procs:
        p["pss_kb"] = pss_kb(p["pid"])
        p["rss_kb"] = rss_kb(p["pid"])
        w = [w for w in s["workers"] if w["pid"] == p["pid"]]
        if w:
            p["tasks_done"] = w[0]["tasks_done"]
    total_kb = sum(p["pss_kb"] for p in procs)
    ctx_mib = kind["context_bytes"] / 1048576
    target_mib = 1.15 * ctx_mib + 10 * len(procs)
    write(a.out, {
        "tasks": a.of * rounds, "rounds": rounds, "all_succeeded": results_ok,
        "run_s": elapsed, "context_bytes": kind["context_bytes"], "load_ms": kind["load_ms"],
        "processes": procs, "total_pss_mib": total_kb / 1024, "kinds": s["kinds"],
        "target_mib": target_mib, "target_formula": "1.15 x %.0f MiB + 10 MiB x %d processes" % (ctx_mib, len(procs)),
        "met": total_kb / 1024 <= target_mib, "ratio_to_context": total_kb / 1024 / ctx_mib,
    })
    return 0


def cmd_preload(a):
    c = Client(a.url)
    before = c.stats()
    kind = [k for k in before["kinds"] if k["name"] == "scan"][0]
    names = sorted(os.listdir(a.texts))[:a.n]
    bodies = []
    for name in names:
        with open(os.path.join(a.texts, name)) as f:
            bodies.append({"kind": "scan", "input": {"text": f.read()}})
    poller = Poller(a.url)
    poller.start()
    t0 = time.monotonic()
    ids, t_sub, errors = batch_submit(a.url, bodies, per_batch=a.per_batch, threads=a.threads)
    poller.armed.set()
    poller.join()
    after = c.stats()["tasks"]
    keep_dir = os.path.join(os.path.dirname(a.out), "scan_wp")
    os.makedirs(keep_dir, exist_ok=True)
    matches = 0
    for i, tid in enumerate(ids[:a.keep]):
        st, js = c.req("GET", "/v1/tasks/%s" % tid)
        with open(os.path.join(keep_dir, "%04d.json" % i), "w") as f:
            json.dump(js.get("result") if st == 200 else js, f)
            f.write("\n")
    # count matches over all tasks (a sanity figure; reads every result)
    sample_failed = None
    for tid in ids:
        st, js = c.req("GET", "/v1/tasks/%s" % tid)
        if st == 200 and js["state"] == "succeeded":
            matches += len(js["result"]["matches"])
        elif sample_failed is None:
            sample_failed = js
    n = len(ids)
    write(a.out, {
        "tasks": n, "batch_errors": len(errors), "first_error": errors[0] if errors else None,
        "submit_s": t_sub - t0, "e2e_s": poller.t_done - t0,
        "tasks_per_s": after["succeeded"] / (poller.t_done - t0),
        "final_tasks": after, "total_matches": matches, "sample_failed": sample_failed,
        "context_bytes": kind["context_bytes"], "load_ms": kind["load_ms"],
        "input_bytes_total": sum(len(b["input"]["text"]) for b in bodies),
    })
    return 0 if after["succeeded"] == n and not errors else 1


def cmd_naive(a):
    names = sorted(os.listdir(a.texts))[:a.n]
    outdir = os.path.join(os.path.dirname(a.out), "scan_naive")
    os.makedirs(outdir, exist_ok=True)
    t0 = time.monotonic()
    deadline = t0 + a.max_seconds
    running, done, failed, durations = [], 0, 0, []
    it = iter(enumerate(names))
    exhausted = False
    while True:
        while not exhausted and len(running) < a.parallel and time.monotonic() < deadline:
            try:
                i, name = next(it)
            except StopIteration:
                exhausted = True
                break
            f = open(os.path.join(outdir, "%04d.json" % i), "w")
            p = subprocess.Popen([a.bin, a.rules, os.path.join(a.texts, name)], stdout=f)
            running.append((p, f, time.monotonic()))
        if not running:
            break
        time.sleep(0.002)
        for item in list(running):
            p, f, ts = item
            if p.poll() is not None:
                f.close()
                running.remove(item)
                durations.append(time.monotonic() - ts)
                if p.returncode == 0:
                    done += 1
                else:
                    failed += 1
    elapsed = time.monotonic() - t0
    durations.sort()
    write(a.out, {
        "tasks": done, "failed": failed, "parallel": a.parallel, "elapsed_s": elapsed,
        "tasks_per_s": done / elapsed, "stopped_by_time": done + failed < len(names),
        "per_task_s_median": durations[len(durations) // 2] if durations else None,
        "per_task_s_min": durations[0] if durations else None,
        "per_task_s_max": durations[-1] if durations else None,
    })
    return 0 if failed == 0 else 1


def norm(result):
    return sorted((m["rule"], m["start"], m["end"]) for m in result.get("matches", []))


def cmd_compare(a):
    same, diff, examples = 0, 0, []
    for name in sorted(os.listdir(a.naive_dir)):
        pn, pw = os.path.join(a.naive_dir, name), os.path.join(a.wp_dir, name)
        if not os.path.exists(pw):
            continue
        try:
            with open(pn) as f:
                n = json.load(f)
            with open(pw) as f:
                w = json.load(f)
        except ValueError as e:
            diff += 1
            examples.append({"file": name, "error": str(e)})
            continue
        if norm(n) == norm(w) and n.get("bytes") == w.get("bytes"):
            same += 1
        else:
            diff += 1
            if len(examples) < 3:
                examples.append({"file": name, "naive": n, "warmpool": w})
    write(a.out, {"compared": same + diff, "identical": same, "different": diff, "examples": examples})
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("wait-ready")
    p.add_argument("url")
    p.add_argument("--kind")
    p.add_argument("--timeout", type=float, default=60)
    p = sub.add_parser("e2e")
    p.add_argument("url")
    p.add_argument("out")
    p.add_argument("--mode", choices=("wrk", "batch"), required=True)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--wrk-script")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--wrk-conns", type=int, default=32)
    p.add_argument("--wrk-seconds", type=int, default=60)
    p.add_argument("--per-batch", type=int, default=100)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--poll-ms", type=float, default=POLL_S * 1000)
    p.add_argument("--allow-existing", action="store_true")
    p = sub.add_parser("roundtrip")
    p.add_argument("submit")
    p.add_argument("out")
    p.add_argument("--wait-on")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p = sub.add_parser("idle-cpu")
    p.add_argument("pid", type=int)
    p.add_argument("out")
    p.add_argument("--seconds", type=float, default=10)
    p = sub.add_parser("latency")
    p.add_argument("url")
    p.add_argument("out")
    p.add_argument("--n", type=int, default=200)
    p = sub.add_parser("sharing")
    p.add_argument("url")
    p.add_argument("out")
    p.add_argument("--supervisor", type=int, required=True)
    p.add_argument("--of", type=int, default=64)
    p = sub.add_parser("preload")
    p.add_argument("url")
    p.add_argument("out")
    p.add_argument("--texts", required=True)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--keep", type=int, default=40)
    p.add_argument("--per-batch", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("naive")
    p.add_argument("out")
    p.add_argument("--bin", required=True)
    p.add_argument("--rules", required=True)
    p.add_argument("--texts", required=True)
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--max-seconds", type=float, default=180)
    p = sub.add_parser("compare")
    p.add_argument("wp_dir")
    p.add_argument("naive_dir")
    p.add_argument("out")
    a = ap.parse_args()
    fn = {"wait-ready": cmd_wait_ready, "e2e": cmd_e2e, "latency": cmd_latency,
          "roundtrip": cmd_roundtrip, "idle-cpu": cmd_idle_cpu,
          "sharing": cmd_sharing,
          "preload": cmd_preload, "naive": cmd_naive, "compare": cmd_compare}[a.cmd]
    sys.exit(fn(a))


if __name__ == "__main__":
    main()
