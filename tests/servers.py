"""Real OpenAI-compatible servers for tests, on loopback only.

- :func:`start_llama_server`: llama-cpp-python's server on the embedded SmolLM2-135M GGUF.
- :class:`FaultProxy`: a small HTTP proxy in front of it that can answer 429 (with Retry-After),
  500, a malformed completion, or stall past the client's timeout, for the next N requests, and
  counts what reached the upstream server.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llama_server(gguf: str, log_path: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", "4096", "--n_threads", "2", "--model_alias", "smollm2"]
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="2"))
    base = f"http://127.0.0.1:{port}/v1"
    from reasonlab.rollout.openai_client import wait_for_server

    try:
        wait_for_server(base, timeout_s=180)
    except TimeoutError:
        proc.kill()
        raise
    return proc, base


def serve_smollm2(tmp_path_factory):
    """Generator for a fixture: the embedded SmolLM2 served by llama.cpp; yields (proc, base), stops it after."""
    from reasonlab.models import smollm2_gguf_path

    proc, base = start_llama_server(str(smollm2_gguf_path()), str(tmp_path_factory.mktemp("llama") / "server.log"))
    try:
        yield proc, base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except Exception:
            proc.kill()
            proc.wait(timeout=30)


class FaultProxy:
    """Forward to ``upstream``; ``inject(kind, times)`` makes the next ``times`` requests fail."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.faults: list[str] = []
        self.forwarded = 0
        self.received = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _send(self, code, body, headers=None):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                with urllib.request.urlopen(proxy.upstream + self.path[len("/v1"):], timeout=30) as r:
                    self._send(r.status, json.loads(r.read()))

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy.lock:
                    proxy.received += 1
                    fault = proxy.faults.pop(0) if proxy.faults else None
                if fault == "429":
                    return self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}}, {"Retry-After": "0.2"})
                if fault == "500":
                    return self._send(500, {"error": {"message": "boom"}})
                if fault == "stall":
                    time.sleep(3.0)
                    return self._send(504, {"error": {"message": "too late"}})
                if fault == "malformed":
                    req = json.loads(body)
                    return self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": req.get("model"),
                                            "choices": [{"index": 0, "finish_reason": "stop",
                                                         "message": {"role": "assistant", "content": "I cannot count that."}}],
                                            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}})
                req = urllib.request.Request(proxy.upstream + self.path[len("/v1"):], data=body,
                                             headers={"Content-Type": "application/json"})
                with proxy.lock:
                    proxy.forwarded += 1
                try:
                    with urllib.request.urlopen(req, timeout=300) as r:
                        self._send(r.status, json.loads(r.read()))
                except urllib.error.HTTPError as e:
                    self._send(e.code, json.loads(e.read() or b"{}"))

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def inject(self, kind: str, times: int = 1) -> None:
        with self.lock:
            self.faults += [kind] * times

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
