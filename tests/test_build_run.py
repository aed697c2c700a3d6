"""RUN steps through the sandbox, for three architectures in one build.

The base is a real busybox image for amd64, arm64 and arm/v7 in the loopback
registry; foreign architectures run through QEMU's binfmt handlers.
"""

import json

import pytest

from platforge.oci.compression import open_reader
from platforge.oci.layer import iter_entries
from test_build_support import build_image, push_busybox_base

pytestmark = [pytest.mark.registry, pytest.mark.qemu, pytest.mark.privileged]

ARCHES = ("amd64", "arm64", "armhf")


def _blob(store, digest):
    return store / "blobs" / "sha256" / digest.split(":", 1)[1]


def _files_of_last_layer(store, descriptor):
    manifest = json.loads(_blob(store, str(descriptor.digest)).read_bytes())
    files = {}
    with _blob(store, manifest["layers"][-1]["digest"]).open("rb") as fh:
        for entry, content in iter_entries(open_reader(fh)):
            files[entry.path] = content.read() if content is not None else None
    return manifest, files


@pytest.mark.usefixtures("require_qemu")
def test_each_platform_layer_holds_its_own_architecture(
    tmp_path, tmp_store, registry_plain, busybox
):
    base = push_busybox_base(busybox, registry_plain.host, arches=ARCHES)
    (tmp_path / "Dockerfile").write_text(
        f"FROM {base}\n"
        "ENV GREETING=hello\n"
        "RUN uname -m > /arch && echo $GREETING > /tmp/greeting && rm /etc/group\n"
    )

    result, events = build_image(
        tmp_path, platforms_text="linux/amd64,linux/arm64,linux/arm/v7"
    )

    expected = {
        "linux/amd64": b"x86_64\n",
        "linux/arm64": b"aarch64\n",
        "linux/arm/v7": b"armv7l\n",
    }
    for platform, machine in expected.items():
        manifest, files = _files_of_last_layer(tmp_store, result.manifests[platform])
        assert files["arch"] == machine
        assert files["tmp/greeting"] == b"hello\n"
        assert "etc/.wh.group" in files  # the deletion is a whiteout
        assert not any(name.startswith("etc/hosts") for name in files)
        assert len(manifest["layers"]) == 2
    assert sum(1 for e in events if e.kind == "done") == 6


@pytest.mark.usefixtures("require_qemu")
def test_failing_run_names_platform_and_status(
    tmp_path, tmp_store, registry_plain, busybox
):
    from platforge.errors import StepError  # noqa: PLC0415

    base = push_busybox_base(busybox, registry_plain.host, arches=ARCHES)
    (tmp_path / "Dockerfile").write_text(f"FROM {base}\nRUN echo boom && exit 3\n")
    with pytest.raises(StepError, match=r"linux/arm64.*status 3.*boom"):
        build_image(tmp_path, platforms_text="linux/arm64")


def test_stage_on_the_build_platform_runs_once_for_all_targets(
    tmp_path, tmp_store, registry_plain, busybox
):
    base = push_busybox_base(busybox, registry_plain.host, arches=ARCHES)
    (tmp_path / "Dockerfile").write_text(
        f"FROM --platform=$BUILDPLATFORM {base} AS gen\n"
        "RUN cat /proc/sys/kernel/random/uuid > /stamp && uname -m > /built-on\n"
        f"FROM {base}\n"
        "COPY --from=gen /stamp /built-on /out/\n"
    )

    result, events = build_image(tmp_path, platforms_text="linux/amd64,linux/arm64")

    gen_runs = [e for e in events if e.kind == "done" and e.stage == "gen"]
    assert len(gen_runs) == 1
    stamps = set()
    for platform in ("linux/amd64", "linux/arm64"):
        _, files = _files_of_last_layer(tmp_store, result.manifests[platform])
        stamps.add(files["out/stamp"])
        assert files["out/built-on"] == b"x86_64\n"
    assert len(stamps) == 1
