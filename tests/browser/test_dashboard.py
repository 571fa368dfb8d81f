#!/usr/bin/python3
"""test_dashboard.py -- the dashboard at GET /, end to end in headless Chromium.

  /usr/bin/python3 tests/browser/test_dashboard.py --bin build/release/warmpool [--out DIR]

Without a token (through a reverse proxy under a path prefix, as a site would serve it):
the page loads, shows the counts and goes live; a task submitted through its form
succeeds in the list without a reload; the counts change live when tasks are submitted
from elsewhere; a pending task (one `sleep` worker keeps it pending) is canceled with its
button; a task's detail opens on a click (input, result, attempts, times); every request
the page made stayed under the prefix and on its own origin. With --api-token: the page
asks for the token (a wrong one is refused), keeps it for the browser session (a reload
of the page does not ask again), never puts it in a URL, submits and reloads with it;
sign out asks again. Screenshots go to --out (dashboard.png, dashboard-detail.png,
dashboard-token.png). Ends with "browser.dashboard: N passed, N failed"; exit 1 on any
failure.
"""
import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "py"))
sys.path.insert(0, HERE)
import wptest  # noqa: E402
import browser  # noqa: E402

from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

TOKEN = "dashboard-token-7f3a"
PASSED, FAILED = [], []


def check(what, cond, detail=""):
    (PASSED if cond else FAILED).append(what)
    print("%s - %s%s" % ("ok" if cond else "not ok", what, "" if cond else ": %s" % (detail,)))
    return cond


def until(fn, timeout=15, step=0.1):
    """fn()'s first true value within timeout, else None (never raises on the way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except (NoSuchElementException, StaleElementReferenceException):
            pass
        time.sleep(step)
    return None


def text(d, id_):
    return d.find_element(By.ID, id_).text


def count(d, state):
    t = text(d, "count-" + state).replace(",", "")
    return int(t) if t.isdigit() else None


def row_state(d, task_id):
    return d.find_element(By.CSS_SELECTOR, 'tr[data-id="%s"]' % task_id).get_attribute("data-state")


def settled(d, wp, headers=None):
    """The page's succeeded count, once it shows what the API says."""
    want = wp.request("GET", "/v1/stats", headers=headers).json["tasks"]["succeeded"]
    return until(lambda: count(d, "succeeded") == want and want) or want


def click(d, css):
    """Clicks the element css finds, again if the live list redrew it meanwhile."""
    def once():
        d.find_element(By.CSS_SELECTOR, css).click()
        return True
    return until(once, 10)


def submit_form(d, kind, value, priority=None):
    Select(d.find_element(By.ID, "submit-kind")).select_by_value(kind)
    box = d.find_element(By.ID, "submit-input")
    box.clear()
    box.send_keys(value)
    if priority is not None:
        p = d.find_element(By.ID, "submit-priority")
        p.clear()
        p.send_keys(str(priority))
    d.find_element(By.ID, "submit-button").click()
    link = until(lambda: d.find_element(By.ID, "submit-link"), 10)
    return link.get_attribute("data-id") if link else None


def page_requests(d):
    return d.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")


