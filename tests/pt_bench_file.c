// SPDX-License-Identifier: GPL-2.0
/*
 * The page-table benchmark's debugfs file: what it says before a run, and
 * the errno it gives for input other than "run". (Running the benchmark
 * itself is 'make bench'.)
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kselftest_harness.h"

#define BENCH_FILE "/sys/kernel/debug/hmm_rs/pt_bench"

FIXTURE(bench_file)
{
	int fd;
};

FIXTURE_SETUP(bench_file)
{
	self->fd = open(BENCH_FILE, O_RDWR);
	/* 'make install' and DKMS build hmm_rs without the benchmarks. */
	if (self->fd < 0 && errno == ENOENT)
		SKIP(return, "hmm_rs built without HMM_RS_BENCH=1");
	ASSERT_LE(0, self->fd);
}

FIXTURE_TEARDOWN(bench_file)
{
	if (self->fd >= 0)
		close(self->fd);
}

TEST_F(bench_file, says_how_to_run_before_a_run)
{
	char buf[256] = {};

	ASSERT_LT(0, read(self->fd, buf, sizeof(buf) - 1));
	EXPECT_NE(NULL, strstr(buf, "write 'run'"));
}

TEST_F(bench_file, rejects_unknown_command)
{
	EXPECT_EQ(-1, write(self->fd, "walk", 4));
	EXPECT_EQ(EINVAL, errno);
}

TEST_F(bench_file, rejects_overlong_input)
{
	char buf[4096];

	memset(buf, 'r', sizeof(buf));
	EXPECT_EQ(-1, write(self->fd, buf, sizeof(buf)));
	EXPECT_EQ(EINVAL, errno);
}

TEST_F(bench_file, rejects_bad_user_pointer)
{
	/* A page that was mapped and is not any more. */
	void *bad = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ASSERT_NE(MAP_FAILED, bad);
	ASSERT_EQ(0, munmap(bad, 4096));
	EXPECT_EQ(-1, write(self->fd, bad, 3));
	EXPECT_EQ(EFAULT, errno);
}

TEST_HARNESS_MAIN
