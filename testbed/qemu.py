"""Which foreign architectures this kernel can run, through binfmt_misc and QEMU.

A binfmt_misc handler maps an ELF header pattern to an interpreter
(``/usr/libexec/qemu-binfmt/aarch64-binfmt-P``). The **F** ("fix binary") flag makes
the kernel open the interpreter when the handler is registered, so binaries inside
a chroot or container find it without the file existing there. Without F, foreign
RUN steps fail with "No such file or directory". scripts/install-system.sh registers
the handlers; this module only reads their state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["BINFMT_DIR", "DEBIAN_TO_HANDLER", "Handler", "missing", "qemu_status"]

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")

# Debian architecture name -> binfmt_misc handler name -> `uname -m` inside.
DEBIAN_TO_HANDLER = {
    "arm64": ("qemu-aarch64", "aarch64"),
    "armhf": ("qemu-arm", "armv7l"),
    "armel": ("qemu-arm", "armv7l"),
    "ppc64el": ("qemu-ppc64le", "ppc64le"),
    "s390x": ("qemu-s390x", "s390x"),
    "riscv64": ("qemu-riscv64", "riscv64"),
    "mips64el": ("qemu-mips64el", "mips64"),
    "i386": ("", "i686"),  # runs natively on amd64 hosts
}


@dataclass(frozen=True)
class Handler:
    name: str
    registered: bool
    enabled: bool
    flags: str
    interpreter: str

    @property
    def usable(self) -> bool:
        """Registered, enabled, with the F flag, and its interpreter present."""
        return (
            self.registered
            and self.enabled
            and "F" in self.flags
            and Path(self.interpreter).exists()
        )


def _read(name: str, directory: Path) -> Handler:
    try:
        lines = (directory / name).read_text().splitlines()
    except OSError:
        return Handler(name, registered=False, enabled=False, flags="", interpreter="")
    fields = dict(line.split(" ", 1) for line in lines if " " in line)
    return Handler(
        name=name,
        registered=True,
        enabled="enabled" in lines,
        flags=fields.get("flags:", ""),
        interpreter=fields.get("interpreter", ""),
    )


def qemu_status(directory: Path = BINFMT_DIR) -> dict[str, Handler]:
    """Every ``qemu-*`` handler this kernel knows, by handler name."""
    try:
        names = sorted(
            p.name for p in directory.iterdir() if p.name.startswith("qemu-")
        )
    except OSError:
        names = []
    return {name: _read(name, directory) for name in names}


def missing(handlers: list[str], directory: Path = BINFMT_DIR) -> list[str]:
    """The handlers among ``handlers`` that are not usable, with why."""
    problems = []
    for name in handlers:
        handler = _read(name, directory)
        if not handler.registered:
            problems.append(f"{name} not registered")
        elif not handler.usable:
            problems.append(
                f"{name} unusable (enabled={handler.enabled}, flags={handler.flags!r}, "
                f"interpreter={handler.interpreter})"
            )
    return problems
