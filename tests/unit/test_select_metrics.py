"""GetMetrics' ``metric_names`` filter (:func:`rayinfra.metrics.select_metrics`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rayinfra.metrics import select_metrics

SNAPSHOT = {
    "queue_depth": 3.0,
    'tasks_total{class="cpu_short",status="completed"}': 7.0,
    'tasks_total{class="a{b",status="failed"}': 1.0,
    "tasks_totally": 2.0,
    "env_queue_depth": 4.0,
}


def test_a_name_selects_its_series_and_each_labelled_one() -> None:
    assert select_metrics(SNAPSHOT, ["tasks_total", "queue_depth"]) == {
        "queue_depth": 3.0,
        'tasks_total{class="cpu_short",status="completed"}': 7.0,
        'tasks_total{class="a{b",status="failed"}': 1.0,
    }
    assert select_metrics(SNAPSHOT, ['tasks_total{class="cpu_short",status="completed"}']) == {
        'tasks_total{class="cpu_short",status="completed"}': 7.0
    }
    assert select_metrics(SNAPSHOT, ["tasks", "depth", ""]) == {}


def _by_definition(metrics: dict[str, float], names: list[str]) -> dict[str, float]:
    """What the filter means, one name at a time (what GetMetrics did before)."""
    return {k: v for k, v in metrics.items() if any(k == n or k.startswith(n + "{") for n in names)}


keys = st.text(alphabet='ab{}=",', max_size=12)


@given(st.dictionaries(keys, st.floats(allow_nan=False)), st.lists(keys, max_size=8))
def test_the_same_selection_as_the_definition(metrics: dict[str, float], names: list[str]) -> None:
    names += [k[: k.find("{")] for k in list(metrics)[:3] if "{" in k]  # some that select
    assert select_metrics(metrics, names) == _by_definition(metrics, names)
