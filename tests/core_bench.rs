// SPDX-License-Identifier: GPL-2.0

//! The core's floor: a device fault and a snapshot through [`HmmMirror`]
//! against the bare `hmm_range_fault()` walks they are built on, over the
//! same memory, in the same call.
//!
//! A process maps and fills memory, then writes `ADDR LEN` (decimal or
//! `0x` hex) to `hmm_rs/core_bench`; the benchmark runs in that process, on
//! its mm, and reading the file gives the report. Each figure is the best
//! of three, in ns per page:
//! - fault: [`HmmMirror::fault`] of the whole range into a new mirror
//!   (`hmm_range_fault` in 2 MiB chunks, then the table) against the same
//!   `hmm_range_fault` calls keeping nothing ([`HmmMirror::bare_walk`]);
//! - snapshot: [`HmmMirror::snapshot`] against the same walk without
//!   faulting.
//!
//! The memory is already mapped by the CPU, so neither side faults CPU
//! pages in: the difference is what the core adds.

use core::fmt::Write;
use kernel::{
    current,
    prelude::*,
    sync::Arc,
    time::{Instant, Monotonic},
};

use crate::{
    debugfs::TextBuf,
    hmm_event::{HmmEvent, HmmEventType},
    hmm_mirror::{devmem::Owner, HmmMirror, MirrorOps, Update},
    hmm_pt::PAGE_SIZE,
    pt_bench::{PerPage, Ratio},
};

const ROUNDS: usize = 3;

/// A device with nothing to stop.
struct Idle;

impl MirrorOps for Idle {
    fn update(&self, _mirror: &HmmMirror, _event: &HmmEvent, _blockable: bool) -> Result<Update> {
        Ok(Update::Done)
    }

    fn release(&self, _mirror: &HmmMirror) {}
}

fn mirror() -> Result<Arc<HmmMirror>> {
    let task = current!();
    let mm = task.mm().ok_or(EINVAL)?;
    HmmMirror::register(mm, Owner::NONE, KBox::new(Idle, GFP_KERNEL)?)
}

/// Runs `f` and lowers `best` to the nanoseconds it took.
fn time(best: &mut i64, f: impl FnOnce() -> Result) -> Result {
    let t = Instant::<Monotonic>::now();
    f()?;
    *best = (*best).min(t.elapsed().as_nanos());
    Ok(())
}

/// Runs the benchmark over `[start, start + len)` of the calling process.
pub(crate) fn core_bench(start: u64, len: u64) -> Result<TextBuf> {
    let end = start.checked_add(len).ok_or(EINVAL)?;
    let pages = (len / PAGE_SIZE) as usize;
    if pages == 0 {
        return Err(EINVAL);
    }
    let mut snap = KVec::with_capacity(pages, GFP_KERNEL)?;
    snap.resize(pages, 0u32, GFP_KERNEL)?;
    // Best times: core fault, bare fault walk, core snapshot, bare walk.
    let mut best = [i64::MAX; 4];
    for _ in 0..ROUNDS {
        let floor = mirror()?;
        time(&mut best[1], || floor.bare_walk(start, end, true))?;
        let m = mirror()?;
        time(&mut best[0], || {
            m.fault(HmmEventType::DeviceReadFault, start, end)
        })?;
        time(&mut best[2], || m.snapshot(start, end, &mut snap))?;
        time(&mut best[3], || floor.bare_walk(start, end, false))?;
    }
    let mut out = TextBuf(KVec::new());
    let n = pages as i64;
    writeln!(
        out,
        "| {} MiB | core ns/page | bare hmm_range_fault ns/page | core/bare |",
        len >> 20
    )?;
    writeln!(out, "| --- | ---: | ---: | ---: |")?;
    for (name, core, bare) in [("fault", best[0], best[1]), ("snapshot", best[2], best[3])] {
        writeln!(
            out,
            "| {name} | {} | {} | {} |",
            PerPage(core, n),
            PerPage(bare, n),
            Ratio(core, bare)
        )?;
    }
    Ok(out)
}
