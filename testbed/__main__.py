"""``python -m testbed start|stop|env|status|inputs``: the test bed from a shell.

``start`` runs the four registries and the token server in the background and
writes a state file; pytest sessions started afterwards attach to it (and leave
it running). ``stop`` stops exactly the processes that state file names.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import signal
import sys
from pathlib import Path

from testbed.bed import Testbed, TestbedError, default_state_file, stop_pid
from testbed.inputs import ARCHES, InputError, busybox_roots
from testbed.qemu import qemu_status


def _start(state_file: Path) -> int:
    running = Testbed.attach(state_file)
    if running is not None:
        print(f"testbed: already running (state {state_file})", file=sys.stderr)
        return 0
    bed = Testbed(detach=True)
    try:
        bed.start_all()
    except TestbedError:
        bed.stop()
        raise
    bed.write_state(state_file)
    for registry in bed.registries.values():
        print(f"testbed: {registry.name:<6} {registry.url}", file=sys.stderr)
    print(f"testbed: token server {bed.token_url}; state {state_file}", file=sys.stderr)
    return 0


def _stop(state_file: Path) -> int:
    try:
        state = json.loads(state_file.read_text())
    except FileNotFoundError:
        print(f"testbed: nothing to stop ({state_file} absent)", file=sys.stderr)
        return 0
    started = state.get("started", {})
    for name, pid in state["pids"].items():
        stop_pid(int(pid), started.get(name))
    workdir = Path(state["workdir"])
    if workdir.name.startswith("platforge-testbed-"):
        shutil.rmtree(workdir, ignore_errors=True)
    state_file.unlink()
    print("testbed: stopped", file=sys.stderr)
    return 0


def _env(state_file: Path) -> int:
    bed = Testbed.attach(state_file)
    if bed is None:
        print(f"testbed: not running (state {state_file})", file=sys.stderr)
        return 1
    env = bed.env()
    env["PLATFORGE_TESTBED_STATE"] = str(state_file.resolve())
    for key, value in sorted(env.items()):
        print(f"export {key}={shlex.quote(value)}")
    return 0


def _status(state_file: Path) -> int:
    bed = Testbed.attach(state_file)
    print(f"registries: {'running' if bed else 'not running'} (state {state_file})")
    for name, handler in qemu_status().items():
        flag = "usable" if handler.usable else f"unusable flags={handler.flags!r}"
        print(f"binfmt {name}: {flag}")
    return 0


def _inputs() -> int:
    try:
        roots = busybox_roots(ARCHES)
    except InputError as exc:
        print(f"testbed: busybox-static not fetched: {exc}", file=sys.stderr)
        return 1
    for arch, root in roots.items():
        print(f"busybox {arch}: {root / 'bin/busybox'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed")
    parser.add_argument("command", choices=["start", "stop", "env", "status", "inputs"])
    parser.add_argument(
        "--state",
        type=Path,
        default=default_state_file(),
        help="state file (default: $PLATFORGE_TESTBED_STATE or .testbed/state.json)",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            return _start(args.state)
        if args.command == "stop":
            return _stop(args.state)
        if args.command == "env":
            return _env(args.state)
        if args.command == "status":
            return _status(args.state)
        return _inputs()
    except TestbedError as exc:
        print(f"testbed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # `python -m testbed status | head` should end quietly, like any shell tool.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
