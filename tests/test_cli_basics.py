import subprocess
import sys


def test_version_prints_and_exits_zero():
    out = subprocess.run(
        [sys.executable, "-m", "platforge", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0
    assert "platforge, version" in out.stdout
