"""The simulated Qualcomm Adreno GPU behind KGSL: /dev/kgsl-3d0 (kgsl.py) and its command processor
(cp.py). `mockgpu.qcom.kgsl.install(machine)` loads it on a mock Machine."""
