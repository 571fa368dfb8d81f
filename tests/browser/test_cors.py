#!/usr/bin/python3
"""test_cors.py -- a page on another origin calls warmpool in headless Chromium.

  /usr/bin/python3 tests/browser/test_cors.py --bin build/release/warmpool [--out DIR]

The page (pages/cors.html) is served from http://127.0.0.1:PAGE; warmpool runs with
--cors-origin http://127.0.0.1:PAGE and an API token. The browser itself does the CORS
protocol, so this checks what unit and HTTP tests cannot: that Chromium sends its
preflight for a POST with Authorization, Idempotency-Key and JSON, accepts our answer,
and lets the page read the status and the exposed headers (Location, X-Request-Id) of
successes and errors alike; that the same page is refused by a warmpool without
--cors-origin, and by ours when served from another origin (http://localhost:PAGE).
Ends with "browser.cors: N passed, N failed"; exit 1 on any failure.
"""
import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "py"))
sys.path.insert(0, HERE)
import wptest  # noqa: E402
import browser  # noqa: E402

TOKEN = "browser-token"
PASSED, FAILED = [], []


def check(what, cond, detail=""):
    (PASSED if cond else FAILED).append(what)
    print("%s - %s%s" % ("ok" if cond else "not ok", what, "" if cond else ": %s" % detail))


def call(b, url, init=None):
    return b.run_async("callApi(arguments[0], arguments[1]).then(done);", url, init or {})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", help="where to leave the screenshot (default: a temporary dir)")
    a = ap.parse_args()
    out = a.out or tempfile.mkdtemp(prefix="warmpool-browser-")
    os.makedirs(out, exist_ok=True)

    with browser.StaticServer(os.path.join(HERE, "pages")) as pages:
        page_origin = pages.url
        args = ["--workers", "1", "--api-token", TOKEN, "--cors-origin", page_origin]
        with wptest.Warmpool(a.bin, args) as wp, \
                wptest.Warmpool(a.bin, ["--workers", "1"]) as plain, \
                browser.Browser() as b:
            b.open(page_origin + "/cors.html")
            auth = {"Authorization": "Bearer " + TOKEN}

            # a POST that needs a preflight: Authorization, Idempotency-Key, JSON
            r = call(b, wp.url + "/v1/tasks?wait=10", {
                "method": "POST",
                "headers": dict(auth, **{"Content-Type": "application/json",
                                         "Idempotency-Key": "browser-1",
                                         "X-Request-Id": "browser-req-1"}),
                "body": json.dumps({"kind": "echo", "input": {"from": "a page"}})})
            body = json.loads(r.get("body") or "null")
            check("POST ?wait from the page: 200 with the finished task",
                  r.get("status") == 200 and body and body.get("state") == "succeeded" and
                  body.get("result") == {"from": "a page"}, r)
            task_id = body.get("id") if body else "0"
            check("the page reads Location", r.get("location") == "/v1/tasks/%s" % task_id, r)
            check("the page reads X-Request-Id", r.get("requestId") == "browser-req-1", r)
            log = wp.log()
            check("Chromium sent a preflight and got 204",
                  "method=OPTIONS route=/v1/tasks status=204" in log, log[-2000:])

            # errors are readable too: 401 without the token, 409 on a finished task
            r = call(b, wp.url + "/v1/stats")
            check("the page reads a 401", r.get("status") == 401 and
                  json.loads(r["body"])["error"]["code"] == "unauthorized", r)
            r = call(b, wp.url + "/v1/tasks/" + task_id, {"method": "DELETE", "headers": auth})
            check("the page reads a 409 (DELETE, preflighted)", r.get("status") == 409, r)
            r = call(b, wp.url + "/v1/tasks/" + task_id + "?wait=1", {"headers": auth})
            check("GET with the token: 200", r.get("status") == 200, r)

            # refused: a warmpool without --cors-origin
            r = call(b, plain.url + "/v1/stats")
            check("without --cors-origin the browser refuses the answer",
                  "TypeError" in r.get("error", ""), r)
            r = call(b, plain.url + "/v1/tasks", {
                "method": "POST", "headers": {"Content-Type": "application/json"},
                "body": json.dumps({"kind": "echo"})})
            check("... and the preflight of a POST", "TypeError" in r.get("error", ""), r)
            shot = b.screenshot(os.path.join(out, "cors-page.png"))
            with open(shot, "rb") as f:
                check("a screenshot of the page is a PNG", f.read(8) == b"\x89PNG\r\n\x1a\n")

            # refused: the same page from another origin
            other = page_origin.replace("127.0.0.1", "localhost")
            b.open(other + "/cors.html")
            r = call(b, wp.url + "/v1/stats", {"headers": auth})
            check("a page on an origin not listed is refused",
                  "TypeError" in r.get("error", ""), r)
            code = wp.stop()
            check("warmpool stops with 0", code == 0, code)
    print("browser.cors: %d passed, %d failed" % (len(PASSED), len(FAILED)))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
