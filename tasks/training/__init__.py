"""Training stage: run the training pipeline and gate its model (`pipeline`), register the
gated model with its lineage (`registry`), and resolve or promote the pipeline's own assets
(`pipeline_assets`)."""
