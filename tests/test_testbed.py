"""The test bed itself: each loopback registry answers as its kind should, the
token flow works with a real client, and busybox runs under QEMU per architecture.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import jwt
import pytest
from testbed import (
    PLATFORMS,
    Fault,
    InputError,
    Testbed,
    busybox_roots,
    missing,
    qemu_status,
)
from testbed import bed as bed_module
from testbed.certs import libtrust_key_id, make_token_signer, x5c_entry
from testbed.tools import ToolError

pytestmark = pytest.mark.registry

ROOT = Path(__file__).resolve().parents[1]


def _client(**kwargs) -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=10, **kwargs)


def _oci_layout(path: Path) -> Path:
    """A one-layer image as an OCI layout, written with skopeo-independent code."""
    blobs = path / "blobs/sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {
            "mediaType": media_type,
            "digest": f"sha256:{digest}",
            "size": len(data),
        }

    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        info = tarfile.TarInfo("hello")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"hi\n"))
    diff_id = hashlib.sha256(tar.getvalue()).hexdigest()
    layer = put(
        gzip.compress(tar.getvalue(), mtime=0),
        "application/vnd.oci.image.layer.v1.tar+gzip",
    )
    config = put(
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            }
        ).encode(),
        "application/vnd.oci.image.config.v1+json",
    )
    manifest = put(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config,
                "layers": [layer],
            }
        ).encode(),
        "application/vnd.oci.image.manifest.v1+json",
    )
    manifest["annotations"] = {"org.opencontainers.image.ref.name": "v1"}
    (path / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "manifests": [manifest]})
    )
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return path


def test_plain_registry_answers_v2_with_200(registry_plain):
    assert registry_plain.url == f"http://{registry_plain.host}"
    assert registry_plain.host.startswith("127.0.0.1:")
    with _client() as client:
        response = client.get(f"{registry_plain.url}/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-Api-Version"] == "registry/2.0"


def test_basic_registry_challenges_then_accepts_its_credentials(registry_basic):
    url = f"{registry_basic.url}/v2/"
    with _client() as client:
        anonymous = client.get(url)
        wrong = client.get(url, auth=(registry_basic.username, "wrong"))
        right = client.get(url, auth=(registry_basic.username, registry_basic.password))
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
    assert wrong.status_code == 401
    assert right.status_code == 200


def test_tls_registry_is_trusted_with_its_ca_and_refused_without(registry_tls):
    assert registry_tls.scheme == "https"
    assert registry_tls.ca_file is not None
    with _client(verify=registry_tls.ssl_context()) as client:
        assert client.get(f"{registry_tls.url}/v2/").status_code == 200
    with _client() as client, pytest.raises(httpx.ConnectError, match="CERTIFICATE"):
        client.get(f"{registry_tls.url}/v2/")


def test_token_registry_challenges_with_bearer_and_our_token_unlocks_it(
    registry_token, testbed
):
    with _client() as client:
        challenge = client.get(f"{registry_token.url}/v2/")
        assert challenge.status_code == 401
        header = challenge.headers["WWW-Authenticate"]
        assert header.startswith("Bearer ")
        assert f'realm="{testbed.token_url}/token"' in header
        token = client.get(
            f"{testbed.token_url}/token",
            params={"service": "platforge-testbed", "scope": "repository:a/b:pull"},
            auth=(registry_token.username, registry_token.password),
        ).json()["token"]
        authed = client.get(
            f"{registry_token.url}/v2/", headers={"Authorization": f"Bearer {token}"}
        )
        wrong = client.get(
            f"{testbed.token_url}/token",
            params={"service": "platforge-testbed"},
            auth=(registry_token.username, "wrong"),
        )
    assert authed.status_code == 200
    assert wrong.status_code == 401


def test_skopeo_copies_and_inspects_through_the_token_flow(
    registry_token, skopeo, tmp_path
):
    layout = _oci_layout(tmp_path / "oci")
    ref = f"docker://{registry_token.ref('testbed/token-copy', 'v1')}"
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        registry_token.creds,
        f"oci:{layout}:v1",
        ref,
    )
    raw = skopeo(
        "inspect", "--raw", "--tls-verify=false", "--creds", registry_token.creds, ref
    ).stdout
    assert json.loads(raw)["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    with pytest.raises(ToolError, match=r"denied|unauthorized"):
        skopeo("inspect", "--raw", "--tls-verify=false", ref)


@pytest.mark.qemu
@pytest.mark.parametrize(
    ("arch", "machine"), [(arch, machine) for arch, (_, machine) in PLATFORMS.items()]
)
def test_busybox_of_each_architecture_runs_and_reports_its_machine(
    busybox, require_qemu, arch, machine
):
    binary = busybox[arch] / "bin/busybox"
    out = subprocess.run(
        [str(binary), "uname", "-m"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == machine


def test_qemu_status_reports_the_f_flag_of_registered_handlers(tmp_path):
    fake = tmp_path / "binfmt_misc"
    fake.mkdir()
    interpreter = tmp_path / "qemu-aarch64-static"
    interpreter.touch()
    (fake / "qemu-aarch64").write_text(
        f"enabled\ninterpreter {interpreter}\nflags: POCF\noffset 0\nmagic 7f45\n"
    )
    (fake / "qemu-arm").write_text(
        f"enabled\ninterpreter {interpreter}\nflags: OC\noffset 0\nmagic 7f45\n"
    )
    (fake / "register").touch()
    status = qemu_status(fake)
    assert set(status) == {"qemu-aarch64", "qemu-arm"}
    assert status["qemu-aarch64"].usable
    assert not status["qemu-arm"].usable
    assert missing(["qemu-aarch64", "qemu-arm", "qemu-s390x"], fake) == [
        f"qemu-arm unusable (enabled=True, flags='OC', interpreter={interpreter})",
        "qemu-s390x not registered",
    ]


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_token_server_grants_only_what_each_user_may_do(testbed, registry_token):
    scope = "repository:team/app:pull,push"
    url = f"{testbed.token_url}/token"
    params = {"service": "platforge-testbed", "scope": scope}
    with _client() as client:
        writer = client.get(
            url, params=params, auth=(testbed.username, testbed.password)
        )
        reader = client.get(
            url, params=params, auth=(testbed.reader_username, testbed.reader_password)
        )
        anonymous = client.get(url, params=params)
        other_service = client.get(url, params={"service": "elsewhere"})
    assert _claims(writer.json()["token"])["access"] == [
        {"type": "repository", "name": "team/app", "actions": ["pull", "push"]}
    ]
    assert _claims(reader.json()["token"])["access"][0]["actions"] == ["pull"]
    claims = _claims(anonymous.json()["token"])
    assert claims["access"] == []
    assert claims["aud"] == "platforge-testbed"
    assert claims["exp"] > claims["iat"] >= claims["nbf"]
    assert other_service.status_code == 400


def test_token_server_speaks_the_oauth2_password_and_refresh_grants(
    testbed, registry_token
):
    url = f"{testbed.token_url}/token"
    form = {
        "grant_type": "password",
        "service": "platforge-testbed",
        "client_id": "platforge",
        "access_type": "offline",
        "username": testbed.username,
        "password": testbed.password,
        "scope": "repository:a/b:pull repository:c/d:push",
    }
    with _client() as client:
        first = client.post(url, data=form).json()
        refreshed = client.post(
            url,
            data={
                "grant_type": "refresh_token",
                "service": "platforge-testbed",
                "refresh_token": first["refresh_token"],
                "scope": "repository:a/b:pull",
            },
        ).json()
        refused = client.post(url, data={**form, "password": "wrong"})
        pulled = client.get(
            f"{registry_token.url}/v2/a/b/tags/list",
            headers={"Authorization": f"Bearer {refreshed['access_token']}"},
        )
    assert [a["name"] for a in _claims(first["access_token"])["access"]] == [
        "a/b",
        "c/d",
    ]
    assert _claims(refreshed["access_token"])["sub"] == testbed.username
    assert refused.status_code == 401
    # The token is accepted: the repository is unknown (404), not unauthorised (401).
    assert pulled.status_code == 404


def test_registry_blob_path_points_at_the_stored_bytes(make_registry, skopeo, tmp_path):
    registry = make_registry("plain")
    layout = _oci_layout(tmp_path / "oci")
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        f"oci:{layout}:v1",
        f"docker://{registry.ref('testbed/blobs', 'v1')}",
    )
    manifest = json.loads((layout / "index.json").read_bytes())["manifests"][0]
    stored = registry.blob_path(manifest["digest"])
    assert stored.is_file()
    assert stored.stat().st_size == manifest["size"]
    assert str(stored).startswith(str(registry.storage_dir))


def test_make_registry_starts_a_private_registry_and_stops_it(make_registry, testbed):
    first = make_registry("basic")
    second = make_registry("tls")
    hosts = {first.host, second.host}
    hosts |= {r.host for r in testbed.registries.values()}
    assert len(hosts) == 2 + len(testbed.registries)
    assert first.storage_dir != second.storage_dir
    with _client(verify=second.ssl_context()) as client:
        assert client.get(f"{second.url}/v2/").status_code == 200


def test_tmp_store_points_platforge_at_a_fresh_directory(tmp_store):
    assert os.environ["PLATFORGE_STORE"] == str(tmp_store)
    assert tmp_store.is_dir()
    assert not any(tmp_store.iterdir())


@pytest.mark.slow
def test_cli_start_writes_state_that_sessions_attach_to_and_stop_ends_it(tmp_path):
    state = tmp_path / "state.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "testbed", *args, "--state", str(state)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
            check=True,
        )

    cli("start")
    try:
        bed = Testbed.attach(state)
        assert bed is not None
        assert not bed.owned
        assert set(bed.registries) == {"plain", "basic", "tls", "token"}
        pids = list(bed.pids.values())
        bed.stop()  # attached: must leave everything running
        assert all(Path(f"/proc/{pid}").exists() for pid in pids)
        exports = cli("env").stdout
        assert f"PLATFORGE_TESTBED_PLAIN_HOST={bed.registries['plain'].host}" in exports
        assert "already running" in cli("start").stderr
    finally:
        cli("stop")
    assert not state.exists()
    assert Testbed.attach(state) is None
    assert not bed.workdir.exists()
    for pid in pids:
        cmdline = Path(f"/proc/{pid}/cmdline")
        assert not cmdline.exists() or b"docker-registry" not in cmdline.read_bytes()


def test_registries_die_with_a_test_session_that_is_killed(tmp_path):
    script = (
        "import os, signal, sys\n"
        "from testbed import Testbed\n"
        "bed = Testbed()\n"
        "bed.registry('plain')\n"
        "print(bed.pids['plain'], bed.workdir, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert out.returncode == -signal.SIGKILL
    pid_text, workdir = out.stdout.split()
    cmdline = Path(f"/proc/{pid_text}/cmdline")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not cmdline.exists() or b"docker-registry" not in cmdline.read_bytes():
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"registry {pid_text} outlived its killed parent")
    shutil.rmtree(workdir, ignore_errors=True)


def test_install_system_run_again_installs_and_registers_nothing(tmp_path):
    # A fake apt-get first on PATH proves a second run never reaches for packages.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    apt = fake_bin / "apt-get"
    apt.write_text("#!/bin/sh\necho fake apt-get called >&2\nexit 97\n")
    apt.chmod(0o755)
    start = time.monotonic()
    out = subprocess.run(
        ["bash", str(ROOT / "scripts/install-system.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "fake apt-get" not in out.stderr
    assert "could not register" not in out.stderr
    assert time.monotonic() - start < 10


def test_stop_from_a_stale_state_file_never_touches_a_recycled_pid(tmp_path):
    bed = Testbed()
    try:
        bed.start_all()
        state_file = tmp_path / "state.json"
        bed.write_state(state_file)
        state = json.loads(state_file.read_text())
        # As if every PID had been reused by another process since the state was
        # written: same PIDs, later start times.
        state["started"] = {name: t + 1 for name, t in state["started"].items()}
        state_file.write_text(json.dumps(state))
        assert Testbed.attach(state_file) is None
        subprocess.run(
            [sys.executable, "-m", "testbed", "stop", "--state", str(state_file)],
            capture_output=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
        )
        with _client() as client:
            assert client.get(f"{bed.registries['plain'].url}/v2/").status_code == 200
        assert all(Path(f"/proc/{pid}").exists() for pid in bed.pids.values())
    finally:
        bed.stop()


@pytest.mark.parametrize(
    "content",
    ["", "not json", "[]", '{"pids": {"plain": "x"}}', '{"pids": {}}'],
)
def test_attach_treats_a_broken_state_file_as_no_test_bed(tmp_path, content):
    state_file = tmp_path / "state.json"
    state_file.write_text(content)
    assert Testbed.attach(state_file) is None
    assert Testbed.attach(tmp_path / "absent.json") is None


def test_busybox_fetch_failure_is_an_input_error_naming_the_step(tmp_path, monkeypatch):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    apt = fake_bin / "apt-get"
    apt.write_text("#!/bin/sh\necho 'E: no sources reachable' >&2\nexit 100\n")
    apt.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(InputError, match=r"apt-get update failed: .*no sources"):
        busybox_roots(["arm64"])
    assert not (tmp_path / "cache/platforge-testbed/busybox/arm64").exists()


def test_skopeo_logs_in_to_the_tests_own_auth_file_only(
    registry_basic, skopeo, tmp_docker_config
):
    skopeo(
        "login",
        "--tls-verify=false",
        "--username",
        registry_basic.username,
        "--password",
        registry_basic.password,
        registry_basic.host,
    )
    auths = json.loads((tmp_docker_config / "config.json").read_text())["auths"]
    assert registry_basic.host in auths
    with pytest.raises(ToolError, match=r"exited 1: .*"):
        skopeo("login", "--tls-verify=false", "-u", "x", "-p", "y", registry_basic.host)


def test_fault_proxy_answers_the_fault_then_passes_through(registry_plain, fault_proxy):
    proxy = fault_proxy(
        registry_plain,
        Fault(path="^/v2/$", status=429, headers={"Retry-After": "1"}, times=1),
    )
    with _client() as client:
        first = client.get(f"{proxy.url}/v2/")
        second = client.get(f"{proxy.url}/v2/")
    assert (first.status_code, first.headers["Retry-After"]) == (429, "1")
    assert second.status_code == 200
    assert second.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert [(s.status, s.faulted) for s in proxy.seen("GET", "^/v2/$")] == [
        (429, True),
        (200, False),
    ]


def test_fault_proxy_can_drop_a_connection(registry_plain, fault_proxy):
    proxy = fault_proxy(registry_plain, Fault(method="GET", drop=True))
    with _client() as client, pytest.raises(httpx.RemoteProtocolError):
        client.get(f"{proxy.url}/v2/")
    assert proxy.seen()[0].status is None


def test_fault_proxy_streams_a_blob_upload_and_keeps_locations_on_itself(
    registry_plain, fault_proxy
):
    proxy = fault_proxy(registry_plain)
    data = hashlib.sha256(b"seed").digest() * (8 * 1024 * 1024 // 32)
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    repo = "testbed/proxy-upload"

    def pieces():
        for start in range(0, len(data), 1 << 20):
            yield data[start : start + (1 << 20)]

    with _client() as client:
        started = client.post(f"{proxy.url}/v2/{repo}/blobs/uploads/")
        location = started.headers["Location"]
        assert location.startswith((proxy.url, "/v2/"))
        upload = httpx.URL(proxy.url).join(location)
        put = client.put(
            upload.copy_merge_params({"digest": digest}),
            content=pieces(),
            headers={"Content-Length": str(len(data))},
        )
        fetched = client.get(f"{proxy.url}/v2/{repo}/blobs/{digest}")
    assert started.status_code == 202
    assert put.status_code == 201
    assert hashlib.sha256(fetched.content).hexdigest() == digest.split(":")[1]
    assert [s.method for s in proxy.seen()] == ["POST", "PUT", "GET"]


def test_skopeo_copies_through_the_fault_proxy_after_a_failed_manifest_put(
    registry_plain, fault_proxy, skopeo, tmp_path
):
    proxy = fault_proxy(registry_plain)
    layout = _oci_layout(tmp_path / "oci")
    target = f"docker://{proxy.host}/testbed/through-proxy:v1"
    proxy.add(Fault(method="PUT", path="/manifests/", status=500, times=1))
    with pytest.raises(ToolError, match="500"):
        skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:v1", target)
    skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:v1", target)
    assert [s.status for s in proxy.seen("PUT", "/manifests/")] == [500, 201], [
        (s.method, s.path, s.status) for s in proxy.seen()
    ]
    assert len(proxy.seen("HEAD", "/blobs/")) >= 2


def test_install_system_registers_only_missing_handlers(tmp_path):
    if os.getuid() != 0:
        pytest.skip("install-system.sh registers binfmt handlers only as root")
    binfmt = tmp_path / "binfmt_misc"
    binfmt.mkdir()
    (binfmt / "register").write_text("")
    (binfmt / "qemu-aarch64").write_text("enabled\nflags: OCF\n")
    (binfmt / "qemu-arm").write_text("enabled\nflags: OC\n")
    confs = tmp_path / "binfmt.d"
    confs.mkdir()
    for name in ("qemu-aarch64", "qemu-s390x"):
        (confs / f"{name}.conf").write_text(f":{name}:M::\\x7fELF::/x/{name}:OPF\n")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "apt-get").write_text("#!/bin/sh\nexit 97\n")
    (fake_bin / "apt-get").chmod(0o755)
    out = subprocess.run(
        ["bash", str(ROOT / "scripts/install-system.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={
            **os.environ,
            "PATH": f"{fake_bin}:{os.environ['PATH']}",
            "PLATFORGE_BINFMT_DIR": str(binfmt),
            "PLATFORGE_BINFMT_CONF_DIR": str(confs),
        },
        check=False,
    )
    assert out.returncode == 0, out.stderr
    # Only qemu-s390x was missing, so only its line reached the register file.
    assert (
        binfmt / "register"
    ).read_text() == ":qemu-s390x:M::\\x7fELF::/x/qemu-s390x:OPF"
    assert "qemu-arm lacks the F flag" in out.stderr
    assert "qemu-ppc64le is not registered" in out.stderr
    assert "qemu-aarch64" not in out.stderr


def test_a_port_taken_by_another_server_is_not_mistaken_for_ours(monkeypatch):
    # Someone else's registry answers /v2/ on the port we were handed first.
    other = Testbed()
    try:
        taken = other.registry("plain")
        ports = iter([int(taken.host.rpartition(":")[2])])
        real_free_port = bed_module.free_port
        monkeypatch.setattr(
            bed_module, "free_port", lambda: next(ports, None) or real_free_port()
        )
        bed = Testbed()
        try:
            ours = bed.registry("plain")
            assert ours.host != taken.host
            assert bed_module.listens_on(
                bed.pids["plain"], int(ours.host.split(":")[1])
            )
        finally:
            bed.stop()
    finally:
        other.stop()


@pytest.mark.qemu
def test_busybox_runs_inside_a_chroot_thanks_to_the_f_flag(busybox, require_qemu):
    # The chroot holds no emulator; only a handler with F (interpreter opened at
    # registration) can run a foreign binary there.
    if os.getuid() != 0:
        pytest.skip("chroot needs root")
    out = subprocess.run(
        ["chroot", str(busybox["arm64"]), "/bin/busybox", "uname", "-m"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "aarch64"


def test_a_fault_can_skip_the_first_matching_requests(registry_plain, fault_proxy):
    proxy = fault_proxy(registry_plain, Fault(path="^/v2/$", status=502, skip=2))
    with _client() as client:
        statuses = [client.get(f"{proxy.url}/v2/").status_code for _ in range(4)]
    assert statuses == [200, 200, 502, 200]


def test_token_registry_refuses_a_token_signed_by_a_stranger(
    testbed, registry_token, tmp_path
):
    stranger = make_token_signer(tmp_path)
    cert_pem = stranger.cert_file.read_bytes()
    now = int(time.time())
    forged = jwt.encode(
        {
            "iss": "platforge-testbed-token-server",
            "sub": testbed.username,
            "aud": "platforge-testbed",
            "exp": now + 300,
            "nbf": now - 1,
            "iat": now,
            "jti": "forged",
            "access": [],
        },
        stranger.key_file.read_bytes(),
        algorithm="RS256",
        headers={"kid": libtrust_key_id(cert_pem), "x5c": [x5c_entry(cert_pem)]},
    )
    with _client() as client:
        refused = client.get(
            f"{registry_token.url}/v2/", headers={"Authorization": f"Bearer {forged}"}
        )
    assert refused.status_code == 401


def test_token_registry_accepts_our_key_by_its_libtrust_kid_alone(
    testbed, registry_token
):
    # No x5c: distribution must find the key by the kid we compute.
    signer_dir = testbed.workdir / "token-server"
    cert_pem = (signer_dir / "token-cert.pem").read_bytes()
    now = int(time.time())
    claims = {
        "iss": "platforge-testbed-token-server",
        "sub": testbed.username,
        "aud": "platforge-testbed",
        "exp": now + 300,
        "nbf": now - 1,
        "iat": now,
        "jti": "kid-only",
        "access": [],
    }
    key = (signer_dir / "token-key.pem").read_bytes()
    by_kid = jwt.encode(
        claims, key, algorithm="RS256", headers={"kid": libtrust_key_id(cert_pem)}
    )
    wrong_kid = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "AAAA"})
    with _client() as client:
        accepted = client.get(
            f"{registry_token.url}/v2/", headers={"Authorization": f"Bearer {by_kid}"}
        )
        refused = client.get(
            f"{registry_token.url}/v2/",
            headers={"Authorization": f"Bearer {wrong_kid}"},
        )
    assert accepted.status_code == 200
    assert refused.status_code == 401
