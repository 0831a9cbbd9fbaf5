"""audience: one stage of the pipeline (see README: How it is built)."""
