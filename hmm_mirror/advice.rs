// SPDX-License-Identifier: GPL-2.0

//! Memory advice per range of a mirror: where its pages should live and
//! whether the device only reads them.
//!
//! - `PREFER_DEVICE`: a device fault there first migrates what is not in
//!   the mirror's preferred device memory yet; prefetch moves it there.
//! - `PREFER_SYSTEM`: prefetch moves the device's pages back.
//! - `READ_ONLY`: device write faults fail with `EPERM` and nothing the
//!   mirror maps there is writable, so device reads never break COW (a
//!   GPU driver that cannot tell a read fault from a write asks for reads
//!   here).
//!
//! The ranges are a sorted list of non-overlapping spans ([`Spans`]),
//! split where new advice cuts them and merged with equal neighbours, under
//! a spinlock: munmap drops the advice of its range from the mm's
//! notifier, where nothing may allocate (reclaim can run invalidations),
//! so the list keeps room for the one extra span such a cut can make.
//! There are few spans per mirror (one per advised buffer); a maple tree
//! would allocate in the notifier.

use kernel::{
    new_spinlock,
    prelude::*,
    sync::{Arc, SpinLock},
};

use super::{devmem::DevMem, HmmMirror};
use crate::{
    hmm_event::{HmmEvent, HmmEventType},
    hmm_pt::{PtFlags, HUGE_SIZE},
};

/// Advice flags (`HMM_RS_ADVICE_*` of hmm_rs.h).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct Advice(u32);

impl Advice {
    pub(crate) const NONE: Self = Self(0);
    pub(crate) const PREFER_DEVICE: Self = Self(1 << 0);
    pub(crate) const PREFER_SYSTEM: Self = Self(1 << 1);
    pub(crate) const READ_ONLY: Self = Self(1 << 2);

    /// The advice of C flags. `EINVAL` for unknown bits or both preferred
    /// locations.
    pub(crate) fn from_bits(bits: u32) -> Result<Self> {
        let both = Self::PREFER_DEVICE.0 | Self::PREFER_SYSTEM.0;
        if bits & !(both | Self::READ_ONLY.0) != 0 || bits & both == both {
            return Err(EINVAL);
        }
        Ok(Self(bits))
    }

    pub(crate) fn bits(self) -> u32 {
        self.0
    }

    pub(crate) fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }
}

/// Advice over `[start, end)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Span {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) advice: Advice,
}

/// Room kept beyond the spans: two for the cuts of [`Spans::apply`], and
/// some for munmap's cuts (one each) until the next [`AdviceMap::set`].
const SPARE: usize = 8;

/// Sorted spans of advice.
///
/// # Invariants
///
/// Sorted by address, non-empty, non-overlapping, none with no advice, no
/// two touching ones with the same advice; after every [`AdviceMap::set`]
/// the vector has room for [`SPARE`] - 2 more spans.
pub(crate) struct Spans(KVec<Span>);

impl Spans {
    const fn new() -> Self {
        Self(KVec::new())
    }

    /// Replaces the advice of `[start, end)` with `advice` (`NONE`: drops
    /// it). Without room for the result: `Err` and nothing changes; if
    /// `lossy`, the part after the range of a span it cuts loses its
    /// advice instead (the notifier's way, which cannot allocate).
    fn apply(&mut self, start: u64, end: u64, advice: Advice, lossy: bool) -> Result {
        let v = &mut self.0;
        let i = v.partition_point(|s| s.end <= start);
        let j = v.partition_point(|s| s.start < end);
        let left = (i < j && v[i].start < start).then(|| Span { end: start, ..v[i] });
        let mut right = (i < j && v[j - 1].end > end).then(|| Span {
            start: end,
            ..v[j - 1]
        });
        let mid = (advice != Advice::NONE).then_some(Span { start, end, advice });
        let count = |r: &Option<Span>| usize::from(r.is_some());
        let len =
            |right: &Option<Span>| v.len() - (j - i) + count(&left) + count(&mid) + count(right);
        if len(&right) > v.capacity() {
            if !lossy {
                return Err(ENOMEM);
            }
            right = None;
            if len(&right) > v.capacity() {
                return Err(ENOMEM);
            }
        }
        for _ in i..j {
            v.remove(i).map_err(|_| EINVAL)?;
        }
        let mut at = i;
        for s in [left, mid, right].into_iter().flatten() {
            v.insert_within_capacity(at, s).map_err(|_| ENOMEM)?;
            at += 1;
        }
        // Merge with equal neighbours, from the one before the change to
        // the one after it.
        let mut x = i.saturating_sub(1);
        while x + 1 < v.len() && x <= at {
            if v[x].end == v[x + 1].start && v[x].advice == v[x + 1].advice {
                v[x].end = v[x + 1].end;
                v.remove(x + 1).map_err(|_| EINVAL)?;
                at = at.saturating_sub(1);
            } else {
                x += 1;
            }
        }
        Ok(())
    }

