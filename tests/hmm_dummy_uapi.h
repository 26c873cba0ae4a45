/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * hmm_dummy's own ioctl, beside those of lib/test_hmm_uapi.h: the typed
 * events the mirror of an open /dev/hmm_dmirror* received, in order.
 */
#ifndef HMM_DUMMY_UAPI_H
#define HMM_DUMMY_UAPI_H

#include <linux/const.h>
#include <linux/ioctl.h>
#include <linux/types.h>

/* Event types: the values of enum hmm_rs_event_type (hmm_rs.h). */
#define HMM_DUMMY_FORK			1
#define HMM_DUMMY_MIGRATE		2
#define HMM_DUMMY_MUNMAP		3
#define HMM_DUMMY_DEVICE_READ_FAULT	4
#define HMM_DUMMY_DEVICE_WRITE_FAULT	5
#define HMM_DUMMY_WRITE_PROTECT		6

/* Mirror entry flags kept by an event (@keep); see hmm_rs.h. */
#define HMM_DUMMY_KEEP_VALID		_BITULL(0)
#define HMM_DUMMY_KEEP_WRITE		_BITULL(1)

struct hmm_dummy_event {
	__u32 type;
	__u32 pad;
	__u64 start;
	__u64 end;
	__u64 keep;
};

/*
 * In: @ptr, an array of @max events. Out: @count events written there,
 * oldest first, and @lost, how many did not fit in the driver's log since
 * the last call. The log is emptied.
 */
struct hmm_dummy_events {
	__u64 ptr;
	__u32 max;
	__u32 count;
	__u64 lost;
};

#define HMM_DUMMY_EVENTS	_IOWR('H', 0x40, struct hmm_dummy_events)

#endif /* HMM_DUMMY_UAPI_H */
