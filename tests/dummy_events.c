// SPDX-License-Identifier: GPL-2.0
/*
 * hmm_dummy from user space: the device reads and writes a process's memory
 * through its mirror, and the events the mirror receives are the ones the
 * CPU operations should raise: munmap -> MUNMAP, fork -> FORK,
 * mprotect(PROT_READ) -> WRITE_PROTECT. Bad ioctls give errnos.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include <lib/test_hmm_uapi.h>
#include "hmm_dummy_uapi.h"

#define PAGE		4096UL
#define NPAGES		4UL
#define MAX_EVENTS	64

FIXTURE(dummy)
{
	int fd;
	char *buf;
	struct hmm_dummy_event ev[MAX_EVENTS];
	unsigned int nev;
};

FIXTURE_SETUP(dummy)
{
	self->fd = open("/dev/hmm_dmirror0", O_RDWR);
	ASSERT_LE(0, self->fd);
	self->buf = mmap(NULL, NPAGES * PAGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->buf);
	memset(self->buf, 0x5a, NPAGES * PAGE);
}

FIXTURE_TEARDOWN(dummy)
{
	close(self->fd);
}

/* The device accesses @npages at @addr (copying from/to @ptr). */
static int dmirror(int fd, unsigned long req, void *addr, void *ptr,
		   unsigned long npages, struct hmm_dmirror_cmd *out)
{
	struct hmm_dmirror_cmd cmd = {
		.addr = (uintptr_t)addr,
		.ptr = (uintptr_t)ptr,
		.npages = npages,
	};
	int ret = ioctl(fd, req, &cmd);

	if (out)
		*out = cmd;
	return ret;
}

/* Drains the event log into self->ev. */
static int drain(int fd, struct hmm_dummy_event *ev, unsigned int *nev)
{
	struct hmm_dummy_events req = { .ptr = (uintptr_t)ev, .max = MAX_EVENTS };

	if (ioctl(fd, HMM_DUMMY_EVENTS, &req))
		return -1;
	*nev = req.count;
	return 0;
}

/* Whether an event of @type covering @addr, keeping exactly @keep_bits of VALID|WRITE, was seen. */
static int seen(struct hmm_dummy_event *ev, unsigned int nev, unsigned int type,
		void *addr, unsigned long long keep_bits)
{
	unsigned long a = (uintptr_t)addr;
	unsigned int i;

	for (i = 0; i < nev; i++)
		if (ev[i].type == type && ev[i].start <= a && a < ev[i].end &&
		    (ev[i].keep & (HMM_DUMMY_KEEP_VALID | HMM_DUMMY_KEEP_WRITE)) == keep_bits)
			return 1;
	return 0;
}

TEST_F(dummy, device_reads_what_the_cpu_wrote)
{
	char out[NPAGES * PAGE];
	struct hmm_dmirror_cmd cmd;

	self->buf[5] = 1;
	self->buf[3 * PAGE + 7] = 2;
	ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_READ, self->buf, out, NPAGES, &cmd));
	EXPECT_EQ(NPAGES, cmd.cpages);
	EXPECT_EQ(1, cmd.faults);
	EXPECT_EQ(0, memcmp(out, self->buf, sizeof(out)));
}

TEST_F(dummy, cpu_reads_what_the_device_wrote)
{
	char in[NPAGES * PAGE];
	struct hmm_dmirror_cmd cmd;

	memset(in, 0xc3, sizeof(in));
	ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_WRITE, self->buf, in, NPAGES, &cmd));
	EXPECT_EQ(NPAGES, cmd.cpages);
	EXPECT_EQ(0, memcmp(in, self->buf, sizeof(in)));
}

TEST_F(dummy, munmap_is_munmap)
{
	char out[NPAGES * PAGE];

	ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_READ, self->buf, out, NPAGES, NULL));
	ASSERT_EQ(0, drain(self->fd, self->ev, &self->nev));
	ASSERT_EQ(0, munmap(self->buf, NPAGES * PAGE));
	ASSERT_EQ(0, drain(self->fd, self->ev, &self->nev));
	EXPECT_TRUE(seen(self->ev, self->nev, HMM_DUMMY_MUNMAP, self->buf, 0));
}

