"""Platforms: which operating system and CPU an image is built for.

A platform is what an image index records next to each manifest, so that a puller
can pick the image its machine runs. Users write platforms as short *specifiers*::

    os[(os.version)][/arch[/variant]]      linux/amd64, linux/arm/v7, arm64, windows

``parse`` turns a specifier into a normalised ``Platform``; ``format`` (and ``str``)
turns it back. The rules are containerd's, so a specifier means here what it means
to docker, buildx, nerdctl and Kubernetes.

Normalisation (case-insensitive; the operating system ``macos`` becomes ``darwin``):

    written                       normalised
    aarch64, arm64, arm64/v8      arm64              (v8 is the default arm64 variant)
    x86_64, x86-64, amd64/v1      amd64              (v1 is the default amd64 variant)
    i386, i686                    386
    arm, arm/7, armhf, armv7l     arm/v7             (v7 is spelled out for arm)
    armel, arm/6, armv6l          arm/v6
    arm/5, armv5l                 arm/v5

One word alone is an operating system if it is a known one (``linux``: this host's
architecture), otherwise an architecture on Linux (``arm64`` is ``linux/arm64``).
Two words whose first is an architecture are that architecture and its variant on
Linux (``arm/v7``). Unlike containerd, an operating system or architecture outside
Go's lists (the values the image spec allows) is refused rather than carried: a
typo such as ``linux/amd46`` would otherwise build an image no machine runs.

Matching follows containerd's ``Only``: a host runs its own platform first and then,
in this order, what its CPU also executes:

    amd64/vN     amd64/vN-1 … amd64, then 386
    arm64/v8.x   arm64/v8.x-1 … arm64, then arm/v8, arm/v7, arm/v6, arm/v5
    arm64/v9.x   arm64/v9.x-1 … arm64/v9, arm64/v8.(x+5) … arm64, then arm/v8 … v5
    arm/vN       arm/vN-1 … arm/v5

``best_match`` picks the candidate earliest in that order (an exact match first).
The Windows ``os.version`` is compared on its major.minor.build when both sides
carry one; ``os.features`` are kept and written but never take part in matching.
"""

from __future__ import annotations

import platform as _host
import re
import sys
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from platforge.errors import PlatformError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "Matcher",
    "Platform",
    "best_match",
    "format",
    "format_all",
    "from_json",
    "host",
    "normalize",
    "only",
    "only_strict",
    "parse",
    "parse_list",
    "to_json",
]

GRAMMAR = "os[/arch[/variant]] such as linux/arm64 or linux/arm/v7"

_COMPONENT = re.compile(r"[A-Za-z0-9_.-]+")
_OS_AND_VERSION = re.compile(r"([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.-]*)\))?")

# Go's list of operating systems and architectures (go/build/syslist.go), which is
# what the OCI image spec says platform values are taken from.
_KNOWN_OS = frozenset(
    {
        "aix",
        "android",
        "darwin",
        "dragonfly",
        "freebsd",
        "hurd",
        "illumos",
        "ios",
        "js",
        "linux",
        "nacl",
        "netbsd",
        "openbsd",
        "plan9",
        "solaris",
        "wasip1",
        "windows",
        "zos",
    }
)
_KNOWN_ARCH = frozenset(
    {
        "386",
        "amd64",
        "amd64p32",
        "arm",
        "armbe",
        "arm64",
        "arm64be",
        "loong64",
        "mips",
        "mipsle",
        "mips64",
        "mips64le",
        "mips64p32",
        "mips64p32le",
        "ppc",
        "ppc64",
        "ppc64le",
        "riscv",
        "riscv64",
        "s390",
        "s390x",
        "sparc",
        "sparc64",
        "wasm",
    }
)

# architecture alias -> (architecture, variant forced by the alias or None to keep)
_ARCH_ALIASES: dict[str, tuple[str, str | None]] = {
    "x86_64": ("amd64", None),
    "x86-64": ("amd64", None),
    "aarch64": ("arm64", None),
    "i386": ("386", ""),
    "i686": ("386", ""),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
    # uname -m spellings, so that host() and copied shell output both parse
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armv5l": ("arm", "v5"),
    "armv8l": ("arm", "v8"),
}


