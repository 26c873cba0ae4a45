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

/// Kernel threads for KUnit tests that need a second CPU.
#[cfg(CONFIG_KUNIT)]
pub(crate) mod kunit_thread {
    use core::ffi::c_void;
    use kernel::{bindings, ffi::c_int, prelude::*};

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
            // SAFETY: `f` has the kthread signature; `name` is a C string.
            let task = unsafe {
                bindings::kthread_create_on_node(
                    Some(f),
                    data,
                    bindings::NUMA_NO_NODE,
                    name.as_char_ptr(),
                )
            };
            kernel::error::from_err_ptr(task)?;
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
