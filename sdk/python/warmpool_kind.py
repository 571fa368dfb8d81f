"""warmpool_kind -- a warmpool task kind in Python: the context is loaded once, in a
zygote, and shared copy-on-write by the children forked from it, one per warmpool
worker. Speaks the exec-kind protocol, version 1 (docs/exec-kinds.md). One file,
standard library only (Python 3.8+; tested with Debian 12's /usr/bin/python3, 3.11).

    import warmpool_kind

    def load(config):            # once, in the zygote, before any child is forked
        return build_the_big_table(config)       # config: --kind-config's string, or None

    def run(input, context):     # once per task attempt, in a child
        return {"answer": context[input["key"]]}  # any JSON value

    warmpool_kind.serve(load=load, run=run)

Errors: an exception from run() fails the attempt with code = its type in snake_case
("ValueError" -> "value_error"), message "ValueError: ...", not retryable. Raise
TaskError(message, code=..., retryable=...) to choose, or Retry(message) for an error
worth another attempt (within the task's max_attempts).

validate(input, context), optional, checks an input at submission: return None (or
True) to accept it, or a string saying what is wrong; an exception refuses it too.

Sharing: serve() disables the garbage collector while load() runs and calls
gc.freeze() before each fork, and children re-enable it, as the gc module's
documentation advises, so that collections in the children do not write to the
context's objects. Reference counts still do: reading Python objects (a dict of
strings) in a child copies the pages they sit on into that child. A context held in
one buffer (bytes, array, mmap) has no per-item objects and stays shared.
"""
import array
import gc
import json
import os
import re
import signal
import socket
import struct
import sys
import time
import traceback
from collections import namedtuple

__all__ = ["serve", "TaskError", "Retry", "ProtocolError", "current_task", "Task", "PROTOCOL"]

PROTOCOL = 1
FRAME_MAX_DEFAULT = 16 << 20        # until hello says otherwise
CODE_MAX = 63
MESSAGE_MAX = 1023
_HEADER = struct.Struct(">I")
_CODE_RE = re.compile(r"[a-z0-9_]{1,63}\Z")

Task = namedtuple("Task", "id attempt timeout_ms deadline_ms")
Task.__doc__ = """The attempt being run: deadline_ms is the Unix time in ms at which
warmpool kills this child."""


class TaskError(Exception):
    """Fails the attempt with this code (snake_case, [a-z0-9_]{1,63}) and message."""

    def __init__(self, message, code="task_failed", retryable=False):
        if not isinstance(code, str) or not _CODE_RE.match(code):
            raise ValueError("TaskError code must match [a-z0-9_]{1,63}: %r" % (code,))
        super().__init__(message)
        self.message = str(message)
        self.code = code
        self.retryable = bool(retryable)


class Retry(TaskError):
    """A failure worth another attempt: warmpool retries the task after a back-off
    while it has attempts left."""

    def __init__(self, message="try again", code="retry"):
        super().__init__(message, code, True)


class ProtocolError(Exception):
    """warmpool sent something this helper does not understand."""


_task = None


def current_task():
    """The Task being run in this child (None outside run())."""
    return _task


# ---------------------------------------------------------------- framing

# The fields each message from warmpool has: exactly these (strict).
_FIELDS = {
    "hello": {"protocol": int, "kind": str, "config": (str, type(None)),
              "max_frame_bytes": int},
    "spawn": {},
    "task": {"id": int, "attempt": int, "timeout_ms": int, "deadline_ms": int,
             "input": object},
    "validate": {"input": object},
}


