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

``PLATFORGE_SANDBOX=runtime|chroot|proot`` forces a mode and ``PLATFORGE_RUNTIME``
names the OCI runtime. The small per-run files (mount point, runtime spec, runtime
state) go to ``/dev/shm`` when it is a tmpfs, or to ``PLATFORGE_RUN_DIR``. On hosts
with hybrid cgroups (v1 controllers beside a v2 tree) runc is used, because crun
refuses them.

Limitations: no pseudo-terminal is allocated (``stdin_tty`` connects platforge's own
standard input instead); resource limits and seccomp profiles are not applied; under
proot the network is always the host's, the hostname is not set and ``network="none"``
is not enforced. Without root (``chroot`` in a user namespace, or ``proot``) the copy
and its changes belong to the invoking user, so the upper directory records that
owner, whiteouts and opaque directories may use overlay's ``user.overlay.*`` xattr
forms, and ``chroot`` cannot switch to a ``USER`` other than root.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import json
import logging
import os
import posixpath
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from platforge.build import emulation
from platforge.errors import EmulationError, SandboxError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from platforge.platforms import Platform

__all__ = [
    "Mount",
    "RunResult",
    "RunSpec",
    "SandboxCapabilities",
    "apply_overlay_dir",
    "capabilities",
    "resolve_in_root",
    "run",
    "stop_all",
    "write_tree_diff",
]

log = logging.getLogger("platforge.build.sandbox")

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
    ``upperdir`` is an empty directory that receives the changes in overlay format;
    as in overlayfs, its own mode and owner are what the command sees as ``/``
    (0755 root for an image; it is created so when missing).
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


# Docker's defaults, so a RUN behaves as it does under `docker build`.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]
_CAPABILITY_SETS = ("bounding", "effective", "permitted")
_MASKED = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
]
_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
_GENERATED = ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname")
_TAIL = 4096
_OPAQUE = "trusted.overlay.opaque"
# Without root, overlay's unprivileged ("userxattr") markers stand in for the
# character device and the trusted xattr; layer writers read both forms.
_USER_OPAQUE = "user.overlay.opaque"
_USER_WHITEOUT = "user.overlay.whiteout"
# mount(2) takes at most one page of options; longer lowerdir lists are merged first.
_MAX_MOUNT_OPTIONS = 4000
_MNT_DETACH = 2


def _env_mode() -> str | None:
    forced = os.environ.get("PLATFORGE_SANDBOX", "").strip() or None
    if forced is not None and forced not in ("runtime", "chroot", "proot"):
        raise SandboxError(
            f"PLATFORGE_SANDBOX={forced!r} is not a sandbox mode; "
            "use runtime, chroot or proot (or unset it to choose automatically)"
        )
    return forced


def _overlay_supported() -> bool:
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        return False
    return any(line.split()[-1:] == ["overlay"] for line in filesystems.splitlines())


def _find_runtime() -> str | None:
    wanted = os.environ.get("PLATFORGE_RUNTIME", "").strip()
    if wanted:
        # A runtime the user named is used or refused, never silently replaced.
        found = shutil.which(wanted)
        if found is None:
            raise SandboxError(
                f"PLATFORGE_RUNTIME={wanted} is not on PATH; unset it, or name "
                "crun or runc"
            )
        if Path(found).name == "crun" and _hybrid_cgroups():
            raise SandboxError(
                "PLATFORGE_RUNTIME=crun: crun refuses this host's mix of cgroup v1 "
                "and v2 (hybrid mode); unset PLATFORGE_RUNTIME to use runc"
            )
        return found
    crun = shutil.which("crun")
    if crun and _hybrid_cgroups():
        # crun refuses hosts that mount cgroup v1 controllers next to a cgroup v2
        # tree ("cgroups in hybrid mode not supported"); runc runs there.
        crun = None
    return crun or shutil.which("runc")


