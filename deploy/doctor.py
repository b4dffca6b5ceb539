"""Post-install checks: every component cvserve needs imports; the tritonserver binary exists;
the python-backend stub of the running Python is there and finds its libraries."""

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
    else:
        # Triton runs the stub built for the Python that launches it (see triton_install).
        version = "{}.{}".format(*sys.version_info[:2])
        problems = install.stub_problems()
        if problems:
            failures.append("python-backend stub")
            for problem in problems:
                print(f"FAIL python-backend stub for Python {version}: {problem}")
        else:
            print(
                f"ok   python-backend stub for Python {version} {install.stub_for()} "
                f"(libraries: {install.library_path()})"
            )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
