"""A NumPy client: posts arrays as .npy to URL and checks the .npy replies. Prints JSON results.

Usage: python npy_client.py URL
"""
import io, json, sys, urllib.error, urllib.request

import numpy as np


def post(url, body, content_type="application/x-npy"):
    req = urllib.request.Request(url, data=body, headers={"content-type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("content-type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type"), e.read()


def npy(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


url = sys.argv[1]
out = {}
x = np.arange(12, dtype=np.float32).reshape(3, 4) / 4
status, ctype, body = post(url, npy(x))
out["ok_status"], out["ok_type"] = status, ctype
if status == 200:
    y = np.load(io.BytesIO(body))
    out["ok_dtype"], out["ok_shape"] = str(y.dtype), list(y.shape)
    out["ok_values"], out["expected"] = y.ravel().tolist(), x.sum(axis=1).tolist()
ints = np.array([[1, 2], [3, 4]], dtype=np.int16)
status, _, body = post(url, npy(ints))
out["int16"] = np.load(io.BytesIO(body)).ravel().tolist() if status == 200 else status
for name, bad in (("big_endian", npy(x.astype(">f4"))), ("fortran", npy(np.asfortranarray(x))),
                  ("truncated", npy(x)[:-5]), ("not_npy", b"hello")):
    status, _, body = post(url, bad)
    out[name] = [status, json.loads(body).get("error", "") if body.startswith(b"{") else ""]
print(json.dumps(out))
