"""cvserve.preprocess."""
