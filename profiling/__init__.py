"""cvserve.profiling."""
