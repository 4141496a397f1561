"""The pure half of the gpu_slurm bridge: template choice, job records, outcomes.

The same paths on real Slurm: tests/integration/test_slurm_tasks.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rayinfra.config import RayinfraConfig
from rayinfra.errors import InvalidArgumentError, NotTrustedError
from rayinfra.scheduling.limiter import Outcome
from rayinfra.slurm.bridge import (
    SHIPPED_TEMPLATE,
    UNKNOWN_AFTER_S,
    SlurmJob,
    TaskScripts,
    attempt_result,
    pick_template,
)
from rayinfra.slurm.states import JobState, SlurmState, normalize_state


def config(tmp: Path | None = None, **slurm: object) -> RayinfraConfig:
    data: dict[str, object] = {"state": {"dir": str(tmp or "/tmp/ri-bridge")}, "slurm": slurm}
    return RayinfraConfig.model_validate(data)


def job(**kw: object) -> SlurmJob:
    fields: dict[str, object] = {
        "task_id": "t1", "job_id": "42", "attempt": 1, "template": SHIPPED_TEMPLATE,
        "submit_time": 1000.0,
    }  # fmt: skip
    fields.update(kw)
    return SlurmJob(**fields)  # type: ignore[arg-type]


def state(raw: str, exit_code: int | None = None, **kw: object) -> JobState:
    return JobState("42", normalize_state(raw), raw, exit_code=exit_code, **kw)  # type: ignore[arg-type]


def test_template_choice_follows_the_original_rules(tmp_path: Path) -> None:
    shipped = config()
    assert pick_template({}, shipped) == (SHIPPED_TEMPLATE, None)
    with pytest.raises(InvalidArgumentError, match=r"slurm\.template_dir is not configured") as e:
        pick_template({"template": "x.sbatch"}, shipped)
    assert e.value.field == "payload.template"
    for name in ("train_puffer_rl.sbatch", "train_ddp.sbatch", "train_agent_methodologies.sbatch"):
        (tmp_path / name).write_text("#!/bin/bash\n")
    (tmp_path / "mine.sbatch").write_text("#!/bin/bash\n")
    cfg = config(template_dir=str(tmp_path))
    assert pick_template({"method": "rl"}, cfg)[0] == "train_puffer_rl.sbatch"
    assert pick_template({"method": "puffer_rl"}, cfg)[0] == "train_puffer_rl.sbatch"
    assert pick_template({"method": "ddp"}, cfg)[0] == "train_ddp.sbatch"
    assert pick_template({"method": "grpo"}, cfg)[0] == "train_agent_methodologies.sbatch"
    assert pick_template({}, cfg)[0] == "train_agent_methodologies.sbatch"
    assert pick_template({"template": "mine.sbatch"}, cfg) == (
        "mine.sbatch",
        tmp_path / "mine.sbatch",
    )
    for bad in ("../mine.sbatch", "/etc/passwd", "no-such.sbatch", 3):
        with pytest.raises(InvalidArgumentError) as e:
            pick_template({"template": bad}, cfg)
        assert e.value.field == "payload.template"
    # a template_dir without the method's file falls back to task_template, then the shipped one
    empty = tmp_path / "empty"
    empty.mkdir()
    assert pick_template({}, config(template_dir=str(empty)))[0] == SHIPPED_TEMPLATE
    mine = config(template_dir=str(empty), task_template=str(tmp_path / "mine.sbatch"))
    assert pick_template({}, mine) == ("mine.sbatch", tmp_path / "mine.sbatch")


def test_scripts_need_trust_fill_log_dir_and_reread_a_changed_template(tmp_path: Path) -> None:
    scripts = TaskScripts(config(tmp_path))
    with pytest.raises(NotTrustedError):
        scripts.render("t1", {"argv": ["true"]}, trusted=False)
    name, text = scripts.render("t1", {"argv": ["true"]}, trusted=True)
    assert name == SHIPPED_TEMPLATE
    assert f"#SBATCH --output={tmp_path}/slurm/tasks/rayinfra-task_%j.out" in text
    own = config(tmp_path, task_values={"LOG_DIR": "/scratch/logs", "GPUS": 0})
    text = TaskScripts(own).render("t1", {"argv": ["true"]}, trusted=True)[1]
    assert "--output=/scratch/logs/" in text and "#SBATCH --gpus-per-node=0" in text
    template = tmp_path / "t.sbatch"
    template.write_text("#!/bin/bash\n#SBATCH --nodes=${NODES:-1}\necho one\n")
    scripts = TaskScripts(config(tmp_path, task_template=str(template)))
    assert "echo one" in scripts.render("t1", {}, trusted=True)[1]
    template.write_text("#!/bin/bash\n#SBATCH --nodes=${NODES:-1}\necho two\n")
    os.utime(template, (1, 1))  # a new mtime even within the clock's granularity
    assert "echo two" in scripts.render("t1", {}, trusted=True)[1]


@pytest.mark.parametrize(
    ("raw", "exit_code", "flags", "outcome", "error"),
    [
        ("COMPLETED", 0, {}, Outcome.SUCCESS, None),
        ("FAILED", 3, {}, Outcome.FAILURE, "Slurm job 42 FAILED (exit code 3)"),
        ("CANCELLED by 0", 0, {}, Outcome.CANCELLED, "cancelled outside rayinfra"),
        ("CANCELLED", 0, {"cancel_requested": True}, Outcome.CANCELLED, "cancelled"),
        (
            "CANCELLED",
            0,
            {"timed_out": True, "timeout_s": 2.0},
            Outcome.TIMEOUT,
            "timed out after 2s",
        ),
        ("TIMEOUT", 0, {}, Outcome.TIMEOUT, "reached its Slurm time limit"),
        ("OUT_OF_MEMORY", 0, {}, Outcome.FAILURE, "out of memory"),
        ("NODE_FAIL", 0, {}, Outcome.RESOURCE, "its node failed"),
        ("PREEMPTED", 0, {}, Outcome.RESOURCE, "preempted"),
    ],
)
def test_how_a_finished_job_ends_its_attempt(
    raw: str, exit_code: int, flags: dict[str, object], outcome: Outcome, error: str | None
) -> None:
    j = job(**flags)
    j.observe(state("RUNNING", start_time=1010), now=1011.0)
    assert j.state == "running" and j.start_time == 1010.0 and not j.ended
    j.observe(state(raw, exit_code, start_time=1010, end_time=1020), now=1021.0)
    assert j.ended and j.end_time == 1020.0
    assert j.outcome() is outcome
    if error is None:
        assert j.failure() is None
    else:
        assert error in (j.failure() or "")


def test_the_record_keeps_the_originals_keys_and_strings() -> None:
    j = job()
    pending = j.status_dict()
    assert pending["id"] == "42" and pending["status"] == "pending"
    assert pending["submit_time"].startswith("1970-01-01T00:16:40")  # RFC 3339
    assert "end_time" not in pending and "exit_code" not in pending
    j.observe(state("CANCELLED by 0", 0, start_time=1010, end_time=1020), now=1021.0)
    done = j.status_dict()
    assert done["status"] == "failed" and done["state"] == "cancelled"  # the original lumped it
    assert done["exit_code"] == 0 and "cancelled outside rayinfra" in done["error"]
    again = SlurmJob.from_dict({**j.to_dict(), "unknown_future_key": 1})
    assert again == j


def test_a_job_slurm_forgot_ends_after_a_grace_period() -> None:
    j = job()
    j.observe(state("RUNNING", start_time=1010), now=1011.0)
    gone = JobState("42", SlurmState.UNKNOWN, "UNKNOWN", reason="purged", source="none")
    j.observe(gone, now=1100.0)
    assert not j.ended and j.state == "running"  # a blip of squeue/sacct is not an end
    j.observe(gone, now=1100.0 + UNKNOWN_AFTER_S + 1)
    assert j.ended and j.outcome() is Outcome.RESOURCE and "outcome is lost" in (j.error or "")


def test_overdue_counts_from_the_jobs_start() -> None:
    j = job(timeout_s=5.0)
    assert not j.overdue(2000.0)  # pending in Slurm's queue: not yet
    j.observe(state("RUNNING", start_time=1990), now=1991.0)
    assert not j.overdue(1994.0) and j.overdue(1996.0)
    j.timed_out = True
    assert not j.overdue(1999.0)  # being cancelled for it already


def test_the_attempts_result_carries_the_job() -> None:
    j = job()
    j.observe(state("COMPLETED", 0, start_time=1010, end_time=1013, stdout="/o/42.out"), 1014.0)
    res = attempt_result(j, "out\n", None)
    assert res["slurm_job_id"] == "42" and res["exit_code"] == 0 and res["elapsed_s"] == 3.0
    assert res["stdout_path"] == "/o/42.out" and res["stdout"] == "out\n"
