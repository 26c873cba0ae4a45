// SPDX-License-Identifier: GPL-2.0

//! The core's counters over all mms, mirrors and device memory, each
//! counted where it happens, and the global lines of debugfs
//! `hmm_rs/stats` that show them ([`write`]). Per-mm, per-mirror and
//! per-device counters live in their objects.

use kernel::sync::atomic::{Atomic, Relaxed};

use crate::hmm_event::HmmEventType;

/// A counter that only goes up (or, for gauges, up and down).
pub(crate) struct Counter(Atomic<u64>);

impl Counter {
    pub(crate) const fn new() -> Self {
        Self(Atomic::new(0))
    }

    /// Adds `n`.
    pub(crate) fn add(&self, n: u64) {
        self.0.add(n, Relaxed);
    }

    /// Subtracts `n` (gauges).
    pub(crate) fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Relaxed);
    }

    /// The value now.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Invalidations over all mms, by [`HmmEventType`] value (index 0 unused).
pub(crate) static EVENTS: [Counter; HmmEventType::ALL.len() + 1] =
    [const { Counter::new() }; HmmEventType::ALL.len() + 1];

/// Device faults, invalidations that overlapped a fault in flight, and
/// fault chunks faulted in again because of one.
pub(crate) static FAULTS: Counter = Counter::new();
pub(crate) static FAULT_RACES: Counter = Counter::new();
pub(crate) static FAULT_RETRIES: Counter = Counter::new();
/// Windows of batched faults the mirror mapped already: no fault.
pub(crate) static BATCH_WINDOWS_MIRRORED: Counter = Counter::new();

/// Device memory: pages in use, huge folios handed out so far, and pages a
/// migration to device memory could not place (full, or a copy failed).
pub(crate) static DEVICE_PAGES_USED: Counter = Counter::new();
pub(crate) static HUGE_FILLED: Counter = Counter::new();
pub(crate) static NOT_PLACED: Counter = Counter::new();

/// Migration steps to device memory that raced with an invalidation, steps
/// tried again because pages were busy, pages the kernel left out of a step
/// although they could move, the time slept before those tries, and pages
/// that were there to move but stayed after the last try.
pub(crate) static MIGRATE_RACED: Counter = Counter::new();
pub(crate) static MIGRATE_BUSY_RETRIES: Counter = Counter::new();
pub(crate) static MIGRATE_DROPPED: Counter = Counter::new();
pub(crate) static MIGRATE_BACKOFF_NS: Counter = Counter::new();
pub(crate) static MIGRATE_STAYED: Counter = Counter::new();
/// Huge device folios brought back to system memory as one huge folio, and
/// as 512 pages because no huge folio could be had.
pub(crate) static HUGE_BACK_WHOLE: Counter = Counter::new();
pub(crate) static HUGE_BACK_SPLIT: Counter = Counter::new();

/// DMA tables: mappings made, unmapped, failed, and huge pages mapped page
/// by page because their IOVA was not 2 MiB aligned.
pub(crate) static DMA_MAPS: Counter = Counter::new();
pub(crate) static DMA_UNMAPS: Counter = Counter::new();
pub(crate) static DMA_MAP_ERRORS: Counter = Counter::new();
pub(crate) static DMA_HUGE_SPLIT: Counter = Counter::new();
/// IOVA-linked mappings: pages linked, link calls (a run of physically
/// contiguous pages is one), unlink calls (IOTLB flushes), 2 MiB ranges
/// held now (a gauge), and ranges not had (no IOMMU, `dma_iova=N`, no
/// memory: pages mapped one by one instead).
pub(crate) static DMA_IOVA_LINKS: Counter = Counter::new();
pub(crate) static DMA_IOVA_LINK_CALLS: Counter = Counter::new();
pub(crate) static DMA_IOVA_UNLINKS: Counter = Counter::new();
pub(crate) static DMA_IOVA_RANGES: Counter = Counter::new();
pub(crate) static DMA_IOVA_REFUSED: Counter = Counter::new();

/// Writes the global lines of debugfs `hmm_rs/stats`.
pub(crate) fn write(f: &mut impl core::fmt::Write) -> core::fmt::Result {
    writeln!(
        f,
        "device pages in use {} huge folios filled {} pages not placed {} migration steps raced {} \
         busy retries {} pages left out {} backoff us {} pages stayed busy {} huge folios back \
         whole {} split {}",
        DEVICE_PAGES_USED.get(),
        HUGE_FILLED.get(),
        NOT_PLACED.get(),
        MIGRATE_RACED.get(),
        MIGRATE_BUSY_RETRIES.get(),
        MIGRATE_DROPPED.get(),
        MIGRATE_BACKOFF_NS.get() / 1000,
        MIGRATE_STAYED.get(),
        HUGE_BACK_WHOLE.get(),
        HUGE_BACK_SPLIT.get(),
    )?;
    writeln!(
        f,
        "dma maps {} unmaps {} map_errors {} huge_split {} iova_links {} iova_link_calls {} iova_unlinks {} \
         iova_ranges {} iova_refused {}",
        DMA_MAPS.get(),
        DMA_UNMAPS.get(),
        DMA_MAP_ERRORS.get(),
        DMA_HUGE_SPLIT.get(),
        DMA_IOVA_LINKS.get(),
        DMA_IOVA_LINK_CALLS.get(),
        DMA_IOVA_UNLINKS.get(),
        DMA_IOVA_RANGES.get(),
        DMA_IOVA_REFUSED.get(),
    )?;
    write!(f, "events")?;
    for ty in HmmEventType::ALL {
        write!(f, " {} {}", ty.name(), EVENTS[ty as usize].get())?;
    }
    writeln!(f)?;
    writeln!(
        f,
        "faults {} fault races {} fault retries {} batch windows mirrored {}",
        FAULTS.get(),
        FAULT_RACES.get(),
        FAULT_RETRIES.get(),
        BATCH_WINDOWS_MIRRORED.get()
    )
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}
