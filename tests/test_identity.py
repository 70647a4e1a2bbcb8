"""The instance id kept under $XDG_STATE_HOME (conftest points it at a temporary folder)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from udpchat.identity import instance_id, state_dir


def test_first_use_creates_a_private_file_and_later_runs_read_it_back(tmp_path: Path) -> None:
    first = instance_id(tmp_path / "udpchat")
    path = tmp_path / "udpchat" / "instance-id"
    assert len(first) == 8
    assert path.read_text() == first.hex() + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert instance_id(tmp_path / "udpchat") == first
    assert [p.name for p in path.parent.iterdir()] == ["instance-id"]  # no temporary left


@pytest.mark.parametrize(
    "content", [b"", b"not hex at all\n", b"00" * 9 + b"\n", b"\xff\xfe", b"ABCDEF0123456789\n"]
)
def test_a_damaged_file_is_replaced_by_a_fresh_id(tmp_path: Path, content: bytes) -> None:
    directory = tmp_path / "udpchat"
    directory.mkdir()
    (directory / "instance-id").write_bytes(content)
    fresh = instance_id(directory)
    assert (directory / "instance-id").read_text() == fresh.hex() + "\n"
    assert instance_id(directory) == fresh


def test_an_unwritable_place_gives_a_fresh_id_for_this_run_only(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the directory should be")
    one, two = instance_id(blocker / "udpchat"), instance_id(blocker / "udpchat")
    assert len(one) == len(two) == 8 and one != two


def test_state_dir_follows_xdg_state_home_and_falls_back_as_the_spec_says() -> None:
    assert state_dir({"XDG_STATE_HOME": "/somewhere"}) == Path("/somewhere/udpchat")
    home = Path(os.path.expanduser("~"))
    assert state_dir({}) == home / ".local" / "state" / "udpchat"
    assert state_dir({"XDG_STATE_HOME": "relative/path"}) == home / ".local/state/udpchat"


def test_the_tests_never_touch_the_users_state() -> None:
    assert str(state_dir()).startswith(os.environ["XDG_STATE_HOME"])
    assert "pytest" in os.environ["XDG_STATE_HOME"]
