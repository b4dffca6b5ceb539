"""What a Triton start failure reads from the server's log (`deploy.triton`): the models still
loading, and only the stacks the stubs dumped on SIGUSR1 (not an exception's traceback)."""

from __future__ import annotations

from cvserve.deploy.triton import still_loading, stub_stacks

LOG = """\
I1205 model_lifecycle.cc:472] "loading: slow:1"
I1205 model_lifecycle.cc:472] "loading: broken:1"
I1205 model_lifecycle.cc:472] "loading: fine:1"
I1205 model_lifecycle.cc:839] "successfully loaded 'fine'"
Traceback (most recent call last):
  File "/repo/broken/1/model.py", line 2, in <module>
ImportError: broken on purpose
E1205 model_lifecycle.cc:642] "failed to load 'broken' version 1: ImportError"
Current thread 0x00007f0d (most recent call first):
  File "/lib/threading.py", line 327 in wait
  File "/repo/slow/1/model.py", line 11 in initialize
I1205 server.cc:305] "Waiting for in-flight requests to complete."
"""


def test_the_models_neither_loaded_nor_failed_are_still_loading() -> None:
    assert still_loading(LOG) == ["slow"]


def test_only_the_dumped_stacks_are_quoted() -> None:
    assert stub_stacks(LOG) == [
        "Current thread 0x00007f0d (most recent call first):",
        '  File "/lib/threading.py", line 327 in wait',
        '  File "/repo/slow/1/model.py", line 11 in initialize',
    ]
    assert stub_stacks(LOG, lines=2) == stub_stacks(LOG)[:2]
