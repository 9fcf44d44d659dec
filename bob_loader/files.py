"""Opening an input file so that what is read is the regular file named, and nothing else.

An insurer controls the names in its inbox: between the watcher's listing and its claim, a
name can come to stand for a symbolic link (to any file the watcher may read), a hard link, a
FIFO (whose open never returns) or a device (``/dev/zero``: a read that never ends). Renaming
such an entry is harmless; following it is not. So every reader of an uploaded file — checksum
and records alike — reads from ONE descriptor opened here: what was checked is what is read.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

NOT_REGULAR = "not a regular file"


class NotARegularFile(OSError):
    """The name stands for something other than a plain file of its own; nothing was read."""


def open_regular(path: Path, *, follow_links: bool = False) -> BinaryIO:
    """``path`` open for binary reading, refused unless it is a regular file.

    Without ``follow_links`` (an uploaded file) a symbolic link is refused rather than followed
    and so is a file with other names (a hard link reaches a file the uploader could not read
    otherwise); an operator naming a file on the command line may use links.
    """
    # O_NONBLOCK: opening a FIFO would otherwise wait for a writer, for ever.
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if not follow_links:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_links:
            raise NotARegularFile(errno.ELOOP, f"{NOT_REGULAR} (a symbolic link)") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(errno.EINVAL, f"{NOT_REGULAR} ({_kind(st.st_mode)})")
        if not follow_links and st.st_nlink != 1:
            raise NotARegularFile(errno.EMLINK, f"{NOT_REGULAR} (it has other names)")
        os.set_blocking(fd, True)
        return open(fd, "rb", closefd=True)  # noqa: SIM115 — the caller owns the stream
    except BaseException:
        os.close(fd)
        raise


def sha256_of(stream: BinaryIO) -> str:
    """The SHA-256 of the rest of ``stream``, which is then rewound: the checksum and the
    records come from the same descriptor, so what was checked is what is loaded."""
    digest = hashlib.sha256()
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
    stream.seek(0)
    return digest.hexdigest()


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"
