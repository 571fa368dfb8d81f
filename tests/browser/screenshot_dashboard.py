#!/usr/bin/python3
"""screenshot_dashboard.py -- the picture of the dashboard in the README (docs/dashboard.png).

  /usr/bin/python3 tests/browser/screenshot_dashboard.py --bin build/release/warmpool \
      --out docs/dashboard.png [--seconds 60]

Starts warmpool with three workers, feeds it a steady mix of tasks (echo, scan, sleep,
some that fail and are retried, one canceled) for --seconds while the page is open, so
that the throughput chart has something to show, and saves a screenshot. Not a test:
tests/browser/test_dashboard.py is.
"""
import argparse
import os
import random
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "py"))
sys.path.insert(0, HERE)
import wptest  # noqa: E402
import browser  # noqa: E402


def feed(wp, until, stop):
    rnd = random.Random(7)
    n = 0
    while time.monotonic() < until and not stop.is_set():
        r = rnd.random()
        if r < 0.45:
            body = {"kind": "echo", "input": {"order": n}}
        elif r < 0.75:
            body = {"kind": "scan", "input": {"text": "key AKIAIOSFODNN7EXAMPLE in a log line %d" % n}}
        elif r < 0.93:
            body = {"kind": "sleep", "input": {"ms": rnd.choice([40, 120, 300])},
                    "priority": rnd.choice([0, 0, 5])}
        else:
            body = {"kind": "fail", "input": {"message": "upstream said no"}, "max_attempts": 2}
        wp.request("POST", "/v1/tasks", body)
        n += 1
        time.sleep(rnd.uniform(0.01, 0.06) * (2.5 if int(time.monotonic() / 10) % 2 else 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=60)
    a = ap.parse_args()
    args = ["--workers", "3", "--enable-test-kinds", "--retry-base-ms", "200"]
    with wptest.Warmpool(a.bin, args) as wp, browser.Browser() as b:
        b.driver.set_window_size(1360, 1240)
        b.open(wp.url + "/")
        stop = threading.Event()
        t = threading.Thread(target=feed, args=(wp, time.monotonic() + a.seconds, stop))
        t.start()
        t.join()
        # a few still waiting, one of them canceled, for the picture
        for i in range(2):
            wp.request("POST", "/v1/tasks", {"kind": "sleep", "input": {"ms": 3000}})
        time.sleep(0.3)
        for i in range(3):
            w = wp.request("POST", "/v1/tasks", {"kind": "sleep", "input": {"ms": 500}}).json
        wp.request("DELETE", "/v1/tasks/" + w["id"])
        time.sleep(2.2)
        b.screenshot(a.out)
    print("wrote " + a.out)


if __name__ == "__main__":
    main()
