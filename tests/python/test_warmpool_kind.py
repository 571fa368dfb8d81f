"""test_warmpool_kind.py -- the Python exec-kind helper (sdk/python/warmpool_kind.py),
driven for real: each test writes a small kind, starts it as a zygote with a socketpair
as its control channel, and plays warmpool's side of the protocol (docs/exec-kinds.md)
in Python: hello, ready, spawn with SCM_RIGHTS, tasks, signals, EOF.

    /usr/bin/python3 -m unittest discover -s tests/python -v      (scripts/test.sh runs it)
"""
import array
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SDK = os.path.join(ROOT, "sdk", "python")
sys.path.insert(0, SDK)
import warmpool_kind  # noqa: E402  (the unit under test, for its pure helpers)

WAIT = 10.0     # upper bound of every wait; a test that needs it has failed


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:                                    # a zombie is dead too
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):   # gone, or being reaped now
        return False


def wait_gone(pid, timeout=WAIT):
    end = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < end:
        time.sleep(0.01)
    return not alive(pid)


class Peer:
    """warmpool's end of one channel."""

    def __init__(self, sock):
        self.sock = sock
        self.sock.settimeout(WAIT)

    def send_raw(self, data, fds=()):
        if fds:
            socket.send_fds(self.sock, [data], list(fds))
        else:
            self.sock.sendall(data)

    def send(self, msg, fds=()):
        body = json.dumps(msg).encode()
        self.send_raw(struct.pack(">I", len(body)) + body, fds)

    def recv(self):
        head = self._exact(4)
        if head is None:
            return None
        (n,) = struct.unpack(">I", head)
        body = self._exact(n)
        assert body is not None, "EOF inside a frame"
        assert b"\n" not in body, "frames are compact JSON"
        return json.loads(body)

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                return None if not buf else buf
            buf += chunk
        return buf

    def close(self):
        self.sock.close()


class Zygote:
    """A kind (its source code) started as a zygote, as warmpool would start it."""

    def __init__(self, source, tmp):
        path = os.path.join(tmp, "kind.py")
        with open(path, "w") as f:
            f.write("import warmpool_kind, gc, os, sys, time, signal\n")
            f.write(textwrap.dedent(source))
        ours, theirs = socket.socketpair()
        self.stderr_path = os.path.join(tmp, "stderr.txt")
        env = dict(os.environ, WARMPOOL_EXEC_FD=str(theirs.fileno()),
                   WARMPOOL_EXEC_PROTOCOL="1", WARMPOOL_KIND="test", PYTHONPATH=SDK,
                   PYTHONDONTWRITEBYTECODE="1")
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen([sys.executable, path], pass_fds=[theirs.fileno()],
                                         env=env, stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err)
        theirs.close()
        self.ctl = Peer(ours)
        self.children = []

    def hello(self, config=None, protocol=1, max_frame=16 << 20):
        self.ctl.send({"type": "hello", "protocol": protocol, "kind": "test",
                       "config": config, "max_frame_bytes": max_frame})
        return self.ctl.recv()

    def ready(self, **kw):
        msg = self.hello(**kw)
        assert msg is not None and msg["type"] == "ready", msg
        return msg

    def spawn(self):
        ours, theirs = socket.socketpair()
        self.ctl.send({"type": "spawn"}, fds=[theirs.fileno()])
        theirs.close()
        msg = self.ctl.recv()
        assert msg["type"] == "spawned", msg
        child = Peer(ours)
        child.pid = msg["pid"]
        self.children.append(child)
        return child

    def stderr(self):
        with open(self.stderr_path) as f:
            return f.read()

    def wait(self):
        return self.proc.wait(WAIT)

    def stop(self):
        for c in self.children:
            c.close()
        self.ctl.close()
        try:
            self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for c in self.children:
            if alive(c.pid):
                os.kill(c.pid, signal.SIGKILL)


def task(child, tid, input, attempt=1, timeout_ms=5000):
    child.send({"type": "task", "id": tid, "attempt": attempt, "timeout_ms": timeout_ms,
                "deadline_ms": int(time.time() * 1000) + timeout_ms, "input": input})
    return child.recv()


