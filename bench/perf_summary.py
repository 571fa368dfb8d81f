#!/usr/bin/python3
"""perf_summary.py -- a short text summary of `perf script -F comm,tid,ip,sym,dso`
(bench/profile.sh): for each kind of thread (its comm: warmpool-worker, MHD-worker, the
HTTP process's own threads warmpool-http, ...), its share of the samples, then

  - by warmpool function: each sample is charged to the innermost frame that is a
    function of the warmpool binary (inlined ones too, but not the small helpers in
    HELPERS), i.e. the time of that function and of the library calls it makes (SQLite,
    jansson, the kernel); samples with no warmpool frame (libmicrohttpd's own loop) are
    charged to the innermost library;
  - by leaf: the symbol (or library, for unnamed code) the CPU was in.

Usage: perf script -i perf.data -F comm,tid,ip,sym,dso | perf_summary.py [--top N]
"""
import collections
import re
import sys

TOP = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 15
FRAME = re.compile(r"^\s+[0-9a-f]+ (.+?) \((.+)\)$")
INLINED = re.compile(r"^\s+[0-9a-f]+ (.+?) \(inlined\)$")


# small helpers that many callers share: their time goes to their caller
HELPERS = {"exec_stmt", "step_task", "stmt_done", "col_dup", "row_to_task", "names_intern",
           "clock_mono_ms", "clock_now_ms", "fail", "bind_text", "tb_put", "tb_lit", "tb_str"}


def short_dso(d):
    d = d.rsplit("/", 1)[-1]
    return re.sub(r"\.so[.0-9]*$", "", d)


def samples(lines):
    head, frames = None, []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if head is not None:
                yield head, frames
            head, frames = None, []
        elif not line.startswith((" ", "\t")):
            head = line.split()[0]
            frames = []
        else:
            m = INLINED.match(line)
            if m:
                frames.append((m.group(1), None))
                continue
            m = FRAME.match(line)
            if m:
                frames.append((m.group(1), m.group(2)))
    if head is not None:
        yield head, frames


def main():
    by_comm = collections.Counter()
    owner = collections.defaultdict(collections.Counter)
    leaf = collections.defaultdict(collections.Counter)
    total = 0
    for comm, frames in samples(sys.stdin):
        total += 1
        by_comm[comm] += 1
        own = None
        # an inlined frame belongs to the binary of the next real frame outwards
        binary, dsos = None, []
        for sym, dso in reversed(frames):
            if dso is not None:
                binary = dso
            dsos.append(binary)
        dsos.reverse()
        for (sym, _), dso in zip(frames, dsos):
            if (dso is not None and dso.endswith("/warmpool") and sym not in HELPERS
                    and not sym.startswith("__")):   # libc's inlined frames
                own = sym.replace(".part.0", "").replace(".constprop.0", "")
                break
        if own is None:
            libs = [short_dso(d) for _, d in frames if d and d != "[unknown]"]
            own = "(no warmpool frame: %s)" % (libs[0] if libs else "?")
        owner[comm][own] += 1
        if frames:
            sym, dso = frames[0]
            name = sym if sym != "[unknown]" else "?"
            leaf[comm]["%s [%s]" % (name, short_dso(dso or "inlined"))] += 1
    print("samples: %d" % total)
    for comm, n in by_comm.most_common():
        print("\n== %s: %d samples, %.1f %% of all" % (comm, n, 100 * n / total))
        print("  by warmpool function (with what it calls):")
        for k, v in owner[comm].most_common(TOP):
            print("    %5.1f %%  %s" % (100 * v / n, k))
        print("  by leaf (where the CPU was):")
        for k, v in leaf[comm].most_common(TOP):
            print("    %5.1f %%  %s" % (100 * v / n, k))


if __name__ == "__main__":
    main()
