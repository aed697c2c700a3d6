"""RUN steps: a command in the sandbox, its changes as a layer.

The image's layers, unpacked once each (:mod:`.filesystem`), are the lower
directories; the sandbox (:mod:`.sandbox`) runs the command over them and leaves
the changes in an empty upper directory, which becomes the layer
(:func:`.snapshot.write_upper_layer`). A RUN that changes nothing adds a history
entry marked ``empty_layer`` and no layer.

What the command sees follows Docker: shell form runs through the stage's SHELL
(``/bin/sh -c``); a RUN that is only ``<<EOF`` runs the here-document as the
shell's script, otherwise the command line reads it (``RUN python3 <<EOF``);
the environment is the image's ENV plus the build args in scope (an ENV of the
same name wins), USER and WORKDIR apply. ``--network=none`` cuts the network,
the default shares the host's (there is no per-build network). ``--mount``
supports:

* ``type=cache,target=DIR[,id=ID]`` — a directory kept in the store between
  builds, per id (default: the target), per platform;
* ``type=bind,target=DIR[,source=PATH][,from=STAGE|IMAGE|CONTEXT][,rw]`` —
  read-only unless ``rw`` (whose writes are discarded);
* ``type=tmpfs,target=DIR[,size=BYTES]``;
* ``type=secret,id=ID[,target=PATH][,env=NAME][,required]`` — a file from
  ``--secret``, by default at ``/run/secrets/ID``, or with ``env=`` alone only
  the variable NAME holding its content; never part of the cache key or the
  layer.

Options a mount type does not take are refused, as BuildKit refuses them.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from platforge import platforms
from platforge.build import filesystem, sandbox
from platforge.build.snapshot import write_upper_layer
from platforge.build.steps import shell_of
from platforge.errors import BuildError, StepError

if TYPE_CHECKING:
    from platforge.build.builder import BuildSession
    from platforge.build.image import ImageState
    from platforge.dockerfile.plan import Plan, Stage, Step

__all__ = ["command_of", "content_key", "execute", "parse_mount"]

log = logging.getLogger("platforge.build.run_step")


_TARGET_KEYS = frozenset({"type", "target", "dst", "destination"})
# The options BuildKit's Dockerfile frontend accepts per mount type; a key it
# would refuse is refused here too rather than silently ignored.
_MOUNT_KEYS = {
    "bind": _TARGET_KEYS
    | {"source", "src", "from", "rw", "readwrite", "readonly", "ro"},
    "cache": _TARGET_KEYS
    | {"id", "sharing", "from", "source", "src", "mode", "uid", "gid", "ro"}
    | {"readonly"},
    "tmpfs": _TARGET_KEYS | {"size"},
    "secret": _TARGET_KEYS | {"id", "required", "mode", "uid", "gid", "env"},
}


def _mount_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        fields[key.strip().lower()] = value.strip() if sep else "true"
    allowed = _MOUNT_KEYS.get(fields.get("type", "bind"))
    unknown = sorted(set(fields) - allowed) if allowed is not None else []
    if unknown:
        raise BuildError(
            f"RUN --mount={text}: unknown option {unknown[0]!r} for type "
            f"{fields.get('type', 'bind')}; remove it"
        )
    return fields


def command_of(state: ImageState, step: Step) -> list[str]:
    """The argv of a RUN: exec form as is, shell form and heredocs via SHELL."""
    if step.instruction.json_form:
        return list(step.args)
    text = " ".join(step.args)
    if step.heredocs and _only_heredocs(text, step):
        # "RUN <<EOF" alone runs the here-document as the shell's script.
        return [*shell_of(state), step.heredocs[0].content]
    if step.heredocs:
        # "RUN cat <<EOF > f": the shell reads the here-documents itself, so it
        # gets them back after the command line, each closed by its delimiter.
        bodies = "".join(f"{doc.content}{doc.name}\n" for doc in step.heredocs)
        text = f"{text}\n{bodies}"
    return [*shell_of(state), text]


def _only_heredocs(text: str, step: Step) -> bool:
    """Whether a RUN line is nothing but here-document markers (``<<EOF``)."""
    markers = {
        f"<<{dash}{quote}{doc.name}{quote}"
        for doc in step.heredocs
        for dash in ("", "-")
        for quote in ("", "'", '"')
    }
    return all(word in markers for word in text.split())


def _env(state: ImageState, step: Step) -> list[str]:
    env = state.env()
    merged = {k: v for k, v in step.build_args.items() if k not in env}
    merged.update(env)
    return [f"{k}={v}" for k, v in merged.items()]


def content_key(build: BuildSession, plan: Plan, stage: Stage, step: Step) -> str:
    """What a RUN reads besides its parent: the content of its bind mounts
    (from the context, a named context, another stage or an image)."""
    digest = hashlib.sha256()
    for text in step.flag_lists.get("mount", []):
        fields = _mount_fields(text)
        if fields.get("type", "bind") != "bind":
            continue
        source = fields.get("source") or fields.get("src") or "."
        tree = build.context_tree()
        if fields.get("from"):
            tree = build.source_named(plan, stage, fields["from"])
        items = tree.select([source], "/mnt/", instruction="RUN --mount")
        digest.update(f"{text}\0{build.hasher.items_digest(items)}\n".encode())
    return digest.hexdigest()


def _private_copy(path: Path, scratch: Path) -> Path:
    """A copy of ``path`` with owners, modes, links and special files kept.

    cp -a keeps what shutil's copies drop (owners, hard links, FIFOs) and
    shares blocks where the filesystem can (reflinks). Limitation: it is a
    full copy per RUN, not a copy-on-write view.
    """
    copy = Path(tempfile.mkdtemp(prefix="bind-", dir=scratch)) / (path.name or "root")
    ran = subprocess.run(
        ["cp", "-a", "--reflink=auto", "--", str(path), str(copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    if ran.returncode != 0:
        reason = (ran.stderr.strip().splitlines() or ["no message"])[-1]
        raise BuildError(
            f"RUN --mount=...,rw: cannot copy the mount's source ({reason[:200]}); "
            "free space in the store"
        )
    return copy


def parse_mount(
    build: BuildSession, plan: Plan, stage: Stage, text: str, *, scratch: Path
) -> sandbox.Mount | None:
    """One ``--mount`` value as a sandbox mount (``rw`` copies live in scratch)."""
    fields = _mount_fields(text)
    kind = fields.get("type", "bind")
    target = fields.get("target") or fields.get("dst") or fields.get("destination")
    if kind == "secret":
        return _secret_mount(build, fields, target)  # None: env= alone
    if not target:
        raise BuildError(f"RUN --mount={text}: needs target=PATH")
    if kind == "cache":
        ident = fields.get("id") or target
        name = hashlib.sha256(
            f"{ident}\0{platforms.format(stage.platform)}".encode()
        ).hexdigest()[:32]
        directory = build.store.own / "run-cache" / name
        directory.mkdir(parents=True, exist_ok=True)
        return sandbox.Mount("cache", target, directory)
    if kind == "tmpfs":
        options = (f"size={fields['size']}",) if "size" in fields else ()
        return sandbox.Mount("tmpfs", target, None, options=options)
    if kind == "bind":
        source_word = fields.get("source") or fields.get("src") or "."
        from_name = fields.get("from")
        tree = build.context_tree()
        if from_name:
            tree = build.source_named(plan, stage, from_name)
        # Resolved with the tree as "/": a link in a stage or image never leads
        # the host's kernel to a host path.
        path = tree.host_path(source_word, instruction="RUN --mount")
        readonly = fields.get("rw", fields.get("readwrite", "false")) != "true"
        if not readonly:
            # Writes are discarded: they go to a private copy, never to the
            # context or to a stage's cached filesystem that other builds share.
            path = _private_copy(path, scratch)
        return sandbox.Mount("bind", target, path, readonly=readonly)
    raise BuildError(
        f"RUN --mount={text}: type {kind!r} is not supported; "
        "use bind, cache, tmpfs or secret"
    )


def _secret_source(fields: dict[str, str], target: str | None) -> str:
    return fields.get("id") or (PurePosixPath(target).name if target else "")


def _secret_file(build: BuildSession, ident: str, *, required: bool) -> Path | None:
    source = build.request.secrets.get(ident)
    if source is None:
        if required:
            raise BuildError(
                f"RUN --mount=type=secret,id={ident}: no such secret; pass "
                f"--secret id={ident},src=FILE"
            )
        return None
    if not Path(source).is_file():
        raise BuildError(
            f"secret {ident}: {source} is not a file; pass --secret "
            f"id={ident},src=FILE with a file that exists"
        )
    # The runtime resolves a relative mount source against its bundle directory,
    # not against where the user named the file.
    return Path(source).absolute()


def _secret_mount(
    build: BuildSession, fields: dict[str, str], target: str | None
) -> sandbox.Mount | None:
    ident = _secret_source(fields, target)
    required = fields.get("required", "false") == "true"
    source = _secret_file(build, ident, required=required)
    if fields.get("env") and not target:
        return None  # only the variable, as BuildKit does for env= alone
    return sandbox.Mount(
        "secret",
        target or f"/run/secrets/{ident}",
        source or Path("/dev/null"),
        readonly=True,
    )


def _secret_env(build: BuildSession, step: Step) -> list[str]:
    """``NAME=value`` for each secret mount with ``env=NAME`` (never cached)."""
    found = []
    for text in step.flag_lists.get("mount", []):
        fields = _mount_fields(text)
        if fields.get("type") != "secret" or not fields.get("env"):
            continue
        target = fields.get("target") or fields.get("dst") or fields.get("destination")
        ident = _secret_source(fields, target)
        required = fields.get("required", "false") == "true"
        source = _secret_file(build, ident, required=required)
        if source is not None:
            value = source.read_text(encoding="utf-8", errors="surrogateescape")
            found.append(f"{fields['env']}={value}")
    return found


def execute(
    build: BuildSession,
    *,
    plan: Plan,
    stage: Stage,
    state: ImageState,
    step: Step,
    number: int,
) -> ImageState:
    """Run ``step`` over ``state`` and return the state with its layer."""
    platform = platforms.format(stage.platform)
    lowers = filesystem.lowerdirs(build.store, state.layers)
    argv = command_of(state, step)
    network: sandbox.Network = "none" if step.flags.get("network") == "none" else "host"
    started = time.monotonic()

    # The sandbox hands output over as it is read, not by lines: keep a partial
    # last line until its newline arrives, so each line is one log event.
    pending = bytearray()

    def show(data: bytes) -> None:
        pending.extend(data)
        *lines, rest = bytes(pending).split(b"\n")
        pending[:] = rest
        for line in lines:
            text = line.rstrip(b"\r").decode("utf-8", "replace")
            build.emit("log", text, platform=platform, step=number)

    def flush() -> None:
        if pending:
            build.emit(
                "log",
                pending.decode("utf-8", "replace"),
                platform=platform,
                step=number,
            )
            pending.clear()

    with (
        build.store.scratch_dir("upper-") as upper,
        build.store.scratch_dir("mounts-") as scratch,
    ):
        mounts = [
            mount
            for text in step.flag_lists.get("mount", [])
            if (mount := parse_mount(build, plan, stage, text, scratch=scratch))
        ]
        upper.chmod(0o755)  # the upper directory's mode is the mode of "/"
        spec = sandbox.RunSpec(
            lowerdirs=lowers,
            upperdir=upper,
            args=argv,
            env=_env(state, step) + _secret_env(build, step),
            cwd=str(state.run_config.get("WorkingDir") or "/"),
            user=str(state.run_config.get("User") or ""),
            platform=stage.platform,
            network=network,
            mounts=mounts,
            extra_hosts=build.request.extra_hosts,
            output=show,
        )
        try:
            result = sandbox.run(spec)
        finally:
            flush()
        if result.exit_code != 0:
            tail = result.output_tail.decode("utf-8", "replace").strip()
            last = tail.splitlines()[-1] if tail else "no output"
            raise StepError(
                f"RUN {' '.join(step.args)[:80]!r} on {platform} exited with status "
                f"{result.exit_code} (last output: {last[:200]}); fix the command"
            )
        new = state.clone()
        empty = not any(upper.iterdir())
        if not empty:
            new.add_layer(write_upper_layer(build.store, upper, options=build.options))
    prefix = ""
    if step.build_args:
        pairs = " ".join(f"{k}={v}" for k, v in sorted(step.build_args.items()))
        prefix = f"|{len(step.build_args)} {pairs} "
    created_by = f"RUN {prefix}{' '.join(argv)} # platforge"
    new.add_history(created_by, build.created(), empty_layer=empty)
    log.debug(
        "RUN on %s took %.3fs in mode %s",
        platform,
        time.monotonic() - started,
        result.mode,
    )
    return new
