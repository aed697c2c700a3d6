import hashlib
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from platforge.errors import ContentError, DigestMismatchError
from platforge.oci.digest import (
    CHUNK_SIZE,
    Digest,
    Hasher,
    HashingReader,
    HashingWriter,
    digest_stream,
)

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_digest_of_bytes_matches_sha256_and_formats_as_alg_colon_hex():
    d = Digest.of(b"")
    assert str(d) == f"sha256:{EMPTY_SHA256}"
    assert d.algorithm == "sha256"
    assert d.encoded == d.hex == EMPTY_SHA256
    assert d.short() == EMPTY_SHA256[:12]


def test_sha512_digests_are_supported():
    d = Digest.of(b"abc", "sha512")
    assert str(d) == "sha512:" + hashlib.sha512(b"abc").hexdigest()
    assert Digest.parse(str(d)) == d


def test_parse_round_trips():
    text = f"sha256:{EMPTY_SHA256}"
    assert str(Digest.parse(text)) == text
    assert Digest.parse(text) == Digest.of(b"")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "missing 'algorithm:'"),
        (EMPTY_SHA256, "missing 'algorithm:'"),
        ("sha256:", "missing 'algorithm:'"),
        (":" + EMPTY_SHA256, "missing 'algorithm:'"),
        ("sha256:" + EMPTY_SHA256[:-1], "needs 64 lowercase hex characters, got 63"),
        ("sha256:" + EMPTY_SHA256 + "0", "got 65"),
        ("sha256:" + EMPTY_SHA256.upper(), "lowercase hex"),
        ("sha256:" + "g" * 64, "lowercase hex"),
        ("sha512:" + EMPTY_SHA256, "needs 128"),
        ("md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported algorithm 'md5'"),
        ("SHA256:" + EMPTY_SHA256, "invalid algorithm"),
        ("sha 256:" + EMPTY_SHA256, "invalid algorithm"),
    ],
)
def test_parse_rejects_malformed_digests_quoting_them(text, why):
    with pytest.raises(ContentError) as caught:
        Digest.parse(text)
    assert why in str(caught.value)
    if text:
        assert text[:20] in str(caught.value)


def test_parse_rejects_non_strings():
    with pytest.raises(ContentError, match="not a string"):
        Digest.parse(None)  # type: ignore[arg-type]


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_hasher_over_chunks_equals_digest_of_joined_bytes(chunks):
    hasher = Hasher()
    for chunk in chunks:
        hasher.update(chunk)
    joined = b"".join(chunks)
    assert hasher.digest() == Digest.of(joined)
    assert hasher.size == len(joined)


def test_hashing_reader_digests_what_it_hands_out_in_chunks():
    data = bytes(range(256)) * (CHUNK_SIZE // 256 * 3 + 7)
    reader = HashingReader(io.BytesIO(data))
    chunks = list(reader)
    assert max(len(c) for c in chunks) == CHUNK_SIZE
    assert b"".join(chunks) == data
    assert reader.size == len(data)
    assert reader.digest() == Digest.of(data)
    reader.verify(Digest.of(data), len(data))


def test_hashing_reader_drain_covers_the_unread_rest():
    reader = HashingReader(io.BytesIO(b"hello world"))
    assert reader.read(5) == b"hello"
    reader.drain()
    assert reader.digest() == Digest.of(b"hello world")


def test_hashing_writer_digests_what_it_writes():
    out = io.BytesIO()
    writer = HashingWriter(out)
    writer.write(b"abc")
    writer.write(b"def")
    writer.flush()
    assert out.getvalue() == b"abcdef"
    assert writer.digest() == Digest.of(b"abcdef")
    assert writer.size == 6


def test_verify_reports_size_and_digest_mismatches():
    hasher = Hasher()
    hasher.update(b"abc")
    with pytest.raises(DigestMismatchError, match="size is 3 bytes, expected 4"):
        hasher.verify(Digest.of(b"abc"), 4)
    with pytest.raises(DigestMismatchError, match="content hashes to sha256:"):
        hasher.verify(Digest.of(b"abd"), 3)
    with pytest.raises(DigestMismatchError, match="cannot verify sha512"):
        hasher.verify(Digest.of(b"abc", "sha512"))
    hasher.verify(Digest.of(b"abc"), 3)


def test_digest_stream_reads_everything_left():
    data = b"x" * (CHUNK_SIZE + 10)
    assert digest_stream(io.BytesIO(data)) == (Digest.of(data), len(data))


def test_unknown_hasher_algorithm_is_refused():
    with pytest.raises(ContentError, match="sha256 or sha512"):
        Hasher("md5")


def test_digests_order_and_hash_by_value():
    a, b = Digest.of(b"a"), Digest.of(b"b")
    assert len({a, b, Digest.parse(str(a))}) == 2
    assert sorted([a, b]) == sorted([b, a])
