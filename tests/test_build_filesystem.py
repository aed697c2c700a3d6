"""Layer directories for RUN and the flat tree for COPY --from, from the store."""

import json
import stat

from platforge.build import filesystem
from platforge.build.image import LayerRef
from platforge.build.store import Store
from test_build_support import build_image


def test_layer_directories_and_flat_trees_are_0755_like_any_root(tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("a\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /\nCOPY a.txt /b.txt\n")
    store_path = tmp_path / "store"
    result, _ = build_image(ctx, store=store_path)
    blobs = store_path / "blobs" / "sha256"
    descriptor = result.manifests["linux/amd64"]
    manifest = json.loads((blobs / descriptor.digest.encoded).read_text())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_text())
    layers = [
        LayerRef(x["mediaType"], x["digest"], x["size"], diff_id)
        for x, diff_id in zip(
            manifest["layers"], config["rootfs"]["diff_ids"], strict=True
        )
    ]
    store = Store(store_path)
    dirs = filesystem.lowerdirs(store, layers)
    flat = filesystem.flat_tree(store, layers)
    assert len(dirs) == 2
    for directory in [*dirs, flat]:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    assert (flat / "b.txt").read_text() == "a\n"
