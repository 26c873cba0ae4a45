// SPDX-License-Identifier: GPL-2.0

//! Batched device faults: what a driver copies out of its device's fault
//! buffer (scattered addresses, many on the same 2 MiB, duplicates, reads
//! and writes mixed) faulted in with one walk, one sequence check and one
//! commit per 2 MiB window instead of one of each per request.
//!
//! [`HmmMirror::fault_batch`]:
//!
//! 1. **Check** each request on its own: a range that [`HmmMirror::fault`]
//!    would refuse (unaligned, empty, wrapping, beyond user space) gets
//!    `EINVAL` and takes no part in the rest.
//! 2. **Sort** the indices of the others by address (a `KVec` of `u32`, the
//!    caller's array is not touched), and **merge** them into windows: a
//!    window starts at the lowest request left and takes every following
//!    request that overlaps it or starts in the 2 MiB block of its last
//!    page. So a window covers, in each 2 MiB block, the pages from the
//!    lowest to the highest requested there (the pages between are faulted
//!    too: one walk of the span costs less than a walk per request), and
//!    crosses into the next block only where a request does. Duplicates and
//!    overlaps fall into one window. A window faults for writing if any of
//!    its requests writes (write wins): all of its pages are then faulted
//!    writable and dirty, as [`HmmMirror::fault`] of the whole span for
//!    writing would.
//! 3. **Skip** what the mirror maps already: a window whose requested pages
//!    it maps, each with the access asked for (and, if DMA-mapped, mapped
//!    for the device), is not faulted and its requests get `Ok` (counted in
//!    `batch windows mirrored`); else only the span of the requests it
//!    does not map is faulted, for writing only if one of those writes. A
//!    fault buffer repeats faults the previous batch, or another thread's,
//!    serviced, and a lookup costs far less than a walk. A
//!    window whose first block another thread's batch is faulting now
//!    waits for that fault (killably) and looks again ([`InFlight`]), so
//!    threads that take the same faults fault each window once.
//! 4. **Fault** each other window once, in address order, through the same
//!    machinery as a fault: one [`FaultWatch`] over the window's 2 MiB
//!    blocks, and per 2 MiB chunk one `hmm_range_fault()`, one sequence
//!    check and one commit (retried if an invalidation raced). A chunk whose
//!    first page the CPU maps with a 2 MiB page grows to the whole block,
//!    which then gets one huge entry, as a fault of the block would.
//! 5. **Report** per request: every request of a window that succeeded
//!    gets `Ok`. A window that failed may have failed for one request only
//!    (an unmapped page, a read-only page among writes, a hole between two
//!    requests): unless its requests are all the same range and access (so
//!    the window's error is each one's), each of them is then faulted
//!    alone, with [`HmmMirror::fault`], and gets its own result (reads
//!    first, then writes: a read fault after a write fault of the same page
//!    would leave it read-only, and write wins here too). So one bad
//!    request does not fail the others, and every result is what a fault of
//!    that request alone would have returned at about that time. `ESRCH`
//!    (the mm is exiting) and `ENODEV` (DMA unbound) fail a window's
//!    requests without that. A fatal signal between windows (or a fault
//!    ending with `EINTR`) gives `EINTR` to every request not done yet.
//!
//! Requests are done in address order, not the caller's; a request whose
//! result is `Ok` was committed, but may have been invalidated again by the
//! time the batch returns (as after any fault). Memory: one index per
//! request and one fault's buffers (one 2 MiB chunk's), whatever the
//! batch; at most [`FAULT_BATCH_MAX`] requests.

use kernel::{
    new_condvar, new_mutex,
    prelude::*,
    sync::{atomic::Relaxed, CondVar, Mutex},
};

use super::{
    fault::{FaultBufs, FaultWatch, FAULT_RETRIES},
    interval::{fatal_signal_pending, pfn_order},
    HmmMirror,
};
use crate::{
    hmm_event::HmmEventType,
    hmm_pt::{huge_chunks, PtFlags, HUGE_ORDER, HUGE_SIZE, PAGE_SIZE},
    stats, trace,
};

/// The most requests one batch takes (`EINVAL` beyond).
pub(crate) const FAULT_BATCH_MAX: usize = 4096;

/// What a device does to the pages of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// It reads them.
    Read,
    /// It writes them (and may read them).
    Write,
}

impl Access {
    /// The fault event of this access.
    pub(crate) fn event(self) -> HmmEventType {
        match self {
            Access::Read => HmmEventType::DeviceReadFault,
            Access::Write => HmmEventType::DeviceWriteFault,
        }
    }
}

