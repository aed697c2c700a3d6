"""Running platforge as ``nobody`` from a checkout that ``nobody`` cannot read.

CI may clone the repository under a directory private to root (``/root``, or a
``mktemp -d`` folder), where neither the source tree nor the virtual environment is
reachable by another user. Tests that drop to ``nobody`` therefore stage what the
child needs into a directory of their own: platforge's package and the files of
its runtime dependencies (read from the installed distributions' metadata, so the
list cannot drift from pyproject.toml), run with Debian's ``/usr/bin/python3`` when
present (the same CPython minor version, so compiled extensions load).
"""

from __future__ import annotations

import re
import shutil
import sys
from importlib import metadata
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _runtime_distributions(name: str) -> set[str]:
    """``name`` and everything it needs at run time, without extras."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        dist_name = todo.pop()
        key = dist_name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for requirement in metadata.distribution(dist_name).requires or []:
            if ";" in requirement and "extra" in requirement.split(";", 1)[1]:
                continue
            if ";" in requirement:
                continue  # markers for other Pythons or platforms
            match = re.match(r"[A-Za-z0-9._-]+", requirement)
            if match:
                todo.append(match.group(0))
    return seen


def stage_platforge(dest: Path) -> Path:
    """Copy platforge and its runtime dependencies into ``dest``; return it.

    Directories are made world-readable, so ``nobody`` can import from there.
    """
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(SRC / "platforge", dest / "platforge", dirs_exist_ok=True)
    for name in _runtime_distributions("platforge") - {"platforge"}:
        dist = metadata.distribution(name)
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file)))
            if file.parts[0] in ("..", "/") or not source.is_file():
                continue  # scripts installed outside site-packages
            target = dest / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


def python_for_nobody() -> str:
    """An interpreter ``nobody`` can execute, of this interpreter's minor version."""
    system = Path("/usr/bin/python3")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if system.exists() and Path(f"/usr/bin/{version}").exists():
        return str(system)
    return sys.executable