TEST_F(dummy, fork_is_fork)
{
	char out[NPAGES * PAGE];
	int status;
	pid_t pid;

	ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_READ, self->buf, out, NPAGES, NULL));
	ASSERT_EQ(0, drain(self->fd, self->ev, &self->nev));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0)
		_exit(0);
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_EQ(0, drain(self->fd, self->ev, &self->nev));
	/* Write access goes, the entries stay. */
	EXPECT_TRUE(seen(self->ev, self->nev, HMM_DUMMY_FORK, self->buf,
			 HMM_DUMMY_KEEP_VALID));
	EXPECT_FALSE(seen(self->ev, self->nev, HMM_DUMMY_WRITE_PROTECT, self->buf,
			  HMM_DUMMY_KEEP_VALID));
}

TEST_F(dummy, mprotect_read_only_is_write_protect)
{
	char out[NPAGES * PAGE];

	ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_READ, self->buf, out, NPAGES, NULL));
	ASSERT_EQ(0, drain(self->fd, self->ev, &self->nev));
	ASSERT_EQ(0, mprotect(self->buf, NPAGES * PAGE, PROT_READ));
	ASSERT_EQ(0, drain(self->fd, self->ev, &self->nev));
	/* Read access stays, write access goes. */
	EXPECT_TRUE(seen(self->ev, self->nev, HMM_DUMMY_WRITE_PROTECT, self->buf,
			 HMM_DUMMY_KEEP_VALID));
	EXPECT_FALSE(seen(self->ev, self->nev, HMM_DUMMY_FORK, self->buf, HMM_DUMMY_KEEP_VALID));
}

TEST_F(dummy, mprotect_none_removes_the_entries)
{
	char out[NPAGES * PAGE];

	ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_READ, self->buf, out, NPAGES, NULL));
	ASSERT_EQ(0, drain(self->fd, self->ev, &self->nev));
	ASSERT_EQ(0, mprotect(self->buf, NPAGES * PAGE, PROT_NONE));
	ASSERT_EQ(0, drain(self->fd, self->ev, &self->nev));
	EXPECT_TRUE(seen(self->ev, self->nev, HMM_DUMMY_WRITE_PROTECT, self->buf, 0));
	/* The device can no longer read it either. */
	EXPECT_EQ(-1, dmirror(self->fd, HMM_DMIRROR_READ, self->buf, out, NPAGES, NULL));
	EXPECT_EQ(EFAULT, errno);
}

/*
 * Migration, seen by a second device: its mirror loses the pages when they
 * move to the first device's memory (Migrate), and the first device's
 * mirror loses them when the CPU touches them and they come back.
 */
TEST_F(dummy, migration_is_migrate)
{
	char out[NPAGES * PAGE], want[NPAGES * PAGE];
	struct hmm_dmirror_cmd cmd;
	int fd1 = open("/dev/hmm_dmirror1", O_RDWR);

	/* What the fixture wrote; reading the buffer would bring it back. */
	memset(want, 0x5a, sizeof(want));
	ASSERT_LE(0, fd1);
	ASSERT_EQ(0, dmirror(fd1, HMM_DMIRROR_READ, self->buf, out, NPAGES, NULL));
	ASSERT_EQ(0, drain(fd1, self->ev, &self->nev));
	ASSERT_EQ(0, drain(self->fd, self->ev, &self->nev));

	ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, self->buf, out, NPAGES, &cmd));
	EXPECT_EQ(NPAGES, cmd.cpages);
	EXPECT_EQ(0, memcmp(out, want, sizeof(out)));
	ASSERT_EQ(0, drain(fd1, self->ev, &self->nev));
	EXPECT_TRUE(seen(self->ev, self->nev, HMM_DUMMY_MIGRATE, self->buf, 0));
	/* The migrating mirror maps the device pages itself. */
	ASSERT_EQ(0, drain(self->fd, self->ev, &self->nev));
	EXPECT_FALSE(seen(self->ev, self->nev, HMM_DUMMY_MIGRATE, self->buf, 0));

	/* The CPU reads a page: it comes back to system memory. */
	EXPECT_EQ(0x5a, self->buf[PAGE + 1]);
	ASSERT_EQ(0, drain(self->fd, self->ev, &self->nev));
	EXPECT_TRUE(seen(self->ev, self->nev, HMM_DUMMY_MIGRATE, self->buf + PAGE, 0));
	close(fd1);
}

