"""What the stand-in HTTP servers of the tests share (the KFP API, the Kubernetes API): a JSON reply."""
from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler


def send_json(handler: BaseHTTPRequestHandler, code: int, body: object) -> None:
    """Answer ``handler``'s request with status ``code`` and ``body`` as JSON (Content-Length set)."""
    data = json.dumps(body).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