ECHO = """
def load(config):
    return {"config": config}
def run(input, ctx):
    return input
warmpool_kind.serve(load=load, run=run)
"""


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.zygotes = []

    def tearDown(self):
        for z in self.zygotes:
            z.stop()
        self.tmp.cleanup()

    def start(self, source=ECHO):
        z = Zygote(source, self.tmp.name)
        self.zygotes.append(z)
        return z


class Handshake(Base):
    def test_ready_reports_the_context(self):
        z = self.start("""
            def load(config):
                time.sleep(0.05)
                return bytes(int(config))
            warmpool_kind.serve(load=load, run=lambda i, c: len(c))
        """)
        msg = z.ready(config="123456")
        self.assertEqual(set(msg), {"type", "protocol", "context_bytes", "load_ms", "validate"})
        self.assertEqual(msg["protocol"], 1)
        self.assertEqual(msg["context_bytes"], 123456)
        self.assertGreaterEqual(msg["load_ms"], 50)
        self.assertIs(msg["validate"], False)
        self.assertEqual(task(z.spawn(), 1, None)["result"], 123456)

    def test_context_size_of_containers_and_by_hand(self):
        z = self.start("""
            warmpool_kind.serve(load=lambda c: {"a" * 1000: ["b" * 2000]},
                                run=lambda i, c: None)
        """)
        self.assertGreater(z.ready()["context_bytes"], 3000)
        z2 = self.start("""
            warmpool_kind.serve(load=lambda c: object(), run=lambda i, c: None,
                                size=lambda c: 777, validate=lambda i, c: None)
        """)
        msg = z2.ready()
        self.assertEqual(msg["context_bytes"], 777)
        self.assertIs(msg["validate"], True)

    def test_config_reaches_load(self):
        z = self.start()
        z.ready(config="a=1;b=\n2")
        self.assertEqual(task(z.spawn(), 1, "x")["result"], "x")

    def test_protocol_mismatch_is_refused(self):
        z = self.start()
        msg = z.hello(protocol=2)
        self.assertEqual(msg["type"], "load_failed")
        self.assertIn("warmpool speaks protocol 2; this helper speaks 1", msg["message"])
        self.assertEqual(z.wait(), 2)

    def test_load_failure_is_reported(self):
        z = self.start("""
            def load(config):
                raise RuntimeError("no data at " + config)
            warmpool_kind.serve(load=load, run=lambda i, c: None)
        """)
        msg = z.hello(config="/nowhere")
        self.assertEqual(msg, {"type": "load_failed",
                               "message": "RuntimeError: no data at /nowhere"})
        self.assertEqual(z.wait(), 1)
        self.assertIn("Traceback", z.stderr())

    def test_without_the_channel_it_says_why(self):
        env = dict(os.environ, PYTHONPATH=SDK)
        env.pop("WARMPOOL_EXEC_FD", None)
        p = subprocess.run([sys.executable, "-c", "import warmpool_kind; "
                            "warmpool_kind.serve(load=None, run=None)"], env=env,
                           capture_output=True, text=True, timeout=WAIT)
        self.assertEqual(p.returncode, 1)
        self.assertIn("WARMPOOL_EXEC_FD is not set", p.stderr)

    def test_bad_hello_is_a_protocol_error(self):
        z = self.start()
        z.ctl.send({"type": "hello", "protocol": 1, "kind": "test", "config": None,
                    "max_frame_bytes": 65536, "extra": 1})
        self.assertIsNone(z.ctl.recv())
        self.assertEqual(z.wait(), 1)
        self.assertIn("unknown field 'extra'", z.stderr())

    def test_eof_before_hello_exits_quietly(self):
        z = self.start()
        z.ctl.close()
        self.assertEqual(z.wait(), 0)


