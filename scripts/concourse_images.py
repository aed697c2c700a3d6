"""Build platforge's Concourse images with platforge (amd64 and arm64) and push them.

    make concourse-images REGISTRY=127.0.0.1:5000/platforge
    python scripts/concourse_images.py 127.0.0.1:5000/platforge [--platforms ...]

pushes ``REGISTRY/registry-image-resource:latest`` (concourse/resource/Dockerfile) and
``REGISTRY/oci-build-task:latest`` (concourse/task/Dockerfile), each an image index
over the requested platforms, and prints their digests.

Everything comes from real inputs, offline apart from the package registries:

1. **Base**: per architecture, ``mmdebstrap --variant=essential`` makes a Debian
   root filesystem with python3 (plus crun, uidmap, fuse-overlayfs and proot, which
   the build task's RUN steps use), from the host's own apt sources. Foreign
   architectures run their maintainer scripts through QEMU (binfmt). The tarball
   becomes the one layer of a per-architecture image, and the images an index, in an
   OCI layout that the builds use as the named context ``platforge-concourse-base``.
   Tarballs are cached in ``~/.cache/platforge-concourse/``; the first run took
   27 s for amd64 and 257 s for arm64 (QEMU) on a busy 2-core machine.
2. **Python packages**: ``pip install --target`` of platforge's wheel with its
   dependencies for each architecture (manylinux wheels for CPython 3.11, Debian
   bookworm's python3), into ``vendor-<arch>/``.
3. **Build**: ``platforge.build`` with both platforms at once. The Dockerfiles have
   no RUN (they COPY ``vendor-$TARGETARCH``), so nothing executes inside the images
   and no privilege or emulation is needed for this step.

The images run ``python3 -m platforge`` with ``PYTHONPATH=/opt/platforge/lib``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from isal import igzip  # noqa: E402 - after the path set-up above

from platforge import platforms  # noqa: E402
from platforge.build import BuildRequest, Output, build  # noqa: E402
from platforge.oci import mediatypes as mt  # noqa: E402
from platforge.oci.content import Descriptor, ImageConfig, Index, Manifest  # noqa: E402
from platforge.oci.layout import Layout  # noqa: E402
from platforge.registry.reference import is_loopback  # noqa: E402

CACHE = Path.home() / ".cache" / "platforge-concourse"
BASE_PACKAGES = ("python3", "crun", "uidmap", "fuse-overlayfs", "proot")
PYTHON = "3.11"  # Debian bookworm's python3
WHEEL_PLATFORMS = {"amd64": "x86_64", "arm64": "aarch64"}
IMAGES = {"resource": "registry-image-resource", "task": "oci-build-task"}
BASE_NAME = "platforge-concourse-base"
CHUNK = 1 << 20


def say(message: str) -> None:
    print(f"concourse-images: {message}", file=sys.stderr, flush=True)


def host_suite() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return "bookworm"


def apt_sources() -> Path:
    """The host's apt sources, pasted into the new root by mmdebstrap."""
    for candidate in (
        Path("/etc/apt/sources.list.d/debian.sources"),
        Path("/etc/apt/sources.list"),
    ):
        if candidate.is_file() and candidate.read_text().strip():
            return candidate
    msg = "no apt sources found on this host; mmdebstrap needs one to fetch packages"
    raise SystemExit(msg)


def base_tarball(arch: str) -> Path:
    """A Debian root filesystem tarball for ``arch`` (cached)."""
    suite = host_suite()
    key = hashlib.sha256(f"{suite} {arch} {BASE_PACKAGES}".encode()).hexdigest()[:12]
    target = CACHE / f"base-{arch}-{key}.tar"
    if target.is_file():
        say(f"base {arch}: cached {target.name}")
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial.tar")
    started = time.monotonic()
    say(f"base {arch}: mmdebstrap {suite} with {', '.join(BASE_PACKAGES)}")
    subprocess.run(
        [
            "mmdebstrap",
            "--variant=essential",
            f"--include={','.join(BASE_PACKAGES)}",
            f"--architectures={arch}",
            "--quiet",
            suite,
            str(partial),
            str(apt_sources()),
        ],
        check=True,
        timeout=900,
    )
    partial.replace(target)
    say(f"base {arch}: {time.monotonic() - started:.0f} s")
    return target


