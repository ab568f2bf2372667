// Fill and copy of 32-bit elements (int and float share the bit patterns).
// memset_u32 / memset_f32: dst 0 (pointer), value 8 (u32 / f32), n 12 (u32); 16 bytes.
// copy_u32: src 0, dst 8 (pointers), n 16 (u32); 20 bytes.
extern "C" __global__ void memset_u32(unsigned int *dst, unsigned int value, unsigned int n) {
  unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    dst[i] = value;
  }
}

extern "C" __global__ void copy_u32(const unsigned int *src, unsigned int *dst, unsigned int n) {
  unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    dst[i] = src[i];
  }
}

extern "C" __global__ void memset_f32(float *dst, float value, unsigned int n) {
  unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    dst[i] = value;
  }
}
