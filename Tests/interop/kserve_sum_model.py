"""A KServe Python ModelServer (PyPI `kserve`) model for the interop tests: TF Serving/KServe v1
protocol, POST /v1/models/sum:predict with {"instances": [[...], ...]} answers {"predictions": [...]}
with each row's sum and the row's first value times 2, so a test can check every row came back to its
own client.

Usage: python kserve_sum_model.py HTTP_PORT GRPC_PORT
"""
import json, sys

import kserve


class SumModel(kserve.Model):
    def __init__(self, name):
        super().__init__(name)
        self.ready = True

    async def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, (bytes, bytearray)):
            payload = json.loads(payload)
        rows = payload["instances"]
        return {"predictions": [[float(sum(r)), float(r[0]) * 2] for r in rows]}


if __name__ == "__main__":
    http_port, grpc_port = int(sys.argv[1]), int(sys.argv[2])
    kserve.ModelServer(http_port=http_port, grpc_port=grpc_port, enable_grpc=False, workers=1).start([SumModel("sum")])