def base_layout(arches: list[str], dest: Path) -> Path:
    """An OCI layout holding the base images of ``arches`` as one index."""
    layout = Layout.create(dest)
    manifests = []
    for arch in arches:
        tarball = base_tarball(arch)
        compressed = dest / f".{arch}.tar.gz"
        diff = hashlib.sha256()
        with (
            tarball.open("rb") as source,
            igzip.open(compressed, "wb", compresslevel=1) as out,
        ):
            while chunk := source.read(CHUNK):
                diff.update(chunk)
                out.write(chunk)
        with compressed.open("rb") as stream:
            layer = layout.write_blob(stream, media_type=mt.OCI_LAYER_GZIP)
        compressed.unlink()
        platform = platforms.parse(f"linux/{arch}")
        config = ImageConfig(
            {
                "created": "1970-01-01T00:00:00Z",
                "architecture": platform.architecture,
                "os": "linux",
                "config": {
                    "Env": [
                        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                    ],
                },
                "rootfs": {
                    "type": "layers",
                    "diff_ids": [f"sha256:{diff.hexdigest()}"],
                },
            }
        )
        config_descriptor = layout.write_config(config)
        manifest = Manifest.build(config_descriptor, [layer])
        layout.write_manifest(manifest)
        manifests.append(
            Descriptor(
                manifest.media_type,
                manifest.digest,
                manifest.size,
                platform,
            )
        )
    index = Index.build(manifests)
    layout.write_manifest(index)
    layout.add_ref(index.descriptor(), "latest")
    return dest


def vendor(arch: str, wheel: Path, dest: Path) -> None:
    """platforge and its dependencies, installed for ``arch`` into ``dest``."""
    machine = WHEEL_PLATFORMS[arch]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-compile",
            "--target",
            str(dest),
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            PYTHON,
            # pip matches these tags exactly (no expansion to older glibc tags);
            # all are below bookworm's glibc 2.36.
            *(
                arg
                for tag in ("manylinux2014", "manylinux_2_17", "manylinux_2_28")
                for arg in ("--platform", f"{tag}_{machine}")
            ),
            str(wheel),
        ],
        check=True,
        timeout=600,
    )
    # Console scripts point at the build host's interpreter; the image uses -m.
    shutil.rmtree(dest / "bin", ignore_errors=True)


def platforge_wheel(dest: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(dest),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    return next(dest.glob("platforge-*.whl"))


def build_image(
    name: str, context: Path, base: Path, wanted: list[platforms.Platform], tag: str
) -> str:
    request = BuildRequest(
        context=context,
        dockerfile=context / "Dockerfile",
        platforms=wanted,
        tags=[tag],
        build_contexts={BASE_NAME: f"oci-layout://{base}"},
        outputs=[Output("registry")],
        push=True,
        insecure_registries=[tag.split("/", 1)[0]] if is_loopback(tag) else [],
    )
    started = time.monotonic()
    result = build(request)
    say(f"{name}: built and pushed in {time.monotonic() - started:.1f} s")
    return str(result.digest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("registry", help="where to push, e.g. 127.0.0.1:5000/platforge")
    parser.add_argument(
        "--platforms", default="linux/amd64,linux/arm64", help="comma-separated"
    )
    args = parser.parse_args(argv)
    if not args.registry:
        parser.error("give REGISTRY, e.g. make concourse-images REGISTRY=host:port/x")
    wanted = platforms.parse_list(args.platforms)
    arches = [p.architecture for p in wanted]
    unknown = [a for a in arches if a not in WHEEL_PLATFORMS]
    if unknown:
        parser.error(f"no wheels are fetched for {', '.join(unknown)}; use amd64/arm64")

    digests: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="platforge-concourse-") as temp:
        work = Path(temp)
        base = base_layout(arches, work / "base")
        wheel = platforge_wheel(work / "wheel")
        vendors = {}
        for arch in arches:
            say(f"vendor {arch}: pip install --target for {WHEEL_PLATFORMS[arch]}")
            vendors[arch] = work / f"vendor-{arch}"
            vendor(arch, wheel, vendors[arch])
        for kind, image in IMAGES.items():
            context = work / f"context-{kind}"
            shutil.copytree(ROOT / "concourse" / kind, context)
            for arch, path in vendors.items():
                # Hard links: the vendor trees are the same for both images.
                shutil.copytree(path, context / f"vendor-{arch}", copy_function=os.link)
            tag = f"{args.registry.rstrip('/')}/{image}:latest"
            digests[tag] = build_image(kind, context, base, wanted, tag)
    json.dump(digests, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
