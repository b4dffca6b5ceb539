"""The records every broker hop benchmark sends (`bench.kafka`, `bench.redis_hop`): synthetic JPEGs
of a chosen size, addressed to one bench stage, so Kafka and Redis Streams carry the same bytes."""

from __future__ import annotations

import math

from cvserve.broker.topics import Topics
from cvserve.preprocess.synthetic import synthetic_image

BENCH_TOPICS = Topics("bench")
BENCH_STAGE = "hop"


def jpeg_near(target_bytes: int, seed: int) -> bytes:
    """A synthetic 4:3 JPEG within a few percent of ``target_bytes``."""
    width = 800
    image = synthetic_image(width, width * 3 // 4, seed)
    for _ in range(3):  # encoded size grows about linearly with the pixel count
        width = max(16, round(width * math.sqrt(target_bytes / len(image))))
        image = synthetic_image(width, width * 3 // 4, seed)
    return image
