// SPDX-License-Identifier: GPL-2.0

//! KUnit suite `hmm_rs_mirror`: the tests of [`super`].

#[kernel::prelude::kunit_tests(hmm_rs_mirror)]
mod kunit {
    use super::super::fault::{FaultBufs, FaultWatch};
    use super::super::*;
    use crate::hmm_event::HmmEventType;
    use crate::hmm_pt::{HUGE_ORDER, HUGE_SIZE};
    use crate::kunit_helpers::kunit_mirror::mirror;
    use crate::kunit_helpers::kunit_mm::{self, PROT_NONE, PROT_READ, PROT_WRITE};
    use kernel::bindings;
    use kernel::current;

    const PAGE: usize = PAGE_SIZE as usize;

    /// The first byte of the page at `pfn`, read through the kernel mapping.
    fn first_byte(pfn: u64) -> u8 {
        // SAFETY: The test holds the page mapped in its mm.
        let page = unsafe { shim::hmm_rs_pfn_to_page(pfn as usize) };
        assert!(!page.is_null());
        // SAFETY: `page` is a valid lowmem page.
        let addr = unsafe { shim::hmm_rs_page_address(page) };
        // SAFETY: A page's first byte is readable through its kernel address.
        unsafe { *addr.cast::<u8>() }
    }

    #[test]
    fn fault_mirrors_the_right_pages_and_munmap_clears_them() -> Result {
        let n = 8;
        let addr = kunit_mm::mmap(n * PAGE, PROT_READ | PROT_WRITE)?;
        for i in 0..n {
            kunit_mm::write(addr + i * PAGE, &[i as u8 + 1])?;
        }
        let (seen, m) = mirror()?;
        let (start, end) = (addr as u64, (addr + n * PAGE) as u64);
        m.fault(HmmEventType::DeviceReadFault, start, end)?;
        for i in 0..n as u64 {
            let a = start + i * PAGE_SIZE;
            let map = m.table().lookup(a).ok_or(EFAULT)?;
            assert!(!map.entry.flags().contains(PtFlags::WRITE));
            assert_eq!(first_byte(map.pfn_at(a)), i as u8 + 1);
        }
        assert_eq!(m.table().stats().pages, n as u64);
        assert_eq!(m.hmm().events(HmmEventType::DeviceReadFault), 1);
        kunit_mm::munmap(addr, n * PAGE)?;
        // The device was told first, while the table still held the range.
        // (No lock guard may live across an assertion: a failing one exits.)
        let told = seen
            .events
            .lock()
            .contains(&(HmmEventType::Munmap, start, end, true));
        assert!(told);
        // ...and update_end() after the table let go of it.
        assert!(seen.munmap_ends.load(Relaxed) >= 1);
        assert_eq!(m.table().stats().entries, 0);
        assert_eq!(m.table().stats().dirs, 0);
        Ok(())
    }

    #[test]
    fn write_fault_dirties_the_folio_read_fault_does_not() -> Result {
        let addr = kunit_mm::mmap(2 * PAGE, PROT_READ | PROT_WRITE)?;
        kunit_mm::write(addr, &[1])?;
        kunit_mm::write(addr + PAGE, &[2])?;
        let (_seen, m) = mirror()?;
        let a = addr as u64;
        m.fault(HmmEventType::DeviceReadFault, a, a + PAGE_SIZE)?;
        m.fault(
            HmmEventType::DeviceWriteFault,
            a + PAGE_SIZE,
            a + 2 * PAGE_SIZE,
        )?;
        let w = m.table().lookup(a + PAGE_SIZE).ok_or(EFAULT)?;
        assert!(w.entry.flags().contains(PtFlags::WRITE | PtFlags::DIRTY));
        // Pin both pages so they outlive the unmap, then look at them.
        let mut pages = [core::ptr::null_mut(); 2];
        // SAFETY: `pages` has room for two pages of our own mapping.
        let pinned = unsafe { bindings::pin_user_pages_fast(addr, 2, 0, pages.as_mut_ptr()) };
        assert_eq!(pinned, 2);
        // SAFETY: Both pages are pinned.
        let before = unsafe {
            (
                shim::hmm_rs_page_dirty(pages[0]),
                shim::hmm_rs_page_dirty(pages[1]),
            )
        };
        let unmapped = kunit_mm::munmap(addr, 2 * PAGE);
        // SAFETY: As above.
        let after = unsafe {
            (
                shim::hmm_rs_page_dirty(pages[0]),
                shim::hmm_rs_page_dirty(pages[1]),
            )
        };
        // SAFETY: We pinned both above.
        unsafe { bindings::unpin_user_pages(pages.as_mut_ptr(), 2) };
        unmapped?;
        assert_eq!(before, (false, false));
        assert_eq!(after, (false, true));
        Ok(())
    }

