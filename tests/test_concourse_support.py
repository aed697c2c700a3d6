"""Helpers shared by the Concourse tests (no tests here).

Images are made from real bytes (a gzip layer holding one file, a config, a manifest,
optionally an index over two platforms) and pushed with the registry client straight
to the test bed's registries, so the resource meets real registry behaviour.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from platforge.registry.auth import Credentials
from platforge.registry.client import RegistryClient

ROOT = Path(__file__).resolve().parents[1]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return sha(self.data)

    def descriptor(self, **extra) -> dict:
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.data),
            **extra,
        }


@dataclass
class Image:
    """One image (manifest) or a multi-platform one (index) with every blob."""

    top: Blob
    blobs: list[Blob]
    manifests: list[Blob]

    @property
    def digest(self) -> str:
        return self.top.digest


def layer_tar(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A gzip layer and its diff ID."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(content))
    plain = raw.getvalue()
    return gzip.compress(plain, mtime=0), sha(plain)


def single_image(
    seed: str,
    *,
    arch: str = "amd64",
    created: str = "2024-01-01T00:00:00Z",
    labels: dict[str, str] | None = None,
    files: dict[str, bytes] | None = None,
) -> Image:
    layer, diff_id = layer_tar(
        {"seed.txt": seed.encode(), "bin/hello": b"#!/bin/sh\n", **(files or {})}
    )
    config = {
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/bin:/bin", f"SEED={seed}"],
            "User": "1000",
            "Cmd": ["/bin/hello"],
            "Entrypoint": ["/bin/sh"],
            "Labels": labels or {"seed": seed},
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    config_blob = Blob(OCI_CONFIG, json.dumps(config).encode())
    layer_blob = Blob(OCI_LAYER_GZIP, layer)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [layer_blob.descriptor()],
    }
    top = Blob(OCI_MANIFEST, json.dumps(manifest).encode())
    return Image(top=top, blobs=[config_blob, layer_blob], manifests=[])


def multi_image(seed: str, arches: tuple[str, ...] = ("amd64", "arm64")) -> Image:
    parts = [single_image(f"{seed}-{arch}", arch=arch) for arch in arches]
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            part.top.descriptor(platform={"architecture": arch, "os": "linux"})
            for part, arch in zip(parts, arches, strict=True)
        ],
    }
    return Image(
        top=Blob(OCI_INDEX, json.dumps(index).encode()),
        blobs=[blob for part in parts for blob in part.blobs],
        manifests=[part.top for part in parts],
    )


def client_for(registry) -> RegistryClient:
    credentials = None
    if registry.username:
        credentials = Credentials(
            username=registry.username, password=registry.password
        )
    return RegistryClient(registry.host, credentials=credentials)


def push(registry, repository: str, image: Image, tags: list[str]) -> str:
    """Push ``image`` under every tag; return its digest."""
    with client_for(registry) as client:
        for blob in image.blobs:
            client.upload_blob(
                repository,
                blob.digest,
                len(blob.data),
                lambda data=blob.data: io.BytesIO(data),
            )
        for manifest in image.manifests:
            client.put_manifest(
                repository, manifest.digest, manifest.data, manifest.media_type
            )
        client.put_manifest(
            repository, image.digest, image.top.data, image.top.media_type
        )
        for tag in tags:
            client.put_manifest(repository, tag, image.top.data, image.top.media_type)
    return image.digest


def write_layout(path: Path, image: Image, *, ref_name: str | None = None) -> None:
    """Write ``image`` as an OCI image layout (index.json naming the top)."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for blob in [*image.blobs, *image.manifests, image.top]:
        (blobs / blob.digest.split(":")[1]).write_bytes(blob.data)
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    annotations = {"org.opencontainers.image.ref.name": ref_name} if ref_name else None
    entry = image.top.descriptor(
        **({"annotations": annotations} if annotations else {})
    )
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
    (path / "index.json").write_text(json.dumps(index))


def source_for(registry, repository: str, **extra) -> dict:
    source = {"repository": f"{registry.host}/{repository}", **extra}
    if registry.username:
        source["username"] = registry.username
        source["password"] = registry.password
    return source


def resource(
    step: str, request: dict, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``platforge resource STEP`` as Concourse would."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, "-m", "platforge", "resource", step, *args],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"resource {step} failed: {result.stderr}")
    return result


def answer(result: subprocess.CompletedProcess[str]):
    return json.loads(result.stdout)
