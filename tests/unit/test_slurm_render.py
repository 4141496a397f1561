"""sbatch rendering: golden files for normal and hostile input, precise rejections, and the
rendered scripts run by bash (with recording stand-ins for srun and ray) to prove hostile values
arrive as data, never as code. ``UPDATE_GOLDEN=1`` rewrites the golden files."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from rayinfra.errors import InvalidArgumentError
from rayinfra.slurm.render import (
    DEFAULT_WORKER_COMMAND,
    RAY_START_WORKER_COMMAND,
    ClusterJobSpec,
    default_task_template,
    render_cluster_job,
    render_task_job,
    resolve_task_values,
)
from tests.support.slurm import assert_golden, golden_text

#: each a way to break out of naive quoting
HOSTILE = [
    "two words",
    'say "hi"',
    "it's",
    "$(touch {canary})",
    "`touch {canary}`",
    "; touch {canary}; rm -rf /",
    "${HOME} $HOME \\ * ?",
    "line1\nline2",
]


def hostile(canary: Path) -> list[str]:
    return [h.replace("{canary}", str(canary)) for h in HOSTILE]


def bash_syntax_ok(script: str) -> None:
    proc = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True, timeout=10)
    assert proc.returncode == 0, proc.stderr


RECORDER = """#!{python}
import json, os, sys
with open(os.environ["RECORD_TO"], "w") as f:
    json.dump({{"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}}, f)
"""


def recorder(tmp: Path, name: str) -> Path:
    """An executable ``name`` that writes its argv, environment and cwd to $RECORD_TO."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(RECORDER.format(python=sys.executable))
    path.chmod(0o755)
    return path


def run_recorded(script: str, tmp: Path, env: Mapping[str, str]) -> dict[str, Any]:
    record = tmp / "record.json"
    proc = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, **env, "RECORD_TO": str(record)},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(record.read_text())
    return result


# ------------------------------------------------------------------------------------------
# the cluster job

FULL = ClusterJobSpec(
    nodes=4,
    partition="gpu,gpu-long",
    account="proj-42",
    gpus_per_node=8,
    cpus_per_node=32,
    time="1-12:00:00",
    job_name="ri-train",
    output="/scratch/logs/ri-%j.out",
    shared_dir="/shared/rayinfra",
    temp_root="/tmp",
    state_dir="/scratch/rayinfra-state",
    interface="ib0",
    ports={"gcs-port": 6380, "dashboard-port": 8265},
    include_dashboard=True,
    python="/opt/venv/bin/python",
    ray="/opt/venv/bin/ray",
    rayinfra="/opt/venv/bin/rayinfra",
    labels={"team": "vision", "example.com/zone": "a"},
    env={"NCCL_DEBUG": "INFO"},
    extra_sbatch=("--qos=high", "--exclusive"),
)


def test_cluster_job_default_golden() -> None:
    script = render_cluster_job(ClusterJobSpec())
    bash_syntax_ok(script)
    assert_golden("cluster_default.sbatch", script)


def test_cluster_job_full_golden() -> None:
    script = render_cluster_job(FULL)
    bash_syntax_ok(script)
    assert_golden("cluster_full.sbatch", script)
    for line in (
        "#SBATCH --nodes=4",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=32",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --time=1-12:00:00",
        "#SBATCH --partition=gpu,gpu-long",
        "#SBATCH --account=proj-42",
        "#SBATCH --signal=B:TERM@60",
        "#SBATCH --qos=high",
    ):
        assert line in script.splitlines()


def test_cluster_job_with_a_join_command_golden() -> None:
    spec = ClusterJobSpec(
        nodes=2,
        include_dashboard=False,
        worker_command=[
            "{rayinfra}",
            "join",
            "{gcs_address}",
            "--node-ip-address={node_ip}",
            "--labels=rayinfra.io/slurm-job={job_id}",
            "--block",
        ],
        driver_command=None,
    )
    script = render_cluster_job(spec)
    bash_syntax_ok(script)
    assert_golden("cluster_join.sbatch", script)
    assert "ri_driver_command" not in script.split("# ---- the cluster")[0]


def test_cluster_job_hostile_values_golden(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    bad = [h for h in hostile(canary) if "\n" not in h and '"' not in h and "\\" not in h]
    one_line = [h for h in hostile(canary) if "\n" not in h]  # the cluster spec has no newlines
    spec = ClusterJobSpec(
        output=f"/tmp/{bad[0]} {bad[1]}/{bad[2]}-%j.out",
        shared_dir=f"/tmp/{bad[3]}",
        state_dir=f"/tmp/{bad[4]}",
        python=f"/opt/{bad[2]}/python",
        env={f"V{i}": h for i, h in enumerate(one_line)},
        driver_command=["{rayinfra}", "start", *one_line, "--at={gcs_address}/{job_id}"],
    )
    script = render_cluster_job(spec)
    bash_syntax_ok(script)
    assert_golden("cluster_hostile.sbatch", script.replace(str(canary), "CANARY"))


def test_cluster_job_hostile_values_arrive_as_data(tmp_path: Path) -> None:
    """The rendered settings and driver command, run by bash: every hostile value reaches the
    driver's argv and environment unchanged, and nothing in them ran."""
    canary = tmp_path / "canary"
    fake = recorder(tmp_path, "rayinfra")
    values = [h for h in hostile(canary) if "\n" not in h]
    spec = ClusterJobSpec(
        rayinfra=str(fake),
        env={f"V{i}": h for i, h in enumerate(values)},
        driver_command=["{rayinfra}", *values, "--at={gcs_address}/{job_id}", "{state_dir}"],
    )
    header = render_cluster_job(spec).split("# ---- the cluster")[0]
    run = (
        header
        + "\nRI_GCS_ADDRESS=10.0.0.1:6380 RI_JOB_ID=77 RI_STATE_DIR='/s t/$(x)'\nri_driver_command\n"
    )
    got = run_recorded(run, tmp_path, {})
    assert got["argv"] == [*values, "--at=10.0.0.1:6380/77", "/s t/$(x)"]
    assert [got["env"][f"V{i}"] for i in range(len(values))] == values
    assert not canary.exists()


def _worker_script(spec: ClusterJobSpec, tmp: Path, connection: Path, timeout_s: int) -> str:
    """The rendered script up to its main part (settings, commands, functions), then what the
    batch shell exports to a worker step, then ``ri_worker_main``."""
    functions = render_cluster_job(spec).split("# ---- main ----")[0]
    env = {
        "RI_CONNECTION_FILE": str(connection),
        "RI_TEMP_ROOT": str(tmp),
        "RI_JOB_ID": "9",
        "RI_WORKER_TIMEOUT_S": str(timeout_s),
        "SLURM_STEP_ID": "1",
        "SLURM_PROCID": "0",
        "SLURM_CPUS_ON_NODE": "4",
    }
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    return f"{functions}\n{exports}ri_worker_main\n"


HARDWARE_LABELS = (
    "rayinfra.io/accelerator-type=none,rayinfra.io/gpu-count=0,rayinfra.io/gpu-memory-gb=0,"
    "rayinfra.io/role=worker,rayinfra.io/slurm-job=9,team=a"
)
FALLBACK_LABELS = "rayinfra.io/gpu-count=0,rayinfra.io/role=worker,rayinfra.io/slurm-job=9,team=a"


@pytest.mark.parametrize(
    ("python", "labels"),
    [(sys.executable, HARDWARE_LABELS), ("/usr/bin/python3", FALLBACK_LABELS)],
    ids=["with-rayinfra", "python-without-rayinfra"],
)
def test_worker_waits_for_the_connection_file_then_joins(
    tmp_path: Path, python: str, labels: str
) -> None:
    """``ri_worker_main`` (what each worker node's srun runs) with plain ``ray start`` as the
    join command: polls for the connection file, picks its own free ports, runs the command
    with the head's GCS address and the labels rayinfra.hardware builds (or, with a Python that
    lacks rayinfra, the basic ones), and removes its temp dir once the node exits."""
    fake = recorder(tmp_path, "ray")
    spec = ClusterJobSpec(
        ray=str(fake),
        python=python,
        node_ip="127.0.0.1",
        labels={"team": "a"},
        worker_command=RAY_START_WORKER_COMMAND,
    )
    connection = tmp_path / "shared" / "connection.json"
    connection.parent.mkdir()
    proc = subprocess.Popen(
        ["bash", "-c", _worker_script(spec, tmp_path, connection, 30)],
        env={**os.environ, "RECORD_TO": str(tmp_path / "record.json")},
        cwd=tmp_path,  # not the checkout: `import rayinfra` must come from the Python's own path
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)  # no connection file yet: the worker waits
        connection.write_text(json.dumps({"gcs_address": "10.1.2.3:6380"}))
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    argv = json.loads((tmp_path / "record.json").read_text())["argv"]
    flags = dict(a.lstrip("-").split("=", 1) for a in argv if "=" in a)
    assert argv[:2] == ["start", "--address=10.1.2.3:6380"] and "--block" in argv
    assert flags["node-ip-address"] == "127.0.0.1"
    assert flags["temp-dir"] == str(tmp_path / "ri-9-w1.0")
    assert not (tmp_path / "ri-9-w1.0").exists()  # the node exited: its temp dir went with it
    assert flags["num-cpus"] == "4" and flags["num-gpus"] == "0"
    assert flags["labels"] == labels
    from rayinfra.head import WORKER_PORT_FLAGS

    ports = [int(flags[f]) for f in WORKER_PORT_FLAGS]
    assert len(set(ports)) == len(ports) and all(p > 0 for p in ports)


def test_a_worker_joins_with_rayinfra_join_and_its_share_of_the_node(tmp_path: Path) -> None:
    """The default join command is ``rayinfra join`` (the one way to join): the head's GCS
    address, this node's IP, its share of the node's CPUs and GPUs when several Ray nodes
    share it, the job's labels and a temp dir of its own."""
    fake = recorder(tmp_path, "rayinfra")
    spec = ClusterJobSpec(
        rayinfra=str(fake),
        python=sys.executable,
        node_ip="127.0.0.1",
        gpus_per_node=4,
        workers_per_node=2,
        labels={"team": "a"},
    )
    connection = tmp_path / "connection.json"
    connection.write_text(json.dumps({"gcs_address": "10.1.2.3:6380"}))
    proc = subprocess.run(
        ["bash", "-c", _worker_script(spec, tmp_path, connection, 5)],
        env={**os.environ, "RECORD_TO": str(tmp_path / "record.json")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    argv = json.loads((tmp_path / "record.json").read_text())["argv"]
    assert argv == [
        "join",
        "10.1.2.3:6380",
        "--block",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=2",
        "--num-gpus=2",
        "--labels=team=a,rayinfra.io/slurm-job=9",
        f"--temp-dir={tmp_path / 'ri-9-w1.0'}",
    ]
    assert DEFAULT_WORKER_COMMAND[:2] == ("{rayinfra}", "join")


def test_worker_gives_up_without_a_connection_file(tmp_path: Path) -> None:
    spec = ClusterJobSpec(python=sys.executable, node_ip="127.0.0.1")
    proc = subprocess.run(
        ["bash", "-c", _worker_script(spec, tmp_path, tmp_path / "never.json", 1)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 1
    assert f"no connection file {tmp_path / 'never.json'} after 1 s" in proc.stderr


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"nodes": 0}, "nodes"),
        ({"nodes": "2; rm -rf /"}, "nodes"),
        ({"gpus_per_node": -1}, "gpus_per_node"),
        ({"cpus_per_node": True}, "cpus_per_node"),
        ({"partition": "debug; rm -rf /"}, "partition"),
        ({"partition": "a b"}, "partition"),
        ({"account": "$(id)"}, "account"),
        ({"job_name": "x\ny"}, "job_name"),
        ({"time": "1:00; rm -rf /"}, "time"),
        ({"time": "soon"}, "time"),
        ({"output": "/tmp/a\n#SBATCH --wrap=x"}, "output"),
        ({"output": '/tmp/"quoted"'}, "output"),
        ({"output": "/tmp/back\\slash"}, "output"),
        ({"shared_dir": "/tmp/x\ny"}, "shared_dir"),
        ({"python": "/bin/python\n"}, "python"),
        ({"interface": "eth0; rm"}, "interface"),
        ({"node_ip": "10.0.0.1; rm -rf /"}, "node_ip"),
        ({"dashboard_host": "0.0.0.0 --x"}, "dashboard_host"),
        ({"ports": {"gcs-port": 0}}, "ports.gcs-port"),
        ({"ports": {"gcs-port": 70000}}, "ports.gcs-port"),
        ({"ports": {"redis": 6379}}, "ports.redis"),
        ({"min_worker_port": 2000, "max_worker_port": 1000}, "min_worker_port"),
        ({"gateway_ports": {"grpc": 1}}, "gateway_ports.grpc"),
        ({"gateway_ports": {"orchestrator-grpc-port": 0}}, "gateway_ports.orchestrator-grpc-port"),
        ({"gateway_host": "0.0.0.0; x"}, "gateway_host"),
        ({"workers_per_node": 0}, "workers_per_node"),
        ({"labels": {"team": "a b"}}, "labels.team"),
        ({"labels": {"ray.io/x": "y"}}, "labels.ray.io/x"),
        ({"labels": {"rayinfra.io/role": "head"}}, "labels.rayinfra.io/role"),
        ({"env": {"A B": "x"}}, "env.A B"),
        ({"env": {"RI_NODES": "9"}}, "env.RI_NODES"),
        ({"env": {"X": "nul\0"}}, "env.X"),
        ({"extra_sbatch": ("--wrap=rm -rf /",)}, "extra_sbatch[0]"),
        ({"extra_sbatch": ("-p debug",)}, "extra_sbatch[0]"),
        ({"worker_command": ["{ray}", "start", "{unknown}"]}, "worker_command[2]"),
        ({"worker_command": "ray start"}, "worker_command"),
        ({"driver_command": ["x", "a\nb"]}, "driver_command[1]"),
        ({"head_timeout_s": 0}, "head_timeout_s"),
    ],
)
def test_cluster_job_rejects_bad_values_naming_the_field(
    changes: dict[str, Any], field: str
) -> None:
    spec = ClusterJobSpec(**{**ClusterJobSpec().__dict__, **changes})
    with pytest.raises(ValueError) as info:
        render_cluster_job(spec)
    assert isinstance(info.value, InvalidArgumentError)
    assert info.value.field == field, str(info.value)


def test_cluster_job_quotes_an_output_path_with_spaces() -> None:
    script = render_cluster_job(ClusterJobSpec(output="/tmp/my logs/it's $(x)-%j.out"))
    assert '#SBATCH --output="/tmp/my logs/it\'s $(x)-%j.out"' in script.splitlines()


def test_ray_start_worker_command_names_every_worker_port() -> None:
    from rayinfra.head import WORKER_PORT_FLAGS

    joined = " ".join(RAY_START_WORKER_COMMAND)
    for flag in WORKER_PORT_FLAGS:
        assert f"--{flag}={{{flag.replace('-', '_')}}}" in joined
    assert "--node-ip-address={node_ip}" in joined and "--block" in joined


# ------------------------------------------------------------------------------------------
# gpu_slurm task jobs

SMALL = {
    "nodes": 1,
    "gpus": 0,
    "cpus_per_task": 1,
    "memory_gb": 1,
    "time_limit": "00:10:00",
    "log_dir": "/var/log/rayinfra",
}


def test_task_job_default_template_golden() -> None:
    payload = {**SMALL, "type": "shell", "argv": ["python", "train.py", "--epochs", "3"]}
    script = render_task_job(default_task_template(), "task-1", payload)
    bash_syntax_ok(script)
    assert_golden("task_default.sbatch", script)


def test_task_job_hostile_payload_golden(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    values = hostile(canary)
    payload = {
        **SMALL,
        "argv": ["python", "-c", "print(1)", *values],
        "env": {f"V{i}": v for i, v in enumerate(values)},
        "cwd": f"/tmp/{values[0]}",
        "model": values[3],
        "skill": values[5],
    }
    script = render_task_job(default_task_template(), "t; rm -rf / $(id)", payload)
    bash_syntax_ok(script)
    assert_golden("task_hostile.sbatch", script.replace(str(canary), "CANARY"))


def test_task_job_hostile_payload_arrives_as_data(tmp_path: Path) -> None:
    """The default template run by bash with a recording ``srun``: the payload's argv, env and
    cwd arrive exactly, and nothing in them ran."""
    canary = tmp_path / "canary"
    values = hostile(canary)
    workdir = tmp_path / "it's $(x) dir"
    workdir.mkdir()
    recorder(tmp_path, "srun")
    payload = {
        **SMALL,
        "argv": ["python", *values],
        "env": {f"V{i}": v for i, v in enumerate(values)},
        "cwd": str(workdir),
        "skill": values[3],
    }
    script = render_task_job(default_task_template(), values[4], payload)
    got = run_recorded(
        script, tmp_path, {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "SLURM_JOB_ID": "5"}
    )
    assert got["argv"] == ["--nodes=1", "--ntasks-per-node=1", "python", *values]
    assert [got["env"][f"V{i}"] for i in range(len(values))] == values
    assert got["env"]["RAYINFRA_TASK_ID"] == values[4] == got["env"]["TASK_ID"]
    assert got["cwd"] == str(workdir)
    assert not canary.exists()


def test_task_job_puffer_template_golden() -> None:
    payload = {
        **SMALL,
        "method": "puffer_rl",
        "module": "dspy_agent.rl",
        "model": "meta-llama/Llama-3-8B",
        "skill": "code review",
        "rl_steps": 50,
        "rl_lr": 0.0003,
        "mesh_endpoint": "http://mesh:9000",
        "workspace_dir": "/work space",
    }
    settings = {"log_dir": "/ignored/because/the/payload/sets/it", "RL_N_ENVS": 2}
    script = render_task_job(golden_text("train_puffer_rl.sbatch.in"), "task-7", payload, settings)
    bash_syntax_ok(script)
    assert_golden("task_puffer.sbatch", script)


def test_task_job_uses_a_template_s_own_defaults() -> None:
    """train_ddp's ``${NODES:-2}`` means 2: the original only replaced ``${NODES:-1}`` and left
    the other defaults in #SBATCH lines, where sbatch does not expand them."""
    text = golden_text("train_ddp.sbatch.in")
    script = render_task_job(text, "ddp-1", {"model": "gpt2-xl"})
    bash_syntax_ok(script)
    assert_golden("task_ddp.sbatch", script)
    assert "#SBATCH -N 2" in script and "#SBATCH --gpus-per-node=4" in script
    assert "${" not in "\n".join(line for line in script.splitlines() if "#SBATCH" in line)


def test_task_values_precedence() -> None:
    text = "#!/bin/bash\n#SBATCH -N ${NODES:-3}\necho ${GPUS} ${TRAINING_METHOD} ${LOG_DIR}\n"
    values = resolve_task_values(text, "t", {}, {})
    assert values == {
        "NODES": "3",
        "GPUS": "1",
        "TRAINING_METHOD": "grpo",
        "LOG_DIR": "/workspace/logs",
    }
    values = resolve_task_values(text, "t", {"nodes": 5}, {"NODES": 4, "gpus": 0, "log_dir": "/l"})
    assert values == {"NODES": "5", "GPUS": "0", "TRAINING_METHOD": "grpo", "LOG_DIR": "/l"}
    assert (
        resolve_task_values(text, "t", {"training_method": "ddp"}, {})["TRAINING_METHOD"] == "ddp"
    )


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"nodes": "2; rm -rf /"}, "payload.nodes"),
        ({"nodes": 0}, "payload.nodes"),
        ({"gpus": -1}, "payload.gpus"),
        ({"gpus": True}, "payload.gpus"),
        ({"cpus_per_task": "8\n#SBATCH --wrap=x"}, "payload.cpus_per_task"),
        ({"memory_gb": 1.5}, "payload.memory_gb"),
        ({"time_limit": "04:00:00 --wrap=x"}, "payload.time_limit"),
        ({"log_dir": "/logs with space"}, "payload.log_dir"),
        ({"log_dir": "/logs/$(id)"}, "payload.log_dir"),
        ({"log_dir": "/a\nb"}, "payload.log_dir"),
        ({"method": "grpo; rm -rf /"}, "payload.method"),
        ({"argv": "python x.py"}, "payload.argv"),
        ({"argv": []}, "payload.argv"),
        ({"argv": ["ok", 3]}, "payload.argv"),
        ({"argv": ["", "x"]}, "payload.argv"),
        ({"command": ["a\0b"]}, "payload.command[0]"),
        ({"env": {"A B": "x"}}, "payload.env.A B"),
        ({"env": {"A": 1}}, "payload.env.A"),
        ({"env": ["A=1"]}, "payload.env"),
        ({"cwd": "/a\nb"}, "payload.cwd"),
        ({"skill": {"nested": 1}}, "payload.skill"),
    ],
)
def test_task_job_rejects_bad_payloads_naming_the_field(
    payload: dict[str, Any], field: str
) -> None:
    text = default_task_template() + 'echo "${RL_SKILL_OVERRIDE}" "${TRAINING_METHOD}"\n'
    full = {**({} if "command" in payload else {"argv": ["true"]}), **SMALL, **payload}
    with pytest.raises(InvalidArgumentError) as info:
        render_task_job(text, "t1", full)
    assert info.value.field == field, str(info.value)


