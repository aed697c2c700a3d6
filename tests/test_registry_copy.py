"""Push, pull and copy against the test bed's real registries.

Bytes are counted through the client's transport seam (a wrapper around the real
httpx transport), so "sends nothing" is measured, not assumed.
"""

import contextlib
import hashlib
import io
import json
import logging
import subprocess
import uuid

import httpx
import pytest
from testbed import Fault

from platforge import platforms
from platforge.errors import AuthError, DigestMismatchError, LayoutError, NotFoundError
from platforge.oci.content import Index
from platforge.oci.layout import Layout
from platforge.registry import copy as copy_module
from platforge.registry.auth import Credentials, parse_challenges
from platforge.registry.client import RegistryClient
from platforge.registry.copy import (
    Registries,
    copy_image,
    layout_root,
    pull_rootfs,
    pull_to_layout,
    push_layout,
)
from platforge.registry.reference import Reference
from platforge.registry.retry import RetryPolicy
from test_registry_images import blob_files, busybox_layout, small_layout

pytestmark = pytest.mark.registry


class _CountedStream(httpx.SyncByteStream):
    def __init__(self, inner, counter):
        self.inner = inner
        self.counter = counter

    def __iter__(self):
        for chunk in self.inner:
            self.counter.upload_bytes += len(chunk)
            yield chunk


class Counting(httpx.BaseTransport):
    """Wraps the real transport; counts blob upload body bytes and requests."""

    def __init__(self, inner):
        self.inner = inner
        self.upload_bytes = 0
        self.requests = []

    def handle_request(self, request):
        self.requests.append((request.method, request.url.path))
        if "/blobs/uploads/" in request.url.path and request.method in {"PUT", "PATCH"}:
            request.stream = _CountedStream(request.stream, self)
        return self.inner.handle_request(request)

    def close(self):
        self.inner.close()


