"""Read a pipeline's results (and dead letters) back from Redis Streams, each request once.

The same reader as over Kafka (`broker.results.UniqueResults`: duplicates dropped by
`Message.identity`, malformed entries counted and skipped, ``results.*`` hops stamped); only
where the records come from differs: the results stream, read without a consumer group.
"""

from __future__ import annotations

import time
from typing import Unpack

from cvserve.broker.redis_streams import StreamReader, redis_client
from cvserve.broker.results import ReadOptions, UniqueResults
from cvserve.broker.routes import Route, as_route
from cvserve.broker.schema import Record
from cvserve.broker.topics import Topics, default_namespace


class RedisResultReader(UniqueResults):
    """The results of ``pipeline`` on the Redis server at ``url``, each `Message.identity`
    once."""

    def __init__(
        self,
        url: str,
        pipeline: Route | str,
        namespace: str | None = None,
        from_beginning: bool = True,
        **options: Unpack[ReadOptions],
    ) -> None:
        stream = Topics(as_route(pipeline).pipeline, namespace or default_namespace()).results
        reader = StreamReader(redis_client(url), stream, from_beginning, owns=True)
        super().__init__(reader, **options)


def read_redis_dead_letters(
    url: str, pipeline: str, count: int, timeout_s: float, namespace: str | None = None
) -> list[Record]:
    """The first ``count`` dead letters of ``pipeline`` (``TimeoutError`` if fewer come)."""
    stream = Topics(pipeline, namespace or default_namespace()).dead_letter
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    with StreamReader(redis_client(url), stream, owns=True) as reader:
        while len(records) < count and time.monotonic() < deadline:
            records += reader.poll()
    if len(records) < count:
        raise TimeoutError(f"{len(records)} of {count} dead letters after {timeout_s:.0f} s")
    return records
