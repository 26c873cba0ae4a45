// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs: the C API of hmm_rs.h. Its functions are defined in Rust
 * (c_api.rs, #[no_mangle] under these names); this file exports them.
 */
#include <linux/export.h>

#include "hmm_rs.h"

EXPORT_SYMBOL_GPL(hmm_rs_device_register);
EXPORT_SYMBOL_GPL(hmm_rs_device_unregister);
EXPORT_SYMBOL_GPL(hmm_rs_mirror_register);
EXPORT_SYMBOL_GPL(hmm_rs_mirror_register_dma);
EXPORT_SYMBOL_GPL(hmm_rs_mirror_unregister);
EXPORT_SYMBOL_GPL(hmm_rs_mirror_fault);
EXPORT_SYMBOL_GPL(hmm_rs_mirror_fault_walk);
EXPORT_SYMBOL_GPL(hmm_rs_mirror_walk);
EXPORT_SYMBOL_GPL(hmm_rs_mirror_walk_dma);
EXPORT_SYMBOL_GPL(hmm_rs_mirror_unbind_dma);
EXPORT_SYMBOL_GPL(hmm_rs_mirror_snapshot);
EXPORT_SYMBOL_GPL(hmm_rs_mirror_make_exclusive);
EXPORT_SYMBOL_GPL(hmm_rs_mirror_set_dirty);
EXPORT_SYMBOL_GPL(hmm_rs_devmem_create);
EXPORT_SYMBOL_GPL(hmm_rs_devmem_create_coherent);
EXPORT_SYMBOL_GPL(hmm_rs_devmem_pfn);
EXPORT_SYMBOL_GPL(hmm_rs_devmem_destroy);
EXPORT_SYMBOL_GPL(hmm_rs_devmem_evict);
EXPORT_SYMBOL_GPL(hmm_rs_devmem_index);
EXPORT_SYMBOL_GPL(hmm_rs_mirror_migrate_to_device);
EXPORT_SYMBOL_GPL(hmm_rs_mirror_migrate_to_system);
