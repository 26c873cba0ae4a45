// SPDX-License-Identifier: GPL-2.0
/*
 * hmm-rs C shim, DMA mappings of mirrored pages (hmm_mirror/dma.rs,
 * hmm_mirror/dma/iova.rs): the DMA API's calls with fault injection and
 * the dma_iova switch around them.
 *
 * A 4 KiB page is linked into its 2 MiB block's IOVA range where the
 * device has an IOMMU (dma_iova_try_alloc() succeeds), so a window of
 * pages costs one IOTLB sync to map and one flush to unmap; elsewhere,
 * and for a whole 2 MiB folio, it gets a mapping of its own
 * (dma_map_page()). A device that may write gets a bidirectional mapping,
 * a reader a to-device one.
 *
 * Mapping failures can be injected (CONFIG_FAULT_INJECTION_DEBUG_FS):
 * /sys/kernel/debug/hmm_rs_fail_dma/ holds the usual probability,
 * interval, times and task-filter knobs of the kernel's fault injection;
 * each mapping, each link of pages into an IOVA range, is one call.
 */
#include <linux/debugfs.h>
#include <linux/dma-mapping.h>
#include <linux/fault-inject.h>
#include <linux/moduleparam.h>
#include "hmm_shim.h"

static bool dma_iova = true;
module_param(dma_iova, bool, 0644);
MODULE_PARM_DESC(dma_iova,
		 "link 4 KiB pages into one IOVA range per 2 MiB where the IOMMU allows (default: Y)");

#ifdef CONFIG_FAULT_INJECTION_DEBUG_FS
static DECLARE_FAULT_ATTR(hmm_rs_fail_dma);
static struct dentry *hmm_rs_fail_dma_dir;
#endif

static bool hmm_rs_dma_should_fail(size_t size)
{
#ifdef CONFIG_FAULT_INJECTION_DEBUG_FS
	return should_fail(&hmm_rs_fail_dma, size);
#else
	return false;
#endif
}

void hmm_rs_shim_init(void)
{
#ifdef CONFIG_FAULT_INJECTION_DEBUG_FS
	/* Without the knobs, mappings simply never fail on purpose. */
	hmm_rs_fail_dma_dir = fault_create_debugfs_attr("hmm_rs_fail_dma", NULL,
							&hmm_rs_fail_dma);
#endif
}

void hmm_rs_shim_exit(void)
{
#ifdef CONFIG_FAULT_INJECTION_DEBUG_FS
	debugfs_remove_recursive(hmm_rs_fail_dma_dir);
#endif
}

static enum dma_data_direction hmm_rs_dma_dir(bool write)
{
	return write ? DMA_BIDIRECTIONAL : DMA_TO_DEVICE;
}

int hmm_rs_dma_map(struct device *dev, unsigned long pfn, unsigned int order, bool write,
		   u64 *dma)
{
	size_t size = PAGE_SIZE << order;
	dma_addr_t addr;

	if (hmm_rs_dma_should_fail(size))
		return -ENOMEM;
	addr = dma_map_page_attrs(dev, pfn_to_page(pfn), 0, size, hmm_rs_dma_dir(write), 0);
	if (dma_mapping_error(dev, addr))
		return -EIO;
	*dma = addr;
	return 0;
}

void hmm_rs_dma_unmap(struct device *dev, u64 dma, unsigned int order, bool write)
{
	dma_unmap_page_attrs(dev, dma, PAGE_SIZE << order, hmm_rs_dma_dir(write), 0);
}

bool hmm_rs_dma_iova_alloc(struct device *dev, struct dma_iova_state *state, size_t size)
{
	if (!READ_ONCE(dma_iova)) {
		memset(state, 0, sizeof(*state));
		return false;
	}
	return dma_iova_try_alloc(dev, state, 0, size);
}

void hmm_rs_dma_iova_free(struct device *dev, struct dma_iova_state *state)
{
	dma_iova_free(dev, state);
}

int hmm_rs_dma_iova_link(struct device *dev, struct dma_iova_state *state, unsigned long pfn,
			 size_t offset, size_t size, bool write)
{
	if (hmm_rs_dma_should_fail(size))
		return -ENOMEM;
	return dma_iova_link(dev, state, PFN_PHYS(pfn), offset, size, hmm_rs_dma_dir(write), 0);
}

int hmm_rs_dma_iova_sync(struct device *dev, struct dma_iova_state *state, size_t offset,
			 size_t size)
{
	return dma_iova_sync(dev, state, offset, size);
}

void hmm_rs_dma_iova_unlink(struct device *dev, struct dma_iova_state *state, size_t offset,
			    size_t size, bool write)
{
	dma_iova_unlink(dev, state, offset, size, hmm_rs_dma_dir(write), 0);
}
