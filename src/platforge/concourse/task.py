"""``platforge task build``: oci-build-task's parameters, platforge's builder.

A task written for ``oci-build-task`` runs unchanged: its ``params`` reach the task as
environment variables, read here with upstream's names and defaults:

======================  ===========================================================
``CONTEXT``             build context directory (default ``.``)
``DOCKERFILE``          Dockerfile path (default ``$CONTEXT/Dockerfile``)
``TARGET``              stage to build; ``TARGET_FILE`` reads it from a file
``ADDITIONAL_TARGETS``  comma-separated stages also built, each into the output
                        directory of its own name (``<target>/image.tar``) when the
                        task declares that output
``BUILD_ARG_<name>``    build args; ``BUILD_ARGS_FILE``: ``k=v`` lines, or YAML/JSON
                        (values as written); the file wins over ``BUILD_ARG_*``
``LABEL_<name>``        labels; ``LABELS_FILE``: the same forms and precedence
``IMAGE_PLATFORM``      comma-separated platforms (default: this worker's)
``OUTPUT_OCI``          write the OCI layout ``image/image/`` instead of
                        ``image/image.tar``; implied by several platforms
``UNPACK_ROOTFS``       also write ``image/rootfs/`` and ``image/metadata.json``
``IMAGE_ARG_<name>``    an image tarball or OCI layout loaded before the build; the
                        build arg ``<name>`` names it, for ``FROM ${name}``
``BUILDKIT_SECRET_<id>``      a file mounted by ``RUN --mount=type=secret,id=<id>``
``BUILDKIT_SECRETTEXT_<id>``  the same, from the literal value
``REGISTRY_MIRRORS``    comma-separated mirrors for Docker Hub
``BUILDKIT_ADD_HOSTS``  ``host=ip,host2=ip2`` extra ``/etc/hosts`` lines for RUN
``DEBUG``               log everything
======================  ===========================================================

Outputs land where oci-build-task puts them, under the task's working directory:
``image/image.tar`` (a docker archive, which ``docker load`` and ``out`` accept) and
``image/digest`` (the config digest, what ``docker tag $(cat image/digest)`` needs);
with ``OUTPUT_OCI``, ``image/image/`` (an OCI layout whose ``index.json`` holds one
descriptor annotated ``latest``) and ``image/digest`` (the digest a push reports).
A ``cache/`` directory, when the task caches it, holds platforge's store (pulled base
layers and the step cache), so the next run reuses them.

Differences: ``BUILDKIT_SSH`` is refused (no SSH agent forwarding), and additional
targets without an output directory are not built at all. Booleans take what Go's
``strconv.ParseBool`` takes (``true``, ``1``, ``false``, ``0``…). Other environment
variables are ignored, as upstream, except a near miss of a parameter's name
(``OUTPUT_OCX``), which fails naming both; ``BUILDKIT_EXTRA_CONFIG`` is ignored with
a warning (there is no buildkitd). A malformed value fails with a line naming it.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from platforge import platforms
from platforge.concourse.protocol import debug_logging
from platforge.errors import ConcourseError, NotFoundError, PlatformError
from platforge.oci.content import Manifest
from platforge.oci.layout import Layout, write_atomic

if TYPE_CHECKING:
    from collections.abc import Callable

    from platforge.build import BuildEvent
    from platforge.platforms import Platform

__all__ = ["TaskConfig", "parse_env", "run_task"]

log = logging.getLogger("platforge.concourse.task")

_BARE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False", ""}

_PLAIN = frozenset(
    {
        "CONTEXT",
        "DOCKERFILE",
        "TARGET",
        "TARGET_FILE",
        "ADDITIONAL_TARGETS",
        "BUILD_ARGS_FILE",
        "LABELS_FILE",
        "IMAGE_PLATFORM",
        "OUTPUT_OCI",
        "UNPACK_ROOTFS",
        "REGISTRY_MIRRORS",
        "BUILDKIT_ADD_HOSTS",
        "DEBUG",
    }
)
_PREFIXED = (
    "BUILD_ARG_",
    "LABEL_",
    "IMAGE_ARG_",
    "BUILDKIT_SECRET_",
    "BUILDKIT_SECRETTEXT_",
)
# Upstream parameters platforge reads but cannot honour: named in a warning.
_IGNORED = {
    "BUILDKIT_EXTRA_CONFIG": "platforge runs no buildkitd to configure; give "
    "mirrors with REGISTRY_MIRRORS",
}
# How alike a name must be to a parameter to be taken for its misspelling.
_NEAR = 0.85


@dataclass
class TaskConfig:
    """The task's parameters, validated."""

    context: Path
    dockerfile: Path
    target: str | None = None
    additional_targets: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    platforms: list[Platform] = field(default_factory=list)
    output_oci: bool = False
    unpack_rootfs: bool = False
    image_args: dict[str, Path] = field(default_factory=dict)
    secret_files: dict[str, Path] = field(default_factory=dict)
    secret_texts: dict[str, str] = field(default_factory=dict, repr=False)
    registry_mirrors: list[str] = field(default_factory=list)
    add_hosts: list[tuple[str, str]] = field(default_factory=list)
    debug: bool = False


