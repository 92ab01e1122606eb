"""tritonclient's HTTP client against a v2 endpoint: sends the same rows through `proxy` and `direct`,
in JSON and in the binary tensor extension (tritonclient's default), and prints JSON
{"proxy": [...], "direct": [...], "proxy_binary": [...], ...} of the 'predict' outputs for the caller
to compare.

Usage: python tritonclient_check.py PROXY_HOST:PORT DIRECT_HOST:PORT
"""
import json, sys

import numpy as np
import tritonclient.http as httpclient

rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [5.9, 3.0, 5.1, 1.8]],
                dtype=np.float32)
out = {}
for label, url in (("proxy", sys.argv[1]), ("direct", sys.argv[2])):
    client = httpclient.InferenceServerClient(url=url)
    for mode, binary in (("", False), ("_binary", True)):
        if label == "direct" and binary:
            continue  # MLServer's own binary support is not what is under test
        inp = httpclient.InferInput("predict", list(rows.shape), "FP32")
        inp.set_data_from_numpy(rows, binary_data=binary)
        res = client.infer("iris", [inp], outputs=[httpclient.InferRequestedOutput("predict", binary_data=binary)],
                           request_id="tc-1")
        out[label + mode] = res.as_numpy("predict").tolist()
        out[label + mode + "_id"] = res.get_response().get("id")
    out[label + "_meta"] = client.get_model_metadata("iris")
print(json.dumps(out))