TEST_F(dummy, exclusive_access_ends_when_the_cpu_writes)
{
	char out[NPAGES * PAGE];
	struct hmm_dmirror_cmd cmd;

	self->buf[0] = 42;
	ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_EXCLUSIVE, self->buf, out, NPAGES, &cmd));
	EXPECT_EQ(NPAGES, cmd.cpages);
	EXPECT_EQ(42, out[0]);
	EXPECT_EQ(-1, dmirror(self->fd, HMM_DMIRROR_CHECK_EXCLUSIVE, self->buf, NULL, NPAGES,
			      NULL));
	EXPECT_EQ(EPERM, errno);
	/* The CPU takes every page back by touching it. */
	memset(self->buf, 1, NPAGES * PAGE);
	EXPECT_EQ(0, dmirror(self->fd, HMM_DMIRROR_CHECK_EXCLUSIVE, self->buf, NULL, NPAGES,
			     NULL));
	ASSERT_EQ(0, drain(self->fd, self->ev, &self->nev));
	EXPECT_TRUE(seen(self->ev, self->nev, HMM_DUMMY_MIGRATE, self->buf, 0));
}

/*
 * A device write into a shared file mapping reaches the file. (The VM has
 * only tmpfs, whose page cache holds the data whether or not the page is
 * marked dirty: this shows the path, not the dirty bit; KUnit checks that.)
 */
TEST_F(dummy, device_write_to_a_shared_file_reaches_the_file)
{
	char path[] = "/tmp/hmm_dummy_file.XXXXXX";
	char in[NPAGES * PAGE], back[NPAGES * PAGE];
	int file = mkstemp(path);
	char *map;

	ASSERT_LE(0, file);
	ASSERT_EQ(0, ftruncate(file, sizeof(in)));
	map = mmap(NULL, sizeof(in), PROT_READ | PROT_WRITE, MAP_SHARED, file, 0);
	ASSERT_NE(MAP_FAILED, map);
	memset(in, 0x7e, sizeof(in));
	ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_WRITE, map, in, NPAGES, NULL));
	ASSERT_EQ(0, munmap(map, sizeof(in)));
	ASSERT_EQ(0, close(file));
	file = open(path, O_RDONLY);
	ASSERT_LE(0, file);
	EXPECT_EQ(sizeof(back), read(file, back, sizeof(back)));
	EXPECT_EQ(0, memcmp(in, back, sizeof(in)));
	close(file);
	unlink(path);
}

TEST_F(dummy, bad_arguments_give_errnos)
{
	char out[PAGE];
	void *gone = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct hmm_dummy_events req = { .max = MAX_EVENTS };

	ASSERT_NE(MAP_FAILED, gone);
	ASSERT_EQ(0, munmap(gone, PAGE));
	EXPECT_EQ(-1, ioctl(self->fd, _IO('H', 0x7f), 0));
	EXPECT_EQ(ENOTTY, errno);
	EXPECT_EQ(-1, dmirror(self->fd, HMM_DMIRROR_READ, self->buf + 1, out, 1, NULL));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, dmirror(self->fd, HMM_DMIRROR_READ, self->buf, out, 0, NULL));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, dmirror(self->fd, HMM_DMIRROR_READ, self->buf, out, ~0UL >> 1, NULL));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, dmirror(self->fd, HMM_DMIRROR_READ, (void *)-4096L, out, 2, NULL));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, dmirror(self->fd, HMM_DMIRROR_READ, gone, out, 1, NULL));
	EXPECT_EQ(EFAULT, errno);
	EXPECT_EQ(-1, dmirror(self->fd, HMM_DMIRROR_READ, self->buf, gone, 1, NULL));
	EXPECT_EQ(EFAULT, errno);
	EXPECT_EQ(-1, ioctl(self->fd, HMM_DMIRROR_READ, gone));
	EXPECT_EQ(EFAULT, errno);
	/* Migration: bad ranges, memory with no VMA or one the CPU cannot read. */
	EXPECT_EQ(-1, dmirror(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, self->buf + 1, out, 1, NULL));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, dmirror(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, self->buf, out, 0, NULL));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, dmirror(self->fd, HMM_DMIRROR_MIGRATE_TO_SYS, (void *)-4096L, out, 2, NULL));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, dmirror(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, gone, out, 1, NULL));
	EXPECT_EQ(EINVAL, errno);
	ASSERT_EQ(0, mprotect(self->buf, PAGE, PROT_NONE));
	EXPECT_EQ(-1, dmirror(self->fd, HMM_DMIRROR_MIGRATE_TO_SYS, self->buf, out, 1, NULL));
	EXPECT_EQ(EINVAL, errno);
	ASSERT_EQ(0, mprotect(self->buf, PAGE, PROT_READ | PROT_WRITE));
	req.ptr = (uintptr_t)gone;
	ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_READ, self->buf, out, 1, NULL));
	EXPECT_EQ(-1, ioctl(self->fd, HMM_DUMMY_EVENTS, &req));
	EXPECT_EQ(EFAULT, errno);
}

