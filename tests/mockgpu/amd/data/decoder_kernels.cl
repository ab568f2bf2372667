// Small OpenCL C kernels whose gfx1100 code exercises many instruction encodings:
// scalar and vector ALU in 16/32/64 bits, VOP3 modifiers, VOP3P, VOPD, LDS, atomics, scratch.
#pragma OPENCL EXTENSION cl_khr_fp16 : enable
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#define LID() ((int)__builtin_amdgcn_workitem_id_x())
#define GID() ((int)(__builtin_amdgcn_workgroup_id_x() * __builtin_amdgcn_workgroup_size_x()) + LID())

__kernel void vadd(__global const float *a, __global const float *b, __global float *c, int n) {
  int i = GID();
  if (i < n) c[i] = a[i] + b[i];
}

__kernel void matmul_tiled(__global const float *a, __global const float *b, __global float *c,
                           int n) {
  __local float ta[16][17];
  __local float tb[16][17];
  int tx = LID() & 15, ty = LID() >> 4;
  int row = __builtin_amdgcn_workgroup_id_y() * 16 + ty;
  int col = __builtin_amdgcn_workgroup_id_x() * 16 + tx;
  float acc = 0.0f;
  for (int t = 0; t < n; t += 16) {
    ta[ty][tx] = a[row * n + t + tx];
    tb[ty][tx] = b[(t + ty) * n + col];
    __builtin_amdgcn_s_barrier();
    for (int k = 0; k < 16; k++) acc = __builtin_fmaf(ta[ty][k], tb[k][tx], acc);
    __builtin_amdgcn_s_barrier();
  }
  c[row * n + col] = acc;
}

__kernel void math_mix(__global float *f, __global double *d, __global half2 *h, __global long *l,
                       float s) {
  int i = GID();
  float x = f[i];
  f[i] = __builtin_fabsf(x) * -s + __builtin_fminf(__builtin_fmaxf(x, 0.0f), 1.0f) +
         __builtin_amdgcn_rcpf(x) + 0.15915494f * x;
  d[i] = __builtin_fma(d[i], (double)x, 4.0) / (d[i] + 2.5);
  half2 hv = h[i];
  h[i] = hv * hv + (half2)(0.5h, -2.0h);
  l[i] = ((l[i] * 0x123456789LL) >> 7) ^ (l[i] * (long)i);
}

__kernel void atomics_lds(__global int *counter, __global uint *hist, __global const uint *in) {
  __local uint bins[64];
  int l = LID();
  if (l < 64) bins[l] = 0;
  __builtin_amdgcn_s_barrier();
  __atomic_fetch_add(&bins[in[GID()] & 63], 1u, __ATOMIC_RELAXED);
  __builtin_amdgcn_s_barrier();
  if (l < 64) __atomic_fetch_add(&hist[l], bins[l], __ATOMIC_RELAXED);
  if (l == 0) {
    int expected = 0;
    int old = __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
    __atomic_compare_exchange_n(counter + 2, &expected, old, false, __ATOMIC_RELAXED,
                                __ATOMIC_RELAXED);
  }
  if (l == 1) __atomic_fetch_max(counter + 1, GID(), __ATOMIC_RELAXED);
}

__kernel void private_array(__global float *out, __global const int *idx) {
  float tmp[64];
  for (int k = 0; k < 64; k++) tmp[k] = (float)(k * GID());
  out[GID()] = tmp[idx[GID()] & 63] + tmp[idx[GID() + 1] & 63];
}

__kernel void reduce_lds(__global const float *x, __global float *out, __local float *tmp) {
  int l = LID();
  tmp[l] = x[GID()];
  __builtin_amdgcn_s_barrier();
  for (int s = __builtin_amdgcn_workgroup_size_x() / 2; s > 0; s >>= 1) {
    if (l < s) tmp[l] += tmp[l + s];
    __builtin_amdgcn_s_barrier();
  }
  if (l == 0) out[__builtin_amdgcn_workgroup_id_x()] = tmp[0];
}

__kernel void memset_copy(__global uint4 *dst, __global const uint4 *src, uint value, int n) {
  int i = GID();
  if (i < n) dst[i] = src[i] + (uint4)(value);
  else dst[i & 1023] = (uint4)(value, 0xdeadbeef, 7u, -5);
}
