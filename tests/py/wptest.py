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
        # in a sanitizer build, a report kills the process it is in; the service may
        # well go on (a worker or the HTTP process is replaced): the log tells
        log = self.log()
        for mark in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if mark in log and exc[0] is None:
                at = log.index(mark)
                raise RuntimeError("a sanitizer report in the server's log (%s):\n%s"
                                   % (self.log_path, log[max(0, at - 200):at + 3000]))
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


class EventStream:
    """GET /v1/events (server-sent events) held open, on a plain socket:

        with EventStream(wp.port, "?kind=echo") as es:
            ev = es.next(5)   # {"id": "...", "event": "task", "data": {...}} or None

    next() returns the next event, None at the end of the stream, and raises
    TimeoutError when none comes within its timeout (the stream stays usable).
    Comment lines (heartbeats) are collected in .comments, the retry field in .retry.
    A non-200 answer has .status, .headers and .body (its JSON in .json)."""

    def __init__(self, port, query="", headers=None, timeout=10, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        lines = ["GET /v1/events%s HTTP/1.1" % query, "Host: 127.0.0.1:%d" % port]
        lines += ["%s: %s" % kv for kv in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.raw = b""                  # received, not yet decoded
        self.text = b""                 # the decoded body, not yet parsed into events
        self.ended = False
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.raw:
            if not self._fill(deadline):
                raise ConnectionError("no answer: %r" % self.raw)
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        first, *rest = head.decode("latin-1").split("\r\n")
        self.status = int(first.split()[1])
        self.headers = {}
        for line in rest:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self.comments, self.retry, self.body, self.json = [], None, b"", None
        if self.status != 200:
            n = int(self.headers.get("content-length", "0"))
            while len(self.raw) < n and self._fill(deadline):
                pass
            self.body = self.raw[:n]
            try:
                self.json = json.loads(self.body)
            except ValueError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _fill(self, deadline):
        """Reads what arrives before deadline into self.raw: False at end of file."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("nothing within the time")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("nothing within the time") from None
        except ConnectionError:
            chunk = b""
        self.raw += chunk
        return bool(chunk)

    def _decode(self):
        """Moves whole chunks (or everything, without chunking) from raw to text."""
        if not self.chunked:
            self.text, self.raw = self.text + self.raw, b""
            return
        while b"\r\n" in self.raw:
            size_line, rest = self.raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if len(rest) < size + 2:
                return
            if size == 0:
                self.ended = True
                self.raw = b""
                return
            self.text += rest[:size]
            self.raw = rest[size + 2:]

    def next(self, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            self._decode()
            while b"\n\n" in self.text:
                block, self.text = self.text.split(b"\n\n", 1)
                ev = {}
                for line in block.decode("utf-8").split("\n"):
                    if line.startswith(":"):
                        self.comments.append(line[1:].strip())
                        continue
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "data":
                        ev["data"] = json.loads(value)
                    elif field in ("id", "event"):
                        ev[field] = value
                    elif field == "retry":
                        self.retry = int(value)
                if ev:
                    return ev
            if self.ended or not self._fill(deadline):
                return None

    def close(self):
        self.sock.close()
