"""`cvserve bench profiling`'s comparison of a fused split with the stages apart, per request
and per image of the batch that did the work."""

from __future__ import annotations

from cvserve.profiling.bench.overhead import per_image, split_agreement
from cvserve.profiling.categories import FUSED


def test_per_image_divides_each_category_by_the_batch_of_the_model_doing_it() -> None:
    split = {"preprocessing": 6.0, "inference": 8.0, "postprocessing": 1.0}
    apart = {"p_pre": "preprocess", "p_dnn": "inference", "p_post": "postprocess"}
    got = per_image(split, apart, {"p_pre": 1.0, "p_dnn": 4.0, "p_post": 2.0})
    assert got == {"preprocessing": 6.0, "inference": 2.0, "postprocessing": 0.5}
    assert per_image(split, {"p_fused": FUSED}, {"p_fused": 2.0}) == {
        "preprocessing": 3.0,
        "inference": 4.0,
        "postprocessing": 0.5,
    }
    assert per_image(split, apart, {}) == split  # no statistics: per request


def _run(pair: int, mode: str, ms: float, image_ms: float) -> dict:
    categories = ("preprocessing", "inference", "postprocessing")
    return {
        "pair": pair,
        "mode": mode,
        "median_ms": dict.fromkeys(categories, ms),
        "per_image_ms": dict.fromkeys(categories, image_ms),
    }


def test_the_verdict_is_on_the_work_per_image() -> None:
    # Apart batches 4 where fused runs 1: per request 2 vs 8 ms, per image 2 vs 2.
    runs = [r for p in range(3) for r in (_run(p, "on", 2.0, 2.0), _run(p, "apart", 8.0, 2.05))]
    agreement = split_agreement(runs, 3)
    assert agreement["categories"]["inference"]["ratio"] == 0.25
    assert agreement["per_image"]["inference"]["ratio"] == round(2.0 / 2.05, 4)
    assert agreement["within"]
    runs[1]["per_image_ms"]["postprocessing"] = 3.0  # one pair out is not the median
    assert split_agreement(runs, 3)["within"]
    runs[3]["per_image_ms"]["postprocessing"] = 3.0
    assert not split_agreement(runs, 3)["within"]
