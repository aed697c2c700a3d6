"""Compression of layer blobs: detect it, read through it, write with it.

A layer blob is a tar archive, stored either as is or compressed. The media type says
which codec was used, but registries and older tools get media types wrong often
enough that platforge trusts the first bytes of the blob instead: every codec starts
its stream with a fixed magic number.

=========  ======================  ==========================================
codec      magic (hex)             platforge
=========  ======================  ==========================================
gzip       ``1f 8b``               read (also multi-member) and written
zstd       ``28 b5 2f fd``         read (also multi-frame) and written
xz         ``fd 37 7a 58 5a 00``   detected only: refused with a clear error
bzip2      ``42 5a 68`` ("BZh")    detected only: refused with a clear error
(none)     anything else           read and written as plain tar
=========  ======================  ==========================================

gzip goes through ISA-L (``isal.igzip``), about 15 times faster than the standard
library's default level, and zstd through ``zstandard``. Both streams are read and
written in pieces; nothing here holds a whole blob in memory.

Levels
------

``level`` for gzip is on the familiar zlib scale 0-9 (what ``gzip -N``, buildx and
buildah call the compression level). ISA-L has only four levels, so the scale maps
onto them as follows; the default is ISA-L level 1.

==============  ===========
zlib scale      ISA-L level
==============  ===========
0               0  (ISA-L has no "store only"; 0 is its fastest level)
1, 2, 3         1  (default)
4, 5, 6         2
7, 8, 9         3
==============  ===========

``level`` for zstd is zstd's own scale, 1-22 (default 3); zero and negative levels
are zstd's fast modes. The zstd writer runs single-threaded, because multi-threaded
zstd can split frames differently from run to run.

Reproducibility: the gzip header carries no file name and a zero timestamp, the zstd
frame carries no content size, so the same input, codec and level always give the
same bytes. Different codecs (ISA-L versus zlib) give different bytes at the "same"
level, which is why platforge pins ISA-L.
"""

from __future__ import annotations

import enum
import gzip
import io
import logging
import zlib
from typing import IO, TYPE_CHECKING, Any, Protocol, cast

import zstandard
from isal import igzip
from isal.igzip_lib import IsalError

from platforge.errors import ContentError
from platforge.oci import mediatypes

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = [
    "DEFAULT_GZIP_LEVEL",
    "DEFAULT_ZSTD_LEVEL",
    "PEEK_SIZE",
    "Compression",
    "WriteStream",
    "compression_of_media_type",
    "detect",
    "layer_media_type",
    "open_reader",
    "open_writer",
    "peek",
]

log = logging.getLogger("platforge.oci.compression")

DEFAULT_GZIP_LEVEL = 1
"""Default gzip level on the zlib scale; maps to ISA-L level 1."""

DEFAULT_ZSTD_LEVEL = 3

PEEK_SIZE = 512
"""Bytes ``detect`` wants: one tar header, so a plain tar is recognised as such."""

_CHUNK = 1 << 20

# What the codecs raise on corrupt or truncated input. Other OSErrors come from
# the caller's stream and are the caller's to report.
_DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (
    gzip.BadGzipFile,
    EOFError,
    zlib.error,
    # isal's stub declares IsalError as an instance; it is the class.
    cast("type[BaseException]", IsalError),
    zstandard.ZstdError,
)


class Compression(enum.Enum):
    """How a layer blob is compressed. XZ and BZIP2 are recognised, never handled."""

    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"
    XZ = "xz"
    BZIP2 = "bzip2"

    @classmethod
    def parse(cls, name: str) -> Compression:
        """The codec named ``name`` ("gzip", "zstd", "none"/"uncompressed")."""
        wanted = name.strip().lower()
        if wanted == "uncompressed":
            return cls.NONE
        for member in cls:
            if member.value == wanted and member in _WRITABLE:
                return member
        raise ContentError(
            f"unknown layer compression {name!r}: use one of gzip, zstd, uncompressed"
        )


_WRITABLE = (Compression.NONE, Compression.GZIP, Compression.ZSTD)

