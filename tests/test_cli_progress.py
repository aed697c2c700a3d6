"""What a user sees of a build's progress: live lines, upload bars, plain lines.

The live display is rendered to a rich console forced to behave as a terminal and
writing to a string, fed by real builds (FROM scratch, COPY only: no RUN, so no
sandbox and no QEMU) and, for the push, a loopback registry. The command-line
tests run ``python -m platforge build`` and read its stdout and stderr.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING

import pytest
from rich.console import Console

from platforge import platforms
from platforge.build import BuildEvent, BuildRequest, Output, build
from platforge.cli.progress import BlobReporter, TerminalDisplay, build_display
from platforge.registry.progress import BlobEvent

if TYPE_CHECKING:
    from pathlib import Path

    from testbed import Registry

PER_ARCH = """\
FROM scratch
ARG TARGETARCH
COPY rootfs-${TARGETARCH}/ /
COPY hello.txt /srv/hello.txt
"""

PLATFORMS = ["linux/amd64", "linux/arm64"]
ARCH_OF = {"linux/amd64": "amd64", "linux/arm64": "arm64"}
# DownloadColumn's "done/total unit", e.g. "1.1/1.1 MB" or "812/812 bytes".
BYTES = re.compile(r"\d+(\.\d+)?/\d+(\.\d+)? (bytes|kB|MB)")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _terminal() -> tuple[Console, io.StringIO]:
    sink = io.StringIO()
    console = Console(
        file=sink, force_terminal=True, width=120, color_system=None, record=True
    )
    return console, sink


def _seen(sink: io.StringIO) -> str:
    return ANSI.sub("", sink.getvalue()).replace("\r", "\n")


@pytest.fixture
def context(tmp_path: Path, tmp_store: Path, busybox: dict[str, Path]) -> Path:
    del tmp_store
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(PER_ARCH)
    (ctx / "hello.txt").write_text("hello\n")
    for arch in ARCH_OF.values():
        shutil.copytree(busybox[arch], ctx / f"rootfs-{arch}", symlinks=True)
    return ctx


def _request(context: Path, display: TerminalDisplay, **fields: object) -> BuildRequest:
    return BuildRequest(
        context=context,
        platforms=[platforms.parse(p) for p in PLATFORMS],
        progress=display.on_build,
        blob_progress=display.on_blob,
        **fields,  # type: ignore[arg-type]
    )


def _platforge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "platforge", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_terminal_shows_one_line_per_platform_with_its_step_and_cached_mark(
    context: Path, tmp_path: Path
) -> None:
    out = [Output("oci", tmp_path / "image")]
    first_console, first_sink = _terminal()
    first = TerminalDisplay(first_console)
    with first:
        build(_request(context, first, outputs=out))

    console, sink = _terminal()
    display = TerminalDisplay(console)
    request = _request(context, display, outputs=out)
    with display:
        result = build(request)
    display.finished(result, request)

    ran, cached = _seen(first_sink), _seen(sink)
    for platform in PLATFORMS:
        last_step = (
            rf"^{re.escape(platform)} +\[\S+ 3/3\] COPY hello.txt /srv/hello.txt +"
        )
        assert re.search(rf"{last_step}\d+\.\ds$", ran, re.MULTILINE), ran
        assert re.search(rf"{last_step}CACHED \d+\.\ds$", cached, re.MULTILINE), cached
        assert f"manifest {platform}  sha256:" in cached
    assert "CACHED" not in ran
    assert f"index  {result.digest}" in cached


def test_terminal_prints_log_lines_above_the_live_area_and_shared_work_apart() -> None:
    console, sink = _terminal()
    display = TerminalDisplay(console)
    assert display.on_build is not None
    with display:
        display.on_build(BuildEvent("start", "[base 1/1] FROM scratch", None, step=1))
        display.on_build(BuildEvent("log", "compiling", "linux/arm64", step=2))
        display.on_build(BuildEvent("info", "wrote oci output to image"))
    seen = _seen(sink)
    assert "linux/arm64 | compiling\n" in seen
    assert "wrote oci output to image\n" in seen
    assert re.search(
        r"^shared +\[base 1/1\] FROM scratch +\d+\.\ds$", seen, re.MULTILINE
    )


def test_terminal_sends_log_records_above_the_live_area_not_through_it() -> None:
    console, sink = _terminal()
    handler = logging.StreamHandler(sys.stderr)
    original = handler.stream
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        display = TerminalDisplay(console)
        with display:
            assert handler.stream is not original
            logging.getLogger("platforge.test").warning("a warning mid-build")
        assert handler.stream is original
    finally:
        root.removeHandler(handler)
    assert "a warning mid-build\n" in _seen(sink)


@pytest.mark.registry
def test_terminal_push_shows_a_bar_with_bytes_for_each_blob_then_the_tags(
    context: Path, registry_plain: Registry
) -> None:
    tag = registry_plain.ref(f"progress/{uuid.uuid4().hex[:8]}", "v1")
    console, sink = _terminal()
    display = TerminalDisplay(console)
    request = _request(context, display, tags=[tag], push=True)
    with display:
        result = build(request)
    display.finished(result, request)

    seen = _seen(sink)
    pushed = re.findall(rf"pushed ([0-9a-f]{{12}}) .*? {BYTES.pattern} ", seen)
    assert len(set(pushed)) >= 2, seen  # at least each platform's busybox layer
    assert f"pushed {tag}" in seen


def test_blob_reporter_draws_bars_on_a_terminal_and_lines_elsewhere() -> None:
    digest = "sha256:" + "ab" * 32
    events = [
        BlobEvent("start", digest, 2048, "push"),
        BlobEvent("bytes", digest, 2048, "push", 2048),
        BlobEvent("done", digest, 2048, "pushed"),
    ]
    console, sink = _terminal()
    with BlobReporter(console) as bars:
        for event in events:
            bars(event)
    assert re.search(r"pushed abababababab .*2\.0/2\.0 kB", _seen(sink))

    plain = Console(file=io.StringIO(), force_terminal=False, width=120, record=True)
    with BlobReporter(plain) as lines:
        for event in events:
            lines(event)
    assert plain.export_text() == "  pushed sha256:abababababab  2.0 KiB\n"


def test_quiet_display_reports_nothing() -> None:
    display = build_display("tty", quiet=True)
    assert display.on_build is None
    assert display.on_blob is None


def test_cli_plain_progress_keeps_its_timestamped_lines(
    context: Path, tmp_path: Path
) -> None:
    ran = _platforge(
        "build",
        str(context),
        "--platform",
        ",".join(PLATFORMS),
        "-o",
        f"type=oci,dest={tmp_path / 'out'}",
        "--progress",
        "plain",
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("sha256:")
    assert ran.stdout.count("\n") == 1
    for platform in PLATFORMS:
        assert re.search(
            rf"^ +\d+\.\d \[{platform}\] START  \[\S+ 2/3\] COPY rootfs-",
            ran.stderr,
            re.MULTILINE,
        ), ran.stderr
        assert re.search(
            rf"^ +\d+\.\d \[{platform}\] DONE   \[\S+ 2/3\] COPY \d+\.\d\ds$",
            ran.stderr,
            re.MULTILINE,
        ), ran.stderr
    assert re.search(
        r"^ +\d+\.\d INFO   built 2 platform\(s\)", ran.stderr, re.MULTILINE
    )


def test_cli_quiet_prints_only_the_digest(context: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ran = _platforge(
        "build",
        str(context),
        "--platform",
        ",".join(PLATFORMS),
        "-o",
        f"type=oci,dest={out}",
        "--quiet",
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr == ""
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", ran.stdout)
    assert (tmp_path / "digest").read_text() == ran.stdout.strip()


@pytest.mark.registry
def test_cli_tty_push_shows_upload_bytes_and_keeps_stdout_to_the_digest(
    context: Path, tmp_path: Path, registry_plain: Registry
) -> None:
    tag = registry_plain.ref(f"progress/{uuid.uuid4().hex[:8]}", "tty")
    ran = _platforge(
        "build",
        str(context),
        "--platform",
        "linux/arm64",
        "-t",
        tag,
        "--push",
        "--progress",
        "tty",
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", ran.stdout)
    seen = ANSI.sub("", ran.stderr)
    assert re.search(rf"pushed [0-9a-f]{{12}} .*? {BYTES.pattern} ", seen), seen
    assert f"manifest linux/arm64  {ran.stdout.strip()}\n" in seen
    assert f"pushed {tag}" in seen
