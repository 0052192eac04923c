"""Agent scopes through the `engram` command on the real embedded store: `--agent` sees the
shared memories and that agent's own, never another agent's (read like a missing id);
`--all-agents` is the operator's view of every scope; forget, export, import and move keep
to the scopes; `engram chat --agent` keeps a private agent's facts to itself; tokens name
the agents they may act as."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from typer.testing import CliRunner

from engram.apps.cli import common as cli
from engram.apps.server.tokens import TokenVerifier
from engram.memory.store import MemoryStore
from engram.settings import Settings, get_settings
from engram.state.context import ALL_AGENTS
from engram.state.contracts import ProfileLine, Source
from engram.state.errors import ImportFormatError, InvalidInputError, MemoryNotFoundError
from tests.fake_openai import FakeOpenAI, facts_answer
from tests.helpers import chat_env, engram_env, run_engram
from tests.servers import SECRET, DevServer, bearer, langgraph_dev, token

runner = CliRunner()


@pytest.fixture(autouse=True)
def private_health(monkeypatch: pytest.MonkeyPatch) -> None:
    """`health` keeps the facts its runs extract to itself; other agents share theirs."""
    monkeypatch.setenv("ENGRAM_PRIVATE_AGENTS", "health")
    get_settings.cache_clear()


@pytest.fixture
def store(cli_store: MemoryStore) -> MemoryStore:
    return cli_store


def run(*args: str, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(cli.app, list(args), input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def listed(*args: str) -> list[str]:
    """The texts `engram memories list ... --json` prints."""
    code, output = run("memories", "list", "--user", "alice", "--json", *args)
    assert code == 0, output
    return sorted(m["text"] for m in json.loads(output))


def searched(query: str, *args: str) -> list[str]:
    code, output = run("memories", "search", query, "--user", "alice", "-k", "10", "--json", *args)
    assert code == 0, output
    return [m["text"] for m in json.loads(output)]


def alices_memories(store: MemoryStore) -> tuple[str, str]:
    """A private memory of health's own and a shared one; returns their ids."""
    insulin = store.add("alice", "User takes insulin daily", "health", agent_id="health")
    lyon = store.add("alice", "User lives in Lyon", "location", agent_id="travel")
    assert store.get("alice", insulin.memory_id or "", agent_id=ALL_AGENTS).agent_id == "health"
    assert store.get("alice", lyon.memory_id or "").agent_id is None  # travel shares its facts
    return insulin.memory_id or "", lyon.memory_id or ""


INSULIN, LYON = "User takes insulin daily", "User lives in Lyon"
BOTH = sorted([INSULIN, LYON])


def test_a_private_memory_is_listed_and_found_only_as_its_agent_or_by_the_operator(
    store: MemoryStore,
) -> None:
    alices_memories(store)

    assert listed("--agent", "health") == BOTH
    assert listed("--all-agents") == BOTH
    assert listed("--agent", "travel") == [LYON]
    assert listed() == [LYON]
    assert INSULIN in searched("insulin", "--agent", "health")
    assert INSULIN not in searched("insulin", "--agent", "travel")
    assert INSULIN not in searched("insulin")

    # The table names whose each memory is, when any is an agent's own.
    code, output = run("memories", "list", "--user", "alice", "--agent", "health")
    rows = {line.split()[-1]: line for line in output.splitlines() if "User " in line}
    assert code == 0 and "(agent health)" in output
    assert " health " in rows["daily"] and " shared " in rows["Lyon"]
    code, output = run("memories", "list", "--user", "alice", "--all-agents")
    assert "(every agent's)" in output and " health " in output
    code, output = run("memories", "list", "--user", "alice")
    header = next(line for line in output.splitlines() if line.strip().startswith("id"))
    assert "agent" not in header and "shared" not in output


@pytest.mark.parametrize("command", ["show", "history", "validity", "delete", "restore"])
def test_another_agents_memory_is_reported_like_an_unknown_id(
    store: MemoryStore, command: str
) -> None:
    insulin, _ = alices_memories(store)
    extra = ["--until", "2030-01-01"] if command == "validity" else []
    unknown = str(uuid.uuid4())
    for given in (insulin, insulin[:8]):
        made_up = unknown if len(given) == 36 else unknown[:8]
        with pytest.raises(MemoryNotFoundError) as missing:
            run("memories", command, made_up, "--user", "alice", *extra)
        for acting in ([], ["--agent", "travel"]):
            with pytest.raises(MemoryNotFoundError) as hidden:
                run("memories", command, given, "--user", "alice", *acting, *extra)
            assert str(hidden.value).replace(given, "ID") == str(missing.value).replace(
                made_up, "ID"
            )
    kept = store.get("alice", insulin, agent_id="health")
    assert (kept.status, kept.valid_until, kept.events[-1].op) == ("active", None, "ADD")


