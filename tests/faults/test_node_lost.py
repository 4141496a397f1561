"""A Ray worker node is lost with tasks running on it: a real multi-node Ray cluster on this
machine (tests/support/joined_cluster.py: a CPU-less head, two CPU worker nodes joined with
``rayinfra join``, rayinfra started with ``--address``). The node running the ``cpu_long``
executor is stopped (``rayinfra stop --force`` of that node) while its tasks run: they run
again (attempt 2) on the other node and complete, every acknowledged task of a stream of short
tasks completes (0 lost) and the runtime answers Health.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rayinfra.head import WORKER_NODE_FILE
from tests.support.cluster import cluster_head
from tests.support.faults import TaskStream, assert_health, assert_none_lost
from tests.support.joined_cluster import node_ids, rayinfra_on, root_fixture, run, wait

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CPU_A, CPU_B = "127.0.0.3", "127.0.0.5"
CPU_NODE = ("--num-cpus", "2", "--num-gpus", "0")


root = root_fixture("nl-")


def test_a_node_lost_with_tasks_running_on_it(root: Path) -> None:
    with (
        cluster_head(root, num_cpus=0) as head,
        rayinfra_on(root, head, ("a", CPU_A, CPU_NODE), ("b", CPU_B, CPU_NODE)) as cluster,
    ):
        infra = cluster.infra
        nodes = node_ids(head)
        address = {node: ip for ip, node in nodes.items()}
        stream = TaskStream(cluster.client, "nl", {"type": "sleep", "seconds": 0.2})
        stream.start()
        try:
            stream.wait_for(10)
            long_tasks = run(infra, "cpu_long", 2, seconds=6)
            deadline = time.monotonic() + 60
            while {infra.get_task_status(t)["status"] for t in long_tasks} != {"running"}:
                assert time.monotonic() < deadline, "cpu_long tasks never ran"
                time.sleep(0.3)
            live = infra.runtime_status()["classes"]["cpu_long"]["live"]["executors"]
            (lost,) = {address[n] for n in live.values()}  # one executor: one node runs them
            (kept,) = {CPU_A, CPU_B} - {lost}
            state = root / ("a" if lost == CPU_A else "b")
            cluster.leave(state)  # the node is lost, its executors with it
            assert not (state / WORKER_NODE_FILE).exists()
            lost_at = len(stream.acknowledged)
            stream.wait_for(lost_at + 10, timeout_s=120)  # tasks go on, on the other node
        finally:
            ids = stream.stop()
        finished = wait(infra, long_tasks, timeout=180)
        for t in long_tasks:  # ran again, on the node that is left
            assert finished[t]["status"] == "completed", finished[t]
            assert finished[t]["attempts"] == 2, finished[t]
            assert finished[t]["result_payload"] == nodes[kept]
        assert_none_lost(infra, ids + long_tasks, timeout_s=180)
        assert_health(infra)
