"""Config: pinned defaults, documented env var names, layering with provenance, precise errors."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from rayinfra.config import (
    ENV_VARS,
    IGNORED_ENV_VARS,
    ConfigError,
    RayinfraConfig,
    default_toml,
    dial_addr,
    load_config,
    load_effective,
    parse_listen_addr,
    save_effective,
)


def load(tmp_path: Path, env: dict[str, str] | None = None, toml: str | None = None, **kw):
    env = dict(env or {})
    if toml is not None:
        p = tmp_path / "cfg.toml"
        p.write_text(toml)
        env.setdefault("RAYINFRA_CONFIG", str(p))
    env.setdefault("HOME", str(tmp_path / "home"))
    return load_config(env=env, cwd=tmp_path, **kw)


def test_defaults_are_pinned(tmp_path: Path) -> None:
    cfg = load(tmp_path).config
    # listen defaults: documented ports, loopback only (the original bound all interfaces)
    assert cfg.gateway.orchestrator_grpc_addr == "127.0.0.1:50052"
    assert cfg.gateway.orchestrator_http_addr == "127.0.0.1:9097"
    assert cfg.gateway.env_manager_grpc_addr == "127.0.0.1:50100"
    assert cfg.gateway.env_manager_http_addr == "127.0.0.1:50101"
    assert cfg.gateway.token_file is None and cfg.gateway.allow_untrusted_code is False
    # ray: GCS is not 6379 (redis'), dashboard 8265, token auth, loopback head
    assert cfg.ray.gcs_port == 6385 and cfg.ray.gcs_port != 6379
    assert cfg.ray.dashboard_port == 8265 and cfg.ray.dashboard_host == "127.0.0.1"
    assert cfg.ray.auth_mode == "token"
    assert cfg.ray.address is None
    assert (cfg.ray.min_worker_port, cfg.ray.max_worker_port) == (11000, 11999)
    # state
    assert cfg.state.dir == tmp_path / "home" / ".rayinfra" / "state"
    assert cfg.state.result_ttl_s == 7 * 24 * 3600
    assert cfg.queue_dir == cfg.state.dir / "env_queue"
    assert cfg.workflow_store_dir == cfg.state.dir / "workflows"
    assert cfg.workflow_run_dir == cfg.state.dir / "workflow_runs"
    assert cfg.ray_token_path == cfg.state.dir / "ray_auth_token"
    # scheduler + classes (task model of DESIGN.md)
    assert cfg.scheduler.unschedulable_timeout_s == 10.0
    assert cfg.scheduler.payload_limit_bytes == 1024 * 1024
    assert cfg.scheduler.executor_start_timeout_s == 300.0
    assert cfg.scheduler.default_class == "cpu_short"
    assert sorted(cfg.classes) == ["cpu_long", "cpu_short", "gpu_long", "gpu_short", "gpu_slurm"]
    assert cfg.classes["cpu_short"].timeout_s == 60.0
    assert cfg.classes["gpu_short"].timeout_s == 300.0
    assert cfg.classes["gpu_short"].num_gpus == 1.0
    assert cfg.class_config("gpu") is cfg.classes["gpu_short"]
    # shell tasks: the built-in CPU classes run them, any other class only when its table says
    # so (docs/configuration.md, "Shell tasks")
    assert {name: c.allow_shell for name, c in cfg.classes.items()} == {
        **dict.fromkeys(cfg.classes, False),
        "cpu_short": True,
        "cpu_long": True,
    }
    assert (
        load(tmp_path, toml="[classes.mine]\nnum_cpus = 1\n").config.classes["mine"].allow_shell
        is False
    )
    # Ray's temp dir (made 0777 by Ray) lies in a directory of this user's own
    assert cfg.ray_temp_dir.parent == Path("/tmp") / f"rayinfra-{os.getuid()}"
    # services: the original env-manager's defaults
    assert cfg.services.max_concurrent_starts == 5
    assert cfg.services.health_timeout_s == 60.0
    assert cfg.services.health_max_attempts == 30
    assert cfg.services.profile == "dspy"
    # a failed service start is tried again: 3 tries, 0.5 s * 2**n (+ up to 0.5 s), at most 30 s
    assert cfg.services.start_attempts == 3
    assert cfg.services.start_retry_initial_s == 0.5
    assert cfg.services.start_retry_max_s == 30.0
    # events and client: the original names and defaults
    assert cfg.events.event_topic == "agent.events"
    assert cfg.events.vector_topic == "agent.vectorized"
    assert cfg.events.kafka_bootstrap_servers is None
    assert cfg.client.service_timeout_s == 60.0
    assert cfg.client.reconnect_backoff_s == 2.0
    assert cfg.client.skip_start is False
    assert cfg.orchestrator_dial_addr == "127.0.0.1:50052"


def test_documented_env_var_names_are_kept() -> None:
    original = {
        "ORCHESTRATOR_GRPC_ADDR", "ORCHESTRATOR_HTTP_ADDR", "ENV_MANAGER_GRPC_ADDR",
        "ENV_MANAGER_METRICS_ADDR", "DOCKER_HOST", "ENV_MANAGER_MAX_CONCURRENT",
        "ENV_MANAGER_HEALTH_TIMEOUT", "ENV_MANAGER_VERBOSE", "ENV_QUEUE_DIR", "WORKFLOW_STORE_DIR",
        "WORKFLOW_RUN_DIR", "KAFKA_SPOOL_DIR", "KAFKA_EVENT_TOPIC", "KAFKA_VECTOR_TOPIC",
        "REDDB_URL", "DSPY_AGENT_SKIP_START", "DSPY_AGENT_SERVICE_TIMEOUT",
        "DSPY_AGENT_RECONNECT_BACKOFF", "DSPY_AGENT_CLI_PATH",
    }  # fmt: skip
    assert original <= set(ENV_VARS)
    assert {"RAYINFRA_STATE_DIR", "RAYINFRA_RESULT_TTL_S"} <= set(ENV_VARS)
    # the three the original read but never used are recognised and reported, not silently dropped
    assert set(IGNORED_ENV_VARS) == {"ENV_RUNNER_URL", "ENV_MANAGER_ADDR", "DISABLE_ENV_MANAGER"}
    # every mapping targets a real key
    cfg = RayinfraConfig().model_dump()
    for dotted in ENV_VARS.values():
        section, key = dotted.split(".")
        assert key in cfg[section], dotted


def test_precedence_and_sources(tmp_path: Path) -> None:
    em = tmp_path / "env-manager.toml"
    em.write_text(
        'max_concurrent_starts = 3\nhealth_check_timeout_secs = 20\ngrpc_addr = "127.0.0.1:6100"\n'
    )
    loaded = load(
        tmp_path,
        env={
            "ENV_MANAGER_CONFIG": str(em),
            "ENV_MANAGER_HEALTH_TIMEOUT": "15",
            "DSPY_AGENT_SKIP_START": "yes",
            "ENV_RUNNER_URL": "http://localhost:8083",
        },
        toml="[services]\nmax_concurrent_starts = 9\nhealth_max_attempts = 4\n"
        "[scheduler]\nunschedulable_timeout_s = 3\n",
        overrides={"scheduler.unschedulable_timeout_s": 2.5},
    )
    cfg = loaded.config
    assert cfg.services.health_max_attempts == 4  # rayinfra file
    assert cfg.services.max_concurrent_starts == 3  # env-manager file beats rayinfra file
    assert cfg.services.health_timeout_s == 15.0  # env beats both files
    assert cfg.gateway.env_manager_grpc_addr == "127.0.0.1:6100"
    assert cfg.client.skip_start is True
    assert cfg.scheduler.unschedulable_timeout_s == 2.5  # flag beats everything
    assert loaded.source_of("services.health_max_attempts") == f"file:{tmp_path / 'cfg.toml'}"
    assert loaded.source_of("services.max_concurrent_starts") == f"file:{em}"
    assert loaded.source_of("services.health_timeout_s") == "env:ENV_MANAGER_HEALTH_TIMEOUT"
    assert loaded.source_of("scheduler.unschedulable_timeout_s") == "flag"
    assert loaded.source_of("ray.gcs_port") == "default"
    assert "ENV_RUNNER_URL" in loaded.ignored_env


def test_partial_class_table_overlays_defaults(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        toml='[classes.gpu_short]\nlabel_selector = {"rayinfra.io/accelerator-type" = "H100"}\n'
        "[classes.embed]\nnum_cpus = 0.5\n",
    ).config
    assert cfg.classes["gpu_short"].label_selector == {"rayinfra.io/accelerator-type": "H100"}
    assert cfg.classes["gpu_short"].num_gpus == 1.0  # untouched default survives
    assert cfg.classes["gpu_short"].timeout_s == 300.0
    assert cfg.classes["embed"].num_cpus == 0.5  # user-defined class
    assert "cpu_short" in cfg.classes


def test_relative_paths_resolve_against_cwd(tmp_path: Path) -> None:
    cfg = load(tmp_path, env={"RAYINFRA_STATE_DIR": "st", "ENV_QUEUE_DIR": "q/dir"}).config
    assert cfg.state.dir == tmp_path / "st"
    assert cfg.queue_dir == tmp_path / "q" / "dir"
    assert cfg.workflow_store_dir == tmp_path / "st" / "workflows"


@pytest.mark.parametrize(
    ("env", "toml", "needle"),
    [
        ({}, "[scheduler]\nbogus = 1\n", "unknown key 'scheduler.bogus'"),
        ({}, "[nonsense]\nx = 1\n", "unknown key 'nonsense'"),
        ({}, "[ray]\ngcs_port = 80\n", "ray.gcs_port"),
        ({}, "[ray]\ngcs_port = 8265\n", "dashboard_port and gcs_port both use port 8265"),
        ({}, "[ray]\nauth_mode = 'maybe'\n", "ray.auth_mode"),
        ({}, "[classes.cpu_short]\nmin_limit = 9\nmax_limit = 2\n", "classes.cpu_short"),
        ({}, "[handlers]\nfoo = 'not a target'\n", "pkg.mod:fn"),
        ({}, "[scheduler]\ndefault_class = 'tpu'\n", "choose one of"),
        ({"ENV_MANAGER_MAX_CONCURRENT": "many"}, None, "env:ENV_MANAGER_MAX_CONCURRENT"),
        ({"DSPY_AGENT_SERVICE_TIMEOUT": "-1"}, None, "client.service_timeout_s"),
        ({"ORCHESTRATOR_GRPC_ADDR": "nohost"}, None, "gateway.orchestrator_grpc_addr"),
        ({}, "[scheduler\n", "invalid TOML"),
        ({}, "[services]\nstart_retry_initial_s = -1\n", "services.start_retry_initial_s"),
        ({}, "[services]\nstart_retry_max_s = inf\n", "services.start_retry_max_s"),
        (
            {},
            "[services]\nstart_retry_initial_s = 2\nstart_retry_max_s = 1.5\n",
            "services.start_retry_max_s: Value error, 1.5 is below services.start_retry_initial_s",
        ),
    ],
)
def test_errors_name_the_key(
    tmp_path: Path, env: dict[str, str], toml: str | None, needle: str
) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, env=env, toml=toml)
    assert needle in str(e.value)


def test_missing_explicit_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path, env={"RAYINFRA_CONFIG": str(tmp_path / "nope.toml")})
    with pytest.raises(ConfigError, match="ENV_MANAGER_CONFIG"):
        load(tmp_path, env={"ENV_MANAGER_CONFIG": str(tmp_path / "nope.toml")})
    em = tmp_path / "em.toml"
    em.write_text("grpc_port = 1\n")
    with pytest.raises(ConfigError, match="unknown env-manager key 'grpc_port'"):
        load(tmp_path, env={"ENV_MANAGER_CONFIG": str(em)})


def test_all_interfaces_requires_a_token(tmp_path: Path) -> None:
    for value in (":50052", "0.0.0.0:50052"):
        with pytest.raises(ConfigError, match="needs a token"):
            load(tmp_path, env={"ORCHESTRATOR_GRPC_ADDR": value})
    token = tmp_path / "tok"
    token.write_text("secret")
    cfg = load(
        tmp_path, env={"ORCHESTRATOR_GRPC_ADDR": ":50052", "RAYINFRA_TOKEN_FILE": str(token)}
    ).config
    assert cfg.gateway.orchestrator_grpc_addr == ":50052"
    assert cfg.orchestrator_dial_addr == "127.0.0.1:50052"  # a client given :P dials loopback


@pytest.mark.parametrize(
    ("addr", "parsed", "dial"),
    [
        ("127.0.0.1:50052", ("127.0.0.1", 50052), "127.0.0.1:50052"),
        (":9097", ("0.0.0.0", 9097), "127.0.0.1:9097"),
        ("0.0.0.0:50100", ("0.0.0.0", 50100), "127.0.0.1:50100"),
        ("[::1]:50101", ("::1", 50101), "[::1]:50101"),
        ("localhost:1", ("localhost", 1), "localhost:1"),
    ],
)
def test_addresses(addr: str, parsed: tuple[str, int], dial: str) -> None:
    assert parse_listen_addr(addr) == parsed
    assert dial_addr(addr) == dial


@pytest.mark.parametrize("bad", ["", "50052", "host:", "host:70000", "a:b:c"])
def test_bad_addresses(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_listen_addr(bad)


def test_effective_config_round_trip_ignores_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load(
        tmp_path, env={"RAYINFRA_STATE_DIR": str(tmp_path / "s"), "KAFKA_EVENT_TOPIC": "t1"}
    ).config
    path = save_effective(cfg)
    assert path == tmp_path / "s" / "config.effective.json"
    # it may hold the auth token: 0600, in a 0700 state dir
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text())["events"]["event_topic"] == "t1"
    monkeypatch.setenv("KAFKA_EVENT_TOPIC", "other")  # actors never read the environment
    assert load_effective(tmp_path / "s") == cfg
    with pytest.raises(ConfigError, match="is rayinfra started"):
        load_effective(tmp_path / "missing")


def test_default_toml_parses_back_to_defaults(tmp_path: Path) -> None:
    text = default_toml()
    assert "# env ORCHESTRATOR_GRPC_ADDR" in text
    p = tmp_path / "c.toml"
    p.write_text(text)
    from_file = load(tmp_path, env={"RAYINFRA_CONFIG": str(p)}).config
    assert from_file == load(tmp_path).config


def test_configuration_doc_lists_every_env_var() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    for var, dotted in ENV_VARS.items():
        assert f"| `{var}` | `{dotted}` |" in doc, var
    for var in IGNORED_ENV_VARS:
        assert var in doc


@pytest.mark.parametrize(
    ("env", "toml"),
    [
        ({}, None),
        (
            {
                "RAYINFRA_GATEWAY": "10.0.0.5:7000",
                "DSPY_AGENT_SERVICE_TIMEOUT": "12.5",
                "RAYINFRA_AUTH_TOKEN": "s3cret",
                "RAYINFRA_TLS_CA_FILE": "ca.pem",
            },
            None,
        ),
        (
            {"ENV_MANAGER_GRPC_ADDR": ":50200"},
            '[gateway]\norchestrator_grpc_addr = "127.0.0.1:6001"\ntoken_file = "tok"\n'
            'enabled = false\n[client]\nconnect_timeout_s = 0.5\n[state]\ndir = "st"\n',
        ),
    ],
)
def test_dial_settings_from_layers_equal_the_models(
    tmp_path: Path, env: dict[str, str], toml: str | None
) -> None:
    """The CLI's pydantic-free slice resolves exactly what the typed config resolves."""
    from rayinfra.config_sources import DialSettings, gather

    full = load(tmp_path, dict(env), toml)
    env = {**env, "HOME": str(tmp_path / "home")}
    if toml is not None:
        env["RAYINFRA_CONFIG"] = str(tmp_path / "cfg.toml")
    lite = DialSettings.from_layers(gather(env=env, cwd=tmp_path))
    assert lite == full.config.dial


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("DSPY_AGENT_SERVICE_TIMEOUT", "soon", "client.service_timeout_s"),
        ("DSPY_AGENT_RECONNECT_BACKOFF", "-1", "client.reconnect_backoff_s"),
        ("ORCHESTRATOR_GRPC_ADDR", "nowhere", "gateway.orchestrator_grpc_addr"),
    ],
)
def test_dial_settings_name_the_bad_key_and_its_source(
    tmp_path: Path, var: str, value: str, needle: str
) -> None:
    from rayinfra.config_sources import DialSettings, gather

    with pytest.raises(ConfigError, match=rf"{needle}.*env:{var}"):
        DialSettings.from_layers(gather(env={var: value, "HOME": str(tmp_path)}, cwd=tmp_path))


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::"])
def test_a_dashboard_beyond_loopback_needs_ray_token_auth(tmp_path: Path, host: str) -> None:
    """The dashboard accepts jobs (it runs code): off loopback only behind Ray's token."""
    exposed = f'[ray]\ndashboard_host = "{host}"\n'
    with pytest.raises(ConfigError, match=r"ray.*dashboard_host.*auth_mode"):
        load(tmp_path, toml=exposed + 'auth_mode = "disabled"\n')
    assert load(tmp_path, toml=exposed).config.ray.dashboard_host == host  # token: the default
    # loopback, or no dashboard at all, needs nothing
    assert load(tmp_path, toml='[ray]\nauth_mode = "disabled"\n').config.ray.auth_mode == "disabled"
    off = f'[ray]\ndashboard_host = "{host}"\ninclude_dashboard = false\nauth_mode = "disabled"\n'
    assert load(tmp_path, toml=off).config.ray.include_dashboard is False
