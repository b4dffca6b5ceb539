"""The NGC preprocess stage: ``model.dali`` + ``config.pbtxt`` for Triton's DALI backend."""

from __future__ import annotations

import dataclasses

import numpy as np
import nvidia.dali
import pytest
from google.protobuf import text_format
from nvidia.dali import Pipeline
from tritonclient.grpc import model_config_pb2 as mc

from cvserve.models.repository.ngc import write_dali_stage
from cvserve.pipelines.catalog import preprocess_stage
from cvserve.pipelines.spec import BatchingSpec
from cvserve.preprocess.dali import DaliPreprocessor
from cvserve.preprocess.dali_model import MODEL_FILE
from cvserve.preprocess.spec import PreprocessParams, PreprocessSpec
from cvserve.preprocess.synthetic import colour_case, synthetic_image
from cvserve.preprocess.tensors import IMAGE

SPEC = PreprocessSpec(resize_mode="letterbox", crop=(96, 128), dtype="float16")


def write_dali_model(
    spec: PreprocessSpec,
    directory,
    max_batch_size: int,
    device: str | None = None,
    num_threads: int = 1,
    outputs: tuple[str, ...] = ("PIXELS", "META"),
):
    """The NGC writer's DALI stage for ``spec``, written as ``directory``."""
    spec = dataclasses.replace(spec, device=device or spec.device)
    stage = preprocess_stage(
        directory.name,
        PreprocessParams(spec, num_threads),
        BatchingSpec(max_batch_size=max_batch_size, preferred_batch_sizes=(max_batch_size,)),
    )
    known = {t.name: t for t in stage.outputs}
    tensors = tuple(known.get(n, dataclasses.replace(stage.outputs[0], name=n)) for n in outputs)
    return write_dali_stage(dataclasses.replace(stage, outputs=tensors), directory.parent)


def read_config(directory) -> mc.ModelConfig:
    return text_format.Parse((directory / "config.pbtxt").read_text(), mc.ModelConfig())


def test_config_is_a_dali_backend_model_with_the_spec_shapes(tmp_path) -> None:
    directory = write_dali_model(SPEC, tmp_path / "detect_preprocess", 16, "cpu", num_threads=3)
    config = read_config(directory)
    assert (config.name, config.backend, config.max_batch_size) == ("detect_preprocess", "dali", 16)
    (encoded,) = config.input
    assert (encoded.name, encoded.data_type, list(encoded.dims)) == (
        IMAGE,
        mc.TYPE_UINT8,
        [-1],
    )
    assert encoded.allow_ragged_batch
    pixels, meta = config.output
    assert (pixels.data_type, tuple(pixels.dims)) == (mc.TYPE_FP16, SPEC.output_shape)
    assert (meta.name, meta.data_type, list(meta.dims)) == ("META", mc.TYPE_FP32, [6])
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert config.parameters["num_threads"].string_value == "3"
    assert config.parameters["dali_version"].string_value == nvidia.dali.__version__
    assert f"DALI {nvidia.dali.__version__}" in (directory / "config.pbtxt").read_text()
    # Batched like every other target: the queue delay and preferred sizes of the spec.
    assert config.dynamic_batching.max_queue_delay_microseconds == BatchingSpec().max_queue_delay_us
    assert list(config.dynamic_batching.preferred_batch_size) == [16]


def test_serialized_graph_gives_the_same_output_on_cpu(tmp_path) -> None:
    directory = write_dali_model(SPEC, tmp_path / "m", 4, "cpu")
    pipe = Pipeline.deserialize(
        filename=str(directory / "1" / MODEL_FILE), device_id=None, prefetch_queue_depth=1
    )
    images = [
        synthetic_image(300, 200),
        colour_case("rgba_png", 97, 131),
        colour_case("exif6_jpeg", 80, 60),
    ]
    expected = DaliPreprocessor(SPEC, max_batch_size=4, num_threads=1)(images)
    # Triton hands the model the client's zero-padded rows: the graph must ignore the padding.
    length = max(map(len, images)) + 5
    rows = [np.pad(np.frombuffer(d, np.uint8), (0, length - len(d))) for d in images]
    for batch in ([np.frombuffer(d, np.uint8) for d in images], rows):
        pipe.feed_input(IMAGE, batch)
        pixels, meta = pipe.run()
        for i, e in enumerate(expected):
            np.testing.assert_array_equal(pixels.at(i), e.pixels)
            np.testing.assert_array_equal(meta.at(i), e.meta)


def test_one_output_model_serves_pixels_only(tmp_path) -> None:
    directory = write_dali_model(SPEC, tmp_path / "m", 2, "cpu", outputs=("PIXELS",))
    assert [o.name for o in read_config(directory).output] == ["PIXELS"]
    pipe = Pipeline.deserialize(
        filename=str(directory / "1" / MODEL_FILE), device_id=None, prefetch_queue_depth=1
    )
    pipe.feed_input(IMAGE, [np.frombuffer(synthetic_image(50, 40), np.uint8)])
    assert len(pipe.run()) == 1


def test_gpu_model_decodes_with_mixed_on_a_gpu_instance(tmp_path) -> None:
    directory = write_dali_model(PreprocessSpec(device="gpu"), tmp_path / "m", 64)
    assert read_config(directory).instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert b"mixed" in (directory / "1" / MODEL_FILE).read_bytes()


def test_outputs_are_pixels_then_meta(tmp_path) -> None:
    with pytest.raises(ValueError, match="outputs are"):
        write_dali_model(SPEC, tmp_path / "m", 1, "cpu", outputs=("A", "B", "C"))
    assert not (tmp_path / "m").exists()


def test_model_dali_reads_the_input_its_config_names(tmp_path) -> None:
    stage = preprocess_stage("p", PreprocessParams(SPEC, 1), BatchingSpec(max_batch_size=2))
    renamed = dataclasses.replace(stage.inputs[0], name="JPEG_BYTES")
    directory = write_dali_stage(dataclasses.replace(stage, inputs=(renamed,)), tmp_path)
    assert [i.name for i in read_config(directory).input] == ["JPEG_BYTES"]
    pipe = Pipeline.deserialize(
        filename=str(directory / "1" / MODEL_FILE), device_id=None, prefetch_queue_depth=1
    )
    pipe.feed_input("JPEG_BYTES", [np.frombuffer(synthetic_image(50, 40), np.uint8)])
    pixels, _ = pipe.run()
    assert tuple(pixels.at(0).shape) == SPEC.output_shape
