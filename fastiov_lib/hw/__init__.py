"""Hardware boundary: PCI/sysfs primitives, NIC plan/apply, host-change steps, the fake sysfs (stdlib only: runs in the vsriov guest)."""
