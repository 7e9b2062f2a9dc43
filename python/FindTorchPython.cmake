# Finds a python3 that imports torch, for the Python package (python/).
# Sets LOPT_TORCH_PYTHON_FOUND, LOPT_PYTHON_EXECUTABLE, LOPT_PYTHON_TORCH_DIR
# (torch's package directory) and LOPT_PYTHON_TORCH_VERSION.
#
# Candidates in order: -DPython3_EXECUTABLE=..., the python3 on PATH, then
# /usr/bin/python3 (Debian's, where python3-torch installs torch: a pyenv or
# virtualenv python3 first on PATH usually has no torch of its own).
set(LOPT_TORCH_PYTHON_FOUND OFF)
set(_lopt_py_candidates)
if(Python3_EXECUTABLE)
  list(APPEND _lopt_py_candidates ${Python3_EXECUTABLE})
endif()
find_program(_lopt_py_on_path python3)
if(_lopt_py_on_path)
  list(APPEND _lopt_py_candidates ${_lopt_py_on_path})
endif()
list(APPEND _lopt_py_candidates /usr/bin/python3)
foreach(_py ${_lopt_py_candidates})
  if(NOT EXISTS ${_py})
    continue()
  endif()
  execute_process(
    COMMAND ${_py} -c "import os, torch; print(torch.__version__.split('+')[0]); print(os.path.dirname(torch.__file__))"
    RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(_rc EQUAL 0)
    string(REPLACE "\n" ";" _out "${_out}")
    list(GET _out 0 LOPT_PYTHON_TORCH_VERSION)
    list(GET _out 1 LOPT_PYTHON_TORCH_DIR)
    set(LOPT_PYTHON_EXECUTABLE ${_py})
    set(LOPT_TORCH_PYTHON_FOUND ON)
    break()
  endif()
endforeach()
if(LOPT_TORCH_PYTHON_FOUND)
  message(STATUS "lopt: Python package: ${LOPT_PYTHON_EXECUTABLE} with torch ${LOPT_PYTHON_TORCH_VERSION}")
else()
  message(STATUS "lopt: Python package: off (no python3 that imports torch among "
                 "${_lopt_py_candidates}; Debian: apt-get install python3-torch)")
endif()