def _user_namespaces() -> bool:
    """Whether this unprivileged user may make a user namespace (often disabled)."""
    try:
        done = subprocess.run(
            ["unshare", "--user", "--map-root-user", "true"],
            capture_output=True,
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _hybrid_cgroups() -> bool:
    return Path("/sys/fs/cgroup/unified/cgroup.controllers").exists()


@functools.cache
def _probe(forced: str | None) -> SandboxCapabilities:
    root = os.geteuid() == 0
    overlay = root and _overlay_supported()
    runtime = _find_runtime()
    reasons: list[str] = []
    if not root:
        reasons.append("not running as root: no overlay mounts, no OCI runtime")
    elif not overlay:
        reasons.append("the kernel offers no overlay filesystem")
    if runtime is None:
        reasons.append("neither crun nor runc is on PATH")
    unshare = shutil.which("unshare") is not None and (root or _user_namespaces())
    proot = shutil.which("proot") is not None
    if forced == "runtime" or (forced is None and overlay and runtime and root):
        if not (overlay and runtime and root):
            raise SandboxError(
                "PLATFORGE_SANDBOX=runtime needs root, overlayfs and crun or runc: "
                + "; ".join(reasons)
            )
        return SandboxCapabilities("runtime", runtime, overlay=True, reasons=())
    if forced == "chroot" or (forced is None and unshare):
        if not unshare:
            raise SandboxError(
                "PLATFORGE_SANDBOX=chroot needs unshare (util-linux) and, without "
                "root, user namespaces (sysctl kernel.unprivileged_userns_clone=1)"
            )
        return SandboxCapabilities(
            "chroot", None, overlay=False, reasons=tuple(reasons)
        )
    if proot:
        return SandboxCapabilities("proot", None, overlay=False, reasons=tuple(reasons))
    raise SandboxError(
        "no way to run a RUN step here: "
        + "; ".join([*reasons, "unshare and proot are missing"])
        + "; install crun (as root) or proot"
    )


def capabilities() -> SandboxCapabilities:
    """Probe the host once and say which mode :func:`run` will use, and why.

    ``PLATFORGE_SANDBOX=runtime|chroot|proot`` forces a mode.
    """
    return _probe(_env_mode())


def run(spec: RunSpec) -> RunResult:
    """Run ``spec.args`` in a container made from ``spec.lowerdirs``.

    The changes land in ``spec.upperdir`` in overlay format whatever the mode. Raises
    :class:`EmulationError` when the platform cannot run here and
    :class:`SandboxError` when the sandbox itself cannot start; the command's own
    failure is an exit status in the result, not an exception.
    """
    if not spec.args:
        raise SandboxError("nothing to run: the RUN step has an empty command")
    # Runtimes want an absolute, clean working directory; Docker reads a relative
    # one from the root.
    spec = dataclasses.replace(spec, cwd=posixpath.normpath("/" + (spec.cwd or "/")))
    caps = capabilities()
    qemu = None
    if spec.platform is not None and not emulation.is_native(spec.platform):
        if caps.mode == "proot":
            # proot traces the emulator itself: binfmt handlers do not apply.
            qemu = _proot_emulator(spec.platform)
        else:
            emulation.ensure(spec.platform)
    spec.upperdir.mkdir(mode=0o755, parents=True, exist_ok=True)
    if any(spec.upperdir.iterdir()):
        raise SandboxError(
            f"upper directory {spec.upperdir} is not empty; each RUN step needs a "
            "fresh, empty directory for its changes"
        )
    started = time.monotonic()
    if caps.mode == "runtime":
        assert caps.runtime is not None  # noqa: S101 - _probe guarantees it
        try:
            result = _run_runtime(spec, caps.runtime)
        except _OverlayRefusedError as exc:
            if _env_mode() == "runtime":
                raise
            # Some upper directories cannot take overlayfs (an overlay or a
            # filesystem without xattrs beneath them); a copy works anywhere.
            log.warning("%s; running this step over a copy instead", exc)
            result = _run_copy(spec, "chroot", None)
    else:
        result = _run_copy(spec, caps.mode, qemu)
    log.debug(
        "RUN %s exited %d in %.3fs (%s)",
        spec.args,
        result.exit_code,
        time.monotonic() - started,
        result.mode,
    )
    return result


def _proot_emulator(platform: Platform) -> Path:
    qemu = emulation.qemu_static(platform.architecture)
    if qemu is None:
        name = emulation.qemu_name(platform.architecture)
        raise EmulationError(
            f"cannot run platform {platform} under proot: qemu-{name}-static is "
            "not installed; install the qemu-user-static package"
        )
    return qemu


# --- the system calls platforge makes itself -------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


class _OverlayRefusedError(SandboxError):
    """The kernel refused the overlay mount for this upper directory."""


def _mount(source: str, target: Path, fstype: str, options: str) -> None:
    done = _libc.mount(
        source.encode(), os.fsencode(target), fstype.encode(), 0, options.encode()
    )
    if done != 0:
        errno = ctypes.get_errno()
        raise _OverlayRefusedError(
            f"cannot mount {fstype} at {target}: {os.strerror(errno)}; "
            "set PLATFORGE_SANDBOX=chroot to run without overlayfs"
        )


def _umount(target: Path) -> None:
    if _libc.umount2(os.fsencode(target), _MNT_DETACH) != 0:
        errno = ctypes.get_errno()
        log.warning("cannot unmount %s: %s", target, os.strerror(errno))


# --- paths inside the container's root --------------------------------------------


def resolve_in_root(root: Path, path: str) -> str:
    """``path`` with symlinks resolved as the container sees them, relative to root.

    A link can never lead outside ``root``: ``..`` stops at the root, as in a chroot,
    and an absolute link starts again from ``root``. Components that do not exist
    are kept as they are. Use it for every path named inside a root filesystem
    (a mount target, a bind source in a stage, a file copied from one) before
    handing it to the host's kernel, which would follow the links on the host.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise SandboxError(
                    f"too many symbolic links resolving {path} in {root}"
                )
            target = str(candidate.readlink())
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        done.append(part)
    return "/".join(done)


def _read_in_root(root: Path, path: str) -> str:
    try:
        return root.joinpath(resolve_in_root(root, path)).read_text(errors="replace")
    except OSError:
        return ""


@dataclass(frozen=True)
class _User:
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def _resolve_user(root: Path, user: str) -> _User:
    """Docker's USER rules, looked up in the image's /etc/passwd and /etc/group."""
    name, _, group = (user or "0").partition(":")
    passwd = [
        line.split(":")
        for line in _read_in_root(root, "/etc/passwd").splitlines()
        if line.count(":") >= 6
    ]
    groups = [
        line.split(":")
        for line in _read_in_root(root, "/etc/group").splitlines()
        if line.count(":") >= 3
    ]
    entry = next((e for e in passwd if name in (e[0], e[2])), None)
    if entry is not None:
        uid, gid, home, login = int(entry[2]), int(entry[3]), entry[5], entry[0]
    elif name.isdigit():
        uid, gid, home, login = int(name), 0, "/", ""
    else:
        raise SandboxError(
            f"unable to find user {name!r}: no matching entry in the image's "
            "/etc/passwd; create the user in an earlier step or use a numeric uid"
        )
    if group:
        found = next((g for g in groups if group in (g[0], g[2])), None)
        if found is not None:
            gid = int(found[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise SandboxError(
                f"unable to find group {group!r}: no matching entry in the image's "
                "/etc/group; create the group in an earlier step or use a numeric gid"
            )
    extra: tuple[int, ...] = ()
    if login and not group:
        extra = tuple(
            int(g[2]) for g in groups if login in g[3].split(",") and g[2].isdigit()
        )
    return _User(uid, gid, tuple(sorted(set(extra) - {gid})), home or "/")


def _environment(spec: RunSpec, user: _User) -> list[str]:
    env = list(spec.env)
    names = {item.partition("=")[0] for item in env}
    if "PATH" not in names:
        env.insert(0, f"PATH={DEFAULT_PATH}")
    if "HOME" not in names:
        env.append(f"HOME={user.home}")
    return env


def _generated_files(spec: RunSpec, directory: Path) -> dict[str, Path]:
    """/etc/hosts, /etc/resolv.conf, /etc/hostname for the container."""
    directory.mkdir()
    hosts = [
        f"127.0.0.1\tlocalhost {spec.hostname}",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        *(f"{address}\t{name}" for name, address in spec.extra_hosts),
    ]
    try:
        resolv = Path("/etc/resolv.conf").read_text()
    except OSError:
        resolv = ""
    contents = {
        "/etc/hosts": "\n".join(hosts) + "\n",
        "/etc/resolv.conf": resolv,
        "/etc/hostname": spec.hostname + "\n",
    }
    files = {}
    for target, text in contents.items():
        path = directory / target.rsplit("/", 1)[1]
        path.write_text(text)
        path.chmod(0o644)
        files[target] = path
    return files


def _mount_targets(spec: RunSpec) -> list[tuple[str, bool]]:
    """Every path the sandbox mounts over, and whether it is a directory."""
    targets = [("/proc", True), ("/dev", True), ("/sys", True)]
    targets += [(t, False) for t in _GENERATED]
    for m in spec.mounts:
        is_dir = m.kind in ("cache", "tmpfs") or (
            m.source is not None and m.source.is_dir()
        )
        targets.append((m.target, is_dir))
    return targets


@dataclass
class _Stubs:
    """Mount points created for the sandbox, to be removed from the upper directory.

    ``created`` are paths (relative to the root) that did not exist before the run;
    ``ancestors`` are existing directories above them with their (mode, uid, gid),
    which overlayfs copies up when an entry is created inside them.
    """

    created: list[str] = field(default_factory=list)
    ancestors: dict[str, tuple[int, int, int]] = field(default_factory=dict)


def _make_stubs(root: Path, targets: Sequence[tuple[str, bool]]) -> _Stubs:
    stubs = _Stubs()
    for target, is_dir in targets:
        resolved = resolve_in_root(root, target)
        parts = resolved.split("/") if resolved else []
        for depth in range(1, len(parts) + 1):
            rel = "/".join(parts[:depth])
            path = root / rel
            if path.exists() or path.is_symlink():
                if depth < len(parts):
                    st = path.lstat()
                    stubs.ancestors[rel] = (st.st_mode, st.st_uid, st.st_gid)
                continue
            if depth < len(parts) or is_dir:
                path.mkdir(mode=0o755)
            else:
                path.touch(mode=0o644)
            stubs.created.append(rel)
    return stubs


def _remove_stubs(upper: Path, stubs: _Stubs) -> None:
    for rel in sorted(set(stubs.created), key=lambda r: r.count("/"), reverse=True):
        path = upper / rel
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode) and not any(path.iterdir()):
            if not _is_opaque(path):
                path.rmdir()
        elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
            path.unlink()
    # Directories copied up only because a stub was created inside them.
    for rel in sorted(stubs.ancestors, key=lambda r: r.count("/"), reverse=True):
        path = upper / rel
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        same = (st.st_mode, st.st_uid, st.st_gid) == stubs.ancestors[rel]
        empty = stat.S_ISDIR(st.st_mode) and not any(path.iterdir())
        if same and empty and not _is_opaque(path):
            path.rmdir()


def _is_opaque(path: Path) -> bool:
    for name in (_OPAQUE, _USER_OPAQUE):
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def _mark_opaque(path: Path) -> None:
    try:
        os.setxattr(path, _OPAQUE, b"y", follow_symlinks=False)
    except PermissionError:
        os.setxattr(path, _USER_OPAQUE, b"y", follow_symlinks=False)


def _is_whiteout(path: Path, st: os.stat_result) -> bool:
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return True
    if not stat.S_ISREG(st.st_mode) or st.st_size != 0:
        return False
    try:
        os.getxattr(path, _USER_WHITEOUT, follow_symlinks=False)
    except OSError:
        return False
    return True


def _make_workdir(root: Path, cwd: str) -> None:
    resolved = resolve_in_root(root, cwd)
    if resolved:
        root.joinpath(resolved).mkdir(mode=0o755, parents=True, exist_ok=True)


def _missing_executable(root: Path, spec: RunSpec, user: _User) -> str | None:
    """A message when ``args[0]`` is not an executable file in the image, else None.

    Looked up as execvp would inside the container (``PATH`` from the environment),
    so a missing command gets Docker's status 127 rather than the runtime's own.
    """
    command = spec.args[0]
    if "/" in command:
        candidates = [command if command.startswith("/") else f"{spec.cwd}/{command}"]
    else:
        env = dict(item.partition("=")[::2] for item in _environment(spec, user))
        candidates = [f"{d or '.'}/{command}" for d in env.get("PATH", "").split(":")]
    mounted = [
        resolve_in_root(root, target) + "/" for target, _ in _mount_targets(spec)
    ]
    for candidate in candidates:
        resolved = resolve_in_root(root, candidate)
        if any(resolved.startswith(m) for m in mounted):
            return None  # inside a mount: only the container can tell
        path = root / resolved
        if path.is_file() and os.access(path, os.X_OK):
            return None
        if path.is_file() and "/" in command:
            return f"exec: {command!r}: permission denied"
    where = "" if "/" in command else " in $PATH"
    return f"exec: {command!r}: executable file not found{where}"


def _not_found(spec: RunSpec, message: str) -> tuple[int, bytes]:
    """Docker's statuses for a command that cannot start: 127 missing, 126 denied."""
    line = f"platforge: {message}\n".encode()
    if spec.output is None:
        sys.stderr.buffer.write(line)
        sys.stderr.flush()
    else:
        spec.output(line)
    return (126 if "permission denied" in message else 127), line


# --- streaming the command's output -----------------------------------------------


class _Tail:
    """The last few KiB of output, kept while every chunk goes to the callback."""

    def __init__(self, sink: Callable[[bytes], None] | None) -> None:
        self.sink = sink
        self.chunks: deque[bytes] = deque()
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        if self.sink is not None:
            self.sink(chunk)
        self.chunks.append(chunk)
        self.size += len(chunk)
        while self.size - len(self.chunks[0]) >= _TAIL:
            self.size -= len(self.chunks.popleft())

    def value(self) -> bytes:
        return b"".join(self.chunks)[-_TAIL:]


# The commands running in sandboxes now, with how to stop each one's container.
# ^C and SIGTERM reach the main thread only; a caller running steps in worker
# threads stops those through stop_all().
_running: dict[int, tuple[subprocess.Popen[bytes], Callable[[], None] | None]] = {}
_running_lock = threading.Lock()


def stop_all() -> int:
    """Kill every command a :func:`run` of this process is running; say how many.

    Each run so stopped cleans up as usual (container deleted, mounts removed)
    and returns exit status 137. Call it when a build is interrupted while other
    threads are inside :func:`run`, before waiting for those threads.
    """
    with _running_lock:
        running = list(_running.values())
    for proc, stop in running:
        if stop is not None:
            # The runtime deletes the container first; killing the runtime
            # process alone would leave the container's processes running.
            stop()
        _kill_tree(proc.pid)
    if running:
        log.debug("stopped %d running sandbox command(s)", len(running))
    return len(running)


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it, the lowest first.

    Killing only the process platforge started is not enough: proot leaves its
    traced processes running when it dies, and so may an OCI runtime its
    container's.
    """
    children: list[str] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += (task / "children").read_text().split()
    for child in children:
        _kill_tree(int(child))
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _spawn(
    argv: Sequence[str],
    spec: RunSpec,
    env: dict[str, str] | None = None,
    stop: Callable[[], None] | None = None,
) -> tuple[int, bytes]:
    """Run ``argv``, streaming its output as the spec asks; exit status and tail.

    If platforge is interrupted (or the output callback fails) the process is
    killed and ``stop`` is called, so no container outlives the step.
    """
    stdin = None if spec.stdin_tty else subprocess.DEVNULL
    pipe = None if spec.output is None else subprocess.PIPE
    tail = _Tail(spec.output)
    proc = subprocess.Popen(
        argv,
        stdin=stdin,
        stdout=pipe,
        stderr=subprocess.STDOUT if pipe else None,
        env=env,
    )
    with _running_lock:
        _running[id(proc)] = (proc, stop)
    try:
        if proc.stdout is not None:
            fd = proc.stdout.fileno()
            while chunk := os.read(fd, 65536):
                tail.feed(chunk)
        code = proc.wait()
    except BaseException:
        if stop is not None:
            stop()
        _kill_tree(proc.pid)
        proc.wait()
        raise
    finally:
        with _running_lock:
            _running.pop(id(proc), None)
        if proc.stdout is not None:
            proc.stdout.close()
    return _status(code), tail.value() if pipe else b""


def _status(code: int) -> int:
    # A negative code means the runtime itself died of a signal; report it the way
    # a shell does.
    return 128 - code if code < 0 else code


# --- mode 1: an OCI runtime over an overlay mount ----------------------------------


def _runtime_spec(
    spec: RunSpec, rootfs: Path, user: _User, files: dict[str, Path]
) -> dict[str, Any]:
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if spec.network == "none":
        namespaces.append({"type": "network"})
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": [
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        },
        {
            "destination": "/dev/shm",  # noqa: S108 - the container's own tmpfs
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
    ]
    if spec.network == "none":
        mounts.append(
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            }
        )
    else:
        # sysfs cannot be mounted afresh without a network namespace of our own.
        mounts.append(
            {
                "destination": "/sys",
                "type": "bind",
                "source": "/sys",
                "options": ["rbind", "nosuid", "noexec", "nodev", "ro"],
            }
        )
    for target, source in files.items():
        mounts.append(
            {
                "destination": target,
                "type": "bind",
                "source": str(source),
                "options": ["bind", "rprivate"],
            }
        )
    mounts += [_runtime_mount(m) for m in spec.mounts]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {
                "uid": user.uid,
                "gid": user.gid,
                "additionalGids": list(user.groups),
            },
            "args": list(spec.args),
            "env": _environment(spec, user),
            "cwd": spec.cwd or "/",
            "capabilities": dict.fromkeys(_CAPABILITY_SETS, _CAPABILITIES),
            "noNewPrivileges": False,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "maskedPaths": _MASKED,
            "readonlyPaths": _READONLY,
        },
    }


def _runtime_mount(m: Mount) -> dict[str, Any]:
    if m.kind == "tmpfs":
        options = ["nosuid", "nodev", *m.options]
        return {
            "destination": m.target,
            "type": "tmpfs",
            "source": "tmpfs",
            "options": options,
        }
    if m.source is None:
        raise SandboxError(f"{m.kind} mount at {m.target} has no source on the host")
    options = ["rbind", "rprivate", "ro" if m.readonly or m.kind == "secret" else "rw"]
    return {
        "destination": m.target,
        "type": "bind",
        "source": str(m.source),
        "options": [*options, *m.options],
    }


def _overlay_options(lowers: Sequence[Path], upper: Path, work: Path) -> str:
    for path in (upper, work):
        if any(c in str(path) for c in ",:\\"):
            raise SandboxError(
                f"the directory {path} has a comma, colon or backslash in its path, "
                "which overlayfs cannot take; use a store path without them"
            )
    # overlayfs lists lower directories top first.
    return (
        f"lowerdir={':'.join(str(p) for p in reversed(lowers))},"
        f"upperdir={upper},workdir={work}"
    )


def _distinct(lowerdirs: Sequence[Path]) -> list[Path]:
    """Each directory once, at its topmost place.

    overlayfs refuses a directory listed twice ("too many levels of symbolic
    links"), and images do repeat layers (empty ones above all). Applying a layer
    again on top makes its earlier application moot, so only the last one counts.
    """
    resolved = [p.resolve() for p in lowerdirs]
    return [p for i, p in enumerate(resolved) if p not in resolved[i + 1 :]]


def _short_lowers(spec: RunSpec, state: Path, work: Path, side: Path) -> list[Path]:
    """Lower directories under short names, merged into one when still too long.

    Short symlinks keep odd characters of the store's paths out of the mount options
    and let about a hundred layers fit in the one page mount(2) accepts.
    """
    links = state / "l"
    links.mkdir()
    if not spec.lowerdirs:
        empty = state / "empty"
        empty.mkdir()
        return [empty]
    lowers = []
    for number, lower in enumerate(_distinct(spec.lowerdirs)):
        link = links / str(number)
        link.symlink_to(lower)
        lowers.append(link)
    if len(_overlay_options(lowers, spec.upperdir, work)) <= _MAX_MOUNT_OPTIONS:
        return lowers
    flat = side / "flat"  # a whole image: on disk, not in memory
    flat.mkdir()
    for lower in spec.lowerdirs:
        apply_overlay_dir(lower, flat)
    return [flat]


def _force_delete(runtime: str, state: Path, name: str) -> None:
    """Kill and remove a container whose runtime process was cut short."""
    subprocess.run(
        [runtime, "--root", str(state / "runtime"), "delete", "--force", name],
        capture_output=True,
        check=False,
        timeout=30,
    )


def _memory_dir() -> Path | None:
    """A tmpfs for the small files of each run, when the host has a writable one.

    The mount point, the runtime spec and the runtime's state cost a dozen file
    system operations per RUN; on a journaled disk shared with busy neighbours
    each can take milliseconds, in memory almost nothing. ``PLATFORGE_RUN_DIR``
    names another directory.
    """
    named = os.environ.get("PLATFORGE_RUN_DIR")
    return Path(named) if named else _shm_dir()


@functools.cache
def _shm_dir() -> Path | None:
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        fields = line.split()
        shm_mount = "/dev/shm"  # noqa: S108 - mkdtemp makes a private 0700 dir there
        if len(fields) > 2 and fields[1] == shm_mount and fields[2] == "tmpfs":
            shm = Path(fields[1])
            return shm if os.access(shm, os.W_OK | os.X_OK) else None
    return None


def _run_runtime(spec: RunSpec, runtime: str) -> RunResult:
    # overlayfs needs its work directory on the upper directory's file system.
    side = Path(tempfile.mkdtemp(prefix=".platforge-run-", dir=spec.upperdir.parent))
    state = Path(tempfile.mkdtemp(prefix="platforge-run-", dir=_memory_dir() or side))
    rootfs = state / "rootfs"
    work = side / "work"
    try:
        rootfs.mkdir()
        work.mkdir()
        lowers = _short_lowers(spec, state, work, side)
        options = _overlay_options(lowers, spec.upperdir.resolve(), work)
        _mount("overlay", rootfs, "overlay", options)
        stubs = _Stubs()
        try:
            user = _resolve_user(rootfs, spec.user)
            stubs = _make_stubs(rootfs, _mount_targets(spec))
            _make_workdir(rootfs, spec.cwd)
            files = _generated_files(spec, state / "files")
            missing = _missing_executable(rootfs, spec, user)
            if missing is not None:
                result = RunResult(*_not_found(spec, missing), "runtime")
            else:
                bundle = state / "bundle"
                bundle.mkdir()
                config = _runtime_spec(spec, rootfs, user, files)
                (bundle / "config.json").write_text(json.dumps(config))
                name = f"platforge-{uuid.uuid4().hex[:16]}"
                argv = [runtime, "--root", str(state / "runtime")]
                if Path(runtime).name == "crun":
                    argv.append("--cgroup-manager=disabled")
                argv += ["run", "--bundle", str(bundle), "--no-new-keyring", name]
                stop = functools.partial(_force_delete, runtime, state, name)
                code, tail = _spawn(argv, spec, stop=stop)
                result = RunResult(code, tail, "runtime")
        finally:
            _umount(rootfs)
        _remove_stubs(spec.upperdir, stubs)
    finally:
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(side, ignore_errors=True)
    return result


# --- modes 2 and 3: a copy of the layers, and a tree diff ---------------------------

# Runs inside the new namespaces, before the chroot: mounts what the container
# needs, brings loopback up, then becomes the command. It is host Python, so the
# image needs no shell.
_CHROOT_HELPER = r"""
import ctypes, json, os, subprocess, sys
c = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
def mount(src, dst, fstype, flags, data=""):
    if libc.mount(src.encode(), dst.encode(), fstype.encode(), flags, data.encode()):
        e = ctypes.get_errno()
        sys.exit(f"platforge sandbox: cannot mount {dst}: {os.strerror(e)}")
BIND, REC, RDONLY, REMOUNT, PRIVATE = 4096, 16384, 1, 32, 1 << 18
mount("none", "/", "", REC | PRIVATE)
r = c["root"]
dev = r + c["dev"]
mount("proc", r + c["proc"], "proc", 0)
mount("tmpfs", dev, "tmpfs", 0, "mode=755,size=65536k")
for d in ("null", "zero", "full", "random", "urandom", "tty"):
    open(dev + "/" + d, "w").close()
    mount("/dev/" + d, dev + "/" + d, "", BIND)
os.mkdir(dev + "/shm", 0o1777)
mount("shm", dev + "/shm", "tmpfs", 0, "mode=1777,size=65536k")
for src, dst, ro in c["binds"]:
    mount(src, r + dst, "", BIND | REC)
    if ro:
        mount(src, r + dst, "", BIND | REMOUNT | RDONLY)
for dst in c["tmpfs"]:
    mount("tmpfs", r + dst, "tmpfs", 0)
if c["net_none"]:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
libc.sethostname(c["hostname"].encode(), len(c["hostname"].encode()))
os.chroot(r)
os.chdir(c["cwd"])
try:
    os.setgroups(c["groups"])
except PermissionError:
    pass  # a user namespace made without root may not set groups
try:
    os.setgid(c["gid"])
    os.setuid(c["uid"])
except OSError as e:
    sys.exit(f"platforge sandbox: cannot become {c['uid']}:{c['gid']} without root "
             f"({e.strerror}); run as root or set PLATFORGE_SANDBOX=proot")
env = dict(e.split("=", 1) for e in c["env"])
try:
    os.execvpe(c["args"][0], c["args"], env)
except OSError as e:
    sys.stderr.write(f"platforge sandbox: cannot run {c['args'][0]}: {e.strerror}\n")
    sys.exit(127)
"""


def _run_copy(spec: RunSpec, mode: str, qemu: Path | None) -> RunResult:
    state = Path(tempfile.mkdtemp(prefix=".platforge-run-", dir=spec.upperdir.parent))
    root = state / "rootfs"
    try:
        root.mkdir()
        # "/" looks as the upper directory says, as it does over overlayfs.
        top = spec.upperdir.stat()
        root.chmod(stat.S_IMODE(top.st_mode))
        with contextlib.suppress(PermissionError):
            os.chown(root, top.st_uid, top.st_gid)
        for lower in spec.lowerdirs:
            apply_overlay_dir(lower, root)
        user = _resolve_user(root, spec.user)
        _make_stubs(root, _mount_targets(spec))
        files = _generated_files(spec, state / "files")
        before = _snapshot(root)
        _make_workdir(root, spec.cwd)  # after the snapshot: it belongs to the layer
        missing = _missing_executable(root, spec, user)
        if missing is not None:
            code, tail = _not_found(spec, missing)
        elif mode == "chroot":
            code, tail = _spawn(_chroot_argv(spec, root, user, files), spec)
        else:
            argv = _proot_argv(spec, root, user, files, qemu)
            env = dict(item.split("=", 1) for item in _environment(spec, user))
            code, tail = _spawn(argv, spec, env=env)
        write_tree_diff(root, before, _snapshot(root), spec.upperdir)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    return RunResult(code, tail, mode)


def _binds(spec: RunSpec, files: dict[str, Path]) -> list[tuple[str, str, bool]]:
    binds = [(str(source), target, False) for target, source in files.items()]
    for m in spec.mounts:
        if m.kind == "tmpfs":
            continue
        if m.source is None:
            raise SandboxError(
                f"{m.kind} mount at {m.target} has no source on the host"
            )
        readonly = m.readonly or m.kind == "secret"
        binds.append((str(m.source), m.target, readonly))
    return binds


def _chroot_argv(
    spec: RunSpec, root: Path, user: _User, files: dict[str, Path]
) -> list[str]:
    def inside(target: str) -> str:
        # Mount points as the container resolves them, so no symlink in the image
        # can point a mount at the host's own directories.
        return "/" + resolve_in_root(root, target)

    config = {
        "root": str(root),
        "proc": inside("/proc"),
        "dev": inside("/dev"),
        "binds": [(src, inside(dst), ro) for src, dst, ro in _binds(spec, files)],
        "tmpfs": [inside(m.target) for m in spec.mounts if m.kind == "tmpfs"],
        "net_none": spec.network == "none",
        "hostname": spec.hostname,
        "cwd": spec.cwd or "/",
        "uid": user.uid,
        "gid": user.gid,
        "groups": list(user.groups),
        "env": _environment(spec, user),
        "args": list(spec.args),
    }
    argv = ["unshare", "--mount", "--pid", "--ipc", "--uts", "--fork", "--kill-child"]
    if spec.network == "none":
        argv.append("--net")
    if os.geteuid() != 0:
        argv.append("--map-root-user")
    return [*argv, sys.executable, "-I", "-c", _CHROOT_HELPER, json.dumps(config)]


def _proot_argv(
    spec: RunSpec,
    root: Path,
    user: _User,
    files: dict[str, Path],
    qemu: Path | None,
) -> list[str]:
    argv = ["proot", "-r", str(root), "-w", spec.cwd or "/"]
    argv += ["-0"] if user.uid == 0 else ["-i", f"{user.uid}:{user.gid}"]
    for host in ("/proc", "/dev", "/sys"):
        argv += ["-b", host]
    for source, target, _ in _binds(spec, files):
        argv += ["-b", f"{source}:{target}"]
    if qemu is not None:
        argv += ["-q", str(qemu)]
    return [*argv, *spec.args]


def _snapshot(root: Path) -> dict[str, os.stat_result]:
    """Every path under ``root`` (relative, ``/``-separated) and its lstat."""
    found: dict[str, os.stat_result] = {}
    pending = [("", root)]
    while pending:
        rel, directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                child = f"{rel}/{entry.name}" if rel else entry.name
                st = entry.stat(follow_symlinks=False)
                found[child] = st
                if stat.S_ISDIR(st.st_mode):
                    pending.append((child, Path(entry.path)))
    return found


def _changed(a: os.stat_result, b: os.stat_result) -> bool:
    # ctime moves on every content, mode, owner or link change, so it catches what
    # a same-size rewrite within one mtime tick would hide.
    return (
        a.st_mode != b.st_mode
        or a.st_uid != b.st_uid
        or a.st_gid != b.st_gid
        or a.st_size != b.st_size
        or a.st_mtime_ns != b.st_mtime_ns
        or a.st_ctime_ns != b.st_ctime_ns
        or a.st_ino != b.st_ino
        or a.st_rdev != b.st_rdev
    )


def _depth_order(rel: str) -> tuple[str, ...]:
    return tuple(rel.split("/"))


def write_tree_diff(
    root: Path,
    before: dict[str, os.stat_result],
    after: dict[str, os.stat_result],
    upper: Path,
) -> None:
    """Write what changed between two snapshots of ``root`` as an overlay upper dir.

    New and changed entries are copied; deleted ones become whiteouts; a directory
    that was removed and created again becomes an opaque directory.
    """
    children: dict[str, list[str]] = {}
    for rel in before:
        children.setdefault(rel.rpartition("/")[0], []).append(rel)
    fresh: set[str] = set()  # new or replaced directories: copied whole
    gone: set[str] = set()
    links: dict[tuple[int, int], Path] = {}
    dirs: list[tuple[Path, os.stat_result]] = []
    for rel in sorted(before.keys() | after.keys(), key=_depth_order):
        parent = rel.rpartition("/")[0]
        new, old = after.get(rel), before.get(rel)
        if new is None:
            now = after.get(parent)
            covered = parent and (now is None or not stat.S_ISDIR(now.st_mode))
            if covered or parent in gone or parent in fresh:
                gone.add(rel)
                continue
            gone.add(rel)
            _ensure_parents(root, upper, rel, after, dirs)
            _whiteout(upper / rel)
            continue
        inherited = parent in fresh
        if not inherited and old is not None and not _changed(new, old):
            continue
        _ensure_parents(root, upper, rel, after, dirs)
        replaced = (
            not inherited
            and old is not None
            and stat.S_ISDIR(new.st_mode)
            and (
                not stat.S_ISDIR(old.st_mode)
                or new.st_ino != old.st_ino
                or _emptied(rel, children, after)
            )
        )
        _copy_entry(root / rel, upper / rel, new, links, dirs)
        if replaced:
            _mark_opaque(upper / rel)
        if stat.S_ISDIR(new.st_mode) and (inherited or old is None or replaced):
            fresh.add(rel)
    _fix_directory_times(dirs)


def _emptied(
    rel: str, children: dict[str, list[str]], after: dict[str, os.stat_result]
) -> bool:
    """Whether every entry a directory had is gone.

    A directory removed and made again often gets its old inode number back, so the
    inode cannot tell; when nothing of the old contents survives, an opaque directory
    gives the same tree as whiteouts for each entry, as overlayfs would record it.
    """
    old = children.get(rel, [])
    return bool(old) and all(child not in after for child in old)


def _ensure_parents(
    root: Path,
    upper: Path,
    rel: str,
    after: dict[str, os.stat_result],
    dirs: list[tuple[Path, os.stat_result]],
) -> None:
    parts = rel.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        sub = "/".join(parts[:depth])
        target = upper / sub
        if target.is_dir() and not target.is_symlink():
            continue
        st = after.get(sub) or (root / sub).lstat()
        _copy_entry(root / sub, target, st, {}, dirs)


def _whiteout(path: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
    except PermissionError:
        path.touch(mode=0o000)
        os.setxattr(path, _USER_WHITEOUT, b"y", follow_symlinks=False)


def _copy_entry(
    source: Path,
    target: Path,
    st: os.stat_result,
    links: dict[tuple[int, int], Path],
    dirs: list[tuple[Path, os.stat_result]],
) -> None:
    """Copy one entry with its owner, mode, times and xattrs (not a dir's contents)."""
    mode = st.st_mode
    key = (st.st_dev, st.st_ino)
    if stat.S_ISREG(mode) and st.st_nlink > 1 and key in links:
        os.link(links[key], target)
        return
    if stat.S_ISDIR(mode):
        target.mkdir()
        dirs.append((target, st))
    elif stat.S_ISREG(mode):
        shutil.copyfile(source, target, follow_symlinks=False)
        if st.st_nlink > 1:
            links[key] = target
    elif stat.S_ISLNK(mode):
        target.symlink_to(source.readlink())
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        try:
            os.mknod(target, mode, st.st_rdev)
        except PermissionError:
            log.warning("device %s not copied: making devices needs root", source)
            return
    elif stat.S_ISFIFO(mode):
        os.mkfifo(target)
    else:
        log.debug("not copying socket %s", source)
        return
    _copy_metadata(source, target, st)


def _copy_metadata(source: Path, target: Path, st: os.stat_result) -> None:
    try:
        os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
    except PermissionError:
        # Without root a copy keeps the invoking user as its owner.
        log.debug("cannot give %s to %d:%d", target, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        target.chmod(stat.S_IMODE(st.st_mode))
    try:
        names = os.listxattr(source, follow_symlinks=False)
    except OSError:
        names = []
    for name in names:
        if name.startswith(("trusted.overlay.", "user.overlay.")):
            continue
        try:
            value = os.getxattr(source, name, follow_symlinks=False)
            os.setxattr(target, name, value, follow_symlinks=False)
        except OSError as exc:
            log.debug("xattr %s not copied to %s: %s", name, target, exc)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _fix_directory_times(dirs: list[tuple[Path, os.stat_result]]) -> None:
    # Creating entries inside a directory moves its mtime; restore deepest first.
    for path, st in reversed(dirs):
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def apply_overlay_dir(source: Path, target: Path) -> None:
    """Apply one directory in overlay format on top of the tree at ``target``.

    Whiteouts delete, opaque directories replace, everything else is copied over.
    """
    links: dict[tuple[int, int], Path] = {}
    dirs: list[tuple[Path, os.stat_result]] = []
    _apply_dir(source, target, links, dirs)
    _fix_directory_times(dirs)


def _apply_dir(
    source: Path,
    target: Path,
    links: dict[tuple[int, int], Path],
    dirs: list[tuple[Path, os.stat_result]],
) -> None:
    with os.scandir(source) as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            src, dst = Path(entry.path), target / entry.name
            exists = dst.exists() or dst.is_symlink()
            is_dir = stat.S_ISDIR(st.st_mode)
            if _is_whiteout(src, st):
                if exists:
                    _remove(dst)
                continue
            keep = is_dir and dst.is_dir() and not dst.is_symlink()
            if exists and (not keep or _is_opaque(src)):
                _remove(dst)
                exists = False
            if is_dir:
                if exists:
                    _copy_metadata(src, dst, st)
                    dirs.append((dst, st))
                else:
                    _copy_entry(src, dst, st, links, dirs)
                _apply_dir(src, dst, links, dirs)
            else:
                _copy_entry(src, dst, st, links, dirs)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
