// SPDX-License-Identifier: GPL-2.0
/*
 * The hmm_rs: tracepoints, read back from tracefs: known operations through
 * hmm_dummy (fault, mprotect, munmap, migration, snapshot, RELEASE, close)
 * must leave the events they imply, with the right mirror, type, range and
 * result, in the right order; thrash control's repeat and hold of a block
 * bounced between device and CPU too. Only this process's events are
 * recorded (set_event_pid).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include <lib/test_hmm_uapi.h>
#include "hmm_dummy_uapi.h"

#define PAGE		4096UL
#define NPAGES		16UL
#define TRACEFS		"/sys/kernel/tracing"
#define MAX_LINES	4096

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_TRUNC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, text, strlen(text));
	close(fd);
	return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* One hmm_rs: event: its name and the text of its fields. */
struct event {
	char name[32];
	char fields[224];
};

FIXTURE(trace)
{
	int fd;
	char *buf;
	struct event *ev;
	int nev;
	unsigned long long mirror;
};

/* Reads the trace buffer's hmm_rs: events, in order, into self->ev. */
static int read_events(struct _test_data_trace *self)
{
	FILE *f = fopen(TRACEFS "/trace", "r");
	char line[512];

	if (!f)
		return -1;
	self->nev = 0;
	while (fgets(line, sizeof(line), f) && self->nev < MAX_LINES) {
		char *p = strstr(line, " hmm_rs_");
		struct event *e = &self->ev[self->nev];
		char *colon;

		if (!p || line[0] == '#')
			continue;
		p++;
		colon = strchr(p, ':');
		if (!colon)
			continue;
		*colon = '\0';
		snprintf(e->name, sizeof(e->name), "%s", p);
		snprintf(e->fields, sizeof(e->fields), "%s", colon + 2);
		e->fields[strcspn(e->fields, "\n")] = '\0';
		self->nev++;
	}
	fclose(f);
	return 0;
}

/* The value of field @key in @fields ("key=value ..."), as a number. */
static int field(const struct event *e, const char *key, long long *val)
{
	char pat[40];
	const char *p;

	snprintf(pat, sizeof(pat), "%s=", key);
	for (p = e->fields; (p = strstr(p, pat)); p++)
		if (p == e->fields || p[-1] == ' ') {
			*val = strtoll(p + strlen(pat), NULL, 0);
			return 0;
		}
	return -1;
}

