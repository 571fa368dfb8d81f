#!/usr/bin/python3
"""it_kind.py -- an exec kind for the integration tests (tests/integration/test_exec.c),
written with the Python helper (sdk/python/warmpool_kind.py). Its context is a bytes
blob of config's size (mb=N, default 1; "fail" refuses to load).

Input (an object), what the child does:
  {"echo": X}                        -> {"echo": X, "pid": P, "attempt": A}
  {"sleep_ms": N, "pidfile": PATH}   writes its pid to PATH (if given), sleeps, answers
                                     {"slept_ms": N, "pid": P, "attempt": A}
  {"fail": "why"}                    fails: code bad_input, not retried
  {"retry_until": N}                 fails retryably (code retry) before attempt N
  {"raise": "why"}                   raises ValueError (code value_error)
  {"digest": true}                   reads the whole context: {"bytes": n, "sum": s}
Validate: an input with "bad" is refused (its value is the reason)."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "sdk", "python"))
import warmpool_kind  # noqa: E402


def load(config):
    opts = dict(part.split("=", 1) for part in filter(None, (config or "").split(",")))
    if "fail" in opts:
        raise RuntimeError("told to fail: " + opts["fail"])
    return bytes(range(256)) * (int(opts.get("mb", "1")) << 12)


def run(inp, ctx):
    task = warmpool_kind.current_task()
    me = {"pid": os.getpid(), "attempt": task.attempt}
    if "echo" in inp:
        return dict(me, echo=inp["echo"])
    if "sleep_ms" in inp:
        if "pidfile" in inp:
            with open(inp["pidfile"] + ".tmp", "w") as f:
                f.write("%d\n" % os.getpid())
            os.rename(inp["pidfile"] + ".tmp", inp["pidfile"])
        time.sleep(inp["sleep_ms"] / 1000.0)
        return dict(me, slept_ms=inp["sleep_ms"])
    if "fail" in inp:
        raise warmpool_kind.TaskError(inp["fail"], code="bad_input")
    if "retry_until" in inp:
        if task.attempt < inp["retry_until"]:
            raise warmpool_kind.Retry("attempt %d is too early" % task.attempt)
        return me
    if "raise" in inp:
        raise ValueError(inp["raise"])
    if "digest" in inp:
        return dict(me, bytes=len(ctx), sum=sum(ctx[::4096]))
    return me


def validate(inp, ctx):
    if not isinstance(inp, dict):
        return "the input must be an object"
    if "bad" in inp:
        return str(inp["bad"])
    return None


warmpool_kind.serve(load=load, run=run, validate=validate)
