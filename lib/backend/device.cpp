#include "backend/backend.h"
#include "base/build_info.h"
#include "base/errors.h"

namespace sae {

#ifdef SAE_HAVE_CUDA
// Defined in lib/backend/backend_cuda.cu.
int cuda_device_count_impl();
std::string cuda_describe_impl();
std::unique_ptr<Backend> make_cuda_backend_impl();
bool cuda_compiled() { return true; }
int cuda_device_count() { return cuda_device_count_impl(); }
std::string cuda_describe() { return cuda_describe_impl(); }
namespace {
const bool g_cuda_fact = build_info::add_runtime_fact("CUDA devices", cuda_describe);
}
std::unique_ptr<Backend> make_cuda_backend() {
  if (cuda_device_count() == 0) throw InputError("--device cuda: no CUDA GPU is available (" + cuda_describe() + ")");
  return make_cuda_backend_impl();
}
#else
bool cuda_compiled() { return false; }
int cuda_device_count() { return 0; }
std::string cuda_describe() { return "this build has no CUDA backend (nvcc was not found at build time)"; }
std::unique_ptr<Backend> make_cuda_backend() {
  throw InputError("--device cuda: this build has no CUDA backend (nvcc was not found at build time)");
}
#endif

const char* device_name(Device d) { return d == Device::cuda ? "cuda" : "cpu"; }

Device resolve_device(const std::string& option) {
  if (option == "cpu") return Device::cpu;
  if (option == "cuda") {
    if (!cuda_compiled())
      throw InputError("--device cuda: this build has no CUDA backend (nvcc was not found at build time)");
    if (cuda_device_count() == 0) throw InputError("--device cuda: no CUDA GPU is available (" + cuda_describe() + ")");
    return Device::cuda;
  }
  if (option == "auto") return cuda_device_count() > 0 ? Device::cuda : Device::cpu;
  throw UsageError("--device: unknown device '" + option + "' (expected cpu, cuda or auto)");
}

std::unique_ptr<Backend> make_backend(Device d) {
  return d == Device::cuda ? make_cuda_backend() : make_cpu_backend();
}

}  // namespace sae
