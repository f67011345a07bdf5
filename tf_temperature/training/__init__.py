"""The training pipeline: a config (`experiment`), its data (`sources`,
`input_pipeline`, `preprocessing`), the custom `tf.distribute` loop
(`distribute`, `loops`, `trainer`, `hooks`) and what it writes
(`checkpoints`, `writers`)."""
