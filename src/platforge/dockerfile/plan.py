"""Resolve a parsed Dockerfile into a per-platform plan of stages and steps.

A Dockerfile's ``FROM`` instructions cut it into *stages*. A stage starts from an
image, from an earlier stage, from ``scratch``, or from a named build context, and
may copy files out of other stages (``COPY --from``, ``RUN --mount=from=``). The
*target* (``--target`` or the last stage) and what it needs, transitively, make the
plan; unused stages are pruned, so their errors never surface.

Variables, in the order BuildKit resolves them:

* *Automatic platform args* ``TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT
  BUILDPLATFORM BUILDOS BUILDARCH BUILDVARIANT`` and ``TARGETSTAGE`` (the target's
  name, ``default`` when it has none) live in the global scope; a build arg of the
  same name overrides them. Values are normalised (``linux/arm`` gives
  ``TARGETVARIANT=v7``). A stage's ``FROM --platform`` never changes them, which is
  what makes the cross-compile idiom work::

      FROM --platform=$BUILDPLATFORM golang AS build
      ARG TARGETARCH
      RUN GOARCH=$TARGETARCH go build …

* *Global ARGs* (``ARG`` before the first ``FROM``) and the automatic args expand
  ``FROM`` lines only; a bare global ``ARG TARGETARCH`` keeps the automatic value
  (current BuildKit; the frontend built into dockerd 20.10 empties it). Inside a
  stage a name is invisible until a bare ``ARG NAME`` declares it there, which then
  takes the global value.
* ``ARG NAME=default`` in a stage: the build arg if given, else the default (expanded
  in the stage's scope). ``ENV`` wins over ``ARG`` of the same name in expansions.
  ``ENV a=1 b=$a`` expands ``$a`` with the value from *before* the instruction.
* A stage built ``FROM`` another stage starts with that stage's ENV, its ARGs and
  its platform (where its steps run); the image of the target is still described
  as ``Plan.target_platform``.
* Build args nobody declares are reported in ``unused_build_args`` (a warning, not an
  error); the proxy args (``HTTP_PROXY`` …, visible to ``RUN`` without a declaration),
  the automatic args, ``BUILDKIT_*`` and ``SOURCE_DATE_EPOCH`` never are.
  ``SOURCE_DATE_EPOCH`` (a build arg, or a global ARG's default) must be a whole
  number of seconds and is also offered as ``Plan.source_date_epoch``.

Which words expand: ``ADD COPY ENV EXPOSE FROM LABEL STOPSIGNAL USER VOLUME WORKDIR
ARG`` and the flags of every instruction, except stage references (``COPY --from``,
a mount's ``from=``), which must be literal, as in BuildKit; ``RUN CMD ENTRYPOINT
SHELL HEALTHCHECK`` keep their command text for the shell in the image; ``ONBUILD``
is stored unexpanded.
Here-documents of ``COPY``/``ADD`` whose delimiter is unquoted get their variables
expanded, and their source words read ``<<NAME`` (delimiter quotes removed); ``RUN``
here-documents are left to the shell.

Each stage has a ``key``: a digest of everything that decides its result (base,
platform, steps with their expanded words, args and environment, the keys of the
stages it copies from). A stage that does not depend on the target platform, such as
a ``FROM --platform=$BUILDPLATFORM`` stage that declares no ``TARGET*`` arg, has the
same key in every platform's plan; ``resolve_all`` lists such keys in
``MultiPlan.shared`` so the builder runs them once.

The planner knows nothing about images: the environment a base image brings is
unknown to it unless the caller passes ``image_env`` (a function from an image
reference and platform to its ``K=V`` list); without it, ``$PATH`` and friends from
the base image expand to nothing in expanding instructions. ``ONBUILD`` triggers of
base images are not run.

Public names::

    resolve(dockerfile, *, target_platform, build_platform, build_args={},
            target=None, named_contexts=(), image_env=None) -> Plan
    resolve_all(dockerfile, platforms, *, build_platform=None, build_args={},
                target=None, named_contexts=(), image_env=None) -> MultiPlan
    Plan(target_platform, build_platform, stages, unused_build_args,
         source_date_epoch, warnings; .target)
    MultiPlan(plans: dict[str, Plan], shared: set[str], unused_build_args: set[str])
    Stage(index, name, base, platform, steps, key, depends_on)
    Step(instruction, keyword, args, flags, flag_lists, heredocs, env, build_args,
         line, copy_from, mount_from)
    BaseRef(kind, ref, stage_index)      kind: "image" | "stage" | "scratch" | "context"
    FromRef(kind, ref, stage_index)      kind: "stage" | "image" | "context"
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from platforge import platforms as pf
from platforge.dockerfile.parser import Heredoc, Instruction, parse_heredoc_word
from platforge.dockerfile.shell import Lexer, ShellExpansionError, expand_words
from platforge.errors import DockerfileError, PlatformError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator, Mapping, Sequence

    from platforge.dockerfile.parser import Dockerfile
    from platforge.platforms import Platform

__all__ = [
    "AUTOMATIC_ARGS",
    "PROXY_ARGS",
    "BaseRef",
    "FromRef",
    "MultiPlan",
    "Plan",
    "Stage",
    "Step",
    "resolve",
    "resolve_all",
]

log = logging.getLogger("platforge.dockerfile.plan")

BaseKind = Literal["image", "stage", "scratch", "context"]
FromKind = Literal["stage", "image", "context"]

AUTOMATIC_ARGS = (
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETSTAGE",
)
PROXY_ARGS = frozenset(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (base, base.lower())
)
SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"

# Instructions whose words are expanded in the stage's scope, and how.
_EXPAND_EACH = frozenset({"ADD", "COPY", "VOLUME", "FROM"})
_EXPAND_SPLIT = frozenset({"EXPOSE"})
_EXPAND_WHOLE = frozenset({"USER", "WORKDIR", "STOPSIGNAL"})
_EXPAND_PAIRS = frozenset({"ENV", "LABEL"})


@dataclass(frozen=True)
class BaseRef:
    """What a stage starts from. ``ref`` is expanded (an image reference, the stage
    name, ``scratch`` or the context name); ``stage_index`` is set for a stage."""

    kind: BaseKind
    ref: str
    stage_index: int | None = None


@dataclass(frozen=True)
class FromRef:
    """The source of ``COPY --from`` or ``RUN --mount=from=``: an earlier stage (by
    name or index), a named build context, or an image reference."""

    kind: FromKind
    ref: str
    stage_index: int | None = None


@dataclass
class Step:
    """One instruction of a stage with its words expanded in the stage's scope.

    ``args`` are expanded words for expanding instructions (``ENV``/``LABEL``:
    ``key=value`` with quotes removed), the raw words for ``RUN CMD ENTRYPOINT SHELL
    HEALTHCHECK ONBUILD``. ``flags`` maps each flag to its last expanded value (``""``
    for a bare flag); ``flag_lists`` keeps every value of each flag in order (for the
    repeatable ``--mount`` and ``--exclude``). ``heredocs`` are the instruction's,
    with ``COPY``/``ADD`` bodies expanded where the delimiter was unquoted. ``env`` is
    the image config's environment after this step (``K=V``, parent stages and
    ``image_env`` included); ``build_args`` the ARGs in scope (plus given proxy args),
    visible to ``RUN`` but never stored in the image config. ``copy_from`` resolves
    ``COPY --from``; ``mount_from`` each ``RUN --mount=…,from=``.
    """

    instruction: Instruction
    keyword: str
    args: list[str]
    flags: dict[str, str] = field(default_factory=dict)
    flag_lists: dict[str, list[str]] = field(default_factory=dict)
    heredocs: list[Heredoc] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    line: int = 0
    copy_from: FromRef | None = None
    mount_from: list[FromRef] = field(default_factory=list)


@dataclass
class Stage:
    """A ``FROM`` and its steps, resolved for one target platform.

    ``platform`` is the stage's own: its parent stage's when built on one, else
    ``FROM --platform`` if given, else the target platform. ``depends_on`` lists the
    indexes of the stages it needs (its base and copy sources). ``key`` covers what
    the Dockerfile decides; the builder adds what only it knows (the base image's
    digest, the contents of the build context).
    """

    index: int
    name: str | None
    base: BaseRef
    platform: Platform
    steps: list[Step]
    key: str = ""
    depends_on: list[int] = field(default_factory=list)
    line: int = 0


@dataclass
class Plan:
    """The stages one target platform needs, in dependency order (target last)."""

    target_platform: Platform
    build_platform: Platform
    stages: list[Stage]
    unused_build_args: set[str] = field(default_factory=set)
    source_date_epoch: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def target(self) -> Stage:
        return self.stages[-1]


@dataclass
class MultiPlan:
    """One plan per platform (keyed by the platform string) and the keys of the
    stages that are identical in more than one of them."""

    plans: dict[str, Plan]
    shared: set[str] = field(default_factory=set)
    unused_build_args: set[str] = field(default_factory=set)


def _automatic_args(
    target_platform: Platform, build_platform: Platform, target_name: str
) -> dict[str, str]:
    target_platform = pf.normalize(target_platform)
    build_platform = pf.normalize(build_platform)
    return {
        "TARGETPLATFORM": pf.format(target_platform),
        "TARGETOS": target_platform.os,
        "TARGETARCH": target_platform.architecture,
        "TARGETVARIANT": target_platform.variant or "",
        "BUILDPLATFORM": pf.format(build_platform),
        "BUILDOS": build_platform.os,
        "BUILDARCH": build_platform.architecture,
        "BUILDVARIANT": build_platform.variant or "",
        "TARGETSTAGE": target_name,
    }


@dataclass
class _RawStage:
    index: int
    name: str | None
    from_instruction: Instruction
    instructions: list[Instruction]


@dataclass
class _Scope:
    """The variables visible at one point of a stage."""

    args: dict[str, str] = field(default_factory=dict)
    declared: set[str] = field(default_factory=set)
    env: dict[str, str] = field(default_factory=dict)

    def lookup(self) -> dict[str, str]:
        return {**self.args, **self.env}


class _StageNeededError(Exception):
    """Raised inside a stage's resolution when an earlier stage must come first."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