    #[test]
    fn fault_errors() -> Result {
        let rw = kunit_mm::mmap(4 * PAGE, PROT_READ | PROT_WRITE)? as u64;
        let ro = kunit_mm::mmap(PAGE, PROT_READ)? as u64;
        let none = kunit_mm::mmap(PAGE, PROT_NONE)? as u64;
        let (_seen, m) = mirror()?;
        let (r, w) = (
            HmmEventType::DeviceReadFault,
            HmmEventType::DeviceWriteFault,
        );
        assert_eq!(m.fault(r, rw + 1, rw + PAGE_SIZE), Err(EINVAL));
        assert_eq!(m.fault(r, rw, rw), Err(EINVAL));
        assert_eq!(m.fault(r, rw + PAGE_SIZE, rw), Err(EINVAL));
        assert_eq!(m.fault(r, rw, !(PAGE_SIZE - 1)), Err(EINVAL));
        assert_eq!(
            m.fault(HmmEventType::Munmap, rw, rw + PAGE_SIZE),
            Err(EINVAL)
        );
        // Nothing is mapped just below the first page.
        assert_eq!(m.fault(r, 0, PAGE_SIZE), Err(EFAULT));
        assert_eq!(m.fault(w, ro, ro + PAGE_SIZE), Err(EPERM));
        m.fault(r, ro, ro + PAGE_SIZE)?;
        assert_eq!(m.fault(r, none, none + PAGE_SIZE), Err(EFAULT));
        assert_eq!(m.table().stats().entries, 1);
        Ok(())
    }

    #[test]
    fn thp_is_mirrored_with_a_huge_entry() -> Result {
        // 4 MiB holds one 2 MiB-aligned region; THP is "always" in the test
        // kernel, so a write fault there gets a PMD-mapped huge page.
        let addr = kunit_mm::mmap(2 * HUGE_SIZE as usize, PROT_READ | PROT_WRITE)? as u64;
        let huge = (addr + HUGE_SIZE - 1) & !(HUGE_SIZE - 1);
        let (_seen, m) = mirror()?;
        m.fault(HmmEventType::DeviceWriteFault, huge, huge + HUGE_SIZE)?;
        let s = m.table().stats();
        assert_eq!((s.entries, s.pages), (1, 512));
        let map = m.table().lookup(huge + 5 * PAGE_SIZE).ok_or(EFAULT)?;
        assert_eq!((map.addr, map.order), (huge, HUGE_ORDER));
        // A snapshot says the CPU maps it with a 2 MiB page.
        let mut snaps = [0u32; 2];
        m.snapshot(huge, huge + 2 * PAGE_SIZE, &mut snaps)?;
        assert_eq!(snaps[1] >> snap::ORDER_SHIFT, HUGE_ORDER);
        assert_eq!(snaps[1] & snap::WRITE, snap::WRITE);
        // Unmapping one page makes the CPU split its huge page first, which
        // invalidates all 2 MiB: the mirror drops the whole entry. Faulted
        // again, what is left is mirrored with 4 KiB entries.
        kunit_mm::munmap((huge + PAGE_SIZE) as usize, PAGE)?;
        assert_eq!(m.table().stats().pages, 0);
        assert_eq!(
            m.fault(HmmEventType::DeviceWriteFault, huge, huge + HUGE_SIZE),
            Err(EFAULT)
        );
        m.fault(
            HmmEventType::DeviceWriteFault,
            huge + 2 * PAGE_SIZE,
            huge + HUGE_SIZE,
        )?;
        let s = m.table().stats();
        assert_eq!((s.entries, s.pages), (510, 510));
        assert_eq!(
            m.table().lookup(huge + 3 * PAGE_SIZE).map(|m| m.order),
            Some(0)
        );
        Ok(())
    }

