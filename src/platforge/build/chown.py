"""Owners and permission bits for COPY and ADD: ``--chown`` and ``--chmod``.

``--chown=USER[:GROUP]`` takes names or numbers. Names are looked up in the image's
own ``/etc/passwd`` and ``/etc/group`` (the files of the stage being built, read
from its layers, not the host's), as Docker does: a numeric part is used as is, a
name missing from those files is an error, and a user given without a group gets
the group of the same number as its uid when given as a number, or the user's
primary group from ``/etc/passwd`` when given as a name.

``--chmod`` takes octal (``755``, ``0644``) or symbolic modes (``u+x,go-w``,
``a=rX``) in chmod(1)'s grammar. For symbolic modes ``X`` adds execute only to
directories and to files that already have an execute bit, and a clause without a
``who`` part applies to all of user, group and other (the umask is not consulted:
a build has none).
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass

from platforge.errors import BuildError

__all__ = [
    "ModeSpec",
    "Owner",
    "parse_chmod",
    "parse_group_file",
    "parse_passwd_file",
    "resolve_owner",
]


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int


def _records(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        rows.append(line.split(":"))
    return rows


def parse_passwd_file(text: str) -> dict[str, tuple[int, int]]:
    """Map user names to ``(uid, primary gid)`` from ``/etc/passwd`` text."""
    users: dict[str, tuple[int, int]] = {}
    for fields in _records(text):
        if len(fields) >= 4 and fields[2].isdigit() and fields[3].isdigit():
            users.setdefault(fields[0], (int(fields[2]), int(fields[3])))
    return users


def parse_group_file(text: str) -> dict[str, int]:
    """Map group names to gids from ``/etc/group`` text."""
    groups: dict[str, int] = {}
    for fields in _records(text):
        if len(fields) >= 3 and fields[2].isdigit():
            groups.setdefault(fields[0], int(fields[2]))
    return groups


def resolve_owner(
    spec: str, passwd: str | None, group: str | None, *, instruction: str = "COPY"
) -> Owner:
    """Turn a ``--chown`` value into numbers using the image's account files.

    ``passwd`` and ``group`` are the texts of the image's ``/etc/passwd`` and
    ``/etc/group``, or ``None`` when the image has no such file.
    """
    user_part, _, group_part = spec.partition(":")
    if not user_part:
        raise BuildError(
            f"{instruction} --chown={spec!r}: no user given; use USER[:GROUP]"
        )
    users = parse_passwd_file(passwd or "")
    if user_part.isdigit():
        uid = int(user_part)
        gid = uid
    elif user_part in users:
        uid, gid = users[user_part]
    else:
        raise BuildError(
            f"{instruction} --chown={spec!r}: user {user_part!r} is not in the "
            "image's /etc/passwd; use a number or add the user in an earlier step"
        )
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            groups = parse_group_file(group or "")
            if group_part not in groups:
                raise BuildError(
                    f"{instruction} --chown={spec!r}: group {group_part!r} is not "
                    "in the image's /etc/group; use a number or add the group first"
                )
            gid = groups[group_part]
    return Owner(uid, gid)


_CLAUSE = re.compile(r"^([ugoa]*)((?:[-+=][rwxXst]*)+)$")
_ACTION = re.compile(r"([-+=])([rwxXst]*)")
_WHO_BITS = {
    "u": (stat.S_IRUSR, stat.S_IWUSR, stat.S_IXUSR, stat.S_ISUID),
    "g": (stat.S_IRGRP, stat.S_IWGRP, stat.S_IXGRP, stat.S_ISGID),
    "o": (stat.S_IROTH, stat.S_IWOTH, stat.S_IXOTH, 0),
}


@dataclass(frozen=True)
class ModeSpec:
    """A parsed ``--chmod``: apply it to an entry's current mode bits."""

    text: str
    octal: int | None
    clauses: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]

    def apply(self, mode: int, *, is_dir: bool) -> int:
        """The permission bits (``0o7777`` part) after this change."""
        if self.octal is not None:
            return self.octal
        mode &= 0o7777
        for who_text, actions in self.clauses:
            who = set(who_text.replace("a", "ugo") or "ugo")
            for op, perms in actions:
                bits = _bits_for(who, perms, mode, is_dir=is_dir)
                if op == "+":
                    mode |= bits
                elif op == "-":
                    mode &= ~bits
                else:
                    cleared = _bits_for(who, "rwxst", 0o111, is_dir=True)
                    if is_dir and "s" not in perms:
                        # chmod(1) keeps a directory's set-ID bits unless the
                        # clause names them.
                        cleared &= ~(stat.S_ISUID | stat.S_ISGID)
                    mode = (mode & ~cleared) | bits
        return mode


def _bits_for(who: set[str], perms: str, mode: int, *, is_dir: bool) -> int:
    bits = 0
    for w in who:
        read, write, execute, special = _WHO_BITS[w]
        for p in perms:
            if p == "r":
                bits |= read
            elif p == "w":
                bits |= write
            elif p == "x" or (p == "X" and (is_dir or mode & 0o111)):
                bits |= execute
            elif p == "s":
                bits |= special
            elif p == "t" and w == "o":
                bits |= stat.S_ISVTX
    return bits


def parse_chmod(text: str, *, instruction: str = "COPY") -> ModeSpec:
    """Parse a ``--chmod`` value, octal or symbolic."""
    if re.fullmatch(r"[0-7]{1,4}", text):
        return ModeSpec(text, int(text, 8), ())
    clauses = []
    for clause in text.split(","):
        match = _CLAUSE.match(clause)
        if match is None:
            raise BuildError(
                f"{instruction} --chmod={text!r}: not an octal or symbolic mode; "
                "use e.g. 755 or u+x,go-w"
            )
        actions = tuple(
            (m.group(1), m.group(2)) for m in _ACTION.finditer(match.group(2))
        )
        clauses.append((match.group(1), actions))
    return ModeSpec(text, None, tuple(clauses))
