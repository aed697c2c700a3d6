"""Running foreign platforms: binfmt_misc handlers for QEMU user-mode emulators.

Linux can run a binary of another architecture when a *binfmt_misc handler* matching
that architecture's ELF header names an emulator (``qemu-aarch64`` and friends). For a
container the handler must carry the **F** flag ("fix binary"): the kernel opens the
emulator when the handler is registered, so a binary inside a chroot or container
finds it even though the emulator is not in the container's filesystem. Without F,
runs inside a container fail with "No such file or directory".

Architectures go by their OCI names on the command line and by QEMU's names here:

======== ============ ======== ============
OCI      QEMU         OCI      QEMU
======== ============ ======== ============
amd64    x86_64       386      i386
arm64    aarch64      arm      arm
ppc64le  ppc64le      ppc64    ppc64
s390x    s390x        riscv64  riscv64
mips64le mips64el     mips64   mips64
mipsle   mipsel       mips     mips
loong64  loongarch64
======== ============ ======== ============

:func:`status` reports, per architecture, whether a handler is registered, its flags
and interpreter, whether a static QEMU binary is installed (what proot's ``-q`` needs)
and whether proot is available. :func:`ensure` raises :class:`EmulationError` naming
the exact fix. :func:`install` registers handlers from the definitions the
``qemu-user-static`` package ships in ``/usr/lib/binfmt.d/qemu-ARCH.conf``; when that
is not permitted it returns the commands a user with root must run instead.

``PLATFORGE_BINFMT_DIR`` points everything at another binfmt_misc directory (the
default is ``/proc/sys/fs/binfmt_misc``) and ``PLATFORGE_BINFMT_CONF_DIR`` at another
definitions directory; both exist so an administrator (or a test) can inspect a
different set of handlers.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from platforge import platforms
from platforge.errors import EmulationError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from platforge.platforms import Platform

__all__ = [
    "ArchStatus",
    "InstallResult",
    "binfmt_dir",
    "ensure",
    "install",
    "is_native",
    "native_architectures",
    "oci_architecture",
    "qemu_name",
    "qemu_static",
    "status",
]

log = logging.getLogger("platforge.build.emulation")

DEFAULT_BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
DEFAULT_CONF_DIR = Path("/usr/lib/binfmt.d")

# OCI architecture name -> QEMU's name for the same instruction set.
_QEMU_NAMES = {
    "amd64": "x86_64",
    "386": "i386",
    "arm64": "aarch64",
    "arm": "arm",
    "ppc64le": "ppc64le",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64le": "mips64el",
    "mips64": "mips64",
    "mipsle": "mipsel",
    "mips": "mips",
    "loong64": "loongarch64",
}

# What a host CPU runs without emulation, keyed by the host's own OCI architecture.
_NATIVE = {
    "amd64": ("amd64", "386"),
    "arm64": ("arm64",),
    "ppc64le": ("ppc64le",),
    "s390x": ("s390x",),
    "riscv64": ("riscv64",),
    "386": ("386",),
    "arm": ("arm",),
}

# Architectures `status` lists when none are asked for.
DEFAULT_ARCHITECTURES = ("amd64", "386", "arm64", "arm", "ppc64le", "s390x", "riscv64")


def binfmt_dir() -> Path:
    """The binfmt_misc directory consulted (``PLATFORGE_BINFMT_DIR`` overrides)."""
    return Path(os.environ.get("PLATFORGE_BINFMT_DIR") or DEFAULT_BINFMT_DIR)


def _conf_dir() -> Path:
    return Path(os.environ.get("PLATFORGE_BINFMT_CONF_DIR") or DEFAULT_CONF_DIR)


def qemu_name(architecture: str) -> str:
    """QEMU's name for an OCI architecture (``arm64`` -> ``aarch64``)."""
    try:
        return _QEMU_NAMES[architecture]
    except KeyError:
        known = ", ".join(sorted(_QEMU_NAMES))
        raise EmulationError(
            f"architecture {architecture!r} has no known QEMU emulator; "
            f"use one of: {known}"
        ) from None


