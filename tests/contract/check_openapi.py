#!/usr/bin/python3
"""check_openapi.py -- holds api/openapi.json against the live server.

  /usr/bin/python3 tests/contract/check_openapi.py --bin build/release/warmpool \
      --doc api/openapi.json [--record build/release/it-answers.jsonl]

1. The document itself: OpenAPI 3.1, every $ref resolves, every schema is a valid JSON
   Schema 2020-12 (Debian's python3-jsonschema), operation ids unique, every answer
   declares X-Request-Id.
2. Every documented route answers: each operation is called on a live warmpool (path
   parameters and bodies from the document's examples) and must answer one of its
   documented statuses, never the 404 of an unknown path or a 405. (The other way, every
   route of api/routes.c being documented, is tests/unit/test_routes.c.)
3. Every status the API gives: a scripted session provokes 200, 202, 204 (CORS
   preflight), 400, 401, 404, 405, 409, 413, 422 and 503.
4. Every answer of 2 and 3, and every answer the integration tests recorded (--record,
   written by tests/integration/harness.c), is validated: its status is documented for
   its operation, its required headers are there and match their schemas, and its JSON
   body matches the response's schema.
Exit 0 when all hold; else every violation is printed and the exit code is 1.
"""
import argparse
import collections
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "py"))
import wptest  # noqa: E402

try:
    from jsonschema import Draft202012Validator, RefResolver
except ImportError:
    sys.exit("check_openapi: needs python3-jsonschema (scripts/deps.sh test installs it)")

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
TOKEN = "contract-token"
AUTH = {"Authorization": "Bearer " + TOKEN}
# Statuses the scripted session must provoke (the brief of issue 10, item 4).
MUST_SEE = {200, 202, 204, 400, 401, 404, 405, 409, 413, 422, 503}


