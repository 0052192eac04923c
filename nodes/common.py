"""Small helpers the nodes share: the latest exchange, the user's time, endpoint errors."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

import httpx
import openai
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage

from engram.state.errors import EndpointError, InvalidInputError


def latest_exchange(messages: Sequence[AnyMessage]) -> tuple[HumanMessage | None, AIMessage | None]:
    """The last user message and the assistant reply right after it (if any)."""
    for index in range(len(messages) - 1, -1, -1):
        if isinstance(messages[index], HumanMessage):
            return _exchange_at(messages, index)
    return None, None


def exchange_for(
    messages: Sequence[AnyMessage], message_id: str
) -> tuple[HumanMessage | None, AIMessage | None]:
    """The user message with this id and the assistant reply right after it."""
    for index, message in enumerate(messages):
        if isinstance(message, HumanMessage) and message.id == message_id:
            return _exchange_at(messages, index)
    return None, None


def _exchange_at(
    messages: Sequence[AnyMessage], index: int
) -> tuple[HumanMessage | None, AIMessage | None]:
    user_message = messages[index]
    reply = messages[index + 1] if index + 1 < len(messages) else None
    return (
        user_message if isinstance(user_message, HumanMessage) else None,
        reply if isinstance(reply, AIMessage) else None,
    )


def message_time(message: AnyMessage) -> datetime:
    """When the user wrote the message, in their time zone, so "today" and "yesterday"
    mean the user's days: `additional_kwargs['sent_at']` (ISO 8601; a time without an
    offset is read in this machine's local zone), else now in the local zone."""
    sent_at = message.additional_kwargs.get("sent_at")
    if isinstance(sent_at, str):
        try:
            parsed = datetime.fromisoformat(sent_at)
        except ValueError:
            raise InvalidInputError(f"sent_at {sent_at!r} is not an ISO 8601 time") from None
        return parsed if parsed.tzinfo else parsed.astimezone()
    return datetime.now().astimezone()


def message_origin(message: AnyMessage) -> tuple[str | None, str] | None:
    """Where a forwarded message was first sent: `additional_kwargs["origin"]` =
    `{"thread_id": ..., "message_id": ...}` (a chat turn's memory steps on the server, or
    an app ingesting what another system recorded). The memories it yields name that
    thread and message as their source; anything malformed there is ignored."""
    origin = message.additional_kwargs.get("origin")
    if not isinstance(origin, Mapping) or not isinstance(origin.get("message_id"), str):
        return None
    thread_id = origin.get("thread_id")
    return (thread_id if isinstance(thread_id, str) else None), origin["message_id"]


def turn_date(messages: Sequence[AnyMessage]) -> date:
    """The user's date for this turn: the day of the latest user message."""
    user_message, _ = latest_exchange(messages)
    return message_time(user_message).date() if user_message else datetime.now().astimezone().date()


def with_error(state: Mapping[str, Any], message: str) -> str:
    """This turn's `memory_error` with one more message (every failure stays visible)."""
    return "; ".join(filter(None, [state.get("memory_error"), message]))


@contextmanager
def endpoint_errors(what: str, base_url: str | None) -> Iterator[None]:
    """Turn provider failures into one clear `EndpointError` naming the endpoint."""
    where = base_url or "the OpenAI API"
    try:
        yield
    except openai.APITimeoutError as error:
        raise EndpointError(f"{what} at {where} timed out") from error
    except openai.APIConnectionError as error:
        raise EndpointError(f"{what} at {where} could not be reached: {error}") from error
    except openai.APIStatusError as error:
        raise EndpointError(
            f"{what} at {where} answered HTTP {error.status_code}: {error.message}"
        ) from error
    except httpx.HTTPError as error:
        raise EndpointError(f"{what} at {where} failed: {error}") from error


# -- what small models write: facts in the first person, categories of their own ----------

