#!/usr/bin/env python
"""Regenerate the committed gRPC/protobuf stubs under ``rayinfra/api/generated/``.

    python scripts/gen_protos.py           # rewrite rayinfra/api/generated/ from rayinfra/api/proto/
    python scripts/gen_protos.py --check   # exit 1 if the committed stubs differ from a fresh run

It runs ``python -m grpc_tools.protoc`` (the pinned grpcio-tools, see pyproject's ``test`` extra)
with ``-I rayinfra/api/proto``, so each descriptor's file name is the bare ``orchestrator_v1.proto`` /
``env_manager_v1.proto`` (that name is visible through server reflection). grpc's plugin then
writes a top-level ``import orchestrator_v1_pb2 as ...`` into ``*_pb2_grpc.py``; this script
rewrites exactly that one line into ``from rayinfra.api.generated import orchestrator_v1_pb2 as
...`` and fails if the line is not found exactly once; ``*.pyi`` and ``*_pb2_grpc.py`` get a
``# mypy: ignore-errors`` first line. Output is deterministic: fixed file order,
fixed ``__init__.py``, and protoc's own output is stable for a given input and version.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "rayinfra" / "api" / "proto"
GENERATED_DIR = ROOT / "rayinfra" / "api" / "generated"
GENERATED_PACKAGE = "rayinfra.api.generated"
PROTOS = ("env_manager_v1.proto", "orchestrator_v1.proto")

INIT_TEXT = (
    '"""Generated gRPC/protobuf stubs (by scripts/gen_protos.py from rayinfra/api/proto/).\n\n'
    "Do not edit; do not import directly from library code: use ``rayinfra.api.stubs``, which\n"
    "imports them lazily.\n"
    '"""\n'
)


# Generated code is not strict-mypy clean (untyped grpc, bare Mapping in the .pyi): mypy follows
# imports into it even though pyproject excludes the directory, so each typed file opts out itself.
MYPY_HEADER = "# mypy: ignore-errors\n"


def _prepend_mypy_header(path: Path) -> None:
    path.write_text(MYPY_HEADER + path.read_text(encoding="utf-8"), encoding="utf-8")


def _fix_grpc_imports(path: Path, package: str) -> None:
    """Make the grpc plugin's top-level ``import x_pb2 as y`` package-relative-correct."""
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(r"^import (\w+_pb2) as (\w+)$", re.MULTILINE)
    new_text, count = pattern.subn(rf"from {package} import \1 as \2", text)
    if count != 1:
        raise RuntimeError(
            f"{path.name}: expected exactly one 'import x_pb2 as y' line, got {count}"
        )
    path.write_text(new_text, encoding="utf-8")


def generate(
    out_dir: Path,
    proto_dir: Path = PROTO_DIR,
    package: str = GENERATED_PACKAGE,
    protos: tuple[str, ...] = PROTOS,
) -> list[Path]:
    """Generate ``*_pb2.py``, ``*_pb2.pyi``, ``*_pb2_grpc.py`` and ``__init__.py`` into ``out_dir``.

    Returns the written files, sorted. ``out_dir`` must exist; files already there are overwritten.
    """
    out = Path(out_dir)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    proc = subprocess.run(cmd, cwd=proto_dir, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"protoc failed ({proc.returncode}): {proc.stderr.strip()}")
    for proto in protos:
        stem = Path(proto).stem
        _fix_grpc_imports(out / f"{stem}_pb2_grpc.py", package)
        _prepend_mypy_header(out / f"{stem}_pb2_grpc.py")
        _prepend_mypy_header(out / f"{stem}_pb2.pyi")
    (out / "__init__.py").write_text(INIT_TEXT, encoding="utf-8")
    files = ["__init__.py"]
    for proto in protos:
        stem = Path(proto).stem
        files += [f"{stem}_pb2.py", f"{stem}_pb2.pyi", f"{stem}_pb2_grpc.py"]
    return sorted(out / f for f in files)


def _differences(fresh: list[Path], target: Path) -> list[str]:
    diffs = []
    for f in fresh:
        committed = target / f.name
        if not committed.exists() or committed.read_bytes() != f.read_bytes():
            diffs.append(f.name)
    names = {f.name for f in fresh}
    diffs += sorted(
        p.name
        for p in target.glob("*")
        if p.is_file() and p.suffix in {".py", ".pyi"} and p.name not in names
    )
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed stubs, write nothing"
    )
    parser.add_argument("--out", type=Path, default=GENERATED_DIR, help="target directory")
    args = parser.parse_args(argv)
    target: Path = args.out
    with tempfile.TemporaryDirectory(prefix="gen_protos-") as tmp:
        fresh = generate(Path(tmp))
        diffs = _differences(fresh, target)
        if args.check:
            if diffs:
                print(f"stale generated stubs in {target}: {', '.join(diffs)}", file=sys.stderr)
                print("run: python scripts/gen_protos.py", file=sys.stderr)
                return 1
            print(f"{target}: up to date")
            return 0
        target.mkdir(parents=True, exist_ok=True)
        names = {f.name for f in fresh}
        for stale in target.glob("*"):
            if stale.is_file() and stale.suffix in {".py", ".pyi"} and stale.name not in names:
                stale.unlink()
        for f in fresh:
            shutil.copyfile(f, target / f.name)
    print(f"{target}: {'rewrote ' + ', '.join(diffs) if diffs else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
