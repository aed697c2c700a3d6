"""The image a stage is building: its config and its layers, step after step.

An :class:`ImageState` is what a stage holds between steps: the image config as the
JSON document it will be written as (``architecture``, ``os``, ``config`` with Env,
Cmd, Labels …, ``rootfs.diff_ids``, ``history``), and the layer descriptors in
order. Every step maps one state to the next; the builder caches that mapping.

The config stays a plain JSON dictionary on purpose: fields a base image carries
that platforge does not know are kept as they are, and what is written is exactly
what the steps set.

:class:`ImageTree` answers the two questions a COPY asks of the image without
unpacking it — does this path exist as a directory, and what does this small file
(``/etc/passwd``) hold — by reading the layers' tar headers once.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import tarfile
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from platforge import platforms
from platforge.oci.layer import Entry, EntryType
from platforge.oci.layout import write_atomic

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from platforge.build.store import Store
    from platforge.platforms import Platform

__all__ = ["ImageState", "ImageTree", "LayerRef", "config_platform", "empty_state"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class LayerRef:
    """A layer of the image: its blob (compressed) and its diff ID (uncompressed)."""

    media_type: str
    digest: str
    size: int
    diff_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
            "diffID": self.diff_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LayerRef:
        return cls(data["mediaType"], data["digest"], data["size"], data["diffID"])


@dataclass
class ImageState:
    """An image config (JSON) plus its layers; copied, never shared, by steps."""

    config: dict[str, Any]
    layers: list[LayerRef] = field(default_factory=list)
    # Set in this stage by CMD: a later ENTRYPOINT keeps it (Docker's rule).
    cmd_set: bool = False

    @property
    def run_config(self) -> dict[str, Any]:
        """The ``config`` object (Env, Cmd, …), created when missing."""
        inner = self.config.get("config")
        if not isinstance(inner, dict):
            inner = {}
            self.config["config"] = inner
        return inner

    def clone(self) -> ImageState:
        return ImageState(copy.deepcopy(self.config), list(self.layers), self.cmd_set)

    def state_id(self) -> str:
        """A hash naming this exact state: the parent part of a cache key."""
        body = json.dumps(
            {
                "config": self.config,
                "layers": [layer.digest for layer in self.layers],
                "cmd_set": self.cmd_set,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(body.encode()).hexdigest()

    def env(self) -> dict[str, str]:
        result: dict[str, str] = {}
        for item in self.run_config.get("Env") or []:
            key, _, value = str(item).partition("=")
            result[key] = value
        return result

    def set_env(self, key: str, value: str) -> None:
        env = list(self.run_config.get("Env") or [])
        for i, item in enumerate(env):
            if str(item).partition("=")[0] == key:
                env[i] = f"{key}={value}"
                break
        else:
            env.append(f"{key}={value}")
        self.run_config["Env"] = env

    def add_history(
        self, created_by: str, created: str | None, *, empty_layer: bool
    ) -> None:
        entry: dict[str, Any] = {}
        if created is not None:
            entry["created"] = created
        entry["created_by"] = created_by
        entry["comment"] = "platforge.dockerfile.v0"
        if empty_layer:
            entry["empty_layer"] = True
        self.config.setdefault("history", []).append(entry)

    def add_layer(self, layer: LayerRef) -> None:
        self.layers.append(layer)
        rootfs = self.config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
        rootfs.setdefault("diff_ids", []).append(layer.diff_id)

    def to_record(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "layers": [layer.to_json() for layer in self.layers],
            "cmd_set": self.cmd_set,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ImageState:
        return cls(
            record["config"],
            [LayerRef.from_json(layer) for layer in record["layers"]],
            bool(record.get("cmd_set", False)),
        )


def empty_state(platform: Platform) -> ImageState:
    """The state ``FROM scratch`` starts from, as BuildKit makes it."""
    config: dict[str, Any] = {
        "architecture": platform.architecture,
        "os": platform.os,
    }
    if platform.variant:
        config["variant"] = platform.variant
    config["config"] = {"Env": [f"PATH={DEFAULT_PATH}"], "WorkingDir": "/"}
    config["rootfs"] = {"type": "layers", "diff_ids": []}
    config["history"] = []
    return ImageState(config)


def config_platform(config: dict[str, Any]) -> Platform | None:
    """The platform an image config names (None when it names no architecture)."""
    if not config.get("architecture"):
        return None
    return platforms.Platform(
        os=str(config.get("os") or "linux"),
        architecture=str(config["architecture"]),
        variant=config.get("variant") or None,
    )


@dataclass
class _Node:
    kind: str  # "dir", "file", "symlink", "other"
    link: str = ""
    data: bytes | None = None


_SMALL_FILES = frozenset({"etc/passwd", "etc/group"})


class ImageTree:
    """Paths of an image from its layers' headers, plus a few small files.

    Built once per layer list; whiteouts are applied, so it describes the
    filesystem the layers make together.
    """

    _cache: dict[tuple[str, ...], ImageTree] = {}  # noqa: RUF012 - process-wide memo
    _lock = threading.Lock()

    def __init__(self, nodes: dict[str, _Node]) -> None:
        self._nodes = nodes

    @classmethod
    def of(cls, store: Store, layers: list[LayerRef]) -> ImageTree:
        key = tuple(layer.digest for layer in layers)
        with cls._lock:
            known = cls._cache.get(key)
        if known is not None:
            return known
        parent = cls.of(store, layers[:-1]) if layers else None
        nodes = parent.nodes() if parent is not None else {}
        if layers:
            _apply_ops(nodes, _layer_ops(store, layers[-1].digest))
        tree = cls(nodes)
        with cls._lock:
            cls._cache[key] = tree
        return tree

    @classmethod
    def record(
        cls,
        store: Store,
        layers: list[LayerRef],
        parent: ImageTree,
        entries: Iterable[Entry],
    ) -> ImageTree:
        """Remember the tree of ``layers`` = ``parent`` plus a layer just written.

        A step that wrote the layer knows its entries; recording them (in memory
        and in the store) spares every later step, in this build or the next,
        from decompressing that layer only to read its headers.
        """
        ops = [_op_of(entry) for entry in entries]
        _save_ops(store, layers[-1].digest, ops)
        nodes = parent.nodes()
        _apply_ops(nodes, ops)
        tree = cls(nodes)
        with cls._lock:
            cls._cache[tuple(layer.digest for layer in layers)] = tree
        return tree

    def nodes(self) -> dict[str, _Node]:
        return dict(self._nodes)

    def _resolve(self, path: str, depth: int = 0) -> str | None:
        parts = [p for p in path.split("/") if p and p != "."]
        current: list[str] = []
        for part in parts:
            if part == "..":
                if current:
                    current.pop()
                continue
            current.append(part)
            node = self._nodes.get("/".join(current))
            if node is not None and node.kind == "symlink" and depth < 40:
                target = node.link
                base = "" if target.startswith("/") else "/".join(current[:-1])
                resolved = self._resolve(f"{base}/{target}", depth + 1)
                if resolved is None:
                    return None
                current = [p for p in resolved.split("/") if p]
        return "/".join(current)

    def real_path(self, path: str) -> str:
        """``path`` with the image's symbolic links resolved, as an absolute path.

        A COPY into ``/lib/x`` where ``/lib`` links to ``usr/lib`` must write
        ``/usr/lib/x``: a layer entry for ``lib/x`` would replace the link by a
        directory. A COPY onto a link to a file writes the file the link names
        and keeps the link, as BuildKit does.
        """
        trailing = path.endswith("/")
        resolved = self._resolve(path)
        if resolved is None:  # a cycle of links: leave the path to the unpacker
            return path
        full = "/" + resolved
        return full + "/" if trailing and full != "/" else full

    def is_dir(self, path: str) -> bool:
        resolved = self._resolve(path)
        if resolved is None:
            return False
        if resolved == "":
            return True
        node = self._nodes.get(resolved)
        return node is not None and node.kind == "dir"

    def exists(self, path: str) -> bool:
        resolved = self._resolve(path)
        return resolved == "" or (resolved is not None and resolved in self._nodes)

    def mode_of(self, path: str) -> tuple[int, int, int] | None:
        """``(mode, uid, gid)`` of a directory in the image, if recorded."""
        node = self._nodes.get(path.strip("/"))
        if node is None or node.data is None or node.kind != "dir":
            return None
        mode, uid, gid = json.loads(node.data)
        return int(mode), int(uid), int(gid)

    def read_small(self, path: str) -> str | None:
        node = self._nodes.get(path.strip("/"))
        if node is None or node.data is None or node.kind != "file":
            return None
        return node.data.decode("utf-8", "replace")


# A layer's effect on the tree, as plain JSON-able rows, kept per layer in the
# store (platforge/trees/<hex>.json): [name, kind, link, data] where kind is
# dir (data "mode uid gid"), file (data: base64 of a small file, or ""),
# symlink, hardlink (link: the layer path it names), other, or wh (a whiteout
# or opaque marker, name as written in the layer).
_Op = list[str]


def _op_of(entry: Entry) -> _Op:
    if entry.type is EntryType.DIRECTORY:
        return [entry.path, "dir", "", f"{entry.mode} {entry.uid} {entry.gid}"]
    if entry.type is EntryType.SYMLINK:
        return [entry.path, "symlink", entry.linkname, ""]
    if entry.type is EntryType.HARDLINK:
        return [entry.path, "hardlink", entry.linkname, ""]
    if entry.type is EntryType.FILE:
        if entry.path.rpartition("/")[2].startswith(".wh."):
            return [entry.path, "wh", "", ""]
        data = ""
        if entry.path in _SMALL_FILES:
            source = entry.source
            raw = (
                source
                if isinstance(source, bytes)
                else (source.read_bytes() if source is not None else b"")
            )
            data = base64.b64encode(raw).decode()
        return [entry.path, "file", "", data]
    return [entry.path, "other", "", ""]


def _ops_path(store: Store, digest: str) -> Path:
    return store.own / "trees" / f"{digest.partition(':')[2]}.json"


def _save_ops(store: Store, digest: str, ops: list[_Op]) -> None:
    path = _ops_path(store, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(ops, separators=(",", ":")).encode())


def _layer_ops(store: Store, digest: str) -> list[_Op]:
    path = _ops_path(store, digest)
    try:
        ops: list[_Op] = json.loads(path.read_bytes())
    except (OSError, ValueError):
        ops = _ops_from_tar(store, digest)
        _save_ops(store, digest, ops)
    return ops


def _ops_from_tar(store: Store, digest: str) -> list[_Op]:
    from platforge.oci import compression  # noqa: PLC0415 - heavy codecs, lazily

    ops: list[_Op] = []
    with store.open_blob(digest) as raw:
        stream = compression.open_reader(raw)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                name = _clean(member.name)
                if not name:
                    continue
                if name.rpartition("/")[2].startswith(".wh."):
                    ops.append([name, "wh", "", ""])
                elif member.isdir():
                    mode = f"{member.mode} {member.uid} {member.gid}"
                    ops.append([name, "dir", "", mode])
                elif member.issym():
                    ops.append([name, "symlink", member.linkname, ""])
                elif member.islnk():
                    ops.append([name, "hardlink", _clean(member.linkname), ""])
                elif member.isfile():
                    data = ""
                    if name in _SMALL_FILES:
                        extracted = tar.extractfile(member)
                        content = extracted.read() if extracted is not None else b""
                        data = base64.b64encode(content).decode()
                    ops.append([name, "file", "", data])
                else:
                    ops.append([name, "other", "", ""])
    return ops


def _apply_ops(nodes: dict[str, _Node], ops: list[_Op]) -> None:
    for name, kind, link, data in ops:
        if kind == "wh":
            parent, _, base = name.rpartition("/")
            _whiteout(nodes, parent, base)
        elif kind == "dir":
            mode, uid, gid = (int(x) for x in data.split())
            nodes[name] = _Node("dir", data=json.dumps([mode, uid, gid]).encode())
        elif kind == "symlink":
            nodes[name] = _Node("symlink", link=link)
        elif kind == "hardlink":
            nodes[name] = nodes.get(link) or _Node("file")
        elif kind == "file":
            nodes[name] = _Node("file", data=base64.b64decode(data) if data else None)
        else:
            nodes[name] = _Node("other")


def _clean(name: str) -> str:
    while name.startswith(("./", "/")):
        name = name[1:] if name.startswith("/") else name[2:]
    return "" if name == "." else name.rstrip("/")


def _whiteout(nodes: dict[str, _Node], parent: str, base: str) -> None:
    if base == ".wh..wh..opq":
        victim, keep = parent, True
    else:
        victim, keep = (f"{parent}/{base[4:]}" if parent else base[4:]), False
    prefix = victim + "/" if victim else ""
    for key in [k for k in nodes if k.startswith(prefix) or (k == victim and not keep)]:
        del nodes[key]
