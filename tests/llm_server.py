"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol.

It answers `POST /v1/chat/completions` from a queue of scripted replies and records every
request, so tests can check prompts, headers and retries. Use it as a context manager or as the
`llm_server` pytest fixture (import the fixture into a test module, or list this module in
`pytest_plugins`):

    from llm_server import FakeLLMServer, Reply

    with FakeLLMServer() as server:
        server.push("RATIONALE: ...\\n<<<<<<< SEARCH ...", Reply(status=429), Reply(delay=2.0))
        settings = LLMSettings(base_url=server.base_url, model="fake")
        ...
        server.requests[0].messages  # what the client sent

An entry of the queue is a `Reply`, a str (the answer text), or an int (an HTTP error status).
When the queue is empty the server answers 500 "no scripted reply left" (a test that expected
fewer requests fails loudly). `GET /v1/models` lists one model.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

DEFAULT_USAGE = {"prompt_tokens": 11, "completion_tokens": 7}


@dataclass
class Reply:
    """One scripted answer.

    text: the message content (None: JSON null). status: HTTP status; non-200 sends an
    OpenAI-style error body with `error_message`. delay: seconds to sleep before answering (to
    force a client timeout). usage: None omits the usage object. body: raw JSON (dict) or text
    sent as-is, overriding everything else but status/headers/delay.
    """

    text: str | None = ""
    status: int = 200
    delay: float = 0.0
    finish_reason: str = "stop"
    usage: dict[str, int] | None = field(default_factory=lambda: dict(DEFAULT_USAGE))
    headers: dict[str, str] = field(default_factory=dict)
    refusal: str | None = None
    error_message: str = "scripted error"
    body: dict[str, Any] | str | None = None


@dataclass
class Request:
    """A request the server received. Header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    raw: bytes

    @property
    def messages(self) -> list[dict[str, Any]]:
        return (self.body or {}).get("messages", [])

    @property
    def text(self) -> str:
        """All message contents, joined: handy for `"..." in request.text` assertions."""
        return "\n".join(str(m.get("content", "")) for m in self.messages)


class FakeLLMServer:
    """Threaded HTTP server on an ephemeral port of 127.0.0.1; start() / close() or `with`."""

    def __init__(self, *replies: Reply | str | int, model: str = "fake-model", responder: Any = None) -> None:
        self.model = model
        # responder(request) -> Reply | str | int answers when the queue is empty (a scripted model)
        self.responder = responder
        self.requests: list[Request] = []
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.push(*replies)

    # -- scripting ---------------------------------------------------------------------------

    def push(self, *replies: Reply | str | int) -> FakeLLMServer:
        """Append replies to the queue (str: answer text, int: HTTP error status)."""
        with self._lock:
            for reply in replies:
                if isinstance(reply, str):
                    reply = Reply(text=reply)
                elif isinstance(reply, int):
                    reply = Reply(status=reply)
                self._queue.append(reply)
        return self

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._queue)

    def _next(self, request: Request | None = None) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self.responder is not None and request is not None:
            reply = self.responder(request)
            return Reply(text=reply) if isinstance(reply, str) else Reply(status=reply) if isinstance(reply, int) else reply
        return Reply(status=500, error_message="no scripted reply left")

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> FakeLLMServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False  # a handler sleeping in a delay must not hold close()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-llm", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()  # wakes handlers sleeping in a delay
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handler(BaseHTTPRequestHandler):
    owner: FakeLLMServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def _record(self) -> Request:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, raw)
        with self.owner._lock:
            self.owner.requests.append(request)
        return request

    def _send(self, status: int, payload: dict[str, Any] | str, headers: dict[str, str] | None = None) -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def do_GET(self) -> None:  # noqa: N802
        self._record()
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": self.owner.model, "object": "model"}]})
        else:
            self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self) -> None:  # noqa: N802
        request = self._record()
        if not request.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, {"error": {"message": f"unknown path {request.path}", "type": "invalid_request_error"}})
            return
        reply = self.owner._next(request)
        if reply.delay and self.owner._closing.wait(reply.delay):
            return  # closing: drop the connection
        if reply.body is not None:
            self._send(reply.status, reply.body, reply.headers)
        elif reply.status != 200:
            error = {"message": reply.error_message, "type": "server_error", "code": str(reply.status)}
            self._send(reply.status, {"error": error}, reply.headers)
        else:
            self._send(200, self._completion(reply, request), reply.headers)

    def _completion(self, reply: Reply, request: Request) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text}
        if reply.refusal is not None:
            message["refusal"] = reply.refusal
        payload: dict[str, Any] = {
            "id": f"chatcmpl-{len(self.owner.requests)}",
            "object": "chat.completion",
            "created": 0,
            "model": (request.body or {}).get("model", self.owner.model),
            "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
        }
        if reply.usage is not None:
            usage = dict(reply.usage)
            usage.setdefault("total_tokens", usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0))
            payload["usage"] = usage
        return payload


@pytest.fixture
def llm_server():
    """A started FakeLLMServer with an empty queue; closed after the test."""
    with FakeLLMServer() as server:
        yield server
