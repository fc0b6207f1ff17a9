#!/usr/bin/env python3
"""A demo destination for the README walkthrough: accepts records on any path, prints
them, refuses a record carrying "fail": true for good (422), and answers 503 to the first
delivery of a record carrying "flaky": true (Freight retries it). Standard library only.

    python3 scripts/sink.py [port]      # default 9000
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

seen = set()


class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        key = self.headers.get("Idempotency-Key", "")
        try:
            record = json.loads(body)
        except ValueError:
            record = {}
        if record.get("fail"):
            status = 422
        elif record.get("flaky") and key not in seen:
            status = 503
        else:
            status = 200
        seen.add(key)
        print(f"{status} {key} {body.decode(errors='replace')}", flush=True)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_PATCH = do_POST

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    print(f"sink listening on http://127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()
