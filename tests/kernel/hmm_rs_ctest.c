// SPDX-License-Identifier: GPL-2.0
/*
 * A C user of hmm-rs: built against hmm_rs.h and the exported symbols only,
 * as a GPU driver would be. Its KUnit suite runs when it is loaded.
 */
#include <kunit/test.h>
#include <linux/dma-mapping.h>
#include <linux/err.h>
#include <linux/mm.h>
#include <linux/mman.h>
#include <linux/module.h>
#include <linux/platform_device.h>
#include <linux/sched.h>
#include <linux/highmem.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "hmm_rs.h"

struct ctest_seen {
	int munmaps;
	int releases;
};

static int ctest_update(struct hmm_rs_mirror *mirror,
			const struct hmm_rs_event *event, bool blockable,
			void *mirror_priv)
{
	struct ctest_seen *seen = mirror_priv;

	if (event->type == HMM_RS_MUNMAP && !(event->keep & HMM_RS_PT_VALID))
		seen->munmaps++;
	return 0;
}

static void ctest_release(struct hmm_rs_mirror *mirror, void *mirror_priv)
{
	struct ctest_seen *seen = mirror_priv;

	seen->releases++;
}

static const struct hmm_rs_device_ops ctest_ops = {
	.update = ctest_update,
	.release = ctest_release,
};

static int ctest_count_pages(void *arg, unsigned long addr, u64 pfn,
			     unsigned int order, u64 flags)
{
	unsigned long *pages = arg;

	if (flags & HMM_RS_PT_VALID)
		*pages += 1UL << order;
	return 0;
}

static int ctest_stop_at_first(void *arg, unsigned long addr, u64 pfn,
			       unsigned int order, u64 flags)
{
	*(unsigned long *)arg = addr;
	return 7;
}

static void ctest_device_unregister(void *device)
{
	hmm_rs_device_unregister(device);
}

static void ctest_mirror_unregister(void *mirror)
{
	hmm_rs_mirror_unregister(mirror);
}

/*
 * A device and a mirror of the test's mm, undone when the test ends. What
 * the device sees goes to @seen, which must outlive the mirror: the mm is
 * torn down (calling release()) when the test thread exits, before KUnit
 * unregisters the mirror, so it cannot live on the test's stack.
 */
static struct hmm_rs_mirror *ctest_mirror(struct kunit *test, struct ctest_seen **seen)
{
	struct hmm_rs_device *device;
	struct hmm_rs_mirror *mirror;

	*seen = kunit_kzalloc(test, sizeof(**seen), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, *seen);

	device = hmm_rs_device_register(&ctest_ops);
	KUNIT_ASSERT_FALSE(test, IS_ERR(device));
	KUNIT_ASSERT_EQ(test, 0, kunit_add_action_or_reset(test, ctest_device_unregister, device));
	mirror = hmm_rs_mirror_register(device, current->mm, *seen);
	KUNIT_ASSERT_FALSE(test, IS_ERR(mirror));
	KUNIT_ASSERT_EQ(test, 0, kunit_add_action_or_reset(test, ctest_mirror_unregister, mirror));
	return mirror;
}

static void ctest_fault_walk_munmap(struct kunit *test)
{
	unsigned long len = 4 * PAGE_SIZE, addr, pages = 0, first = 0;
	struct hmm_rs_mirror *mirror;
	struct ctest_seen *seen;

	addr = kunit_vm_mmap(test, NULL, 0, len, PROT_READ | PROT_WRITE,
			     MAP_ANONYMOUS | MAP_PRIVATE, 0);
	KUNIT_ASSERT_NE(test, addr, 0);
	mirror = ctest_mirror(test, &seen);

	KUNIT_EXPECT_EQ(test, 0, hmm_rs_mirror_fault(mirror, HMM_RS_DEVICE_WRITE_FAULT,
						     addr, addr + len));
	KUNIT_EXPECT_EQ(test, 0, hmm_rs_mirror_walk(mirror, addr, addr + len,
						    ctest_count_pages, &pages));
	KUNIT_EXPECT_EQ(test, pages, 4);
	KUNIT_EXPECT_EQ(test, 7, hmm_rs_mirror_walk(mirror, addr, addr + len,
						    ctest_stop_at_first, &first));
	KUNIT_EXPECT_EQ(test, first, addr);
	/* Write faults are dirty already: nothing changes. */
	KUNIT_EXPECT_EQ(test, 0, hmm_rs_mirror_set_dirty(mirror, addr, addr + len));

	KUNIT_EXPECT_EQ(test, 0, vm_munmap(addr, len));
	KUNIT_EXPECT_GE(test, seen->munmaps, 1);
	pages = 0;
	KUNIT_EXPECT_EQ(test, 0, hmm_rs_mirror_walk(mirror, addr, addr + len,
						    ctest_count_pages, &pages));
	KUNIT_EXPECT_EQ(test, pages, 0);
}

