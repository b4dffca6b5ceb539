"""cvserve.broker."""
