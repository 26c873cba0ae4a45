// SPDX-License-Identifier: GPL-2.0

//! KUnit suite `hmm_rs_pt`: the tests of [`super`].

#[kernel::prelude::kunit_tests(hmm_rs_pt)]
mod kunit {
    use super::super::*;
    use kernel::sync::atomic::{Acquire, Release};

    const GIB: u64 = 1 << 30;
    const RW: PtFlags = PtFlags::WRITE;
    /// What a write-protect event keeps.
    const WP: PtFlags = PtFlags(PtFlags::ALL.0 & !PtFlags::WRITE.0);

    fn table<A: DirAlloc>(levels: PtLevels, alloc: A) -> Result<Pin<KBox<HmmPt<A>>>> {
        KBox::pin_init(HmmPt::new(levels, alloc), GFP_KERNEL)
    }

    fn entries(pfn: u64, n: u64, flags: PtFlags) -> Result<KVec<PtEntry>> {
        let mut v = KVec::with_capacity(n as usize, GFP_KERNEL)?;
        for i in 0..n {
            v.push(PtEntry::new(pfn + i, flags)?, GFP_KERNEL)?;
        }
        Ok(v)
    }

    /// Populates `n` pages at `addr` with PFNs from `pfn`, reserving first.
    fn fill<A: DirAlloc>(pt: &HmmPt<A>, addr: u64, pfn: u64, n: u64, flags: PtFlags) -> Result {
        let mut res = pt.reserve(addr, addr + n * PAGE_SIZE, false, GFP_KERNEL)?;
        let e = entries(pfn, n, flags)?;
        pt.lock().populate(&mut res, addr, &e, |_| {})
    }

    fn fill_huge<A: DirAlloc>(pt: &HmmPt<A>, addr: u64, pfn: u64, flags: PtFlags) -> Result {
        let mut res = pt.reserve(addr, addr + HUGE_SIZE, true, GFP_KERNEL)?;
        pt.lock()
            .populate_huge(&mut res, addr, PtEntry::new(pfn, flags)?, |_| {})
    }

    fn pfn_of<A: DirAlloc>(pt: &HmmPt<A>, addr: u64) -> Option<u64> {
        pt.lookup(addr).map(|m| m.pfn_at(addr))
    }

    #[test]
    fn boundaries() -> Result {
        let pt = table(PtLevels::Four, PageDirs)?;
        let top = pt.limit() - PAGE_SIZE;
        // Address 0, the top page, and a page on each side of the 2 MiB,
        // 1 GiB and 512 GiB boundaries.
        fill(&pt, 0, 100, 1, RW)?;
        fill(&pt, top, 200, 1, RW)?;
        for (k, b) in [HUGE_SIZE, GIB, 512 * GIB].into_iter().enumerate() {
            fill(&pt, b - PAGE_SIZE, 1000 * (k as u64 + 1), 2, RW)?;
        }
        assert_eq!(pfn_of(&pt, 0), Some(100));
        assert_eq!(pfn_of(&pt, top), Some(200));
        assert_eq!(pfn_of(&pt, top - PAGE_SIZE), None);
        assert_eq!(pfn_of(&pt, PAGE_SIZE), None);
        for (k, b) in [HUGE_SIZE, GIB, 512 * GIB].into_iter().enumerate() {
            assert_eq!(pfn_of(&pt, b - PAGE_SIZE), Some(1000 * (k as u64 + 1)));
            assert_eq!(pfn_of(&pt, b), Some(1000 * (k as u64 + 1) + 1));
            assert_eq!(pfn_of(&pt, b + PAGE_SIZE), None);
        }
        // Level-0 dirs: [0,2M), [2M,4M), [1G-2M,1G), [1G,1G+2M), two at
        // 512G, one at the top; level 1: [0,1G), [1G,2G), two at 512G, top;
        // level 2: [0,512G), [512G,1T), top.
        let s = pt.stats();
        assert_eq!(s.entries, 8);
        assert_eq!(s.pages, 8);
        assert_eq!(s.dirs, 7 + 5 + 3);
        assert_eq!(s.bytes(), (s.dirs + 1) * PAGE_SIZE);
        pt.lock().clear(|_| {});
        assert_eq!(pt.stats().dirs, 0);
        assert_eq!(pt.stats().entries, 0);
        assert_eq!(pt.lookup(0), None);
        Ok(())
    }

