"""cvserve.pipelines."""
