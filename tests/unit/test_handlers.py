"""Task handlers: builtins, the shell edge (real subprocesses) and the registry.

The shell tests start real processes and check, independently of the code under test, that no
process of the task's process group or session is left alive after a timeout, a cancel or a
normal exit that left a background child behind.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import rayinfra.handlers as handlers
from rayinfra.handlers import (
    ENTRY_POINT_GROUP,
    OUTPUT_CAP_BYTES,
    HandlerError,
    HandlerLoadError,
    HandlerRegistry,
    TaskCancelledError,
    TaskContext,
    TaskFailedError,
    UnknownHandlerError,
)
from rayinfra.handlers import shell as shell_mod

BUILTINS = ["echo", "noop", "python", "shell", "sleep"]


def make_ctx(
    *,
    task_id: str = "t-1",
    deadline_in: float | None = None,
    output_dir: Path | None = None,
) -> TaskContext:
    deadline = None if deadline_in is None else time.monotonic() + deadline_in
    return TaskContext(
        task_id=task_id,
        task_class="cpu_short",
        timeout_s=deadline_in,
        deadline=deadline,
        output_dir=output_dir,
    )


def cancel_after(ctx: TaskContext, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, ctx.cancel_event.set)
    timer.start()
    return timer


def run(payload: dict[str, Any], ctx: TaskContext | None = None) -> Any:
    return HandlerRegistry(load_entry_points=False).run(payload, ctx or make_ctx())


# --------------------------------------------------------------------------- process helpers


def alive_in_session(sid: int) -> list[int]:
    """Non-zombie processes whose process group or session is ``sid`` (independent scan)."""
    alive = []
    for p in psutil.process_iter(["status"]):
        try:
            in_group = os.getpgid(p.pid) == sid or os.getsid(p.pid) == sid
            if in_group and p.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(p.pid)
        except (OSError, psutil.Error):
            continue
    return alive


def pid_alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def started_pids(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Pids of the task processes the shell handler starts (recorded as they start)."""
    pids: list[int] = []

    class SpyPopen(shell_mod._TrackedPopen):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            pids.append(self.pid)

    monkeypatch.setattr(shell_mod, "_TrackedPopen", SpyPopen)
    return pids


