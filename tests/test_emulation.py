"""QEMU emulation through binfmt_misc: status, ensure and install.

The real /proc/sys/fs/binfmt_misc is read for status. Missing or broken handlers
cannot be produced on the real kernel without disturbing every other user of the
machine, so those cases are *simulated*: PLATFORGE_BINFMT_DIR points emulation at a
directory of hand-written handler files (the same format the kernel shows), and
install writes into a regular file named ``register`` there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from platforge import platforms
from platforge.build import emulation
from platforge.errors import EmulationError

if TYPE_CHECKING:
    from pathlib import Path

ARM64 = platforms.parse("linux/arm64")
HANDLER = """enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: {flags}
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
"""


@pytest.fixture
def fake_binfmt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A simulated binfmt_misc directory with no handlers in it."""
    directory = tmp_path / "binfmt_misc"
    directory.mkdir()
    monkeypatch.setenv("PLATFORGE_BINFMT_DIR", str(directory))
    return directory


def test_oci_architectures_map_to_qemu_names():
    assert emulation.qemu_name("arm64") == "aarch64"
    assert emulation.qemu_name("386") == "i386"
    assert emulation.qemu_name("mips64le") == "mips64el"
    assert emulation.qemu_name("ppc64le") == "ppc64le"
    with pytest.raises(EmulationError, match="'vax'"):
        emulation.qemu_name("vax")


def test_an_amd64_host_also_runs_386():
    if platforms.host().architecture != "amd64":
        pytest.skip("the host is not amd64")
    assert set(emulation.native_architectures()) == {"amd64", "386"}
    emulation.ensure(platforms.parse("linux/386"))


def test_status_reads_the_real_handlers(require_qemu):
    found = {s.architecture: s for s in emulation.status(["arm64", "s390x"])}
    assert found["arm64"].handler == "qemu-aarch64"
    assert found["arm64"].fix_binary
    assert found["arm64"].runnable
    assert found["s390x"].interpreter


def test_ensure_names_the_fix_when_no_handler_is_registered(fake_binfmt):
    with pytest.raises(EmulationError) as caught:
        emulation.ensure(ARM64)
    message = str(caught.value)
    assert "\n" not in message
    assert "no binfmt_misc handler for qemu-aarch64" in message
    assert "`platforge emulation install arm64`" in message


def test_ensure_refuses_a_handler_without_the_f_flag(fake_binfmt):
    (fake_binfmt / "qemu-aarch64").write_text(HANDLER.format(flags="P"))
    with pytest.raises(EmulationError, match="lacks the F flag"):
        emulation.ensure(ARM64)


def test_ensure_accepts_a_handler_with_the_f_flag(fake_binfmt):
    (fake_binfmt / "qemu-aarch64").write_text(HANDLER.format(flags="POF"))
    assert emulation.ensure(ARM64).fix_binary


def test_install_writes_the_packaged_definition_to_register(fake_binfmt):
    if not (emulation.DEFAULT_CONF_DIR / "qemu-aarch64.conf").exists():
        pytest.skip("qemu-user-static's binfmt.d definitions are not installed")
    register = fake_binfmt / "register"
    register.write_bytes(b"")
    (result,) = emulation.install(["arm64"])
    assert result.action == "registered"
    written = register.read_bytes()
    assert written.startswith(b":qemu-aarch64:M:")
    assert b"F" in written.rstrip().rsplit(b":", 1)[1], "containers need the F flag"


def test_install_prints_commands_when_binfmt_misc_is_not_mounted(fake_binfmt):
    if not (emulation.DEFAULT_CONF_DIR / "qemu-s390x.conf").exists():
        pytest.skip("qemu-user-static's binfmt.d definitions are not installed")
    (result,) = emulation.install(["s390x"])
    assert result.action == "manual"
    assert result.commands[0].startswith("sudo mount -t binfmt_misc")
    assert "qemu-s390x.conf" in result.commands[-1]


def test_install_leaves_a_working_handler_alone(fake_binfmt):
    (fake_binfmt / "qemu-aarch64").write_text(HANDLER.format(flags="POF"))
    (result,) = emulation.install(["arm64"])
    assert result.action == "present"


def test_install_on_the_real_kernel_reports_present_handlers(require_qemu, monkeypatch):
    monkeypatch.delenv("PLATFORGE_BINFMT_DIR", raising=False)
    results = emulation.install(["arm64", "amd64"])
    assert [r.action for r in results] == ["present", "native"]


def _cli(*args: str, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "platforge", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_emulation_status_prints_a_table_and_exits_zero():
    done = _cli("emulation", "status", "arm64", "amd64")
    assert done.returncode == 0, done.stderr
    assert "aarch64" in done.stdout
    assert "native" in done.stdout


def test_emulation_install_prints_each_root_command_once(fake_binfmt):
    if not (emulation.DEFAULT_CONF_DIR / "qemu-aarch64.conf").exists():
        pytest.skip("qemu-user-static's binfmt.d definitions are not installed")
    done = _cli(
        "emulation",
        "install",
        "arm64",
        "aarch64",
        "s390x",
        env={"PLATFORGE_BINFMT_DIR": str(fake_binfmt)},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"sudo mount -t binfmt_misc binfmt_misc {fake_binfmt}"
    assert len(lines) == 3, "one mount, then one register line per architecture"


def test_emulation_status_takes_an_architecture_with_its_variant():
    done = _cli("emulation", "status", "arm/v7")
    assert done.returncode == 0, done.stderr
    assert "qemu-arm" in done.stdout


def test_a_bad_platform_is_quoted_as_the_user_wrote_it():
    done = _cli("emulation", "status", "linux/")
    assert done.returncode == 1
    assert "platform 'linux/':" in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_emulation_help_texts_show_examples():
    for command in ([], ["status"], ["install"]):
        done = _cli("emulation", *command, "--help")
        assert done.returncode == 0, done.stderr
        assert "platforge emulation " in done.stdout.split("Example")[1]


def test_spellings_of_one_architecture_make_one_row():
    done = _cli("emulation", "status", "linux/arm/v7", "armhf", "x86_64", "amd64")
    assert done.returncode == 0, done.stderr
    rows = [
        line.split("│")[1].strip()
        for line in done.stdout.splitlines()
        if line.startswith("│")
    ]
    assert rows == ["arm", "amd64"]


def test_qemu_names_and_aliases_map_to_oci_architectures():
    names = ["aarch64", "x86_64", "i686", "armhf", "armv7", "mips64el", "loongarch64"]
    assert [emulation.oci_architecture(n) for n in names] == [
        *("arm64", "amd64", "386", "arm", "arm", "mips64le", "loong64"),
    ]
    assert emulation.oci_architecture("s390x") == "s390x"
    with pytest.raises(EmulationError, match="'vax' has no known QEMU emulator"):
        emulation.oci_architecture("vax")
