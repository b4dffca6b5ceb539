"""Host facts enter a spec in one step (`catalog.resolve` with a `Host`): a local repository
follows the host it is built on, an NGC repository is the same bytes whatever machine builds it,
and importing or building reads nothing of this machine."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from cvserve.models.params import DnnParams
from cvserve.models.repository.config import STAGE_PARAMETER, read_config
from cvserve.pipelines.app import cli, pipeline_args, serving_commands
from cvserve.pipelines.app.pipeline_args import catalog_route
from cvserve.pipelines.catalog import (
    file_specs,
    pipeline,
    pipeline_specs,
    resolve,
    shipped,
)
from cvserve.pipelines.defaults import UNKNOWN_HOST_THREADS
from cvserve.pipelines.host import NGC_TARGET, Host, target_host
from cvserve.preprocess.spec import PreprocessParams

# What `cvserve tune` might have stored on a big machine: none of it may reach an NGC repository.
TUNED = {"instances": 3, "dali_threads": 7, "torch_threads": 5, "max_batch_size": 4}


def _tuned(key: str) -> dict[str, Any]:
    return dict(TUNED)


SMALL = Host(cores=2)
BIG = Host(cores=64, tuned=_tuned)


def build(
    monkeypatch: pytest.MonkeyPatch, host: Host, out: Path, *extra: str, target: str = "local"
) -> Path:
    """``cvserve repo build`` as if run on ``host``."""
    monkeypatch.setattr(serving_commands, "this_machine", lambda: host)
    argv = ["repo", "build", "--pipeline", "classify", "--arch", "mobilenet_v3_small"]
    assert cli.main([*argv, "--target", target, "--out", str(out), *extra]) == 0
    return out


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def stage_params(repo: Path, model: str) -> dict[str, Any]:
    config = read_config(repo / model / "config.pbtxt")
    return json.loads(config.parameters[STAGE_PARAMETER].string_value)


# One build process per "machine": TorchScript numbers what it exports per process, so two
# exports in one process differ whatever the host; two processes doing the same agree.
BUILD_ON = """\
import json, sys
from cvserve.pipelines.app import cli, serving_commands
from cvserve.pipelines.host import Host

cores, tuned, out = json.loads(sys.argv[1])
serving_commands.this_machine = lambda: Host(cores, tuned=lambda key: dict(tuned))
for device in ("cpu", "gpu"):
    argv = ["repo", "build", "--pipeline", "classify", "--arch", "mobilenet_v3_small"]
    cli.main([*argv, "--target", "ngc", "--device", device, "--out", f"{out}/{device}"])
