// The host/device marker that lets one function body be compiled for the CPU (g++) and for the GPU
// (nvcc): the per-element kernels of each op set (sae/kernels.h, model/kernels.h) and the dtype
// conversions are written once with it, so the CPU tests check the arithmetic the GPU runs.
#pragma once

#if defined(__CUDACC__)
#define SAE_HD __host__ __device__ __forceinline__
#else
#define SAE_HD inline
#endif
