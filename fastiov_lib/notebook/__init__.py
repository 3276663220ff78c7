"""Notebook support: the session, the per-notebook steps, the papermill pipeline, table display."""
from fastiov_lib.notebook.tables import notebook_display_options

# every notebook imports this package first: its tables show whole statements, never "…"
notebook_display_options()