static void ctest_bad_arguments(struct kunit *test)
{
	unsigned long len = PAGE_SIZE, addr, pages = 0;
	struct hmm_rs_mirror *mirror;
	struct ctest_seen *seen;

	KUNIT_EXPECT_EQ(test, PTR_ERR(hmm_rs_device_register(NULL)), -EINVAL);
	addr = kunit_vm_mmap(test, NULL, 0, len, PROT_READ, MAP_ANONYMOUS | MAP_PRIVATE, 0);
	KUNIT_ASSERT_NE(test, addr, 0);
	mirror = ctest_mirror(test, &seen);

	KUNIT_EXPECT_EQ(test, -EINVAL, hmm_rs_mirror_fault(mirror, HMM_RS_MUNMAP,
							   addr, addr + len));
	KUNIT_EXPECT_EQ(test, -EINVAL, hmm_rs_mirror_fault(mirror, 0, addr, addr + len));
	KUNIT_EXPECT_EQ(test, -EINVAL, hmm_rs_mirror_fault(mirror, HMM_RS_DEVICE_READ_FAULT,
							   addr + 1, addr + len));
	KUNIT_EXPECT_EQ(test, -EINVAL, hmm_rs_mirror_fault(mirror, HMM_RS_DEVICE_READ_FAULT,
							   addr + len, addr));
	KUNIT_EXPECT_EQ(test, -EPERM, hmm_rs_mirror_fault(mirror, HMM_RS_DEVICE_WRITE_FAULT,
							  addr, addr + len));
	KUNIT_EXPECT_EQ(test, -EINVAL, hmm_rs_mirror_walk(mirror, addr, addr + len, NULL, NULL));
	KUNIT_EXPECT_EQ(test, -EINVAL, hmm_rs_mirror_walk(mirror, addr + len, addr,
							  ctest_count_pages, &pages));
	KUNIT_EXPECT_EQ(test, -EINVAL, hmm_rs_mirror_set_dirty(mirror, addr, addr));
}

/*
 * hmm_rs_mirror_fault_batch() through the C API: unsorted requests with a
 * duplicate, a write to read-only memory, a bad flag and a bad pad, each
 * with its result; the batch's own errors.
 */
