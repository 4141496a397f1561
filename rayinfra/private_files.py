"""Private directories (0700) and files (0600) for what only the runtime's user may read.

The state dir holds the tokens (``gateway.token``, ``ray_auth_token``), the effective config
(which may carry ``gateway.auth_token``), ``connection.json`` and the state store with every
task's payload and result: :func:`ensure_private_dir` creates it 0700, and tightens it to 0700
when it already exists with looser modes (earlier versions created it 0755, so a refusal would
strand their users; nothing is lost by tightening a directory that is rayinfra's own). A
directory owned by another user is refused: that user could read or replace what is written
there. :func:`write_private_text` writes a file 0600, atomically.

Pure file I/O, no Ray import; cheap to import (the CLI's fast path reads connection files).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path

__all__ = ["PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "ensure_private_dir", "write_private_text"]

log = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def ensure_private_dir(path: Path) -> Path:
    """``path`` as a directory of this user with mode 0700: created if missing (missing parents
    with the default mode, as ``mkdir -p``), tightened to 0700 with a warning if its mode lets
    others in. Raises :class:`PermissionError` naming it if another user owns it, and
    :class:`NotADirectoryError` if it is something else."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True)
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(f"{path} exists and is not a directory")
    if st.st_uid != os.getuid():
        raise PermissionError(
            f"{path} belongs to uid {st.st_uid}, not to this user (uid {os.getuid()}): it would "
            "hold this runtime's tokens and task data; choose a directory of your own "
            "(RAYINFRA_STATE_DIR / [state] dir, or [ray] temp_dir)"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode != PRIVATE_DIR_MODE:
        path.chmod(PRIVATE_DIR_MODE)
        if mode & 0o077:
            log.warning(
                "%s had mode %03o (readable by other users); set it to %03o",
                path,
                mode,
                PRIVATE_DIR_MODE,
            )
    return path


def write_private_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` with mode 0600, atomically: readers see the old file or the
    new one, and never a moment where it is readable by others (the mode is set at creation)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
