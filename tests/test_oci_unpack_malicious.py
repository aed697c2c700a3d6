"""Crafted layers that try to write outside the unpack target.

Each case is either refused (``UnpackError`` naming the layer and the entry) or
confined (whatever it does happens inside the target). In every case a sentinel
directory next to the target, and everything else outside the target, must be
exactly as before.
"""

from __future__ import annotations

import io
import os
import re
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from platforge.errors import UnpackError
from platforge.oci.unpack import unpack_layers

if TYPE_CHECKING:
    from collections.abc import Callable

IS_ROOT = os.geteuid() == 0


def reg(name: str, data: bytes = b"pwned", mode: int = 0o644, **fields) -> tuple:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def sym(name: str, target: str) -> tuple:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


def hard(name: str, target: str) -> tuple:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info, None


def directory(name: str, mode: int = 0o755, **fields) -> tuple:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    for key, value in fields.items():
        setattr(info, key, value)
    return info, None


def device(name: str, major: int, minor: int) -> tuple:
    info = tarfile.TarInfo(name)
    info.type = tarfile.BLKTYPE
    info.devmajor, info.devminor = major, minor
    info.mode = 0o666
    return info, None


def craft(*members: tuple) -> io.BytesIO:
    """A layer tar written member by member, with no checks at all."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    out.seek(0)
    return out


def snapshot(root: Path, skip: Path) -> dict[str, tuple]:
    """Everything under ``root`` except ``skip``: kind, mode, owner, links, bytes."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        directory = Path(dirpath)
        dirnames[:] = [d for d in dirnames if directory / d != skip]
        for name in dirnames + filenames:
            path = directory / name
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                content = path.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                content = str(path.readlink()).encode()
            else:
                content = b""
            seen[str(path)] = (
                st.st_mode,
                st.st_uid,
                st.st_nlink,
                st.st_mtime_ns,
                content,
            )
    return seen


@dataclass
class Arena:
    base: Path
    target: Path
    sentinel: Path

    def inside(self, outside: Path) -> Path:
        """Where an absolute path lands when confined to the target."""
        return self.target / str(outside).lstrip("/")


# The target sits this deep below the arena, so that even a broken unpacker
# following a relative escape ("../" repeated) stays inside the test's tmp_path.
DEPTH = 8


@pytest.fixture
def arena(tmp_path, monkeypatch) -> Arena:
    sentinel = tmp_path / "sentinel"
    (sentinel / "sub").mkdir(parents=True)
    (sentinel / "secret").write_bytes(b"secret")
    (sentinel / "sub" / "deep").write_bytes(b"deep")
    target = tmp_path.joinpath(*(f"level{n}" for n in range(DEPTH - 1)), "target")
    target.mkdir(parents=True)
    # /proc/self/cwd must name the arena too, never the repository.
    monkeypatch.chdir(tmp_path)
    return Arena(tmp_path, target, sentinel)


@dataclass
class Case:
    members: Callable[[Arena], list[tuple]]
    refused: str | None = None  # a regex for the UnpackError, or None: confined
    privileged: bool | None = None
    whiteout_format: str = "apply"
    check: Callable[[Arena], None] | None = None


def confined_file(where: Callable[[Arena], Path]) -> Callable[[Arena], None]:
    def check(arena: Arena) -> None:
        assert where(arena).read_bytes() == b"pwned"

    return check


def symlink_chain_loop(arena: Arena) -> list[tuple]:
    return [sym("a", "b"), sym("b", "a"), reg("a/x")]


