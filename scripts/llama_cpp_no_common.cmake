# Included by CMake right after llama.cpp's own `project()` call (CMAKE_PROJECT_llama.cpp_INCLUDE,
# set by scripts/llama_cpp.sh). llama-cpp-python forces llama.cpp's "common" library on, but its
# Python binding only calls the C API of libllama; common (chat templates, JSON schema, argument
# parsing) is the largest part of the compile, so the CPU-only test build turns it back off here.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama: build common utils library" FORCE)
