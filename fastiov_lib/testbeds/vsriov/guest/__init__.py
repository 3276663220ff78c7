"""Code that runs inside the virtual SR-IOV guest."""
