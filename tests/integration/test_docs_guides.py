"""The runnable examples of the guides (docs/workflows.md, docs/events.md), run as written
against the session runtime.

Every ``python`` block of a guide runs in a fresh interpreter whose ``AgentInfraSync()`` finds
the session runtime (``RAYINFRA_CONFIG``; ``DSPY_AGENT_SKIP_START``: connect only, never start
one); a ``console-output`` block right after it is what it must print, exactly. Other blocks
(``bash``, ``toml``, ``json``, ``text``) are shown, not run: the CLI and the config have tests
of their own. (docs/api.md has its own runner: tests/integration/test_docs_examples.py.)
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import Runtime

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]
GUIDES = ("workflows.md", "events.md")
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```\s*$", re.M | re.S)
KNOWN = ("python", "console-output", "bash", "toml", "json", "text")


@dataclass(frozen=True)
class Example:
    doc: str
    line: int
    code: str
    expected: str | None  # what it prints (None: only that it succeeds)

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}"


def examples() -> list[Example]:
    out: list[Example] = []
    for name in GUIDES:
        path = REPO / "docs" / name
        if not path.exists():
            continue
        text = path.read_text()
        fences = list(FENCE.finditer(text))
        for i, m in enumerate(fences):
            lang = m.group(1)
            line = text[: m.start()].count("\n") + 1
            assert lang in KNOWN, f"docs/{name}:{line}: tag the block as one of {KNOWN}"
            if lang != "python":
                continue
            nxt = fences[i + 1] if i + 1 < len(fences) else None
            follows = nxt is not None and text[m.end() : nxt.start()].strip() == ""
            expected = nxt.group(2) if follows and nxt.group(1) == "console-output" else None
            out.append(Example(name, line, m.group(2), expected))
    return out


EXAMPLES = examples()


def test_the_guides_have_runnable_examples() -> None:
    assert any(e.doc == "workflows.md" and e.expected for e in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_example(rt: Runtime, example: Example) -> None:
    env = rt.spec.env()
    env["DSPY_AGENT_SKIP_START"] = "1"
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", example.code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{example}:\n{done.stdout}\n{done.stderr}"
    if example.expected is not None:
        got = [ln.rstrip() for ln in done.stdout.splitlines()]
        assert got == [ln.rstrip() for ln in example.expected.splitlines()], done.stdout
