"""check → in (every format) → out, through `platforge resource`, on real registries."""

import hashlib
import io
import json
import tarfile
import uuid
from pathlib import Path

import pytest

from test_concourse_support import (
    answer,
    client_for,
    multi_image,
    push,
    resource,
    single_image,
    source_for,
    write_layout,
)

pytestmark = pytest.mark.registry


@pytest.fixture(params=["plain", "basic", "token"])
def registry(request):
    return request.getfixturevalue(f"registry_{request.param}")


def test_round_trip_check_in_out(registry, tmp_path, skopeo):
    repo = f"concourse/trip-{uuid.uuid4().hex[:8]}"
    image = multi_image("trip")
    digest = push(registry, repo, image, ["1.0.0"])
    source = source_for(registry, repo, tag="1.0.0")

    # check: the index digest of the multi-platform image
    versions = answer(resource("check", {"source": source}))
    assert versions == [{"tag": "1.0.0", "digest": digest}]
    version = versions[0]

    _in_rootfs(source, version, digest, tmp_path / "rootfs-get")
    _in_oci(source, version, image, tmp_path / "oci-get", skopeo)
    _in_layout_then_out(
        registry, repo, source, version, image, tmp_path=tmp_path, skopeo=skopeo
    )


def _in_rootfs(source, version, digest, dest):
    """in, rootfs for arm64: files, metadata.json, labels.json."""
    params = {"platform": {"architecture": "arm64"}}
    got = answer(
        resource(
            "in", {"source": source, "version": version, "params": params}, str(dest)
        )
    )
    assert got["version"] == version
    names = {m["name"]: m["value"] for m in got["metadata"]}
    assert names["repository"] == source["repository"]
    assert names["tag"] == "1.0.0"
    assert names["platform"] == "linux/arm64"
    assert (dest / "repository").read_text() == source["repository"]
    assert (dest / "tag").read_text() == "1.0.0"
    assert (dest / "digest").read_text() == digest
    assert (dest / "rootfs" / "seed.txt").read_text() == "trip-arm64"
    meta = json.loads((dest / "metadata.json").read_text())
    assert meta["env"] == ["PATH=/usr/bin:/bin", "SEED=trip-arm64"]
    assert meta["user"] == "1000"
    assert meta["cmd"] == ["/bin/hello"]
    assert meta["entrypoint"] == ["/bin/sh"]
    assert json.loads((dest / "labels.json").read_text()) == {"seed": "trip-arm64"}


def _in_oci(source, version, image, dest, skopeo):
    """in, oci: one platform in image.tar that skopeo reads as both formats."""
    params = {"format": "oci", "platform": {"architecture": "amd64"}}
    resource("in", {"source": source, "version": version, "params": params}, str(dest))
    tarball = dest / "image.tar"
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    assert {"index.json", "oci-layout", "manifest.json"} <= names
    single = image.manifests[0].digest
    raw = skopeo("inspect", "--raw", f"oci-archive:{tarball}").stdout
    assert json.loads(raw)["config"]["digest"] == image.blobs[0].digest
    inspected = json.loads(skopeo("inspect", f"docker-archive:{tarball}").stdout)
    assert inspected["Architecture"] == "amd64"
    assert single.startswith("sha256:")


def _in_layout_then_out(registry, repo, source, version, image, *, tmp_path, skopeo):
    """in, oci-layout: the whole index, byte for byte; then out pushes it again."""
    digest = version["digest"]
    dest = tmp_path / "layout-get"
    params = {"format": "oci-layout"}
    resource("in", {"source": source, "version": version, "params": params}, str(dest))
    # As upstream: index.json is the index itself, so it hashes to the digest
    # and lists each platform.
    index_json = (dest / "oci" / "index.json").read_bytes()
    assert index_json == image.top.data
    assert "sha256:" + hashlib.sha256(index_json).hexdigest() == digest
    arches = [
        m["platform"]["architecture"] for m in json.loads(index_json)["manifests"]
    ]
    assert arches == ["amd64", "arm64"]
    blob = dest / "oci" / "blobs" / "sha256" / digest.split(":")[1]
    assert blob.read_bytes() == image.top.data

    # out: push the fetched layout under a new tag; the digest is unchanged
    out_source = source_for(registry, f"{repo}-copy", tag="pushed")
    pushed = answer(
        resource("out", {"source": out_source, "params": {"image": "oci"}}, str(dest))
    )
    assert pushed["version"] == {"tag": "pushed", "digest": digest}
    creds = []
    if registry.username:
        creds = ["--creds", f"{registry.username}:{registry.password}"]
    remote = f"docker://{registry.host}/{repo}-copy:pushed"
    raw = skopeo("inspect", "--raw", "--tls-verify=false", *creds, remote).stdout
    assert raw.encode() == image.top.data or json.loads(raw) == json.loads(
        image.top.data
    )

    # the implicit get after the put sees the same version
    again = answer(resource("check", {"source": out_source}))
    assert again == [pushed["version"]]