static void ctest_fault_batch(struct kunit *test)
{
	unsigned long len = 4 * PAGE_SIZE, addr, ro, pages = 0;
	struct hmm_rs_fault_req reqs[7];
	struct hmm_rs_mirror *mirror;
	struct ctest_seen *seen;

	addr = kunit_vm_mmap(test, NULL, 0, len, PROT_READ | PROT_WRITE,
			     MAP_ANONYMOUS | MAP_PRIVATE, 0);
	KUNIT_ASSERT_NE(test, addr, 0);
	ro = kunit_vm_mmap(test, NULL, 0, PAGE_SIZE, PROT_READ, MAP_ANONYMOUS | MAP_PRIVATE, 0);
	KUNIT_ASSERT_NE(test, ro, 0);
	mirror = ctest_mirror(test, &seen);

	memset(reqs, 0, sizeof(reqs));
	reqs[0].addr = addr + 3 * PAGE_SIZE;
	reqs[1].addr = addr;
	reqs[1].npages = 2;
	reqs[1].flags = HMM_RS_FAULT_REQ_WRITE;
	reqs[2].addr = addr;
	reqs[3].addr = ro;
	reqs[3].flags = HMM_RS_FAULT_REQ_WRITE;
	reqs[4].addr = addr;
	reqs[4].flags = 2;
	reqs[5].addr = addr;
	reqs[5].pad = 1;
	reqs[6].addr = ro;
	KUNIT_EXPECT_EQ(test, 0, hmm_rs_mirror_fault_batch(mirror, reqs, 7));
	KUNIT_EXPECT_EQ(test, reqs[0].result, 0);
	KUNIT_EXPECT_EQ(test, reqs[1].result, 0);
	KUNIT_EXPECT_EQ(test, reqs[2].result, 0);
	KUNIT_EXPECT_EQ(test, reqs[3].result, -EPERM);
	KUNIT_EXPECT_EQ(test, reqs[4].result, -EINVAL);
	KUNIT_EXPECT_EQ(test, reqs[5].result, -EINVAL);
	KUNIT_EXPECT_EQ(test, reqs[6].result, 0);
	/* Pages 0, 1 and 3 of addr, and ro; page 2 only if one window took both. */
	KUNIT_EXPECT_EQ(test, 0, hmm_rs_mirror_walk(mirror, addr, addr + len,
						    ctest_count_pages, &pages));
	KUNIT_EXPECT_GE(test, pages, 3);
	KUNIT_EXPECT_EQ(test, 0, hmm_rs_mirror_fault_batch(mirror, NULL, 0));
	KUNIT_EXPECT_EQ(test, -EINVAL, hmm_rs_mirror_fault_batch(mirror, NULL, 1));
	KUNIT_EXPECT_EQ(test, -EINVAL, hmm_rs_mirror_fault_batch(mirror, reqs,
								 HMM_RS_FAULT_BATCH_MAX + 1));
}

static void ctest_device_outlives_its_mirrors(struct kunit *test)
{
	unsigned long len = PAGE_SIZE, addr;
	struct hmm_rs_device *device;
	struct hmm_rs_mirror *mirror;
	struct ctest_seen *seen;

	seen = kunit_kzalloc(test, sizeof(*seen), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, seen);
	addr = kunit_vm_mmap(test, NULL, 0, len, PROT_READ | PROT_WRITE,
			     MAP_ANONYMOUS | MAP_PRIVATE, 0);
	KUNIT_ASSERT_NE(test, addr, 0);
	device = hmm_rs_device_register(&ctest_ops);
	KUNIT_ASSERT_FALSE(test, IS_ERR(device));
	mirror = hmm_rs_mirror_register(device, current->mm, seen);
	if (IS_ERR(mirror)) {
		hmm_rs_device_unregister(device);
		KUNIT_FAIL(test, "mirror registration failed: %ld", PTR_ERR(mirror));
		return;
	}
	/* Refused while the mirror exists: the device and its ops stay usable. */
	hmm_rs_device_unregister(device);
	KUNIT_EXPECT_EQ(test, 0, hmm_rs_mirror_fault(mirror, HMM_RS_DEVICE_READ_FAULT,
						     addr, addr + len));
	KUNIT_EXPECT_EQ(test, 0, vm_munmap(addr, len));
	KUNIT_EXPECT_EQ(test, seen->munmaps, 1);
	hmm_rs_mirror_unregister(mirror);
	hmm_rs_device_unregister(device);
}

/* Device memory whose contents live in a vmalloc()ed array. */
struct ctest_devmem {
	u8 *data;
	unsigned long npages;
};

static int ctest_copy_to_device(void *priv, unsigned long index, struct page *src)
{
	struct ctest_devmem *dm = priv;
	u8 *dst = dm->data + index * PAGE_SIZE;

	if (index >= dm->npages)
		return -EINVAL;
	if (src)
		memcpy_from_page(dst, src, 0, PAGE_SIZE);
	else
		memset(dst, 0, PAGE_SIZE);
	return 0;
}

static int ctest_copy_from_device(void *priv, unsigned long index, struct page *dst)
{
	struct ctest_devmem *dm = priv;

	if (index >= dm->npages)
		return -EINVAL;
	memcpy_to_page(dst, 0, dm->data + index * PAGE_SIZE, PAGE_SIZE);
	return 0;
}