/// One request of a batch: `npages` pages from `addr` (0 is taken as 1).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FaultRequest {
    /// The first page's address; page aligned.
    pub(crate) addr: u64,
    /// How the device accesses them.
    pub(crate) access: Access,
    /// How many pages; 0 means 1.
    pub(crate) npages: u32,
}

impl FaultRequest {
    /// `[start, end)`, if it does not wrap.
    fn range(&self) -> Option<(u64, u64)> {
        // At most 2^32 pages: the product fits.
        let len = u64::from(self.npages.max(1)) * PAGE_SIZE;
        Some((self.addr, self.addr.checked_add(len)?))
    }
}

/// What of a window is faulted: a span and the access it needs.
#[derive(Clone, Copy)]
struct Window {
    start: u64,
    end: u64,
    access: Access,
}

/// What one window's fault did, for its trace.
#[derive(Default)]
struct WindowCounts {
    retries: u32,
    huge: u32,
}

/// The blocks (2 MiB aligned) whose windows a mirror's batches are
/// faulting now, so that a batch of another thread with the same window
/// waits for that fault instead of faulting it too.
#[pin_data]
pub(super) struct InFlight {
    #[pin]
    blocks: Mutex<KVec<u64>>,
    #[pin]
    done: CondVar,
}

/// A block claimed in [`InFlight`]: released, and its waiters woken, when
/// dropped.
struct Claim<'a> {
    in_flight: &'a InFlight,
    block: Option<u64>,
    /// Whether it waited for another thread's fault of the block first.
    waited: bool,
}

impl InFlight {
    /// No block in flight.
    pub(super) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            blocks <- new_mutex!(KVec::new()),
            done <- new_condvar!(),
        })
    }

    /// Claims `block`, after waiting while another thread has it. Without
    /// memory to note the claim, or once a signal that does not kill
    /// interrupts the wait (which it would not let sleep again), goes on
    /// unclaimed: the window is then faulted as if alone.
    ///
    /// Errors: `EINTR` on a fatal signal.
    fn claim(&self, block: u64) -> Result<Claim<'_>> {
        let mut blocks = self.blocks.lock();
        let mut waited = false;
        while blocks.contains(&block) {
            waited = true;
            if self.done.wait_interruptible(&mut blocks) {
                if fatal_signal_pending() {
                    return Err(EINTR);
                }
                return Ok(Claim {
                    in_flight: self,
                    block: None,
                    waited: false,
                });
            }
        }
        let block = blocks.push(block, GFP_KERNEL).ok().map(|()| block);
        Ok(Claim {
            in_flight: self,
            block,
            waited,
        })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let Some(block) = self.block else {
            return;
        };
        self.in_flight.blocks.lock().retain(|b| *b != block);
        self.in_flight.done.notify_all();
    }
}

/// `addr` rounded down to its 2 MiB block.
const fn block_of(addr: u64) -> u64 {
    addr & !(HUGE_SIZE - 1)
}

