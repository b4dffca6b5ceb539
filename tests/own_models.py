"""Models "a user brings", made by the tests (random weights): a torchvision classifier
(ResNet-18), a small segmentation net, an embedding net and a YOLO-style raw-head detector,
exported to ONNX and TorchScript with tensor names as other frameworks' exporters write them;
pipeline files for each; and a model in the user's own Triton repository (python backend,
their model.py)."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

CLASSES = 6
SIZE = 96  # model input side: small for CPU time


class TinySegmenter(nn.Module):
    """(N, 3, H, W) → per-class logits (N, CLASSES, H, W) at the input resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, CLASSES, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class TinyEmbedder(nn.Module):
    """(N, 3, H, W) → (N, 16) features (not normalised: the pipeline does it)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 5, stride=4)
        self.fc = nn.Linear(8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class TinyYolo(nn.Module):
    """A raw YOLOv8-style head: (N, 3, S, S) → (N, 4 + CLASSES, A), boxes cx, cy, w, h in input
    pixels on an 8x8 grid of anchors, class scores in (0, 1). Neighbouring anchors predict
    overlapping boxes, so NMS has work to do."""

    def __init__(self, size: int = SIZE, grid: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(grid)
        )
        self.box = nn.Conv2d(8, 4, 1)
        self.cls = nn.Conv2d(8, CLASSES, 1)
        step = size / grid
        ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
        self.register_buffer(
            "centres", torch.stack([xs, ys]).float().reshape(2, -1) * step + step / 2
        )
        self.step = step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        n = x.shape[0]
        raw = self.box(f).reshape(n, 4, -1)
        centre = self.centres + torch.tanh(raw[:, :2]) * self.step
        wh = (torch.sigmoid(raw[:, 2:]) + 0.5) * 2.5 * self.step
        scores = torch.sigmoid(self.cls(f).reshape(n, CLASSES, -1) * 4)
        return torch.cat([centre, wh, scores], dim=1)


def classifier() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=CLASSES).eval()


def segmenter() -> nn.Module:
    torch.manual_seed(1)
    return TinySegmenter().eval()


def embedder() -> nn.Module:
    torch.manual_seed(2)
    return TinyEmbedder().eval()


def yolo() -> nn.Module:
    torch.manual_seed(3)
    return TinyYolo().eval()


def export_onnx(
    model: nn.Module, path: Path, input_name: str, output_name: str, spatial: bool = False
) -> Path:
    """ONNX with a dynamic batch axis (and dynamic height and width with ``spatial``)."""
    example = torch.randn(2, 3, SIZE, SIZE)
    axes = {0: "batch", 2: "height", 3: "width"} if spatial else {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: axes, output_name: axes if spatial else {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return path


def export_torchscript(model: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, torch.randn(2, 3, SIZE, SIZE)).save(str(path))
    return path


# Tensor names as TensorFlow / ONNX exporters write them: not Python identifiers.
INPUT = "input.1"
OUTPUTS = {"classifier": "logits/Softmax:0", "segmenter": "out.seg", "embedder": "emb/0"}


def user_repository(root: Path) -> Path:
    """A Triton repository with the user's own python-backend model ``brightness``: pixels
    (N, 3, SIZE, SIZE) → ``mean_rgb`` (N, 3), the mean per channel."""
    model = root / "brightness"
    (model / "1").mkdir(parents=True, exist_ok=True)
    (model / "config.pbtxt").write_text(
        textwrap.dedent(
            f"""\
            name: "brightness"
            backend: "python"
            max_batch_size: 8
            input {{ name: "pixels" data_type: TYPE_FP32 dims: [3, {SIZE}, {SIZE}] }}
            output {{ name: "mean_rgb" data_type: TYPE_FP32 dims: [3] }}
            instance_group {{ count: 1 kind: KIND_CPU }}
            """
        )
    )
    (model / "1" / "model.py").write_text(
        textwrap.dedent(
            """\
            import numpy as np
            import triton_python_backend_utils as pb_utils


            class TritonPythonModel:
                def execute(self, requests):
                    out = []
                    for request in requests:
                        x = pb_utils.get_input_tensor_by_name(request, "pixels").as_numpy()
                        mean = x.mean(axis=(2, 3)).astype(np.float32)
                        out.append(pb_utils.InferenceResponse([pb_utils.Tensor("mean_rgb", mean)]))
                    return out
            """
        )
    )
    return root


USER_POSTPROCESS = '''\
"""A user's postprocess module: tensor dict in, tensor dict out."""

import numpy as np


def best_class(tensors, offset=0):
    logits = tensors["logits/Softmax:0"]
    return {
        "best": (logits.argmax(axis=1) + offset).astype(np.int64)[:, None],
        "width": tensors["META"][:, 1:2].astype(np.float32),
    }


def broken(tensors):
    raise RuntimeError("the user's function failed on purpose")