class Contract:
    def __init__(self, doc):
        self.doc = doc
        self.resolver = RefResolver("", doc)
        self.errors = collections.OrderedDict()   # message -> count
        self.checked = 0
        self.seen_status = set()
        self.answered_ok = set()                   # (path template, method) answered 2xx
        self.validators = {}

    def fail(self, msg):
        self.errors[msg] = self.errors.get(msg, 0) + 1

    def deref(self, obj):
        while isinstance(obj, dict) and "$ref" in obj:
            obj = self.resolver.resolve(obj["$ref"])[1]
        return obj

    def validator(self, schema):
        key = json.dumps(schema, sort_keys=True)
        if key not in self.validators:
            self.validators[key] = Draft202012Validator(schema, resolver=self.resolver)
        return self.validators[key]

    # ------------------------------------------------------------ the document

    def check_document(self):
        d = self.doc
        if d.get("openapi") != "3.1.0":
            self.fail("document: openapi is %r, want 3.1.0" % d.get("openapi"))
        for key in ("info", "paths", "components"):
            if not isinstance(d.get(key), dict):
                self.fail("document: no %s object" % key)

        def walk(node, where):
            if isinstance(node, dict):
                if "$ref" in node:
                    try:
                        self.resolver.resolve(node["$ref"])
                    except Exception as e:  # noqa: BLE001 -- any failure is the finding
                        self.fail("document: %s: $ref %s does not resolve (%s)"
                                  % (where, node["$ref"], e))
                for k, v in node.items():
                    walk(v, where + "/" + k)
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, "%s/%d" % (where, i))
        walk(d, "#")
        for name, schema in d.get("components", {}).get("schemas", {}).items():
            try:
                Draft202012Validator.check_schema(schema)
            except Exception as e:  # noqa: BLE001
                self.fail("document: schema %s is not JSON Schema 2020-12: %s" % (name, e))
        ids = collections.Counter()
        for path, item in d.get("paths", {}).items():
            holes = set(re.findall(r"{([^}]+)}", path))
            for method, op in item.items():
                if method not in HTTP_METHODS:
                    continue
                where = "%s %s" % (method.upper(), path)
                ids[op.get("operationId")] += 1
                params = {self.deref(p)["name"] for p in op.get("parameters", [])
                          if self.deref(p).get("in") == "path"}
                if params != holes:
                    self.fail("document: %s: path parameters %s, template has %s"
                              % (where, sorted(params), sorted(holes)))
                if not op.get("responses"):
                    self.fail("document: %s has no responses" % where)
                for status, resp in op.get("responses", {}).items():
                    resp = self.deref(resp)
                    if not resp.get("description"):
                        self.fail("document: %s %s has no description" % (where, status))
                    if "X-Request-Id" not in resp.get("headers", {}):
                        self.fail("document: %s %s does not declare X-Request-Id"
                                  % (where, status))
                    for media in resp.get("content", {}).values():
                        if "schema" in media:
                            try:
                                Draft202012Validator.check_schema(media["schema"])
                            except Exception as e:  # noqa: BLE001
                                self.fail("document: %s %s: bad schema: %s" % (where, status, e))
        for opid, n in ids.items():
            if opid is None or n > 1:
                self.fail("document: operationId %r used %d times" % (opid, n))

    # ------------------------------------------------------------ one answer

    def operation_of(self, path):
        """(template, path item) for a request path, exact templates first; or None."""
        bare = path.split("?", 1)[0]
        paths = self.doc["paths"]
        if bare in paths:
            return bare, paths[bare]
        for tmpl, item in paths.items():
            rx = "^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(tmpl)) + "$"
            if re.match(rx, bare):
                return tmpl, item
        return None

    def check_headers(self, what, resp_obj, headers):
        for name, h in resp_obj.get("headers", {}).items():
            h = self.deref(h)
            value = headers.get(name.lower())
            if value is None:
                if h.get("required"):
                    self.fail("%s: no %s header" % (what, name))
                continue
            errs = list(self.validator(h.get("schema", {})).iter_errors(value))
            if errs:
                self.fail("%s: header %s %r: %s" % (what, name, value, errs[0].message))

    def check_body(self, what, resp_obj, method, status, headers, body):
        content = resp_obj.get("content")
        if not content:
            if body:
                self.fail("%s: a body where the document has none: %.200r" % (what, body))
            return
        ctype = (headers.get("content-type") or "").split(";")[0].strip()
        if ctype not in content:
            self.fail("%s: Content-Type %r, the document has %s" % (what, ctype, sorted(content)))
            return
        if method == "HEAD" or ctype != "application/json":
            return                          # no body, or one this checker does not parse
        try:
            value = json.loads(body)
        except ValueError as e:
            self.fail("%s: body is not JSON (%s): %.200r" % (what, e, body))
            return
        schema = content[ctype].get("schema", {})
        for err in sorted(self.validator(schema).iter_errors(value), key=lambda e: e.path)[:3]:
            self.fail("%s: body does not match the schema at /%s: %s"
                      % (what, "/".join(str(p) for p in err.absolute_path), err.message[:300]))

    def check_answer(self, method, path, status, headers, body, source):
        """Validates one answer; headers have lower-case names; body is bytes or str."""
        self.checked += 1
        self.seen_status.add(status)
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        found = self.operation_of(path)
        shape = re.sub(r"\d+", "N", path.split("?", 1)[0])
        comps = self.doc["components"]["responses"]
        if headers.get("x-request-id") is None:
            self.fail("%s %s %s -> %d: no X-Request-Id" % (source, method, shape, status))
        if found is None:
            # an unknown path: 404 (or 401 first under /v1/ without the token, or 413)
            generic = {404: "NotFound", 401: "Unauthorized", 413: "PayloadTooLarge"}
            what = "%s %s %s (no such path) -> %d" % (source, method, shape, status)
            if status not in generic:
                self.fail("%s: an unknown path answers 404, 401 or 413" % what)
                return
            resp_obj = comps[generic[status]]
            self.check_headers(what, resp_obj, headers)
            self.check_body(what, resp_obj, method, status, headers, body)
            return
        tmpl, item = found
        op = item.get(method.lower())
        what = "%s %s %s -> %d" % (source, method, tmpl, status)
        if op is None:
            # a documented path, an undocumented method: 405, a CORS preflight (204), or
            # what any path may answer first (401, 413)
            if method == "OPTIONS" and status == 204:
                allow = headers.get("allow", "")
                want = sorted(m.upper() for m in item if m in HTTP_METHODS)
                got = sorted(m.strip() for m in allow.split(",") if m.strip() != "OPTIONS")
                if got != want:
                    self.fail("%s: Allow %r, the document has %s" % (what, allow, want))
                if body:
                    self.fail("%s: a 204 with a body" % what)
                return
            generic = {405: "MethodNotAllowed", 401: "Unauthorized", 413: "PayloadTooLarge"}
            if status not in generic:
                self.fail("%s: %s is not documented for %s, and the answer is not 405"
                          % (what, method, tmpl))
                return
            resp_obj = comps[generic[status]]
            if status == 405:
                want = sorted(m.upper() for m in item if m in HTTP_METHODS)
                got = sorted(m.strip() for m in headers.get("allow", "").split(","))
                if got != want:
                    self.fail("%s: Allow %r, the document has %s" % (what, headers.get("allow"), want))
            self.check_headers(what, resp_obj, headers)
            self.check_body(what, resp_obj, method, status, headers, body)
            return
        resp_obj = op["responses"].get(str(status)) or op["responses"].get("default")
        if resp_obj is None:
            self.fail("%s: status %d is not documented for %s %s (it has %s)"
                      % (what, status, method, tmpl, sorted(op["responses"])))
            return
        resp_obj = self.deref(resp_obj)
        self.check_headers(what, resp_obj, headers)
        self.check_body(what, resp_obj, method, status, headers, body)
        if 200 <= status < 300:
            self.answered_ok.add((tmpl, method.lower()))

    def check(self, answer, source="live"):
        self.check_answer(answer.method, answer.path, answer.status, answer.headers,
                          answer.body, source)
        return answer


