"""A throwaway PostgreSQL cluster from Debian's packages (`apt-get install postgresql`):
initdb + pg_ctl in a directory of its own, on a free loopback port, no systemd. As root the
server runs as the `postgres` user (it refuses root). Restarting on the same directory keeps
the data, which the Aegra tests use to check that threads survive a restart."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fake_openai import free_port

DATABASE = "engram"


def pg_bin() -> Path | None:
    """The newest installed server's bin directory (/usr/lib/postgresql/NN/bin), if any."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda path: int(path.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


def _as_postgres() -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("postgres")
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(path, user.pw_uid, user.pw_gid)


def _run(
    bindir: Path, root: Path, *command: Any, **options: Any
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    return subprocess.run(
        [str(c) for c in command],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        **_as_postgres(),
        **options,
    )


def start(root: Path) -> str:
    """initdb (the first time) and start; the database URL (trust auth on loopback)."""
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("no PostgreSQL server: apt-get install -y postgresql")
    root.mkdir(parents=True, exist_ok=True)
    _chown(root)
    data, sockets, port_file = root / "data", root / "sockets", root / "port"
    if not data.exists():
        sockets.mkdir(exist_ok=True)
        _chown(sockets)
        initdb = ["initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]
        _run(bindir, root, *initdb, check=True)
        port_file.write_text(str(free_port()))
    port = int(port_file.read_text())
    options = (
        f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    if _run(bindir, root, "pg_ctl", "-D", data, "status").returncode != 0:
        log = root / "server.log"
        _run(
            bindir,
            root,
            "pg_ctl",
            "-D",
            data,
            "-l",
            log,
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
            check=True,
        )
    exists = _run(
        bindir,
        root,
        "psql",
        "-h",
        sockets,
        "-p",
        port,
        "-U",
        "postgres",
        "-tAc",
        f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'",
        check=True,
    ).stdout.strip()
    if exists != "1":
        _run(
            bindir,
            root,
            "createdb",
            "-h",
            sockets,
            "-p",
            port,
            "-U",
            "postgres",
            DATABASE,
            check=True,
        )
    return f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}"


def stop(root: Path) -> None:
    bindir = pg_bin()
    if bindir is not None and (root / "data" / "postmaster.pid").exists():
        _run(bindir, root, "pg_ctl", "-D", root / "data", "-m", "fast", "-w", "-t", "60", "stop")


@dataclass
class Cluster:
    root: Path
    url: str

    def restart(self) -> None:
        stop(self.root)
        start(self.root)


@contextlib.contextmanager
def postgres() -> Iterator[Cluster]:
    """A running cluster for the duration, then stopped and deleted. Its directory is a
    temporary one of its own: the `postgres` user must reach it, and pytest's temporary
    directories are private to root."""
    root = Path(tempfile.mkdtemp(prefix="engram-postgres-"))
    try:
        yield Cluster(root, start(root))
    finally:
        stop(root)
        shutil.rmtree(root, ignore_errors=True)
