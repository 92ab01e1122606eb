"""A tiny Seldon Core v1 model server on loopback, for the shared-fate test of a third-party backend:
POST /api/v1.0/predictions answers each row's sum, and rejects the WHOLE request with a 400 that
quotes the offending row when any value is negative (as a validating model does). After every error
it closes the connection without saying so, as MLServer does after a 500.

Usage: python seldon_stub.py PORT [--http10]   (PORT 0: the kernel picks; prints "ready PORT" when listening)
With --http10 it answers HTTP/1.0 without keep-alive, closing every connection after one reply.
"""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if status != 200:
            self.close_connection = True

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path != "/api/v1.0/predictions":
            return self.answer(404, {"status": {"code": 404, "info": "no route " + self.path}})
        rows = json.loads(body)["data"]["ndarray"]
        for i, row in enumerate(rows):
            if any(v < 0 for v in row):
                return self.answer(400, {"status": {"code": 400, "status": "FAILURE",
                                                    "info": "row %d contains a negative value: %s" % (i, row)}})
        self.answer(200, {"data": {"names": ["sum"], "ndarray": [[sum(row)] for row in rows]}, "meta": {}})


if "--http10" in sys.argv:
    Handler.protocol_version = "HTTP/1.0"
server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print(f"ready {server.server_address[1]}", flush=True)
server.serve_forever()