    #[test]
    fn bad_ranges_are_einval() -> Result {
        let pt = table(PtLevels::Four, PageDirs)?;
        let lim = pt.limit();
        for (s, e) in [
            (0, 0),
            (PAGE_SIZE, 0),
            (1, PAGE_SIZE),
            (0, PAGE_SIZE + 1),
            (lim - PAGE_SIZE, lim + PAGE_SIZE),
            (lim, lim + PAGE_SIZE),
        ] {
            assert_eq!(pt.check_range(s, e), Err(EINVAL));
            assert!(pt.reserve(s, e, false, GFP_KERNEL).is_err());
            assert_eq!(pt.lock().update(s, e, PtFlags::NONE, |_| {}), Err(EINVAL));
            assert_eq!(pt.lock().set_dirty(s, e), Err(EINVAL));
            assert!(PtCursor::new(&pt, s, e).is_err());
        }
        let mut res = pt.reserve(0, PAGE_SIZE, false, GFP_KERNEL)?;
        let one = entries(1, 1, RW)?;
        // Wrapping, beyond the table, unaligned.
        assert_eq!(
            pt.lock().populate(&mut res, !(PAGE_SIZE - 1), &one, |_| {}),
            Err(EINVAL)
        );
        assert_eq!(pt.lock().populate(&mut res, lim, &one, |_| {}), Err(EINVAL));
        assert_eq!(pt.lock().populate(&mut res, 8, &one, |_| {}), Err(EINVAL));
        assert_eq!(pt.lock().populate(&mut res, 0, &[], |_| {}), Err(EINVAL));
        let huge = PtEntry::new(512, RW)?;
        assert_eq!(
            pt.lock().populate_huge(&mut res, PAGE_SIZE, huge, |_| {}),
            Err(EINVAL)
        );
        assert_eq!(
            pt.lock()
                .populate_huge(&mut res, 0, PtEntry::new(513, RW)?, |_| {}),
            Err(EINVAL)
        );
        assert_eq!(PtEntry::new(PtEntry::MAX_PFN + 1, RW), Err(EINVAL));
        assert_eq!(pt.lookup(lim), None);
        assert_eq!(pt.stats().dirs, 0);
        Ok(())
    }

    #[test]
    fn five_levels_reach_57_bits() -> Result {
        let four = table(PtLevels::Four, PageDirs)?;
        let five = table(PtLevels::Five, PageDirs)?;
        let high = 1u64 << 56;
        assert!(four
            .reserve(high, high + PAGE_SIZE, false, GFP_KERNEL)
            .is_err());
        fill(&five, high, 42, 1, RW)?;
        assert_eq!(pfn_of(&five, high), Some(42));
        assert_eq!(five.stats().dirs, 4);
        Ok(())
    }

    #[test]
    fn overlapping_populates_keep_dirty_of_same_page() -> Result {
        let pt = table(PtLevels::Four, PageDirs)?;
        fill(&pt, 0, 10, 4, RW)?;
        assert_eq!(pt.lock().set_dirty(0, 2 * PAGE_SIZE)?, 2);
        // Pages 0-1 dirty. Refill pages 1-2: page 1 keeps its PFN (stays
        // dirty), page 2 changes PFN (was clean, nothing handed back).
        let mut res = pt.reserve(PAGE_SIZE, 3 * PAGE_SIZE, false, GFP_KERNEL)?;
        let e = [PtEntry::new(11, RW)?, PtEntry::new(99, RW)?];
        let mut dirty = KVec::new();
        pt.lock().populate(&mut res, PAGE_SIZE, &e, |d| {
            dirty.push(d, GFP_ATOMIC).unwrap()
        })?;
        assert!(dirty.is_empty());
        assert!(pt
            .lookup(PAGE_SIZE)
            .unwrap()
            .entry
            .flags()
            .contains(PtFlags::DIRTY));
        assert_eq!(pfn_of(&pt, 2 * PAGE_SIZE), Some(99));
        // Page 0 now gets another page: its dirty entry is handed back.
        let mut res = pt.reserve(0, PAGE_SIZE, false, GFP_KERNEL)?;
        pt.lock()
            .populate(&mut res, 0, &[PtEntry::new(7, RW)?], |d| {
                dirty.push(d, GFP_ATOMIC).unwrap()
            })?;
        assert_eq!(dirty.len(), 1);
        assert_eq!(
            (dirty[0].addr, dirty[0].entry.pfn(), dirty[0].order),
            (0, 10, 0)
        );
        assert_eq!(pt.stats().entries, 4);
        Ok(())
    }

    #[test]
    fn update_hands_back_dirty_and_prunes() -> Result {
        let pt = table(PtLevels::Four, PageDirs)?;
        fill(&pt, GIB, 0, 8, RW)?;
        fill(&pt, GIB + 8 * PAGE_SIZE, 8, 8, PtFlags::NONE)?;
        // Read-only entries cannot be dirtied.
        assert_eq!(pt.lock().set_dirty(GIB, GIB + 16 * PAGE_SIZE)?, 8);
        let mut dirty = KVec::new();
        let n = pt.lock().update(GIB, GIB + 16 * PAGE_SIZE, WP, |d| {
            dirty.push(d, GFP_ATOMIC).unwrap()
        })?;
        assert_eq!(n, 8);
        assert_eq!(dirty.len(), 8);
        let m = pt.lookup(GIB).unwrap();
        assert!(!m.entry.flags().contains(PtFlags::WRITE));
        assert!(!m.entry.flags().contains(PtFlags::DIRTY));
        // Write-protecting again changes nothing and hands back nothing.
        assert_eq!(
            pt.lock()
                .update(GIB, GIB + 16 * PAGE_SIZE, WP, |_| panic!())?,
            0
        );
        assert_eq!(
            pt.lock()
                .update(GIB, GIB + 16 * PAGE_SIZE, PtFlags::NONE, |_| panic!())?,
            16
        );
        assert_eq!(
            pt.stats(),
            PtStats {
                dirs: 0,
                entries: 0,
                pages: 0,
                split_fallbacks: 0
            }
        );
        Ok(())
    }

