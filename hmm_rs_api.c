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

/* checkpatch wants an export next to its function, which is in Rust. */
#define HMM_RS_EXPORT(sym)	EXPORT_SYMBOL_GPL(sym)

HMM_RS_EXPORT(hmm_rs_device_register);
HMM_RS_EXPORT(hmm_rs_device_unregister);
HMM_RS_EXPORT(hmm_rs_mirror_register);
HMM_RS_EXPORT(hmm_rs_mirror_register_dma);
HMM_RS_EXPORT(hmm_rs_mirror_unregister);
HMM_RS_EXPORT(hmm_rs_mirror_fault);
HMM_RS_EXPORT(hmm_rs_mirror_fault_walk);
HMM_RS_EXPORT(hmm_rs_mirror_fault_batch);
HMM_RS_EXPORT(hmm_rs_mirror_walk);
HMM_RS_EXPORT(hmm_rs_mirror_walk_dma);
HMM_RS_EXPORT(hmm_rs_mirror_unbind_dma);
HMM_RS_EXPORT(hmm_rs_mirror_snapshot);
HMM_RS_EXPORT(hmm_rs_mirror_make_exclusive);
HMM_RS_EXPORT(hmm_rs_mirror_set_dirty);
HMM_RS_EXPORT(hmm_rs_devmem_create);
HMM_RS_EXPORT(hmm_rs_devmem_create_coherent);
HMM_RS_EXPORT(hmm_rs_devmem_pfn);
HMM_RS_EXPORT(hmm_rs_devmem_destroy);
HMM_RS_EXPORT(hmm_rs_devmem_evict);
HMM_RS_EXPORT(hmm_rs_devmem_index);
HMM_RS_EXPORT(hmm_rs_devmem_evict_lru);
HMM_RS_EXPORT(hmm_rs_devmem_evict_range);
HMM_RS_EXPORT(hmm_rs_devmem_set_thrash);
HMM_RS_EXPORT(hmm_rs_devmem_stat);
HMM_RS_EXPORT(hmm_rs_mirror_advise);
HMM_RS_EXPORT(hmm_rs_mirror_advice);
HMM_RS_EXPORT(hmm_rs_mirror_prefetch);
HMM_RS_EXPORT(hmm_rs_mirror_migrate_to_device);
HMM_RS_EXPORT(hmm_rs_mirror_migrate_to_system);

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

const u64 hmm_rs_c_consts[12] = {
	HMM_RS_FORK, HMM_RS_MIGRATE, HMM_RS_MUNMAP, HMM_RS_DEVICE_READ_FAULT,
	HMM_RS_DEVICE_WRITE_FAULT, HMM_RS_WRITE_PROTECT, HMM_RS_UPDATE_PENDING,
	HMM_RS_DMA_NONE, HMM_RS_PT_DRIVER_SHIFT, HMM_RS_SNAP_ORDER(U32_MAX),
	HMM_RS_FAULT_REQ_WRITE, HMM_RS_FAULT_BATCH_MAX,
};

/*
 * The structures c_api.rs copies as #[repr(C)] types: for each, its size
 * and alignment, then each member's offset and size in declaration order.
 */
#define HMM_RS_LAYOUT(type)	{ sizeof(type), __alignof__(type) }

const unsigned long hmm_rs_c_layout[][2] = {
	HMM_RS_LAYOUT(struct hmm_rs_event),
	{ offsetof(struct hmm_rs_event, type),
	  sizeof_field(struct hmm_rs_event, type) },
	{ offsetof(struct hmm_rs_event, start),
	  sizeof_field(struct hmm_rs_event, start) },
	{ offsetof(struct hmm_rs_event, end),
	  sizeof_field(struct hmm_rs_event, end) },
	{ offsetof(struct hmm_rs_event, keep),
	  sizeof_field(struct hmm_rs_event, keep) },
	HMM_RS_LAYOUT(struct hmm_rs_device_ops),
	{ offsetof(struct hmm_rs_device_ops, update),
	  sizeof_field(struct hmm_rs_device_ops, update) },
	{ offsetof(struct hmm_rs_device_ops, release),
	  sizeof_field(struct hmm_rs_device_ops, release) },
	{ offsetof(struct hmm_rs_device_ops, update_end),
	  sizeof_field(struct hmm_rs_device_ops, update_end) },
	{ offsetof(struct hmm_rs_device_ops, update_finish),
	  sizeof_field(struct hmm_rs_device_ops, update_finish) },
	HMM_RS_LAYOUT(struct hmm_rs_devmem_ops),
	{ offsetof(struct hmm_rs_devmem_ops, copy_to_device),
	  sizeof_field(struct hmm_rs_devmem_ops, copy_to_device) },
	{ offsetof(struct hmm_rs_devmem_ops, copy_from_device),
	  sizeof_field(struct hmm_rs_devmem_ops, copy_from_device) },
	{ offsetof(struct hmm_rs_devmem_ops, free),
	  sizeof_field(struct hmm_rs_devmem_ops, free) },
	{ offsetof(struct hmm_rs_devmem_ops, copy_folio_to_device),
	  sizeof_field(struct hmm_rs_devmem_ops, copy_folio_to_device) },
	{ offsetof(struct hmm_rs_devmem_ops, copy_folio_from_device),
	  sizeof_field(struct hmm_rs_devmem_ops, copy_folio_from_device) },
	HMM_RS_LAYOUT(struct hmm_rs_fault_req),
	{ offsetof(struct hmm_rs_fault_req, addr),
	  sizeof_field(struct hmm_rs_fault_req, addr) },
	{ offsetof(struct hmm_rs_fault_req, npages),
	  sizeof_field(struct hmm_rs_fault_req, npages) },
	{ offsetof(struct hmm_rs_fault_req, flags),
	  sizeof_field(struct hmm_rs_fault_req, flags) },
	{ offsetof(struct hmm_rs_fault_req, result),
	  sizeof_field(struct hmm_rs_fault_req, result) },
	{ offsetof(struct hmm_rs_fault_req, pad),
	  sizeof_field(struct hmm_rs_fault_req, pad) },
};

const unsigned long hmm_rs_c_layout_len = ARRAY_SIZE(hmm_rs_c_layout);
#endif
