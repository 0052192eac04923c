"""A fake OpenAI-compatible HTTP server for offline end-to-end tests.

It serves `POST /v1/chat/completions` (JSON and SSE streaming) and `POST /v1/embeddings`
on loopback, in a background thread, so the real clients (`ChatOpenAI`, `OpenAIEmbeddings`,
`dspy.LM` through litellm) run their real code paths against it.

Every chat request is classified as one of Engram's steps by the output-field markers
DSPy's adapters put in the system prompt:

- ``decide_save`` (``[[ ## save ## ]]``), ``extract`` (``[[ ## facts ## ]]``),
  ``maintain`` (``[[ ## operations ## ]]``), ``profile`` (``[[ ## lines ## ]]``), anything
  else is ``chat``;
- embedding requests are the step ``embeddings``.

Replies come, in this order, from: a persistent override set with `fail`/`hang`/`always`,
the step's queue (`queue`), the optional `responder` callable, then the default answer for
the step (save=True; one fact echoing the user; ADD every new fact; a profile line per
memory shown, up to five; an echo for chat).
Every request is recorded in `requests`.

    with FakeOpenAI() as fake:
        fake.queue("extract", facts_answer(("User lives in Paris", "location")))
        fake.fail("maintain", status=500)
        settings = Settings(openai_base_url=fake.url, openai_api_key="test")
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import socket
import struct
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

STEPS = ("decide_save", "extract", "maintain", "profile", "chat", "embeddings")
DSPY_MARKERS = (  # most specific first: the maintain prompt names no other output field
    ("profile", "lines"),
    ("maintain", "operations"),
    ("extract", "facts"),
    ("decide_save", "save"),
)
# How each output field is announced in the system prompt: DSPy's text format, and its
# JSON format (what the schema adapter of nodes/structured_output.py sends).
MARKER_FORMS = ("[[ ## {} ## ]]", '"{0}": "{{{0}}}')
# What the fake does with `response_format`, like a kind of real endpoint: accept both
# forms (OpenAI, Ollama, vLLM, llama-server), refuse json_schema with HTTP 500 and take
# json_object (llama-cpp-python's server), or ignore it.
ResponseFormats = Literal["json_schema", "json_object", "ignore"]
# What llama-cpp-python's server (0.3) answers to a json_schema response_format, HTTP 500.
LLAMA_CPP_PYTHON_REFUSAL = (
    "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', "
    "'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}"
)
_FIELD_HEADER = re.compile(r"\[\[ ## (\w+) ## \]\]")
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Fail:
    """Answer with an HTTP error in OpenAI's error format."""

    status: int = 500
    message: str = "scripted failure of the fake server"


@dataclass(frozen=True)
class Hang:
    """Sleep this long before answering (past the client's timeout), then answer `then`."""

    seconds: float
    then: str | None = None


Reply = str | Fail | Hang
Responder = Callable[["RecordedRequest"], Reply | None]


@dataclass
class RecordedRequest:
    """One request the fake received, as the client sent it."""

    path: str
    step: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)
    status: int = 200

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    @property
    def system_prompt(self) -> str:
        return "\n".join(
            message_text(m) for m in self.messages if m.get("role") in ("system", "developer")
        )

    @property
    def last_user_text(self) -> str:
        users = [m for m in self.messages if m.get("role") == "user"]
        return message_text(users[-1]) if users else ""

    @property
    def inputs(self) -> dict[str, str]:
        """The DSPy input fields of the last user message (``[[ ## name ## ]]`` sections)."""
        return dspy_fields(self.last_user_text)

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def prompt_chars(self) -> int:
        return sum(len(message_text(m)) for m in self.messages)


