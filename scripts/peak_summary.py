#!/usr/bin/env python3
"""Summarise a `make peak` run (scripts/peak.sh) as a markdown table: each variant's
highest rate that held the objective, accepted claims/s and latency at that rate, and
the ratios the issue asks for, all from the same run's result.json and limits.json."""
import json
import os
import sys

out = sys.argv[1]


def load(*parts):
    p = os.path.join(out, *parts)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def held(name):
    f = load(name, "result.json")
    if not f or not f.get("ramp"):
        return None
    r = f["ramp"]
    step = None
    for s in r["steps"]:
        if s["held"] and s["rate"] == r["highest_held"]:
            step = s["result"]
    return {"rate": r["highest_held"], "limit": r["limit"], "broken": r["lowest_broken"], "res": step}


def fmt(v, d=0):
    return "-" if v is None else f"{v:,.{d}f}"


rows = {}
print("| variant | highest offered rate held (req/s) | answered/s | accepted claims/s | p50 / p99 / p99.9 (ms) | generator kept schedule | ramp ended by |")
print("|---|---|---|---|---|---|---|")
for name in ["batched", "per-req", "sync", "soldout"]:
    h = held(name)
    if h is None:
        continue
    rows[name] = h
    res = h["res"] or {}
    lat = res.get("latency", {})
    sched = res.get("schedule", {})
    print(f"| {name} | {fmt(h['rate'])} | {fmt(res.get('answered_per_s'))} | {fmt(res.get('accepted_per_s'))} | "
          f"{fmt(lat.get('p50_ms'), 2)} / {fmt(lat.get('p99_ms'), 2)} / {fmt(lat.get('p99_9_ms'), 2)} | "
          f"{sched.get('kept', '-')} | {h['limit']} (lowest rate that broke: {fmt(h['broken'])}) |")

light = load("light", "result.json")
if light and light.get("run"):
    r = light["run"]
    lat = r["latency"]
    print(f"| light (fixed 1,000/s) | {fmt(r['rate'])} | {fmt(r['answered_per_s'])} | {fmt(r['accepted_per_s'])} | "
          f"{fmt(lat['p50_ms'], 2)} / {fmt(lat['p99_ms'], 2)} / {fmt(lat['p99_9_ms'], 2)} | {r['schedule']['kept']} | fixed rate |")

lim = load("limits.json")
ceil = {}
if lim:
    print("\n| ceiling (same run) | per second |")
    print("|---|---|")
    for c in lim["limits"]["ceilings"]:
        ceil[c["name"]] = c["per_s"]
        print(f"| {c['name']} | {fmt(c['per_s']) if not c.get('error') else 'error: ' + c['error']} |")


def acc(name):
    h = rows.get(name)
    return (h["res"] or {}).get("accepted_per_s") if h else None


def ratio(a, b):
    return "-" if not a or not b else f"{a / b:.2f}"


bare = ceil.get("bare fasthttp handler")
print("\n| ratio | value |")
print("|---|---|")
print(f"| accepted/s, batched ÷ per-request script calls | {ratio(acc('batched'), acc('per-req'))} |")
print(f"| accepted/s, asynchronous ÷ synchronous produce | {ratio(acc('batched'), acc('sync'))} |")
print(f"| batched accepted/s ÷ bare fasthttp ceiling | {ratio(acc('batched'), bare)} |")
sold = rows.get("soldout")
print(f"| sold-out answers/s held ÷ bare fasthttp ceiling | {ratio(sold['rate'] if sold else None, bare)} |")

# Where the CPU goes (bench run --cpu): microseconds of CPU per accepted claim in each
# process, at each fixed rate of the budget variant (and the light and profile runs).
budgets = []
for name in sorted(os.listdir(out)):
    f = load(name, "result.json") if os.path.isdir(os.path.join(out, name)) else None
    if f and f.get("cpu") and f.get("run"):
        budgets.append((f["run"]["rate"], name, f))
budgets.sort()
if budgets:
    names = []
    for _, _, f in budgets:
        for p in f["cpu"]["parts"]:
            if p["name"] not in names:
                names.append(p["name"])
    print("\n| CPU µs per accepted claim | " + " | ".join(f"{n}" for n in names) + " | sum of the parts | other | whole machine (/proc/stat, tick-sampled) | machine busy (cores) | p99 (ms) |")
    print("|---" * (len(names) + 6) + "|")
    for rate, name, f in budgets:
        c = f["cpu"]
        per = {p["name"]: p for p in c["parts"]}
        cells = [fmt(per[n]["us_per_accepted"]) if n in per and not per[n].get("note") else "-" for n in names]
        total = sum(p["us_per_accepted"] for p in c["parts"] if not p.get("note"))
        print(f"| {name} ({fmt(rate)}/s, {fmt(c['accepted'])} accepted) | " + " | ".join(cells) +
              f" | {fmt(total)} | {fmt(c['unaccounted']['us_per_accepted'])} | {fmt(c['machine']['us_per_accepted'])} | "
              f"{c['machine']['cores']:.2f} of {c['cpus']} | {fmt(f['run']['latency']['p99_ms'], 1)} |")

# The budget variant with PEAK_BASELINE_BIN: this build against the baseline, rate by rate.
pairs = []
for rate, name, f in budgets:
    if name.startswith("budget-base-"):
        cur = load("budget-" + name[len("budget-base-"):], "result.json")
        if cur and cur.get("cpu"):
            pairs.append((rate, f, cur))
if pairs:
    print("\n| rate | part | baseline µs/claim | this build µs/claim | baseline ÷ this build |")
    print("|---|---|---|---|---|")
    for rate, base, cur in pairs:
        b = {p["name"]: p for p in base["cpu"]["parts"]}
        c = {p["name"]: p for p in cur["cpu"]["parts"]}
        b["sum of the parts"] = {"us_per_accepted": sum(p["us_per_accepted"] for p in base["cpu"]["parts"])}
        c["sum of the parts"] = {"us_per_accepted": sum(p["us_per_accepted"] for p in cur["cpu"]["parts"])}
        for n in c:
            if n in b and not b[n].get("note") and not c[n].get("note"):
                bu, cu = b[n]["us_per_accepted"], c[n]["us_per_accepted"]
                print(f"| {fmt(rate)}/s | {n} | {fmt(bu)} | {fmt(cu)} | {ratio(bu, cu)} |")
