// SPDX-License-Identifier: GPL-2.0

//! Typed HMM events.
//!
//! Every update of a mirrored CPU page table, and every device fault, is
//! described by an [`HmmEvent`] whose type tells the device driver what
//! happened, so it can pick the cheapest way to update its own MMU, and whose
//! mask says what the event removes from the mirror.
//!
//! # From `mmu_notifier` events
//!
//! | `MMU_NOTIFY_*` | raised by (Linux 7.3) | [`HmmEventType`] | removes |
//! | --- | --- | --- | --- |
//! | `UNMAP` | munmap, mremap moving, exit_mmap | `Munmap` | everything |
//! | `CLEAR` | madvise(DONTNEED/FREE), reclaim and swap, NUMA and compaction migration, KSM merge, COW break, THP split/collapse, the OOM reaper | `Migrate` | everything |
//! | `PROTECTION_VMA` | mprotect, NUMA hinting, PAGEMAP_SCAN and userfaultfd write-protect | `WriteProtect` | write access if the CPU can still read the range, else everything |
//! | `PROTECTION_PAGE`, while the mm's task forks it | fork, for each copy-on-write VMA | `Fork` | write access |
//! | `PROTECTION_PAGE`, otherwise | writeback write-protecting a page (`folio_mkclean`) | `WriteProtect` | write access |
//! | `SOFT_DIRTY` | writing `/proc/PID/clear_refs` | `WriteProtect` | write access |
//! | `RELEASE` | process exit (interval notifiers) | `Munmap` | everything |
//! | `MIGRATE` | `migrate_vma_*`: migration to or from device memory | `Migrate` | everything |
//! | `EXCLUSIVE` | `make_device_exclusive` | `Migrate` | everything |
//! | any other code | a newer kernel | `Migrate` | everything |
//!
//! Removing more than needed is always safe: the device faults back in what
//! it lost. Removing less is not, so the unknown and ambiguous cases remove
//! everything.
//!
//! `PROTECTION_VMA` alone cannot tell mprotect(PROT_READ) from PROT_NONE. The
//! core looks at the VMA: mprotect() sets the new flags before it changes the
//! page tables, and NUMA hinting keeps them. It does so only when the range's
//! mm is the current task's, whose `mmap_lock` every `PROTECTION_VMA` raiser
//! in 7.3 then holds; otherwise (PAGEMAP_SCAN of another process) everything
//! is removed.
//!
//! # How a fork is recognised
//!
//! The event code cannot tell a fork from writeback: both raise
//! `PROTECTION_PAGE`. `fork()` raises it from `copy_page_range()`, for the
//! parent's mm, in the forking task (so `current->mm` is the range's mm),
//! with the mm's `mmap_lock` held for writing by `dup_mmap()`. Writeback raises
//! it from `folio_mkclean()` in a flusher thread (no mm) or in a task syncing
//! a file, which does not hold `mmap_lock`. The core reports "forking" when
//! the range's mm is `current->mm` and its `mmap_lock` is held (the kernel
//! offers no way to tell a write hold from a read hold). Limits: a thread
//! syncing a file of a mirrored process while another of its threads holds
//! `mmap_lock` is reported as `Fork` (both only remove write access); a fork
//! raises no event for shared or read-only mappings, whose CPU page tables do
//! not change.

use crate::hmm_pt::PtFlags;
use kernel::bindings;

/// What happened to a range of a mirrored address space.
///
/// The values are part of the C API and never change.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HmmEventType {
    /// The process forked: private writable pages became copy-on-write.
    Fork = 1,
    /// Pages are moving (migration, reclaim, copy-on-write break).
    Migrate = 2,
    /// The range was unmapped.
    Munmap = 3,
    /// The device faults the range in for reading.
    DeviceReadFault = 4,
    /// The device faults the range in for writing.
    DeviceWriteFault = 5,
    /// The range lost write access (mprotect, writeback, KSM).
    WriteProtect = 6,
}

impl HmmEventType {
    /// Every event type, in value order.
    pub(crate) const ALL: [Self; 6] = [
        Self::Fork,
        Self::Migrate,
        Self::Munmap,
        Self::DeviceReadFault,
        Self::DeviceWriteFault,
        Self::WriteProtect,
    ];

