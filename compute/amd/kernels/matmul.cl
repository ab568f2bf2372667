// C[m x n] = A[m x k] * B[k x n], row-major, tiled through LDS in TILE x TILE blocks.
// Launch with local size (TILE, TILE) and a global size covering (n, m); edges are guarded.
#define TILE 16

__kernel __attribute__((reqd_work_group_size(TILE, TILE, 1)))
void matmul_f32(__global const float *a, __global const float *b, __global float *c,
                uint m, uint n, uint k) {
  __local float tile_a[TILE][TILE];
  __local float tile_b[TILE][TILE];
  uint col = get_global_id(0);
  uint row = get_global_id(1);
  uint lx = get_local_id(0);
  uint ly = get_local_id(1);
  float acc = 0.0f;
  for (uint t = 0; t < k; t += TILE) {
    uint ka = t + lx;
    uint kb = t + ly;
    tile_a[ly][lx] = (row < m && ka < k) ? a[row * k + ka] : 0.0f;
    tile_b[ly][lx] = (kb < k && col < n) ? b[kb * n + col] : 0.0f;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint i = 0; i < TILE; i++) {
      acc += tile_a[ly][i] * tile_b[i][lx];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (row < m && col < n) {
    c[row * n + col] = acc;
  }
}