@pytest.fixture(autouse=True)
def _own_docker_config(tmp_path, monkeypatch):
    """Credentials come only from the test, never from the user's docker config."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


def _counting_registries(**options):
    counters = []

    def wrap(inner):
        counter = Counting(inner)
        counters.append(counter)
        return counter

    return Registries(wrap_transport=wrap, **options), counters


def _repo():
    return f"test/{uuid.uuid4().hex[:10]}"


def test_push_skips_blobs_the_registry_already_has(registry_plain, tmp_path):
    layout, descriptor = small_layout(tmp_path / "img")
    ref = Reference.parse(registry_plain.ref(_repo(), "v1"))

    registries, counters = _counting_registries()
    with registries:
        first = push_layout(layout.path, ref, registries=registries)
    assert counters[0].upload_bytes > 300_000
    assert first.digest == descriptor.digest
    assert first.count("pushed") == 2

    # The manifest is gone but its blobs stay: only blob HEADs, no bytes.
    with RegistryClient(registry_plain.host) as client:
        client.delete_manifest(ref.repository, str(descriptor.digest))
    registries, counters = _counting_registries()
    with registries:
        again = push_layout(layout.path, ref, registries=registries)
    assert counters[0].upload_bytes == 0
    assert again.count("exists") == 2
    assert not [r for r in counters[0].requests if r[0] in {"POST", "PATCH"}]
    assert len([r for r in counters[0].requests if "/blobs/" in r[1]]) == 2

    # The whole image is there: one manifest HEAD, then the tags.
    registries, counters = _counting_registries()
    with registries:
        push_layout(layout.path, ref, registries=registries, tags=["v2"])
    assert counters[0].upload_bytes == 0
    assert not [r for r in counters[0].requests if "/blobs/" in r[1]]
    with RegistryClient(registry_plain.host) as client:
        assert sorted(client.list_tags(ref.repository)) == ["v1", "v2"]


def test_copy_between_repositories_of_one_registry_mounts_blobs(
    registry_plain, tmp_path
):
    layout, _ = small_layout(tmp_path / "img")
    source = Reference.parse(registry_plain.ref(_repo(), "src"))
    with Registries() as registries:
        push_layout(layout.path, source, registries=registries)

    target = Reference.parse(registry_plain.ref(_repo(), "dst"))
    registries, counters = _counting_registries()
    with registries:
        result = copy_image(source, target, registries=registries)
    assert result.count("mounted") == 2
    assert counters[0].upload_bytes == 0
    with RegistryClient(registry_plain.host) as client:
        assert client.head_manifest(target.repository, "dst").digest == str(
            result.digest
        )


def test_copy_between_registries_streams_through(
    registry_plain, registry_tls, tmp_path
):
    layout, descriptor = small_layout(tmp_path / "img")
    source = Reference.parse(registry_plain.ref(_repo(), "a"))
    target = Reference.parse(registry_tls.ref(_repo(), "b"))
    with Registries(ca_file=str(registry_tls.ca_file)) as registries:
        push_layout(layout.path, source, registries=registries)
        result = copy_image(source, target, registries=registries)
        assert result.count("pushed") == 2
        pulled = pull_to_layout(target, tmp_path / "back", registries=registries)
    assert pulled.digest == descriptor.digest
    assert blob_files(tmp_path / "back") == blob_files(tmp_path / "img")


def test_copy_of_one_platform_writes_that_manifest_only(
    registry_plain, busybox, tmp_path
):
    layout, index = busybox_layout(busybox, tmp_path / "img")
    source = Reference.parse(registry_plain.ref(_repo(), "all"))
    target = Reference.parse(registry_plain.ref(_repo(), "arm"))
    with Registries() as registries:
        push_layout(layout.path, source, registries=registries)
        result = copy_image(
            source, target, registries=registries, platform=platforms.parse("arm64")
        )
    arm = next(d for d in index.manifests if d.platform.architecture == "arm64")
    assert result.digest == arm.digest


def test_corrupt_layout_blob_is_refused_and_nothing_is_pushed(registry_plain, tmp_path):
    layout, descriptor = small_layout(tmp_path / "img")
    manifest = layout.read_manifest(descriptor)
    layer = manifest.layers[0]
    path = layout.blob_path(layer.digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    ref = Reference.parse(registry_plain.ref(_repo(), "v1"))
    registries, counters = _counting_registries()
    with registries, pytest.raises(DigestMismatchError, match="nothing was pushed"):
        push_layout(layout.path, ref, registries=registries)
    assert counters[0].upload_bytes == 0
    assert not [r for r in counters[0].requests if r[0] in {"POST", "PUT", "PATCH"}]
    assert not registry_plain.blob_path(str(manifest.config.digest)).exists()
    with RegistryClient(registry_plain.host) as client, pytest.raises(NotFoundError):
        client.get_manifest(ref.repository, "v1")


def _append_to_blob(layout, digest):
    with layout.blob_path(digest).open("ab") as out:
        out.write(b"x")


@pytest.mark.parametrize("which", ["manifest", "config", "layer"])
def test_a_corrupt_manifest_config_or_layer_is_reported_in_one_wording(
    registry_plain, tmp_path, which
):
    layout, descriptor = small_layout(tmp_path / "img")
    manifest = layout.read_manifest(descriptor)
    digest = {
        "manifest": descriptor.digest,
        "config": manifest.config.digest,
        "layer": manifest.layers[0].digest,
    }[which]
    _append_to_blob(layout, digest)

    ref = Reference.parse(registry_plain.ref(_repo(), "v1"))
    with Registries() as registries, pytest.raises(DigestMismatchError) as info:
        push_layout(layout.path, ref, registries=registries)
    message = str(info.value)
    assert message.startswith(f"layout {layout.path}: blob {digest} is corrupt (")
    assert message.endswith(
        "; the layout is damaged: build it again or pull/copy the image into a new "
        "directory"
    )
    assert "delete the file" not in message


def test_corrupt_registry_blob_fails_the_pull_and_leaves_no_destination(
    make_registry, tmp_path
):
    registry = make_registry("plain")
    layout, descriptor = small_layout(tmp_path / "img")
    ref = Reference.parse(registry.ref("x/y", "v1"))
    with Registries() as registries:
        push_layout(layout.path, ref, registries=registries)
    layer = layout.read_manifest(descriptor).layers[0]
    stored = registry.blob_path(str(layer.digest))
    data = bytearray(stored.read_bytes())
    data[100] ^= 0x01
    stored.write_bytes(bytes(data))

    dest = tmp_path / "pulled"
    with Registries() as registries, pytest.raises(DigestMismatchError) as info:
        pull_to_layout(ref, dest, registries=registries)
    assert str(layer.digest) in str(info.value)
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["img"]


def test_chunked_upload_honours_the_servers_range(registry_plain, tmp_path):
    layout, descriptor = small_layout(tmp_path / "img", size=700_000)
    ref = Reference.parse(registry_plain.ref(_repo(), "chunked"))
    registries, counters = _counting_registries(chunk_size=256 * 1024)
    with registries:
        push_layout(layout.path, ref, registries=registries)
    patches = [r for r in counters[0].requests if r[0] == "PATCH"]
    assert len(patches) >= 3
    with Registries() as registries:
        pulled = pull_to_layout(ref, tmp_path / "back", registries=registries)
    assert pulled.digest == descriptor.digest
    assert blob_files(tmp_path / "back") == blob_files(tmp_path / "img")


def test_token_registry_push_and_pull_with_cached_tokens(registry_token, tmp_path):
    layout, descriptor = small_layout(tmp_path / "img")
    ref = Reference.parse(registry_token.ref(_repo(), "v1"))
    creds = {
        registry_token.host: Credentials(
            registry_token.username, registry_token.password
        )
    }
    with Registries(credentials=creds) as registries:
        push_layout(layout.path, ref, registries=registries)
        client = registries.client(registry_token.host)
        # One token per scope set, reused by every request needing that scope.
        assert len(client.auth._tokens) <= 2
        pulled = pull_to_layout(ref, tmp_path / "back", registries=registries)
    assert pulled.digest == descriptor.digest


def test_wrong_password_is_an_auth_error_that_never_shows_the_password(
    registry_basic, registry_token, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    layout, _ = small_layout(tmp_path / "img")
    secret = "wr0ng-Pa55word-xyz"
    for registry in (registry_basic, registry_token):
        ref = Reference.parse(registry.ref(_repo(), "v1"))
        creds = {registry.host: Credentials(registry.username, secret)}
        registries = Registries(credentials=creds)
        with registries, pytest.raises(AuthError) as info:
            push_layout(layout.path, ref, registries=registries)
        message = str(info.value)
        assert registry.host in message
        assert f"platforge login {registry.host}" in message
        assert "\n" not in message
        assert secret not in message
    assert secret not in caplog.text


def test_tags_list_returns_every_tag(registry_plain, tmp_path):
    # distribution 2.8 answers in one page; Link pagination is tested against a
    # scripted server in test_registry_client.py.
    layout, _ = small_layout(tmp_path / "img")
    ref = Reference.parse(registry_plain.ref(_repo(), "t0"))
    with Registries() as registries:
        push_layout(
            layout.path, ref, registries=registries, tags=[f"t{n}" for n in range(1, 5)]
        )
    with RegistryClient(registry_plain.host) as client:
        tags = client.list_tags(ref.repository, page_size=2)
    assert sorted(tags) == [f"t{n}" for n in range(5)]


def test_layout_root_shapes(tmp_path, busybox):
    layout, index = busybox_layout(busybox, tmp_path / "bb")
    # One entry that is an index: that index is the image.
    root, raw = layout_root(layout)
    assert root.digest == index.digest
    assert raw == index.raw

    # Several named entries: a name is needed and picks one.
    small_layout(tmp_path / "two", name="a")
    two = Layout.open(tmp_path / "two")
    _, other = small_layout(tmp_path / "other")
    for path in (tmp_path / "other" / "blobs").rglob("*"):
        if path.is_file():
            two.write_blob(path.read_bytes())
    two.add_ref(other, "b")
    with pytest.raises(LayoutError, match="say which one"):
        layout_root(two)
    assert layout_root(two, "b")[0].digest == other.digest

    # Unnamed per-platform manifests: index.json itself is the image index.
    flat = Layout.open(tmp_path / "bb")
    flat.set_index(list(index.manifests))
    root, raw = layout_root(flat)
    assert len(Index.parse(raw).manifests) == 5


def test_identity_token_from_docker_config_uses_the_oauth2_refresh_grant(
    registry_token, tmp_path
):
    challenge = parse_challenges(
        httpx.get(f"{registry_token.url}/v2/").headers["www-authenticate"]
    )[0]
    offline = httpx.post(
        challenge.params["realm"],
        data={
            "grant_type": "password",
            "username": registry_token.username,
            "password": registry_token.password,
            "service": challenge.params["service"],
            "access_type": "offline",
            "client_id": "test",
        },
    )
    refresh = offline.json()["refresh_token"]
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"auths": {registry_token.host: {"identitytoken": refresh}}})
    )

    layout, descriptor = small_layout(tmp_path / "img")
    ref = Reference.parse(registry_token.ref(_repo(), "v1"))
    with Registries(config=config) as registries:
        assert push_layout(layout.path, ref, registries=registries).digest == (
            descriptor.digest
        )


def test_upload_whose_bytes_do_not_match_the_digest_is_never_committed(
    registry_plain,
):
    data = b"these bytes are not what the digest says" * 1000
    wrong = "sha256:" + "1" * 64
    with RegistryClient(registry_plain.host) as client:
        with pytest.raises(DigestMismatchError, match="corrupt"):
            client.upload_blob(
                "test/mismatch",
                wrong,
                len(data),
                lambda: contextlib.nullcontext(io.BytesIO(data)),
            )
        assert client.blob_size("test/mismatch", wrong) is None


def test_progress_events_report_every_byte_of_every_blob(registry_plain, tmp_path):
    layout, descriptor = small_layout(tmp_path / "img")
    manifest = layout.read_manifest(descriptor)
    sizes = {str(b.digest): b.size for b in (manifest.config, *manifest.layers)}
    events = []
    ref = Reference.parse(registry_plain.ref(_repo(), "v1"))
    with Registries() as registries:
        push_layout(layout.path, ref, registries=registries, progress=events.append)
    sent = {}
    for event in events:
        if event.kind == "bytes":
            sent[event.digest] = sent.get(event.digest, 0) + event.nbytes
    assert sent == sizes
    done = {e.digest: e.action for e in events if e.kind == "done"}
    assert done == dict.fromkeys(sizes, "pushed")
    assert {e.digest for e in events if e.kind == "start"} == set(sizes)


def test_copy_within_the_token_registry_mounts_with_a_source_pull_scope(
    registry_token, tmp_path
):
    layout, _ = small_layout(tmp_path / "img")
    creds = {
        registry_token.host: Credentials(
            registry_token.username, registry_token.password
        )
    }
    source = Reference.parse(registry_token.ref(_repo(), "src"))
    target = Reference.parse(registry_token.ref(_repo(), "dst"))
    with Registries(credentials=creds) as registries:
        push_layout(layout.path, source, registries=registries)
    registries, counters = _counting_registries(credentials=creds)
    with registries:
        result = copy_image(source, target, registries=registries)
        scopes = set(registries.client(registry_token.host).auth._tokens)
    assert result.count("mounted") == 2
    assert counters[0].upload_bytes == 0
    mount_scopes = (
        f"repository:{source.repository}:pull",
        f"repository:{target.repository}:pull,push",
    )
    assert tuple(sorted(mount_scopes)) in scopes


def test_pull_by_digest_and_one_platform(registry_plain, busybox, tmp_path):
    layout, index = busybox_layout(busybox, tmp_path / "img")
    ref = Reference.parse(registry_plain.ref(_repo(), "v1"))
    with Registries() as registries:
        push_layout(layout.path, ref, registries=registries)
        pinned = ref.with_digest(str(index.digest))
        pinned = Reference(pinned.registry, pinned.repository, None, pinned.digest)
        one = pull_to_layout(
            pinned,
            tmp_path / "s390x",
            registries=registries,
            platform=platforms.parse("linux/s390x"),
        )
    s390x = next(d for d in index.manifests if d.platform.architecture == "s390x")
    assert one.digest == s390x.digest
    pulled = Layout.open(tmp_path / "s390x")
    (entry,) = pulled.index().manifests
    assert entry.digest == s390x.digest
    assert entry.ref_name is None
    assert pulled.check() == []
    assert len(blob_files(tmp_path / "s390x")) == 3


def test_push_and_pull_survive_injected_faults_in_front_of_a_real_registry(
    registry_plain, fault_proxy, tmp_path
):
    layout, descriptor = small_layout(tmp_path / "img")
    proxy = fault_proxy(
        registry_plain,
        Fault(method="PUT", path="/blobs/uploads/", status=503, times=1),
        Fault(
            method="PUT",
            path="/manifests/",
            status=429,
            times=1,
            headers={"Retry-After": "0"},
        ),
        Fault(method="GET", path="/blobs/sha256:", drop=True, times=1),
    )
    ref = Reference.parse(f"{proxy.host}/faults/a:v1")
    policy = RetryPolicy(attempts=4, base=0.01, max_delay=1, max_total=5)
    with Registries(retry=policy) as registries:
        pushed = push_layout(layout.path, ref, registries=registries)
        pulled = pull_to_layout(ref, tmp_path / "back", registries=registries)
    assert pushed.digest == pulled.digest == descriptor.digest
    assert blob_files(tmp_path / "back") == blob_files(tmp_path / "img")
    faulted = [s for s in proxy.requests if s.faulted]
    assert len(faulted) == 3


def test_pull_refuses_a_non_empty_destination_and_push_a_foreign_digest(
    registry_plain, tmp_path
):
    layout, descriptor = small_layout(tmp_path / "img")
    ref = Reference.parse(registry_plain.ref(_repo(), "v1"))
    with Registries() as registries:
        push_layout(layout.path, ref, registries=registries)
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "keep").write_text("mine")
        with pytest.raises(LayoutError, match="not empty"):
            pull_to_layout(ref, tmp_path / "full", registries=registries)
        assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep"]

        other = "sha256:" + "2" * 64
        pinned = Reference(ref.registry, ref.repository, None, other)
        with pytest.raises(LayoutError, match=str(descriptor.digest)):
            push_layout(layout.path, pinned, registries=registries)


@pytest.fixture
def tiny_mount(tmp_path):
    """A 1 MiB tmpfs of this test's own, to meet a full disk for real."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("pull", [pull_to_layout, pull_rootfs])