    #[test]
    fn huge_entries_split_when_partly_changed() -> Result {
        let pt = table(PtLevels::Four, PageDirs)?;
        let base = 3 * HUGE_SIZE;
        fill_huge(&pt, base, 512 * 7, RW)?;
        let s = pt.stats();
        assert_eq!((s.dirs, s.entries, s.pages), (2, 1, 512));
        let m = pt.lookup(base + 5 * PAGE_SIZE).unwrap();
        assert_eq!(
            (m.addr, m.order, m.pfn_at(base + 5 * PAGE_SIZE)),
            (base, HUGE_ORDER, 512 * 7 + 5)
        );
        // A whole-entry update keeps it huge and hands back one dirty entry.
        pt.lock()
            .set_dirty(base + PAGE_SIZE, base + 2 * PAGE_SIZE)?;
        let mut dirty = KVec::new();
        pt.lock().update(base, base + HUGE_SIZE, WP, |d| {
            dirty.push(d, GFP_ATOMIC).unwrap()
        })?;
        assert_eq!(dirty.len(), 1);
        assert_eq!((dirty[0].addr, dirty[0].order), (base, HUGE_ORDER));
        assert_eq!(pt.stats().dirs, 2);
        // Unmapping one page splits it into 511 small entries.
        pt.lock().update(
            base + PAGE_SIZE,
            base + 2 * PAGE_SIZE,
            PtFlags::NONE,
            |_| {},
        )?;
        let s = pt.stats();
        assert_eq!(
            (s.dirs, s.entries, s.pages, s.split_fallbacks),
            (3, 511, 511, 0)
        );
        assert_eq!(pt.lookup(base + PAGE_SIZE), None);
        let m = pt.lookup(base + 2 * PAGE_SIZE).unwrap();
        assert_eq!((m.order, m.entry.pfn()), (0, 512 * 7 + 2));
        // A 4 KiB populate inside a huge entry splits it too.
        fill_huge(&pt, base + HUGE_SIZE, 0, RW)?;
        fill(&pt, base + HUGE_SIZE + PAGE_SIZE, 5000, 1, RW)?;
        assert_eq!(pfn_of(&pt, base + HUGE_SIZE + PAGE_SIZE), Some(5000));
        assert_eq!(pfn_of(&pt, base + HUGE_SIZE + 2 * PAGE_SIZE), Some(2));
        // A huge populate over a level-0 directory replaces it.
        fill_huge(&pt, base, 1024, RW)?;
        let s = pt.stats();
        assert_eq!((s.dirs, s.entries, s.pages), (3, 1 + 512, 1024));
        pt.lock().clear(|_| {});
        assert_eq!(pt.stats().dirs, 0);
        Ok(())
    }

    /// Allows `left` allocations, then fails.
    struct FailAfter {
        left: Atomic<u64>,
    }

    impl DirAlloc for FailAfter {
        fn alloc(&self, gfp: Flags) -> Result<DirPage> {
            let left = self.left.load(Relaxed);
            if left == 0 {
                return Err(ENOMEM);
            }
            self.left.store(left - 1, Relaxed);
            DirPage::alloc(gfp)
        }
    }

    #[test]
    fn allocation_failure_leaves_table_consistent() -> Result {
        // The root, then two of the three directories a first page needs.
        let pt = table(
            PtLevels::Four,
            FailAfter {
                left: Atomic::new(1 + 2),
            },
        )?;
        assert_eq!(
            pt.reserve(0, PAGE_SIZE, false, GFP_KERNEL).err(),
            Some(ENOMEM)
        );
        assert_eq!(pt.stats().dirs, 0);
        assert_eq!(pt.lookup(0), None);
        // A reservation made for a smaller range is short: EAGAIN, no change.
        pt.alloc.left.store(100, Relaxed);
        let mut res = pt.reserve(0, PAGE_SIZE, false, GFP_KERNEL)?;
        assert_eq!(res.len(), 3);
        let two = entries(1, 2, RW)?;
        assert_eq!(
            pt.lock()
                .populate(&mut res, 512 * GIB - PAGE_SIZE, &two, |_| {}),
            Err(EAGAIN)
        );
        assert_eq!(pt.stats().dirs, 0);
        assert_eq!(pt.lookup(512 * GIB), None);
        assert_eq!(res.len(), 3);
        let e = entries(1, 1, RW)?;
        pt.lock().populate(&mut res, 0, &e, |_| {})?;
        assert_eq!(res.len(), 0);
        // A huge entry that cannot split is updated whole.
        let mut res = pt.reserve(HUGE_SIZE, 2 * HUGE_SIZE, true, GFP_KERNEL)?;
        pt.lock()
            .populate_huge(&mut res, HUGE_SIZE, PtEntry::new(512, RW)?, |_| {})?;
        pt.alloc.left.store(0, Relaxed);
        pt.lock()
            .update(HUGE_SIZE, HUGE_SIZE + PAGE_SIZE, WP, |_| {})?;
        let s = pt.stats();
        assert_eq!((s.split_fallbacks, s.entries, s.dirs), (1, 2, 3));
        let m = pt.lookup(HUGE_SIZE + 100 * PAGE_SIZE).unwrap();
        assert_eq!(m.order, HUGE_ORDER);
        assert!(!m.entry.flags().contains(PtFlags::WRITE));
        pt.lock()
            .update(HUGE_SIZE, HUGE_SIZE + PAGE_SIZE, PtFlags::NONE, |_| {})?;
        assert_eq!(pt.lookup(HUGE_SIZE + 100 * PAGE_SIZE), None);
        pt.lock().clear(|_| {});
        assert_eq!(pt.stats().dirs, 0);
        Ok(())
    }

