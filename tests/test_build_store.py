"""The store: an OCI layout with platforge's records beside it."""

import os
import time

import pytest

from platforge.build.store import Store
from platforge.errors import PlatforgeError
from platforge.oci.layout import Layout


def test_a_store_path_that_is_a_file_is_one_error(tmp_path):
    path = tmp_path / "store-file"
    path.write_text("not a directory")
    with pytest.raises(PlatforgeError, match=f"{path}.*a directory"):
        Store(path)
    with pytest.raises(PlatforgeError, match="set PLATFORGE_STORE to a writable"):
        Store(path / "below")


def test_the_store_is_a_layout_and_reads_small_blobs_verified(tmp_path):
    store = Store(tmp_path / "store")
    Layout.open(store.path)
    digest, size = store.put_bytes(b'{"config": true}')
    assert size == 16
    assert store.read_blob(digest) == b'{"config": true}'
    store.blob_path(digest).write_bytes(b'{"config": false}')
    with pytest.raises(PlatforgeError, match="corrupt"):
        store.read_blob(digest)


def test_leftovers_of_killed_builds_go_once_a_day_old(tmp_path):
    store = Store(tmp_path / "store")
    old_blob = store.blobs / ".tmp-killed"
    old_blob.write_bytes(b"partial")
    old_scratch = store.tmp / "upper-killed"
    (old_scratch / "sub").mkdir(parents=True)
    (old_scratch / "sub" / "f").write_text("x")
    fresh = store.blobs / ".tmp-running"
    fresh.write_bytes(b"being written")
    day_and_more = time.time() - 25 * 3600
    for path in (old_blob, old_scratch):
        os.utime(path, (day_and_more, day_and_more))
    Store(store.path)
    assert not old_blob.exists()
    assert not old_scratch.exists()
    assert fresh.exists()
