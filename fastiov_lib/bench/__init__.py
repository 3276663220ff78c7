"""Measuring: the round engine (barrier, signals), app test and storage server, profile sweeps."""
