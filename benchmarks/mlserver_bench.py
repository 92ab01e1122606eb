#!/usr/bin/env python3
"""MLServer (mlserver-sklearn, from PyPI) three ways, in one run, loopback only and bounded:
  1. direct, its own batching off;
  2. direct, its own adaptive batching on (max_batch_size 32, max_batch_time 10 ms);
  3. behind the proxy (adaptive-sla, SLO 100 ms), its own batching off.
For each, open-loop Poisson load of 1-row requests at rising rates (4 s each) until more than 1% of
requests miss the 100 ms SLO; prints the highest rate that stayed within it and its p99, and the CPU
each process used at that rate and at the first rate that missed (cores: CPU seconds / wall seconds;
the machine has two), which says what holds the rate.

Usage: make interop-deps && swift build -c release && benchmarks/mlserver_bench.py
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time

from benchlib import cpu_seconds, descendants, start, stop_all

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".build", "release")
VENV = os.path.join(ROOT, ".venv-interop", "bin")
RATES = [100, 200, 400, 800, 1200, 1600, 2400, 3200, 4800, 6400, 9600, 12800, 16000, 19200]
SLO = 100


WORKERS = 0


def mlserver(root, port, own_batching):
    subprocess.run([os.path.join(VENV, "python"), os.path.join(ROOT, "Tests", "interop", "train_iris.py"), root,
                    str(port), str(port + 1), str(port + 2), str(WORKERS)], check=True, capture_output=True)
    if own_batching:
        path = os.path.join(root, "iris", "model-settings.json")
        settings = json.load(open(path))
        settings.update({"max_batch_size": 32, "max_batch_time": 0.01})
        json.dump(settings, open(path, "w"))
    return start([os.path.join(VENV, "mlserver"), "start", root], f"http://127.0.0.1:{port}/v2/models/iris/ready",
                 cwd=root, ready_tries=600)


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def sweep(port, label, watched):
    """`watched`: name -> pid of each server in the path; their CPU (with their child processes) and
    the load generator's is recorded per rate. Returns (best result, its CPU, the first miss's CPU)."""
    best, best_cpu = None, None
    for rate in RATES:
        trees = {name: descendants(pid) for name, pid in watched.items()}
        before = {name: cpu_seconds(t) for name, t in trees.items()}
        gen_before, t0 = children_cpu(), time.monotonic()
        out = subprocess.run([os.path.join(BIN, "mlproxy-loadgen"), "--target", f"127.0.0.1:{port}", "--model", "iris",
                              "--rate", str(rate), "--count", str(rate * 4), "--max-seconds", "4", "--slo-ms", str(SLO),
                              "--label", label, "--connections", "512"], capture_output=True, text=True, timeout=120)
        wall = time.monotonic() - t0
        cpu = {name: (cpu_seconds(t) - before[name]) / wall for name, t in trees.items()}
        cpu["load generator"] = (children_cpu() - gen_before) / wall
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {label} {rate} req/s: miss {r['sla_miss_pct']}%, p99 {r['p99_ms']} ms, mean batch seen "
              f"{r['mean_batch_seen']}, cores: " + ", ".join(f"{n} {c:.2f}" for n, c in cpu.items()),
              file=sys.stderr, flush=True)
        if r["sla_miss_pct"] is None or r["sla_miss_pct"] > 1.0:
            return best, best_cpu, (rate, cpu)
        best, best_cpu = r, (rate, cpu)
    return best, best_cpu, None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy-params", default="{}", help="adaptive-sla parameters for the proxy, as a YAML/JSON mapping")
    ap.add_argument("--only-proxy", action="store_true", help="skip the two direct runs")
    ap.add_argument("--max-batch-items", type=int, default=64, help="the proxy's max_batch_items")
    ap.add_argument("--max-inflight-batches", type=int, default=2, help="the proxy's max_inflight_batches")
    ap.add_argument("--parallel-workers", type=int, default=0,
                    help="MLServer's parallel_workers (0: inference in the server process; MLServer's default is 1, "
                         "which MLServer 1.7.1 could not start with here: uvloop 'no current event loop')")
    args = ap.parse_args()
    global WORKERS
    WORKERS = args.parallel_workers
    print(f"MLServer parallel_workers: {WORKERS}", flush=True)
    for b in ("mlproxy", "mlproxy-loadgen"):
        if not os.path.exists(os.path.join(BIN, b)):
            sys.exit(f"{BIN}/{b} is missing: swift build -c release")
    if not os.path.exists(os.path.join(VENV, "mlserver")):
        sys.exit("MLServer is missing: make interop-deps")
    tmp = tempfile.mkdtemp(prefix="mlproxy-mlserver-bench-")
    rows = []
    try:
        if not args.only_proxy:
            server = mlserver(os.path.join(tmp, "plain"), 18701, False)
            rows.append(("MLServer direct (own batching off)", sweep(18701, "direct", {"MLServer": server.pid})))
            stop_all()
            server = mlserver(os.path.join(tmp, "batching"), 18711, True)
            rows.append(("MLServer direct (own adaptive batching, 32 / 10 ms)",
                         sweep(18711, "own-batching", {"MLServer": server.pid})))
            stop_all()
        server = mlserver(os.path.join(tmp, "behind"), 18721, False)
        cfg = os.path.join(tmp, "proxy.yaml")
        with open(cfg, "w") as f:
            f.write(f"""listen: "127.0.0.1:18730"
models:
  - {{name: iris, upstream: "http://127.0.0.1:18721", policy: adaptive-sla, slo_ms: {SLO},
     policy_params: {args.policy_params}, max_batch_items: {args.max_batch_items},
     max_inflight_batches: {args.max_inflight_batches}, max_queued_items: 100000}}
""")
        proxy = start([os.path.join(BIN, "mlproxy"), "serve", "--config", cfg, "--log-level", "error"],
                      "http://127.0.0.1:18730/v2/health/ready")
        rows.append(("MLServer behind mlproxy (adaptive-sla)",
                     sweep(18730, "proxy", {"MLServer": server.pid, "mlproxy": proxy.pid})))
    finally:
        stop_all()
    print(f"\n| setup | highest rate with <= 1% over {SLO} ms (rows/s) | p99 ms at that rate |")
    print("|---|---:|---:|")
    for name, (r, _, _) in rows:
        print(f"| {name} | {r['rate'] if r else 'none'} | {r['p99_ms'] if r else '-'} |")
    print("\nCPU of each process, in cores (2 on this machine), at the highest rate held and the first missed:\n")
    print("| setup | rate req/s | held? | MLServer | mlproxy | load generator |")
    print("|---|---:|---|---:|---:|---:|")
    for name, (_, held, missed) in rows:
        for cell, word in ((held, "yes"), (missed, "no")):
            if cell:
                rate, cpu = cell
                proxy_cores = f"{cpu['mlproxy']:.2f}" if "mlproxy" in cpu else "-"
                print(f"| {name} | {rate} | {word} | {cpu['MLServer']:.2f} | {proxy_cores} | "
                      f"{cpu['load generator']:.2f} |")
    if len(rows) < 3:
        return
    base = rows[0][1][0]["rate"] if rows[0][1][0] else None
    own = rows[1][1][0]["rate"] if rows[1][1][0] else None
    proxy = rows[2][1][0]["rate"] if rows[2][1][0] else None
    if base and proxy:
        print(f"\nproxy vs direct: {proxy / base:.1f}x" + (f"; proxy vs MLServer's own batching: {proxy / own:.1f}x" if own else ""))


if __name__ == "__main__":
    main()
