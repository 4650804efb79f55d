"""Error hierarchy.

Every problem found while reading an archive is an :class:`ArchiveError` subclass whose message names
the member (``outer.zip:inner/member``), the field when there is one, and what was expected, so the CLI
can print one line and exit 1 without a traceback.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Root of every error ptycho-bridge raises on purpose."""


class ArchiveError(BridgeError):
    """Something about an archive (or a member inside it) is wrong, unsafe or unsupported."""

    def __init__(self, message: str, *, member: str | None = None, field: str | None = None) -> None:
        self.member = member
        self.field = field
        prefix = ""
        if member:
            prefix = f"{member}"
            if field:
                prefix += f" [{field}]"
            prefix += ": "
        elif field:
            prefix = f"[{field}]: "
        super().__init__(prefix + message)
        self.reason = message


class CorruptArchiveError(ArchiveError):
    """The bytes are not a readable container: not a zip, truncated, bad CRC, truncated HDF5."""


class UnsafeArchiveError(ArchiveError):
    """The container tries something we never allow: path traversal, symlinks, encryption, duplicates."""


class ArchiveLimitError(ArchiveError):
    """A size, count, ratio, depth or nesting bound was exceeded (zip bombs, pickle bombs)."""


class PickleDecodeError(ArchiveError):
    """A pickle stream is malformed, too deep, or holds a shape the safe reader will not decode."""


class FormatError(ArchiveError):
    """The archive is a valid container but its content does not follow the expected format."""


class SchemaError(FormatError):
    """A JSON document failed its JSON Schema; ``errors`` holds every message, best match first."""

    def __init__(self, message: str, *, member: str | None = None, errors: list[str] | None = None) -> None:
        super().__init__(message, member=member)
        self.errors = list(errors or [])


class SpecError(FormatError):
    """Parameters and tensors disagree (a tensor shape contradicts N, gridsize, n_filters_scale …)."""


class ChecksumError(FormatError):
    """A recorded sha256 or size does not match the bytes."""


class UnsupportedError(ArchiveError):
    """A recognisable archive that this version cannot handle (unknown era, newer major version)."""


class ConversionRefused(BridgeError):
    """The target backend cannot express the source network exactly; the message says which field and why."""

    def __init__(self, message: str, *, field: str | None = None, value: object = None) -> None:
        self.field = field
        self.value = value
        super().__init__(message)


class OptionError(BridgeError):
    """A requested option cannot apply to this input (more groups than patterns, a crop wider than N …).

    ``option`` names the command-line option (``--n-groups``); the message says what would work.
    """

    def __init__(self, message: str, *, option: str) -> None:
        self.option = option
        self.reason = message
        super().__init__(f"{option}: {message}")


class OutputExistsError(BridgeError):
    """A writer refused to replace an existing file without ``force``."""
