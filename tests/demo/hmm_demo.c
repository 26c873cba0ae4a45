// SPDX-License-Identifier: GPL-2.0
/*
 * The hmm-rs demo: mirror a buffer through the dummy device, then fork,
 * mprotect and munmap it, printing the typed events the mirror receives.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lib/test_hmm_uapi.h>
#include "../hmm_dummy_uapi.h"

#define PAGE	4096UL
#define NPAGES	8UL

static const char *const names[] = {
	[HMM_DUMMY_FORK] = "Fork",
	[HMM_DUMMY_MIGRATE] = "Migrate",
	[HMM_DUMMY_MUNMAP] = "Munmap",
	[HMM_DUMMY_DEVICE_READ_FAULT] = "DeviceReadFault",
	[HMM_DUMMY_DEVICE_WRITE_FAULT] = "DeviceWriteFault",
	[HMM_DUMMY_WRITE_PROTECT] = "WriteProtect",
};

static int fd;
static char *buf;

/* The core's counters for this mirror and its mm. */
static void show_stats(void)
{
	char text[4096];
	int stats = open("/sys/kernel/debug/hmm_rs/stats", O_RDONLY);
	ssize_t n = stats < 0 ? -1 : read(stats, text, sizeof(text) - 1);

	if (n < 0) {
		perror("hmm_rs/stats");
	} else {
		text[n] = 0;
		printf("/sys/kernel/debug/hmm_rs/stats:\n%s", text);
	}
	if (stats >= 0)
		close(stats);
}

static void events(const char *after)
{
	struct hmm_dummy_event ev[32];
	struct hmm_dummy_events req = { .ptr = (uintptr_t)ev, .max = 32 };
	unsigned int i;

	if (ioctl(fd, HMM_DUMMY_EVENTS, &req)) {
		perror("HMM_DUMMY_EVENTS");
		return;
	}
	printf("after %s: %u event(s)\n", after, req.count);
	for (i = 0; i < req.count; i++) {
		const char *name = ev[i].type < 7 && names[ev[i].type] ? names[ev[i].type] : "?";
		int ours = ev[i].start <= (uintptr_t)buf && (uintptr_t)buf < ev[i].end;

		printf("  %-16s [%#llx, %#llx) %s%s\n", name,
		       (unsigned long long)ev[i].start, (unsigned long long)ev[i].end,
		       !(ev[i].keep & HMM_DUMMY_KEEP_VALID) ? "removes the entries" :
		       !(ev[i].keep & HMM_DUMMY_KEEP_WRITE) ? "removes write access" :
		       "keeps the entries", ours ? "  <- the mirrored buffer" : "");
	}
}

static int access_buffer(unsigned long req, void *data)
{
	struct hmm_dmirror_cmd cmd = {
		.addr = (uintptr_t)buf, .ptr = (uintptr_t)data, .npages = NPAGES,
	};

	if (ioctl(fd, req, &cmd)) {
		perror("HMM_DMIRROR_READ/WRITE");
		return -1;
	}
	printf("the device %s %llu pages of %p (%llu fault(s))\n",
	       req == HMM_DMIRROR_READ ? "read" : "wrote",
	       (unsigned long long)cmd.cpages, buf, (unsigned long long)cmd.faults);
	return 0;
}

int main(void)
{
	static char data[NPAGES * PAGE];
	pid_t pid;

	fd = open("/dev/hmm_dmirror0", O_RDWR);
	buf = mmap(NULL, NPAGES * PAGE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (fd < 0 || buf == MAP_FAILED) {
		perror("open /dev/hmm_dmirror0 or mmap");
		return 1;
	}
	snprintf(buf, PAGE, "written by the CPU");
	printf("mirroring %lu pages at %p through /dev/hmm_dmirror0\n", NPAGES, buf);
	if (access_buffer(HMM_DMIRROR_READ, data))
		return 1;
	printf("the device read: \"%s\"\n", data);
	snprintf(data, PAGE, "written by the device");
	if (access_buffer(HMM_DMIRROR_WRITE, data))
		return 1;
	printf("the CPU reads: \"%s\"\n", buf);
	events("the device accesses");

	pid = fork();
	if (pid == 0)
		_exit(0);
	waitpid(pid, NULL, 0);
	events("fork()");

	access_buffer(HMM_DMIRROR_READ, data);
	events("refaulting");
	mprotect(buf, NPAGES * PAGE, PROT_READ);
	events("mprotect(PROT_READ)");

	access_buffer(HMM_DMIRROR_READ, data);
	events("refaulting");
	show_stats();
	munmap(buf, NPAGES * PAGE);
	events("munmap()");
	close(fd);
	return 0;
}
