"""The ``cvserve`` command starts without importing torch or DALI (torch alone took
~4 s of every start); commands import what they use.

Each check runs in a fresh interpreter: this test process may have imported torch already.
"""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_cli_import_does_not_import_torch() -> None:
    out = _run("import cvserve.pipelines.app.cli, sys; print('torch' in sys.modules)")
    assert out == "False", "importing cvserve.pipelines.app.cli imported torch"


def test_cli_parser_with_every_command_module_does_not_import_torch() -> None:
    # `cvserve --help` builds the parser, which imports every COMMAND_MODULES entry.
    out = _run(
        "import sys\n"
        "from cvserve.pipelines.app.cli import build_parser\n"
        "build_parser()\n"
        "heavy = ('torch', 'torchvision', 'nvidia.dali')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    assert out == "[]", f"building the cvserve parser imported {out}"


def test_architecture_metadata_without_torch() -> None:
    out = _run(
        "import sys\n"
        "from cvserve.models.architectures import architecture\n"
        "a = architecture('resnet50')\n"
        "print(a.task, a.input_size, a.resize_mode, a.num_classes, 'torch' in sys.modules)"
    )
    assert out == "classification (224, 224) shorter_crop 1000 False"


def test_preprocess_spec_for_an_architecture_without_torch() -> None:
    out = _run(
        "import sys\n"
        "from cvserve.pipelines.catalog import preprocess_spec_for\n"
        "s = preprocess_spec_for('ssdlite320_mobilenet_v3_large')\n"
        "print(s.resize_mode, s.crop, s.mean, 'torch' in sys.modules)"
    )
    assert out == "letterbox (320, 320) (127.5, 127.5, 127.5) False"


def test_every_lazy_reference_resolves() -> None:
    """The declarations name builders and torchvision objects as strings: check they exist."""
    from cvserve.models.architectures import ARCHITECTURES
    from cvserve.models.zoo import BUILDERS, _resolve, weights_enum

    for spec in ARCHITECTURES.values():
        assert spec.builder in BUILDERS, spec.name
        needs_constructor = spec.builder in ("classifier", "segmenter", "detector")
        assert (spec.constructor is not None) == needs_constructor, spec.name
        if spec.constructor is not None:
            assert callable(_resolve(spec.constructor)), spec.name
        enum = weights_enum(spec)
        assert enum is None or hasattr(enum, "DEFAULT"), spec.name


def test_every_pipeline_option_of_the_cli_reaches_the_catalog() -> None:
    import argparse

    from cvserve.pipelines.app.pipeline_args import add_pipeline_options
    from cvserve.pipelines.app.pipeline_args import options_of as _options
    from cvserve.pipelines.catalog import PIPELINE_OPTIONS

    parser = argparse.ArgumentParser()
    add_pipeline_options(parser)
    dests = {a.dest for a in parser._actions} - {"help", "pipeline", "file"}
    assert dests <= PIPELINE_OPTIONS, dests - PIPELINE_OPTIONS
    args = parser.parse_args(["--top-k", "3", "--max-detections", "7", "--device", "gpu"])
    assert set(_options(args)) == dests
    assert (_options(args)["top_k"], _options(args)["max_detections"]) == (3, 7)
