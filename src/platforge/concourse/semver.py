"""Semantic versions as image tags, and the constraints that select them.

Registries hold tags, not versions: ``1``, ``1.2``, ``v1.2.3``, ``1.2.3-rc.1``,
``1.2.3-alpine`` and ``latest`` can all sit in one repository. This module reads a tag
as a version the way the ``registry-image`` resource does:

* one to three numeric segments, an optional leading ``v``, an optional
  ``-prerelease`` and ``+build`` part (``1.2`` reads as 1.2.0 and remembers it spelled
  two segments, so ``1.2.3`` is *more specific* than ``1.2``);
* a ``-suffix`` is a *pre-release* only when it starts with one of the pre-release
  prefixes (``alpha``, ``beta``, ``rc`` unless configured); any other suffix is a
  *variant* (``1.2.3-alpine``), and a tag is only considered when its variant is
  exactly the one configured (``1.2.3-php7.3-apache`` needs variant
  ``php7.3-apache``).

Constraints follow the grammar users write for that resource (Masterminds' semver):

======================  ==============================================
``1.2.3`` / ``=1.2.3``  exactly that version
``1.2`` / ``1.2.x``     any 1.2 patch (missing segments act as ``x``)
``!=1.2.3``             anything else
``>``, ``>=``, ``<``,   comparisons; ``>1.2.x`` means above every 1.2,
``<=``, ``=<``          ``<=1.2.x`` means up to the last 1.2
``~1.2.3`` / ``~>``     >=1.2.3 and <1.3.0 (``~1`` is <2.0.0)
``^1.2.3``              >=1.2.3 and <2.0.0; ``^0.2.3`` <0.3.0; ``^0.0.3`` <0.0.4
``1.2 - 1.4.5``         an inclusive range
``*`` / ``x``           anything
``a b`` / ``a, b``      both must hold
``a || b``              either may hold
======================  ==============================================

A pre-release version satisfies a term only when that term names a pre-release
itself, so ``>=1.0`` never selects ``1.1.0-rc.1``.

The grammar is written here by hand: Python's version libraries parse PEP 440
(``packaging``) or npm ranges (``node-semver``), and neither reads comma conjunctions,
``~>``/``=<``, partial tags or variant suffixes the way pipelines already spell them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from platforge.errors import ConcourseError

__all__ = [
    "DEFAULT_PRE_RELEASE_PREFIXES",
    "Constraint",
    "TagVersion",
    "Version",
    "alias_tags",
    "parse_constraint",
    "parse_version",
    "tag_version",
]

DEFAULT_PRE_RELEASE_PREFIXES = ("alpha", "beta", "rc")

_VERSION_RE = re.compile(
    r"^v?(?P<major>0|[1-9]\d*)(?:\.(?P<minor>0|[1-9]\d*))?(?:\.(?P<patch>0|[1-9]\d*))?"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)


@dataclass(frozen=True)
class Version:
    """A version read from a tag; ``segments`` is how many numbers the tag spelled."""

    major: int
    minor: int = 0
    patch: int = 0
    prerelease: tuple[str, ...] = ()
    segments: int = 3
    text: str = field(default="", compare=False)

    def key(self) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
        """A sort key in semver precedence (build metadata is ignored)."""
        # A release sorts after every pre-release of the same numbers.
        release = 0 if self.prerelease else 1
        pre = tuple(
            (0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in self.prerelease
        )
        return (self.major, self.minor, self.patch, release, pre)

    def __lt__(self, other: Version) -> bool:
        return self.key() < other.key()

    def __le__(self, other: Version) -> bool:
        return self.key() <= other.key()

    def __gt__(self, other: Version) -> bool:
        return self.key() > other.key()

    def __ge__(self, other: Version) -> bool:
        return self.key() >= other.key()

    def same(self, other: Version) -> bool:
        """Equal in precedence (``1.2`` and ``1.2.0`` are the same version)."""
        return self.key() == other.key()

    def __str__(self) -> str:
        return self.text or (
            f"{self.major}.{self.minor}.{self.patch}"
            + (f"-{'.'.join(self.prerelease)}" if self.prerelease else "")
        )


def parse_version(text: str) -> Version | None:
    """Read ``text`` as a version, or ``None`` when it is not one (``latest``)."""
    match = _VERSION_RE.match(text)
    if match is None:
        return None
    parts = [match["major"], match["minor"], match["patch"]]
    segments = sum(part is not None for part in parts)
    pre = tuple(match["pre"].split(".")) if match["pre"] else ()
    return Version(
        major=int(parts[0]),
        minor=int(parts[1] or 0),
        patch=int(parts[2] or 0),
        prerelease=pre,
        segments=segments,
        text=text,
    )


@dataclass(frozen=True)
class TagVersion:
    """A tag that reads as a version under the configured variant."""

    tag: str
    version: Version

    @property
    def is_prerelease(self) -> bool:
        return bool(self.version.prerelease)


def tag_version(
    tag: str,
    *,
    variant: str | None = None,
    pre_release_prefixes: tuple[str, ...] = DEFAULT_PRE_RELEASE_PREFIXES,
) -> TagVersion | None:
    """Read ``tag`` as a version of ``variant``, or ``None`` when it is not one.

    The variant suffix is stripped first; what remains must be a version whose
    suffix, if any, is a pre-release (starts with a pre-release prefix). Any other
    suffix is a different variant and the tag is not ours.
    """
    base = tag
    if variant:
        suffix = f"-{variant}"
        if not tag.endswith(suffix) or len(tag) == len(suffix):
            return None
        base = tag[: -len(suffix)]
    version = parse_version(base)
    if version is None:
        return None
    if version.prerelease:
        pre = ".".join(version.prerelease)
        # A dash left in the suffix is a further variant (1.2.3-rc.1-alpine read
        # without a variant), so the tag is not a plain pre-release.
        if "-" in pre or not any(pre.startswith(p) for p in pre_release_prefixes):
            return None
    return TagVersion(tag=tag, version=version)


# --- constraints -----------------------------------------------------------------

_X = {"x", "X", "*"}
_TERM_RE = re.compile(
    r"(?P<op>>=|=>|<=|=<|!=|~>|>|<|=|~|\^)?\s*"
    r"(?P<ver>v?[0-9xX*][0-9A-Za-z.+\-xX*]*|[xX*])"
)
_HYPHEN_RE = re.compile(r"(?P<low>\S+)\s+-\s+(?P<high>\S+)")


@dataclass(frozen=True)
class _Partial:
    """A version as written in a constraint: trailing segments may be wildcards."""

    numbers: tuple[int, ...]  # the segments actually given, 0 to 3 of them
    prerelease: tuple[str, ...]

    def floor(self) -> Version:
        padded = (*self.numbers, 0, 0, 0)[:3]
        return Version(padded[0], padded[1], padded[2], self.prerelease)


@dataclass(frozen=True)
class _Bound:
    version: Version
    inclusive: bool


def _ge(version: Version) -> _Bound:
    return _Bound(version, inclusive=True)


def _gt(version: Version) -> _Bound:
    return _Bound(version, inclusive=False)


_le, _lt = _ge, _gt


@dataclass(frozen=True)
class _Term:
    """``low <= v < high`` (each bound open when ``None``), possibly negated."""

    low: _Bound | None = None
    high: _Bound | None = None
    negated: bool = False
    allows_prerelease: bool = False

    def holds(self, version: Version) -> bool:
        if version.prerelease and not self.allows_prerelease:
            return False
        inside = True
        if self.low is not None:
            low = self.low.version
            inside = version >= low if self.low.inclusive else version > low
        if inside and self.high is not None:
            high = self.high.version
            inside = version <= high if self.high.inclusive else version < high
        return inside != self.negated


@dataclass(frozen=True)
class Constraint:
    """A parsed constraint: alternatives (``||``) of conjunctions of terms."""

    text: str
    alternatives: tuple[tuple[_Term, ...], ...]

    def allows(self, version: Version) -> bool:
        return any(
            all(term.holds(version) for term in terms) for terms in self.alternatives
        )


def _partial(text: str, constraint: str) -> _Partial:
    text = text.removeprefix("v")
    pre: tuple[str, ...] = ()
    text = text.split("+", 1)[0]
    if "-" in text:
        text, pre_text = text.split("-", 1)
        pre = tuple(pre_text.split("."))
    numbers: list[int] = []
    for part in text.split("."):
        if part in _X:
            break
        if not part.isdigit():
            raise ConcourseError(
                f"semver_constraint {constraint!r}: {text!r} is not a version; "
                "write it like 1.2.3, 1.2.x or ~1.2"
            )
        numbers.append(int(part))
    if len(text.split(".")) > 3:
        raise ConcourseError(
            f"semver_constraint {constraint!r}: {text!r} has more than three "
            "segments; write it like 1.2.3"
        )
    return _Partial(tuple(numbers), pre)


def _first_above(numbers: tuple[int, ...]) -> Version:
    """The first version after every version starting with ``numbers``."""
    bumped = (*numbers[:-1], numbers[-1] + 1, 0, 0)[:3]
    return Version(bumped[0], bumped[1], bumped[2], ("0",))


def _equal(p: _Partial) -> _Term:
    if not p.numbers:
        return _Term()
    if len(p.numbers) < 3:
        return _Term(_ge(p.floor()), _lt(_first_above(p.numbers)))
    return _Term(_ge(p.floor()), _le(p.floor()))


def _not_equal(p: _Partial) -> _Term:
    inner = _equal(p)
    return _Term(inner.low, inner.high, negated=True)


def _greater_or_equal(p: _Partial) -> _Term:
    return _Term(low=_ge(p.floor()))


def _greater(p: _Partial) -> _Term:
    if not p.numbers:  # ">*": nothing is above everything
        return _Term(negated=True)
    if len(p.numbers) < 3:
        return _Term(low=_ge(_first_above(p.numbers)))
    return _Term(low=_gt(p.floor()))


def _less(p: _Partial) -> _Term:
    return _Term(high=_lt(p.floor()))


def _less_or_equal(p: _Partial) -> _Term:
    if not p.numbers:
        return _Term()
    if len(p.numbers) < 3:
        return _Term(high=_lt(_first_above(p.numbers)))
    return _Term(high=_le(p.floor()))


def _tilde(p: _Partial) -> _Term:
    if not p.numbers:
        return _Term()
    return _Term(_ge(p.floor()), _lt(_first_above(p.numbers[:2])))


def _caret(p: _Partial) -> _Term:
    # The leftmost non-zero segment (or the last one given) may not change.
    numbers = p.numbers
    if not numbers:
        return _Term()
    keep = next((i + 1 for i, n in enumerate(numbers) if n > 0), len(numbers))
    return _Term(_ge(p.floor()), _lt(_first_above(numbers[:keep])))


_OPERATORS = {
    "": _equal,
    "=": _equal,
    "!=": _not_equal,
    ">=": _greater_or_equal,
    "=>": _greater_or_equal,
    ">": _greater,
    "<": _less,
    "<=": _less_or_equal,
    "=<": _less_or_equal,
    "~": _tilde,
    "~>": _tilde,
    "^": _caret,
}


def _term(op: str, partial: _Partial) -> _Term:
    term = _OPERATORS[op](partial)
    return _Term(
        term.low, term.high, term.negated, allows_prerelease=bool(partial.prerelease)
    )


def _conjunction(text: str, constraint: str) -> tuple[_Term, ...]:
    terms: list[_Term] = []
    hyphen = _HYPHEN_RE.search(text)
    while hyphen is not None:
        low = _partial(hyphen["low"], constraint)
        high = _partial(hyphen["high"], constraint)
        terms.append(
            _Term(
                _ge(low.floor()),
                _less_or_equal(high).high,
                allows_prerelease=bool(low.prerelease or high.prerelease),
            )
        )
        text = text[: hyphen.start()] + " " + text[hyphen.end() :]
        hyphen = _HYPHEN_RE.search(text)
    position = 0
    rest = text.replace(",", " ")
    while position < len(rest):
        if rest[position].isspace():
            position += 1
            continue
        match = _TERM_RE.match(rest, position)
        if match is None:
            raise ConcourseError(
                f"semver_constraint {constraint!r}: cannot read "
                f"{rest[position:].strip()!r}; write terms like '>= 1.2, < 3' or '~1.4'"
            )
        terms.append(_term(match["op"] or "", _partial(match["ver"], constraint)))
        position = match.end()
    if not terms:
        raise ConcourseError(
            f"semver_constraint {constraint!r} has an empty alternative; "
            "write terms like '>= 1.2 || ~2.0'"
        )
    return tuple(terms)


def parse_constraint(text: str) -> Constraint:
    """Parse a constraint, raising ConcourseError quoting it when it does not read."""
    if not text.strip():
        raise ConcourseError(
            "semver_constraint is empty; remove it or write one like '>= 1.2'"
        )
    alternatives = tuple(_conjunction(part, text) for part in text.split("||"))
    return Constraint(text=text, alternatives=alternatives)


# --- alias tags for put ------------------------------------------------------------


def alias_tags(
    version: str,
    existing_tags: list[str],
    *,
    variant: str | None = None,
    pre_release_prefixes: tuple[str, ...] = DEFAULT_PRE_RELEASE_PREFIXES,
) -> list[str]:
    """The alias tags pushing ``version`` should move, given the registry's tags.

    ``1.2.3`` moves ``1.2`` when it is the newest 1.2.x, ``1`` when it is the newest
    1.x and ``latest`` when it is the newest of all; with a variant ``foo`` these are
    ``1.2-foo``, ``1-foo`` and ``foo``. Pre-releases move no alias.
    """
    parsed = parse_version(version)
    if parsed is None or parsed.prerelease:
        return []
    others = [
        found.version
        for tag in existing_tags
        if (
            found := tag_version(
                tag, variant=variant, pre_release_prefixes=pre_release_prefixes
            )
        )
        is not None
        and not found.is_prerelease
    ]

    def newest(selector: tuple[int, ...]) -> bool:
        group = [o for o in others if (o.major, o.minor)[: len(selector)] == selector]
        return all(parsed >= other for other in group)

    def named(alias: str) -> str:
        return f"{alias}-{variant}" if variant else alias

    aliases: list[str] = []
    if parsed.segments >= 3 and newest((parsed.major, parsed.minor)):
        aliases.append(named(f"{parsed.major}.{parsed.minor}"))
    if parsed.segments >= 2 and newest((parsed.major,)):
        aliases.append(named(f"{parsed.major}"))
    if newest(()):
        aliases.append(variant or "latest")
    return aliases
