// SPDX-License-Identifier: GPL-2.0

//! Benchmark of the mirror page table against `kernel::xarray::XArray`.
//!
//! `lib/test_hmm.c` mirrors with an xarray holding one tagged word per page;
//! the xarray side here does the same (a [`XaWord`] per page, no allocation
//! per entry). Both sides mirror the same pages in the same boot:
//! - a dense 1 GiB range (262144 pages),
//! - 1024 scattered 2 MiB regions, 64 MiB apart (524288 pages),
//! - the dense range again with 2 MiB huge entries, as for THP-backed memory
//!   (memory only: the xarray has no huge entries; test_hmm stores every page).
//!
//! Each operation is timed three times and the best run is reported, in ns
//! per page: populate (ours reserves and populates 2 MiB at a time, as a
//! device fault does; the xarray stores page by page), scan (ours walks the
//! range; the xarray loads page by page, as test_hmm reads), lookup (both
//! page by page; the xarray figure is the same loop as its scan), and clear.
//! The
//! xarray's memory is computed from its shape: one `xa_node` per non-empty
//! 64-slot block at each level. Timings under emulation (QEMU TCG) are
//! inflated; the ratios are what to compare.

use core::{ffi::c_void, fmt::Write};
use kernel::{
    prelude::*,
    time::{Instant, Monotonic},
    types::ForeignOwnable,
    xarray::{AllocKind, XArray},
};

use crate::{
    debugfs::TextBuf,
    hmm_pt::{HmmPt, PageDirs, PtEntry, PtFlags, PtLevels, HUGE_SIZE, PAGE_SIZE},
};

const GIB: u64 = 1 << 30;
const ROUNDS: usize = 3;
const XA_CHUNK_SHIFT: u32 = 6;

/// One mirrored page as test_hmm stores it in its xarray: a word, no box.
struct XaWord(u64);

// SAFETY: `into_foreign` returns the word shifted left by two, which is
// 4-byte aligned, never null (the entry's VALID bit is set), and not an
// xarray internal entry (low bits 00); `from_foreign` and the borrows undo
// the shift. Nothing is owned, so nothing can leak or be freed twice.
unsafe impl ForeignOwnable for XaWord {
    const FOREIGN_ALIGN: usize = 4;
    type Borrowed<'a> = u64;
    type BorrowedMut<'a> = u64;

    fn into_foreign(self) -> *mut c_void {
        (self.0 << 2) as usize as *mut c_void
    }

    unsafe fn from_foreign(ptr: *mut c_void) -> Self {
        Self(ptr as usize as u64 >> 2)
    }

    unsafe fn borrow<'a>(ptr: *mut c_void) -> Self::Borrowed<'a> {
        ptr as usize as u64 >> 2
    }

    unsafe fn borrow_mut<'a>(ptr: *mut c_void) -> Self::BorrowedMut<'a> {
        ptr as usize as u64 >> 2
    }
}

/// The start of every 2 MiB region of a workload.
struct Workload {
    name: &'static str,
    regions: KVec<u64>,
}

impl Workload {
    fn dense() -> Result<Self> {
        let mut regions = KVec::new();
        for i in 0..GIB / HUGE_SIZE {
            regions.push(GIB + i * HUGE_SIZE, GFP_KERNEL)?;
        }
        Ok(Self {
            name: "dense 1 GiB",
            regions,
        })
    }

    fn scattered() -> Result<Self> {
        let mut regions = KVec::new();
        for i in 0..1024 {
            regions.push(4 * GIB + i * (64 << 20), GFP_KERNEL)?;
        }
        Ok(Self {
            name: "1024 x 2 MiB scattered",
            regions,
        })
    }

    fn page_count(&self) -> i64 {
        self.regions.len() as i64 * (HUGE_SIZE / PAGE_SIZE) as i64
    }

    fn pages(&self) -> impl Iterator<Item = u64> + '_ {
        self.regions
            .iter()
            .flat_map(|r| (0..HUGE_SIZE / PAGE_SIZE).map(move |i| r + i * PAGE_SIZE))
    }

    /// Nodes an xarray indexed by page number needs for these pages.
    fn xa_nodes(&self) -> u64 {
        let mut nodes = 0;
        // Levels of 64 slots until one node spans every index used.
        let mut shift = XA_CHUNK_SHIFT;
        loop {
            let mut last = u64::MAX;
            let mut level = 0;
            for p in self.pages() {
                let block = (p / PAGE_SIZE) >> shift;
                if block != last {
                    level += 1;
                    last = block;
                }
            }
            nodes += level;
            if level == 1 {
                return nodes;
            }
            shift += XA_CHUNK_SHIFT;
        }
    }
}

