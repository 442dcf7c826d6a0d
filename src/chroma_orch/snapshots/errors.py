"""The archive format's failures, each with a machine-readable ``reason``."""

from __future__ import annotations


class ArchiveError(Exception):
    """An archive could not be written or read; ``reason`` is a stable code a snapshot's
    ``failure_reason`` can carry, ``message`` says what happened for a human."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class UnsafeArchiveError(ArchiveError):
    """A member that could escape or subvert the target directory: an absolute name,
    ``..``, a symbolic or hard link, a device, a fifo, a duplicate."""

    def __init__(self, message: str) -> None:
        super().__init__("UnsafeArchive", message)


class CorruptArchiveError(ArchiveError):
    """The archive is ours but damaged: checksum mismatch, truncated, bad compression."""

    def __init__(self, message: str) -> None:
        super().__init__("CorruptArchive", message)


class ArchiveSpaceError(ArchiveError):
    """The target file system is full (ENOSPC/EDQUOT); raised from the ``OSError``."""

    def __init__(self, message: str) -> None:
        super().__init__("NoSpace", message)


class NotAnArchiveError(ArchiveError):
    """The bytes are not a chroma-orch snapshot (not zstd, not tar, no valid manifest)."""

    def __init__(self, message: str) -> None:
        super().__init__("NotAnArchive", message)


class IncompatibleArchiveError(ArchiveError):
    """The data was written by another Chroma major version than the server's."""

    def __init__(self, message: str) -> None:
        super().__init__("IncompatibleArchive", message)