    #[test]
    fn register_unregister_1000_times_leaves_nothing() -> Result {
        let addr = kunit_mm::mmap(PAGE, PROT_READ | PROT_WRITE)? as u64;
        let (seen, m) = mirror()?;
        let hmm: *const crate::hmm_mm::HmmMm = m.hmm();
        for _ in 0..1000 {
            let (_s, other) = mirror()?;
            other.fault(HmmEventType::DeviceReadFault, addr, addr + PAGE_SIZE)?;
            assert!(core::ptr::eq(other.hmm(), hmm));
            assert_eq!(m.hmm().mirror_count(), 2);
        }
        assert_eq!(m.hmm().mirror_count(), 1);
        assert_eq!(m.hmm().events(HmmEventType::DeviceReadFault), 1000);
        // The survivor still works and saw none of the others' faults.
        m.fault(HmmEventType::DeviceReadFault, addr, addr + PAGE_SIZE)?;
        assert!(seen.events.lock().is_empty());
        Ok(())
    }

    #[test]
    fn invalidation_between_fault_in_and_commit_forces_a_retry() -> Result {
        let n = 4;
        let addr = kunit_mm::mmap(n * PAGE, PROT_READ | PROT_WRITE)?;
        let (_seen, m) = mirror()?;
        let (start, end) = (addr as u64, (addr + n * PAGE) as u64);
        let mut bufs = FaultBufs {
            hmm_pfns: KVec::new(),
            dma_buf: KVec::new(),
        };
        // The CPU mapping is replaced between the two halves of a fault: what
        // was faulted in is stale and must not be committed.
        // SAFETY: `w` is dropped at the end of the test, before `m`.
        let w = unsafe { FaultWatch::new(&m, start, end)? };
        let seq = m.fault_in(&w, start, end, true, &mut bufs.hmm_pfns)?;
        kunit_mm::remap(addr, n * PAGE)?;
        assert!(m
            .commit(&w, start, end, true, seq, &mut bufs, &mut |_, _| Ok(()))?
            .is_none());
        assert_eq!(m.table().stats().entries, 0);
        assert!(m.fault_races.load(Relaxed) >= 1);
        // With nothing in between, the same steps commit.
        let seq = m.fault_in(&w, start, end, true, &mut bufs.hmm_pfns)?;
        assert!(m
            .commit(&w, start, end, true, seq, &mut bufs, &mut |_, _| Ok(()))?
            .is_some());
        assert_eq!(m.table().stats().entries, n as u64);
        assert_eq!(stale_entries(&m, addr, n), 0);
        Ok(())
    }

    /// The racer of [`faults_racing_invalidations_leave_no_stale_entry`],
    /// and what it saw.
    struct Remapper {
        mm: *mut bindings::mm_struct,
        addr: usize,
        len: usize,
        /// The mirror faulting the range: a remap that bumps its
        /// `fault_races` invalidated one of its faults in flight.
        mirror: Arc<HmmMirror>,
        /// The racer runs.
        started: Atomic<bool>,
        /// Round the test asked for; the racer remaps once per round.
        go: Atomic<u64>,
        /// Last round the racer finished.
        done: Atomic<u64>,
        /// How long the test's last fault took, in ns: each round's remap
        /// waits another fraction of it first, to land all over a fault.
        fault_ns: Atomic<u64>,
        /// Remaps done, and remaps that failed.
        remaps: Atomic<u64>,
        remap_errors: Atomic<u64>,
        /// Remaps that invalidated a fault in flight.
        overlapped: Atomic<u64>,
    }

    /// Lets the other thread run while spinning on a flag.
    fn pause() {
        // SAFETY: Always safe in process context.
        unsafe { bindings::yield_() };
    }

