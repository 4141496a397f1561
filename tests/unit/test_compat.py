"""What the original system's clients rely on, as pure logic (issue 15, item 4): the original
server's payload string decoding, routing of payloads without ``type`` (through admission, the
one submit path), the original task-state vocabulary, its GetMetrics task gauges, the stream
re-send bookkeeping, the health judgement and the network counters' sources. No Ray."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import pytest

from rayinfra import compat
from rayinfra.admission import route_payload, validate_batch
from rayinfra.compat import (
    decode_original_value,
    decode_wire_map,
    is_current_client,
    original_status,
    original_task_metrics,
    route_untyped,
)
from rayinfra.config import ConfigError, RayinfraConfig, TasksSection, load_config
from rayinfra.errors import ClassPolicyError, InvalidArgumentError, NotTrustedError
from rayinfra.handlers.registry import known_task_types
from rayinfra.models import TaskStatus, WatchedStates
from rayinfra.runtime_health import SUMMARY_KEY, assess
from rayinfra.services.drivers.docker_format import usage_from_stats
from rayinfra.services.drivers.procnet import namespace_traffic, parse_net_dev

# ----------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    ("wire", "value"),
    [
        ("True", True),  # what Python's str(True) sends: JSON would keep it a string
        (" FALSE ", False),
        ("true", True),
        ("Null", None),
        ("007", 7),  # strconv.ParseInt, not JSON (leading zeros)
        ("+5", 5),
        ("-12", -12),
        ("9223372036854775807", 2**63 - 1),
        ("9223372036854775808", "9223372036854775808"),  # beyond int64: Go keeps the string
        ("1.5", 1.5),
        ("1.", 1.0),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("-2.5E-1", -0.25),
        ("1e999", "1e999"),  # overflows: Go's ParseFloat errs, the string stays
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        (" [1, 2] ", [1, 2]),
        ("{not json}", "{not json}"),
        ('{"a": NaN}', '{"a": NaN}'),
        ('"quoted"', '"quoted"'),  # Go keeps the quotes (JSON decoding would drop them)
        ("abc", "abc"),
        ("", ""),
        ("   ", "   "),
        (" padded text ", " padded text "),
        ("0x1p-2", "0x1p-2"),  # hexadecimal floats: strings here (a documented deviation)
        ("1_000", "1_000"),
    ],
)
def test_original_decoding_follows_the_go_server(wire: str, value: Any) -> None:
    got = decode_original_value(wire)
    assert got == value and type(got) is type(value)


def test_wire_map_decoding_original_and_json() -> None:
    wire = {"flag": "True", "n": "007", "s": '"x"', "payload_json": '{"n": 8, "deep": {"a": 1}}'}
    assert decode_wire_map(wire, original=True) == {
        "flag": True,
        "n": 8,  # payload_json's keys win
        "s": '"x"',
        "deep": {"a": 1},
    }
    assert decode_wire_map(wire, original=False) == {
        "flag": "True",  # JSON: not a literal
        "n": 8,
        "s": "x",
        "deep": {"a": 1},
    }
    for original in (True, False):  # payload_json is strict JSON either way
        with pytest.raises(InvalidArgumentError) as e:
            decode_wire_map({"payload_json": "[1]"}, original=original)
        assert e.value.field == "payload.payload_json"


# ----------------------------------------------------------------------------- routing

RULES = TasksSection(by_class={"cpu_long": "train"}, task_types={"rl_episode": "rl"})
KNOWN = frozenset({"noop", "echo", "sleep", "shell", "python", "mine"})


def routed(payload: dict[str, Any], cls: str = "cpu_short") -> tuple[str, str]:
    out = route_untyped(payload, cls, RULES, KNOWN)
    assert out is not None
    body, why = out
    assert body["type"] == why.handler and {k: v for k, v in body.items() if k != "type"} == {
        **payload,
        **({"argv": body["argv"]} if "argv" in body else {}),
    }
    return why.handler, why.field


def test_go_orchestrator_client_payloads_are_routed_by_fields_and_class() -> None:
    # GoOrchestratorClient._build_payload: task_type, session/episode ids, a timestamp and the
    # RL config as config_json, every value a string (decoded before routing)
    rl = decode_wire_map(
        {
            "task_type": "rl_episode",
            "session_id": "s1",
            "episode_id": "e1",
            "timestamp": "1700000000.25",
            "config_json": '{"framework": "puffer", "batch_size": 64}',
            "priority": "10",
        },
        original=True,
    )
    assert rl["config_json"] == {"framework": "puffer", "batch_size": 64}
    assert routed(rl) == ("rl", "task_type")  # [tasks.task_types]
    assert routed({**rl, "task_type": "sleep"}) == ("sleep", "task_type")  # names a handler
    assert routed({**rl, "task_type": "mine"}) == ("mine", "task_type")
    unknown = {**rl, "task_type": "embed"}
    assert routed(unknown) == ("echo", "")  # no such handler: the class default
    assert routed(unknown, "cpu_long") == ("train", "")  # [tasks.by_class]
    assert routed({"argv": ["true"]}) == ("shell", "argv")
    assert routed({"x": 1}) == ("echo", "")
    assert route_untyped({"type": "noop"}, "cpu_short", RULES, KNOWN) is None
    off = TasksSection(route_untyped=False)
    assert route_untyped({"x": 1}, "cpu_short", off, KNOWN) is None


def test_a_command_becomes_argv_without_a_shell() -> None:
    for command, argv in [
        (["python", "train.py", "--lr", "0.1"], ["python", "train.py", "--lr", "0.1"]),
        ("python train.py --lr=0.1 'a b'", ["python", "train.py", "--lr=0.1", "a b"]),
    ]:
        out = route_untyped({"command": command}, "cpu_short", RULES, KNOWN)
        assert out is not None and out[0]["argv"] == argv and out[0]["type"] == "shell"
        assert out[1].field == "command"
    for bad, text in [
        ("make && make install", "needs a shell ('&')"),
        ("echo $HOME", "needs a shell ('$')"),
        ("ls *.py", "needs a shell ('*')"),
        ("cat < f", "needs a shell ('<')"),
        ("'unclosed", "cannot be split"),
        ("   ", "is empty"),
        ([], "non-empty list of strings"),
        (["a", 1], "non-empty list of strings"),
        (7, "got int"),
    ]:
        with pytest.raises(InvalidArgumentError, match=re.escape(text)) as e:
            route_untyped({"command": bad}, "cpu_short", RULES, KNOWN)
        assert e.value.field == "payload.command"


_CLASSES = RayinfraConfig().model_dump()["classes"]
CFG = RayinfraConfig.model_validate(
    {
        "tasks": {"by_class": {"gpu_short": "noop"}},
        "handlers": {"rl_episode": "mypkg.rl:run"},
        # cpu_short runs no shell tasks here, whatever the default is
        "classes": {**_CLASSES, "cpu_short": {**_CLASSES["cpu_short"], "allow_shell": False}},
    }
)


def test_admission_routes_every_entry_points_untyped_payloads() -> None:
    (spec,) = validate_batch([{"task_id": "t", "payload": {"x": 1}}], CFG, trusted=False)
    assert spec.payload == {"x": 1, "type": "echo"}
    (spec,) = validate_batch([{"task_id": "t"}], CFG, trusted=False)  # no payload at all
    assert spec.payload == {"type": "echo"}
    (gpu,) = validate_batch(  # an alias resolves before the class's default is looked up
        [{"task_id": "g", "task_class": "gpu", "payload": {"x": 1}}], CFG, trusted=False
    )
    assert gpu.payload["type"] == "noop"
    (rl,) = validate_batch(  # a [handlers] entry is a known type
        [{"task_id": "r", "payload": {"task_type": "rl_episode"}}], CFG, trusted=False
    )
    assert rl.payload["type"] == "rl_episode"
    raw = {"task_id": "j", "task_class": "gpu_slurm", "payload": {"argv": ["true"]}}
    assert route_payload(raw, CFG) == (raw, None)  # a Slurm job's payload is the job's
    typed = {"task_id": "k", "payload": {"type": "sleep"}}
    assert route_payload(typed, CFG) == (typed, None)
    assert "rl_episode" in known_task_types(CFG.handlers) and "echo" in known_task_types({})


def test_a_refused_routed_type_names_the_key_that_chose_it() -> None:
    with pytest.raises(NotTrustedError) as e:
        validate_batch([{"task_id": "c", "payload": {"command": ["id"]}}], CFG, trusted=False)
    assert e.value.field == "payload.command"
    assert "routed to 'shell'" in e.value.message and "docs/tasks.md" in e.value.message
    with pytest.raises(ClassPolicyError) as p:  # trusted, but the class runs no shell tasks
        validate_batch([{"task_id": "c", "payload": {"argv": ["id"]}}], CFG, trusted=True)
    assert p.value.field == "payload.argv"
    with pytest.raises(NotTrustedError) as b:  # in a batch: tasks[i]. first
        validate_batch(
            [{"task_id": "a", "payload": {}}, {"task_id": "c", "payload": {"command": "id"}}],
            CFG,
            trusted=False,
        )
    assert b.value.field == "tasks[1].payload.command"
    with pytest.raises(InvalidArgumentError) as s:
        validate_batch([{"task_id": "c", "payload": {"command": "a | b"}}], CFG, trusted=True)
    assert s.value.field == "payload.command"


def test_tasks_config_defaults_and_errors(tmp_path: Path) -> None:
    cfg = RayinfraConfig()
    assert cfg.tasks == TasksSection(
        route_untyped=True, default_handler="echo", by_class={}, task_types={}
    )
    assert cfg.gateway.original_payload_decoding is True
    assert cfg.gateway.stream_resend_interval_s == 1.0
    toml = tmp_path / "c.toml"
    toml.write_text('[tasks.by_class]\nnope = "x"\n')
    with pytest.raises(ConfigError, match=r"tasks\.by_class names 'nope'"):
        load_config(env={"RAYINFRA_CONFIG": str(toml), "HOME": str(tmp_path)}, cwd=tmp_path)
    toml.write_text('[tasks.task_types]\nrl = ""\n')
    with pytest.raises(ConfigError, match=r"tasks\.task_types"):
        load_config(env={"RAYINFRA_CONFIG": str(toml), "HOME": str(tmp_path)}, cwd=tmp_path)


# ----------------------------------------------------------------------------- vocabulary


def test_original_clients_see_a_cancelled_task_as_failed() -> None:
    st = TaskStatus(task_id="t", status="cancelled", error="cancelled by request")
    assert (original_status(st).status, original_status(st).error) == (
        "failed",
        "cancelled by request",
    )
    bare = dataclasses.replace(st, error="")
    assert original_status(bare).error == "cancelled"
    outside = dataclasses.replace(st, error="scancel from outside")
    assert original_status(outside).error == "cancelled: scancel from outside"
    done = dataclasses.replace(st, status="completed", error="")
    assert original_status(done) is done
    assert [is_current_client(v) for v in (None, "", "1", "2", " 3 ", "x")] == [
        False,
        False,
        False,
        True,
        True,
        False,
    ]
    assert compat.API_LEVEL_METADATA == "rayinfra-api"


def test_original_task_gauges() -> None:
    metrics = {
        "env_queue_depth": 3.0,
        'env_queue_depth{class="cpu_short"}': 3.0,
        'orchestrator_inflight_tasks{class="cpu_short"}': 2.0,
        'orchestrator_inflight_tasks{class="gpu_short"}': 1.0,
    }
    counts = {"pending": 4, "running": 2, "completed": 10, "failed": 1, "cancelled": 1}
    assert original_task_metrics(metrics, counts) == {
        "tasks_pending": 3.0,
        "tasks_running": 3.0,
        "tasks_completed": 10.0,
        "tasks_tracked_total": 18.0,
    }


def test_watched_states_for_re_sending() -> None:
    def st(tid: str, status: str) -> TaskStatus:
        return TaskStatus(task_id=tid, status=status)

    named = WatchedStates({"a", "b"}, include_finished=True)
    for s in (st("a", "running"), st("b", "pending"), st("x", "running"), st("a", "completed")):
        named.saw(s)
    assert [(s.task_id, s.status) for s in named.states()] == [
        ("b", "pending"),
        ("a", "completed"),
    ]
    unfinished = WatchedStates({"a"}, include_finished=False)
    unfinished.saw(st("a", "running"))
    unfinished.saw(st("a", "failed"))
    assert unfinished.states() == []
    every = WatchedStates((), include_finished=True, limit=2)
    for s in (st("a", "running"), st("b", "running"), st("c", "running"), st("b", "completed")):
        every.saw(s)
    assert [s.task_id for s in every.states()] == ["c"]  # a: over the limit; b: finished


# ----------------------------------------------------------------------------- health


def test_health_is_degraded_not_failed_by_optional_parts() -> None:
    up = dict.fromkeys(("scheduler", "service_registry", "event_bus", "gateway"), "healthy")
    rows = {
        "kv": {"desired": True, "required": True, "status": "running"},
        "extra": {"desired": True, "required": False, "status": "unhealthy"},
        "idle": {"desired": False, "required": True, "status": "stopped"},  # not wanted
    }
    r = assess({**up, "event_bus": "unavailable: not running"}, rows)
    assert r.healthy and r.failing == []
    assert r.degraded == ["event_bus unavailable", "extra unhealthy"]
    assert r.services["extra"] == "unhealthy" and "idle" not in r.services
    assert r.services[SUMMARY_KEY] == "degraded: event_bus unavailable, extra unhealthy"
    required_down = {**rows, "kv": {**rows["kv"], "status": "stopped"}}
    bad = assess({**up, "scheduler": "unavailable: ActorDiedError: x"}, required_down)
    assert not bad.healthy and bad.failing == ["scheduler unavailable", "kv stopped"]
    assert bad.services[SUMMARY_KEY] == (
        "unhealthy: scheduler unavailable, kv stopped; degraded: extra unhealthy"
    )
    assert assess(up, rows, required_services=["idle"]).failing == ["idle stopped"]
    unknown = assess({**up, "service_registry": "unavailable: not running"}, None)
    assert unknown.healthy and unknown.degraded == [
        "service_registry unavailable",
        "services unknown",
    ]
    errored = assess(up, None, registry_error="timed out")
    assert errored.healthy and errored.services["service_registry"] == "healthy"
    assert errored.degraded == ["service_registry error: timed out"]
    assert not assess({}, {}).healthy  # nothing answered at all
    assert assess(up, {}).services[SUMMARY_KEY] == "healthy"


# ----------------------------------------------------------------------------- network counters

NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1000  10    0    0    0     0          0         0 1000  10    0    0    0     0       0          0
  eth0: 346134862    8379    0    0    0     0          0         0   458474    4638    0    0    0     0       0          0
  wg0: 5 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0
"""


