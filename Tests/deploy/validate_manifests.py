#!/usr/bin/env python3
"""Validates the deploy/ manifests: core Kubernetes kinds with kubernetes-validate (strict: unknown
fields fail), Knative Services against Tests/deploy/knative-serving-v1-service.schema.json plus the
autoscaling annotations Knative knows. Writes each ConfigMap's proxy config to OUT_DIR (for `mlproxy
check`) and prints {"checked": N, "problems": [...], "configs": [...], "timing": [...]}.

    validate_manifests.py OUT_DIR FILE...
"""
import json
import os
import sys

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.34.0"
HERE = os.path.dirname(os.path.abspath(__file__))

# Knative's per-revision autoscaling annotations (current names and the older camel-case ones).
AUTOSCALING = {
    "class", "metric", "target", "target-utilization-percentage", "target-burst-capacity", "window",
    "panic-window-percentage", "panic-threshold-percentage", "min-scale", "max-scale", "initial-scale",
    "scale-down-delay", "activation-scale", "minScale", "maxScale", "initialScale", "scaleDownDelay",
    "targetUtilizationPercentage", "targetBurstCapacity", "panicWindowPercentage", "panicThresholdPercentage",
}
METRICS = {"concurrency", "rps", "cpu", "memory"}


def knative_problems(doc, schema, where):
    problems = []
    validator = jsonschema.Draft7Validator(schema)
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
        path = ".".join(str(p) for p in e.path)
        problems.append(f"{where}: {path}: {e.message}")
    annotations = ((doc.get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations", {}) or {}
    for key, value in annotations.items():
        if not key.startswith("autoscaling.knative.dev/"):
            continue
        name = key.split("/", 1)[1]
        if name not in AUTOSCALING:
            problems.append(f"{where}: annotation {key} is not one Knative's autoscaler reads")
        elif name in ("min-scale", "max-scale", "target", "initial-scale") and not str(value).isdigit():
            problems.append(f"{where}: annotation {key} must be a whole number, got {value!r}")
        elif name == "metric" and value not in METRICS:
            problems.append(f"{where}: annotation {key} must be one of {sorted(METRICS)}")
    lo, hi = annotations.get("autoscaling.knative.dev/min-scale"), annotations.get("autoscaling.knative.dev/max-scale")
    if lo and hi and lo.isdigit() and hi.isdigit() and int(lo) > int(hi):
        problems.append(f"{where}: min-scale {lo} is above max-scale {hi}")
    return problems


def grace_seconds(doc):
    """How long the platform waits after SIGTERM before SIGKILL, for the pods this object makes."""
    if doc.get("kind") == "Deployment":
        return doc["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    if doc.get("apiVersion", "").startswith("serving.knative.dev/"):
        # Knative sets the pod's grace period to the revision's timeoutSeconds (default 300).
        return doc["spec"]["template"]["spec"].get("timeoutSeconds", 300)
    return None


def mounted_configmaps(doc):
    spec = doc["spec"]["template"]["spec"]
    return {v["configMap"]["name"] for v in spec.get("volumes", []) if "configMap" in v}


def main():
    out_dir, files = sys.argv[1], sys.argv[2:]
    with open(os.path.join(HERE, "knative-serving-v1-service.schema.json")) as f:
        schema = json.load(f)
    problems, configs, timing = [], [], []
    checked = 0
    docs = []
    for path in files:
        with open(path) as f:
            for i, doc in enumerate(yaml.safe_load_all(f)):
                if doc:
                    docs.append((f"{os.path.basename(path)}[{i}] {doc.get('kind')} {doc.get('metadata', {}).get('name')}",
                                 path, doc))
    proxy_configs = {}
    for where, path, doc in docs:
        checked += 1
        if doc.get("apiVersion", "").startswith("serving.knative.dev/"):
            problems += knative_problems(doc, schema, where)
        else:
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                path_text = ".".join(str(p) for p in e.path)
                problems.append(f"{where}: {path_text}: {e.message}")
            except Exception as e:  # a kind kubernetes-validate has no schema for, and the like
                problems.append(f"{where}: {type(e).__name__}: {e}")
        if doc.get("kind") == "ConfigMap" and "config.yaml" in doc.get("data", {}):
            name = f"{os.path.splitext(os.path.basename(path))[0]}-{os.path.basename(os.path.dirname(path))}.yaml"
            target = os.path.join(out_dir, name)
            with open(target, "w") as f:
                f.write(doc["data"]["config.yaml"])
            configs.append(target)
            proxy_configs[(path, doc["metadata"]["name"])] = yaml.safe_load(doc["data"]["config.yaml"])
    # The drain fits in the grace period: shutdown delay + drain timeout < what the platform waits.
    for where, path, doc in docs:
        grace = grace_seconds(doc) if doc.get("kind") in ("Deployment", "Service") and "template" in doc.get("spec", {}) else None
        if grace is None:
            continue
        for name in mounted_configmaps(doc):
            cfg = proxy_configs.get((path, name))
            if cfg is None:
                continue
            need = (cfg.get("shutdown_delay_ms", 0) + cfg.get("drain_timeout_ms", 30000)) / 1000
            timing.append({"object": where, "grace_seconds": grace, "shutdown_plus_drain_seconds": need})
            if need >= grace:
                problems.append(f"{where}: shutdown_delay_ms + drain_timeout_ms = {need} s is not below the "
                                f"grace period of {grace} s: the pod would be killed mid-drain")
    print(json.dumps({"checked": checked, "problems": problems, "configs": configs, "timing": timing}))


if __name__ == "__main__":
    main()
