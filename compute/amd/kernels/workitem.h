// Work-item functions and barrier for kernels built without a device library (-nogpulib):
// each maps to a clang AMDGPU builtin, so the code object needs no external symbols.
// Global offsets are not supported: get_global_id counts from zero.
#ifndef GPUHAL_WORKITEM_H
#define GPUHAL_WORKITEM_H

typedef unsigned int uint;
typedef unsigned long ulong;
typedef __SIZE_TYPE__ size_t;

#define CLK_LOCAL_MEM_FENCE 1
#define CLK_GLOBAL_MEM_FENCE 2

#define OVERLOAD __attribute__((overloadable, always_inline))

static inline OVERLOAD size_t get_local_id(uint dim) {
  switch (dim) {
  case 0: return __builtin_amdgcn_workitem_id_x();
  case 1: return __builtin_amdgcn_workitem_id_y();
  case 2: return __builtin_amdgcn_workitem_id_z();
  default: return 0;
  }
}

static inline OVERLOAD size_t get_group_id(uint dim) {
  switch (dim) {
  case 0: return __builtin_amdgcn_workgroup_id_x();
  case 1: return __builtin_amdgcn_workgroup_id_y();
  case 2: return __builtin_amdgcn_workgroup_id_z();
  default: return 0;
  }
}

static inline OVERLOAD size_t get_local_size(uint dim) {
  switch (dim) {
  case 0: return __builtin_amdgcn_workgroup_size_x();
  case 1: return __builtin_amdgcn_workgroup_size_y();
  case 2: return __builtin_amdgcn_workgroup_size_z();
  default: return 1;
  }
}

static inline OVERLOAD size_t get_global_size(uint dim) {
  switch (dim) {
  case 0: return __builtin_amdgcn_grid_size_x();
  case 1: return __builtin_amdgcn_grid_size_y();
  case 2: return __builtin_amdgcn_grid_size_z();
  default: return 1;
  }
}

static inline OVERLOAD size_t get_global_id(uint dim) {
  return get_group_id(dim) * get_local_size(dim) + get_local_id(dim);
}

static inline OVERLOAD size_t get_num_groups(uint dim) {
  size_t group_size = get_local_size(dim);
  return (get_global_size(dim) + group_size - 1) / group_size;
}

// A workgroup barrier that also orders LDS and global memory between its work-items.
static inline OVERLOAD void barrier(uint flags) {
  (void)flags;
  __builtin_amdgcn_fence(__ATOMIC_RELEASE, "workgroup");
  __builtin_amdgcn_s_barrier();
  __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "workgroup");
}

#undef OVERLOAD
#endif
