"""The graph's nodes: recall, respond, decide_save, extract, retrieve_similar, maintain, and
update_profile (the user's profile after memory changes), and schedule_memory (the memory
steps as a run of their own on a LangGraph server)."""

from engram.nodes.decide_save import make_decide_save, route_after_decide
from engram.nodes.extract import make_extract, route_after_extract
from engram.nodes.maintain import make_maintain
from engram.nodes.programs import (
    DecideSave,
    ExtractFacts,
    MaintainMemory,
    MemoryPrograms,
    UpdateProfile,
)
from engram.nodes.recall import make_recall
from engram.nodes.respond import make_respond
from engram.nodes.retrieve_similar import make_retrieve_similar
from engram.nodes.schedule_memory import (
    make_route_after_respond,
    make_schedule_memory,
    route_after_schedule,
)
from engram.nodes.update_profile import make_update_profile

__all__ = [
    "DecideSave",
    "ExtractFacts",
    "MaintainMemory",
    "MemoryPrograms",
    "UpdateProfile",
    "make_decide_save",
    "make_extract",
    "make_maintain",
    "make_recall",
    "make_respond",
    "make_retrieve_similar",
    "make_route_after_respond",
    "make_schedule_memory",
    "make_update_profile",
    "route_after_decide",
    "route_after_extract",
    "route_after_schedule",
]