def _no_dup_keys(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ProtocolError("duplicate key %r" % k)
        d[k] = v
    return d


class _Channel:
    """One end of a channel: a connected AF_UNIX stream socket."""

    def __init__(self, fd):
        self.sock = socket.socket(fileno=fd)
        self.max_frame = FRAME_MAX_DEFAULT

    def close(self):
        self.sock.close()

    def _recv_exact(self, n, fds):
        buf = bytearray()
        while len(buf) < n:
            data, anc, flags, _ = self.sock.recvmsg(n - len(buf), socket.CMSG_SPACE(8 * 4))
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(payload[:len(payload) - len(payload) % a.itemsize])
                    fds.extend(a)
            if not data:
                return None if not buf else buf
            buf += data
        return buf

    def recv(self, types, want_fds=False):
        """The next message, one of types, as a dict; None at EOF between frames.
        With want_fds, returns (message, [descriptors that came with it])."""
        fds = []
        try:
            head = self._recv_exact(4, fds)
            if head is None:
                return (None, fds) if want_fds else None
            if len(head) < 4:
                raise ProtocolError("the channel closed inside a frame header")
            (n,) = _HEADER.unpack(head)
            if n == 0:
                raise ProtocolError("an empty frame")
            if n > self.max_frame:
                raise ProtocolError("a frame of %d bytes is over the limit of %d bytes"
                                    % (n, self.max_frame))
            body = self._recv_exact(n, fds)
            if body is None or len(body) < n:
                raise ProtocolError("the channel closed inside a frame")
            if fds and not want_fds:
                raise ProtocolError("an unexpected descriptor came with a frame")
            try:
                msg = _DECODER.decode(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise ProtocolError("the frame is not JSON: %s" % e) from None
            _check(msg, types)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return (msg, fds) if want_fds else msg

    def send_bytes(self, body):
        if len(body) > self.max_frame:
            raise ProtocolError("a frame of %d bytes is over the limit of %d bytes"
                                % (len(body), self.max_frame))
        self.sock.sendall(_HEADER.pack(len(body)) + body)

    def send(self, msg):
        self.send_bytes(_encode(msg))


# made once: json.loads and json.dumps with arguments build a new decoder or encoder for
# every message, a few microseconds each
_DECODER = json.JSONDecoder(object_pairs_hook=_no_dup_keys)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _encode(msg):
    return _ENCODER.encode(msg).encode("utf-8")


def _check(msg, types):
    if not isinstance(msg, dict):
        raise ProtocolError("the frame is not a JSON object")
    t = msg.get("type")
    if t not in _FIELDS:
        raise ProtocolError("unknown message type %r" % (t,))
    if t not in types:
        raise ProtocolError("%r while waiting for %s" % (t, " or ".join(sorted(types))))
    fields = _FIELDS[t]
    for k, v in msg.items():
        if k == "type":
            continue
        if k not in fields:
            raise ProtocolError("%r: unknown field %r" % (t, k))
        want = fields[k]
        if want is int and (not isinstance(v, int) or isinstance(v, bool)):
            raise ProtocolError("%r: field %r must be an integer" % (t, k))
        if want is not int and want is not object and not isinstance(v, want):
            raise ProtocolError("%r: field %r has the wrong type" % (t, k))
    for k in fields:
        if k not in msg:
            raise ProtocolError("%r lacks field %r" % (t, k))


# ---------------------------------------------------------------- errors

def _snake(name):
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()
    s = re.sub(r"[^a-z0-9_]", "_", s)[:CODE_MAX]
    return s if _CODE_RE.match(s) else "exception"


def _message(text):
    """At most MESSAGE_MAX bytes of UTF-8, cut at a character; no NUL."""
    b = str(text).replace("\0", "\\0").encode("utf-8", "replace")
    return b[:MESSAGE_MAX].decode("utf-8", "ignore")    # "ignore" drops a cut character


def _error(task_id, code, message, retryable):
    return {"type": "error", "id": task_id, "code": code, "message": _message(message),
            "retryable": bool(retryable)}


# ---------------------------------------------------------------- context size

def _sizeof(obj):
    """Bytes the context holds, as well as Python can tell: a buffer's size, or
    sys.getsizeof summed over the containers (dict, list, tuple, set) it holds."""
    try:
        return memoryview(obj).nbytes
    except TypeError:
        pass
    total, seen, stack = 0, set(), [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, (dict, list, tuple, set, frozenset)):
            if id(o) in seen:
                continue
            seen.add(id(o))
            if isinstance(o, dict):
                stack.extend(o.keys())
                stack.extend(o.values())
            else:
                stack.extend(o)
        total += sys.getsizeof(o)
    return total


# ---------------------------------------------------------------- the child

def _libc():
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True)
    except (OSError, ImportError):
        return None


def _pdeathsig(libc):
    """PR_SET_PDEATHSIG = SIGKILL: this child dies with its zygote (Linux)."""
    try:
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)     # PR_SET_PDEATHSIG is 1
    except AttributeError:
        pass

