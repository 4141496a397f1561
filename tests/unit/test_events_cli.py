"""``rayinfra events tail``: its input (exit 2 naming the valid form), its lines, and a start-up
that loads neither Ray nor pydantic. Against a runtime: tests/e2e/test_event_bus.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rayinfra.cli.events_cmd import check_types, format_line, parse_since
from rayinfra.cli.main import app


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400), ("90", 90), ("1.5h", 5400), ("0", 0)],
)
def test_since_durations(text: str, seconds: float) -> None:
    assert parse_since(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "-5m", "m", "10 m m", "yesterday"])
def test_bad_since_names_the_form(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration like 30s, 10m, 2h or 1d"):
        parse_since(text)


def test_types_are_checked_and_deduplicated() -> None:
    assert check_types(["task_failed", "service_healthy", "task_failed"]) == [
        "task_failed",
        "service_healthy",
    ]
    for bad in ("Task_failed", "task-failed", "", "1task"):
        with pytest.raises(ValueError, match="expected an event type such as task_completed"):
            check_types([bad])


def test_a_line_is_time_type_resource_and_data() -> None:
    ev = {"event_type": "task_failed", "resource_id": "t1", "data": {"b": 1, "a": "x"}}
    assert format_line({**ev, "timestamp": 1_700_000_000}) == (
        '2023-11-14T22:13:20Z task_failed t1 {"a":"x","b":1}'
    )
    assert format_line({**ev, "resource_id": "", "timestamp": 0}).split()[2] == "-"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "5x"], "--since '5x': expected a duration"),
        (["--type", "Bad-Type"], "--type 'Bad-Type': expected an event type"),
        (["--since", "0"], "--since 0 prints nothing without --follow"),
    ],
)
def test_bad_input_exits_2_before_dialling(args: list[str], message: str) -> None:
    res = CliRunner().invoke(app, ["events", "tail", *args, "--state-dir", "/nonexistent"])
    assert res.exit_code == 2
    assert message in " ".join(res.output.split())


def test_no_runtime_exits_1() -> None:
    res = CliRunner().invoke(app, ["events", "tail", "--state-dir", "/nonexistent"])
    assert res.exit_code == 1 and "rayinfra is not running" in res.output


def test_events_tail_loads_no_pydantic_or_ray() -> None:
    code = (
        "import rayinfra.cli.main as m\n"
        "try:\n    m.app(['events', 'tail', '--follow', '--state-dir', '/nonexistent'])\n"
        "except SystemExit:\n    pass\n"
    )
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    loaded = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "rayinfra.cli.events_cmd" in loaded  # the listing is what we think it is
    heavy = {"pydantic", "rayinfra.config", "ray", "kafka", "docker", "fastapi"}
    assert sorted(heavy & loaded) == []
