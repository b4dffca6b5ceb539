"""detect_identify over the real broker: a detector stage fans out crops that an identification
stage consumes at K× the image rate; every crop comes back tied to its request."""

from __future__ import annotations

import numpy as np
import pytest
from broker_testing import fanned_out_results, small_jpegs

from cvserve.broker.crops import cut_crops
from cvserve.broker.schema import decode_outputs
from cvserve.deploy.kafka import KafkaBroker
from cvserve.models.client import PipelineClient
from cvserve.pipelines.app.pipeline_args import catalog_route
from cvserve.preprocess.tensors import BOXES, COUNT, EMBEDDING, SCORES

pytestmark = [pytest.mark.kafka, pytest.mark.server]

PIPELINE = "detect_identify"


def test_crops_of_every_image_reach_identify_and_come_back_tied_to_their_request(
    kafka: KafkaBroker,
    triton_url,
    start_worker,
    namespace,
    task_specs,
) -> None:
    for stage in ("detect", "identify"):
        start_worker(triton_url, "--pipeline", PIPELINE, "--stage", stage)
    images = small_jpegs(4, first_seed=900)
    ids, results = fanned_out_results(kafka.bootstrap, catalog_route(PIPELINE), namespace, images)

    identify = PipelineClient(triton_url, task_specs["identify"])
    fan_out = []
    for request_id, image in zip(ids, images, strict=True):
        (detection,) = [m for m in results[request_id] if m.crop is None]
        found = decode_outputs(detection.value)
        count = int(found[COUNT].reshape(-1)[0])
        expected_crops = cut_crops(image, found[BOXES][:count], found[SCORES][:count], 0.0, count)
        crops = sorted((m for m in results[request_id] if m.crop), key=lambda m: m.crop.index)
        assert [m.crop.index for m in crops] == list(range(len(expected_crops)))
        fan_out.append(len(crops))
        for message, crop in zip(crops, expected_crops, strict=True):
            assert message.request_id == request_id and message.crop.box == crop.crop.box
            direct = identify.infer([crop.jpeg])[EMBEDDING][0]
            np.testing.assert_allclose(
                decode_outputs(message.value)[EMBEDDING].reshape(-1), direct, atol=1e-5
            )
    identify.close()
    assert min(fan_out) >= 1 and sum(fan_out) > len(images)  # more crops than images
