#!/usr/bin/python3
"""ppe_bench.py -- the concurrent.futures.ProcessPoolExecutor peers of bench/run.sh.

  ppe_bench.py throughput N OUT.json
      ProcessPoolExecutor(2), N no-op tasks: submit() each, then .result() each; the pool
      is started (one warm-up task per worker) before the clock starts.
  ppe_bench.py sharing MIB OUT.json [init|inherit]
      ProcessPoolExecutor(4) with a table of MIB MiB: array('Q') filled from
      random.Random(seed).randbytes, 16 MiB at a time (the standard library's compact
      array of 64-bit words; a list of ints would take ~5x the memory).
        init     (the compared case) the pool's initializer builds it in EVERY worker;
        inherit  the parent builds it before the pool forks its workers (fork start
                 method only), the workers read the inherited copy-on-write pages.
      Tasks sum slice i of 64 (together: the whole table); every worker must have run
      some. Then the PSS of each worker and of the parent, from /proc/PID/smaps_rollup.
"""
import json
import os
import sys
import time
from array import array
from concurrent.futures import ProcessPoolExecutor

TABLE = None
MASK = (1 << 64) - 1


def noop(i):
    return i


def init_table(mib):
    global TABLE
    import random
    rng = random.Random(42)
    TABLE = array("Q")
    for _ in range(mib // 16):  # 16 MiB at a time (randbytes cannot make 256 MiB at once)
        TABLE.frombytes(rng.randbytes(16 * 1048576))


def sum_slice(i, of):
    per = (len(TABLE) + of - 1) // of
    return os.getpid(), sum(TABLE[i * per:(i + 1) * per]) & MASK


def pss_kb(pid):
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])


def write(out, res):
    with open(out, "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
        f.write("\n")
    print(json.dumps(res, sort_keys=True))


def throughput(n, out):
    with ProcessPoolExecutor(2) as ex:
        list(ex.map(noop, range(2)))  # start the workers
        t0 = time.monotonic()
        futs = [ex.submit(noop, i) for i in range(n)]
        t_sub = time.monotonic()
        values = [f.result() for f in futs]
        t_done = time.monotonic()
    write(out, {"tasks": n, "workers": 2, "submit_s": t_sub - t0, "submit_per_s": n / (t_sub - t0),
                "e2e_s": t_done - t0,
                "e2e_per_s": n / (t_done - t0), "results_ok": values == list(range(n)),
                "start_method": __import__("multiprocessing").get_start_method()})


def sharing(mib, out, how="init", workers=4, of=64):
    t0 = time.monotonic()
    counts = {}
    if how == "inherit":
        import multiprocessing
        init_table(mib)
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        desc = "array('Q') of %d MiB built in the parent before fork, inherited by the workers" % mib
    else:
        pool = ProcessPoolExecutor(workers, initializer=init_table, initargs=(mib,))
        desc = "array('Q') of %d MiB per worker, built by the initializer" % mib
    with pool as ex:
        for rnd in range(3):  # every worker must have run tasks (resubmit, at most 3 rounds)
            for pid, _ in ex.map(sum_slice, range(of), [of] * of):
                counts[pid] = counts.get(pid, 0) + 1
            if len(counts) >= workers:
                break
        elapsed = time.monotonic() - t0
        time.sleep(0.5)
        procs = [{"role": "parent", "pid": os.getpid(), "pss_kb": pss_kb(os.getpid())}]
        for pid in sorted(ex._processes):  # the pool's worker pids
            procs.append({"role": "worker", "pid": pid, "pss_kb": pss_kb(pid),
                          "tasks_done": counts.get(pid, 0)})
    workers_kb = sum(p["pss_kb"] for p in procs if p["role"] == "worker")
    write(out, {"table": desc, "how": how,
                "context_bytes": mib * 1048576, "rounds": rnd + 1, "run_s": elapsed,
                "processes": procs, "workers_pss_mib": workers_kb / 1024,
                "total_pss_mib": (workers_kb + procs[0]["pss_kb"]) / 1024})


if __name__ == "__main__":
    if sys.argv[1] == "throughput":
        throughput(int(sys.argv[2]), sys.argv[3])
    else:
        sharing(int(sys.argv[2]), sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "init")
