"""Builds running at once on one store: each publication into the store and the
unpacked-filesystem cache is race-safe across processes.

CI systems run many builds against one shared cache directory; two of them often
make the same stage filesystem, cache record or layer index at the same moment.
Whoever renames first wins; the others take the winner's copy as a cache hit.
"""

import subprocess
import sys

from platforge.build import filesystem, rootfs
from platforge.build.image import LayerRef
from platforge.build.store import Store
from test_build_support import busybox_layout

DOCKERFILE = """\
FROM base AS stage
RUN echo made-by-run > /made.txt && mkdir -p /srv && echo more > /srv/more.txt
FROM base
COPY --from=stage /made.txt /copied.txt
COPY --from=stage /srv/ /srv/
COPY hello.txt /hello.txt
"""


def test_three_builds_at_once_on_a_new_store_all_succeed(tmp_path, busybox):
    base = busybox_layout(busybox, tmp_path / "base", arches=("amd64",))
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    (context / "hello.txt").write_text("hello\n")
    env_store = tmp_path / "store"
    builds = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "platforge", "build", str(context)),
                *("--platform", "linux/amd64", "--quiet"),
                *("--build-context", f"base=oci-layout://{base.path}:latest"),
                *("-o", f"type=oci,dest={tmp_path / f'out-{n}'}"),
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={
                "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": str(tmp_path),
                "PLATFORGE_STORE": str(env_store),
                "SOURCE_DATE_EPOCH": "0",
            },
        )
        for n in range(3)
    ]
    finished = [(b.communicate(timeout=300), b.returncode) for b in builds]
    for (_out, err), status in finished:
        assert status == 0, err
        assert "Traceback" not in err
    digests = {out.strip() for (out, _err), _status in finished}
    assert len(digests) == 1


def test_a_stage_filesystem_another_process_published_first_is_a_hit(
    tmp_path, monkeypatch
):
    store = Store(tmp_path / "store")
    layers = [LayerRef("x", "sha256:" + "1" * 64, 1, "sha256:" + "2" * 64)]
    lower = tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc" / "mine").write_text("mine\n")
    monkeypatch.setattr(filesystem, "lowerdirs", lambda _store, _layers: [lower])
    real_flatten = rootfs.flatten

    def flatten_after_the_other_process(lowers, target):
        # The other process renames its finished tree into place while ours is
        # still being merged.
        (target / "etc").mkdir(parents=True)
        (target / "etc" / "theirs").write_text("theirs\n")
        return real_flatten(lowers, target)

    monkeypatch.setattr(rootfs, "flatten", flatten_after_the_other_process)
    tree = filesystem.flat_tree(store, layers)
    assert (tree / "etc" / "theirs").read_text() == "theirs\n"
    leftovers = [p.name for p in tree.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []
