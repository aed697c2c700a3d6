"""platforge's test bed: loopback registries, QEMU state and real multi-arch inputs.

``python -m testbed start|stop|env|status|inputs`` drives it from a shell;
tests/conftest.py uses the same code in-process. Everything listens on 127.0.0.1
and every wait is bounded.
"""

from __future__ import annotations

from testbed.bed import NAMES, Registry, Testbed, TestbedError, default_state_file
from testbed.faults import Fault, FaultProxy, Seen
from testbed.inputs import ARCHES, PLATFORMS, InputError, busybox_roots, cache_dir
from testbed.qemu import Handler, missing, qemu_status

__all__ = [
    "ARCHES",
    "NAMES",
    "PLATFORMS",
    "Fault",
    "FaultProxy",
    "Handler",
    "InputError",
    "Registry",
    "Seen",
    "Testbed",
    "TestbedError",
    "busybox_roots",
    "cache_dir",
    "default_state_file",
    "missing",
    "qemu_status",
]
