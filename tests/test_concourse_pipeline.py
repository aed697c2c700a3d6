"""concourse/pipeline.yml stays valid, and its per-architecture flow works for real."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from platforge.concourse.source import (
    parse_get_params,
    parse_put_params,
    parse_source,
)
from platforge.concourse.task import parse_env
from test_concourse_support import ROOT, answer, resource, sha

PIPELINE = ROOT / "concourse" / "pipeline.yml"
VARS = {
    "registry": "127.0.0.1:5000",
    "git_uri": "https://git.example.internal/app.git",
    "registry_username": "ci",
    "registry_password": "secret",
}


def load_pipeline(values=VARS, text=None):
    text = PIPELINE.read_text() if text is None else text
    for name, value in values.items():
        text = text.replace(f"(({name}))", value)
    assert "((" not in text
    return yaml.safe_load(text)


def steps(plan):
    for step in plan:
        yield step
        for key in ("in_parallel", "do"):
            if key in step:
                yield from steps(step[key])


def test_every_source_and_param_in_the_sample_pipeline_is_accepted(tmp_path):
    pipeline = load_pipeline()
    sources = {
        r["name"]: parse_source(r["source"])
        for r in pipeline["resources"]
        if r["type"] == "registry-image"
    }
    parse_source(pipeline["resource_types"][0]["source"])
    (tmp_path / "app-src").mkdir()
    (tmp_path / "app-src" / "Dockerfile").write_text("FROM scratch\n")
    seen = {"put": 0, "get": 0, "task": 0}
    for job in pipeline["jobs"]:
        for step in steps(job["plan"]):
            if "put" in step:
                source = sources[step["put"]]
                parse_put_params(step.get("params"), source)
                parse_get_params(step.get("get_params"), source)
                seen["put"] += 1
            elif "get" in step and step["get"] in sources:
                parse_get_params(step.get("params"), sources[step["get"]])
                seen["get"] += 1
            elif "task" in step and step["config"]["run"]["path"] == "build":
                params = {k: str(v) for k, v in step["config"]["params"].items()}
                parse_env(params, tmp_path)
                seen["task"] += 1
    assert seen == {"put": 4, "get": 1, "task": 3}


@pytest.mark.registry
def test_per_architecture_builds_merged_by_index_create(
    registry_basic, tmp_path, tmp_store, tmp_docker_config, skopeo
):
    """The build-native job: one task per platform, two puts, and the pipeline's own
    merge task (log in, index create) against an authenticated registry."""
    (tmp_path / "app-src").mkdir()
    (tmp_path / "app-src" / "Dockerfile").write_text(
        "FROM scratch\nARG TARGETARCH\nCOPY app /app-${TARGETARCH}\n"
    )
    (tmp_path / "app-src" / "app").write_text("app")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "PLATFORGE_STORE": str(tmp_store),
    }
    host = registry_basic.host
    repo = f"{host}/concourse/native-{uuid.uuid4().hex[:8]}"
    creds = {"username": registry_basic.username, "password": registry_basic.password}
    digests = {}
    for arch in ("amd64", "arm64"):
        work = tmp_path / arch
        work.mkdir()
        (work / "app-src").symlink_to(tmp_path / "app-src")
        built = subprocess.run(
            [sys.executable, "-m", "platforge", "task", "build"],
            cwd=work,
            env={
                **env,
                "CONTEXT": "app-src",
                "IMAGE_PLATFORM": f"linux/{arch}",
                "OUTPUT_OCI": "true",
            },
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert built.returncode == 0, built.stderr
        request = {
            "source": {"repository": repo, "tag": arch, **creds},
            "params": {"image": "image/image"},
        }
        digests[arch] = answer(resource("out", request, str(work)))["version"]["digest"]

    pipeline = PIPELINE.read_text().replace("((registry))/app", repo)
    merge = next(
        step
        for job in load_pipeline({**VARS, "registry": host}, pipeline)["jobs"]
        for step in steps(job["plan"])
        if step.get("task") == "merge"
    )["config"]
    task_env = {k: str(v) for k, v in merge["params"].items()}
    assert task_env == {"REGISTRY_USERNAME": "ci", "REGISTRY_PASSWORD": "secret"}
    task_env = {
        "REGISTRY_USERNAME": registry_basic.username,
        "REGISTRY_PASSWORD": registry_basic.password,
    }
    merged = subprocess.run(
        [merge["run"]["path"], *merge["run"]["args"]],
        env={
            **env,
            **task_env,
            "DOCKER_CONFIG": str(tmp_docker_config),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert merged.returncode == 0, merged.stderr
    versions = answer(
        resource("check", {"source": {"repository": repo, "tag": "latest", **creds}})
    )
    raw = skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        f"{registry_basic.username}:{registry_basic.password}",
        f"docker://{repo}:latest",
    ).stdout
    assert versions == [{"tag": "latest", "digest": sha(raw.encode())}]
    index = json.loads(raw)
    assert sorted(m["digest"] for m in index["manifests"]) == sorted(digests.values())

    dest = tmp_path / "get"
    request = {
        "source": {"repository": repo, **creds},
        "version": versions[0],
        "params": {"platform": {"architecture": "arm64"}},
    }
    resource("in", request, str(dest))
    assert (dest / "rootfs" / "app-arm64").read_text() == "app"