    /// The name used in logs and debugfs.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Fork => "fork",
            Self::Migrate => "migrate",
            Self::Munmap => "munmap",
            Self::DeviceReadFault => "device_read_fault",
            Self::DeviceWriteFault => "device_write_fault",
            Self::WriteProtect => "write_protect",
        }
    }

    /// The type with C value `value`, if any.
    pub(crate) fn from_raw(value: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| *t as u32 == value)
    }
}

/// An `enum mmu_notifier_event` code: why a CPU page table changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotifierEvent {
    /// `MMU_NOTIFY_UNMAP`.
    Unmap,
    /// `MMU_NOTIFY_CLEAR`.
    Clear,
    /// `MMU_NOTIFY_PROTECTION_VMA`.
    ProtectionVma,
    /// `MMU_NOTIFY_PROTECTION_PAGE`.
    ProtectionPage,
    /// `MMU_NOTIFY_SOFT_DIRTY`.
    SoftDirty,
    /// `MMU_NOTIFY_RELEASE`.
    Release,
    /// `MMU_NOTIFY_MIGRATE`.
    Migrate,
    /// `MMU_NOTIFY_EXCLUSIVE`.
    Exclusive,
    /// A code this module does not know.
    Unknown(u32),
}

impl NotifierEvent {
    /// The event for `code`, a `struct mmu_notifier_range`'s `event`.
    pub(crate) fn from_raw(code: u32) -> Self {
        match code {
            bindings::mmu_notifier_event_MMU_NOTIFY_UNMAP => Self::Unmap,
            bindings::mmu_notifier_event_MMU_NOTIFY_CLEAR => Self::Clear,
            bindings::mmu_notifier_event_MMU_NOTIFY_PROTECTION_VMA => Self::ProtectionVma,
            bindings::mmu_notifier_event_MMU_NOTIFY_PROTECTION_PAGE => Self::ProtectionPage,
            bindings::mmu_notifier_event_MMU_NOTIFY_SOFT_DIRTY => Self::SoftDirty,
            bindings::mmu_notifier_event_MMU_NOTIFY_RELEASE => Self::Release,
            bindings::mmu_notifier_event_MMU_NOTIFY_MIGRATE => Self::Migrate,
            bindings::mmu_notifier_event_MMU_NOTIFY_EXCLUSIVE => Self::Exclusive,
            other => Self::Unknown(other),
        }
    }
}

/// An invalidation as the core sees it: the notifier's code and what the
/// core found out about its context.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Invalidation {
    /// The notifier's event code.
    pub(crate) event: NotifierEvent,
    /// The mm's own task is forking it (see the module documentation).
    pub(crate) forking: bool,
    /// After the change the CPU can still read the range (only looked at
    /// for `PROTECTION_VMA`, which covers both mprotect(PROT_READ) and
    /// PROT_NONE).
    pub(crate) stays_readable: bool,
}

/// An event: what happened to `[start, end)` of a mirrored address space,
/// and which flags each mirror entry there keeps (`VALID` absent: the entry
/// is removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HmmEvent {
    /// What happened.
    pub(crate) ty: HmmEventType,
    /// First address.
    pub(crate) start: u64,
    /// One past the last address.
    pub(crate) end: u64,
    /// What mirror entries keep.
    pub(crate) keep: PtFlags,
}

impl HmmEvent {
    /// The event an invalidation of `[start, end)` becomes (see the table
    /// in the module documentation).
    pub(crate) fn from_invalidation(inv: &Invalidation, start: u64, end: u64) -> Self {
        let read_only = !PtFlags::WRITE;
        let (ty, keep) = match inv.event {
            NotifierEvent::Unmap | NotifierEvent::Release => (HmmEventType::Munmap, PtFlags::NONE),
            NotifierEvent::ProtectionVma if inv.stays_readable => {
                (HmmEventType::WriteProtect, read_only)
            }
            NotifierEvent::ProtectionVma => (HmmEventType::WriteProtect, PtFlags::NONE),
            NotifierEvent::ProtectionPage if inv.forking => (HmmEventType::Fork, read_only),
            NotifierEvent::ProtectionPage | NotifierEvent::SoftDirty => {
                (HmmEventType::WriteProtect, read_only)
            }
            NotifierEvent::Clear
            | NotifierEvent::Migrate
            | NotifierEvent::Exclusive
            | NotifierEvent::Unknown(_) => (HmmEventType::Migrate, PtFlags::NONE),
        };
        Self {
            ty,
            start,
            end,
            keep,
        }
    }
}

