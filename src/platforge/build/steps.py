"""Metadata steps: the instructions that only edit the image config.

ENV, LABEL, USER, EXPOSE, VOLUME, CMD, ENTRYPOINT, SHELL, STOPSIGNAL, HEALTHCHECK,
ONBUILD, MAINTAINER and ARG change the config and add a history entry marked
``empty_layer``; they never touch a filesystem, which is why a Dockerfile without
RUN builds with no sandbox and no privilege. The rules follow Docker's:

* CMD, ENTRYPOINT and HEALTHCHECK in shell form run through the stage's SHELL
  (``/bin/sh -c`` by default);
* a new ENTRYPOINT clears a CMD inherited from the base image (a CMD set earlier
  in the same stage stays);
* EXPOSE ``80`` means ``80/tcp``; ranges (``8000-8002``) expand;
* HEALTHCHECK durations are stored in nanoseconds, ``HEALTHCHECK NONE`` disables
  an inherited check;
* ONBUILD stores the trigger's text; a stage built FROM such an image runs the
  triggers first (see the builder) and the triggers are not inherited further.

History ``created_by`` texts mirror BuildKit's (``CMD ["uname" "-m"]``, Go's
quoting of a string list) so tools that show history read the same.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from platforge.errors import BuildError

if TYPE_CHECKING:
    from platforge.build.image import ImageState
    from platforge.dockerfile.plan import Step

__all__ = ["METADATA_KEYWORDS", "apply_metadata", "go_quote_list", "shell_of"]

_DEFAULT_SHELL = ["/bin/sh", "-c"]
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def go_quote_list(words: list[str]) -> str:
    """A string list as Go's ``%q`` prints it: ``["a" "b"]``."""
    return "[" + " ".join(json.dumps(w, ensure_ascii=False) for w in words) + "]"


def shell_of(state: ImageState) -> list[str]:
    shell = state.run_config.get("Shell")
    return list(shell) if shell else list(_DEFAULT_SHELL)


def _command(state: ImageState, step: Step) -> list[str]:
    if step.instruction.json_form:
        return list(step.args)
    return [*shell_of(state), " ".join(step.args)]


def _duration(text: str, flag: str) -> int:
    total, pos = 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_NS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise BuildError(
            f"HEALTHCHECK --{flag}={text!r}: not a duration; use e.g. 30s, 1m30s"
        )
    return int(total)


def _ports(words: list[str]) -> list[str]:
    ports: list[str] = []
    for word in words:
        port, _, proto = word.partition("/")
        proto = (proto or "tcp").lower()
        low, _, high = port.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise BuildError(f"EXPOSE {word}: not a port; use PORT[/tcp|udp|sctp]")
        ports.extend(f"{n}/{proto}" for n in range(int(low), int(high or low) + 1))
    return ports


def _healthcheck(state: ImageState, step: Step) -> tuple[dict[str, Any], str]:
    args = list(step.args)
    if args and args[0].upper() == "NONE":
        return {"Test": ["NONE"]}, "HEALTHCHECK NONE"
    if not args or args[0].upper() != "CMD":
        raise BuildError("HEALTHCHECK: expected CMD or NONE; see the Dockerfile docs")
    rest = args[1:]
    if step.instruction.json_form:
        test = ["CMD", *rest]
    else:
        test = ["CMD-SHELL", " ".join(rest)]
    check: dict[str, Any] = {"Test": test}
    for flag, key in (
        ("interval", "Interval"),
        ("timeout", "Timeout"),
        ("start-period", "StartPeriod"),
        ("start-interval", "StartInterval"),
    ):
        if step.flags.get(flag):
            check[key] = _duration(step.flags[flag], flag)
    if step.flags.get("retries"):
        retries = step.flags["retries"]
        if not retries.isdigit():
            raise BuildError(f"HEALTHCHECK --retries={retries!r}: use a whole number")
        check["Retries"] = int(retries)
    del state
    return check, f"HEALTHCHECK &{{{go_quote_list(test)} ...}}"


def _env(state: ImageState, step: Step) -> str:
    for word in step.args:
        key, _, value = word.partition("=")
        state.set_env(key, value)
    return "ENV " + " ".join(step.args)


