#!/usr/bin/python3
"""test_events.py -- GET /v1/events against the real binary.

  /usr/bin/python3 tests/observe/test_events.py --bin build/release/warmpool

Every source of a state change shows up (the writer: submitted; workers: running,
succeeded, failed, retried; HTTP threads: canceled; the supervisor: timeout and
worker_lost hand-backs, and start-up recovery after a crash), in order per task, with
growing ids, each event's data valid against the TaskEvent schema of api/openapi.json;
the kind and state filters; Last-Event-ID resume (exact: nothing missed, nothing twice),
from an unknown id, from before a restart (the `lost` event, then this run from its
start, recovery included), from older than the ring keeps; a stream that falls behind
(`lost`, then on); a hole left by a writer that died (fault point); heartbeats; the cap
on streams (503 too_many_streams, the place freed within seconds when a client leaves);
bad parameters (400), the token (401); the drain ending every stream.
Ends with "observe.events: N passed, N failed"; exit 1 on any failure.
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "py"))
import wptest  # noqa: E402

try:
    from jsonschema import Draft202012Validator
except ImportError:
    sys.exit("test_events: needs python3-jsonschema (scripts/deps.sh test installs it)")

PASSED, FAILED = [], []
DOC = json.load(open(os.path.join(HERE, "..", "..", "api", "openapi.json")))
TASK_EVENT = Draft202012Validator(DOC["components"]["schemas"]["TaskEvent"])
LOST_EVENT = Draft202012Validator(DOC["components"]["schemas"]["LostEvent"])


def check(what, cond, detail=""):
    (PASSED if cond else FAILED).append(what)
    print("%s - %s%s" % ("ok" if cond else "not ok", what, "" if cond else ": %s" % (detail,)))
    return cond


def submit(wp, body, headers=None):
    a = wp.request("POST", "/v1/tasks", body, headers)
    if a.status != 202:
        raise RuntimeError("submit: %r" % a)
    return a.json["id"]


def wait_terminal(wp, tid, headers=None, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = wp.request("GET", "/v1/tasks/%s?wait=5" % tid, headers=headers).json
        if t and t["state"] in ("succeeded", "failed", "canceled"):
            return t
    raise RuntimeError("task %s did not end" % tid)


def events_until(es, stop, timeout=15):
    """Events until stop(ev) is true (that one included)."""
    got, deadline = [], time.monotonic() + timeout
    while True:
        ev = es.next(max(0.1, deadline - time.monotonic()))
        if ev is None:
            return got
        got.append(ev)
        if stop(ev):
            return got


def task_events(evs, tid=None):
    return [e["data"] for e in evs if e.get("event") == "task" and
            (tid is None or e["data"]["id"] == tid)]


def valid(evs):
    for e in evs:
        v = TASK_EVENT if e.get("event") == "task" else LOST_EVENT
        errs = list(v.iter_errors(e.get("data")))
        if errs:
            return "%s: %s" % (e, errs[0].message)
    ids = [int(e["id"]) for e in evs]
    if ids != sorted(set(ids)):
        return "ids do not grow: %s" % ids
    return None


def worker_of(wp, tid, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in wp.request("GET", "/v1/stats").json["workers"]:
            if w.get("task_id") == tid:
                return w["pid"]
        time.sleep(0.02)
    return None


# ---------------------------------------------------------------- the tests

def test_sources_and_order(binary):
    args = ["--workers", "1", "--enable-test-kinds", "--retry-base-ms", "50"]
    with wptest.Warmpool(binary, args) as wp, wptest.EventStream(wp.port) as es:
        check("GET /v1/events: 200 text/event-stream, no-store",
              es.status == 200 and es.headers.get("content-type") == "text/event-stream" and
              es.headers.get("cache-control") == "no-store", es.headers)
        # the writer, the worker: pending, running, succeeded
        t1 = submit(wp, {"kind": "echo", "input": 1})
        evs = events_until(es, lambda e: e["data"].get("state") == "succeeded")
        check("the stream opens with a retry field", es.retry == 2000, es.retry)
        got = [(d["state"], d["attempts"]) for d in task_events(evs, t1)]
        check("a task's changes in order: pending 0, running 1, succeeded 1",
              got == [("pending", 0), ("running", 1), ("succeeded", 1)], evs)
        check("every event matches TaskEvent; ids grow", valid(evs) is None, valid(evs))
        d = task_events(evs, t1)[-1]
        check("an event carries kind, a null error and a time",
              d["kind"] == "echo" and d["error"] is None and wptest_ts(d["at"]), d)

        # retried (worker): fail with two attempts
        t2 = submit(wp, {"kind": "fail", "input": {"message": "x"}, "max_attempts": 2})
        evs = events_until(es, lambda e: e["data"].get("id") == t2 and
                           e["data"].get("state") == "failed")
        got = [(d["state"], d["attempts"], d["error"]) for d in task_events(evs, t2)]
        check("retried: back to pending with its error, then failed",
              got == [("pending", 0, None), ("running", 1, None), ("pending", 1, "task_failed"),
                      ("running", 2, None), ("failed", 2, "task_failed")], got)

        # canceled (an HTTP thread): one sleep runs, the next waits and is canceled
        t3 = submit(wp, {"kind": "sleep", "input": {"ms": 1500}})
        events_until(es, lambda e: e["data"].get("id") == t3 and
                     e["data"].get("state") == "running")
        t4 = submit(wp, {"kind": "sleep", "input": {"ms": 10}})
        check("cancel: 200", wp.request("DELETE", "/v1/tasks/" + t4).status == 200)
        evs = events_until(es, lambda e: e["data"].get("id") == t4 and
                           e["data"].get("state") == "canceled")
        check("canceled: pending then canceled",
              [d["state"] for d in task_events(evs, t4)] == ["pending", "canceled"], evs)
        wait_terminal(wp, t3)

        # the supervisor: timeout (spin past timeout_ms), then worker_lost (a kill)
        t5 = submit(wp, {"kind": "spin", "input": {}, "timeout_ms": 300, "max_attempts": 1})
        evs = events_until(es, lambda e: e["data"].get("id") == t5 and
                           e["data"].get("state") == "failed")
        d = task_events(evs, t5)[-1]
        check("timeout: failed with error timeout (the supervisor's hand-back)",
              d["error"] == "timeout" and d["attempts"] == 1, d)
        t6 = submit(wp, {"kind": "sleep", "input": {"ms": 5000}, "max_attempts": 2})
        pid = worker_of(wp, t6)
        os.kill(pid, signal.SIGKILL)
        evs = events_until(es, lambda e: e["data"].get("id") == t6 and
                           e["data"].get("state") == "pending" and e["data"]["attempts"] == 1)
        d = task_events(evs, t6)[-1]
        check("worker lost: back to pending with error worker_lost",
              d["error"] == "worker_lost", d)
        check("all of them valid", valid(evs) is None, valid(evs))
        wp.request("DELETE", "/v1/tasks/" + t6)


def wptest_ts(text):
    return isinstance(text, str) and len(text) == 24 and text.endswith("Z") and text[10] == "T"


def test_filters(binary):
    with wptest.Warmpool(binary, ["--workers", "1", "--enable-test-kinds"]) as wp, \
            wptest.EventStream(wp.port, "?kind=fail,sleep&state=succeeded,failed") as es, \
            wptest.EventStream(wp.port, "?state=&kind=") as everything:
        ids = [submit(wp, {"kind": "echo", "input": 1}),
               submit(wp, {"kind": "fail", "input": {"message": "m"}}),
               submit(wp, {"kind": "sleep", "input": {"ms": 1}})]
        for tid in ids:
            wait_terminal(wp, tid)
        evs = events_until(es, lambda e: e["data"]["id"] == ids[2])
        got = [(d["id"], d["state"]) for d in task_events(evs)]
        check("kind=fail,sleep&state=succeeded,failed: only those",
              got == [(ids[1], "failed"), (ids[2], "succeeded")], got)
        evs = events_until(everything, lambda e: e["data"]["id"] == ids[2] and
                           e["data"]["state"] == "succeeded")
        check("empty parameters: no filter (9 events)", len(task_events(evs)) == 9, evs)


def test_resume(binary):
    with wptest.Warmpool(binary, ["--workers", "1"]) as wp:
        with wptest.EventStream(wp.port) as es:
            t1 = submit(wp, {"kind": "echo", "input": 1})
            evs = events_until(es, lambda e: e["data"].get("state") == "succeeded")
            last = evs[-1]["id"]
        more = [submit(wp, {"kind": "echo", "input": i}) for i in range(3)]
        for tid in more:
            wait_terminal(wp, tid)
        with wptest.EventStream(wp.port, headers={"Last-Event-ID": last}) as es:
            evs = events_until(es, lambda e: e["data"]["id"] == more[-1] and
                               e["data"]["state"] == "succeeded")
            got = [(d["id"], d["state"]) for d in task_events(evs)]
            want = [(t, s) for t in more for s in ("pending", "running", "succeeded")]
            check("Last-Event-ID: exactly the events after it, none twice, none lost",
                  sorted(got) == sorted(want) and len(got) == 9 and
                  int(evs[0]["id"]) == int(last) + 1, got)
            check("resumed events keep their order per task",
                  [s for t, s in got if t == more[0]] == ["pending", "running", "succeeded"])
        with wptest.EventStream(wp.port, headers={"Last-Event-ID": str(int(last) * 2)}) as es:
            first = es.next(5)
            check("an id the server never gave: `lost` (missed null), then the present",
                  first.get("event") == "lost" and first["data"] == {"missed": None}, first)
            t = submit(wp, {"kind": "echo", "input": 9})
            ev = es.next(5)
            check("... and the next change", ev["data"]["id"] == t and
                  ev["data"]["state"] == "pending", ev)
        del t1


def test_restart(binary):
    """A crash with a task running, a restart on the same database: a client that resumes
    with its last id gets `lost` and this run from its start, the start-up recovery
    (worker_lost, back to pending) included."""
    tmp = tempfile.mkdtemp(prefix="warmpool-restart-")
    db = os.path.join(tmp, "keep.db")
    args = ["--workers", "1", "--db", db]
    wp = wptest.Warmpool(binary, args)
    wp.start()
    try:
        with wptest.EventStream(wp.port) as es:
            tid = submit(wp, {"kind": "sleep", "input": {"ms": 600}, "max_attempts": 3})
            evs = events_until(es, lambda e: e["data"].get("state") == "running")
            last = evs[-1]["id"]
        os.killpg(wp.proc.pid, signal.SIGKILL)      # the whole instance, mid-task
        wp.proc.wait(10)
    finally:
        wp.stop()
    with wptest.Warmpool(binary, args) as wp2:
        with wptest.EventStream(wp2.port, headers={"Last-Event-ID": last}) as es:
            evs = events_until(es, lambda e: e["data"].get("state") == "succeeded")
            check("after a restart: `lost` first (missed unknown)",
                  evs[0].get("event") == "lost" and evs[0]["data"]["missed"] is None, evs[:2])
            got = [(d["state"], d["attempts"], d["error"]) for d in task_events(evs, tid)]
            check("then this run from its start: recovery (pending, worker_lost), running, "
                  "succeeded", got == [("pending", 1, "worker_lost"), ("running", 2, None),
                                       ("succeeded", 2, None)], got)
            check("the new run's ids are above the old one's",
                  all(int(e["id"]) > int(last) for e in evs[1:]), evs)
    shutil.rmtree(tmp, ignore_errors=True)


def test_ring_limits(binary):
    """A ring of 1024 records (fault point): resuming from older than it keeps, and a
    client too slow for it, both get `lost` with the count."""
    env = {"WARMPOOL_FAULTS": "events_ring_records=1024,events_stream_sndbuf=4096"}
    with wptest.Warmpool(binary, ["--workers", "1"], env=env) as wp:
        with wptest.EventStream(wp.port) as es:
            t = submit(wp, {"kind": "echo", "input": 0})
            first = es.next(5)["id"]
            wait_terminal(wp, t)
        batch = {"tasks": [{"kind": "echo", "input": i} for i in range(500)]}
        for _ in range(2):
            a = wp.request("POST", "/v1/tasks/batch", batch)
        last_id = a.json["tasks"][-1]["id"]
        wait_terminal(wp, last_id)
        with wptest.EventStream(wp.port, headers={"Last-Event-ID": first}) as es:
            ev = es.next(5)
            missed = ev["data"].get("missed") if ev.get("event") == "lost" else None
            check("resume from older than the ring: `lost` with how many were missed",
                  isinstance(missed, int) and 3003 - 1024 - 1 <= missed <= 3003 - 1024 + 64, ev)
            ev2 = es.next(5)
            check("... then the oldest event the ring still has",
                  int(ev2["id"]) == int(ev["id"]) + 1, (ev, ev2))
        # a client that does not read while 3000 events go by (small socket buffers
        # at both ends: the fault point on the server's)
        with wptest.EventStream(wp.port, rcvbuf=4096) as es:
            for _ in range(2):
                a = wp.request("POST", "/v1/tasks/batch", batch)
            last_id = a.json["tasks"][-1]["id"]
            wait_terminal(wp, last_id)
            # read up to the `lost`, and only then submit one more task: the stream goes
            # on from the present of the moment it found itself behind, so a task that
            # ended before that moment is (rightly) not in it
            evs = events_until(es, lambda e: e.get("event") == "lost")
            t = submit(wp, {"kind": "echo", "input": "after"})
            evs += events_until(es, lambda e: e.get("event") == "task" and
                                e["data"]["id"] == t and e["data"]["state"] == "succeeded")
            lost = [e for e in evs if e.get("event") == "lost"]
            check("a client that fell behind the ring gets `lost` with a count, and goes on "
                  "from the present", len(lost) >= 1 and all(
                      isinstance(e["data"]["missed"], int) and e["data"]["missed"] > 0
                      for e in lost) and valid(evs) is None, [e for e in evs if
                                                              e.get("event") == "lost"])
            got = len(task_events(evs))
            check("... so it did not get everything", got < 3000, got)


def test_behind_with_a_slow_notifier(binary):
    """A client that fell behind the ring while the notifier's view of it lags (fault
    point: the notifier moves every 1.5 s instead of 10 ms): its `lost` takes it to the
    present, once, and it gets what happens after. Before the fix the jump went to the
    notifier's lagging view, itself behind the ring: a second `lost` came later and
    skipped the task submitted after the first."""
    env = {"WARMPOOL_FAULTS": "events_ring_records=1024,events_stream_sndbuf=4096,"
                              "events_coalesce_ms=1500"}
    batch = {"tasks": [{"kind": "echo", "input": i} for i in range(500)]}
    with wptest.Warmpool(binary, ["--workers", "1"], env=env) as wp, \
            wptest.EventStream(wp.port, rcvbuf=4096) as es:
        for _ in range(2):
            a = wp.request("POST", "/v1/tasks/batch", batch)
        wait_terminal(wp, a.json["tasks"][-1]["id"])
        evs = events_until(es, lambda e: e.get("event") == "lost")
        t = submit(wp, {"kind": "echo", "input": "after"})
        evs += events_until(es, lambda e: e.get("event") == "task" and
                            e["data"]["id"] == t and e["data"]["state"] == "succeeded")
        lost = [e for e in evs if e.get("event") == "lost"]
        check("behind the ring with a lagging notifier: one `lost`", len(lost) == 1,
              [e["data"] for e in lost])
        got = [d["state"] for d in task_events(evs, t)]
        check("... and then every change of the task submitted after it",
              got == ["pending", "running", "succeeded"], got)


def test_hole_and_heartbeat(binary):
    """A writer that takes a number and dies before writing (fault point: the first event
    of each process is never written): readers wait a moment, then report it lost and go
    on. And the heartbeat, shortened by a fault point."""
    env = {"WARMPOOL_FAULTS": "events_publish_skip=1,events_heartbeat_ms=300"}
    with wptest.Warmpool(binary, ["--workers", "1"], env=env) as wp, \
            wptest.EventStream(wp.port) as es:
        t0 = time.monotonic()
        try:
            es.next(1.5)
        except TimeoutError:
            pass
        check("a heartbeat comment while nothing happens",
              "keep-alive" in es.comments, es.comments)
        tid = submit(wp, {"kind": "echo", "input": 1})
        evs = events_until(es, lambda e: e.get("event") == "task" and
                           e["data"]["state"] == "succeeded", timeout=10)
        kinds = [e.get("event") for e in evs]
        check("two holes (the writer's and the worker's first events) become `lost` 1 each, "
              "then the next event", kinds == ["lost", "lost", "task"] and
              all(e["data"] == {"missed": 1} for e in evs[:2]) and
              evs[2]["data"]["id"] == tid, evs)
        check("holes are declared within a few seconds", time.monotonic() - t0 < 8)


def test_cap_and_errors(binary):
    args = ["--workers", "1", "--max-event-streams", "2", "--api-token", "tok"]
    auth = {"Authorization": "Bearer tok"}
    with wptest.Warmpool(binary, args) as wp:
        a = wp.request("GET", "/v1/events")
        check("without the token: 401", a.status == 401 and
              a.json["error"]["code"] == "unauthorized", a)
        for q, h, what in (("?state=bogus", {}, "state"), ("?state=pending,", {}, "state"),
                           ("?kind=Echo", {}, "kind"), ("?kind=a,,b", {}, "kind"),
                           ("?kind=" + ",".join("k%d" % i for i in range(17)), {}, "kind"),
                           ("?kind=" + "k" * 65, {}, "kind"),
                           ("", {"Last-Event-ID": "abc"}, "Last-Event-ID"),
                           ("", {"Last-Event-ID": "1" * 21}, "Last-Event-ID"),
                           ("", {"Last-Event-ID": "-5"}, "Last-Event-ID")):
            a = wp.request("GET", "/v1/events" + q, headers=dict(auth, **h))
            code = "invalid_request" if what == "Last-Event-ID" else "invalid_query"
            check("400 %s for %s %s" % (code, q or "", h or ""), a.status == 400 and
                  a.json["error"]["code"] == code and what in a.json["error"]["message"], a)
        one = wptest.EventStream(wp.port, headers=auth)
        two = wptest.EventStream(wp.port, headers=auth)
        three = wptest.EventStream(wp.port, headers=auth)
        check("two streams open", one.status == 200 and two.status == 200)
        check("a third: 503 too_many_streams with Retry-After", three.status == 503 and
              json.loads(three.body)["error"]["code"] == "too_many_streams" and
              three.headers.get("retry-after") == "1", (three.status, three.body))
        three.close()
        check("/metrics counts the open streams", "warmpool_event_streams 2" in
              wp.request("GET", "/metrics").body.decode())
        one.close()                     # the client leaves: its place is free again soon
        deadline, status = time.monotonic() + 5, 0
        while time.monotonic() < deadline:
            s = wptest.EventStream(wp.port, headers=auth)
            status = s.status
            if status == 200:
                break
            s.close()
            time.sleep(0.2)
        check("a client that left frees its place within seconds", status == 200, status)
        # the drain ends every stream, and does not wait for them
        t0 = time.monotonic()
        wp.proc.send_signal(signal.SIGTERM)
        ends = [two.next(10), s.next(10)]
        check("the drain ends the streams", ends == [None, None], ends)
        rc = wp.proc.wait(10)
        check("... and warmpool exits 0 at once", rc == 0 and time.monotonic() - t0 < 5,
              (rc, time.monotonic() - t0))
        two.close()
        s.close()


def test_ring_cannot_be_made(binary):
    """The supervisor cannot map the ring (fault point: a size that is not a power of
    two): it says so and exits 1 before anything starts."""
    d = tempfile.mkdtemp(prefix="warmpool-noring-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARMPOOL_")}
    env["WARMPOOL_FAULTS"] = "events_ring_records=1000"
    try:
        p = subprocess.run([binary, "--listen", "127.0.0.1:%d" % wptest.free_port(), "--db",
                            os.path.join(d, "x.db"), "--workers", "1"], env=env,
                           capture_output=True, text=True, timeout=30)
        check("no event ring: exit 1 with the reason", p.returncode == 1 and
              "creating the shared metrics and event ring" in p.stderr, (p.returncode, p.stderr[-500:]))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    a = ap.parse_args()
    for t in (test_sources_and_order, test_filters, test_resume, test_restart,
              test_ring_limits, test_behind_with_a_slow_notifier, test_hole_and_heartbeat,
              test_cap_and_errors,
              test_ring_cannot_be_made):
        try:
            t(a.bin)
        except Exception as e:  # noqa: BLE001 -- a failure of the test, reported as one
            import traceback
            traceback.print_exc()
            check(t.__name__ + " ran to its end", False, e)
    print("observe.events: %d passed, %d failed" % (len(PASSED), len(FAILED)))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
