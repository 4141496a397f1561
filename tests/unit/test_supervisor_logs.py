"""The pure parts of the process supervisor and driver: log line format, line splitting,
instance records, /proc parsing, the service environment, instance ids, log tails."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest

from rayinfra.services import supervisor as sv
from rayinfra.services.drivers.process import (
    cluster_dirname,
    format_instance_id,
    parse_instance_id,
    tail_offset,
)

# -------------------------------------------------------------------- log lines


def test_timestamp_is_rfc3339_utc_with_microseconds() -> None:
    assert sv.format_timestamp(1714564800.123456) == "2024-05-01T12:00:00.123456Z"
    assert sv.format_timestamp(1714564800.0) == "2024-05-01T12:00:00.000000Z"
    assert sv.parse_timestamp("2024-05-01T12:00:00.123456Z") == pytest.approx(
        1714564800.123456, abs=1e-6
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2024-05-01T12:00:00.123456",
        "2024-05-01 12:00:00.123456Z",
        "2024-13-01T12:00:00.1Z",
        "2024-05-01T12:00:00.12345xZ",
        "yesterday-at-noon-ish-abcdZ",
    ],
)
def test_bad_timestamps_are_rejected(text: str) -> None:
    assert sv.parse_timestamp(text) is None


@pytest.mark.parametrize(
    "message", ["hello", "", "  two  spaces  ", "tab\there", "ünïcödé ✓", "a stdout b", "\r"]
)
@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_log_line_round_trip(stream: sv.Stream, message: str) -> None:
    line = sv.format_log_line(1714564800.5, stream, message)
    assert line.endswith("\n") and line.count("\n") == 1
    assert line.startswith("2024-05-01T12:00:00.500000Z ")
    entry = sv.parse_log_line(line)
    assert entry == sv.LogEntry(1714564800.5, stream, message)
    assert sv.parse_log_line(line.rstrip("\n")) == entry  # the newline is optional


@pytest.mark.parametrize(
    "line",
    [
        "",
        "garbage",
        "2024-05-01T12:00:00.500000Z stdin hello",
        "2024-05-01T12:00:00.500000Z stdout",  # no separator before the message
        "not-a-time stdout hello",
        "2024-05-01T12:00:00.500000Z  stdout hello",
    ],
)
def test_malformed_log_lines_are_rejected(line: str) -> None:
    assert sv.parse_log_line(line) is None


def test_line_splitter_joins_chunks_and_keeps_the_partial_line() -> None:
    s = sv.LineSplitter()
    assert s.feed(b"ab") == []
    assert s.feed(b"c\nd") == ["abc"]
    assert s.feed(b"\n\nxy") == ["d", ""]
    assert s.flush() == ["xy"]
    assert s.flush() == []


def test_line_splitter_replaces_bad_utf8_and_splits_on_newline_only() -> None:
    s = sv.LineSplitter()
    assert s.feed(b"bad\xff\xfebytes\n") == ["bad\ufffd\ufffdbytes"]
    assert s.feed("a\u2028b\x0bc\r\n".encode()) == ["a\u2028b\x0bc\r"]


def test_line_splitter_cuts_overlong_lines() -> None:
    s = sv.LineSplitter(max_bytes=4)
    assert s.feed(b"abcdefghij") == ["abcd", "efgh"]
    assert s.feed(b"\n") == ["ij"]
    assert s.feed(b"1234\n") == ["1234"]  # exactly max_bytes fits
    assert s.feed(b"12345\n") == ["1234", "5"]


# -------------------------------------------------------------------- instance records


def make_record(**changes: object) -> sv.InstanceRecord:
    base: dict[str, object] = {
        "launch_id": "abc",
        "service": "redis",
        "argv": ["redis-server", "--port", "1"],
        "cwd": "/tmp",
        "supervisor_pid": 10,
        "supervisor_start_ticks": 99,
        "state": "running",
        "labels": {"rayinfra.cluster": "c1"},
        "ports": [6379],
        "pid": 11,
        "start_ticks": 100,
        "started_at": 1714564800.25,
    }
    base.update(changes)
    return sv.InstanceRecord.from_json(base)


def test_record_write_read_round_trip(tmp_path: Path) -> None:
    path = tmp_path / sv.RECORD_NAME
    rec = make_record()
    sv.write_record(path, rec)
    assert sv.read_record(path) == rec
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # launch.json shares the writer: env
    assert sorted(p.name for p in tmp_path.iterdir()) == [sv.RECORD_NAME]  # no temp file left
    done = make_record(state="exited", exit_code=137, finished_at=1714564801.0)
    sv.write_record(path, done)
    back = sv.read_record(path)
    assert back is not None and back.state == "exited" and back.exit_code == 137


def test_record_json_names_the_documented_fields(tmp_path: Path) -> None:
    path = tmp_path / sv.RECORD_NAME
    sv.write_record(path, make_record())
    data = json.loads(path.read_text())
    for key in (
        "service",
        "labels",
        "argv",
        "cwd",
        "pid",
        "supervisor_pid",
        "start_ticks",
        "started_at",
        "state",
        "exit_code",
        "finished_at",
    ):
        assert key in data


@pytest.mark.parametrize(
    "content",
    [
        None,  # no file
        "{not json",
        "[1, 2]",
        '{"launch_id": "x"}',  # fields missing
        json.dumps({**make_record().to_json(), "state": "sleeping"}),
        json.dumps({**make_record().to_json(), "pid": "11"}),
        json.dumps({**make_record().to_json(), "argv": "redis-server --port 1"}),
    ],
)
def test_unreadable_records_read_as_none(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / sv.RECORD_NAME
    if content is not None:
        path.write_text(content)
    assert sv.read_record(path) is None


def test_record_ignores_unknown_fields(tmp_path: Path) -> None:
    path = tmp_path / sv.RECORD_NAME
    path.write_text(json.dumps({**make_record().to_json(), "from_the_future": 1}))
    assert sv.read_record(path) == make_record()


# -------------------------------------------------------------------- processes


def test_parse_proc_stat_survives_hostile_command_names() -> None:
    fields = ["S", *[str(i) for i in range(4, 22)], "123456", "0"]
    text = "42 (a) b ) (c) " + " ".join(fields) + "\n"
    assert sv.parse_proc_stat(text) == ("S", 123456)


def test_proc_identity_and_is_alive_use_the_start_time() -> None:
    ident = sv.proc_identity(os.getpid())
    assert ident is not None
    raw = Path(f"/proc/{os.getpid()}/stat").read_text()
    assert ident[1] == int(raw[raw.rindex(")") + 2 :].split()[19])
    assert sv.is_alive(os.getpid(), ident[1])
    assert not sv.is_alive(os.getpid(), ident[1] + 1)  # same pid, another process
    assert not sv.is_alive(None, ident[1])
    assert not sv.is_alive(os.getpid(), None)
    assert sv.proc_identity(2**22 + 12345) is None  # above pid_max


def test_child_env_is_the_spec_env_on_an_allow_list() -> None:
    inherited = {
        "PATH": "/x/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "RAY_ADDRESS": "127.0.0.1:6379",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "PYTHONPATH": "/somewhere",
    }
    env = sv.child_env(inherited, {"FOO": "bar", "HOME": "/srv"})
    assert env == {"PATH": "/x/bin", "HOME": "/srv", "LANG": "C.UTF-8", "LC_ALL": "C", "FOO": "bar"}
    assert sv.child_env({}, {})["PATH"] == sv.DEFAULT_PATH


def test_exit_status_follows_the_shell() -> None:
    assert sv.exit_status(0) == 0
    assert sv.exit_status(3) == 3
    assert sv.exit_status(-9) == 137
    assert sv.exit_status(-15) == 143


# -------------------------------------------------------------------- driver helpers


def test_instance_ids() -> None:
    assert format_instance_id(123, 456) == "123-456"
    assert parse_instance_id("123-456") == (123, 456)
    for bad in ("123", "a-b", "1-2-3", "", "-1-2", "0x1-2"):
        assert parse_instance_id(bad) is None


def test_cluster_dirname() -> None:
    assert cluster_dirname("prod-1.eu_west") == "prod-1.eu_west"
    for hostile in ("..", ".", "../etc", "a/b", "has space", "", "-x", "x" * 65):
        name = cluster_dirname(hostile)
        assert name.startswith("c-") and "/" not in name and name != cluster_dirname("other")
    assert cluster_dirname("a/b") != cluster_dirname("a/c")


@pytest.mark.parametrize(
    ("data", "n", "expected"),
    [
        (b"a\nb\nc\n", 1, b"c\n"),
        (b"a\nb\nc\n", 2, b"b\nc\n"),
        (b"a\nb\nc\n", 3, b"a\nb\nc\n"),
        (b"a\nb\nc\n", 10, b"a\nb\nc\n"),
        (b"a\nb\nc\n", 0, b""),
        (b"a\nb\nc", 1, b"c"),  # a last line still being written counts
        (b"a\nb\nc", 2, b"b\nc"),
        (b"", 3, b""),
        (b"\n\n", 1, b"\n"),
    ],
)
def test_tail_offset(data: bytes, n: int, expected: bytes) -> None:
    f = io.BytesIO(data)
    assert data[tail_offset(f, n) :] == expected


def test_tail_offset_across_blocks() -> None:
    lines = [f"line {i} ".encode() * 500 + b"\n" for i in range(100)]  # ~4 KB each
    f = io.BytesIO(b"".join(lines))
    assert f.getvalue()[tail_offset(f, 37) :] == b"".join(lines[-37:])
