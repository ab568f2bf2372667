// y = alpha * x + y for n elements.
// Parameters: alpha 0 (f32), x 8, y 16 (pointers), n 24 (u32); 28 bytes.
extern "C" __global__ void saxpy(float alpha, const float *x, float *y, unsigned int n) {
  unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    y[i] = alpha * x[i] + y[i];
  }
}
