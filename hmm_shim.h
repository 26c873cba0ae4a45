/* SPDX-License-Identifier: GPL-2.0 */
/*
 * hmm-rs C shim: functions of hmm_shim.c that the Rust crate calls (its
 * shim module in hmm_core.rs declares them again). Not for device drivers.
 */
#ifndef HMM_SHIM_H
#define HMM_SHIM_H

#include <linux/bits.h>
#include <linux/types.h>

#include "hmm_rs.h"

struct mm_struct;
struct mmu_interval_notifier;
struct mmu_interval_notifier_ops;
struct mmu_notifier;
struct mmu_notifier_ops;
struct mmu_notifier_range;
struct page;

void *hmm_rs_page_address(struct page *page);
struct page *hmm_rs_virt_to_page(const void *addr);
void hmm_rs_free_page_rcu(struct page *page);
struct mmu_notifier *hmm_rs_mmu_notifier_get(const struct mmu_notifier_ops *ops,
					     struct mm_struct *mm);
bool hmm_rs_range_blockable(const struct mmu_notifier_range *range);
bool hmm_rs_range_in_fork(const struct mmu_notifier_range *range);
bool hmm_rs_range_stays_readable(const struct mmu_notifier_range *range);
void hmm_rs_mark_pfn_dirty(unsigned long pfn);
struct page *hmm_rs_pfn_to_page(unsigned long pfn);
bool hmm_rs_page_dirty(struct page *page);

extern const unsigned long hmm_rs_pfn_valid;
extern const unsigned long hmm_rs_pfn_write;
extern const unsigned long hmm_rs_pfn_error;
extern const unsigned long hmm_rs_pfn_flags;
unsigned int hmm_rs_pfn_order(unsigned long hmm_pfn);
int hmm_rs_interval_insert(struct mmu_interval_notifier *sub, struct mm_struct *mm,
			   const struct mmu_interval_notifier_ops *ops);
bool hmm_rs_interval_read_retry(struct mmu_interval_notifier *sub, unsigned long seq);
void hmm_rs_interval_set_seq(struct mmu_interval_notifier *sub, unsigned long cur_seq);
#define HMM_RS_FAULT_READ	BIT(0)
#define HMM_RS_FAULT_WRITE	BIT(1)
int hmm_rs_range_fault(struct mmu_interval_notifier *sub, unsigned long start,
		       unsigned long end, unsigned long *pfns, unsigned int how,
		       unsigned long *seq);
bool hmm_rs_pfn_is_zero(unsigned long pfn);
unsigned int hmm_rs_user_address_bits(void);
extern const u64 hmm_rs_c_pt_flags[5];

/* The C API (hmm_rs.h), implemented in Rust (hmm_core.rs). */
struct hmm_rs_device *hmm_rs_rust_device_register(const struct hmm_rs_device_ops *ops);
void hmm_rs_rust_device_unregister(struct hmm_rs_device *device);
struct hmm_rs_mirror *hmm_rs_rust_mirror_register(struct hmm_rs_device *device,
						  struct mm_struct *mm,
						  void *mirror_priv);
void hmm_rs_rust_mirror_unregister(struct hmm_rs_mirror *mirror);
int hmm_rs_rust_mirror_fault(struct hmm_rs_mirror *mirror, enum hmm_rs_event_type type,
			     unsigned long start, unsigned long end);
int hmm_rs_rust_mirror_walk(struct hmm_rs_mirror *mirror, unsigned long start,
			    unsigned long end, hmm_rs_walk_fn fn, void *arg);
int hmm_rs_rust_mirror_set_dirty(struct hmm_rs_mirror *mirror, unsigned long start,
				 unsigned long end);
int hmm_rs_rust_mirror_snapshot(struct hmm_rs_mirror *mirror, unsigned long start,
				unsigned long end, u32 *out);
extern const u32 hmm_rs_c_snap_flags[4];
int hmm_rs_rust_mirror_make_exclusive(struct hmm_rs_mirror *mirror, unsigned long start,
				      unsigned long end);
struct folio;
int hmm_rs_mm_lock(struct mmu_interval_notifier *sub);
void hmm_rs_mm_unlock(struct mmu_interval_notifier *sub);
long hmm_rs_make_exclusive(struct mmu_interval_notifier *sub, unsigned long addr,
			   void *owner, struct folio **foliop);
void hmm_rs_exclusive_done(struct folio *folio);

#endif /* HMM_SHIM_H */
