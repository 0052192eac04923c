"""The ingest graph's state: the chat graph's, plus which user messages it has considered.

An app with its own chat model sends batches of messages; only messages not seen before on
the thread are considered, so re-sending a batch changes nothing."""

from __future__ import annotations

import operator
from typing import Annotated

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from engram.state.contracts import AppliedOp, ObservedFact, RejectedOp, Unextracted
from engram.state.graph_state import EngramState


class IngestInput(TypedDict):
    """What a client sends: user and assistant messages with stable ids (optional
    `additional_kwargs={"sent_at": ISO 8601}`). Nothing else can be injected."""

    messages: Annotated[list[AnyMessage], add_messages]


class IngestState(EngramState, total=False):
    # user message id -> fingerprint of its text, for every message already considered
    ingested: dict[str, str]


class IngestOutput(TypedDict, total=False):
    """What an ingest run returns: the facts it extracted, what it changed, what it
    refused and why, and the work kept for a retry after a failure (`memory_error`)."""

    user_id: str
    save: bool | None
    extracted: list[ObservedFact]
    facts: list[ObservedFact]
    unextracted: list[Unextracted]
    applied: list[AppliedOp]
    rejected: Annotated[list[RejectedOp], operator.add]
    memory_error: str | None
