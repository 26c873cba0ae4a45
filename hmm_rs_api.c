// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs: the C API of hmm_rs.h. Its functions are defined in Rust
 * (c_api.rs, #[no_mangle] under these names); this file exports them, and
 * gives c_api.rs's KUnit suite what the C compiler makes of hmm_rs.h
 * (constants, struct layouts) to check the Rust side against.
 */
#include <linux/array_size.h>
#include <linux/export.h>
#include <linux/limits.h>
#include <linux/stddef.h>

#include "hmm_rs.h"
#include "hmm_shim.h"

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

#if IS_ENABLED(CONFIG_KUNIT)
/* Entry flags, event types and other constants, in c_api.rs's order. */
const u64 hmm_rs_c_pt_flags[5] = {
	HMM_RS_PT_VALID, HMM_RS_PT_WRITE, HMM_RS_PT_DIRTY, HMM_RS_PT_DEVICE,
	HMM_RS_PT_EXCLUSIVE,
};

const u32 hmm_rs_c_snap_flags[7] = {
	HMM_RS_SNAP_VALID, HMM_RS_SNAP_WRITE, HMM_RS_SNAP_ERROR, HMM_RS_SNAP_ZERO,
	HMM_RS_SNAP_DEVICE, HMM_RS_SNAP_COHERENT, HMM_RS_SNAP_REMOTE,
};

const u64 hmm_rs_c_consts[10] = {
	HMM_RS_FORK, HMM_RS_MIGRATE, HMM_RS_MUNMAP, HMM_RS_DEVICE_READ_FAULT,
	HMM_RS_DEVICE_WRITE_FAULT, HMM_RS_WRITE_PROTECT, HMM_RS_UPDATE_PENDING,
	HMM_RS_DMA_NONE, HMM_RS_PT_DRIVER_SHIFT, HMM_RS_SNAP_ORDER(U32_MAX),
};

/*
 * The structures c_api.rs copies as #[repr(C)] types: for each, its size
 * and alignment, then each member's offset and size in declaration order.
 */
#define HMM_RS_LAYOUT(type)	{ sizeof(type), __alignof__(type) }
#define HMM_RS_MEMBER(type, m)	{ offsetof(type, m), sizeof_field(type, m) }

const unsigned long hmm_rs_c_layout[][2] = {
	HMM_RS_LAYOUT(struct hmm_rs_event),
	HMM_RS_MEMBER(struct hmm_rs_event, type),
	HMM_RS_MEMBER(struct hmm_rs_event, start),
	HMM_RS_MEMBER(struct hmm_rs_event, end),
	HMM_RS_MEMBER(struct hmm_rs_event, keep),
	HMM_RS_LAYOUT(struct hmm_rs_device_ops),
	HMM_RS_MEMBER(struct hmm_rs_device_ops, update),
	HMM_RS_MEMBER(struct hmm_rs_device_ops, release),
	HMM_RS_MEMBER(struct hmm_rs_device_ops, update_end),
	HMM_RS_MEMBER(struct hmm_rs_device_ops, update_finish),
	HMM_RS_LAYOUT(struct hmm_rs_devmem_ops),
	HMM_RS_MEMBER(struct hmm_rs_devmem_ops, copy_to_device),
	HMM_RS_MEMBER(struct hmm_rs_devmem_ops, copy_from_device),
	HMM_RS_MEMBER(struct hmm_rs_devmem_ops, free),
	HMM_RS_MEMBER(struct hmm_rs_devmem_ops, copy_folio_to_device),
	HMM_RS_MEMBER(struct hmm_rs_devmem_ops, copy_folio_from_device),
};

const unsigned long hmm_rs_c_layout_len = ARRAY_SIZE(hmm_rs_c_layout);
#endif
