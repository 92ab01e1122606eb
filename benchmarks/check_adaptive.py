#!/usr/bin/env python3
"""Quick check of adaptive-sla variants against the baselines already in docs/results.md (from the last
`make results`), cell by cell, with the same verdict rule: cost <= each baseline's (within 0.5%) at
misses <= that baseline's or <= 1%, and within 10% of the hindsight-tuned static; and the Pareto
reading (which runs are at least as good on both cost and misses). Runs only the variants, so a
policy change can be judged in a few minutes (30-minute traces, as the baselines) before
regenerating everything.

Usage: benchmarks/check_adaptive.py [--minutes 30] 'adaptive-sla' 'adaptive-sla:headroom=2' ...
"""
import argparse, os, re, sys

from simulate_results import PROFILES, TRACES, ROOT, simulate, num, dominates


def baselines(path):
    """{(profile, setting, trace): {policy: (replica_s, miss_pct)}} from the per-profile tables."""
    out, key = {}, None
    for line in open(path):
        m = re.match(r"### (\w+) \((\w+) load\)", line)
        if m:
            key = (m.group(1), m.group(2))
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if key and len(cells) == 9 and cells[0] in TRACES and not cells[1].startswith("adaptive-sla"):
            name = "hindsight" if cells[1].startswith("hindsight") else cells[1].split(":")[0]
            out.setdefault(key + (cells[0],), {})[name] = (float(cells[6]), float(cells[2]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=int, default=30)
    ap.add_argument("variants", nargs="+")
    args = ap.parse_args()
    base = baselines(os.path.join(ROOT, "docs", "results.md"))
    met = {v: 0 for v in args.variants}
    undominated = {v: 0 for v in args.variants}
    for profile, slo, rate, setting in PROFILES:
        for trace in TRACES:
            b = base[(profile, setting, trace)]
            rows = simulate(profile, trace, args.variants, args.minutes, rate)
            for v, r in zip(args.variants, rows):
                ac, am = num(r, "replica_seconds"), num(r, "sla_miss_pct")
                lost = [n for n, (c, m) in b.items() if n != "hindsight" and not (ac <= c * 1.005 and (am <= m + 1e-9 or am <= 1.0))]
                within = ac <= b["hindsight"][0] * 1.10
                ok = within and not lost
                met[v] += ok
                # The Pareto reading, as in results.md: runs at least as good on both and better on one.
                over = [n for n, (c, m) in b.items() if dominates({"replica_seconds": c, "sla_miss_pct": m}, r)]
                undominated[v] += not over
                print(f"{profile:5} {setting:5} {trace:16} {v:40} {ac:8.0f} {am:5.2f}%  hindsight {ac / b['hindsight'][0]:.2f}x"
                      + ("" if ok else "  NOT MET: " + ", ".join(lost + ([] if within else ["hindsight"])))
                      + (f"  dominated by: {', '.join(over)}" if over else ""), flush=True)
    for v, n in met.items():
        print(f"{v}: met in {n} of {len(PROFILES) * len(TRACES)}; dominated by no other run in {undominated[v]}")


if __name__ == "__main__":
    main()
