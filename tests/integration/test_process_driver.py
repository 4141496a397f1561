"""The process driver with real processes (no Ray): supervised services that outlive their
starter, logs, stop/kill, adoption, pid-reuse protection, usage, exec, and a real redis-server."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from rayinfra.services import supervisor as sv
from rayinfra.services.drivers.base import DriverError, Instance, cpu_percent
from rayinfra.services.drivers.process import ProcessDriver, format_instance_id
from rayinfra.services.spec import LABEL_CLUSTER, LABEL_SPEC, ServiceSpec, parse_spec
from tests.conftest import free_port
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

PY = sys.executable
LOG_LINE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (stdout|stderr) .*$")


def script(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def make_spec(name: str, argv: list[str], **fields: Any) -> ServiceSpec:
    return parse_spec(name, {"driver": "process", "argv": argv, **fields})


def messages(driver: ProcessDriver, inst: Instance) -> list[str]:
    return [ln.message for ln in driver.logs(inst.id, follow=False, tail=None, since=None)]


def wait_for_line(driver: ProcessDriver, inst: Instance, text: str) -> None:
    wait_until(f"log line {text!r}", lambda: text in messages(driver, inst))


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_everything_under(root: Path) -> None:
    """Kill by pid every supervisor whose --dir is under ``root`` and every process in the
    group of a child it recorded or runs (cleanup that does not trust the driver under test)."""
    groups: set[int] = set()
    for path in root.glob(f"*/*/{sv.RECORD_NAME}"):
        rec = sv.read_record(path)
        if rec is not None and rec.pid is not None:
            groups.add(rec.pid)
    supervisors = []
    for proc in psutil.process_iter(["cmdline"]):
        if str(root) in " ".join(proc.info["cmdline"] or []):
            supervisors.append(proc)
            with contextlib.suppress(psutil.Error):
                groups.update(c.pid for c in proc.children())  # each leads its own group
    for proc in supervisors:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) in groups:
                proc.kill()


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    r = tmp_path / "services; $(echo x) 'q'"  # hostile: nothing may pass through a shell
    yield r
    kill_everything_under(r)


@pytest.fixture
def driver(root: Path) -> ProcessDriver:
    return ProcessDriver(root)


@pytest.fixture
def labels() -> dict[str, str]:
    return {LABEL_CLUSTER: f"t-{uuid.uuid4().hex[:8]}", "owner": "test"}


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Helper processes a test starts itself; killed (by pid) at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


TICKER = script(
    """
    import sys, time
    print("hello out", flush=True)
    print("hello err", file=sys.stderr, flush=True)
    i = 0
    while True:
        print(f"tick {i}", flush=True)
        i += 1
        time.sleep(0.05)
    """
)


def test_start_runs_detached_with_timestamped_logs_of_both_streams(
    driver: ProcessDriver, labels: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAYINFRA_TEST_SECRET", "must-not-leak")
    spec = make_spec(
        "envdump",
        script(
            """
            import json, os, sys, time
            print(json.dumps(dict(os.environ)), flush=True)
            sys.stdout.buffer.write(b"not utf8 \\xff\\xfe!\\n")
            sys.stdout.flush()
            print("to stderr", file=sys.stderr, flush=True)
            sys.stdout.write("partial, no newline")
            sys.stdout.flush()
            time.sleep(60)
            """
        ),
        env={"FOO": "bar"},
    )
    before = time.time()
    inst = driver.start(spec, labels)
    assert inst.state == "running" and inst.pid is not None and inst.driver == "process"
    assert inst.id == format_instance_id(inst.pid, sv.proc_identity(inst.pid)[1])  # type: ignore[index]
    assert inst.labels[LABEL_CLUSTER] == labels[LABEL_CLUSTER]
    assert inst.labels["owner"] == "test" and inst.labels[LABEL_SPEC] == spec.fingerprint()
    assert inst.started_at is not None and before <= inst.started_at <= time.time()

    # its own session and process group, and not our child (the supervisor is its parent)
    assert os.getsid(inst.pid) == inst.pid and os.getpgid(inst.pid) == inst.pid
    parent = psutil.Process(inst.pid).parent()
    assert parent is not None and parent.pid != os.getpid()
    assert parent.ppid() != os.getpid() and os.getsid(parent.pid) != os.getsid(0)

    wait_until("three log lines", lambda: len(messages(driver, inst)) >= 3)
    lines = list(driver.logs(inst.id, follow=False, tail=None, since=None))
    env = json.loads(lines[0].message)
    assert env["FOO"] == "bar" and env["PATH"]
    assert "RAYINFRA_TEST_SECRET" not in env  # only the allow-list is inherited
    by_stream = {(ln.stream, ln.message) for ln in lines}
    assert ("stdout", "not utf8 \ufffd\ufffd!") in by_stream
    assert ("stderr", "to stderr") in by_stream
    assert all(before <= ln.timestamp <= time.time() for ln in lines)
    assert [ln.timestamp for ln in lines] == sorted(ln.timestamp for ln in lines)
    assert "partial, no newline" not in [ln.message for ln in lines]  # still being written

    raw = (driver.root / labels[LABEL_CLUSTER] / "envdump" / sv.LOG_NAME).read_text()
    assert all(LOG_LINE_RE.match(x) for x in raw.splitlines()), raw

    driver.stop(inst.id, timeout_s=5)
    # at exit the partial last line is written
    assert "partial, no newline" in messages(driver, inst)


HELPER = textwrap.dedent(
    """
    import json, subprocess, sys, time
    from pathlib import Path
    from rayinfra.services.drivers.process import ProcessDriver
    from rayinfra.services.spec import parse_spec
    root, name, table, labels = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
    inst = ProcessDriver(Path(root)).start(parse_spec(name, table), labels)
    sibling = subprocess.Popen(["sleep", "60"])  # in this helper's process group
    print(json.dumps({"id": inst.id, "pid": inst.pid, "sibling": sibling.pid}), flush=True)
    time.sleep(60)
    """
)


def test_service_survives_sigkill_of_the_starters_process_group(
    driver: ProcessDriver,
    root: Path,
    labels: dict[str, str],
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    table = {"driver": "process", "argv": TICKER}
    helper = subprocess.Popen(
        [PY, "-c", HELPER, str(root), "ticker", json.dumps(table), json.dumps(labels)],
        stdout=subprocess.PIPE,
        start_new_session=True,  # the helper leads its own group, like a Ray worker
    )
    spawned.append(helper)
    assert helper.stdout is not None
    started = json.loads(helper.stdout.readline())
    os.killpg(helper.pid, signal.SIGKILL)  # what Ray does to a dying worker's group
    helper.wait()
    wait_until("the group kill to reach the sibling", lambda: not alive(started["sibling"]))

    inst = driver.inspect(started["id"])
    assert inst.state == "running" and inst.pid == started["pid"] and alive(started["pid"])
    rec = sv.read_record(root / labels[LABEL_CLUSTER] / "ticker" / sv.RECORD_NAME)
    assert rec is not None and sv.is_alive(rec.supervisor_pid, rec.supervisor_start_ticks)
    # the supervisor still copies output after its starter died
    n = len(messages(driver, inst))
    wait_until("new log lines after the kill", lambda: len(messages(driver, inst)) > n + 3)

    # a new driver (a restarted actor) adopts it
    owned = ProcessDriver(root).list_owned(labels)
    assert [(i.id, i.state) for i in owned] == [(started["id"], "running")]
    again = ProcessDriver(root).start(parse_spec("ticker", table), labels)
    assert again.id == started["id"] and again.pid == started["pid"]


def test_adopt_same_spec_restart_on_changed_spec(
    driver: ProcessDriver, root: Path, labels: dict[str, str]
) -> None:
    spec = make_spec("adopt", TICKER, env={"V": "1"})
    first = driver.start(spec, labels)
    wait_for_line(driver, first, "tick 1")
    assert driver.start(spec, labels) == first
    assert driver.list_owned(labels) == [first]

    changed = make_spec("adopt", TICKER, env={"V": "2"})
    second = driver.start(changed, labels)
    assert second.id != first.id and second.state == "running"
    assert first.pid is not None and not alive(first.pid)
    assert driver.inspect(first.id).state == "missing"  # a stale id is not the new instance
    assert [i.id for i in driver.list_owned(labels)] == [second.id]
    assert second.labels[LABEL_SPEC] == changed.fingerprint() != spec.fingerprint()
    old_log = (root / labels[LABEL_CLUSTER] / "adopt" / (sv.LOG_NAME + ".1")).read_text()
    assert "tick 1" in old_log  # the previous incarnation's log is kept once

    # another cluster is another instance
    other = {**labels, LABEL_CLUSTER: labels[LABEL_CLUSTER] + "-b"}
    third = driver.start(changed, other)
    assert third.id not in (first.id, second.id)
    assert [i.id for i in driver.list_owned({LABEL_CLUSTER: other[LABEL_CLUSTER]})] == [third.id]
    assert {i.id for i in driver.list_owned({"owner": "test"})} == {second.id, third.id}
    assert driver.list_owned({**labels, "owner": "someone-else"}) == []


def test_concurrent_starts_make_one_instance(
    driver: ProcessDriver, root: Path, labels: dict[str, str]
) -> None:
    spec = make_spec("racy", TICKER)
    with ThreadPoolExecutor(4) as pool:
        ids = set(pool.map(lambda _: driver.start(spec, labels).id, range(4)))
    assert len(ids) == 1
    supervisors = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(root) in " ".join(p.info["cmdline"] or [])
    ]
    assert len(supervisors) == 1


def test_an_exited_instance_is_started_again(driver: ProcessDriver, labels: dict[str, str]) -> None:
    spec = make_spec("oneshot", script("print('done')"))
    first = driver.start(spec, labels)
    wait_until("exit", lambda: driver.inspect(first.id).state == "exited")
    second = driver.start(spec, labels)
    assert second.id != first.id


TRAPS_TERM = """
import pathlib, signal, sys, time
def bye(signum, frame):
    pathlib.Path(sys.argv[1]).write_text(f"got {signum}")
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def test_stop_sends_sigterm_first(
    driver: ProcessDriver, labels: dict[str, str], tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    inst = driver.start(make_spec("graceful", [PY, "-c", TRAPS_TERM, str(marker)]), labels)
    wait_for_line(driver, inst, "ready")
    t0 = time.monotonic()
    driver.stop(inst.id, timeout_s=10)
    assert time.monotonic() - t0 < 3
    assert marker.read_text() == f"got {int(signal.SIGTERM)}"
    after = driver.inspect(inst.id)
    assert after.state == "exited" and after.exit_code == 0
    driver.stop(inst.id, timeout_s=1)  # already gone: fine
    driver.stop("123-456", timeout_s=1)
    driver.stop("not-an-id", timeout_s=1)


def test_stop_takes_descendants_that_ignore_sigterm_with_the_group(
    driver: ProcessDriver, labels: dict[str, str]
) -> None:
    """Like a container: when the main process exits, what is left of its group goes too."""
    leader = script(
        """
        import signal, subprocess, sys, time
        child = subprocess.Popen(
            [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ignoring', flush=True); time.sleep(60)"]
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print(f"child {child.pid}", flush=True)
        while True:
            time.sleep(0.05)
        """
    )
    inst = driver.start(make_spec("leader", leader), labels)
    wait_for_line(driver, inst, "ignoring")
    child = int(next(m for m in messages(driver, inst) if m.startswith("child "))[6:])
    t0 = time.monotonic()
    driver.stop(inst.id, timeout_s=10)
    assert time.monotonic() - t0 < 3
    assert driver.inspect(inst.id).exit_code == 0
    wait_until("the SIGTERM-ignoring child to be killed", lambda: not alive(child), 2.0)


def test_supervisor_forwards_sigterm(
    driver: ProcessDriver, root: Path, labels: dict[str, str], tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    inst = driver.start(make_spec("fwd", [PY, "-c", TRAPS_TERM, str(marker)]), labels)
    wait_for_line(driver, inst, "ready")
    rec = sv.read_record(root / labels[LABEL_CLUSTER] / "fwd" / sv.RECORD_NAME)
    assert rec is not None
    os.kill(rec.supervisor_pid, signal.SIGTERM)
    wait_until("a clean exit", lambda: driver.inspect(inst.id).exit_code == 0)
    assert marker.read_text() == f"got {int(signal.SIGTERM)}"
    wait_until("the supervisor to exit", lambda: not alive(rec.supervisor_pid))


def test_a_service_whose_supervisor_died_is_still_managed(
    driver: ProcessDriver, root: Path, labels: dict[str, str]
) -> None:
    """SIGKILL of the supervisor leaves a quiet service running (a chatty one gets EPIPE):
    it is adopted, and stop records its end since nobody else will."""
    spec = make_spec("quiet", ["sleep", "60"])
    inst = driver.start(spec, labels)
    rec = sv.read_record(root / labels[LABEL_CLUSTER] / "quiet" / sv.RECORD_NAME)
    assert rec is not None
    os.kill(rec.supervisor_pid, signal.SIGKILL)
    wait_until("the supervisor to die", lambda: not alive(rec.supervisor_pid))
    assert driver.inspect(inst.id).state == "running"
    assert driver.start(spec, labels).id == inst.id
    driver.stop(inst.id, timeout_s=5)
    after = driver.inspect(inst.id)
    assert (after.state, after.exit_code) == ("exited", None)
    assert driver.start(spec, labels).id != inst.id


def test_stop_kills_the_group_after_the_timeout(
    driver: ProcessDriver, labels: dict[str, str]
) -> None:
    stubborn = script(
        """
        import signal, subprocess, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen(["sleep", "60"])  # inherits the ignored SIGTERM
        print(f"ready {child.pid}", flush=True)
        while True:
            time.sleep(0.05)
        """
    )
    inst = driver.start(make_spec("stubborn", stubborn), labels)
    wait_until("ready line", lambda: any(m.startswith("ready ") for m in messages(driver, inst)))
    grandchild = int(next(m for m in messages(driver, inst) if m.startswith("ready "))[6:])
    assert alive(grandchild)
    t0 = time.monotonic()
    driver.stop(inst.id, timeout_s=1.0)
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 1.0 + 3.0
    assert inst.pid is not None and not alive(inst.pid)
    wait_until("the grandchild to die with its group", lambda: not alive(grandchild), 2.0)
    after = driver.inspect(inst.id)
    assert after.state == "exited" and after.exit_code == 128 + int(signal.SIGKILL)


def test_missing_executable_is_an_error_naming_it(
    driver: ProcessDriver, labels: dict[str, str], tmp_path: Path
) -> None:
    for argv0 in ("/nonexistent/bin/rayinfra-nope", "rayinfra-no-such-binary-on-path"):
        with pytest.raises(DriverError) as err:
            driver.start(make_spec("nope", [argv0, "--flag"]), labels)
        assert argv0 in str(err.value) and err.value.reason == "exec_failed"
    not_executable = tmp_path / "data.txt"
    not_executable.write_text("just text")
    with pytest.raises(DriverError, match=r"data\.txt"):
        driver.start(make_spec("nope", [str(not_executable)]), labels)
    with pytest.raises(DriverError, match="no-such-dir"):
        driver.start(make_spec("nope", ["true"], cwd=str(tmp_path / "no-such-dir")), labels)
    assert driver.list_owned(labels) == []


def test_exit_code_is_recorded(driver: ProcessDriver, labels: dict[str, str]) -> None:
    inst = driver.start(make_spec("exits", script("import sys; print('bye'); sys.exit(7)")), labels)
    done = wait_until(
        "exit code", lambda: (i := driver.inspect(inst.id)).exit_code is not None and i
    )
    assert done.state == "exited" and done.exit_code == 7 and done.id == inst.id
    assert [(i.id, i.state, i.exit_code) for i in driver.list_owned(labels)] == [
        (inst.id, "exited", 7)
    ]
    assert messages(driver, inst) == ["bye"]
    with pytest.raises(DriverError) as err:
        driver.usage(inst.id)
    assert err.value.reason == "not_running"


def test_wait_exit_returns_when_the_child_ends_or_the_time_runs_out(
    driver: ProcessDriver, labels: dict[str, str]
) -> None:
    inst = driver.start(make_spec("job", script("import time, sys; time.sleep(2); sys.exit(5)")), labels)  # fmt: skip
    t0 = time.monotonic()
    still = driver.wait_exit(inst.id, 0.2)
    assert still.state == "running" and time.monotonic() - t0 >= 0.15, still  # waited, not ended
    done = driver.wait_exit(inst.id, 30)  # ended and its code recorded
    assert (done.state, done.exit_code) == ("exited", 5)
    assert time.monotonic() - t0 < 10
    driver.remove(inst.id)
    assert driver.wait_exit(inst.id, 30).state == "missing"


def test_a_reused_pid_is_missing_and_never_signalled(
    driver: ProcessDriver,
    root: Path,
    labels: dict[str, str],
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    """A record whose pid (and process group) now belong to another live process."""
    impostor = subprocess.Popen(["sleep", "60"], start_new_session=True)
    spawned.append(impostor)
    ident = wait_until("the impostor", lambda: sv.proc_identity(impostor.pid))
    d = root / labels[LABEL_CLUSTER] / "stale"
    d.mkdir(parents=True)
    stale = sv.InstanceRecord(
        launch_id="old",
        service="stale",
        argv=["old-server"],
        cwd="/",
        supervisor_pid=impostor.pid,
        supervisor_start_ticks=ident[1] - 7,
        state="running",
        labels=dict(labels),
        pid=impostor.pid,
        start_ticks=ident[1] - 5,  # the process that had this pid started earlier
        started_at=time.time() - 100,
    )
    sv.write_record(d / sv.RECORD_NAME, stale)
    stale_id = format_instance_id(impostor.pid, ident[1] - 5)
    assert driver.inspect(stale_id).state == "missing"
    assert [(i.id, i.state) for i in driver.list_owned(labels)] == [(stale_id, "missing")]
    with pytest.raises(DriverError):
        driver.usage(stale_id)
    driver.stop(stale_id, timeout_s=0.1)
    # start replaces the lost instance instead of adopting (or stopping) the impostor
    inst = driver.start(make_spec("stale", TICKER), labels)
    assert inst.id != stale_id and inst.state == "running"
    driver.remove(inst.id)
    driver.remove(stale_id)
    time.sleep(0.1)
    assert impostor.poll() is None  # never signalled
    # the impostor's own id is not an instance either
    assert driver.inspect(format_instance_id(impostor.pid, ident[1])).state == "missing"


def test_logs_tail_since_and_follow(driver: ProcessDriver, labels: dict[str, str]) -> None:
    spec = make_spec(
        "chatty",
        script(
            """
            import sys, time
            for i in range(10):
                print(f"line {i}", file=sys.stderr if i % 2 else sys.stdout, flush=True)
                time.sleep(0.02)
            time.sleep(0.8)
            print("late", flush=True)
            """
        ),
    )
    inst = driver.start(spec, labels)
    t0 = time.monotonic()
    followed = list(driver.logs(inst.id, follow=True, tail=None, since=None))
    assert time.monotonic() - t0 < 5  # follow ends once the process has exited
    expected = [f"line {i}" for i in range(10)] + ["late"]
    assert [ln.message for ln in followed] == expected
    assert [ln.stream for ln in followed[:4]] == ["stdout", "stderr", "stdout", "stderr"]
    assert driver.inspect(inst.id).state == "exited"

    def get(**kw: Any) -> list[str]:
        return [ln.message for ln in driver.logs(inst.id, follow=False, **kw)]

    assert get(tail=None, since=None) == expected
    assert get(tail=3, since=None) == ["line 8", "line 9", "late"]
    assert get(tail=0, since=None) == []
    assert get(tail=100, since=None) == expected
    since = followed[5].timestamp
    assert get(tail=None, since=since) == expected[5:]
    assert get(tail=2, since=since) == ["line 9", "late"]
    assert get(tail=None, since=followed[-1].timestamp + 1) == []
    # follow of a finished instance returns what there is and ends
    assert [ln.message for ln in driver.logs(inst.id, follow=True, tail=1, since=None)] == ["late"]
    with pytest.raises(DriverError):
        driver.logs("1-2", follow=False, tail=None, since=None)


def test_follow_can_be_closed_early(driver: ProcessDriver, labels: dict[str, str]) -> None:
    inst = driver.start(make_spec("endless", TICKER), labels)
    it = driver.logs(inst.id, follow=True, tail=0, since=None)
    got = [next(it).message for _ in range(3)]
    assert all(m.startswith("tick ") or m.startswith("hello") for m in got)
    it.close()  # type: ignore[attr-defined]
    driver.stop(inst.id, timeout_s=2)


def test_usage_counts_busy_descendants(driver: ProcessDriver, labels: dict[str, str]) -> None:
    spec = make_spec(
        "busy",
        script(
            """
            import subprocess, sys, time
            subprocess.Popen([sys.executable, "-c", "while True: pass"])
            print("spinning", flush=True)
            time.sleep(60)
            """
        ),
    )
    inst = driver.start(spec, labels)
    wait_for_line(driver, inst, "spinning")
    a = driver.usage(inst.id)
    time.sleep(1.0)
    b = driver.usage(inst.id)
    assert cpu_percent(a, b) > 20, (a, b)  # the busy one is a grandchild: the tree counts
    assert b.memory_bytes > 5 * 2**20  # two Python interpreters
    # no per-process byte counters exist: its namespace's, the host's, reported as such
    assert b.network_scope == "host" and b.rx_bytes >= a.rx_bytes and b.tx_bytes >= a.tx_bytes


def test_exec_runs_on_the_host_with_the_service_env_and_cwd(
    driver: ProcessDriver, labels: dict[str, str], tmp_path: Path
) -> None:
    workdir = tmp_path / "work dir; echo x"
    workdir.mkdir()
    inst = driver.start(make_spec("execd", TICKER, env={"FOO": "bar"}, cwd=str(workdir)), labels)
    code, out = driver.exec(
        inst.id,
        script(
            """
            import os, sys
            print(os.environ["FOO"], os.getcwd())
            print("to stderr", file=sys.stderr)
            sys.exit(4)
            """
        ),
        timeout_s=10,
    )
    assert code == 4
    assert f"bar {workdir}" in out and "to stderr" in out
    with pytest.raises(DriverError, match="rayinfra-no-such-tool"):
        driver.exec(inst.id, ["rayinfra-no-such-tool"], timeout_s=5)
    t0 = time.monotonic()
    with pytest.raises(DriverError) as err:
        driver.exec(inst.id, ["sleep", "30"], timeout_s=0.5)
    assert err.value.reason == "timeout" and time.monotonic() - t0 < 3
    with pytest.raises(DriverError):
        driver.exec("1-2", ["true"], timeout_s=5)


def test_remove_keeps_only_the_rotated_log(
    driver: ProcessDriver, root: Path, labels: dict[str, str]
) -> None:
    inst = driver.start(make_spec("gone", TICKER), labels)
    wait_for_line(driver, inst, "tick 2")
    driver.remove(inst.id)
    assert inst.pid is not None and not alive(inst.pid)
    assert driver.inspect(inst.id).state == "missing"
    assert driver.list_owned(labels) == []
    d = root / labels[LABEL_CLUSTER] / "gone"
    assert sorted(p.name for p in d.iterdir()) == [".lock", sv.LOG_NAME + ".1"]
    assert "tick 2" in (d / (sv.LOG_NAME + ".1")).read_text()
    driver.remove(inst.id)  # again: nothing to do


def test_check_and_pull(driver: ProcessDriver) -> None:
    assert driver.check() is None
    assert list(driver.pull("anything:latest")) == []


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64) == b"+PONG\r\n"
    except OSError:
        return False


def test_redis_server_as_a_process_service(driver: ProcessDriver, labels: dict[str, str]) -> None:
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no"]  # fmt: skip
    inst = driver.start(make_spec("redis", argv, ports=[port]), labels)
    assert inst.state == "running" and tuple(inst.ports) == (port,)
    wait_until("redis to answer PING", lambda: redis_ping(port))
    assert any("Ready to accept connections" in m for m in messages(driver, inst))
    assert driver.usage(inst.id).memory_bytes > 2**20
    driver.stop(inst.id, timeout_s=10)
    after = driver.inspect(inst.id)
    assert after.state == "exited" and after.exit_code == 0  # redis shuts down on SIGTERM
    assert not redis_ping(port)
