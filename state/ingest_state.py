"""The ingest graph's state: the chat graph's, plus which user messages it has considered.

An app with its own chat model sends batches of messages; only messages not seen before on
the thread are considered, so re-sending a batch changes nothing."""

from __future__ import annotations

from typing import Annotated

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from engram.state.graph_state import EngramState, MemoryStepsOutput


class IngestInput(TypedDict):
    """What a client sends: user and assistant messages with stable ids (optional
    `additional_kwargs={"sent_at": ISO 8601}`). Nothing else can be injected."""

    messages: Annotated[list[AnyMessage], add_messages]


class IngestState(EngramState, total=False):
    # user message id -> fingerprint of its text, for every message already considered
    ingested: dict[str, str]


IngestOutput = MemoryStepsOutput  # what an ingest run returns: the memory steps' report