/* Whether field @key of @e reads exactly @text. */
static int field_is(const struct event *e, const char *key, const char *text)
{
	char pat[80];
	const char *p;
	size_t n;

	snprintf(pat, sizeof(pat), "%s=%s", key, text);
	n = strlen(pat);
	for (p = e->fields; (p = strstr(p, pat)); p++)
		if ((p == e->fields || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
			return 1;
	return 0;
}

/*
 * The first event at or after @from named @name, of mirror (or mm) @id if
 * @idkey is set, whose [start, end) covers [@a, @b) if @a != @b: its index,
 * or -1.
 */
static int find(struct _test_data_trace *self, int from, const char *name,
		const char *idkey, unsigned long long id, unsigned long a,
		unsigned long b)
{
	for (int i = from; i < self->nev; i++) {
		const struct event *e = &self->ev[i];
		long long v, s, t;

		if (strcmp(e->name, name))
			continue;
		if (idkey && (field(e, idkey, &v) || (unsigned long long)v != id))
			continue;
		if (a != b && (field(e, "start", &s) || field(e, "end", &t) ||
			       (unsigned long)s > a || (unsigned long)t < b))
			continue;
		return i;
	}
	return -1;
}

static int dmirror(int fd, unsigned long req, void *addr, void *ptr,
		   unsigned long npages)
{
	struct hmm_dmirror_cmd cmd = {
		.addr = (uintptr_t)addr,
		.ptr = (uintptr_t)ptr,
		.npages = npages,
	};

	return ioctl(fd, req, &cmd);
}

FIXTURE_SETUP(trace)
{
	char pid[32];
	struct stat st;

	if (stat(TRACEFS "/events", &st))
		mount("tracefs", TRACEFS, "tracefs", 0, NULL);
	if (stat(TRACEFS "/events/hmm_rs", &st))
		SKIP(return, "no hmm_rs events in tracefs (CONFIG_TRACEPOINTS?)");
	self->ev = calloc(MAX_LINES, sizeof(*self->ev));
	ASSERT_NE(NULL, self->ev);
	snprintf(pid, sizeof(pid), "%d", getpid());
	ASSERT_EQ(0, write_file(TRACEFS "/tracing_on", "0"));
	ASSERT_EQ(0, write_file(TRACEFS "/trace", ""));
	ASSERT_EQ(0, write_file(TRACEFS "/set_event_pid", pid));
	ASSERT_EQ(0, write_file(TRACEFS "/events/hmm_rs/enable", "1"));
	ASSERT_EQ(0, write_file(TRACEFS "/tracing_on", "1"));
	self->fd = open("/dev/hmm_dmirror0", O_RDWR);
	ASSERT_LE(0, self->fd);
	self->buf = mmap(NULL, NPAGES * PAGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->buf);
	memset(self->buf, 0x5a, NPAGES * PAGE);
}

FIXTURE_TEARDOWN(trace)
{
	write_file(TRACEFS "/events/hmm_rs/enable", "0");
	write_file(TRACEFS "/set_event_pid", "");
	if (self->fd >= 0)
		close(self->fd);
	free(self->ev);
}

/* Stops tracing and reads the events; finds our mirror's number. */
static int stop_and_read(struct _test_data_trace *self)
{
	long long v;
	int i;

	write_file(TRACEFS "/tracing_on", "0");
	if (read_events(self))
		return -1;
	i = find(self, 0, "hmm_rs_mirror_register", NULL, 0, 0, 0);
	if (i < 0 || field(&self->ev[i], "mirror", &v))
		return -1;
	self->mirror = v;
	return 0;
}

static void dump(struct _test_data_trace *self)
{
	for (int i = 0; i < self->nev; i++)
		fprintf(stderr, "#   %s: %s\n", self->ev[i].name, self->ev[i].fields);
}

TEST_F(trace, fault_mprotect_munmap)
{
	unsigned long a = (uintptr_t)self->buf, b = a + NPAGES * PAGE;
	char *copy = malloc(NPAGES * PAGE);
	int i, j;

	ASSERT_NE(NULL, copy);
	ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_READ, self->buf, copy, NPAGES));
	ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_WRITE, self->buf, copy, NPAGES));
	ASSERT_EQ(0, mprotect(self->buf, NPAGES * PAGE, PROT_READ));
	ASSERT_EQ(-1, dmirror(self->fd, HMM_DMIRROR_WRITE, self->buf, copy, NPAGES));
	ASSERT_EQ(EPERM, errno);
	ASSERT_EQ(0, munmap(self->buf, NPAGES * PAGE));
	ASSERT_EQ(0, stop_and_read(self));

	/* The read: a fault of the whole range, begun and ended well. */
	i = find(self, 0, "hmm_rs_fault_begin", "mirror", self->mirror, a, b);
	ASSERT_LE(0, i) dump(self);
	EXPECT_TRUE(field_is(&self->ev[i], "type", "device_read_fault"));
	j = find(self, i + 1, "hmm_rs_fault_end", "mirror", self->mirror, a, b);
	ASSERT_LE(0, j) dump(self);
	EXPECT_TRUE(field_is(&self->ev[j], "result", "0")) dump(self);
	/* The write: a write fault, which makes writable, dirty entries. */
	i = find(self, j + 1, "hmm_rs_fault_end", "mirror", self->mirror, a, b);
	ASSERT_LE(0, i) dump(self);
	EXPECT_TRUE(field_is(&self->ev[i], "type", "device_write_fault"));
	EXPECT_TRUE(field_is(&self->ev[i], "result", "0")) dump(self);

	/*
	 * mprotect: write protection seen by the core, applied by the mirror:
	 * 16 entries lose write access and their 16 pages are dirtied.
	 */
	i = find(self, i + 1, "hmm_rs_invalidate", NULL, 0, a, b);
	ASSERT_LE(0, i) dump(self);
	EXPECT_TRUE(field_is(&self->ev[i], "type", "write_protect")) dump(self);
	EXPECT_TRUE(field_is(&self->ev[i], "code", "protection_vma")) dump(self);
	i = find(self, i + 1, "hmm_rs_mirror_update", "mirror", self->mirror, a, b);
	ASSERT_LE(0, i) dump(self);
	EXPECT_TRUE(field_is(&self->ev[i], "type", "write_protect"));
	EXPECT_TRUE(field_is(&self->ev[i], "entries", "16")) dump(self);
	EXPECT_TRUE(field_is(&self->ev[i], "dirtied", "16")) dump(self);
	EXPECT_TRUE(field_is(&self->ev[i], "applied", "1"));

	/* The write after it fails with EPERM. */
	i = find(self, i + 1, "hmm_rs_fault_end", "mirror", self->mirror, a, b);
	ASSERT_LE(0, i) dump(self);
	EXPECT_TRUE(field_is(&self->ev[i], "type", "device_write_fault"));
	EXPECT_TRUE(field_is(&self->ev[i], "result", "-1")) dump(self);

	/* munmap: the 16 read-only entries go, keeping nothing. */
	i = find(self, i + 1, "hmm_rs_invalidate", NULL, 0, a, b);
	ASSERT_LE(0, i) dump(self);
	EXPECT_TRUE(field_is(&self->ev[i], "type", "munmap")) dump(self);
	i = find(self, i + 1, "hmm_rs_mirror_update", "mirror", self->mirror, a, b);
	ASSERT_LE(0, i) dump(self);
	EXPECT_TRUE(field_is(&self->ev[i], "type", "munmap"));
	EXPECT_TRUE(field_is(&self->ev[i], "entries", "16")) dump(self);
	free(copy);
}

