"""``cvserve redis results`` prints a producer's retry once and two images under one id twice
(a real redis-server; the results are written to the stream as a worker writes them)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from broker_testing import PIPELINE, small_jpegs

from cvserve.broker.producer import image_message
from cvserve.broker.redis_streams import add_records
from cvserve.broker.redis_streams import redis_client as client_of
from cvserve.broker.schema import input_digest, result_message
from cvserve.broker.topics import Topics
from cvserve.deploy.redis import RedisServer

pytestmark = pytest.mark.redis


def test_cvserve_redis_results_prints_a_retry_once_and_two_images_under_one_id_twice(
    redis_server: RedisServer, namespace: str
) -> None:
    first, second = small_jpegs(2, first_seed=800)
    results = Topics(PIPELINE, namespace).results
    request = image_message(first, PIPELINE, PIPELINE)
    written = []
    # A producer that timed out wrote the request twice: read at two places, answered twice.
    for origin in ("in@1-0", "in@2-0"):
        read = replace(request, origin=origin, input_digest=input_digest(first))
        written.append(result_message(read, PIPELINE, {"S": np.ones(1, np.float32)}))
    other = replace(request, value=second, origin="in@3-0", input_digest=input_digest(second))
    written.append(result_message(other, PIPELINE, {"S": np.zeros(1, np.float32)}))
    add_records(client_of(redis_server.url), [(results, m.to_record()) for m in written])

    module = "cvserve.pipelines.app.redis_commands"
    command = [sys.executable, "-m", module, "results", "--redis-url", redis_server.url]
    command += ["--namespace", namespace, "--pipeline", PIPELINE, "--idle-timeout", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["request_id"] for line in lines] == [request.request_id] * 2
    assert [line["origin"] for line in lines] == ["in@1-0", "in@3-0"]
    assert "2 unique result(s), 1 duplicate(s) dropped" in done.stderr
