"""The DSPy programs inside the memory nodes, how they are called, saved and loaded.

Inputs are typed (lists of pydantic models, dates), so the adapter sends them as JSON and
no stored text can pose as prompt structure. The output field names (`save`, `facts`,
`operations`, `lines`) are part of the contract.

Programs are data: `engram optimize` saves the four as one JSON file
(`MemoryPrograms.save`), and `ENGRAM_PROGRAMS=path` or `build_graph(programs=
MemoryPrograms.load(path))` runs them. A file records each program's shape (its fields and
their types); one written for another shape is refused, never half-applied.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import dspy
from pydantic import BaseModel

from engram.clients import Clients
from engram.nodes.structured_output import (
    ENDPOINT_MODES,
    Policy,
    adapter_for,
    answered_without_json,
    endpoint_key,
    refused_format,
)
from engram.settings import Settings
from engram.state.context import EngramContext
from engram.state.contracts import CitedLine, Fact, MemoryOp, NumberedMemory
from engram.state.errors import ConfigurationError, MemoryStepError

log = logging.getLogger("engram")


class DecideSaveSignature(dspy.Signature):
    """Decide whether the latest exchange tells something new and lasting about the USER
    (preferences, personal details, plans, relationships, work, health, corrections of what
    is known) that is worth remembering for future conversations. Small talk, questions
    without personal content, and anything only the assistant said are not worth saving.
    Information already in the known memories is not new unless it changes them."""

    known_memories: list[NumberedMemory] = dspy.InputField(
        desc="What is already remembered about the user."
    )
    user_message: str = dspy.InputField()
    assistant_message: str = dspy.InputField()
    save: bool = dspy.OutputField(desc="True if the user message holds new information.")


class ExtractFactsSignature(dspy.Signature):
    """Extract atomic, self-contained facts about the USER from the user's message.

    Only what the user states about themselves counts; the assistant's reply is context for
    resolving references and is never a source of facts. Write each fact in the third person
    ("User ..."), one piece of information per fact, understandable on its own, in the
    user's own words. Resolve relative dates ("yesterday", "next Friday") to absolute dates
    using the message time (the user's local time). Pick a short lowercase category,
    preferably one of: preferences, personal, work, health, relationships, plans, location,
    other. When the user says how long something holds, give its dates: "I'm in Tokyo until
    Friday" is valid until that Friday; "my exam is next Monday" is an event valid from and
    until that Monday; "I used to play the violin" is no longer true (valid until the day
    before the message, or the end the user gives). Leave both null for lasting facts.
    Return an empty list when there is nothing."""

    user_message: str = dspy.InputField()
    assistant_context: str = dspy.InputField(desc="The assistant's reply; not a fact source.")
    message_time: datetime.datetime = dspy.InputField(
        desc="When the user wrote the message, with the user's UTC offset."
    )
    facts: list[Fact] = dspy.OutputField()


class MaintainMemorySignature(dspy.Signature):
    """Keep the user's memory consistent with the new facts, in one list of operations.

    Existing memories carry small integer ids; refer to them only by those ids.
    For each new fact choose one operation:
    - ADD: the fact is new; give its text and category (id null).
    - UPDATE: the fact refines or changes an existing memory; give that memory's id and
      the complete new text (merge the old and new information).
    - DELETE: the fact shows an existing memory was never true, or the user takes it
      back; give its id. If you DELETE, also ADD the new fact.
    - NOOP: the fact is already known; give the id of the memory that holds it.
    When a new fact ends an old one that was true until now ("moved to Berlin" vs "lives in
    Paris", a new job), keep the old one as history: UPDATE it with its own text and
    valid_until the day it stopped, and ADD the new fact. Give a fact's dates (valid_from,
    valid_until) on its ADD or UPDATE when it has them; an UPDATE with a new text keeps no
    dates it does not give.
    Never invent ids, never change memories unrelated to the new facts. A fact that no
    ADD, UPDATE or NOOP accounts for is added as it is."""

    new_facts: list[Fact] = dspy.InputField()
    existing_memories: list[NumberedMemory] = dspy.InputField(
        desc="Existing memories that may relate to the new facts (may be empty)."
    )
    today: datetime.date = dspy.InputField(desc="Today's date for the user.")
    operations: list[MemoryOp] = dspy.OutputField()


class UpdateProfileSignature(dspy.Signature):
    """Keep the user's profile: a few short lines stating the lasting core facts about the
    user that a chatbot should always know: who they are, where they live, their work, the
    people in their life (with names), diet and health, strong preferences, ongoing plans.

    Rewrite the current profile from the memories: keep lines that still hold, revise a
    line whose memories changed, drop one no memory supports any more, add core facts that
    are missing. Every line must give the ids of the memories it rests on, and state only
    what those memories say; never invent ids. Leave out passing details, one-off events and
    anything that is not about the user. Most important lines first; stay within max_chars
    in all (what does not fit is found by search when needed)."""

    current_profile: list[CitedLine] = dspy.InputField(
        desc="The profile as it is, with the ids of the memories each line rests on."
    )
    memories: list[NumberedMemory] = dspy.InputField(desc="The user's memories to draw on.")
    max_chars: int = dspy.InputField(desc="The profile's size bound, in characters.")
    lines: list[CitedLine] = dspy.OutputField(desc="The new profile, most important first.")


class RerankMemoriesSignature(dspy.Signature):
    """Order the user's memories by how much each helps answer the user's message, most
    useful first. List only the memories that help, by their ids; never invent ids."""

    user_message: str = dspy.InputField()
    memories: list[NumberedMemory] = dspy.InputField(desc="What recall found for the message.")
    ranked: list[int] = dspy.OutputField(desc="Ids of the helpful memories, most useful first.")


# Each program is one predictor (so it optimizes, saves and loads like any DSPy program);
# the subclasses only give the contracts their stable names.


class DecideSave(dspy.Predict):
    def __init__(self) -> None:
        super().__init__(DecideSaveSignature)


class ExtractFacts(dspy.Predict):
    def __init__(self) -> None:
        super().__init__(ExtractFactsSignature)


class MaintainMemory(dspy.ChainOfThought):
    def __init__(self) -> None:
        super().__init__(MaintainMemorySignature)


class UpdateProfile(dspy.Predict):
    def __init__(self) -> None:
        super().__init__(UpdateProfileSignature)


class RerankMemories(dspy.Predict):
    """Recall's optional reranking (ENGRAM_RERANK=llm); not one of the memory steps, so not
    part of `MemoryPrograms` (nor optimized or saved with them)."""

    def __init__(self) -> None:
        super().__init__(RerankMemoriesSignature)


PROGRAMS_FORMAT = "engram-programs"
PROGRAMS_VERSION = 1
# Programs added after files of this version were written: such a file loads, and these
# run as built in (optimize again to tune them too).
ADDED_SINCE_VERSION_1 = frozenset({"profile"})
# Fields added to the programs' models since then (optional, so older demos still parse).
ADDED_MODEL_FIELDS = ("valid_from", "valid_until")


@dataclass
class MemoryPrograms:
    """The DSPy programs of the memory steps; pass optimized ones to `build_graph`."""

    decide_save: DecideSave = field(default_factory=DecideSave)
    extract: ExtractFacts = field(default_factory=ExtractFacts)
    maintain: MaintainMemory = field(default_factory=MaintainMemory)
    profile: UpdateProfile = field(default_factory=UpdateProfile)

    def programs(self) -> dict[str, dspy.Module]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def configured(cls, settings: Settings) -> MemoryPrograms:
        """The programs `ENGRAM_PROGRAMS` names, else the built-in ones."""
        return cls.load(settings.programs) if settings.programs else cls()

    def save(self, path: Path, info: dict[str, Any] | None = None) -> None:
        """Write the programs (instructions, demos, field descriptions) and their
        shapes as one JSON file; `info` records how they were made (optimizer, scores)."""
        document = {
            "format": PROGRAMS_FORMAT,
            "version": PROGRAMS_VERSION,
            "dspy": dspy.__version__,
            "info": info or {},
            "programs": {
                name: {"shape": program_shape(program), "state": program.dump_state()}
                for name, program in self.programs().items()
            },
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(document, indent=2, ensure_ascii=False), "utf-8")
        temporary.replace(path)  # a reader never sees half a file

    @classmethod
    def load(cls, path: Path) -> MemoryPrograms:
        """Programs saved by `save` (`engram optimize`), checked against this version's
        program shapes: a file for other fields or types is refused with the difference."""
        document = _read_programs_file(path)
        loaded = cls()
        saved = document["programs"]
        for name, program in loaded.programs().items():
            entry = saved.get(name)
            if entry is None and name in ADDED_SINCE_VERSION_1:
                continue  # a file from before this program existed: its built-in version
            if not isinstance(entry, dict) or "state" not in entry:
                raise ConfigurationError(f"{path}: no saved {name} program in the file")
            shape = program_shape(program)
            difference = shape_difference(entry.get("shape"), shape)
            if difference and shape_difference(entry.get("shape"), _before_added(shape)) is None:
                difference = None  # written before the validity dates: it still fits
                log.warning(
                    "%s: the %s program was optimized before memories had validity dates; "
                    "its instructions do not ask for them (run `engram optimize` again)",
                    path,
                    name,
                )
            if difference:
                raise ConfigurationError(
                    f"{path} holds a {name} program of another shape ({difference}); it was "
                    "saved for another version of Engram's memory programs. Run "
                    "`engram optimize` again, or unset ENGRAM_PROGRAMS."
                )
            if _sets_an_lm(entry["state"]):
                raise ConfigurationError(
                    f"{path}: the {name} program names its own LM; the memory model comes "
                    "from ENGRAM_MEMORY_MODEL, never from a programs file"
                )
            try:
                program.load_state(entry["state"])
            except Exception as error:  # a hand-edited or truncated state
                raise ConfigurationError(
                    f"{path}: the {name} program cannot be loaded: {error}"
                ) from error
        return loaded


def _read_programs_file(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"no programs file at {path} (ENGRAM_PROGRAMS)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigurationError(f"{path} is not a programs file: {error}") from None
    if not isinstance(document, dict) or document.get("format") != PROGRAMS_FORMAT:
        raise ConfigurationError(
            f"{path} is not an Engram programs file (written by `engram optimize`)"
        )
    if document.get("version") != PROGRAMS_VERSION:
        raise ConfigurationError(
            f"{path} is programs format version {document.get('version')}; this Engram "
            f"reads version {PROGRAMS_VERSION}. Run `engram optimize` again."
        )
    if not isinstance(document.get("programs"), dict):
        raise ConfigurationError(f"{path} holds no programs")
    return document


def _before_added(shape: Any) -> Any:
    """A program shape as it was before `ADDED_MODEL_FIELDS`."""
    if isinstance(shape, dict):
        return {key: _before_added(value) for key, value in shape.items()}
    if isinstance(shape, str):
        for name in ADDED_MODEL_FIELDS:
            shape = shape.replace(f", {name}", "")
        return shape
    return shape


def _sets_an_lm(state: Any) -> bool:
    if isinstance(state, dict):
        return state.get("lm") is not None or any(_sets_an_lm(v) for v in state.values())
    return False


def program_shape(program: dspy.Module) -> dict[str, Any]:
    """What a saved state fits: per predictor, its input and output fields with their
    types (pydantic models with their field names), in order."""
    return {
        name: {
            "inputs": {
                n: _type_name(f.annotation) for n, f in predictor.signature.input_fields.items()
            },
            "outputs": {
                n: _type_name(f.annotation) for n, f in predictor.signature.output_fields.items()
            },
        }
        for name, predictor in program.named_predictors()
    }


def shape_difference(saved: Any, current: dict[str, Any]) -> str | None:
    """How a saved shape differs from the current one, in words; None if it does not."""
    if saved == current:
        return None
    if not isinstance(saved, dict):
        return "no shape recorded"
    for name in sorted(set(saved) | set(current)):
        if name not in current:
            return f"an extra predictor {name!r}"
        if name not in saved:
            return f"no predictor {name!r}"
        for side in ("inputs", "outputs"):
            was, now = saved[name].get(side, {}), current[name][side]
            if was != now:
                gone = [f for f in was if f not in now]
                new = [f for f in now if f not in was]
                changed = [f for f in now if f in was and was[f] != now[f]]
                parts = [f"{side} {', '.join(gone)} no longer exist" if gone else ""]
                parts += [f"new {side} {', '.join(new)}" if new else ""]
                parts += [f"{f} is now {now[f]}, was {was[f]}" for f in changed]
                parts += ["" if gone or new or changed else f"{side} are in another order"]
                return "; ".join(p for p in parts if p)
    return "a different shape"


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is not None:
        name = "Union" if origin is types.UnionType else getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a) for a in typing.get_args(annotation))}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"{annotation.__name__}{{{', '.join(annotation.model_fields)}}}"
    return getattr(annotation, "__name__", str(annotation))


class PromptReusingAdapter(dspy.ChatAdapter):
    """DSPy's default `ChatAdapter`, building each signature's system message once.

    The system message (field descriptions, the JSON schemas of typed outputs, the
    instructions) depends on the signature alone, and rebuilding its pydantic JSON schemas
    on every call was most of a memory step's prompt cost. The cache key holds everything
    the message is made of, so a signature changed in place (`instructions` is settable)
    never gets a stale one; the user message and the parsing are untouched.
    """

    MAX_SIGNATURES = 64  # bounds the cache (optimizers make many signature variants)

    def __init__(self) -> None:
        super().__init__()
        self._system_messages: dict[tuple[Any, ...], str] = {}

    def format_system_message(self, signature: type[dspy.Signature]) -> str:
        key = (
            signature,
            signature.instructions,
            tuple(
                (name, f.annotation, repr(f.json_schema_extra))
                for name, f in signature.fields.items()
            ),
        )
        message = self._system_messages.get(key)
        if message is None:
            message = super().format_system_message(signature)
            if len(self._system_messages) >= self.MAX_SIGNATURES:
                self._system_messages.clear()
            self._system_messages[key] = message
        return message


# `Adapter.__init_subclass__` wraps `format` and `parse` with DSPy's callbacks again; keep
# ChatAdapter's single wrapping so a configured callback sees each call once.
PromptReusingAdapter.format = dspy.ChatAdapter.format
PromptReusingAdapter.parse = dspy.ChatAdapter.parse
_ADAPTER = PromptReusingAdapter()

# A few seconds at most between attempts: the step runs after the answer, and a provider
# that is rate limiting or restarting gets a moment, not a hammering.
RETRY_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 4.0


def retry_delay(attempt: int, base: float) -> float:
    """Seconds to wait after failed attempt number `attempt`: base, 2x base, ... capped."""
    return min(base * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)


async def run_program(
    step: str,
    program: dspy.Module,
    lm: dspy.BaseLM,
    *,
    attempts: int,
    seconds: float,
    backoff: float | None = None,
    structured: Policy = "off",
    **inputs: Any,
) -> dspy.Prediction:
    """Call a memory program with bounded retries and a timeout (`seconds`) per attempt.

    Malformed output, endpoint errors and timeouts are retried `attempts` times in all,
    waiting `backoff` seconds (default `RETRY_BACKOFF_SECONDS`, doubling, capped) in
    between without blocking the event loop, then raised as one `MemoryStepError` naming
    the step and the last cause. `structured` asks for schema-constrained output
    (`nodes.structured_output`; "off": DSPy's text format).
    """
    base = RETRY_BACKOFF_SECONDS if backoff is None else backoff
    last: BaseException | None = None
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            await asyncio.sleep(retry_delay(attempt - 1, base))
        try:
            # asyncio.timeout, not wait_for: the call stays in this task (no task per call)
            async with asyncio.timeout(seconds):
                return await _call(program, lm, structured, inputs)
        except Exception as error:  # any provider or parse failure is retried, then reported
            last = error
            log.debug("%s attempt %d/%d failed: %s", step, attempt, attempts, _one_line(error))
    raise MemoryStepError(f"{step} failed after {attempts} attempt(s): {_one_line(last)}")


async def _call(
    program: dspy.Module, lm: dspy.BaseLM, structured: Policy, inputs: dict[str, Any]
) -> dspy.Prediction:
    """One attempt. Under `auto`, an endpoint that refuses the structured request, or
    ignores it, is asked again at once in the next form down (and remembered)."""
    if dspy.settings.adapter is not None:  # an adapter the caller configured wins
        with dspy.context(lm=lm):
            return await program.acall(**inputs)
    key = endpoint_key(lm)
    mode = ENDPOINT_MODES.current(key, structured)
    while True:
        try:
            with dspy.context(lm=lm, adapter=adapter_for(mode, _ADAPTER)):
                prediction = await program.acall(**inputs)
        except Exception as error:
            refused = refused_format(error)
            stepped = structured == "auto" and mode != "off"
            if not (stepped and (refused or answered_without_json(error))):
                raise
            mode = ENDPOINT_MODES.step_down(key, mode, _one_line(error), refused=refused)
        else:
            ENDPOINT_MODES.answered(key)
            return prediction


async def run_memory_step(
    step: str,
    program: dspy.Module,
    clients: Clients,
    context: EngramContext,
    **inputs: Any,
) -> dspy.Prediction:
    """A memory step's program on the run's memory model, with the configured retries,
    timeout and backoff (`run_program`): how every node calls its program."""
    settings = clients.settings
    return await run_program(
        step,
        program,
        clients.memory_lm(context.memory_model),
        attempts=settings.llm_attempts,
        seconds=settings.llm_timeout,
        backoff=settings.llm_backoff,
        structured=clients.structured_output(),
        **inputs,
    )


def _one_line(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, TimeoutError):
        text = "timed out"
    return f"{type(error).__name__}: {text[:300]}"