TEST_F(trace, migration_snapshot_release_close)
{
	unsigned long a = (uintptr_t)self->buf, b = a + NPAGES * PAGE;
	unsigned char snap[NPAGES];
	char *copy = malloc(NPAGES * PAGE);
	int i;

	/* MIGRATE_TO_DEV also reads the pages back into @copy, as test_hmm. */
	ASSERT_NE(NULL, copy);
	ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, self->buf, copy, NPAGES));
	ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_SNAPSHOT, self->buf, snap, NPAGES));
	ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_MIGRATE_TO_SYS, self->buf, NULL, NPAGES));
	ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, self->buf, copy, NPAGES));
	free(copy);
	ASSERT_EQ(0, dmirror(self->fd, HMM_DMIRROR_RELEASE, self->buf, NULL, NPAGES));
	ASSERT_EQ(0, close(self->fd));
	self->fd = -1;
	ASSERT_EQ(0, stop_and_read(self));

	i = find(self, 0, "hmm_rs_migrate", "mirror", self->mirror, a, b);
	ASSERT_LE(0, i) dump(self);
	EXPECT_TRUE(field_is(&self->ev[i], "to", "device"));
	EXPECT_TRUE(field_is(&self->ev[i], "moved", "16")) dump(self);
	EXPECT_TRUE(field_is(&self->ev[i], "result", "16"));
	i = find(self, i + 1, "hmm_rs_snapshot", "mirror", self->mirror, a, b);
	ASSERT_LE(0, i) dump(self);
	EXPECT_TRUE(field_is(&self->ev[i], "result", "0"));
	i = find(self, i + 1, "hmm_rs_migrate", "mirror", self->mirror, a, b);
	ASSERT_LE(0, i) dump(self);
	EXPECT_TRUE(field_is(&self->ev[i], "to", "system"));
	EXPECT_TRUE(field_is(&self->ev[i], "moved", "16")) dump(self);
	/* Back on the device, then RELEASE empties the device's memory. */
	i = find(self, i + 1, "hmm_rs_migrate", "mirror", self->mirror, a, b);
	ASSERT_LE(0, i) dump(self);
	i = find(self, i + 1, "hmm_rs_devmem_evict", NULL, 0, 0, 0);
	ASSERT_LE(0, i) dump(self);
	EXPECT_TRUE(field_is(&self->ev[i], "in_use", "16")) dump(self);
	EXPECT_TRUE(field_is(&self->ev[i], "moved", "16")) dump(self);
	/* close() unregisters the mirror. */
	i = find(self, i + 1, "hmm_rs_mirror_register", "mirror", self->mirror, 0, 0);
	ASSERT_LE(0, i) dump(self);
	EXPECT_TRUE(field_is(&self->ev[i], "mm", "0"));
}

/*
 * A 2 MiB block moved to the device, pulled back by the CPU, moved again
 * (a repeat: held for the first backoff), pulled back, and asked again:
 * held back. hmm_rs_thrash says both, for this mirror and block.
 */
TEST_F(trace, thrash_repeat_then_held)
{
	const unsigned long huge = 2UL << 20, pages = huge / PAGE;
	struct hmm_dummy_thrash on = { .window_us = 10000000, .backoff_us = 1000000 };
	struct hmm_dummy_thrash off = { 0 };
	char *raw, *block, *copy;
	long long addr, hold;
	int i, k, err = 0;

	raw = mmap(NULL, 2 * huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, raw);
	block = (char *)(((uintptr_t)raw + huge - 1) & ~(huge - 1));
	copy = malloc(huge);
	ASSERT_NE(NULL, copy);
	ASSERT_EQ(0, ioctl(self->fd, HMM_DUMMY_SET_THRASH, &on));
	for (k = 0; k < 3 && !err; k++) {
		memset(block, k + 1, huge);	/* pulls the block back (after the first) */
		err = dmirror(self->fd, HMM_DMIRROR_MIGRATE_TO_DEV, block, copy, pages);
	}
	ASSERT_EQ(0, ioctl(self->fd, HMM_DUMMY_SET_THRASH, &off));
	ASSERT_EQ(0, err);
	/* Held or not, the device read the CPU's last bytes. */
	for (i = 0; i < (int)huge; i += PAGE)
		ASSERT_EQ(3, copy[i]);
	free(copy);
	ASSERT_EQ(0, stop_and_read(self));

	i = find(self, 0, "hmm_rs_thrash", "mirror", self->mirror, 0, 0);
	ASSERT_LE(0, i) dump(self);
	EXPECT_TRUE(field_is(&self->ev[i], "action", "repeat")) dump(self);
	ASSERT_EQ(0, field(&self->ev[i], "addr", &addr));
	EXPECT_EQ((uintptr_t)block, (unsigned long long)addr);
	ASSERT_EQ(0, field(&self->ev[i], "hold_ns", &hold));
	EXPECT_EQ(1000000000LL, hold);
	i = find(self, i + 1, "hmm_rs_thrash", "mirror", self->mirror, 0, 0);
	ASSERT_LE(0, i) dump(self);
	EXPECT_TRUE(field_is(&self->ev[i], "action", "held")) dump(self);
	ASSERT_EQ(0, field(&self->ev[i], "addr", &addr));
	EXPECT_EQ((uintptr_t)block, (unsigned long long)addr);
	munmap(raw, 2 * huge);
}

TEST_HARNESS_MAIN
