"""Private directories and files: the state dir 0700, connection.json and friends 0600."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from rayinfra.connection import ConnectionInfo, read_connection, write_connection
from rayinfra.private_files import ensure_private_dir, write_private_text


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A umask that lets everyone in: the modes must not depend on the caller's umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_a_new_dir_is_0700(tmp_path: Path, loose_umask: None) -> None:
    target = tmp_path / "a" / "state"
    assert ensure_private_dir(target) == target
    assert mode(target) == 0o700


@pytest.mark.parametrize("loose", [0o755, 0o777, 0o750, 0o711])
def test_an_existing_looser_dir_is_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, loose: int
) -> None:
    target = tmp_path / "state"
    target.mkdir()
    os.chmod(target, loose)
    (target / "kept").write_text("data")
    with caplog.at_level(logging.WARNING, logger="rayinfra.private_files"):
        ensure_private_dir(target)
    assert mode(target) == 0o700
    assert (target / "kept").read_text() == "data"  # tightened, nothing else touched
    assert f"had mode {loose:03o}" in caplog.text and str(target) in caplog.text


def test_a_private_dir_is_left_alone_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "state"
    target.mkdir(mode=0o700)
    with caplog.at_level(logging.WARNING, logger="rayinfra.private_files"):
        ensure_private_dir(target)
    assert mode(target) == 0o700 and caplog.text == ""
    os.chmod(target, 0o500)  # stricter than 0700 (unwritable): made usable, no warning
    ensure_private_dir(target)
    assert mode(target) == 0o700 and caplog.text == ""


def test_another_users_dir_is_refused(tmp_path: Path) -> None:
    if os.getuid() == 0:  # root (CI) gives a directory away
        target, owner = tmp_path / "theirs", 4242
        target.mkdir()
        target.chmod(0o777)
        os.chown(target, owner, -1)
    else:  # anyone else: a directory root owns
        target, owner = Path("/"), 0
    before = mode(target)
    with pytest.raises(PermissionError, match=f"belongs to uid {owner}, not to this user"):
        ensure_private_dir(target)
    assert mode(target) == before  # not touched


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        ensure_private_dir(tmp_path / "state")


def test_private_text_is_0600_and_replaces_a_readable_file(
    tmp_path: Path, loose_umask: None
) -> None:
    path = tmp_path / "secret.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    write_private_text(path, "new")
    assert path.read_text() == "new" and mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.json"]  # no temp file left


def test_connection_file_is_0600_in_a_0700_state_dir(tmp_path: Path, loose_umask: None) -> None:
    """Also when the state dir already exists with looser modes (an earlier version's)."""
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    info = ConnectionInfo(
        gcs_address="127.0.0.1:6385",
        mode="local",
        loopback=True,
        auth_mode="token",
        token_path=str(state / "ray_auth_token"),
        state_dir=str(state),
        head_pid=os.getpid(),
    )
    path = write_connection(info)
    assert mode(path) == 0o600 and mode(state) == 0o700
    assert read_connection(state) == info