    /// Remaps the range once per round, in the test's mm, until stopped.
    ///
    /// # Safety
    ///
    /// `data` is a [`Remapper`] that outlives the thread.
    unsafe extern "C" fn remap_each_round(data: *mut core::ffi::c_void) -> kernel::ffi::c_int {
        use kernel::sync::atomic::{Acquire, Release};
        use kernel::time::{Delta, Instant, Monotonic};
        // SAFETY: By the function's safety requirement.
        let r = unsafe { &*data.cast::<Remapper>() };
        // SAFETY: `r.mm` is the test's mm, alive until the test ends, which
        // is after this thread stopped.
        unsafe { bindings::kthread_use_mm(r.mm) };
        r.started.store(true, Release);
        while !crate::kunit_helpers::kunit_thread::should_stop() {
            let round = r.go.load(Acquire);
            if round == r.done.load(Relaxed) {
                pause();
                continue;
            }
            // Round k waits (13 k mod 32) / 32 of the last fault's time,
            // at most 10 ms: remaps land before, in and after the fault's
            // every step.
            let wait = (r.fault_ns.load(Relaxed) * (round * 13 % 32) / 32).min(10_000_000);
            let t = Instant::<Monotonic>::now();
            while t.elapsed() < Delta::from_nanos(wait as i64) {
                kernel::processor::cpu_relax();
            }
            // The invalidation runs its callbacks in this thread: a change
            // of `fault_races` across the remap is this remap's doing.
            let races = r.mirror.fault_races.load(Relaxed);
            match kunit_mm::remap(r.addr, r.len) {
                Ok(()) => r.remaps.add(1, Relaxed),
                Err(_) => r.remap_errors.add(1, Relaxed),
            }
            if r.mirror.fault_races.load(Relaxed) != races {
                r.overlapped.add(1, Relaxed);
            }
            r.done.store(round, Release);
        }
        // SAFETY: Paired with the `kthread_use_mm` above.
        unsafe { bindings::kthread_unuse_mm(r.mm) };
        0
    }

    /// Entries of `m` in `[addr, addr + n pages)` that are not the page the
    /// CPU maps there now.
    fn stale_entries(m: &HmmMirror, addr: usize, n: usize) -> usize {
        let mut stale = 0;
        for i in 0..n {
            let a = (addr + i * PAGE) as u64;
            let Some(map) = m.table().lookup(a) else {
                continue;
            };
            let mut page = core::ptr::null_mut();
            // SAFETY: One page of our own mapping, unpinned below.
            let pinned = unsafe { bindings::pin_user_pages_fast(a as usize, 1, 0, &mut page) };
            // SAFETY: Any PFN may be passed.
            let mirrored = unsafe { shim::hmm_rs_pfn_to_page(map.pfn_at(a) as usize) };
            if pinned != 1 || mirrored != page {
                stale += 1;
            }
            if pinned == 1 {
                // SAFETY: Pinned just above.
                unsafe { bindings::unpin_user_pages(&mut page, 1) };
            }
        }
        stale
    }

