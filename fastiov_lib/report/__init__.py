"""Reporting: claims, figures, the markdown report, the explorer widget."""