def test_skip_download_writes_only_the_version_files(registry_plain, tmp_path):
    repo = f"concourse/skip-{uuid.uuid4().hex[:8]}"
    digest = push(registry_plain, repo, single_image("skip"), ["latest"])
    source = source_for(registry_plain, repo)
    request = {
        "source": source,
        "version": {"tag": "latest", "digest": digest},
        "params": {"skip_download": True},
    }
    resource("in", request, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digest", "repository", "tag"]


def test_in_warns_when_a_lone_image_is_not_for_the_worker(registry_plain, tmp_path):
    # The worker here is linux/amd64; the tag holds only an arm64 image.
    repo = f"concourse/foreign-{uuid.uuid4().hex[:8]}"
    digest = push(registry_plain, repo, single_image("arm", arch="arm64"), ["latest"])
    request = {
        "source": source_for(registry_plain, repo),
        "version": {"tag": "latest", "digest": digest},
    }
    result = resource("in", request, str(tmp_path))
    assert "holds one image, for linux/arm64" in result.stderr
    assert "fetched it anyway" in result.stderr
    metadata = {m["name"]: m["value"] for m in answer(result)["metadata"]}
    assert metadata["platform"] == "linux/arm64"


def test_in_fails_clearly_when_the_version_is_gone(registry_plain, tmp_path):
    repo = f"concourse/gone-{uuid.uuid4().hex[:8]}"
    push(registry_plain, repo, single_image("gone"), ["latest"])
    missing = "sha256:" + "1" * 64
    request = {
        "source": source_for(registry_plain, repo),
        "version": {"tag": "latest", "digest": missing},
    }
    result = resource("in", request, str(tmp_path), check=False)
    assert result.returncode == 1
    assert "no longer exists" in result.stderr
    assert missing in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_out_pushes_version_aliases_and_additional_tags(registry_plain, tmp_path):
    repo = f"concourse/tags-{uuid.uuid4().hex[:8]}"
    push(registry_plain, repo, single_image("old"), ["1.2.2", "1.2", "1", "latest"])
    image = single_image("new")
    write_layout(tmp_path / "image" / "image", image, ref_name="latest")
    (tmp_path / "tags").write_text("extra-one\n  extra-two ")
    request = {
        "source": source_for(registry_plain, repo),
        "params": {
            "image": "image/imag?",
            "version": "1.2.3",
            "bump_aliases": True,
            "additional_tags": "tags",
        },
    }
    pushed = answer(resource("out", request, str(tmp_path)))
    assert pushed["version"] == {"tag": "1.2.3", "digest": image.digest}
    tags = {m["name"]: m["value"] for m in pushed["metadata"]}["tags"].split()
    assert tags == ["1.2.3", "1.2", "1", "latest", "extra-one", "extra-two"]
    check = answer(resource("check", {"source": source_for(registry_plain, repo)}))
    assert check[-1] == {"tag": "1.2.3", "digest": image.digest}


def test_out_bumps_aliases_in_a_repository_that_does_not_exist_yet(
    registry_plain, tmp_path
):
    repo = f"concourse/new-{uuid.uuid4().hex[:8]}"
    image = single_image("first")
    write_layout(tmp_path / "image" / "image", image)
    request = {
        "source": source_for(registry_plain, repo),
        "params": {"image": "image/image", "version": "1.4.0", "bump_aliases": True},
    }
    pushed = answer(resource("out", request, str(tmp_path)))
    tags = {m["name"]: m["value"] for m in pushed["metadata"]}["tags"].split()
    assert tags == ["1.4.0", "1.4", "1", "latest"]


def test_a_prefixed_older_version_never_moves_unprefixed_aliases_back(
    registry_plain, tmp_path
):
    repo = f"concourse/prefix-{uuid.uuid4().hex[:8]}"
    newest = push(registry_plain, repo, single_image("2"), ["2.0.0", "2", "latest"])
    image = single_image("hotfix")
    write_layout(tmp_path / "image" / "image", image)
    request = {
        "source": source_for(registry_plain, repo),
        "params": {
            "image": "image/image",
            "version": "1.2.3",
            "tag_prefix": "v",
            "bump_aliases": True,
        },
    }
    pushed = answer(resource("out", request, str(tmp_path)))
    tags = {m["name"]: m["value"] for m in pushed["metadata"]}["tags"].split()
    assert tags == ["v1.2.3", "1.2", "1"]
    client = client_for(registry_plain)
    with client:
        assert client.head_manifest(repo, "latest").digest == newest
        assert client.head_manifest(repo, "2").digest == newest


def test_everything_in_writes_is_readable_by_other_users(registry_plain, tmp_path):
    """A later step may run as the image's non-root user: 0644 files, 0755 dirs."""
    repo = f"concourse/modes-{uuid.uuid4().hex[:8]}"
    digest = push(registry_plain, repo, multi_image("modes"), ["m"])
    version = {"tag": "m", "digest": digest}
    for fmt in ("rootfs", "oci", "oci-layout"):
        dest = tmp_path / fmt
        request = {
            "source": source_for(registry_plain, repo),
            "version": version,
            "params": {"format": fmt},
        }
        resource("in", request, str(dest))
        for path in [dest, *dest.rglob("*")]:
            if path.is_symlink():
                continue
            want = 0o005 if path.is_dir() else 0o004
            assert path.stat().st_mode & want == want, (fmt, path)


def test_out_refuses_a_glob_matching_several_paths(registry_plain, tmp_path):
    for name in ("a", "b"):
        write_layout(tmp_path / name, single_image(name))
    request = {
        "source": source_for(registry_plain, "concourse/glob", tag="x"),
        "params": {"image": "*"},
    }
    result = resource("out", request, str(tmp_path), check=False)
    assert result.returncode == 1
    assert "matched 2" in result.stderr


def test_passwords_never_reach_stdout_or_stderr(registry_basic, tmp_path):
    repo = f"concourse/secret-{uuid.uuid4().hex[:8]}"
    write_layout(tmp_path / "img", single_image("secret"))
    source = source_for(registry_basic, repo, tag="t", debug=True)
    pushed = resource(
        "out", {"source": source, "params": {"image": "img"}}, str(tmp_path)
    )
    version = answer(pushed)["version"]
    got = resource(
        "in",
        {"source": source, "version": version, "params": {"format": "oci-layout"}},
        str(tmp_path / "get"),
    )
    checked = resource("check", {"source": source})
    for result in (pushed, got, checked):
        assert registry_basic.password not in result.stdout
        assert registry_basic.password not in result.stderr
    assert "DEBUG" in checked.stderr or "debug" in checked.stderr.lower()


def test_unknown_source_key_is_refused_naming_it(registry_plain):
    source = source_for(registry_plain, "concourse/x", tagg="latest")
    result = resource("check", {"source": source}, check=False)
    assert result.returncode == 1
    assert "'tagg'" in result.stderr


def test_tls_registry_with_ca_certs_insecure_and_neither(registry_tls):
    repo = f"concourse/tls-{uuid.uuid4().hex[:8]}"
    digest = push_tls(registry_tls, repo)
    pem = Path(registry_tls.ca_file).read_text()
    expected = [{"tag": "t", "digest": digest}]

    trusted = source_for(registry_tls, repo, tag="t", ca_certs=[pem])
    assert answer(resource("check", {"source": trusted})) == expected
    insecure = source_for(registry_tls, repo, tag="t", insecure=True)
    assert answer(resource("check", {"source": insecure})) == expected

    refused = resource(
        "check", {"source": source_for(registry_tls, repo, tag="t")}, check=False
    )
    assert refused.returncode == 1
    assert "TLS" in refused.stderr
    assert registry_tls.host in refused.stderr


def push_tls(registry, repo):
    from platforge.registry.client import RegistryClient  # noqa: PLC0415

    image = single_image("tls")
    with RegistryClient(registry.host, ca_file=registry.ca_file) as client:
        for blob in image.blobs:
            client.upload_blob(
                repo, blob.digest, len(blob.data), lambda d=blob.data: io.BytesIO(d)
            )
        client.put_manifest(repo, "t", image.top.data, image.top.media_type)
    return image.digest


@pytest.fixture
def origin_is(monkeypatch):
    """Point repositories without a host at a loopback registry, not Docker Hub.

    The mirror logic only applies to such repositories; this keeps every request of
    these tests on loopback whatever the code under test does.
    """
    from platforge.concourse import remote as remote_module  # noqa: PLC0415
    from platforge.registry.reference import Reference  # noqa: PLC0415
    from platforge.registry.retry import RetryPolicy  # noqa: PLC0415

    def use(registry):
        def parse(text):
            return Reference(registry.host, text, "latest")

        monkeypatch.setattr(remote_module, "_parse_repository", parse)
        # A dead mirror is retried like any registry; keep that short here.
        fast = RetryPolicy(attempts=2, base=0.01, max_delay=0.05, max_total=0.1)
        monkeypatch.setattr(remote_module, "RETRY_POLICY", fast)

    return use


@pytest.fixture
def run_in_process(monkeypatch):
    """Run a resource step in this process, undoing its logging set-up after."""
    import logging  # noqa: PLC0415

    from platforge.concourse import resource as entry  # noqa: PLC0415

    for name in ("platforge", "platforge.registry.retry"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "level", logger.level)
        monkeypatch.setattr(logger, "propagate", logger.propagate)
        monkeypatch.setattr(logger, "handlers", list(logger.handlers))

    def run(step, request, *args):
        out = io.StringIO()
        getattr(entry, f"run_{step}")(*args, io.StringIO(json.dumps(request)), out)
        return json.loads(out.getvalue())

    return run


def test_mirror_is_asked_first_then_the_origin(
    registry_plain, origin_is, run_in_process, tmp_path
):
    origin_is(registry_plain)
    repo = f"concourse/mirrored-{uuid.uuid4().hex[:8]}"
    digest = push(registry_plain, repo, single_image("origin"), ["t"])
    dead = "127.0.0.1:9"  # discard port: nothing listens, the mirror fails fast
    source = {"repository": repo, "tag": "t", "registry_mirror": {"host": dead}}
    assert run_in_process("check", {"source": source}) == [
        {"tag": "t", "digest": digest}
    ]
    version = {"tag": "t", "digest": digest}
    got = run_in_process("in", {"source": source, "version": version}, tmp_path)
    assert got["version"] == version
    assert (tmp_path / "rootfs" / "seed.txt").read_text() == "origin"


def test_a_mirror_that_has_the_image_serves_it(
    registry_plain, registry_basic, origin_is, run_in_process, tmp_path
):
    # The origin (basic) has no such repository; only the mirror (plain) does.
    origin_is(registry_basic)
    repo = f"concourse/mirror-only-{uuid.uuid4().hex[:8]}"
    digest = push(registry_plain, repo, single_image("mirror"), ["t"])
    source = {
        "repository": repo,
        "tag": "t",
        "registry_mirror": {"host": registry_plain.host},
    }
    assert run_in_process("check", {"source": source}) == [
        {"tag": "t", "digest": digest}
    ]
    # image.tar is named after the configured repository, not the mirror
    version = {"tag": "t", "digest": digest}
    request = {"source": source, "version": version, "params": {"format": "oci"}}
    run_in_process("in", request, tmp_path)
    with tarfile.open(tmp_path / "image.tar") as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = json.load(member)
    assert manifest[0]["RepoTags"] == [f"{repo}:t"]