def _bool(env: dict[str, str], name: str) -> bool:
    value = env.get(name, "")
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConcourseError(
        f"task parameter {name}={value!r} is not a boolean; use true or false"
    )


def _pairs_file(path: Path, name: str, env: dict[str, str]) -> dict[str, str]:
    """``k=v`` lines, or a YAML/JSON mapping whose values are taken as written.

    In the line form, blank and ``#`` lines are skipped and a bare ``NAME`` takes
    its value from the environment, as ``docker build --build-arg NAME`` does (left
    out when unset), so a file oci-build-task reads never fails here.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConcourseError(
            f"task parameter {name}: cannot read {path}: {exc.strerror}"
        ) from exc
    lines = [
        line
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assignments = [
        line for line in lines if "=" in line and ": " not in line.split("=")[0]
    ]
    if assignments and all(
        line in assignments or _BARE_NAME.fullmatch(line.strip()) for line in lines
    ):
        pairs: dict[str, str] = {}
        for line in lines:
            key, sep, value = line.partition("=")
            if sep:
                pairs[key.strip()] = value
            elif (from_env := env.get(key.strip())) is not None:
                pairs[key.strip()] = from_env
        return pairs
    try:
        # BaseLoader: every value a string as written (1.10, true, 010), not
        # PyYAML's YAML 1.1 reading of it (1.1, True, 8).
        data = yaml.load(text, Loader=yaml.BaseLoader) if text.strip() else {}  # noqa: S506 - BaseLoader builds only str, list and dict
    except yaml.YAMLError as exc:
        raise ConcourseError(
            f"task parameter {name}: {path} is neither k=v lines nor YAML ({exc})"
        ) from None
    if not isinstance(data, dict):
        raise ConcourseError(
            f"task parameter {name}: {path} must hold k=v lines or a mapping"
        )
    if not all(isinstance(v, str) for v in data.values()):
        raise ConcourseError(
            f"task parameter {name}: {path} must map names to single values"
        )
    return {str(k): v for k, v in data.items()}


def _check_names(env: dict[str, str]) -> None:
    for name in sorted(env):
        if name in _PLAIN or any(
            name.startswith(prefix) and len(name) > len(prefix) for prefix in _PREFIXED
        ):
            continue
        if name == "BUILDKIT_SSH":
            raise ConcourseError(
                "task parameter BUILDKIT_SSH is not supported by platforge (no SSH "
                "agent forwarding into RUN); use BUILDKIT_SECRET_<id> for keys"
            )
        if name in _IGNORED:
            log.warning("task parameter %s is ignored: %s", name, _IGNORED[name])
            continue
        # Every other name is environment (the task image's ENV, params a script
        # reads), which upstream ignores; only a near miss of a parameter fails.
        if meant := _misspelt(name):
            raise ConcourseError(
                f"unknown task parameter {name}; did you mean {meant}? Check its "
                "spelling against the oci-build-task parameters"
            )


def _misspelt(name: str) -> str | None:
    """The parameter ``name`` looks like a misspelling of, if any."""
    close = difflib.get_close_matches(name, _PLAIN, n=1, cutoff=_NEAR)
    if close:
        return close[0]
    for prefix in _PREFIXED:
        head = name[: len(prefix) + 1]
        if difflib.SequenceMatcher(None, head, prefix).ratio() >= _NEAR + 0.05:
            return f"{prefix}<name>"
    return None


def _locations(env: dict[str, str], cwd: Path) -> tuple[Path, Path]:
    context = cwd / (env.get("CONTEXT") or ".")
    if not context.is_dir():
        raise ConcourseError(
            f"task parameter CONTEXT={env.get('CONTEXT', '.')!r}: {context} is not a "
            "directory"
        )
    dockerfile = context / "Dockerfile"
    if env.get("DOCKERFILE"):
        dockerfile = cwd / env["DOCKERFILE"]
    if not dockerfile.is_file():
        raise ConcourseError(
            f"task parameter DOCKERFILE: {dockerfile} does not exist; set DOCKERFILE "
            "or CONTEXT"
        )
    return context, dockerfile


def _target(env: dict[str, str], cwd: Path) -> str | None:
    if not env.get("TARGET_FILE"):
        return env.get("TARGET") or None
    path = cwd / env["TARGET_FILE"]
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        raise ConcourseError(
            f"task parameter TARGET_FILE: cannot read {path}: {exc.strerror}"
        ) from exc


def _existing(cwd: Path, name: str, value: str, *, file: bool) -> Path:
    path = cwd / value
    if not (path.is_file() if file else path.exists()):
        what = "a file" if file else "an image tarball or an OCI layout"
        raise ConcourseError(
            f"task parameter {name}: {path} does not exist; point it at {what}"
        )
    return path


def _prefixed(env: dict[str, str], cwd: Path, config: TaskConfig) -> None:
    for name, value in sorted(env.items()):
        if name.startswith("BUILD_ARG_"):
            config.build_args[name.removeprefix("BUILD_ARG_")] = value
        elif name.startswith("LABEL_"):
            config.labels[name.removeprefix("LABEL_")] = value
        elif name.startswith("IMAGE_ARG_"):
            key = name.removeprefix("IMAGE_ARG_")
            config.image_args[key] = _existing(cwd, name, value, file=False)
        elif name.startswith("BUILDKIT_SECRETTEXT_"):
            config.secret_texts[name.removeprefix("BUILDKIT_SECRETTEXT_")] = value
        elif name.startswith("BUILDKIT_SECRET_"):
            key = name.removeprefix("BUILDKIT_SECRET_")
            config.secret_files[key] = _existing(cwd, name, value, file=True)


def _hosts(env: dict[str, str]) -> list[tuple[str, str]]:
    hosts = []
    for item in env.get("BUILDKIT_ADD_HOSTS", "").split(","):
        if not item.strip():
            continue
        host, sep, address = item.strip().partition("=")
        if not sep or not host or not address:
            raise ConcourseError(
                f"task parameter BUILDKIT_ADD_HOSTS: {item.strip()!r} is not "
                "hostname=ip-address"
            )
        hosts.append((host, address))
    return hosts


def _list(env: dict[str, str], name: str) -> list[str]:
    return [item.strip() for item in env.get(name, "").split(",") if item.strip()]


def parse_env(env: dict[str, str], cwd: Path) -> TaskConfig:
    """Validate the task's environment into a :class:`TaskConfig`."""
    _check_names(env)
    context, dockerfile = _locations(env, cwd)
    config = TaskConfig(context=context, dockerfile=dockerfile)
    config.target = _target(env, cwd)
    config.additional_targets = _list(env, "ADDITIONAL_TARGETS")
    _prefixed(env, cwd, config)
    # The files come after BUILD_ARG_* / LABEL_* and win, as upstream (its file
    # lines are passed after them, and the last value of a name counts).
    if env.get("BUILD_ARGS_FILE"):
        path = cwd / env["BUILD_ARGS_FILE"]
        config.build_args.update(_pairs_file(path, "BUILD_ARGS_FILE", env))
    if env.get("LABELS_FILE"):
        path = cwd / env["LABELS_FILE"]
        config.labels.update(_pairs_file(path, "LABELS_FILE", env))
    if env.get("IMAGE_PLATFORM"):
        try:
            config.platforms = platforms.parse_list(env["IMAGE_PLATFORM"])
        except PlatformError as exc:
            raise ConcourseError(f"task parameter IMAGE_PLATFORM: {exc}") from exc
    config.output_oci = _bool(env, "OUTPUT_OCI") or len(config.platforms) > 1
    config.unpack_rootfs = _bool(env, "UNPACK_ROOTFS")
    config.debug = _bool(env, "DEBUG")
    config.registry_mirrors = _list(env, "REGISTRY_MIRRORS")
    config.add_hosts = _hosts(env)
    return config


