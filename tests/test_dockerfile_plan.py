"""Stages, args and automatic platform args: the per-platform plan, rule by rule."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from platforge import platforms
from platforge.dockerfile.parser import parse
from platforge.dockerfile.plan import BaseRef, FromRef, resolve, resolve_all
from platforge.errors import DockerfileError

AMD64 = platforms.parse("linux/amd64")
ARM64 = platforms.parse("linux/arm64")
ARM = platforms.parse("linux/arm")


def plan_of(text, *, target_platform=AMD64, build_platform=AMD64, **kwargs):
    return resolve(
        parse(text, filename="Dockerfile"),
        target_platform=target_platform,
        build_platform=build_platform,
        **kwargs,
    )


def steps_of(text, **kwargs):
    return [(step.keyword, step.args) for step in plan_of(text, **kwargs).target.steps]


# -- args and their scopes ---------------------------------------------------------

ARG_CASES = [
    pytest.param(
        "ARG V=3\nFROM alpine:$V\nRUN x\n",
        {},
        "alpine:3",
        {},
        id="a global ARG expands FROM but is invisible in the stage",
    ),
    pytest.param(
        "ARG V=3\nFROM alpine:$V\nARG V\nRUN x\n",
        {},
        "alpine:3",
        {"V": "3"},
        id="a bare ARG in the stage takes the global value",
    ),
    pytest.param(
        "ARG V=3\nFROM alpine:$V\nARG V\nRUN x\n",
        {"V": "4"},
        "alpine:4",
        {"V": "4"},
        id="a build arg overrides the global default everywhere",
    ),
    pytest.param(
        "ARG V=3\nFROM a\nARG V=5\nRUN x\n",
        {},
        "a",
        {"V": "5"},
        id="a stage default wins over the global default",
    ),
    pytest.param(
        "FROM a\nARG V=5\nRUN x\n",
        {"V": "6"},
        "a",
        {"V": "6"},
        id="a build arg overrides a stage default",
    ),
    pytest.param(
        "FROM a\nARG V\nRUN x\n",
        {},
        "a",
        {},
        id="an ARG without value or build arg is declared but unset",
    ),
    pytest.param(
        "FROM a\nARG A=1 B=${A}2\nRUN x\n",
        {},
        "a",
        {"A": "1", "B": "12"},
        id="ARG defaults see the ARGs before them",
    ),
    pytest.param(
        "FROM a\nRUN x\n",
        {"HTTP_PROXY": "http://127.0.0.1:3128"},
        "a",
        {"HTTP_PROXY": "http://127.0.0.1:3128"},
        id="proxy build args reach RUN without an ARG",
    ),
]


@pytest.mark.parametrize(("text", "build_args", "base", "run_args"), ARG_CASES)
def test_arg_scoping_rules(text, build_args, base, run_args):
    plan = plan_of(text, build_args=build_args)
    assert plan.target.base.ref == base
    assert plan.target.steps[-1].build_args == run_args


PLATFORM_ARG_CASES = [
    pytest.param(
        "FROM a\nRUN x\n", AMD64, {}, {}, id="automatic args are invisible until ARG"
    ),
    pytest.param(
        "FROM a\nARG TARGETARCH TARGETOS TARGETVARIANT\nRUN x\n",
        ARM,
        {},
        {"TARGETARCH": "arm", "TARGETOS": "linux", "TARGETVARIANT": "v7"},
        id="linux/arm is normalised to variant v7",
    ),
    pytest.param(
        "FROM a\nARG TARGETPLATFORM BUILDPLATFORM BUILDARCH BUILDVARIANT\nRUN x\n",
        ARM64,
        {},
        {
            "TARGETPLATFORM": "linux/arm64",
            "BUILDPLATFORM": "linux/amd64",
            "BUILDARCH": "amd64",
            "BUILDVARIANT": "",
        },
        id="target and build platform args",
    ),
    pytest.param(
        "FROM --platform=linux/amd64 a\nARG TARGETARCH\nRUN x\n",
        ARM64,
        {},
        {"TARGETARCH": "arm64"},
        id="FROM --platform does not change TARGETARCH",
    ),
    pytest.param(
        "FROM a\nARG TARGETARCH\nRUN x\n",
        ARM64,
        {"TARGETARCH": "riscv64"},
        {"TARGETARCH": "riscv64"},
        id="a build arg overrides an automatic arg",
    ),
    pytest.param(
        "FROM a AS final\nARG TARGETSTAGE\nRUN x\n",
        AMD64,
        {},
        {"TARGETSTAGE": "final"},
        id="TARGETSTAGE names the target",
    ),
    pytest.param(
        "FROM a AS first\nFROM a\nARG TARGETSTAGE\nRUN x\n",
        AMD64,
        {},
        {"TARGETSTAGE": "default"},
        id="TARGETSTAGE of an unnamed target is default",
    ),
]


@pytest.mark.parametrize(
    ("text", "target", "build_args", "expected"), PLATFORM_ARG_CASES
)
def test_automatic_platform_args(text, target, build_args, expected):
    plan = plan_of(text, target_platform=target, build_args=build_args)
    assert plan.target.steps[-1].build_args == expected


def test_a_bare_global_arg_keeps_the_automatic_value():
    # Current BuildKit; dockerd 20.10's built-in frontend empties it instead.
    text = "ARG TARGETARCH\nFROM base-$TARGETARCH\nARG TARGETARCH\nRUN x\n"
    plan = plan_of(text, target_platform=ARM64)
    assert plan.target.base.ref == "base-arm64"
    assert plan.target.steps[-1].build_args == {"TARGETARCH": "arm64"}


def test_automatic_args_expand_global_args_and_from_lines():
    text = "ARG IMG=base-$TARGETARCH\nFROM $IMG\nRUN x\n"
    assert plan_of(text, target_platform=ARM64).target.base.ref == "base-arm64"


CROSS = """\
FROM --platform=$BUILDPLATFORM golang AS build
ARG TARGETOS TARGETARCH
RUN GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /out/app
FROM scratch
COPY --from=build /out/app /app
"""


def test_cross_compile_idiom_builds_on_the_build_platform_for_each_target():
    multi = resolve_all(parse(CROSS), [AMD64, ARM64], build_platform=AMD64)
    assert list(multi.plans) == ["linux/amd64", "linux/arm64"]
    arm = multi.plans["linux/arm64"]
    build, final = arm.stages
    assert build.platform == AMD64
    assert build.steps[-1].build_args == {"TARGETOS": "linux", "TARGETARCH": "arm64"}
    assert build.steps[-1].args == [
        "GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /out/app"
    ]
    assert final.platform == ARM64
    assert final.steps[0].copy_from == FromRef("stage", "build", 0)
    # The build stage declares TARGETARCH, so it differs per platform.
    assert not multi.shared


def test_arg_targetarch_then_copy_picks_the_per_platform_binary():
    text = "FROM scratch\nARG TARGETARCH\nCOPY bin/app-${TARGETARCH} /app\n"
    multi = resolve_all(parse(text), [AMD64, ARM64, ARM], build_platform=AMD64)
    copies = {name: p.target.steps[-1].args for name, p in multi.plans.items()}
    assert copies == {
        "linux/amd64": ["bin/app-amd64", "/app"],
        "linux/arm64": ["bin/app-arm64", "/app"],
        "linux/arm/v7": ["bin/app-arm", "/app"],
    }


def test_a_build_platform_stage_without_target_args_is_shared():
    text = (
        "FROM --platform=$BUILDPLATFORM alpine AS gen\nRUN echo hi > /g\n"
        "FROM alpine\nCOPY --from=gen /g /g\n"
    )
    multi = resolve_all(parse(text), [AMD64, ARM64], build_platform=AMD64)
    gen_keys = {p.stages[0].key for p in multi.plans.values()}
    final_keys = {p.target.key for p in multi.plans.values()}
    assert len(gen_keys) == 1
    assert gen_keys <= multi.shared
    assert len(final_keys) == 2
    assert not final_keys & multi.shared


def test_unused_build_args_are_reported_but_not_fatal():
    text = "ARG USED\nFROM a\nRUN x\n"
    plan = plan_of(
        text,
        build_args={
            "USED": "1",
            "NOBODY": "2",
            "TARGETARCH": "x",
            "SOURCE_DATE_EPOCH": "0",
            "BUILDKIT_INLINE_CACHE": "1",
            "no_proxy": "127.0.0.1",
        },
    )
    assert plan.unused_build_args == {"NOBODY"}


def test_source_date_epoch_is_a_build_arg_and_a_number():
    plan = plan_of(
        "FROM a\nARG SOURCE_DATE_EPOCH\nRUN x\n",
        build_args={"SOURCE_DATE_EPOCH": "1700000000"},
    )
    assert plan.source_date_epoch == 1700000000
    assert plan.target.steps[-1].build_args == {"SOURCE_DATE_EPOCH": "1700000000"}
    from_arg = plan_of("ARG SOURCE_DATE_EPOCH=86400\nFROM a\n")
    assert from_arg.source_date_epoch == 86400
    with pytest.raises(DockerfileError, match="SOURCE_DATE_EPOCH='soon'"):
        plan_of("FROM a\n", build_args={"SOURCE_DATE_EPOCH": "soon"})


# -- environment and expansion -----------------------------------------------------


def test_env_wins_over_arg_and_expands_with_values_from_before():
    text = "FROM a\nARG X=arg\nENV X=env\nENV Y=$X A=1 B=$A\nWORKDIR /$X/$B\n"
    steps = plan_of(text).target.steps
    assert steps[2].args == ["Y=env", "A=1", "B="]
    assert steps[3].args == ["/env/"]
    assert steps[3].env == ["X=env", "Y=env", "A=1", "B="]
    assert steps[3].build_args == {"X": "arg"}


def test_a_stage_built_on_a_stage_inherits_its_env_args_and_platform():
    text = (
        "FROM --platform=$BUILDPLATFORM a AS one\nARG P=1\nENV E=2\n"
        "FROM --platform=linux/s390x one\nRUN x\n"
    )
    plan = plan_of(text, target_platform=ARM64, build_platform=AMD64)
    child = plan.target
    assert child.base == BaseRef("stage", "one", 0)
    assert child.platform == AMD64  # the parent's, whatever FROM --platform says
    assert child.steps[0].env == ["E=2"]
    assert child.steps[0].build_args == {"P": "1"}
    redeclared = plan_of(text.replace("RUN x", "ARG P\nRUN x")).target.steps[-1]
    assert redeclared.build_args == {"P": "1"}


def test_image_env_supplies_the_base_image_environment():
    text = "FROM a\nENV PATH=$PATH:/opt/bin\n"
    asked = []

    def image_env(ref, platform):
        asked.append((ref, platform))
        return ["PATH=/usr/bin", "K=v"]

    plan = plan_of(text, target_platform=ARM64, image_env=image_env)
    assert asked == [("a", ARM64)]
    assert plan.target.steps[0].env == ["PATH=/usr/bin:/opt/bin", "K=v"]

    # Resolving the copy source first must not ask for the same image twice.
    asked.clear()
    plan_of("FROM a AS x\nFROM b\nCOPY --from=x /a /b\n", image_env=image_env)
    assert sorted(asked) == [("a", AMD64), ("b", AMD64)]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("RUN echo $V", ["echo $V"]),
        ('CMD ["echo", "$V"]', ["echo", "$V"]),
        ("ENTRYPOINT echo $V", ["echo $V"]),
        ("ONBUILD RUN echo $V", ["RUN echo $V"]),
        ("HEALTHCHECK CMD echo $V", ["CMD", "echo $V"]),
        ("WORKDIR /x/$V", ["/x/v 1"]),
        ("USER ${V%% *}", ["v"]),
        ("STOPSIGNAL $V", ["v 1"]),
        ("EXPOSE $V 80/tcp", ["v", "1", "80/tcp"]),
        ("VOLUME /d/$V", ["/d/v 1"]),
        ('LABEL "k$V"="x $V"', ["kv 1=x v 1"]),
        ("COPY a$V /b/", ["av 1", "/b/"]),
        ('ADD ["$V", "/d"]', ["v 1", "/d"]),
    ],
)
def test_which_instructions_expand_their_words(line, expected):
    steps = steps_of(f"FROM a\nARG V='v 1'\n{line}\n")
    assert steps[-1][1] == expected


def test_flags_are_expanded_and_repeatable_flags_keep_every_value():
    text = (
        "FROM a\nARG U=1000 C=cache\n"
        "RUN --mount=type=cache,target=/$C --mount=type=tmpfs,target=/t x\n"
        "COPY --chown=$U:$U --exclude=*.md --exclude=*.txt . /app\n"
    )
    run, copy = plan_of(text).target.steps[1:]
    assert run.flag_lists["mount"] == [
        "type=cache,target=/cache",
        "type=tmpfs,target=/t",
    ]
    assert copy.flags["chown"] == "1000:1000"
    assert copy.flag_lists["exclude"] == ["*.md", "*.txt"]


@pytest.mark.parametrize(
    "line",
    ["COPY --from=$IMG /a /b", "RUN --mount=type=bind,from=${IMG},target=/m x"],
)
def test_stage_references_are_never_expanded(line):
    with pytest.raises(DockerfileError, match=r"^Dockerfile:3: .*FROM \$IMAGE AS src"):
        plan_of(f"FROM a\nARG IMG=x\n{line}\n")


def test_mount_options_other_than_from_are_expanded():
    text = "FROM a AS s\nFROM b\nARG T=/m\nRUN --mount=from=s,target=$T,ro x\n"
    run = plan_of(text).target.steps[-1]
    assert run.flag_lists["mount"] == ["from=s,target=/m,ro"]
    assert run.mount_from == [FromRef("stage", "s", 0)]


def test_copy_heredoc_body_is_expanded_unless_the_delimiter_is_quoted():
    text = (
        "FROM a\nARG V=1\nCOPY <<A <<'B' /d/\nv=$V\nA\nv=$V\nB\nRUN <<C\necho $V\nC\n"
    )
    copy, run = plan_of(text).target.steps[1:]
    assert [h.content for h in copy.heredocs] == ["v=1\n", "v=$V\n"]
    assert copy.args == ["<<A", "<<B", "/d/"]
    assert [h.content for h in run.heredocs] == ["echo $V\n"]


def test_expansion_errors_are_located_at_their_instruction():
    with pytest.raises(DockerfileError, match=r"^Dockerfile:3: COPY: V: needed"):
        plan_of("FROM a\nRUN x\nCOPY ${V:?needed} /d\n")


# -- the stage graph -----------------------------------------------------------------

GRAPH = """\
FROM alpine AS base
RUN base
FROM base AS tools
RUN tools
FROM golang AS unused
RUN ${BROKEN:?never expanded because pruned}
FROM scratch AS app
COPY --from=tools /t /t
COPY --from=0 /b /b
COPY --from=nginx:1 /n /n
RUN --mount=type=bind,from=base,target=/m x
"""


def test_stages_are_resolved_in_dependency_order_and_unused_ones_pruned():
    plan = plan_of(GRAPH)
    assert [(s.index, s.name) for s in plan.stages] == [
        (0, "base"),
        (1, "tools"),
        (3, "app"),
    ]
    assert plan.stages[1].base == BaseRef("stage", "base", 0)
    assert plan.target.base == BaseRef("scratch", "scratch")
    steps = plan.target.steps
    assert steps[0].copy_from == FromRef("stage", "tools", 1)
    assert steps[1].copy_from == FromRef("stage", "base", 0)
    assert steps[2].copy_from == FromRef("image", "nginx:1")
    assert steps[3].mount_from == [FromRef("stage", "base", 0)]
    assert sorted(plan.target.depends_on) == [0, 1]


def test_target_selects_a_stage_and_prunes_the_rest():
    plan = plan_of(GRAPH, target="TOOLS")
    assert [s.name for s in plan.stages] == ["base", "tools"]
    with pytest.raises(DockerfileError, match="target stage 'nope' not found"):
        plan_of(GRAPH, target="nope")


def test_named_contexts_override_a_from_image_a_stage_and_a_copy_source():
    plan = plan_of(GRAPH, named_contexts={"alpine", "tools", "nginx:1"})
    assert [s.name for s in plan.stages] == ["base", "app"]
    assert plan.stages[0].base == BaseRef("context", "alpine")
    assert plan.target.steps[0].copy_from == FromRef("context", "tools")
    assert plan.target.steps[2].copy_from == FromRef("context", "nginx:1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "FROM b\nFROM a\nCOPY --from=1 x y\n",
            r"^Dockerfile:3: COPY: --from=1 names stage 1",
        ),
        ("FROM a\nCOPY --from=7 x y\n", "--from=7 names stage 7"),
        (
            "FROM a AS x\nFROM b AS X\n",
            r"^Dockerfile:2: FROM: duplicate stage name 'x'",
        ),
        ("FROM $NOPE\n", r"^Dockerfile:1: FROM: base name '\$NOPE' expands to nothing"),
        ("FROM --platform=linux/x/y/z a\n", r"^Dockerfile:1: FROM: --platform="),
    ],
)
def test_bad_stage_references_are_errors(text, message):
    with pytest.raises(DockerfileError, match=message):
        plan_of(text)


def test_copy_from_a_later_stage_is_an_error():
    text = "FROM a AS first\nCOPY --from=later x y\nFROM b AS later\n"
    with pytest.raises(DockerfileError, match=r"^Dockerfile:2: COPY: .* not earlier"):
        plan_of(text, target="first")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("RUN x\nFROM a\n", r"^Dockerfile:1: RUN: only ARG may come before the first"),
        ("ARG x\n", r"^Dockerfile:1: no FROM instruction"),
    ],
)
def test_a_dockerfile_must_start_its_stages_with_from(text, message):
    with pytest.raises(DockerfileError, match=message):
        plan_of(text)


@pytest.mark.parametrize(
    "written", ["alpine", "alpine:latest", "docker.io/library/alpine:latest"]
)
def test_a_named_context_matches_the_short_and_long_spellings_of_an_image(written):
    plan = plan_of(
        f"FROM {written}\nCOPY --from={written} /a /b\n", named_contexts={"alpine"}
    )
    assert plan.target.base == BaseRef("context", "alpine")
    assert plan.target.steps[0].copy_from == FromRef("context", "alpine")
    assert (
        plan_of("FROM alpine:3\n", named_contexts={"alpine"}).target.base.kind
        == "image"
    )


def test_stage_platform_is_from_platform_or_the_target():
    text = "FROM --platform=linux/arm64 a AS x\nFROM b\n"
    plan = plan_of(text, target="x", target_platform=AMD64)
    assert plan.target.platform == ARM64
    assert plan_of(text, target_platform=ARM).target.platform == ARM


def test_stage_keys_are_stable_and_sensitive_to_inputs():
    text = "FROM a\nARG V\nRUN x\n"
    first = plan_of(text, build_args={"V": "1"}).target.key
    again = plan_of(text, build_args={"V": "1"}).target.key
    other = plan_of(text, build_args={"V": "2"}).target.key
    assert first == again
    assert first != other
    assert first.startswith("sha256:")


_LINES = st.sampled_from(
    [
        "FROM a",
        "FROM a AS x",
        "FROM x",
        "FROM --platform=$BUILDPLATFORM a AS y",
        "FROM $V",
        "FROM --platform=$V b",
        "ARG V",
        "ARG V=1",
        "ARG TARGETARCH",
        "ENV A=$V",
        "ENV B ${A:-x}",
        "COPY --from=x a b",
        "COPY --from=0 a b",
        "COPY <<E /d",
        "E",
        "RUN --mount=from=x,target=/m echo",
        "WORKDIR /${V:?no}",
        "EXPOSE $V",
        "USER ${V/1/2}",
        "COPY ${V%%x} /d",
        "FROM scratch",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_LINES, min_size=1, max_size=10).map(lambda ls: "\n".join(ls) + "\n"),
    st.sampled_from([None, "x", "y"]),
    st.dictionaries(
        st.sampled_from(["V", "TARGETARCH"]),
        st.sampled_from(["", "1", "linux/arm64", "x y", "$"]),
    ),
)
def test_planning_never_raises_anything_but_dockerfile_error(text, target, args):
    with contextlib.suppress(DockerfileError):
        resolve_all(
            parse(text),
            [AMD64, ARM],
            build_platform=AMD64,
            target=target,
            build_args=args,
            named_contexts={"x"},
        )


def test_a_very_long_chain_of_stages_resolves_without_deep_recursion():
    chain = "".join(f"FROM s{i - 1} AS s{i}\nRUN step{i}\n" for i in range(1, 1500))
    plan = plan_of("FROM a AS s0\n" + chain)
    assert len(plan.stages) == 1500
    assert plan.target.base == BaseRef("stage", "s1498", 1498)
