// Per-block sum: each block of REDUCE_BLOCK threads reduces its slice in shared memory (a tree
// with a __syncthreads per level) and writes one partial sum to partial[blockIdx.x].
// Launch with blockDim (REDUCE_BLOCK, 1, 1).
// Parameters: in 0, partial 8 (pointers), n 16 (u32); 20 bytes. Static shared memory: 1024 bytes.
#define REDUCE_BLOCK 256

extern "C" __global__ void __launch_bounds__(REDUCE_BLOCK)
reduce_sum_f32(const float *in, float *partial, unsigned int n) {
  __shared__ float scratch[REDUCE_BLOCK];
  unsigned int lid = threadIdx.x;
  unsigned int gid = blockIdx.x * blockDim.x + threadIdx.x;
  scratch[lid] = gid < n ? in[gid] : 0.0f;
  __syncthreads();
  for (unsigned int stride = REDUCE_BLOCK / 2; stride > 0; stride >>= 1) {
    if (lid < stride) {
      scratch[lid] += scratch[lid + stride];
    }
    __syncthreads();
  }
  if (lid == 0) {
    partial[blockIdx.x] = scratch[0];
  }
}

extern "C" __global__ void __launch_bounds__(REDUCE_BLOCK)
reduce_sum_i32(const int *in, int *partial, unsigned int n) {
  __shared__ int scratch[REDUCE_BLOCK];
  unsigned int lid = threadIdx.x;
  unsigned int gid = blockIdx.x * blockDim.x + threadIdx.x;
  scratch[lid] = gid < n ? in[gid] : 0;
  __syncthreads();
  for (unsigned int stride = REDUCE_BLOCK / 2; stride > 0; stride >>= 1) {
    if (lid < stride) {
      scratch[lid] += scratch[lid + stride];
    }
    __syncthreads();
  }
  if (lid == 0) {
    partial[blockIdx.x] = scratch[0];
  }
}
