// SPDX-License-Identifier: GPL-2.0
/*
 * A C user of hmm-rs: built against hmm_rs.h and the exported symbols only,
 * as a GPU driver would be. Its KUnit suite runs when it is loaded.
 */
#include <kunit/test.h>
#include <linux/err.h>
#include <linux/mm.h>
#include <linux/mman.h>
#include <linux/module.h>
#include <linux/sched.h>

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

static struct kunit_case hmm_rs_ctest_cases[] = {
	KUNIT_CASE(ctest_fault_walk_munmap),
	KUNIT_CASE(ctest_bad_arguments),
	KUNIT_CASE(ctest_device_outlives_its_mirrors),
	{}
};

static struct kunit_suite hmm_rs_ctest_suite = {
	.name = "hmm_rs_c_api",
	.test_cases = hmm_rs_ctest_cases,
};

kunit_test_suite(hmm_rs_ctest_suite);

MODULE_DESCRIPTION("hmm-rs C API test: a C driver on hmm_rs.h");
MODULE_LICENSE("GPL");