def test_net_dev_parsing_and_scope(tmp_path: Path) -> None:
    assert parse_net_dev(NET_DEV) == {
        "lo": (1000, 1000),
        "eth0": (346134862, 458474),
        "wg0": (5, 7),
    }
    fake = tmp_path / "proc" / "42"
    (fake / "net").mkdir(parents=True)
    (fake / "ns").mkdir()
    (fake / "net" / "dev").write_text(NET_DEV)
    (fake / "ns" / "net").write_text("")  # another inode than this process's namespace
    (tmp_path / "proc" / "self").symlink_to("/proc/self")
    got = namespace_traffic(42, tmp_path / "proc")
    assert got is not None and (got.rx_bytes, got.tx_bytes, got.scope) == (
        346134867,
        458481,
        "namespace",  # loopback left out
    )
    mine = namespace_traffic(os.getpid())  # this process: the runtime's own namespace
    assert mine is not None and mine.scope == "host"
    assert namespace_traffic(42, tmp_path / "nothing") is None


def test_docker_stats_as_usage() -> None:
    stats = {
        "read": "2024-01-01T00:00:10.000000000Z",
        "cpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000}},
        "memory_stats": {"usage": 10_000, "stats": {"inactive_file": 4_000}},
        "networks": {"eth0": {"rx_bytes": 100, "tx_bytes": 50}, "eth1": {"rx_bytes": 1}},
    }
    u = usage_from_stats(stats, mono=1000.0, wall=1704067211.0)  # read 1 s before now
    assert (u.at, u.cpu_time_s, u.memory_bytes) == (999.0, 2.5, 6_000)
    assert (u.rx_bytes, u.tx_bytes, u.network_scope) == (101, 50, "service")
    host = usage_from_stats({**stats, "networks": None}, mono=5.0, wall=0.0)
    assert (host.rx_bytes, host.tx_bytes, host.network_scope) == (0, 0, "")
