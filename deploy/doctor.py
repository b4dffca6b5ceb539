"""Post-install checks: every component cvserve needs imports; the tritonserver binary exists."""

from __future__ import annotations

import sys


def main() -> int:
    """Import each component, locate the Triton binary; one line each, exit 1 on any failure."""
    failures = []
    for name in (
        "torch",
        "torchvision",
        "nvidia.dali",
        "tritonclient.grpc",
        "cv2",
        "confluent_kafka",
    ):
        try:
            module = __import__(name, fromlist=["__version__"])
            print(f"ok   {name} {getattr(module, '__version__', '')}")
        except Exception as exc:
            failures.append(name)
            print(f"FAIL {name}: {exc}")
    try:
        from cvserve.deploy.triton_install import TritonInstall

        install = TritonInstall.discover()
        print(f"ok   tritonserver {install.binary}")
    except Exception as exc:
        failures.append("tritonserver")
        print(f"FAIL tritonserver: {exc}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
