"""Training engine (Lightning): config, data module, LightningModule, train / predict / export / evaluate."""