# QEMU's names, and spellings of Debian and uname, for the OCI architecture.
_TO_OCI = {qemu: oci for oci, qemu in _QEMU_NAMES.items()} | {
    "i686": "386",
    "armhf": "arm",
    "armv7": "arm",
}


def oci_architecture(name: str) -> str:
    """The OCI name of an architecture given by its OCI or QEMU name (or an alias).

    ``aarch64`` -> ``arm64``, ``x86_64`` -> ``amd64``, ``armhf`` -> ``arm``; a name no
    QEMU emulator is known for is refused as :func:`qemu_name` refuses it.
    """
    architecture = name if name in _QEMU_NAMES else _TO_OCI.get(name, name)
    qemu_name(architecture)
    return architecture


def native_architectures() -> tuple[str, ...]:
    """OCI architectures this host runs without emulation (amd64 also runs 386)."""
    arch = platforms.host().architecture
    return _NATIVE.get(arch, (arch,))


def is_native(platform: Platform) -> bool:
    """Whether ``platform`` runs on this host's CPU without an emulator."""
    return platform.architecture in native_architectures()


def qemu_static(architecture: str) -> Path | None:
    """The static QEMU binary for ``architecture`` (what ``proot -q`` needs)."""
    name = qemu_name(architecture)
    found = shutil.which(f"qemu-{name}-static")
    if found:
        return Path(found)
    packaged = Path(f"/usr/libexec/qemu-binfmt/{name}-binfmt-P")
    return packaged if packaged.exists() else None


@dataclass(frozen=True)
class ArchStatus:
    """What this host can do for one architecture."""

    architecture: str
    qemu: str
    native: bool
    handler: str | None
    enabled: bool
    flags: str
    interpreter: str | None
    qemu_static: Path | None
    proot: bool

    @property
    def fix_binary(self) -> bool:
        """Whether the handler has the F flag that containers need."""
        return "F" in self.flags

    @property
    def runnable(self) -> bool:
        """Whether containers of this architecture run here (natively or by binfmt)."""
        return self.native or (
            self.handler is not None and self.enabled and self.fix_binary
        )


def _read_handler(path: Path) -> tuple[bool, str, str | None, str]:
    """Parse one handler file: enabled, flags, interpreter, magic."""
    enabled, flags, interpreter, magic = False, "", None, ""
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition(" ")
        if key == "enabled":
            enabled = True
        elif key == "interpreter":
            interpreter = value.strip()
        elif key == "flags:":
            flags = value.strip()
        elif key == "magic":
            magic = value.strip()
    return enabled, flags, interpreter, magic


def _find_handler(directory: Path, name: str) -> Path | None:
    """The handler for QEMU architecture ``name``, under the usual names."""
    for candidate in (f"qemu-{name}", f"qemu-{name}-static", name):
        path = directory / candidate
        if path.is_file():
            return path
    return None


def _status_one(architecture: str, directory: Path, proot: bool) -> ArchStatus:
    name = qemu_name(architecture)
    native = architecture in native_architectures()
    handler = _find_handler(directory, name) if directory.is_dir() else None
    enabled, flags, interpreter = False, "", None
    if handler is not None:
        try:
            enabled, flags, interpreter, _ = _read_handler(handler)
        except OSError as exc:
            log.debug("cannot read binfmt handler %s: %s", handler, exc)
            handler = None
    return ArchStatus(
        architecture=architecture,
        qemu=name,
        native=native,
        handler=handler.name if handler is not None else None,
        enabled=enabled,
        flags=flags,
        interpreter=interpreter,
        qemu_static=qemu_static(architecture),
        proot=proot,
    )


def status(architectures: Iterable[str] = ()) -> list[ArchStatus]:
    """Per architecture: native?, handler?, flags, interpreter, QEMU, proot."""
    wanted = list(architectures) or list(DEFAULT_ARCHITECTURES)
    directory = binfmt_dir()
    proot = shutil.which("proot") is not None
    return [_status_one(arch, directory, proot) for arch in wanted]


