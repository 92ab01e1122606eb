#!/usr/bin/env python3
"""MLProxy benchmarks, loopback only, bounded in count and time. Prints tables; never asserts.

1. Batching: open-loop Poisson load at several rates, the proxy (adaptive-sla) in front of a simulated
   model server (Iris profile, one replica serving one request at a time) vs the same server direct.
2. Passthrough: the proxy with the `none` policy vs nginx reverse-proxying to the same fast simulated
   server, wrk -t2 -c64, side by side in one run, as a ratio; CPU per request of each (task clock of
   the proxy's process and of nginx's workers, read from /proc).
3. Large requests: the added latency of one large v2 JSON request (FP32 [64, 1024] and [1, 3, 224, 224],
   floats as a Python client prints them) sent through the proxy (`none` policy) vs direct to a
   simulated server that answers at once; sequential, one connection, medians.

Usage: make bench   (or benchmarks/run.py [--quick] after `swift build -c release`)
"""
import argparse, http.client, json, os, random, re, shutil, statistics, struct, subprocess, sys, tempfile, time
import urllib.request

from benchlib import cpu_seconds, descendants, start, stop_all

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".build", "release")
def sim_stats(port):
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/sim/stats").read())


def loadgen(port, rate, count, slo, label):
    out = subprocess.run([os.path.join(BIN, "mlproxy-loadgen"), "--target", f"127.0.0.1:{port}", "--model", "iris",
                          "--rate", str(rate), "--count", str(count), "--max-seconds", "8", "--slo-ms", str(slo),
                          "--label", label], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise SystemExit(f"loadgen failed: {out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def batching(tmp, rates, slo, seconds):
    sim_port, proxy_port = 19101, 18181
    cfg = os.path.join(tmp, "batching.yaml")
    with open(cfg, "w") as f:
        f.write(f"""listen: "127.0.0.1:{proxy_port}"
models:
  - {{name: iris, upstream: "http://127.0.0.1:{sim_port}", policy: adaptive-sla, slo_ms: {slo},
     max_batch_items: 128, max_queued_items: 100000, max_inflight_batches: 1}}
""")
    rows = []
    for rate in rates:
        count = int(rate * seconds)
        row = {"rate": rate}
        for label, port in (("direct", sim_port), ("proxy", proxy_port)):
            # A fresh server per run: a saturated direct run leaves a backlog behind it.
            start([os.path.join(BIN, "mlproxy"), "simserver", "--listen", f"127.0.0.1:{sim_port}",
                   "--latency", "1:8.6,100:10.1", "--replicas", "1", "--noise", "0.05"],
                  f"http://127.0.0.1:{sim_port}/v2/health/ready")
            if label == "proxy":
                start([os.path.join(BIN, "mlproxy"), "serve", "--config", cfg, "--threads", "1", "--log-level", "warning"],
                      f"http://127.0.0.1:{proxy_port}/v2/health/ready")
            before = sim_stats(sim_port)
            r = loadgen(port, rate, count, slo, label)
            after = sim_stats(sim_port)
            batches = after["requests"] - before["requests"]
            r["mean_batch"] = (after["items"] - before["items"]) / batches if batches else 0
            row[label] = r
            stop_all()
        rows.append(row)
    stop_all()
    print(f"\n## Batching: Poisson arrivals, 1-row requests, SLO {slo} ms, simulated Iris server "
          f"(8.6 ms at 1 item, 10.1 ms at 100; 1 replica, one request at a time)\n")
    print("| rate req/s | direct thr | direct p99 ms | direct miss % | proxy thr | proxy p99 ms | proxy miss % | proxy mean batch |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        d, p = row["direct"], row["proxy"]
        fmt = lambda v: "inf" if v is None else f"{v:.1f}"
        print(f"| {row['rate']} | {fmt(d['throughput'])} | {fmt(d['p99_ms'])} | {fmt(d['sla_miss_pct'])} | "
              f"{fmt(p['throughput'])} | {fmt(p['p99_ms'])} | {fmt(p['sla_miss_pct'])} | {p['mean_batch']:.1f} |")
    return rows


def start_instant_server(port):
    """A simulated model server that answers at once, however many requests come (one thread)."""
    start([os.path.join(BIN, "mlproxy"), "simserver", "--listen", f"127.0.0.1:{port}", "--latency", "1:0,100:0",
           "--replicas", "100000", "--threads", "1"], f"http://127.0.0.1:{port}/v2/health/ready")


def wrk(port, body_file, seconds, pids=()):
    lua = body_file + ".lua"
    with open(lua, "w") as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f'local f = io.open("{body_file}")\nwrk.body = f:read("*a")\nf:close()\n')
    cpu_before = cpu_seconds(pids)
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{seconds}s", "--latency", "-s", lua,
                          f"http://127.0.0.1:{port}/v2/models/iris/infer"], capture_output=True, text=True,
                         timeout=seconds + 60)
    cpu = cpu_seconds(pids) - cpu_before
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", text)
    scale = {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    total = int(re.search(r"(\d+) requests in", text).group(1))
    return {"rps": rps, "p99_ms": float(p99.group(1)) * scale, "errors": int(non2xx.group(1)) if non2xx else 0,
            "cpu_us": cpu / total * 1e6 if pids and total else None}


def passthrough(tmp, seconds):
    if not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"):
        raise SystemExit("nginx is not installed (make bench installs nginx-light)")
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    sim_port, proxy_port, nginx_port = 19102, 18182, 18183
    start_instant_server(sim_port)
    cfg = os.path.join(tmp, "passthrough.yaml")
    with open(cfg, "w") as f:
        f.write(f"""listen: "127.0.0.1:{proxy_port}"
models:
  - {{name: iris, upstream: "http://127.0.0.1:{sim_port}", policy: none, max_batch_items: 1,
     max_inflight_batches: 256, max_queued_items: 100000}}
""")
    proxy_proc = start([os.path.join(BIN, "mlproxy"), "serve", "--config", cfg, "--threads", "2", "--log-level",
                        "warning"], f"http://127.0.0.1:{proxy_port}/v2/health/ready")
    ngx = os.path.join(tmp, "nginx")
    os.makedirs(ngx, exist_ok=True)
    with open(os.path.join(ngx, "nginx.conf"), "w") as f:
        f.write(f"""worker_processes 2;
daemon off;
pid {ngx}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {ngx}/body; proxy_temp_path {ngx}/proxy;
  fastcgi_temp_path {ngx}/fcgi; uwsgi_temp_path {ngx}/uwsgi; scgi_temp_path {ngx}/scgi;
  upstream sim {{ server 127.0.0.1:{sim_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{nginx_port};
    location / {{ proxy_pass http://sim; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
""")
    nginx_proc = start(["nginx", "-p", ngx, "-c", os.path.join(ngx, "nginx.conf")],
                       f"http://127.0.0.1:{nginx_port}/v2/health/ready")
    body = os.path.join(tmp, "body.json")
    with open(body, "w") as f:
        f.write('{"id":"1","inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[5.1,3.5,1.4,0.2]}]}')
    direct = wrk(sim_port, body, seconds)
    proxy = wrk(proxy_port, body, seconds, pids=[proxy_proc.pid])
    nginx = wrk(nginx_port, body, seconds, pids=descendants(nginx_proc.pid))
    stop_all()
    print(f"\n## Passthrough: `none` policy vs nginx, wrk -t2 -c64 -d{seconds}s, 1-row v2 JSON, fast simulated upstream\n")
    print("| path | req/s | p99 ms | non-2xx | CPU us per request (the proxy's own) |")
    print("|---|---:|---:|---:|---:|")
    for name, r in (("direct to upstream", direct), ("nginx -> upstream", nginx), ("mlproxy -> upstream", proxy)):
        cpu = "" if r["cpu_us"] is None else f"{r['cpu_us']:.1f}"
        print(f"| {name} | {r['rps']:.0f} | {r['p99_ms']:.2f} | {r['errors']} | {cpu} |")
    print(f"\nmlproxy / nginx: rate {proxy['rps'] / nginx['rps']:.2f}x, p99 {proxy['p99_ms'] / nginx['p99_ms']:.2f}x, "
          f"CPU per request {proxy['cpu_us'] / nginx['cpu_us']:.2f}x")
    return direct, proxy, nginx


def python_client_text(shape, seed):
    """A v2 JSON request of random FP32 values printed as a Python client prints numpy float32 values
    (the double's repr: up to 17 digits)."""
    rng = random.Random(seed)
    n = 1
    for d in shape:
        n *= d
    values = (struct.unpack("f", struct.pack("f", rng.uniform(-50, 50)))[0] for _ in range(n))
    return ('{"inputs":[{"name":"x","datatype":"FP32","shape":' + json.dumps(shape) + ',"data":['
            + ",".join(repr(v) for v in values) + "]}]}").encode()


def timed_posts(port, body, count):
    """`count` sequential POSTs of `body` on one keep-alive connection; their latencies in ms."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            conn.request("POST", "/v2/models/iris/infer", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            answer = r.read()
            times.append((time.perf_counter() - t0) * 1000)
            if r.status != 200:
                raise SystemExit(f"large request answered {r.status}: {answer[:300]!r}")
    finally:
        conn.close()
    return times


def large_requests(tmp, count):
    sim_port, proxy_port = 19103, 18184
    start_instant_server(sim_port)
    cfg = os.path.join(tmp, "large.yaml")
    with open(cfg, "w") as f:
        f.write(f"""listen: "127.0.0.1:{proxy_port}"
models:
  - {{name: iris, upstream: "http://127.0.0.1:{sim_port}", policy: none, max_batch_items: 256}}
""")
    start([os.path.join(BIN, "mlproxy"), "serve", "--config", cfg, "--threads", "2", "--log-level", "warning"],
          f"http://127.0.0.1:{proxy_port}/v2/health/ready")
    rows = []
    for shape in ([64, 1024], [1, 3, 224, 224]):
        body = python_client_text(shape, seed=7)
        timed_posts(sim_port, body, 3)  # warm both paths up
        timed_posts(proxy_port, body, 3)
        direct, proxy = [], []
        for _ in range(count):  # interleaved, so drift hits both alike
            direct += timed_posts(sim_port, body, 1)
            proxy += timed_posts(proxy_port, body, 1)
        rows.append((shape, len(body), statistics.median(direct), statistics.median(proxy)))
    stop_all()
    print(f"\n## Large requests: one v2 JSON request at a time, through the proxy (`none`) vs direct, "
          f"median of {count}\n")
    print("| tensor | JSON MB | direct ms | through the proxy ms | added ms |")
    print("|---|---:|---:|---:|---:|")
    for shape, size, d, p in rows:
        print(f"| FP32 {shape} | {size / 1e6:.2f} | {d:.1f} | {p:.1f} | {p - d:.1f} |")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rates and shorter runs")
    ap.add_argument("--only", choices=["batching", "passthrough", "large"])
    args = ap.parse_args()
    for b in ("mlproxy", "mlproxy-loadgen"):
        if not os.path.exists(os.path.join(BIN, b)):
            raise SystemExit(f"{BIN}/{b} is missing: run `swift build -c release` (or make bench)")
    tmp = tempfile.mkdtemp(prefix="mlproxy-bench-")
    try:
        if args.only in (None, "batching"):
            rates = [50, 200, 800] if args.quick else [50, 100, 200, 400, 800, 1600, 3200]
            batching(tmp, rates, slo=100, seconds=2 if args.quick else 5)
        if args.only in (None, "passthrough"):
            passthrough(tmp, seconds=5 if args.quick else 10)
        if args.only in (None, "large"):
            large_requests(tmp, count=10 if args.quick else 30)
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
