"""The seed example: a no-RUN Dockerfile built for two platforms and pushed.

Base: a real multi-arch busybox image in the loopback registry. Checks: one
index with two manifests in the registry (read back by skopeo), the authors
label on both, and each platform's filesystem runs its own architecture's
busybox (arm64 through QEMU's binfmt handler).
"""

import hashlib
import json
import subprocess

import pytest

from platforge.oci.compression import open_reader
from platforge.oci.unpack import unpack_layers
from test_build_support import build_image, push_busybox_base

pytestmark = pytest.mark.registry

SEED = """\
FROM {base}
LABEL org.opencontainers.image.authors="platforge developers"
CMD ["uname", "-m"]
"""


def _blob(storage, digest):
    return storage / "blobs" / "sha256" / digest.split(":", 1)[1]


@pytest.mark.usefixtures("require_qemu")
def test_seed_builds_two_platforms_into_one_pushed_index(
    tmp_path, tmp_store, registry_plain, busybox, skopeo
):
    base = push_busybox_base(busybox, registry_plain.host)
    (tmp_path / "Dockerfile").write_text(SEED.format(base=base))
    target = f"{registry_plain.host}/seed/app:v1"

    result, _ = build_image(
        tmp_path, platforms_text="linux/amd64,linux/arm64", tags=[target], push=True
    )

    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{target}").stdout
    index = json.loads(raw)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    archs = sorted(m["platform"]["architecture"] for m in index["manifests"])
    assert archs == ["amd64", "arm64"]
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == str(result.digest)
    assert len(result.manifests) == 2

    expected = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
    for platform, machine in expected.items():
        descriptor = result.manifests[platform]
        manifest = json.loads(_blob(tmp_store, str(descriptor.digest)).read_bytes())
        config = json.loads(_blob(tmp_store, manifest["config"]["digest"]).read_bytes())
        assert config["config"]["Labels"] == {
            "org.opencontainers.image.authors": "platforge developers"
        }
        assert config["config"]["Cmd"] == ["uname", "-m"]
        root = tmp_path / f"rootfs-{machine}"
        layers = [
            open_reader(_blob(tmp_store, layer["digest"]).open("rb"))
            for layer in manifest["layers"]
        ]
        unpack_layers(layers, root)
        ran = subprocess.run(
            [str(root / "bin" / "busybox"), *config["config"]["Cmd"]],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert ran.stdout.strip() == machine
