// SPDX-License-Identifier: GPL-2.0

//! Helpers of the KUnit tests: an mm for the test thread, and kernel
//! threads for tests that need a second CPU.

#[cfg(CONFIG_KUNIT)]
pub(crate) mod kunit_mm {
    use kernel::{bindings, error::to_result, prelude::*, uaccess};

    // From the uapi <asm-generic/mman-common.h>, which `bindings` lacks.
    pub(crate) const PROT_NONE: usize = 0x0;
    pub(crate) const PROT_READ: usize = 0x1;
    pub(crate) const PROT_WRITE: usize = 0x2;
    const MAP_PRIVATE: usize = 0x02;
    const MAP_FIXED: usize = 0x10;
    const MAP_ANONYMOUS: usize = 0x20;

    /// Gives the test thread an mm of its own (KUnit frees it afterwards).
    pub(crate) fn attach() -> Result {
        // SAFETY: Called from a KUnit test thread.
        to_result(unsafe { bindings::kunit_attach_mm() })
    }

    /// Maps `len` bytes of private anonymous memory with `prot`.
    pub(crate) fn mmap(len: usize, prot: usize) -> Result<usize> {
        attach()?;
        // SAFETY: We run in a KUnit test with an mm attached.
        let addr = unsafe {
            bindings::kunit_vm_mmap(
                bindings::kunit_get_current_test(),
                core::ptr::null_mut(),
                0,
                len,
                prot,
                MAP_ANONYMOUS | MAP_PRIVATE,
                0,
            )
        };
        // kunit_vm_mmap() returns 0 on failure.
        if addr == 0 {
            return Err(ENOMEM);
        }
        Ok(addr)
    }

    /// Replaces `[addr, addr + len)` of the current mm with fresh read-write
    /// anonymous memory.
    pub(crate) fn remap(addr: usize, len: usize) -> Result {
        // SAFETY: A fixed anonymous mapping of our own range.
        let got = unsafe {
            bindings::vm_mmap(
                core::ptr::null_mut(),
                addr,
                len,
                PROT_READ | PROT_WRITE,
                MAP_FIXED | MAP_ANONYMOUS | MAP_PRIVATE,
                0,
            )
        };
        if got != addr {
            return Err(ENOMEM);
        }
        Ok(())
    }

    /// Unmaps `[addr, addr + len)` of the test's mm.
    pub(crate) fn munmap(addr: usize, len: usize) -> Result {
        // SAFETY: Any range may be passed; the test owns its mm.
        to_result(unsafe { bindings::vm_munmap(addr, len) })
    }

    /// Writes `data` at user address `addr`, as the CPU.
    pub(crate) fn write(addr: usize, data: &[u8]) -> Result {
        uaccess::UserSlice::new(uaccess::UserPtr::from_addr(addr), data.len())
            .writer()
            .write_slice(data)
    }
}

/// Kernel threads for KUnit tests that need a second CPU, and the CPUs to
/// run them on.
#[cfg(CONFIG_KUNIT)]
pub(crate) mod kunit_thread {
    use core::ffi::c_void;
    use kernel::{
        bindings,
        cpu::CpuId,
        cpumask::{Cpumask, CpumaskVar},
        ffi::c_int,
        prelude::*,
        task::Task,
        time::{Delta, Instant, Monotonic},
    };