class GroupWatcher:
    """Records every process seen in the task's session while the task runs."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.seen: set[int] = set()
        self.pgid: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.pids:
                self.pgid = os.getpgid(self.pids[0]) if pid_alive(self.pids[0]) else self.pgid
                self.seen.update(alive_in_session(self.pids[0]))
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- public surface


def test_public_surface_is_pinned() -> None:
    assert sorted(handlers.__all__) == sorted(
        [
            "ENTRY_POINT_GROUP",
            "KILL_GRACE_S",
            "OUTPUT_CAP_BYTES",
            "Handler",
            "HandlerError",
            "HandlerInfo",
            "HandlerLoadError",
            "HandlerRegistry",
            "TaskCancelledError",
            "TaskContext",
            "TaskFailedError",
            "UnknownHandlerError",
            "builtin_handlers",
            "echo_handler",
            "kill_process_group",
            "noop_handler",
            "python_handler",
            "run_command",
            "shell_handler",
            "sleep_handler",
        ]
    )
    assert ENTRY_POINT_GROUP == "rayinfra.handlers"
    assert OUTPUT_CAP_BYTES == 64 * 1024


def test_context_remaining_and_cancelled() -> None:
    ctx = make_ctx()
    assert ctx.remaining() is None and not ctx.cancelled()
    ctx = make_ctx(deadline_in=5)
    remaining = ctx.remaining()
    assert remaining is not None and 4 < remaining <= 5
    ctx.cancel_event.set()
    assert ctx.cancelled()
    assert TaskFailedError("x", result={"a": 1}).result == {"a": 1}
    assert TaskFailedError("x").result is None


# --------------------------------------------------------------------------- builtins


def test_noop_and_echo() -> None:
    assert run({"type": "noop"}) == {}
    payload = {"type": "echo", "a": 1, "nested": {"b": [1, 2]}}
    assert run(payload) == {"a": 1, "nested": {"b": [1, 2]}}
    assert payload["type"] == "echo"  # the caller's payload is untouched


def test_sleep_returns_slept() -> None:
    t0 = time.monotonic()
    assert run({"type": "sleep", "seconds": 0.05}) == {"slept": 0.05}
    assert time.monotonic() - t0 >= 0.05
    assert run({"type": "sleep", "seconds": 0}) == {"slept": 0}


@pytest.mark.parametrize("seconds", [True, -1, "1", None, float("nan"), float("inf"), [1]])
def test_sleep_rejects_bad_seconds(seconds: object) -> None:
    with pytest.raises(HandlerError, match=r"^payload\.seconds: "):
        run({"type": "sleep", "seconds": seconds})


def test_sleep_cancel_is_prompt() -> None:
    ctx = make_ctx()
    cancel_after(ctx, 0.1)
    t0 = time.monotonic()
    with pytest.raises(TaskCancelledError):
        run({"type": "sleep", "seconds": 10}, ctx)
    assert time.monotonic() - t0 < 1.0


def test_sleep_stops_at_deadline() -> None:
    ctx = make_ctx(deadline_in=0.1)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"^timed out after 0\.1s$"):
        run({"type": "sleep", "seconds": 10}, ctx)
    assert 0.09 < time.monotonic() - t0 < 1.0


def test_python_calls_stdlib_functions() -> None:
    assert run({"type": "python", "function": "json:dumps", "args": [{"a": 1}]}) == '{"a": 1}'
    assert (
        run(
            {
                "type": "python",
                "function": "json:dumps",
                "args": [{"b": 1, "a": 2}],
                "kwargs": {"sort_keys": True},
            }
        )
        == '{"a": 2, "b": 1}'
    )
    assert run({"type": "python", "function": "os.path:join", "args": ["a", "b"]}) == "a/b"
    # attribute chains after the colon
    assert run({"type": "python", "function": "os:path.basename", "args": ["/x/y"]}) == "y"


def test_python_runs_coroutines() -> None:
    # asyncio.sleep(delay, result) is a coroutine function returning its second argument
    payload = {"type": "python", "function": "asyncio:sleep", "args": [0.01, {"x": [1]}]}
    assert run(payload) == {"x": [1]}


def test_python_coroutine_is_cancelled_and_timed_out() -> None:
    ctx = make_ctx()
    cancel_after(ctx, 0.1)
    t0 = time.monotonic()
    with pytest.raises(TaskCancelledError):
        run({"type": "python", "function": "asyncio:sleep", "args": [30]}, ctx)
    assert time.monotonic() - t0 < 1.0
    with pytest.raises(TimeoutError, match=r"^python task timed out after 0\.1s$"):
        run(
            {"type": "python", "function": "asyncio:sleep", "args": [30]}, make_ctx(deadline_in=0.1)
        )


def test_python_rejects_non_json_return() -> None:
    with pytest.raises(HandlerError, match="returned a non-JSON value of type object"):
        run({"type": "python", "function": "builtins:object"})


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("json.dumps", r"payload\.function: must be 'package\.module:function'"),
        (None, r"payload\.function: must be 'package\.module:function'"),
        ("json:dumps; rm -rf /", r"payload\.function: must be"),
        ("no_such_module_xyz:fn", r"payload\.function: cannot import 'no_such_module_xyz:fn'"),
        ("json:no_such_fn", r"payload\.function: cannot import 'json:no_such_fn'.*no_such_fn"),
        ("os:sep", r"payload\.function: 'os:sep' is not callable"),
    ],
)
def test_python_bad_targets(function: object, message: str) -> None:
    with pytest.raises(HandlerError, match=message):
        run({"type": "python", "function": function})


def test_python_bad_args_and_function_errors() -> None:
    with pytest.raises(HandlerError, match=r"^payload\.args: "):
        run({"type": "python", "function": "json:dumps", "args": {"a": 1}})
    with pytest.raises(HandlerError, match=r"^payload\.kwargs: "):
        run({"type": "python", "function": "json:dumps", "args": [1], "kwargs": [1]})
    # the function's own error propagates as itself, not as a payload error
    with pytest.raises(json.JSONDecodeError) as info:
        run({"type": "python", "function": "json:loads", "args": ["{bad"]})
    assert not isinstance(info.value, HandlerError)


# --------------------------------------------------------------------------- shell


def test_shell_echo() -> None:
    result = run({"type": "shell", "argv": ["echo", "hi"]})
    assert result == {"exit_code": 0, "stdout": "hi\n", "stderr": ""}


def test_shell_argv_as_json_string() -> None:
    result = run({"type": "shell", "argv": '["echo", "hi", "there"]'})
    assert result["stdout"] == "hi there\n"


@pytest.mark.parametrize(
    "argv", ["echo hi", '"echo hi"', "[]", '["echo", 1]', [], ["echo", None], 42, ["", "x"], None]
)
def test_shell_rejects_bad_argv(argv: object) -> None:
    with pytest.raises(HandlerError, match=r"^payload\.argv: "):
        run({"type": "shell", "argv": argv})


HOSTILE = "; rm -rf / $(whoami) `id` && echo pwned | cat > /tmp/x \"quoted\" 'single' \\ $HOME *"


def test_shell_hostile_values_run_literally(tmp_path: Path) -> None:
    result = run({"type": "shell", "argv": ["printf", "%s", HOSTILE], "cwd": str(tmp_path)})
    assert result["stdout"] == HOSTILE
    result = run({"type": "shell", "argv": json.dumps(["printf", "%s|", HOSTILE, "$PATH"])})
    assert result["stdout"] == f"{HOSTILE}|$PATH|"
    assert list(tmp_path.iterdir()) == []  # the glob and the redirect did nothing


def test_shell_cwd_and_env(tmp_path: Path) -> None:
    code = (
        "import os; print(os.getcwd()); print(os.environ['FOO']); "
        "print(os.environ['RAYINFRA_TASK_ID']); print(bool(os.environ.get('PATH')))"
    )
    result = run(
        {
            "type": "shell",
            "argv": [sys.executable, "-c", code],
            "cwd": str(tmp_path),
            "env": {"FOO": "bar $(id) baz"},
        },
        make_ctx(task_id="task-env"),
    )
    assert result["stdout"].splitlines() == [
        str(tmp_path.resolve()),
        "bar $(id) baz",
        "task-env",
        "True",
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"cwd": "/no/such/dir/xyz"}, r"^payload\.cwd: '/no/such/dir/xyz' is not a directory"),
        ({"cwd": 3}, r"^payload\.cwd: "),
        ({"env": ["A=1"]}, r"^payload\.env: "),
        ({"env": {"A": 1}}, r"^payload\.env\.A: must be a string"),
        ({"env": {"A=B": "1"}}, r"^payload\.env: invalid variable name"),
    ],
)
def test_shell_rejects_bad_cwd_and_env(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(HandlerError, match=message):
        run({"type": "shell", "argv": ["true"], **extra})


def test_shell_nonzero_exit_keeps_result() -> None:
    with pytest.raises(TaskFailedError, match=r"^exit code 3$") as info:
        run({"type": "shell", "argv": ["sh", "-c", "echo out; echo err >&2; exit 3"]})
    assert info.value.result == {"exit_code": 3, "stdout": "out\n", "stderr": "err\n"}


def test_shell_missing_executable() -> None:
    with pytest.raises(
        HandlerError, match=r"^payload\.argv: executable 'no-such-exe-xyz' not found$"
    ):
        run({"type": "shell", "argv": ["no-such-exe-xyz", "a"]})
    with pytest.raises(HandlerError, match=r"^payload\.argv: executable '/no/such/bin' not found"):
        run({"type": "shell", "argv": ["/no/such/bin"]})


def test_shell_output_is_capped_with_full_text_in_file(tmp_path: Path) -> None:
    size = 200 * 1024
    code = f"import sys; sys.stdout.write('a' * {size}); sys.stderr.write('small')"
    out_dir = tmp_path / "out"
    result = run(
        {"type": "shell", "argv": [sys.executable, "-c", code]},
        make_ctx(task_id="big/../task", output_dir=out_dir),
    )
    path = Path(result["stdout_path"])
    assert path.parent == out_dir  # created on demand; the task id cannot escape it
    assert path.name == "big_.._task.stdout"
    assert path.read_text() == "a" * size
    assert result["stdout"] == "a" * OUTPUT_CAP_BYTES + f"\n[... truncated, full output in {path}]"
    assert result["stderr"] == "small"
    assert "stderr_path" not in result
    assert (out_dir / "big_.._task.stderr").read_text() == "small"


def test_shell_cap_does_not_split_characters_and_replaces_bad_bytes(tmp_path: Path) -> None:
    # one ASCII byte then 2-byte characters: the cap falls in the middle of a character
    code = (
        "import sys; sys.stdout.write('a' + '\\u00e9' * 40000); sys.stderr.buffer.write(b'x\\xffy')"
    )
    result = run(
        {"type": "shell", "argv": [sys.executable, "-c", code]},
        make_ctx(output_dir=tmp_path),
    )
    text = result["stdout"].split("\n[... truncated")[0]
    assert text == "a" + "\u00e9" * ((OUTPUT_CAP_BYTES - 1) // 2)
    assert result["stderr"] == "x\ufffdy"


def test_shell_temp_output_dir_is_removed_unless_truncated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    run({"type": "shell", "argv": ["echo", "small"]})
    assert list(temp_root.iterdir()) == []
    code = f"print('b' * {2 * OUTPUT_CAP_BYTES})"
    result = run({"type": "shell", "argv": [sys.executable, "-c", code]})
    assert Path(result["stdout_path"]).parent.parent == temp_root
    assert len(Path(result["stdout_path"]).read_text()) == 2 * OUTPUT_CAP_BYTES + 1


def test_shell_timeout_kills_the_whole_group(started_pids: list[int]) -> None:
    watcher = GroupWatcher(started_pids)
    t0 = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match=r"^shell task timed out after 0\.5s$"):
            run(
                {"type": "shell", "argv": ["sh", "-c", "sleep 30 & sleep 30"]},
                make_ctx(deadline_in=0.5),
            )
    finally:
        watcher.stop()
    assert time.monotonic() - t0 < 2.0  # SIGTERM was enough, no grace period needed
    [leader] = started_pids
    assert watcher.pgid == leader  # it led its own group...
    assert len(watcher.seen) >= 3  # ...holding sh and both sleeps
    assert alive_in_session(leader) == []
    assert not any(pid_alive(pid) for pid in watcher.seen)


def test_shell_cancel_kills_the_whole_group(started_pids: list[int]) -> None:
    watcher = GroupWatcher(started_pids)
    ctx = make_ctx()
    cancel_after(ctx, 0.4)
    t0 = time.monotonic()
    try:
        with pytest.raises(TaskCancelledError):
            run({"type": "shell", "argv": ["sh", "-c", "sleep 30 & sleep 30"]}, ctx)
    finally:
        watcher.stop()
    assert time.monotonic() - t0 < 2.0
    [leader] = started_pids
    assert len(watcher.seen) >= 3
    assert alive_in_session(leader) == []
    assert not any(pid_alive(pid) for pid in watcher.seen)


def test_an_interrupt_inside_popen_after_the_fork_leaves_no_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ray's cancel raises KeyboardInterrupt in the worker; landing after the fork but before
    Popen returned (it waits for the exec), the child must still be killed."""
    forked: list[int] = []
    original = shell_mod._TrackedPopen._execute_child

    def interrupted(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        forked.append(self.pid)
        time.sleep(0.2)  # the group is up and running
        raise KeyboardInterrupt

    monkeypatch.setattr(shell_mod._TrackedPopen, "_execute_child", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run({"type": "shell", "argv": ["sh", "-c", "sleep 30 & sleep 30"]})
    [leader] = forked
    assert alive_in_session(leader) == []


def test_a_repeated_interrupt_during_cleanup_does_not_leave_the_group_running(
    started_pids: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray cancels a running task by raising KeyboardInterrupt in it, and repeats that every
    couple of seconds while the task runs: a second one landing in the cleanup (before the
    first kill signal went out) must not abort it."""

    class InterruptingEvent(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            if time.monotonic() - t0 > 0.4:
                raise KeyboardInterrupt  # Ray's first cancel
            return super().wait(timeout)

    calls: list[int] = []
    real = shell_mod.kill_process_group

    def interrupted_once(pgid: int, grace_s: float | None = None) -> None:
        calls.append(pgid)
        if len(calls) == 1:
            raise KeyboardInterrupt  # the repeat, before any signal was sent
        real(pgid, grace_s)

    monkeypatch.setattr(shell_mod, "kill_process_group", interrupted_once)
    ctx = make_ctx()
    ctx.cancel_event = InterruptingEvent()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run({"type": "shell", "argv": ["sh", "-c", "sleep 30 & sleep 30"]}, ctx)
    [leader] = started_pids
    assert len(calls) == 2
    assert alive_in_session(leader) == []


def test_shell_sigkill_after_grace_for_processes_ignoring_sigterm(
    started_pids: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shell_mod, "KILL_GRACE_S", 0.3)
    # sh and the sleep it starts (the disposition is inherited) both ignore SIGTERM
    argv = ["sh", "-c", "trap '' TERM; sleep 30 & sleep 30"]
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        run({"type": "shell", "argv": argv}, make_ctx(deadline_in=0.3))
    elapsed = time.monotonic() - t0
    assert 0.55 < elapsed < 2.5
    assert alive_in_session(started_pids[0]) == []


def test_shell_background_child_is_killed_after_normal_exit(started_pids: list[int]) -> None:
    result = run({"type": "shell", "argv": ["sh", "-c", "sleep 30 & echo $!"]})
    bg = int(result["stdout"])
    assert result["exit_code"] == 0
    assert not pid_alive(bg)
    assert alive_in_session(started_pids[0]) == []


def test_shell_child_in_another_group_of_the_session_is_killed(started_pids: list[int]) -> None:
    # the child moves to a process group of its own but stays in the task's session
    code = (
        "import os, subprocess; "
        "p = subprocess.Popen(['sleep', '30'], preexec_fn=os.setpgrp); "
        "print(p.pid, os.getpgid(p.pid), os.getsid(p.pid))"
    )
    result = run({"type": "shell", "argv": [sys.executable, "-c", code]})
    bg, bg_pgid, bg_sid = map(int, result["stdout"].split())
    [leader] = started_pids
    assert (bg_pgid, bg_sid) == (bg, leader)
    assert not pid_alive(bg)
    assert alive_in_session(leader) == []


def test_shell_past_deadline_or_cancelled_never_starts(started_pids: list[int]) -> None:
    with pytest.raises(TimeoutError):
        run({"type": "shell", "argv": ["true"]}, make_ctx(deadline_in=-1))
    ctx = make_ctx()
    ctx.cancel_event.set()
    with pytest.raises(TaskCancelledError):
        run({"type": "shell", "argv": ["true"]}, ctx)
    assert started_pids == []


# --------------------------------------------------------------------------- registry


def test_registry_builtins() -> None:
    reg = HandlerRegistry(load_entry_points=False)
    assert reg.names() == BUILTINS
    flags = {n: (reg.get(n).trusted_only, reg.get(n).blocking, reg.get(n).source) for n in BUILTINS}
    assert flags == {
        "noop": (False, False, "builtin"),
        "echo": (False, False, "builtin"),
        "sleep": (False, True, "builtin"),
        "shell": (True, True, "builtin"),
        "python": (True, True, "builtin"),
    }
    assert reg.problems == []


def test_registry_unknown_type_lists_known_types() -> None:
    reg = HandlerRegistry(load_entry_points=False)
    with pytest.raises(UnknownHandlerError) as info:
        reg.run({"type": "nope"}, make_ctx())
    assert str(info.value) == (
        "unknown task type 'nope'; known types: echo, noop, python, shell, sleep"
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, r"^payload\.type: missing$"),
        ({"type": 3}, r"^payload\.type: must be a non-empty string"),
        ({"type": ""}, r"^payload\.type: must be a non-empty string"),
    ],
)
def test_registry_bad_type(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(HandlerError, match=message):
        HandlerRegistry(load_entry_points=False).run(payload, make_ctx())


PLUGIN_MODULE = """
from __future__ import annotations

def handle(payload, ctx):
    return {"got": payload.get("x"), "task": ctx.task_id}

def not_json(payload, ctx):
    return {1, 2}

NOT_CALLABLE = 3
"""


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A sys.path entry holding module ``ri_test_plugin_mod`` (no distribution metadata)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "ri_test_plugin_mod.py").write_text(PLUGIN_MODULE)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    sys.modules.pop("ri_test_plugin_mod", None)


def add_distribution(site: Path, entry_points: str) -> None:
    dist = site / "ri_test_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ri-test-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_points}")
    importlib.invalidate_caches()


def test_registry_config_handler(plugin_path: Path) -> None:
    reg = HandlerRegistry({"mine": "ri_test_plugin_mod:handle"}, load_entry_points=False)
    assert "mine" in reg.names()
    assert "ri_test_plugin_mod" not in sys.modules  # imported lazily
    info = reg.get("mine")
    assert (info.source, info.trusted_only, info.blocking) == ("config", False, True)
    assert reg.run({"type": "mine", "x": 5}, make_ctx(task_id="t9")) == {"got": 5, "task": "t9"}


def test_registry_config_cannot_override_builtin_or_be_malformed() -> None:
    with pytest.raises(ValueError, match="handler 'shell': cannot replace the builtin"):
        HandlerRegistry({"shell": "os:system"}, load_entry_points=False)
    with pytest.raises(ValueError, match=r"handler 'x': must be 'package\.module:function'"):
        HandlerRegistry({"x": "os.system"}, load_entry_points=False)


def test_registry_config_load_failures(plugin_path: Path) -> None:
    reg = HandlerRegistry(
        {
            "missing": "no_such_module_xyz:fn",
            "notcallable": "ri_test_plugin_mod:NOT_CALLABLE",
            "notjson": "ri_test_plugin_mod:not_json",
        },
        load_entry_points=False,
    )
    with pytest.raises(HandlerLoadError, match=r"handler 'missing'.*no_such_module_xyz"):
        reg.get("missing")
    with pytest.raises(UnknownHandlerError):  # remembered, and still an UnknownHandlerError
        reg.get("missing")
    with pytest.raises(HandlerLoadError, match="not callable"):
        reg.get("notcallable")
    assert len(reg.problems) == 2
    with pytest.raises(TypeError, match=r"handler 'notjson' .*non-JSON value of type set"):
        reg.run({"type": "notjson"}, make_ctx())


def test_registry_entry_points(plugin_path: Path) -> None:
    add_distribution(
        plugin_path,
        "mytype = ri_test_plugin_mod:handle\n"
        "echo = ri_test_plugin_mod:handle\n"
        "broken = no_such_module_xyz:fn\n"
        "configured = ri_test_plugin_mod:handle\n",
    )
    reg = HandlerRegistry({"configured": "ri_test_plugin_mod:not_json"})
    assert {"mytype", "broken", "configured"} <= set(reg.names())
    assert "ri_test_plugin_mod" not in sys.modules  # discovered, not yet imported
    info = reg.get("mytype")
    assert info.source == "entry_point:ri-test-plugin"
    assert (info.trusted_only, info.blocking) == (False, True)
    assert reg.run({"type": "mytype", "x": [1]}, make_ctx(task_id="ep")) == {
        "got": [1],
        "task": "ep",
    }
    # an entry point cannot replace a builtin; a config handler wins over an entry point
    assert reg.get("echo").source == "builtin"
    assert reg.get("configured").source == "config"
    assert any("'echo'" in p and "builtin" in p for p in reg.problems)
    assert any("'configured'" in p and "config" in p for p in reg.problems)
    with pytest.raises(HandlerLoadError, match=r"handler 'broken' .*no_such_module_xyz"):
        reg.get("broken")


def test_registry_without_entry_points_ignores_them(plugin_path: Path) -> None:
    add_distribution(plugin_path, "mytype = ri_test_plugin_mod:handle\n")
    assert "mytype" not in HandlerRegistry(load_entry_points=False).names()


def test_registry_get_is_thread_safe(plugin_path: Path) -> None:
    reg = HandlerRegistry({"mine": "ri_test_plugin_mod:handle"}, load_entry_points=False)
    infos: list[Any] = []
    threads = [threading.Thread(target=lambda: infos.append(reg.get("mine"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(i) for i in infos}) == 1
