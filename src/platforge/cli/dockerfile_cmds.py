"""``platforge dockerfile plan``: show what a build of a Dockerfile would do.

The plan is printed to stdout, one block per target platform: the stages the target
needs in the order they run, each step with its words expanded, and which stages are
identical across platforms (built once). Warnings (build args nothing consumed) go to
stderr. A Dockerfile that does not parse or resolve gives ``FILE:LINE: …`` on stderr
and exit status 1.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from platforge import platforms
from platforge.dockerfile import parser, plan

if TYPE_CHECKING:
    from platforge.dockerfile.plan import BaseRef, FromRef, MultiPlan, Stage, Step

__all__ = ["register"]


def _build_args(pairs: tuple[str, ...]) -> dict[str, str]:
    """``K=V`` pairs; a bare ``K`` takes its value from the environment, as docker."""
    args: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not key:
            raise click.BadParameter(
                f"{pair!r}: expected KEY=VALUE", param_hint="--build-arg"
            )
        if sep:
            args[key] = value
        elif key in os.environ:
            args[key] = os.environ[key]
    return args


def _ref_text(ref: BaseRef | FromRef) -> str:
    if ref.kind == "stage":
        return f"stage {ref.stage_index} ({ref.ref})"
    if ref.kind == "scratch":
        return "scratch"
    return f"{ref.kind} {ref.ref}"


def _ref_json(ref: BaseRef | FromRef | None) -> dict[str, Any] | None:
    if ref is None:
        return None
    return {"kind": ref.kind, "ref": ref.ref, "stage_index": ref.stage_index}


def _pair_text(word: str) -> str:
    """``key=value`` with the value quoted when blanks or quotes would blur it."""
    key, sep, value = word.partition("=")
    if sep and (not value or any(c.isspace() or c in "\"'" for c in value)):
        return f"{key}={json.dumps(value, ensure_ascii=False)}"
    return word


def _step_text(step: Step) -> str:
    flags = " ".join(
        f"--{name}"
        if value == "" and name in ("link", "parents")
        else f"--{name}={value}"
        for name, values in step.flag_lists.items()
        for value in values
    )
    if step.instruction.json_form:
        words = json.dumps(step.args, ensure_ascii=False)
    elif step.keyword in ("ENV", "LABEL", "ARG"):
        words = " ".join(_pair_text(word) for word in step.args)
    else:
        words = " ".join(step.args)
    text = " ".join(part for part in (step.keyword, flags, words) if part)
    extras = []
    if step.copy_from is not None:
        extras.append(f"from {_ref_text(step.copy_from)}")
    extras.extend(f"mounts {_ref_text(ref)}" for ref in step.mount_from)
    extras.extend(f"<<{h.name} ({len(h.content)} bytes)" for h in step.heredocs)
    if extras:
        text += "    # " + "; ".join(extras)
    return text


def _stage_title(stage: Stage, shared: set[str]) -> str:
    name = f" {stage.name}" if stage.name else ""
    mark = "  [shared]" if stage.key in shared else ""
    return (
        f"  stage {stage.index}{name}: from {_ref_text(stage.base)} on "
        f"{platforms.format(stage.platform)}  key {stage.key[:19]}{mark}"
    )


def _print_human(multi: MultiPlan) -> None:
    for platform, resolved in multi.plans.items():
        built_on = platforms.format(resolved.build_platform)
        click.echo(f"platform {platform} (built on {built_on})")
        for stage in resolved.stages:
            click.echo(_stage_title(stage, multi.shared))
            for step in stage.steps:
                click.echo(f"    {step.line:>4}  {_step_text(step)}")
    if multi.shared:
        click.echo(f"shared stages (built once): {len(multi.shared)}")


def _step_json(step: Step) -> dict[str, Any]:
    return {
        "line": step.line,
        "keyword": step.keyword,
        "args": step.args,
        "json_form": step.instruction.json_form,
        "flags": step.flag_lists,
        "heredocs": [
            {
                "name": h.name,
                "content": h.content,
                "expand": h.expand,
                "chomp_tabs": h.chomp_tabs,
            }
            for h in step.heredocs
        ],
        "env": step.env,
        "build_args": step.build_args,
        "copy_from": _ref_json(step.copy_from),
        "mount_from": [_ref_json(r) for r in step.mount_from],
    }


def _as_json(multi: MultiPlan) -> dict[str, Any]:
    return {
        "platforms": {
            name: {
                "target_platform": platforms.format(p.target_platform),
                "build_platform": platforms.format(p.build_platform),
                "source_date_epoch": p.source_date_epoch,
                "stages": [
                    {
                        "index": s.index,
                        "name": s.name,
                        "base": _ref_json(s.base),
                        "platform": platforms.format(s.platform),
                        "key": s.key,
                        "shared": s.key in multi.shared,
                        "depends_on": s.depends_on,
                        "line": s.line,
                        "steps": [_step_json(step) for step in s.steps],
                    }
                    for s in p.stages
                ],
            }
            for name, p in multi.plans.items()
        },
        "shared": sorted(multi.shared),
        "unused_build_args": sorted(multi.unused_build_args),
    }


@click.command("plan")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option(
    "--platform",
    "platform_specs",
    multiple=True,
    metavar="P[,P…]",
    help="Target platforms (repeatable or comma-separated). Default: this host's.",
)
@click.option(
    "--build-platform",
    metavar="P",
    help="Platform the build runs on (BUILDPLATFORM). Default: this host's.",
)
@click.option(
    "--build-arg",
    "build_arg_pairs",
    multiple=True,
    metavar="K=V",
    help="Set a build arg; a bare K takes its value from the environment.",
)
@click.option("--target", metavar="STAGE", help="Plan this stage instead of the last.")
@click.option(
    "--build-context",
    "build_contexts",
    multiple=True,
    metavar="NAME=SRC",
    help="A named context; FROM NAME and COPY --from=NAME then use it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_command(
    *,
    file: str,
    platform_specs: tuple[str, ...],
    build_platform: str | None,
    build_arg_pairs: tuple[str, ...],
    target: str | None,
    build_contexts: tuple[str, ...],
    as_json: bool,
) -> None:
    """Print the per-platform plan of Dockerfile FILE ("-" reads stdin).

    \b
    Example:
      platforge dockerfile plan Dockerfile --platform linux/amd64,linux/arm64 \\
          --build-arg VERSION=1.2 --target app
    """
    if file == "-":
        filename = "<stdin>"
        text = parser.decode(sys.stdin.buffer.read(), filename=filename)
    else:
        filename = file
        text = parser.read_dockerfile(file)

    targets = [p for spec in platform_specs for p in platforms.parse_list(spec)]
    if not targets:
        targets = [platforms.host()]
    build = platforms.parse(build_platform) if build_platform else platforms.host()
    contexts = []
    for item in build_contexts:
        name, sep, _ = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(
                f"{item!r}: expected NAME=SOURCE", param_hint="--build-context"
            )
        contexts.append(name)

    dockerfile = parser.parse(text, filename=filename)
    multi = plan.resolve_all(
        dockerfile,
        targets,
        build_platform=build,
        build_args=_build_args(build_arg_pairs),
        target=target,
        named_contexts=contexts,
    )
    for warning in dockerfile.warnings:
        click.echo(f"platforge: warning: {warning}", err=True)
    if multi.unused_build_args:
        names = ", ".join(sorted(multi.unused_build_args))
        click.echo(
            f"platforge: warning: build args not consumed by any ARG: {names}",
            err=True,
        )
    if as_json:
        click.echo(json.dumps(_as_json(multi), indent=2, ensure_ascii=False))
    else:
        _print_human(multi)


@click.group("dockerfile")
def dockerfile_group() -> None:
    """Inspect Dockerfiles: how they parse and what a build would do.

    \b
    Example:
      platforge dockerfile plan Dockerfile --platform linux/amd64,linux/arm64
    """


dockerfile_group.add_command(plan_command)


def register(group: click.Group) -> None:
    """Add ``platforge dockerfile …`` to ``group``."""
    group.add_command(dockerfile_group)
