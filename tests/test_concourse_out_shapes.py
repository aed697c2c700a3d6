"""`out` accepts every image shape oci-build-task has written since 2022.

Layouts come from our own writer (the exact index.json shapes) and tarballs from
skopeo, a real tool writing docker archives and OCI archives, so the converter
meets the byte layouts other programs produce.
"""

import json
import shutil
import uuid

import pytest

from platforge import platforms
from test_concourse_support import (
    OCI_INDEX,
    Blob,
    answer,
    multi_image,
    push,
    resource,
    sha,
    single_image,
    source_for,
    write_layout,
)

pytestmark = pytest.mark.registry


def push_shape(registry, workdir, image_param, skopeo):
    repo = f"concourse/shape-{uuid.uuid4().hex[:8]}"
    source = source_for(registry, repo, tag="shape")
    pushed = answer(
        resource(
            "out", {"source": source, "params": {"image": image_param}}, str(workdir)
        )
    )
    assert pushed["version"]["tag"] == "shape"
    raw = skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        f"docker://{registry.host}/{repo}:shape",
    ).stdout
    assert sha(raw.encode()) == pushed["version"]["digest"]
    return pushed["version"]["digest"], json.loads(raw)


def test_layout_with_one_manifest(registry_plain, tmp_path, skopeo):
    image = single_image("one")
    write_layout(tmp_path / "image" / "image", image, ref_name="latest")
    digest, _ = push_shape(registry_plain, tmp_path, "image/image", skopeo)
    assert digest == image.digest


def test_layout_whose_one_entry_is_a_nested_index(registry_plain, tmp_path, skopeo):
    image = multi_image("nested")
    write_layout(tmp_path / "image" / "image", image)
    digest, raw = push_shape(registry_plain, tmp_path, "image/image", skopeo)
    assert digest == image.digest
    assert raw["mediaType"] == OCI_INDEX
    assert len(raw["manifests"]) == 2


def test_layout_listing_each_platform_beside_the_marker(
    registry_plain, tmp_path, skopeo
):
    image = multi_image("flat")
    layout = tmp_path / "image" / "image"
    write_layout(layout, image)
    # index.json itself lists the per-platform manifests (no nested index).
    (layout / "index.json").write_bytes(image.top.data)
    assert (layout / "oci-layout").is_file()
    digest, raw = push_shape(registry_plain, tmp_path, "image/image", skopeo)
    assert digest == image.digest
    assert [m["platform"]["architecture"] for m in raw["manifests"]] == [
        "amd64",
        "arm64",
    ]


@pytest.mark.parametrize("transport", ["docker-archive", "oci-archive"])
def test_tarballs_written_by_skopeo(registry_plain, tmp_path, skopeo, transport):
    image = single_image("tarball")
    write_layout(tmp_path / "layout", image, ref_name="latest")
    target = tmp_path / "image" / "image.tar"
    target.parent.mkdir()
    skopeo(
        "copy", "oci:" + str(tmp_path / "layout") + ":latest", f"{transport}:{target}"
    )
    shutil.rmtree(tmp_path / "layout")
    _, raw = push_shape(registry_plain, tmp_path, "image/image.tar", skopeo)
    # Whatever the archive's layer form, the config (the image ID) is unchanged.
    assert raw["config"]["digest"] == image.blobs[0].digest


def test_docker_archive_with_buildkit_blob_paths(registry_plain, tmp_path, skopeo):
    """BuildKit's docker exporter: manifest.json plus an OCI layout, one tarball."""
    image = single_image("buildkit")
    layout = tmp_path / "stage"
    write_layout(layout, image, ref_name="latest")
    manifest = json.loads(image.top.data)
    (layout / "manifest.json").write_text(
        json.dumps(
            [
                {
                    "Config": "blobs/sha256/" + manifest["config"]["digest"][7:],
                    "RepoTags": ["app:latest"],
                    "Layers": ["blobs/sha256/" + manifest["layers"][0]["digest"][7:]],
                }
            ]
        )
    )
    (tmp_path / "image").mkdir()
    shutil.make_archive(str(tmp_path / "image" / "image"), "tar", layout)
    shutil.rmtree(layout)
    digest, _ = push_shape(registry_plain, tmp_path, "image/image.tar", skopeo)
    assert digest == image.digest