def test_its_own_agent_and_the_operator_reach_a_private_memory(store: MemoryStore) -> None:
    insulin, _ = alices_memories(store)
    code, output = run("memories", "show", insulin[:8], "--user", "alice", "--agent", "health")
    assert code == 0 and "agent: health (its own" in output
    code, output = run("memories", "show", insulin, "--user", "alice", "--all-agents", "--json")
    assert json.loads(output)["agent_id"] == "health"

    code, output = run(
        "memories", "validity", insulin[:8], "--user", "alice", "--agent", "health",
        "--until", "2030-01-01",
    )  # fmt: skip
    assert code == 0 and output.startswith("updated")
    current = next(m for m in store.memories("alice", agent_id="health") if m.text == INSULIN)
    assert (current.agent_id, str(current.valid_until)) == ("health", "2030-01-01")
    code, output = run("memories", "delete", current.id, "--user", "alice", "--agent", "health")
    assert code == 0 and output.startswith("deleted")
    code, output = run("memories", "restore", current.id, "--user", "alice", "--agent", "health")
    assert code == 0 and output.startswith("restored")
    code, output = run("memories", "history", insulin, "--user", "alice", "--agent", "health")
    assert "(agent health's own)" in output and "as agent health" in output
    code, output = run("memories", "history", insulin, "--user", "alice", "--all-agents", "--json")
    versions = json.loads(output)
    assert [v["agent_id"] for v in versions] == ["health", "health"]
    assert versions[-1]["events"][-1]["source"] == {"actor": "cli", "agent_id": "health",
        "thread_id": None, "message_ids": []}  # fmt: skip


def test_forget_as_an_agent_erases_only_its_own(store: MemoryStore) -> None:
    insulin, lyon = alices_memories(store)
    store.save_profile(
        "alice", [ProfileLine(text="Lives in Lyon.", memory_ids=[lyon])], source=Source()
    )

    code, output = run("forget", "--user", "alice", "--agent", "travel", "--yes")
    assert code == 0 and "Erased 0 memory versions agent travel kept for alice" in output
    assert listed("--all-agents") == BOTH

    code, output = run("forget", "--user", "alice", "--agent", "health", input="n\n")
    assert code != 0 and "Erase the 1 memory versions agent health keeps for alice?" in output
    assert "Shared memories, the profile and conversations stay." in output
    assert listed("--all-agents") == BOTH
    code, output = run("forget", "--user", "alice", "--agent", "health", "--yes")
    assert code == 0 and "Erased 1 memory versions agent health kept for alice" in output
    assert listed("--all-agents") == [LYON]
    assert [line.text for line in store.profile("alice").lines] == ["Lives in Lyon."]
    with pytest.raises(MemoryNotFoundError):
        store.get("alice", insulin, agent_id=ALL_AGENTS)

    store.add("alice", "User takes insulin daily", "health", agent_id="health")
    code, output = run("forget", "--user", "alice", input="n\n")
    assert "Erase all 2 memory versions" in output  # every agent's, counted
    code, output = run("forget", "--user", "alice", "--yes")
    assert code == 0 and "Erased 2 memory versions, the profile" in output
    assert store.count("alice", agent_id=ALL_AGENTS) == 0


