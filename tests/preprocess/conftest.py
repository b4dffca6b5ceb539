"""Shared inputs of the preprocessing tests: the parity corpus, its reference outputs, bad input."""

from __future__ import annotations

import pytest

from cvserve.preprocess.backends import make_preprocessor
from cvserve.preprocess.parity import PARITY_SPECS, parity_images
from cvserve.preprocess.preprocessor import Result


@pytest.fixture(scope="session")
def corpus() -> dict[str, bytes]:
    """Every colour case at two sizes, keyed ``case@WxH``."""
    return parity_images()


@pytest.fixture(scope="session")
def references(corpus: dict[str, bytes]) -> dict[str, list[Result]]:
    """The float64 reference of the corpus, per `PARITY_SPECS` name (computed when first asked)."""

    class Lazy(dict):
        def __missing__(self, name: str) -> list[Result]:
            self[name] = make_preprocessor(PARITY_SPECS[name], "reference")(list(corpus.values()))
            return self[name]

    return Lazy()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # torchvision 0.29 deprecates its decoders (for TorchCodec); the backend keeps using them.
    mark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")
    for item in items:
        if "tests/preprocess" in str(item.path):
            item.add_marker(mark)
