"""Progress on stderr: what a build or a blob transfer is doing, as it happens.

Three ways to show it, picked by ``--progress`` and whether stderr is a terminal:

``tty`` (a terminal, or ``--progress tty``)
    A live area redrawn in place: one line per platform with its current step and
    how long it has run (``linux/arm64  [stage-0 2/4] COPY rootfs/ /  0.8s``), a
    ``CACHED`` mark on a step served from the cache, work shared by every platform
    on a line of its own, and while pushing one bar per blob with bytes sent, total
    and speed. RUN output and the build's messages scroll above the live area.
    When the build ends the manifests, the index and the pushed references are
    listed.
``plain`` (not a terminal, or ``--progress plain``)
    One timestamped line per event, ``  12.3 [linux/arm64] DONE   [stage-0 2/4]
    COPY 0.81s``: seconds since the start, the platform, the event, its message.
``quiet`` (``--quiet``)
    Nothing; the command prints only the digest on stdout.

Callbacks arrive on the build's and the transfers' worker threads, so every
renderer locks its state. rich is imported only when something is drawn with it:
it costs a noticeable part of the start-up of every command.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import click

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.live import Live
    from rich.progress import Progress, TaskID

    from platforge.build.request import BuildEvent, BuildRequest, BuildResult
    from platforge.registry.progress import BlobEvent

__all__ = ["BlobReporter", "BuildDisplay", "build_display", "human_size"]

# How a line of the live area names work shared by every platform.
SHARED = "shared"


def human_size(size: int) -> str:
    """``1536`` → ``1.5 KiB``: sizes in binary units, as registries count them."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _blob_bars(console: Console) -> Progress:
    """A bar per blob: what is done with it, its digest, bytes, total and speed."""
    from rich.progress import (  # noqa: PLC0415 - only when drawing
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    )


def _track_blob(bars: Progress, tasks: dict[str, TaskID], event: BlobEvent) -> None:
    """Move the bar of ``event``'s blob, adding it on the blob's first event."""
    task = tasks.get(event.digest)
    if task is None:
        label = f"{event.action or 'blob'} {event.digest[7:19]}"
        task = bars.add_task(label, total=event.size or None)
        tasks[event.digest] = task
    if event.kind == "bytes":
        bars.advance(task, event.nbytes)
    elif event.kind == "done":
        label = f"{event.action} {event.digest[7:19]}"
        bars.update(task, completed=event.size, description=label)


class BlobReporter:
    """Blob transfers on stderr: bars on a terminal, one line per blob otherwise.

    Used as a context manager around a push, pull or copy, and passed as its
    ``progress`` callback. ``console`` (for tests) replaces stderr; whether it is a
    terminal then decides between bars and lines.
    """

    def __init__(self, console: Console | None = None) -> None:
        self._lock = threading.Lock()
        self._console = console
        self._bars: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> Self:
        terminal = (
            self._console.is_terminal
            if self._console is not None
            else sys.stderr.isatty()
        )
        if terminal:
            from rich.console import Console  # noqa: PLC0415 - only when drawing

            self._bars = _blob_bars(self._console or Console(stderr=True))
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()

    def __call__(self, event: BlobEvent) -> None:
        with self._lock:
            if self._bars is not None:
                _track_blob(self._bars, self._tasks, event)
            elif event.kind == "done":
                line = (
                    f"{event.action:>8} {event.digest[:19]}  {human_size(event.size)}"
                )
                if self._console is not None:
                    self._console.print(
                        line, markup=False, highlight=False, soft_wrap=True
                    )
                else:
                    click.echo(line, err=True)


class BuildDisplay:
    """What ``platforge build`` shows while it runs; this base shows nothing.

    ``on_build`` and ``on_blob`` go into the :class:`BuildRequest` (``None`` when
    nothing is shown, so the library skips the calls); the display is entered
    around the build, and :meth:`finished` is called with its result.
    """

    on_build: Callable[[BuildEvent], None] | None = None
    on_blob: Callable[[BlobEvent], None] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def finished(self, result: BuildResult, request: BuildRequest) -> None:
        """Called once the build succeeded; ``request`` says what was pushed."""
        del result, request


class PlainDisplay(BuildDisplay):
    """Timestamped lines, one per build event (the format tests and docs quote)."""

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._echo = echo or (lambda line: click.echo(line, err=True))
        self.on_build = self._show

    def _show(self, event: BuildEvent) -> None:
        where = f"[{event.platform}] " if event.platform else ""
        took = f" {event.seconds:.2f}s" if event.seconds is not None else ""
        stamp = f"{time.monotonic() - self._started:6.1f}"
        line = f"{stamp} {where}{event.kind.upper():6} {event.message}{took}"
        with self._lock:
            self._echo(line)


@dataclass
class _StepLine:
    """The current step of one platform (or of the shared work)."""

    message: str
    started: float
    cached: bool = False
    seconds: float | None = None


