"""The cached ``scontrol ping`` (rayinfra/actors/slurm_pool.py: SlurmProbe, UnavailableMark) and
the Slurm wrapper's ``on_unavailable`` hook, over a fake controller (no Slurm, no Ray): a command
that finds the controller unreachable ends every probe's trust at once, in this process and,
through the mark file, in the other actors of the head."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rayinfra.actors import slurm_pool
from rayinfra.actors.slurm_pool import SlurmProbe, UnavailableMark
from rayinfra.slurm.cli import AsyncSlurmCli, Command, CommandResult, SlurmCli
from rayinfra.slurm.errors import SlurmCommandError, SlurmUnavailableError

UNREACHABLE = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"


@dataclass
class FakeController:
    """Answers Slurm's commands as a single-node controller that is up or not."""

    up: bool = True
    commands: list[str] = field(default_factory=list)

    def answer(self, command: Command) -> CommandResult:
        name = Path(command.argv[0]).name
        self.commands.append(name)
        if name == "scontrol":
            state = "UP" if self.up else "DOWN"
            return CommandResult(command.argv, 0 if self.up else 1, f"Slurmctld(primary) at vm is {state}\n", "")  # fmt: skip
        if not self.up:
            return CommandResult(command.argv, 1, "", UNREACHABLE)
        if name == "squeue" and "99" in command.argv:
            return CommandResult(command.argv, 1, "", "squeue: error: some other failure\n")
        return CommandResult(command.argv, 0, "", "")

    def pings(self) -> int:
        return self.commands.count("scontrol")

    async def run(self, command: Command, timeout_s: float) -> CommandResult:
        return self.answer(command)


def probe_of(ctld: FakeController, mark: UnavailableMark) -> SlurmProbe:
    """A probe as :meth:`SlurmProbe.of` makes one: its wrapper notes failures in ``mark``."""
    return SlurmProbe(AsyncSlurmCli(runner=ctld.run, on_unavailable=mark.note), mark)


def test_the_hook_hears_every_unavailable_error_and_nothing_else(tmp_path: Path) -> None:
    ctld = FakeController()
    heard: list[SlurmUnavailableError] = []
    cli = SlurmCli(runner=lambda c, t: ctld.answer(c), on_unavailable=heard.append)
    cli.ping()
    cli.query(["1"])
    with pytest.raises(SlurmCommandError):
        cli.query(["99"])  # a command error is not "unavailable"
    assert heard == []
    ctld.up = False
    for call in (lambda: cli.query(["1"]), lambda: cli.submit("#!/bin/sh\ntrue\n"), cli.ping):
        with pytest.raises(SlurmUnavailableError) as e:
            call()
        assert heard[-1] is e.value  # the very error raised
    assert "slurmctld" in str(heard[0]) and len(heard) == 3
    missing = SlurmCli(bin_dir=tmp_path, on_unavailable=heard.append)  # no commands there
    with pytest.raises(SlurmUnavailableError, match="not installed"):
        missing.ping()
    assert "not installed" in str(heard[-1])


async def test_a_failed_command_in_another_actor_ends_the_cached_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slurm_pool, "PING_DOWN_TTL_S", 0.0)  # a "down" answer is not held
    path = tmp_path / "slurm" / "unavailable"
    gateway_ctld, scheduler_ctld = FakeController(), FakeController()
    gateway = probe_of(gateway_ctld, UnavailableMark(path))  # each actor has its own mark
    scheduler = probe_of(scheduler_ctld, UnavailableMark(path))  # object: one file between them
    assert await gateway.unavailable() is None
    assert await gateway.unavailable() is None
    assert gateway_ctld.pings() == 1  # trusted for PING_OK_TTL_S
    # the controller goes away; the scheduler's watcher finds out first (squeue)
    gateway_ctld.up = scheduler_ctld.up = False
    assert await gateway.unavailable() is None  # nothing noticed yet: still the cached answer
    with pytest.raises(SlurmUnavailableError):
        await scheduler.cli.query(["1"])
    assert path.exists()
    reason = await gateway.unavailable()
    assert gateway_ctld.pings() == 2  # asked again at once, well inside PING_OK_TTL_S
    assert reason is not None and "slurmctld is not up" in reason
    # the controller is back: the next question after PING_DOWN_TTL_S finds it up
    gateway_ctld.up = True
    assert await gateway.unavailable() is None
    assert await gateway.unavailable() is None and gateway_ctld.pings() == 3  # trusted again


async def test_the_dispatcher_asks_again_once_an_answer_is_older_than_its_max_age(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(slurm_pool, "PING_DOWN_TTL_S", 0.0)
    ctld = FakeController()
    probe = probe_of(ctld, UnavailableMark(None))
    assert await probe.unavailable() is None
    assert await probe.unavailable(max_age_s=3600) is None and ctld.pings() == 1
    ctld.up = False  # nothing noticed: only a fresh ping tells
    assert await probe.unavailable() is None
    assert await probe.unavailable(max_age_s=0) is not None and ctld.pings() == 2
    # a command of this process that fails ends the answer as well (no file involved)
    ctld.up = True
    assert await probe.unavailable() is None and ctld.pings() == 3
    ctld.up = False
    with pytest.raises(SlurmUnavailableError):
        await probe.cli.submit("#!/bin/sh\ntrue\n")
    assert await probe.unavailable() is not None and ctld.pings() == 4