#[kernel::prelude::kunit_tests(hmm_rs_event)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_type_once_in_value_order() {
        for (i, ty) in HmmEventType::ALL.iter().enumerate() {
            // An exhaustive match: a new variant fails to compile until it is
            // given a value here, and the assertion below finds it missing
            // from `ALL`.
            let value = match ty {
                HmmEventType::Fork => 1,
                HmmEventType::Migrate => 2,
                HmmEventType::Munmap => 3,
                HmmEventType::DeviceReadFault => 4,
                HmmEventType::DeviceWriteFault => 5,
                HmmEventType::WriteProtect => 6,
            };
            assert_eq!(*ty as u32, value);
            assert_eq!(value as usize, i + 1);
        }
    }

    #[test]
    fn notifier_codes_match_the_kernel_header() {
        // The kernel's enum, in order; a new code would map to `Unknown`.
        let codes = [
            NotifierEvent::Unmap,
            NotifierEvent::Clear,
            NotifierEvent::ProtectionVma,
            NotifierEvent::ProtectionPage,
            NotifierEvent::SoftDirty,
            NotifierEvent::Release,
            NotifierEvent::Migrate,
            NotifierEvent::Exclusive,
        ];
        for (code, event) in codes.iter().enumerate() {
            assert_eq!(NotifierEvent::from_raw(code as u32), *event);
        }
        assert_eq!(NotifierEvent::from_raw(8), NotifierEvent::Unknown(8));
    }

    #[test]
    fn invalidations_map_as_documented() {
        use NotifierEvent as N;
        let ro = !PtFlags::WRITE;
        let none = PtFlags::NONE;
        // (event, forking, stays_readable) -> (type, keep): the module
        // documentation's table, row by row, with the context flags that
        // must not matter flipped too.
        let table = [
            (N::Unmap, false, false, HmmEventType::Munmap, none),
            (N::Unmap, true, true, HmmEventType::Munmap, none),
            (N::Clear, false, true, HmmEventType::Migrate, none),
            (N::Clear, true, false, HmmEventType::Migrate, none),
            (
                N::ProtectionVma,
                false,
                true,
                HmmEventType::WriteProtect,
                ro,
            ),
            (N::ProtectionVma, true, true, HmmEventType::WriteProtect, ro),
            (
                N::ProtectionVma,
                false,
                false,
                HmmEventType::WriteProtect,
                none,
            ),
            (N::ProtectionPage, true, false, HmmEventType::Fork, ro),
            (N::ProtectionPage, true, true, HmmEventType::Fork, ro),
            (
                N::ProtectionPage,
                false,
                false,
                HmmEventType::WriteProtect,
                ro,
            ),
            (N::SoftDirty, false, false, HmmEventType::WriteProtect, ro),
            (N::SoftDirty, true, true, HmmEventType::WriteProtect, ro),
            (N::Release, false, false, HmmEventType::Munmap, none),
            (N::Migrate, false, true, HmmEventType::Migrate, none),
            (N::Exclusive, false, true, HmmEventType::Migrate, none),
            (N::Unknown(42), true, true, HmmEventType::Migrate, none),
        ];
        for (event, forking, stays_readable, ty, keep) in table {
            let inv = Invalidation {
                event,
                forking,
                stays_readable,
            };
            let e = HmmEvent::from_invalidation(&inv, 0x1000, 0x3000);
            assert_eq!(
                e,
                HmmEvent {
                    ty,
                    start: 0x1000,
                    end: 0x3000,
                    keep
                }
            );
        }
    }
}
