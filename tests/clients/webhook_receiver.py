#!/usr/bin/env python3
"""A webhook receiver that checks every request with standardwebhooks (PyPI),
the reference Standard Webhooks library, and records what it saw.

    webhook_receiver.py --secret-file F --log L [--fail-until T] [--fail-while P]
                        [--fail-delay-ms N]

Listens on 127.0.0.1 (a free port) and prints one JSON line, {"port": N},
when it is ready. For every POST it calls
`standardwebhooks.Webhook(secret).verify(body, headers)` and appends to L one
JSON line: webhook-id, webhook-timestamp, whether the signature verified
(and why not), the status it answered, the event's type and data.tx_hash,
and when it was received. It answers 500 (after --fail-delay-ms) while the
clock is before --fail-until (unix seconds) or while the file --fail-while
exists, else 200; a request whose signature does not verify gets 400.
"""

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

MAX_BODY = 1 << 20


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--secret-file", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--fail-until", type=float, default=0.0)
    p.add_argument("--fail-while")
    p.add_argument("--fail-delay-ms", type=int, default=0)
    args = p.parse_args()
    with open(args.secret_file) as f:
        webhook = Webhook(f.read().strip())
    lock = threading.Lock()
    log = open(args.log, "a", buffering=1)

    def failing() -> bool:
        if time.time() < args.fail_until:
            return True
        return bool(args.fail_while) and os.path.exists(args.fail_while)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            received = time.time()
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(min(length, MAX_BODY))
            headers = {k: v for k, v in self.headers.items()}
            record = {
                "id": headers.get("webhook-id"),
                "timestamp": headers.get("webhook-timestamp"),
                "content_type": headers.get("content-type"),
                "received_at": received,
            }
            try:
                event = webhook.verify(body, headers)
                record["valid"] = True
                record["type"] = event.get("type")
                record["tx_hash"] = (event.get("data") or {}).get("tx_hash")
                record["event"] = event
                status = 500 if failing() else 200
            except Exception as e:  # any refusal is recorded, not raised
                record["valid"] = False
                record["error"] = f"{type(e).__name__}: {e}"
                status = 400
            if status == 500 and args.fail_delay_ms:
                time.sleep(args.fail_delay_ms / 1000)
            record["status"] = status
            with lock:
                log.write(json.dumps(record) + "\n")
            answer = b"ok" if status == 200 else b"receiver refusing (test)"
            self.send_response(status)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
