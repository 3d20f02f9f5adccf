# git_rev.cmake - run by the build (cmake -P) before anything compiles:
# writes OUT, the header that gives train/run.c and runtime/eval_run.c the
# revision they record in checkpoints and eval results. It is the source
# tree's commit with "-dirty" when tracked files differ from it, taken at
# every build (not at configure time, which a long-lived build folder would
# keep stale), and the file is rewritten only when that text changes, so
# that only those two files recompile.
execute_process(COMMAND git rev-parse --short HEAD WORKING_DIRECTORY "${SRC}"
                OUTPUT_VARIABLE rev OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT rev)
  set(rev unknown)
else()
  execute_process(COMMAND git diff --quiet HEAD -- WORKING_DIRECTORY "${SRC}" RESULT_VARIABLE dirty ERROR_QUIET)
  if(NOT dirty EQUAL 0)
    string(APPEND rev "-dirty")
  endif()
endif()
set(text "#define DMS_GIT_REV \"${rev}\"\n")
set(old "")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL text)
  file(WRITE "${OUT}" "${text}")
endif()
