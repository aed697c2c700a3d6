"""Benchmark: a gzip layer written with ISA-L versus the standard library's gzip -6.

Makes a tree of mixed files under a temporary directory (text-like content that
compresses well, and random bytes that do not), then writes the same tar entries
as one layer three ways, each in one streaming pass with both digests computed:

* ISA-L gzip at platforge's default level (what ``write_layer`` does by default),
* the standard library's gzip at level 6 (zlib's default, what most tools use),
* zstd at level 3, for reference.

Throughput is uncompressed tar bytes per second, by wall time and by this
process's CPU time (the machine may be shared, which slows wall time only). All
runs take the same path through ``write_layer``: tar, diff ID, codec, blob digest;
only the codec differs.

Peak RSS (``getrusage``) is printed after each step: it must stay flat as
``--size`` grows, since everything streams in 1 MiB chunks.

    .venv/bin/python bench/gzip_layer.py --size 1G
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path

from platforge.oci import layer as layer_module
from platforge.oci.compression import Compression, WriteStream
from platforge.oci.layer import LayerInfo, entries_from_directory, write_layer

CHUNK = 1 << 20
WORDS = [
    *("layer", "blob", "digest", "manifest", "index", "config", "platform"),
    *("reference", "repository", "tag", "stage", "step", "build", "push", "pull"),
    *("registry", "token", "upload", "mount", "tar", "gzip", "zstd", "whiteout"),
    *("opaque", "overlay", "runtime", "sandbox", "emulation", "qemu", "arm64"),
]


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def text_block(rng: random.Random, size: int) -> bytes:
    """Log-like lines: compressible, but not one repeated string."""
    lines = []
    total = 0
    number = 0
    while total < size:
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
        clock = f"{number % 24:02d}:{number % 60:02d}:{number % 59:02d}"
        line = f"2026-12-04T{clock}Z INFO {words} n={number}\n"
        lines.append(line)
        total += len(line)
        number += 1
    return "".join(lines).encode()[:size]


def make_tree(root: Path, size: int, seed: int = 7) -> int:
    """Files of 256 KiB to 8 MiB, alternating text-like and random, ``size`` total."""
    rng = random.Random(seed)
    # Four distinct text blocks, sliced at random offsets, keep generation fast
    # while no two files share a long common run at the same position.
    blocks = [text_block(rng, 2 * CHUNK) for _ in range(4)]
    written = 0
    index = 0
    while written < size:
        length = min(size - written, rng.randint(256 << 10, 8 << 20))
        folder = root / f"dir{index % 16:02d}"
        folder.mkdir(exist_ok=True)
        compressible = index % 2 == 0
        with (folder / f"file{index:05d}.{'log' if compressible else 'bin'}").open(
            "wb"
        ) as out:
            left = length
            while left:
                step = min(left, CHUNK)
                if compressible:
                    block = blocks[rng.randrange(4)]
                    start = rng.randrange(CHUNK)
                    out.write(block[start : start + step])
                else:
                    out.write(os.urandom(step))
                left -= step
        written += length
        index += 1
    return index


def stdlib_gzip_writer(
    fileobj: WriteStream, compression: Compression, level: int | None = None
) -> WriteStream:
    """``open_writer`` with the standard library's gzip -6 in place of ISA-L."""
    del compression, level
    writer: WriteStream = gzip.GzipFile(
        filename="", mode="wb", compresslevel=6, fileobj=fileobj, mtime=0
    )
    return writer


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(tree: Path, out_path: Path, codec: str) -> tuple[float, float, LayerInfo]:
    """Write one layer of ``tree``; returns wall seconds, CPU seconds and the info.

    For "stdlib" the layer module's codec is swapped for the standard library's,
    so both runs take exactly the same path: tar, diff ID, codec, blob digest.
    """
    compression = Compression.ZSTD if codec == "zstd" else Compression.GZIP
    original = layer_module.open_writer
    if codec == "stdlib":
        layer_module.open_writer = stdlib_gzip_writer
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        with out_path.open("wb") as out:
            info = write_layer(entries_from_directory(tree), out, compression)
        return time.perf_counter() - wall, time.process_time() - cpu, info
    finally:
        layer_module.open_writer = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G", help="bytes of files (e.g. 64M, 1G)")
    parser.add_argument("--dir", default="/tmp", help="where the temp tree goes")
    parser.add_argument(
        "--skip-stdlib", action="store_true", help="skip the slow stdlib run"
    )
    args = parser.parse_args()
    size = parse_size(args.size)

    base = Path(tempfile.mkdtemp(prefix="platforge-bench-", dir=args.dir))
    try:
        tree = base / "tree"
        tree.mkdir()
        start = time.perf_counter()
        files = make_tree(tree, size)
        print(
            f"tree: {files} files, {size / (1 << 20):.0f} MiB in "
            f"{time.perf_counter() - start:.1f} s; peak RSS {peak_rss_mib():.0f} MiB"
        )
        runs = [("isal gzip (level 1)", "isal"), ("zstd (level 3)", "zstd")]
        if not args.skip_stdlib:
            runs.append(("stdlib gzip -6", "stdlib"))
        results: dict[str, tuple[float, float]] = {}
        tar_bytes = write_layer(
            entries_from_directory(tree), _Discard(), Compression.NONE
        ).size
        print(
            "throughput is tar MB per second of wall time and of this process's "
            "CPU time (the machine may be shared)"
        )
        for label, codec in runs:
            wall, cpu, info = run(tree, base / "layer", codec)
            (base / "layer").unlink()
            results[label] = (wall, cpu)
            print(
                f"{label:20s} wall {tar_bytes / wall / 1e6:7.1f} MB/s  "
                f"cpu {tar_bytes / cpu / 1e6:7.1f} MB/s  "
                f"compressed to {info.size / tar_bytes:6.1%}  "
                f"peak RSS {peak_rss_mib():.0f} MiB  diff_id {info.diff_id.short()}"
            )
        if "stdlib gzip -6" in results:
            isal, stdlib = results["isal gzip (level 1)"], results["stdlib gzip -6"]
            print(
                f"isal over stdlib gzip -6: {stdlib[1] / isal[1]:.1f}x by CPU time, "
                f"{stdlib[0] / isal[0]:.1f}x by wall time (goal >= 10x)"
            )
    finally:
        shutil.rmtree(base)


class _Discard:
    """Drops what is written: only the size write_layer reports is wanted."""

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


if __name__ == "__main__":
    main()
