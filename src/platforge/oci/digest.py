"""Digests: the content addresses of blobs, manifests and indexes.

A digest is ``algorithm:encoded``, for example ``sha256:`` followed by 64 lowercase
hex characters. It names bytes, so the same bytes always have the same digest and a
registry or a layout can check what it receives. platforge computes and verifies
``sha256`` (the default everywhere) and ``sha512``; a digest with any other
algorithm is refused, because nothing it names could be verified.

Data is digested as it streams: ``Hasher`` takes chunks, ``HashingReader`` and
``HashingWriter`` wrap a file object and digest what passes through them, and
``digest_stream`` reads a file object in 1 MiB chunks. Memory never grows with the
size of a blob.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from platforge.errors import ContentError, DigestMismatchError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "CHUNK_SIZE",
    "Digest",
    "Hasher",
    "HashingReader",
    "HashingWriter",
    "Readable",
    "Writable",
    "digest_stream",
]

CHUNK_SIZE = 1 << 20
"""Bytes read per step when streaming a blob (1 MiB)."""

# encoded length in lowercase hex, per algorithm the OCI image spec registers
_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_ALGORITHM = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*")
_HEX = re.compile(r"[0-9a-f]+")


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes | bytearray | memoryview, /) -> int | None: ...


@dataclass(frozen=True, order=True)
class Digest:
    """A verified-format digest; ``str(d)`` gives ``sha256:…``."""

    algorithm: str
    encoded: str

    def __post_init__(self) -> None:
        text = f"{self.algorithm}:{self.encoded}"
        if not _ALGORITHM.fullmatch(self.algorithm):
            raise ContentError(
                f"digest {text!r}: invalid algorithm; expected sha256:<64 hex>"
            )
        length = _HEX_LENGTH.get(self.algorithm)
        if length is None:
            raise ContentError(
                f"digest {text!r}: unsupported algorithm {self.algorithm!r}; "
                "platforge verifies sha256 and sha512 digests only"
            )
        if len(self.encoded) != length or not _HEX.fullmatch(self.encoded):
            raise ContentError(
                f"digest {text!r}: {self.algorithm} needs {length} lowercase hex "
                f"characters, got {len(self.encoded)}"
            )

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``algorithm:encoded``, refusing unknown algorithms and bad hex."""
        if not isinstance(text, str):
            raise ContentError(f"digest {text!r}: not a string; expected sha256:<hex>")
        algorithm, sep, encoded = text.partition(":")
        if not sep or not algorithm or not encoded:
            raise ContentError(
                f"digest {text!r}: missing 'algorithm:' prefix; expected sha256:<hex>"
            )
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """The digest of ``data`` (small content: manifests, configs)."""
        hasher = Hasher(algorithm)
        hasher.update(data)
        return hasher.digest()

    @property
    def hex(self) -> str:
        """The encoded part, which is also a blob's file name in a layout."""
        return self.encoded

    def short(self) -> str:
        """The first 12 hex characters, as docker shows image IDs."""
        return self.encoded[:12]


class Hasher:
    """Incremental digest and byte count of data fed in chunks."""

    def __init__(self, algorithm: str = "sha256") -> None:
        if algorithm not in _HEX_LENGTH:
            raise ContentError(
                f"digest algorithm {algorithm!r} is not supported; use sha256 or sha512"
            )
        self.algorithm = algorithm
        self._hash = hashlib.new(algorithm)
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hash.update(data)
        self.size += len(data)

    def digest(self) -> Digest:
        return Digest(self.algorithm, self._hash.hexdigest())

    def verify(
        self, expected: Digest, expected_size: int | None = None, *, what: str = "blob"
    ) -> None:
        """Raise ``DigestMismatchError`` unless the data seen matches."""
        if expected.algorithm != self.algorithm:
            raise DigestMismatchError(
                f"{what} {expected}: hashed with {self.algorithm}, cannot verify "
                f"{expected.algorithm}; hash with the digest's own algorithm"
            )
        if expected_size is not None and self.size != expected_size:
            raise DigestMismatchError(
                f"{what} {expected}: size is {self.size} bytes, expected "
                f"{expected_size}; the content is truncated or is not this blob"
            )
        got = self.digest()
        if got != expected:
            raise DigestMismatchError(
                f"{what} {expected}: content hashes to {got}; the content is "
                "corrupt or is not this blob"
            )


class _Hashing:
    """What both hashing wrappers offer: the size and digest of what passed."""

    def __init__(self, algorithm: str) -> None:
        self._hasher = Hasher(algorithm)

    @property
    def size(self) -> int:
        return self._hasher.size

    def digest(self) -> Digest:
        return self._hasher.digest()

    def verify(
        self, expected: Digest, expected_size: int | None = None, *, what: str = "blob"
    ) -> None:
        """Raise ``DigestMismatchError`` unless what passed matches."""
        self._hasher.verify(expected, expected_size, what=what)


class HashingReader(_Hashing):
    """Reads from ``fileobj`` and digests every byte handed out.

    Iterating yields 1 MiB chunks, so the reader can be given as the body of an
    HTTP upload.
    """

    def __init__(self, fileobj: Readable, algorithm: str = "sha256") -> None:
        super().__init__(algorithm)
        self._fileobj = fileobj

    def read(self, size: int = -1, /) -> bytes:
        data = self._fileobj.read(size)
        self._hasher.update(data)
        return data

    def readable(self) -> bool:
        return True

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK_SIZE):
            yield chunk

    def drain(self) -> None:
        """Read the rest of the stream, so that the digest covers all of it."""
        for _ in self:
            pass


class HashingWriter(_Hashing):
    """Writes to ``fileobj`` and digests every byte written.

    ``close()`` only flushes: the wrapped file stays open for its owner, so the
    writer can be handed to a compressor that closes what it writes into.
    """

    def __init__(self, fileobj: Writable, algorithm: str = "sha256") -> None:
        super().__init__(algorithm)
        self._fileobj = fileobj

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        self._fileobj.write(data)
        self._hasher.update(data)
        return len(data)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        flush = getattr(self._fileobj, "flush", None)
        if flush is not None:
            flush()

    def close(self) -> None:
        self.flush()


def digest_stream(fileobj: Readable, algorithm: str = "sha256") -> tuple[Digest, int]:
    """Digest and size of everything left in ``fileobj``, read in 1 MiB chunks."""
    hasher = Hasher(algorithm)
    while chunk := fileobj.read(CHUNK_SIZE):
        hasher.update(chunk)
    return hasher.digest(), hasher.size
