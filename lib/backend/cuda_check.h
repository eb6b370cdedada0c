// Error checks for CUDA runtime and cuBLAS calls: a failure is an internal error naming the call.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#define SAE_CUDA_CHECK(call)                                                                         \
  do {                                                                                               \
    cudaError_t err_ = (call);                                                                       \
    if (err_ != cudaSuccess)                                                                         \
      throw std::runtime_error(std::string("CUDA error in ") + #call + ": " + cudaGetErrorString(err_)); \
  } while (0)

#define SAE_CUBLAS_CHECK(call)                                                                       \
  do {                                                                                               \
    cublasStatus_t st_ = (call);                                                                     \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                                \
      throw std::runtime_error(std::string("cuBLAS error in ") + #call + ": " + std::to_string(int(st_))); \
  } while (0)
