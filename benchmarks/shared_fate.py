#!/usr/bin/env python3
"""Shared fate against a real MLServer: good requests lost when bad ones are mixed in.

MLServer (mlserver-sklearn, from PyPI) serves a regressor whose model-settings declare `features`
FP64 [-1, 10]. For each share of bad requests (0, 5, 10, 30% by default) a fresh proxy (default
policy, SLO 1 s, max 64 items) gets N requests from 48 concurrent keep-alive clients: good rows shuffled
with bad ones of five kinds in turn (wrong input name, wrong width, FP32 instead of FP64, an extra
input, a NaN row sent as .npy). A good request counts as answered when it gets 200 with the value
MLServer gives it directly (to 1e-9: BLAS rounds a 40-row batch differently from one row).
A bad request counts as answered on its own when it gets an error (4xx/5xx) whose message is about it.
Loopback only; bounded by N and a 30 s timeout per request.

Usage: benchmarks/shared_fate.py [--proxy BIN] [--label NAME] [--requests 340] [--bad 0,5,10,30]
(`make bench-shared-fate` runs it on the release build)
"""
import argparse, http.client, json, os, queue, random, struct, subprocess, sys, tempfile, threading

from benchlib import start, stop_all

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv-interop", "bin")
KINDS = ["wrong_name", "wrong_width", "wrong_type", "extra_input", "nan"]


def body(i, kind):
    row = [i + k / 8 for k in range(10)]
    def v2(name, dt, values, extra=""):
        inp = {"name": name, "datatype": dt, "shape": [1, len(values)], "data": values}
        doc = {"id": f"r{i}", "inputs": [inp] + ([json.loads(extra)] if extra else [])}
        return json.dumps(doc).encode(), "application/json"
    if kind == "good": return v2("features", "FP64", row)
    if kind == "wrong_name": return v2("feature", "FP64", row)
    if kind == "wrong_width": return v2("features", "FP64", row[:9])
    if kind == "wrong_type": return v2("features", "FP32", row)
    if kind == "extra_input":
        return v2("features", "FP64", row, '{"name": "weights", "datatype": "FP64", "shape": [1, 1], "data": [1]}')
    row[3] = float("nan")
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 10), }"
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + struct.pack("<10d", *row), "application/x-npy"


def send_all(port, path, requests, concurrency):
    """Sends every (body, content type) once; returns [(status, headers, body)] in order."""
    todo, out = queue.Queue(), [None] * len(requests)
    for i, r in enumerate(requests): todo.put((i, r))
    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            try: i, (data, ctype) = todo.get_nowait()
            except queue.Empty: return
            for attempt in range(2):  # the client reconnects if the proxy closed its keep-alive connection
                try:
                    conn.request("POST", path, data, {"content-type": ctype})
                    resp = conn.getresponse()
                    out[i] = (resp.status, dict(resp.getheaders()), resp.read())
                    break
                except (http.client.HTTPException, OSError) as e:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    out[i] = (0, {}, str(e).encode())
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads: t.start()
    for t in threads: t.join()
    return out


