"""Engram's state graphs: chat (recall → respond → decide_save → extract → retrieve_similar →
maintain → update_profile) and ingest (the same from decide_save on, see graph.ingest).

On a LangGraph server a chat run ends with the answer: respond → schedule_memory queues the
memory steps as an ingest run of their own (see `engram.nodes.schedule_memory`). From Python
they run in the same run, after the answer (stream it to show it first, as `engram chat`),
unless the run's context asks for `memory_steps="background"`: then `ainvoke` returns with
the answer and `join_memory_run` waits for the memory steps.

`build_graph()` / `build_ingest_graph()` return uncompiled builders; compile them with the
checkpointer you want. Every node runs behind `engram.graph.guard.guarded`.
Nothing here opens a client: models, embeddings and Qdrant are created on first use.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from engram.clients import Clients
from engram.graph.guard import StateTypes, guarded
from engram.graph.ingest import build_ingest_graph
from engram.nodes import (
    MemoryPrograms,
    make_decide_save,
    make_extract,
    make_maintain,
    make_recall,
    make_respond,
    make_retrieve_similar,
    make_route_after_respond,
    make_schedule_memory,
    make_update_profile,
    route_after_decide,
    route_after_extract,
    route_after_schedule,
)
from engram.nodes.schedule_memory import drain_memory_runs, join_memory_run
from engram.state import ChatInput, ChatOutput, EngramContext, EngramState, checkpoint_serde

__all__ = [
    "MemoryPrograms",
    "build_graph",
    "build_ingest_graph",
    "checkpoint_serde",
    "drain_memory_runs",
    "join_memory_run",
]


def build_graph(
    clients: Clients | None = None,
    programs: MemoryPrograms | None = None,
    *,
    plain_checkpoints: bool = False,
) -> StateGraph[EngramState, EngramContext, ChatInput, ChatOutput]:
    """The chat graph's builder. `clients` defaults to clients built from the settings;
    `plain_checkpoints`: checkpoints hold plain data (see `engram.graph.guard`), as a
    LangGraph server needs (`engram.graph.studio`). A run takes `ChatInput` (messages
    only; other keys are ignored) and returns `ChatOutput`."""
    clients = clients or Clients()
    programs = programs or MemoryPrograms.configured(clients.settings)
    builder = StateGraph(
        EngramState, context_schema=EngramContext, input_schema=ChatInput, output_schema=ChatOutput
    )
    nodes = {
        "recall": make_recall(clients),
        "respond": make_respond(clients),
        "schedule_memory": make_schedule_memory(
            build_ingest_graph(clients, programs, plain_checkpoints=plain_checkpoints)
        ),
        "decide_save": make_decide_save(clients, programs.decide_save),
        "extract": make_extract(clients, programs.extract),
        "retrieve_similar": make_retrieve_similar(clients),
        "maintain": make_maintain(clients, programs.maintain),
        "update_profile": make_update_profile(clients, programs.profile),
    }
    types = StateTypes(EngramState)
    for name, node in nodes.items():  # every node checks whose run and thread it is
        builder.add_node(name, guarded(node, clients, types, plain_checkpoints=plain_checkpoints))
    builder.add_edge(START, "recall")
    builder.add_edge("recall", "respond")
    builder.add_conditional_edges(
        "respond", make_route_after_respond(clients), ["decide_save", "schedule_memory", END]
    )
    builder.add_conditional_edges("schedule_memory", route_after_schedule, ["decide_save", END])
    builder.add_conditional_edges(
        "decide_save", route_after_decide, ["extract", "update_profile", END]
    )
    builder.add_conditional_edges(
        "extract", route_after_extract, ["retrieve_similar", "update_profile", END]
    )
    builder.add_edge("retrieve_similar", "maintain")
    builder.add_edge("maintain", "update_profile")
    builder.add_edge("update_profile", END)
    return builder
