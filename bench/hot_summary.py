#!/usr/bin/python3
"""hot_summary.py DIR -- the summary of `bench/run.sh hot` (its folder DIR = results/<ts>/hot):
medians of the repetitions into DIR/hot.json, a table on stdout, and a chart of throughput
per system, DIR/throughput.png (gnuplot, from DIR/throughput.dat). Celery's and
ProcessPoolExecutor's rates are taken from DIR/../throughput/ when the same run measured
them (bench/run.sh all), and PPE's from DIR/ppe_*.json otherwise."""
import glob
import json
import os
import re
import statistics
import subprocess
import sys

d = sys.argv[1]


def load(path):
    with open(path) as f:
        return json.load(f)


def med(pattern, key):
    vals = []
    for f in sorted(glob.glob(os.path.join(d, pattern))):
        v = load(f).get(key)
        if v is not None:
            vals.append(v)
    return (statistics.median(vals), min(vals), max(vals), len(vals)) if vals else None


def wrk_rps(path):
    """wrk's Requests/sec and latency percentiles from its --latency output."""
    if not os.path.exists(path):
        return None
    text = open(path).read()
    m = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    lat = dict(re.findall(r"^\s+(50|99)%\s+([0-9.]+\w+)", text, re.M))
    return {"req_per_s": float(m.group(1)) if m else None, "latency_p50": lat.get("50"),
            "latency_p99": lat.get("99")}


out = {"loadavg": open(os.path.join(d, "..", "loadavg.txt")).read().split("\n")
       if os.path.exists(os.path.join(d, "..", "loadavg.txt")) else None}
nginx = [wrk_rps(f) for f in sorted(glob.glob(os.path.join(d, "nginx_*.wrk.txt")))]
nginx = [x for x in nginx if x and x["req_per_s"]]
out["nginx_req_per_s"] = statistics.median(x["req_per_s"] for x in nginx) if nginx else None
out["nginx_runs"] = nginx
for mode in ("full", "normal"):
    for how in ("wrk", "batch"):
        for key in ("submit_per_s", "e2e_per_s"):
            out[f"{mode}_{how}_{key}"] = med(f"{mode}_{how}_*.json", key)
    for key in ("p50_ms", "p99_ms", "p999_ms", "max_ms"):
        rt = os.path.join(d, f"rt_{mode}.json")
        out[f"{mode}_rt_{key}"] = load(rt).get(key) if os.path.exists(rt) else None
for f in ("rt_nginx", "idle_cpu"):
    p = os.path.join(d, f + ".json")
    out[f] = load(p) if os.path.exists(p) else None
ppe = med("ppe_*.json", "e2e_per_s") or med("../throughput/ppe_*.json", "e2e_per_s")
celery = med("../throughput/celery_*.json", "e2e_per_s")
out["ppe_e2e_per_s"], out["celery_e2e_per_s"] = ppe, celery
ceiling = out["nginx_req_per_s"]
if ceiling and out["full_wrk_submit_per_s"]:
    out["full_wrk_submit_over_nginx"] = out["full_wrk_submit_per_s"][0] / ceiling
if ppe and out["full_wrk_e2e_per_s"]:
    out["full_wrk_e2e_over_ppe"] = out["full_wrk_e2e_per_s"][0] / ppe[0]
with open(os.path.join(d, "hot.json"), "w") as f:
    json.dump(out, f, indent=1)

# the chart: one bar per system and measure, tasks (or requests) per second
bars = []
if ceiling:
    bars.append(("nginx return 200\\n(req/s, the HTTP ceiling)", ceiling))
for mode in ("full", "normal"):
    for label, key in (("POST/s, one task each", "wrk_submit_per_s"),
                       ("end to end, one per POST", "wrk_e2e_per_s"),
                       ("end to end, batches of 100", "batch_e2e_per_s")):
        v = out.get(f"{mode}_{key}")
        if v:
            bars.append((f"warmpool {mode}\\n{label}", v[0]))
if ppe:
    bars.append(("ProcessPoolExecutor(2)\\nend to end, in process", ppe[0]))
if celery:
    bars.append(("Celery prefork 2 + Redis\\nend to end", celery[0]))
with open(os.path.join(d, "throughput.dat"), "w") as f:
    for label, v in bars:
        f.write('"%s" %.0f\n' % (label, v))
load = ""
for line in out["loadavg"] or []:
    if line.startswith("hot-"):
        load += ("; " if load else "") + line.split()[0] + " " + line.split()[2]
gp = f"""set terminal pngcairo size 1200,560 font ",10"
set output "{os.path.join(d, 'throughput.png')}"
set title "no-op tasks (or requests) per second, 2 CPUs shared with the client (1-min load average: {load or 'see loadavg.txt'})"
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.75
set yrange [0:*]
set grid ytics
set ylabel "per second"
set xtics rotate by -35 left font ",8"
set bmargin 9
unset key
plot "{os.path.join(d, 'throughput.dat')}" using 2:xtic(1) lc rgb "#3b6ea8", \\
     "" using 0:2:(sprintf("%.0f", $2)) with labels offset 0,0.7 font ",8"
"""
with open(os.path.join(d, "throughput.gp"), "w") as f:
    f.write(gp)
try:
    subprocess.run(["gnuplot", os.path.join(d, "throughput.gp")], check=True)
except (OSError, subprocess.CalledProcessError) as e:
    print("hot: no chart: %s" % e, file=sys.stderr)


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, tuple):
        return "%.0f (%.0f-%.0f, %d runs)" % v
    return "%.0f" % v if isinstance(v, float) and v > 50 else "%.3f" % v if isinstance(v, float) else str(v)


print("\nhot path (results %s)" % d)
for k, v in out.items():
    if k in ("nginx_runs", "loadavg", "rt_nginx", "idle_cpu"):
        continue
    print("  %-32s %s" % (k, fmt(v)))
if out["rt_nginx"]:
    print("  %-32s p50 %.3f ms, p99 %.3f ms" % ("round trip to nginx (floor)", out["rt_nginx"]["p50_ms"],
                                             out["rt_nginx"]["p99_ms"]))
if out["idle_cpu"]:
    print("  %-32s %.2f %% of one core (%.0f ms in %.1f s)" % (
        "idle CPU", out["idle_cpu"]["cpu_percent_of_one_core"], out["idle_cpu"]["cpu_ms"],
        out["idle_cpu"]["seconds"]))