class _LiveArea:
    """The redrawn part: the step lines, then the blob bars (rich calls this)."""

    def __init__(self, display: TerminalDisplay) -> None:
        self._display = display

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> RenderResult:
        del console, options
        from rich.table import Table  # noqa: PLC0415 - only when drawing
        from rich.text import Text  # noqa: PLC0415

        lines = self._display.step_lines()
        if lines:
            grid = Table.grid(padding=(0, 2))
            grid.add_column(no_wrap=True)
            grid.add_column(overflow="ellipsis", no_wrap=True, ratio=1)
            grid.add_column(no_wrap=True, justify="right")
            for platform, line, now in lines:
                seconds = line.seconds if line.seconds is not None else now
                took = Text()
                if line.cached:
                    took.append("CACHED ", style="green")
                took.append(f"{seconds:.1f}s")
                grid.add_row(
                    Text(platform, style="bold cyan"),
                    Text(line.message, style="dim" if line.seconds is not None else ""),
                    took,
                )
            yield grid
        bars = self._display.bars
        if bars.tasks:
            yield bars.get_renderable()


class TerminalDisplay(BuildDisplay):
    """The live area on a terminal (see the module docstring)."""

    def __init__(self, console: Console) -> None:
        from rich.live import Live  # noqa: PLC0415 - only when drawing

        self._lock = threading.Lock()
        self._console = console
        self._lines: dict[str, _StepLine] = {}
        self._tasks: dict[str, TaskID] = {}
        self.bars = _blob_bars(console)
        self._live: Live = Live(
            _LiveArea(self),
            console=console,
            refresh_per_second=8,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=True,
        )
        self._moved: list[tuple[logging.StreamHandler[Any], Any]] = []
        self.on_build = self._build_event
        self.on_blob = self._blob_event

    def __enter__(self) -> Self:
        stderr = sys.stderr
        self._live.start()
        if sys.stderr is not stderr:
            # Log records (the library's INFO lines, warnings) would tear the live
            # area; while it is drawn they go through it, above the lines.
            for handler in logging.getLogger().handlers:
                stream = getattr(handler, "stream", None)
                if isinstance(handler, logging.StreamHandler) and stream is stderr:
                    handler.setStream(sys.stderr)
                    self._moved.append((handler, stderr))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> None:
        self._live.stop()
        for handler, stream in self._moved:
            handler.setStream(stream)
        self._moved.clear()

    def step_lines(self) -> list[tuple[str, _StepLine, float]]:
        """(platform, line, seconds so far) of every line, in order of appearance."""
        now = time.monotonic()
        with self._lock:
            return [
                (name, line, now - line.started) for name, line in self._lines.items()
            ]

    def _print(self, text: str, style: str | None = None) -> None:
        # Printed through the live console, the line lands above the live area.
        self._live.console.print(
            text, style=style, markup=False, highlight=False, soft_wrap=True
        )

    def _build_event(self, event: BuildEvent) -> None:
        name = event.platform or SHARED
        if event.kind == "log":
            self._print(f"{name} | {event.message}", style="dim")
            return
        if event.kind == "info" and event.platform is None:
            self._print(event.message, style="bold")
            return
        with self._lock:
            line = self._lines.get(name)
            if event.kind in {"start", "info"} or line is None:
                self._lines[name] = _StepLine(event.message, time.monotonic())
            elif event.kind == "cached":
                line.cached = True
            elif event.kind == "done":
                line.seconds = (
                    event.seconds
                    if event.seconds is not None
                    else time.monotonic() - line.started
                )

    def _blob_event(self, event: BlobEvent) -> None:
        with self._lock:
            _track_blob(self.bars, self._tasks, event)

    def finished(self, result: BuildResult, request: BuildRequest) -> None:
        self._stop()
        console = self._console
        for platform, descriptor in result.manifests.items():
            console.print(
                f"manifest {platform}  {descriptor.digest}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        if len(result.manifests) != 1:
            console.print(
                f"index  {result.digest}", markup=False, highlight=False, soft_wrap=True
            )
        if request.push or any(out.type == "registry" for out in request.outputs):
            for tag in request.tags:
                console.print(
                    f"pushed {tag}", markup=False, highlight=False, soft_wrap=True
                )


def build_display(mode: str, *, quiet: bool = False) -> BuildDisplay:
    """The display for ``--progress MODE`` (``auto``, ``plain``, ``tty``).

    ``auto`` draws on a terminal and prints plain lines otherwise; ``tty`` draws
    even when stderr is not a terminal (the live area then ends up in the log as
    its successive frames).
    """
    if quiet:
        return BuildDisplay()
    if mode == "tty" or (mode == "auto" and sys.stderr.isatty()):
        from rich.console import Console  # noqa: PLC0415 - only when drawing

        return TerminalDisplay(
            Console(stderr=True, highlight=False, force_terminal=mode == "tty" or None)
        )
    return PlainDisplay()