    #[test]
    fn cursor_visits_in_order_across_changes() -> Result {
        let pt = table(PtLevels::Four, PageDirs)?;
        let addrs = [
            0,
            5 * PAGE_SIZE,
            HUGE_SIZE,
            GIB,
            512 * GIB + 3 * PAGE_SIZE,
            pt.limit() - PAGE_SIZE,
        ];
        for (i, a) in addrs.iter().enumerate() {
            if *a == HUGE_SIZE {
                fill_huge(&pt, *a, 512, RW)?;
            } else {
                fill(&pt, *a, i as u64, 1, RW)?;
            }
        }
        let mut cur = PtCursor::new(&pt, 0, pt.limit())?;
        for a in &addrs[..3] {
            assert_eq!(cur.next(&pt).map(|m| m.addr), Some(*a));
        }
        // Remove the next one and add one behind the cursor: neither is seen.
        pt.lock()
            .update(GIB, GIB + PAGE_SIZE, PtFlags::NONE, |_| {})?;
        fill(&pt, PAGE_SIZE, 77, 1, RW)?;
        for a in &addrs[4..] {
            assert_eq!(cur.next(&pt).map(|m| m.addr), Some(*a));
        }
        assert_eq!(cur.next(&pt), None);
        // A cursor starting inside a huge entry returns it.
        let mut cur = PtCursor::new(&pt, HUGE_SIZE + PAGE_SIZE, 2 * HUGE_SIZE)?;
        assert_eq!(cur.next(&pt).map(|m| m.order), Some(HUGE_ORDER));
        assert_eq!(cur.next(&pt), None);
        let mut n = 0;
        pt.walk(0, pt.limit(), |_| n += 1)?;
        assert_eq!(n, addrs.len());
        Ok(())
    }

    /// A table shared by the test (the writer) and a reader thread bound to
    /// another CPU, and what the reader saw.
    #[pin_data]
    struct Race {
        #[pin]
        pt: HmmPt<PageDirs>,
        /// The reader runs.
        started: Atomic<bool>,
        /// Where the writer is: [`BEFORE`] its loop, `i + 1` in its
        /// iteration `i`, [`AFTER`] it.
        progress: Atomic<u64>,
        /// What the reader saw, stored when it is stopped.
        seen: RaceSeen,
    }

    /// [`Race::progress`] before the writer's loop.
    const BEFORE: u64 = 0;
    /// [`Race::progress`] after the writer's loop.
    const AFTER: u64 = u64::MAX;

    /// Counts of the reader's lookups; but for `reads` and `bad`, only of
    /// lookups that started and ended while the writer was in its loop.
    struct RaceSeen {
        /// Lookups.
        reads: Atomic<u64>,
        /// Lookups while the writer was in its loop.
        during: Atomic<u64>,
        /// Lookups that saw the writer in another iteration than the
        /// lookup before: how often the two interleaved.
        switches: Atomic<u64>,
        /// Lookups that found no entry, and that found one.
        empty: Atomic<u64>,
        found: Atomic<u64>,
        /// Entries found writable, and write-protected.
        writable: Atomic<u64>,
        protected: Atomic<u64>,
        /// Huge entries found.
        huge: Atomic<u64>,
        /// Torn entries, by lookups and by walks (see [`race_ok`]).
        bad: Atomic<u64>,
    }

    impl RaceSeen {
        const fn new() -> Self {
            Self {
                reads: Atomic::new(0),
                during: Atomic::new(0),
                switches: Atomic::new(0),
                empty: Atomic::new(0),
                found: Atomic::new(0),
                writable: Atomic::new(0),
                protected: Atomic::new(0),
                huge: Atomic::new(0),
                bad: Atomic::new(0),
            }
        }
    }

    const RACE_START: u64 = GIB - HUGE_SIZE;
    const RACE_END: u64 = GIB + HUGE_SIZE;

    /// The only PFN the race test ever maps at `addr` (512-aligned at 2 MiB).
    fn race_pfn(addr: u64) -> u64 {
        addr / PAGE_SIZE + 512 * 12345
    }

    /// Whether `m` is something the race test's writer could have stored.
    ///
    /// A reader must see every slot as the writer last stored it, or as it
    /// was before; anything else is a torn entry: a 64-bit slot read half
    /// before and half after a store, a directory pointer taken for a leaf
    /// (or a leaf followed as a directory), a slot of a directory freed
    /// (and reused) under the reader, or a huge entry split into 4 KiB
    /// entries with the wrong PFNs. The writer stores at each address only
    /// [`race_pfn`] of it, as a 4 KiB or a 2 MiB entry, with `VALID | WRITE`
    /// (populate) or `VALID` (after a write-protect: `DIRTY` is never set),
    /// so a torn entry shows up as another PFN, other flags, another order,
    /// a misaligned mapping or one outside the race's range.
    fn race_ok(m: &PtMapping) -> bool {
        let f = m.entry.flags();
        (m.order == 0 || m.order == HUGE_ORDER)
            && m.addr % (PAGE_SIZE << m.order) == 0
            && m.addr >= RACE_START
            && m.end() <= RACE_END
            && m.entry.pfn() == race_pfn(m.addr)
            && (f == (PtFlags::VALID | PtFlags::WRITE) || f == PtFlags::VALID)
    }

