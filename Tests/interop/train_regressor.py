"""Trains a scikit-learn linear regressor on 10 synthetic features (no download) and writes an MLServer
model repository whose model-settings.json declares the model's signature, as a careful user would:
DIR/regressor/{model.joblib,model-settings.json} and DIR/settings.json. MLServer then publishes the
signature in its v2 metadata (GET /v2/models/regressor), where the proxy reads it.

Usage: python train_regressor.py DIR HTTP_PORT GRPC_PORT METRICS_PORT
"""
import json, os, sys

import joblib
import numpy as np
from sklearn.linear_model import LinearRegression

root, http_port, grpc_port, metrics_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(7)
X = rng.normal(size=(200, 10))
y = X @ np.arange(1, 11) + 0.5
model = LinearRegression().fit(X, y)
os.makedirs(os.path.join(root, "regressor"), exist_ok=True)
joblib.dump(model, os.path.join(root, "regressor", "model.joblib"))
with open(os.path.join(root, "regressor", "model-settings.json"), "w") as f:
    json.dump({"name": "regressor", "implementation": "mlserver_sklearn.SKLearnModel",
               "inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, 10]}],
               "outputs": [{"name": "predict", "datatype": "FP64", "shape": [-1, 1]}],
               "parameters": {"uri": "./model.joblib", "version": "v1"}}, f)
with open(os.path.join(root, "settings.json"), "w") as f:
    json.dump({"host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port,
               "metrics_port": metrics_port, "parallel_workers": 0, "load_models_at_startup": True}, f)
print("ok")
