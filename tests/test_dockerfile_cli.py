"""``platforge dockerfile plan`` through the real CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from platforge.cli.main import cli

CROSS = """\
ARG GO=1.22
FROM --platform=$BUILDPLATFORM golang:${GO} AS build
ARG TARGETARCH
RUN GOARCH=$TARGETARCH go build -o /out/app .
FROM --platform=$BUILDPLATFORM alpine AS assets
RUN echo assets > /a
FROM scratch
COPY --from=build /out/app /app
COPY --from=assets /a /a
"""


@pytest.fixture
def dockerfile(tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text(CROSS)
    return path


def run(*args, stdin=None):
    return CliRunner().invoke(cli, list(args), input=stdin)


def test_plan_prints_each_platform_with_expanded_words_and_shared_stages(dockerfile):
    result = run(
        "dockerfile",
        "plan",
        str(dockerfile),
        "--platform",
        "linux/amd64,linux/arm64",
        "--build-platform",
        "linux/amd64",
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "platform linux/amd64 (built on linux/amd64)" in out
    assert "platform linux/arm64 (built on linux/amd64)" in out
    assert "stage 0 build: from image golang:1.22 on linux/amd64" in out
    assert "ARG TARGETARCH=arm64" in out
    assert "COPY --from=build /out/app /app    # from stage 0 (build)" in out
    assert out.count("[shared]") == 2  # the assets stage, once per platform
    assert "shared stages (built once): 1" in out


def test_plan_json_is_machine_readable(dockerfile):
    result = run(
        "dockerfile",
        "plan",
        str(dockerfile),
        "--platform",
        "linux/arm/v7",
        "--platform",
        "linux/amd64",
        "--build-arg",
        "GO=1.23",
        "--target",
        "build",
        "--json",
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert list(document["platforms"]) == ["linux/arm/v7", "linux/amd64"]
    arm = document["platforms"]["linux/arm/v7"]
    assert [s["name"] for s in arm["stages"]] == ["build"]
    stage = arm["stages"][0]
    assert stage["base"] == {"kind": "image", "ref": "golang:1.23", "stage_index": None}
    assert stage["steps"][0]["build_args"] == {"TARGETARCH": "arm"}
    assert document["unused_build_args"] == []


def test_unused_build_args_are_a_warning_not_an_error(dockerfile):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "platforge",
            "dockerfile",
            "plan",
            str(dockerfile),
            "--build-arg",
            "NOBODY=1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "NOBODY" in result.stderr
    assert json.loads(result.stdout)["unused_build_args"] == ["NOBODY"]


def test_a_bad_dockerfile_gives_file_and_line_on_stderr_and_status_1(tmp_path):
    bad = tmp_path / "Dockerfile.bad"
    bad.write_text("FROM alpine\nRUN ok\nCOPY --chmod 0755 a\n")
    result = subprocess.run(
        [sys.executable, "-m", "platforge", "dockerfile", "plan", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"{bad}:3: COPY:" in result.stderr


def test_an_unreadable_dockerfile_is_one_line_and_status_1():
    # /proc/self/mem is a regular file that answers EIO to a read at offset 0.
    result = subprocess.run(
        [sys.executable, "-m", "platforge", "dockerfile", "plan", "/proc/self/mem"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("platforge: error: /proc/self/mem: cannot read")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_a_dockerfile_that_is_not_utf8_is_named_with_the_byte(tmp_path):
    latin1 = tmp_path / "Dockerfile"
    latin1.write_bytes(b"FROM scratch\nLABEL a=\xe9t\xe9\n")
    result = run("dockerfile", "plan", str(latin1))
    assert result.exit_code == 1
    assert "not UTF-8 text (byte 21); save the Dockerfile as UTF-8" in str(
        result.exception
    )


def test_plan_reads_stdin_and_rejects_a_bad_platform():
    ok = run("dockerfile", "plan", "-", "--platform", "linux/riscv64", stdin="FROM a\n")
    assert ok.exit_code == 0, ok.output
    assert "platform linux/riscv64" in ok.output
    bad = run("dockerfile", "plan", "-", "--platform", "linux/a/b/c", stdin="FROM a\n")
    assert bad.exit_code != 0


def test_help_shows_an_example():
    result = run("dockerfile", "plan", "--help")
    assert result.exit_code == 0
    assert "Example:" in result.output
    assert "--platform linux/amd64,linux/arm64" in result.output


def test_human_output_quotes_values_with_blanks():
    text = 'FROM a\nARG E=\nLABEL title="two words" plain=x\nENV EMPTY=$E\n'
    result = run("dockerfile", "plan", "-", stdin=text)
    assert result.exit_code == 0, result.output
    assert 'LABEL title="two words" plain=x' in result.output
    assert 'ENV EMPTY=""' in result.output


def test_build_contexts_replace_images_and_stages_in_the_plan():
    text = "FROM alpine AS base\nFROM base\nCOPY --from=tools /t /t\n"
    result = run(
        "dockerfile",
        "plan",
        "-",
        "--build-context",
        "base=docker-image://127.0.0.1:5000/base",
        "--build-context",
        "tools=./tools",
        "--json",
        stdin=text,
    )
    assert result.exit_code == 0, result.output
    (only,) = json.loads(result.output)["platforms"].values()
    stage = only["stages"][-1]
    assert [s["index"] for s in only["stages"]] == [1]
    assert stage["base"]["kind"] == "context"
    assert stage["steps"][0]["copy_from"] == {
        "kind": "context",
        "ref": "tools",
        "stage_index": None,
    }
    bad = run("dockerfile", "plan", "-", "--build-context", "noequals", stdin=text)
    assert bad.exit_code == 2
