"""CPU seconds of a process tree by part, read from /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from cvserve.deploy.process import process_tree
from cvserve.profiling import process_cpu

# Spends 0.3 CPU-seconds, says so, then stays alive (idle) until killed.
BUSY = (
    "import sys, time\n"
    "end = time.process_time() + 0.3\n"
    "while time.process_time() < end: pass\n"
    "print('done', flush=True)\n"
    "time.sleep(60)\n"
)


def test_the_cpu_seconds_of_a_tree_are_summed_per_part() -> None:
    # "; true" keeps sh alive as the parent (no exec of its last command).
    parent = subprocess.Popen(
        ["sh", "-c", f'"{sys.executable}" -c "$0"; true', BUSY],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        before = process_cpu.reading(parent.pid)
        assert parent.stdout is not None and parent.stdout.readline().strip() == "done"
        tree = process_tree(parent.pid)
        assert tree[0] == parent.pid and len(tree) == 2  # sh and the busy python
        spent = process_cpu.cpu_by_part(before, process_cpu.reading(parent.pid))
        python = Path(sys.executable).name
        assert set(spent) == {"sh", python}
        assert 0.25 <= spent[python] < 5.0
        assert spent["sh"] < 0.2
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the group this test started
        parent.wait()
    assert process_cpu.cpu_seconds(2**22 + 12345) == 0.0  # no such process: nothing to read
    assert process_cpu.part_name(2**22 + 12345) == "gone"
