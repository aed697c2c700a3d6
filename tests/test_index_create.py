"""`platforge index create`: merging images pushed separately into one index.

Single-platform images are OCI layouts made here with the oci APIs, pushed to the
test bed's real loopback registry with skopeo; the merged index is read back with
skopeo, the independent verifier.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from platforge import platforms
from platforge.errors import ManifestError
from platforge.oci import mediatypes as mt
from platforge.oci.content import Descriptor, ImageConfig, Manifest
from platforge.oci.digest import Digest
from platforge.oci.layer import Entry, write_layer
from platforge.oci.layout import Layout

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.registry


def tiny_layout(path: Path, platform: str, marker: str = "") -> Path:
    """A one-layer image for ``platform`` whose only file names it."""
    layout = Layout.create(path)
    parsed = platforms.parse(platform)
    config = ImageConfig.new(parsed)
    buffer = io.BytesIO()
    info = write_layer(
        [Entry.file("platform", f"{platform}{marker}\n".encode())], buffer
    )
    layout.write_blob(buffer.getvalue(), media_type=info.media_type)
    config.json["rootfs"]["diff_ids"].append(str(info.diff_id))
    manifest = Manifest.build(layout.write_config(config), [info.descriptor()])
    layout.write_manifest(manifest)
    layout.add_ref(manifest.descriptor(), "latest")
    return path


def platforge(*args: str):
    return subprocess.run(
        [sys.executable, "-m", "platforge", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=dict(os.environ),
    )


@pytest.fixture
def push(skopeo, tmp_path):
    def push(platform: str, ref: str, marker: str = "") -> str:
        """Push a tiny image; return its manifest digest as the registry has it."""
        layout = tiny_layout(
            tmp_path / f"l-{len(list(tmp_path.iterdir()))}", platform, marker
        )
        skopeo(
            "copy", "--dest-tls-verify=false", f"oci:{layout}:latest", f"docker://{ref}"
        )
        return digest_of(skopeo, ref)

    return push


def raw_manifest(skopeo, ref: str) -> bytes:
    out = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
    return out.stdout.encode()


def digest_of(skopeo, ref: str) -> str:
    return "sha256:" + hashlib.sha256(raw_manifest(skopeo, ref)).hexdigest()


def children(skopeo, ref: str) -> dict[str, str]:
    index = json.loads(raw_manifest(skopeo, ref))
    return {
        platforms.format(platforms.from_json(m["platform"])): m["digest"]
        for m in index["manifests"]
    }


def test_two_single_platform_pushes_become_one_index(registry_plain, skopeo, push):
    amd64 = push("linux/amd64", registry_plain.ref("idx/amd64", "v1"))
    arm64 = push("linux/arm64", registry_plain.ref("idx/arm64", "v1"))
    target = registry_plain.ref("idx/app", "v1")
    done = platforge(
        "index",
        "create",
        target,
        "--from",
        registry_plain.ref("idx/amd64", "v1"),
        "--from",
        registry_plain.ref("idx/arm64", "v1"),
        "--annotation",
        "org.opencontainers.image.version=1.0",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == digest_of(skopeo, target)
    assert children(skopeo, target) == {"linux/amd64": amd64, "linux/arm64": arm64}
    index = json.loads(raw_manifest(skopeo, target))
    assert index["annotations"] == {"org.opencontainers.image.version": "1.0"}
    # The children were copied into the target repository, so each is pullable there.
    arm = registry_plain.ref("idx/app", "v1").rsplit(":", 1)[0] + "@" + arm64
    assert digest_of(skopeo, arm) == arm64


def test_conflicting_platforms_are_refused_without_prefer(registry_plain, push):
    first = registry_plain.ref("clash/one", "v1")
    second = registry_plain.ref("clash/two", "v1")
    push("linux/amd64", first, marker=" one")
    push("linux/amd64", second, marker=" two")
    done = platforge(
        "index",
        "create",
        registry_plain.ref("clash/app", "v1"),
        "--from",
        first,
        "--from",
        second,
    )
    assert done.returncode == 1
    assert "platform linux/amd64 comes from both" in done.stderr
    assert "--prefer" in done.stderr


def test_prefer_settles_a_platform_offered_twice(registry_plain, skopeo, push):
    first = registry_plain.ref("pref/one", "v1")
    second = registry_plain.ref("pref/two", "v1")
    push("linux/amd64", first, marker=" one")
    wanted = push("linux/amd64", second, marker=" two")
    target = registry_plain.ref("pref/app", "v1")
    done = platforge(
        "index",
        "create",
        target,
        "--from",
        first,
        "--from",
        second,
        "--prefer",
        second,
    )
    assert done.returncode == 0, done.stderr
    assert children(skopeo, target) == {"linux/amd64": wanted}


def test_an_index_and_a_layout_directory_merge(registry_plain, skopeo, push, tmp_path):
    amd64 = push("linux/amd64", registry_plain.ref("mix/amd64", "v1"))
    arm64 = push("linux/arm64", registry_plain.ref("mix/arm64", "v1"))
    both = registry_plain.ref("mix/both", "v1")
    made = platforge(
        "index",
        "create",
        both,
        "--from",
        registry_plain.ref("mix/amd64", "v1"),
        "--from",
        registry_plain.ref("mix/arm64", "v1"),
    )
    assert made.returncode == 0, made.stderr
    layout = tiny_layout(tmp_path / "s390x-layout", "linux/s390x")
    s390x = Layout.open(layout).index().manifests[0].digest
    target = registry_plain.ref("mix/all", "v1")
    done = platforge("index", "create", target, "--from", both, "--from", str(layout))
    assert done.returncode == 0, done.stderr
    assert children(skopeo, target) == {
        "linux/amd64": amd64,
        "linux/arm64": arm64,
        "linux/s390x": str(s390x),
    }


def test_prefer_must_name_a_from_source(registry_plain):
    done = platforge(
        "index",
        "create",
        registry_plain.ref("bad/app", "v1"),
        "--from",
        registry_plain.ref("bad/one", "v1"),
        "--prefer",
        "elsewhere",
    )
    assert done.returncode == 2


def test_tags_of_one_repository_merge_without_copying(registry_plain, skopeo, push):
    amd64 = push("linux/amd64", registry_plain.ref("same/app", "amd64"))
    arm = push("linux/arm/v7", registry_plain.ref("same/app", "armv7"))
    target = registry_plain.ref("same/app", "latest")
    done = platforge(
        "index",
        "create",
        target,
        "--from",
        registry_plain.ref("same/app", "amd64"),
        "--from",
        registry_plain.ref("same/app", "armv7"),
    )
    assert done.returncode == 0, done.stderr
    assert children(skopeo, target) == {"linux/amd64": amd64, "linux/arm/v7": arm}


def test_ca_file_lets_index_create_verify_a_tls_registry(
    registry_tls, skopeo, tmp_path
):
    layout = tiny_layout(tmp_path / "tls-layout", "linux/amd64")
    source = registry_tls.ref("tls/amd64", "v1")
    skopeo(
        "copy", "--dest-tls-verify=false", f"oci:{layout}:latest", f"docker://{source}"
    )
    target = registry_tls.ref("tls/app", "v1")
    unverified = platforge("index", "create", target, "--from", source)
    assert unverified.returncode == 1
    assert "certificate verify failed" in unverified.stderr

    done = platforge(
        "index",
        "create",
        target,
        "--from",
        source,
        "--ca-file",
        str(registry_tls.ca_file),
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sha256:")


def test_attestations_ride_along_only_with_the_image_they_describe():
    from platforge.cli.run_cmds import _Entry, _merge  # noqa: PLC0415 - one test

    def entry(name: str, platform: str | None, describes: str | None = None):
        annotations = (
            {}
            if describes is None
            else {"vnd.docker.reference.digest": str(Digest.of(describes.encode()))}
        )
        descriptor = Descriptor(
            mt.OCI_MANIFEST,
            Digest.of(name.encode()),
            1,
            None if platform is None else platforms.parse(platform),
            annotations,
        )
        return _Entry("src", descriptor)

    image = entry("image", "linux/amd64")
    kept = entry("attestation of image", None, describes="image")
    orphan = entry("attestation of another", None, describes="another")
    artifact = entry("artifact", None)

    merged = _merge([image, kept, orphan, artifact], prefer=())

    assert merged == [image, kept, artifact]


def test_preferring_both_sources_of_a_platform_says_so():
    from platforge.cli.run_cmds import _Entry, _merge  # noqa: PLC0415 - one test

    def image(source: str) -> _Entry:
        descriptor = Descriptor(
            mt.OCI_MANIFEST,
            Digest.of(source.encode()),
            1,
            platforms.parse("linux/amd64"),
        )
        return _Entry(source, descriptor)

    with pytest.raises(ManifestError, match="both are given to --prefer; keep"):
        _merge([image("a"), image("b")], prefer=("a", "b"))
