"""What the stand-in HTTP servers of the tests share (the KFP API, the Kubernetes API): reading a
request, a JSON reply."""
from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from urllib.parse import SplitResult, parse_qs, urlsplit


def send_json(handler: BaseHTTPRequestHandler, code: int, body: object) -> None:
    """Answer ``handler``'s request with status ``code`` and ``body`` as JSON (Content-Length set)."""
    data = json.dumps(body).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def read_request(handler: BaseHTTPRequestHandler) -> tuple[bytes, SplitResult, dict[str, str]]:
    """``(body bytes, split URL, query as {name: first value})`` of ``handler``'s request."""
    n = int(handler.headers.get("Content-Length") or 0)
    body = handler.rfile.read(n) if n else b""
    url = urlsplit(handler.path)
    return body, url, {k: v[0] for k, v in parse_qs(url.query).items()}
