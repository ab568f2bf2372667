// 64-bin histogram of in[i] % 64 with atomics: each block counts into shared memory
// (atomicAdd on shared), then adds its bins to bins[] in global memory (atomicAdd on global).
// bins must be zeroed before the launch. Any block size up to 1024.
// Parameters: in 0, bins 8 (pointers), n 16 (u32); 20 bytes. Static shared memory: 256 bytes.
#define BINS 64

extern "C" __global__ void histogram_u32(const unsigned int *in, unsigned int *bins, unsigned int n) {
  __shared__ unsigned int local_bins[BINS];
  for (unsigned int b = threadIdx.x; b < BINS; b += blockDim.x) {
    local_bins[b] = 0;
  }
  __syncthreads();
  unsigned int stride = gridDim.x * blockDim.x;
  for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    atomicAdd(&local_bins[in[i] % BINS], 1u);
  }
  __syncthreads();
  for (unsigned int b = threadIdx.x; b < BINS; b += blockDim.x) {
    if (local_bins[b] != 0) {
      atomicAdd(&bins[b], local_bins[b]);
    }
  }
}