    /// The advice at `addr` and the extent around it that has it (for no
    /// advice: the gap between spans, up to `limit`).
    fn get(&self, addr: u64, limit: u64) -> Span {
        let v = &self.0;
        let i = v.partition_point(|s| s.end <= addr);
        match v.get(i) {
            Some(s) if s.start <= addr => *s,
            next => Span {
                start: if i == 0 { 0 } else { v[i - 1].end },
                end: next.map_or(limit, |s| s.start),
                advice: Advice::NONE,
            },
        }
    }

    /// Calls `f` for each span overlapping `[start, end)`, clipped to it.
    fn each(&self, start: u64, end: u64, f: &mut impl FnMut(Span)) {
        let v = &self.0;
        let i = v.partition_point(|s| s.end <= start);
        for s in v[i..].iter().take_while(|s| s.start < end) {
            f(Span {
                start: s.start.max(start),
                end: s.end.min(end),
                advice: s.advice,
            });
        }
    }
}

/// A mirror's advice.
#[pin_data]
pub(crate) struct AdviceMap {
    #[pin]
    spans: SpinLock<Spans>,
}

impl AdviceMap {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            spans <- new_spinlock!(Spans::new(), "hmm_rs_advice"),
        })
    }

    /// Sets the advice of `[start, end)` (`NONE`: drops it). May sleep.
    pub(crate) fn set(&self, start: u64, end: u64, advice: Advice) -> Result {
        loop {
            let need = {
                let mut s = self.spans.lock();
                if s.0.capacity() >= s.0.len() + SPARE {
                    return s.apply(start, end, advice, false);
                }
                s.0.len() + SPARE + 4
            };
            // Grown outside the lock (it may sleep), moved under it.
            let mut bigger = KVec::with_capacity(need, GFP_KERNEL)?;
            let mut s = self.spans.lock();
            if s.0.len() + SPARE <= need {
                for x in s.0.iter() {
                    bigger.push_within_capacity(*x).map_err(|_| ENOMEM)?;
                }
                s.0 = bigger;
            }
        }
    }

    /// munmap of `[start, end)`: its advice goes. Never allocates or
    /// sleeps.
    pub(crate) fn unmapped(&self, start: u64, end: u64) {
        let mut s = self.spans.lock();
        if s.0.is_empty() {
            return;
        }
        // Only fails without room even for the lossy cut: cannot happen
        // (removing spans never needs more than the one spare).
        let _ = s.apply(start, end, Advice::NONE, true);
    }

    /// The advice at `addr` ([`Spans::get`]).
    pub(crate) fn get(&self, addr: u64, limit: u64) -> Span {
        self.spans.lock().get(addr, limit)
    }

    /// Whether any part of `[start, end)` has all of `advice`.
    pub(crate) fn any(&self, start: u64, end: u64, advice: Advice) -> bool {
        let mut found = false;
        self.spans
            .lock()
            .each(start, end, &mut |s| found |= s.advice.contains(advice));
        found
    }

    /// The parts of `[start, end)` that have all of `advice`, merged where
    /// they touch.
    pub(crate) fn ranges(&self, start: u64, end: u64, advice: Advice) -> Result<KVec<(u64, u64)>> {
        let mut n = 0;
        self.spans.lock().each(start, end, &mut |_| n += 1);
        // Allocated outside the lock; spans added since are left out.
        let mut out = KVec::<(u64, u64)>::with_capacity(n, GFP_KERNEL)?;
        self.spans.lock().each(start, end, &mut |s| {
            if !s.advice.contains(advice) {
                return;
            }
            match out.last_mut() {
                Some((_, e)) if *e == s.start => *e = s.end,
                _ => {
                    let _ = out.push_within_capacity((s.start, s.end));
                }
            }
        });
        Ok(out)
    }

    /// Whether it holds any advice (a cheap test for the fault path).
    pub(crate) fn is_empty(&self) -> bool {
        self.spans.lock().0.is_empty()
    }
}