impl HmmMirror {
    /// Faults a batch of requests into the mirror, merged into 2 MiB
    /// windows (see the [module documentation](self)), and writes each
    /// request's result into `results` (same index): `Ok`, or the errno
    /// [`Self::fault`] of that request alone would have returned. May sleep.
    ///
    /// Errors of the batch as a whole (then `results` is untouched):
    /// `EINVAL` if the slices differ in length or hold more than
    /// [`FAULT_BATCH_MAX`] requests; `ENOMEM`.
    pub(crate) fn fault_batch(&self, reqs: &[FaultRequest], results: &mut [Result]) -> Result {
        if reqs.len() != results.len() || reqs.len() > FAULT_BATCH_MAX {
            return Err(EINVAL);
        }
        // Indices of the valid requests; fits `u32` (the cap above).
        let mut order = KVec::<u32>::with_capacity(reqs.len(), GFP_KERNEL)?;
        let advised = !self.advice.is_empty();
        for (i, req) in reqs.iter().enumerate() {
            match req.range() {
                // Where the device only reads (advice), no write.
                Some((s, e))
                    if advised
                        && req.access == Access::Write
                        && !self.may_write(s, e)
                        && self.pt.check_range(s, e).is_ok() =>
                {
                    results[i] = Err(EPERM)
                }
                Some((s, e)) if self.pt.check_range(s, e).is_ok() => {
                    order.push(i as u32, GFP_KERNEL)?;
                }
                _ => results[i] = Err(EINVAL),
            }
        }
        let range = |i: u32| reqs[i as usize].range().unwrap_or((0, 0));
        order.sort_unstable_by_key(|&i| (reqs[i as usize].addr, i));
        let mut bufs = None;
        let mut k = 0;
        while k < order.len() {
            // The window: the requests from `k` on that overlap it or start
            // in the 2 MiB block of its last page.
            let (start, mut end) = range(order[k]);
            let mut access = reqs[order[k] as usize].access;
            let mut j = k + 1;
            while j < order.len() {
                let (s, e) = range(order[j]);
                if s >= end && block_of(s) != block_of(end - 1) {
                    break;
                }
                end = end.max(e);
                if reqs[order[j] as usize].access == Access::Write {
                    access = Access::Write;
                }
                j += 1;
            }
            let members = &order[k..j];
            if fatal_signal_pending() {
                set_all(&order[k..], results, EINTR);
                break;
            }
            // A window in a PREFER_DEVICE range migrates first, as a
            // single fault does (what cannot move is faulted where it is).
            if advised && self.advise_fault(false, start, end) == Err(EINTR) {
                set_all(&order[k..], results, EINTR);
                break;
            }
            let of = |&i: &u32| &reqs[i as usize];
            let r = match self.unmirrored(members.iter().map(of)) {
                None => Ok(true),
                Some(w) => self.in_flight.claim(block_of(w.start)).and_then(|claim| {
                    // Another thread faulted the block meanwhile: look again.
                    let w = if claim.waited {
                        self.unmirrored(members.iter().map(of))
                    } else {
                        Some(w)
                    };
                    match w {
                        None => Ok(true),
                        Some(w) => self
                            .fault_window(w.start, w.end, w.access, &mut bufs)
                            .map(|()| false),
                    }
                }),
            };
            if r == Ok(true) {
                stats::BATCH_WINDOWS_MIRRORED.add(1);
            }
            match r.map(|_| ()) {
                Ok(()) => members.iter().for_each(|&i| results[i as usize] = Ok(())),
                Err(EINTR) => {
                    set_all(&order[k..], results, EINTR);
                    break;
                }
                Err(e)
                    if e == ESRCH
                        || e == ENODEV
                        || members.iter().all(|&i| {
                            range(i) == (start, end) && reqs[i as usize].access == access
                        }) =>
                {
                    set_all(members, results, e);
                }
                // Which of them failed: each alone, reads first, so that
                // a page read and written ends up writable (write wins).
                Err(_) => {
                    let with = |a: Access| {
                        let of = move |i: &&u32| reqs[**i as usize].access == a;
                        members.iter().filter(of)
                    };
                    let alone = || Iterator::chain(with(Access::Read), with(Access::Write));
                    for (n, &i) in alone().enumerate() {
                        let (s, e) = range(i);
                        let r = if fatal_signal_pending() {
                            Err(EINTR)
                        } else {
                            self.fault(reqs[i as usize].access.event(), s, e)
                        };
                        if r == Err(EINTR) {
                            alone()
                                .skip(n)
                                .for_each(|&i| results[i as usize] = Err(EINTR));
                            set_all(&order[j..], results, EINTR);
                            return Ok(());
                        }
                        results[i as usize] = r;
                    }
                }
            }
            k = j;
        }
        Ok(())
    }

