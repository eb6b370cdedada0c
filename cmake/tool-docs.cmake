# Writes a tool's man page and bash completion script from the tool itself (TOOL --man,
# TOOL --completion), each under a temporary name renamed into place only when complete.
#   cmake -DTOOL=bin/sae-train -DPAGE=man/man1/sae-train.1 -DCOMPLETION=completions/sae-train -P tool-docs.cmake
foreach(kind man completion)
  if(kind STREQUAL "man")
    set(out "${PAGE}")
  else()
    set(out "${COMPLETION}")
  endif()
  get_filename_component(dir "${out}" DIRECTORY)
  file(MAKE_DIRECTORY "${dir}")
  execute_process(COMMAND "${TOOL}" --${kind} OUTPUT_FILE "${out}.tmp" RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    file(REMOVE "${out}.tmp")
    message(FATAL_ERROR "${TOOL} --${kind} failed (${rc})")
  endif()
  file(RENAME "${out}.tmp" "${out}")
endforeach()
