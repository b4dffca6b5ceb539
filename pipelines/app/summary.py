"""Readable one-line summaries of a pipeline's answer, and PNGs of masks and depth maps."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cvserve.preprocess.tensors import BOXES, COUNT, DEPTH, EMBEDDING, LABELS, MASK, SCORES, SIZE


def summarize(outputs: dict[str, np.ndarray], row: int, names: list[str]) -> str:
    """What image ``row`` of a batch answer says, whatever the task."""
    if BOXES in outputs:
        count = int(outputs[COUNT][row].reshape(-1)[0])
        found = [
            f"{names[int(label)]} {score:.2f} [{', '.join(f'{v:.0f}' for v in box)}]"
            for box, score, label in zip(
                outputs[BOXES][row][:count],
                outputs[SCORES][row][:count],
                outputs[LABELS][row][:count],
                strict=True,
            )
        ]
        return f"{count} detection(s)" + (": " + "; ".join(found) if found else "")
    if MASK in outputs:
        h, w = (int(v) for v in outputs[SIZE][row])
        mask = outputs[MASK][row][:h, :w]
        classes, pixels = np.unique(mask, return_counts=True)
        order = np.argsort(-pixels)[:5]
        share = ", ".join(f"{names[int(classes[i])]} {pixels[i] / mask.size:.0%}" for i in order)
        return f"mask {w}x{h}: {share}"
    if DEPTH in outputs:
        h, w = (int(v) for v in outputs[SIZE][row])
        depth = outputs[DEPTH][row][:h, :w].astype(np.float32)
        return f"depth {w}x{h}: relative depth {depth.min():.3g} … {depth.max():.3g}"
    if EMBEDDING in outputs:
        e = outputs[EMBEDDING][row]
        head = ", ".join(f"{v:.3f}" for v in e[:4])
        return f"embedding {e.shape[0]}-d, norm {np.linalg.norm(e):.3f}: [{head}, …]"
    if LABELS in outputs:
        return ", ".join(
            f"{names[int(label)]} ({score:.3f})"
            for label, score in zip(outputs[LABELS][row], outputs[SCORES][row], strict=True)
        )
    return ", ".join(f"{k} {v[row].shape}" for k, v in outputs.items())


def write_pngs(outputs: dict[str, np.ndarray], row: int, image_path: Path) -> list[Path]:
    """Write the mask (class index per pixel) and/or depth (16-bit, min–max scaled) of image
    ``row`` next to ``image_path``; returns the files written."""
    written = []
    if MASK in outputs:
        h, w = (int(v) for v in outputs[SIZE][row])
        path = image_path.with_name(image_path.stem + ".mask.png")
        cv2.imwrite(str(path), outputs[MASK][row][:h, :w])
        written.append(path)
    if DEPTH in outputs:
        h, w = (int(v) for v in outputs[SIZE][row])
        depth = outputs[DEPTH][row][:h, :w].astype(np.float32)
        span = max(float(depth.max() - depth.min()), 1e-12)
        scaled = ((depth - depth.min()) / span * 65535).astype(np.uint16)
        path = image_path.with_name(image_path.stem + ".depth.png")
        cv2.imwrite(str(path), scaled)
        written.append(path)
    return written
