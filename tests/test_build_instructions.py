"""Instructions beyond what BuildKit v0.8 can be compared on: heredocs, COPY
--link/--exclude/--parents, RUN mounts and network, ONBUILD triggers, named
contexts, --target, ADD --checksum, zstd layers and SOURCE_DATE_EPOCH.

Expectations follow the Dockerfile reference. Builds use a real busybox base in
the loopback registry; RUN steps run in the real sandbox.
"""

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from platforge.build import Output
from platforge.errors import BuildError
from platforge.oci.compression import open_reader
from platforge.oci.unpack import unpack_layers
from test_build_support import build_image, busybox_layout, push_busybox_base

pytestmark = pytest.mark.registry


@pytest.fixture
def base(registry_plain, busybox):
    return push_busybox_base(busybox, registry_plain.host)


def _image(store, descriptor, root):
    blobs = store / "blobs" / "sha256"
    manifest = json.loads((blobs / descriptor.digest.encoded).read_text())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_text())
    unpack_layers(
        [open_reader((blobs / x["digest"][7:]).open("rb")) for x in manifest["layers"]],
        root,
    )
    return manifest, config


def _build_one(tmp_path, store, text, files=None, **kwargs):
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(text)
    for name, content in (files or {}).items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(content)
    result, events = build_image(ctx, **kwargs)
    root = tmp_path / "root"
    manifest, config = _image(store, result.manifests["linux/amd64"], root)
    return root, manifest, config, events


@pytest.mark.privileged
def test_run_output_is_reported_a_whole_line_at_a_time(tmp_path, tmp_store, base):
    _, _, _, events = _build_one(
        tmp_path,
        tmp_store,
        f"FROM {base}\n"
        "RUN printf 'part-one '; sleep 0.3; echo part-two; printf 'no-newline'\n",
    )
    logged = [event.message for event in events if event.kind == "log"]
    assert "part-one part-two" in logged
    assert "no-newline" in logged
    assert "part-one " not in logged


@pytest.mark.privileged
def test_heredocs_create_files_and_run_scripts(tmp_path, tmp_store, base):
    root, _, _, _ = _build_one(
        tmp_path,
        tmp_store,
        f"FROM {base}\n"
        "COPY <<EOF /etc/app.conf\nname=demo\nEOF\n"
        "RUN <<EOT\necho first > /script-out\necho second >> /script-out\nEOT\n"
        "ENV WHO=world\n"
        "RUN cat <<EOF > /greeting && cat <<'RAW' > /raw\nhello $WHO\nEOF\n"
        "not $WHO\nRAW\n",
    )
    assert (root / "etc" / "app.conf").read_text() == "name=demo\n"
    assert (root / "greeting").read_text() == "hello world\n"
    assert (root / "raw").read_text() == "not $WHO\n"
    assert (root / "script-out").read_text() == "first\nsecond\n"


def test_copy_exclude_parents_and_link(tmp_path, tmp_store, base):
    files = {
        "src/a/x.py": "x",
        "src/a/x.pyc": "compiled",
        "src/b/y.py": "y",
        "docs/readme.txt": "r",
    }
    root, manifest, _, _ = _build_one(
        tmp_path,
        tmp_store,
        f"FROM {base}\n"
        "COPY --exclude=**/*.pyc src/ /app/\n"
        "COPY --parents src/a/x.py docs/readme.txt /keep/\n"
        "COPY --link docs/readme.txt /linked/readme.txt\n",
        files,
    )
    assert (root / "app" / "a" / "x.py").exists()
    assert not (root / "app" / "a" / "x.pyc").exists()
    assert (root / "keep" / "src" / "a" / "x.py").read_text() == "x"
    assert (root / "keep" / "docs" / "readme.txt").read_text() == "r"
    assert (root / "linked" / "readme.txt").read_text() == "r"
    assert len(manifest["layers"]) == 4


