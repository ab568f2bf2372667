// Per-workgroup sum: each workgroup of REDUCE_WG work-items reduces its slice in LDS
// (a tree with a barrier per level) and writes one partial sum to partial[group_id].
#define REDUCE_WG 256

__kernel __attribute__((reqd_work_group_size(REDUCE_WG, 1, 1)))
void reduce_sum_f32(__global const float *in, __global float *partial, uint n) {
  __local float scratch[REDUCE_WG];
  size_t lid = get_local_id(0);
  size_t gid = get_global_id(0);
  scratch[lid] = gid < n ? in[gid] : 0.0f;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (uint stride = REDUCE_WG / 2; stride > 0; stride >>= 1) {
    if (lid < stride) {
      scratch[lid] += scratch[lid + stride];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (lid == 0) {
    partial[get_group_id(0)] = scratch[0];
  }
}

__kernel __attribute__((reqd_work_group_size(REDUCE_WG, 1, 1)))
void reduce_sum_i32(__global const int *in, __global int *partial, uint n) {
  __local int scratch[REDUCE_WG];
  size_t lid = get_local_id(0);
  size_t gid = get_global_id(0);
  scratch[lid] = gid < n ? in[gid] : 0;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (uint stride = REDUCE_WG / 2; stride > 0; stride >>= 1) {
    if (lid < stride) {
      scratch[lid] += scratch[lid + stride];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (lid == 0) {
    partial[get_group_id(0)] = scratch[0];
  }
}