class _Resolver:
    def __init__(
        self,
        dockerfile: Dockerfile,
        *,
        target_platform: Platform,
        build_platform: Platform,
        build_args: Mapping[str, str],
        target: str | None,
        named_contexts: Collection[str],
        image_env: Callable[[str, Platform], Sequence[str]] | None,
    ) -> None:
        self.dockerfile = dockerfile
        self.file = dockerfile.filename
        self.escape = dockerfile.escape
        self.target_platform = pf.normalize(target_platform)
        self.build_platform = pf.normalize(build_platform)
        self.build_args = dict(build_args)
        self.named_contexts = set(named_contexts)
        self.image_env = image_env
        self.consumed: set[str] = set()
        self.meta_instructions, self.raw_stages = self._split()
        self.by_name = {s.name: s.index for s in self.raw_stages if s.name}
        self.target_index = self._target_index(target)
        target_name = self.raw_stages[self.target_index].name or "default"
        automatic = _automatic_args(
            self.target_platform, self.build_platform, target_name
        )
        for name, value in automatic.items():
            automatic[name] = self.build_args.get(name, value)
        self.global_args = self._global_args(automatic)
        self.resolved: dict[int, Stage] = {}
        self.scopes: dict[int, _Scope] = {}
        self.image_envs: dict[tuple[str, str], list[str]] = {}

    # -- structure ------------------------------------------------------------------

    def _split(self) -> tuple[list[Instruction], list[_RawStage]]:
        meta: list[Instruction] = []
        stages: list[_RawStage] = []
        for instruction in self.dockerfile.instructions:
            if instruction.keyword == "FROM":
                args = instruction.args
                name = args[2].lower() if len(args) == 3 else None
                if name is not None and any(s.name == name for s in stages):
                    raise self.error(
                        instruction, f"duplicate stage name {name!r}; names must differ"
                    )
                stages.append(_RawStage(len(stages), name, instruction, []))
            elif not stages:
                if instruction.keyword != "ARG":
                    raise self.error(
                        instruction, "only ARG may come before the first FROM"
                    )
                meta.append(instruction)
            else:
                stages[-1].instructions.append(instruction)
        if not stages:
            raise DockerfileError(
                "no FROM instruction; a Dockerfile needs at least one stage",
                file=self.file,
                line=1,
            )
        return meta, stages

    def _target_index(self, target: str | None) -> int:
        if target is None:
            return len(self.raw_stages) - 1
        index = self.by_name.get(target.lower())
        if index is None:
            names = ", ".join(sorted(self.by_name)) or "none are named"
            raise DockerfileError(
                f"target stage {target!r} not found; stages: {names}", file=self.file
            )
        return index

    def error(self, instruction: Instruction, message: str) -> DockerfileError:
        return DockerfileError(
            f"{instruction.keyword}: {message}",
            file=self.file,
            line=instruction.start_line,
        )

    # -- expansion ------------------------------------------------------------------

    @contextlib.contextmanager
    def _located(self, instruction: Instruction, what: str = "") -> Iterator[None]:
        """Expansion errors inside get this file, the line and the keyword."""
        try:
            yield
        except ShellExpansionError as exc:
            raise ShellExpansionError(
                f"{instruction.keyword}: {what}{exc.detail}",
                file=self.file,
                line=instruction.start_line,
            ) from None

    def expand(
        self, instruction: Instruction, word: str, env: Mapping[str, str]
    ) -> str:
        with self._located(instruction):
            result, _ = Lexer(env, escape=self.escape).process(word)
        return result

    def expand_split(
        self, instruction: Instruction, word: str, env: Mapping[str, str]
    ) -> list[str]:
        with self._located(instruction):
            return expand_words(word, env, escape=self.escape)

    def _global_args(self, automatic: dict[str, str]) -> dict[str, str]:
        scope = dict(automatic)
        for instruction in self.meta_instructions:
            for word in instruction.args:
                name, value = self._declare(instruction, word, scope)
                # A bare global ARG keeps what is already there, so ``ARG
                # TARGETARCH`` before FROM still holds the automatic value.
                if value is not None:
                    scope[name] = value
        return scope

    def _declare(
        self, instruction: Instruction, word: str, env: Mapping[str, str]
    ) -> tuple[str, str | None]:
        """Resolve one ``ARG`` word to its name and value (None: declared, unset)."""
        name, sep, default = word.partition("=")
        name = self.expand(instruction, name, env)
        if not name:
            raise self.error(instruction, f"empty name in {word!r}; expected NAME[=x]")
        self.consumed.add(name)
        if name in self.build_args:
            return name, self.build_args[name]
        if sep:
            return name, self.expand(instruction, default, env)
        return name, None

    # -- stages ---------------------------------------------------------------------

    def stage(self, index: int) -> Stage:
        """Resolve stage ``index`` and, first, the earlier stages it needs.

        A worklist rather than recursion, so a long chain of stages cannot exhaust
        Python's stack: a stage that meets an unresolved dependency is retried after
        it (dependencies are always earlier stages, so this ends).
        """
        pending = [index]
        while pending:
            current = pending[-1]
            if current in self.resolved:
                pending.pop()
                continue
            try:
                self.resolved[current] = self._resolve_stage(self.raw_stages[current])
            except _StageNeededError as need:
                pending.append(need.index)
            else:
                pending.pop()
        return self.resolved[index]

    def _resolved(self, index: int) -> Stage:
        if index not in self.resolved:
            raise _StageNeededError(index)
        return self.resolved[index]

    def _base(self, raw: _RawStage) -> BaseRef:
        ref = self.expand(
            raw.from_instruction, raw.from_instruction.args[0], self.global_args
        )
        if not ref:
            raise self.error(
                raw.from_instruction,
                f"base name {raw.from_instruction.args[0]!r} expands to nothing; "
                "set the build arg it uses",
            )
        lowered = ref.lower()
        context = self._context_for(ref)
        if context is not None:
            return BaseRef("context", context)
        if lowered in self.by_name:
            index = self.by_name[lowered]
            if index >= raw.index:
                raise self.error(
                    raw.from_instruction,
                    f"stage {ref!r} is defined later; a stage can only build on "
                    "earlier stages",
                )
            if lowered in self.named_contexts:
                return BaseRef("context", lowered)
            return BaseRef("stage", lowered, index)
        if lowered == "scratch":
            return BaseRef("scratch", "scratch")
        return BaseRef("image", ref)

    def _context_for(self, ref: str) -> str | None:
        """The named context a FROM or --from reference selects, if any.

        A context named ``alpine`` also stands for ``alpine:latest``,
        ``docker.io/library/alpine`` and the like, as in BuildKit.
        """
        for candidate in (ref, _familiar(ref)):
            if candidate in self.named_contexts:
                return candidate
        return None

    def _platform(self, raw: _RawStage) -> Platform:
        text = raw.from_instruction.flag("platform")
        if text is None:
            return self.target_platform
        value = self.expand(raw.from_instruction, text, self.global_args)
        try:
            return pf.parse(value)
        except PlatformError as exc:
            raise self.error(
                raw.from_instruction, f"--platform={text}: {exc}"
            ) from None

    def _resolve_stage(self, raw: _RawStage) -> Stage:
        base = self._base(raw)
        platform = self._platform(raw)
        scope = _Scope()
        depends: list[int] = []
        parent_key = ""
        if base.kind == "stage" and base.stage_index is not None:
            # A stage built on a stage carries on from where that one ended: its
            # environment, its ARGs and its platform (as BuildKit does).
            parent = self._resolved(base.stage_index)
            parent_scope = self.scopes[base.stage_index]
            scope.env = dict(parent_scope.env)
            scope.args = dict(parent_scope.args)
            scope.declared = set(parent_scope.declared)
            platform = parent.platform
            depends.append(base.stage_index)
            parent_key = parent.key
        elif base.kind == "image" and self.image_env is not None:
            for item in self._image_env(self.image_env, base.ref, platform):
                key, _, value = item.partition("=")
                scope.env[key] = value
        stage = Stage(
            index=raw.index,
            name=raw.name,
            base=base,
            platform=platform,
            steps=[],
            depends_on=depends,
            line=raw.from_instruction.start_line,
        )
        for instruction in raw.instructions:
            step = self._step(raw, instruction, scope)
            for ref in [step.copy_from, *step.mount_from]:
                if ref is not None and ref.stage_index is not None:
                    self._resolved(ref.stage_index)
                    if ref.stage_index not in depends:
                        depends.append(ref.stage_index)
            stage.steps.append(step)
        self.scopes[raw.index] = scope
        stage.key = self._key(stage, parent_key)
        return stage

    def _image_env(
        self,
        fetch: Callable[[str, Platform], Sequence[str]],
        ref: str,
        platform: Platform,
    ) -> Sequence[str]:
        # Asked once per image and platform: a stage may be resolved again after
        # an earlier stage it copies from, and the caller may have to fetch.
        key = (ref, pf.format_all(platform))
        if key not in self.image_envs:
            self.image_envs[key] = list(fetch(ref, platform))
        return self.image_envs[key]

    def _from_ref(
        self, raw: _RawStage, instruction: Instruction, value: str
    ) -> FromRef:
        lowered = value.lower()
        context = self._context_for(value)
        if context is not None:
            return FromRef("context", context)
        if value.isdigit():
            index = int(value)
            if index >= raw.index:
                raise self.error(
                    instruction,
                    f"--from={value} names stage {index}, which is not an earlier "
                    f"stage (this is stage {raw.index})",
                )
            return FromRef("stage", self.raw_stages[index].name or value, index)
        if lowered in self.by_name:
            index = self.by_name[lowered]
            if index >= raw.index:
                raise self.error(
                    instruction,
                    f"--from={value} names a stage that is not earlier than this "
                    "one; a stage can only copy from earlier stages",
                )
            if lowered in self.named_contexts:
                return FromRef("context", lowered)
            return FromRef("stage", lowered, index)
        return FromRef("image", value)

    def _step(self, raw: _RawStage, instruction: Instruction, scope: _Scope) -> Step:
        keyword = instruction.keyword
        env = scope.lookup()
        step = Step(
            instruction=instruction,
            keyword=keyword,
            args=list(instruction.args),
            heredocs=list(instruction.heredocs),
            line=instruction.start_line,
        )
        if keyword != "ONBUILD":
            for name, value in instruction.flags:
                expanded = self._expand_flag(instruction, name, value, env)
                step.flags[name] = expanded
                step.flag_lists.setdefault(name, []).append(expanded)

        step.args = self._expand_args(instruction, scope, env)

        if keyword in ("COPY", "ADD"):
            env_now = scope.lookup()
            step.heredocs = [
                Heredoc(
                    h.name,
                    self._expand_body(instruction, h, env_now),
                    h.expand,
                    h.chomp_tabs,
                )
                for h in instruction.heredocs
            ]
        self._sources(raw, instruction, step)

        step.env = [f"{k}={v}" for k, v in scope.env.items()]
        step.build_args = dict(scope.args)
        for name in PROXY_ARGS & self.build_args.keys():
            step.build_args.setdefault(name, self.build_args[name])
        return step

    def _expand_flag(
        self,
        instruction: Instruction,
        name: str,
        value: str | None,
        env: Mapping[str, str],
    ) -> str:
        """A flag's value expanded; a stage reference (``--from``, a mount's
        ``from=``) is not, as in BuildKit, because the stage graph must not
        depend on a stage's own variables."""
        if value is None:
            return ""
        if name == "from":
            return self._literal_source(instruction, value)
        if name != "mount":
            return self.expand(instruction, value, env)
        fields = []
        for field_text in value.split(","):
            key, sep, text = field_text.partition("=")
            if sep and key.strip().lower() == "from":
                fields.append(f"{key}={self._literal_source(instruction, text)}")
            elif sep:
                fields.append(f"{key}={self.expand(instruction, text, env)}")
            else:
                fields.append(self.expand(instruction, field_text, env))
        return ",".join(fields)

    def _literal_source(self, instruction: Instruction, value: str) -> str:
        if "$" in value:
            raise self.error(
                instruction,
                f"from={value}: variables are not expanded in a stage reference; "
                "name the image in a stage (ARG IMAGE, FROM $IMAGE AS src) and use "
                "from=src",
            )
        return value

    def _expand_args(
        self, instruction: Instruction, scope: _Scope, env: Mapping[str, str]
    ) -> list[str]:
        """The step's words, expanded the way its keyword expands them."""
        keyword = instruction.keyword
        if keyword in _EXPAND_EACH:
            return [self._expand_source(instruction, w, env) for w in instruction.args]
        if keyword in _EXPAND_SPLIT:
            return [
                piece
                for word in instruction.args
                for piece in self.expand_split(instruction, word, env)
            ]
        if keyword in _EXPAND_WHOLE:
            return [self.expand(instruction, w, env) for w in instruction.args]
        if keyword in _EXPAND_PAIRS:
            return self._pairs(instruction, scope, env)
        if keyword == "ARG":
            return self._args(instruction, scope, env)
        return list(instruction.args)

    def _expand_source(
        self, instruction: Instruction, word: str, env: Mapping[str, str]
    ) -> str:
        # A here-document source names a body, not a path: written as <<NAME (or
        # <<-NAME), without the quotes of its delimiter.
        if instruction.keyword in ("COPY", "ADD") and instruction.heredocs:
            heredoc = parse_heredoc_word(word)
            if heredoc is not None:
                return ("<<-" if heredoc.chomp_tabs else "<<") + heredoc.name
        return self.expand(instruction, word, env)

    def _pairs(
        self, instruction: Instruction, scope: _Scope, env: Mapping[str, str]
    ) -> list[str]:
        """``ENV``/``LABEL`` words, all expanded with the values from before."""
        words: list[str] = []
        for word in instruction.args:
            key, _, value = word.partition("=")
            key = self.expand(instruction, key, env)
            if not key:
                raise self.error(instruction, f"empty name in {word!r}")
            words.append(f"{key}={self.expand(instruction, value, env)}")
        if instruction.keyword == "ENV":
            for item in words:
                key, _, value = item.partition("=")
                scope.env[key] = value
        return words

    def _args(
        self, instruction: Instruction, scope: _Scope, env: Mapping[str, str]
    ) -> list[str]:
        """Declare the ``ARG`` names of a stage; each sees the ones before it."""
        words: list[str] = []
        for word in instruction.args:
            name, value = self._declare(instruction, word, env)
            if value is None:
                # A bare ARG takes the global value, else keeps one inherited
                # from a parent stage.
                value = self.global_args.get(name, scope.args.get(name))
            scope.declared.add(name)
            if value is None:
                scope.args.pop(name, None)
                words.append(name)
            else:
                scope.args[name] = value
                words.append(f"{name}={value}")
            env = scope.lookup()
        return words

    def _sources(self, raw: _RawStage, instruction: Instruction, step: Step) -> None:
        """Resolve ``COPY --from`` and ``RUN --mount=from=`` of ``step``."""
        if step.keyword == "COPY" and "from" in step.flags:
            if not step.flags["from"]:
                raise self.error(instruction, "--from needs a stage, image or context")
            step.copy_from = self._from_ref(raw, instruction, step.flags["from"])
        if step.keyword == "RUN":
            for mount in step.flag_lists.get("mount", []):
                source = _mount_from(mount)
                if source:
                    step.mount_from.append(self._from_ref(raw, instruction, source))

    def _expand_body(
        self, instruction: Instruction, heredoc: Heredoc, env: Mapping[str, str]
    ) -> str:
        if not heredoc.expand:
            return heredoc.content
        with self._located(instruction, f"<<{heredoc.name}: "):
            return Lexer(env, escape=self.escape).expand_heredoc(heredoc.content)

    def _key(self, stage: Stage, parent_key: str) -> str:
        def ref_json(ref: FromRef | None) -> object:
            if ref is None:
                return None
            if ref.stage_index is not None:
                return ["stage", self._resolved(ref.stage_index).key]
            return [ref.kind, ref.ref]

        document = {
            "base": [stage.base.kind, parent_key or stage.base.ref],
            "platform": pf.format_all(stage.platform),
            "steps": [
                {
                    "keyword": step.keyword,
                    "json": step.instruction.json_form,
                    "args": step.args,
                    "flags": sorted(step.flag_lists.items()),
                    "heredocs": [
                        [h.name, h.content, h.expand, h.chomp_tabs]
                        for h in step.heredocs
                    ],
                    "env": step.env,
                    "build_args": sorted(step.build_args.items()),
                    "copy_from": ref_json(step.copy_from),
                    "mount_from": [ref_json(ref) for ref in step.mount_from],
                    "onbuild": step.instruction.original
                    if step.keyword == "ONBUILD"
                    else None,
                }
                for step in stage.steps
            ],
        }
        encoded = json.dumps(document, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(encoded.encode()).hexdigest()

    # -- the plan -------------------------------------------------------------------

    def plan(self) -> Plan:
        self.stage(self.target_index)
        needed: set[int] = set()
        pending = [self.target_index]
        while pending:
            index = pending.pop()
            if index in needed:
                continue
            needed.add(index)
            pending.extend(self.resolved[index].depends_on)
        stages = [self.resolved[i] for i in sorted(needed)]
        unused = {
            name
            for name in self.build_args
            if name not in self.consumed
            and name not in AUTOMATIC_ARGS
            and name not in PROXY_ARGS
            and name != SOURCE_DATE_EPOCH
            and not name.startswith("BUILDKIT_")
        }
        return Plan(
            target_platform=self.target_platform,
            build_platform=self.build_platform,
            stages=stages,
            unused_build_args=unused,
            source_date_epoch=self._source_date_epoch(),
            warnings=list(self.dockerfile.warnings),
        )

    def _source_date_epoch(self) -> int | None:
        # A build arg, else the default of a global ARG, as BuildKit reads it.
        text = self.build_args.get(SOURCE_DATE_EPOCH) or self.global_args.get(
            SOURCE_DATE_EPOCH
        )
        if not text:
            return None
        if not text.isdigit():
            raise DockerfileError(
                f"{SOURCE_DATE_EPOCH}={text!r} is not a whole number of "
                "seconds since 1970; use e.g. $(git log -1 --format=%ct)",
                file=self.file,
            )
        return int(text)


def _familiar(ref: str) -> str:
    """``docker.io/library/alpine:latest`` written the short way: ``alpine``."""
    for prefix in ("docker.io/library/", "index.docker.io/library/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
            break
    else:
        for prefix in ("docker.io/", "index.docker.io/"):
            if ref.startswith(prefix):
                ref = ref[len(prefix) :]
                break
    return ref.removesuffix(":latest")


def _mount_from(spec: str) -> str | None:
    """The ``from=`` source of a ``--mount`` spec (``type=bind,from=x,target=/y``)."""
    for part in spec.split(","):
        key, sep, value = part.strip().partition("=")
        if sep and key.strip().lower() == "from":
            return value.strip()
    return None


def resolve(
    dockerfile: Dockerfile,
    *,
    target_platform: Platform,
    build_platform: Platform,
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    named_contexts: Collection[str] = (),
    image_env: Callable[[str, Platform], Sequence[str]] | None = None,
) -> Plan:
    """Resolve ``dockerfile`` for one target platform; see the module doc."""
    multi = resolve_all(
        dockerfile,
        [target_platform],
        build_platform=build_platform,
        build_args=build_args,
        target=target,
        named_contexts=named_contexts,
        image_env=image_env,
    )
    (plan,) = multi.plans.values()
    return plan


def resolve_all(
    dockerfile: Dockerfile,
    platforms: Sequence[Platform],
    *,
    build_platform: Platform | None = None,
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    named_contexts: Collection[str] = (),
    image_env: Callable[[str, Platform], Sequence[str]] | None = None,
) -> MultiPlan:
    """Resolve ``dockerfile`` for every platform; mark stages shared across them.

    ``build_platform`` defaults to this host's platform. The unused build args are
    those no platform's plan consumed; the caller decides how to warn about them.
    """
    if not platforms:
        raise DockerfileError("no target platform given", file=dockerfile.filename)
    build = build_platform if build_platform is not None else pf.host()
    plans: dict[str, Plan] = {}
    for platform in platforms:
        resolver = _Resolver(
            dockerfile,
            target_platform=platform,
            build_platform=build,
            build_args=build_args or {},
            target=target,
            named_contexts=named_contexts,
            image_env=image_env,
        )
        plans[pf.format(pf.normalize(platform))] = resolver.plan()
    seen: dict[str, int] = {}
    for plan in plans.values():
        for key in {stage.key for stage in plan.stages}:
            seen[key] = seen.get(key, 0) + 1
    shared = {key for key, count in seen.items() if count > 1}
    unused = set.intersection(*(plan.unused_build_args for plan in plans.values()))
    if unused:
        log.debug("build args not consumed by any ARG: %s", ", ".join(sorted(unused)))
    return MultiPlan(plans=plans, shared=shared, unused_build_args=unused)
