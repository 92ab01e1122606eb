"""Trains a small scikit-learn model on the Iris data that ships with scikit-learn (no download) and
writes an MLServer model repository: DIR/iris/{model.joblib,model-settings.json} and DIR/settings.json.

Usage: python train_iris.py DIR HTTP_PORT GRPC_PORT METRICS_PORT [PARALLEL_WORKERS]
(PARALLEL_WORKERS: 0, inference in the server process, unless given; MLServer's own default is 1.)
"""
import json, os, sys

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

root, http_port, grpc_port, metrics_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
workers = int(sys.argv[5]) if len(sys.argv) > 5 else 0
X, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=500).fit(X, y)
os.makedirs(os.path.join(root, "iris"), exist_ok=True)
joblib.dump(model, os.path.join(root, "iris", "model.joblib"))
with open(os.path.join(root, "iris", "model-settings.json"), "w") as f:
    json.dump({"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
               "parameters": {"uri": "./model.joblib", "version": "v1"}}, f)
# MLServer's own adaptive batching off (max_batch_size 0): the proxy does the batching.
with open(os.path.join(root, "settings.json"), "w") as f:
    json.dump({"host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port,
               "metrics_port": metrics_port, "parallel_workers": workers, "load_models_at_startup": True}, f)
print("ok")
