"""Run context: who the turn is for and per-run knobs. The LLM never chooses the user."""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, Field, field_validator

MAX_USER_ID_CHARS = 256


class AllAgents(enum.Enum):
    """The operator's view across every agent's memories of a user (`ALL_AGENTS`)."""

    ALL = "all agents"


# Reads that span every agent's private memories (the local CLI's `--all-agents`, an
# operator's Python): never what a run, a token or an MCP client can ask for.
ALL_AGENTS = AllAgents.ALL
AgentScope = str | None | AllAgents


class EngramContext(BaseModel):
    """Passed as `context=` to every run; validated by LangGraph before any node runs."""

    user_id: str = Field(
        default="",
        description="Whose memories this run reads and writes. On a server it is the "
        "authenticated user (left out, it is filled in; another id is refused). Required "
        "outside a server.",
    )
    agent_id: str | None = Field(
        default=None,
        description="The agent this run acts as: it sees the user's shared memories and "
        "its own, never another agent's; left out, only the shared ones. On a server the "
        "token must allow it.",
    )
    chat_model: str | None = Field(
        default=None, description="Overrides ENGRAM_CHAT_MODEL (one of ENGRAM_ALLOWED_MODELS)."
    )
    memory_model: str | None = Field(
        default=None, description="Overrides ENGRAM_MEMORY_MODEL (one of ENGRAM_ALLOWED_MODELS)."
    )
    top_k: int | None = Field(default=None, ge=1, le=50, description="Memories recalled.")
    save_policy: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="auto: an LLM decides; always: extract every turn; never: read-only.",
    )
    memory_steps: Literal["background", "inline"] | None = Field(
        default=None,
        description="background: the run ends with the answer and the memory steps run "
        "as a run of their own (the default on a LangGraph server); inline: in this run, "
        "after the answer (the default from Python).",
    )

    @field_validator("user_id")
    @classmethod
    def _valid_user_id(cls, value: str) -> str:
        if value == "":  # left out: the server's authenticated user (identity.run_context)
            return value
        return validate_user_id(value)

    @field_validator("agent_id")
    @classmethod
    def _valid_agent_id(cls, value: str | None) -> str | None:
        return None if value is None or value == "" else validate_agent_id(value)


def validate_user_id(value: str, *, name: str = "user_id") -> str:
    """The one rule for user ids (graph, store and CLI): non-blank, printable, bounded."""
    value = value.strip() if isinstance(value, str) else ""
    if not value:
        raise ValueError(f"{name} must not be blank")
    if len(value) > MAX_USER_ID_CHARS:
        raise ValueError(f"{name} must be at most {MAX_USER_ID_CHARS} characters")
    if any(not ch.isprintable() for ch in value):
        raise ValueError(f"{name} must not contain control characters")
    return value


def validate_agent_id(value: str) -> str:
    """Agent ids follow the user ids' rule (they name a scope of the user's memories); `*`
    is not one: in a token's agents claim it means every agent."""
    value = validate_user_id(value, name="agent_id")
    if value == "*":
        raise ValueError("agent_id '*' is reserved (a token's claim for every agent)")
    return value
