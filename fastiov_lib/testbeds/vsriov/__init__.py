"""The virtual SR-IOV host: a QEMU/TCG guest with an emulated IOMMU and SR-IOV device."""
