"""Small python-backend models the session's Triton serves beside cvserve's pipelines."""

from __future__ import annotations

from pathlib import Path

# Longer than the Kafka tests' max.poll.interval.ms for a slow-Triton worker (see SLOW_MODEL).
SLOW_MODEL_SECONDS = 8.0

SLOW_MODEL = """
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    \"\"\"Answers every request after SLEEP_S seconds (a Triton slower than a Kafka poll
    interval); the output is the encoded image's length.\"\"\"

    def initialize(self, args):
        import json

        parameters = json.loads(args["model_config"])["parameters"]
        self.sleep_s = float(parameters["SLEEP_S"]["string_value"])

    def execute(self, requests):
        responses = []
        for request in requests:
            time.sleep(self.sleep_s)
            image = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
            length = np.full((image.shape[0], 1), image.shape[1], dtype=np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("LENGTH", length)]))
        return responses
"""

SLOW_CONFIG = """
name: "slow"
backend: "python"
max_batch_size: 4
input [ { name: "IMAGE" data_type: TYPE_UINT8 dims: [ -1 ] } ]
output [ { name: "LENGTH" data_type: TYPE_FP32 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters { key: "SLEEP_S" value: { string_value: "%s" } }
"""


def write_slow_model(repository: Path) -> None:
    """``slow``: an encoded-image model (one stage of a pipeline of the same name over Kafka)
    that takes SLOW_MODEL_SECONDS per request."""
    (repository / "slow" / "1").mkdir(parents=True, exist_ok=True)
    (repository / "slow" / "config.pbtxt").write_text(SLOW_CONFIG % SLOW_MODEL_SECONDS)
    (repository / "slow" / "1" / "model.py").write_text(SLOW_MODEL)