# ---------------------------------------------------------------- the live session

def example_of(doc, resolver, obj):
    """An example value for a parameter or media object, from the document."""
    obj = resolver(obj)
    if "example" in obj:
        return obj["example"]
    if obj.get("examples"):
        ex = obj["examples"]
        return ex[0] if isinstance(ex, list) else resolver(next(iter(ex.values()))).get("value")
    schema = resolver(obj.get("schema", {}))
    if "example" in schema:
        return schema["example"]
    if schema.get("examples"):
        return schema["examples"][0]
    return None


def probe_every_operation(c, wp, task_id):
    """Calls every documented operation once, as a client reading the document would,
    with the token: it must answer (a documented status, not an unknown-path 404 or a
    405). Path parameters named id get a real task's id."""
    for tmpl, item in c.doc["paths"].items():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            path = tmpl
            for p in op.get("parameters", []):
                p = c.deref(p)
                if p.get("in") == "path":
                    value = task_id if p["name"] == "id" else example_of(c.doc, c.deref, p)
                    path = path.replace("{%s}" % p["name"], str(value))
            body = None
            rb = op.get("requestBody")
            if rb:
                media = c.deref(rb).get("content", {}).get("application/json", {})
                body = example_of(c.doc, c.deref, media)
                if body is None:
                    body = example_of(c.doc, c.deref, c.deref(media.get("schema", {})))
                if body is None:
                    c.fail("document: %s %s: no example body to call it with"
                           % (method.upper(), tmpl))
                    continue
            # a stream (text/event-stream) is never read to its end: its status and
            # headers are what is checked
            ok = c.deref(op.get("responses", {}).get("200", {}))
            stream = "text/event-stream" in ok.get("content", {})
            a = wp.request(method.upper(), path, body, AUTH, timeout=10,
                           read_body=not stream)
            c.check(a, "probe")
            if a.status == 405 or (a.status == 404 and a.json and
                                   "no such path" in a.json.get("error", {}).get("message", "")):
                c.fail("probe %s %s: the server does not have this documented route (%d)"
                       % (method.upper(), tmpl, a.status))


