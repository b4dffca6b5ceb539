"""Triton python-backend adapters (importable only inside a stub).

Importing this package makes the stub dump every thread's Python stack to its stderr (the Triton
log) on SIGUSR1: a stage that never finishes loading leaves Triton waiting without a word, and
`deploy.triton.TritonServer` sends that signal when readiness runs out, so the failure quotes
where the stage was stuck. It is registered here, before any adapter imports its heavy modules
(torch, DALI), so a hang while importing them is caught too.
"""

import faulthandler
import signal

faulthandler.register(signal.SIGUSR1, all_threads=True)
