#!/usr/bin/python3
"""test_metrics.py -- GET /metrics against the real binary, read by real parsers.

  /usr/bin/python3 tests/observe/test_metrics.py --bin build/release/warmpool

Known activity -- tasks that succeed, fail, are retried, canceled, time out, lose their
worker to a kill -9, come in a batch; requests that succeed and fail -- and then every
counter compared exactly with what it must be: submitted, finished, attempts by outcome,
the histograms' counts, worker restarts by reason (crashed, timeout, retired), HTTP
requests by route template and status, the event count; the gauges against /v1/stats.
Each scrape passes `promtool check metrics` (Debian's prometheus) and is parsed with
prometheus_client.parser (python3-prometheus-client). The counters survive a kill -9 of
the HTTP process; route labels are templates, never paths; --metrics-token (401 without
it, with the API token, with a wrong one; the metrics token opens nothing else).
Ends with "observe.metrics: N passed, N failed"; exit 1 on any failure.
"""
import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "py"))
import wptest  # noqa: E402

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    sys.exit("test_metrics: needs python3-prometheus-client (scripts/deps.sh test)")
PROMTOOL = "/usr/bin/promtool"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TEMPLATES = ["/v1/tasks/batch", "/v1/tasks/{id}", "/v1/tasks", "/v1/stats", "/v1/events",
             "/v1/admin/reload", "/healthz", "/readyz", "/openapi.json", "/metrics", "/"]

PASSED, FAILED = [], []


def check(what, cond, detail=""):
    (PASSED if cond else FAILED).append(what)
    print("%s - %s%s" % ("ok" if cond else "not ok", what, "" if cond else ": %s" % (detail,)))
    return cond


def route_of(path):
    bare = path.split("?", 1)[0]
    for t in TEMPLATES:
        rx = "^" + re.escape(t).replace(re.escape("{id}"), "[^/]+") + "$"
        if re.match(rx, bare):
            return t
    return "unmatched"


