"""``rayinfra.cli.common.run``: a command ends without the interpreter's finalization, yet with
its exit code, every line it printed, and every exit handler run (a fresh interpreter each:
what is tested is how the process ends)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import atexit, logging, os, sys, threading, time
from pathlib import Path
import typer
from rayinfra.cli.common import run

out = Path(os.environ["OUT"])
atexit.register(lambda: (out / "early-handler").write_text("ran"))  # runs after run()'s own
handler = logging.FileHandler(out / "log")
logging.getLogger("t").addHandler(handler)
app = typer.Typer(add_completion=False)

class Finalized:  # tells whether the interpreter's finalization ran (module teardown)
    def __del__(self):
        (out / "finalized").write_text("yes")

keep = Finalized()

@app.command()
def main(code: int, lines: int = 0, fail: bool = False, worker: float = 0.0) -> None:
    for i in range(lines):
        print(f"line {i}")
    logging.getLogger("t").warning("logged")
    atexit.register(lambda: (out / "late-handler").write_text("ran"))
    if worker:  # a thread Python waits for before the exit handlers
        threading.Thread(target=time.sleep, args=(worker,)).start()
    if fail:
        raise RuntimeError("boom")
    raise typer.Exit(code)

run(app)
"""


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        env={**os.environ, "OUT": str(tmp_path)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("code", [0, 3])
def test_the_exit_code_every_line_and_every_exit_handler(tmp_path: Path, code: int) -> None:
    done = cli(tmp_path, str(code), "--lines", "50000")
    assert done.returncode == code, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 50000 and lines[-1] == "line 49999"
    assert (tmp_path / "early-handler").read_text() == "ran"
    assert (tmp_path / "late-handler").read_text() == "ran"
    assert (tmp_path / "log").read_text() == "logged\n"
    assert not (tmp_path / "finalized").exists()  # what run() skips, and why it is fast


def test_a_thread_python_waits_for_is_waited_for(tmp_path: Path) -> None:
    done = cli(tmp_path, "4", "--worker", "0.3")
    assert done.returncode == 4, done.stderr
    assert (tmp_path / "early-handler").read_text() == "ran"


def test_an_uncaught_exception_ends_as_python_ends_it(tmp_path: Path) -> None:
    done = cli(tmp_path, "0", "--fail")
    assert done.returncode == 1
    assert "RuntimeError: boom" in done.stderr
    assert (tmp_path / "early-handler").read_text() == "ran"
    assert (tmp_path / "finalized").read_text() == "yes"


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    done = cli(tmp_path, "not-a-number")
    assert done.returncode == 2 and "not-a-number" in done.stderr