    /// The mask of online CPUs (`cpu_online_mask`).
    fn online_mask() -> &'static Cpumask {
        // SAFETY: `__cpu_online_mask` is a kernel global, valid for ever. CPU
        // hotplug changes its bits with atomic bit operations, and
        // `Cpumask` is `Opaque`: reading it while that happens is allowed.
        unsafe { Cpumask::from_raw(&raw const bindings::__cpu_online_mask) }
    }

    /// How many CPUs are online (`num_online_cpus()`).
    pub(crate) fn online_cpus() -> u32 {
        online_mask().weight()
    }

    /// Two different online CPUs, the current one first (for the test
    /// thread; the other for a thread racing with it). `None`, after
    /// logging why, if fewer than two CPUs are online: the test VMs always
    /// have two or more, and a race test cannot race on one.
    pub(crate) fn two_cpus(test: &str) -> Option<(CpuId, CpuId)> {
        let here = CpuId::current();
        let online = online_mask();
        let other = (0..kernel::cpu::nr_cpu_ids())
            .filter_map(CpuId::from_u32)
            .find(|&c| c != here && online.test(c));
        if other.is_none() {
            pr_err!(
                "{test}: needs 2 online CPUs to race, {} online: run the VM with -smp 2 or more\n",
                online_cpus()
            );
        }
        other.map(|other| (here, other))
    }

    /// The current thread's CPU affinity before [`pin_current`]; dropping it
    /// restores that affinity.
    pub(crate) struct Pinned(CpumaskVar);

    /// Moves the current thread to `cpu` and keeps it there until the
    /// returned [`Pinned`] is dropped. For a KUnit case, whose thread is
    /// its own kthread that ends with the case: a failed assertion, which
    /// skips the drop, leaves no other thread pinned.
    pub(crate) fn pin_current(cpu: CpuId) -> Result<Pinned> {
        let task = Task::current_raw();
        // SAFETY: `task` is the current task, alive while it runs. Its
        // `cpus_ptr` points to its affinity mask (outside migrate_disable()
        // sections, which a KUnit case is not in), changed only by
        // sched_setaffinity(), which nothing calls on a KUnit case's thread.
        let old = CpumaskVar::try_clone(unsafe { Cpumask::from_raw((*task).cpus_ptr) })?;
        let mut mask = CpumaskVar::new_zero(GFP_KERNEL)?;
        mask.set(cpu);
        // SAFETY: `task` is the current task; `mask` is a valid cpumask,
        // which set_cpus_allowed_ptr() copies.
        kernel::error::to_result(unsafe { bindings::set_cpus_allowed_ptr(task, mask.as_raw()) })?;
        Ok(Pinned(old))
    }

    impl Drop for Pinned {
        fn drop(&mut self) {
            // SAFETY: The current task and a valid cpumask, copied by the
            // call. Failing leaves the thread on its CPU, which is harmless.
            let _ = unsafe { bindings::set_cpus_allowed_ptr(Task::current_raw(), self.0.as_raw()) };
        }
    }

    /// Spins (yielding) until `cond()` holds or `timeout_ms` have passed;
    /// returns whether `cond()` held.
    pub(crate) fn wait_until(timeout_ms: i64, cond: impl Fn() -> bool) -> bool {
        let start = Instant::<Monotonic>::now();
        while !cond() {
            if start.elapsed() > Delta::from_millis(timeout_ms) {
                return cond();
            }
            // SAFETY: Always safe in process context.
            unsafe { bindings::yield_() };
        }
        true
    }

    /// A kernel thread, stopped and waited for when dropped, so no code of
    /// the test runs after its test.
    pub(crate) struct Thread(*mut bindings::task_struct);

    impl Thread {
        /// Runs `f(data)` on a new kernel thread named `name`.
        ///
        /// # Safety
        ///
        /// `f` must not return before [`should_stop`] is true, and `data`
        /// must stay valid for it until the thread is dropped.
        pub(crate) unsafe fn spawn(
            f: unsafe extern "C" fn(*mut c_void) -> c_int,
            data: *mut c_void,
            name: &CStr,
        ) -> Result<Self> {
            // SAFETY: By the caller's guarantees.
            unsafe { Self::spawn_bound(None, f, data, name) }
        }

        /// As [`Self::spawn`], the thread bound to `cpu` (`kthread_bind`)
        /// from its start: it never runs elsewhere.
        ///
        /// # Safety
        ///
        /// As for [`Self::spawn`].
        pub(crate) unsafe fn spawn_on(
            cpu: CpuId,
            f: unsafe extern "C" fn(*mut c_void) -> c_int,
            data: *mut c_void,
            name: &CStr,
        ) -> Result<Self> {
            // SAFETY: By the caller's guarantees.
            unsafe { Self::spawn_bound(Some(cpu), f, data, name) }
        }

        /// # Safety
        ///
        /// As for [`Self::spawn`].
        unsafe fn spawn_bound(
            cpu: Option<CpuId>,
            f: unsafe extern "C" fn(*mut c_void) -> c_int,
            data: *mut c_void,
            name: &CStr,
        ) -> Result<Self> {
            if cpu.is_some_and(|c| !online_mask().test(c)) {
                return Err(EINVAL);
            }
            // SAFETY: `f` has the kthread signature; `name` is a C string
            // without format directives.
            let task = unsafe {
                bindings::kthread_create_on_node(
                    Some(f),
                    data,
                    bindings::NUMA_NO_NODE,
                    name.as_char_ptr(),
                )
            };
            kernel::error::from_err_ptr(task)?;
            if let Some(cpu) = cpu {
                // SAFETY: `task` is a new kthread, not yet woken, as
                // kthread_bind() requires; `cpu` is a valid CPU id.
                unsafe { bindings::kthread_bind(task, cpu.as_u32()) };
            }
            // SAFETY: A new kthread, not yet woken.
            unsafe { bindings::wake_up_process(task) };
            Ok(Self(task))
        }
    }

    impl Drop for Thread {
        fn drop(&mut self) {
            // SAFETY: Our kthread, which runs until asked to stop (`spawn`).
            unsafe { bindings::kthread_stop(self.0) };
        }
    }

    /// Whether the current thread was asked to stop.
    pub(crate) fn should_stop() -> bool {
        // SAFETY: Called from a kthread.
        unsafe { bindings::kthread_should_stop() }
    }
}