_TERM = {signal.SIGTERM, signal.SIGINT}


def _run_task(msg, context, run, max_frame):
    global _task
    tid = msg["id"]
    _task = Task(tid, msg["attempt"], msg["timeout_ms"], msg["deadline_ms"])
    try:
        result = run(msg["input"], context)
    except TaskError as e:
        return _encode(_error(tid, e.code, e.message, e.retryable))
    except Exception as e:      # noqa: BLE001 -- any failure of the kind's code is the task's
        traceback.print_exc(file=sys.stderr)
        name = type(e).__name__
        return _encode(_error(tid, _snake(name), "%s: %s" % (name, e), False))
    finally:
        _task = None
    try:
        body = _encode({"type": "result", "id": tid, "result": result})
    except (TypeError, ValueError) as e:
        return _encode(_error(tid, "invalid_result", "the result is not JSON: %s" % e, False))
    if _LONG_DIGITS.search(body) and not _fits_int64(result):
        return _encode(_error(tid, "invalid_result", "the result has an integer outside "
                              "the signed 64-bit range (send it as a string)", False))
    if len(body) > max_frame:
        return _encode(_error(tid, "result_too_large",
                              "the result takes %d bytes; a frame holds at most %d"
                              % (len(body), max_frame), False))
    return body


_LONG_DIGITS = re.compile(rb"\d{19,}")     # a number this long may not fit in int64
_INT64 = (-(1 << 63), (1 << 63) - 1)


def _fits_int64(value):
    """Every integer in value fits a signed 64-bit integer (what warmpool can hold)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, bool):
            continue
        if isinstance(v, int):
            if not _INT64[0] <= v <= _INT64[1]:
                return False
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return True


def _validate(msg, context, validate):
    if validate is None:
        return _encode({"type": "valid"})
    try:
        verdict = validate(msg["input"], context)
    except Exception as e:      # noqa: BLE001 -- a refusal, with its reason
        return _encode({"type": "invalid", "message": _message(str(e) or type(e).__name__)})
    if verdict is None or verdict is True:
        return _encode({"type": "valid"})
    why = verdict if isinstance(verdict, str) and verdict else "the input was refused"
    return _encode({"type": "invalid", "message": _message(why)})


def _child(fd, zygote_pid, context, run, validate, max_frame, libc):
    """A child's whole life: serve tasks on fd until EOF. Never returns."""
    code = 0
    try:
        state = {"busy": False, "stop": False}

        def on_term(signum, frame):
            if not state["busy"]:
                os._exit(0)
            state["stop"] = True            # finish the task in hand, then leave

        # SIGTERM and SIGINT came blocked from the zygote: one sent since the fork is
        # pending, and is handled once the handler is in place
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _TERM)
        if libc is not None:
            _pdeathsig(libc)
        if os.getppid() != zygote_pid:      # the zygote died before prctl took effect
            os._exit(0)
        gc.enable()
        ch = _Channel(fd)
        ch.max_frame = max_frame
        while True:
            msg = ch.recv({"task", "validate"})
            if msg is None:
                break                       # EOF: warmpool is done with this child
            state["busy"] = True
            if msg["type"] == "task":
                reply = _run_task(msg, context, run, max_frame)
            else:
                reply = _validate(msg, context, validate)
            ch.send_bytes(reply)
            state["busy"] = False
            sys.stdout.flush()
            sys.stderr.flush()
            if state["stop"]:
                break
    except ProtocolError as e:
        print("warmpool_kind: child %d: protocol error: %s" % (os.getpid(), e), file=sys.stderr)
        code = 3
    except (BrokenPipeError, ConnectionResetError):
        code = 0                            # warmpool closed the channel mid-answer
    except BaseException:                   # noqa: BLE001 -- never return into the zygote
        traceback.print_exc(file=sys.stderr)
        code = 4
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