class Tasks(Base):
    def test_results_round_trip(self):
        z = self.start()
        z.ready()
        c = z.spawn()
        for i, value in enumerate([None, 0, -(1 << 63), "line 1\nline 2\r\n\ttab",
                                   "\u00e9\u4e2d\U0001f600 \u0000 nul", [1, [2, {"a": {}}]],
                                   {"big": "x" * 300000}]):
            reply = task(c, i + 1, value)
            self.assertEqual(reply, {"type": "result", "id": i + 1, "result": value})

    def test_exception_becomes_an_error(self):
        z = self.start("""
            def run(input, ctx):
                if input == "zero":
                    return 1 / 0
                raise ValueError("bad value %r" % input)
            warmpool_kind.serve(load=lambda c: None, run=run)
        """)
        z.ready()
        c = z.spawn()
        self.assertEqual(task(c, 7, 3), {"type": "error", "id": 7, "code": "value_error",
                                         "message": "ValueError: bad value 3",
                                         "retryable": False})
        self.assertEqual(task(c, 8, "zero")["code"], "zero_division_error")
        self.assertIn("Traceback", z.stderr())

    def test_retry_and_task_error(self):
        z = self.start("""
            def run(input, ctx):
                if input == "retry":
                    raise warmpool_kind.Retry("busy upstream")
                if input == "bad":
                    raise warmpool_kind.TaskError("no such key", code="bad_input")
                if input == "badcode":
                    raise warmpool_kind.TaskError("x", code="Bad Code")
                raise warmpool_kind.TaskError("flaky", code="flaky", retryable=True)
            warmpool_kind.serve(load=lambda c: None, run=run)
        """)
        z.ready()
        c = z.spawn()
        r = task(c, 1, "retry")
        self.assertEqual((r["code"], r["message"], r["retryable"]),
                         ("retry", "busy upstream", True))
        r = task(c, 2, "bad")
        self.assertEqual((r["code"], r["message"], r["retryable"]),
                         ("bad_input", "no such key", False))
        r = task(c, 3, "badcode")
        self.assertEqual(r["code"], "value_error")
        self.assertIn("must match", r["message"])
        r = task(c, 4, "other")
        self.assertEqual((r["code"], r["retryable"]), ("flaky", True))

    def test_results_warmpool_cannot_hold(self):
        z = self.start("""
            def run(input, ctx):
                return {"nan": float("nan"), "obj": object(), "huge": [1, {"x": 1 << 64}],
                        "neg": -(1 << 63) - 1, "str": "1" * 40, "big": "x" * 70000,
                        "surrogate": "\\udc80"}[input]
            warmpool_kind.serve(load=lambda c: None, run=run)
        """)
        z.ready(max_frame=65536)
        c = z.spawn()
        for what, code in [("nan", "invalid_result"), ("obj", "invalid_result"),
                           ("huge", "invalid_result"), ("neg", "invalid_result"),
                           ("big", "result_too_large"), ("surrogate", "invalid_result")]:
            r = task(c, 1, what)
            self.assertEqual((r["type"], r["code"], r["retryable"]), ("error", code, False),
                             what)
        self.assertEqual(task(c, 2, "str")["result"], "1" * 40)   # digits in a string: fine

    def test_long_messages_are_cut_at_a_character(self):
        z = self.start("""
            def run(input, ctx):
                raise warmpool_kind.TaskError("\\u00e9" * 2000 + "\\u0000")
            warmpool_kind.serve(load=lambda c: None, run=run)
        """)
        z.ready()
        r = task(z.spawn(), 1, None)
        self.assertEqual(r["message"], "\u00e9" * 511)      # 1022 bytes: the next is cut

    def test_current_task(self):
        z = self.start("""
            def run(input, ctx):
                return warmpool_kind.current_task()._asdict()
            warmpool_kind.serve(load=lambda c: None, run=run)
        """)
        z.ready()
        r = task(z.spawn(), 42, None, attempt=3, timeout_ms=1234)
        self.assertEqual(r["result"]["id"], 42)
        self.assertEqual(r["result"]["attempt"], 3)
        self.assertEqual(r["result"]["timeout_ms"], 1234)
        self.assertAlmostEqual(r["result"]["deadline_ms"], time.time() * 1000 + 1234,
                               delta=5000)
        self.assertIsNone(warmpool_kind.current_task())

    def test_validate(self):
        z = self.start("""
            def validate(input, ctx):
                if input == "raise":
                    raise KeyError("field 'x' is missing")
                if input == "false":
                    return False
                return None if input in ("ok", None) else "not ok: %r" % input
            warmpool_kind.serve(load=lambda c: None, run=lambda i, c: None, validate=validate)
        """)
        self.assertTrue(z.ready()["validate"])
        c = z.spawn()
        for input, want in [("ok", {"type": "valid"}), (None, {"type": "valid"}),
                            ("x", {"type": "invalid", "message": "not ok: 'x'"}),
                            ("raise", {"type": "invalid", "message": "\"field 'x' is missing\""}),
                            ("false", {"type": "invalid", "message": "the input was refused"})]:
            c.send({"type": "validate", "input": input})
            self.assertEqual(c.recv(), want, input)
        z2 = self.start()
        z2.ready()
        c2 = z2.spawn()
        c2.send({"type": "validate", "input": 1})
        self.assertEqual(c2.recv(), {"type": "valid"})

    def test_children_are_separate_processes(self):
        z = self.start("""
            def run(input, ctx):
                ctx.append(os.getpid())
                return ctx
            warmpool_kind.serve(load=lambda c: [], run=run)
        """)
        z.ready()
        a, b = z.spawn(), z.spawn()
        self.assertNotEqual(a.pid, b.pid)
        self.assertEqual(task(a, 1, None)["result"], [a.pid])
        self.assertEqual(task(a, 2, None)["result"], [a.pid, a.pid])
        self.assertEqual(task(b, 3, None)["result"], [b.pid])  # a's writes stayed in a

    def test_gc_frozen_in_zygote_enabled_in_child(self):
        z = self.start("""
            import gc
            def run(input, ctx):
                return {"frozen": gc.get_freeze_count(), "enabled": gc.isenabled()}
            warmpool_kind.serve(load=lambda c: [[i] for i in range(1000)], run=run)
        """)
        z.ready()
        r = task(z.spawn(), 1, None)["result"]
        self.assertGreater(r["frozen"], 1000)
        self.assertTrue(r["enabled"])

    def test_a_buffer_context_stays_shared(self):
        z = self.start("""
            import hashlib
            def run(input, ctx):
                hashlib.sha256(memoryview(ctx)).hexdigest()     # read every page
                with open("/proc/self/smaps_rollup") as f:
                    return {l.split(":")[0]: int(l.split()[1]) for l in f if "kB" in l}
            warmpool_kind.serve(load=lambda c: os.urandom(32 << 20), run=run)
        """)
        z.ready()
        kb = task(z.spawn(), 1, None)["result"]
        self.assertGreater(kb["Rss"], 32 << 10)          # the child maps all of it ...
        self.assertLess(kb["Private_Dirty"], 12 << 10)   # ... and copied none of it