def message_text(message: dict[str, Any]) -> str:
    """The text of an OpenAI chat message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def dspy_fields(text: str) -> dict[str, str]:
    """``[[ ## name ## ]]`` sections of a DSPy message, name -> value (the closing
    ``completed`` marker and the output instructions left out)."""
    text = text.split("\n\nRespond with ")[0]
    parts = _FIELD_HEADER.split(text)
    fields = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    fields.pop("completed", None)
    return fields


def classify(body: dict[str, Any]) -> str:
    """Which Engram step a chat completion request belongs to."""
    messages = body.get("messages") or []
    system = "\n".join(
        message_text(m) for m in messages if m.get("role") in ("system", "developer")
    )
    for step, field_name in DSPY_MARKERS:
        if any(form.format(field_name) in system for form in MARKER_FORMS):
            return step
    return "chat"


# -- answers in DSPy's formats ---------------------------------------------------------------


def chat_adapter_answer(**outputs: Any) -> str:
    """An answer in DSPy ChatAdapter format; non-strings are written as JSON."""
    parts = [
        f"[[ ## {name} ## ]]\n{value if isinstance(value, str) else json.dumps(value)}"
        for name, value in outputs.items()
    ]
    return "\n\n".join([*parts, "[[ ## completed ## ]]"])


def save_answer(save: bool = True) -> str:
    return chat_adapter_answer(save=str(save))


def facts_answer(*facts: tuple[str, str]) -> str:
    return chat_adapter_answer(facts=[{"text": t, "category": c} for t, c in facts])


def operations_answer(*operations: dict[str, Any], reasoning: str = "scripted") -> str:
    return chat_adapter_answer(reasoning=reasoning, operations=list(operations))


def profile_answer(*lines: tuple[str, list[int]]) -> str:
    return chat_adapter_answer(lines=[{"text": t, "memory_ids": ids} for t, ids in lines])


def add_op(text: str, category: str = "other") -> dict[str, Any]:
    return {"op": "ADD", "id": None, "text": text, "category": category}


def default_answer(request: RecordedRequest) -> str:
    """What the fake says when nothing is scripted for the request's step."""
    inputs = request.inputs
    if request.step == "decide_save":
        return save_answer(True)
    if request.step == "extract":
        said = inputs.get("user_message", "").strip()
        return facts_answer((f"User said: {said}", "other")) if said else facts_answer()
    if request.step == "maintain":  # the new facts come as a JSON list
        try:
            given = json.loads(inputs.get("new_facts", "[]"))
        except json.JSONDecodeError:
            given = []
        new_facts = [add_op(f["text"], f.get("category") or "other") for f in given]
        return operations_answer(*new_facts, reasoning="Every new fact is new: ADD it.")
    if request.step == "profile":
        try:
            shown = json.loads(inputs.get("memories", "[]"))
        except json.JSONDecodeError:
            shown = []
        return profile_answer(*((m["text"], [m["id"]]) for m in shown[:5]))
    return f"Fake reply to: {request.last_user_text.strip()[:200]}"


# -- embeddings ------------------------------------------------------------------------------


def embed_text(text: str, dims: int = 64) -> list[float]:
    """A deterministic unit vector: hashed bag of words, so shared words mean closeness."""
    vector = [0.0] * dims
    for word in _WORD.findall(text.casefold()):
        digest = hashlib.sha256(word.encode()).digest()
        index = int.from_bytes(digest[:4], "big") % dims
        vector[index] += 1.0 if digest[4] % 2 == 0 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:
        vector[0], norm = 1.0, 1.0
    return [x / norm for x in vector]


def _embedding_inputs(raw: Any) -> list[str]:
    """`input` as a string, a list of strings, a token array or a list of token arrays."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
        return [" ".join(f"tok{x}" for x in raw)]
    if isinstance(raw, list):
        return [
            item if isinstance(item, str) else " ".join(f"tok{x}" for x in item) for item in raw
        ]
    raise ValueError("input must be a string, a list of strings or token arrays")


# -- the server ------------------------------------------------------------------------------


class FakeOpenAI:
    """A scriptable OpenAI-compatible server on 127.0.0.1; `url` ends in ``/v1``."""

    def __init__(
        self,
        *,
        dims: int = 64,
        responder: Responder | None = None,
        chunk_words: int = 1,
        response_formats: ResponseFormats = "json_schema",
    ) -> None:
        self.default_dims = dims
        self.response_formats = response_formats
        self.responder = responder
        self.chunk_words = chunk_words
        self.requests: list[RecordedRequest] = []
        self._queues: dict[str, deque[Reply]] = defaultdict(deque)
        self._always: dict[str, Reply] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        owner = self

        class Handler(_Handler):
            fake = owner

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown waits up to one interval
            name="fake-openai",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in a Hang
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake server is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL clients use (`OPENAI_BASE_URL`)."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting ----------------------------------------------------------------------

    def queue(self, step: str, *replies: Reply) -> None:
        """Answer the next requests of `step` with these replies, in order."""
        _check_step(step)
        with self._lock:
            self._queues[step].extend(replies)

    def always(self, step: str, reply: Reply) -> None:
        """Answer every request of `step` with `reply` until `clear(step)`."""
        _check_step(step)
        with self._lock:
            self._always[step] = reply

    def fail(self, step: str, status: int = 500, message: str | None = None) -> None:
        self.always(step, Fail(status, message or f"scripted HTTP {status} for {step}"))

    def hang(self, step: str, seconds: float) -> None:
        self.always(step, Hang(seconds))

    def clear(self, step: str | None = None) -> None:
        """Forget overrides and queued replies of `step` (or of every step)."""
        with self._lock:
            for name in [step] if step else list(STEPS):
                self._always.pop(name, None)
                self._queues.pop(name, None)

    def reset(self) -> None:
        self.clear()
        with self._lock:
            self.requests.clear()

    def pending(self, step: str) -> int:
        """Queued replies not used yet (a test can assert its script was consumed)."""
        with self._lock:
            return len(self._queues.get(step, ()))

    # -- inspection ---------------------------------------------------------------------

    def requests_for(self, step: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.step == step]

    def steps(self) -> list[str]:
        """The steps of all requests so far, in order."""
        with self._lock:
            return [r.step for r in self.requests]

    # -- request handling (server threads) ---------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _reply_for(self, request: RecordedRequest) -> Reply:
        with self._lock:
            if request.step in self._always:
                return self._always[request.step]
            queue = self._queues.get(request.step)
            if queue:
                return queue.popleft()
        if self.responder is not None:
            scripted = self.responder(request)
            if scripted is not None:
                return scripted
        return default_answer(request) if request.step != "embeddings" else ""

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)


def _check_step(step: str) -> None:
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; expected one of {STEPS}")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": []})
        else:
            self._json(404, _error("not found", "invalid_request_error"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._json(400, _error("body is not JSON", "invalid_request_error"))
            return
        path = self.path.split("?")[0].rstrip("/")
        if path.endswith("/chat/completions"):
            step = classify(body)
        elif path.endswith("/embeddings"):
            step = "embeddings"
        else:
            self._json(404, _error(f"no route {self.path}", "invalid_request_error"))
            return
        request = RecordedRequest(
            path=path, step=step, body=body, headers={k.lower(): v for k, v in self.headers.items()}
        )
        self.fake._record(request)
        if step != "embeddings" and self._refuses_format(body):  # before any script is used
            request.status = 500
            self._json(500, _error(LLAMA_CPP_PYTHON_REFUSAL, "internal_server_error"))
            return
        reply = self.fake._reply_for(request)
        if isinstance(reply, Hang):
            self.fake._sleep(reply.seconds)
            reply = reply.then if reply.then is not None else default_answer(request)
        try:
            if isinstance(reply, Fail):
                request.status = reply.status
                self._json(reply.status, _error(reply.message, _error_type(reply.status)))
            elif step == "embeddings":
                self._embeddings(body)
            elif request.stream:
                self._stream(body, reply)
            else:
                self._json(200, _completion(body, self._formatted(body, reply)))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): nothing to answer

    def _refuses_format(self, body: dict[str, Any]) -> bool:
        requested = (body.get("response_format") or {}).get("type")
        return self.fake.response_formats == "json_object" and requested == "json_schema"

    def _formatted(self, body: dict[str, Any], text: str) -> str:
        """The answer as JSON when the request asked for it and this endpoint kind honours
        `response_format`: a scripted answer in DSPy's text format becomes the JSON object
        of its fields (scripts stay the same whichever way Engram asks)."""
        if not body.get("response_format") or self.fake.response_formats == "ignore":
            return text
        fields = dspy_fields(text)
        if not fields:
            return text
        return json.dumps({name: _json_value(value) for name, value in fields.items()})

    def _embeddings(self, body: dict[str, Any]) -> None:
        try:
            texts = _embedding_inputs(body.get("input"))
        except ValueError as error:
            self._json(400, _error(str(error), "invalid_request_error"))
            return
        dims = int(body.get("dimensions") or self.fake.default_dims)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = embed_text(text, dims)
            encoded: Any = (
                base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
                if as_base64
                else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(t.split()) for t in texts)
        self._json(
            200,
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "fake-embedding"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    def _stream(self, body: dict[str, Any], text: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        created = int(time.time())
        model = body.get("model", "fake-model")

        def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }

        events = [chunk({"role": "assistant", "content": ""}, None)]
        events += [
            chunk({"content": piece}, None) for piece in _pieces(text, self.fake.chunk_words)
        ]
        events.append(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = _usage(body, text)
            events.append({**chunk({}, None), "choices": [], "usage": usage})
        for event in events:
            self._write_chunk(f"data: {json.dumps(event)}\n\n".encode())
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")  # end of the chunked body

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


def _pieces(text: str, words_per_piece: int) -> list[str]:
    """The reply cut into word-sized pieces (with their spaces) so it streams visibly."""
    words = re.findall(r"\S+\s*|\s+", text)
    size = max(1, words_per_piece)
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)] or [""]


def _usage(body: dict[str, Any], text: str) -> dict[str, int]:
    prompt = sum(len(message_text(m).split()) for m in body.get("messages") or [])
    completion = len(text.split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _completion(body: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake-model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(body, text),
    }


def _json_value(text: str) -> Any:
    """A field of DSPy's text format as the JSON value it stands for."""
    if text in ("True", "False"):
        return text == "True"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _error_type(status: int) -> str:
    return {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
    }.get(status, "server_error")


def closed_port_url() -> str:
    """A base URL on loopback where nothing listens (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def fake_openai(**kwargs: Any) -> Iterator[FakeOpenAI]:
    """`with fake_openai() as fake:` — or `yield from`-style use in a pytest fixture."""
    fake = FakeOpenAI(**kwargs).start()
    try:
        yield fake
    finally:
        fake.stop()
