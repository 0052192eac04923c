"""How long a user waits for the answer, and what a saving turn costs beyond its model calls.

Runs the real chat graph (checkpoints in LangGraph's `InMemorySaver`, old messages moving to
its `InMemoryStore`, as on a LangGraph server) over Engram's memory store with real local
all-MiniLM-L6-v2 embeddings, and scripted models that each answer after a fixed latency:
instantly, and after 300 ms per call. Every measured turn is a saving turn: decide_save
says yes, extract returns one new fact, maintain ADDs it. Side by side in one run:

- engines: Qdrant Edge on disk (`EdgeEngine` in a temporary directory, the
  embedded default) and qdrant-client local mode in memory (`ServerEngine`
  over `QdrantClient(":memory:")`, what the embedded store was before Edge);
- store sizes: 1k and 100k points in all; the queried user holds all of the 1k, and 10k
  of the 100k (the rest is spread over 99 other users; one version in ten superseded).
  Points are bulk-inserted with `engine.upsert` (payload from `engram.memory.payload`, keyword
  vector from `engram.memory.keywords.document_keywords`). Their dense vectors are REAL local
  embeddings of 50 distinct memory texts, reused (so recall finds memories above the
  relevance floor, as in use), not random vectors;
- embedding sizes: 384 dimensions (all-MiniLM-L6-v2, `ENGRAM_EMBEDDINGS=local`) everywhere,
  and 64 (Engram's default size, OpenAI's text-embedding-3-small shortened) in one more
  Edge store at the largest size: no OpenAI model runs here, so its vectors are the local
  model's, shortened the way OpenAI shortens its own (the first 64 values, rescaled to
  length 1);

and it prints, as medians over the measured turns:

- time to answer: from the user's message to the end of `respond` (recall + one chat
  call), and the ratio at 100k / 1k points with 384-dim vectors (target <= 1.2);
- full saving turn: until `maintain` has applied its operation;
- overhead of a saving turn beyond its model calls at 10k memories (target <= 15 ms), for
  each model latency and vector size: the full turn minus the time spent inside the chat
  model, the memory LM and the embedding model (each timed around its calls); split into
  DSPy's share (building the three prompts and parsing the answers: the memory programs' time,
  `engram.nodes.programs.run_program` timed in the nodes, minus the LM's) and the rest (graph,
  checkpoints, store reads and writes, moving old messages);
- LangGraph alone, run in the same round robin: the chat graph's steps and edges over
  Engram's state schema and checkpointer, with nodes that only wait where Engram's call a
  model, timed beyond those waits: a lower bound on LangGraph's own share of the overhead;
- the embedding model's time for one query and for 3 facts at 1 and 2 torch threads,
  which chose ENGRAM_EMBEDDING_THREADS's default (1).

    python benchmarks/turn_latency.py [--turns 20] [--sizes 1000,100000] [--local-max 100000]

about 3 minutes with --local-max 1000; local mode at 100k points adds about 6 more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Protocol

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
import torch
from dspy.utils import DummyLM
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.store.memory import InMemoryStore
from qdrant_client import QdrantClient

from engram.clients import Clients, build_embeddings
from engram.graph import build_graph, checkpoint_serde
from engram.memory.engines.base import Engine, Point
from engram.memory.engines.edge import EdgeEngine
from engram.memory.engines.qdrant_server import ServerEngine
from engram.memory.keywords import document_keywords
from engram.memory.payload import Stored, payload
from engram.memory.store import MemoryStore
from engram.settings import Settings
from engram.state import EngramContext, EngramState
from engram.state.contracts import MemoryRecord, Source

USER = "bench-user"
USER_POINTS = 10_000
OTHER_USERS = 99
BATCH = 5_000
LATENCIES = (0.0, 0.3)
ANSWER_RATIO_TARGET = 1.2
OVERHEAD_TARGET_MS = 15.0
FIRST_TURN = 10_000  # turn numbers stay clear of years (see user_message)
LOCAL_DIMS = 384  # all-MiniLM-L6-v2's size
DEFAULT_DIMS = 64  # ENGRAM_EMBEDDING_DIMS's default for OpenAI embeddings
BASE_TEXTS = [
    f"User {what}"
    for what in (
        "lives in Lyon",
        "works as a nurse on night shifts",
        "is vegetarian",
        "keeps bees on the roof",
        "has a sister called Anna",
        "plays the cello",
        "is learning Greek",
        "runs marathons",
        "drinks green tea every morning",
        "is allergic to peanuts",
        "has a dog named Pixel",
        "prefers trains to planes",
        "reads science fiction",
        "was born in 1990",
        "studies architecture",
        "grows tomatoes on the balcony",
        "supports Olympique Lyonnais",
        "climbs on weekends",
        "wants to visit Japan",
        "works remotely on Fridays",
        "cooks Italian food",
        "collects vinyl records",
        "is saving for a flat",
        "swims in the lake in summer",
        "hates mornings",
        "has two children",
        "volunteers at a food bank",
        "speaks Portuguese",
        "plays chess online",
        "bakes sourdough bread",
        "drives an electric car",
        "goes hiking in the Alps",
        "takes the bus to work",
        "is training for a triathlon",
        "likes jazz concerts",
        "writes poetry",
        "photographs birds",
        "has a cat named Miso",
        "is a night owl",
        "practises yoga",
        "repairs old bicycles",
        "teaches piano",
        "moved from Porto",
        "meditates daily",
        "brews beer at home",
        "plays football on Tuesdays",
        "is afraid of heights",
        "knits scarves",
        "follows Formula 1",
        "sings in a choir",
    )
]


class Timer:
    """Seconds spent inside calls, added up across threads."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._lock = threading.Lock()

    @contextmanager
    def timing(self) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds += time.perf_counter() - began

    def take(self) -> float:
        with self._lock:
            spent, self.seconds = self.seconds, 0.0
        return spent


