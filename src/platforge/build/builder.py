"""The build: every platform of a Dockerfile into one image index.

``run_build(request)`` is what :func:`platforge.build.build` calls:

1. parse the Dockerfile once and resolve a plan per platform
   (:mod:`platforge.dockerfile.plan`); stages whose key is the same on every
   platform are built once and shared;
2. build the platforms in parallel threads, each stage step by step: metadata
   steps edit the config (:mod:`.steps`), COPY/ADD write a layer straight from
   their sources (:mod:`.copy_step`), RUN runs in the sandbox (:mod:`.run_step`);
3. before running a step, look its cache key up in the store: the key hashes the
   state before the step (config and layers), the expanded instruction, its
   environment and build args, and the content of every file it reads; a hit
   reuses the recorded state, so a rebuild of an unchanged context runs no step;
4. write configs, manifests and the index into the store (:mod:`.output`), then
   each output: layout, archives, pushes, and the ``digest`` file.

Only RUN needs a sandbox or an unpacked filesystem (and ``COPY --from``, which
reads another stage's files); a Dockerfile of metadata steps and COPY/ADD from
the context builds with no privilege for any platform.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from platforge import platforms
from platforge.build import output
from platforge.build.base import BaseResolver
from platforge.build.chown import resolve_owner
from platforge.build.context import FileHasher, SourceTree, join_dest
from platforge.build.copy_step import UrlFetcher, plan_copy, write_copy
from platforge.build.image import ImageState, ImageTree, empty_state
from platforge.build.request import BuildEvent, BuildRequest, BuildResult
from platforge.build.snapshot import LayerOptions, copy_entries, write_entries
from platforge.build.steps import METADATA_KEYWORDS, apply_metadata
from platforge.build.store import Store, default_store_path
from platforge.dockerfile import dockerignore, parser, shell
from platforge.dockerfile import plan as planner
from platforge.errors import BuildError, DockerfileError, PlatforgeError
from platforge.oci import compression as codec
from platforge.oci.layer import Entry
from platforge.registry.copy import Registries

if TYPE_CHECKING:
    from platforge.build.request import EventKind
    from platforge.dockerfile.plan import FromRef, Plan, Stage, Step
    from platforge.platforms import Platform

__all__ = ["BuildSession", "run_build"]

log = logging.getLogger("platforge.build.builder")

# Keys of the cache records change when this does: bump it when a step's result
# for the same inputs changes (new history text, new layer rules).
_CACHE_VERSION = "2"


def _epoch(request: BuildRequest) -> int | None:
    text = request.build_args.get("SOURCE_DATE_EPOCH") or os.environ.get(
        "SOURCE_DATE_EPOCH"
    )
    if not text:
        return None
    if not text.isdigit():
        raise BuildError(
            f"SOURCE_DATE_EPOCH={text!r} is not a number of seconds; "
            "set it to e.g. $(git log -1 --format=%ct)"
        )
    return int(text)


class BuildSession:
    """One build in progress: shared by the threads of its platforms."""

    def __init__(self, request: BuildRequest) -> None:
        self.request = request
        self.store = Store(request.store or default_store_path())
        self.epoch = _epoch(request)
        self.options = LayerOptions(
            codec.Compression.ZSTD
            if request.compression == "zstd"
            else codec.Compression.GZIP,
            self.epoch,
        )
        # One client per registry for the whole build: pulls and pushes share
        # connections, tokens and the TLS set-up.
        self.registries = Registries(
            insecure=frozenset(request.insecure_registries),
            ca_file=str(request.ca_file) if request.ca_file else None,
        )
        self.bases = BaseResolver(
            self.store, self.registries, registry_mirrors=request.registry_mirrors
        )
        self.hasher = FileHasher(self.store.own / "file-hashes.json")
        self.urls = UrlFetcher(self.store.tmp / f"urls-{os.getpid()}")
        self._lock = threading.Lock()
        self._stages: dict[str, Future[ImageState]] = {}
        self._context_tree: SourceTree | None = None
        self._cancelled = threading.Event()
        self.dockerfile_name = "Dockerfile"  # as error messages name it
        self.stage_names: list[str] = []
        self.steps_run = 0
        self.steps_cached = 0

    # -- events ----------------------------------------------------------------

    def emit(
        self,
        kind: EventKind,
        message: str,
        *,
        platform: str | None = None,
        stage: str | None = None,
        step: int | None = None,
        seconds: float | None = None,
    ) -> None:
        log.debug("%s %s %s", kind, platform or "", message)
        if self.request.progress is not None:
            self.request.progress(
                BuildEvent(kind, message, platform, stage, step, seconds)
            )

    # -- inputs ------------------------------------------------------------------

    def dockerfile_path(self) -> Path:
        if self.request.dockerfile is not None:
            return self.request.dockerfile
        return self.request.context / "Dockerfile"

    def context_tree(self) -> SourceTree:
        with self._lock:
            if self._context_tree is None:
                ignore = dockerignore.load(self.request.context, self.dockerfile_path())
                leftovers = self._earlier_default_outputs()
                shown = [
                    rel
                    for rel in sorted(leftovers)
                    if ignore is None or not ignore.excluded(rel, is_dir=rel == "image")
                ]
                if shown:
                    log.info(
                        "leaving %s out of the build context: an earlier build's "
                        "default output (add them to .dockerignore to silence this)",
                        " and ".join(f"./{rel}" for rel in shown),
                    )
                self._context_tree = SourceTree(
                    self.request.context,
                    ignore,
                    hidden=self._outputs_inside_context() | leftovers,
                )
            return self._context_tree

    def _earlier_default_outputs(self) -> frozenset[str]:
        """``image`` and ``digest`` in the context when an earlier build wrote them.

        Without ``--output`` a build writes an OCI layout to ``./image`` and its
        digest to ``./digest``; a later build run from there (to push, say) must
        not take them in with ``COPY .``. Only platforge's own are left out: a
        directory holding an OCI layout, a file holding one digest line.
        """
        context = self.request.context.resolve()
        found = set()
        for base in {Path.cwd().resolve(), context}:
            if not (base == context or base.is_relative_to(context)):
                continue
            layout_dir, digest_file = base / "image", base / "digest"
            if (layout_dir / "oci-layout").is_file() and not layout_dir.is_symlink():
                found.add(layout_dir.relative_to(context).as_posix())
            if output.holds_digest(digest_file):
                found.add(digest_file.relative_to(context).as_posix())
        return frozenset(found)

    def _outputs_inside_context(self) -> frozenset[str]:
        """Outputs (and their digest files) in the context, as relative paths.

        A build run from its context writes ``./image`` and ``./digest`` there;
        reading them back as context would put each image into the next one.
        """
        context = self.request.context.resolve()
        inside = set()
        for out in self.request.outputs:
            if out.dest is None:
                continue
            for path in (out.dest, output.digest_file_of(out.dest)):
                resolved = path.resolve()
                if resolved.is_relative_to(context) and resolved != context:
                    inside.add(resolved.relative_to(context).as_posix())
        return frozenset(inside)

    # -- stages ------------------------------------------------------------------

    def stage(self, plan: Plan, stage: Stage) -> ImageState:
        """The state at the end of ``stage``, built once per stage key."""
        key = stage.key or f"{platforms.format(plan.target_platform)}#{stage.index}"
        with self._lock:
            future = self._stages.get(key)
            owner = future is None
            if future is None:
                future = Future()
                self._stages[key] = future
        if not owner:
            return future.result().clone()
        try:
            state = self._build_stage(plan, stage)
        except BaseException as exc:
            future.set_exception(exc)
            raise
        future.set_result(state)
        return state.clone()

    def _stage_by_index(self, plan: Plan, index: int) -> Stage:
        for candidate in plan.stages:
            if candidate.index == index:
                return candidate
        raise BuildError(f"stage {index} is not part of the plan; check --target")

    def _named_context(self, name: str) -> str | None:
        return self.request.build_contexts.get(name)

    def _start(self, plan: Plan, stage: Stage) -> ImageState:
        base = stage.base
        if base.kind == "scratch":
            return empty_state(stage.platform)
        if base.kind == "stage" and base.stage_index is not None:
            parent = self.stage(plan, self._stage_by_index(plan, base.stage_index))
            parent.cmd_set = False
            return parent
        ref = base.ref
        if base.kind == "context":
            source = self._named_context(ref)
            if source is None:
                raise BuildError(f"FROM {ref}: no --build-context named {ref!r}")
            if not source.startswith(("docker-image://", "oci-layout://")):
                return self._state_from_directory(Path(source), stage.platform)
            ref = source
        self.emit("info", f"resolving {ref}", platform=platforms.format(stage.platform))
        return self.bases.image(ref, stage.platform)

    def _state_from_directory(self, root: Path, platform: Platform) -> ImageState:
        state = empty_state(platform)
        items = SourceTree(root, None, name=f"context {root}").select(["."], "/")
        entries = copy_entries(
            items, tree=None, owner=None, chmod=None, epoch=self.options.epoch
        )
        layer = write_entries(self.store, entries, self.options)
        state.add_layer(layer)
        state.add_history(f"COPY {root} /", self.created(), empty_layer=False)
        return state

    def _build_stage(self, plan: Plan, stage: Stage) -> ImageState:
        platform = platforms.format(plan.target_platform)
        name = stage.name or f"stage-{stage.index}"
        try:
            state = self._start(plan, stage)
        except PlatforgeError as exc:
            if stage.base.kind == "image":
                _explain_image_fallback(
                    exc, self.stage_names, stage.base.ref, f"FROM {stage.base.ref}"
                )
            raise _located(
                exc, self.dockerfile_name, f":{stage.line}: [{name}] "
            ) from None
        # ONBUILD triggers of the base (an image or an earlier stage, as if that
        # stage had been built into an image first) run before the stage's own
        # steps and are not passed on.
        triggers = list(state.run_config.get("OnBuild") or [])
        if triggers:
            state.run_config["OnBuild"] = None
            for step in self._trigger_steps(plan, triggers, state):
                state = self.step(plan, stage, state, step, 0)
        for number, step in enumerate(stage.steps, start=1):
            started = time.monotonic()
            self.emit(
                "start",
                f"[{name} {number}/{len(stage.steps)}] {step.instruction.original}",
                platform=platform,
                stage=name,
                step=number,
            )
            try:
                state = self.step(plan, stage, state, step, number)
            except PlatforgeError as exc:
                where = (
                    f":{step.line or stage.line}: [{name} {number}/{len(stage.steps)}] "
                )
                raise _located(exc, self.dockerfile_name, where) from None
            self.emit(
                "done",
                f"[{name} {number}/{len(stage.steps)}] {step.keyword}",
                platform=platform,
                stage=name,
                step=number,
                seconds=time.monotonic() - started,
            )
        return state

    def _from_ref(self, plan: Plan, name: str) -> FromRef:
        """What ``--from=NAME`` of a trigger means in the calling Dockerfile."""
        for candidate in plan.stages:
            if candidate.name == name or str(candidate.index) == name:
                return planner.FromRef("stage", name, candidate.index)
        if name in self.request.build_contexts:
            return planner.FromRef("context", name)
        return planner.FromRef("image", name)

    def _trigger_steps(
        self, plan: Plan, triggers: list[str], state: ImageState
    ) -> list[Step]:
        """ONBUILD triggers of the base image, as steps of this stage."""
        parsed = parser.parse("\n".join(triggers) + "\n", filename="ONBUILD")
        env = state.env()
        steps = []
        for instruction in parsed.instructions:
            keyword = instruction.keyword
            if keyword in {"RUN", "CMD", "ENTRYPOINT", "SHELL", "ONBUILD"}:
                args = list(instruction.args)
            else:
                args = [
                    shell.expand(w, env, escape=parsed.escape) for w in instruction.args
                ]
            flags: dict[str, str] = {}
            lists: dict[str, list[str]] = {}
            for flag, value in instruction.flags:
                text = shell.expand(value or "", env, escape=parsed.escape)
                flags[flag] = text
                lists.setdefault(flag, []).append(text)
            steps.append(
                planner.Step(
                    instruction=instruction,
                    keyword=keyword,
                    args=args,
                    flags=flags,
                    flag_lists=lists,
                    heredocs=list(instruction.heredocs),
                    env=[f"{k}={v}" for k, v in env.items()],
                    line=instruction.start_line,
                    copy_from=(
                        self._from_ref(plan, flags["from"]) if "from" in flags else None
                    ),
                )
            )
        return steps

    # -- steps -------------------------------------------------------------------

    def _step_key(
        self, stage: Stage, state: ImageState, step: Step, content: str
    ) -> str:
        body: dict[str, Any] = {
            "v": _CACHE_VERSION,
            "parent": state.state_id(),
            "keyword": step.keyword,
            "args": step.args,
            "json": step.instruction.json_form,
            "flags": step.flags,
            "lists": step.flag_lists,
            "heredocs": [
                [d.name, d.content, d.expand, d.chomp_tabs] for d in step.heredocs
            ],
            "env": step.env,
            "content": content,
            "compression": self.options.compression.value,
            "epoch": self.epoch,
        }
        if step.keyword == "RUN":
            body["build_args"] = step.build_args
            body["platform"] = platforms.format(stage.platform)
            body["extra_hosts"] = self.request.extra_hosts
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def step(
        self, plan: Plan, stage: Stage, state: ImageState, step: Step, number: int
    ) -> ImageState:
        if self._cancelled.is_set():
            raise BuildError("the build was cancelled; no further step runs")
        keyword = step.keyword
        if keyword in METADATA_KEYWORDS:
            # Cached like every step, so that an unchanged rebuild keeps the
            # history times, and with them the config's digest.
            key = self._step_key(stage, state, step, "")
            cached = self._cached(key)
            if cached is not None:
                return cached
            new = state.clone()
            created_by = apply_metadata(new, step)
            new.add_history(created_by, self.created(), empty_layer=True)
            self._remember(key, new)
            return new
        if keyword == "WORKDIR":
            return self._workdir(state, step)
        if keyword in {"COPY", "ADD"}:
            return self._copy(plan, stage, state, step)
        if keyword == "RUN":
            return self._run(plan, stage, state, step, number)
        raise BuildError(
            f"{step.instruction.original.strip()}: {keyword} is not an instruction "
            "platforge can build"
        )

    def _cached(self, key: str) -> ImageState | None:
        if self.request.no_cache:
            return None
        record = self.store.cache_get(key)
        if record is None:
            return None
        with self._lock:
            self.steps_cached += 1
        return ImageState.from_record(record)

    def _remember(self, key: str, state: ImageState) -> None:
        with self._lock:
            self.steps_run += 1
        self.store.cache_put(key, state.to_record())

    def _workdir(self, state: ImageState, step: Step) -> ImageState:
        new = state.clone()
        current = str(new.run_config.get("WorkingDir") or "/")
        path = join_dest(current, step.args[0] if step.args else "/").rstrip("/") or "/"
        new.run_config["WorkingDir"] = path
        tree = ImageTree.of(self.store, new.layers)
        if path == "/" or tree.is_dir(path):
            new.add_history(f"WORKDIR {path}", self.created(), empty_layer=True)
            return new
        key = self._step_key_simple(state, f"WORKDIR {path}")
        cached = self._cached(key)
        if cached is not None:
            return cached
        # A directory WORKDIR creates belongs to the current USER, as in BuildKit.
        user = str(new.run_config.get("User") or "")
        owner = (
            resolve_owner(
                user,
                tree.read_small("etc/passwd"),
                tree.read_small("etc/group"),
                instruction="WORKDIR (for USER)",
            )
            if user
            else None
        )
        # Create the directory where the image's links lead (/var/run -> /run).
        parts = tree.real_path(path).strip("/").split("/")
        entries = []
        for i in range(1, len(parts) + 1):
            name = "/".join(parts[:i])
            existing = tree.mode_of(name)
            if existing is None and owner is not None:
                existing = (0o755, owner.uid, owner.gid)
            mode, uid, gid = existing or (0o755, 0, 0)
            entries.append(
                Entry.directory(
                    name, mode=mode, uid=uid, gid=gid, mtime=self.epoch or 0
                )
            )
        new.add_layer(write_entries(self.store, entries, self.options))
        new.add_history(f"WORKDIR {path}", self.created(), empty_layer=False)
        self._remember(key, new)
        return new

    def _step_key_simple(self, state: ImageState, text: str) -> str:
        body = f"{_CACHE_VERSION}\0{state.state_id()}\0{text}\0{self.epoch}\0"
        body += self.options.compression.value
        return hashlib.sha256(body.encode()).hexdigest()

    def created(self) -> str:
        """The ``created`` time of history entries and configs of this build."""
        return output.timestamp(self.epoch)

    def source_named(self, plan: Plan, stage: Stage, name: str) -> SourceTree:
        """The tree ``RUN --mount=from=NAME`` reads: a stage, context or image."""
        return self._source_for(
            plan, stage, self._from_ref(plan, name), what="RUN --mount from"
        )

    def _source_for(
        self,
        plan: Plan,
        stage: Stage,
        ref: FromRef | None,
        *,
        what: str = "COPY --from",
    ) -> SourceTree:
        if ref is None:
            return self.context_tree()
        if ref.kind == "context":
            source = self._named_context(ref.ref)
            if source is not None and not source.startswith(
                ("docker-image://", "oci-layout://")
            ):
                return SourceTree(Path(source), None, name=f"context {ref.ref}")
            image = self.bases.image(source or ref.ref, stage.platform)
            return self._materialize(image, ref.ref)
        if ref.kind == "stage" and ref.stage_index is not None:
            state = self.stage(plan, self._stage_by_index(plan, ref.stage_index))
            return self._materialize(state, f"stage {ref.ref}")
        try:
            image = self.bases.image(ref.ref, stage.platform)
        except PlatforgeError as exc:
            _explain_image_fallback(exc, self.stage_names, ref.ref, f"{what}={ref.ref}")
            raise
        return self._materialize(image, ref.ref)

    def _materialize(self, state: ImageState, name: str) -> SourceTree:
        from platforge.build import filesystem  # noqa: PLC0415 - only COPY --from

        root = filesystem.flat_tree(self.store, state.layers)
        return SourceTree(root, None, name=name)

    def _copy(
        self, plan: Plan, stage: Stage, state: ImageState, step: Step
    ) -> ImageState:
        source = self._source_for(plan, stage, step.copy_from)
        tree = ImageTree.of(self.store, state.layers)
        with self.store.scratch_dir("heredoc-") as scratch:
            copy_plan = plan_copy(
                step,
                state,
                tree=tree,
                source=source,
                scratch=scratch,
                hasher=self.hasher,
                urls=self.urls,
            )
            key = self._step_key(stage, state, step, copy_plan.content_key)
            cached = self._cached(key)
            if cached is not None:
                self.emit(
                    "cached",
                    f"{step.keyword} (cached)",
                    platform=platforms.format(stage.platform),
                )
                return cached
            layer, entries = write_copy(
                self.store,
                copy_plan,
                tree=tree,
                options=self.options,
                scratch=scratch,
            )
            new = state.clone()
            new.add_layer(layer)
            ImageTree.record(self.store, new.layers, tree, entries)
        flags = " ".join(f"--{k}={v}" if v else f"--{k}" for k, v in step.flags.items())
        words = " ".join(step.args)
        created_by = f"{step.keyword} {flags + ' ' if flags else ''}{words} # platforge"
        new.add_history(created_by, self.created(), empty_layer=False)
        self._remember(key, new)
        return new

    def _run(
        self, plan: Plan, stage: Stage, state: ImageState, step: Step, number: int
    ) -> ImageState:
        from platforge.build import run_step  # noqa: PLC0415 - the sandbox is heavy

        key = self._step_key(
            stage, state, step, run_step.content_key(self, plan, stage, step)
        )
        cached = self._cached(key)
        if cached is not None:
            self.emit(
                "cached", "RUN (cached)", platform=platforms.format(stage.platform)
            )
            return cached
        new: ImageState = run_step.execute(
            self, plan=plan, stage=stage, state=state, step=step, number=number
        )
        self._remember(key, new)
        return new

    # -- the whole build ---------------------------------------------------------

    def run(self) -> BuildResult:
        path = self.dockerfile_path()
        name = self.request.dockerfile_name
        if name is None:
            name = str(path)
            text = parser.read_dockerfile(path)
        else:
            text = parser.decode(path.read_bytes(), filename=name)
        dockerfile = parser.parse(text, filename=name)
        self.dockerfile_name = name
        self.stage_names = [
            ins.args[2]
            for ins in dockerfile.instructions
            if ins.keyword == "FROM"
            and len(ins.args) > 2
            and ins.args[1].lower() == "as"
        ]
        for out in self.request.outputs:
            if out.dest is not None:
                output.check_output_path(out.dest)
                output.check_digest_file(out.dest)
        wanted = self.request.platforms or [platforms.host()]
        multi = planner.resolve_all(
            dockerfile,
            wanted,
            build_args=self.request.build_args,
            target=self.request.target,
            named_contexts=list(self.request.build_contexts),
        )
        started = time.monotonic()
        try:
            images = self._build_platforms(wanted, multi.plans)
        finally:
            self.hasher.save()
            shutil.rmtree(self.urls.directory, ignore_errors=True)
        self.emit(
            "info",
            f"built {len(images)} platform(s): {self.steps_run} step(s) run, "
            f"{self.steps_cached} from cache",
            seconds=time.monotonic() - started,
        )
        labels = self.request.labels
        for _, state in images:
            if labels:
                merged = dict(state.run_config.get("Labels") or {})
                merged.update(labels)
                state.run_config["Labels"] = merged
        assembled = output.assemble(self.store, images, epoch=self.epoch)
        return self._outputs(assembled)

    def _build_platforms(
        self, wanted: list[Platform], plans: dict[str, Plan]
    ) -> list[tuple[Platform, ImageState]]:
        ordered = [(p, plans[platforms.format(p)]) for p in wanted]
        if len(ordered) == 1:
            platform, plan = ordered[0]
            return [(platform, self.stage(plan, plan.target))]
        with ThreadPoolExecutor(max_workers=len(ordered)) as pool:
            futures = [
                (p, pool.submit(self.stage, plan, plan.target)) for p, plan in ordered
            ]
            try:
                return [(p, f.result()) for p, f in futures]
            except BaseException:
                # ^C, SIGTERM or one platform's failure: the other platforms
                # stop too, instead of running their steps to the end.
                self._cancel([f for _, f in futures])
                raise

    def _cancel(self, futures: list[Future[ImageState]]) -> None:
        self._cancelled.set()
        for future in futures:
            future.cancel()
        # Only a build that ran a RUN has imported the sandbox (it is heavy);
        # its running commands are killed, and their containers and mounts
        # cleaned up by the threads that started them.
        if "platforge.build.sandbox" in sys.modules:
            from platforge.build import sandbox  # noqa: PLC0415 - see above

            stopped = sandbox.stop_all()
            log.debug("cancelled the build: %d RUN command(s) stopped", stopped)

    def _outputs(self, assembled: output.Assembled) -> BuildResult:
        request = self.request
        root = assembled.root
        ref_name = output.ref_name_for(request.tags)
        layout: Path | None = None
        for out in request.outputs:
            if out.type == "registry":
                continue
            if out.dest is None:
                raise BuildError(f"--output type={out.type} needs dest=PATH")
            if out.type == "oci":
                output.write_oci_layout(self.store, root, out.dest, ref_name)
                layout = layout or out.dest
            elif out.type == "oci-tar":
                output.write_oci_archive(self.store, root, out.dest, ref_name)
            elif out.type == "docker":
                output.write_docker_archive(self.store, root, out.dest, request.tags)
            output.write_digest_file(out.dest, root.digest)
            self.emit("info", f"wrote {out.type} output to {out.dest}")
        if request.push or any(o.type == "registry" for o in request.outputs):
            self._push(root)
        return BuildResult(
            descriptor=root,
            digest=root.digest,
            manifests=assembled.manifests,
            layout=layout,
        )

    def _push(self, root: Any) -> None:
        from platforge.oci.layout import Layout  # noqa: PLC0415
        from platforge.registry.copy import push_layout  # noqa: PLC0415
        from platforge.registry.reference import Reference  # noqa: PLC0415

        if not self.request.tags:
            raise BuildError("--push needs at least one -t REGISTRY/REPOSITORY[:TAG]")
        store_layout = Layout.open(self.store.path)
        for tag in self.request.tags:
            reference = Reference.parse(tag)
            name = str(reference)
            store_layout.add_ref(root, name)
            self.emit("info", f"pushing {name}")
            push_layout(
                self.store.path,
                reference,
                registries=self.registries,
                name=name,
                progress=self.request.blob_progress,
            )


def run_build(request: BuildRequest) -> BuildResult:
    """Build ``request`` (see the module docstring)."""
    session = BuildSession(request)
    try:
        return session.run()
    finally:
        session.registries.close()


def _located(exc: PlatforgeError, dockerfile: str, where: str) -> PlatforgeError:
    """``exc`` with its message starting at the Dockerfile line it comes from.

    The same exception object is raised again (its type tells callers what
    failed); one already located, by the parser or a stage built earlier, keeps
    the place it names.
    """
    message = str(exc)
    if isinstance(exc, DockerfileError) or message.startswith(f"{dockerfile}:"):
        return exc
    exc.args = (f"{dockerfile}{where}{message}",)
    return exc


def _explain_image_fallback(
    exc: PlatforgeError, names: list[str], name: str, what: str
) -> None:
    """Say that ``name``, found among no stages, was pulled as an image.

    Docker's rule: a ``FROM`` or ``--from`` name that is no stage is an image
    reference, so a misspelt stage name becomes a pull from Docker Hub whose
    failure alone would not tell the user what happened.
    """
    if any(mark in name for mark in "/:@"):
        return  # written as an image reference: no stage was meant
    from platforge.registry.reference import Reference  # noqa: PLC0415

    try:
        image = Reference.parse(name).name
    except PlatforgeError:
        return
    stages = f"stages: {', '.join(names)}" if names else "no stage has a name"
    message = (
        f"{what}: no stage named {name!r} ({stages}), so it was taken as "
        f"the image {image}, and pulling it failed: {exc}"
    )
    exc.args = (message,)
