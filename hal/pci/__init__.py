"""The Linux sysfs side of PCI: the sysfs tree (`hal.pci.sysfs`) and the sysfs backend (`hal.pci.backend`)."""
