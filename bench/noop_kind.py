#!/usr/bin/python3
"""noop_kind.py -- an exec kind whose run() returns its input: the protocol's cost per task
(bench/exec_warmpool.py). No context."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sdk", "python"))
import warmpool_kind  # noqa: E402

warmpool_kind.serve(load=lambda config: None, run=lambda inp, ctx: inp)