static const struct hmm_rs_devmem_ops ctest_devmem_ops = {
	.copy_to_device = ctest_copy_to_device,
	.copy_from_device = ctest_copy_from_device,
};

/* Only one of the two copies: not enough. */
static const struct hmm_rs_devmem_ops ctest_half_ops = {
	.copy_to_device = ctest_copy_to_device,
};

static void ctest_vfree(void *p)
{
	vfree(p);
}

static void ctest_devmem_bad_arguments(struct kunit *test)
{
	struct hmm_rs_device *device;
	struct ctest_devmem dm = {};

	device = hmm_rs_device_register(&ctest_ops);
	KUNIT_ASSERT_FALSE(test, IS_ERR(device));
	KUNIT_ASSERT_EQ(test, 0, kunit_add_action_or_reset(test, ctest_device_unregister, device));

	KUNIT_EXPECT_EQ(test, -EINVAL,
			PTR_ERR(hmm_rs_devmem_create(NULL, 16, &ctest_devmem_ops, &dm, 0)));
	KUNIT_EXPECT_EQ(test, -EINVAL, PTR_ERR(hmm_rs_devmem_create(device, 16, NULL, &dm, 0)));
	KUNIT_EXPECT_EQ(test, -EINVAL,
			PTR_ERR(hmm_rs_devmem_create(device, 16, &ctest_half_ops, &dm, 0)));
	KUNIT_EXPECT_EQ(test, -EINVAL,
			PTR_ERR(hmm_rs_devmem_create(device, 0, &ctest_devmem_ops, &dm, 0)));
	/* Unknown flags. */
	KUNIT_EXPECT_EQ(test, -EINVAL,
			PTR_ERR(hmm_rs_devmem_create(device, 16, &ctest_devmem_ops, &dm, 1U << 5)));
	/* Coherent memory: no address, an unaligned one, System RAM, wrapping. */
	KUNIT_EXPECT_EQ(test, -EINVAL,
			PTR_ERR(hmm_rs_devmem_create_coherent(device, 0, 512, &ctest_devmem_ops,
							      &dm, 0)));
	KUNIT_EXPECT_EQ(test, -EINVAL,
			PTR_ERR(hmm_rs_devmem_create_coherent(device, SZ_1G + PAGE_SIZE, 512,
							      &ctest_devmem_ops, &dm, 0)));
	KUNIT_EXPECT_EQ(test, -EINVAL,
			PTR_ERR(hmm_rs_devmem_create_coherent(device, SZ_16M, 512,
							      &ctest_devmem_ops, &dm, 0)));
	KUNIT_EXPECT_EQ(test, -EINVAL,
			PTR_ERR(hmm_rs_devmem_create_coherent(device, -(u64)SZ_2M, 1024,
							      &ctest_devmem_ops, &dm, 0)));
	/* None of those left the device with device memory: it can go. */
}

/*
 * Destroying device memory whose pages are mapped in a process brings
 * them back to system memory with their contents; the device, unregistered
 * meanwhile, is refused until its memory is gone.
 */
