/* SPDX-License-Identifier: GPL-2.0 */
/*
 * hmm-rs C shim: the functions of hmm_shim.c and hmm_shim_devmem.c that
 * the Rust crate calls (shim.rs declares them again for Rust), the Rust
 * functions they call, and hmm_rs_api.c's tables for c_api.rs's KUnit
 * checks. Not for device drivers: they include hmm_rs.h.
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

extern const unsigned long hmm_rs_pfn_write;
extern const unsigned long hmm_rs_pfn_error;
extern const unsigned long hmm_rs_pfn_flags;
unsigned int hmm_rs_pfn_order(unsigned long hmm_pfn);
int hmm_rs_interval_insert(struct mmu_interval_notifier *sub, struct mm_struct *mm,
			   const struct mmu_interval_notifier_ops *ops);
int hmm_rs_interval_insert_range(struct mmu_interval_notifier *sub,
				 struct mmu_interval_notifier *mirror, unsigned long start,
				 unsigned long end, const struct mmu_interval_notifier_ops *ops);
bool hmm_rs_interval_read_retry(struct mmu_interval_notifier *sub, unsigned long seq);
void hmm_rs_interval_set_seq(struct mmu_interval_notifier *sub, unsigned long cur_seq);
#define HMM_RS_FAULT_READ	BIT(0)
#define HMM_RS_FAULT_WRITE	BIT(1)
int hmm_rs_range_fault(struct mmu_interval_notifier *sub, unsigned long start,
		       unsigned long end, unsigned long *pfns, unsigned int how,
		       void *owner, unsigned long *seq);
unsigned int hmm_rs_user_address_bits(void);

struct folio;
struct vm_fault;
struct hmm_rs_pagemap;
struct hmm_rs_pagemap *hmm_rs_pagemap_create(unsigned long npages, void *owner,
					     u64 phys, unsigned long *first_pfn);
void hmm_rs_pagemap_set_rust(struct hmm_rs_pagemap *pm, void *rust);
void hmm_rs_pagemap_destroy(struct hmm_rs_pagemap *pm);
void hmm_rs_devpage_init(struct hmm_rs_pagemap *pm, unsigned long pfn, unsigned int order);
bool hmm_rs_pfn_is_device_private(unsigned long pfn);
void hmm_rs_snap_decode(const unsigned long *pfns, u32 *out, unsigned long n, void *owner,
			unsigned long dev_lo, unsigned long dev_hi);
/* Device memory callbacks, implemented in Rust (hmm_mirror/devmem.rs). */
void hmm_rs_rust_devmem_free(void *devmem, unsigned long pfn, unsigned int order);
int hmm_rs_rust_devmem_fault(void *devmem, struct vm_fault *vmf);
#define HMM_RS_MIGRATE_MAX	512
struct hmm_rs_migrate;
struct hmm_rs_migrate *hmm_rs_migrate_alloc(void);
void hmm_rs_migrate_free(struct hmm_rs_migrate *m);
long hmm_rs_migrate_setup(struct hmm_rs_migrate *m, struct mmu_interval_notifier *sub,
			  unsigned long addr, unsigned long end, void *owner, bool to_device);
long hmm_rs_migrate_setup_fault(struct hmm_rs_migrate *m, struct vm_fault *vmf);
long hmm_rs_migrate_setup_device(struct hmm_rs_migrate *m, unsigned long pfn,
				 unsigned long npages);
unsigned long *hmm_rs_migrate_src_pfns(struct hmm_rs_migrate *m);
unsigned long *hmm_rs_migrate_dst_pfns(struct hmm_rs_migrate *m);
extern const unsigned long hmm_rs_migrate_pfn_bits[5];
unsigned long hmm_rs_migrate_alloc_system(struct hmm_rs_migrate *m, unsigned long i,
					  unsigned int order);
void hmm_rs_migrate_pages(struct hmm_rs_migrate *m);
long hmm_rs_migrate_dropped(struct hmm_rs_migrate *m, struct mmu_interval_notifier *sub,
			    void *owner, bool to_device);
u64 hmm_rs_migrate_backoff(void);
u64 hmm_rs_now_ns(void);
void hmm_rs_migrate_finalize(struct hmm_rs_migrate *m);
void hmm_rs_migrate_drop_page(unsigned long pfn);
void *hmm_rs_pfn_devmem(unsigned long pfn);
unsigned long hmm_rs_interval_read_begin(struct mmu_interval_notifier *sub);
bool hmm_rs_fatal_signal_pending(void);
int hmm_rs_mm_lock(struct mmu_interval_notifier *sub);
void hmm_rs_mm_unlock(struct mmu_interval_notifier *sub);
long hmm_rs_make_exclusive(struct mmu_interval_notifier *sub, unsigned long addr,
			   void *owner, struct folio **foliop);
void hmm_rs_exclusive_done(struct folio *folio);

/* DMA mappings of mirrored pages (hmm_shim_dma.c). */
struct device;
struct dma_iova_state;
void hmm_rs_shim_init(void);
void hmm_rs_shim_exit(void);
int hmm_rs_dma_map(struct device *dev, unsigned long pfn, unsigned int order, bool write,
		   u64 *dma);
void hmm_rs_dma_unmap(struct device *dev, u64 dma, unsigned int order, bool write);
bool hmm_rs_dma_iova_alloc(struct device *dev, struct dma_iova_state *state, size_t size);
void hmm_rs_dma_iova_free(struct device *dev, struct dma_iova_state *state);
int hmm_rs_dma_iova_link(struct device *dev, struct dma_iova_state *state, unsigned long pfn,
			 size_t offset, size_t size, bool write);
int hmm_rs_dma_iova_sync(struct device *dev, struct dma_iova_state *state, size_t offset,
			 size_t size);
void hmm_rs_dma_iova_unlink(struct device *dev, struct dma_iova_state *state, size_t offset,
			    size_t size, bool write);

/* hmm_rs.h as C sees it, for c_api.rs's KUnit checks (hmm_rs_api.c). */
extern const u64 hmm_rs_c_pt_flags[5];
extern const u32 hmm_rs_c_snap_flags[7];
extern const u64 hmm_rs_c_consts[12];
extern const unsigned long hmm_rs_c_layout[][2];
extern const unsigned long hmm_rs_c_layout_len;

#endif /* HMM_SHIM_H */
