// SPDX-License-Identifier: GPL-2.0

//! What the table holds: leaf entries, their flags, and the mappings and
//! dirty entries it hands out.

use core::ops;
use kernel::prelude::*;

use super::{PAGE_SHIFT, PAGE_SIZE};

/// Flags of a leaf entry: bits 0..11 of a [`PtEntry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PtFlags(pub(super) u64);

impl PtFlags {
    /// No flag.
    pub(crate) const NONE: Self = Self(0);
    /// The entry maps memory; set on every leaf.
    pub(crate) const VALID: Self = Self(1 << 0);
    /// The device may write.
    pub(crate) const WRITE: Self = Self(1 << 1);
    /// The device (may have) written: the page must be dirtied when the
    /// device loses write access.
    pub(crate) const DIRTY: Self = Self(1 << 2);
    /// The page lives in device memory.
    pub(crate) const DEVICE: Self = Self(1 << 3);
    /// The device has exclusive access: the CPU must fault to touch the page
    /// (`make_device_exclusive`), which removes this entry.
    pub(crate) const EXCLUSIVE: Self = Self(1 << 4);
    /// DMA tables only: the mapping is a page linked into its 2 MiB
    /// block's IOVA range (`hmm_mirror/dma/iova.rs`).
    pub(crate) const LINKED: Self = Self(1 << 5);
    /// Bits 8..11 belong to the device driver.
    pub(crate) const DRIVER: Self = Self(0xf << 8);
    /// Every flag bit.
    pub(crate) const ALL: Self = Self((1 << PAGE_SHIFT) - 1);

    /// Driver-private bits `bits` (0..15), placed in [`Self::DRIVER`].
    #[cfg_attr(
        not(CONFIG_KUNIT),
        expect(dead_code, reason = "Rust driver API; only KUnit uses it in-tree")
    )]
    pub(crate) const fn driver(bits: u64) -> Self {
        Self((bits << 8) & Self::DRIVER.0)
    }

    /// The flag bits.
    pub(crate) const fn bits(self) -> u64 {
        self.0
    }

    /// Whether every flag in `other` is set in `self`.
    pub(crate) const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl ops::BitOr for PtFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl ops::BitAnd for PtFlags {
    type Output = Self;
    fn bitand(self, rhs: Self) -> Self {
        Self(self.0 & rhs.0)
    }
}

impl ops::Not for PtFlags {
    type Output = Self;
    fn not(self) -> Self {
        Self(!self.0 & Self::ALL.0)
    }
}

/// A leaf entry: a page frame number above bit 12 and [`PtFlags`] below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PtEntry(pub(super) u64);

impl PtEntry {
    /// Largest page frame number an entry holds.
    pub(crate) const MAX_PFN: u64 = u64::MAX >> PAGE_SHIFT;

    /// A valid entry for `pfn` with `flags` (`VALID` is implied).
    ///
    /// Fails with `EINVAL` if `pfn` exceeds [`Self::MAX_PFN`].
    pub(crate) fn new(pfn: u64, flags: PtFlags) -> Result<Self> {
        if pfn > Self::MAX_PFN {
            return Err(EINVAL);
        }
        Ok(Self(pfn << PAGE_SHIFT | (flags | PtFlags::VALID).0))
    }

    /// As [`Self::new`], for a `pfn` the caller has checked against
    /// [`Self::MAX_PFN`] (higher bits would be cut).
    pub(crate) const fn from_checked_pfn(pfn: u64, flags: PtFlags) -> Self {
        Self((pfn & Self::MAX_PFN) << PAGE_SHIFT | (flags.0 | PtFlags::VALID.0))
    }

    /// The page frame number (of the first page, for a huge entry).
    pub(crate) const fn pfn(self) -> u64 {
        self.0 >> PAGE_SHIFT
    }

    /// The flags.
    pub(crate) const fn flags(self) -> PtFlags {
        PtFlags(self.0 & PtFlags::ALL.0)
    }

    pub(super) const fn is_leaf(raw: u64) -> bool {
        raw & PtFlags::VALID.0 != 0
    }

    pub(super) const fn with_flags(self, flags: PtFlags) -> Self {
        Self(self.0 & !PtFlags::ALL.0 | flags.0)
    }

    /// The entry of page `index` of this huge entry.
    pub(super) const fn subpage(self, index: u64) -> Self {
        Self(self.0 + (index << PAGE_SHIFT))
    }
}

/// A mapping found in the table: `entry` maps `1 << order` pages at `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PtMapping {
    /// First virtual address mapped.
    pub(crate) addr: u64,
    /// The leaf entry.
    pub(crate) entry: PtEntry,
    /// 0 for a 4 KiB entry, [`HUGE_ORDER`] for a huge one.
    pub(crate) order: u32,
}

impl PtMapping {
    /// One past the last address mapped.
    pub(crate) const fn end(&self) -> u64 {
        self.addr + (PAGE_SIZE << self.order)
    }

    /// The page frame number backing `addr`, which must lie in the mapping.
    #[cfg_attr(not(any(CONFIG_KUNIT, hmm_rs_bench)), expect(dead_code))]
    pub(crate) const fn pfn_at(&self, addr: u64) -> u64 {
        self.entry.pfn() + ((addr - self.addr) >> PAGE_SHIFT)
    }
}

/// A dirty entry handed back by a writer: the device may have written the
/// `1 << order` pages of `entry` at `addr`, and can no longer write them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PtDirty {
    /// First virtual address.
    pub(crate) addr: u64,
    /// The entry as it was, with `DIRTY` set.
    pub(crate) entry: PtEntry,
    /// 0 for a 4 KiB entry, [`HUGE_ORDER`] for a huge one.
    pub(crate) order: u32,
}