class Client:
    """Every request through here is counted by (route template, status), as the
    server must count it."""

    def __init__(self, wp):
        self.wp = wp
        self.sent = collections.Counter()

    def req(self, method, path, body=None, headers=None, want=None):
        a = self.wp.request(method, path, body, headers)
        self.sent[(route_of(path), str(a.status))] += 1
        if want is not None and a.status != want:
            raise RuntimeError("%s %s: want %d, got %r" % (method, path, want, a))
        return a

    def scrape(self, headers=None):
        """(text, {(name, frozenset(labels)): value}) of one scrape, checked by promtool.
        .at_scrape: the requests made before it (a scrape does not count itself)."""
        self.at_scrape = collections.Counter(self.sent)
        a = self.req("GET", "/metrics", headers=headers, want=200)
        text = a.body.decode()
        check("Content-Type is %s" % CONTENT_TYPE, a.header("content-type") == CONTENT_TYPE,
              a.header("content-type"))
        p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=30)
        check("promtool check metrics accepts the scrape", p.returncode == 0,
              (p.stdout + p.stderr).decode()[:2000])
        samples = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                samples[(s.name, frozenset(s.labels.items()))] = s.value
        return text, samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def wait_for(pred, timeout=15, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def activity(c):
    """Known activity; returns the ids of what it did."""
    for i in range(20):
        c.req("POST", "/v1/tasks?wait=10", {"kind": "echo", "input": i}, want=200)
    for i in range(3):                  # fail at once
        c.req("POST", "/v1/tasks?wait=10", {"kind": "fail", "input": {"message": "x"}}, want=200)
    for i in range(2):                  # retried once, then fail
        t = c.req("POST", "/v1/tasks?wait=10", {"kind": "fail", "input": {"message": "y"},
                                                "max_attempts": 2}, want=200).json
        check("a fail task with two attempts ends failed after 2", t["state"] == "failed" and
              t["attempts"] == 2, t)
    c.req("POST", "/v1/tasks/batch", {"tasks": [{"kind": "echo", "input": i}
                                                for i in range(5)]}, want=202)
    # both workers busy with a sleep; a third waits and is canceled
    s1 = c.req("POST", "/v1/tasks", {"kind": "sleep", "input": {"ms": 1500}}, want=202).json
    s2 = c.req("POST", "/v1/tasks", {"kind": "sleep", "input": {"ms": 1500}}, want=202).json
    check("both sleeps run", wait_for(lambda: c.req("GET", "/v1/stats").json["tasks"][
        "running"] == 2 and c.req("GET", "/v1/stats").json["tasks"]["pending"] == 0))
    s3 = c.req("POST", "/v1/tasks", {"kind": "sleep", "input": {"ms": 10}}, want=202).json
    c.req("DELETE", "/v1/tasks/" + s3["id"], want=200)
    for s in (s1, s2):
        c.req("GET", "/v1/tasks/%s?wait=10" % s["id"], want=200)
    # a worker killed under its task (retried: attempts remain)
    k = c.req("POST", "/v1/tasks", {"kind": "sleep", "input": {"ms": 3000},
                                    "max_attempts": 2}, want=202).json

    def worker():
        for w in c.req("GET", "/v1/stats").json["workers"]:
            if w.get("task_id") == k["id"]:
                return w["pid"]
        return None
    pid = wait_for(worker)
    os.kill(pid, signal.SIGKILL)
    t = c.req("GET", "/v1/tasks/%s?wait=20" % k["id"], want=200).json
    if t["state"] != "succeeded":
        t = c.req("GET", "/v1/tasks/%s?wait=20" % k["id"], want=200).json
    check("the killed worker's task ran again and succeeded", t["state"] == "succeeded" and
          t["attempts"] == 2, t)
    # a task past its timeout: the supervisor kills the worker
    sp = c.req("POST", "/v1/tasks", {"kind": "spin", "input": {}, "timeout_ms": 300},
               want=202).json
    t = c.req("GET", "/v1/tasks/%s?wait=20" % sp["id"], want=200).json
    check("the spin task failed with timeout", t["state"] == "failed" and
          t["error"]["code"] == "timeout", t)
    # errors are counted too, under their route; an unknown path as "unmatched"
    c.req("GET", "/no/such/path/42", want=404)
    c.req("PUT", "/v1/tasks", want=405)
    c.req("GET", "/v1/tasks?limit=0", want=400)
    c.req("GET", "/v1/tasks/987654", want=404)
    c.req("POST", "/v1/tasks", {"kind": "nope"}, want=422)
    # both workers back (the two that died were replaced)
    check("two workers again", wait_for(lambda: len(c.req("GET", "/v1/stats").json[
        "workers"]) == 2 and all(w["state"] == "idle" for w in c.req(
            "GET", "/v1/stats").json["workers"])))


def expect_counters(samples):
    want = {
        ("warmpool_tasks_submitted_total", "echo"): 25,
        ("warmpool_tasks_submitted_total", "fail"): 5,
        ("warmpool_tasks_submitted_total", "sleep"): 4,
        ("warmpool_tasks_submitted_total", "spin"): 1,
    }
    for (name, kind), v in want.items():
        got = value(samples, name, kind=kind)
        check("%s{kind=%s} == %d" % (name, kind, v), got == v, got)
    fin = {("echo", "succeeded"): 25, ("echo", "failed"): 0, ("echo", "canceled"): 0,
           ("fail", "failed"): 5, ("fail", "succeeded"): 0,
           ("sleep", "succeeded"): 3, ("sleep", "canceled"): 1, ("sleep", "failed"): 0,
           ("spin", "failed"): 1}
    for (kind, state), v in fin.items():
        got = value(samples, "warmpool_tasks_finished_total", kind=kind, state=state)
        check("finished{kind=%s,state=%s} == %d" % (kind, state, v), got == v, got)
    att = {("echo", "succeeded"): 25, ("echo", "failed"): 0, ("fail", "failed"): 5,
           ("fail", "retried"): 2, ("fail", "succeeded"): 0, ("sleep", "succeeded"): 3,
           ("sleep", "worker_lost"): 1, ("sleep", "timeout"): 0, ("spin", "timeout"): 1,
           ("spin", "worker_lost"): 0}
    for (kind, outcome), v in att.items():
        got = value(samples, "warmpool_task_attempts_total", kind=kind, outcome=outcome)
        check("attempts{kind=%s,outcome=%s} == %d" % (kind, outcome, v), got == v, got)
    for kind, runs, queued in (("echo", 25, 25), ("fail", 7, 5), ("sleep", 4, 3),
                               ("spin", 1, 1)):
        r = value(samples, "warmpool_task_run_seconds_count", kind=kind)
        q = value(samples, "warmpool_task_queue_seconds_count", kind=kind)
        inf = value(samples, "warmpool_task_run_seconds_bucket", kind=kind, le="+Inf")
        check("run_seconds_count{%s} == %d (+Inf bucket too), queue_seconds_count == %d"
              % (kind, runs, queued), r == runs and inf == runs and q == queued, (r, inf, q))
    s = value(samples, "warmpool_task_run_seconds_sum", kind="sleep")
    check("sleep's run time sum: two sleeps of 1.5 s, one of 3 s, and one killed",
          s is not None and 5.9 < s < 15, s)
    for reason, v in (("crashed", 1), ("timeout", 1), ("retired", 0)):
        got = value(samples, "warmpool_worker_restarts_total", reason=reason)
        check("worker_restarts_total{reason=%s} == %d" % (reason, v), got == v, got)
    # pending 1 + running + end per attempt: echo 25x3, fail 3x3 + 2x5, sleep 2x3 + 2
    # (canceled) + 5 (killed, retried), spin 3
    got = value(samples, "warmpool_events_total")
    check("warmpool_events_total == 110 (every state change)", got == 110, got)


def expect_gauges(c, samples):
    stats = c.req("GET", "/v1/stats").json
    for state, n in stats["tasks"].items():
        got = value(samples, "warmpool_tasks", state=state)
        check("warmpool_tasks{state=%s} == /v1/stats (%d)" % (state, n), got == n, got)
    busy, idle, starting = (value(samples, "warmpool_workers", state=s)
                            for s in ("busy", "idle", "starting"))
    check("workers: 2 idle", (busy, idle, starting) == (0, 2, 0), (busy, idle, starting))
    for k in stats["kinds"]:
        cb = value(samples, "warmpool_kind_context_bytes", kind=k["name"])
        gen = value(samples, "warmpool_kind_generation", kind=k["name"])
        ls = value(samples, "warmpool_kind_load_seconds", kind=k["name"])
        check("kind %s: context bytes, generation, load time as /v1/stats" % k["name"],
              cb == k["context_bytes"] and gen == k["generation"] and
              abs(ls - k["load_ms"] / 1000) < 0.0011, (cb, gen, ls, k))
    check("warmpool_build_info{version=%s} 1" % stats["version"],
          value(samples, "warmpool_build_info", version=stats["version"]) == 1)
    db = value(samples, "warmpool_db_bytes")
    check("warmpool_db_bytes is the database's size", db is not None and db > 8192, db)
    check("process_* of the whole instance (6 processes: supervisor, agent, zygote, HTTP, "
          "2 workers)", value(samples, "warmpool_processes") == 6 and
          value(samples, "process_resident_memory_bytes") > 1e6 and
          value(samples, "process_cpu_seconds_total") > 0 and
          value(samples, "process_open_fds") > 10 and
          value(samples, "process_start_time_seconds") > 1.7e9,
          {k[0]: v for k, v in samples.items() if k[0].startswith("process")})


def http_counts(samples):
    got = collections.Counter()
    for (name, labels), v in samples.items():
        if name == "warmpool_http_requests_total":
            lab = dict(labels)
            got[(lab["route"], lab["code"])] = v
    return got


def expect_http(c, samples, what):
    got = http_counts(samples)
    routes = {r for r, _ in got}
    check("%s: route labels are templates (or unmatched), never paths" % what,
          routes <= set(TEMPLATES) | {"unmatched"}, routes)
    skip = {"/healthz", "/readyz"}      # wptest polls them while a server starts
    mine = {k: v for k, v in c.at_scrape.items() if k[0] not in skip and v}
    theirs = {k: v for k, v in got.items() if k[0] not in skip}
    # A request is counted once its answer is sent (with its duration, docs/api.md): a
    # scrape on another connection can come between the last request's answer and its
    # count (CI saw 4 of 5). Scrape again for a moment: lost or doubled counts stay wrong.
    deadline = time.monotonic() + 2
    while mine != theirs and time.monotonic() < deadline:
        time.sleep(0.05)
        _, samples = c.scrape()
        got = http_counts(samples)
        mine = {k: v for k, v in c.at_scrape.items() if k[0] not in skip and v}
        theirs = {k: v for k, v in got.items() if k[0] not in skip}
    check("%s: warmpool_http_requests_total{route,code} == every request made" % what,
          mine == theirs, sorted(set(mine.items()) ^ set(theirs.items())))
    n = value(samples, "warmpool_http_request_seconds_count", route="/v1/tasks")
    check("%s: the request histogram counts them too" % what,
          n == sum(v for (r, _), v in got.items() if r == "/v1/tasks"), n)


def test_counters(binary):
    args = ["--workers", "2", "--enable-test-kinds", "--retry-base-ms", "50"]
    with wptest.Warmpool(binary, args) as wp:
        c = Client(wp)
        _, empty = c.scrape()
        check("before any task: no kind has counters yet, tasks all 0",
              value(empty, "warmpool_tasks", state="pending") == 0 and not any(
                  k[0] == "warmpool_tasks_submitted_total" for k in empty))
        activity(c)
        text, samples = c.scrape()
        expect_counters(samples)
        expect_gauges(c, samples)
        expect_http(c, samples, "first scrape")
        check("no raw task path in the text", re.search(r'route="/v1/tasks/\d', text) is None)
        cpu1 = value(samples, "process_cpu_seconds_total")

        # the HTTP process dies: the counters live in the supervisor's shared memory
        kids = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(wp.proc.pid)],
                              capture_output=True, text=True).stdout.split("\n")
        http = [int(line.split()[0]) for line in kids if "warmpool-http" in line]
        os.kill(http[0], signal.SIGKILL)
        time.sleep(0.2)

        def back():
            try:
                return wp.request("GET", "/metrics", timeout=2).status == 200
            except OSError:
                return False
        check("a new HTTP process answers", wait_for(back, timeout=20))
        c.sent[("/metrics", "200")] += 1            # the probe above
        _, again = c.scrape()
        expect_counters(again)
        expect_http(c, again, "after the HTTP process was killed")
        check("process_cpu_seconds_total does not go down",
              value(again, "process_cpu_seconds_total") >= cpu1,
              (cpu1, value(again, "process_cpu_seconds_total")))


