"""``in``: who may read what it writes, skip_download offline, the platform shown."""

import os
import stat
import uuid

import pytest

from test_concourse_support import (
    answer,
    push,
    resource,
    single_image,
    source_for,
)

pytestmark = pytest.mark.registry


@pytest.mark.parametrize("fmt", ["rootfs", "oci", "oci-layout"])
def test_every_file_in_writes_is_readable_by_other_users(registry_plain, tmp_path, fmt):
    repo = f"concourse/modes-{uuid.uuid4().hex[:8]}"
    digest = push(registry_plain, repo, single_image("modes"), ["latest"])
    request = {
        "source": source_for(registry_plain, repo),
        "version": {"tag": "latest", "digest": digest},
        "params": {"format": fmt},
    }
    old = os.umask(0o022)
    try:
        resource("in", request, str(tmp_path))
    finally:
        os.umask(old)
    paths = [tmp_path / name for name in ("repository", "tag", "digest")]
    if fmt == "rootfs":
        paths += [tmp_path / "metadata.json", tmp_path / "labels.json"]
        paths.append(tmp_path / "rootfs")
    elif fmt == "oci":
        paths += [tmp_path / "image.tar", tmp_path / "labels.json"]
    else:
        paths += [tmp_path / "oci", *(tmp_path / "oci").rglob("*")]
    modes = {
        str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in paths
    }
    expected = {name: 0o755 if (tmp_path / name).is_dir() else 0o644 for name in modes}
    assert modes == expected


def test_skip_download_makes_no_registry_request(registry_basic, tmp_path):
    # No credentials in the source (they were given to the put only), and a digest
    # the registry never had: upstream answers from the request alone.
    digest = "sha256:" + "2" * 64
    request = {
        "source": {"repository": f"{registry_basic.host}/concourse/x", "tag": "t"},
        "version": {"tag": "t", "digest": digest},
        "params": {"skip_download": True},
    }
    got = answer(resource("in", request, str(tmp_path)))
    assert got["version"] == {"tag": "t", "digest": digest}
    assert (tmp_path / "digest").read_text() == digest
    assert (tmp_path / "repository").read_text() == request["source"]["repository"]


def test_metadata_names_the_platform_of_a_lone_manifest_fetched(
    registry_plain, tmp_path
):
    repo = f"concourse/lone-{uuid.uuid4().hex[:8]}"
    digest = push(registry_plain, repo, single_image("lone", arch="arm64"), ["arm64"])
    request = {
        "source": source_for(
            registry_plain, repo, platform={"architecture": "s390x", "os": "linux"}
        ),
        "version": {"tag": "arm64", "digest": digest},
        "params": {"format": "oci"},
    }
    result = resource("in", request, str(tmp_path))
    names = {m["name"]: m["value"] for m in answer(result)["metadata"]}
    assert names["platform"] == "linux/arm64"
    assert "linux/s390x" in result.stderr


@pytest.mark.parametrize(
    "config",
    [
        b"[]",
        b'{"architecture": "amd64", "os": "linux", "config": "weird"}',
        b"\xff\xfe not json",
    ],
)
@pytest.mark.parametrize("fmt", ["rootfs", "oci"])
def test_an_unreadable_image_config_fails_in_one_line(
    registry_plain, tmp_path, config, fmt
):
    from test_concourse_check_cursor import _odd_config_image  # noqa: PLC0415

    repo = f"concourse/oddcfg-{uuid.uuid4().hex[:8]}"
    digest = push(registry_plain, repo, _odd_config_image(config), ["odd"])
    request = {
        "source": source_for(registry_plain, repo),
        "version": {"tag": "odd", "digest": digest},
        "params": {"format": fmt},
    }
    result = resource("in", request, str(tmp_path), check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1
    assert errors[0].startswith("platforge: error: ")