CHAT, LM, EMBED, PROGRAMS, STORE = Timer(), Timer(), Timer(), Timer(), Timer()
_depth = threading.local()


def timed_store(store: MemoryStore) -> None:
    """Time the store's calls from the nodes (outermost only: search calls search_many)."""
    for name in ("search", "search_many", "apply"):
        method = getattr(store, name)

        def timed(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
            depth = getattr(_depth, "value", 0)
            _depth.value = depth + 1
            try:
                if depth:
                    return _method(*args, **kwargs)
                with STORE.timing():
                    return _method(*args, **kwargs)
            finally:
                _depth.value = depth

        setattr(store, name, timed)


def timed_programs() -> None:
    """Time the memory programs where the nodes call them (prompt, LM call, parsing)."""

    from engram.nodes import programs

    run_program = programs.run_program

    async def timed(*args: Any, **kwargs: Any) -> Any:
        with PROGRAMS.timing():
            return await run_program(*args, **kwargs)

    programs.run_program = timed  # every node's step runs through it


class TimedEmbeddings(Embeddings):
    """The real embeddings, with their time counted as model time."""

    def __init__(self, inner: Embeddings) -> None:
        self.inner = inner

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        with EMBED.timing():
            return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        with EMBED.timing():
            return self.inner.embed_query(text)


class Shortened(Embeddings):
    """Another model's vectors cut to their first `dims` values and rescaled to length 1,
    as OpenAI's text-embedding-3 models shorten theirs (`dimensions`)."""

    def __init__(self, inner: Embeddings, dims: int) -> None:
        self.inner = inner
        self.dims = dims

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._shorten(v) for v in self.inner.embed_documents(texts)]

    def embed_query(self, text: str) -> list[float]:
        return self._shorten(self.inner.embed_query(text))

    def _shorten(self, vector: list[float]) -> list[float]:
        head = vector[: self.dims]
        norm = math.sqrt(sum(x * x for x in head)) or 1.0
        return [x / norm for x in head]


class SlowLM(DummyLM):
    """Scripted memory LM answers, each after `latency` seconds, like a remote model."""

    def __init__(self, answers: list[dict[str, str]], latency: float) -> None:
        super().__init__(answers)
        self.latency = latency

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        with LM.timing():
            await asyncio.sleep(self.latency)
            return await super().acall(*args, **kwargs)


class SlowChat(FakeListChatModel):
    """A chat model that answers after `latency` seconds."""

    latency: float = 0.0

    async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
        with CHAT.timing():
            await asyncio.sleep(self.latency)
            return await super()._agenerate(*args, **kwargs)


def user_message(n: int) -> str:
    """Turn `n`'s message. `n` has five digits (`FIRST_TURN`): a number like 2003 reads as
    a year, and recall would add a search for what the user said in it."""
    return f"I went hiking on trail number {n} with my sister"


