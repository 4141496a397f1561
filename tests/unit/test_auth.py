"""Gateway bearer tokens: required mode, trust for code-running tasks, the 0600 token file."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from rayinfra.api.auth import Auth, bearer, read_or_create_token


def test_bearer_parsing() -> None:
    assert bearer("Bearer abc") == "abc"
    assert bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None
    assert bearer("Bearer ") is None
    assert bearer(None) is None


def test_required_mode_needs_the_token() -> None:
    auth = Auth(required=True, token="s3cret")
    assert auth.check_http("Bearer s3cret") is None
    assert auth.check_http("Bearer wrong") == "invalid token"
    assert "missing" in (auth.check_http(None) or "")
    assert "Bearer <token>" in (auth.check_http("Token s3cret") or "")
    with pytest.raises(ValueError, match="no token"):
        Auth(required=True)


def test_auth_off_serves_everyone_but_trusts_only_token_holders() -> None:
    auth = Auth(local_token="local")
    assert auth.check_http(None) is None
    assert auth.trusted("Bearer local")
    assert not auth.trusted(None)
    assert not auth.trusted("Bearer nope")
    assert Auth(allow_untrusted_code=True).trusted(None)
    assert Auth(required=True, token="t", local_token="l").trusted("Bearer t")


def test_token_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "gateway.token"
    seen: list[str] = []
    threads = [
        threading.Thread(target=lambda: seen.append(read_or_create_token(path))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1 and len(seen[0]) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_or_create_token(path) == seen[0]
    assert [p.name for p in path.parent.iterdir()] == ["gateway.token"]  # no temp files left