def test_a_directory_that_is_not_a_layout_is_refused(registry_plain, tmp_path):
    (tmp_path / "image").mkdir()
    request = {
        "source": source_for(registry_plain, "concourse/nolayout", tag="x"),
        "params": {"image": "image"},
    }
    result = resource("out", request, str(tmp_path), check=False)
    assert result.returncode == 1
    assert "without index.json" in result.stderr


def test_nested_index_with_a_buildkit_attestation_manifest(
    registry_plain, tmp_path, skopeo
):
    """BuildKit (2023 on) adds provenance as an unknown/unknown manifest."""
    image = multi_image("attested")
    statement = Blob("application/vnd.in-toto+json", b'{"_type": "statement"}')
    config = Blob("application/vnd.oci.image.config.v1+json", b"{}")
    attestation = Blob(
        "application/vnd.oci.image.manifest.v1+json",
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config.descriptor(),
                "layers": [statement.descriptor()],
            }
        ).encode(),
    )
    index = json.loads(image.top.data)
    index["manifests"].append(
        attestation.descriptor(
            platform={"architecture": "unknown", "os": "unknown"},
            annotations={
                "vnd.docker.reference.digest": index["manifests"][0]["digest"],
                "vnd.docker.reference.type": "attestation-manifest",
            },
        )
    )
    image.top = Blob(OCI_INDEX, json.dumps(index).encode())
    image.blobs += [statement, config]
    image.manifests.append(attestation)
    write_layout(tmp_path / "image" / "image", image, ref_name="latest")
    digest, raw = push_shape(registry_plain, tmp_path, "image/image", skopeo)
    assert digest == image.digest
    assert len(raw["manifests"]) == 3
    # get picks the worker's platform, never the attestation
    repo = f"concourse/attested-{uuid.uuid4().hex[:8]}"
    source = source_for(registry_plain, repo, tag="a")
    request = {"source": source, "params": {"image": "image/image"}}
    version = answer(resource("out", request, str(tmp_path)))["version"]
    dest = tmp_path / "get"
    resource("in", {"source": source, "version": version}, str(dest))
    arch = platforms.host().architecture
    assert (dest / "rootfs" / "seed.txt").read_text() == f"attested-{arch}"


def test_layout_with_the_single_image_marker_pushes_that_image(
    registry_plain, tmp_path, skopeo
):
    """registry-image's oci-layout shape: entries plus single-image-digest."""
    wanted, other = single_image("wanted"), single_image("other")
    layout = tmp_path / "image" / "image"
    write_layout(layout, other, ref_name="other")
    write_layout(tmp_path / "wanted", wanted)
    for blob in (tmp_path / "wanted" / "blobs" / "sha256").iterdir():
        shutil.copy(blob, layout / "blobs" / "sha256" / blob.name)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"].append(wanted.top.descriptor())
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "single-image-digest").write_text(wanted.digest)
    before = (layout / "index.json").read_bytes()
    digest, _ = push_shape(registry_plain, tmp_path, "image/image", skopeo)
    assert digest == wanted.digest
    assert (layout / "index.json").read_bytes() == before  # the input is untouched


def test_get_oci_layout_of_one_image_writes_the_marker_and_labels(
    registry_plain, tmp_path
):
    repo = f"concourse/marker-{uuid.uuid4().hex[:8]}"
    image = single_image("marker", labels={"a": "b"})
    digest = push(registry_plain, repo, image, ["m"])
    source = source_for(registry_plain, repo)
    version = {"tag": "m", "digest": digest}
    for fmt in ("oci-layout", "oci"):
        dest = tmp_path / fmt
        request = {"source": source, "version": version, "params": {"format": fmt}}
        resource("in", request, str(dest))
    # labels.json comes with rootfs and oci, as upstream; oci-layout has the marker
    assert json.loads((tmp_path / "oci" / "labels.json").read_text()) == {"a": "b"}
    marker = tmp_path / "oci-layout" / "oci" / "single-image-digest"
    assert marker.read_text() == digest
    # and out reads that layout back to the same digest
    target = source_for(registry_plain, repo + "-back", tag="back")
    request = {"source": target, "params": {"image": "oci"}}
    pushed = answer(resource("out", request, str(tmp_path / "oci-layout")))
    assert pushed["version"]["digest"] == digest