    /// The reader: random lookups, and a walk every fourth step, until told
    /// to stop; counts what it saw into `Race::seen` then.
    ///
    /// # Safety
    ///
    /// `data` is a `Race` kept alive by the thread's creator until it has
    /// stopped the thread.
    unsafe extern "C" fn race_reader(data: *mut core::ffi::c_void) -> core::ffi::c_int {
        // SAFETY: By the function's safety requirement.
        let race = unsafe { &*data.cast::<Race>() };
        let mut rng = Rng(7);
        let (mut reads, mut during, mut switches) = (0u64, 0u64, 0u64);
        let (mut empty, mut found, mut writable, mut protected, mut huge) = (0, 0, 0, 0, 0);
        let mut bad = 0u64;
        let mut last = BEFORE;
        race.started.store(true, Release);
        while !crate::kunit_helpers::kunit_thread::should_stop() {
            let a = RACE_START + (rng.next() & 1023) * PAGE_SIZE;
            let before = race.progress.load(Acquire);
            let got = race.pt.lookup(a);
            let after = race.progress.load(Acquire);
            if let Some(m) = &got {
                let torn = !race_ok(m) || a < m.addr || a >= m.end() || m.pfn_at(a) != race_pfn(a);
                bad += u64::from(torn);
            }
            if before != BEFORE && after != AFTER {
                during += 1;
                switches += u64::from(after != last);
                last = after;
                match got {
                    None => empty += 1,
                    Some(m) => {
                        found += 1;
                        if m.entry.flags().contains(PtFlags::WRITE) {
                            writable += 1;
                        } else {
                            protected += 1;
                        }
                        huge += u64::from(m.order == HUGE_ORDER);
                    }
                }
            }
            if reads & 3 == 0 {
                let _ = race.pt.walk(RACE_START, RACE_END, |m| {
                    bad += u64::from(!race_ok(m));
                });
            }
            reads += 1;
        }
        let s = &race.seen;
        s.reads.store(reads, Relaxed);
        s.during.store(during, Relaxed);
        s.switches.store(switches, Relaxed);
        s.empty.store(empty, Relaxed);
        s.found.store(found, Relaxed);
        s.writable.store(writable, Relaxed);
        s.protected.store(protected, Relaxed);
        s.huge.store(huge, Relaxed);
        s.bad.store(bad, Relaxed);
        0
    }