def test_export_holds_what_its_agent_sees_and_import_keeps_scopes(
    store: MemoryStore, tmp_path: Path
) -> None:
    alices_memories(store)
    files = {name: tmp_path / f"{name}.jsonl" for name in ("travel", "health", "all", "shared")}
    said: dict[str, str] = {}
    for name, options in (
        ("travel", ["--agent", "travel"]),
        ("health", ["--agent", "health"]),
        ("all", ["--all-agents"]),
        ("shared", []),
    ):
        result = runner.invoke(
            cli.app, ["export", "--user", "alice", "--output", str(files[name]), *options]
        )
        assert result.exit_code == 0, result.output
        said[name] = result.output.strip().splitlines()[-1]

    def texts(path: Path) -> list[tuple[str, str | None]]:
        lines = [json.loads(line) for line in path.read_text().splitlines()[1:]]
        return sorted((line["text"], line["agent_id"]) for line in lines)

    assert texts(files["travel"]) == texts(files["shared"]) == [(LYON, None)]
    assert texts(files["health"]) == texts(files["all"]) == [(LYON, None), (INSULIN, "health")]
    assert json.loads(files["all"].read_text().splitlines()[0])["all_agents"] is True
    assert said == {
        "travel": "exported 1 memory versions of alice (the shared ones and agent travel's own); "
        "1 of other agents' own left out (--all-agents exports them)",
        "health": "exported 2 memory versions of alice (the shared ones and agent health's own)",
        "all": "exported 2 memory versions of alice (every agent's)",
        "shared": "exported 1 memory versions of alice; 1 of other agents' own left out "
        "(--all-agents exports them)",
    }

    run("forget", "--user", "alice", "--yes")
    with pytest.raises(ImportFormatError, match="agent 'health'"):
        run("import", str(files["all"]), "--agent", "travel")
    assert store.count("alice", agent_id=ALL_AGENTS) == 0  # all or nothing
    code, output = run("import", str(files["all"]))
    assert code == 0 and "imported 2 memory versions for alice" in output
    assert listed("--agent", "travel") == [LYON]
    assert listed("--agent", "health") == BOTH

    code, output = run("import", str(files["health"]), "--as-user", "bob", "--agent", "health")
    assert code == 0 and "imported 2 memory versions for bob" in output
    bobs = store.memories("bob", agent_id=ALL_AGENTS)
    assert sorted((m.text, m.agent_id) for m in bobs) == [(LYON, None), (INSULIN, "health")]


def test_move_between_scopes(store: MemoryStore) -> None:
    insulin, _ = alices_memories(store)
    code, output = run("memories", "move", insulin[:8], "--user", "alice", "--to", "shared")
    assert code == 0 and output.startswith(f"moved (to shared): {insulin} {INSULIN}")
    assert listed("--agent", "travel") == BOTH
    code, output = run("memories", "move", insulin, "--user", "alice", "--to", "shared")
    assert output.startswith("unchanged (already shared)")

    code, output = run(
        "memories", "move", insulin, "--user", "alice", "--to", "health", "--agent", "travel"
    )
    assert output.startswith("moved (to agent health)")
    assert listed("--agent", "travel") == [LYON]
    with pytest.raises(MemoryNotFoundError):  # travel no longer sees it to move it
        run("memories", "move", insulin, "--user", "alice", "--to", "shared", "--agent", "travel")
    code, output = run("memories", "history", insulin, "--user", "alice", "--all-agents")
    assert "MOVE" in output and "from agent 'health'" in output

    # A fact already in the destination absorbs the one moved there.
    tea = store.add("alice", "User likes tea", "preferences").memory_id or ""
    store.move("alice", tea, "health")
    again = store.add("alice", "User likes tea", "preferences").memory_id or ""
    assert again != tea  # health's copy is not the shared memories' business
    code, output = run("memories", "move", again, "--user", "alice", "--to", "health", "--json")
    moved = json.loads(output)
    assert (moved["result"], moved["memory_id"]) == ("merged", tea)
    assert listed("--agent", "health") == sorted([*BOTH, "User likes tea"])
    assert listed() == [LYON]


def test_profile_pins_only_shared_memories(store: MemoryStore) -> None:
    insulin, lyon = alices_memories(store)
    with pytest.raises(InvalidInputError, match="agent 'health''s own"):
        run("profile", "pin", insulin[:8], "--user", "alice", "--agent", "health")
    with pytest.raises(MemoryNotFoundError):  # travel does not even see it
        run("profile", "pin", insulin[:8], "--user", "alice", "--agent", "travel")
    code, output = run("profile", "pin", lyon[:8], "--user", "alice", "--agent", "health")
    assert code == 0 and f"{lyon[:8]} (pinned)" in output
    code, output = run("profile", "show", "--user", "alice", "--agent", "health", "--json")
    assert json.loads(output)["pinned"] == [lyon]
    code, output = run("profile", "unpin", lyon[:8], "--user", "alice", "--agent", "travel")
    assert code == 0 and store.profile("alice").pinned == []