def test_task_job_argv_rules() -> None:
    template = default_task_template()
    with pytest.raises(InvalidArgumentError, match="required by the template"):
        render_task_job(template, "t", SMALL)
    as_json = render_task_job(template, "t", {**SMALL, "argv": json.dumps(["echo", "a b"])})
    assert "RAYINFRA_TASK_ARGV=(echo 'a b')" in as_json
    command = render_task_job(template, "t", {**SMALL, "command": ["echo", "x"]})
    assert "RAYINFRA_TASK_ARGV=(echo x)" in command
    with pytest.raises(InvalidArgumentError, match="not both"):
        render_task_job(template, "t", {**SMALL, "command": ["a"], "argv": ["b"]})
    # a template that does not run argv needs none
    render_task_job("#!/bin/bash\necho ${TASK_ID}\n", "t", {})
    with pytest.raises(InvalidArgumentError, match="task_id"):
        render_task_job(template, "a\nb", {**SMALL, "argv": ["true"]})
    with pytest.raises(InvalidArgumentError) as info:
        render_task_job("#!/bin/bash\n#SBATCH -J ${TASK_ID}\n", "t 1", {})
    assert info.value.field == "task_id"


def test_task_job_leaves_other_shell_variables_alone() -> None:
    text = "#!/bin/bash\n#SBATCH -o ${HOME}/x\necho ${SLURM_JOB_ID} ${TASK_ID} $NODES\n"
    script = render_task_job(text, "t", {})
    assert "#SBATCH -o ${HOME}/x" in script  # not one of ours: untouched
    assert "echo ${SLURM_JOB_ID} ${TASK_ID} $NODES" in script
    assert "export TASK_ID=t" in script and "NODES" not in script.split("echo")[0]
