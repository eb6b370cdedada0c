// SHA-256 (FIPS 180-4), lower-case hex: tokenizer identities (Tokenizer::identity()) and the keys
// of the LLM client's cache (llm/llm.h).
#pragma once
#include <string>
#include <string_view>

namespace sae {

std::string sha256_hex(std::string_view data);

}  // namespace sae
