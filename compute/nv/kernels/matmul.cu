// C[m x n] = A[m x k] * B[k x n], row-major, tiled through shared memory in TILE x TILE blocks.
// Launch with blockDim (TILE, TILE, 1) and a grid covering (n, m); edges are guarded.
// Parameters: a 0, b 8, c 16 (pointers), m 24, n 28, k 32 (u32); 36 bytes.
// Static shared memory: 2048 bytes.
#define TILE 16

extern "C" __global__ void __launch_bounds__(TILE * TILE)
matmul_f32(const float *a, const float *b, float *c, unsigned int m, unsigned int n,
           unsigned int k) {
  __shared__ float tile_a[TILE][TILE];
  __shared__ float tile_b[TILE][TILE];
  unsigned int col = blockIdx.x * blockDim.x + threadIdx.x;
  unsigned int row = blockIdx.y * blockDim.y + threadIdx.y;
  unsigned int lx = threadIdx.x;
  unsigned int ly = threadIdx.y;
  float acc = 0.0f;
  for (unsigned int t = 0; t < k; t += TILE) {
    unsigned int ka = t + lx;
    unsigned int kb = t + ly;
    tile_a[ly][lx] = (row < m && ka < k) ? a[row * k + ka] : 0.0f;
    tile_b[ly][lx] = (kb < k && col < n) ? b[kb * n + col] : 0.0f;
    __syncthreads();
    for (unsigned int i = 0; i < TILE; i++) {
      acc += tile_a[ly][i] * tile_b[i][lx];
    }
    __syncthreads();
  }
  if (row < m && col < n) {
    c[row * n + col] = acc;
  }
}
