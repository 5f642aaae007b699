"""Output files: the temporary file beside a target that every output is written to first."""
from __future__ import annotations

import os
import tempfile

from ..errors import IOFailure


def default_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def temp_beside(path: str) -> tuple[int, str]:
    """Create a temporary file ``.NAME.*.normcli-tmp`` in the directory of ``path``, to be
    renamed over it; return its descriptor and path.

    mkstemp creates the file 0600; it gets the mode a plain create would give instead, so that
    the output does not depend on how it was written. IOFailure naming ``path`` when the file
    cannot be created.
    """
    directory, name = os.path.split(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".normcli-tmp", dir=directory)
    except OSError as exc:
        raise IOFailure(f"cannot write '{path}': {exc.strerror or exc}") from exc
    try:
        os.fchmod(fd, default_mode())
    except OSError:
        pass
    return fd, tmp
