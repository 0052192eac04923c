"""Structured outputs for the memory programs: each answer constrained to its signature's
JSON schema, where the endpoint can do that.

Small local models rarely follow DSPy's text format (`[[ ## facts ## ]]`) but produce
schema-valid JSON when the server constrains their output. Endpoints differ in how they
are asked: OpenAI, Ollama, vLLM and llama.cpp's `llama-server` take
`{"type": "json_schema", "json_schema": {...}}`; llama-cpp-python's server answers that
with HTTP 500 and takes `{"type": "json_object", "schema": {...}}`; some ignore
`response_format` altogether. DSPy sends a schema only for models LiteLLM knows, so
Engram asks for it itself (`SchemaAdapter`).

`ENGRAM_STRUCTURED_OUTPUT=auto` (the default) finds out once per endpoint and model: it
tries `json_schema`, steps down to `json_object` when the endpoint refuses the request,
and to DSPy's text format (`off`) when it refuses that too or answers with no JSON at all,
within the same attempt, so the turn is not lost. The choice is kept for the process.
A constrained answer is well-formed, not trustworthy: the nodes validate it as always.
"""

from __future__ import annotations

import copy
import logging
import threading
from typing import Any, Literal

import dspy
from dspy.adapters.json_adapter import _get_structured_outputs_response_format
from dspy.utils.exceptions import AdapterParseError, LMInvalidRequestError, LMServerError

from engram.settings import StructuredOutput

log = logging.getLogger("engram")

Mode = Literal["json_schema", "json_object", "off"]
Policy = StructuredOutput
STEP_DOWN: dict[Mode, Mode] = {"json_schema": "json_object", "json_object": "off"}
ORDER: tuple[Mode, ...] = ("json_schema", "json_object", "off")
# A server that cannot parse or serve the response_format answers 400 or 422, or 500
# (llama-cpp-python: "...('body', 'response_format', 'type')... Input should be 'text' or
# 'json_object'"), naming what it refused. Any other failure (auth, rate limits, 502-504,
# timeouts, a 500 about something else) is the endpoint's state, not the format's, and
# goes to the normal retries.
REFUSAL_SERVER_STATUS = 500
NAMES_THE_FORMAT = ("response_format", "json_schema", "json_object")


class SchemaAdapter(dspy.JSONAdapter):
    """DSPy's JSON adapter, asking for the signature's JSON schema in the form `mode`
    names, whatever LiteLLM knows about the model."""

    def __init__(self, mode: Literal["json_schema", "json_object"]) -> None:
        super().__init__()
        self.mode = mode

    def _prepare_response_format(
        self, lm: Any, lm_kwargs: dict[str, Any], signature: type[dspy.Signature]
    ) -> None:
        schema = copy.deepcopy(output_schema(signature))  # the client may change its copy
        if self.mode == "json_schema":
            name = signature.__name__.removesuffix("Signature") or "outputs"
            lm_kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": True},
            }
        else:
            lm_kwargs["response_format"] = {"type": "json_object", "schema": schema}


_SCHEMAS: dict[type[dspy.Signature], dict[str, Any]] = {}  # signatures are few and fixed


# `Adapter.__init_subclass__` wraps `format` and `parse` with DSPy's callbacks again; keep
# JSONAdapter's single wrapping so a configured callback sees each call once.
SchemaAdapter.format = dspy.JSONAdapter.format
SchemaAdapter.parse = dspy.JSONAdapter.parse


def output_schema(signature: type[dspy.Signature]) -> dict[str, Any]:
    """The JSON schema of a signature's outputs, in the strict form structured outputs
    need (every property required, no extra properties), with `$defs` inlined: some
    servers do not follow references."""
    schema = _SCHEMAS.get(signature)
    if schema is None:
        model = _get_structured_outputs_response_format(signature)
        schema = _SCHEMAS[signature] = _inline(model.model_json_schema())
    return schema


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                return resolve(dict(definitions[reference.removeprefix("#/$defs/")]))
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return dict(resolve(schema))


class EndpointModes:
    """What each endpoint and model accepted, found out under `auto`. A refusal of a form
    is remembered at once; an answer with none of the fields asked for only when it
    happens `MISSES_TO_REMEMBER` times in a row (once may be a bad answer, not an endpoint
    that ignores the schema); until then the lower form serves that one call."""

    MISSES_TO_REMEMBER = 2

    def __init__(self) -> None:
        self._found: dict[tuple[str, str], Mode] = {}
        self._misses: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def current(self, key: tuple[str, str], policy: Policy) -> Mode:
        if policy != "auto":
            return policy
        with self._lock:
            return self._found.get(key, "json_schema")

    def step_down(self, key: tuple[str, str], mode: Mode, why: str, *, refused: bool) -> Mode:
        """The form to ask in next, after `mode` was refused or ignored."""
        lower = STEP_DOWN[mode]
        with self._lock:
            if not refused:
                self._misses[key] = self._misses.get(key, 0) + 1
                if self._misses[key] < self.MISSES_TO_REMEMBER:
                    return lower
            found = self._found.get(key, "json_schema")
            if ORDER.index(lower) > ORDER.index(found):
                self._found[key] = lower
                self._misses.pop(key, None)
                log.info("structured output for %s at %s: %s (%s)", key[1], key[0], lower, why)
            return lower

    def answered(self, key: tuple[str, str]) -> None:
        """A parsed answer: misses no longer count as in a row."""
        with self._lock:
            self._misses.pop(key, None)

    def found(self) -> dict[tuple[str, str], Mode]:
        """What `auto` has found so far, per (endpoint, model)."""
        with self._lock:
            return dict(self._found)

    def clear(self) -> None:
        with self._lock:
            self._found.clear()
            self._misses.clear()


ENDPOINT_MODES = EndpointModes()


def endpoint_key(lm: dspy.BaseLM) -> tuple[str, str]:
    """Which endpoint and model an LM calls (what `auto` remembers its finding for)."""
    kwargs = getattr(lm, "kwargs", {}) or {}
    return str(kwargs.get("api_base") or "default"), str(getattr(lm, "model", "") or "")


_SCHEMA_ADAPTERS = {mode: SchemaAdapter(mode) for mode in ("json_schema", "json_object")}


def adapter_for(mode: Mode, text_adapter: dspy.Adapter) -> dspy.Adapter:
    """The adapter for a mode: a schema adapter, or `text_adapter` for "off"."""
    return text_adapter if mode == "off" else _SCHEMA_ADAPTERS[mode]


def refused_format(error: BaseException) -> bool:
    """Whether an endpoint's error says it would not take the `response_format`."""
    refused = isinstance(error, LMInvalidRequestError) or (
        isinstance(error, LMServerError) and error.status == REFUSAL_SERVER_STATUS
    )
    return refused and any(name in str(error) for name in NAMES_THE_FORMAT)


def answered_without_json(error: BaseException) -> bool:
    """Whether a parse failure came from an answer holding none of the fields asked for:
    no JSON object, or one with other keys (DSPy's text format, prose). A constrained
    answer always has them, so the endpoint did not apply the schema. An answer with some
    of the fields, malformed, is a bad answer and is retried like any other."""
    return isinstance(error, AdapterParseError) and not error.parsed_result