@pytest.mark.privileged
def test_a_secret_named_by_a_relative_path_is_found(
    tmp_path, tmp_store, base, monkeypatch
):
    (tmp_path / "token.txt").write_text("s3cret")
    monkeypatch.chdir(tmp_path)
    root, _, _, _ = _build_one(
        tmp_path,
        tmp_store,
        f"FROM {base}\n"
        "RUN --mount=type=secret,id=token cat /run/secrets/token > /seen\n",
        {},
        secrets={"token": Path("token.txt")},
    )
    assert (root / "seen").read_text() == "s3cret"


@pytest.mark.privileged
def test_run_mounts_stay_out_of_the_layer(tmp_path, tmp_store, base):
    secret = tmp_path / "token.txt"
    secret.write_text("s3cret")
    root, _, config, _ = _build_one(
        tmp_path,
        tmp_store,
        f"FROM {base}\n"
        "RUN --mount=type=cache,target=/cache echo c >> /cache/log && "
        "wc -l < /cache/log > /cache-lines\n"
        "RUN --mount=type=secret,id=token cat /run/secrets/token | wc -c"
        " > /secret-len\n"
        "RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && ls /scratch"
        " > /tmp-ls\n"
        "RUN --mount=type=bind,source=data.txt,target=/mnt/data.txt "
        "cat /mnt/data.txt > /copied\n"
        "RUN --network=none cat /proc/net/dev | grep -c : > /ifaces\n",
        {"data.txt": "bound\n"},
        secrets={"token": secret},
    )
    assert not (root / "cache").exists() or not any((root / "cache").iterdir())
    assert (root / "cache-lines").read_text().strip() == "1"
    assert (root / "secret-len").read_text().strip() == "6"
    assert not (root / "run" / "secrets" / "token").exists()
    assert (root / "tmp-ls").read_text().strip() == "x"
    assert not (root / "scratch" / "x").exists()
    assert (root / "copied").read_text() == "bound\n"
    assert (root / "ifaces").read_text().strip() == "1"  # only loopback
    assert "s3cret" not in json.dumps(config)


@pytest.mark.privileged
def test_onbuild_triggers_fire_in_the_child_and_are_not_inherited(
    tmp_path, tmp_store, base, registry_plain
):
    parent_ctx = tmp_path / "parent"
    parent_ctx.mkdir()
    (parent_ctx / "Dockerfile").write_text(
        f"FROM {base}\nONBUILD COPY app.txt /from-trigger.txt\n"
        "ONBUILD RUN echo fired > /fired\n"
    )
    parent_ref = f"{registry_plain.host}/onbuild/parent:1"
    build_image(parent_ctx, tags=[parent_ref], push=True)

    root, _, config, _ = _build_one(
        tmp_path, tmp_store, f"FROM {parent_ref}\nENV CHILD=1\n", {"app.txt": "app"}
    )
    assert (root / "from-trigger.txt").read_text() == "app"
    assert (root / "fired").read_text() == "fired\n"
    assert not config["config"].get("OnBuild")


def test_named_contexts_override_from_and_copy_from(tmp_path, tmp_store, base, busybox):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "tool.txt").write_text("from a directory")
    layout = busybox_layout(busybox, tmp_path / "layout", arches=("amd64",))
    root, _, config, _ = _build_one(
        tmp_path,
        tmp_store,
        "FROM runtime\n"
        "COPY --from=extra tool.txt /tool.txt\n"
        "COPY --from=other /etc/passwd /copied-passwd\n",
        build_contexts={
            "runtime": f"oci-layout://{layout.path}:latest",
            "extra": str(extra),
            "other": f"docker-image://{base}",
        },
    )
    assert (root / "tool.txt").read_text() == "from a directory"
    assert (root / "bin" / "busybox").exists()
    assert "app:x:1000" in (root / "copied-passwd").read_text()
    assert config["config"]["Cmd"] == ["sh"]


