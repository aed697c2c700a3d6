"""The store: an OCI layout with platforge's records beside it."""

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
