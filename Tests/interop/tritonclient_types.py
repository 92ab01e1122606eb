"""tritonclient's HTTP client against the proxy in front of the simulated server with `echo: true`:
requests mixing binary and JSON inputs of several datatypes (FP16, BYTES, BOOL, INT8, UINT16, FP64),
sent concurrently so they are batched, asking for some outputs in binary and some in JSON.
Each echoed output must equal what that request sent, bit for bit and with its datatype, and "sum"
must be that request's row sums. Prints JSON {"checked": N, "problems": [...]}.

Usage: python tritonclient_types.py PROXY_HOST:PORT MODEL
"""
import json, sys

import numpy as np
import tritonclient.http as httpclient

url, model = sys.argv[1], sys.argv[2]
client = httpclient.InferenceServerClient(url=url, concurrency=8)
problems, pending = [], []

for k in range(8):
    rows = 1 + k % 3
    f16 = (np.arange(rows * 3, dtype=np.float16).reshape(rows, 3) + np.float16(0.5) * k)
    words = np.array([[("w%d-%d" % (k, r)).encode() + b"\x00\xff"] for r in range(rows)], dtype=np.object_)
    flags = np.array([[(k + r) % 2 == 0] for r in range(rows)], dtype=np.bool_)
    i8 = np.full((rows, 2), -k, dtype=np.int8)
    u16 = np.full((rows, 2), 1000 + k, dtype=np.uint16)
    f64 = np.full((rows, 1), k / 3, dtype=np.float64)
    sent = {"f16": (f16, "FP16", True), "s": (words, "BYTES", True), "b": (flags, "BOOL", True),
            "i8": (i8, "INT8", False), "u16": (u16, "UINT16", True), "f64": (f64, "FP64", False)}
    inputs = []
    for name, (arr, dt, binary) in sent.items():
        inp = httpclient.InferInput(name, list(arr.shape), dt)
        inp.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(inp)
    outputs = [httpclient.InferRequestedOutput("sum", binary_data=True)]
    # Binary where JSON cannot carry the values (BYTES that are not UTF-8) or loses nothing by it; JSON for the rest.
    outputs += [httpclient.InferRequestedOutput(n + "_echo", binary_data=n in ("f16", "s", "u16")) for n in sent]
    expected_sum = (f16.astype(np.float64).sum(1) + np.array([len(w[0]) for w in words]) + flags.sum(1) +
                    i8.astype(np.float64).sum(1) + u16.astype(np.float64).sum(1) + f64.sum(1))
    pending.append((k, sent, expected_sum, client.async_infer(model, inputs, outputs=outputs, request_id="t%d" % k)))

for k, sent, expected_sum, req in pending:
    try:
        res = req.get_result()
    except Exception as e:  # a failed request is a problem to report, not a crash
        problems.append("request %d failed: %s" % (k, e))
        continue
    if res.get_response().get("id") != "t%d" % k:
        problems.append("request %d got id %r" % (k, res.get_response().get("id")))
    got_sum = res.as_numpy("sum").reshape(-1)
    if not np.allclose(got_sum, expected_sum, rtol=1e-6):
        problems.append("request %d sum %s, expected %s" % (k, got_sum.tolist(), expected_sum.tolist()))
    for name, (arr, dt, _) in sent.items():
        out = res.as_numpy(name + "_echo")
        meta = res.get_output(name + "_echo")
        if meta is None or meta["datatype"] != dt:
            problems.append("request %d: %s_echo datatype %s, expected %s" % (k, name, meta and meta["datatype"], dt))
        elif out is None or out.shape != arr.shape or not np.array_equal(out, arr):
            problems.append("request %d: %s_echo %r != sent %r" % (k, name, out, arr))
print(json.dumps({"checked": len(pending), "problems": problems}))
