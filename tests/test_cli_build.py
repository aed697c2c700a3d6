"""``platforge build`` on the command line: outputs, messages and exit statuses.

Every image here is built FROM scratch out of files of the test's own context,
so the tests need no registry; skopeo reads what was written.
"""

import json
import os
import subprocess
import sys

import pytest

DOCKERFILE = """\
FROM scratch
COPY hello.txt /srv/hello.txt
LABEL purpose=cli-test
CMD ["/srv/hello.txt"]
"""


def _platforge(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "platforge", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


@pytest.fixture
def context(tmp_path, tmp_store):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "hello.txt").write_text("hello\n")
    return ctx


def test_build_without_output_writes_a_layout_to_image_and_says_so(
    context, tmp_path, skopeo
):
    ran = _platforge("build", str(context), "-t", "example/app:v2", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "./image" in ran.stderr
    digest = ran.stdout.strip()
    assert digest.startswith("sha256:")
    index = json.loads((tmp_path / "image" / "index.json").read_text())
    assert len(index["manifests"]) == 1
    entry = index["manifests"][0]
    assert entry["digest"] == digest
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "v2"
    assert (tmp_path / "digest").read_text() == digest
    info = json.loads(skopeo("inspect", f"oci:{tmp_path / 'image'}:v2").stdout)
    assert info["Labels"] == {"purpose": "cli-test"}


def test_build_writes_oci_and_docker_archives_skopeo_reads(context, tmp_path, skopeo):
    oci_tar = tmp_path / "out" / "image-oci.tar"
    docker_tar = tmp_path / "out2" / "image-docker.tar"
    ran = _platforge(
        "build",
        str(context),
        "--platform",
        "linux/arm64",
        "-t",
        "example/app:v3",
        "--output",
        f"type=oci-tar,dest={oci_tar}",
        "--output",
        f"type=docker,dest={docker_tar}",
        "--quiet",
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr == ""
    oci = json.loads(skopeo("inspect", f"oci-archive:{oci_tar}:v3").stdout)
    assert oci["Architecture"] == "arm64"
    docker = json.loads(skopeo("inspect", f"docker-archive:{docker_tar}").stdout)
    assert docker["Architecture"] == "arm64"
    assert docker["Labels"] == {"purpose": "cli-test"}


def test_unknown_output_type_is_a_usage_error(context, tmp_path):
    ran = _platforge(
        "build", str(context), "--output", "type=bogus,dest=x", cwd=tmp_path
    )
    assert ran.returncode == 2
    assert "type=bogus" in ran.stderr


def test_missing_source_file_is_one_line_error_with_status_1(context, tmp_path):
    (context / "Dockerfile").write_text("FROM scratch\nCOPY missing.txt /\n")
    ran = _platforge("build", str(context), cwd=tmp_path)
    assert ran.returncode == 1
    assert "missing.txt" in ran.stderr
    assert "Traceback" not in ran.stderr


def test_build_arg_without_value_comes_from_the_environment(context, tmp_path):
    (context / "Dockerfile").write_text(
        "FROM scratch\nARG FLAVOUR\nLABEL flavour=$FLAVOUR\nCOPY hello.txt /\n"
    )
    env = {**os.environ, "FLAVOUR": "vanilla"}
    out = tmp_path / "layout"
    ran = _platforge(
        "build",
        str(context),
        "--build-arg",
        "FLAVOUR",
        "-o",
        str(out),
        cwd=tmp_path,
        env=env,
    )
    assert ran.returncode == 0, ran.stderr
    index = json.loads((out / "index.json").read_text())
    blobs = out / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_text())
    assert config["config"]["Labels"] == {"flavour": "vanilla"}


def test_two_platforms_give_a_layout_whose_one_entry_is_the_index(
    context, tmp_path, skopeo
):
    out = tmp_path / "multi"
    ran = _platforge(
        "build",
        str(context),
        "--platform",
        "linux/amd64,linux/arm64,linux/arm/v7",
        "-t",
        "127.0.0.1:5000/app:multi",
        "-o",
        f"type=oci,dest={out}",
        "--progress",
        "plain",
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert "[linux/arm/v7]" in ran.stderr
    index = json.loads((out / "index.json").read_text())
    assert len(index["manifests"]) == 1
    entry = index["manifests"][0]
    assert entry["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "multi"
    raw = json.loads(skopeo("inspect", "--raw", f"oci:{out}:multi").stdout)
    platforms = [
        (m["platform"]["architecture"], m["platform"].get("variant"))
        for m in raw["manifests"]
    ]
    assert platforms == [("amd64", None), ("arm64", None), ("arm", "v7")]


@pytest.mark.registry
def test_missing_base_image_is_one_line_naming_it(context, tmp_path, registry_plain):
    base = f"{registry_plain.host}/nobody/home:1"
    (context / "Dockerfile").write_text(f"FROM {base}\nCOPY hello.txt /\n")
    ran = _platforge("build", str(context), cwd=tmp_path)
    assert ran.returncode == 1
    lines = [line for line in ran.stderr.splitlines() if "error" in line]
    assert len(lines) == 1
    assert base in lines[0]
    assert "Traceback" not in ran.stderr


def test_a_rebuild_from_inside_the_context_is_a_full_cache_hit(context):
    (context / "Dockerfile").write_text("FROM scratch\nCOPY . /app/\n")
    first = _platforge("build", ".", "--platform", "linux/amd64", cwd=context)
    assert first.returncode == 0, first.stderr
    assert (context / "image" / "index.json").exists()
    assert (context / "digest").exists()
    again = _platforge("build", ".", "--platform", "linux/amd64", cwd=context)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert " 0 step(s) run" in again.stderr


def test_a_digest_file_of_the_users_is_not_overwritten(context, tmp_path):
    notes = tmp_path / "out" / "digest"
    notes.parent.mkdir()
    notes.write_text("my precious notes\n")
    dest = tmp_path / "out" / "image.tar"
    ran = _platforge(
        "build", str(context), "-o", f"type=oci-tar,dest={dest}", cwd=tmp_path
    )
    assert ran.returncode == 1
    assert ran.stderr.count("\n") == 1
    assert f"{notes} exists and does not hold a digest" in ran.stderr
    assert notes.read_text() == "my precious notes\n"
    assert not dest.exists()
    notes.write_text("sha256:" + "0" * 64 + "\n")
    ran = _platforge(
        "build", str(context), "-o", f"type=oci-tar,dest={dest}", cwd=tmp_path
    )
    assert ran.returncode == 0, ran.stderr
    assert notes.read_text() == ran.stdout.strip()


def test_build_help_names_the_digest_file(tmp_path):
    ran = _platforge("build", "--help", cwd=tmp_path)
    assert "digest file" in ran.stdout


def test_a_dockerfile_that_is_not_utf8_is_one_line(context, tmp_path):
    (context / "Dockerfile").write_bytes(b"FROM scratch\nLABEL a=\xe9t\xe9\n")
    ran = _platforge("build", str(context), cwd=tmp_path)
    assert ran.returncode == 1
    assert ran.stderr.splitlines()[-1].startswith("platforge: error: ")
    assert "not UTF-8" in ran.stderr
    assert "Traceback" not in ran.stderr


def test_the_dockerfile_can_come_from_standard_input(context, tmp_path):
    out = tmp_path / "stdin-out"
    ran = subprocess.run(
        [
            *(sys.executable, "-m", "platforge", "build", str(context), "-f", "-"),
            *("-o", f"type=oci,dest={out}", "--quiet"),
        ],
        input="FROM scratch\nCOPY hello.txt /from-stdin.txt\n",
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert (out / "index.json").exists()
    broken = subprocess.run(
        [sys.executable, "-m", "platforge", "build", str(context), "-f", "-"],
        input="FROMM scratch\n",
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert broken.returncode == 1
    assert "<stdin>:1: unknown instruction" in broken.stderr


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["-o", "type=oci-tar,dest=-"], "dest=- (standard output) is not supported"),
        (["--build-context", "x=ftp://host/repo"], "give an existing directory"),
        (["--build-context", "x=/nonexistent/dir"], "give an existing directory"),
        (["--build-context", "x=oci-layout://"], "give an existing directory"),
        (["--secret", "id=s,src=/nonexistent/file"], "is not a file"),
        (["--secret", "id=s,env=PLATFORGE_TEST_UNSET_VARIABLE"], "has no PLATFORGE"),
    ],
)
def test_bad_option_values_are_usage_errors(context, tmp_path, args, complaint):
    ran = _platforge("build", str(context), *args, cwd=tmp_path)
    assert ran.returncode == 2
    assert complaint in ran.stderr
    assert not (tmp_path / "-").exists()


def test_an_unknown_mount_option_is_refused(context, tmp_path):
    (context / "Dockerfile").write_text(
        "FROM scratch\nRUN --mount=type=cache,target=/c,bogus=1 true\n"
    )
    ran = _platforge("build", str(context), cwd=tmp_path)
    assert ran.returncode == 1
    assert "unknown option 'bogus' for type cache" in ran.stderr


@pytest.mark.registry
def test_build_pushes_to_a_tls_registry_with_ca_file(context, tmp_path, registry_tls):
    tag = f"{registry_tls.host}/cli/tls:1"
    env = {k: v for k, v in os.environ.items() if k != "PLATFORGE_CA_FILE"}
    args = ("build", str(context), "-t", tag, "--push", "--quiet")
    refused = _platforge(*args, cwd=tmp_path, env=env)
    assert refused.returncode == 1
    assert "--ca-file" in refused.stderr
    ran = _platforge(
        *args, "--ca-file", str(registry_tls.ca_file), cwd=tmp_path, env=env
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().startswith("sha256:")


def test_a_later_build_arg_wins_whatever_its_form(context, tmp_path):
    (context / "Dockerfile").write_text("FROM scratch\nARG A\nLABEL a=$A\n")
    env = {**os.environ, "A": "from-env"}
    for args, expected in (
        (("--build-arg", "A", "--build-arg", "A=given"), "given"),
        (("--build-arg", "A=given", "--build-arg", "A"), "from-env"),
    ):
        out = tmp_path / f"o-{expected}"
        ran = _platforge(
            "build", str(context), *args, "-o", str(out), cwd=tmp_path, env=env
        )
        assert ran.returncode == 0, ran.stderr
        blobs = out / "blobs" / "sha256"
        index = json.loads((out / "index.json").read_text())
        manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
        config = json.loads((blobs / manifest["config"]["digest"][7:]).read_text())
        assert config["config"]["Labels"] == {"a": expected}


def test_an_earlier_default_output_is_left_out_of_a_later_push(
    context, registry_plain, skopeo
):
    (context / "Dockerfile").write_text("FROM scratch\nCOPY . /app/\n")
    first = _platforge("build", ".", "--platform", "linux/amd64", cwd=context)
    assert first.returncode == 0, first.stderr
    assert (context / "image" / "oci-layout").exists()
    reference = f"{registry_plain.host}/cli/leftovers:v1"
    pushed = _platforge(
        *("build", ".", "--platform", "linux/amd64", "-t", reference, "--push"),
        cwd=context,
    )
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stderr.count("leaving ./digest and ./image out") == 1
    assert pushed.stdout == first.stdout
    raw = json.loads(
        skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{reference}").stdout
    )
    assert raw["layers"][0]["size"] < 1000


def test_a_user_directory_named_image_is_never_written_into(context):
    (context / "image").mkdir()
    (context / "image" / "notes.txt").write_text("mine\n")
    ran = _platforge("build", ".", "--platform", "linux/amd64", cwd=context)
    assert ran.returncode == 1
    assert ran.stderr.count("\n") == 1
    assert "./image exists and is not an OCI layout" in ran.stderr
    assert sorted(p.name for p in (context / "image").iterdir()) == ["notes.txt"]
    (context / "digest").write_text("sha256:" + "0" * 64 + "\n")
    (context / "image" / "notes.txt").unlink()
    ran = _platforge("build", ".", "--platform", "linux/amd64", cwd=context)
    assert ran.returncode == 0, ran.stderr
    assert (context / "image" / "oci-layout").exists()


def test_step_errors_of_a_dockerfile_on_standard_input_name_stdin(context, tmp_path):
    ran = subprocess.run(
        [sys.executable, "-m", "platforge", "build", str(context), "-f", "-"],
        input="FROM scratch\nCOPY nothere.txt /\n",
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 1
    assert ran.stderr.splitlines()[-1].startswith(
        "platforge: error: <stdin>:2: [stage-0 1/1] COPY nothere.txt: no such file"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--push"], "--push needs at least one -t"),
        (["--output", "type=registry"], "type=registry needs at least one -t"),
        (
            [
                "--platform",
                "linux/amd64,linux/arm64",
                "--output",
                "type=docker,dest=app.tar",
            ],
            "type=docker output holds one platform",
        ),
    ],
)
def test_outputs_no_build_could_satisfy_are_usage_errors_before_any_step(
    context, args, message
):
    done = _platforge("build", *args, ".", cwd=context)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "COPY" not in done.stderr  # refused before the first step
    assert not (context / "image").exists()
    assert not (context / "app.tar").exists()