/* A process that exits with a live mirror and an open device. */
TEST(exit_with_a_live_mirror)
{
	int status;
	pid_t pid = fork();

	ASSERT_LE(0, pid);
	if (pid == 0) {
		char *buf = mmap(NULL, PAGE, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		int fd = open("/dev/hmm_dmirror1", O_RDWR);
		char out[PAGE];

		if (fd < 0 || buf == MAP_FAILED)
			_exit(1);
		buf[0] = 1;
		_exit(dmirror(fd, HMM_DMIRROR_WRITE, buf, out, 1, NULL) ? 2 : 0);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFEXITED(status));
	EXPECT_EQ(0, WEXITSTATUS(status));
}

/*
 * The device outlives the process it mirrors: a child mirrors its own mm,
 * its parent takes the device file from it (pidfd_getfd) and the child
 * exits. The mirror is released with the mm; the device's accesses then
 * fail with ESRCH, and closing it is clean.
 */
TEST(device_outlives_the_mirrored_process)
{
	struct { int fd; unsigned long addr; } child;
	int ready[2], done[2], pidfd, fd, status;
	char out[PAGE], go = 0;
	pid_t pid;

	ASSERT_EQ(0, pipe(ready));
	ASSERT_EQ(0, pipe(done));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		char *buf = mmap(NULL, PAGE, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		child.fd = open("/dev/hmm_dmirror0", O_RDWR);
		child.addr = (uintptr_t)buf;
		if (child.fd < 0 || buf == MAP_FAILED)
			_exit(1);
		buf[0] = 1;
		if (dmirror(child.fd, HMM_DMIRROR_READ, buf, out, 1, NULL))
			_exit(2);
		if (write(ready[1], &child, sizeof(child)) != sizeof(child))
			_exit(3);
		/* Exit once the parent holds the device. */
		_exit(read(done[0], &go, 1) == 1 ? 0 : 4);
	}
	ASSERT_EQ(sizeof(child), read(ready[0], &child, sizeof(child)));
	pidfd = syscall(SYS_pidfd_open, pid, 0);
	ASSERT_LE(0, pidfd);
	fd = syscall(SYS_pidfd_getfd, pidfd, child.fd, 0);
	ASSERT_LE(0, fd);
	ASSERT_EQ(1, write(done[1], &go, 1));
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(0, WEXITSTATUS(status));
	/* The child's mm is gone: nothing left to mirror. */
	EXPECT_EQ(-1, dmirror(fd, HMM_DMIRROR_READ, (void *)child.addr, out, 1, NULL));
	EXPECT_EQ(ESRCH, errno);
	EXPECT_EQ(-1, dmirror(fd, HMM_DMIRROR_SNAPSHOT, (void *)child.addr, out, 1, NULL));
	EXPECT_EQ(ESRCH, errno);
	EXPECT_EQ(0, close(fd));
	close(pidfd);
}

TEST_HARNESS_MAIN
