# The lease store and allocation policy of icefarm-ctl, as one static library
# so the unit tests link exactly what control links. Included from
# ctl/CMakeLists.txt (include(store.cmake)).
add_library(icefarm-ctl-store STATIC
  ${CMAKE_CURRENT_LIST_DIR}/store.c
  ${CMAKE_CURRENT_LIST_DIR}/store_txn.c
  ${CMAKE_CURRENT_LIST_DIR}/store_list.c
  ${CMAKE_CURRENT_LIST_DIR}/store_grant.c
  ${CMAKE_CURRENT_LIST_DIR}/store_ops.c
  ${CMAKE_CURRENT_LIST_DIR}/store_read.c
  ${CMAKE_CURRENT_LIST_DIR}/store_codec.c
  ${CMAKE_CURRENT_LIST_DIR}/store_mp.c
  ${CMAKE_CURRENT_LIST_DIR}/alloc.c
)
target_include_directories(icefarm-ctl-store PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(icefarm-ctl-store PUBLIC PkgConfig::LMDB PkgConfig::MSGPACK)