def test_pull_into_a_full_disk_or_under_a_file_is_one_error_leaving_nothing(
    registry_plain, tmp_path, tiny_mount, pull
):
    layout, _ = small_layout(tmp_path / "img", size=3_000_000)
    ref = Reference.parse(registry_plain.ref(_repo(), "v1"))
    with Registries() as registries:
        push_layout(layout.path, ref, registries=registries)
    (tmp_path / "file").write_text("x")

    for dest, full in (
        (tiny_mount / "pulled", True),
        (tmp_path / "file" / "sub", False),
    ):
        with Registries() as registries, pytest.raises(LayoutError) as info:
            pull(ref, dest, registries=registries)
        assert f"cannot write {dest}" in str(info.value)
        assert ("free some space" in str(info.value)) == full
        assert "\n" not in str(info.value)
    assert list(tiny_mount.iterdir()) == []
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize(
    "chunk_size", [None, 256 * 1024], ids=["monolithic", "chunked"]
)
def test_corrupt_big_blob_is_caught_as_it_uploads_and_never_committed(
    registry_plain, tmp_path, monkeypatch, chunk_size
):
    # Every blob takes the big-blob path: verified while it uploads, not before.
    monkeypatch.setattr(copy_module, "VERIFY_FIRST_MAX", 0)
    layout, descriptor = small_layout(tmp_path / "img", size=3_000_000)
    layer = layout.read_manifest(descriptor).layers[0]
    path = layout.blob_path(layer.digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    ref = Reference.parse(registry_plain.ref(_repo(), "v1"))
    registries, counters = _counting_registries(chunk_size=chunk_size)
    with registries, pytest.raises(DigestMismatchError, match="not committed"):
        push_layout(layout.path, ref, registries=registries)

    requests = counters[0].requests
    assert any(method == "DELETE" for method, _ in requests), "session not cancelled"
    if chunk_size is None:
        # The last piece was held back: the registry never had the whole body.
        assert counters[0].upload_bytes < layer.size
    else:
        # The session is cancelled with its newest state, so no bytes are kept
        # (docker-registry leaves only an empty hash state behind).
        uploads = (
            registry_plain.storage_dir
            / "docker/registry/v2/repositories"
            / ref.repository
            / "_uploads"
        )
        assert not list(uploads.rglob("data"))
    corrupt = "sha256:" + hashlib.sha256(data).hexdigest()
    assert not registry_plain.blob_path(corrupt).exists()
    with RegistryClient(registry_plain.host) as client:
        assert client.blob_size(ref.repository, str(layer.digest)) is None
        with pytest.raises(NotFoundError):
            client.get_manifest(ref.repository, "v1")
        with pytest.raises(NotFoundError):
            client.get_manifest(ref.repository, str(descriptor.digest))


def test_a_blob_missing_from_the_layout_is_named(registry_plain, tmp_path, monkeypatch):
    monkeypatch.setattr(copy_module, "VERIFY_FIRST_MAX", 0)
    layout, descriptor = small_layout(tmp_path / "img")
    layer = layout.read_manifest(descriptor).layers[0]
    layout.blob_path(layer.digest).unlink()
    ref = Reference.parse(registry_plain.ref(_repo(), "v1"))
    with Registries() as registries, pytest.raises(LayoutError, match="lacks blob"):
        push_layout(layout.path, ref, registries=registries)


def test_push_by_digest_takes_any_manifest_blob_of_the_layout(registry_plain, tmp_path):
    layout, descriptor = small_layout(tmp_path / "img")
    layout.set_index([])  # the manifest stays as a blob only
    ref = Reference.parse(registry_plain.ref(_repo(), "v1"))
    with Registries() as registries:
        result = push_layout(
            layout.path, ref, registries=registries, digest=str(descriptor.digest)
        )
        assert result.digest == descriptor.digest
        absent = "sha256:" + "0" * 64
        with pytest.raises(LayoutError, match=f"does not hold image {absent}"):
            push_layout(layout.path, ref, registries=registries, digest=absent)
