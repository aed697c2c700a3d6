"""`make demo`: platforge's main job, end to end, on real inputs and a real registry.

1. Start a loopback registry (Debian's docker-registry) that the demo stops at the end.
2. Make a real multi-architecture base image from Debian's busybox-static packages
   (examples/base), built by platforge itself and pushed.
3. Build examples/multi-platform (the seed Dockerfile: ``FROM alpine``, an authors
   label, ``CMD ["uname", "-m"]``) for linux/amd64 and linux/arm64, with ``alpine``
   mapped to the local base (there is no internet here), and push it.
4. Inspect the pushed index, then run every platform of it.
5. Build examples/targetarch (``ARG TARGETARCH`` picks a per-architecture static
   binary: ruff from its musllinux wheels) and run both platforms.

Every step runs the ``platforge`` command as a user would; the commands are printed.
The demo's own store and outputs live in ``.demo/`` (git-ignored; or
``$PLATFORGE_DEMO_DIR``), so it does not touch the user's store.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed.bed import Testbed  # noqa: E402  (the repo root joins sys.path first)
from testbed.inputs import busybox_roots  # noqa: E402

WORK = Path(os.environ.get("PLATFORGE_DEMO_DIR", REPO / ".demo"))
PLATFORMS = ("linux/amd64", "linux/arm64")
# Debian architecture → OCI architecture for the busybox packages.
DEB_TO_OCI = {"amd64": "amd64", "arm64": "arm64"}
RUFF_VERSION = "0.17.6"
RUFF_WHEELS = {"amd64": "musllinux_1_2_x86_64", "arm64": "musllinux_1_2_aarch64"}
ELF_MACHINE = {62: "x86-64", 183: "AArch64"}


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def platforge(*args: str, capture: bool = False) -> str:
    argv = [sys.executable, "-m", "platforge", *args]
    print("$ platforge " + shlex.join(args), flush=True)
    env = {**os.environ, "PLATFORGE_STORE": str(WORK / "store")}
    if capture:
        done = subprocess.run(
            argv, env=env, check=False, stdout=subprocess.PIPE, text=True
        )
        print(done.stdout, end="", flush=True)
    else:
        done = subprocess.run(argv, env=env, check=False, text=True)
    if done.returncode != 0:
        sys.exit(f"demo: `platforge {args[0]}` failed (exit {done.returncode})")
    return done.stdout or ""


def make_busybox_context() -> Path:
    """examples/base/rootfs-ARCH/: busybox plus one symlink per applet."""
    roots = busybox_roots(list(DEB_TO_OCI))
    context = REPO / "examples" / "base"
    native = roots["amd64"] / "bin" / "busybox"
    applets = subprocess.run(
        [str(native), "--list-full"], check=True, capture_output=True, text=True
    ).stdout.split()
    for deb_arch, oci_arch in DEB_TO_OCI.items():
        rootfs = context / f"rootfs-{oci_arch}"
        if rootfs.exists():
            shutil.rmtree(rootfs)
        for directory in ("bin", "sbin", "usr/bin", "usr/sbin", "tmp", "etc"):
            (rootfs / directory).mkdir(parents=True, exist_ok=True)
        shutil.copy2(roots[deb_arch] / "bin" / "busybox", rootfs / "bin" / "busybox")
        for applet in applets:
            link = rootfs / applet
            if link.name == "busybox" or link.exists():
                continue
            depth = len(Path(applet).parts) - 1
            link.symlink_to("../" * depth + "bin/busybox")
        (rootfs / "etc" / "passwd").write_text(
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        )
        (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return context


def fetch_ruff() -> Path:
    """examples/targetarch/bin/ARCH/ruff from ruff's musllinux wheels (static)."""
    context = REPO / "examples" / "targetarch"
    cache = Path.home() / ".cache" / "platforge-demo"
    cache.mkdir(parents=True, exist_ok=True)
    for arch, wheel_platform in RUFF_WHEELS.items():
        target = context / "bin" / arch / "ruff"
        if target.exists():
            continue
        wheels = list(cache.glob(f"ruff-{RUFF_VERSION}-*{wheel_platform}*.whl"))
        if not wheels:
            subprocess.run(
                [
                    *(sys.executable, "-m", "pip", "download", "-q", "--no-deps"),
                    *("--only-binary=:all:", "--platform", wheel_platform),
                    *("--python-version", "3.11", "-d", str(cache)),
                    f"ruff=={RUFF_VERSION}",
                ],
                check=True,
            )
            wheels = list(cache.glob(f"ruff-{RUFF_VERSION}-*{wheel_platform}*.whl"))
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = f"ruff-{RUFF_VERSION}.data/scripts/ruff"
            tmp = target.with_suffix(".tmp")
            with wheel.open(member) as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        tmp.chmod(0o755)
        tmp.replace(target)
    return context


