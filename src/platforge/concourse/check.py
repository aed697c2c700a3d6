"""``check``: find the versions of an image repository, oldest first.

Three modes, chosen by ``source``:

**tag** (``tag`` set): the one version is the tag's current digest, read with a
manifest ``HEAD`` (for a multi-platform image, the index digest). When Concourse
passes the previous version and its digest still exists in the repository but the
tag moved, both are returned, previous first, so Concourse sees the move.

**semver** (neither ``tag`` nor ``tag_regex``): every tag that reads as a version
under the configured ``variant`` (see :mod:`platforge.concourse.semver`), filtered by
``pre_releases`` and ``semver_constraint``, in version order. Tags that share a
digest collapse into one version carrying the best tag (a release over a
pre-release, then the most specific: ``1.2.3`` over ``1.2`` over ``1``), so alias
tags do not look like new versions. Without a constraint, the bare tag (``latest``,
or the variant's name) comes last when it names an image no version tag names. When
Concourse passes the previous version and its tag still names its digest, that tag
is the cursor (as upstream): only tags of higher versions are asked for their digest,
so a steady-state check costs the tag list and a few ``HEAD`` requests.

**regex** (``tag_regex`` set): every tag the regular expression finds (anywhere in
the tag, as Go's ``MatchString`` does: anchor it with ``^…$`` to match whole tags).
With ``created_at_sort`` they are ordered by the image config's ``created`` time,
newest last; otherwise in version order when every tag reads as a version, else in
lexical order (registries list tags in no stable order). An image config that cannot
be read sorts as the oldest.

In semver and regex mode, a previous version that is still listed starts the answer
(Concourse expects it first); one that vanished leaves the whole list.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from platforge.concourse.protocol import ResourceVersion
from platforge.concourse.semver import TagVersion, parse_version, tag_version
from platforge.oci.content import Index, Manifest, parse_manifest

if TYPE_CHECKING:
    from platforge.concourse.remote import Remote
    from platforge.concourse.source import Source

__all__ = ["check"]

log = logging.getLogger("platforge.concourse.check")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_CONFIG = 4 << 20
# HEAD requests in flight at once; registries rate-limit bursts beyond a few.
_PARALLEL = 8


def check(
    source: Source, previous: ResourceVersion | None, remote: Remote
) -> list[ResourceVersion]:
    """The versions of ``source``'s repository, oldest first."""
    if source.mode == "tag":
        return _check_tag(source, previous, remote)
    if source.mode == "regex":
        versions = _check_regex(source, remote)
    else:
        versions = _check_semver(source, previous, remote)
    return _from_previous(versions, previous)


def _check_tag(
    source: Source, previous: ResourceVersion | None, remote: Remote
) -> list[ResourceVersion]:
    tag = source.tag_or_latest
    info = remote.client.head_manifest(remote.repository, tag)
    if info is None:
        log.info("tag %s does not exist in %s yet", tag, remote.name)
        return []
    current = ResourceVersion(tag=tag, digest=info.digest)
    if (
        previous is not None
        and previous.digest != current.digest
        and remote.client.head_manifest(remote.repository, previous.digest) is not None
    ):
        return [ResourceVersion(tag=tag, digest=previous.digest), current]
    return [current]


@dataclass(frozen=True)
class _Found:
    tag: TagVersion
    digest: str

    def preference(self) -> tuple[int, int, Any]:
        """Which tag names a shared digest: a release over a pre-release, then the
        most specific spelling (``3.2.1`` over ``3.2``, ``1.0.0-rc.2`` over
        ``1.0.0-rc``), then the highest version."""
        version = self.tag.version
        release = 0 if version.prerelease else 1
        return (release, str(version).count("."), version.key())


def _list_tags(remote: Remote) -> list[str]:
    """The repository's tags; an entry that is not a string is skipped, saying so."""
    tags = remote.client.list_tags(remote.repository)
    strings = [tag for tag in tags if isinstance(tag, str)]
    if len(strings) != len(tags):
        log.warning(
            "%s listed %d tags that are not strings; they are skipped",
            remote.name,
            len(tags) - len(strings),
        )
    return strings


def _cursor(
    previous: ResourceVersion | None, candidates: list[TagVersion], remote: Remote
) -> TagVersion | None:
    """The previous version's tag when it still names the previous digest.

    As upstream, tags of lower (or equal) versions then need no ``HEAD``: a
    steady-state check costs the tag list and the few tags above the cursor.
    """
    if previous is None or not previous.tag:
        return None
    found = next((c for c in candidates if c.tag == previous.tag), None)
    if found is None:
        return None
    info = remote.client.head_manifest(remote.repository, previous.tag)
    if info is None or info.digest != previous.digest:
        return None
    return found


