"""numpy references of the CUDA kernel library's kernels that the NVIDIA tests of several folders
compare with (compute/nv/kernels/*.cu)."""
from __future__ import annotations

import numpy as np


def private_array_reference(values: np.ndarray) -> np.ndarray:
    """What compute/nv/kernels/private_array.cu computes per element: a 64-slot private histogram of
    a walk from the value, then two of its counts combined."""
    out = []
    for value in values.tolist():
        counts = [0] * 64
        for step in range(64 - value % 8):
            counts[(value + step * (value % 5 + 1)) % 64] += 1
        out.append((counts[value % 64] * 1000 + counts[(value * 7) % 64]) & 0xFFFFFFFF)
    return np.array(out, dtype=np.uint32)
