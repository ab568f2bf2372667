// Fill and copy for 32-bit elements (int and float share the bit patterns).
__kernel void memset_u32(__global uint *dst, uint value, uint n) {
  size_t i = get_global_id(0);
  if (i < n) {
    dst[i] = value;
  }
}

__kernel void copy_u32(__global const uint *src, __global uint *dst, uint n) {
  size_t i = get_global_id(0);
  if (i < n) {
    dst[i] = src[i];
  }
}

__kernel void memset_f32(__global float *dst, float value, uint n) {
  size_t i = get_global_id(0);
  if (i < n) {
    dst[i] = value;
  }
}