def scripted_session(c, binary):
    """Provokes every status of MUST_SEE on real servers, validating each answer."""
    args = ["--workers", "1", "--enable-test-kinds", "--max-body", "4096",
            "--api-token", TOKEN, "--max-pending", "3", "--cors-origin", "http://page.test",
            "--grace-ms", "2000"]
    with wptest.Warmpool(binary, args) as wp:
        def call(method, path, body=None, headers=None, want=None, **kw):
            h = dict(AUTH)
            h.update(headers or {})
            a = c.check(wp.request(method, path, body, h, **kw))
            if want is not None and a.status != want:
                c.fail("session: %s %s: want %d, got %d: %.300r"
                       % (method, path, want, a.status, a.body))
            return a

        call("GET", "/healthz", want=200)
        call("GET", "/readyz", want=200)
        call("GET", "/openapi.json", want=200)
        t = call("POST", "/v1/tasks", {"kind": "echo", "input": {"a": 1}}, want=202).json
        tid = t["id"] if t else "1"
        call("GET", "/v1/tasks/%s?wait=5" % tid, want=200)
        call("POST", "/v1/tasks?wait=5", {"kind": "echo", "input": [1, 2]}, want=200)
        ft = call("POST", "/v1/tasks?wait=5", {"kind": "fail", "input": {"message": "x"}},
                  want=200).json
        # issue 13: retry from the dead (a failed task), and not from success
        call("POST", "/v1/tasks/%s/retry" % (ft["id"] if ft else "1"), want=200)
        call("POST", "/v1/tasks/%s/retry" % tid, want=409)
        call("POST", "/v1/kinds/no-such-kind/pause", want=404)
        call("POST", "/v1/kinds/sleep/pause", want=200)
        call("POST", "/v1/kinds/sleep/resume", want=200)
        key = {"Idempotency-Key": "contract-1"}
        call("POST", "/v1/tasks", {"kind": "echo", "input": 3}, key, want=202)
        call("POST", "/v1/tasks", {"kind": "echo", "input": 3}, key, want=200)
        call("POST", "/v1/tasks", {"kind": "echo", "input": 4}, key, want=409)
        call("POST", "/v1/tasks", "{not json", want=400)
        call("POST", "/v1/tasks?wait=99", {"kind": "echo"}, want=400)
        call("POST", "/v1/tasks", {"kind": "echo"}, {"Idempotency-Key": "k" * 201}, want=400)
        call("GET", "/v1/tasks?limit=0", want=400)
        call("GET", "/v1/tasks/%s?wait=x" % tid, want=400)
        call("GET", "/v1/stats", headers={"Authorization": "Bearer wrong"}, want=401)
        call("GET", "/v1/tasks/999999", want=404)
        call("GET", "/v1/tasks/abc", want=404)
        call("GET", "/no/such/path", want=404)
        call("PUT", "/v1/tasks", want=405)
        call("DELETE", "/v1/tasks/%s" % tid, want=409)
        call("POST", "/v1/tasks", {"kind": "echo", "input": "x" * 5000}, want=413)
        call("POST", "/v1/tasks", {"kind": "nope"}, want=422)
        call("POST", "/v1/tasks", {"kind": "sleep", "input": {"ms": -1}}, want=422)
        call("POST", "/v1/tasks/batch", {"tasks": [{"kind": "echo"}, {"kind": "echo", "x": 1}]},
             want=422)
        call("POST", "/v1/tasks/batch", "[]", want=400)
        call("POST", "/v1/tasks/batch", {"tasks": [{"kind": "echo", "input": i} for i in range(2)]},
             want=202)
        call("GET", "/v1/tasks?limit=2", want=200)
        call("GET", "/v1/tasks?state=succeeded&kind=echo", want=200)
        call("GET", "/v1/stats", want=200)
        call("GET", "/metrics", headers={"Authorization": ""}, want=200)   # open
        call("GET", "/", headers={"Authorization": ""}, want=200)          # open
        call("GET", "/v1/events", headers={"Authorization": ""}, want=401)
        call("GET", "/v1/events?state=sideways", want=400)
        call("GET", "/v1/events?kind=Bad!", want=400)
        call("GET", "/v1/events", headers={"Last-Event-ID": "x"}, want=400)
        call("GET", "/v1/events?state=succeeded,failed&kind=echo", want=200, read_body=False)
        call("POST", "/v1/admin/reload", want=202)
        call("OPTIONS", "/v1/tasks", headers={"Origin": "http://page.test",
                                              "Access-Control-Request-Method": "POST"}, want=204)
        call("GET", "/v1/stats", headers={"Origin": "http://page.test"}, want=200)
        # the queue: one sleep runs, three wait (--max-pending 3), the next is refused;
        # one of the waiting is canceled
        call("POST", "/v1/tasks", {"kind": "sleep", "input": {"ms": 1500}}, want=202)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = call("GET", "/v1/stats").json or {}
            if st.get("tasks", {}).get("pending") == 0 and st.get("tasks", {}).get("running") == 1:
                break
            time.sleep(0.02)
        p1 = call("POST", "/v1/tasks", {"kind": "echo", "input": 1}, want=202).json
        call("POST", "/v1/tasks", {"kind": "echo", "input": 2}, want=202)
        call("POST", "/v1/tasks", {"kind": "echo", "input": 3}, want=202)
        call("POST", "/v1/tasks", {"kind": "echo", "input": 4}, want=503)
        call("POST", "/v1/tasks/batch", {"tasks": [{"kind": "echo"}]}, want=503)
        call("DELETE", "/v1/tasks/%s" % (p1["id"] if p1 else "0"), want=200)
        probe_every_operation(c, wp, tid)
    # without a token, the reload route is hidden (404)
    with wptest.Warmpool(binary, ["--workers", "1"]) as wp:
        c.check(wp.request("POST", "/v1/admin/reload"))
        c.check(wp.request("GET", "/v1/stats"))
    # /metrics with a token of its own; one event stream at most
    with wptest.Warmpool(binary, ["--workers", "1", "--metrics-token", "m-token",
                                  "--max-event-streams", "1"]) as wp:
        for headers, want in (({}, 401), ({"Authorization": "Bearer " + TOKEN}, 401),
                              ({"Authorization": "Bearer m-token"}, 200)):
            a = c.check(wp.request("GET", "/metrics", headers=headers))
            if a.status != want:
                c.fail("session: GET /metrics %s: want %d, got %d" % (headers, want, a.status))
        import http.client
        held = http.client.HTTPConnection("127.0.0.1", wp.port, timeout=10)
        held.request("GET", "/v1/events")
        first = held.getresponse()          # the one stream: kept open
        a = c.check(wp.request("GET", "/v1/events"))
        if first.status != 200 or a.status != 503 or (a.json or {}).get(
                "error", {}).get("code") != "too_many_streams":
            c.fail("session: a second stream past --max-event-streams 1: want 503 "
                   "too_many_streams, got %d then %d %.200r" % (first.status, a.status, a.body))
        held.close()


