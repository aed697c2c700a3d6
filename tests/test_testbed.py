"""The test bed itself: each loopback registry answers as its kind should, the
token flow works with a real client, and busybox runs under QEMU per architecture.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from typing import TYPE_CHECKING

import httpx
import pytest
from testbed.tools import ToolError

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.registry


def _client(**kwargs) -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=10, **kwargs)


def _oci_layout(path: Path) -> Path:
    """A one-layer image as an OCI layout, written with skopeo-independent code."""
    blobs = path / "blobs/sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {
            "mediaType": media_type,
            "digest": f"sha256:{digest}",
            "size": len(data),
        }

    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        info = tarfile.TarInfo("hello")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"hi\n"))
    diff_id = hashlib.sha256(tar.getvalue()).hexdigest()
    layer = put(
        gzip.compress(tar.getvalue(), mtime=0),
        "application/vnd.oci.image.layer.v1.tar+gzip",
    )
    config = put(
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            }
        ).encode(),
        "application/vnd.oci.image.config.v1+json",
    )
    manifest = put(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config,
                "layers": [layer],
            }
        ).encode(),
        "application/vnd.oci.image.manifest.v1+json",
    )
    manifest["annotations"] = {"org.opencontainers.image.ref.name": "v1"}
    (path / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "manifests": [manifest]})
    )
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return path


def test_plain_registry_answers_v2_with_200(registry_plain):
    assert registry_plain.url == f"http://{registry_plain.host}"
    assert registry_plain.host.startswith("127.0.0.1:")
    with _client() as client:
        response = client.get(f"{registry_plain.url}/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-Api-Version"] == "registry/2.0"


def test_basic_registry_challenges_then_accepts_its_credentials(registry_basic):
    url = f"{registry_basic.url}/v2/"
    with _client() as client:
        anonymous = client.get(url)
        wrong = client.get(url, auth=(registry_basic.username, "wrong"))
        right = client.get(url, auth=(registry_basic.username, registry_basic.password))
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
    assert wrong.status_code == 401
    assert right.status_code == 200


def test_tls_registry_is_trusted_with_its_ca_and_refused_without(registry_tls):
    assert registry_tls.scheme == "https"
    assert registry_tls.ca_file is not None
    with _client(verify=registry_tls.ssl_context()) as client:
        assert client.get(f"{registry_tls.url}/v2/").status_code == 200
    with _client() as client, pytest.raises(httpx.ConnectError, match="CERTIFICATE"):
        client.get(f"{registry_tls.url}/v2/")


def test_token_registry_challenges_with_bearer_and_our_token_unlocks_it(
    registry_token, testbed
):
    with _client() as client:
        challenge = client.get(f"{registry_token.url}/v2/")
        assert challenge.status_code == 401
        header = challenge.headers["WWW-Authenticate"]
        assert header.startswith("Bearer ")
        assert f'realm="{testbed.token_url}/token"' in header
        token = client.get(
            f"{testbed.token_url}/token",
            params={"service": "platforge-testbed", "scope": "repository:a/b:pull"},
            auth=(registry_token.username, registry_token.password),
        ).json()["token"]
        authed = client.get(
            f"{registry_token.url}/v2/", headers={"Authorization": f"Bearer {token}"}
        )
        wrong = client.get(
            f"{testbed.token_url}/token",
            params={"service": "platforge-testbed"},
            auth=(registry_token.username, "wrong"),
        )
    assert authed.status_code == 200
    assert wrong.status_code == 401


def test_skopeo_copies_and_inspects_through_the_token_flow(
    registry_token, skopeo, tmp_path
):
    layout = _oci_layout(tmp_path / "oci")
    ref = f"docker://{registry_token.ref('testbed/token-copy', 'v1')}"
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        registry_token.creds,
        f"oci:{layout}:v1",
        ref,
    )
    raw = skopeo(
        "inspect", "--raw", "--tls-verify=false", "--creds", registry_token.creds, ref
    ).stdout
    assert json.loads(raw)["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    with pytest.raises(ToolError, match=r"denied|unauthorized"):
        skopeo("inspect", "--raw", "--tls-verify=false", ref)
