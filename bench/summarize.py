#!/usr/bin/python3
"""summarize.py -- collects one bench/run.sh results folder into summary.json and prints
a table of medians and ratios.  Usage: summarize.py RESULTS_DIR [--wall-s S] [--root REPO]
"""
import argparse
import glob
import json
import os
import platform
import statistics
import subprocess


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:  # noqa: BLE001 -- a missing tool just leaves the field empty
        return ""


def load(path):
    with open(path) as f:
        return json.load(f)


def med(files, key):
    vals = [load(f).get(key) for f in files]
    vals = [v for v in vals if isinstance(v, (int, float))]
    return (statistics.median(vals), vals) if vals else (None, vals)


def machine(root):
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    deb = sh("cat /etc/debian_version")
    pkg = lambda p: sh("dpkg-query -W -f='${Version}' %s 2>/dev/null" % p)
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "mem_gib": round(mem_kb / 1048576, 1),
        "kernel": platform.release(), "debian": deb,
        "versions": {
            "gcc": sh("gcc -dumpfullversion"), "sqlite": pkg("libsqlite3-0"),
            "libmicrohttpd": pkg("libmicrohttpd12"), "jansson": pkg("libjansson4"),
            "vectorscan": pkg("libvectorscan5"), "python3": sh("/usr/bin/python3 -V").split()[-1],
            "celery": pkg("python3-celery"), "python3-redis": pkg("python3-redis"),
            "redis-server": pkg("redis-server"), "wrk": pkg("wrk"), "cmake": pkg("cmake"),
        },
        "warmpool_commit": sh("git -C %s rev-parse --short HEAD" % root),
        "warmpool_tree_dirty": bool(sh("git -C %s status --porcelain -- service api storage common include rules examples CMakeLists.txt" % root)),
    }


