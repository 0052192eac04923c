"""The chat prompt's history file: one per user, whatever the user id, inside the history
folder, and moved from where an earlier version named it."""

from __future__ import annotations

from pathlib import Path

import pytest

from engram.apps.cli.common import prompt_history_path
from engram.settings import Settings


@pytest.mark.parametrize(
    "user_id", [".", "..", "a/b", "../../etc/passwd", "ünïcode-名前", "x" * 256, "é" * 256]
)
def test_every_user_id_is_one_file_inside_the_history_folder(user_id: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    path = prompt_history_path(settings, user_id)
    assert path.parent == tmp_path / "history"
    assert len(path.name.encode()) <= 255 and path.name not in (".", "..")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("typed")  # a file can be made there
    assert path.is_file()


def test_different_ids_get_different_files(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    ids = [".", "..", "%2E", "a.b", "a%2Eb", "x" * 256, "x" * 255 + "y"]
    assert len({prompt_history_path(settings, i) for i in ids}) == len(ids)


def test_a_file_named_by_an_earlier_version_moves(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    earlier = tmp_path / "history" / "alice.smith"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("my bank PIN is 1234")
    path = prompt_history_path(settings, "alice.smith")
    assert path.name == "alice%2Esmith"
    assert path.read_text() == "my bank PIN is 1234" and not earlier.exists()