    /// Real concurrency, one remap racing one fault per round, the racer
    /// bound to another CPU than the faulting test. The window in which a
    /// missing sequence check would commit a stale entry is tiny
    /// (`hmm_range_fault` itself rechecks the sequence), so this is a smoke
    /// test; `invalidation_between_fault_in_and_commit_forces_a_retry`
    /// checks the protocol deterministically. It checks that the two did
    /// race: remaps invalidated faults in flight.
    #[test]
    fn faults_racing_invalidations_leave_no_stale_entry() -> Result {
        use crate::kunit_helpers::kunit_thread::{self, Thread};
        use kernel::sync::atomic::{Acquire, Release};
        use kernel::time::{Instant, Monotonic};
        const ROUNDS: u64 = 300;
        let n = 16;
        let cpus = kunit_thread::two_cpus("faults_racing_invalidations_leave_no_stale_entry");
        assert!(cpus.is_some());
        let Some((test_cpu, racer_cpu)) = cpus else {
            return Err(ENODEV);
        };
        let addr = kunit_mm::mmap(n * PAGE, PROT_READ | PROT_WRITE)?;
        let (_seen, m) = mirror()?;
        let task = current!();
        let racer = KBox::new(
            Remapper {
                mm: task.mm().ok_or(EINVAL)?.as_raw(),
                addr,
                len: n * PAGE,
                mirror: m.clone(),
                started: Atomic::new(false),
                go: Atomic::new(0),
                done: Atomic::new(0),
                fault_ns: Atomic::new(0),
                remaps: Atomic::new(0),
                remap_errors: Atomic::new(0),
                overlapped: Atomic::new(0),
            },
            GFP_KERNEL,
        )?;
        let pinned = kunit_thread::pin_current(test_cpu)?;
        let data = core::ptr::from_ref::<Remapper>(&racer).cast_mut().cast();
        // SAFETY: The racer loops until stopped; `racer` outlives `thread`.
        let thread =
            unsafe { Thread::spawn_on(racer_cpu, remap_each_round, data, c"hmm_rs_remap") }?;
        // The rounds start once the racer runs, on its own CPU.
        let started = kunit_thread::wait_until(5000, || racer.started.load(Acquire));
        let (races0, retries0) = (m.fault_races.load(Relaxed), m.fault_retries.load(Relaxed));
        let (start, end) = (addr as u64, (addr + n * PAGE) as u64);
        let (mut faulted, mut again, mut stale) = (0u64, 0u64, 0);
        let mut result = if started { Ok(()) } else { Err(ETIMEDOUT) };
        for round in 1..=ROUNDS {
            if result.is_err() {
                break;
            }
            // One remap races one fault; then, quiescent, the mirror must
            // hold only pages the CPU maps.
            racer.go.store(round, Release);
            let t = Instant::<Monotonic>::now();
            match m.fault(HmmEventType::DeviceWriteFault, start, end) {
                Ok(()) => faulted += 1,
                Err(EAGAIN) => again += 1,
                Err(e) => result = Err(e),
            }
            let took = u64::try_from(t.elapsed().as_nanos()).unwrap_or(0);
            racer.fault_ns.store(took, Relaxed);
            if !kunit_thread::wait_until(5000, || racer.done.load(Acquire) == round) {
                result = Err(ETIMEDOUT);
                break;
            }
            stale += stale_entries(&m, addr, n);
        }
        // The racer must be gone before any assertion: a failed one ends
        // this thread at once.
        drop(thread);
        drop(pinned);
        let races = m.fault_races.load(Relaxed) - races0;
        let retries = m.fault_retries.load(Relaxed) - retries0;
        let (remaps, remap_errors) = (racer.remaps.load(Relaxed), racer.remap_errors.load(Relaxed));
        let overlapped = racer.overlapped.load(Relaxed);
        let (tcpu, rcpu) = (test_cpu.as_u32(), racer_cpu.as_u32());
        pr_info!(
            "faults_racing_invalidations: test on CPU {tcpu}, racer on CPU {rcpu}: {faulted} of \
             {ROUNDS} faults done, {again} EAGAIN; {remaps} remaps ({remap_errors} failed), \
             {overlapped} of them during a fault; fault races {races}, retries {retries}; \
             {stale} stale\n"
        );
        assert!(started);
        result?;
        // No fault left an entry of a page the CPU no longer maps.
        assert_eq!(stale, 0);
        assert!(faulted > 0);
        // The racer remapped every round, and often enough while a fault
        // was in flight, which the mirror heard as fault races.
        assert_eq!(remaps, ROUNDS);
        assert!(overlapped >= 10);
        assert!(races >= overlapped);
        Ok(())
    }

    #[test]
    fn snapshot_shows_what_the_cpu_maps_without_faulting() -> Result {
        let addr = kunit_mm::mmap(4 * PAGE, PROT_READ | PROT_WRITE)?;
        let none = kunit_mm::mmap(PAGE, PROT_NONE)? as u64;
        kunit_mm::write(addr, &[1])?;
        // Reading an untouched anonymous page maps the shared zero page.
        let mut byte = [0u8; 1];
        kernel::uaccess::UserSlice::new(kernel::uaccess::UserPtr::from_addr(addr + PAGE), 1)
            .reader()
            .read_slice(&mut byte)?;
        kunit_mm::munmap(addr + 3 * PAGE, PAGE)?;
        let (_seen, m) = mirror()?;
        let a = addr as u64;
        let mut out = [0u32; 4];
        m.snapshot(a, a + 4 * PAGE_SIZE, &mut out)?;
        assert_eq!(out[0], snap::VALID | snap::WRITE);
        assert_eq!(out[1], snap::VALID | snap::ZERO);
        assert_eq!(out[2], 0);
        assert_eq!(out[3], snap::ERROR);
        let mut one = [0u32; 1];
        m.snapshot(none, none + PAGE_SIZE, &mut one)?;
        assert_eq!(one[0], snap::ERROR);
        // Nothing was faulted in or mirrored.
        assert_eq!(m.table().stats().entries, 0);
        m.snapshot(a, a + 4 * PAGE_SIZE, &mut out)?;
        assert_eq!(out[2], 0);
        assert_eq!(m.snapshot(a, a + PAGE_SIZE, &mut out), Err(EINVAL));
        Ok(())
    }