def without_token(binary, out):
    args = ["--workers", "1", "--enable-test-kinds"]
    with wptest.Warmpool(binary, args) as wp, browser.PrefixProxy(wp.port, "/ops/warmpool") as px, \
            browser.Browser() as b:
        d = b.driver
        d.set_window_size(1360, 1500)
        b.open(px.url)
        check("the page loads under a path prefix: counts shown",
              until(lambda: count(d, "pending") is not None), text(d, "count-pending"))
        check("the event stream connects (live)",
              until(lambda: "live" in d.find_element(By.ID, "live-status").get_attribute("class")))
        check("no token asked for", not d.find_element(By.ID, "token-modal").is_displayed())
        check("no reload button without a token",
              not d.find_element(By.ID, "reload-button").is_displayed())
        d.execute_script("window.__sameDocument = 42")

        # a task through the form: it appears, and succeeds, in the list
        tid = submit_form(d, "echo", '{"from": "the form", "n": [1, 2, 3]}', priority=2)
        check("the form submits a task (202, its id shown)", tid is not None and tid.isdigit(), tid)
        check("... which succeeds in the list, live",
              until(lambda: row_state(d, tid) == "succeeded"), tid)
        check("bad JSON in the form is refused on the page",
              submit_bad_json(d), text(d, "submit-result"))

        # counts change live (no reload) when tasks come from elsewhere
        before = settled(d, wp)
        for i in range(3):
            wp.request("POST", "/v1/tasks", {"kind": "echo", "input": i})
        check("the succeeded count grows by 3 without a reload",
              until(lambda: count(d, "succeeded") == before + 3), (before, count(d, "succeeded")))
        check("... in the same document", d.execute_script("return window.__sameDocument") == 42)

        # cancel: one sleep keeps the only worker busy, the next waits
        busy = wp.request("POST", "/v1/tasks", {"kind": "sleep", "input": {"ms": 4000}}).json
        waiting = wp.request("POST", "/v1/tasks", {"kind": "sleep", "input": {"ms": 10}}).json
        cancel_css = 'tr[data-id="%s"] .cancel-button' % waiting["id"]
        check("a pending task has a Cancel button",
              until(lambda: d.find_element(By.CSS_SELECTOR, cancel_css)))
        click(d, cancel_css)
        check("Cancel: the task is canceled (the list shows it live)",
              until(lambda: row_state(d, waiting["id"]) == "canceled"))
        check("... and so says the API", wp.request("GET", "/v1/tasks/" + waiting["id"]).json[
            "state"] == "canceled")
        check("the running task shows in its worker's row",
              until(lambda: d.find_element(
                  By.CSS_SELECTOR, '#workers-table a[data-id="%s"]' % busy["id"])))

        # a task's detail
        click(d, 'tr[data-id="%s"]' % tid)
        check("a click opens the task's detail",
              until(lambda: d.find_element(By.ID, "detail").is_displayed() and
                    text(d, "detail-title") == "Task #" + tid), text(d, "detail-title"))
        check("the detail shows the state", d.find_element(By.ID, "detail-state").get_attribute(
            "data-state") == "succeeded")
        inp = json.loads(text(d, "detail-input"))
        res = json.loads(text(d, "detail-result"))
        check("the detail shows input and result", inp == res == {"from": "the form",
                                                                   "n": [1, 2, 3]}, (inp, res))
        facts = text(d, "detail-facts")
        check("the detail shows attempts, priority and times", "1 of 1" in facts and
              "Priority\n2" in facts and "Finished" in facts and "ago" in facts, facts)
        b.screenshot(os.path.join(out, "dashboard-detail.png"))
        d.find_element(By.ID, "detail-close").click()
        check("Close hides it", until(lambda: not d.find_element(By.ID, "detail").is_displayed()))

        # a failed task's detail has its error
        f = wp.request("POST", "/v1/tasks", {"kind": "fail", "input": {"message": "no luck"}}).json
        until(lambda: row_state(d, f["id"]) == "failed")
        click(d, 'tr[data-id="%s"]' % f["id"])
        check("a failed task's detail shows its error code and message",
              until(lambda: "task_failed: no luck" in text(d, "detail-error")))
        # issue 13: Retry runs it again; the detail then shows the error before the retry
        check("a failed task's detail has a Retry button",
              until(lambda: d.find_element(By.ID, "detail-retry").is_displayed()))
        first_end = wp.request("GET", "/v1/tasks/" + f["id"]).json["finished_at"]
        d.find_element(By.ID, "detail-retry").click()

        def ran_again():
            t = wp.request("GET", "/v1/tasks/" + f["id"]).json
            return (t["state"] == "failed" and t["attempts"] == 1 and
                    t["started_at"] is not None and t["started_at"] > first_end)
        check("Retry: the task ran again (a new attempt, started after the first one ended)",
              until(ran_again, 10), wp.request("GET", "/v1/tasks/" + f["id"]).json)
        d.find_element(By.ID, "detail-close").click()

        # the chart has bars; the kinds and workers are listed
        check("the throughput chart draws bars",
              until(lambda: d.execute_script("return document.querySelectorAll('#chart rect').length") > 0))
        kinds = text(d, "kinds-table")
        check("the kinds table lists each kind with its generation",
              "echo" in kinds and "scan" in kinds and "KiB" in kinds, kinds)
        # issue 13: Pause and Resume a kind from its row
        click(d, 'tr[data-kind="sleep"] .pause-button')
        check("Pause: the API lists the kind as paused, and its row says so",
              until(lambda: wp.request("GET", "/v1/stats").json["paused_kinds"] == ["sleep"] and
                    d.find_elements(By.CSS_SELECTOR, 'tr[data-kind="sleep"] .paused-badge')),
              wp.request("GET", "/v1/stats").json["paused_kinds"])
        click(d, 'tr[data-kind="sleep"] .pause-button')
        check("Resume: no kind is paused, and the row's badge is gone",
              until(lambda: wp.request("GET", "/v1/stats").json["paused_kinds"] == [] and
                    not d.find_elements(By.CSS_SELECTOR, 'tr[data-kind="sleep"] .paused-badge')))
        # filters
        Select(d.find_element(By.ID, "filter-state")).select_by_value("failed")
        check("the state filter shows only failed tasks",
              until(lambda: {r.get_attribute("data-state") for r in d.find_elements(
                  By.CSS_SELECTOR, "#tasks-table tbody tr[data-id]")} == {"failed"}))
        Select(d.find_element(By.ID, "filter-state")).select_by_value("")
        until(lambda: len(d.find_elements(By.CSS_SELECTOR, "#tasks-table tbody tr[data-id]")) > 3)

        # every request stayed under the prefix, on the page's own origin
        reqs = page_requests(d)
        origin = "http://127.0.0.1:%d" % px.port
        check("every request of the page went to its own origin, under the prefix",
              reqs and all(r.startswith(origin + "/ops/warmpool/") for r in reqs), reqs)
        check("the proxy saw nothing outside the prefix",
              all(p.startswith("/ops/warmpool/") for p in px.paths), px.paths)
        until(lambda: row_state(d, busy["id"]) == "succeeded", 10)
        time.sleep(1.2)                 # a chart tick
        b.screenshot(os.path.join(out, "dashboard.png"))