_MAGIC: tuple[tuple[bytes, Compression], ...] = (
    (b"\x1f\x8b", Compression.GZIP),
    (b"\x28\xb5\x2f\xfd", Compression.ZSTD),
    (b"\xfd7zXZ\x00", Compression.XZ),
    (b"BZh", Compression.BZIP2),
)


def detect(prefix: bytes) -> Compression:
    """The codec of a stream that starts with ``prefix`` (give ``PEEK_SIZE`` bytes).

    A prefix that is a valid tar header is a plain tar, even when the first file
    name happens to start like a magic number ("BZh..."). Otherwise the magic
    numbers decide, and a prefix that matches none is taken as a plain tar.
    """
    if _is_tar_header(prefix[:512]):
        return Compression.NONE
    for magic, compression in _MAGIC:
        if prefix.startswith(magic):
            return compression
    return Compression.NONE


def _is_tar_header(block: bytes) -> bool:
    # The header checksum: the byte sum of the block with its own 8-byte field
    # counted as spaces, stored as octal at offset 148.
    if len(block) < 512:
        return False
    field = block[148:156].replace(b"\0", b" ").strip()
    if not field or any(byte not in b"01234567" for byte in field):
        return False
    expected = int(field, 8)
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:512])
    # Some old writers summed signed bytes; readers accept both.
    high = sum(1 for byte in block[:148] + block[156:512] if byte >= 0x80)
    return expected in (unsigned, unsigned - 256 * high)


def layer_media_type(compression: Compression) -> str:
    """The OCI layer media type for a layer compressed with ``compression``."""
    if compression is Compression.NONE:
        return mediatypes.OCI_LAYER
    if compression is Compression.GZIP:
        return mediatypes.OCI_LAYER_GZIP
    if compression is Compression.ZSTD:
        return mediatypes.OCI_LAYER_ZSTD
    raise ContentError(
        f"layers compressed with {compression.value} have no OCI media type that "
        "platforge writes: use gzip, zstd or uncompressed"
    )


def compression_of_media_type(media_type: str) -> Compression:
    """The codec a layer media type names (OCI or Docker).

    Raises ``ContentError`` for a media type that is not a layer.
    """
    name = mediatypes.layer_compression(media_type)
    if name is None:
        raise ContentError(
            f"media type {media_type!r} is not a layer type platforge knows: "
            "expected an OCI or Docker layer tar (plain, gzip or zstd)"
        )
    return Compression(name)


def _unsupported(compression: Compression) -> ContentError:
    return ContentError(
        f"layer is compressed with {compression.value}, which platforge does not "
        "read: recompress the layer with gzip or zstd"
    )


class _PrefixedReader(io.RawIOBase):
    """A stream that replays bytes already read from ``inner``, then reads on.

    Used when the caller's file object cannot peek or seek (a pipe, an HTTP body).
    """

    def __init__(self, prefix: bytes, inner: IO[bytes]) -> None:
        super().__init__()
        self._prefix = memoryview(prefix)
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            count = min(len(view), len(self._prefix))
            view[:count] = self._prefix[:count]
            self._prefix = self._prefix[count:]
            return count
        data = self._inner.read(len(view))
        view[: len(data)] = data
        return len(data)