"""


def build_ngc_in_a_process(cores: int, tuned: dict[str, Any], out: Path) -> Path:
    """``cvserve repo build --target ngc`` for both devices, as if run on a machine of ``cores``
    cores where `cvserve tune` stored ``tuned``."""
    argument = json.dumps([cores, tuned, str(out)])
    done = subprocess.run(
        [sys.executable, "-c", BUILD_ON, argument], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_an_ngc_repository_is_the_same_bytes_built_on_2_or_64_cores(tmp_path: Path) -> None:
    small = build_ngc_in_a_process(2, {}, tmp_path / "small")
    big = build_ngc_in_a_process(64, TUNED, tmp_path / "big")
    for device in ("cpu", "gpu"):
        written = files(small / device)
        wanted = {"classify_preprocess/config.pbtxt", "classify_preprocess/1/model.dali"}
        assert wanted | {"classify_dnn/1/model.pt", "classify/config.pbtxt"} <= set(written)
        assert written == files(big / device), device
        # Neither machine's cores nor its tuned settings: DALI's documented fixed count.
        pre = read_config(small / device / "classify_preprocess" / "config.pbtxt")
        assert pre.parameters["num_threads"].string_value == str(UNKNOWN_HOST_THREADS)
        dnn = read_config(small / device / "classify_dnn" / "config.pbtxt")
        assert dnn.instance_group[0].count == (2 if device == "gpu" else 1)
        assert dnn.max_batch_size == (64 if device == "gpu" else 8)


def test_an_ngc_repository_takes_the_threads_the_command_line_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = build(monkeypatch, BIG, tmp_path / "ngc", "--dali-threads", "3", target="ngc")
    pre = read_config(repo / "classify_preprocess" / "config.pbtxt")
    assert pre.parameters["num_threads"].string_value == "3"


def test_a_local_repository_follows_the_host_it_is_built_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = build(monkeypatch, SMALL, tmp_path / "small")
    big = build(monkeypatch, Host(cores=64), tmp_path / "big")
    assert stage_params(small, "classify_preprocess")["num_threads"] == 2
    assert stage_params(big, "classify_preprocess")["num_threads"] == 64
    assert stage_params(small, "classify_dnn")["torch_threads"] == 2
    assert stage_params(big, "classify_dnn")["torch_threads"] == 64
    # The host's tuned settings too, where neither the command line nor the file sets one.
    tuned = build(monkeypatch, BIG, tmp_path / "tuned", "--instances", "1")
    assert stage_params(tuned, "classify_preprocess")["num_threads"] == 7
    dnn = read_config(tuned / "classify_dnn" / "config.pbtxt")
    assert (dnn.instance_group[0].count, dnn.max_batch_size) == (1, 4)


def test_only_the_ngc_target_is_resolved_away_from_the_building_host() -> None:
    assert target_host("local", BIG) is BIG
    assert target_host("ngc", BIG) is NGC_TARGET
    assert NGC_TARGET.cores is None and NGC_TARGET.tuned("any") == {}


def test_tuned_settings_apply_to_shipped_pipelines_only_and_lose_to_options_and_file(
    tmp_path: Path,
) -> None:
    spec = pipeline("classify", BIG, instances=2)
    pre = spec.stage_by_role("preprocess")
    assert pre.params_as(PreprocessParams).num_threads == 7  # tuned
    assert (pre.instances, pre.batching.max_batch_size) == (2, 4)  # option, tuned
    assert spec.stage_by_role("inference").params_as(DnnParams).torch_threads == 5
    path = tmp_path / "mine.yaml"
    path.write_text(
        textwrap.dedent("""\
        name: mine
        model: {arch: mobilenet_v3_small}
        postprocess: {kind: classification}
        serving: {dali_threads: 1}
        """)
    )
    _, (mine,) = file_specs(path, BIG)  # a user's file carries its tuning in itself
    assert mine.stage_by_role("preprocess").params_as(PreprocessParams).num_threads == 1
    assert mine.stage_by_role("inference").params_as(DnnParams).torch_threads == 64
    assert mine.stage_by_role("inference").instances == 1


def test_a_shipped_composite_shares_the_hosts_cores_and_starts_its_tuned_workers() -> None:
    def workers(key: str) -> dict[str, dict[str, Any]]:
        return {"identify": {"workers": 2, "rate": 12.0}}

    host = Host(cores=8, stage_tuned=workers)
    composite, specs = resolve(shipped("detect_identify"), host, shipped_as="detect_identify")
    assert composite is not None
    assert [(s.workers, s.rate) for s in composite.stages] == [(1, None), (2, 12.0)]
    assert [s.stage_by_role("inference").params_as(DnnParams).torch_threads for s in specs] == [
        4,
        4,
    ]
    untuned, _ = resolve(shipped("detect_identify"), host)  # as a user's file: the file's own
    assert untuned is not None and [s.workers for s in untuned.stages] == [1, 1]
    target = pipeline_specs("detect_identify", NGC_TARGET)
    threads = [s.stage_by_role("inference").params_as(DnnParams).torch_threads for s in target]
    assert threads == [UNKNOWN_HOST_THREADS, UNKNOWN_HOST_THREADS]


def test_every_command_routes_a_shipped_composite_with_the_hosts_tuned_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def workers(key: str) -> dict[str, dict[str, Any]]:
        return {"identify": {"workers": 2}}

    monkeypatch.setattr(pipeline_args, "this_machine", lambda: Host(2, stage_tuned=workers))
    assert [s.workers for s in catalog_route("detect_identify").stages] == [1, 2]
    untuned = catalog_route("detect_identify", Host(2))
    assert [s.workers for s in untuned.stages] == [1, 1]


def test_importing_and_resolving_for_a_given_host_reads_nothing_of_this_machine() -> None:
    """This machine's core count and tuned store fail when read; the CLI still imports and
    every kind of pipeline resolves for a given host."""
    code = textwrap.dedent("""\
        import cvserve.deploy.host as host, cvserve.deploy.measurements as measurements

        def machine_read(*args, **kwargs):
            raise AssertionError("read this machine")

        host.usable_cores = measurements.get = machine_read
        import cvserve.pipelines.app.cli
        from cvserve.pipelines.catalog import COMPOSITES, pipeline_specs
        from cvserve.pipelines.host import Host
        from cvserve.preprocess.spec import PreprocessParams

        assert [s.workers for s in COMPOSITES["detect_identify"].stages] == [1, 1]
        for name in ("classify", "detect_identify"):
            for spec in pipeline_specs(name, Host(cores=3)):
                pre = spec.stage_by_role("preprocess").params_as(PreprocessParams)
                assert pre.num_threads == 3, pre
        print("ok")
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
