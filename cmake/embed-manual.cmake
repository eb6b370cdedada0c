# Turns a tool's hand-written manual text (docs/man/TOOL.txt, format in lib/base/manual.h) into a
# C++ file that registers it with cli::register_manual before main runs, so `TOOL --man` prints
# the whole page from the binary alone.
#   cmake -DIN=docs/man/TOOL.txt -DOUT=gen/TOOL_manual.cpp -DTOOLS="sae-a sae-b" -P embed-manual.cmake
file(READ "${IN}" text)
if(text MATCHES "\\)saeman\"")
  message(FATAL_ERROR "${IN}: the text may not contain )saeman\"")
endif()
set(code "// Generated from ${IN} by cmake/embed-manual.cmake; do not edit.\n#include \"base/manual.h\"\n\nnamespace {\nconst bool registered = sae::cli::register_manual(R\"saeman(${text})saeman\", \"${TOOLS}\");\n}  // namespace\n")
include(${CMAKE_CURRENT_LIST_DIR}/write-if-changed.cmake)
saetools_write_if_changed("${OUT}" "${code}")