def _image_arg_contexts(
    config: TaskConfig, stack: ExitStack
) -> tuple[dict[str, str], dict[str, str]]:
    """Build args and named contexts that make ``FROM ${name}`` use a local image."""
    from platforge.concourse.put import layout_from_tarball  # noqa: PLC0415

    args: dict[str, str] = {}
    contexts: dict[str, str] = {}
    for name, path in config.image_args.items():
        layout = path
        if path.is_file():
            temp = Path(tempfile.mkdtemp(prefix="platforge-image-arg-"))
            stack.callback(shutil.rmtree, temp, ignore_errors=True)
            layout = temp / "layout"
            layout_from_tarball(path, layout)
        context_name = f"image-arg/{name.lower().replace('_', '-')}"
        args[name] = context_name
        contexts[context_name] = f"oci-layout://{layout.resolve()}"
    return args, contexts


def _secrets(config: TaskConfig, stack: ExitStack) -> dict[str, Path]:
    secrets = dict(config.secret_files)
    if config.secret_texts:
        temp = Path(tempfile.mkdtemp(prefix="platforge-secrets-"))
        stack.callback(shutil.rmtree, temp, ignore_errors=True)
        for secret_id, text in config.secret_texts.items():
            path = temp / secret_id
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            secrets[secret_id] = path
    return secrets