def fmt(v, nd=0):
    if v is None:
        return "-"
    return ("{:,.%df}" % nd).format(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--wall-s", type=float)
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    a = ap.parse_args()
    d = a.dir
    s = {"results": os.path.basename(os.path.normpath(d)), "suite_wall_s": a.wall_s,
         "machine": machine(a.root)}
    rows = []
    la = os.path.join(d, "loadavg.txt")
    if os.path.exists(la):
        s["loadavg_1_5_15"] = [l.split() for l in open(la).read().splitlines()]

    tp = os.path.join(d, "throughput")
    if os.path.isdir(tp):
        g = lambda pat: sorted(glob.glob(os.path.join(tp, pat)))
        t = {}
        for name, pat in (("warmpool_wrk", "warmpool_wrk_*.json"), ("warmpool_batch", "warmpool_batch_*.json"),
                          ("celery", "celery_*.json"), ("ppe", "ppe_*.json")):
            files = g(pat)
            e2e, e2e_all = med(files, "e2e_per_s")
            sub, sub_all = med(files, "submit_per_s")
            t[name] = {"runs": len(files), "e2e_per_s_median": e2e, "e2e_per_s_all": e2e_all,
                       "submit_per_s_median": sub, "submit_per_s_all": sub_all,
                       "tasks": load(files[0]).get("submitted", load(files[0]).get("tasks")) if files else None}
        for w in ("warmpool_wrk", "warmpool_batch"):
            for peer in ("celery", "ppe"):
                x, y = t[w]["e2e_per_s_median"], t[peer]["e2e_per_s_median"]
                t["ratio_%s_over_%s" % (w, peer)] = x / y if x and y else None
        s["throughput"] = t
        rows.append(("throughput (no-op tasks, 2 workers), end to end, median of %d" % t["warmpool_wrk"]["runs"], None))
        labels = {"warmpool_wrk": "warmpool, POST /v1/tasks (wrk -t2 -c32)",
                  "warmpool_batch": "warmpool, POST /v1/tasks/batch (100/batch, 4 conns)",
                  "celery": "Celery prefork 2 + Redis (.delay + get)",
                  "ppe": "ProcessPoolExecutor(2), in process"}
        for k, lab in labels.items():
            rows.append(("  %s" % lab, "%s tasks/s e2e (submit %s/s)" % (
                fmt(t[k]["e2e_per_s_median"]), fmt(t[k]["submit_per_s_median"]))))
        for w in ("warmpool_wrk", "warmpool_batch"):
            rows.append(("  ratio %s / celery, / ppe" % w.split("_")[1],
                         "%s x, %s x" % (fmt(t["ratio_%s_over_celery" % w], 1), fmt(t["ratio_%s_over_ppe" % w], 2))))

    sh_dir = os.path.join(d, "sharing")
    if os.path.isdir(sh_dir):
        sv = {}
        if os.path.exists(os.path.join(sh_dir, "warmpool.json")):
            w = load(os.path.join(sh_dir, "warmpool.json"))
            sv["warmpool"] = w
            rows.append(("sharing (256 MiB context, 4 workers), PSS", None))
            for p in w["processes"]:
                rows.append(("  warmpool %s %d" % (p["role"], p["pid"]), "%s MiB%s" % (
                    fmt(p["pss_kb"] / 1024, 1),
                    " (%d tasks)" % p["tasks_done"] if "tasks_done" in p else "")))
            rows.append(("  warmpool total (target <= %s MiB)" % fmt(w["target_mib"], 1),
                         "%s MiB = %s x context -> %s" % (fmt(w["total_pss_mib"], 1),
                                                         fmt(w["ratio_to_context"], 3),
                                                         "met" if w["met"] else "MISSED")))
            rows.append(("  warmpool context load_ms", str(w["load_ms"])))
        if os.path.exists(os.path.join(sh_dir, "ppe.json")):
            p = load(os.path.join(sh_dir, "ppe.json"))
            sv["ppe"] = p
            rows.append(("  PPE(4), table built by the initializer: workers' PSS", "%s MiB (+ parent %s MiB)" % (
                fmt(p["workers_pss_mib"], 1), fmt(p["processes"][0]["pss_kb"] / 1024, 1))))
            if "warmpool" in sv:
                sv["ratio_ppe_over_warmpool_total"] = p["total_pss_mib"] / sv["warmpool"]["total_pss_mib"]
                rows.append(("  PPE(4) initializer total / warmpool total", "%s x" % fmt(sv["ratio_ppe_over_warmpool_total"], 2)))
        if os.path.exists(os.path.join(sh_dir, "ppe_inherit.json")):
            p = load(os.path.join(sh_dir, "ppe_inherit.json"))
            sv["ppe_inherit"] = p
            rows.append(("  PPE(4), table inherited through fork: workers' PSS", "%s MiB (+ parent %s MiB)" % (
                fmt(p["workers_pss_mib"], 1), fmt(p["processes"][0]["pss_kb"] / 1024, 1))))
        s["sharing"] = sv

    pl = os.path.join(d, "preload")
    if os.path.isdir(pl):
        pv = {}
        if os.path.exists(os.path.join(pl, "skipped.json")):
            pv["skipped"] = load(os.path.join(pl, "skipped.json"))["skipped"]
            rows.append(("preload vs naive", "SKIPPED: " + pv["skipped"]))
        else:
            wf = sorted(glob.glob(os.path.join(pl, "warmpool_*.json")))
            nf = sorted(glob.glob(os.path.join(pl, "naive_*.json")))
            w, w_all = med(wf, "tasks_per_s")
            n, n_all = med(nf, "tasks_per_s")
            lm, lm_all = med(wf, "load_ms")
            pv = {"rules": load(os.path.join(pl, "rules.json")),
                  "warmpool_tasks": load(wf[0])["tasks"] if wf else None,
                  "warmpool_tasks_per_s_median": w, "warmpool_tasks_per_s_all": w_all,
                  "warmpool_load_ms_median": lm, "warmpool_load_ms_all": lm_all,
                  "warmpool_context_bytes": load(wf[0])["context_bytes"] if wf else None,
                  "naive_tasks": load(nf[0])["tasks"] if nf else None,
                  "naive_tasks_per_s_median": n, "naive_tasks_per_s_all": n_all,
                  "naive_per_task_s_median": med(nf, "per_task_s_median")[0],
                  "ratio": w / n if w and n else None}
            if os.path.exists(os.path.join(pl, "compare.json")):
                c = load(os.path.join(pl, "compare.json"))
                pv["results_identical"] = "%d/%d" % (c["identical"], c["compared"])
            s["preload"] = pv
            rows.append(("preload vs naive (%s scan tasks, %s rules)" % (pv["warmpool_tasks"], fmt(pv["rules"]["rules"])), None))
            rows.append(("  warmpool (2 workers, batch submit)", "%s tasks/s (context load %s ms)" % (fmt(w, 1), fmt(lm))))
            rows.append(("  spawn-per-task naive_scan (2 at a time, %s tasks)" % pv["naive_tasks"],
                         "%s tasks/s (%s s per task)" % (fmt(n, 2), fmt(pv["naive_per_task_s_median"], 3))))
            rows.append(("  ratio warmpool / naive (target >= 100)", "%s x -> %s" % (
                fmt(pv["ratio"], 0), "met" if pv["ratio"] and pv["ratio"] >= 100 else "MISSED")))
            if "results_identical" in pv:
                rows.append(("  same matches as naive (first tasks)", pv["results_identical"]))
    ex = os.path.join(d, "exec", "exec_sharing.json")
    if os.path.exists(ex):
        e = load(ex)
        ctx = e["exec_table"]["context_bytes"] / 1048576
        dctx = e["exec_dict"]["context_bytes"] / 1048576
        s["exec"] = {k: e[k] for k in ("table_target_mib", "table_target_met", "noop_rtt")}
        for k in ("exec_table", "ppe_table", "exec_dict", "ppe_dict"):
            s["exec"][k + "_total_pss_mib"] = e[k]["total_pss_mib"]
        rows.append(("exec kinds (Python zygote + %d children, wp-exec-drive), total PSS" % e["workers"], None))
        rows.append(("  table %d MiB: exec (target <= %s MiB)" % (round(ctx), fmt(e["table_target_mib"], 1)),
                     "%s MiB -> %s" % (fmt(e["exec_table"]["total_pss_mib"], 1),
                                       "met" if e["table_target_met"] else "MISSED")))
        rows.append(("  table: PPE(%d), built by the initializer" % e["workers"],
                     "%s MiB" % fmt(e["ppe_table"]["total_pss_mib"], 1)))
        rows.append(("  dict of %s strings (%s MiB): exec / PPE" % (fmt(e["entries"]), fmt(dctx, 0)),
                     "%s MiB / %s MiB" % (fmt(e["exec_dict"]["total_pss_mib"], 1),
                                          fmt(e["ppe_dict"]["total_pss_mib"], 1))))
        rows.append(("  no-op round trip to a Python child (p50, p99)",
                     "%s us, %s us" % (e["noop_rtt"]["p50_us"], e["noop_rtt"]["p99_us"])))
    ew = os.path.join(d, "exec", "exec_warmpool.json")
    if os.path.exists(ew):
        e = load(ew)
        w = e["workers"]
        s["exec_warmpool"] = {k: e[k] for k in ("table_target_mib", "table_target_met",
                                                "overhead_us_per_task", "overhead_target_met",
                                                "rtt_echo", "rtt_exec")}
        rows.append(("exec kinds through warmpool (--exec-kind, %d workers)" % w, None))
        for name, ppe in (("table", "ppe_table"), ("dict", "ppe_dict")):
            ctx = e[name]["context_bytes"] / 1048576
            s["exec_warmpool"][name + "_total_pss_mib"] = e[name]["total_pss_mib"]
            rows.append(("  %s %d MiB: warmpool + zygote + children / PPE(%d), total PSS" % (name, round(ctx), w),
                         "%s MiB / %s MiB" % (fmt(e[name]["total_pss_mib"], 1), fmt(e[ppe]["total_pss_mib"], 1))))
        rows.append(("  table target (<= %s MiB)" % fmt(e["table_target_mib"], 1),
                     "met" if e["table_target_met"] else "MISSED"))
        for n in sorted({1, w}):
            rows.append(("  no-op tasks/s, %d worker(s): echo / exec / PPE" % n, "%s / %s / %s" % (
                fmt(e["rate_echo_%d" % n]["per_s"], 0), fmt(e["rate_exec_%d" % n]["per_s"], 0),
                fmt(e["rate_ppe_%d" % n]["per_s"], 0))))
        rows.append(("  a worker replaced after its child's timeout, median", "%s ms" % fmt(e["replacement"]["median_ms"], 0)))
        rows.append(("  protocol overhead per task (target <= 100 us)", "%s us -> %s" % (
            fmt(e["overhead_us_per_task"], 0), "met" if e["overhead_target_met"] else "MISSED")))
        rows.append(("  one task's round trip, p50: echo / exec", "%s us / %s us" % (
            fmt(e["rtt_echo"]["p50_us"], 0), fmt(e["rtt_exec"]["p50_us"], 0))))
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump(s, f, indent=1, sort_keys=True)
        f.write("\n")

    width = max(len(r[0]) for r in rows) if rows else 10
    print("\nwarmpool benchmarks -- %s (%s, %d CPUs)" % (s["results"], s["machine"]["cpu"], s["machine"]["nproc"]))
    for k, v in rows:
        print(k if v is None else "%-*s  %s" % (width, k, v))
    if "loadavg_1_5_15" in s:
        print("load average (1/5/15 min) around each part: " + "; ".join(
            "%s %s" % (x[0], x[2]) for x in s["loadavg_1_5_15"]))
    print("raw results and summary.json: %s" % d)


if __name__ == "__main__":
    main()
