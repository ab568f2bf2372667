"""The mock AMD GPU: the Navi31 model, its register file and its IP discovery table."""
from mockgpu.amd.gpu import Navi31GPU

__all__ = ["Navi31GPU"]
