"""cvserve.models."""