    /// A reader on one CPU looks up and walks the table while the test, on
    /// another, populates, write-protects and clears it, freeing and
    /// allocating directories under the reader: no lookup may see a torn
    /// entry, and the reader must have seen the writer's every kind of
    /// entry while it wrote.
    #[test]
    fn readers_race_with_writer() -> Result {
        use crate::kunit_helpers::kunit_thread::{self, Thread};
        use kernel::time::{Delta, Instant, Monotonic};
        // The writer runs at least `MIN_ITERS` iterations, and at least
        // `WRITE_MS`: on an emulated CPU with KASAN, a second or so.
        const MIN_ITERS: u64 = 300;
        const MAX_ITERS: u64 = 100_000;
        const WRITE_MS: i64 = 300;

        let cpus = kunit_thread::two_cpus("readers_race_with_writer");
        assert!(cpus.is_some());
        let Some((writer_cpu, reader_cpu)) = cpus else {
            return Err(ENODEV);
        };
        let race = KBox::pin_init(
            try_pin_init!(Race {
                pt <- HmmPt::new(PtLevels::Four, PageDirs),
                started: Atomic::new(false),
                progress: Atomic::new(BEFORE),
                seen: RaceSeen::new(),
            }? Error),
            GFP_KERNEL,
        )?;
        let pinned = kunit_thread::pin_current(writer_cpu)?;
        let data = core::ptr::from_ref::<Race>(&race).cast_mut().cast();
        // SAFETY: `race_reader` runs until stopped; `race` outlives `reader`,
        // which is dropped (stopped) below before `race` is.
        let reader = unsafe { Thread::spawn_on(reader_cpu, race_reader, data, c"hmm_rs_reader") }?;
        // The writer starts only once the reader runs, on its own CPU.
        let started = kunit_thread::wait_until(5000, || race.started.load(Acquire));
        let writer = || -> Result<u64> {
            let pt = &race.pt;
            let mut rng = Rng(11);
            let t = Instant::<Monotonic>::now();
            let mut i = 0;
            while i < MIN_ITERS || (i < MAX_ITERS && t.elapsed() < Delta::from_millis(WRITE_MS)) {
                race.progress.store(i + 1, Release);
                // Populate a random run, sometimes a huge entry, write-protect
                // part of the range, then clear part (freeing directories
                // under the reader).
                let p = rng.below(1024 - 64);
                let n = 1 + rng.below(64);
                let a = RACE_START + p * PAGE_SIZE;
                let mut e = KVec::with_capacity(n as usize, GFP_KERNEL)?;
                for k in 0..n {
                    e.push(PtEntry::new(race_pfn(a + k * PAGE_SIZE), RW)?, GFP_KERNEL)?;
                }
                let mut res = pt.reserve(a, a + n * PAGE_SIZE, false, GFP_KERNEL)?;
                pt.lock().populate(&mut res, a, &e, |_| {})?;
                if rng.below(4) == 0 {
                    let h = RACE_START + rng.below(2) * HUGE_SIZE;
                    let mut res = pt.reserve(h, h + HUGE_SIZE, true, GFP_KERNEL)?;
                    let huge = PtEntry::new(race_pfn(h), RW)?;
                    pt.lock().populate_huge(&mut res, h, huge, |_| {})?;
                }
                let len = (1 + rng.below(600)) * PAGE_SIZE;
                let q = RACE_START + rng.below(1024) * PAGE_SIZE;
                pt.lock().update(q, (q + len).min(RACE_END), WP, |_| {})?;
                let q = RACE_START + rng.below(1024) * PAGE_SIZE;
                pt.lock()
                    .update(q, (q + len).min(RACE_END), PtFlags::NONE, |_| {})?;
                i += 1;
            }
            race.progress.store(AFTER, Release);
            pt.lock().clear(|_| {});
            Ok(i)
        };
        let result = if started { writer() } else { Err(ETIMEDOUT) };
        // Whatever happened, the reader must be gone before `race` is, and
        // before any assertion (a failed one ends this thread at once).
        drop(reader);
        drop(pinned);
        let s = &race.seen;
        let (reads, during, switches) = (
            s.reads.load(Relaxed),
            s.during.load(Relaxed),
            s.switches.load(Relaxed),
        );
        let (empty, found) = (s.empty.load(Relaxed), s.found.load(Relaxed));
        let (writable, protected) = (s.writable.load(Relaxed), s.protected.load(Relaxed));
        let (huge, bad) = (s.huge.load(Relaxed), s.bad.load(Relaxed));
        let (wcpu, rcpu) = (writer_cpu.as_u32(), reader_cpu.as_u32());
        let iters = *result.as_ref().unwrap_or(&0);
        pr_info!(
            "readers_race_with_writer: writer on CPU {wcpu}, reader on CPU {rcpu}: {iters} \
             iterations; {reads} reads, {during} while writing, {switches} writer switches \
             seen, {empty} empty, {found} found ({writable} writable, {protected} \
             write-protected, {huge} huge), {bad} torn\n"
        );
        assert!(started);
        result?;
        // No torn entry, by lookups or walks.
        assert_eq!(bad, 0);
        // The two overlapped: the reader read throughout the writer's run,
        // and saw it move on between its lookups, again and again.
        assert!(during >= 100);
        assert!(switches >= 10);
        // It saw the table in each state the writer makes.
        assert!(empty > 0);
        assert!(found > 0);
        assert!(writable > 0);
        assert!(protected > 0);
        assert_eq!(race.pt.stats().dirs, 0);
        Ok(())
    }

    /// xorshift64*: deterministic randomness for the model test.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    const WIN_PAGES: usize = 1024;

    /// The trivially correct model: per-page entries in four 4 MiB windows
    /// placed on the 0, 1 GiB, 512 GiB and top-of-table boundaries, and
    /// whether each 2 MiB half of a window is one huge entry.
    struct Model {
        bases: [u64; 4],
        pages: KVec<u64>,
        huge: [[bool; 2]; 4],
    }

    impl Model {
        fn new(limit: u64) -> Result<Self> {
            let mut pages = KVec::with_capacity(4 * WIN_PAGES, GFP_KERNEL)?;
            for _ in 0..4 * WIN_PAGES {
                pages.push(0, GFP_KERNEL)?;
            }
            Ok(Self {
                bases: [
                    0,
                    GIB - HUGE_SIZE,
                    512 * GIB - HUGE_SIZE,
                    limit - 2 * HUGE_SIZE,
                ],
                pages,
                huge: [[false; 2]; 4],
            })
        }

        fn addr(&self, w: usize, p: usize) -> u64 {
            self.bases[w] + (p as u64) * PAGE_SIZE
        }

        fn at(&mut self, w: usize, p: usize) -> &mut u64 {
            &mut self.pages[w * WIN_PAGES + p]
        }

        /// Expected directory count for the entries the model holds.
        fn dirs(&self) -> u64 {
            let mut seen = KVec::<(u32, u64)>::new();
            for w in 0..4 {
                for p in 0..WIN_PAGES {
                    if self.pages[w * WIN_PAGES + p] == 0 {
                        continue;
                    }
                    let a = self.addr(w, p);
                    let from = if self.huge[w][p / 512] { 1 } else { 0 };
                    for level in from..3 {
                        let key = (level, a >> level_shift(level + 1));
                        if !seen.contains(&key) {
                            seen.push(key, GFP_KERNEL).unwrap();
                        }
                    }
                }
            }
            seen.len() as u64
        }
    }

