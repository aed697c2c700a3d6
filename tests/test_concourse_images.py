"""The resource image, built by platforge, runs check → in → out inside itself.

`scripts/concourse_images.py` builds the images from an mmdebstrap base (cached in
~/.cache/platforge-concourse after the first run) for linux/amd64 here, to keep the
test to tens of seconds; `make concourse-images` builds amd64 and arm64. The steps
then run inside the pushed image through `platforge run`, against the test bed's
registry on loopback.
"""

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from test_concourse_support import ROOT, push, sha, single_image

pytestmark = [pytest.mark.registry, pytest.mark.slow]


@pytest.fixture(scope="module")
def images(registry_plain):
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is not installed (make setup installs it)")
    if os.geteuid() != 0:
        pytest.skip("mmdebstrap's root mode needs root")
    prefix = f"{registry_plain.host}/images-{uuid.uuid4().hex[:6]}"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "concourse_images.py"),
            prefix,
            "--platforms",
            "linux/amd64",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if (
        result.returncode != 0
        and "mmdebstrap" in result.stderr
        and "E:" in result.stderr
    ):
        pytest.skip(
            f"mmdebstrap could not fetch Debian packages: {result.stderr[-300:]}"
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def run_in_image(image: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "platforge", "run", image, "--", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )


def test_both_images_are_pushed_for_the_requested_platform(images, skopeo):
    assert len(images) == 2
    for ref, digest in images.items():
        raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout
        assert sha(raw.encode()) == digest
        # One platform asked for: a manifest, not an index (as buildx does).
        assert "config" in json.loads(raw)
        info = json.loads(
            skopeo("inspect", "--tls-verify=false", f"docker://{ref}").stdout
        )
        assert info["Architecture"] == "amd64"
        assert "PYTHONPATH=/opt/platforge/lib" in info["Env"]


def test_check_in_out_inside_the_resource_image(images, registry_plain, skopeo):
    resource_image = next(ref for ref in images if "registry-image-resource" in ref)
    repo = f"concourse/inside-{uuid.uuid4().hex[:8]}"
    image = single_image("inside")
    digest = push(registry_plain, repo, image, ["v1"])
    source = {"repository": f"{registry_plain.host}/{repo}", "tag": "v1"}
    target = {"repository": f"{registry_plain.host}/{repo}-out", "tag": "copied"}
    check = json.dumps({"source": source})
    version = {"tag": "v1", "digest": digest}
    get = json.dumps(
        {"source": source, "version": version, "params": {"format": "oci-layout"}}
    )
    put = json.dumps({"source": target, "params": {"image": "oci"}})
    script = (
        f"echo '{check}' | /opt/resource/check && "
        f"echo '{get}' | /opt/resource/in /tmp/get >/dev/null && "
        f"echo '{put}' | /opt/resource/out /tmp/get"
    )
    result = run_in_image(resource_image, script)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert json.loads(lines[0]) == [version]
    assert json.loads(lines[-1])["version"] == {"tag": "copied", "digest": digest}
    raw = skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        f"docker://{target['repository']}:copied",
    ).stdout
    assert sha(raw.encode()) == digest


def test_task_image_runs_the_build_entry_point(images):
    task_image = next(ref for ref in images if "oci-build-task" in ref)
    result = run_in_image(task_image, "build --help")
    assert result.returncode == 0, result.stderr
    assert "IMAGE_PLATFORM" in result.stdout