def check_record(c, path):
    """Validates what the integration tests recorded; returns how many answers."""
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                c.fail("record: a line is not JSON: %.100r" % line)
                continue
            if "body" not in rec:
                continue                    # too big, or not UTF-8: not kept
            c.check_answer(rec["method"], rec["path"], rec["status"], rec["headers"],
                           rec["body"], "integration")
            n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--doc", required=True)
    ap.add_argument("--record", help="answers recorded by the integration tests (JSON lines)")
    ap.add_argument("--require-record", action="store_true",
                    help="fail when the record is missing or empty")
    a = ap.parse_args()
    with open(a.doc, encoding="utf-8") as f:
        c = Contract(json.load(f))
    t0 = time.monotonic()
    c.check_document()
    scripted_session(c, a.bin)
    live = c.checked
    missing = sorted(MUST_SEE - c.seen_status)
    if missing:
        c.fail("session: statuses never provoked: %s" % missing)
    for tmpl, item in c.doc["paths"].items():
        for method in item:
            if method in HTTP_METHODS and (tmpl, method) not in c.answered_ok:
                c.fail("%s %s is documented but never answered with a 2xx status"
                       % (method.upper(), tmpl))
    recorded = 0
    if a.record and os.path.exists(a.record):
        recorded = check_record(c, a.record)
    if (a.require_record or os.environ.get("WARMPOOL_CONTRACT_REQUIRE_RECORD") == "1") \
            and recorded == 0:
        c.fail("record %s: no answers (run the integration tests first)" % a.record)
    print("check_openapi: %d answers validated (%d live, %d recorded by the integration "
          "tests), statuses seen %s, in %.1f s"
          % (c.checked, live, recorded, sorted(c.seen_status), time.monotonic() - t0))
    for msg, count in c.errors.items():
        print("FAIL %s%s" % (msg, " (x%d)" % count if count > 1 else ""))
    return 1 if c.errors else 0


if __name__ == "__main__":
    sys.exit(main())