def test_target_builds_only_the_named_stage(tmp_path, tmp_store, base):
    _, _, config, _ = _build_one(
        tmp_path,
        tmp_store,
        f"FROM {base} AS first\nENV STAGE=first\n"
        "FROM first AS second\nENV STAGE=second\n",
        target="first",
    )
    assert "STAGE=first" in config["config"]["Env"]


def test_add_checksum_mismatch_is_refused(tmp_path, tmp_store, base):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    wrong = "sha256:" + "0" * 64
    (ctx / "Dockerfile").write_text(
        f"FROM {base}\nADD --checksum={wrong} http://127.0.0.1:9/none /x\n"
    )
    with pytest.raises(BuildError, match=r"ADD http://127\.0\.0\.1:9/none"):
        build_image(ctx)


def test_zstd_layers_and_source_date_epoch(tmp_path, tmp_store, base, skopeo):
    out = tmp_path / "layout"
    _, manifest, config, _ = _build_one(
        tmp_path,
        tmp_store,
        f"FROM {base}\nCOPY f.txt /f.txt\n",
        {"f.txt": "zstd"},
        compression="zstd",
        build_args={"SOURCE_DATE_EPOCH": "1000000000"},
        outputs=[Output("oci", out)],
        labels={"org.example.extra": "yes"},
    )
    assert manifest["layers"][-1]["mediaType"].endswith("+zstd")
    assert config["created"] == "2001-09-09T01:46:40Z"
    assert config["history"][-1]["created"] == "2001-09-09T01:46:40Z"
    assert config["config"]["Labels"]["org.example.extra"] == "yes"
    inspected = json.loads(skopeo("inspect", f"oci:{out}:latest").stdout)
    assert inspected["Labels"]["org.example.extra"] == "yes"
    digest = (tmp_path / "digest").read_text()
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest
    raw = (out / "blobs" / "sha256" / digest[7:]).read_bytes()
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest


def test_a_directory_context_can_be_the_base_of_a_stage(tmp_path, tmp_store):
    rootdir = tmp_path / "rootdir"
    (rootdir / "etc").mkdir(parents=True)
    (rootdir / "etc" / "os-release").write_text("ID=handmade\n")
    root, manifest, config, _ = _build_one(
        tmp_path,
        tmp_store,
        "FROM handmade\nCOPY extra.txt /extra.txt\n",
        {"extra.txt": "extra"},
        build_contexts={"handmade": str(rootdir)},
    )
    assert (root / "etc" / "os-release").read_text() == "ID=handmade\n"
    assert (root / "extra.txt").read_text() == "extra"
    assert len(manifest["layers"]) == 2
    assert config["architecture"] == "amd64"


@pytest.mark.privileged
def test_run_bind_mount_from_another_stage(tmp_path, tmp_store, base):
    root, _, _, _ = _build_one(
        tmp_path,
        tmp_store,
        f"FROM {base} AS tools\nRUN echo from-tools > /tool-output\n"
        f"FROM {base}\n"
        "RUN --mount=type=bind,from=tools,source=/tool-output,target=/mnt/t "
        "cat /mnt/t > /copied\n",
    )
    assert (root / "copied").read_text() == "from-tools\n"
    assert not (root / "tool-output").exists()


@pytest.mark.privileged
def test_onbuild_of_an_earlier_stage_fires_in_each_stage_built_from_it(
    tmp_path, tmp_store, base
):
    root, _, config, _ = _build_one(
        tmp_path,
        tmp_store,
        f"FROM {base} AS template\nONBUILD RUN echo triggered >> /log\n"
        "FROM template AS one\nRUN echo one >> /log\n"
        "FROM template\nCOPY --from=one /log /one.log\n",
    )
    assert (root / "log").read_text() == "triggered\n"
    assert (root / "one.log").read_text() == "triggered\none\n"
    assert not config["config"].get("OnBuild")


