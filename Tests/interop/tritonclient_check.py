"""tritonclient's HTTP client against a v2 endpoint: sends the same rows through `proxy` and `direct`
and prints JSON {"proxy": [...], "direct": [...]} of the 'predict' outputs, so the caller compares.

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
    inp = httpclient.InferInput("predict", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows, binary_data=False)
    res = client.infer("iris", [inp], outputs=[httpclient.InferRequestedOutput("predict", binary_data=False)],
                       request_id="tc-1")
    out[label] = res.as_numpy("predict").tolist()
    out[label + "_id"] = res.get_response().get("id")
print(json.dumps(out))
