"""Resolve a parsed Dockerfile into a per-platform plan of stages and steps.

Public names::

    resolve(dockerfile, *, target_platform, build_platform, build_args={},
            target=None, named_contexts=()) -> Plan
    resolve_all(dockerfile, platforms, *, build_platform=None, build_args={},
                target=None, named_contexts=()) -> MultiPlan
    Plan(target_platform, build_platform, stages, target, unused_build_args)
    MultiPlan(plans: dict[str, Plan], shared: set[str], unused_build_args: set[str])
    Stage(index, name, base, platform, steps, key, depends_on)
    Step(instruction, keyword, args, flags, flag_lists, heredocs, env, build_args,
         line, copy_from, mount_from)
    BaseRef(kind, ref, stage_index)      kind: "image" | "stage" | "scratch" | "context"
    FromRef(kind, ref, stage_index)      kind: "stage" | "image" | "context"
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from platforge.errors import DockerfileError

if TYPE_CHECKING:
    from platforge.dockerfile.parser import Dockerfile, Heredoc, Instruction
    from platforge.platforms import Platform

__all__ = [
    "BaseRef",
    "FromRef",
    "MultiPlan",
    "Plan",
    "Stage",
    "Step",
    "resolve",
    "resolve_all",
]

BaseKind = Literal["image", "stage", "scratch", "context"]
FromKind = Literal["stage", "image", "context"]


@dataclass(frozen=True)
class BaseRef:
    """What a stage starts from. ``ref`` is expanded; ``stage_index`` for a stage."""

    kind: BaseKind
    ref: str
    stage_index: int | None = None


@dataclass(frozen=True)
class FromRef:
    """The source of ``COPY --from`` or ``RUN --mount=from=``."""

    kind: FromKind
    ref: str
    stage_index: int | None = None


@dataclass
class Step:
    """One instruction of a stage with its words expanded in the stage's scope.

    ``args`` are expanded words for expanding instructions, the raw words for
    ``RUN``/``CMD``/``ENTRYPOINT``/``SHELL``/``ONBUILD`` (the shell expands those).
    ``flags`` maps each flag to its last expanded value (``""`` for a bare flag);
    ``flag_lists`` keeps every value of repeatable flags (``--mount``, ``--exclude``).
    ``env`` is the image config's environment at this step (``K=V``), ``build_args``
    the ARGs in scope, visible to ``RUN`` but never stored in the image config.
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
    """A ``FROM`` and its steps, resolved for one target platform."""

    index: int
    name: str | None
    base: BaseRef
    platform: Platform
    steps: list[Step]
    key: str = ""
    depends_on: list[int] = field(default_factory=list)


@dataclass
class Plan:
    """The stages one target platform needs, in dependency order (target last)."""

    target_platform: Platform
    build_platform: Platform
    stages: list[Stage]
    unused_build_args: set[str] = field(default_factory=set)

    @property
    def target(self) -> Stage:
        return self.stages[-1]


@dataclass
class MultiPlan:
    """One plan per platform (keyed by the platform string) and the shared stages."""

    plans: dict[str, Plan]
    shared: set[str] = field(default_factory=set)
    unused_build_args: set[str] = field(default_factory=set)


def resolve(
    dockerfile: Dockerfile,
    *,
    target_platform: Platform,
    build_platform: Platform,
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    named_contexts: Collection[str] = (),
) -> Plan:
    """Resolve ``dockerfile`` for one target platform."""
    raise DockerfileError("plan not implemented yet", file=dockerfile.filename)


def resolve_all(
    dockerfile: Dockerfile,
    platforms: Sequence[Platform],
    *,
    build_platform: Platform | None = None,
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    named_contexts: Collection[str] = (),
) -> MultiPlan:
    """Resolve ``dockerfile`` for every platform; mark stages shared across them."""
    raise DockerfileError("plan not implemented yet", file=dockerfile.filename)
