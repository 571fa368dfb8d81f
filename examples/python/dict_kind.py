#!/usr/bin/python3
"""dict_kind.py -- an exec kind whose context is a large dict of strings: the case where
sharing is weakest. Every str is a Python object with a reference count; a child that
reads an entry writes its count, and the kernel copies the page into that child. A
child that reads the whole dict ends up with a private copy of most of it (gc.freeze()
keeps the collector off these objects, but cannot stop reference counting).
bench/exec_sharing.py measures how much.

    warmpool --exec-kind 'words=python3 examples/python/dict_kind.py' \
             --kind-config words=entries=1000000

Config: entries=N (default 1000000), len=L (value length, default 100), seed=S.
Input:  {"key": "k00000042"}   -> {"key": ..., "value": ... or null}
        {"op": "scan"}         -> {"entries": n, "chars": total, "sha256": ...}
                                  (reads every key and value, in order)
"""
import hashlib
import os
import random
import sys

try:
    import warmpool_kind
except ImportError:     # run from a checkout: the helper is in sdk/python
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "sdk", "python"))
    import warmpool_kind

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def options(config):
    opts = {"entries": 1000000, "len": 100, "seed": 42}
    for part in filter(None, (config or "").split(",")):
        key, _, value = part.partition("=")
        if key not in opts:
            raise ValueError("unknown option %r (entries=N, len=L, seed=S)" % key)
        opts[key] = int(value)
    return opts


def load(config):
    opts = options(config)
    rng = random.Random(opts["seed"])
    n, length = opts["entries"], opts["len"]
    # one random pool, values cut from it at random offsets: each value is its own str
    pool = "".join(rng.choices(ALPHABET, k=1 << 16))
    table = {}
    for i in range(n):
        at = rng.randrange(0, len(pool) - length)
        table["k%08d" % i] = pool[at:at + length]
    return table


def run(input, table):
    if not isinstance(input, dict):
        raise warmpool_kind.TaskError("the input must be an object", code="invalid_input")
    if "key" in input:
        return {"key": input["key"], "value": table.get(input["key"])}
    if input.get("op") == "scan":
        h, chars = hashlib.sha256(), 0
        for k, v in table.items():
            chars += len(k) + len(v)
            h.update(v.encode())
        return {"entries": len(table), "chars": chars, "sha256": h.hexdigest()}
    raise warmpool_kind.TaskError("give key, or op: scan", code="invalid_input")


if __name__ == "__main__":
    warmpool_kind.serve(load=load, run=run)
