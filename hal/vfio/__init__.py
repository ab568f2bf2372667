"""The Linux VFIO backend (`hal.vfio.backend`) and its IOVA allocator (`hal.vfio.iova`)."""
