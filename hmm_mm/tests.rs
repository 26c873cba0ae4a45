// SPDX-License-Identifier: GPL-2.0

//! KUnit suite `hmm_rs_core`: the tests of [`super`].

#[kernel::prelude::kunit_tests(hmm_rs_core)]
mod kunit {
    use super::super::notifier::{hmm_invalidate_range_start, LIVE_MMS};
    use super::super::*;
    use crate::{
        hmm_event::HmmEventType,
        hmm_mirror::{devmem::Owner, HmmMirror, MirrorOps, Update},
        hmm_pt::PAGE_SIZE,
        kunit_helpers::{
            kunit_mirror::mirror,
            kunit_mm::{self, PROT_READ, PROT_WRITE},
        },
    };
    use kernel::sync::atomic::Acquire;
    use kernel::time::Delta;
    use kernel::{
        current, new_spinlock,
        sync::{Arc, SpinLock},
    };

    const PAGE: usize = PAGE_SIZE as usize;

    /// The range of an munmap of the page at `addr` of `mm`, as mm would
    /// hand it to the notifier.
    fn unmap_range(
        mm: &kernel::mm::MmWithUser,
        addr: u64,
        blockable: bool,
    ) -> bindings::mmu_notifier_range {
        bindings::mmu_notifier_range {
            mm: mm.as_raw(),
            start: addr as usize,
            end: (addr + PAGE_SIZE) as usize,
            flags: if blockable {
                bindings::MMU_NOTIFIER_RANGE_BLOCKABLE
            } else {
                0
            },
            event: bindings::mmu_notifier_event_MMU_NOTIFY_UNMAP,
            owner: core::ptr::null_mut(),
        }
    }

    /// Lets the other thread run while spinning on a flag.
    fn pause() {
        // SAFETY: Always safe in process context.
        unsafe { bindings::yield_() };
    }

    #[test]
    fn one_notifier_per_mm_and_none_left_after_1000_cycles() -> Result {
        kunit_mm::attach()?;
        let task = current!();
        let mm = task.mm().ok_or(EINVAL)?;
        // Nothing else uses hmm-rs while it loads: the earlier tests' mms
        // must all go, once their callbacks ran.
        assert!(wait_for_freed_notifiers(0, Delta::from_secs(10)));
        let before = LIVE_MMS.load(Acquire);
        for _ in 0..1000 {
            let a = HmmMmRef::get(mm)?;
            let b = HmmMmRef::get(mm)?;
            // One notifier per mm. (Dropped ones are freed only after an SRCU
            // grace period, so more than one may exist until then.)
            assert!(core::ptr::eq(&*a, &*b));
            drop(a);
            drop(b);
        }
        assert!(wait_for_freed_notifiers(before, Delta::from_secs(10)));
        Ok(())
    }

    #[test]
    fn munmap_is_seen_as_munmap() -> Result {
        let len = 16 * 4096;
        let addr = kunit_mm::mmap(len, kunit_mm::PROT_READ | kunit_mm::PROT_WRITE)?;
        let task = current!();
        let hmm = HmmMmRef::get(task.mm().ok_or(EINVAL)?)?;
        let before = hmm.events(HmmEventType::Munmap);
        kunit_mm::munmap(addr, len)?;
        assert!(hmm.events(HmmEventType::Munmap) > before);
        Ok(())
    }

    /// A device that cannot be stopped without sleeping.
    struct SleepsToStop;

    impl MirrorOps for SleepsToStop {
        fn update(
            &self,
            _mirror: &HmmMirror,
            _event: &HmmEvent,
            blockable: bool,
        ) -> Result<Update> {
            if blockable {
                Ok(Update::Done)
            } else {
                Err(EAGAIN)
            }
        }

        fn release(&self, _mirror: &HmmMirror) {}
    }

