// SPDX-License-Identifier: GPL-2.0

//! Thrash control: a 2 MiB block of a mirror's address space that keeps
//! going to the device and coming back is held in system memory for a
//! while, where device faults map it, instead of being copied both ways
//! each time.
//!
//! A migration to device memory only moves pages that are in system
//! memory, so a block moving to the device again within the window of its
//! last move there came back in between (a CPU access, or an eviction: to
//! moving it again, both are thrashing). Such a repeat holds the block for
//! a backoff: the device memory's first backoff, doubling with each repeat
//! up to [`MAX_BACKOFF_SHIFT`] doublings. The window then counts from the
//! end of the hold; a block whose next move comes later than that has
//! settled, and its backoff halves. The window and first backoff are the
//! device memory's (per device, `hmm_rs_devmem_set_thrash`); the state is
//! the mirror's, per block, as UVM keeps it per VA block. A block's history
//! (32 bytes) stays until the mirror goes, munmap or not: pruning it from
//! the notifier would mean walking every block of an unmapped range.
//! Only whole-block moves count (`migrate.rs`), so a block is only held
//! after it moved whole twice within the window.

use kernel::{
    prelude::*,
    xarray::{AllocKind, XArray},
};

use crate::hmm_pt::HUGE_SIZE;

/// The backoff grows to at most the first backoff times 2 to this.
pub(crate) const MAX_BACKOFF_SHIFT: u32 = 10;

/// Thrash control's settings, in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// 0: thrash control is off.
    pub(crate) window: u64,
    pub(crate) backoff: u64,
}

/// One block's history. Times are `ktime_get_ns()`.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    /// Its last move to the device (0: none yet).
    last: u64,
    /// It does not move before this.
    hold_until: u64,
    /// The hold its next repeat gets is twice this (or the first backoff).
    backoff: u64,
}

impl Block {
    /// Whether a move at `now` is held back.
    pub(crate) fn held(&self, now: u64) -> bool {
        now < self.hold_until
    }

    /// The block moved to the device at `now`. Returns the hold it got if
    /// that was a repeat.
    pub(crate) fn moved(&mut self, now: u64, s: Settings) -> Option<u64> {
        let since = self.last.max(self.hold_until);
        let repeat = self.last != 0 && now.saturating_sub(since) < s.window;
        self.last = now;
        if repeat {
            self.backoff = if self.backoff == 0 {
                s.backoff
            } else {
                self.backoff
                    .saturating_mul(2)
                    .min(s.backoff.saturating_mul(1 << MAX_BACKOFF_SHIFT))
            };
            self.hold_until = now.saturating_add(self.backoff);
            Some(self.backoff)
        } else {
            // Settled (or its first move): the next hold is shorter.
            self.backoff /= 2;
            None
        }
    }
}

/// A mirror's blocks' histories, by 2 MiB block of address.
#[pin_data]
pub(crate) struct Blocks {
    #[pin]
    xa: XArray<KBox<Block>>,
}

impl Blocks {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            xa <- XArray::new(AllocKind::Alloc),
        })
    }

    /// Whether a move of the block of `addr` at `now` is held back.
    pub(crate) fn held(&self, addr: u64, now: u64) -> bool {
        let xa = self.xa.lock();
        xa.get(index(addr)).is_some_and(|b| b.held(now))
    }

    /// The block of `addr` moved to the device at `now`: [`Block::moved`].
    pub(crate) fn moved(&self, addr: u64, now: u64, s: Settings) -> Result<Option<u64>> {
        {
            let mut xa = self.xa.lock();
            if let Some(b) = xa.get_mut(index(addr)) {
                return Ok(b.moved(now, s));
            }
        }
        let mut b = KBox::new(Block::default(), GFP_KERNEL)?;
        let hold = b.moved(now, s);
        // Another step of the block may have stored one meanwhile: either
        // history will do.
        let _ = self.xa.lock().store(index(addr), b, GFP_KERNEL);
        Ok(hold)
    }
}

fn index(addr: u64) -> usize {
    (addr / HUGE_SIZE) as usize
}

#[kernel::prelude::kunit_tests(hmm_rs_thrash)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: Settings = Settings {
        window: 100 * MS,
        backoff: 10 * MS,
    };

    #[test]
    fn first_move_is_not_a_repeat() {
        let mut b = Block::default();
        assert_eq!(b.moved(5 * MS, S), None);
        assert!(!b.held(5 * MS));
    }

    #[test]
    fn repeats_double_the_hold() {
        let mut b = Block::default();
        let mut t = 1000 * MS;
        assert_eq!(b.moved(t, S), None);
        t += 20 * MS;
        assert_eq!(b.moved(t, S), Some(10 * MS));
        assert!(b.held(t + 9 * MS));
        assert!(!b.held(t + 10 * MS));
        // Right after the hold: within the window, counted from its end.
        t += 10 * MS + 50 * MS;
        assert_eq!(b.moved(t, S), Some(20 * MS));
        t += 20 * MS + 1;
        assert_eq!(b.moved(t, S), Some(40 * MS));
    }

    #[test]
    fn backoff_is_capped() {
        let mut b = Block::default();
        let mut t = 1000 * MS;
        b.moved(t, S);
        let mut last = 0;
        for _ in 0..20 {
            t += 1;
            while b.held(t) {
                t += MS;
            }
            last = b.moved(t, S).unwrap_or(0);
        }
        assert_eq!(last, S.backoff << MAX_BACKOFF_SHIFT);
    }

    #[test]
    fn settling_halves_the_backoff() {
        let mut b = Block::default();
        let mut t = 1000 * MS;
        b.moved(t, S);
        t += MS;
        assert_eq!(b.moved(t, S), Some(10 * MS));
        t += 10 * MS;
        assert_eq!(b.moved(t, S), Some(20 * MS));
        // Settled: its next move comes after the window.
        t += 20 * MS + S.window;
        assert_eq!(b.moved(t, S), None);
        // The next repeat's hold: twice the halved backoff.
        t += MS;
        assert_eq!(b.moved(t, S), Some(20 * MS));
    }

    #[test]
    fn off_never_holds() {
        let off = Settings {
            window: 0,
            backoff: 10 * MS,
        };
        let mut b = Block::default();
        b.moved(MS, off);
        assert_eq!(b.moved(MS + 1, off), None);
    }
}
