"""concourse/pipeline.yml stays valid, and its per-architecture flow works for real."""

import json
import os
import subprocess
import sys
import uuid

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


def load_pipeline(values=VARS):
    text = PIPELINE.read_text()
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
            elif "task" in step and "params" in step["config"]:
                params = {k: str(v) for k, v in step["config"]["params"].items()}
                parse_env(params, tmp_path)
                seen["task"] += 1
    assert seen == {"put": 4, "get": 1, "task": 3}


@pytest.mark.registry
def test_per_architecture_builds_merged_by_index_create(
    registry_plain, tmp_path, tmp_store, skopeo
):
    """The build-native job: one task per platform, two puts, one index."""
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
    repo = f"{registry_plain.host}/concourse/native-{uuid.uuid4().hex[:8]}"
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
            "source": {"repository": repo, "tag": arch},
            "params": {"image": "image/image"},
        }
        digests[arch] = answer(resource("out", request, str(work)))["version"]["digest"]

    merged = subprocess.run(
        [
            sys.executable,
            "-m",
            "platforge",
            "index",
            "create",
            f"{repo}:latest",
            "--from",
            f"{repo}:amd64",
            "--from",
            f"{repo}:arm64",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert merged.returncode == 0, merged.stderr
    versions = answer(
        resource("check", {"source": {"repository": repo, "tag": "latest"}})
    )
    raw = skopeo(
        "inspect", "--raw", "--tls-verify=false", f"docker://{repo}:latest"
    ).stdout
    assert versions == [{"tag": "latest", "digest": sha(raw.encode())}]
    index = json.loads(raw)
    assert sorted(m["digest"] for m in index["manifests"]) == sorted(digests.values())

    dest = tmp_path / "get"
    request = {
        "source": {"repository": repo},
        "version": versions[0],
        "params": {"platform": {"architecture": "arm64"}},
    }
    resource("in", request, str(dest))
    assert (dest / "rootfs" / "app-arm64").read_text() == "app"
