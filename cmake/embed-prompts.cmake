# Turns the autointerp prompt templates (lib/explain/prompts/NAME.txt) into the C++ file that
# defines sae::default_prompt_text, so an installed binary has its built-in prompts and the .txt
# files stay the only copy.
#   cmake -DOUT=gen/autointerp_prompts.cpp -DNAMES=explain,detection -DDIR=lib/explain/prompts -P embed-prompts.cmake
set(entries "")
string(REPLACE "," ";" names "${NAMES}")
foreach(name ${names})
  file(READ "${DIR}/${name}.txt" text)
  if(text MATCHES "\\)PROMPT\"")
    message(FATAL_ERROR "${DIR}/${name}.txt: the text may not contain )PROMPT\"")
  endif()
  string(APPEND entries "      {\"${name}\", R\"PROMPT(${text})PROMPT\"},\n")
endforeach()
set(code "// Generated from lib/explain/prompts/*.txt by cmake/embed-prompts.cmake; do not edit.
#include <map>
#include <stdexcept>
#include <string>

#include \"explain/autointerp.h\"

namespace sae {

const std::string& default_prompt_text(const std::string& name) {
  static const std::map<std::string, std::string> texts = {
${entries}  };
  auto it = texts.find(name);
  if (it == texts.end()) throw std::logic_error(\"no built-in prompt '\" + name + \"'\");
  return it->second;
}

}  // namespace sae
")
include(${CMAKE_CURRENT_LIST_DIR}/write-if-changed.cmake)
saetools_write_if_changed("${OUT}" "${code}")
