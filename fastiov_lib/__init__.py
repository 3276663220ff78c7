"""fastiov_lib: the library behind the FastIOV artifact's notebooks (build, set up, measure, plot)."""

__version__ = "0.1.0"
