"""cvserve.deploy."""
