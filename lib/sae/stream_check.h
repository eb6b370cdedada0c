// How an activations stream is checked against the SAE that is to read it, shared by the tools that
// run an SAE over a stream (sae-eval, sae-encode) so that they refuse the same things in the same
// words.
#pragma once
#include <string>
#include <vector>

#include "sae/sae.h"
#include "stream/stream.h"

namespace sae {

// Whether two recorded model names (a directory, a hub name, a config's _name_or_path) mean the
// same model: equal whole or in their last path component ("gpt2" matches "/models/gpt2" and
// "openai-community/gpt2").
bool same_model_name(const std::string& a, const std::string& b);

// How messages name a list of stream inputs: "<stdin>", "a.sae", or "a.sae (and 2 more)".
std::string streams_display_name(const std::vector<std::string>& inputs);

// InputError "STREAM: is a latents stream; TOOL needs an activations stream" when h is not an
// activations stream, "STREAM: rows have d=16 but SAE_DIR expects d_in=2" when its width is not
// the SAE's d_in.
void check_stream_for_sae(const StreamHeader& h, const std::string& stream_name, const Sae& sae,
                          const std::string& sae_dir, const std::string& tool);

// "stream hook 'a' differs from the SAE's hook 'b'" when both record a hook and they differ; else "".
std::string stream_hook_mismatch(const StreamHeader& h, const Sae& sae);

// "stream model 'a' differs from the SAE's model 'b'" when the SAE records a model (cfg.json
// model_name) and the stream records one (provenance model, the directory or name it was collected
// from, and model_name, the model's own _name_or_path) and none of the stream's equals the SAE's,
// compared whole or by their last path component ("gpt2" matches "/models/gpt2" and
// "openai-community/gpt2"); else "".
std::string stream_model_mismatch(const StreamHeader& h, const Sae& sae);

}  // namespace sae