# ---------------------------------------------------------------- the zygote

def _reap(signum, frame):
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def serve(load, run, validate=None, *, size=None, fd=None):
    """Runs this program as an exec kind's zygote; returns never (exits).

    load(config) -> context     once, before any fork; config is a string or None
    run(input, context) -> any JSON value   per attempt, in a child
    validate(input, context) -> None | True | "reason"   optional, at submission
    size(context) -> int        optional: context_bytes for /v1/stats (default: a
                                buffer's size, or sys.getsizeof over containers)
    fd                          the control channel (default: $WARMPOOL_EXEC_FD)
    """
    if fd is None:
        text = os.environ.get("WARMPOOL_EXEC_FD")
        if text is None:
            sys.exit("warmpool_kind: WARMPOOL_EXEC_FD is not set: this program is an exec "
                     "kind's zygote, started by warmpool (or by wp-exec-drive)")
        fd = int(text)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)   # warmpool ends a zygote by EOF
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, _TERM)  # children unblock them (see _child)
    libc = _libc()                  # loaded once here, not in every child
    ctl = _Channel(fd)
    try:
        hello = ctl.recv({"hello"})
    except ProtocolError as e:
        sys.exit("warmpool_kind: zygote: protocol error: %s" % e)
    if hello is None:
        sys.exit(0)
    if hello["protocol"] != PROTOCOL:
        ctl.send({"type": "load_failed",
                  "message": "warmpool speaks protocol %d; this helper speaks %d"
                             % (hello["protocol"], PROTOCOL)})
        sys.exit(2)
    ctl.max_frame = hello["max_frame_bytes"]

    gc.disable()                    # no collection may leave holes among the context's pages
    t0 = time.monotonic()
    try:
        context = load(hello["config"])
        nbytes = int(size(context)) if size is not None else _sizeof(context)
    except Exception as e:          # noqa: BLE001 -- any failure of load() is reported
        traceback.print_exc(file=sys.stderr)
        ctl.send({"type": "load_failed", "message": _message("%s: %s" % (type(e).__name__, e))})
        sys.exit(1)
    load_ms = int((time.monotonic() - t0) * 1000)
    signal.signal(signal.SIGCHLD, _reap)
    ctl.send({"type": "ready", "protocol": PROTOCOL, "context_bytes": max(0, nbytes),
              "load_ms": load_ms, "validate": validate is not None})
    sys.stdout.flush()
    sys.stderr.flush()
    me = os.getpid()
    try:
        while True:
            msg, fds = ctl.recv({"spawn"}, want_fds=True)
            if msg is None:
                break                   # EOF: warmpool is done with this zygote
            if len(fds) != 1:
                for f in fds:
                    os.close(f)
                ctl.send({"type": "spawn_failed",
                          "message": "a spawn needs one descriptor; %d came" % len(fds)})
                continue
            gc.freeze()                 # everything so far: never scanned by a child's gc
            try:
                pid = os.fork()
            except OSError as e:
                os.close(fds[0])
                ctl.send({"type": "spawn_failed", "message": _message("fork: %s" % e)})
                continue
            if pid == 0:
                ctl.close()
                _child(fds[0], me, context, run, validate, ctl.max_frame, libc)
            os.close(fds[0])
            ctl.send({"type": "spawned", "pid": pid})
    except ProtocolError as e:
        sys.exit("warmpool_kind: zygote: protocol error: %s" % e)
    except (BrokenPipeError, ConnectionResetError):
        pass
    sys.exit(0)