def elf_machine(path: Path) -> str:
    header = path.read_bytes()[:20]
    return ELF_MACHINE.get(int.from_bytes(header[18:20], "little"), "unknown")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--registry",
        metavar="HOST:PORT",
        help="use this running loopback registry instead of starting one",
    )
    options = parser.parse_args(argv)
    started = time.monotonic()
    WORK.mkdir(exist_ok=True)
    summary: list[str] = []
    bed = None if options.registry else Testbed(WORK / "testbed")
    try:
        if bed is None:
            host = options.registry
        else:
            say("Starting a loopback registry (Debian's docker-registry)")
            host = bed.registry("plain").host
        print(f"registry at {host}")

        say("Making a multi-architecture base image from Debian's busybox-static")
        base_context = make_busybox_context()
        base = f"{host}/demo/busybox:latest"
        platforge(
            "build", str(base_context), "--platform", ",".join(PLATFORMS),
            "-t", base, "--push", "--progress", "plain",
        )  # fmt: skip
        summary.append(f"base image {base} (busybox, {len(PLATFORMS)} platforms)")

        say(
            "Building examples/multi-platform: there is no internet here, so `alpine` "
            f"is mapped to the local base with --build-context alpine=docker-image://{base}"
        )
        image = f"{host}/demo/multi-platform:latest"
        platforge(
            "build", str(REPO / "examples" / "multi-platform"),
            "--platform", ",".join(PLATFORMS),
            "--build-context", f"alpine=docker-image://{base}",
            "-t", image, "--push", "--progress", "plain",
        )  # fmt: skip

        say("Inspecting the pushed index")
        platforge("inspect", image)

        say("Running every platform of it")
        for platform in PLATFORMS:
            printed = platforge("run", "--platform", platform, image, capture=True)
            summary.append(f"{image} on {platform} printed {printed.strip()!r}")

        say("Building examples/targetarch: ARG TARGETARCH picks a static binary")
        ta_context = fetch_ruff()
        for arch in RUFF_WHEELS:
            binary = ta_context / "bin" / arch / "ruff"
            print(f"bin/{arch}/ruff is an ELF for {elf_machine(binary)}")
        ta_image = f"{host}/demo/targetarch:latest"
        platforge(
            "build", str(ta_context), "--platform", ",".join(PLATFORMS),
            "--build-context", f"alpine=docker-image://{base}",
            "-t", ta_image, "--push", "--progress", "plain",
        )  # fmt: skip
        for platform in PLATFORMS:
            printed = platforge("run", "--platform", platform, ta_image, capture=True)
            summary.append(f"{ta_image} on {platform} printed {printed.strip()!r}")
    finally:
        if bed is not None:
            say("Stopping the registry")
            bed.stop()

    say(f"Summary (the demo's steps took {time.monotonic() - started:.1f} s)")
    for line in summary:
        print(f"  - {line}")


if __name__ == "__main__":
    main()