    /// The part of a window the mirror does not map yet: the span, start
    /// to end, of the requests in `reqs` of which some page is not mapped
    /// now with the access asked for (or, if the mirror is DMA-mapped, not
    /// mapped for the device, where it needs to be: pages in device memory
    /// and exclusive entries do not), and the access they need; `None` if
    /// every request is mapped. Looks up at most a window's pages: the
    /// requests beyond count as not mapped.
    fn unmirrored<'r>(&self, reqs: impl Iterator<Item = &'r FaultRequest>) -> Option<Window> {
        let mut budget = 1u64 << HUGE_ORDER;
        let mut w: Option<Window> = None;
        for req in reqs {
            let Some((start, end)) = req.range() else {
                continue;
            };
            if self.request_mirrored(req, start, end, &mut budget) {
                continue;
            }
            w = Some(match w {
                None => Window {
                    start,
                    end,
                    access: req.access,
                },
                Some(w) => Window {
                    start: w.start.min(start),
                    end: w.end.max(end),
                    access: if req.access == Access::Write {
                        Access::Write
                    } else {
                        w.access
                    },
                },
            });
        }
        w
    }

    /// Whether the mirror maps `[start, end)` of `req` as
    /// [`Self::unmirrored`] wants; each page looked up costs `budget` one.
    fn request_mirrored(&self, req: &FaultRequest, start: u64, end: u64, budget: &mut u64) -> bool {
        let mut addr = start;
        while addr < end {
            let Some(b) = budget.checked_sub(1) else {
                return false;
            };
            *budget = b;
            let Some(m) = self.pt.lookup(addr) else {
                return false;
            };
            let flags = m.entry.flags();
            if req.access == Access::Write && !flags.contains(PtFlags::WRITE) {
                return false;
            }
            let own = flags.contains(PtFlags::DEVICE) || flags.contains(PtFlags::EXCLUSIVE);
            if !own && self.dma.as_ref().is_some_and(|d| d.lookup(addr).is_none()) {
                return false;
            }
            addr = m.end();
        }
        true
    }

    /// Faults `[start, end)`, one window of a batch, as one fault (traced
    /// and counted as one).
    fn fault_window(
        &self,
        start: u64,
        end: u64,
        access: Access,
        bufs: &mut Option<FaultBufs>,
    ) -> Result {
        // Where the device only reads (advice) anywhere in the block, the
        // window is read (its chunk may grow to the block): its writes then
        // fault alone, and those in the read-only part fail.
        let block = start - start % HUGE_SIZE;
        let access =
            if access == Access::Write && !self.may_write(block, (block + HUGE_SIZE).max(end)) {
                Access::Read
            } else {
                access
            };
        let ty = access.event();
        trace::fault_begin(self.id, ty, start, end);
        let mut counts = WindowCounts::default();
        let r = self.fault_window_untraced(start, end, access, bufs, &mut counts);
        trace::fault_end(self.id, ty, start, end, &r, counts.retries, counts.huge);
        if r.is_ok() {
            self.hmm.count(ty);
            self.faults.add(1, Relaxed);
            stats::FAULTS.add(1);
        }
        r
    }

    /// [`Self::fault_window`] without its trace and counts.
    fn fault_window_untraced(
        &self,
        start: u64,
        end: u64,
        access: Access,
        bufs: &mut Option<FaultBufs>,
        counts: &mut WindowCounts,
    ) -> Result {
        if self.released.load(Relaxed) {
            return Err(ESRCH);
        }
        if self.dma.as_ref().is_some_and(|d| !d.is_bound()) {
            return Err(ENODEV);
        }
        let bufs = match bufs {
            Some(b) => b,
            None => bufs.insert(FaultBufs::new(self)?),
        };
        // The whole 2 MiB blocks: a chunk may grow to its block.
        let watch_end = (block_of(end - 1) + HUGE_SIZE).min(self.pt.limit());
        // SAFETY: `watch` is a local, dropped before this returns.
        let watch = unsafe { FaultWatch::new(self, block_of(start), watch_end)? };
        let write = access == Access::Write;
        for (chunk, chunk_end) in huge_chunks(start, end) {
            self.window_chunk(&watch, watch_end, chunk, chunk_end, write, bufs, counts)?;
        }
        Ok(())
    }

    /// Faults one chunk of a window (within one 2 MiB block) in and commits
    /// it, retrying while invalidations race with it; grows it to its
    /// whole block (below `limit`) if the CPU maps it with a huge page.
    #[expect(clippy::too_many_arguments)]
    fn window_chunk(
        &self,
        watch: &FaultWatch<'_>,
        limit: u64,
        mut start: u64,
        mut end: u64,
        write: bool,
        bufs: &mut FaultBufs,
        counts: &mut WindowCounts,
    ) -> Result {
        let mut raced = false;
        for _ in 0..FAULT_RETRIES {
            if raced {
                self.fault_retries.add(1, Relaxed);
                stats::FAULT_RETRIES.add(1);
                counts.retries += 1;
            }
            raced = true;
            let seq = match self.fault_in(watch, start, end, write, &mut bufs.hmm_pfns) {
                Err(EBUSY) => continue,
                r => r?,
            };
            let base = block_of(start);
            if end - start < HUGE_SIZE
                && pfn_order(bufs.hmm_pfns[0]) >= HUGE_ORDER
                && base + HUGE_SIZE <= limit
            {
                // A huge page: all of it, as one entry. Not a race.
                (start, end, raced) = (base, base + HUGE_SIZE, false);
                continue;
            }
            let none = &mut |_, _| Ok(());
            if let Some(huge) = self.commit(watch, start, end, write, seq, bufs, none)? {
                counts.huge += u32::from(huge);
                return Ok(());
            }
        }
        Err(EAGAIN)
    }
}

/// Sets the result of each request of `idx` to `e`.
fn set_all(idx: &[u32], results: &mut [Result], e: Error) {
    for &i in idx {
        results[i as usize] = Err(e);
    }
}
