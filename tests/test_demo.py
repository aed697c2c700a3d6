"""The steps of `make demo`, run as the demo runs them, checked from outside.

The demo script builds a busybox base, the seed example and the TARGETARCH example
for linux/amd64 and linux/arm64, pushes them to the test bed's plain registry and runs
every platform; skopeo then verifies what landed in the registry.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AUTHORS = "org.opencontainers.image.authors"

pytestmark = [pytest.mark.registry, pytest.mark.qemu, pytest.mark.slow]


def test_demo_builds_pushes_and_runs_every_platform(
    registry_plain, skopeo, require_qemu, tmp_path
):
    env = {**os.environ, "PLATFORGE_DEMO_DIR": str(tmp_path / "demo")}
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "demo.py"),
            "--registry",
            registry_plain.host,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    seed = f"{registry_plain.host}/demo/multi-platform:latest"
    assert f"{seed} on linux/amd64 printed 'x86_64'" in out
    assert f"{seed} on linux/arm64 printed 'aarch64'" in out
    targetarch = f"{registry_plain.host}/demo/targetarch:latest"
    for platform in ("linux/amd64", "linux/arm64"):
        assert f"{targetarch} on {platform} printed 'ruff 0.17.6'" in out

    raw = json.loads(
        skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{seed}").stdout
    )
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    platforms = {
        (m["platform"]["os"], m["platform"]["architecture"]) for m in raw["manifests"]
    }
    assert platforms == {("linux", "amd64"), ("linux", "arm64")}
    for arch in ("amd64", "arm64"):
        config = json.loads(
            skopeo(
                "inspect", "--config", "--tls-verify=false",
                "--override-arch", arch, f"docker://{seed}",
            ).stdout
        )  # fmt: skip
        assert config["architecture"] == arch
        assert config["config"]["Labels"][AUTHORS] == "platforge developers"
        assert config["config"]["Cmd"] == ["uname", "-m"]
