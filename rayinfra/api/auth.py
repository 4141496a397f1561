"""Bearer-token checks for the gateway (pure: no I/O beyond the token file helpers).

Two tokens, two meanings:

- the **auth token** (``RAYINFRA_AUTH_TOKEN`` or ``gateway.auth = "required"`` with the local
  token): when auth is on, every gRPC call and HTTP request must carry
  ``authorization: Bearer <token>``; a wrong or missing one is UNAUTHENTICATED / 401.
- the **local token**, generated at first start into a 0600 file in the state dir: with auth off
  (the loopback, wire-compatible default) calls without a token are served, but ``shell`` and
  ``python`` tasks run only for callers presenting it (the CLI and AgentInfra of the same user
  send it automatically), unless the config allows untrusted code.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

TOKEN_BYTES = 32


def read_or_create_token(path: Path) -> str:
    """The token in ``path``, creating it (0600, atomically, never overwritten) if missing."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        with contextlib.suppress(FileExistsError):  # another process won the race: keep theirs
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def bearer(header: str | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` header value, else None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class Auth:
    """``required``: every call needs ``token``. Otherwise calls are served and ``local_token``
    (or ``token``) marks a caller trusted for code-running tasks."""

    required: bool = False
    token: str | None = None
    local_token: str | None = None
    allow_untrusted_code: bool = False

    def __post_init__(self) -> None:
        if self.required and not self.token:
            raise ValueError("auth is required but no token is configured")

    def check_http(self, header: str | None) -> str | None:
        """None when the request may proceed, else the reason for a 401."""
        return self.check(bearer(header), header is not None)

    def check(self, presented: str | None, had_header: bool = True) -> str | None:
        if not self.required:
            return None
        if presented is None:
            if had_header:
                return "authorization must be 'Bearer <token>'"
            return "missing authorization: Bearer <token> (auth is required on this gateway)"
        if not _same(presented, self.token):
            return "invalid token"
        return None

    def identity(self, header: str | None) -> str | None:
        """Who a valid token in ``header`` says the caller is: ``token:local`` (the local token
        file's) or ``token:auth`` (the configured auth token); None without a valid one. Never
        the token itself: the gateway's per-client limits key on this, and name it."""
        presented = bearer(header)
        if presented is None:
            return None
        if _same(presented, self.local_token):
            return "token:local"
        if _same(presented, self.token):
            return "token:auth"
        return None

    def trusted(self, header: str | None) -> bool:
        """May this caller run ``shell`` / ``python`` tasks?"""
        if self.allow_untrusted_code:
            return True
        presented = bearer(header)
        return _same(presented, self.token) or _same(presented, self.local_token)