def submit_bad_json(d):
    box = d.find_element(By.ID, "submit-input")
    box.clear()
    box.send_keys("{not json")
    d.find_element(By.ID, "submit-button").click()
    return until(lambda: "not JSON" in text(d, "submit-result"), 5)


def with_token(binary, out):
    args = ["--workers", "1", "--api-token", TOKEN]
    with wptest.Warmpool(binary, args) as wp, browser.Browser() as b:
        d = b.driver
        auth = {"Authorization": "Bearer " + TOKEN}
        b.open(wp.url + "/")
        modal = until(lambda: d.find_element(By.ID, "token-modal").is_displayed())
        check("--api-token: the page asks for the token", modal)
        b.screenshot(os.path.join(out, "dashboard-token.png"))
        d.find_element(By.ID, "token-input").send_keys("wrong-token")
        d.find_element(By.ID, "token-submit").click()
        check("a wrong token is refused, and asked again",
              until(lambda: d.find_element(By.ID, "token-modal").is_displayed() and
                    "refused" in text(d, "token-error")), text(d, "token-error"))
        d.find_element(By.ID, "token-input").send_keys(TOKEN)
        d.find_element(By.ID, "token-submit").click()
        check("the right token: counts shown, live",
              until(lambda: count(d, "pending") is not None and "live" in d.find_element(
                  By.ID, "live-status").get_attribute("class")))
        check("it is kept in sessionStorage", d.execute_script(
            "return sessionStorage.getItem('warmpool.token')") == TOKEN)
        tid = submit_form(d, "echo", '{"with": "a token"}')
        check("a task through the form, with the token: it succeeds, live",
              tid and until(lambda: row_state(d, tid) == "succeeded"), tid)
        before = settled(d, wp, auth)
        wp.request("POST", "/v1/tasks", {"kind": "echo", "input": 1}, auth)
        check("counts change live with a token (the stream sends it in a header)",
              until(lambda: count(d, "succeeded") == before + 1))
        # the same cancel and detail as without a token
        wp.request("POST", "/v1/tasks", {"kind": "sleep", "input": {"ms": 3000}}, auth)
        waiting = wp.request("POST", "/v1/tasks", {"kind": "sleep", "input": {"ms": 10}}, auth).json
        cancel_css = 'tr[data-id="%s"] .cancel-button' % waiting["id"]
        until(lambda: d.find_element(By.CSS_SELECTOR, cancel_css))
        click(d, cancel_css)
        check("with a token: Cancel cancels a pending task",
              until(lambda: row_state(d, waiting["id"]) == "canceled"))
        click(d, 'tr[data-id="%s"]' % tid)
        check("with a token: the detail opens, with input and result",
              until(lambda: text(d, "detail-title") == "Task #" + tid and
                    "a token" in text(d, "detail-result")))
        d.find_element(By.ID, "detail-close").click()
        reload_btn = d.find_element(By.ID, "reload-button")
        check("a reload button with a token", reload_btn.is_displayed())
        reload_btn.click()
        check("Reload: the contexts load again (generation 2)",
              until(lambda: all(k["generation"] == 2 for k in wp.request(
                  "GET", "/v1/stats", headers=auth).json["kinds"]), 20))
        d.refresh()
        check("after a reload of the page, the token is not asked again",
              until(lambda: count(d, "pending") is not None) and
              not d.find_element(By.ID, "token-modal").is_displayed())
        check("the kinds table shows generation 2 after the reload",
              until(lambda: " 2" in text(d, "kinds-table")), text(d, "kinds-table"))
        reqs = page_requests(d)
        check("the token is in no URL the page asked for",
              reqs and not any(TOKEN in r for r in reqs), reqs)
        check("nor in the server's log", TOKEN not in wp.log())
        d.find_element(By.ID, "signout-button").click()
        check("Sign out: the token is forgotten and asked for",
              until(lambda: d.find_element(By.ID, "token-modal").is_displayed()) and
              d.execute_script("return sessionStorage.getItem('warmpool.token')") is None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", help="where to leave the screenshots (default: a temporary dir)")
    a = ap.parse_args()
    out = a.out or tempfile.mkdtemp(prefix="warmpool-browser-")
    os.makedirs(out, exist_ok=True)
    for t in (without_token, with_token):
        try:
            t(a.bin, out)
        except Exception as e:  # noqa: BLE001 -- a failure of the test, reported as one
            import traceback
            traceback.print_exc()
            check(t.__name__ + " ran to its end", False, e)
    print("screenshots in " + out)
    print("browser.dashboard: %d passed, %d failed" % (len(PASSED), len(FAILED)))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