/// The best of [`ROUNDS`] runs of `f`, in nanoseconds.
fn best(mut f: impl FnMut() -> Result) -> Result<i64> {
    let mut best = i64::MAX;
    for _ in 0..ROUNDS {
        let t = Instant::<Monotonic>::now();
        f()?;
        best = best.min(t.elapsed().as_nanos());
    }
    Ok(best)
}

fn pfn(addr: u64) -> u64 {
    addr / PAGE_SIZE + 0x10_0000
}

/// Times both structures on `w`; returns (ours, xarray) ns for populate,
/// scan, lookup and clear, and our table's bytes when populated.
fn run(w: &Workload) -> Result<([i64; 4], [i64; 4], u64)> {
    let pt = KBox::pin_init(HmmPt::new(PtLevels::Four, PageDirs), GFP_KERNEL)?;
    let mut chunk = KVec::with_capacity(512, GFP_KERNEL)?;
    let mut bytes = 0;
    let populate = best(|| {
        for &r in w.regions.iter() {
            chunk.clear();
            for i in 0..HUGE_SIZE / PAGE_SIZE {
                chunk.push(PtEntry::new(pfn(r) + i, PtFlags::WRITE)?, GFP_KERNEL)?;
            }
            let mut res = pt.reserve(r, r + HUGE_SIZE, false, GFP_KERNEL)?;
            pt.lock().populate(&mut res, r, &chunk, |_| {})?;
        }
        bytes = pt.stats().bytes();
        pt.lock().clear(|_| {});
        Ok(())
    })?;
    let refill = |pt: &HmmPt<PageDirs>, chunk: &mut KVec<PtEntry>| -> Result {
        for &r in w.regions.iter() {
            chunk.clear();
            for i in 0..HUGE_SIZE / PAGE_SIZE {
                chunk.push(PtEntry::new(pfn(r) + i, PtFlags::WRITE)?, GFP_KERNEL)?;
            }
            let mut res = pt.reserve(r, r + HUGE_SIZE, false, GFP_KERNEL)?;
            pt.lock().populate(&mut res, r, chunk, |_| {})?;
        }
        Ok(())
    };
    refill(&pt, &mut chunk)?;
    let (first, last) = (w.regions[0], w.regions[w.regions.len() - 1] + HUGE_SIZE);
    let mut sum = 0u64;
    let scan = best(|| pt.walk(first, last, |m| sum = sum.wrapping_add(m.entry.pfn())))?;
    let lookup = best(|| {
        for a in w.pages() {
            if let Some(m) = pt.lookup(a) {
                sum = sum.wrapping_add(m.pfn_at(a));
            }
        }
        Ok(())
    })?;
    let mut clear_ns = i64::MAX;
    for _ in 0..ROUNDS {
        refill(&pt, &mut chunk)?;
        let t = Instant::<Monotonic>::now();
        pt.lock().update(first, last, PtFlags::NONE, |_| {})?;
        clear_ns = clear_ns.min(t.elapsed().as_nanos());
    }

    let xa = KBox::pin_init(XArray::<XaWord>::new(AllocKind::Alloc), GFP_KERNEL)?;
    let xa_fill = || -> Result {
        let mut g = xa.lock();
        for a in w.pages() {
            let word = PtEntry::new(pfn(a), PtFlags::WRITE)?;
            g.store((a / PAGE_SIZE) as usize, XaWord(word_raw(word)), GFP_KERNEL)
                .map_err(|e| e.error)?;
        }
        Ok(())
    };
    let xa_clear = || {
        let mut g = xa.lock();
        for a in w.pages() {
            g.remove((a / PAGE_SIZE) as usize);
        }
    };
    let xa_populate = best(|| {
        xa_fill()?;
        xa_clear();
        Ok(())
    })?;
    xa_fill()?;
    let xa_scan = best(|| {
        let g = xa.lock();
        for a in w.pages() {
            if let Some(v) = g.get((a / PAGE_SIZE) as usize) {
                sum = sum.wrapping_add(v);
            }
        }
        Ok(())
    })?;
    let mut xa_clear_ns = i64::MAX;
    for _ in 0..ROUNDS {
        xa_fill()?;
        let t = Instant::<Monotonic>::now();
        xa_clear();
        xa_clear_ns = xa_clear_ns.min(t.elapsed().as_nanos());
    }
    // Keep the scans from being optimised away.
    core::hint::black_box(sum);
    // The populate timings include a clear; report populate alone.
    Ok((
        [populate - clear_ns, scan, lookup, clear_ns],
        [xa_populate - xa_clear_ns, xa_scan, xa_scan, xa_clear_ns],
        bytes,
    ))
}