def _check_semver(
    source: Source, previous: ResourceVersion | None, remote: Remote
) -> list[ResourceVersion]:
    tags = _list_tags(remote)
    candidates: list[TagVersion] = []
    for tag in tags:
        found = tag_version(
            tag,
            variant=source.variant,
            pre_release_prefixes=source.pre_release_prefixes,
        )
        if found is None:
            continue
        if found.is_prerelease and not source.pre_releases:
            continue
        constraint = source.semver_constraint
        if constraint is not None and not constraint.allows(found.version):
            continue
        candidates.append(found)

    # The bare tag (``latest``, or the variant's name) joins as the newest version
    # when it names an image no version tag does, unless a constraint is set.
    bare = source.variant or "latest"
    with_bare = bare in tags and source.semver_constraint is None
    cursor = _cursor(previous, candidates, remote)
    if cursor is not None:
        assert previous is not None  # noqa: S101 - a cursor comes from it
        above = [c for c in candidates if c.version.key() > cursor.version.key()]
        heads = _digests(remote, [c.tag for c in above] + [bare] * with_bare)
        versions = _collapse(
            [cursor, *above], {cursor.tag: previous.digest} | heads, bare, with_bare
        )
        # The bare tag naming an image below the cursor would look new: ask all.
        if not with_bare or versions[-1].tag != bare:
            return versions
    digests = _digests(remote, [c.tag for c in candidates] + [bare] * with_bare)
    return _collapse(candidates, digests, bare, with_bare)


def _collapse(
    candidates: list[TagVersion], digests: dict[str, str], bare: str, with_bare: bool
) -> list[ResourceVersion]:
    """One version per digest, named by its best tag, oldest first; then the bare
    tag when it names an image no version tag does."""
    by_digest: dict[str, _Found] = {}
    for candidate in candidates:
        digest = digests.get(candidate.tag)
        if digest is None:  # deleted between listing and asking
            continue
        hit = _Found(candidate, digest)
        best = by_digest.get(digest)
        if best is None or hit.preference() > best.preference():
            by_digest[digest] = hit
    ordered = sorted(by_digest.values(), key=lambda f: (f.tag.version.key(), f.tag.tag))
    versions = [ResourceVersion(tag=f.tag.tag, digest=f.digest) for f in ordered]
    if with_bare and (digest := digests.get(bare)) and digest not in by_digest:
        versions.append(ResourceVersion(tag=bare, digest=digest))
    return versions


def _check_regex(source: Source, remote: Remote) -> list[ResourceVersion]:
    assert source.tag_regex is not None  # noqa: S101 - mode "regex" guarantees it
    # Lexical order first: the registry's own listing order is not stable.
    tags = sorted(t for t in _list_tags(remote) if source.tag_regex.search(t))
    digests = _digests(remote, tags)
    found = [(tag, digests[tag]) for tag in tags if tag in digests]

    if source.created_at_sort:
        created = {digest: _created(remote, digest, source) for _, digest in found}
        found.sort(key=lambda pair: (created[pair[1]], pair[0]))
    else:
        versions = {tag: parse_version(tag) for tag, _ in found}
        if found and all(v is not None for v in versions.values()):
            found.sort(key=lambda pair: versions[pair[0]].key())  # type: ignore[union-attr]
    return [ResourceVersion(tag=tag, digest=digest) for tag, digest in found]


def _digests(remote: Remote, tags: list[str]) -> dict[str, str]:
    """Each tag's digest (``HEAD`` in parallel); tags that vanished are left out."""

    def head(tag: str) -> tuple[str, str | None]:
        info = remote.client.head_manifest(remote.repository, tag)
        return tag, info.digest if info is not None else None

    with ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
        return {tag: digest for tag, digest in pool.map(head, tags) if digest}


def _created(remote: Remote, digest: str, source: Source) -> datetime:
    """When the image was created (for an index: the source platform's manifest,
    picked with the usual fallbacks, else the first)."""
    info = remote.client.get_manifest(remote.repository, digest)
    document = parse_manifest(info.raw, info.media_type or None)
    if isinstance(document, Index):
        chosen = document.find(source.platform) if source.platform else None
        chosen = chosen or next(iter(document.manifests), None)
        if chosen is None:
            return _EPOCH
        child = remote.client.get_manifest(remote.repository, str(chosen.digest))
        document = parse_manifest(child.raw, chosen.media_type)
    if not isinstance(document, Manifest):
        return _EPOCH
    config = str(document.config.digest)
    with remote.client.open_blob(remote.repository, config) as blob:
        raw = blob.read(_MAX_CONFIG)
    try:
        document_json = json.loads(raw)
        text = document_json.get("created") if isinstance(document_json, dict) else None
        when = datetime.fromisoformat(text) if isinstance(text, str) else _EPOCH
    except ValueError:  # not JSON, not UTF-8, or not a time: sorts as oldest
        return _EPOCH
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _from_previous(
    versions: list[ResourceVersion], previous: ResourceVersion | None
) -> list[ResourceVersion]:
    if previous is None:
        return versions
    for index, version in enumerate(versions):
        if version.digest == previous.digest and (
            not previous.tag or version.tag == previous.tag
        ):
            return versions[index:]
    return versions