static void ctest_devmem_destroy_while_mapped(struct kunit *test)
{
	unsigned long npages = 4, len = npages * PAGE_SIZE, addr, i;
	struct hmm_rs_device *device;
	struct hmm_rs_mirror *mirror;
	struct hmm_rs_devmem *mem;
	struct ctest_devmem *dm;
	struct ctest_seen *seen;
	u8 buf[8];

	seen = kunit_kzalloc(test, sizeof(*seen), GFP_KERNEL);
	dm = kunit_kzalloc(test, sizeof(*dm), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, seen);
	KUNIT_ASSERT_NOT_NULL(test, dm);
	dm->npages = 1024;
	dm->data = vzalloc(dm->npages * PAGE_SIZE);
	KUNIT_ASSERT_NOT_NULL(test, dm->data);
	KUNIT_ASSERT_EQ(test, 0, kunit_add_action_or_reset(test, ctest_vfree, dm->data));
	addr = kunit_vm_mmap(test, NULL, 0, len, PROT_READ | PROT_WRITE,
			     MAP_ANONYMOUS | MAP_PRIVATE, 0);
	KUNIT_ASSERT_NE(test, addr, 0);
	for (i = 0; i < npages; i++) {
		u8 v = 0xa0 + i;

		KUNIT_ASSERT_EQ(test, 0, copy_to_user((void __user *)(addr + i * PAGE_SIZE),
						      &v, 1));
	}

	device = hmm_rs_device_register(&ctest_ops);
	KUNIT_ASSERT_FALSE(test, IS_ERR(device));
	mem = hmm_rs_devmem_create(device, dm->npages, &ctest_devmem_ops, dm, 0);
	if (IS_ERR(mem)) {
		hmm_rs_device_unregister(device);
		KUNIT_FAIL(test, "devmem_create: %ld", PTR_ERR(mem));
		return;
	}
	mirror = hmm_rs_mirror_register(device, current->mm, seen);
	if (!IS_ERR(mirror)) {
		KUNIT_EXPECT_EQ(test, npages,
				hmm_rs_mirror_migrate_to_device(mirror, mem, addr, addr + len));
		hmm_rs_mirror_unregister(mirror);
	} else {
		KUNIT_FAIL(test, "mirror_register: %ld", PTR_ERR(mirror));
	}
	/* Refused: the device still has memory (an error in the log). */
	hmm_rs_device_unregister(device);
	KUNIT_EXPECT_EQ(test, hmm_rs_devmem_index(mem, hmm_rs_devmem_pfn(mem, 3)), 3);
	KUNIT_EXPECT_EQ(test, hmm_rs_devmem_index(mem, 0), -EINVAL);
	KUNIT_EXPECT_EQ(test, hmm_rs_devmem_pfn(mem, dm->npages), 0);
	/* The pages come back, and the memory goes. */
	hmm_rs_devmem_destroy(mem);
	for (i = 0; i < npages; i++) {
		KUNIT_EXPECT_EQ(test, 0, copy_from_user(buf, (void __user *)(addr + i * PAGE_SIZE),
							sizeof(buf)));
		KUNIT_EXPECT_EQ(test, buf[0], 0xa0 + i);
	}
	/* Now it can go. */
	hmm_rs_device_unregister(device);
}

/* What hmm_rs_mirror_walk_dma() saw: pages, with an address or not. */
struct ctest_dma_seen {
	unsigned long pages, mapped, direct;
};

static int ctest_count_dma(void *arg, unsigned long addr, u64 pfn, u64 dma,
			   unsigned int order, u64 flags)
{
	struct ctest_dma_seen *seen = arg;

	seen->pages += 1UL << order;
	if (dma != HMM_RS_DMA_NONE) {
		seen->mapped += 1UL << order;
		/* A device without an IOMMU: DMA addresses are physical. */
		seen->direct += dma == PFN_PHYS(pfn);
	}
	return 0;
}

static void ctest_platform_unregister(void *pdev)
{
	platform_device_unregister(pdev);
}

/*
 * DMA-mapped mirrors without an IOMMU (a platform device, direct mapping):
 * faulted pages get their physical address, munmap takes them away,
 * unbinding leaves nothing mapped and faults fail with -ENODEV; and the bad
 * arguments of the DMA calls.
 */
