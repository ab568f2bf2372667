// What tinygrad's OpenCL C renderer (tinygrad/renderer/cstyle.py, OpenCLRenderer) expects from
// an OpenCL implementation, for builds without the OpenCL headers (-cl-no-stdinc) and without a
// device library (-nogpulib). Included after workitem.h, which has the work-item functions and
// barrier. Everything here is a typedef, a macro or an inline wrapper of a clang builtin, so the
// code object keeps no external symbols; clang lowers the builtins to gfx11 instructions
// (llvm.exp2/log2/sqrt/trunc/fabs/minnum/maxnum/fma/sin: V_EXP_F32, V_LOG_F32, V_SQRT_F32, ...).
#ifndef GPUHAL_TINYGRAD_SHIMS_H
#define GPUHAL_TINYGRAD_SHIMS_H

typedef unsigned char uchar;
typedef unsigned short ushort;

// OpenCL C 2.0 section 6.1.2: the vector types, built from clang's ext_vector_type.
#define GPUHAL_VECTORS(T)                                      \
  typedef T T##2 __attribute__((ext_vector_type(2)));          \
  typedef T T##3 __attribute__((ext_vector_type(3)));          \
  typedef T T##4 __attribute__((ext_vector_type(4)));          \
  typedef T T##8 __attribute__((ext_vector_type(8)));          \
  typedef T T##16 __attribute__((ext_vector_type(16)));
GPUHAL_VECTORS(char)
GPUHAL_VECTORS(uchar)
GPUHAL_VECTORS(short)
GPUHAL_VECTORS(ushort)
GPUHAL_VECTORS(int)
GPUHAL_VECTORS(uint)
GPUHAL_VECTORS(long)
GPUHAL_VECTORS(ulong)
GPUHAL_VECTORS(float)
GPUHAL_VECTORS(double)
#undef GPUHAL_VECTORS

// OpenCL C 2.0 section 6.13.2: the float constants the renderer names for inf and nan.
#define INFINITY __builtin_inff()
#define NAN __builtin_nanf("")

// OpenCL C 2.0 section 6.2.4.2: as_<type>() reinterprets the bits (the renderer's BITCAST).
#define as_char(x) __builtin_astype((x), char)
#define as_uchar(x) __builtin_astype((x), uchar)
#define as_short(x) __builtin_astype((x), short)
#define as_ushort(x) __builtin_astype((x), ushort)
#define as_int(x) __builtin_astype((x), int)
#define as_uint(x) __builtin_astype((x), uint)
#define as_long(x) __builtin_astype((x), long)
#define as_ulong(x) __builtin_astype((x), ulong)
#define as_float(x) __builtin_astype((x), float)
#define as_double(x) __builtin_astype((x), double)

// The math builtins the renderer's code_for_op emits (SQRT, EXP2, LOG2, SIN, TRUNC) and the
// common ones kernels use beside them, for float and double scalars.
#define GPUHAL_MATH __attribute__((overloadable, always_inline)) static inline
GPUHAL_MATH float exp2(float x) { return __builtin_exp2f(x); }
GPUHAL_MATH double exp2(double x) { return __builtin_exp2(x); }
GPUHAL_MATH float log2(float x) { return __builtin_log2f(x); }
GPUHAL_MATH double log2(double x) { return __builtin_log2(x); }
GPUHAL_MATH float sqrt(float x) { return __builtin_sqrtf(x); }
GPUHAL_MATH double sqrt(double x) { return __builtin_sqrt(x); }
GPUHAL_MATH float sin(float x) { return __builtin_sinf(x); }
GPUHAL_MATH float trunc(float x) { return __builtin_truncf(x); }
GPUHAL_MATH double trunc(double x) { return __builtin_trunc(x); }
GPUHAL_MATH float fabs(float x) { return __builtin_fabsf(x); }
GPUHAL_MATH float fmax(float x, float y) { return __builtin_fmaxf(x, y); }
GPUHAL_MATH float fmin(float x, float y) { return __builtin_fminf(x, y); }
GPUHAL_MATH float fma(float x, float y, float z) { return __builtin_fmaf(x, y, z); }
GPUHAL_MATH float mad(float x, float y, float z) { return x * y + z; }
GPUHAL_MATH float max(float x, float y) { return __builtin_fmaxf(x, y); }
GPUHAL_MATH float min(float x, float y) { return __builtin_fminf(x, y); }
GPUHAL_MATH int max(int x, int y) { return x > y ? x : y; }
GPUHAL_MATH int min(int x, int y) { return x < y ? x : y; }
GPUHAL_MATH uint max(uint x, uint y) { return x > y ? x : y; }
GPUHAL_MATH uint min(uint x, uint y) { return x < y ? x : y; }
#undef GPUHAL_MATH

#endif