class WriteStream(Protocol):
    """What ``open_writer`` writes into and returns: a binary stream to write."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int | None: ...

    def flush(self) -> object: ...

    def close(self) -> None: ...


class _ReadsInto(Protocol):
    def readinto(self, buffer: WriteableBuffer, /) -> int | None: ...

    def close(self) -> None: ...


class _DecompressingReader(io.RawIOBase):
    """Wraps a decompressor so that corrupt input surfaces as a ``ContentError``."""

    def __init__(self, inner: _ReadsInto, compression: Compression) -> None:
        super().__init__()
        self._inner = inner
        self._compression = compression

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        try:
            return self._inner.readinto(buffer) or 0
        except _DECOMPRESSION_ERRORS as exc:
            raise ContentError(
                f"{self._compression.value} layer stream is corrupt or truncated "
                f"({exc}): fetch the blob again or check its digest"
            ) from exc

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


class _ZstdFraming:
    """Follows the frame and block headers of a zstd stream to see where frames end.

    zstandard's stream reader decodes with bounded memory but ends quietly when
    its input stops inside a frame, which would let a truncated layer pass as a
    shorter one. Block headers carry their sizes, so walking them tells whether
    the input stopped between frames; the content itself is not looked at.
    """

    _MAGIC = 0xFD2FB528
    _SKIPPABLE = range(0x184D2A50, 0x184D2A60)

    def __init__(self) -> None:
        self._header = bytearray()
        self._need = 4  # header bytes wanted next
        self._skip = 0  # payload bytes to pass over first
        self._state = "magic"
        self._checksum = False

    @property
    def between_frames(self) -> bool:
        return self._state == "magic" and not self._header and not self._skip

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            take = min(self._need - len(self._header), len(view))
            self._header += view[:take]
            view = view[take:]
            if len(self._header) == self._need:
                header = bytes(self._header)
                self._header.clear()
                self._advance(header)

    def _advance(self, header: bytes) -> None:
        value = int.from_bytes(header, "little")
        if self._state == "magic":
            if value == self._MAGIC:
                self._state, self._need = "frame-header", 1
            elif value in self._SKIPPABLE:
                self._state, self._need = "skippable-size", 4
            else:
                raise zstandard.ZstdError("unknown zstd frame magic number")
        elif self._state == "skippable-size":
            self._state, self._need, self._skip = "magic", 4, value
        elif self._state == "frame-header":
            single_segment = bool(value & 0x20)
            self._checksum = bool(value & 0x04)
            window = 0 if single_segment else 1
            dictionary = (0, 1, 2, 4)[value & 0x03]
            content_size = (1 if single_segment else 0, 2, 4, 8)[value >> 6]
            self._state, self._need = "block", 3
            self._skip = window + dictionary + content_size
        else:  # a block header: last flag, type, size
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:
                raise zstandard.ZstdError("reserved zstd block type")
            self._skip = 1 if kind == 1 else size
            if last:
                self._state, self._need = "magic", 4
                self._skip += 4 if self._checksum else 0


class _FramedSource:
    """The compressed input, shown to ``_ZstdFraming`` as the decoder reads it."""

    def __init__(self, source: IO[bytes], framing: _ZstdFraming) -> None:
        self._source = source
        self._framing = framing

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self._framing.feed(data)
        return data


class _ZstdReader(io.RawIOBase):
    """Every zstd frame of ``source`` in turn, refusing a stream cut inside a frame."""

    def __init__(self, source: IO[bytes]) -> None:
        super().__init__()
        self._framing = _ZstdFraming()
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            cast("IO[bytes]", _FramedSource(source, self._framing)),
            read_size=_CHUNK,
            read_across_frames=True,
            closefd=False,
        )

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        count: int = self._reader.readinto(buffer)
        wanted = memoryview(buffer).nbytes
        if count == 0 and wanted and not self._framing.between_frames:
            raise zstandard.ZstdError("input ends inside a zstd frame")
        return count


def peek(fileobj: IO[bytes]) -> tuple[bytes, IO[bytes]]:
    """The first ``PEEK_SIZE`` bytes of ``fileobj`` and a stream that still has them.

    Give the prefix to ``detect`` and read the blob from the returned stream: it is
    ``fileobj`` itself when that could peek far enough, else a stream that replays
    the prefix first. A buffered reader's ``peek`` may return fewer bytes than asked
    (only what one raw read gave), so a short answer is topped up by reading.
    """
    peek_buffer = getattr(fileobj, "peek", None)
    if peek_buffer is not None:
        prefix: bytes = peek_buffer(PEEK_SIZE)[:PEEK_SIZE]
        if len(prefix) >= PEEK_SIZE or not prefix:
            return prefix, fileobj
    prefix = b""
    # A short read is legal for raw streams, so keep reading until PEEK_SIZE or EOF.
    while len(prefix) < PEEK_SIZE:
        more = fileobj.read(PEEK_SIZE - len(prefix))
        if not more:
            break
        prefix += more
    replay = io.BufferedReader(_PrefixedReader(prefix, fileobj), _CHUNK)
    return prefix, replay


def _isal_gzip(fileobj: object, mode: str, **options: Any) -> Any:
    # isal's GzipFile.__init__ carries no annotations, so mypy calls it untyped.
    return igzip.GzipFile(  # type: ignore[no-untyped-call]
        fileobj=fileobj, mode=mode, **options
    )


def open_reader(fileobj: IO[bytes]) -> IO[bytes]:
    """A stream of the uncompressed bytes of ``fileobj``, whatever its codec.

    The codec is detected from the first bytes, not from a media type. gzip input
    may have several members and zstd input several frames; all are read in turn.
    Closing the returned stream does not close ``fileobj``.
    """
    prefix, stream = peek(fileobj)
    compression = detect(prefix)
    log.debug("layer stream compression: %s", compression.value)
    inner: _ReadsInto
    if compression is Compression.NONE:
        inner = _Unclosing(stream)
    elif compression is Compression.GZIP:
        inner = _isal_gzip(stream, "rb")
    elif compression is Compression.ZSTD:
        inner = _ZstdReader(stream)
    else:
        raise _unsupported(compression)
    return io.BufferedReader(_DecompressingReader(inner, compression), _CHUNK)


class _Unclosing(io.RawIOBase):
    """Passes reads and writes through to a stream that the caller keeps open."""

    def __init__(self, inner: IO[bytes] | WriteStream) -> None:
        super().__init__()
        self._inner = inner

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        # Only a stream being read is ever read from; WriteStream has no read().
        data = self._inner.read(len(view))  # type: ignore[union-attr]
        view[: len(data)] = data
        return len(data)

    def write(self, data: ReadableBuffer) -> int:
        view = memoryview(data)
        self._inner.write(view)
        return view.nbytes

    def flush(self) -> None:
        if not self.closed:
            self._inner.flush()

    def close(self) -> None:
        # Flush what we passed on, but leave the caller's stream open.
        if not self.closed:
            self._inner.flush()
        super().close()


def _isal_level(level: int) -> int:
    if not 0 <= level <= 9:
        raise ContentError(
            f"gzip compression level {level} is out of range: use 0-9 (default "
            f"{DEFAULT_GZIP_LEVEL})"
        )
    if level == 0:
        return 0
    return (level - 1) // 3 + 1


def open_writer(
    fileobj: WriteStream, compression: Compression, level: int | None = None
) -> WriteStream:
    """A stream that compresses what is written to it into ``fileobj``.

    Close the returned stream to finish the compressed stream; that does not close
    ``fileobj``. ``level`` follows the tables in this module's docstring.
    """
    if compression is Compression.NONE:
        return _Unclosing(fileobj)
    if compression is Compression.GZIP:
        isal_level = _isal_level(DEFAULT_GZIP_LEVEL if level is None else level)
        # An empty file name and a zero mtime keep the gzip header reproducible.
        gzip_writer: WriteStream = _isal_gzip(
            fileobj, "wb", filename="", compresslevel=isal_level, mtime=0
        )
        return gzip_writer
    if compression is Compression.ZSTD:
        zstd_level = DEFAULT_ZSTD_LEVEL if level is None else level
        if not -(1 << 17) <= zstd_level <= zstandard.MAX_COMPRESSION_LEVEL:
            raise ContentError(
                f"zstd compression level {zstd_level} is out of range: use 1-"
                f"{zstandard.MAX_COMPRESSION_LEVEL} (default {DEFAULT_ZSTD_LEVEL})"
            )
        compressor = zstandard.ZstdCompressor(
            level=zstd_level, write_content_size=False, threads=0
        )
        writer: WriteStream = compressor.stream_writer(
            cast("IO[bytes]", fileobj), write_size=_CHUNK, closefd=False
        )
        return writer
    raise _unsupported(compression)