def saving_answers(turns: range) -> list[dict[str, str]]:
    """decide_save, extract and maintain answers for each turn, in call order."""
    answers = []
    for n in turns:
        fact = f"User went hiking on trail number {n}"
        answers += [
            {"save": "True"},
            {"facts": json.dumps([{"text": fact, "category": "activities"}])},
            {
                "reasoning": "A new fact.",
                "operations": json.dumps([{"op": "ADD", "text": fact, "category": "activities"}]),
            },
        ]
    return answers


# -- synthetic stores ------------------------------------------------------------------------


def make_points(start: int, count: int, queried: int, vectors: list[list[float]]) -> list[Point]:
    at = datetime(2025, 1, 1, tzinfo=UTC)
    points = []
    for index in range(start, start + count):
        point_id = str(uuid.UUID(int=index + 1))
        base = index % len(BASE_TEXTS)
        record = MemoryRecord(
            id=point_id,
            user_id=USER if index < queried else f"other-{index % OTHER_USERS}",
            text=f"{BASE_TEXTS[base]} (note {index})",
            category="other",
            status="superseded" if index % 10 == 9 else "active",
            created_at=at + timedelta(seconds=index),
            updated_at=at + timedelta(seconds=index),
            observed_at=at,
            lineage_id=point_id,
            source=Source(actor="benchmark"),
        )
        points.append(
            Point(
                id=point_id,
                payload=payload(Stored(record)),
                dense=vectors[base],
                keywords=document_keywords(record.text),
            )
        )
    return points


def open_engine(kind: str, root: Path, size: int, embeddings: Embeddings, dims: int) -> Engine:
    if kind == "Edge":
        return EdgeEngine(root / f"edge-{size}-{dims}")
    return ServerEngine(QdrantClient(":memory:"), "engram_memories", embeddings)


def build_store(
    kind: str, root: Path, size: int, embeddings: Embeddings, vectors: list[list[float]]
) -> tuple[MemoryStore, float]:
    dims = len(vectors[0])
    store = MemoryStore(
        open_engine(kind, root, size, embeddings, dims),
        embeddings,
        dims=dims,
        embedding_id="local:all-MiniLM-L6-v2",  # the store adds the size
    )
    queried = min(USER_POINTS, size)
    began = time.perf_counter()
    for start in range(0, size, BATCH):
        store.engine.upsert(make_points(start, min(BATCH, size - start), queried, vectors))
    inserted = time.perf_counter() - began
    timed_store(store)
    return store, inserted


# -- measuring -------------------------------------------------------------------------------


@dataclass
class Result:
    engine: str
    points: int
    dims: int
    latency: float
    answer: list[float] = field(default_factory=list)
    full: list[float] = field(default_factory=list)
    overhead: list[float] = field(default_factory=list)
    dspy: list[float] = field(default_factory=list)
    store: list[float] = field(default_factory=list)


def compile_checkpointed(builder: StateGraph[Any, Any, Any, Any]) -> Any:
    """As on a LangGraph server: checkpoints in memory, old messages in its store."""
    return builder.compile(
        checkpointer=InMemorySaver(serde=checkpoint_serde()), store=InMemoryStore()
    )


class Case:
    """One store at one model latency: its own graph and thread, one turn at a time."""

    def __init__(self, store: MemoryStore, result: Result, turns: int, first: int) -> None:
        self.result = result
        self.turns = iter(range(first, first + turns))
        chat = SlowChat(responses=["Sounds lovely, tell me more."], latency=result.latency)
        lm = SlowLM(saving_answers(range(first, first + turns)), result.latency)
        clients = Clients(Settings(llm_attempts=1), store=store, chat_model=chat, memory_lm=lm)
        self.graph = compile_checkpointed(build_graph(clients))
        self.config: RunnableConfig = {"configurable": {"thread_id": f"bench-{uuid.uuid4()}"}}

    async def turn(self, measured: bool) -> None:
        n = next(self.turns)
        for timer in (CHAT, LM, EMBED, PROGRAMS, STORE):
            timer.take()
        start = time.perf_counter()
        answered = 0.0
        applied: list[Any] = []
        async for update in self.graph.astream(
            {"messages": [HumanMessage(user_message(n))]},
            config=self.config,
            context=EngramContext(user_id=USER),
            stream_mode="updates",
        ):
            if "respond" in update:
                answered = time.perf_counter() - start
            if update.get("maintain"):
                applied = update["maintain"].get("applied") or []
        full = time.perf_counter() - start
        lm_s, embed_s = LM.take(), EMBED.take()
        model = CHAT.take() + lm_s + embed_s
        dspy_s = PROGRAMS.take() - lm_s
        store_s = STORE.take() - embed_s  # every embedding happens inside a store call
        if [a.result for a in applied] != ["added"]:
            raise SystemExit(f"turn {n} did not save its fact: {applied}")
        if measured:
            result = self.result
            result.answer.append(answered)
            result.full.append(full)
            result.overhead.append(full - model)
            result.dspy.append(dspy_s)
            result.store.append(store_s)


