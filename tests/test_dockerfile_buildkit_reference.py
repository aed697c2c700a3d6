"""Word expansion and arg scoping checked against real BuildKit.

dockerd 20.10 (its built-in BuildKit frontend) builds a ``FROM scratch`` Dockerfile
full of expansions for two platforms; the image configs it writes (environment,
labels, working directory, user, ports, stop signal) must be what our plan's expanded
words say. ``FROM scratch`` and no ``RUN`` keep this free of base images and
emulation. dockerd runs in a network namespace that has only loopback, and the
Dockerfile has no ``# syntax=`` line, so nothing can leave the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from platforge import platforms
from platforge.dockerfile.parser import parse
from platforge.dockerfile.plan import resolve

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

DOCKER = "/usr/bin/docker"
DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"

DOCKERFILE = """\
ARG BASEARG=global
FROM scratch AS first
ARG BASEARG
ARG TARGETARCH TARGETOS TARGETPLATFORM
ARG X=1
ARG PORTS
ENV A=$X B=${X}2 X=env
ENV C=$X D="quoted $X" E='single $X'
ENV F=${UNSET:-dflt} G=${X:+set} H=\\$X I=${UNSET:+no}
ENV legacy value with  spaces $X
LABEL l1=$BASEARG l2="$TARGETARCH-$TARGETPLATFORM" "l 3"=x$TARGETOS
WORKDIR /w/$TARGETARCH
USER u$X
EXPOSE 80 $PORTS
STOPSIGNAL ${X:+SIGKILL}
FROM first
ARG SIG
ENV V=e
ARG W=$V-${TARGETARCH:-none}
LABEL inherited=$X notdeclared=$BASEARG sig=$SIG w=$W
STOPSIGNAL $SIG
"""
BUILD_ARGS = {"X": "7", "PORTS": "81/udp 82", "SIG": "TERM", "UNUSED": "u"}
PLATFORMS = ("linux/amd64", "linux/arm64")


def _docker(sock: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    ran = subprocess.run(
        [DOCKER, "-H", f"unix://{sock}", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={"PATH": os.environ["PATH"], "DOCKER_BUILDKIT": "1", "HOME": "/root"},
    )
    if check and ran.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} failed: {ran.stderr[-2000:]}")
    return ran


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory):
    if not (Path(DOCKERD).exists() and Path(DOCKER).exists()):
        pytest.skip("dockerd and /usr/bin/docker are needed as the BuildKit reference")
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("ip")):
        pytest.skip("root, unshare and ip are needed to run dockerd loopback-only")
    root = Path(tmp_path_factory.mktemp("bkref"))
    sock, pidfile = root / "sock", root / "pid"
    script = (
        f"ip link set lo up && exec {DOCKERD} --iptables=false --ip6tables=false "
        f"--bridge=none --data-root {root}/data --exec-root {root}/exec "
        f"--pidfile {pidfile} -H unix://{sock}"
    )
    with (root / "dockerd.log").open("wb") as log:
        proc = subprocess.Popen(
            ["unshare", "--net", "--fork", "sh", "-c", script],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                if _docker(sock, "info", check=False).returncode == 0:
                    break
                time.sleep(0.3)
            else:
                pytest.skip(
                    "dockerd did not start: "
                    + (root / "dockerd.log").read_text()[-300:]
                )
            yield sock
        finally:
            if pidfile.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _predicted_config(platform: str) -> dict:
    """The config fields our plan's expanded words give, stage chain first."""
    plan = resolve(
        parse(DOCKERFILE),
        target_platform=platforms.parse(platform),
        build_platform=platforms.host(),
        build_args=BUILD_ARGS,
    )
    config: dict = {"Env": {}, "Labels": {}, "ExposedPorts": set()}
    for stage in plan.stages:  # the chain: first, then the target built on it
        for step in stage.steps:
            if step.keyword == "ENV":
                config["Env"].update(w.split("=", 1) for w in step.args)
            elif step.keyword == "LABEL":
                config["Labels"].update(w.split("=", 1) for w in step.args)
            elif step.keyword == "EXPOSE":
                config["ExposedPorts"] |= {
                    w if "/" in w else f"{w}/tcp" for w in step.args
                }
            elif step.keyword in ("WORKDIR", "USER", "STOPSIGNAL"):
                key = {"WORKDIR": "WorkingDir", "USER": "User"}.get(
                    step.keyword, "StopSignal"
                )
                config[key] = step.args[0]
    return config


def _buildkit_config(sock: Path, context: Path, platform: str) -> dict:
    tag = "pf-ref:" + platform.replace("/", "-")
    args = [f"--build-arg={k}={v}" for k, v in BUILD_ARGS.items()]
    _docker(
        sock,
        "build",
        "--network",
        "none",
        "--platform",
        platform,
        *args,
        "-t",
        tag,
        str(context),
    )
    inspected = json.loads(_docker(sock, "image", "inspect", tag).stdout)[0]
    raw = inspected["Config"]
    env = dict(item.split("=", 1) for item in raw.get("Env") or [])
    env.pop("PATH", None)  # BuildKit's default PATH for an image that has none
    return {
        "Env": env,
        "Labels": raw.get("Labels") or {},
        "ExposedPorts": set(raw.get("ExposedPorts") or {}),
        "WorkingDir": raw.get("WorkingDir"),
        "User": raw.get("User"),
        "StopSignal": raw.get("StopSignal"),
    }


def test_expanded_words_match_buildkit_image_configs(dockerd, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    for platform in PLATFORMS:
        ours = _predicted_config(platform)
        theirs = _buildkit_config(dockerd, context, platform)
        for field in sorted(theirs):
            assert ours.get(field) == theirs[field], f"{platform} {field}"
        arch = platform.split("/")[1]
        # The facts the comparison rests on, spelled out:
        # ENV A=$X ... X=env: the instruction sees X from before it, the next one
        # sees the ENV, which wins over the ARG of the same name.
        assert (theirs["Env"]["A"], theirs["Env"]["B"]) == ("7", "72")
        assert theirs["Env"]["C"] == "env"
        assert theirs["Env"]["legacy"] == "value with  spaces env"
        assert theirs["Labels"]["l2"] == f"{arch}-{platform}"
        # A stage built on a stage keeps its ENV and its ARGs.
        assert theirs["Labels"]["inherited"] == "env"
        assert theirs["Labels"]["notdeclared"] == "global"
        assert theirs["Labels"]["w"] == f"e-{arch}"  # ARG defaults see ENV
        assert theirs["ExposedPorts"] == {"80/tcp", "81/udp", "82/tcp"}


def test_a_stage_built_on_a_build_platform_stage_still_labels_the_target(
    dockerd, tmp_path
):
    # The stage runs where its parent ran (BuildKit hands it the parent's state);
    # the image it produces is still described as the requested target platform.
    text = "FROM --platform=$BUILDPLATFORM scratch AS tools\nLABEL a=1\nFROM tools\n"
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(text)
    _docker(
        dockerd,
        "build",
        "--network",
        "none",
        "--platform",
        "linux/arm64",
        "-t",
        "pf-ref:chain",
        str(context),
    )
    inspected = json.loads(_docker(dockerd, "image", "inspect", "pf-ref:chain").stdout)
    plan = resolve(
        parse(text),
        target_platform=platforms.parse("linux/arm64"),
        build_platform=platforms.host(),
    )
    assert inspected[0]["Architecture"] == plan.target_platform.architecture
    assert plan.target.platform == platforms.host()