def test_invalid_agents_and_scopes_are_one_line_errors(tmp_path: Path) -> None:
    env = engram_env(tmp_path, ENGRAM_AUTH_SECRET=SECRET, OPENAI_API_KEY="unused")
    for command, problem in (
        (["memories", "list", "--agent", ""], "error: --agent '': agent_id must not be blank"),
        (["chat", "--agent", "x\ny"], "agent_id must not contain control characters"),
        (["token", "--agent", " "], "agent_id must not be blank"),
    ):
        done = run_engram(env, *command, "--user", "alice")
        assert done.returncode == 1, (command, done.stdout)
        assert done.stderr.startswith(problem) or problem in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "data" / "qdrant").exists()  # refused before anything opened

    export = tmp_path / "alice.jsonl"
    export.write_text("{}\n")
    for command, problem in (
        (["memories", "list", "--agent", "*"], "--agent '*' names no agent"),
        (["memories", "search", "tea", "--agent", "\x1b[2J"], "control characters"),
        (["memories", "show", "abcd1234", "--agent", "he\x07lth"], "control characters"),
        (["memories", "move", "abcd1234", "--to", "*"], "--to '*' names no agent"),
        (["memories", "move", "abcd1234", "--to", ""], "--to '': agent_id must not be blank"),
        (["memories", "list", "--agent", "a", "--all-agents"], "not both"),
        (
            ["memories", "history", "abcd1234", "--all-agents", "--server", "http://127.0.0.1:9"],
            "--all-agents reads the local store only",
        ),
        (["profile", "show", "--agent", "*"], "--agent '*' names no agent"),
        (["export", "--agent", "*"], "--agent '*' names no agent"),
        (["import", str(export), "--agent", ""], "agent_id must not be blank"),
        (["forget", "--agent", " ", "--yes"], "agent_id must not be blank"),
        (["history", "--agent", "a" * 257], "at most 256 characters"),
    ):
        user = [] if command[0] == "import" else ["--user", "alice"]  # import: the file's
        result = runner.invoke(cli.app, [*command, *user])
        assert isinstance(result.exception, InvalidInputError), (command, result.output)
        assert problem in str(result.exception) and "\n" not in str(result.exception)


async def test_engram_token_names_the_agents_it_may_act_as(tmp_path: Path) -> None:
    env = engram_env(tmp_path, ENGRAM_AUTH_SECRET=SECRET)
    verifier = TokenVerifier.from_settings(Settings(auth_secret=SECRET))
    for agents, claim, said in (
        (["travel", "health"], ["travel", "health"], "as agent travel, health"),
        (["*"], ["*"], "as any agent"),
        ([], None, "token for alice, valid until"),
    ):
        done = run_engram(env, "token", "--user", "alice", *[f"--agent={a}" for a in agents])
        assert done.returncode == 0 and said in done.stderr, done.stderr
        minted = done.stdout.strip()
        assert jwt.decode(minted, SECRET, algorithms=["HS256"]).get("agents") == claim
        caller = await verifier.caller(f"Bearer {minted}")
        assert caller.user_id == "alice" and caller.agents == frozenset(claim or [])


def test_chat_as_a_private_agent_keeps_its_facts_to_itself(tmp_path: Path) -> None:
    with FakeOpenAI(dims=64) as fake:
        env = chat_env(fake.url, tmp_path, ENGRAM_PRIVATE_AGENTS="health")
        fake.queue("extract", facts_answer(("User takes insulin daily", "health")))
        said = run_engram(
            env, "chat", "--user", "alice", "--agent", "health", typed="I take insulin\n/quit\n"
        )
        assert said.returncode == 0, said.stderr
        assert "Chatting as alice with agent health (thread main)." in said.stdout
        assert "+ added: User takes insulin daily" in said.stdout

        def texts(*options: str) -> list[tuple[str, str | None]]:
            done = run_engram(env, "memories", "list", "--user", "alice", "--json", *options)
            assert done.returncode == 0, done.stderr
            return [(m["text"], m["agent_id"]) for m in json.loads(done.stdout)]

        assert texts("--all-agents") == [(INSULIN, "health")]
        assert texts("--agent", "travel") == []

        # Without the agent: another thread under the same name, and the fact is not recalled.
        other = run_engram(env, "chat", "--user", "alice", typed="What do I take?\n/quit\n")
        assert other.returncode == 0, other.stderr
        assert "Chatting as alice (thread main)." in other.stdout
        assert "insulin" not in fake.requests_for("chat")[-1].system_prompt
        again = run_engram(
            env, "chat", "--user", "alice", "--agent", "health", typed="What do I take?\n/quit\n"
        )
        assert again.returncode == 0, again.stderr
        assert "User takes insulin daily" in fake.requests_for("chat")[-1].system_prompt
        assert "you> I take insulin" in again.stdout  # its own thread resumes

        history = run_engram(env, "history", "--user", "alice", "--agent", "health")
        assert history.stdout.splitlines()[0] == "you> I take insulin"
        plain = run_engram(env, "history", "--user", "alice")
        assert plain.stdout.splitlines()[0] == "you> What do I take?"