    /// The OOM reaper's kind of invalidation (it cannot block) cannot be
    /// triggered from a test, so the core's callback is called directly.
    #[test]
    fn non_blockable_invalidations_ask_for_a_retry_instead_of_sleeping() -> Result {
        let addr = kunit_mm::mmap(PAGE, PROT_READ | PROT_WRITE)? as u64;
        let task = current!();
        let mm = task.mm().ok_or(EINVAL)?;
        let m = HmmMirror::register(mm, Owner::NONE, KBox::new(SleepsToStop, GFP_KERNEL)?)?;
        m.fault(HmmEventType::DeviceReadFault, addr, addr + PAGE_SIZE)?;
        let mut range = unmap_range(mm, addr, false);
        // `HmmMm` starts with its notifier.
        let notifier = core::ptr::from_ref(m.hmm()).cast_mut().cast();
        let busy = m.hmm().mirrors.lock();
        // SAFETY: Our live notifier and a valid range of its mm.
        let ret = unsafe { hmm_invalidate_range_start(notifier, &range) };
        drop(busy);
        // The mirror list was busy: a retry, not a wait.
        assert_eq!(ret, EAGAIN.to_errno());
        // SAFETY: As above.
        let ret = unsafe { hmm_invalidate_range_start(notifier, &range) };
        // The driver asked for a retry: the mirror keeps its entry.
        assert_eq!(ret, EAGAIN.to_errno());
        assert!(m.table().lookup(addr).is_some());
        range.flags = bindings::MMU_NOTIFIER_RANGE_BLOCKABLE;
        // SAFETY: As above.
        let ret = unsafe { hmm_invalidate_range_start(notifier, &range) };
        assert_eq!(ret, 0);
        assert!(m.table().lookup(addr).is_none());
        Ok(())
    }

    /// What one of several two-pass devices saw: (which device, the pass:
    /// 0 update, 1 update_finish, 2 update_end, whether its table still
    /// held the event's start).
    type PassLog = Arc<SpinLock<KVec<(u8, u8, bool)>>>;

    /// A device that records the passes it is taken through; `pending`:
    /// its update() answers pending; `stuck`: its update_finish() cannot
    /// finish without sleeping.
    struct TwoPass {
        id: u8,
        pending: bool,
        stuck: bool,
        log: PassLog,
    }

    impl TwoPass {
        fn note(&self, mirror: &HmmMirror, event: &HmmEvent, pass: u8) -> Result {
            let held = mirror.table().lookup(event.start).is_some();
            self.log.lock().push((self.id, pass, held), GFP_ATOMIC)?;
            Ok(())
        }
    }

    impl MirrorOps for TwoPass {
        fn update(&self, mirror: &HmmMirror, event: &HmmEvent, _blockable: bool) -> Result<Update> {
            self.note(mirror, event, 0)?;
            Ok(if self.pending {
                Update::Pending
            } else {
                Update::Done
            })
        }

        fn update_finish(&self, mirror: &HmmMirror, event: &HmmEvent, blockable: bool) -> Result {
            self.note(mirror, event, 1)?;
            if self.stuck && !blockable {
                return Err(EAGAIN);
            }
            Ok(())
        }

        fn update_end(&self, mirror: &HmmMirror, event: &HmmEvent) {
            let _ = self.note(mirror, event, 2);
        }

        fn release(&self, _mirror: &HmmMirror) {}
    }

    /// Mirrors of the current mm with `TwoPass` devices: (pending, stuck)
    /// for each, all holding `[addr, addr + PAGE)`.
    fn two_pass_mirrors(
        addr: u64,
        devices: &[(bool, bool)],
        log: &PassLog,
    ) -> Result<KVec<Arc<HmmMirror>>> {
        let task = current!();
        let mm = task.mm().ok_or(EINVAL)?;
        let mut mirrors = KVec::new();
        for (id, &(pending, stuck)) in devices.iter().enumerate() {
            let ops = TwoPass {
                id: id as u8,
                pending,
                stuck,
                log: log.clone(),
            };
            let m = HmmMirror::register(mm, Owner::NONE, KBox::new(ops, GFP_KERNEL)?)?;
            m.fault(HmmEventType::DeviceReadFault, addr, addr + PAGE_SIZE)?;
            mirrors.push(m, GFP_KERNEL)?;
        }
        Ok(mirrors)
    }

