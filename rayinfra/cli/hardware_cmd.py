"""``rayinfra hardware``: what this node has and the `ray start` arguments it turns into."""

from __future__ import annotations

import shlex

import typer

from rayinfra.cli.common import console, print_json


def hardware_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    role: str = typer.Option("head", help="Role label to show in the ray start arguments."),
) -> None:
    """Detect CPUs, memory and GPUs and show the derived Ray node arguments."""
    from rayinfra import hardware  # imported here: `rayinfra --help` need not probe for GPUs

    hw = hardware.detect()
    args = hardware.ray_start_args(hw, role=role)
    if as_json:
        print_json(
            {**hw.to_dict(), "ray_start_args": args, "labels": hardware.node_labels(hw, role)}
        )
        return
    console.print(hardware.format_report(hw))
    console.print("\nray start arguments:\n  " + " ".join(shlex.quote(a) for a in args))
