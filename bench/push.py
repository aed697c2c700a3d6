"""Push throughput of platforge against skopeo, to a loopback registry.

Builds a single-layer image of incompressible (random) bytes in an OCI layout under
/tmp, then pushes it to a loopback docker-registry with ``platforge push`` and with
``skopeo copy oci:DIR:latest docker://…``, each into its own repository. Prints the
throughput of both, their ratio (goal: platforge >= 1.0x skopeo), platforge's peak
RSS (goal: < 150 MB, measured on the child process with RUSAGE_CHILDREN) and the
time of pushing the unchanged image again (goal: < 0.5 s; it sends no blob bytes),
as a command and in-process (which leaves out the interpreter's start-up).

The registry comes from the test bed when it can start one, otherwise from a
docker-registry this script starts on 127.0.0.1 with its own config; either way it
is stopped at the end. Everything is removed afterwards.

    .venv/bin/python bench/push.py --size-mib 1024
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from platforge import platforms  # noqa: E402
from platforge.oci.compression import Compression  # noqa: E402
from platforge.oci.content import (  # noqa: E402
    Descriptor,
    History,
    ImageConfig,
    Manifest,
)
from platforge.oci.layer import Entry, write_layer  # noqa: E402
from platforge.oci.layout import Layout  # noqa: E402
from platforge.registry.copy import Registries, push_layout  # noqa: E402
from platforge.registry.reference import Reference  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator

MIB = 1 << 20


def make_layout(work: Path, size_mib: int) -> tuple[Path, int]:
    """A one-layer gzip image of random bytes; return its path and layer size."""
    work.mkdir(parents=True, exist_ok=True)
    data = work / "random.bin"
    with data.open("wb") as out:
        for _ in range(size_mib):
            out.write(os.urandom(MIB))
    path = work / "layout"
    layout = Layout.create(path)
    with tempfile.TemporaryFile(dir=path) as tmp:
        info = write_layer(
            [Entry.file("random.bin", data)], tmp, Compression.GZIP, mtime=0
        )
        tmp.seek(0)
        layer = layout.write_blob(
            tmp, Descriptor(info.media_type, info.digest, info.size)
        )
    data.unlink()
    config = ImageConfig.new(
        platforms.parse("linux/amd64"), created="1970-01-01T00:00:00Z"
    )
    config.add_layer(info.diff_id, History(created_by="bench"))
    manifest = Manifest.build(layout.write_config(config), [layer])
    layout.write_manifest(manifest)
    layout.add_ref(manifest.descriptor(), "latest")
    return path, layer.size


@contextlib.contextmanager
def registry(work: Path) -> Iterator[str]:
    """A loopback registry: the test bed's, or one of this script's own."""
    try:
        from testbed import Testbed  # noqa: PLC0415 - optional helper

        bed = Testbed()
        host = bed.registry("plain").host
    except Exception as exc:  # noqa: BLE001 - any failure means: start our own
        print(f"test bed unavailable ({exc}); starting a registry", file=sys.stderr)
    else:
        try:
            yield host
        finally:
            bed.stop()
        return

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = work / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {work / 'storage'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: bench\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        argv,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=1800,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2, help="runs per tool")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="platforge-bench-push-", dir="/tmp"))
    ours: list[float] = []
    theirs: list[float] = []
    again: list[float] = []
    in_process: list[float] = []
    rss_mb = 0.0
    try:
        with registry(work) as host:
            for run in range(args.runs):
                # A fresh image per run: skopeo remembers blobs it pushed (its blob
                # info cache) and would mount them instead of sending them again.
                print(
                    f"run {run}: building a {args.size_mib} MiB layer", file=sys.stderr
                )
                layout, layer_size = make_layout(work / f"run{run}", args.size_mib)
                # Flush the layout first, so no tool competes with writeback.
                os.sync()
                platforge = [sys.executable, "-m", "platforge", "push", str(layout)]
                skopeo = [
                    "skopeo",
                    "copy",
                    "--dest-tls-verify=false",
                    f"oci:{layout}:latest",
                    f"docker://{host}/bench/skopeo{run}:v1",
                ]
                target = f"{host}/bench/platforge{run}:v1"
                # Alternate who goes first, so page cache favours neither.
                if run % 2:
                    theirs.append(timed(skopeo))
                ours.append(timed([*platforge, target]))
                rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
                again.append(timed([*platforge, target]))
                started = time.perf_counter()
                with Registries() as registries:
                    push_layout(layout, Reference.parse(target), registries=registries)
                in_process.append(time.perf_counter() - started)
                if not run % 2:
                    theirs.append(timed(skopeo))
                shutil.rmtree(work / f"run{run}")
        mb = layer_size / 1e6
        best, skopeo_best = min(ours), min(theirs)
        print(f"layer: {mb:.0f} MB (gzip of random bytes), best of {args.runs} runs")
        runs = " ".join(f"{t:.2f}" for t in ours)
        print(f"platforge push: {best:6.2f} s  {mb / best:7.1f} MB/s  (runs: {runs})")
        runs = " ".join(f"{t:.2f}" for t in theirs)
        rate = mb / skopeo_best
        print(f"skopeo copy:    {skopeo_best:6.2f} s  {rate:7.1f} MB/s  (runs: {runs})")
        print(f"ratio: {skopeo_best / best:.2f}x skopeo (goal >= 1.0x)")
        print(f"platforge peak RSS: {rss_mb:.0f} MB (goal < 150 MB)")
        print(
            f"re-push unchanged: {min(again):.2f} s (goal < 0.5 s); without the "
            f"interpreter start-up: {min(in_process):.3f} s"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
