"""Pillow as the client of an image model behind the proxy (the simulated server with `echo: true`
answers each request's prepared tensor back as `input_echo`). Sends JPEG and PNG bodies, base64 text
and TF Serving b64 instances, concurrently so they batch, and compares what reached the model with
Pillow's own decoding put through the same resize and normalisation, computed here in NumPy.
Prints JSON {"checked": N, "max_png_error": x, "max_jpeg_error": y, "problems": [...]}.

Usage: python image_client.py http://PROXY_HOST:PORT MODEL HEIGHT WIDTH
"""
import base64, io, json, sys, urllib.error, urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

base, model, H, W = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def axis(n, m):
    """Half-pixel-centre bilinear sampling along one axis: low index, high index, weight."""
    src = np.clip((np.arange(n) + 0.5) * m / n - 0.5, 0, None)
    lo = np.minimum(src.astype(int), m - 1)
    hi = np.minimum(lo + 1, m - 1)
    return lo, hi, np.where(lo + 1 < m, src - lo, 0.0)


def reference(encoded):
    img = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"), dtype=np.float64)
    ylo, yhi, yw = axis(H, img.shape[0])
    xlo, xhi, xw = axis(W, img.shape[1])
    top = img[ylo][:, xlo] * (1 - xw)[None, :, None] + img[ylo][:, xhi] * xw[None, :, None]
    bot = img[yhi][:, xlo] * (1 - xw)[None, :, None] + img[yhi][:, xhi] * xw[None, :, None]
    resized = np.clip(np.rint(top * (1 - yw)[:, None, None] + bot * yw[:, None, None]), 0, 255)
    return (resized / 255 - MEAN) / STD


def post(path, body, content_type):
    req = urllib.request.Request(base + path, data=body, headers={"content-type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


rng = np.random.default_rng(7)
cases = []
for k in range(24):
    h, w = 30 + k % 5 * 7, 40 + k % 3 * 11
    pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    fmt = "PNG" if k % 2 == 0 else "JPEG"
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    data = buf.getvalue()
    how = ["raw", "base64", "tfserving"][k % 3]
    cases.append((k, fmt, how, data))


def send(case):
    k, fmt, how, data = case
    if how == "raw":
        return post("/v2/models/%s/infer" % model, data, "image/" + fmt.lower())
    if how == "base64":
        return post("/v2/models/%s/infer" % model, base64.b64encode(data), "text/plain")
    body = json.dumps({"instances": [{"b64": base64.b64encode(data).decode()}]}).encode()
    return post("/v1/models/%s:predict" % model, body, "application/json")


problems, worst = [], {"PNG": 0.0, "JPEG": 0.0}
with ThreadPoolExecutor(max_workers=12) as pool:
    for (k, fmt, how, data), (status, reply) in zip(cases, pool.map(send, cases)):
        if status != 200:
            problems.append("case %d (%s %s): %d %s" % (k, fmt, how, status, reply))
            continue
        if how == "tfserving":
            got = np.array(reply["predictions"][0]["input_echo"])
        else:
            echo = [o for o in reply["outputs"] if o["name"] == "input_echo"][0]
            if echo["datatype"] != "FP32" or echo["shape"] != [1, H, W, 3]:
                problems.append("case %d: echo is %s %s" % (k, echo["datatype"], echo["shape"]))
                continue
            got = np.array(echo["data"]).reshape(H, W, 3)
        err = float(np.abs(got.reshape(H, W, 3) - reference(data)).max())
        worst[fmt] = max(worst[fmt], err)
        limit = 1e-4 if fmt == "PNG" else 2.0 / 255 / 0.224 + 1e-4  # JPEG: two levels of 255
        if err > limit:
            problems.append("case %d (%s %s): max difference %.5f > %.5f" % (k, fmt, how, err, limit))
# A corrupt JPEG among them gets its own 400.
status, reply = post("/v2/models/%s/infer" % model, cases[1][3][: len(cases[1][3]) // 2], "image/jpeg")
if status != 400 or "corrupt" not in reply.get("error", ""):
    problems.append("truncated JPEG: %d %s" % (status, reply))
print(json.dumps({"checked": len(cases), "max_png_error": worst["PNG"], "max_jpeg_error": worst["JPEG"],
                  "problems": problems}))