# The categories the extract program is asked for; anything else a model invents maps to
# one of them when it names exactly one ("food preferences", "work,"), else to "other".
CATEGORIES = ("preferences", "personal", "work", "health", "relationships", "plans", "location")
_CATEGORY_WORDS = {
    **{name: name for name in (*CATEGORIES, "other")},
    **{"preference": "preferences", "relationship": "relationships", "plan": "plans"},
}
# Said of the user in the third person. The first word of a fact names the user "User"
# (as the extract program is asked to); later ones "the user".
_AUXILIARIES = {
    "i'm": "is", "i am": "is", "i've": "has", "i have": "has", "i'll": "will",
    "i will": "will", "i'd": "would", "i would": "would", "i was": "was",
}  # fmt: skip
_POSSESSIVES = {"my": "their", "me": "them", "myself": "themselves", "mine": "theirs"}
_ADVERBS = frozenset(
    "just also really never always still recently now only usually often sometimes "
    "actually currently already finally mostly".split()
)
_UNCHANGED_VERBS = frozenset(
    "can could should must might may will would went got had was were saw bought ate left "
    "met made took began found gave knew thought felt became came ran wrote sold lost won "
    "paid kept quit did said told grew drove flew spent".split()
)
# "I" as the user's pronoun: followed by a word that is no preposition or article (so
# "type I diabetes" and "Part I of" are not the user), an apostrophe ("I'm"), or the end.
_NOT_AFTER_I = frozenset("of and or the a an in on at to for with from by is was are".split())
_PRONOUN_I = re.compile(r"\bI\b(?=\s*$|'|\s+(?!(?:" + "|".join(_NOT_AFTER_I) + r")\b)\w)")
_FIRST_PERSON = re.compile(r"\b(?:my|me|mine|myself)\b", re.IGNORECASE)
_MARK = "\x00"  # where "the user" goes, while the text is being turned
_NEGATIONS = {"don't": "doesn't", "do not": "does not"}


def known_category(category: str | None) -> str:
    """A model's category as one of `CATEGORIES` (or "other")."""
    named = {
        _CATEGORY_WORDS[word]
        for word in re.findall(r"[a-z]+", (category or "").casefold())
        if word in _CATEGORY_WORDS
    }
    return named.pop() if len(named) == 1 else "other"


def third_person(fact: str) -> str | None:
    """The fact said of the user ("I'm vegetarian" -> "User is vegetarian", "My sister"
    -> "User's sister"), or None when first-person words remain that these rules cannot
    turn (the fact is then refused with that reason). A fact that already starts with
    "User" is left as it is: the model followed its instructions."""
    text = fact.strip().replace("\u2019", "'")
    if text.casefold().startswith("user") or not (
        _PRONOUN_I.search(text) or _FIRST_PERSON.search(text) or re.match(r"i\b", text)
    ):
        return fact
    text = re.sub(r"^i\b", "I", text)
    text = re.sub(r"^My\b", _MARK + "'s", text)
    for said, verb in _AUXILIARIES.items():
        pattern = r"\b" + said.replace("i", "I", 1).replace(" ", r"\s+") + r"\b"
        text = re.sub(pattern, f"{_MARK} {verb}", text)
    for said, turned in _NEGATIONS.items():
        text = re.sub(r"\bI\s+" + said.replace(" ", r"\s+") + r"\b", f"{_MARK} {turned}", text)
    # a question ("am I", "do I"): the verb after the user stays as it is
    text = re.sub(
        r"\b([Aa])m\s+I\b", lambda m: ("Is" if m.group(1) == "A" else "is") + f" {_MARK}", text
    )
    text = re.sub(
        r"\b(do|Do|did|Did|can|Can|could|will|would|should|shall|may|might|must)\s+I\b",
        lambda m: {"do": "does", "Do": "Does"}.get(m.group(1), m.group(1)) + f" {_MARK}",
        text,
    )
    text = re.sub(r"\bI\s+([\w']+)(\s+[\w']+)?", _conjugated, text)
    text = _FIRST_PERSON.sub(lambda m: _POSSESSIVES[m.group(0).casefold()], text)
    text = re.sub("^" + _MARK, "User", text).replace(_MARK, "the user")
    text = re.sub(r"([.!?]\s+)(their|the)\b", lambda m: m.group(1) + m.group(2).title(), text)
    return None if _PRONOUN_I.search(text) or _FIRST_PERSON.search(text) else text


def _conjugated(match: re.Match[str]) -> str:
    """`I <verb>` as `<mark> <verb, third person>`, past an adverb ("I just moved")."""
    first, rest = match.group(1), match.group(2) or ""
    if first.casefold() in _ADVERBS and rest:
        return f"{_MARK} {first} {_third_person_verb(rest.strip())}"
    return f"{_MARK} {_third_person_verb(first)}{rest}"


def _third_person_verb(verb: str) -> str:
    lowered = verb.casefold()
    if lowered in _UNCHANGED_VERBS or "'" in lowered:  # "can't", "didn't", "won't"
        return verb
    if lowered.endswith("ed") and not lowered.endswith("eed"):  # moved; not need, feed
        return verb
    if lowered in ("have", "do", "go"):
        return {"have": "has", "do": "does", "go": "goes"}[lowered]
    if re.search(r"[^aeiou]y$", lowered):
        return verb[:-1] + "ies"
    if re.search(r"(s|sh|ch|x|z|o)$", lowered):
        return verb + "es"
    return verb + "s"