@pytest.mark.privileged
def test_a_run_line_with_a_command_feeds_it_the_here_document(
    tmp_path, tmp_store, base
):
    root, _, _, _ = _build_one(
        tmp_path,
        tmp_store,
        f"FROM {base}\n"
        "RUN <<EOF1 cat > /heredoc.sh\n#!/bin/sh\necho hello\nEOF1\n"
        "RUN <<EOF awk '{print \"awk saw: \" $0}' > /awk.txt\nline one\nEOF\n"
        'RUN <<"EOT"\necho script > /script.txt\nEOT\n',
    )
    assert (root / "heredoc.sh").read_text() == "#!/bin/sh\necho hello\n"
    assert (root / "awk.txt").read_text() == "awk saw: line one\n"
    assert (root / "script.txt").read_text() == "script\n"


@pytest.mark.privileged
def test_onbuild_triggers_keep_their_here_documents(tmp_path, tmp_store, base):
    root, _, config, _ = _build_one(
        tmp_path,
        tmp_store,
        f"FROM {base} AS template\n"
        "ONBUILD RUN <<EOF\necho from-heredoc > /fired\nEOF\n"
        "FROM template\nRUN cat /fired > /seen\n",
    )
    assert (root / "seen").read_text() == "from-heredoc\n"
    assert not config["config"].get("OnBuild")


@pytest.mark.privileged
def test_a_secret_can_be_an_environment_variable_of_the_run(tmp_path, tmp_store, base):
    secret = tmp_path / "token"
    secret.write_text("s3cr3t")
    root, _, config, _ = _build_one(
        tmp_path,
        tmp_store,
        f"FROM {base}\n"
        "RUN --mount=type=secret,id=tok,env=TOKEN echo ${#TOKEN} > /len"
        " && test ! -e /run/secrets/tok\n"
        "RUN --mount=type=secret,id=tok,env=T2,target=/s cat /s > /copy\n",
        secrets={"tok": secret},
    )
    assert (root / "len").read_text() == "6\n"
    assert (root / "copy").read_text() == "s3cr3t"
    assert "s3cr3t" not in json.dumps(config)


def _processes_running(marker: bytes) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes():
                found.append(cmdline.parent.name)
        except OSError:
            continue
    return found


@pytest.mark.privileged
def test_sigterm_stops_a_running_step_and_cleans_up(tmp_path, tmp_store, base):
    ctx = tmp_path / "term"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base}\nRUN sleep 29\n")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "platforge", "build", str(ctx)),
            *("--progress", "plain", "--platform", "linux/amd64"),
            *("-o", f"type=oci,dest={tmp_path / 'out'}"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stderr:
            if "RUN sleep 29" in line:
                break
        deadline = time.monotonic() + 10
        while not _processes_running(b"sleep\x0029") and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 143
    finally:
        if proc.poll() is None:
            # Unwind as a user would, so a failure here leaves no container or
            # mount behind; kill only what does not stop.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert _processes_running(b"sleep\x0029") == []


@pytest.mark.qemu
@pytest.mark.privileged
@pytest.mark.usefixtures("require_qemu")
def test_an_interrupt_stops_every_platforms_running_step(tmp_path, tmp_store, base):
    ctx = tmp_path / "int"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base}\nRUN sleep 28\n")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "platforge", "build", str(ctx), "--quiet"),
            *("--platform", "linux/amd64,linux/arm64"),
            *("-o", f"type=oci,dest={tmp_path / 'out'}"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while (
            len(_processes_running(b"sleep\x0028")) < 2 and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert len(_processes_running(b"sleep\x0028")) >= 2
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=20)
        assert status == 130, proc.stderr.read()
        assert time.monotonic() - started < 15
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert "Traceback" not in proc.stderr.read()
    assert _processes_running(b"sleep\x0028") == []
    assert str(tmp_store) not in Path("/proc/mounts").read_text()