    #[test]
    fn invalidations_start_every_device_then_wait_then_change_the_tables() -> Result {
        let addr = kunit_mm::mmap(PAGE, PROT_READ | PROT_WRITE)? as u64;
        let log: PassLog = Arc::pin_init(new_spinlock!(KVec::new()), GFP_KERNEL)?;
        // Devices 0 and 2 finish in a second pass, 1 at once.
        let mirrors =
            two_pass_mirrors(addr, &[(true, false), (false, false), (true, false)], &log)?;
        log.lock().clear();
        kunit_mm::munmap(addr as usize, PAGE)?;
        let seen = core::mem::take(&mut *log.lock());
        // Device 1, done at once, is applied at once; 0 and 2 are waited
        // for after both started, and keep their entries until then.
        let want = [
            (0, 0, true),
            (1, 0, true),
            (1, 2, false),
            (2, 0, true),
            (0, 1, true),
            (2, 1, true),
            (0, 2, false),
            (2, 2, false),
        ];
        assert_eq!(&seen[..], &want[..]);
        assert_eq!(mirrors[0].hmm().two_pass.load(Relaxed), 1);
        Ok(())
    }

    #[test]
    fn a_device_that_cannot_finish_without_sleeping_keeps_its_entries() -> Result {
        let addr = kunit_mm::mmap(PAGE, PROT_READ | PROT_WRITE)? as u64;
        let log: PassLog = Arc::pin_init(new_spinlock!(KVec::new()), GFP_KERNEL)?;
        // Device 1 is pending and cannot finish without sleeping.
        let mirrors = two_pass_mirrors(addr, &[(true, false), (true, true)], &log)?;
        let task = current!();
        let mm = task.mm().ok_or(EINVAL)?;
        let mut range = unmap_range(mm, addr, false);
        let notifier = core::ptr::from_ref(mirrors[0].hmm()).cast_mut().cast();
        log.lock().clear();
        // SAFETY: Our live notifier and a valid range of its mm.
        let ret = unsafe { hmm_invalidate_range_start(notifier, &range) };
        assert_eq!(ret, EAGAIN.to_errno());
        // Device 0 finished and lost its entry; device 1 keeps its own, and
        // both were told the invalidation ended.
        assert!(mirrors[0].table().lookup(addr).is_none());
        assert!(mirrors[1].table().lookup(addr).is_some());
        let ends = log.lock().iter().filter(|e| e.1 == 2).count();
        assert_eq!(ends, 2);
        // Blockable, it goes through.
        range.flags = bindings::MMU_NOTIFIER_RANGE_BLOCKABLE;
        // SAFETY: As above.
        let ret = unsafe { hmm_invalidate_range_start(notifier, &range) };
        assert_eq!(ret, 0);
        assert!(mirrors[1].table().lookup(addr).is_none());
        Ok(())
    }

    /// How far a [`SlowFinish`] device got: in `update_finish` (1), out of
    /// it (2).
    type FinishState = Arc<Atomic<u64>>;

    /// A device whose `update_finish` takes 200 ms.
    struct SlowFinish(FinishState);

    impl MirrorOps for SlowFinish {
        fn update(
            &self,
            _mirror: &HmmMirror,
            _event: &HmmEvent,
            _blockable: bool,
        ) -> Result<Update> {
            Ok(Update::Pending)
        }

        fn update_finish(
            &self,
            _mirror: &HmmMirror,
            _event: &HmmEvent,
            _blockable: bool,
        ) -> Result {
            self.0.store(1, Relaxed);
            kernel::time::delay::fsleep(kernel::time::Delta::from_millis(200));
            self.0.store(2, Relaxed);
            Ok(())
        }