def test_retired(binary):
    """--max-tasks-per-worker 3: seven tasks retire two workers."""
    with wptest.Warmpool(binary, ["--workers", "1", "--max-tasks-per-worker", "3"]) as wp:
        c = Client(wp)
        for i in range(7):
            c.req("POST", "/v1/tasks?wait=10", {"kind": "echo", "input": i}, want=200)
        _, s = c.scrape()
        got = value(s, "warmpool_worker_restarts_total", reason="retired")
        check("worker_restarts_total{reason=retired} == 2", got == 2, got)
        check("... and none crashed",
              value(s, "warmpool_worker_restarts_total", reason="crashed") == 0)


def test_token(binary):
    args = ["--workers", "1", "--metrics-token", "scrape-token", "--api-token", "api-token"]
    with wptest.Warmpool(binary, args) as wp:
        for h, what in (({}, "no token"), ({"Authorization": "Bearer api-token"}, "the API token"),
                        ({"Authorization": "Bearer scrape-tokenX"}, "a wrong token"),
                        ({"Authorization": "scrape-token"}, "no Bearer")):
            a = wp.request("GET", "/metrics", headers=h)
            check("--metrics-token, %s: 401 unauthorized with WWW-Authenticate" % what,
                  a.status == 401 and a.json["error"]["code"] == "unauthorized" and
                  a.header("www-authenticate") == 'Bearer realm="warmpool-metrics"', a)
        a = wp.request("GET", "/metrics", headers={"Authorization": "Bearer scrape-token"})
        check("--metrics-token, the right one: 200", a.status == 200 and
              a.header("content-type") == CONTENT_TYPE, a)
        a = wp.request("GET", "/v1/stats", headers={"Authorization": "Bearer scrape-token"})
        check("the metrics token opens nothing else (/v1/stats: 401)", a.status == 401, a)
    with wptest.Warmpool(binary, ["--workers", "1", "--api-token", "api-token"]) as wp:
        a = wp.request("GET", "/metrics")
        check("without --metrics-token, /metrics is open even with --api-token",
              a.status == 200, a)


