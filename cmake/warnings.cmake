# One INTERFACE target that carries the project's warning flags; every target links it.
add_library(egress_warnings INTERFACE)
add_library(egress::warnings ALIAS egress_warnings)
target_compile_options(egress_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion
  -Wold-style-cast -Woverloaded-virtual -Wimplicit-fallthrough
  $<$<BOOL:${EGRESS_WERROR}>:-Werror>)
target_compile_definitions(egress_warnings INTERFACE
  BOOST_ASIO_NO_DEPRECATED BOOST_ASIO_NO_TS_EXECUTORS BOOST_ALLOW_DEPRECATED_HEADERS)

# Sanitizers: one switch for the whole tree so libraries and tests agree.
if(EGRESS_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