class BareCase:
    """LangGraph alone: the chat graph's six steps and edges (both routes coroutines, as in
    `engram.graph.build_graph`) over Engram's state schema and checkpointer, with nodes that only
    wait where Engram's call a model (respond, decide_save, extract, maintain). Its state
    stays small (two messages, none of Engram's records), so its time beyond the waits is a
    lower bound on LangGraph's own share of Engram's overhead, on this machine."""

    WAITING: ClassVar[frozenset[str]] = frozenset({"respond", "decide_save", "extract", "maintain"})

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.overhead: list[float] = []
        self.waits = Timer()
        builder = StateGraph(EngramState, context_schema=EngramContext)
        for name in ("recall", "respond", "decide_save", "extract", "retrieve_similar", "maintain"):
            builder.add_node(name, self._node(name))
        builder.add_edge(START, "recall")
        builder.add_edge("recall", "respond")
        builder.add_edge("respond", "decide_save")
        builder.add_conditional_edges("decide_save", _route_to("extract"), ["extract", END])
        builder.add_conditional_edges(
            "extract", _route_to("retrieve_similar"), ["retrieve_similar", END]
        )
        builder.add_edge("retrieve_similar", "maintain")
        builder.add_edge("maintain", END)
        self.graph = compile_checkpointed(builder)
        self.config: RunnableConfig = {"configurable": {"thread_id": f"bare-{uuid.uuid4()}"}}

    def _node(self, name: str) -> Callable[..., Awaitable[dict[str, Any]]]:
        async def node(state: EngramState) -> dict[str, Any]:
            if name in self.WAITING:
                with self.waits.timing():
                    await asyncio.sleep(self.latency)
            if name == "respond":  # a fixed id: each turn replaces the last answer
                return {"messages": [AIMessage("Sounds lovely.", id="bare-answer")]}
            return {}

        return node

    async def turn(self, measured: bool) -> None:
        self.waits.take()
        start = time.perf_counter()
        async for _ in self.graph.astream(
            {"messages": [HumanMessage(user_message(0), id="bare-user")]},
            config=self.config,
            context=EngramContext(user_id=USER),
            stream_mode="updates",
        ):
            pass
        if measured:
            self.overhead.append(time.perf_counter() - start - self.waits.take())


def _route_to(target: str) -> Callable[..., Awaitable[str]]:
    async def route(state: EngramState) -> str:
        return target

    return route


class Turns(Protocol):
    async def turn(self, measured: bool) -> None: ...


async def measure(cases: Sequence[Turns], turns: int, warmup: int) -> None:
    """Turn by turn, round robin over the cases: a burst of load on the machine slows
    every case alike instead of one of them."""
    for i in range(warmup + turns):
        for case in cases:
            await case.turn(measured=i >= warmup)


