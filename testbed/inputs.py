"""Real multi-architecture inputs, fetched once: Debian's busybox-static per arch.

busybox-static is a single statically linked binary, so it runs under QEMU with no
libraries and makes a real ``TARGETARCH`` input for builds. The packages come from
the machine's own APT sources through a private APT configuration: its own lists
and cache directories, an empty dpkg status and the wanted ``APT::Architectures``,
so the system's dpkg architectures are never changed. One ``apt-get update`` and
one ``apt-get download`` fetch every architecture; ``dpkg-deb -x`` extracts each
into ``~/.cache/platforge-testbed/busybox/ARCH`` (``XDG_CACHE_HOME`` is honoured),
which survives between runs and is never inside the repository.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["ARCHES", "PLATFORMS", "InputError", "busybox_roots", "cache_dir"]

ARCHES = ("amd64", "arm64", "armhf", "ppc64el", "s390x")
# Debian architecture -> OCI platform -> what `uname -m` prints there.
PLATFORMS = {
    "amd64": ("linux/amd64", "x86_64"),
    "arm64": ("linux/arm64", "aarch64"),
    "armhf": ("linux/arm/v7", "armv7l"),
    "ppc64el": ("linux/ppc64le", "ppc64le"),
    "s390x": ("linux/s390x", "s390x"),
}
UPDATE_TIMEOUT = 300
DOWNLOAD_TIMEOUT = 300


class InputError(Exception):
    """An input could not be fetched (no package registry reachable, …)."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "platforge-testbed"


def _apt_config(root: Path, arches: Iterable[str]) -> Path:
    for sub in ("lists/partial", "cache/archives/partial"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    arch_list = " ".join(f'"{a}";' for a in arches)
    config = root / "apt.conf"
    config.write_text(
        f'Dir::State::Lists "{root / "lists"}";\n'
        f'Dir::Cache "{root / "cache"}";\n'
        'Dir::State::status "/dev/null";\n'
        f"APT::Architectures {{ {arch_list} }};\n"
        # The private dirs live in root's home, which the _apt user cannot enter.
        'APT::Sandbox::User "root";\n'
        'Acquire::Languages "none";\n'
    )
    return config


def _run(argv: list[str], env: dict[str, str], cwd: Path, timeout: int) -> None:
    try:
        done = subprocess.run(
            argv,
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise InputError(f"{' '.join(argv[:2])} took over {timeout}s") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise InputError(f"{' '.join(argv[:2])} failed: {' | '.join(tail)}")


def busybox_roots(arches: Iterable[str] = ARCHES) -> dict[str, Path]:
    """Debian arch -> extracted busybox-static package root (``bin/busybox``)."""
    arches = tuple(arches)
    base = cache_dir() / "busybox"
    base.mkdir(parents=True, exist_ok=True)
    roots = {arch: base / arch for arch in arches}
    if all((root / "bin/busybox").exists() for root in roots.values()):
        return roots

    # Several pytest sessions may ask at once; one fetches, the others wait.
    with (base / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wanted = [a for a in arches if not (roots[a] / "bin/busybox").exists()]
        if wanted:
            _fetch(base, wanted)
    return roots


def _fetch(base: Path, arches: list[str]) -> None:
    apt_root = base / ".apt"
    env = dict(os.environ, APT_CONFIG=str(_apt_config(apt_root, arches)))
    env["DEBIAN_FRONTEND"] = "noninteractive"
    _run(["apt-get", "update", "-q"], env, base, UPDATE_TIMEOUT)

    with tempfile.TemporaryDirectory(dir=base, prefix=".fetch-") as temp:
        work = Path(temp)
        packages = [f"busybox-static:{arch}" for arch in arches]
        _run(["apt-get", "download", "-q", *packages], env, work, DOWNLOAD_TIMEOUT)
        for arch in arches:
            debs = sorted(work.glob(f"busybox-static_*_{arch}.deb"))
            if not debs:
                raise InputError(f"apt-get download gave no busybox-static for {arch}")
            tree = work / f"root-{arch}"
            # dpkg-deb -x, not a pipe from --fsys-tarfile: that can die of SIGPIPE.
            _run(["dpkg-deb", "-x", str(debs[0]), str(tree)], env, work, 120)
            if not (tree / "bin/busybox").exists():
                raise InputError(f"{debs[0].name} has no bin/busybox")
            target = base / arch
            if target.exists():
                shutil.rmtree(target)
            tree.replace(target)
    # The package lists of five architectures weigh ~100 MB and are only needed
    # again when an architecture is missing, which refetches them anyway.
    shutil.rmtree(apt_root, ignore_errors=True)