static void ctest_dma_mapped_mirror(struct kunit *test)
{
	unsigned long len = 4 * PAGE_SIZE, addr;
	struct ctest_dma_seen dma = {};
	struct platform_device *pdev;
	struct hmm_rs_device *device;
	struct hmm_rs_mirror *mirror, *plain;
	struct ctest_seen *seen;

	addr = kunit_vm_mmap(test, NULL, 0, len, PROT_READ | PROT_WRITE,
			     MAP_ANONYMOUS | MAP_PRIVATE, 0);
	KUNIT_ASSERT_NE(test, addr, 0);
	plain = ctest_mirror(test, &seen);
	KUNIT_EXPECT_EQ(test, -EINVAL, hmm_rs_mirror_unbind_dma(plain));
	KUNIT_EXPECT_EQ(test, -EINVAL, hmm_rs_mirror_walk_dma(plain, addr, addr + len, NULL, NULL));
	KUNIT_EXPECT_EQ(test, 0, hmm_rs_mirror_fault(plain, HMM_RS_DEVICE_READ_FAULT,
						     addr, addr + len));
	KUNIT_EXPECT_EQ(test, 0, hmm_rs_mirror_walk_dma(plain, addr, addr + len,
							ctest_count_dma, &dma));
	KUNIT_EXPECT_EQ(test, dma.pages, 4);
	KUNIT_EXPECT_EQ(test, dma.mapped, 0);

	pdev = platform_device_register_simple("hmm_rs_ctest_dma", PLATFORM_DEVID_AUTO, NULL, 0);
	KUNIT_ASSERT_FALSE(test, IS_ERR(pdev));
	KUNIT_ASSERT_EQ(test, 0, kunit_add_action_or_reset(test, ctest_platform_unregister, pdev));
	pdev->dev.dma_mask = &pdev->dev.coherent_dma_mask;
	KUNIT_ASSERT_EQ(test, 0, dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64)));
	device = hmm_rs_device_register(&ctest_ops);
	KUNIT_ASSERT_FALSE(test, IS_ERR(device));
	KUNIT_ASSERT_EQ(test, 0, kunit_add_action_or_reset(test, ctest_device_unregister, device));
	KUNIT_EXPECT_EQ(test, -EINVAL, PTR_ERR(hmm_rs_mirror_register_dma(device, current->mm,
									  NULL, seen)));
	mirror = hmm_rs_mirror_register_dma(device, current->mm, &pdev->dev, seen);
	KUNIT_ASSERT_FALSE(test, IS_ERR(mirror));
	KUNIT_ASSERT_EQ(test, 0, kunit_add_action_or_reset(test, ctest_mirror_unregister, mirror));

	KUNIT_EXPECT_EQ(test, 0, hmm_rs_mirror_fault(mirror, HMM_RS_DEVICE_WRITE_FAULT,
						     addr, addr + len));
	dma = (struct ctest_dma_seen) {};
	KUNIT_EXPECT_EQ(test, 0, hmm_rs_mirror_walk_dma(mirror, addr, addr + len,
							ctest_count_dma, &dma));
	KUNIT_EXPECT_EQ(test, dma.mapped, 4);
	KUNIT_EXPECT_EQ(test, dma.direct, 4);
	/* Half unmapped: half the mappings go. */
	KUNIT_EXPECT_EQ(test, 0, vm_munmap(addr, len / 2));
	dma = (struct ctest_dma_seen) {};
	KUNIT_EXPECT_EQ(test, 0, hmm_rs_mirror_walk_dma(mirror, addr, addr + len,
							ctest_count_dma, &dma));
	KUNIT_EXPECT_EQ(test, dma.mapped, 2);
	/* The device goes away. */
	KUNIT_EXPECT_EQ(test, 0, hmm_rs_mirror_unbind_dma(mirror));
	dma = (struct ctest_dma_seen) {};
	KUNIT_EXPECT_EQ(test, 0, hmm_rs_mirror_walk_dma(mirror, addr, addr + len,
							ctest_count_dma, &dma));
	KUNIT_EXPECT_EQ(test, dma.mapped, 0);
	KUNIT_EXPECT_EQ(test, -ENODEV, hmm_rs_mirror_fault(mirror, HMM_RS_DEVICE_READ_FAULT,
							   addr + len / 2, addr + len));
}

static struct kunit_case hmm_rs_ctest_cases[] = {
	KUNIT_CASE(ctest_fault_walk_munmap),
	KUNIT_CASE(ctest_bad_arguments),
	KUNIT_CASE(ctest_fault_batch),
	KUNIT_CASE(ctest_device_outlives_its_mirrors),
	KUNIT_CASE(ctest_devmem_bad_arguments),
	KUNIT_CASE(ctest_devmem_destroy_while_mapped),
	KUNIT_CASE(ctest_dma_mapped_mirror),
	{}
};

static struct kunit_suite hmm_rs_ctest_suite = {
	.name = "hmm_rs_c_api",
	.test_cases = hmm_rs_ctest_cases,
};

kunit_test_suite(hmm_rs_ctest_suite);

MODULE_DESCRIPTION("hmm-rs C API test: a C driver on hmm_rs.h");
MODULE_LICENSE("GPL");
