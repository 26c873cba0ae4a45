// SPDX-License-Identifier: GPL-2.0

//! Typed HMM events.
//!
//! Every update of a mirrored CPU page table, and every device fault, is
//! described by an event whose type tells the device driver what happened,
//! so it can pick the cheapest way to update its own MMU.

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
}
