"""CLI benchmark: wall time of the commands that talk to a running runtime.

    .venv/bin/python bench/bench_cli.py [--runs 5]

Starts a private runtime (own ports and state dir, loopback) with two process services, then
runs each command ``--runs`` times as a fresh process (``rayinfra ...``, as a user types it)
and prints the median and the slowest run beside the floor of a bare ``python -c pass`` and of
``rayinfra --version`` (interpreter start plus the CLI's imports). These commands go through
the gateway over gRPC; none of them becomes a Ray driver.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table
from rayinfra import runtime
from rayinfra.config import load_config
from tests.conftest import free_port, make_runtime_spec

RAYINFRA = str(Path(sys.executable).with_name("rayinfra"))
TARGET_S = 0.3


def services_toml() -> str:
    a, b = free_port(), free_port()
    redis = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return f"""
[services.definitions.kv]
driver = "process"
argv = {json.dumps([*redis, "--port", str(a)])}
ports = [{a}]
health = {{ kind = "redis", port = {a} }}

[services.definitions.cache]
driver = "process"
argv = {json.dumps([*redis, "--port", str(b)])}
ports = [{b}]
health = {{ kind = "redis", port = {b} }}
"""


def timed(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        out.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{argv[1:]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return out


def main(args: argparse.Namespace) -> None:
    spec = make_runtime_spec("bcli", services_toml())
    cfg = load_config(env=spec.env()).config
    env = spec.env()
    runtime.start(cfg)
    try:
        subprocess.run(
            [RAYINFRA, "services", "start", "kv", "cache"], env=env, check=True, timeout=120
        )
        subprocess.run([RAYINFRA, "submit", '{"type": "noop"}'], env=env, check=True, timeout=60)
        rows = []
        commands = {
            "python -c pass (floor)": [sys.executable, "-c", "pass"],
            "rayinfra --version (imports)": [RAYINFRA, "--version"],
            "rayinfra status": [RAYINFRA, "status"],
            "rayinfra services status": [RAYINFRA, "services", "status"],
            "rayinfra task list": [RAYINFRA, "task", "list"],
        }
        for name, argv in commands.items():
            timed(argv, env, 1)  # warm the page cache
            times = timed(argv, env, args.runs)
            median = statistics.median(times)
            verdict = (
                ""
                if "floor" in name or "imports" in name
                else ("meets <= 0.3 s" if median <= TARGET_S else "MISSES 0.3 s")
            )
            rows.append(
                (
                    name,
                    f"median {median:.3f} s",
                    f"max {max(times):.3f} s, {args.runs} runs {verdict}",
                )
            )
        print_table("CLI", rows)
    finally:
        subprocess.run([RAYINFRA, "stop", "--force"], env=env, timeout=120)
        shutil.rmtree(spec.root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    main(parser.parse_args())