    #[test]
    fn exclusive_access_ends_when_the_cpu_touches_the_page() -> Result {
        let addr = kunit_mm::mmap(2 * PAGE, PROT_READ | PROT_WRITE)?;
        kunit_mm::write(addr, &[7])?;
        kunit_mm::write(addr + PAGE, &[8])?;
        let (_seen, m) = mirror()?;
        let a = addr as u64;
        m.make_exclusive(a, a + 2 * PAGE_SIZE)?;
        for (i, byte) in [7u8, 8].into_iter().enumerate() {
            let map = m.table().lookup(a + i as u64 * PAGE_SIZE).ok_or(EFAULT)?;
            assert!(map
                .entry
                .flags()
                .contains(PtFlags::EXCLUSIVE | PtFlags::WRITE));
            assert_eq!(first_byte(map.pfn_at(map.addr)), byte);
        }
        // The CPU writes the first page: its exclusive entry goes.
        kunit_mm::write(addr, &[9])?;
        assert!(m.table().lookup(a).is_none());
        assert!(m.table().lookup(a + PAGE_SIZE).is_some());
        // Read-only memory cannot be made exclusive.
        let ro = kunit_mm::mmap(PAGE, PROT_READ)? as u64;
        assert!(m.make_exclusive(ro, ro + PAGE_SIZE).is_err());
        assert_eq!(m.make_exclusive(a + 1, a + PAGE_SIZE), Err(EINVAL));
        Ok(())
    }

    #[test]
    fn stats_show_the_mirror_and_its_mm() -> Result {
        use core::fmt::Write;
        let addr = kunit_mm::mmap(2 * PAGE, PROT_READ | PROT_WRITE)? as u64;
        let (_seen, m) = mirror()?;
        m.fault(HmmEventType::DeviceReadFault, addr, addr + 2 * PAGE_SIZE)?;
        let mut text = crate::debugfs::TextBuf(KVec::new());
        write_stats(&mut text).map_err(|_| ENOMEM)?;
        let text = core::str::from_utf8(&text.0).map_err(|_| EINVAL)?;
        let mut want = crate::debugfs::TextBuf(KVec::new());
        write!(want, "mirror {}: entries 2 pages 2 ", m.id).map_err(|_| ENOMEM)?;
        let want = core::str::from_utf8(&want.0).map_err(|_| EINVAL)?;
        assert!(text.contains(want));
        assert!(text.contains(" faults 1 "));
        assert!(text.contains(" device_read_fault 1 "));
        Ok(())
    }

    /// A request of `npages` from page `i` of `addr`.
    fn req(addr: u64, i: u64, access: Access, npages: u32) -> FaultRequest {
        FaultRequest {
            addr: addr + i * PAGE_SIZE,
            access,
            npages,
        }
    }

    #[test]
    fn fault_batch_merges_into_one_window_write_wins() -> Result {
        // 8 pages within one 2 MiB block, of 16 that may straddle two.
        let map16 = kunit_mm::mmap(16 * PAGE, PROT_READ | PROT_WRITE)? as u64;
        let boundary = (map16 + 16 * PAGE_SIZE) & !(HUGE_SIZE - 1);
        let addr = if boundary <= map16 || boundary - map16 >= 8 * PAGE_SIZE {
            map16
        } else {
            boundary
        };
        for i in 0..8 {
            kunit_mm::write(addr as usize + i * PAGE, &[i as u8 + 1])?;
        }
        let (_seen, m) = mirror()?;
        let (r, w) = (Access::Read, Access::Write);
        // Unsorted, a duplicate, an overlap, a read and a write of page 2.
        let reqs = [
            req(addr, 5, r, 1),
            req(addr, 2, r, 0),
            req(addr, 1, r, 3),
            req(addr, 2, w, 1),
            req(addr, 5, r, 1),
            req(addr, 0, r, 1),
        ];
        let mut res = [Err(EIO); 6];
        let faults = m.faults.load(Relaxed);
        m.fault_batch(&reqs, &mut res)?;
        assert_eq!(res, [Ok(()); 6]);
        // One window, pages 0 to 5: one fault.
        assert_eq!(m.faults.load(Relaxed) - faults, 1);
        for i in 0..6 {
            let a = addr + i * PAGE_SIZE;
            let map = m.table().lookup(a).ok_or(EFAULT)?;
            assert_eq!(first_byte(map.pfn_at(a)), i as u8 + 1);
        }
        // Write wins: page 2 is writable for the device.
        let map = m.table().lookup(addr + 2 * PAGE_SIZE).ok_or(EFAULT)?;
        assert!(map.entry.flags().contains(PtFlags::WRITE));
        // Nothing beyond the highest page requested.
        assert!(m.table().lookup(addr + 6 * PAGE_SIZE).is_none());
        assert_eq!(m.fault_batch(&[], &mut []), Ok(()));
        Ok(())
    }

