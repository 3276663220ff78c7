"""Reading run directories: the Run model, latency derivation, statistics, stage records, importers."""
