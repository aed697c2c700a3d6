"""Which platform an image says it is for: the config and the index entry agree
with the platform it was built for, and a base for another platform is refused.

Images are built FROM scratch out of the test's own context, so no registry is
needed except for the one registry base.
"""

import json

import pytest

from platforge.errors import BuildError
from test_build_support import build_image, oci_output


def _configs(store, result):
    blobs = store / "blobs" / "sha256"
    found = {}
    for name, descriptor in result.manifests.items():
        manifest = json.loads((blobs / descriptor.digest.encoded).read_text())
        config = json.loads((blobs / manifest["config"]["digest"][7:]).read_text())
        found[name] = (descriptor.platform, config)
    return found


@pytest.fixture
def context(tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("hello\n")
    return ctx


@pytest.mark.parametrize("targets", ["linux/arm64", "linux/amd64,linux/arm/v7"])
def test_a_stage_from_a_build_platform_stage_is_still_the_targets_image(
    tmp_path, context, targets
):
    (context / "Dockerfile").write_text(
        "FROM --platform=$BUILDPLATFORM scratch AS build\nCOPY hello.txt /\n"
        "FROM build\nLABEL made=here\n"
    )
    store = tmp_path / "store"
    result, _ = build_image(context, platforms_text=targets, store=store)
    for name, (platform, config) in _configs(store, result).items():
        os_name, arch, *variant = name.split("/")
        assert (config["os"], config["architecture"]) == (os_name, arch)
        assert config.get("variant") == (variant[0] if variant else None)
        assert (platform.os, platform.architecture) == (os_name, arch)


def test_a_lone_manifest_base_for_another_platform_is_refused(tmp_path, context):
    (context / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /\n")
    store = tmp_path / "store"
    arm_only = tmp_path / "arm-only"
    build_image(
        context, platforms_text="linux/arm64", store=store, outputs=oci_output(arm_only)
    )
    (context / "Dockerfile").write_text("FROM base\nLABEL x=1\n")
    contexts = {"base": f"oci-layout://{arm_only}"}
    with pytest.raises(BuildError, match=r"is for linux/arm64, not linux/amd64"):
        build_image(
            context,
            platforms_text="linux/amd64,linux/arm64",
            store=store,
            build_contexts=contexts,
        )
    result, _ = build_image(
        context, platforms_text="linux/arm64", store=store, build_contexts=contexts
    )
    assert list(result.manifests) == ["linux/arm64"]


@pytest.mark.registry
def test_a_lone_manifest_in_a_registry_is_checked_too(
    tmp_path, context, tmp_store, registry_plain
):
    (context / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /\n")
    tag = f"{registry_plain.host}/platforms/amd64-only:1"
    build_image(context, tags=[tag], push=True)
    (context / "Dockerfile").write_text(f"FROM {tag}\nLABEL x=1\n")
    with pytest.raises(BuildError, match=r"is for linux/amd64, not linux/arm64"):
        build_image(context, platforms_text="linux/amd64,linux/arm64")


def test_an_oci_layout_context_by_digest_and_its_corrupt_blobs(tmp_path, context):
    (context / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /\n")
    layout = tmp_path / "layout"
    made, _ = build_image(
        context, store=tmp_path / "s1", outputs=oci_output(layout), tags=["x:v1"]
    )
    (context / "Dockerfile").write_text("FROM base\nLABEL x=1\n")
    pinned = {"base": f"oci-layout://{layout}@{made.digest}"}
    result, _ = build_image(context, store=tmp_path / "s2", build_contexts=pinned)
    assert list(result.manifests) == ["linux/amd64"]
    wrong = {"base": f"oci-layout://{layout}@sha256:{'0' * 64}"}
    with pytest.raises(BuildError, match="no image with digest"):
        build_image(context, store=tmp_path / "s3", build_contexts=wrong)
    blobs = layout / "blobs" / "sha256"
    biggest = max(blobs.iterdir(), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:-1] + b"X")
    with pytest.raises(BuildError, match="write the layout again"):
        build_image(context, store=tmp_path / "s4", build_contexts=pinned)
