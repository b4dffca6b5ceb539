"""Triton model repositories from a `PipelineSpec`: `config` (the one config.pbtxt writer),
`local` (python backend, the bundled Triton), `ngc` (DALI backend + exported DNNs)."""
