"""Every runnable example in docs/api.md, executed against the session runtime.

The fenced ``bash`` and ``python`` blocks of docs/api.md are extracted and run as written, after
rewriting what differs on a test machine: the default addresses (127.0.0.1:50052 / 50100 / 9097 /
50101) become the session runtime's, the default token path ``~/.rayinfra/state/gateway.token``
its token file, task ids (``t1``, ``t2``, ...) unique ones, and the ``redis`` service the
runtime's ``kv`` (a real redis-server). Each bash line is one command run by ``bash -o pipefail``;
its output is checked by the first checker in :data:`CHECKERS` whose pattern matches the command
as the docs write it. An example no checker matches fails the test: a new example needs one.

``grpcurl`` commands run the real ``grpcurl`` binary if it is on PATH, and otherwise
``tests/support/grpcurl.py``, a grpcurl-compatible runner for the subset the docs use that, like
grpcurl, discovers every service and message type through the server's reflection service only
(grpcurl is not installable on the test machines: no Debian package, no route to GitHub or the Go
module proxy). So the examples also prove that reflection serves what grpcurl relies on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import ray

from rayinfra.actors.gateway import token_path
from rayinfra.api import stubs
from rayinfra.config import DEFAULT_HOME, NAMESPACE, GatewaySection, dial_addr
from tests.integration.conftest import SERVICE_PORTS, Runtime

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]
DOC = REPO / "docs" / "api.md"
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```\s*$", re.M | re.S)
RUNNABLE = ("bash", "python")
NOT_RUNNABLE = ("text", "toml", "json", "console-output")  # shown, never run
ADDR_KEYS = (
    "orchestrator_grpc_addr",
    "env_manager_grpc_addr",
    "orchestrator_http_addr",
    "env_manager_http_addr",
)
DEFAULT_TOKEN = f"{DEFAULT_HOME}/state/gateway.token"  # the default state dir's token file
TASK_ID = re.compile(r"(?<![\w-])t(\d+)(?![\w-])")
FINAL = ("completed", "failed", "cancelled")


# ----------------------------------------------------------------------------- extraction


@dataclass
class Block:
    lang: str
    text: str
    line: int  # 1-based line of the opening fence in docs/api.md


def blocks(markdown: str) -> list[Block]:
    out = []
    for m in FENCE.finditer(markdown):
        lang = m.group(1)
        assert lang in RUNNABLE + NOT_RUNNABLE, (
            f"docs/api.md line {markdown[: m.start()].count(chr(10)) + 1}: fenced block with "
            f"language {lang!r}: tag it as one of {RUNNABLE + NOT_RUNNABLE}"
        )
        out.append(Block(lang, m.group(2), markdown[: m.start()].count("\n") + 1))
    return out


def commands(bash: str) -> list[str]:
    """One command per line; a trailing backslash continues it; comments and blanks dropped."""
    out: list[str] = []
    pending = ""
    for line in bash.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        out.append(pending + line)
        pending = ""
    assert not pending, f"a continued line never ends: {pending!r}"
    return out


# ----------------------------------------------------------------------------- rewriting


@dataclass
class Env:
    rt: Runtime
    run: str
    bin_dir: Path

    def rewrite(self, text: str) -> str:
        text = TASK_ID.sub(lambda m: self.task_id(m.group(0)), text)
        defaults = GatewaySection()
        for key in ADDR_KEYS:
            text = text.replace(
                dial_addr(getattr(defaults, key)), dial_addr(getattr(self.rt.config.gateway, key))
            )
        real = token_path(self.rt.config)
        assert real.name == Path(DEFAULT_TOKEN).name  # only the state dir differs
        text = text.replace(DEFAULT_TOKEN, str(real))
        return text.replace('"redis"', '"kv"')

    def task_id(self, doc_id: str) -> str:
        return f"docs-{self.run}-{doc_id}"

    def shell_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def python_env(self) -> dict[str, str]:
        env = self.rt.spec.env()  # RAYINFRA_CONFIG: the session runtime's config
        env["DSPY_AGENT_SKIP_START"] = "1"  # connect only: never start a stray runtime
        env["PYTHONPATH"] = str(REPO)
        return env


@pytest.fixture(scope="module")
def env(rt: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    servers = ray.get(ray.get_actor("gateway", namespace=NAMESPACE).serving.remote())
    assert all(v.startswith("serving") for v in servers.values()), servers
    bin_dir = tmp_path_factory.mktemp("docs-bin")
    if shutil.which("grpcurl") is None:  # the shim, under grpcurl's name
        shim = bin_dir / "grpcurl"
        shim.write_text(
            f'#!/bin/sh\nPYTHONPATH="{REPO}${{PYTHONPATH:+:$PYTHONPATH}}" '
            f'exec "{sys.executable}" -m tests.support.grpcurl "$@"\n'
        )
        shim.chmod(0o755)
    yield Env(rt=rt, run=uuid.uuid4().hex[:8], bin_dir=bin_dir)


# ----------------------------------------------------------------------------- checkers


@dataclass
class Out:
    command: str  # as run (rewritten)
    rc: int
    stdout: str
    stderr: str

    def ok(self) -> Out:
        assert self.rc == 0, f"{self.command}\nexit {self.rc}\n{self.stdout}{self.stderr}"
        return self

    def json(self) -> Any:
        values = self.jsons()
        assert len(values) == 1, self.stdout
        return values[0]

    def jsons(self) -> list[Any]:
        """Every JSON value of stdout (grpcurl prints one object per streamed message)."""
        dec, text, i = json.JSONDecoder(), self.stdout, 0
        out: list[Any] = []
        while True:
            while i < len(text) and text[i].isspace():
                i += 1
            if i >= len(text):
                return out
            value, i = dec.raw_decode(text, i)
            out.append(value)


def _list_orchestrator(o: Out, e: Env) -> None:
    assert sorted(o.ok().stdout.split()) == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        stubs.ORCHESTRATOR_SERVICE,
    ]


def _list_env_manager(o: Out, e: Env) -> None:
    assert sorted(o.ok().stdout.split()) == [
        stubs.ENV_MANAGER_SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ]


def _list_methods(o: Out, e: Env) -> None:
    methods = o.ok().stdout.split()
    documented = {
        "SubmitTask",
        "StreamTaskResults",
        "GetTaskStatus",
        "CreateWorkflow",
        "StartWorkflowRun",
        "StreamWorkflowStatus",
        "GetMetrics",
        "StreamEvents",
        "Health",
    }
    assert {f"{stubs.ORCHESTRATOR_SERVICE}.{m}" for m in documented} <= set(methods), methods
    assert all(m.startswith(f"{stubs.ORCHESTRATOR_SERVICE}.") for m in methods)


def _describe_submit(o: Out, e: Env) -> None:
    text = o.ok().stdout
    assert text.startswith("orchestrator.v1.SubmitTaskRequest is a message:\n")
    for line in (
        "string id = 1;",
        "string class = 2;",
        "map<string, string> payload = 3;",
        "int32 priority = 4;",
        "string workflow_id = 5;",
        "double timeout_seconds = 6;",
    ):
        assert line in text, text


def _health_check(o: Out, e: Env) -> None:
    assert o.ok().json() == {"status": "SERVING"}


def _doc_ids(o: Out, e: Env) -> list[str]:
    return [m for m in re.findall(r"docs-\w+-t\d+", o.command) if m.startswith(f"docs-{e.run}")]


def _submitted(o: Out, e: Env) -> None:
    (tid,) = set(_doc_ids(o, e))
    assert o.ok().json() == {"success": True, "taskId": tid}


def _task_status(o: Out, e: Env) -> None:
    st = o.ok().json()
    (tid,) = set(_doc_ids(o, e))
    assert st["taskId"] == tid
    assert (st["status"], st.get("result"), st.get("error", "")) == ("completed", {"x": "1"}, "")


def _grpc_status_done(o: Out) -> bool:
    return o.rc == 0 and o.json().get("status") in FINAL


def _metrics_filtered(o: Out, e: Env) -> None:
    m = o.ok().json()
    assert set(m) == {"metrics", "timestamp"}
    names = set(m["metrics"])  # the name and each of its labelled series
    assert "env_queue_depth" in names and 'env_queue_depth{class="cpu_short"}' in names
    assert all(n == "env_queue_depth" or n.startswith("env_queue_depth{") for n in names)
    assert all(v >= 0 for v in m["metrics"].values())
    assert int(m["timestamp"]) > 1_600_000_000  # int64 fields are JSON strings in grpcurl


def _shell_submitted(o: Out, e: Env) -> None:
    _submitted(o, e)
    (tid,) = set(_doc_ids(o, e))
    st = _wait_task(e, tid)
    assert (st["status"], st["result"]["stdout"]) == ("completed", "Linux\n")


def _start_services(o: Out, e: Env) -> None:
    ups = o.ok().jsons()
    assert len(ups) >= 1 and all(u["serviceName"] == "kv" for u in ups), ups
    assert ups[-1]["status"] == "healthy" and ups[-1]["progress"] == 100


def _services_status(o: Out, e: Env) -> None:
    kv = o.ok().json()["services"]["kv"]
    assert kv["name"] == "kv" and kv["status"] == "running"
    assert kv["ports"] == [SERVICE_PORTS["kv"]] and int(kv["startedAt"]) > 0


def _stream_logs(o: Out, e: Env) -> None:
    lines = o.ok().jsons()
    assert len(lines) == 3, lines
    for ln in lines:
        assert ln["serviceName"] == "kv" and ln["stream"] in ("stdout", "stderr")
        assert int(ln["timestamp"]) > 0 and ln["message"]


def _resources(o: Out, e: Env) -> None:
    r = o.ok().json()
    assert r["capacity"] >= 1 and r["hardware"]["cpuCores"] >= 1
    assert int(r["hardware"]["memoryBytes"]) > 2**28


def _execute(o: Out, e: Env) -> None:
    r = o.ok().json()
    assert (r["success"], r["result"]) == (True, {"y": "2"}) and r["latencyMs"] > 0


def _http_submitted(o: Out, e: Env) -> None:
    (tid,) = set(_doc_ids(o, e))
    assert o.ok().json() == {"ok": True, "id": tid}


def _http_task(o: Out, e: Env) -> None:
    st = o.ok().json()
    (tid,) = set(_doc_ids(o, e))
    assert (st["task_id"], st["status"], st["result"]) == (tid, "completed", {"x": 1})


def _http_status_done(o: Out) -> bool:
    return o.rc == 0 and o.json().get("status") in FINAL


def _queue_status(o: Out, e: Env) -> None:
    q = o.ok().json()
    assert {"pending", "done", "submitted", "processed", "completed"} <= set(q)
    assert q["done"] >= 1 and q["completed"] >= 1  # t2 above


def _metrics_grep(o: Out, e: Env) -> None:
    lines = o.ok().stdout.splitlines()
    assert lines and all(re.fullmatch(r"env_queue_depth(\{[^}]*\})? \S+", ln) for ln in lines)


def _http_shell(o: Out, e: Env) -> None:
    r = o.ok().json()
    assert r["ok"] is True and r["id"]
    st = _wait_task(e, r["id"])
    assert st["status"] == "completed" and st["result"]["stdout"].startswith("Linux ")


def _env_health(o: Out, e: Env) -> None:
    h = o.ok().json()
    assert (h["status"], h["service"]) == ("healthy", "env-manager") and h["timestamp"]


def _py_stubs(o: Out, e: Env) -> None:
    assert o.ok().stdout == "completed {'n': '1'}\n"


def _py_client(o: Out, e: Env) -> None:
    assert o.ok().stdout == "completed {'n': 1}\n"


def _py_client_grpc(o: Out, e: Env) -> None:
    assert o.ok().stdout == "grpc [0, 1, 2]\n"


@dataclass
class Checker:
    pattern: str  # a regex searched in the command (or python block) as docs/api.md writes it
    check: Callable[[Out, Env], None]
    until: Callable[[Out], bool] | None = None  # re-run until true (a task still running)


CHECKERS = [
    Checker(r"grpcurl -plaintext 127\.0\.0\.1:50052 list$", _list_orchestrator),
    Checker(r"grpcurl -plaintext 127\.0\.0\.1:50100 list$", _list_env_manager),
    Checker(r"list orchestrator\.v1\.OrchestratorService$", _list_methods),
    Checker(r"describe orchestrator\.v1\.SubmitTaskRequest$", _describe_submit),
    Checker(r"grpc\.health\.v1\.Health/Check$", _health_check),
    Checker(r"-H .*\"type\": \"shell\".*OrchestratorService/SubmitTask$", _shell_submitted),
    Checker(r"OrchestratorService/SubmitTask$", _submitted),
    Checker(r"OrchestratorService/GetTaskStatus$", _task_status, _grpc_status_done),
    Checker(r"OrchestratorService/GetMetrics$", _metrics_filtered),
    Checker(r"EnvManagerService/StartServices$", _start_services),
    Checker(r"EnvManagerService/GetServicesStatus$", _services_status),
    Checker(r"EnvManagerService/StreamLogs$", _stream_logs),
    Checker(r"EnvManagerService/GetResourceAvailability$", _resources),
    Checker(r"EnvManagerService/ExecuteTask$", _execute),
    Checker(r"9097/queue/submit -H .*\"shell\"", _http_shell),
    Checker(r"-X POST 127\.0\.0\.1:9097/queue/submit ", _http_submitted),
    Checker(r"curl -s 127\.0\.0\.1:9097/tasks/t\d+$", _http_task, _http_status_done),
    Checker(r"curl -s 127\.0\.0\.1:9097/queue/status$", _queue_status),
    Checker(r"9097/metrics \| grep", _metrics_grep),
    Checker(r"curl -s 127\.0\.0\.1:50101/health$", _env_health),
    Checker(r"stubs\.orchestrator\(\)", _py_stubs),
    Checker(r"AgentInfra\.start\(\)", _py_client),
    Checker(r"AgentInfra\(orchestrator_addr=", _py_client_grpc),
]


def checker_for(source: str) -> Checker:
    for c in CHECKERS:
        if re.search(c.pattern, source, re.M):
            return c
    raise AssertionError(
        f"no checker in {Path(__file__).name} matches this docs/api.md example; add one:\n{source}"
    )


# ----------------------------------------------------------------------------- running


def run_bash(e: Env, command: str) -> Out:
    p = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        timeout=90,
        env=e.shell_env(),
        cwd=REPO,
    )
    return Out(command, p.returncode, p.stdout, p.stderr)


def run_python(e: Env, source: str, path: Path) -> Out:
    path.write_text(source)
    p = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=90,
        env=e.python_env(),
        cwd=path.parent,
    )
    return Out(source, p.returncode, p.stdout, p.stderr)


def _wait_task(e: Env, task_id: str, timeout: float = 60) -> dict[str, Any]:
    sched = ray.get_actor("scheduler", namespace=NAMESPACE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = ray.get(sched.get.remote([task_id]))[task_id]
        if st is not None and st.status in FINAL:
            return {"status": st.status, "result": st.result}
        time.sleep(0.1)
    raise AssertionError(f"{task_id} did not finish within {timeout}s")


def run_checked(e: Env, source: str, run: Callable[[], Out]) -> None:
    checker = checker_for(source)
    out = run()
    deadline = time.monotonic() + 60
    while checker.until is not None and not checker.until(out) and time.monotonic() < deadline:
        time.sleep(0.2)  # what a reader does: ask again until the task finished
        out = run()
    checker.check(out, e)


# ----------------------------------------------------------------------------- tests


DOC_BLOCKS = blocks(DOC.read_text())


def test_the_docs_have_examples_for_every_api() -> None:
    text = "\n".join(b.text for b in DOC_BLOCKS if b.lang in RUNNABLE)
    for needle in (
        "orchestrator.v1.OrchestratorService/",
        "env_manager.v1.EnvManagerService/",
        "grpc.health.v1.Health/Check",
        "127.0.0.1:9097/",
        "127.0.0.1:50101/",
        "stubs.orchestrator()",
        "AgentInfra.start()",
    ):
        assert needle in text, f"docs/api.md has no example using {needle}"
    # only default addresses and the default token path: what a reader's runtime has
    defaults = {dial_addr(getattr(GatewaySection(), k)) for k in ADDR_KEYS}
    assert set(re.findall(r"127\.0\.0\.1:\d+", text)) == defaults
    assert "gateway.token" not in text.replace(DEFAULT_TOKEN, "")


@pytest.mark.parametrize(
    "block",
    [b for b in DOC_BLOCKS if b.lang in RUNNABLE],
    ids=[f"{b.lang}-line{b.line}" for b in DOC_BLOCKS if b.lang in RUNNABLE],
)
def test_docs_example(env: Env, block: Block, tmp_path: Path) -> None:
    if block.lang == "python":
        source = env.rewrite(block.text)
        run_checked(env, block.text, partial(run_python, env, source, tmp_path / "ex.py"))
        return
    cmds = commands(block.text)
    assert cmds, f"empty bash block at docs/api.md line {block.line}"
    for cmd in cmds:
        run_checked(env, cmd, partial(run_bash, env, env.rewrite(cmd)))


def test_the_grpcurl_shim_is_used_only_without_grpcurl(env: Env) -> None:
    """The docs examples above ran the real grpcurl if installed, else the shim under its name."""
    out = run_bash(env, "command -v grpcurl")
    found = out.ok().stdout.strip()
    if shutil.which("grpcurl") is None:
        assert found == str(env.bin_dir / "grpcurl")
    else:
        assert found == shutil.which("grpcurl")
