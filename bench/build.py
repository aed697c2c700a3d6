"""Build benchmarks: platforge against buildah and BuildKit, in one run.

Scenarios (each printed with its ratio and the goal):

1. seed: the seed Dockerfile (FROM a multi-arch busybox base, LABEL, CMD) for
   linux/amd64 + linux/arm64, built and pushed to a loopback registry
   (goal: platforge <= 0.3 x buildah);
2. four RUNs for amd64 + arm64 (goal <= 1.0 x buildah), plus platforge's own
   overhead per RUN step: (four ``RUN true`` - no RUN) / 4, amd64 only;
3. no-change rebuild of scenario 2 (goal <= 0.1 x its cold build);
4. COPY of a 100,000-file, 1 GiB context, amd64 (goal <= 1.0 x buildah, peak
   RSS <= 300 MB); ``--scale 0.01`` runs it with 1,000 files / 10 MiB.

Base images are in every tool's cache before timing starts (buildah and
BuildKit pull them once, platforge's store holds them), so the figures compare
building, not downloading. BuildKit (dockerd 20.10, no buildx) builds one
platform per ``docker build`` and cannot reach the loopback registry from its
network namespace: its figures are build-only, both platforms summed. Every
server this script starts listens on 127.0.0.1 only and is stopped at the end.

Run: ``.venv/bin/python bench/build.py [--scale 0.01] [--skip-buildkit]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from testbed.bed import Testbed  # noqa: E402
from testbed.inputs import busybox_roots  # noqa: E402

from test_build_support import busybox_layout, push_busybox_base  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python")
TIME = "/usr/bin/time"
SEED = (
    'FROM {base}\nLABEL org.opencontainers.image.authors="bench"\nCMD ["uname", "-m"]\n'
)
FOUR_RUNS = (
    "FROM {base}\nRUN echo one > /one\nRUN echo two > /two && ls / > /list\n"
    "RUN mkdir -p /work && for i in 1 2 3 4 5; do echo $i > /work/f$i; done\n"
    "RUN rm /work/f1 && touch /work/done\n"
)
TRUE_RUNS = "FROM {base}\n" + "RUN true\n" * 4
NO_RUN = "FROM {base}\nLABEL x=1\n"
COPY = "FROM {base}\nCOPY tree/ /data/\n"


def timed(
    argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, int]:
    """Run ``argv``; return (seconds, peak RSS in KiB) or raise with its output."""
    started = time.monotonic()
    ran = subprocess.run(
        [TIME, "-f", "%M", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
        timeout=1800,
    )
    took = time.monotonic() - started
    if ran.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{ran.stderr[-2000:]}")
    return took, int(ran.stderr.strip().splitlines()[-1])


class Platforge:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.work.mkdir(parents=True, exist_ok=True)
        self.store = work / "store"
        self.env = {**os.environ, "PLATFORGE_STORE": str(self.store)}

    def build_lib(self, ctx: Path, platforms: str, **kwargs: object) -> float:
        """The same build through the library, in this process: no start-up."""
        from platforge import platforms as plat  # noqa: PLC0415
        from platforge.build import BuildRequest, build  # noqa: PLC0415

        started = time.monotonic()
        build(
            BuildRequest(
                context=ctx,
                platforms=plat.parse_list(platforms),
                store=self.store,
                **kwargs,  # type: ignore[arg-type]
            )
        )
        return time.monotonic() - started

    def build(self, ctx: Path, platforms: str, *extra: str) -> tuple[float, int]:
        argv = [PY, "-m", "platforge", "build", str(ctx), "--platform", platforms]
        # In the work directory: without -o the image lands in ./image, and
        # with it a ./digest file, which must not litter the caller's directory.
        return timed([*argv, "--quiet", *extra], env=self.env, cwd=self.work)


class Buildah:
    def __init__(self, work: Path) -> None:
        self.root = ["--root", str(work / "root"), "--runroot", str(work / "run")]

    def run(self, *args: str) -> tuple[float, int]:
        return timed(["buildah", *self.root, *args])

    def build(self, ctx: Path, platforms: str, name: str) -> tuple[float, int]:
        subprocess.run(
            ["buildah", *self.root, "manifest", "rm", name],
            capture_output=True,
            check=False,
        )
        return self.run(
            "bud",
            "--isolation",
            "chroot",
            "--tls-verify=false",
            "--platform",
            platforms,
            "--manifest",
            name,
            "--layers",
            str(ctx),
        )


class BuildKit:
    """dockerd in a loopback-only network namespace (see MACHINE.md)."""

    def __init__(self, work: Path) -> None:
        self.dir = work
        self.sock = work / "sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def docker(self, *args: str) -> tuple[float, int]:
        return timed(["/usr/bin/docker", "-H", f"unix://{self.sock}", *args])

    def start(self) -> bool:
        dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        script = (
            f"ip link set lo up && exec {dockerd} --iptables=false --ip6tables=false "
            f"--bridge=none --data-root {self.dir}/data --exec-root {self.dir}/exec "
            f"--pidfile {self.dir}/pid -H unix://{self.sock}"
        )
        log = (self.dir / "dockerd.log").open("wb")
        self.proc = subprocess.Popen(
            ["unshare", "--net", "--fork", "sh", "-c", script], stdout=log, stderr=log
        )
        for _ in range(100):
            ok = subprocess.run(
                ["/usr/bin/docker", "-H", f"unix://{self.sock}", "info"],
                capture_output=True,
                check=False,
            )
            if ok.returncode == 0:
                return True
            time.sleep(0.3)
        return False

    def stop(self) -> None:
        pidfile = self.dir / "pid"
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def build(self, ctx: Path, platform: str, tag: str) -> tuple[float, int]:
        os.environ["DOCKER_BUILDKIT"] = "1"
        return self.docker(
            "build", "--platform", platform, "--network", "none", "-t", tag, str(ctx)
        )


def context(work: Path, name: str, text: str) -> Path:
    ctx = work / name
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(text)
    return ctx


def make_tree(root: Path, files: int, total: int) -> None:
    """``files`` files in 100 directories, half text-like, half random bytes."""
    rng = random.Random(7)
    size = max(total // files, 1)
    words = b"platforge builds every platform of a dockerfile into one index "
    for i in range(files):
        directory = root / f"d{i % 100:02d}"
        if i < 100:
            directory.mkdir(parents=True, exist_ok=True)
        data = (
            (words * (size // len(words) + 1))[:size] if i % 2 else rng.randbytes(size)
        )
        (directory / f"f{i:06d}").write_bytes(data)


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "n/a"


class Bench:
    """The tools, the base image and the work directory of one run."""

    def __init__(
        self, work: Path, base: str, host: str, buildkit: BuildKit | None
    ) -> None:
        self.work, self.base, self.host, self.buildkit = work, base, host, buildkit
        self.pf, self.bh = Platforge(work / "pf"), Buildah(work / "bh")

    def ctx(self, name: str, text: str) -> Path:
        return context(self.work, name, text.format(base=self.base))

    def bk_both(self, name: str, text: str) -> float:
        assert self.buildkit is not None
        total = 0.0
        for arch in ("amd64", "arm64"):
            ctx = context(
                self.work, f"bk-{name}-{arch}", text.format(base=f"bench/base-{arch}")
            )
            total += self.buildkit.build(ctx, f"linux/{arch}", f"bench-{name}:{arch}")[
                0
            ]
        return total


BOTH = "linux/amd64,linux/arm64"


def seed(b: Bench) -> None:
    warm = b.ctx("warm", NO_RUN)  # the base into every tool's cache first
    b.pf.build(warm, BOTH)
    b.bh.build(warm, BOTH, "warm")
    ctx = b.ctx("seed", SEED)
    tag = f"{b.host}/bench/seed"
    pf = b.pf.build(ctx, BOTH, "-t", f"{tag}:pf", "--push")[0]
    bh = b.bh.build(ctx, BOTH, "seed")[0]
    bh += b.bh.run(
        "manifest", "push", "--all", "--tls-verify=false", "seed", f"docker://{tag}:bh"
    )[0]
    lib = b.pf.build_lib(ctx, BOTH, tags=[f"{tag}:lib"], push=True)
    line = f"seed 2 platforms build+push: platforge {pf:.2f}s, buildah {bh:.2f}s"
    line += f", ratio {ratio(pf, bh)} (goal <= 0.30x)"
    line += f"; platforge without process start-up {lib:.2f}s, ratio {ratio(lib, bh)}"
    if b.buildkit is not None:
        bk = b.bk_both("seed", SEED)
        line += f"; BuildKit build only {bk:.2f}s, ratio {ratio(pf, bk)}"
    print(line, flush=True)


def runs(b: Bench) -> None:
    ctx = b.ctx("runs", FOUR_RUNS)
    pf = b.pf.build(ctx, BOTH)[0]
    bh = b.bh.build(ctx, BOTH, "runs")[0]
    line = f"four RUNs amd64+arm64: platforge {pf:.2f}s, buildah {bh:.2f}s"
    line += f", ratio {ratio(pf, bh)} (goal <= 1.00x)"
    if b.buildkit is not None:
        bk = b.bk_both("runs", FOUR_RUNS)
        line += f"; BuildKit {bk:.2f}s, ratio {ratio(pf, bk)}"
    print(line, flush=True)
    again = b.pf.build(ctx, BOTH)[0]
    cold_lib = b.pf.build_lib(ctx, BOTH, no_cache=True)
    again_lib = b.pf.build_lib(ctx, BOTH)
    print(
        f"no-change rebuild: {again:.2f}s vs cold {pf:.2f}s, "
        f"ratio {ratio(again, pf)} (goal <= 0.10x); without process start-up "
        f"{again_lib:.3f}s vs {cold_lib:.2f}s, ratio {ratio(again_lib, cold_lib)}",
        flush=True,
    )
    no_run = b.ctx("norun", NO_RUN + "LABEL y=2\n")
    true_runs = b.ctx("trueruns", TRUE_RUNS)
    amd64 = "linux/amd64"
    without = min(b.pf.build(no_run, amd64, "--no-cache")[0] for _ in range(3))
    with_runs = min(b.pf.build(true_runs, amd64, "--no-cache")[0] for _ in range(3))
    lib_without = min(b.pf.build_lib(no_run, amd64, no_cache=True) for _ in range(3))
    lib_with = min(b.pf.build_lib(true_runs, amd64, no_cache=True) for _ in range(3))
    print(
        "platforge overhead per RUN step (RUN true, amd64): "
        f"{(with_runs - without) / 4 * 1000:.0f} ms by the CLI, "
        f"{(lib_with - lib_without) / 4 * 1000:.0f} ms in process",
        flush=True,
    )


def copy(b: Bench, scale: float) -> None:
    files = max(int(100_000 * scale), 10)
    total = int((1 << 30) * scale)
    ctx = b.ctx("copy", COPY)
    make_tree(ctx / "tree", files, total)
    pf, rss = b.pf.build(ctx, "linux/amd64")
    bh = b.bh.build(ctx, "linux/amd64", "copy")[0]
    line = (
        f"COPY {files} files / {total >> 20} MiB, amd64: platforge {pf:.2f}s "
        f"(peak RSS {rss // 1024} MB, goal <= 300), buildah {bh:.2f}s, "
        f"ratio {ratio(pf, bh)} (goal <= 1.00x)"
    )
    if b.buildkit is not None:
        bk_ctx = context(b.work, "bk-copy", COPY.format(base="bench/base-amd64"))
        shutil.copytree(ctx / "tree", bk_ctx / "tree", symlinks=True)
        bk = b.buildkit.build(bk_ctx, "linux/amd64", "bench-copy:amd64")[0]
        line += f"; BuildKit {bk:.2f}s, ratio {ratio(pf, bk)}"
    print(line, flush=True)


def load_buildkit_bases(
    buildkit: BuildKit, busybox: dict[str, Path], work: Path
) -> None:
    layout = busybox_layout(busybox, work / "base-layout")
    for arch in ("amd64", "arm64"):
        archive = work / f"base-{arch}.tar"
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--override-arch",
                arch,
                f"oci:{layout.path}:latest",
                f"docker-archive:{archive}:bench/base-{arch}:latest",
            ],
            check=True,
            capture_output=True,
        )
        buildkit.docker("load", "-i", str(archive))


def cleanup(work: Path) -> None:
    bh = work / "bh"
    subprocess.run(
        [
            "buildah",
            "--root",
            str(bh / "root"),
            "--runroot",
            str(bh / "run"),
            "rm",
            "--all",
        ],
        capture_output=True,
        check=False,
    )
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="of the COPY context")
    parser.add_argument("--skip-buildkit", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="platforge-bench-"))
    bed = Testbed(work / "bed")
    buildkit = BuildKit(work / "bk")
    buildkit.dir.mkdir()
    try:
        registry = bed.registry("plain")
        busybox = busybox_roots(["amd64", "arm64"])
        base = push_busybox_base(busybox, registry.host)
        have_bk = not args.skip_buildkit and buildkit.start()
        if have_bk:
            load_buildkit_bases(buildkit, busybox, work)
        print(f"== platforge build benchmarks (work dir {work}) ==", flush=True)
        startup = min(timed([PY, "-m", "platforge", "--version"])[0] for _ in range(3))
        print(f"platforge process start-up (--version): {startup:.2f}s", flush=True)
        bench = Bench(work, base, registry.host, buildkit if have_bk else None)
        seed(bench)
        runs(bench)
        copy(bench, args.scale)
    finally:
        buildkit.stop()
        bed.stop()
        cleanup(work)


if __name__ == "__main__":
    main()
