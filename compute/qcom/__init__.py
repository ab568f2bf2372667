"""Qualcomm side of the compute layer: an Adreno GPU driven through KGSL (drivers.qcom) as the
memory, queues and signals of compute.Device."""
