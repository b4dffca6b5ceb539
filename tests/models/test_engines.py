"""DNN engines on the CPU (`models.runners`): each agrees with torch fp32 eager within its bound,
and one that cannot run a network falls back to the model's own engine with the reason."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cvserve.models.params import ENGINES, DnnParams
from cvserve.models.runners import load_engine
from cvserve.pipelines.pipeline_file import load_file


def batch(shape: tuple[int, ...] = (3, 224, 224), n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, *shape)).astype(np.float32)


@pytest.mark.parametrize("arch", ["resnet18", "embed_resnet18"])
def test_every_engine_agrees_with_torch_fp32(arch: str) -> None:
    params = DnnParams(arch=arch, num_classes=10 if arch == "resnet18" else None, torch_threads=2)
    x = batch((3, 224, 224) if arch == "resnet18" else (3, 256, 128))
    (reference,) = load_engine(params).run(x)
    for engine in ENGINES:
        loaded = load_engine(dataclasses.replace(params, engine=engine))
        assert (loaded.engine, loaded.fallback) == (engine, None)
        (got,) = loaded.run(x)
        # fp32 engines reorder float sums: agreement to ~1e-5 of the outputs' scale.
        np.testing.assert_allclose(got, reference, atol=1e-4 * np.abs(reference).max() + 1e-6)
        if arch == "resnet18":
            np.testing.assert_array_equal(got.argmax(1), reference.argmax(1))


def test_bf16_runs_only_where_the_cpu_has_it_else_fp32_with_the_reason() -> None:
    params = DnnParams(arch="resnet18", num_classes=10, engine="openvino", precision="bf16")
    x = batch()
    (reference,) = load_engine(dataclasses.replace(params, engine=None, precision="fp32")).run(x)
    loaded = load_engine(params)
    (got,) = loaded.run(x)
    if loaded.precision == "bf16":
        np.testing.assert_allclose(got, reference, atol=0.5)  # bf16's bound, measured apart
    else:
        assert "no BF16" in str(loaded.fallback)
        np.testing.assert_allclose(got, reference, atol=1e-4 * np.abs(reference).max() + 1e-6)


def test_an_engine_that_cannot_run_a_network_falls_back_with_the_reason() -> None:
    params = DnnParams(arch="bright_region", engine="onnxruntime")
    loaded = load_engine(params)
    assert loaded.engine == "torch"
    assert "onnxruntime cannot run bright_region" in str(loaded.fallback)
    assert "running on torch" in str(loaded.fallback)
    count = loaded.run(batch((3, 64, 64)))[3]
    assert count.shape == (2, 1)


def test_engines_a_model_cannot_run_on_are_refused() -> None:
    with pytest.raises(ValueError, match="TorchScript model runs on torch"):
        DnnParams(model_file="/m.pt", model_format="torchscript", engine="openvino")
    with pytest.raises(ValueError, match="bf16 needs engine openvino, torch, torch_channels_last"):
        DnnParams(arch="resnet18", engine="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="fp16 needs engine torch, torch_channels_last"):
        DnnParams(arch="resnet18", engine="openvino", precision="fp16")
    # No engine named: bf16 is allowed, and the measured choice may use it.
    assert DnnParams(arch="resnet18", precision="bf16").engine is None


def test_a_file_names_the_engines_its_model_can_run_on(tmp_path) -> None:
    from cvserve.pipelines.catalog import file_specs

    (tmp_path / "m.pt").write_bytes(b"")
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: p\nmodel: {arch: resnet18}\npostprocess: {kind: classification}\n"
        "serving: {engine: torch, precision: bf16}\n"
    )
    load_file(path)  # valid as written; the combination is refused when built
    with pytest.raises(ValueError, match=r"serving.precision: bf16 .* needs engine: openvino"):
        file_specs(path)
    path.write_text(path.read_text().replace("bf16}", "fp16}"))
    with pytest.raises(ValueError, match=r"serving.precision: fp16 runs on a GPU"):
        file_specs(path)
    (spec,) = file_specs(path, device="gpu")[1]  # torch fp16 on a GPU
    dnn = spec.stage_by_role("inference")
    assert (dnn.device, dnn.params.engine, dnn.params.precision) == ("gpu", "torch", "fp16")


def test_reduced_precision_on_the_cpu_runs_fp32_through_torch_with_the_reason() -> None:
    loaded = load_engine(DnnParams(arch="resnet18", num_classes=10, precision="fp16"))
    assert (loaded.engine, loaded.precision, loaded.device) == ("torch", "fp32", "cpu")
    assert "fp16 asked for on the CPU" in str(loaded.fallback)


# Every task's network as the served pipeline runs it (the test suite's smaller inputs), end to
# end in this process: the same preprocessing, the engine under test, the same postprocessing.
SERVED = {
    "classify": ("resnet18", None),
    "segment": ("deeplabv3_mobilenet_v3_large", (128, 128)),
    "detect": ("ssdlite320_mobilenet_v3_large", None),
    "depth": ("depth_resnet18", (128, 128)),
    "identify": ("embed_resnet18", (128, 64)),
}


@pytest.mark.parametrize("task", sorted(SERVED))
def test_every_engine_gives_the_served_answers_of_torch_fp32(task: str) -> None:
    from cvserve.models.local_pipeline import LocalPipeline
    from cvserve.pipelines.catalog import image_pipeline, preprocess_spec_for
    from cvserve.preprocess.synthetic import synthetic_image
    from cvserve.preprocess.tensors import BOXES, COUNT, DEPTH, EMBEDDING, LABELS, MASK, SCORES

    arch, size = SERVED[task]
    options: dict = {"max_batch_size": 2, "torch_threads": 2}
    if size:
        options["preprocess"] = dataclasses.replace(preprocess_spec_for(arch), crop=size)
    if task == "detect":
        options.update(score_threshold=0.0, max_detections=5)
    images = [synthetic_image(320, 240, seed) for seed in (1, 2)]
    reference = LocalPipeline(image_pipeline(task, arch, engine="torch", **options))(images)
    ran = []
    for engine in ENGINES[1:]:
        spec = image_pipeline(task, arch, engine=engine, **options)
        dnn = spec.stage_by_role("inference").params_as(DnnParams)
        if load_engine(dnn).fallback:  # a detector does not export to ONNX: it cannot run
            assert task == "detect" and engine in ("onnxruntime", "openvino")
            continue
        got = LocalPipeline(spec)(images)
        ran.append(engine)
        if task == "classify":  # the same top-k classes, scores within the fp32 bound
            np.testing.assert_array_equal(got[LABELS], reference[LABELS])
            np.testing.assert_allclose(got[SCORES], reference[SCORES], atol=1e-4)
        elif task == "segment":  # masks: the same class at (nearly) every pixel
            assert np.mean(got[MASK] == reference[MASK]) >= 0.999
        elif task == "detect":  # boxes after postprocessing: same count, same places
            np.testing.assert_array_equal(got[COUNT], reference[COUNT])
            np.testing.assert_allclose(got[BOXES], reference[BOXES], atol=0.5)
            np.testing.assert_allclose(got[SCORES], reference[SCORES], atol=1e-3)
        elif task == "depth":
            scale = float(np.abs(reference[DEPTH]).max())
            np.testing.assert_allclose(got[DEPTH], reference[DEPTH], atol=1e-3 * scale)
        else:
            np.testing.assert_allclose(got[EMBEDDING], reference[EMBEDDING], atol=1e-5)
    assert ran, task