@dataclass(frozen=True)
class Platform:
    """An OCI platform: the fields of the ``platform`` object of a descriptor."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        return format(self)

    def _key(self) -> tuple[str, str, str, str, tuple[str, ...]]:
        return (
            self.os,
            self.architecture,
            self.variant or "",
            self.os_version or "",
            self.os_features,
        )

    def __lt__(self, other: Platform) -> bool:
        # sorted() of platforms gives a stable, readable order (linux/amd64 first)
        return self._key() < other._key()


def _normalize_os(os_name: str) -> str:
    lowered = os_name.lower()
    return "darwin" if lowered == "macos" else lowered


def _normalize_arch(arch: str, variant: str | None) -> tuple[str, str | None]:
    arch = arch.lower()
    var = (variant or "").lower()
    if arch in _ARCH_ALIASES:
        arch, forced = _ARCH_ALIASES[arch]
        if forced is not None:
            var = forced
    if (arch, var) in {("amd64", "v1"), ("arm64", "8"), ("arm64", "v8")}:
        var = ""  # the default variant is written as none
    elif arch == "arm" and var in {"", "7"}:
        var = "v7"
    elif arch == "arm" and var in {"5", "6", "8"}:
        var = "v" + var
    return arch, var or None


def normalize(platform: Platform) -> Platform:
    """The canonical spelling of ``platform`` (see the table in the module doc)."""
    arch, variant = _normalize_arch(platform.architecture, platform.variant)
    return replace(
        platform,
        os=_normalize_os(platform.os),
        architecture=arch,
        variant=variant,
        os_version=platform.os_version or None,
    )


def _error(text: str, why: str) -> PlatformError:
    return PlatformError(f"platform {text!r}: {why}; expected {GRAMMAR}")


def parse(text: str) -> Platform:
    """Parse a specifier such as ``linux/arm64`` into a normalised platform."""
    spec = text.strip()
    if not spec:
        raise _error(text, "empty")
    if "*" in spec:
        raise _error(text, "wildcards are not supported")
    parts = spec.split("/")
    if len(parts) > 3:
        raise _error(text, "too many components")

    head = _OS_AND_VERSION.fullmatch(parts[0])
    if head is None:
        raise _error(text, f"invalid operating system component {parts[0]!r}")
    for part in parts[1:]:
        if not _COMPONENT.fullmatch(part):
            raise _error(text, f"invalid component {part!r}")
    os_name = _normalize_os(head.group(1))
    os_version = head.group(2) or None

    if len(parts) == 1:
        return _parse_one_word(text, os_name, os_version)

    return _parse_parts(text, os_name, os_version, parts[1:])


def _parse_parts(
    text: str, os_name: str, os_version: str | None, rest: list[str]
) -> Platform:
    # containerd takes any first word as the operating system; then ``arm/v7``
    # would be the OS "arm", and a typo would build an image no machine runs.
    if os_name not in _KNOWN_OS and len(rest) == 1 and os_version is None:
        # ``arm/v7``, ``arm64/v8``: an architecture and its variant, as docker
        # reads them; the operating system is then Linux.
        arch, variant = _normalize_arch(os_name, rest[0])
        if arch in _KNOWN_ARCH:
            return Platform(os="linux", architecture=arch, variant=variant)
    if os_name not in _KNOWN_OS:
        raise _error(text, f"unknown operating system {os_name!r}")
    arch, variant = _normalize_arch(rest[0], rest[1] if len(rest) == 2 else None)
    if arch not in _KNOWN_ARCH:
        raise _error(text, f"unknown architecture {rest[0]!r}")
    return Platform(
        os=os_name, architecture=arch, variant=variant, os_version=os_version
    )


def _parse_one_word(text: str, os_name: str, os_version: str | None) -> Platform:
    # A known operating system runs on this host's architecture; any other word
    # must be an architecture, which then means Linux.
    if os_name in _KNOWN_OS:
        return replace(host(), os=os_name, os_version=os_version)
    if os_version is not None:
        raise _error(text, f"unknown operating system {os_name!r}")
    arch, variant = _normalize_arch(os_name, None)
    if arch not in _KNOWN_ARCH:
        raise _error(text, "unknown operating system or architecture")
    return Platform(os="linux", architecture=arch, variant=variant)


def parse_list(text: str) -> list[Platform]:
    """Parse a comma-separated list (``--platform linux/amd64,linux/arm64``).

    Duplicates after normalisation are dropped; the first spelling's order is kept.
    """
    seen: list[Platform] = []
    for item in text.split(","):
        if not item.strip():
            raise _error(text, "empty entry in the comma-separated list")
        platform = parse(item)
        if platform not in seen:
            seen.append(platform)
    return seen


def format(platform: Platform) -> str:  # noqa: A001 - the spec's verb, as in containerd
    """``os/arch[/variant]``; the os.version is left out (see ``format_all``)."""
    parts = [platform.os, platform.architecture]
    if platform.variant:
        parts.append(platform.variant)
    return "/".join(parts)


def format_all(platform: Platform) -> str:
    """Like ``format`` but with the os.version, as ``windows(10.0.17763)/amd64``."""
    if not platform.os_version:
        return format(platform)
    head = f"{platform.os}({platform.os_version})"
    return "/".join([head, *format(platform).split("/")[1:]])


_HOST_OS = {"linux": "linux", "darwin": "darwin", "win32": "windows"}


def host() -> Platform:
    """The platform of the machine this process runs on."""
    os_name = _HOST_OS.get(sys.platform, sys.platform.rstrip("0123456789"))
    machine = _host.machine() or "amd64"
    arch, variant = _normalize_arch(machine, None)
    return Platform(os=os_name, architecture=arch, variant=variant)


def _amd64_fallbacks(p: Platform) -> list[Platform]:
    out: list[Platform] = []
    level = _variant_number(p.variant)
    if level is not None and level > 1:
        out.extend(replace(p, variant=f"v{n}") for n in range(level - 1, 0, -1))
    out.append(replace(p, architecture="386", variant=None))
    return out


def _arm_fallbacks(p: Platform) -> list[Platform]:
    level = _variant_number(p.variant)
    if level is None or level <= 5:
        return []
    return [replace(p, variant=f"v{n}") for n in range(level - 1, 4, -1)]


def _arm64_fallbacks(p: Platform) -> list[Platform]:
    variant = p.variant or "v8"
    major_text, _, minor_text = variant.partition(".")
    major = _variant_number(major_text)
    out: list[Platform] = []
    if major is not None and major >= 8:
        minor = int(minor_text) if minor_text.isdigit() else 0

        def spelled(maj: int, mnr: int) -> str:
            return f"v{maj}" if mnr == 0 else f"v{maj}.{mnr}"

        if major == 9:
            out.extend(
                replace(p, variant=spelled(9, m)) for m in range(minor - 1, -1, -1)
            )
            # v9.0 branched off v8.5, so v9.x also runs v8.(x+5), up to v8.9
            minor = min(minor + 5, 9)
            major = 8
            out.append(replace(p, variant=f"v8.{minor}"))
        out.extend(replace(p, variant=spelled(8, m)) for m in range(minor - 1, -1, -1))
    # every 64-bit arm CPU with a 32-bit mode runs arm/v8 and older
    arm32 = replace(p, architecture="arm", variant="v8")
    return [*out, arm32, *_arm_fallbacks(arm32)]


def _variant_number(variant: str | None) -> int | None:
    text = (variant or "").removeprefix("v")
    return int(text) if text.isdigit() else None


def _fallback_order(wanted: Platform) -> list[Platform]:
    wanted = normalize(wanted)
    more = {
        "amd64": _amd64_fallbacks,
        "arm": _arm_fallbacks,
        "arm64": _arm64_fallbacks,
    }.get(wanted.architecture)
    return [wanted, *(more(wanted) if more else [])]


def _same_os_version(wanted: Platform, candidate: Platform) -> bool:
    if wanted.os != "windows" or not wanted.os_version or not candidate.os_version:
        return True
    # Windows images run on hosts of the same build (major.minor.build); the
    # fourth field is the patch level, which does not matter for compatibility.
    return wanted.os_version.split(".")[:3] == candidate.os_version.split(".")[:3]


class Matcher:
    """Matches the platforms one wanted platform runs, in order of preference."""

    def __init__(self, order: list[Platform]) -> None:
        self.order = [normalize(p) for p in order]

    def rank(self, candidate: Platform) -> int | None:
        """Position of ``candidate`` in the preference order (0 is best), or None."""
        c = normalize(candidate)
        for position, wanted in enumerate(self.order):
            if (
                c.os == wanted.os
                and c.architecture == wanted.architecture
                and c.variant == wanted.variant
                and _same_os_version(wanted, c)
            ):
                return position
        return None

    def match(self, candidate: Platform) -> bool:
        return self.rank(candidate) is not None

    def less(self, a: Platform, b: Platform) -> bool:
        """True when ``a`` is preferred over ``b``."""
        rank_a, rank_b = self.rank(a), self.rank(b)
        if rank_a is None:
            return False
        return rank_b is None or rank_a < rank_b

    def __repr__(self) -> str:
        return f"Matcher({', '.join(format(p) for p in self.order)})"


def only(platform: Platform) -> Matcher:
    """A matcher for ``platform`` and what its CPU also runs (module doc table)."""
    return Matcher(_fallback_order(platform))


def only_strict(platform: Platform) -> Matcher:
    """A matcher for ``platform`` alone, without fallbacks."""
    return Matcher([platform])


def best_match(
    wanted: Platform | Matcher, candidates: Iterable[Platform | None]
) -> int | None:
    """Index of the best candidate for ``wanted`` (``only`` order), or None.

    Candidates that are None (index entries without a platform) never match. Among
    equally good candidates the first one wins, as registries list them.
    """
    matcher = wanted if isinstance(wanted, Matcher) else only(wanted)
    best: tuple[int, int] | None = None
    for index, candidate in enumerate(candidates):
        if candidate is None:
            continue
        rank = matcher.rank(candidate)
        if rank is not None and (best is None or rank < best[0]):
            best = (rank, index)
    return None if best is None else best[1]


def to_json(platform: Platform) -> dict[str, Any]:
    """The descriptor ``platform`` object, keys in the order Go tools write them."""
    out: dict[str, Any] = {"architecture": platform.architecture, "os": platform.os}
    if platform.os_version:
        out["os.version"] = platform.os_version
    if platform.os_features:
        out["os.features"] = list(platform.os_features)
    if platform.variant:
        out["variant"] = platform.variant
    return out


def from_json(data: Any) -> Platform:
    """Read a descriptor ``platform`` object as written (no normalisation)."""
    if not isinstance(data, dict):
        raise PlatformError(
            f"platform object {data!r} is not a JSON object; expected "
            '{"os": ..., "architecture": ...}'
        )
    os_name, arch = data.get("os"), data.get("architecture")
    if not isinstance(os_name, str) or not isinstance(arch, str):
        raise PlatformError(
            f"platform object {data!r} lacks string 'os' and 'architecture'; "
            "both are required by the OCI image spec"
        )
    variant = data.get("variant")
    os_version = data.get("os.version")
    features = data.get("os.features") or []
    if not isinstance(variant, str | None) or not isinstance(os_version, str | None):
        raise PlatformError(
            f"platform object {data!r}: 'variant' and 'os.version' must be strings"
        )
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise PlatformError(
            f"platform object {data!r}: 'os.features' must be a list of strings"
        )
    return Platform(
        os=os_name,
        architecture=arch,
        variant=variant or None,
        os_version=os_version or None,
        os_features=tuple(features),
    )
