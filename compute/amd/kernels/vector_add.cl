// Element-wise c = a + b for n elements; the grid may be larger than n.
__kernel void vector_add_f32(__global const float *a, __global const float *b,
                             __global float *c, uint n) {
  size_t i = get_global_id(0);
  if (i < n) {
    c[i] = a[i] + b[i];
  }
}

__kernel void vector_add_i32(__global const int *a, __global const int *b,
                             __global int *c, uint n) {
  size_t i = get_global_id(0);
  if (i < n) {
    c[i] = a[i] + b[i];
  }
}
