"""Label scheduling across real Ray nodes.

A cluster-mode Ray head with no CPUs of its own (the control actors need none), worker nodes
joined with ``rayinfra join`` (one a fake-GPU node labelled H200), and rayinfra started on the
cluster with ``rayinfra start --address`` (tests/support/joined_cluster.py). Tasks report the Ray
node they ran on; the scheduler's status reports where it placed each executor. (A node lost
with tasks running: tests/faults/test_node_lost.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cluster import cluster_head
from tests.support.joined_cluster import cli, node_ids, rayinfra_on, root_fixture, run, wait

pytestmark = pytest.mark.e2e

CPU_A, GPU_NODE = "127.0.0.3", "127.0.0.4"


root = root_fixture("mn-")


def test_label_scheduling(root: Path) -> None:
    with (
        cluster_head(root, num_cpus=0) as head,
        rayinfra_on(
            root,
            head,
            ("a", CPU_A, ("--num-cpus", "2", "--num-gpus", "0")),
            ("gpu", GPU_NODE, ("--num-cpus", "1", "--num-gpus", "1",
                               "--labels", "rayinfra.io/accelerator-type=H200")),
        ) as cluster,
    ):  # fmt: skip
        env, infra = cluster.env, cluster.infra
        nodes = node_ids(head)
        # every node carries the hardware labels; status lists the nodes with them
        status = json.loads(cli(env, "status", "--json"))
        listed = {n["address"]: n["labels"] for n in status["ray"]["nodes"]}
        assert listed[GPU_NODE]["rayinfra.io/accelerator-type"] == "H200"
        assert listed[CPU_A]["rayinfra.io/role"] == "worker"

        # GPU work only on the GPU node, CPU work only elsewhere
        gpu_tasks, cpu_tasks = run(infra, "gpu_short", 3), run(infra, "cpu_short", 4)
        done = wait(infra, gpu_tasks + cpu_tasks, timeout=120)
        assert {done[t]["status"] for t in done} == {"completed"}, done
        assert {done[t]["result_payload"] for t in gpu_tasks} == {nodes[GPU_NODE]}
        assert {done[t]["result_payload"] for t in cpu_tasks} == {nodes[CPU_A]}
        live = json.loads(cli(env, "status", "--json"))["classes"]
        assert set(live["gpu_short"]["live"]["executors"].values()) == {nodes[GPU_NODE]}
        assert set(live["cpu_short"]["live"]["executors"].values()) == {nodes[CPU_A]}

        # a class no node can ever satisfy fails fast, naming the label
        (h100,) = run(infra, "h100", 1)
        failed = infra.wait_task(h100, timeout=60)
        assert failed["status"] == "failed"
        assert "rayinfra.io/accelerator-type=H100" in failed["error"], failed
        assert "H200" in failed["error"]  # what the nodes have