def scrape_ms(wp, n=15):
    """The median time of n scrapes (after two to warm up), and the last text."""
    times, text = [], ""
    for i in range(n + 2):
        t0 = time.perf_counter()
        a = wp.request("GET", "/metrics")
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1000)
        text = a.body.decode()
    times.sort()
    return times[len(times) // 2], text


def test_scrape_cost(binary, tool):
    """The scrape reads the store's kept counts: 300,000 stored tasks (filled through SQL
    by bench's scale_tool) cost it no more than none. (Counting them, as before the
    counts table, took tens of milliseconds.)"""
    d = tempfile.mkdtemp(prefix="warmpool-scrape-")
    try:
        big = os.path.join(d, "big.db")
        subprocess.run([tool, "fill", big, "300000", "--days", "10"], check=True,
                       capture_output=True, timeout=120)
        with wptest.Warmpool(binary, ["--workers", "1", "--db", big]) as wp:
            big_ms, text = scrape_ms(wp)
        with wptest.Warmpool(binary, ["--workers", "1"]) as wp:
            small_ms, _ = scrape_ms(wp)
        fams = {s.name: s for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "warmpool_tasks" and s.labels == {"state": "succeeded"}}
        total = sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                    if s.name == "warmpool_tasks")
        by_kind = sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                      if s.name == "warmpool_kind_tasks")
        check("300,000 stored tasks counted (by state, and by kind and state)",
              total == 300000 and by_kind == 300000, (total, by_kind, fams))
        check("a scrape costs the same with 300,000 tasks as with none (median %.1f ms vs "
              "%.1f ms)" % (big_ms, small_ms), big_ms < 3 * small_ms + 10, (big_ms, small_ms))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--scale-tool", help="bench/scale_tool (fills a database through SQL)")
    a = ap.parse_args()
    if not os.path.exists(PROMTOOL):
        sys.exit("test_metrics: needs promtool (Debian prometheus; scripts/deps.sh test)")
    tests = [test_counters, test_retired, test_token]
    if a.scale_tool:
        tests.append(lambda b: test_scrape_cost(b, a.scale_tool))
    for t in tests:
        try:
            t(a.bin)
        except Exception as e:  # noqa: BLE001 -- a failure of the test, reported as one
            import traceback
            traceback.print_exc()
            check(t.__name__ + " ran to its end", False, e)
    print("observe.metrics: %d passed, %d failed" % (len(PASSED), len(FAILED)))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