    /// A fixed PFN for page `p` of window `w`, 512-aligned at 2 MiB.
    fn canonical_pfn(w: usize, p: usize) -> u64 {
        (1 << 30) + (w * WIN_PAGES + p) as u64
    }

    fn entry_flags(rng: &mut Rng) -> PtFlags {
        let mut f = PtFlags::driver(rng.below(16));
        if rng.below(2) == 0 {
            f = f | PtFlags::WRITE;
        }
        if rng.below(4) == 0 {
            f = f | PtFlags::DEVICE;
        }
        f
    }

    fn sorted(mut v: KVec<PtDirty>) -> KVec<PtDirty> {
        v.sort_unstable_by_key(|d| d.addr);
        v
    }

    /// Compares every page of the model with the table, by lookup and by walk.
    fn check_all<A: DirAlloc>(pt: &HmmPt<A>, m: &Model) {
        let mut entries = 0;
        let mut pages = 0;
        for w in 0..4 {
            for p in 0..WIN_PAGES {
                let a = m.addr(w, p);
                let want = m.pages[w * WIN_PAGES + p];
                let got = pt.lookup(a).map_or(0, |mp| {
                    PtEntry(mp.entry.0).subpage((a - mp.addr) / PAGE_SIZE).0
                });
                assert_eq!(got, want);
                if want != 0 {
                    pages += 1;
                    if !m.huge[w][p / 512] || p % 512 == 0 {
                        entries += 1;
                    }
                }
            }
            let mut walked = 0;
            pt.walk(m.bases[w], m.addr(w, WIN_PAGES), |mp| {
                walked += 1 << mp.order
            })
            .unwrap();
            let valid = (0..WIN_PAGES)
                .filter(|p| m.pages[w * WIN_PAGES + p] != 0)
                .count();
            assert_eq!(walked, valid);
        }
        let s = pt.stats();
        assert_eq!((s.entries, s.pages, s.split_fallbacks), (entries, pages, 0));
        assert_eq!(s.dirs, m.dirs());
    }