def prediction(raw):
    try:
        return json.loads(raw)["outputs"][0]["data"][0]
    except Exception:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proxy", default=os.path.join(ROOT, ".build", "release", "mlproxy"))
    ap.add_argument("--label", default="this build")
    ap.add_argument("--requests", type=int, default=340)
    ap.add_argument("--bad", default="0,5,10,30", help="percentages of bad requests")
    ap.add_argument("--concurrency", type=int, default=48)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mlproxy-shared-fate-")
    mls_port, proxy_port = 18600, 18690
    subprocess.run([os.path.join(VENV, "python"), os.path.join(ROOT, "Tests", "interop", "train_regressor.py"), tmp,
                    str(mls_port), str(mls_port + 1), str(mls_port + 2)], check=True, capture_output=True)
    rows = []
    try:
        for pct in [int(p) for p in args.bad.split(",")]:
            # A fresh MLServer per cell: one that an earlier cell wedged would spoil the next.
            start([os.path.join(VENV, "mlserver"), "start", tmp],
                  f"http://127.0.0.1:{mls_port}/v2/models/regressor/ready", cwd=tmp, ready_tries=600)
            n_bad = round(args.requests * pct / 100)
            kinds = ["good"] * (args.requests - n_bad) + [KINDS[k % len(KINDS)] for k in range(n_bad)]
            random.Random(args.seed).shuffle(kinds)
            requests = [body(i, k) for i, k in enumerate(kinds)]
            good = [i for i, k in enumerate(kinds) if k == "good"]
            direct = send_all(mls_port, "/v2/models/regressor/infer", [requests[i] for i in good], 8)
            want = {i: prediction(r[2]) for i, r in zip(good, direct)}
            cfg = os.path.join(tmp, "proxy.yaml")
            with open(cfg, "w") as f:
                f.write(f'listen: "127.0.0.1:{proxy_port}"\nmodels:\n'
                        f'  - {{name: regressor, upstream: "http://127.0.0.1:{mls_port}", slo_ms: 1000, max_batch_items: 64,\n'
                        f'     codecs: [json, {{name: npy, params: {{input_name: features}}}}]}}\n')
            proxy = start([args.proxy, "serve", "--config", cfg, "--log-level", "error"],
                          f"http://127.0.0.1:{proxy_port}/v2/health/ready")
            # Let the proxy read the model's metadata (builds that read it do so at start).
            subprocess.run(["sleep", "0.5"])
            got = send_all(proxy_port, "/v2/models/regressor/infer", requests, args.concurrency)
            lost = [i for i in good if got[i][0] != 200 or prediction(got[i][2]) is None
                    or abs(prediction(got[i][2]) - want[i]) > 1e-9 * max(1, abs(want[i]))]
            bad = [i for i, k in enumerate(kinds) if k != "good"]
            own = [i for i in bad if got[i][0] >= 400 and got[i][0] not in (502, 503, 504)]
            wrong_200 = [i for i in bad if got[i][0] == 200]
            statuses = {}
            for i in lost: statuses[got[i][0]] = statuses.get(got[i][0], 0) + 1
            rows.append((pct, len(good), len(lost), statuses, len(bad), len(own), len(wrong_200)))
            print(f"  {args.label} {pct}% bad: {len(lost)} of {len(good)} good lost {statuses}, "
                  f"{len(own)} of {len(bad)} bad got their own error, {len(wrong_200)} bad answered 200",
                  file=sys.stderr, flush=True)
            proxy.terminate()
            try:
                proxy.wait(timeout=40)  # it drains what it still holds (drain_timeout_ms, 30 s by default)
            except subprocess.TimeoutExpired:
                print(f"  {args.label}: the proxy did not exit 40 s after SIGTERM; killed", file=sys.stderr)
                proxy.kill(); proxy.wait()
            try:
                alive = http.client.HTTPConnection("127.0.0.1", mls_port, timeout=5)
                alive.request("GET", "/v2/models/regressor/ready")
                alive = alive.getresponse().status == 200
            except OSError:
                alive = False
            if not alive:
                print(f"  {args.label} {pct}% bad: MLServer no longer answers after this cell", file=sys.stderr)
            rows[-1] += (alive,)
            stop_all()
    finally:
        stop_all()
    print(f"\n## Shared fate against MLServer 1.7.1 ({args.label}): {args.requests} requests, {args.concurrency} clients\n")
    print("| bad share | good requests | good lost | lost by status (0: no answer in 30 s) | bad requests | bad with their own error | bad answered 200 | MLServer alive after |")
    print("|---:|---:|---:|---|---:|---:|---:|---|")
    for pct, g, l, st, b, o, w, alive in rows:
        pl = f"{100 * l / g:.1f}%" if g else "-"
        print(f"| {pct}% | {g} | {l} ({pl}) | {st or '-'} | {b} | {o} | {w} | {'yes' if alive else 'no'} |")


if __name__ == "__main__":
    main()