        fn release(&self, _mirror: &HmmMirror) {}
    }

    /// One blockable munmap invalidation of `range`, run on a kthread.
    struct Invalidator {
        notifier: *mut bindings::mmu_notifier,
        range: bindings::mmu_notifier_range,
        /// 1 once it returned 0, 2 once it returned an error.
        result: Atomic<u64>,
    }

    /// Runs the invalidation once, then waits to be stopped.
    ///
    /// # Safety
    ///
    /// `data` is an [`Invalidator`] of a live notifier, valid until the
    /// thread is stopped.
    unsafe extern "C" fn invalidate_once(data: *mut core::ffi::c_void) -> kernel::ffi::c_int {
        // SAFETY: By the caller's guarantee.
        let inv = unsafe { &*data.cast::<Invalidator>() };
        // SAFETY: A live notifier and a valid range of its mm.
        let ret = unsafe { hmm_invalidate_range_start(inv.notifier, &inv.range) };
        inv.result.store(if ret == 0 { 1 } else { 2 }, Relaxed);
        while !crate::kunit_helpers::kunit_thread::should_stop() {
            pause();
        }
        0
    }

    #[test]
    fn a_mirror_registered_during_an_invalidation_waits_for_its_passes() -> Result {
        let addr = kunit_mm::mmap(PAGE, PROT_READ | PROT_WRITE)? as u64;
        let state: FinishState = Arc::new(Atomic::new(0), GFP_KERNEL)?;
        let task = current!();
        let mm = task.mm().ok_or(EINVAL)?;
        let ops = KBox::new(SlowFinish(state.clone()), GFP_KERNEL)?;
        let slow = HmmMirror::register(mm, Owner::NONE, ops)?;
        slow.fault(HmmEventType::DeviceReadFault, addr, addr + PAGE_SIZE)?;
        let inv = KBox::new(
            Invalidator {
                notifier: core::ptr::from_ref(slow.hmm()).cast_mut().cast(),
                range: unmap_range(mm, addr, true),
                result: Atomic::new(0),
            },
            GFP_KERNEL,
        )?;
        let data = core::ptr::from_ref::<Invalidator>(&inv).cast_mut().cast();
        // SAFETY: The thread waits to be stopped; `inv` outlives `thread`.
        let thread = unsafe {
            crate::kunit_helpers::kunit_thread::Thread::spawn(
                invalidate_once,
                data,
                c"hmm_rs_inval",
            )
        }?;
        while state.load(Relaxed) == 0 {
            pause();
        }
        // The invalidation is in its second pass, the mirror list locked: a
        // new mirror waits for its passes to end, and is not part of it.
        let (seen, _late) = mirror()?;
        let after_finish = state.load(Relaxed);
        let told = seen.events.lock().len();
        assert_eq!(after_finish, 2);
        assert_eq!(told, 0);
        while inv.result.load(Relaxed) == 0 {
            pause();
        }
        drop(thread);
        assert_eq!(inv.result.load(Relaxed), 1);
        assert!(slow.table().lookup(addr).is_none());
        Ok(())
    }

    #[test]
    fn mirrors_of_one_mm_share_its_notifier() -> Result {
        let addr = kunit_mm::mmap(PAGE, PROT_READ | PROT_WRITE)?;
        let (seen1, m1) = mirror()?;
        let (seen2, m2) = mirror()?;
        assert!(core::ptr::eq(m1.hmm(), m2.hmm()));
        assert_eq!(m1.hmm().mirror_count(), 2);
        kunit_mm::munmap(addr, PAGE)?;
        for seen in [&seen1, &seen2] {
            let told = seen
                .events
                .lock()
                .iter()
                .any(|e| e.0 == HmmEventType::Munmap);
            assert!(told);
        }
        drop(m2);
        assert_eq!(m1.hmm().mirror_count(), 1);
        Ok(())
    }
}
