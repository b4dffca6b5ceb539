"""The models "a user brings" and their pipeline files, written once for the session
(`own_models`); each test module serves only the pipelines it calls (a python-backend stub
costs about 330 MB, so one server of them all beside the session's ran the machine out of
memory)."""

from __future__ import annotations

from pathlib import Path

import pytest
from own_model_serving import SINGLE
from own_models import write_models_and_files

from cvserve.pipelines.catalog import file_specs
from cvserve.pipelines.spec import CompositeSpec, PipelineSpec


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_models_and_files(tmp_path_factory.mktemp("own-models"))


@pytest.fixture(scope="session")
def specs(files: dict[str, Path]) -> dict[str, PipelineSpec]:
    """Each file's pipeline by name, and the composite's parts."""
    found = {name: file_specs(files[name])[1][0] for name in SINGLE}
    composite, parts = file_specs(files["yolo_embed"])
    found.update({p.name: p for p in parts})
    return found


@pytest.fixture(scope="session")
def composite(files: dict[str, Path]) -> CompositeSpec:
    composite, _ = file_specs(files["yolo_embed"])
    assert composite is not None
    return composite
