/* SPDX-License-Identifier: GPL-2.0 */
/*
 * hmm-rs for Rust drivers: what rust/hmm_rs_driver_helpers.c gives
 * rust/hmm_rs_driver.rs (which declares the same in Rust).
 */
#ifndef HMM_RS_DRIVER_HELPERS_H
#define HMM_RS_DRIVER_HELPERS_H

#include <linux/types.h>

struct mm_struct;
struct page;

void hmm_rs_drv_page_read(u64 pfn, size_t offset, void *dst, size_t len);
void hmm_rs_drv_page_write(u64 pfn, size_t offset, const void *src, size_t len);
void hmm_rs_drv_pages_zero(u64 pfn, unsigned long n);
void hmm_rs_drv_pages_copy(u64 dst, u64 src, unsigned long n);
bool hmm_rs_drv_page_alloc(u64 *pfn);
void hmm_rs_drv_page_free(u64 pfn);
bool hmm_rs_drv_folio_alloc(unsigned int order, u64 *pfn);
void hmm_rs_drv_folio_put(u64 pfn);
u64 hmm_rs_drv_page_pfn(struct page *page);
bool hmm_rs_drv_fatal_signal_pending(void);
void hmm_rs_drv_cond_resched(void);
unsigned long hmm_rs_drv_user_end(void);
long hmm_rs_drv_next_vma(struct mm_struct *mm, unsigned long addr, unsigned long end);

#endif /* HMM_RS_DRIVER_HELPERS_H */