def run_task(
    env: dict[str, str],
    outputs: Path,
    progress: Callable[[BuildEvent], None] | None = None,
) -> dict[str, Any]:
    """Build as oci-build-task would, writing under ``outputs``; return a summary."""
    from platforge.build import BuildRequest, Output, build  # noqa: PLC0415

    outputs = outputs.resolve()
    config = parse_env(env, Path.cwd())
    if config.debug:
        debug_logging()
    cache = outputs / "cache"

    with ExitStack() as stack:
        image_args, contexts = _image_arg_contexts(config, stack)
        secrets = _secrets(config, stack)
        scratch = Path(tempfile.mkdtemp(prefix="platforge-task-"))
        stack.callback(shutil.rmtree, scratch, ignore_errors=True)

        jobs: list[tuple[str | None, Path]] = [
            (target, outputs / target)
            for target in config.additional_targets
            if (outputs / target).is_dir()
        ]
        jobs.append((config.target, outputs / "image"))
        summary: dict[str, Any] = {}
        for target, out_dir in jobs:
            out_dir.mkdir(parents=True, exist_ok=True)
            layout = out_dir / "image" if config.output_oci else scratch / "layout"
            if layout.exists():
                shutil.rmtree(layout)
            wanted = [Output("oci", layout)]
            if not config.output_oci:
                wanted.append(Output("docker", out_dir / "image.tar"))
            request = BuildRequest(
                context=config.context,
                dockerfile=config.dockerfile,
                platforms=config.platforms,
                build_args={**config.build_args, **image_args},
                target=target,
                build_contexts=contexts,
                labels=config.labels,
                outputs=wanted,
                secrets=secrets,
                extra_hosts=config.add_hosts,
                store=cache if cache.is_dir() else None,
                registry_mirrors=config.registry_mirrors,
                progress=progress,
            )
            log.info("building %s", f"target {target}" if target else "image")
            result = build(request)
            digest = str(result.digest)
            if not config.output_oci:
                digest = _config_digest(layout)
            _write_text(out_dir / "digest", digest)
            if config.unpack_rootfs:
                _unpack(layout, out_dir)
            summary[target or "image"] = digest
    return summary


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, text.encode())


def _image_for_host(layout_dir: Path) -> tuple[Layout, Manifest]:
    """The layout's image manifest (of an index: the one for this worker)."""
    from platforge.registry.copy import layout_platform, layout_root  # noqa: PLC0415

    layout = Layout.open(layout_dir)
    root, raw = layout_root(layout)
    try:
        root, raw = layout_platform(
            layout, root, raw, platforms.host(), require_platform=False
        )
    except NotFoundError as exc:
        raise ConcourseError(
            f"UNPACK_ROOTFS: the image has no platform this worker "
            f"({platforms.host()}) runs; build for it or drop UNPACK_ROOTFS"
        ) from exc
    return layout, Manifest.parse(raw, root.media_type)


def _config_digest(layout_dir: Path) -> str:
    return str(_image_for_host(layout_dir)[1].config.digest)


def _unpack(layout_dir: Path, out_dir: Path) -> None:
    """``rootfs/`` and ``metadata.json`` (env, user) as oci-build-task writes them."""
    from platforge.oci.unpack import unpack_layers  # noqa: PLC0415

    layout, manifest = _image_for_host(layout_dir)
    config = layout.read_config(manifest.config)
    rootfs = out_dir / "rootfs"
    if rootfs.exists():
        shutil.rmtree(rootfs)
    rootfs.mkdir()
    with ExitStack() as stack:
        layers = [
            stack.enter_context(layout.blob_path(layer.digest).open("rb"))
            for layer in manifest.layers
        ]
        unpack_layers(layers, rootfs)
    run = config.config
    _write_text(
        out_dir / "metadata.json",
        json.dumps({"env": run.env, "user": run.user or ""}),
    )
