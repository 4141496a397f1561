"""Start or stop a runtime from a child process, for a client that must not become a Ray driver.

``AgentInfra`` over gRPC talks to the gateway only; when it has to bring the local runtime up
(nothing answers at its own gateway address, as the original client ran ``dspy-agent start``)
it does so in a child process, so this process never joins the Ray cluster. The child gets the
effective config as JSON on stdin; with ``DSPY_AGENT_CLI_PATH`` set, that CLI is run instead
(``<cli> start --workspace W`` / ``<cli> stop``), as the original did.

    python -m rayinfra.client.runtime_child start|stop   < config.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

from rayinfra.config import RayinfraConfig, config_to_dict

Action = Literal["start", "stop"]


class RuntimeChildError(RuntimeError):
    """The child could not start or stop the runtime; the message carries its stderr tail."""


def run(
    action: Action,
    config: RayinfraConfig,
    *,
    timeout_s: float,
    workspace: Path | None = None,
    cli_path: Path | None = None,
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # the config decides
    if cli_path is not None:
        argv = [str(cli_path), action]
        if action == "start":
            argv += ["--workspace", str(workspace or Path.cwd())]
        stdin = None
    else:
        argv = [sys.executable, "-m", "rayinfra.client.runtime_child", action]
        stdin = json.dumps(config_to_dict(config))
    try:
        proc = subprocess.run(  # fixed argv, no shell
            argv, input=stdin, capture_output=True, text=True, timeout=timeout_s, env=env
        )
    except subprocess.TimeoutExpired:
        raise RuntimeChildError(
            f"`{' '.join(argv[:4])}` did not finish in {timeout_s:g}s"
        ) from None
    except OSError as e:
        raise RuntimeChildError(f"could not run {argv[0]}: {e}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise RuntimeChildError(f"runtime {action} failed (exit {proc.returncode}): {tail}")


def _main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("start", "stop"):
        print(
            "usage: python -m rayinfra.client.runtime_child start|stop < config.json",
            file=sys.stderr,
        )
        return 2
    from rayinfra import runtime

    config = RayinfraConfig.model_validate(json.load(sys.stdin))
    try:
        if argv[0] == "start":
            runtime.start(config)
        else:
            runtime.stop(config.state.dir, force=True)
    except runtime.RuntimeFailureError as e:
        print(str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