CASES: dict[str, Case] = {
    "dotdot-file": Case(lambda _: [reg("../escape")], refused="'..'"),
    "dotdot-nested": Case(lambda _: [reg("a/b/../../../escape")], refused="'..'"),
    "dotdot-directory": Case(lambda _: [directory("../newdir")], refused="'..'"),
    "absolute-path": Case(
        lambda a: [reg(str(a.sentinel / "secret"))],
        check=confined_file(lambda a: a.inside(a.sentinel / "secret")),
    ),
    "symlink-absolute-then-write-through": Case(
        lambda a: [sym("link", str(a.sentinel)), reg("link/secret")],
        check=confined_file(lambda a: a.inside(a.sentinel / "secret")),
    ),
    "symlink-relative-escape-then-write-through": Case(
        lambda _: [sym("link", "../" * DEPTH + "sentinel"), reg("link/secret")],
        check=confined_file(lambda a: a.target / "sentinel" / "secret"),
    ),
    "symlink-to-outside-file-then-overwrite": Case(
        lambda a: [sym("x", str(a.sentinel / "secret")), reg("x")],
        check=confined_file(lambda a: a.target / "x"),
    ),
    "symlink-chain-with-dotdot": Case(
        lambda _: [directory("b"), sym("a", "b/../../../.."), reg("a/escape")],
        check=confined_file(lambda a: a.target / "escape"),
    ),
    "symlink-to-proc-self": Case(
        lambda _: [sym("p", "/proc/self/cwd"), reg("p/escape")],
        check=confined_file(lambda a: a.target / "proc/self/cwd/escape"),
    ),
    "directory-replaced-by-symlink-then-child": Case(
        lambda a: [directory("d"), sym("d", str(a.sentinel)), reg("d/secret")],
        check=confined_file(lambda a: a.inside(a.sentinel / "secret")),
    ),
    "symlink-loop": Case(symlink_chain_loop, refused="more than 40 symlinks"),
    "hardlink-dotdot": Case(
        lambda _: [hard("h", "../sentinel/secret")], refused="'..'"
    ),
    "hardlink-absolute-outside": Case(
        lambda a: [hard("h", str(a.sentinel / "secret"))], refused="does not exist"
    ),
    "hardlink-through-symlink-to-outside": Case(
        lambda a: [sym("d", str(a.sentinel)), hard("h", "d/secret")],
        refused="does not exist",
    ),
    "hardlink-replacing-symlink-to-outside": Case(
        lambda a: [sym("x", str(a.sentinel / "secret")), reg("y"), hard("x", "y")],
        check=confined_file(lambda a: a.target / "x"),
    ),
    "hardlink-to-directory": Case(
        lambda _: [directory("d"), hard("h", "d")], refused="is a directory"
    ),
    "whiteout-named-dotdot": Case(lambda _: [reg(".wh...")], refused="'..'"),
    "whiteout-named-dot": Case(lambda _: [reg("sub/.wh..")], refused="'.'"),
    "whiteout-in-parent": Case(lambda _: [reg("../.wh.sentinel")], refused="'..'"),
    "whiteout-through-symlink": Case(
        lambda a: [sym("s", str(a.sentinel)), reg("s/.wh.secret", b"")]
    ),
    "opaque-through-absolute-symlink": Case(
        lambda a: [sym("s", str(a.sentinel)), reg("s/.wh..wh..opq", b"")]
    ),
    "opaque-through-relative-symlink": Case(
        lambda _: [sym("s", "../../.."), reg("s/.wh..wh..opq", b"")]
    ),
    "entry-replacing-the-target-itself": Case(
        lambda _: [reg(".")], refused="replace the target directory"
    ),
    "file-then-child-of-file": Case(
        lambda _: [reg("f"), reg("f/x")], refused="not a directory"
    ),
    "device-node-unprivileged": Case(
        lambda _: [device("dev/sda", 8, 0)],
        privileged=False,
        check=lambda a: _assert_absent(a.target / "dev/sda"),
    ),
    "setuid-unprivileged": Case(
        lambda _: [reg("bin/su", mode=0o6755)],
        privileged=False,
        check=lambda a: _assert_mode(a.target / "bin/su", 0o755),
    ),
    "ownership-unprivileged": Case(
        lambda _: [reg("f", uid=4242, gid=4242)],
        privileged=False,
        check=lambda a: _assert_owner(a.target / "f", os.geteuid()),
    ),
    "overlay-whiteout-named-dotdot": Case(
        lambda _: [reg("sub/.wh...")],
        refused="'..'",
        privileged=True,
        whiteout_format="overlay",
    ),
}

if IS_ROOT:
    CASES["overlay-xattr-smuggled-in-pax"] = Case(
        lambda _: [
            directory("d", pax_headers={"SCHILY.xattr.trusted.overlay.opaque": "y"}),
            reg("f", pax_headers={"SCHILY.xattr.trusted.overlay.redirect": "/x"}),
        ],
        privileged=True,
        whiteout_format="overlay",
        check=lambda a: _assert_no_overlay_xattrs(a.target / "d", a.target / "f"),
    )


def _assert_absent(path: Path) -> None:
    assert not path.exists()
    assert not path.is_symlink()


def _assert_mode(path: Path, mode: int) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == mode


def _assert_owner(path: Path, uid: int) -> None:
    assert path.stat().st_uid == uid


def _assert_no_overlay_xattrs(*paths: Path) -> None:
    for path in paths:
        assert not [n for n in os.listxattr(path) if n.startswith("trusted.overlay.")]


def test_there_are_at_least_fifteen_malicious_cases():
    assert len(CASES) >= 15


@pytest.mark.parametrize("name", sorted(CASES))
def test_malicious_layer_is_refused_or_confined(arena, name):
    case = CASES[name]
    if case.privileged and not IS_ROOT:
        pytest.skip("case needs root")
    members = case.members(arena)
    before = snapshot(arena.base, skip=arena.target)
    layers = [craft(*members)]
    if case.refused is not None:
        with pytest.raises(UnpackError) as caught:
            unpack_layers(
                layers,
                arena.target,
                privileged=case.privileged,
                whiteout_format=case.whiteout_format,  # type: ignore[arg-type]
            )
        message = str(caught.value)
        assert re.search(case.refused, message), message
        assert message.startswith("layer 1: entry ")
        assert repr(members[-1][0].name) in message
    else:
        unpack_layers(
            layers,
            arena.target,
            privileged=case.privileged,
            whiteout_format=case.whiteout_format,  # type: ignore[arg-type]
        )
        if case.check is not None:
            case.check(arena)
    assert snapshot(arena.base, skip=arena.target) == before


def test_symlink_from_an_earlier_layer_cannot_lead_a_later_one_outside(arena):
    before = snapshot(arena.base, skip=arena.target)
    first = craft(sym("etc", str(arena.sentinel)))
    second = craft(reg("etc/secret"), reg("etc/.wh.sub", b""))
    unpack_layers([first, second], arena.target)
    assert arena.inside(arena.sentinel / "secret").read_bytes() == b"pwned"
    assert snapshot(arena.base, skip=arena.target) == before


def test_hardlink_to_an_earlier_layers_outside_symlink_links_the_symlink(arena):
    before = snapshot(arena.base, skip=arena.target)
    first = craft(sym("ptr", str(arena.sentinel / "secret")))
    second = craft(hard("copy", "ptr"))
    unpack_layers([first, second], arena.target)
    # The new name is a second link to the symlink itself, not to what it names.
    assert (arena.target / "copy").is_symlink()
    assert snapshot(arena.base, skip=arena.target) == before
