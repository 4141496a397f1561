"""Admission (validate + commit) on a real SQLite state store, without Ray."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rayinfra import admission, taskstore
from rayinfra.config import RayinfraConfig
from rayinfra.errors import (
    BackendUnavailableError,
    ClassPolicyError,
    InvalidArgumentError,
    NotTrustedError,
    TaskConflictError,
)
from rayinfra.store import StateStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(tmp_path / "state.db")
    yield s
    s.close()


_CLASSES = RayinfraConfig().model_dump()["classes"]


def _shell_in(*allowed: str) -> RayinfraConfig:
    """The default classes, shell tasks allowed in ``allowed`` only."""
    return RayinfraConfig.model_validate(
        {"classes": {n: {**c, "allow_shell": n in allowed} for n, c in _CLASSES.items()}}
    )


#: no class runs shell tasks (the built-in CPU classes do by default); SHELL_CFG: cpu_short only
CFG = _shell_in()
SHELL_CFG = _shell_in("cpu_short")


def admit(
    store: StateStore,
    specs: list[dict[str, Any]],
    trusted: bool = True,
    config: RayinfraConfig = CFG,
) -> admission.Admitted:
    return asyncio.run(admission.admit(store, config, specs, trusted=trusted, source="test"))


def test_commits_rows_and_events_before_returning(store: StateStore) -> None:
    a = admit(store, [{"task_id": "a", "payload": {"type": "noop"}}, {"payload": {"x": 1}}])
    generated = a.specs[1].task_id
    assert a.new_ids == {"a", generated} and len(generated) == 32
    rows = store.read(lambda c: taskstore.get_tasks(c, ["a", generated]))
    assert {r.status for r in rows.values()} == {"pending"}
    assert rows["a"].source == "test" and rows["a"].trusted
    found = store.read(lambda c: taskstore.submitted_after(c, 0, 10))
    assert [r.task_id for _, r in found if r] == ["a", generated] and a.seq == found[-1][0]
    assert [r["duplicate"] for r in a.replies()] == [False, False]


def test_repeat_is_idempotent_and_conflict_names_the_field(store: StateStore) -> None:
    spec = {"task_id": "t", "payload": {"type": "echo", "v": 1}, "priority": 2}
    first = admit(store, [spec])
    again = admit(store, [spec])
    assert again.new_ids == frozenset() and again.seq == 0
    assert again.replies() == [{"success": True, "task_id": "t", "error": "", "duplicate": True}]
    with pytest.raises(TaskConflictError) as e:
        admit(store, [{**spec, "payload": {"type": "echo", "v": 2}}])
    assert e.value.field == "task_id" and "different" in e.value.message
    found = store.read(lambda c: taskstore.submitted_after(c, 0, 10))
    assert [(seq, r.task_id) for seq, r in found if r] == [(first.seq, "t")]


def test_batch_is_all_or_nothing(store: StateStore) -> None:
    good = {"task_id": "ok", "payload": {"type": "noop"}}
    with pytest.raises(InvalidArgumentError) as e:
        admit(store, [good, {"task_id": "bad", "payload": {}, "timeout_s": -1}])
    assert e.value.field == "tasks[1].timeout_s"
    with pytest.raises(TaskConflictError) as c:
        admit(store, [good, {"task_id": "ok", "payload": {"type": "echo"}}])
    assert "appears twice" in c.value.message
    with pytest.raises(BackendUnavailableError, match="gpu_slurm"):
        admit(store, [good, {"task_id": "s", "payload": {}, "task_class": "gpu_slurm"}])
    assert store.read(lambda c: taskstore.get_tasks(c, ["ok", "bad", "s"])) == {}


def test_untrusted_code_is_refused(store: StateStore) -> None:
    shell = {"task_id": "sh", "payload": {"type": "shell", "argv": '["true"]'}}
    with pytest.raises(NotTrustedError) as e:
        admit(store, [shell], trusted=False, config=SHELL_CFG)
    assert e.value.field == "payload.type"
    assert not isinstance(e.value, ClassPolicyError)  # the token is what is missing here
    assert admit(store, [shell], trusted=True, config=SHELL_CFG).new_ids == {"sh"}
    assert store.read(lambda c: taskstore.get_tasks(c, ["sh"]))["sh"].trusted


@pytest.mark.parametrize("ptype", ["shell", " Shell", "SHELL"])
def test_shell_is_refused_unless_the_class_allows_it(store: StateStore, ptype: str) -> None:
    """In a class without allow_shell: refused whoever asks (trusted too), field named,
    nothing written; allowed in a class with ``allow_shell``. Other types are not affected."""
    shell = {"type": ptype, "argv": ["true"]}
    with pytest.raises(ClassPolicyError) as e:
        admit(store, [{"task_id": "a", "payload": shell}])
    assert e.value.field == "payload.type"
    assert "cpu_short" in e.value.message and "allow_shell = true" in e.value.message
    assert isinstance(e.value, NotTrustedError)  # PERMISSION_DENIED / 403, as for trust
    # in a batch: all or nothing, the task named; aliases resolve (gpu -> gpu_short)
    ok = {"task_id": "ok", "payload": {"type": "python", "function": "os:getcwd"}}
    for cls in ("gpu", "gpu_long", "cpu_long"):
        with pytest.raises(ClassPolicyError) as e:
            admit(
                store, [ok, {"task_id": "b", "payload": shell, "task_class": cls}], config=SHELL_CFG
            )
        assert e.value.field == "tasks[1].payload.type"
        assert repr(admission.CLASS_ALIASES.get(cls, cls)) in e.value.message
    assert store.read(lambda c: taskstore.get_tasks(c, ["a", "ok", "b"])) == {}
    # the class that allows it
    assert admit(store, [{"task_id": "c", "payload": shell}], config=SHELL_CFG).new_ids == {"c"}
    assert admit(store, [ok]).new_ids == {"ok"}  # python: trust alone decides


def test_the_class_policy_check_is_pure() -> None:
    """What the workflows actor calls for each step before storing a definition."""
    admission.check_class_policy("cpu_short", {"type": "shell"}, SHELL_CFG)
    admission.check_class_policy("cpu_long", {"type": "echo"}, SHELL_CFG)
    admission.check_class_policy("cpu_long", {"type": 3}, SHELL_CFG)  # not a type: not shell
    with pytest.raises(ClassPolicyError) as e:
        admission.check_class_policy(
            "cpu_long", {"type": "shell"}, SHELL_CFG, field="nodes[2].task.payload.type"
        )
    assert e.value.field == "nodes[2].task.payload.type"


def test_repeated_id_within_a_batch_is_one_row(store: StateStore) -> None:
    spec = {"task_id": "same", "payload": {"type": "noop"}}
    a = admit(store, [spec, spec])
    assert [s.task_id for s in a.specs] == ["same", "same"] and len(a.rows) == 1
    assert [r["duplicate"] for r in a.replies()] == [False, False]
