"""wptest -- what the Python tests share: start the real warmpool binary on a free
loopback port with a fresh temporary database, talk HTTP to it, stop it.

Standard library only (Debian's python3), so /usr/bin/python3 runs every test here.
Every wait is bounded. Used by tests/contract (the OpenAPI contract) and tests/browser
(pages in headless Chromium).
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Answer:
    """One HTTP answer: status, headers (lower-case names), body bytes, and json."""

    def __init__(self, method, path, status, headers, body):
        self.method, self.path, self.status = method, path, status
        self.headers, self.body = headers, body
        self.json = None
        if body:
            try:
                self.json = json.loads(body)
            except ValueError:
                pass

    def header(self, name):
        return self.headers.get(name.lower())

    def __repr__(self):
        return "%s %s -> %d %s" % (self.method, self.path, self.status, self.body[:300])


def request(port, method, path, body=None, headers=None, timeout=30, read_body=True):
    """Sends one request to 127.0.0.1:port; returns an Answer. body: bytes, str or a
    JSON-able object. read_body False: only the status line and headers (streams)."""
    h = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        h.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        data = resp.read() if read_body else b""
        return Answer(method, path, resp.status, hdrs, data)
    finally:
        conn.close()


class Warmpool:
    """The real binary, as a context manager:

        with Warmpool(binary, ["--workers", "1"]) as wp:
            wp.request("GET", "/healthz")
    """

    def __init__(self, binary, args=(), env=None, ready_timeout=20):
        self.binary, self.args = binary, list(args)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("WARMPOOL_")}
        self.env.update(env or {})
        self.ready_timeout = ready_timeout
        self.dir = tempfile.mkdtemp(prefix="warmpool-py-")
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.log_path = os.path.join(self.dir, "server.log")
        self.proc = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        if exc[0] is None and not os.environ.get("WARMPOOL_IT_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        return False

    def start(self):
        argv = [self.binary, "--listen", "127.0.0.1:%d" % self.port,
                "--db", os.path.join(self.dir, "warmpool.db")] + self.args
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     env=self.env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("warmpool exited with %d at start:\n%s"
                                   % (self.proc.returncode, self.log()))
            try:
                if (self.request("GET", "/healthz", timeout=2).status == 200 and
                        self.request("GET", "/readyz", timeout=2).status == 200):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("warmpool not ready in %ss:\n%s" % (self.ready_timeout, self.log()))

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL to the whole group after timeout seconds; returns the
        exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        return self.proc.returncode

    def request(self, method, path, body=None, headers=None, timeout=30, read_body=True):
        return request(self.port, method, path, body, headers, timeout, read_body)

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""
