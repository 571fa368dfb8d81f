#!/usr/bin/python3
"""scale_summary.py -- the table of bench/run.sh scale: reads the files of one
results/<stamp>/scale folder, writes scale.json there and prints the table.
Usage: scale_summary.py SCALE_DIR"""
import glob
import json
import os
import re
import statistics
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def first_json_line(path):
    """scale_tool prints one JSON object (one line) on stdout"""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("{"):
                    return json.loads(line)
    except (OSError, ValueError):
        pass
    return None


def wrk(path):
    try:
        text = open(path).read()
    except OSError:
        return None
    out = {}
    m = re.search(r"^WPBENCH (\{.*\})$", text, re.M)
    if m:
        out.update(json.loads(m.group(1)))
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        out["requests_per_s"] = float(m.group(1))
    return out


def total(stats):
    return sum(stats["tasks"].values()) if stats else None


def sizes(path):
    """ls -l lines of the database and its WAL: {"db": bytes, "wal": bytes}"""
    out = {}
    try:
        for line in open(path):
            f = line.split()
            if line.startswith("avail"):
                out["disk_avail"] = int(f[1])
            elif len(f) >= 9:
                out["wal" if f[-1].endswith("-wal") else "db"] = int(f[4])
    except OSError:
        pass
    return out


def main():
    d = sys.argv[1]
    res = {"sizes": {}}
    def e2e_rates(n):
        runs = [load(p) for p in sorted(glob.glob(os.path.join(d, "e2e_%d_*.json" % n)))]
        return [r["e2e_per_s"] for r in runs if r and r.get("e2e_per_s")]

    res["e2e_empty_runs"] = e2e_rates(0)
    res["e2e_empty_per_s"] = statistics.median(res["e2e_empty_runs"]) if res["e2e_empty_runs"] else None
    ns = sorted(int(re.search(r"fill_(\d+)\.json", p).group(1))
                for p in glob.glob(os.path.join(d, "fill_[0-9]*.json")))
    for n in ns:
        r = {"fill": first_json_line(os.path.join(d, "fill_%d.json" % n)),
             "files": sizes(os.path.join(d, "files_%d.txt" % n)),
             "files_after_e2e": sizes(os.path.join(d, "files_%d_after_e2e.txt" % n)),
             "latency": load(os.path.join(d, "latency_%d.json" % n)),
             "e2e_runs": e2e_rates(n),
             "claims": first_json_line(os.path.join(d, "claims_%d_0.json" % n)),
             "claims_delayed": first_json_line(os.path.join(d, "claims_%d_100000.json" % n))}
        r["e2e_per_s"] = statistics.median(r["e2e_runs"]) if r["e2e_runs"] else None
        if r["e2e_per_s"] and res["e2e_empty_per_s"]:
            r["e2e_vs_empty"] = r["e2e_per_s"] / res["e2e_empty_per_s"]
        res["sizes"][str(n)] = r
    load_ = {}
    for side in ("no_retention", "retention"):
        w = wrk(os.path.join(d, "load_%s.wrk.txt" % side))
        if w is None:
            continue
        load_[side] = {"wrk": w,
                       "tasks_before": total(load(os.path.join(d, "load_%s_stats_before.json" % side))),
                       "tasks_after": total(load(os.path.join(d, "load_%s_stats_after.json" % side))),
                       "tasks_idle": total(load(os.path.join(d, "load_%s_stats_idle.json" % side))),
                       "files": sizes(os.path.join(d, "files_load_%s.txt" % side))}
        try:
            wal = [int(l.split()[1]) for l in open(os.path.join(d, "load_%s_samples.txt" % side))]
            load_[side]["wal_max_bytes"] = max(wal) if wal else None
        except (OSError, ValueError, IndexError):
            pass
    if "no_retention" in load_ and "retention" in load_:
        a = load_["no_retention"]["wrk"].get("wrk_latency_p99_ms")
        b = load_["retention"]["wrk"].get("wrk_latency_p99_ms")
        if a and b:
            load_["p99_ratio"] = b / a
    res["load"] = load_
    mig = glob.glob(os.path.join(d, "migrate_*.json"))
    if mig:
        m = first_json_line(mig[0])
        res["migrate"] = m and m.get("migrate")
        res["migrate_fill"] = first_json_line(glob.glob(os.path.join(d, "fill_v1_*.json"))[0])
    with open(os.path.join(d, "scale.json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
        f.write("\n")

    def ms(r, k):
        try:
            return "%.2f" % r["latency"]["ms"][k]["median"]
        except (TypeError, KeyError):
            return "-"

    print("\nscale (medians of 200 requests, ms; rates per s)   results: %s" % d)
    cols = ["tasks", "stats", "list", "state", "state=failed", "kind", "state+kind", "+cursor",
            "get", "e2e/s", "vs empty", "claims/s", "w/ 1e5 waiting", "db MB"]
    print(" | ".join(cols))
    for n in ns:
        r = res["sizes"][str(n)]
        c = (r.get("claims") or {}).get("claims", {})
        cd = (r.get("claims_delayed") or {}).get("claims", {})
        print(" | ".join([
            "{:,}".format(n), ms(r, "stats"), ms(r, "list"), ms(r, "list_state_succeeded"),
            ms(r, "list_state_failed"), ms(r, "list_kind"), ms(r, "list_state_kind"),
            ms(r, "list_state_kind_cursor"), ms(r, "get"),
            "%.0f" % r["e2e_per_s"] if r.get("e2e_per_s") else "-",
            "%.0f %%" % (100 * r["e2e_vs_empty"]) if r.get("e2e_vs_empty") else "-",
            "%.0f" % c["claims_per_s"] if c else "-", "%.0f" % cd["claims_per_s"] if cd else "-",
            "%.0f" % (r["files"].get("db", 0) / 1e6)]))
    if res["e2e_empty_per_s"]:
        print("empty database: %.0f tasks/s end to end (median of %s)" % (
            res["e2e_empty_per_s"], ", ".join("%.0f" % x for x in res["e2e_empty_runs"])))
    for side, v in load_.items():
        if side == "p99_ratio":
            continue
        w = v["wrk"]
        print("load %-12s p50 %.2f ms, p99 %.2f ms, %s 202s; tasks %s -> %s (idle 10 s later: %s);"
              " WAL max %s MB" % (side, w.get("wrk_latency_p50_ms", 0), w.get("wrk_latency_p99_ms", 0),
                                  w.get("wrk_202"), v["tasks_before"], v["tasks_after"], v["tasks_idle"],
                                  "%.0f" % (v["wal_max_bytes"] / 1e6) if v.get("wal_max_bytes") else "-"))
    if "p99_ratio" in load_:
        print("submission p99 with retention / without: %.2f x (target <= 2)" % load_["p99_ratio"])
    if res.get("migrate"):
        m = res["migrate"]
        print("upgrade of a schema-1 database of {:,} tasks: {:.1f} s (db {:.0f} -> {:.0f} MB)".format(
            m["tasks"], m["seconds"], m["db_bytes_before"] / 1e6, m["db_bytes"] / 1e6))


if __name__ == "__main__":
    main()