impl HmmMirror {
    /// Sets the advice of `[start, end)` to `advice` (`NONE`: drops it).
    /// `PREFER_DEVICE` needs device memory of the mirror's device: `mem`,
    /// which becomes the mirror's preferred memory (held until the mirror
    /// goes or another replaces it), or the one given before. May sleep.
    ///
    /// Errors: `EINVAL` for a bad range, `PREFER_DEVICE` without device
    /// memory or with another device's; `ENOMEM`.
    pub(crate) fn advise(
        &self,
        start: u64,
        end: u64,
        advice: Advice,
        mem: Option<Arc<DevMem>>,
    ) -> Result {
        self.pt.check_range(start, end)?;
        if mem.as_ref().is_some_and(|m| m.owner() != self.owner) {
            return Err(EINVAL);
        }
        let old = {
            let mut preferred = self.preferred.lock();
            if advice.contains(Advice::PREFER_DEVICE) && mem.is_none() && preferred.is_none() {
                return Err(EINVAL);
            }
            self.advice.set(start, end, advice)?;
            match mem {
                Some(mem) => preferred.replace(mem),
                None => None,
            }
        };
        // The memory it replaced may be the last reference, whose drop
        // evicts: not under the lock faults take.
        drop(old);
        // Entries mapped writable before go read-only, in the device first.
        if advice.contains(Advice::READ_ONLY) {
            let event = HmmEvent {
                ty: HmmEventType::WriteProtect,
                start,
                end,
                keep: !PtFlags::WRITE,
            };
            let _ = self.invalidate(&event, true);
        }
        Ok(())
    }

    /// The advice at `addr` and its extent ([`AdviceMap::get`]).
    pub(crate) fn advice_at(&self, addr: u64) -> Span {
        self.advice.get(addr, self.pt.limit())
    }

    /// Moves the advised parts of `[start, end)` to their preferred
    /// location. Returns how many pages moved. May sleep.
    ///
    /// Errors: as [`Self::migrate_to_device`].
    pub(crate) fn prefetch(&self, start: u64, end: u64) -> Result<usize> {
        self.pt.check_range(start, end)?;
        // A part without VMAs (EINVAL) is passed over.
        let skip_holes = |r: Result<usize>| match r {
            Err(EINVAL) => Ok(0),
            r => r,
        };
        let mut moved = 0;
        if let Some(mem) = self.preferred_mem() {
            for &(a, e) in self
                .advice
                .ranges(start, end, Advice::PREFER_DEVICE)?
                .iter()
            {
                moved += skip_holes(self.migrate_to_device(&mem, a, e))?;
            }
        }
        for &(a, e) in self
            .advice
            .ranges(start, end, Advice::PREFER_SYSTEM)?
            .iter()
        {
            moved += skip_holes(self.migrate_to_system(a, e))?;
        }
        Ok(moved)
    }

    /// The preferred device memory, unless its driver destroyed it.
    fn preferred_mem(&self) -> Option<Arc<DevMem>> {
        self.preferred.lock().clone().filter(|m| !m.is_dead())
    }

    /// Whether the mirror maps all of `[start, end)` as device pages.
    fn on_device(&self, start: u64, end: u64) -> bool {
        let mut addr = start;
        while addr < end {
            match self.pt.lookup(addr) {
                Some(m) if m.entry.flags().contains(PtFlags::DEVICE) => addr = m.end(),
                _ => return false,
            }
        }
        true
    }

