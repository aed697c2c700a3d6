"""The sandbox that runs one RUN step: a command in a container made from layers.

A RUN step sees the image's layers as one filesystem and everything it changes lands in
an *upper directory* in overlay format: new and changed files as themselves, a deleted
file as a character device 0/0 of the same name (a whiteout), a directory that replaced
the one below as a directory with the ``trusted.overlay.opaque`` xattr set to ``y``. The
builder turns that directory into a layer tar; the format is the same whatever the mode.

Modes, in the order they are tried:

1. ``runtime``: an OCI runtime (crun, else runc) started from a runtime spec written
   here. platforge mounts the root filesystem itself (overlayfs: the lower directories
   bottom first, the upper directory, a work directory) and unmounts it afterwards.
2. ``chroot``: when overlayfs or the runtime is unavailable, ``unshare`` (new mount,
   pid, ipc, uts and optionally network namespaces) and ``chroot`` over a flattened copy
   of the layers.
3. ``proot``: ptrace-based, no privilege, with ``-q qemu-ARCH-static`` when the host has
   no binfmt handler for the platform.

Without overlayfs the upper directory is produced by comparing the copy before and
after the run (a tree diff), so the result has the same shape as overlayfs's.

What the command sees follows Docker: the environment from the spec (``PATH`` gets the
usual default when unset, ``HOME`` comes from ``/etc/passwd``), the user resolved from
the image's ``/etc/passwd`` and ``/etc/group``, the working directory created when
missing, ``/etc/hosts``, ``/etc/resolv.conf`` and ``/etc/hostname`` bound from files
platforge writes, so none of them ends up in the layer. Any mount point the sandbox had
to create for its own mounts is removed again from the upper directory.

Limitations: no pseudo-terminal is allocated (``stdin_tty`` connects platforge's own
standard input instead); resource limits and seccomp profiles are not applied; the
``chroot`` and ``proot`` modes cannot isolate the network of the ``host`` mode from
the ``none`` mode under proot (proot shares the host's network).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from platforge.platforms import Platform

__all__ = [
    "Mount",
    "RunResult",
    "RunSpec",
    "SandboxCapabilities",
    "capabilities",
    "run",
]

log = logging.getLogger("platforge.sandbox")

MountKind = Literal["bind", "cache", "tmpfs", "secret"]
Network = Literal["none", "host"]
Mode = Literal["runtime", "chroot", "proot"]


@dataclass(frozen=True)
class Mount:
    """A mount inside the container for the duration of one RUN.

    ``bind`` and ``cache`` bind ``source`` (a host directory or file) at ``target``;
    ``secret`` binds a file read-only; ``tmpfs`` needs no source. ``options`` are extra
    mount options (``"size=64m"``, ``"mode=0700"``). Mounts never reach the layer.
    """

    kind: MountKind
    target: str
    source: Path | None = None
    readonly: bool = False
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunSpec:
    """Everything one RUN needs.

    ``lowerdirs`` are the unpacked layers, bottom first (empty for ``FROM scratch``);
    ``upperdir`` is an empty directory that receives the changes in overlay format.
    ``user`` is Docker's ``USER`` value (``name``, ``uid``, ``name:group``,
    ``uid:gid``; empty means root). ``output`` receives the combined stdout and stderr
    as it arrives; when it is ``None`` the command writes straight to platforge's own
    stdout and stderr (what ``platforge run`` wants).
    """

    lowerdirs: Sequence[Path]
    upperdir: Path
    args: Sequence[str]
    env: Sequence[str] = ()
    cwd: str = "/"
    user: str = ""
    platform: Platform | None = None
    network: Network = "none"
    mounts: Sequence[Mount] = ()
    hostname: str = "platforge"
    extra_hosts: Sequence[tuple[str, str]] = ()
    output: Callable[[bytes], None] | None = None
    stdin_tty: bool = False


@dataclass
class RunResult:
    """How a RUN ended: its exit status, the last ~4 KiB of output, the mode used."""

    exit_code: int
    output_tail: bytes = b""
    mode: str = ""


@dataclass(frozen=True)
class SandboxCapabilities:
    """Which mode :func:`run` will use on this host, and why."""

    mode: Mode
    runtime: str | None
    overlay: bool
    reasons: tuple[str, ...] = field(default=())


def capabilities() -> SandboxCapabilities:
    """Probe the host once and say which mode :func:`run` will use."""
    raise NotImplementedError


def run(spec: RunSpec) -> RunResult:
    """Run ``spec.args`` in a container made from ``spec.lowerdirs``."""
    raise NotImplementedError