def _label(state: ImageState, step: Step) -> str:
    labels = dict(state.run_config.get("Labels") or {})
    for word in step.args:
        key, _, value = word.partition("=")
        labels[key] = value
    state.run_config["Labels"] = labels
    return "LABEL " + " ".join(step.args)


def _maintainer(state: ImageState, step: Step) -> str:
    state.config["author"] = " ".join(step.args)
    return "MAINTAINER " + str(state.config["author"])


def _user(state: ImageState, step: Step) -> str:
    state.run_config["User"] = step.args[0] if step.args else ""
    return "USER " + str(state.run_config["User"])


def _expose(state: ImageState, step: Step) -> str:
    exposed = dict(state.run_config.get("ExposedPorts") or {})
    ports = _ports(list(step.args))
    exposed.update({port: {} for port in ports})
    state.run_config["ExposedPorts"] = exposed
    return "EXPOSE map[" + " ".join(f"{p}:{{}}" for p in sorted(ports)) + "]"


def _volume(state: ImageState, step: Step) -> str:
    volumes = dict(state.run_config.get("Volumes") or {})
    for word in step.args:
        if not word.strip():
            raise BuildError("VOLUME: a volume path cannot be empty")
        volumes[word] = {}
    state.run_config["Volumes"] = volumes
    return "VOLUME " + go_quote_list(list(step.args))


def _cmd(state: ImageState, step: Step) -> str:
    state.run_config["Cmd"] = _command(state, step)
    state.cmd_set = True
    return "CMD " + go_quote_list(state.run_config["Cmd"])


def _entrypoint(state: ImageState, step: Step) -> str:
    state.run_config["Entrypoint"] = _command(state, step)
    if not state.cmd_set:
        state.run_config["Cmd"] = None
    return "ENTRYPOINT " + go_quote_list(state.run_config["Entrypoint"])


def _shell(state: ImageState, step: Step) -> str:
    if not step.instruction.json_form:
        raise BuildError('SHELL: needs the JSON form, e.g. SHELL ["/bin/bash", "-c"]')
    state.run_config["Shell"] = list(step.args)
    return "SHELL " + go_quote_list(list(step.args))


def _stopsignal(state: ImageState, step: Step) -> str:
    state.run_config["StopSignal"] = step.args[0] if step.args else ""
    return "STOPSIGNAL " + str(state.run_config["StopSignal"])


def _healthcheck_step(state: ImageState, step: Step) -> str:
    check, text = _healthcheck(state, step)
    state.run_config["Healthcheck"] = check
    return text


def _onbuild(state: ImageState, step: Step) -> str:
    trigger = step.instruction.original.strip()
    trigger = re.sub(r"^\s*ONBUILD\s+", "", trigger, flags=re.IGNORECASE)
    inner = step.instruction.onbuild
    if inner is not None and inner.heredocs:
        # The trigger keeps its here-documents, as BuildKit's does, so that
        # parsing it again in a child gives the same instruction.
        bodies = "".join(f"\n{doc.content}{doc.name}" for doc in inner.heredocs)
        trigger += bodies
    state.run_config["OnBuild"] = [*(state.run_config.get("OnBuild") or []), trigger]
    return "ONBUILD " + trigger


def _arg(state: ImageState, step: Step) -> str:
    del state
    return "ARG " + " ".join(step.args)


_APPLY = {
    "ENV": _env,
    "LABEL": _label,
    "MAINTAINER": _maintainer,
    "USER": _user,
    "EXPOSE": _expose,
    "VOLUME": _volume,
    "CMD": _cmd,
    "ENTRYPOINT": _entrypoint,
    "SHELL": _shell,
    "STOPSIGNAL": _stopsignal,
    "HEALTHCHECK": _healthcheck_step,
    "ONBUILD": _onbuild,
    "ARG": _arg,
}


def apply_metadata(state: ImageState, step: Step) -> str:
    """Apply a metadata ``step`` to ``state``; return the history ``created_by``."""
    apply = _APPLY.get(step.keyword)
    if apply is None:
        raise BuildError(f"{step.keyword}: not a metadata instruction")
    return apply(state, step)


METADATA_KEYWORDS = frozenset(_APPLY)