/// The raw word of an entry, as test_hmm would store it.
fn word_raw(e: PtEntry) -> u64 {
    e.pfn() << 12 | e.flags().bits()
}

/// Bytes of our table with the dense range mirrored by huge entries.
fn huge_bytes(w: &Workload) -> Result<u64> {
    let pt = KBox::pin_init(HmmPt::new(PtLevels::Four, PageDirs), GFP_KERNEL)?;
    for &r in w.regions.iter() {
        let mut res = pt.reserve(r, r + HUGE_SIZE, true, GFP_KERNEL)?;
        pt.lock()
            .populate_huge(&mut res, r, PtEntry::new(pfn(r), PtFlags::WRITE)?, |_| {})?;
    }
    Ok(pt.stats().bytes())
}

/// Per-mille ratio `a / b`, printed as x.yy.
pub(crate) struct Ratio(pub(crate) i64, pub(crate) i64);

impl core::fmt::Display for Ratio {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let r = if self.1 == 0 {
            0
        } else {
            self.0 * 100 / self.1
        };
        write!(f, "{}.{:02}", r / 100, r % 100)
    }
}

/// Per-page figure `total / pages` with two decimals.
pub(crate) struct PerPage(pub(crate) i64, pub(crate) i64);

impl core::fmt::Display for PerPage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let c = self.0 * 100 / self.1;
        write!(f, "{}.{:02}", c / 100, c % 100)
    }
}

/// Runs the benchmark; returns a Markdown report.
pub(crate) fn pt_bench() -> Result<TextBuf> {
    let mut out = TextBuf(KVec::new());
    let node = core::mem::size_of::<kernel::bindings::xa_node>() as i64;
    let dense = Workload::dense()?;
    writeln!(
        out,
        "| workload | op | hmm_pt ns/page | xarray ns/page | xarray/hmm_pt |"
    )?;
    writeln!(out, "| --- | --- | ---: | ---: | ---: |")?;
    let mut mem = KVec::new();
    for w in [&dense, &Workload::scattered()?] {
        let (ours, xa, bytes) = run(w)?;
        let n = w.page_count();
        for (i, op) in ["populate", "scan", "lookup", "clear"].iter().enumerate() {
            writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                w.name,
                op,
                PerPage(ours[i], n),
                PerPage(xa[i], n),
                Ratio(xa[i], ours[i])
            )?;
        }
        mem.push(
            (w.name, n, bytes as i64, w.xa_nodes() as i64 * node),
            GFP_KERNEL,
        )?;
    }
    let huge = huge_bytes(&dense)? as i64;
    writeln!(out)?;
    writeln!(
        out,
        "| workload | hmm_pt bytes/page | xarray bytes/page | xarray/hmm_pt |"
    )?;
    writeln!(out, "| --- | ---: | ---: | ---: |")?;
    for (name, n, ours, xa) in mem.iter() {
        writeln!(
            out,
            "| {} | {} | {} | {} |",
            name,
            PerPage(*ours, *n),
            PerPage(*xa, *n),
            Ratio(*xa, *ours)
        )?;
    }
    let (n, small, xa) = (mem[0].1, mem[0].2, mem[0].3);
    writeln!(
        out,
        "| dense 1 GiB, huge entries | {} | {} | {} |",
        PerPage(huge, n),
        PerPage(xa, n),
        Ratio(xa, huge)
    )?;
    writeln!(out)?;
    let root = PAGE_SIZE as i64;
    writeln!(
        out,
        "Dense 1 GiB, huge entries against 4 KiB entries: {}x less memory counting the \
         table's fixed 4 KiB root, {}x less for the directories the range needs. \
         xa_node is {} bytes.",
        Ratio(small, huge),
        Ratio(small - root, huge - root),
        node
    )?;
    Ok(out)
}
