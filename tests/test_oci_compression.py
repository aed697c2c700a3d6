"""Layer compression: detection by magic bytes, streaming readers and writers."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import tarfile
import tracemalloc
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from platforge.errors import ContentError
from platforge.oci import mediatypes
from platforge.oci.compression import (
    PEEK_SIZE,
    Compression,
    _isal_level,
    compression_of_media_type,
    detect,
    layer_media_type,
    open_reader,
    open_writer,
    peek,
)

FIXTURES = (
    Path(__file__).parents[1]
    / ".."
    / "shared"
    / "corpus"
    / "containers-image"
    / "pkg"
    / "compression"
    / "fixtures"
)


def fixture(name: str) -> bytes:
    if not FIXTURES.is_dir():
        pytest.skip(f"compression corpus not found at {FIXTURES}")
    return (FIXTURES / name).read_bytes()


class Unpeekable(io.RawIOBase):
    """A stream that can neither peek nor seek and returns short reads, like a pipe."""

    def __init__(self, data: bytes, step: int = 3) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self._step, len(self._data))
        buffer[:count] = self._data[:count]
        self._data = self._data[count:]
        return count


def compress(data: bytes, compression: Compression, level: int | None = None) -> bytes:
    out = io.BytesIO()
    writer = open_writer(out, compression, level)
    writer.write(data)
    writer.close()
    assert not out.closed
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Hello.gz", Compression.GZIP),
        ("Hello.zst", Compression.ZSTD),
        ("Hello.xz", Compression.XZ),
        ("Hello.bz2", Compression.BZIP2),
        ("Hello.uncompressed", Compression.NONE),
    ],
)
def test_detect_recognises_each_corpus_codec_by_its_magic(name, expected):
    assert detect(fixture(name)[:6]) is expected


@pytest.mark.parametrize("name", ["Hello.gz", "Hello.zst", "Hello.uncompressed"])
def test_open_reader_decompresses_each_readable_corpus_file(name):
    expected = fixture("Hello.uncompressed")
    assert open_reader(io.BytesIO(fixture(name))).read() == expected


@pytest.mark.parametrize("name", ["Hello.gz", "Hello.zst", "Hello.uncompressed"])
def test_open_reader_works_on_a_stream_that_cannot_peek_or_seek(name):
    stream = Unpeekable(fixture(name))
    assert open_reader(stream).read() == fixture("Hello.uncompressed")


@pytest.mark.parametrize(
    ("name", "codec"), [("Hello.xz", "xz"), ("Hello.bz2", "bzip2")]
)
def test_open_reader_refuses_xz_and_bzip2_with_a_clear_error(name, codec):
    with pytest.raises(ContentError, match=f"compressed with {codec}.*gzip or zstd"):
        open_reader(io.BytesIO(fixture(name)))


def test_open_reader_reads_every_member_of_a_multi_member_gzip():
    data = gzip.compress(b"first ") + compress(b"second", Compression.GZIP)
    assert open_reader(io.BytesIO(data)).read() == b"first second"


def test_open_reader_reads_every_frame_of_a_multi_frame_zstd():
    frames = zstandard.ZstdCompressor().compress(b"one ") + compress(
        b"two", Compression.ZSTD
    )
    assert open_reader(io.BytesIO(frames)).read() == b"one two"


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD])
def test_open_reader_refuses_a_truncated_stream(compression):
    data = compress(bytes(range(256)) * 4096, compression)
    with pytest.raises(ContentError, match="corrupt or truncated"):
        open_reader(io.BytesIO(data[: len(data) // 2])).read()


def test_open_reader_refuses_corrupt_gzip_data():
    data = bytearray(compress(b"hello world " * 5000, Compression.GZIP))
    data[20:40] = bytes(20)
    with pytest.raises(ContentError, match="gzip layer stream is corrupt"):
        open_reader(io.BytesIO(bytes(data))).read()


def test_zstd_skippable_frames_and_checksums_are_followed():
    skippable = (
        (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"12345"
    )
    checked = zstandard.ZstdCompressor(write_checksum=True).compress(b"checked ")
    data = checked + skippable + compress(b"plain", Compression.ZSTD)
    assert open_reader(io.BytesIO(data)).read() == b"checked plain"
    with pytest.raises(ContentError, match="inside a zstd frame"):
        open_reader(io.BytesIO(data[:-1])).read()


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD])
def test_compression_bombs_are_decoded_in_bounded_pieces(compression):
    # 256 MiB of zeros compress to a few hundred KiB at most; reads stay 1 MiB.
    bomb = compress(bytes(256 << 20), compression)
    assert len(bomb) < 1 << 20
    tracemalloc.start()
    try:
        reader = open_reader(io.BytesIO(bomb))
        total = 0
        while chunk := reader.read(1 << 20):
            total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 256 << 20
    assert peak < 8 << 20


def test_empty_input_reads_as_an_empty_plain_stream():
    assert open_reader(io.BytesIO(b"")).read() == b""


@pytest.mark.parametrize(
    "compression", [Compression.NONE, Compression.GZIP, Compression.ZSTD]
)
def test_writer_output_is_identical_for_identical_input(compression):
    data = b"reproducible layer bytes\n" * 10000
    assert compress(data, compression) == compress(data, compression)


def test_gzip_header_has_no_file_name_and_no_timestamp(tmp_path):
    # A named temp file must not leak its name into the gzip header.
    path = tmp_path / "blob-upload.tmp"
    with path.open("wb") as out:
        writer = open_writer(out, Compression.GZIP)
        writer.write(b"x" * 100)
        writer.close()
    header = path.read_bytes()[:10]
    flags, mtime = header[3], int.from_bytes(header[4:8], "little")
    assert flags & 0x08 == 0  # FNAME
    assert mtime == 0


@pytest.mark.parametrize(
    ("tool", "codec"), [("gzip", Compression.GZIP), ("zstd", Compression.ZSTD)]
)
def test_what_is_written_here_is_read_by_the_codecs_own_tool(tool, codec, tmp_path):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} tool not installed")
    data = b"text that compresses well\n" * 20000
    path = tmp_path / f"layer.{tool}"
    path.write_bytes(compress(data, codec))
    result = subprocess.run([tool, "-dc", str(path)], capture_output=True, check=True)
    assert result.stdout == data


def test_output_of_the_gzip_and_zstd_tools_is_read_back(tmp_path):
    tools = [shutil.which("gzip"), shutil.which("zstd")]
    if None in tools:
        pytest.skip("gzip or zstd tool not installed")
    data = b"made by another tool\n" * 5000
    for tool in ("gzip", "zstd"):
        made = subprocess.run(
            [tool, "-c"], input=data, capture_output=True, check=True
        ).stdout
        assert open_reader(io.BytesIO(made)).read() == data


@pytest.mark.parametrize(
    ("zlib_level", "isal_level"),
    [(0, 0), (1, 1), (2, 1), (3, 1), (4, 2), (6, 2), (7, 3), (9, 3)],
)
def test_gzip_levels_on_the_zlib_scale_map_onto_isal_levels(zlib_level, isal_level):
    assert _isal_level(zlib_level) == isal_level


def test_higher_gzip_levels_compress_smaller_and_all_read_back():
    data = b"".join(b"line %d of a log file\n" % i for i in range(50000))
    sizes = [len(compress(data, Compression.GZIP, level)) for level in (0, 1, 9)]
    assert sizes[0] > sizes[2]
    for level in range(10):
        packed = compress(data, Compression.GZIP, level)
        assert open_reader(io.BytesIO(packed)).read() == data


@pytest.mark.parametrize(
    ("compression", "level"),
    [(Compression.GZIP, 10), (Compression.GZIP, -1), (Compression.ZSTD, 23)],
)
def test_out_of_range_levels_are_refused(compression, level):
    with pytest.raises(ContentError, match="out of range"):
        open_writer(io.BytesIO(), compression, level)


def test_xz_cannot_be_written():
    with pytest.raises(ContentError, match="gzip or zstd"):
        open_writer(io.BytesIO(), Compression.XZ)


def test_layer_media_types_follow_the_codec():
    assert layer_media_type(Compression.NONE) == mediatypes.OCI_LAYER
    assert layer_media_type(Compression.GZIP) == mediatypes.OCI_LAYER_GZIP
    assert layer_media_type(Compression.ZSTD) == mediatypes.OCI_LAYER_ZSTD
    with pytest.raises(ContentError):
        layer_media_type(Compression.BZIP2)


@pytest.mark.parametrize(
    ("media_type", "expected"),
    [
        (mediatypes.OCI_LAYER, Compression.NONE),
        (mediatypes.OCI_LAYER_GZIP, Compression.GZIP),
        (mediatypes.OCI_LAYER_ZSTD, Compression.ZSTD),
        (mediatypes.DOCKER_LAYER_GZIP, Compression.GZIP),
        (mediatypes.DOCKER_FOREIGN_LAYER, Compression.GZIP),
    ],
)
def test_compression_of_a_layer_media_type(media_type, expected):
    assert compression_of_media_type(media_type) is expected


def test_compression_of_a_non_layer_media_type_is_an_error():
    with pytest.raises(ContentError, match="not a layer type"):
        compression_of_media_type(mediatypes.OCI_MANIFEST)


def test_compression_names_parse_as_users_write_them():
    assert Compression.parse("GZIP") is Compression.GZIP
    assert Compression.parse("uncompressed") is Compression.NONE
    assert Compression.parse("zstd") is Compression.ZSTD
    with pytest.raises(ContentError, match="unknown layer compression 'xz'"):
        Compression.parse("xz")


def test_reader_hands_out_pieces_without_reading_everything_at_once():
    # 64 MiB of zeros compress to almost nothing; a bounded read must stay bounded.
    data = compress(bytes(64 << 20), Compression.ZSTD)
    reader = open_reader(io.BytesIO(data))
    assert len(reader.read(1 << 20)) == 1 << 20
    total = 1 << 20
    while chunk := reader.read(1 << 20):
        total += len(chunk)
    assert total == 64 << 20


def test_a_plain_tar_whose_first_name_looks_like_a_magic_number_is_plain():
    for name in ("BZh91AY&SY-not-bzip2", "\x1f\x8b-odd-name", "(\xb5/\xfd"):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(name)
            info.size = 5
            tar.addfile(info, io.BytesIO(b"hello"))
        blob = out.getvalue()
        assert detect(blob[:PEEK_SIZE]) is Compression.NONE
        assert open_reader(Unpeekable(blob, step=100)).read() == blob


def test_peek_tops_up_a_buffered_reader_that_peeks_short():
    # A BufferedReader's peek returns what one raw read gave: here 100 bytes, too
    # few to see the tar header, so the "BZh" name would pass for bzip2.
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("BZh91AY&SY-not-bzip2")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    blob = out.getvalue()
    buffered = io.BufferedReader(Unpeekable(blob, step=100))
    assert len(buffered.peek(PEEK_SIZE)) < PEEK_SIZE

    prefix, stream = peek(buffered)

    assert prefix == blob[:PEEK_SIZE]
    assert detect(prefix) is Compression.NONE
    assert stream.read() == blob


def test_a_corrupt_tar_header_is_not_taken_for_a_tar():
    block = bytearray(512)
    block[:3] = b"BZh"
    block[148:156] = b"0000000\0"
    assert detect(bytes(block)) is Compression.BZIP2


def _no_magic(data: bytes) -> bool:
    return not data.startswith((b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\xfd7zXZ", b"BZh"))


@settings(max_examples=40, deadline=None)
@given(
    data=st.binary(max_size=20000).filter(_no_magic),
    compression=st.sampled_from([Compression.NONE, Compression.GZIP, Compression.ZSTD]),
)
def test_any_bytes_round_trip_through_writer_and_reader(data, compression):
    packed = compress(data, compression)
    assert open_reader(Unpeekable(packed, step=4096)).read() == data