def embedding_threads(embeddings: Embeddings, default_threads: int) -> None:
    """One query and 3 facts embedded at 1 and 2 torch threads, on an idle machine and
    while another process keeps one core busy (as the previous turn's memory steps, Qdrant
    or any other program do on a 2-core machine)."""
    query = "Where did I say I would go hiking next weekend with my sister?"
    facts = ["User lives in Lyon", "User keeps bees on the roof", "User's sister is Anna"]
    print(
        f"\nlocal embeddings (all-MiniLM-L6-v2), medians of 40; torch's default here: "
        f"{default_threads} thread(s)"
    )
    for busy in (False, True):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            for threads in sorted({1, 2, default_threads}):
                torch.set_num_threads(threads)
                for _ in range(5):
                    embeddings.embed_query(query)
                one, three = [], []
                for _ in range(40):
                    began = time.perf_counter()
                    embeddings.embed_query(query)
                    one.append(time.perf_counter() - began)
                    began = time.perf_counter()
                    embeddings.embed_documents(facts)
                    three.append(time.perf_counter() - began)
                where = "one core busy" if busy else "idle"
                print(
                    f"  {where:<13} {threads} thread(s): one query {ms(one):>8}, "
                    f"3 facts {ms(three):>8}"
                )
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20, help="measured turns per case")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sizes", default="1000,100000", help="total points, comma-separated")
    parser.add_argument(
        "--local-max", type=int, default=100_000, help="largest store for local mode"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    warnings.filterwarnings("ignore", "Local mode is not recommended")  # measured anyway
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    timed_programs()
    default_threads = torch.get_num_threads()  # before build_embeddings sets Engram's
    local = build_embeddings(Settings(embeddings="local"))
    models = {  # vector size -> (timed embeddings, the base texts' vectors)
        dims: (TimedEmbeddings(model), model.embed_documents(BASE_TEXTS))
        for dims, model in ((LOCAL_DIMS, local), (DEFAULT_DIMS, Shortened(local, DEFAULT_DIMS)))
    }

    results: list[Result] = []
    bare: dict[float, BareCase] = {}  # model latency -> LangGraph alone
    print(
        f"{'engine':<7} {'points':>7} {'user':>6} {'dims':>4} {'insert':>7} {'model':>6} "
        f"{'answer':>9} {'full turn':>10} {'overhead':>9}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("Edge", "local"):
            kept = [size for size in sizes if kind == "Edge" or size <= args.local_max]
            shapes = [(size, LOCAL_DIMS) for size in kept]
            if kind == "Edge":
                shapes.append((sizes[-1], DEFAULT_DIMS))
            stores = {
                (size, dims): build_store(kind, Path(tmp), size, *models[dims])
                for size, dims in shapes
            }
            for latency in LATENCIES:
                cases = [  # turn numbers apart: every case's facts are new to its store
                    Case(
                        store,
                        Result(kind, size, dims, latency),
                        args.warmup + args.turns,
                        FIRST_TURN + 1000 * i,
                    )
                    for i, ((size, dims), (store, _)) in enumerate(stores.items(), len(results))
                ]
                runs: list[Turns] = [*cases]
                if kind == "Edge":  # LangGraph's floor, under the same conditions
                    bare[latency] = BareCase(latency)
                    runs.append(bare[latency])
                asyncio.run(measure(runs, args.turns, args.warmup))
                results += [case.result for case in cases]
            for (size, dims), (store, insert_s) in stores.items():
                store.engine.close()
                for r in results:
                    if (r.engine, r.points, r.dims) == (kind, size, dims):
                        print(
                            f"{kind:<7} {size:>7} {min(USER_POINTS, size):>6} {dims:>4} "
                            f"{insert_s:>6.1f}s {r.latency * 1000:>4.0f}ms {ms(r.answer):>9} "
                            f"{ms(r.full):>10} {ms(r.overhead):>9}"
                        )

    print(
        f"\ntime to answer at {sizes[-1]} / {sizes[0]} points, {LOCAL_DIMS} dims "
        f"(target <= {ANSWER_RATIO_TARGET}):"
    )
    for kind in ("Edge", "local"):
        for latency in LATENCIES:
            case = (kind, LOCAL_DIMS, latency)
            pair = [r for r in results if (r.engine, r.dims, r.latency) == case]
            if len(pair) >= 2:
                ratio = statistics.median(pair[-1].answer) / statistics.median(pair[0].answer)
                print(f"  {kind:<6} models at {latency * 1000:3.0f} ms: {ratio:.2f}")
    at_10k = [r for r in results if r.engine == "Edge" and r.points >= USER_POINTS]
    for r in sorted(at_10k, key=lambda r: (r.dims, r.latency)):
        overhead = statistics.median(r.overhead) * 1000
        verdict = "met" if overhead <= OVERHEAD_TARGET_MS else "NOT met"
        graph = [o - d - st for o, d, st in zip(r.overhead, r.dspy, r.store, strict=True)]
        print(
            f"saving turn beyond model calls, Edge, {r.dims} dims, models at "
            f"{r.latency * 1000:.0f} ms, {USER_POINTS} memories of the user, {r.points} points: "
            f"{overhead:.1f} ms (target <= {OVERHEAD_TARGET_MS:.0f}: {verdict})\n  of which: "
            f"store (searches, ADD) {ms(r.store)}, DSPy prompts and parsing {ms(r.dspy)}, "
            f"graph + checkpoints + old messages {ms(graph)}"
        )
    for latency, floor in bare.items():
        print(
            f"LangGraph alone (the chat graph's steps and edges, Engram's state schema and "
            f"checkpointer; nodes that only wait where Engram's call a model), waits of "
            f"{latency * 1000:.0f} ms: {ms(floor.overhead)} beyond the waits (a lower bound)"
        )
    embedding_threads(local, default_threads)


if __name__ == "__main__":
    main()
