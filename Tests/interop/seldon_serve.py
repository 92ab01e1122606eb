"""Seldon Core v1's own REST microservice (seldon_core.wrapper: the Flask app `seldon-core-microservice`
serves) for a user model, on loopback (the command binds every interface, which the tests must not).

The model answers each row's sum, and rejects the whole request when any value is negative, naming
the rows: Seldon turns the exception into a 500 with {"status": {"info": ...}} and closes the
connection, as a validating model behind Seldon does.

Usage: seldon_serve.py   (prints "ready PORT" once listening on a port the kernel picked)
"""
import logging
import os
import signal

import numpy as np
from seldon_core.metrics import SeldonMetrics
from seldon_core.wrapper import get_rest_microservice
from werkzeug.serving import make_server


class RowSum:
    def predict(self, X, features_names=None):
        X = np.asarray(X, dtype=float)
        negative = np.nonzero((X < 0).any(axis=1))[0].tolist()
        if negative:
            raise ValueError("negative values in rows %s" % negative)
        return X.sum(axis=1, keepdims=True)


logging.getLogger("werkzeug").setLevel(logging.ERROR)
# The test runner starts this with signals blocked (a mask its threads hold): take SIGTERM back.
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
# SeldonMetrics keeps its counters in a multiprocessing Manager: a server process of its own, which
# would outlive this one (holding the test's pipes) unless shut down on SIGTERM.
metrics = SeldonMetrics()


def stop(*_):
    metrics._manager.shutdown()
    os._exit(0)


signal.signal(signal.SIGTERM, stop)
app = get_rest_microservice(RowSum(), metrics)
server = make_server("127.0.0.1", 0, app, threaded=True)
print("ready %d" % server.server_port, flush=True)
server.serve_forever()
