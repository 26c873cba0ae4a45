/* SPDX-License-Identifier: GPL-2.0 */
/*
 * hmm-rs C shim: functions of hmm_shim.c that the Rust crate calls (its
 * shim module in hmm_core.rs declares them again). Not for device drivers.
 */
#ifndef HMM_SHIM_H
#define HMM_SHIM_H

struct page;

void *hmm_rs_page_address(struct page *page);
struct page *hmm_rs_virt_to_page(const void *addr);
void hmm_rs_free_page_rcu(struct page *page);

#endif /* HMM_SHIM_H */
