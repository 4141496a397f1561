"""Service specs, shipped profiles, user definitions and per-call overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rayinfra.config import ServicesSection, load_config
from rayinfra.services.catalog import build_catalog, default_cluster_name, profile_names
from rayinfra.services.spec import Port, SpecError, apply_overrides, parse_spec

STATE = Path("/tmp/rayinfra-spec-test")


def docker(**kw: Any) -> dict[str, Any]:
    return {"image": "busybox:1", **kw}


def test_ports_parse_and_default_to_loopback() -> None:
    s = parse_spec(
        "a", docker(ports=["8082:8080", 9000, "0.0.0.0:1:2/udp", {"host": 5, "container": 6}])
    )
    assert s.ports[0] == Port(host=8082, container=8080, host_ip="127.0.0.1")
    assert s.ports[1].host == s.ports[1].container == 9000
    assert (s.ports[2].host_ip, s.ports[2].protocol) == ("0.0.0.0", "udp")
    assert s.host_ports() == [8082, 9000, 1, 5]
    with pytest.raises(SpecError, match=r"a\.ports"):
        parse_spec("a", docker(ports=["x:y"]))


@pytest.mark.parametrize(
    ("table", "field", "text"),
    [
        ({"driver": "docker"}, "a", "needs image"),
        ({"driver": "process"}, "a", "needs argv"),
        ({"driver": "process", "argv": ["x"], "image": "i"}, "a", "image is for docker"),
        (docker(volumes=["./prometheus.yml:/etc/p.yml"]), "a.volumes", "absolute"),
        (docker(volumes=["data"]), "a.volumes", "name:/container/path"),
        (docker(health={"kind": "http"}), "a.health", "needs url"),
        (docker(health={"kind": "redis"}), "a.health", "needs port"),
        (docker(health={"kind": "http", "url": "u", "send": "x"}), "a.health", "send is for tcp"),
        (docker(bogus=1), "a.bogus", "unknown field"),
        (docker(env=["NOEQUALS"]), "a.env", "KEY=VALUE"),
        (docker(resources={"memory_bytes": "lots"}), "a.resources.memory_bytes", "size"),
        (docker(network_mode="host", networks=["n"]), "a", "exclude each other"),
    ],
)
def test_bad_specs_name_the_field(table: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(SpecError, match=text) as e:
        parse_spec("a", table)
    assert e.value.field == field


def test_env_list_memory_and_deps_shorthands() -> None:
    s = parse_spec(
        "a",
        docker(
            env=["A=1", "B=x=y"], resources={"memory_bytes": "512m"}, depends_on={"r": "healthy"}
        ),
    )
    assert s.env == {"A": "1", "B": "x=y"}
    assert s.resources.memory_bytes == 512 * 2**20
    assert [(d.service, d.condition) for d in s.depends_on] == [("r", "healthy")]


def test_fingerprint_changes_with_what_the_instance_is_made_of() -> None:
    a = parse_spec("a", docker(env={"X": "1"}))
    assert a.fingerprint() == parse_spec("a", docker(env={"X": "1"}, required=True)).fingerprint()
    assert a.fingerprint() != parse_spec("a", docker(env={"X": "2"})).fingerprint()


def test_overrides_by_field_path() -> None:
    specs = {"redis": parse_spec("redis", docker(health={"kind": "redis", "port": 6379}))}
    out = apply_overrides(
        specs,
        {
            "redis.env.X": "5",
            "redis.env.NAME": "plain text",
            "redis.required": "true",
            "redis.health.interval_s": "0.5",
            "redis.ports": '["7000:6379"]',
        },
    )["redis"]
    assert out.env == {"X": "5", "NAME": "plain text"}
    assert out.required is True
    assert out.health is not None and out.health.interval_s == 0.5
    assert out.ports[0].host == 7000
    assert specs["redis"].required is False  # the input is untouched


@pytest.mark.parametrize(
    ("key", "value", "text"),
    [
        ("ghost.env.X", "1", "unknown service 'ghost'"),
        ("redis.nope", "1", "unknown field 'nope'"),
        ("redis.health.nope", "1", "unknown field 'nope'"),
        ("redis", "1", "needs a field path"),
        ("redis.required.x", "1", "no sub-fields"),
        ("redis.stop_timeout_s", '"soon"', "redis.stop_timeout_s"),
    ],
)
def test_bad_overrides_are_errors(key: str, value: str, text: str) -> None:
    specs = {"redis": parse_spec("redis", docker())}
    with pytest.raises(SpecError, match=text):
        apply_overrides(specs, {key: value})


def test_shipped_profiles_validate_with_a_real_check_for_every_service() -> None:
    assert {"dspy", "local"} <= set(profile_names())
    dspy = build_catalog(ServicesSection(profile="dspy"), STATE)
    assert len(dspy) == 9
    assert all(s.health is not None for s in dspy.values())
    assert {s.health.kind for s in dspy.values() if s.health} == {
        "redis",
        "http",
        "command",
        "tcp",
        "kafka",
    }
    assert all(p.host_ip == "127.0.0.1" for s in dspy.values() for p in s.ports)
    prom = dspy["prometheus"].volumes[1].split(":")[0]
    assert Path(prom).is_absolute() and Path(prom).is_file()  # shipped as package data
    assert [d.service for d in dspy["infermesh-router"].depends_on] == [
        "infermesh-node-a",
        "infermesh-node-b",
    ]
    local = build_catalog(ServicesSection(profile="local"), STATE)
    assert all(s.driver == "process" for s in local.values())
    assert f"--storage.tsdb.path={STATE}/prometheus" in (local["prometheus"].argv or [])


def test_definitions_merge_onto_the_profile_and_add_services() -> None:
    cfg = ServicesSection(
        profile="dspy",
        definitions={
            "redis": {"env": {"EXTRA": "1"}, "health": {"interval_s": 1}},
            "worker": {"driver": "process", "argv": ["sleep", "9"], "depends_on": ["redis"]},
        },
    )
    cat = build_catalog(cfg, STATE)
    assert cat["redis"].env == {"EXTRA": "1"}
    assert cat["redis"].health is not None
    assert (cat["redis"].health.kind, cat["redis"].health.interval_s) == ("redis", 1)
    assert cat["worker"].depends_on[0].service == "redis"


def test_catalog_rejects_unknown_profile_dependency_and_override() -> None:
    with pytest.raises(SpecError, match="unknown profile 'nope'"):
        build_catalog(ServicesSection(profile="nope"), STATE)
    bad_dep = ServicesSection(
        definitions={"w": {"driver": "process", "argv": ["x"], "depends_on": ["ghost"]}}
    )
    with pytest.raises(SpecError, match="w -> ghost"):
        build_catalog(bad_dep, STATE)
    with pytest.raises(SpecError, match="unknown service 'ghost'"):
        build_catalog(ServicesSection.model_validate({"overrides": [{"name": "ghost"}]}), STATE)


def test_env_manager_config_file_overrides_and_adds_services(tmp_path: Path) -> None:
    em = tmp_path / "env-manager.toml"
    em.write_text(
        "max_concurrent_starts = 2\n"
        '[[service_overrides]]\nname = "ollama"\nrequired = true\n'
        'health_check_url = "http://127.0.0.1:11435/"\nenvironment = ["K=V"]\n'
        '[services.extra]\ndriver = "process"\nargv = ["sleep", "1"]\n'
    )
    loaded = load_config(env={"ENV_MANAGER_CONFIG": str(em), "RAYINFRA_STATE_DIR": str(tmp_path)})
    svc = loaded.config.services
    assert svc.max_concurrent_starts == 2
    cat = build_catalog(svc, tmp_path)
    assert cat["ollama"].required and cat["ollama"].env["K"] == "V"
    assert (
        cat["ollama"].health is not None and cat["ollama"].health.url == "http://127.0.0.1:11435/"
    )
    assert cat["extra"].argv == ["sleep", "1"]


def test_default_cluster_name_is_stable_per_state_dir(tmp_path: Path) -> None:
    a = default_cluster_name(tmp_path / "a")
    assert a == default_cluster_name(tmp_path / "a")
    assert a != default_cluster_name(tmp_path / "b")
    assert parse_spec("x", docker()).name == "x"
