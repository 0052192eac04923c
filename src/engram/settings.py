"""The one place where Engram's configuration is read: environment variables and `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from engram.state.context import validate_agent_id
from engram.state.errors import ConfigurationError

DEFAULT_LOCAL_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
# How the memory programs ask for well-formed output (nodes/structured_output.py).
StructuredOutput = Literal["auto", "json_schema", "json_object", "off"]


class Settings(BaseSettings):
    """Process-wide defaults. Per-run knobs (user, models, top_k) travel in the run context."""

    model_config = SettingsConfigDict(
        env_prefix="ENGRAM_", env_file=".env", extra="ignore", populate_by_name=True
    )

    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "openai_base_url")
    )
    chat_model: str = "gpt-4o-mini"
    memory_model: str | None = None
    embeddings: Literal["openai", "local"] = "openai"
    embedding_model: str | None = None
    embedding_dims: int | None = Field(default=None, ge=1, le=65536)
    # Threads torch uses for local embeddings (see clients.build_embeddings: 1 is fastest
    # for a turn's few short texts).
    embedding_threads: int = Field(default=1, ge=1, le=256)
    qdrant_url: str | None = Field(
        default=None, validation_alias=AliasChoices("QDRANT_URL", "qdrant_url")
    )
    qdrant_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("QDRANT_API_KEY", "qdrant_api_key")
    )
    data_dir: Path = Field(default_factory=lambda: platformdirs.user_data_path("engram"))
    collection: str = "engram_memories"
    top_k: int = Field(default=5, ge=1, le=50)
    history_window: int = Field(default=12, ge=1, le=200)
    max_message_chars: int = Field(default=8000, ge=1)
    llm_timeout: float = Field(default=60.0, gt=0)
    llm_attempts: int = Field(default=2, ge=1, le=10)
    llm_backoff: float = Field(default=0.5, ge=0, le=10)
    retrieval: Literal["hybrid", "dense"] = "hybrid"
    # How the memory programs ask for well-formed output (nodes/structured_output.py):
    # auto finds out per endpoint and model; json_schema / json_object force one form;
    # off is DSPy's text format.
    structured_output: StructuredOutput = "auto"
    recall_floor: float = Field(default=0.15, ge=-1, le=2)
    # Recall's candidates reordered by the memory model before the answer (one more call on
    # the response path: latency for precision); off: the search's order.
    rerank: Literal["off", "llm"] = "off"
    # The user's profile (core facts always in the prompt, kept by one more memory program
    # after memory changes); off: no profile program call and no profile in the prompt.
    profile: Literal["on", "off"] = "on"
    profile_chars: int = Field(default=800, ge=50, le=8000)
    # Days memories of a category stay true after they were last said, unless the user
    # said otherwise: "plans=90,travel=30". Expired memories are kept, not recalled as current.
    ttl: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    # Agents whose new memories are their own, seen by no other agent of the user
    # ("health,therapist"); every other agent's new memories are shared (docs/agents.md).
    private_agents: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Optimized memory programs (`engram optimize`); unset: the built-in ones.
    programs: Path | None = None

    # -- serving: langgraph dev and LangGraph deployments (docs/deploying.md) -------------
    # Tokens are HS256 with the secret, or RS256/ES256 from an identity provider's JWKS.
    auth_secret: SecretStr | None = None
    auth_jwks_url: str | None = None
    auth_audience: str | None = None
    auth_issuer: str | None = None
    # The token claim that lists the agents a caller may act as (`*`: any).
    auth_agents_claim: str = "agents"
    # Models a run's context may name (comma-separated); empty: the configured two only.
    allowed_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Whose memories LangGraph Studio uses under `langgraph dev`; unset: Studio is refused.
    studio_user: str | None = None
    # The only web origins whose browser requests may take Studio's no-token path.
    studio_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["https://smith.langchain.com", "https://eu.smith.langchain.com"]
    )
    max_import_bytes: int = Field(default=32 * 1024 * 1024, ge=1)  # POST /memories/import
    # Every other /memories body: a memory's text, a change, a forget confirmation.
    max_body_bytes: int = Field(default=64 * 1024, ge=1)
    # Where a chat run's memory steps run on a LangGraph server: background (the run ends
    # with the answer; nodes/schedule_memory.py) or inline (in the run, after the answer).
    # A run's context (`memory_steps`) overrides it. From Python they always run inline.
    memory_steps: Literal["background", "inline"] = "background"

    @field_validator("auth_jwks_url", "auth_audience", "auth_issuer", "studio_user")
    @classmethod
    def _blank_serving_setting_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("allowed_models", "studio_origins", "private_agents", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("private_agents")
    @classmethod
    def _agent_ids(cls, value: list[str]) -> list[str]:
        return [validate_agent_id(agent) for agent in value]

    @field_validator("ttl", mode="before")
    @classmethod
    def _category_days(cls, value: object) -> object:
        """ "plans=90, travel=30" -> {"plans": 90, "travel": 30}; a bad entry is refused."""
        if not isinstance(value, str):
            return value
        days: dict[str, int] = {}
        for entry in filter(None, (part.strip() for part in value.split(","))):
            category, _, number = entry.partition("=")
            if not category.strip() or not number.strip().isdigit() or int(number) < 1:
                raise ValueError(f"ENGRAM_TTL entry {entry!r}: write category=days, e.g. plans=90")
            days[category.strip().casefold()] = int(number)
        return days

    @property
    def permitted_models(self) -> frozenset[str]:
        """What `chat_model` / `memory_model` in a run's context may name."""
        return frozenset(self.allowed_models or (self.chat_model, self.resolved_memory_model))

    @field_validator("openai_base_url", "qdrant_url", "memory_model", "embedding_model")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("data_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("programs", mode="before")
    @classmethod
    def _programs_path(cls, value: object) -> object:
        if isinstance(value, str):
            return Path(value).expanduser() if value.strip() else None
        return value

    @property
    def resolved_memory_model(self) -> str:
        return self.memory_model or self.chat_model

    @property
    def resolved_embedding_model(self) -> str:
        if self.embedding_model:
            return self.embedding_model
        if self.embeddings == "openai":
            return "text-embedding-3-small"
        return DEFAULT_LOCAL_EMBEDDING_MODEL

    @property
    def resolved_embedding_dims(self) -> int | None:
        """OpenAI's text-embedding-3 models shrink to any size; 64 keeps the store small."""
        if self.embedding_dims is not None:
            return self.embedding_dims
        return 64 if self.embeddings == "openai" else None

    @property
    def qdrant_path(self) -> Path:
        """Where versions before Qdrant Edge kept the embedded store (migrated on open)."""
        return self.data_dir / "qdrant"

    @property
    def edge_path(self) -> Path:
        return self.data_dir / "edge" / self.collection

    @property
    def vector_key_path(self) -> Path:
        """The key that signs exported vectors (see `MemoryStore.vector_key`)."""
        return self.data_dir / "vector.key"

    @property
    def conversations_path(self) -> Path:
        return self.data_dir / "conversations.sqlite"

    def llm_credentials(self) -> tuple[str, str | None]:
        """API key and base URL for OpenAI-compatible calls, or a clear error.

        A local endpoint (Ollama, vLLM, llama.cpp) needs no key, but the OpenAI client
        insists on one, so a placeholder is sent.
        """
        if self.openai_api_key is not None and self.openai_api_key.get_secret_value().strip():
            return self.openai_api_key.get_secret_value(), self.openai_base_url
        if self.openai_base_url:
            return "not-needed", self.openai_base_url
        raise ConfigurationError(
            "No LLM endpoint configured: set OPENAI_API_KEY, or OPENAI_BASE_URL for a local "
            "OpenAI-compatible endpoint (e.g. http://localhost:11434/v1 for Ollama)."
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process (tests build their own `Settings(...)`)."""
    return Settings()
