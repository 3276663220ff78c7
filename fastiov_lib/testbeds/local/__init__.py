"""The local testbed: a private containerd + runc + CNI on this machine."""