def test_retry_applies_an_agents_pending_facts_as_that_agent(tmp_path: Path) -> None:
    with FakeOpenAI(dims=64) as fake:
        env = chat_env(fake.url, tmp_path, ENGRAM_PRIVATE_AGENTS="health")
        fake.queue("extract", facts_answer(("User takes insulin daily", "health")))
        fake.fail("maintain", status=503, message="overloaded")
        chat = run_engram(
            env, "chat", "--user", "alice", "--agent", "health", typed="I take insulin\n/quit\n"
        )
        assert chat.returncode == 0 and "memory steps failed" in chat.stdout, chat.stderr

        fake.clear("maintain")
        nothing = run_engram(env, "memories", "retry", "--user", "alice", "--agent", "travel")
        assert nothing.stdout.strip() == "nothing to retry for alice as agent travel"
        retry = run_engram(env, "memories", "retry", "--user", "alice")
        assert retry.returncode == 0, retry.stderr
        assert retry.stdout.startswith("cli:alice:main:health:\n+ added: User takes insulin daily")
        listed = run_engram(env, "memories", "list", "--user", "alice", "--all-agents", "--json")
        assert [(m["text"], m["agent_id"]) for m in json.loads(listed.stdout)] == [
            (INSULIN, "health")
        ]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    workdir = tmp_path_factory.mktemp("cli-agents-server")
    with (
        FakeOpenAI(dims=64) as fake,
        langgraph_dev(fake, workdir, ENGRAM_PRIVATE_AGENTS="health") as server,
    ):
        yield server


def test_through_a_server_a_token_reaches_only_the_agents_it_names(
    served: DevServer, tmp_path: Path
) -> None:
    insulin = httpx.post(
        f"{served.url}/memories",
        params={"agent": "health"},
        json={"text": INSULIN, "category": "health"},
        headers=bearer("alice", agents=["health"]),
    ).json()["memory_id"]
    lyon = httpx.post(
        f"{served.url}/memories",
        json={"text": LYON, "category": "location"},
        headers=bearer("alice"),
    ).json()["memory_id"]

    def cli(agent: str, *args: str, **env: str) -> tuple[int, str, str]:
        """`engram memories ...` as alice acting as `agent`, through the server."""
        options = ["--user", "alice", "--agent", agent]
        env = engram_env(tmp_path, ENGRAM_SERVER=served.url, **env)
        done = run_engram(env, "memories", *args, *options)
        return done.returncode, done.stdout, done.stderr

    travel = {"ENGRAM_TOKEN": token("alice", agents=["travel"])}
    code, out, err = cli("travel", "list", "--json", **travel)
    assert code == 0, err
    assert [m["text"] for m in json.loads(out)] == [LYON]
    code, out, _ = cli("travel", "search", "insulin", "--json", **travel)
    assert code == 0 and [m["text"] for m in json.loads(out)] == [LYON]
    for command in ("show", "history", "delete"):
        code, _, err = cli("travel", command, insulin, **travel)
        assert code == 1 and f"no memory {insulin!r}" in err, err  # exactly like a missing id
    code, _, err = cli("health", "list", **travel)
    assert code == 1 and err.startswith(f"error: the Engram server at {served.url} refused: ")
    assert "this token does not allow agent 'health'" in err and len(err.splitlines()) == 1
    code, _, err = cli("travel", "move", lyon, "--to", "health", **travel)
    assert code == 1 and "moves only into the agent you act as" in err

    # A token minted from the secret for --agent health: health's view, and its moves.
    secret = {"ENGRAM_AUTH_SECRET": SECRET}
    code, out, err = cli("health", "list", **secret)
    assert code == 0 and " health " in out and " shared " in out, err
    code, out, err = cli("health", "move", insulin[:8], "--to", "shared", **secret)
    assert code == 0 and out.startswith(f"moved (to shared): {insulin}"), err
    code, out, _ = cli("travel", "list", "--json", **travel)
    assert sorted(m["text"] for m in json.loads(out)) == BOTH