/// A device for tests that records what it is told, and a mirror of the
/// test's mm with one.
pub(crate) mod kunit_mirror {
    use crate::{
        hmm_event::{HmmEvent, HmmEventType},
        hmm_mirror::{devmem::Owner, HmmMirror, MirrorOps, Update},
    };
    use kernel::{
        current, new_mutex,
        prelude::*,
        sync::{
            atomic::{Atomic, Relaxed},
            Arc, Mutex,
        },
    };

    /// What a test device saw.
    #[pin_data]
    pub(crate) struct Seen {
        /// (type, start, end, whether the table still held the start).
        #[pin]
        pub(crate) events: Mutex<KVec<(HmmEventType, u64, u64, bool)>>,
        pub(crate) releases: Atomic<u64>,
        /// `update_end` calls for munmaps that found the range gone.
        pub(crate) munmap_ends: Atomic<u64>,
    }

    /// A device that records what it is told.
    pub(crate) struct Recorder(Arc<Seen>);

    impl MirrorOps for Recorder {
        fn update(&self, mirror: &HmmMirror, event: &HmmEvent, _blockable: bool) -> Result<Update> {
            let held = mirror.table().lookup(event.start).is_some();
            self.0
                .events
                .lock()
                .push((event.ty, event.start, event.end, held), GFP_ATOMIC)?;
            Ok(Update::Done)
        }

        fn update_end(&self, mirror: &HmmMirror, event: &HmmEvent) {
            if event.ty == HmmEventType::Munmap && mirror.table().lookup(event.start).is_none() {
                self.0.munmap_ends.add(1, Relaxed);
            }
        }

        fn release(&self, _mirror: &HmmMirror) {
            self.0.releases.add(1, Relaxed);
        }
    }

    pub(crate) fn recorder() -> Result<(Arc<Seen>, KBox<dyn MirrorOps>)> {
        let seen = Arc::pin_init(
            pin_init!(Seen {
                events <- new_mutex!(KVec::new()),
                releases: Atomic::new(0),
                munmap_ends: Atomic::new(0),
            }),
            GFP_KERNEL,
        )?;
        let ops: KBox<dyn MirrorOps> = KBox::new(Recorder(seen.clone()), GFP_KERNEL)?;
        Ok((seen, ops))
    }

    pub(crate) fn mirror() -> Result<(Arc<Seen>, Arc<HmmMirror>)> {
        let (seen, ops) = recorder()?;
        let task = current!();
        let mirror = HmmMirror::register(task.mm().ok_or(EINVAL)?, Owner::NONE, ops)?;
        Ok((seen, mirror))
    }
}
