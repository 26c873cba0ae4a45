/* SPDX-License-Identifier: GPL-2.0 */
/*
 * hmm-rs C shim: functions of hmm_shim.c that the Rust crate calls (its
 * shim module in hmm_core.rs declares them again). Not for device drivers.
 */
#ifndef HMM_SHIM_H
#define HMM_SHIM_H

#include <linux/types.h>

struct mm_struct;
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

#endif /* HMM_SHIM_H */