    #[test]
    fn fault_batch_one_bad_request_fails_alone() -> Result {
        let n = 8;
        let addr = kunit_mm::mmap(n * PAGE, PROT_READ | PROT_WRITE)? as u64;
        let ro = kunit_mm::mmap(PAGE, PROT_READ)? as u64;
        kunit_mm::munmap(addr as usize + 3 * PAGE, PAGE)?;
        let (_seen, m) = mirror()?;
        let (r, w) = (Access::Read, Access::Write);
        let reqs = [
            req(addr, 7, r, 1),
            req(addr, 3, r, 1),
            req(addr, 1, w, 1),
            req(ro, 0, w, 1),
            req(addr, 4, w, 2),
            req(1 << 60, 0, r, 1),
            req(addr + 1, 0, r, 1),
            req(ro, 0, r, 1),
            req(!(PAGE_SIZE - 1), 0, r, 2),
            req(addr, 1, r, 1),
        ];
        let mut res = [Ok(()); 10];
        m.fault_batch(&reqs, &mut res)?;
        assert_eq!(
            res,
            [
                Ok(()),
                Err(EFAULT),
                Ok(()),
                Err(EPERM),
                Ok(()),
                Err(EINVAL),
                Err(EINVAL),
                Ok(()),
                Err(EINVAL),
                Ok(())
            ]
        );
        // Faulted alone (the window failed), the read of page 1 did not
        // take away the write access its write got: write wins.
        let map = m.table().lookup(addr + PAGE_SIZE).ok_or(EFAULT)?;
        assert!(map.entry.flags().contains(PtFlags::WRITE));
        // Each result is the fault's of that request alone.
        for (q, res) in reqs.iter().zip(res) {
            let end = q.addr.wrapping_add(u64::from(q.npages) * PAGE_SIZE);
            assert_eq!(m.fault(q.access.event(), q.addr, end), res);
        }
        for i in [1, 4, 5, 7] {
            assert!(m.table().lookup(addr + i * PAGE_SIZE).is_some());
        }
        assert!(m.table().lookup(addr + 3 * PAGE_SIZE).is_none());
        // The batch as a whole: lengths differ, or too long.
        assert_eq!(m.fault_batch(&reqs, &mut res[..1]), Err(EINVAL));
        let mut many = KVec::new();
        many.resize(FAULT_BATCH_MAX + 1, reqs[0], GFP_KERNEL)?;
        let mut out = KVec::new();
        out.resize(FAULT_BATCH_MAX + 1, Ok(()), GFP_KERNEL)?;
        assert_eq!(m.fault_batch(&many, &mut out), Err(EINVAL));
        many.truncate(FAULT_BATCH_MAX);
        out.truncate(FAULT_BATCH_MAX);
        m.fault_batch(&many, &mut out)?;
        assert!(out.iter().all(|r| r.is_ok()));
        Ok(())
    }

    #[test]
    fn fault_batch_grows_a_window_to_a_huge_page() -> Result {
        let addr = kunit_mm::mmap(2 * HUGE_SIZE as usize, PROT_READ | PROT_WRITE)? as u64;
        let huge = (addr + HUGE_SIZE - 1) & !(HUGE_SIZE - 1);
        // The CPU's write fault gets a PMD-mapped huge page (THP "always").
        kunit_mm::write(huge as usize, &[7])?;
        let (_seen, m) = mirror()?;
        let reqs = [req(huge, 9, Access::Read, 1), req(huge, 5, Access::Read, 1)];
        let mut res = [Err(EIO); 2];
        m.fault_batch(&reqs, &mut res)?;
        assert_eq!(res, [Ok(()); 2]);
        let s = m.table().stats();
        assert_eq!((s.entries, s.pages), (1, 512));
        let map = m.table().lookup(huge + 5 * PAGE_SIZE).ok_or(EFAULT)?;
        assert_eq!((map.addr, map.order), (huge, HUGE_ORDER));
        Ok(())
    }
}
