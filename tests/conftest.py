"""Shared fixtures: loopback registries, reference tools, QEMU and real inputs.

Registries come from the test bed (``testbed/``): started on first use, stopped at
the end of the session. Run ``python -m testbed start`` first (or pass
``--testbed-state FILE`` / set ``PLATFORGE_TESTBED_STATE``) and every session
attaches to those registries instead, leaving them running.

Fixtures
--------
``testbed``            session: the ``testbed.Testbed``; ``.token_url``,
                       ``.token_stats()`` (tokens issued/refused), and
                       ``.reader_username``/``.reader_password``: a token-server
                       user that may only pull
``registry_plain``     HTTP, no auth (``Registry`` dataclass: name, host, url,
``registry_basic``     HTTP + basic auth       username, password, ca_file, scheme,
``registry_tls``       HTTPS, CA in ca_file    storage_dir; ``.creds``, ``.ref()``,
``registry_token``     HTTP + bearer tokens    ``.blob_path()``, ``.ssl_context()``)
``make_registry``      function: ``make_registry("plain"|"basic"|"tls"|"token")``
                       starts a registry of the test's own (safe to corrupt)
``fault_proxy``        function: ``fault_proxy(registry, Fault(...), ...)`` -> a
                       started ``FaultProxy`` (``.host``, ``.url``, ``.add()``,
                       ``.seen(method, path)``): the real registry behind a proxy
                       that injects statuses, delays and dropped connections
``busybox``            session: Debian arch -> extracted busybox-static root
``skopeo``             ``skopeo(*args, timeout=120)``; raises ToolError with stderr
``require_qemu``       skips unless arm64/arm/s390x/ppc64le binfmt handlers have F
``tmp_store``          function: a fresh ``PLATFORGE_STORE`` directory
``tmp_docker_config``  function: a fresh ``DOCKER_CONFIG`` (and skopeo auth file)
``corpus_dir``         session: ../shared/corpus beside the repo (or
                       $PLATFORGE_CORPUS), else skip
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from testbed import (  # noqa: E402  (the repo root must be importable first)
    ARCHES,
    Fault,
    FaultProxy,
    InputError,
    Registry,
    Testbed,
    busybox_roots,
    default_state_file,
    missing,
)
from testbed.tools import skopeo as run_skopeo  # noqa: E402

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterator

QEMU_HANDLERS = ["qemu-aarch64", "qemu-arm", "qemu-s390x", "qemu-ppc64le"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--testbed-state",
        default=None,
        help="state file of a test bed started with `python -m testbed start`; "
        "default $PLATFORGE_TESTBED_STATE or .testbed/state.json",
    )


@pytest.fixture(scope="session")
def testbed(request: pytest.FixtureRequest) -> Iterator[Testbed]:
    option = request.config.getoption("--testbed-state")
    state_file = Path(option) if option else default_state_file()
    running = Testbed.attach(state_file)
    if running is not None:
        yield running
        return
    if option:
        pytest.fail(f"--testbed-state {option}: no running test bed answers there")
    bed = Testbed()
    # SIGTERM (from `timeout`, CI cancel) becomes an interrupt, so pytest still
    # runs session teardown and the registries stop and their files go.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield bed
    finally:
        signal.signal(signal.SIGTERM, previous)
        bed.stop()


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _registry(bed: Testbed, name: str) -> Registry:
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed; run `make system`")
    return bed.registry(name)


@pytest.fixture(scope="session")
def registry_plain(testbed: Testbed) -> Registry:
    return _registry(testbed, "plain")


@pytest.fixture(scope="session")
def registry_basic(testbed: Testbed) -> Registry:
    return _registry(testbed, "basic")


@pytest.fixture(scope="session")
def registry_tls(testbed: Testbed) -> Registry:
    return _registry(testbed, "tls")


@pytest.fixture(scope="session")
def registry_token(testbed: Testbed) -> Registry:
    return _registry(testbed, "token")


@pytest.fixture
def make_registry() -> Iterator[Callable[[str], Registry]]:
    beds: list[Testbed] = []

    def make(kind: str = "plain") -> Registry:
        bed = Testbed()
        beds.append(bed)
        return _registry(bed, kind)

    try:
        yield make
    finally:
        for bed in beds:
            bed.stop()


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    proxies: list[FaultProxy] = []

    def make(registry: Registry, *faults: Fault) -> FaultProxy:
        ca_file = str(registry.ca_file) if registry.ca_file else None
        proxy = FaultProxy(registry.url, list(faults), ca_file=ca_file).start()
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            proxy.stop()


@pytest.fixture(scope="session")
def busybox() -> dict[str, Path]:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("busybox-static needs apt-get and dpkg-deb (Debian) to fetch")
    try:
        return busybox_roots(ARCHES)
    except InputError as exc:
        pytest.skip(f"busybox-static could not be fetched: {exc}")


@pytest.fixture(scope="session")
def skopeo() -> Callable[..., subprocess.CompletedProcess[str]]:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed; run `make system`")
    return run_skopeo


@pytest.fixture
def require_qemu() -> None:
    problems = missing(QEMU_HANDLERS)
    if problems:
        pytest.skip(
            "QEMU binfmt handlers with the F flag are needed "
            f"({'; '.join(problems)}); run `make system` as root"
        )


@pytest.fixture
def tmp_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    monkeypatch.setenv("PLATFORGE_STORE", str(store))
    return store


@pytest.fixture
def tmp_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = tmp_path / "docker-config"
    config.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(config / "config.json"))
    return config


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    # PLATFORGE_CORPUS lets a clone elsewhere (CI in /tmp) find the same corpus.
    override = os.environ.get("PLATFORGE_CORPUS")
    corpus = Path(override) if override else (ROOT / ".." / "shared" / "corpus")
    corpus = corpus.resolve()
    if not corpus.is_dir():
        pytest.skip(f"the shared corpus is not at {corpus} (set PLATFORGE_CORPUS)")
    return corpus
