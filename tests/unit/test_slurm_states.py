"""Slurm output parsing, state normalisation, the CLI wrapper's reading of command results (with a
fake runner) and the watcher's polling and backoff (with a fake query). Text samples are what
Slurm 22.05 printed on this machine."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import pytest

from rayinfra.errors import BackendUnavailableError
from rayinfra.slurm.cli import AsyncSlurmCli, Command, CommandResult, SlurmCli
from rayinfra.slurm.errors import (
    SlurmCommandError,
    SlurmParseError,
    SlurmTimeoutError,
    SlurmUnavailableError,
)
from rayinfra.slurm.states import (
    SQUEUE_SEPARATOR,
    JobState,
    SlurmState,
    expand_filename_pattern,
    legacy_status,
    merge_known,
    normalize_state,
    parse_duration,
    parse_exit_code,
    parse_sacct,
    parse_sbatch_output,
    parse_scontrol_job,
    parse_slurm_time,
    parse_squeue_fields,
    parse_squeue_line,
    parse_wait_status,
)
from rayinfra.slurm.watcher import JobWatcher

US = SQUEUE_SEPARATOR


def _ts(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


# ------------------------------------------------------------------------------------------
# normalisation


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("PENDING", SlurmState.PENDING),
        ("PD", SlurmState.PENDING),
        ("CONFIGURING", SlurmState.PENDING),
        ("REQUEUE_HOLD", SlurmState.PENDING),
        ("RUNNING", SlurmState.RUNNING),
        ("R", SlurmState.RUNNING),
        ("COMPLETING", SlurmState.RUNNING),
        ("CG", SlurmState.RUNNING),
        ("SUSPENDED", SlurmState.SUSPENDED),
        ("COMPLETED", SlurmState.COMPLETED),
        ("CD", SlurmState.COMPLETED),
        ("FAILED", SlurmState.FAILED),
        ("BOOT_FAIL", SlurmState.FAILED),
        ("CANCELLED", SlurmState.CANCELLED),
        ("CANCELLED by 0", SlurmState.CANCELLED),
        ("CA", SlurmState.CANCELLED),
        ("TIMEOUT", SlurmState.TIMEOUT),
        ("DEADLINE", SlurmState.TIMEOUT),
        ("PREEMPTED", SlurmState.PREEMPTED),
        ("NODE_FAIL", SlurmState.NODE_FAIL),
        ("OUT_OF_MEMORY", SlurmState.OOM),
        ("OOM", SlurmState.OOM),
        ("FAILED+", SlurmState.FAILED),
        (" running ", SlurmState.RUNNING),
        ("SOMETHING_NEW", SlurmState.UNKNOWN),
        ("", SlurmState.UNKNOWN),
    ],
)
def test_normalize_state(raw: str, state: SlurmState) -> None:
    assert normalize_state(raw) is state


def test_terminal_states() -> None:
    ended = {s for s in SlurmState if s.terminal}
    assert ended == {
        SlurmState.COMPLETED,
        SlurmState.FAILED,
        SlurmState.CANCELLED,
        SlurmState.TIMEOUT,
        SlurmState.PREEMPTED,
        SlurmState.NODE_FAIL,
        SlurmState.OOM,
    }


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        # the original bridge's normalizeState table (seed-system §4.7)
        ("RUNNING", "running"),
        ("r", "running"),
        ("CG", "running"),
        ("completing", "running"),
        ("PENDING", "pending"),
        ("pd", "pending"),
        ("configuring", "pending"),
        ("cf", "pending"),
        ("SUSPENDED", "pending"),
        ("s", "pending"),
        ("COMPLETED", "completed"),
        ("cd", "completed"),
        ("done", "completed"),
        ("success", "completed"),
        ("ok", "completed"),
        ("PREEMPTED", "failed"),
        ("CANCELLED", "failed"),
        ("cancelled by 0", "failed"),
        ("FAILED", "failed"),
        ("TIMEOUT", "failed"),
        ("time_limit", "failed"),
        ("NODE_FAIL", "failed"),
        ("oom", "failed"),
        ("dead", "failed"),
        # what it did not know passes through lower-cased
        ("OUT_OF_MEMORY", "out_of_memory"),
        ("BOOT_FAIL", "boot_fail"),
        ("Weird", "weird"),
    ],
)
def test_legacy_status_reproduces_the_original(raw: str, status: str) -> None:
    assert legacy_status(raw) == status


# ------------------------------------------------------------------------------------------
# scalar fields


def test_exit_codes_and_wait_status_agree() -> None:
    assert parse_exit_code("0:0") == (0, None)
    assert parse_exit_code("3:0") == (3, None)
    assert parse_exit_code("0:15") == (0, 15)
    assert parse_wait_status("768") == parse_exit_code("3:0")
    assert parse_wait_status("15") == parse_exit_code("0:15")
    assert parse_wait_status("9") == (0, 9)
    assert parse_wait_status("0") == (0, None)
    assert parse_exit_code("N/A") == (None, None)
    with pytest.raises(SlurmParseError, match="exit code"):
        parse_exit_code("x:y")
    with pytest.raises(SlurmParseError, match="wait status"):
        parse_wait_status("abc")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0:00", 0),
        ("1:19", 79),
        ("00:00:01", 1),
        ("2:03:04", 7384),
        ("1-02:03:04", 93784),
        ("NONE", None),
        ("", None),
    ],
)
def test_parse_duration(text: str, seconds: int | None) -> None:
    assert parse_duration(text) == seconds


def test_parse_slurm_time() -> None:
    assert parse_slurm_time("2026-12-04T19:02:05") == _ts("2026-12-04T19:02:05")
    for nothing in ("Unknown", "N/A", "NONE", "None", "", None):
        assert parse_slurm_time(nothing) is None
    with pytest.raises(SlurmParseError, match="Slurm time"):
        parse_slurm_time("yesterday")
    with pytest.raises(SlurmParseError, match="duration"):
        parse_duration("soon")


def test_expand_filename_pattern() -> None:
    kw = {"job_id": "42", "name": "train", "user": "ana", "node_list": "gpu01"}
    assert expand_filename_pattern("/l/%x-%j.out", **kw) == "/l/train-42.out"
    assert expand_filename_pattern("/l/%u/%N/%5j.%%", **kw) == "/l/ana/gpu01/00042.%"
    assert expand_filename_pattern("/l/%A_%a.out", **{**kw, "job_id": "7_3"}) == "/l/7_3.out"
    # a multi-node %N and step/task ids are not known here: left as they are
    assert expand_filename_pattern("%N-%t", **{**kw, "node_list": "gpu[01-02]"}) == "%N-%t"
    assert expand_filename_pattern("/no/pattern", **kw) == "/no/pattern"


# ------------------------------------------------------------------------------------------
# command outputs


def test_parse_sbatch_output() -> None:
    assert parse_sbatch_output("Submitted batch job 123\n") == "123"
    assert parse_sbatch_output("sbatch: warning: x\nSubmitted batch job 9 on cluster c\n") == "9"
    assert parse_sbatch_output("77;cluster\n") == "77"
    with pytest.raises(SlurmParseError, match="no job id"):
        parse_sbatch_output("sbatch: error: Batch job submission failed\n")


SQUEUE = "".join(
    US.join(fields) + US + "\n"
    for fields in (
        [
            "34",
            "PENDING",
            "0",
            "Resources",
            "/dev/null",
            "/dev/null",
            "",
            "N/A",
            "N/A",
            "0:00",
            "wrap",
            "root",
        ],
        [
            "33",
            "RUNNING",
            "0",
            "None",
            "/tmp/o-%j.out",
            "/tmp/e-%x.err",
            "vm",
            "2026-12-04T19:02:05",
            "NONE",
            "0:01",
            "x",
            "root",
        ],
        [
            "11",
            "CANCELLED",
            "15",
            "None",
            "/tmp/ri x|y 'q' $(boom)/a %j.out",
            "/tmp/ri x|y 'q' $(boom)/a %j.out",
            "vm",
            "2026-12-04T18:43:35",
            "2026-12-04T18:43:37",
            "0:02",
            "na|me x",
            "root",
        ],
        [
            "8",
            "FAILED",
            "768",
            "NonZeroExitCode",
            "/dev/null",
            "/dev/null",
            "vm",
            "2026-12-04T18:42:59",
            "2026-12-04T18:42:59",
            "0:00",
            "wrap",
            "root",
        ],
    )
)


def test_parse_squeue_fields() -> None:
    jobs = parse_squeue_fields(SQUEUE)
    assert list(jobs) == ["34", "33", "11", "8"]
    pending, running, cancelled, failed = jobs.values()
    assert pending == JobState(
        "34",
        SlurmState.PENDING,
        "PENDING",
        reason="Resources",
        stdout="/dev/null",
        stderr="/dev/null",
        run_time_s=0,
        name="wrap",
    )
    assert running.state is SlurmState.RUNNING and running.exit_code is None
    assert running.stdout == "/tmp/o-33.out" and running.stderr == "/tmp/e-x.err"
    assert running.start_time == _ts("2026-12-04T19:02:05") and running.end_time is None
    assert (cancelled.state, cancelled.exit_code, cancelled.signal) == (SlurmState.CANCELLED, 0, 15)
    assert cancelled.stdout == "/tmp/ri x|y 'q' $(boom)/a 11.out"
    assert cancelled.name == "na|me x" and cancelled.end_time == _ts("2026-12-04T18:43:37")
    assert (failed.state, failed.exit_code, failed.signal) == (SlurmState.FAILED, 3, None)
    assert failed.legacy_status == "failed" and failed.source == "squeue"


def test_parse_squeue_fields_rejects_a_garbled_line() -> None:
    with pytest.raises(SlurmParseError, match="fields"):
        parse_squeue_fields("12" + US + "RUNNING" + US + "\n")
    assert parse_squeue_fields("\n") == {}


def test_parse_squeue_line() -> None:
    pending = parse_squeue_line("34|PENDING|0:00|(Resources)")
    assert (pending.state, pending.reason, pending.node_list) == (
        SlurmState.PENDING,
        "Resources",
        None,
    )
    running = parse_squeue_line("33|RUNNING|1:19|vm")
    assert (running.state, running.node_list, running.run_time_s) == (SlurmState.RUNNING, "vm", 79)
    with pytest.raises(SlurmParseError):
        parse_squeue_line("33 RUNNING")


SCONTROL_HOSTILE = (
    "JobId=11 JobName=na|me x UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901749 "
    "Nice=0 Account=(null) QOS=(null) JobState=CANCELLED Reason=None Dependency=(null) Requeue=1 "
    "Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:15 RunTime=00:00:02 TimeLimit=UNLIMITED "
    "TimeMin=N/A SubmitTime=2026-12-04T18:43:35 EligibleTime=2026-12-04T18:43:35 "
    "AccrueTime=2026-12-04T18:43:35 StartTime=2026-12-04T18:43:35 EndTime=2026-12-04T18:43:37 "
    "Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-12-04T18:43:35 "
    "Scheduler=Main Partition=debug AllocNode:Sid=localhost:7721 ReqNodeList=(null) "
    "ExcNodeList=(null) NodeList=vm BatchHost=vm NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 "
    "ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* "
    "CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) "
    "DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) "
    "Command=(null) WorkDir=/tmp StdErr=/tmp/ri x|y 'q' $(boom)/a very long name 11.out "
    "StdIn=/dev/null StdOut=/tmp/ri x|y 'q' $(boom)/a very long name 11.out Power= "
)
SCONTROL_PENDING = (
    "JobId=34 JobName=wrap UserId=root(0) GroupId=root(0) JobState=PENDING Reason=Resources "
    "ExitCode=0:0 RunTime=00:00:00 StartTime=Unknown EndTime=Unknown NodeList= "
    "StdErr=/dev/null StdIn=/dev/null StdOut=/dev/null Power= "
)


def test_parse_scontrol_job() -> None:
    job = parse_scontrol_job(SCONTROL_HOSTILE)
    assert job.job_id == "11" and job.name == "na|me x"
    assert (job.state, job.exit_code, job.signal) == (SlurmState.CANCELLED, 0, 15)
    assert job.stdout == "/tmp/ri x|y 'q' $(boom)/a very long name 11.out" == job.stderr
    assert job.node_list == "vm" and job.run_time_s == 2 and job.reason is None
    assert job.end_time == _ts("2026-12-04T18:43:37") and job.source == "scontrol"
    pending = parse_scontrol_job(SCONTROL_PENDING)
    assert (pending.state, pending.reason, pending.node_list, pending.start_time) == (
        SlurmState.PENDING,
        "Resources",
        None,
        None,
    )
    assert pending.exit_code is None  # "0:0" means nothing before the job ends
    with pytest.raises(SlurmParseError):
        parse_scontrol_job("Slurm says hello")


def test_parse_sacct() -> None:
    text = (
        "12|wrap|COMPLETED|0:0|vm|2026-12-04T18:44:00|2026-12-04T18:44:00|00:00:00\n"
        "12.batch|batch|COMPLETED|0:0|vm|2026-12-04T18:44:00|2026-12-04T18:44:00|00:00:00\n"
        "14|wrap|FAILED|0:9|vm|2026-12-04T18:44:01|2026-12-04T18:44:01|00:00:00\n"
        "15|wrap|CANCELLED by 0|0:0|vm|2026-12-04T18:45:18|2026-12-04T18:45:19|00:00:01\n"
        "16|wrap|RUNNING|0:0|vm|2026-12-04T18:45:18|Unknown|00:00:05\n"
    )
    jobs = parse_sacct(text)
    assert list(jobs) == ["12", "14", "15", "16"]
    assert (jobs["12"].state, jobs["12"].exit_code) == (SlurmState.COMPLETED, 0)
    assert (jobs["14"].state, jobs["14"].signal) == (SlurmState.FAILED, 9)
    assert jobs["15"].state is SlurmState.CANCELLED and jobs["15"].raw_state == "CANCELLED by 0"
    assert jobs["16"].end_time is None and jobs["16"].exit_code is None
    assert all(j.source == "sacct" for j in jobs.values())
    with pytest.raises(SlurmParseError, match="fields"):
        parse_sacct("12|wrap\n")
    # what sacct -c printed for a job named "na|me x" (the jobcomp log splits names on spaces)
    assert parse_sacct("11||0:0\n" + text, strict=False) == jobs


def test_job_state_round_trips_and_merges() -> None:
    job = parse_squeue_fields(SQUEUE)["11"]
    assert JobState.from_dict(job.to_dict()) == job
    assert job.to_dict()["state"] == "cancelled"
    from_sacct = parse_sacct(
        "11|na|CANCELLED|0:0|vm|2026-12-04T18:43:35|2026-12-04T18:43:37|00:00:02\n"
    )["11"]
    merged = merge_known(from_sacct, job)
    assert merged.stdout == job.stdout and merged.source == "sacct"  # sacct has no paths
    assert merge_known(from_sacct, None) is from_sacct


# ------------------------------------------------------------------------------------------
# the CLI wrapper reading command results (a fake runner; the real Slurm is in integration)


class FakeRunner:
    """Answers commands from a table keyed by command name; records every command."""

    def __init__(self, answers: dict[str, list[CommandResult | Exception]]) -> None:
        self.answers = answers
        self.commands: list[Command] = []

    def __call__(self, command: Command, timeout_s: float) -> CommandResult:
        self.commands.append(command)
        answer = self.answers[Path(command.argv[0]).name].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return CommandResult(command.argv, answer.returncode, answer.stdout, answer.stderr)

    def names(self) -> list[str]:
        return [" ".join([Path(c.argv[0]).name, *c.argv[1:2]]) for c in self.commands]


def ok(stdout: str = "", stderr: str = "") -> CommandResult:
    return CommandResult((), 0, stdout, stderr)


def fail(stderr: str, code: int = 1) -> CommandResult:
    return CommandResult((), code, "", stderr)


def test_query_is_one_squeue_call_then_one_history_call() -> None:
    runner = FakeRunner(
        {
            "squeue": [ok(SQUEUE)],
            "sacct": [
                fail("Slurm accounting storage is disabled\n"),
                ok("12|wrap|COMPLETED|0:0|vm|2026-12-04T18:44:00|2026-12-04T18:44:00|00:00:00\n"),
            ],
        }
    )
    cli = SlurmCli(runner=runner)
    states = cli.query(["33", "8", "12", "99", "33"])
    assert list(states) == ["33", "8", "12", "99"]
    assert states["12"].state is SlurmState.COMPLETED and states["12"].source == "sacct"
    assert states["99"].state is SlurmState.UNKNOWN and states["99"].source == "none"
    squeue, sacct, sacct_c = (c.argv for c in runner.commands)
    assert squeue[:6] == ("squeue", "-h", "-t", "all", "-j", "33,8,12,99")
    assert "-c" not in sacct and sacct[sacct.index("-j") + 1] == "12,99"
    assert sacct_c[1] == "-c" and cli.history == "jobcomp"  # remembered: no sacct try next time
    assert cli.query([]) == {} and len(runner.commands) == 3


def test_query_of_one_forgotten_job() -> None:
    runner = FakeRunner(
        {
            "squeue": [fail("slurm_load_jobs error: Invalid job id specified\n")],
            "sacct": [ok("")],
        }
    )
    states = SlurmCli(runner=runner, history="jobcomp").query(["5"])
    assert states["5"].state is SlurmState.UNKNOWN
    assert runner.names() == ["squeue -h", "sacct -c"]


def test_job_ids_are_validated_before_anything_runs() -> None:
    runner = FakeRunner({})
    for bad in ("-j", "1;2", "abc", "", "1 2"):
        with pytest.raises(ValueError, match="job id"):
            SlurmCli(runner=runner).query([bad])
        with pytest.raises(ValueError, match="job id"):
            SlurmCli(runner=runner).cancel(bad)
    assert runner.commands == []


def test_controller_down_and_missing_binaries_are_unavailable(tmp_path: Path) -> None:
    down = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"
    cli = SlurmCli(runner=FakeRunner({"squeue": [fail(down)]}))
    with pytest.raises(SlurmUnavailableError, match="does not answer `squeue`") as info:
        cli.query(["1"])
    assert isinstance(info.value, BackendUnavailableError)  # the gateway maps it to 503
    missing = SlurmCli(bin_dir=tmp_path)  # the real runner, an empty bin dir
    with pytest.raises(SlurmUnavailableError, match=r"`.*squeue` is not installed"):
        missing.query(["1"])


def test_other_failures_keep_argv_code_and_stderr() -> None:
    cli = SlurmCli(runner=FakeRunner({"sbatch": [fail("sbatch: error: invalid partition\n", 2)]}))
    with pytest.raises(SlurmCommandError) as info:
        cli.submit("#!/bin/sh\ntrue\n", extra_args=["--partition=nope"])
    err = info.value
    assert err.argv == ("sbatch", "--partition=nope") and err.returncode == 2
    assert "invalid partition" in err.stderr and "exited with code 2" in str(err)


def test_errors_survive_pickling() -> None:
    for err in (
        SlurmCommandError(("sbatch", "-p", "x"), 1, "bad partition"),
        SlurmTimeoutError(("squeue",), 3.0),
        SlurmUnavailableError("slurmctld does not answer"),
    ):
        copy = pickle.loads(pickle.dumps(err))
        assert type(copy) is type(err) and str(copy) == str(err)
        assert vars(copy) == vars(err)


def test_submit_arguments() -> None:
    runner = FakeRunner({"sbatch": [ok("Submitted batch job 7\n"), ok("Submitted batch job 8\n")]})
    cli = SlurmCli(runner=runner)
    assert cli.submit("#!/bin/sh\ntrue\n", extra_args=["-p", "debug", "--time=1"]) == "7"
    assert runner.commands[0].argv == ("sbatch", "-p", "debug", "--time=1")
    assert runner.commands[0].stdin == "#!/bin/sh\ntrue\n"
    assert cli.submit(Path("/x/job.sbatch")) == "8"
    assert runner.commands[1].argv == ("sbatch", "/x/job.sbatch")
    with pytest.raises(ValueError, match="not an option"):
        cli.submit("#!/bin/sh\n", extra_args=["--time=1", "other.sbatch"])
    with pytest.raises(ValueError, match="must start with '#!'"):
        cli.submit("echo no shebang\n")


def test_cancel_reads_what_scancel_says() -> None:
    runner = FakeRunner(
        {
            "scancel": [
                ok(stderr="scancel: Terminating job 5\n"),
                ok(
                    stderr="scancel: Terminating job 6\nscancel: error: Kill job error on job id 6: "
                    "Job/step already completing or completed\n"
                ),
                ok(stderr="scancel: error: Kill job error on job id 7: Invalid job id specified\n"),
                ok(stderr="scancel: error: Kill job error on job id 8: Access/permission denied\n"),
            ],
        }
    )
    cli = SlurmCli(runner=runner)
    assert cli.cancel("5") is True
    assert cli.cancel("6", signal="USR1") is False
    assert runner.commands[1].argv == ("scancel", "-v", "--signal=USR1", "--full", "6")
    assert cli.cancel("7") is False
    with pytest.raises(SlurmCommandError, match="permission denied"):
        cli.cancel("8")
    with pytest.raises(ValueError, match="signal"):
        cli.cancel("9", signal="TERM; rm -rf /")


def test_ping() -> None:
    runner = FakeRunner(
        {
            "scontrol": [
                ok("Slurmctld(primary) at vm is UP\n"),
                CommandResult((), 1, "Slurmctld(primary) at vm is DOWN\n****\n", ""),
            ],
        }
    )
    cli = SlurmCli(runner=runner)
    assert cli.ping() == "Slurmctld(primary) at vm is UP"
    with pytest.raises(SlurmUnavailableError, match="is DOWN"):
        cli.ping()


async def test_async_cli_runs_the_same_operations() -> None:
    runner = FakeRunner({"squeue": [ok(SQUEUE)], "sacct": [ok("")]})

    async def arun(command: Command, timeout_s: float) -> CommandResult:
        return runner(command, timeout_s)

    cli = AsyncSlurmCli(runner=arun, history="jobcomp")
    states = await cli.query(["8", "404"])
    assert states["8"].exit_code == 3 and states["404"].state is SlurmState.UNKNOWN


# ------------------------------------------------------------------------------------------
# the watcher (a fake query whose answers the test scripts)


class ScriptedQuery:
    """Returns the states the test set; counts calls."""

    def __init__(self) -> None:
        self.now: dict[str, JobState] = {}
        self.calls: list[list[str]] = []
        self.error: Exception | None = None

    async def query(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        ids = list(job_ids)
        self.calls.append(ids)
        if self.error is not None:
            raise self.error
        return {i: self.now[i] for i in ids if i in self.now}

    def set(self, job_id: str, raw: str, exit_code: int | None = None) -> None:
        self.now[job_id] = JobState(job_id, normalize_state(raw), raw, exit_code=exit_code)


async def test_watcher_reports_each_transition_once_and_backs_off() -> None:
    q = ScriptedQuery()
    seen: list[tuple[str, str]] = []
    w = JobWatcher(
        q,
        lambda s: seen.append((s.job_id, s.raw_state)),
        job_ids=["1", "2"],
        min_interval_s=1,
        max_interval_s=8,
    )
    q.set("1", "PENDING")
    q.set("2", "RUNNING")
    assert [s.job_id for s in await w.poll_once()] == ["1", "2"]
    assert w.interval_s == 1
    for expected in (2, 4, 8, 8):  # quiet polls: doubling, capped
        assert await w.poll_once() == []
        assert w.interval_s == expected
    q.set("1", "RUNNING")
    await w.poll_once()
    assert w.interval_s == 1  # a change: fast again
    q.set("1", "COMPLETED", exit_code=0)
    q.set("2", "FAILED", exit_code=3)
    await w.poll_once()
    assert seen == [
        ("1", "PENDING"),
        ("2", "RUNNING"),
        ("1", "RUNNING"),
        ("1", "COMPLETED"),
        ("2", "FAILED"),
    ]
    assert w.tracked == frozenset()  # ended jobs are dropped
    assert len(q.calls) == 7 and all(len(c) <= 2 for c in q.calls)  # one query per poll


async def test_watcher_track_untrack_and_known_states() -> None:
    q = ScriptedQuery()
    seen: list[JobState] = []

    async def on_change(state: JobState) -> None:
        seen.append(state)

    known = JobState("1", SlurmState.RUNNING, "RUNNING")
    w = JobWatcher(q, on_change, job_ids=["1"], known={"1": known}, min_interval_s=0.5)
    q.set("1", "RUNNING")
    assert await w.poll_once() == []  # not reported again after a restart
    w.untrack("1")
    assert await w.poll_once() == [] and len(q.calls) == 1  # nothing tracked: no query
    w.track("3")
    assert w.interval_s == 0.5 and w.last_state("3") is None
    q.set("3", "PENDING")
    await w.poll_once()
    assert [s.job_id for s in seen] == ["3"] and w.last_state("3") == seen[0]


async def test_watcher_run_survives_errors_and_stops() -> None:
    q = ScriptedQuery()
    calls: list[str] = []

    def on_change(state: JobState) -> None:
        calls.append(state.raw_state)
        raise RuntimeError("a bug in the callback")

    w = JobWatcher(q, on_change, min_interval_s=0.01, max_interval_s=0.05)
    task = asyncio.create_task(w.run())
    q.error = RuntimeError("squeue broke")
    w.track("1")
    for _ in range(200):
        if len(q.calls) >= 3:
            break
        await asyncio.sleep(0.01)
    assert len(q.calls) >= 3 and not task.done()  # failed queries: logged, polled again
    q.error = None
    q.set("1", "RUNNING")
    for _ in range(200):
        if calls:
            break
        await asyncio.sleep(0.01)
    assert calls == ["RUNNING"] and not task.done()  # a failing callback does not stop it
    q.set("1", "COMPLETED", exit_code=0)
    for _ in range(200):
        if not w.tracked:
            break
        await asyncio.sleep(0.01)
    assert calls == ["RUNNING", "COMPLETED"]
    idle_calls = len(q.calls)
    await asyncio.sleep(0.1)
    assert len(q.calls) == idle_calls  # idle while nothing is tracked
    w.stop()
    await asyncio.wait_for(task, 1)


def test_watcher_rejects_bad_intervals() -> None:
    with pytest.raises(ValueError, match="interval"):
        JobWatcher(ScriptedQuery(), print, min_interval_s=2, max_interval_s=1)
    with pytest.raises(ValueError, match="backoff"):
        JobWatcher(ScriptedQuery(), print, backoff=0.5)
