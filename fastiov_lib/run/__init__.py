"""Run directories: layout, records, append-only JSONL, provenance (run.json)."""