    /// What advice does to a device fault of `[start, end)` before it
    /// faults: `EPERM` for a write where the device only reads; what is
    /// not on the preferred device yet moves there, a 2 MiB block at a time
    /// (so that thrash control sees whole blocks; best effort: what cannot
    /// move is faulted where it is).
    pub(super) fn advise_fault(&self, write: bool, start: u64, end: u64) -> Result {
        if self.advice.is_empty() {
            return Ok(());
        }
        if write && self.advice.any(start, end, Advice::READ_ONLY) {
            return Err(EPERM);
        }
        if !self.advice.any(start, end, Advice::PREFER_DEVICE) {
            return Ok(());
        }
        let Some(mem) = self.preferred_mem() else {
            return Ok(());
        };
        let (first, last) = (
            start - start % HUGE_SIZE,
            end.next_multiple_of(HUGE_SIZE).min(self.pt.limit()),
        );
        for &(a, e) in self
            .advice
            .ranges(first, last, Advice::PREFER_DEVICE)?
            .iter()
        {
            // Already there: no migration (whose invalidation would cost
            // every other mirror of the mm its entries).
            if self.on_device(a, e) {
                continue;
            }
            if let Err(EINTR) = self.migrate_to_device(&mem, a, e) {
                return Err(EINTR);
            }
        }
        Ok(())
    }

    /// Whether the mirror may map `[start, end)` writable.
    pub(super) fn may_write(&self, start: u64, end: u64) -> bool {
        self.advice.is_empty() || !self.advice.any(start, end, Advice::READ_ONLY)
    }
}

#[kernel::prelude::kunit_tests(hmm_rs_advice)]
mod tests {
    use super::*;

    const RO: Advice = Advice::READ_ONLY;
    const DEV: Advice = Advice::PREFER_DEVICE;

    fn spans() -> Result<Spans> {
        Ok(Spans(KVec::with_capacity(16, GFP_KERNEL)?))
    }

    fn span(start: u64, end: u64, advice: Advice) -> Span {
        Span { start, end, advice }
    }

    #[test]
    fn flags_are_checked() {
        assert!(Advice::from_bits(1 << 3).is_err());
        assert!(Advice::from_bits(3).is_err());
        assert_eq!(Advice::from_bits(5).map(Advice::bits), Ok(5));
    }

    #[test]
    fn set_splits_and_merges() -> Result {
        let mut s = spans()?;
        s.apply(0, 8, RO, false)?;
        s.apply(2, 4, Advice(RO.0 | DEV.0), false)?;
        assert_eq!(
            &s.0[..],
            &[
                span(0, 2, RO),
                span(2, 4, Advice(RO.0 | DEV.0)),
                span(4, 8, RO)
            ]
        );
        assert_eq!(s.get(5, 100), span(4, 8, RO));
        // Back to its neighbours' advice: one span again.
        s.apply(2, 4, RO, false)?;
        assert_eq!(&s.0[..], &[span(0, 8, RO)]);
        // Touching with the same advice merges; a gap does not.
        s.apply(8, 10, RO, false)?;
        s.apply(12, 14, RO, false)?;
        assert_eq!(&s.0[..], &[span(0, 10, RO), span(12, 14, RO)]);
        assert_eq!(s.get(11, 100), span(10, 12, Advice::NONE));
        assert_eq!(s.get(20, 100), span(14, 100, Advice::NONE));
        Ok(())
    }

    #[test]
    fn clearing_cuts_spans() -> Result {
        let mut s = spans()?;
        s.apply(0, 10, DEV, false)?;
        s.apply(20, 30, RO, false)?;
        s.apply(5, 25, Advice::NONE, false)?;
        assert_eq!(&s.0[..], &[span(0, 5, DEV), span(25, 30, RO)]);
        let mut n = 0;
        s.each(3, 27, &mut |x| {
            assert!(x.start >= 3 && x.end <= 27);
            n += 1;
        });
        assert_eq!(n, 2);
        Ok(())
    }

    #[test]
    fn lossy_cut_without_room_drops_the_tail() -> Result {
        let mut s = Spans(KVec::with_capacity(1, GFP_KERNEL)?);
        s.apply(0, 10, RO, false)?;
        assert!(s.apply(4, 6, Advice::NONE, false).is_err());
        assert_eq!(&s.0[..], &[span(0, 10, RO)]);
        s.apply(4, 6, Advice::NONE, true)?;
        assert_eq!(&s.0[..], &[span(0, 4, RO)]);
        Ok(())
    }
}
