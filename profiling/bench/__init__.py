"""Benchmarks (`cvserve bench ...`: a table + JSON with the machine) and the GPU check script.
They use the profiler; the profiler never imports them."""