def _fix_command(architecture: str) -> str:
    return f"platforge emulation install {architecture}"


def ensure(platform: Platform) -> ArchStatus:
    """Check that containers of ``platform`` run here; raise naming the fix if not."""
    found = _status_one(
        platform.architecture, binfmt_dir(), shutil.which("proot") is not None
    )
    if found.runnable:
        return found
    where = binfmt_dir()
    if found.handler is None:
        why = f"no binfmt_misc handler for qemu-{found.qemu} is registered in {where}"
    elif not found.enabled:
        why = f"the binfmt_misc handler {found.handler} in {where} is disabled"
    else:
        why = (
            f"the binfmt_misc handler {found.handler} lacks the F flag "
            f"(flags: {found.flags or 'none'}), so containers cannot find the emulator"
        )
    raise EmulationError(
        f"cannot run platform {platform}: {why}; "
        f"run `{_fix_command(platform.architecture)}` as root"
    )


@dataclass(frozen=True)
class InstallResult:
    """What :func:`install` did for one architecture.

    ``action`` is ``native``, ``present`` (a handler with the F flag was already
    there), ``registered``, or ``manual`` (not permitted here: ``commands`` are what
    a user with root must run).
    """

    architecture: str
    action: str
    detail: str
    commands: tuple[str, ...] = ()


def _manual_commands(directory: Path, conf: Path, mounted: bool) -> tuple[str, ...]:
    commands = []
    if not mounted:
        commands.append(f"sudo mount -t binfmt_misc binfmt_misc {directory}")
    commands.append(f"sudo sh -c 'cat {conf} > {directory / 'register'}'")
    return tuple(commands)


def _mount_binfmt(directory: Path) -> bool:
    """Mount binfmt_misc at its standard place; only there, never elsewhere."""
    if directory != DEFAULT_BINFMT_DIR or os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "binfmt_misc", "binfmt_misc", str(directory)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def _install_one(architecture: str, directory: Path) -> InstallResult:
    name = qemu_name(architecture)
    if architecture in native_architectures():
        return InstallResult(architecture, "native", "runs natively on this host")
    found = _status_one(architecture, directory, proot=False)
    if found.runnable:
        return InstallResult(
            architecture, "present", f"handler {found.handler} ({found.flags})"
        )
    conf = _conf_dir() / f"qemu-{name}.conf"
    if not conf.is_file():
        raise EmulationError(
            f"no binfmt definition {conf} for {architecture}; install the "
            f"qemu-user-static package (it ships /usr/lib/binfmt.d/qemu-{name}.conf)"
        )
    register = directory / "register"
    if not (register.exists() or _mount_binfmt(directory)):
        return InstallResult(
            architecture,
            "manual",
            f"binfmt_misc is not mounted at {directory}",
            _manual_commands(directory, conf, mounted=False),
        )
    commands = _manual_commands(directory, conf, mounted=True)
    try:
        if found.handler is not None:
            # A handler without the F flag (or disabled) is in the way; the kernel
            # takes the new definition only once the old one is removed.
            old = directory / found.handler
            commands = (f"sudo sh -c 'echo -1 > {old}'", *commands)
            old.write_text("-1")
        with register.open("wb") as out:
            out.write(conf.read_bytes().strip())
    except FileExistsError:
        return InstallResult(architecture, "present", "already registered")
    except OSError as exc:
        return InstallResult(
            architecture, "manual", f"not permitted here: {exc.strerror}", commands
        )
    log.info("registered binfmt handler for %s from %s", architecture, conf)
    return InstallResult(architecture, "registered", f"from {conf}")


def install(architectures: Iterable[str]) -> list[InstallResult]:
    """Register QEMU binfmt handlers (F flag) for ``architectures`` when permitted."""
    directory = binfmt_dir()
    return [_install_one(arch, directory) for arch in architectures]
