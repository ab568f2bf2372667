// Element-wise c = a + b for n elements; the grid may be larger than n.
// Parameters (byte offsets in the parameter block): a 0, b 8, c 16 (pointers), n 24 (u32); 28 bytes.
extern "C" __global__ void vector_add_f32(const float *a, const float *b, float *c, unsigned int n) {
  unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    c[i] = a[i] + b[i];
  }
}

extern "C" __global__ void vector_add_i32(const int *a, const int *b, int *c, unsigned int n) {
  unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    c[i] = a[i] + b[i];
  }
}
