#!/usr/bin/env python3
"""Checks the simulator against the live proxy: the same trace shape (at a reduced time scale), the
same latency profile and policy, once for real through the proxy in front of a simulated model server
on loopback and once in `mlproxy simulate` with fixed replicas. Prints SLA miss % and mean batch size
side by side; they should agree within 10%. Bounded: each live run lasts the trace (about 30 s).

Usage: benchmarks/live_vs_sim.py   (after swift build -c release)
"""
import csv, json, os, subprocess, tempfile, urllib.request

from benchlib import start, stop_all

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".build", "release")
TOXIC = "1:40.4,10:46.3,20:57.4,50:88.8,100:139.4"
SLO = 500
SEGMENT = 5
TRACES = {
    "dual-phase": [60, 60, 60, 240, 240, 240],
    "spike": [100, 100, 1200, 100, 100, 100],
}


def live(rates, tmp, seed):
    sim_port, proxy_port = 19201, 18281
    cfg = os.path.join(tmp, "live.yaml")
    with open(cfg, "w") as f:
        f.write(f"""listen: "127.0.0.1:{proxy_port}"
models:
  - {{name: m, upstream: "http://127.0.0.1:{sim_port}", policy: adaptive-sla, slo_ms: {SLO},
     max_batch_items: 128, max_inflight_batches: 1000, max_queued_items: 100000}}
""")
    try:
        start([os.path.join(BIN, "mlproxy"), "simserver", "--listen", f"127.0.0.1:{sim_port}", "--latency", TOXIC,
               "--noise", "0.05", "--replicas", "1"], f"http://127.0.0.1:{sim_port}/v2/health/ready")
        start([os.path.join(BIN, "mlproxy"), "serve", "--config", cfg, "--log-level", "error"],
              f"http://127.0.0.1:{proxy_port}/v2/health/ready")
        out = subprocess.run([os.path.join(BIN, "mlproxy-loadgen"), "--target", f"127.0.0.1:{proxy_port}", "--model", "m",
                              "--rates", ",".join(map(str, rates)), "--segment-seconds", str(SEGMENT),
                              "--count", "100000", "--max-seconds", str(len(rates) * SEGMENT), "--slo-ms", str(SLO),
                              "--seed", str(seed)], capture_output=True, text=True, timeout=300, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{sim_port}/sim/stats").read())
        r["mean_batch"] = stats["items"] / stats["requests"] if stats["requests"] else 0
        return r
    finally:
        stop_all()


def simulated(rates, tmp, seed):
    trace = os.path.join(tmp, "trace.csv")
    with open(trace, "w") as f:
        f.write("\n".join(map(str, rates)) + "\n")
    out_csv = os.path.join(tmp, "sim.csv")
    subprocess.run([os.path.join(BIN, "mlproxy"), "simulate", "--platform", "fixed", "--replicas", "1",
                    "--profile", TOXIC, "--noise", "0.05", "--trace", trace, "--segment-seconds", str(SEGMENT),
                    "--slo-ms", str(SLO), "--policy", "adaptive-sla", "--seed", str(seed), "--csv", out_csv],
                   capture_output=True, check=True)
    return next(csv.DictReader(open(out_csv)))


def main():
    tmp = tempfile.mkdtemp(prefix="mlproxy-live-vs-sim-")
    print(f"| trace | live miss % | sim miss % | live mean batch | sim mean batch | batch diff | live p99 ms | sim p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rates in TRACES.items():
        lv = live(rates, tmp, seed=11)
        sm = simulated(rates, tmp, seed=11)
        lb, sb = lv["mean_batch"], float(sm["mean_batch"])
        diff = abs(lb - sb) / max(sb, 1e-9) * 100
        print(f"| {name} | {lv['sla_miss_pct']:.2f} | {float(sm['sla_miss_pct']):.2f} | {lb:.1f} | {sb:.1f} | {diff:.1f}% | "
              f"{lv['p99_ms']:.0f} | {float(sm['p99_ms']):.0f} |", flush=True)


if __name__ == "__main__":
    main()
