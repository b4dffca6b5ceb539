"""The machine a pipeline is resolved for, as plain values: its cores and what `cvserve tune`
stored on it. `catalog.resolve` is the one step that applies a `Host` to a pipeline file;
below it, builders take the cores as an argument and read nothing of any machine.

`this_machine` is the host a command serves on. `NGC_TARGET` is a repository built here but
served elsewhere (`repo build --target ngc`): no cores known and nothing tuned, so what it writes
is the file's ``serving:`` fields, else fixed defaults (`defaults.UNKNOWN_HOST_THREADS`), the same
bytes on any build machine.

The DNN engine is not a host fact at build time: a stage that names none measures and chooses
on the machine that loads it (`models.engine_choice`); a tuned ``engine`` comes in with the
tuned settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cvserve.deploy.host import usable_cores
from cvserve.pipelines.tuned import stored_settings, stored_stage_settings


def _nothing_tuned(key: str) -> dict[str, Any]:
    return {}


def _no_stages_tuned(key: str) -> dict[str, dict[str, Any]]:
    return {}


@dataclass(frozen=True)
class Host:
    """What a pipeline's serving settings may depend on. ``cores``: cores of the serving
    machine (None: unknown at build time). ``tuned(key)``: the settings `cvserve tune` stored for
    `tuned.tuned_key` ``key`` ({} if none); ``stage_tuned(key)``: stage → workers and rate for
    `tuned.stage_settings_key` ``key``. Lookups are called when a pipeline is resolved, never
    before."""

    cores: int | None
    tuned: Callable[[str], dict[str, Any]] = _nothing_tuned
    stage_tuned: Callable[[str], dict[str, dict[str, Any]]] = _no_stages_tuned


def this_machine() -> Host:
    """The machine this process runs on: its usable cores, its tuned-settings store."""
    return Host(usable_cores(), stored_settings, stored_stage_settings)


# A repository served on another machine: nothing of this one goes into it.
NGC_TARGET = Host(cores=None)


def target_host(target: str, here: Host) -> Host:
    """The host a ``repo build --target`` repository is resolved for: ``here`` (the machine
    building it) for ``local``, which serves it; `NGC_TARGET` for ``ngc``, served elsewhere."""
    return NGC_TARGET if target == "ngc" else here