class Lifecycle(Base):
    def test_child_exits_at_eof(self):
        z = self.start()
        z.ready()
        c = z.spawn()
        self.assertTrue(alive(c.pid))
        c.close()
        self.assertTrue(wait_gone(c.pid))

    def test_zygote_exits_at_eof_and_children_follow(self):
        z = self.start()
        z.ready()
        c = z.spawn()
        z.ctl.close()
        self.assertEqual(z.wait(), 0)
        self.assertTrue(wait_gone(c.pid))

    def test_children_die_with_a_killed_zygote(self):
        z = self.start()
        z.ready()
        c = z.spawn()
        z.proc.kill()
        z.wait()
        self.assertTrue(wait_gone(c.pid))
        self.assertIsNone(c.recv())

    def test_zygote_ignores_sigterm_and_sigint(self):
        z = self.start()
        z.ready()
        z.proc.send_signal(signal.SIGTERM)
        z.proc.send_signal(signal.SIGINT)
        time.sleep(0.1)
        self.assertEqual(task(z.spawn(), 1, "still here")["result"], "still here")

    def test_sigterm_lets_the_task_in_hand_finish(self):
        z = self.start("""
            def run(input, ctx):
                time.sleep(input)
                return "done"
            warmpool_kind.serve(load=lambda c: None, run=run)
        """)
        z.ready()
        c = z.spawn()
        c.send({"type": "task", "id": 5, "attempt": 1, "timeout_ms": 5000, "deadline_ms": 0,
                "input": 0.4})
        time.sleep(0.1)
        os.kill(c.pid, signal.SIGTERM)
        self.assertEqual(c.recv(), {"type": "result", "id": 5, "result": "done"})
        self.assertIsNone(c.recv())                      # then it leaves
        self.assertTrue(wait_gone(c.pid))
        idle = z.spawn()
        os.kill(idle.pid, signal.SIGTERM)                # idle: it leaves at once
        self.assertTrue(wait_gone(idle.pid))

    def test_spawn_without_a_descriptor_is_refused(self):
        z = self.start()
        z.ready()
        z.ctl.send({"type": "spawn"})
        msg = z.ctl.recv()
        self.assertEqual(msg["type"], "spawn_failed")
        self.assertIn("one descriptor; 0 came", msg["message"])
        a, b = socket.socketpair()
        z.ctl.send({"type": "spawn"}, fds=[a.fileno(), b.fileno()])
        self.assertIn("2 came", z.ctl.recv()["message"])
        a.close()
        b.close()
        self.assertEqual(task(z.spawn(), 1, 2)["result"], 2)

    def test_a_child_leaves_on_a_protocol_error(self):
        for bad in [b"\0\0\0\5hello",                                   # not JSON
                    b"\x7f\xff\xff\xff",                                # over the limit
                    b"\0\0\0\0",                                        # empty
                    struct.pack(">I", 15) + b'{"type":"spawn"}'[:15],   # wrong type
                    None]:                                              # unknown field
            z = self.start()
            z.ready()
            c = z.spawn()
            if bad is None:
                c.send({"type": "task", "id": 1, "attempt": 1, "timeout_ms": 1,
                        "deadline_ms": 1, "input": 1, "priority": 3})
            else:
                c.send_raw(bad)
            self.assertIsNone(c.recv())
            self.assertTrue(wait_gone(c.pid))
            self.assertIn("protocol error", z.stderr())
            self.assertEqual(task(z.spawn(), 2, "ok")["result"], "ok")   # zygote unharmed

    def test_a_task_that_exits_kills_only_its_child(self):
        z = self.start("""
            def run(input, ctx):
                if input == "exit":
                    os._exit(5)
                return input
            warmpool_kind.serve(load=lambda c: None, run=run)
        """)
        z.ready()
        a, b = z.spawn(), z.spawn()
        a.send({"type": "task", "id": 1, "attempt": 1, "timeout_ms": 1, "deadline_ms": 1,
                "input": "exit"})
        self.assertIsNone(a.recv())
        self.assertTrue(wait_gone(a.pid))
        self.assertEqual(task(b, 2, "b")["result"], "b")


class Helpers(unittest.TestCase):
    def test_snake_case_codes(self):
        for name, code in [("ValueError", "value_error"), ("HTTPError", "http_error"),
                           ("ZeroDivisionError", "zero_division_error"), ("KeyError", "key_error"),
                           ("X", "x"), ("Ünïcode", "_n_code"), ("A" * 100, "a" * 63)]:
            self.assertEqual(warmpool_kind._snake(name), code)

    def test_fits_int64(self):
        self.assertTrue(warmpool_kind._fits_int64([1, {"a": (1 << 63) - 1}, True, 1.5e300]))
        self.assertFalse(warmpool_kind._fits_int64({"a": [1 << 63]}))

    def test_sizeof(self):
        self.assertEqual(warmpool_kind._sizeof(array.array("Q", range(10))), 80)
        self.assertEqual(warmpool_kind._sizeof(b"abc"), 3)
        shared = "s" * 100
        self.assertGreater(warmpool_kind._sizeof([shared, shared]), 200)


if __name__ == "__main__":
    unittest.main()