    fn random_ops(seed: u64, ops: usize) -> Result {
        let pt = table(PtLevels::Four, PageDirs)?;
        let mut m = Model::new(pt.limit())?;
        let mut rng = Rng(seed);
        for op in 0..ops {
            let w = rng.below(4) as usize;
            let mut got = KVec::new();
            let mut want = KVec::new();
            match rng.below(100) {
                0..40 => {
                    let p = rng.below(WIN_PAGES as u64) as usize;
                    let n = 1 + rng.below(64.min(WIN_PAGES - p) as u64) as usize;
                    // Half the time each page's own PFN, so that pages are
                    // often refaulted to the same page (which keeps DIRTY).
                    let pfn = match rng.below(2) {
                        0 => canonical_pfn(w, p),
                        _ => rng.below(1 << 30),
                    };
                    let flags = entry_flags(&mut rng);
                    let e = entries(pfn, n as u64, flags)?;
                    let mut res = pt.reserve(m.addr(w, p), m.addr(w, p + n), false, GFP_KERNEL)?;
                    pt.lock().populate(&mut res, m.addr(w, p), &e, |d| {
                        got.push(d, GFP_ATOMIC).unwrap()
                    })?;
                    for (i, new) in e.iter().enumerate() {
                        let a = m.addr(w, p + i);
                        m.huge[w][(p + i) / 512] = false;
                        let old = *m.at(w, p + i);
                        let mut new = new.0 | PtFlags::VALID.0;
                        if old != 0 && PtEntry(old).pfn() == PtEntry(new).pfn() {
                            new |= old & PtFlags::DIRTY.0;
                        } else if old & PtFlags::DIRTY.0 != 0 {
                            want.push(
                                PtDirty {
                                    addr: a,
                                    entry: PtEntry(old),
                                    order: 0,
                                },
                                GFP_KERNEL,
                            )?;
                        }
                        *m.at(w, p + i) = new;
                    }
                }
                40..50 => {
                    let h = rng.below(2) as usize;
                    let p = h * 512;
                    let pfn = match rng.below(2) {
                        0 => canonical_pfn(w, p),
                        _ => rng.below(1 << 20) * 512,
                    };
                    let flags = entry_flags(&mut rng);
                    let entry = PtEntry::new(pfn, flags)?;
                    let a = m.addr(w, p);
                    let mut res = pt.reserve(a, a + HUGE_SIZE, true, GFP_KERNEL)?;
                    pt.lock()
                        .populate_huge(&mut res, a, entry, |d| got.push(d, GFP_ATOMIC).unwrap())?;
                    let first = *m.at(w, p);
                    let mut carry = 0;
                    if m.huge[w][h] {
                        if PtEntry(first).pfn() == pfn {
                            carry = first & PtFlags::DIRTY.0;
                        } else if first & PtFlags::DIRTY.0 != 0 {
                            want.push(
                                PtDirty {
                                    addr: a,
                                    entry: PtEntry(first),
                                    order: HUGE_ORDER,
                                },
                                GFP_KERNEL,
                            )?;
                        }
                    } else {
                        for i in 0..512 {
                            let old = *m.at(w, p + i);
                            if old & PtFlags::DIRTY.0 != 0 {
                                want.push(
                                    PtDirty {
                                        addr: m.addr(w, p + i),
                                        entry: PtEntry(old),
                                        order: 0,
                                    },
                                    GFP_KERNEL,
                                )?;
                            }
                        }
                    }
                    for i in 0..512 {
                        *m.at(w, p + i) = entry.subpage(i as u64).0 | carry;
                    }
                    m.huge[w][h] = true;
                }
                50..75 => {
                    let p = rng.below(WIN_PAGES as u64) as usize;
                    let n = 1 + rng.below(600.min(WIN_PAGES - p) as u64) as usize;
                    let keep = [PtFlags::NONE, WP, PtFlags::ALL][rng.below(3) as usize];
                    pt.lock()
                        .update(m.addr(w, p), m.addr(w, p + n), keep, |d| {
                            got.push(d, GFP_ATOMIC).unwrap()
                        })?;
                    let change = |old: u64| {
                        let mut f = old & keep.0 & PtFlags::ALL.0;
                        if f & (PtFlags::VALID.0 | PtFlags::WRITE.0)
                            != PtFlags::VALID.0 | PtFlags::WRITE.0
                        {
                            f &= !PtFlags::DIRTY.0;
                        }
                        if f & PtFlags::VALID.0 == 0 {
                            0
                        } else {
                            old & !PtFlags::ALL.0 | f
                        }
                    };
                    for h in 0..2 {
                        let (s, e) = (p.max(h * 512), (p + n).min(h * 512 + 512));
                        if s >= e {
                            continue;
                        }
                        let first = *m.at(w, h * 512);
                        if m.huge[w][h]
                            && first != 0
                            && change(first) != first
                            && s == h * 512
                            && e == h * 512 + 512
                        {
                            if first & PtFlags::DIRTY.0 != 0
                                && change(first) & PtFlags::DIRTY.0 == 0
                            {
                                want.push(
                                    PtDirty {
                                        addr: m.addr(w, h * 512),
                                        entry: PtEntry(first),
                                        order: HUGE_ORDER,
                                    },
                                    GFP_KERNEL,
                                )?;
                            }
                            for i in 0..512 {
                                let v = *m.at(w, h * 512 + i);
                                *m.at(w, h * 512 + i) = change(v);
                            }
                            continue;
                        }
                        if m.huge[w][h] && first != 0 && change(first) != first {
                            m.huge[w][h] = false;
                        }
                        if m.huge[w][h] {
                            continue;
                        }
                        for i in s..e {
                            let old = *m.at(w, i);
                            let new = change(old);
                            if old & PtFlags::DIRTY.0 != 0 && new & PtFlags::DIRTY.0 == 0 {
                                want.push(
                                    PtDirty {
                                        addr: m.addr(w, i),
                                        entry: PtEntry(old),
                                        order: 0,
                                    },
                                    GFP_KERNEL,
                                )?;
                            }
                            *m.at(w, i) = new;
                        }
                    }
                }
                75..97 => {
                    let p = rng.below(WIN_PAGES as u64) as usize;
                    let n = 1 + rng.below(600.min(WIN_PAGES - p) as u64) as usize;
                    pt.lock().set_dirty(m.addr(w, p), m.addr(w, p + n))?;
                    for h in 0..2 {
                        let (s, e) = (p.max(h * 512), (p + n).min(h * 512 + 512));
                        let (s, e) = if m.huge[w][h] && s < e {
                            (h * 512, h * 512 + 512)
                        } else {
                            (s, e)
                        };
                        for i in s..e {
                            let v = m.at(w, i);
                            if *v & PtFlags::WRITE.0 != 0 {
                                *v |= PtFlags::DIRTY.0;
                            }
                        }
                    }
                }
                _ => {
                    pt.lock().clear(|d| got.push(d, GFP_ATOMIC).unwrap());
                    for w in 0..4 {
                        for h in 0..2 {
                            let first = *m.at(w, h * 512);
                            let huge = m.huge[w][h];
                            for i in 0..512 {
                                let old = *m.at(w, h * 512 + i);
                                if old & PtFlags::DIRTY.0 != 0 && (!huge || i == 0) {
                                    let order = if huge { HUGE_ORDER } else { 0 };
                                    let addr = m.addr(w, h * 512 + i);
                                    want.push(
                                        PtDirty {
                                            addr,
                                            entry: PtEntry(if huge { first } else { old }),
                                            order,
                                        },
                                        GFP_KERNEL,
                                    )?;
                                }
                                *m.at(w, h * 512 + i) = 0;
                            }
                            m.huge[w][h] = false;
                        }
                    }
                    assert_eq!(pt.stats().dirs, 0);
                }
            }
            let (got, want) = (sorted(got), sorted(want));
            if got != want {
                pr_err!("seed {seed:#x} op {op}: dirty hand-back differs from the model\n");
            }
            assert_eq!(got, want);
            if op % 64 == 0 || op + 1 == ops {
                check_all(&pt, &m);
            }
        }
        Ok(())
    }

    #[test]
    fn matches_model_seed_1() -> Result {
        random_ops(0x9e37_79b9_7f4a_7c15, 3000)
    }

    #[test]
    fn matches_model_seed_2() -> Result {
        random_ops(0x0123_4567_89ab_cdef, 3000)
    }
}
