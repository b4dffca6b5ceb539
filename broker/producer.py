"""Submit images to a pipeline over Kafka: `ImageProducer.submit(images) -> request ids`.

Records go to the first stage's topic with acks=all from an idempotent librdkafka producer
(`broker.clients`). Every image is checked before
sending: its size against `MessageLimits` and, unless told not to, its header with
`preprocess.sniff` (format, size, pixel limit) — errors name the image and the limit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from typing import Any

from cvserve.broker.clients import (
    DELIVERY_TIMEOUT_MS,
    new_producer,
    produce,
    wait_delivered,
)
from cvserve.broker.routes import Route, as_route
from cvserve.broker.schema import (
    IMAGE_CONTENT_TYPES,
    UNKNOWN_CONTENT_TYPE,
    Message,
    Record,
    TraceContext,
    new_request_id,
)
from cvserve.broker.topics import Topics, default_namespace, ensure_topics
from cvserve.deploy.kafka_limits import LIMITS, MessageLimits
from cvserve.preprocess.sniff import sniff
from cvserve.preprocess.spec import PreprocessError

SUBMIT_HOP = "submit"
log = logging.getLogger(__name__)


class MessageTooLarge(ValueError):
    """An image larger than a record may carry."""


def check_size(value: bytes, limits: MessageLimits = LIMITS, what: str = "image") -> None:
    """Raise `MessageTooLarge` if ``value`` cannot travel in one record."""
    if len(value) > limits.max_value_bytes:
        raise MessageTooLarge(
            f"{what}: {len(value):,} bytes exceeds the limit of {limits.max_value_bytes:,} bytes "
            f"per image (a record is at most {limits.max_message_bytes:,} bytes, headers included)"
        )


def check_record(record: Record, limits: MessageLimits = LIMITS, what: str = "record") -> None:
    """Raise `MessageTooLarge` if ``record`` (key, value and headers together) cannot be
    produced."""
    if not limits.fits(record.size):
        raise MessageTooLarge(
            f"{what}: key, value and headers take {record.size:,} bytes; a record is at most "
            f"{limits.max_message_bytes:,} bytes"
        )


def check_key(key: str, limits: MessageLimits = LIMITS) -> None:
    """Raise `MessageTooLarge` if ``key`` (UTF-8, undecodable bytes kept) is longer than a
    record's key may be."""
    key_bytes = len(key.encode("utf-8", "surrogateescape"))
    if key_bytes > limits.max_key_bytes:
        raise MessageTooLarge(f"key: {key_bytes:,} bytes, at most {limits.max_key_bytes:,}")


def image_message(
    image: bytes, pipeline: str, stage: str, key: str = "", validate: bool = True
) -> Message:
    """A new request for ``image``. With ``validate``, an image `sniff` refuses raises
    `PreprocessError`; without, it is sent as ``application/octet-stream`` for the stage to judge.
    """
    try:
        header = sniff(image)
        content_type = IMAGE_CONTENT_TYPES[header.format]
        size: tuple[int, int] | None = (header.width, header.height)
    except PreprocessError:
        if validate:
            raise
        content_type, size = UNKNOWN_CONTENT_TYPE, None
    return Message(
        request_id=new_request_id(),
        pipeline=pipeline,
        stage=stage,
        value=image,
        content_type=content_type,
        trace=TraceContext.new().hop(SUBMIT_HOP),
        key=key,
        original_size=size,
    )


class ImageRequests:
    """Checked requests for the first stage of ``pipeline`` (a `Route`, or the name of a pipeline
    served as one ensemble) in ``namespace``: what every broker's image producer
    (`ImageProducer`, `redis_streams.RedisImageProducer`) makes and addresses before its own
    transport sends it."""

    def __init__(
        self, pipeline: Route | str, namespace: str | None = None, limits: MessageLimits = LIMITS
    ) -> None:
        self.route = as_route(pipeline)
        self.pipeline = self.route.pipeline
        self.limits = limits
        self.stage = self.route.first.name
        self.topics = Topics(self.pipeline, namespace or default_namespace())

    def message(self, image: bytes, key: str = "", validate: bool = True) -> Message:
        """A checked request for ``image`` (raises `MessageTooLarge` or `PreprocessError`)."""
        check_size(image, self.limits)
        check_key(key, self.limits)
        return image_message(image, self.pipeline, self.stage, key, validate)

    def record(self, message: Message) -> Record:
        """``message`` as the record `send_record` takes, checked against the limits (raises
        `MessageTooLarge`)."""
        check_size(message.value, self.limits)
        record = message.to_record(self.limits)
        check_record(record, self.limits, what=f"request {message.request_id}")
        return record


class ImageProducer(ImageRequests):
    """Sends images to the first stage of ``pipeline`` on the broker at ``bootstrap``."""

    def __init__(
        self,
        bootstrap: str,
        pipeline: Route | str,
        namespace: str | None = None,
        limits: MessageLimits = LIMITS,
        **kafka_overrides: Any,
    ) -> None:
        super().__init__(pipeline, namespace, limits)
        self.topic = self.topics.stage_in(self.stage)
        ensure_topics(bootstrap, self.topics.all(self.route.stage_names), limits=limits)
        self._producer = new_producer(bootstrap, limits, **kafka_overrides)

    def send(self, image: bytes, key: str = "", validate: bool = True) -> tuple[str, Future[None]]:
        """Queue one image; returns its request id and its delivery (done = acknowledged; its
        callbacks run in `flush`, `wait` and later sends)."""
        message = self.message(image, key, validate)
        return message.request_id, self.send_message(message)

    def send_message(self, message: Message, topic: str | None = None) -> Future[None]:
        """Queue a ready-made message (default topic: the first stage's)."""
        return self.send_record(self.record(message), topic)

    def send_record(self, record: Record, topic: str | None = None) -> Future[None]:
        """Hand a checked record (`record`) to the producer (default topic: the first
        stage's)."""
        future = produce(
            self._producer, topic or self.topic, record.key, record.value, record.headers
        )
        self._producer.poll(0)  # deliveries of earlier sends
        return future

    def submit(self, images: Iterable[bytes], key: str = "", validate: bool = True) -> list[str]:
        """Check every image, send them all, wait until the broker acknowledged each; returns
        their request ids in order. If any image fails its checks, nothing is sent."""
        messages = [self.message(image, key, validate) for image in images]
        futures = [self.send_message(message) for message in messages]
        self.wait(futures, timeout_s=DELIVERY_TIMEOUT_MS / 1000 + 30)
        return [message.request_id for message in messages]

    def wait(self, futures: Sequence[Future[None]], timeout_s: float | None = None) -> None:
        """Until ``futures`` are acknowledged: raises `DeliveryError` or `TimeoutError`."""
        wait_delivered(self._producer, futures, timeout_s)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every queued image is acknowledged or failed (`TimeoutError` after
        ``timeout_s``)."""
        left = self._producer.flush() if timeout_s is None else self._producer.flush(timeout_s)
        if left:
            raise TimeoutError(f"{left} image(s) not acknowledged after {timeout_s} s")

    def close(self, timeout_s: float = 10.0) -> int:
        """Send what is queued, waiting at most ``timeout_s`` (the broker may be gone); returns
        how many images were still unacknowledged (logged as a warning: they may be lost)."""
        left = self._producer.flush(timeout_s)
        if left:
            log.warning(
                "producer closed with %d image(s) not acknowledged by the broker after %.0f s",
                left,
                timeout_s,
            )
        return left

    def __enter__(self) -> ImageProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