'''


def write_models_and_files(folder: Path) -> dict[str, Path]:
    """Every model and pipeline file of the tests under ``folder``; name → pipeline file."""
    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(classifier(), folder / "classifier.onnx", INPUT, OUTPUTS["classifier"])
    export_torchscript(classifier(), folder / "classifier.pt")
    export_onnx(segmenter(), folder / "segmenter.onnx", INPUT, OUTPUTS["segmenter"])
    export_torchscript(segmenter(), folder / "segmenter.pt")
    export_onnx(segmenter(), folder / "segmenter_any.onnx", INPUT, "mask", spatial=True)
    export_onnx(embedder(), folder / "embedder.onnx", INPUT, OUTPUTS["embedder"])
    export_torchscript(embedder(), folder / "embedder.pt")
    export_onnx(yolo(), folder / "yolo.onnx", "images", "output0")
    user_repository(folder / "user_repo")
    (folder / "user_post.py").write_text(USER_POSTPROCESS)
    (folder / "labels.txt").write_text("".join(f"label{i}\n" for i in range(CLASSES)))
    files = {
        "cls_onnx": f"""
            name: cls_onnx
            model: {{onnx: classifier.onnx}}
            input: {{size: [{SIZE}, {SIZE}]}}
            postprocess: {{kind: classification, top_k: 3, labels: labels.txt}}
            serving: {{max_batch_size: 4}}
            """,
        "cls_ts": f"""
            name: cls_ts
            model: {{torchscript: classifier.pt}}
            input: {{size: [{SIZE}, {SIZE}], resize: fixed, scale: 0.00392156862745098,
                     channels: BGR}}
            postprocess: {{kind: classification, top_k: 3}}
            serving: {{max_batch_size: 4}}
            """,
        "seg_onnx": f"""
            name: seg_onnx
            model: {{onnx: segmenter.onnx}}
            input: {{size: [{SIZE}, {SIZE}], resize: fixed}}
            postprocess: {{kind: segmentation}}
            serving: {{max_batch_size: 4}}
            """,
        "seg_ts": f"""
            name: seg_ts
            model: {{torchscript: segmenter.pt}}
            input: {{size: [{SIZE}, {SIZE}], resize: letterbox}}
            postprocess: {{kind: segmentation}}
            serving: {{max_batch_size: 4}}
            """,
        "seg_dynamic": """
            name: seg_dynamic
            model: {onnx: segmenter_any.onnx}
            input: {resize: dynamic, max_side: 128, multiple_of: 32}
            postprocess: {kind: segmentation}
            serving: {max_batch_size: 4}
            """,
        "arch_openvino": """
            name: arch_openvino
            model: {arch: resnet18, num_classes: 10}
            postprocess: {kind: classification, top_k: 3}
            serving: {max_batch_size: 4, engine: openvino}
            """,
        "emb_onnx": f"""
            name: emb_onnx
            model: {{onnx: embedder.onnx}}
            input: {{size: [{SIZE}, {SIZE}], resize: fit_height}}
            postprocess: {{kind: embedding}}
            serving: {{max_batch_size: 4}}
            """,
        "emb_ts": f"""
            name: emb_ts
            model: {{torchscript: embedder.pt}}
            input: {{size: [{SIZE}, {SIZE}], resize: fixed}}
            postprocess: {{kind: embedding}}
            serving: {{max_batch_size: 4}}
            """,
        "yolo_onnx": f"""
            name: yolo_onnx
            model: {{onnx: yolo.onnx}}
            input:
              size: [{SIZE}, {SIZE}]
              resize: letterbox_top_left
              scale: 0.00392156862745098
            postprocess:
              kind: detection
              head: yolo
              box_format: cxcywh
              score_threshold: 0.25
              iou_threshold: 0.5
              max_detections: 10
            serving: {{max_batch_size: 4}}
            """,
        "user_fn": f"""
            name: user_fn
            model: {{onnx: classifier.onnx}}
            input: {{size: [{SIZE}, {SIZE}]}}
            postprocess:
              kind: python
              function: user_post:best_class
              options: {{offset: 100}}
              outputs:
                - {{name: best, dtype: int64, dims: [1]}}
                - {{name: width, dtype: float32, dims: [1]}}
            serving: {{max_batch_size: 4}}
            """,
        "user_fn_broken": f"""
            name: user_fn_broken
            model: {{onnx: classifier.onnx}}
            input: {{size: [{SIZE}, {SIZE}]}}
            postprocess:
              kind: python
              function: user_post:broken
              outputs: [{{name: best, dtype: int64, dims: [1]}}]
            serving: {{max_batch_size: 4}}
            """,
        "brightness": """
            name: brightness_pipeline
            model: {triton: brightness, repository: user_repo}
            input: {tensor: pixels, resize: fixed, scale: 0.00392156862745098}
            postprocess: {kind: raw}
            """,
        "yolo_embed": """
            name: yolo_embed
            composite:
              - pipeline: yolo.yaml
                fan_out: {score_threshold: 0.25, max_crops: 4}
              - pipeline: embed.yaml
            """,
    }
    # The composite's stages: files of their own, as a user would keep them.
    files["yolo"] = files["yolo_onnx"].replace("name: yolo_onnx", "name: yolo_stage")
    files["embed"] = files["emb_onnx"].replace("name: emb_onnx", "name: embed_stage")
    paths = {}
    for name, text in files.items():
        path = folder / f"{name}.yaml"
        path.write_text(textwrap.dedent(text))
        paths[name] = path
    return paths
