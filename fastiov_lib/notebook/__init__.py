"""What the notebooks call: the session, per-notebook steps, the papermill pipeline."""
