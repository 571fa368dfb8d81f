#!/usr/bin/python3
"""table_kind.py -- an exec kind whose context is one big table of 64-bit numbers, built
as a Python user without numpy would: an array('q') filled from a seeded generator
(signed, since warmpool's JSON integers are signed 64-bit).
Held in one buffer, it stays shared by every child (no per-item objects to count).

    warmpool --exec-kind 'table=python3 examples/python/table_kind.py' \
             --kind-config table=mb=256,seed=42
    wp-exec-drive --config mb=256 -- python3 examples/python/table_kind.py

Config: mb=N (size in MiB, default 256), seed=S (default 42).
Input:  {"index": K}                       -> {"index": K, "value": V}
        {"op": "sum", "slice": I, "of": N} -> {"sum": S mod 2^63, "items": n}  (slice I of N;
        {"op": "digest", "slice": I, "of": N} -> {"sha256": "...", "bytes": n}  N=1: all)
"""
import hashlib
import os
import random
import sys
from array import array

try:
    import warmpool_kind
except ImportError:     # run from a checkout: the helper is in sdk/python
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "sdk", "python"))
    import warmpool_kind

MOD = 1 << 63
CHUNK = 16 << 20        # randbytes cannot make 256 MiB at once


def options(config):
    opts = {"mb": 256, "seed": 42}
    for part in filter(None, (config or "").split(",")):
        key, _, value = part.partition("=")
        if key not in opts:
            raise ValueError("unknown option %r (mb=N, seed=S)" % key)
        opts[key] = int(value)
    if opts["mb"] < 1:
        raise ValueError("mb must be at least 1")
    return opts


def load(config):
    opts = options(config)
    rng = random.Random(opts["seed"])
    table = array("q")
    left = opts["mb"] << 20
    while left > 0:
        n = min(left, CHUNK)
        table.frombytes(rng.randbytes(n))
        left -= n
    return table


def validate(input, table):
    if not isinstance(input, dict):
        return "the input must be an object"
    if "index" in input:
        if not isinstance(input["index"], int) or not 0 <= input["index"] < len(table):
            return "index must be an integer in 0..%d" % (len(table) - 1)
        return None
    if input.get("op") not in ("sum", "digest"):
        return "give index, or op: sum or digest"
    i, n = input.get("slice", 0), input.get("of", 1)
    if not (isinstance(i, int) and isinstance(n, int) and 0 <= i < n):
        return "slice and of must be integers with 0 <= slice < of"
    return None


def run(input, table):
    why = validate(input, table)
    if why is not None:
        raise warmpool_kind.TaskError(why, code="invalid_input")
    if "index" in input:
        return {"index": input["index"], "value": table[input["index"]]}
    per = (len(table) + input.get("of", 1) - 1) // input.get("of", 1)
    lo = input.get("slice", 0) * per
    view = memoryview(table)[lo:lo + per]       # a view: no copy of the slice
    if input["op"] == "digest":
        return {"sha256": hashlib.sha256(view).hexdigest(), "bytes": view.nbytes}
    return {"sum": sum(view) % MOD, "items": len(view)}


if __name__ == "__main__":
    warmpool_kind.serve(load=load, run=run, validate=validate)
