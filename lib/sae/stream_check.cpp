#include "sae/stream_check.h"

#include "base/errors.h"

namespace sae {

namespace {

std::string provenance_string(const StreamHeader& h, const char* key) {
  if (h.provenance.is_object() && h.provenance.contains(key) && h.provenance[key].is_string())
    return h.provenance[key].get<std::string>();
  return "";
}

// The last component of a path or hub name, trailing slashes ignored.
std::string last_component(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  const size_t slash = s.rfind('/');
  return slash == std::string::npos ? s : s.substr(slash + 1);
}

}  // namespace

bool same_model_name(const std::string& a, const std::string& b) {
  return a == b || last_component(a) == last_component(b);
}

std::string streams_display_name(const std::vector<std::string>& inputs) {
  if (inputs.empty()) return "<stdin>";
  const std::string first = inputs[0] == "-" ? "<stdin>" : inputs[0];
  if (inputs.size() == 1) return first;
  return first + " (and " + std::to_string(inputs.size() - 1) + " more)";
}

void check_stream_for_sae(const StreamHeader& h, const std::string& stream_name, const Sae& sae,
                          const std::string& sae_dir, const std::string& tool) {
  if (h.kind != "activations")
    throw InputError(stream_name + ": is a " + h.kind + " stream; " + tool + " needs an activations stream");
  if (h.d != sae.d_in)
    throw InputError(stream_name + ": rows have d=" + std::to_string(h.d) + " but " + sae_dir +
                     " expects d_in=" + std::to_string(sae.d_in));
}

std::string stream_hook_mismatch(const StreamHeader& h, const Sae& sae) {
  if (h.hook().empty() || sae.hook.empty() || h.hook() == sae.hook) return "";
  return "stream hook '" + h.hook() + "' differs from the SAE's hook '" + sae.hook + "'";
}

std::string stream_model_mismatch(const StreamHeader& h, const Sae& sae) {
  if (sae.model.empty()) return "";
  const std::string model = provenance_string(h, "model"), name = provenance_string(h, "model_name");
  if (model.empty() && name.empty()) return "";
  for (const std::string& m : {model, name})
    if (!m.empty() && same_model_name(m, sae.model)) return "";
  return "stream model '" + (model.empty() ? name : model) + "' differs from the SAE's model '" + sae.model + "'";
}

}  // namespace sae
