"""Sub-commands of `fastiov-artifact`, one module each (see fastiov_lib.commands.cli)."""
