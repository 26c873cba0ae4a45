// SPDX-License-Identifier: GPL-2.0

//! rust_dmirror: the dmirror device of `lib/test_hmm.c`, in Rust, on the
//! hmm-rs driver API alone (`rust/hmm_rs_driver.rs`).
//!
//! It creates `/dev/hmm_dmirror0` and `1` (512 MiB of device-private memory
//! each, `devmem_mib`), and with `spm_addr_dev0` and `spm_addr_dev1` (256 MiB
//! each of memory that is not System RAM, as test_hmm takes them)
//! `/dev/hmm_dmirror2` and `3` with device-coherent memory; each open
//! mirrors the opener's mm. It answers `lib/test_hmm_uapi.h`: READ,
//! READ_UNLOCKED (where the uapi has it) and WRITE (the "device" copies the mirrored pages through a
//! bounce buffer, faulting what is missing), MIGRATE_TO_DEV and
//! MIGRATE_TO_SYS, SNAPSHOT, EXCLUSIVE and CHECK_EXCLUSIVE, RELEASE, FLAGS,
//! and mmap() of zeroed pages: what `tests/kernel/hmm_dummy.c` answers of
//! it, the same way, so that hmm-tests, the storm and the fuzzer judge
//! both. hmm_dummy's own ioctls (`tests/hmm_dummy_uapi.h`) get `ENOTTY`.
//! Load one of the two, never both, on the same nodes: with `first_node=4`
//! the nodes are `/dev/hmm_dmirror4` to `7`, beside hmm_dummy's (without
//! `spm_addr_*` then, whose memory the other holds), so that a benchmark
//! can run both in turn in one process.
//!
//! Device-private pages keep their contents in system pages the API keeps
//! (`Stored`: one per page in use, a huge device folio's in one huge
//! folio), as a real device keeps them in its own memory; device-coherent
//! pages hold their own.

use core::borrow::Borrow;
use kernel::{
    alloc::flags::__GFP_ZERO,
    fs::File,
    ioctl::_IOWR,
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    mm::virt::VmaNew,
    page::{Page, PAGE_SIZE},
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc,
    },
    uaccess::{UserPtr, UserSlice},
};

#[path = "../../rust/hmm_rs_driver.rs"]
pub mod hmm_rs_driver;

use hmm_rs_driver::{
    Access, DevMem, Device, Event, Mapping, Mirror, MirrorOps, PageBits, PageBuffer, PtFlags, Snap,
    Stored, Update,
};

module! {
    type: RustDmirror,
    name: "rust_dmirror",
    authors: ["hmm-rs developers"],
    description: "The dmirror device of test_hmm, in Rust on the hmm-rs driver API",
    license: "GPL",
    params: {
        devmem_mib: u32 {
            default: 512,
            description: "Device-private memory per device, in MiB (2 to 4096)",
        },
        evict: u32 {
            default: 1,
            description: "1: a migration to full device memory evicts its least-recently-used 2 MiB blocks",
        },
        spm_addr_dev0: u64 {
            default: 0,
            description: "Start of 256 MiB of device-coherent memory for hmm_dmirror2",
        },
        spm_addr_dev1: u64 {
            default: 0,
            description: "Start of 256 MiB of device-coherent memory for hmm_dmirror3",
        },
        first_node: u32 {
            default: 0,
            description: "0: the nodes are /dev/hmm_dmirror0 to 3; 4: hmm_dmirror4 to 7",
        },
    },
}

/// A parameter's value: `value()` gives it by value on 7.3, by reference
/// on 7.2.
fn param<T: Copy>(v: impl Borrow<T>) -> T {
    *v.borrow()
}

const NDEVICES: usize = 4;
const COHERENT_PAGES: usize = (256 << 20) / PAGE_SIZE;

// lib/test_hmm_uapi.h
const CMD_SIZE: usize = 40;
type CmdBytes = [u8; CMD_SIZE];
const HMM_DMIRROR_READ: u32 = _IOWR::<CmdBytes>(b'H' as u32, 0x00);
const HMM_DMIRROR_WRITE: u32 = _IOWR::<CmdBytes>(b'H' as u32, 0x01);
const HMM_DMIRROR_MIGRATE_TO_DEV: u32 = _IOWR::<CmdBytes>(b'H' as u32, 0x02);
const HMM_DMIRROR_MIGRATE_TO_SYS: u32 = _IOWR::<CmdBytes>(b'H' as u32, 0x03);
const HMM_DMIRROR_SNAPSHOT: u32 = _IOWR::<CmdBytes>(b'H' as u32, 0x04);
const HMM_DMIRROR_EXCLUSIVE: u32 = _IOWR::<CmdBytes>(b'H' as u32, 0x05);
const HMM_DMIRROR_CHECK_EXCLUSIVE: u32 = _IOWR::<CmdBytes>(b'H' as u32, 0x06);
const HMM_DMIRROR_RELEASE: u32 = _IOWR::<CmdBytes>(b'H' as u32, 0x07);
const HMM_DMIRROR_FLAGS: u32 = _IOWR::<CmdBytes>(b'H' as u32, 0x08);
/// Linux 7.3's uapi, not 7.2's; hmm-rs faults "unlocked" always, so it
/// is READ.
#[cfg(hmm_rs_have_read_unlocked)]
const HMM_DMIRROR_READ_UNLOCKED: u32 = _IOWR::<CmdBytes>(b'H' as u32, 0x09);

const PROT_ERROR: u8 = 0xff;
const PROT_NONE: u8 = 0x00;
const PROT_READ: u8 = 0x01;
const PROT_WRITE: u8 = 0x02;
const PROT_PMD: u8 = 0x04;
const PROT_PUD: u8 = 0x08;
const PROT_ZERO: u8 = 0x10;
const PROT_DEV_PRIVATE_LOCAL: u8 = 0x20;
const PROT_DEV_PRIVATE_REMOTE: u8 = 0x30;
const PROT_DEV_COHERENT_LOCAL: u8 = 0x40;
const PROT_DEV_COHERENT_REMOTE: u8 = 0x50;

/// `struct hmm_dmirror_cmd`.
struct Cmd {
    addr: u64,
    ptr: u64,
    npages: u64,
    cpages: u64,
    faults: u64,
}

/// One device node: its hmm-rs device and memory.
struct Dmirror {
    name: &'static CStr,
    /// Its memory, whose contents the API keeps in system pages (as
    /// test_hmm keeps one in each device page; a real device would keep
    /// them in its own memory): a huge device folio's in one huge folio.
    mem: DevMem<FileMirror, Stored>,
    /// Keeps the device registered as long as the memory is (which holds it
    /// too); here for new mirrors.
    device: Arc<Device<FileMirror>>,
}

impl Dmirror {
    fn new(name: &'static CStr, spm: u64) -> Result<Arc<Self>> {
        let device = Device::new()?;
        let evict = param::<u32>(module_parameters::evict.value()) != 0;
        let mem = if spm != 0 {
            DevMem::new_coherent(&device, spm, COHERENT_PAGES, evict, Stored)?
        } else {
            let mib = param::<u32>(module_parameters::devmem_mib.value()) as usize;
            let npages = mib << (20 - kernel::page::PAGE_SHIFT);
            DevMem::new(&device, npages, evict, Stored)?
        };
        Ok(Arc::new(Dmirror { name, mem, device }, GFP_KERNEL)?)
    }

    /// The device's copy of device-private page `pfn`: into page `k` of
    /// `buf`, or out of it with `write`.
    fn device_page(&self, pfn: u64, buf: &mut PageBuffer, k: usize, write: bool) -> Result {
        if write {
            let data = buf.page(k).ok_or(EIO)?;
            self.mem.with_stored(pfn, |page| page.write(0, data))?
        } else {
            self.mem
                .with_stored(pfn, |page| buf.fill_from_page(k, &page))?
        }
    }
}

/// Migrations to the device that left pages neither moved nor mirrored, so
/// far: warned of the first 10 times, then every 1000th (a storm makes many).
static PARTIAL: Atomic<u32> = Atomic::new(0);

kernel::sync::global_lock! {
    // SAFETY: Initialized in the module's init, before any device exists.
    unsafe(uninit) static DEVICES: Mutex<[Option<Arc<Dmirror>>; NDEVICES]> =
        [None, None, None, None];
}

/// A mirror's callbacks: nothing to do, since the device touches mirrored
/// pages only in [`Mirror::access`] and [`Mirror::fault_walk`], which the
/// API keeps apart from invalidations.
struct FileMirror;

impl MirrorOps for FileMirror {
    fn update(&self, _event: &Event, _blockable: bool) -> Result<Update> {
        Ok(Update::Done)
    }
}

/// One device access: copies between the buffer and mirrored pages;
/// `done` has a bit per page copied, kept across rounds.
struct Transfer<'a> {
    dev: &'a Dmirror,
    start: usize,
    end: usize,
    buf: PageBuffer,
    write: bool,
    pages: usize,
    done: PageBits,
}

impl<'a> Transfer<'a> {
    fn new(dev: &'a Dmirror, start: usize, end: usize, write: bool) -> Result<Self> {
        let npages = (end - start) / PAGE_SIZE;
        Ok(Transfer {
            dev,
            start,
            end,
            buf: PageBuffer::new(npages)?,
            write,
            pages: 0,
            done: PageBits::new(npages)?,
        })
    }

    fn npages(&self) -> usize {
        self.buf.npages()
    }

    /// Copies what of `m` is in the range and not done yet.
    fn mapping(&mut self, m: &Mapping<'_>) -> Result {
        if self.write && !m.flags().contains(PtFlags::WRITE) {
            return Ok(());
        }
        for i in 0..m.pages() {
            let va = m.addr() + i * PAGE_SIZE;
            if va < self.start || va >= self.end {
                continue;
            }
            let k = (va - self.start) / PAGE_SIZE;
            if self.done.test_and_set(k) {
                continue;
            }
            self.pages += 1;
            if m.flags().contains(PtFlags::DEVICE) {
                self.dev
                    .device_page(m.pfn() + i as u64, &mut self.buf, k, self.write)?;
            } else {
                let page = m.page(i).ok_or(EIO)?;
                if self.write {
                    page.write(0, self.buf.page(k).ok_or(EIO)?)?;
                } else {
                    self.buf.fill_from_page(k, &page)?;
                }
            }
        }
        Ok(())
    }

    fn complete(&self) -> Result {
        if self.pages == self.npages() {
            Ok(())
        } else {
            Err(ENOENT)
        }
    }
}

/// An open device file: the opener's mm mirrored for the device.
#[pin_data]
struct DmirrorFile<const ID: usize> {
    /// First: unregistered before the device can go.
    mirror: Mirror<FileMirror>,
    dev: Arc<Dmirror>,
}

impl<const ID: usize> DmirrorFile<ID> {
    /// The device reads or writes what is mirrored of the range and not
    /// done yet; `ENOENT` if some of it is not mirrored.
    fn access(&self, c: &mut Transfer<'_>) -> Result {
        self.mirror.access(c.start..c.end, |m| c.mapping(m))?;
        c.complete()
    }

    /// One round of an access that found pages not mirrored: faults the
    /// rest, from the first page not done, and copies it under the mirror's
    /// lock as the fault commits it.
    fn fault_round(&self, c: &mut Transfer<'_>, access: Access) -> Result {
        let first = c.done.first_zero();
        let start = c.start + first * PAGE_SIZE;
        self.mirror
            .fault_walk(access, start..c.end, |m| c.mapping(m))?;
        c.complete()
    }

    /// READ, WRITE and EXCLUSIVE's read: progress under any rate of
    /// invalidations (pages copied stay copied), a kill ends it.
    fn read_write(&self, cmd: &mut Cmd, end: usize, write: bool, exclusive: bool) -> Result {
        if cmd.npages == 0 {
            return Err(EINVAL);
        }
        let start = cmd.addr as usize;
        let mut c = Transfer::new(&self.dev, start, end, write)?;
        let user = UserSlice::new(UserPtr::from_addr(cmd.ptr as usize), end - start);
        if write {
            c.buf.fill_from_user(&mut user.reader())?;
        }
        if exclusive {
            self.mirror.make_exclusive(start..end)?;
        }
        let access = if write { Access::Write } else { Access::Read };
        let mut ret = self.access(&mut c);
        while ret == Err(ENOENT) || ret == Err(EAGAIN) {
            if hmm_rs_driver::fatal_signal_pending() {
                return Err(EINTR);
            }
            hmm_rs_driver::cond_resched();
            ret = self.fault_round(&mut c, access);
            if ret != Err(EAGAIN) {
                cmd.faults += 1;
            }
        }
        ret?;
        if !write {
            let user = UserSlice::new(UserPtr::from_addr(cmd.ptr as usize), end - start);
            c.buf.write_to_user(&mut user.writer())?;
        }
        cmd.cpages = cmd.npages;
        Ok(())
    }

    /// SNAPSHOT: what the CPU maps, 2 MiB at a time, as test_hmm reports
    /// it. It costs what the result buffer holds, not what `npages` says: a
    /// hole between VMAs is no walk, only its bytes (errors) written, and
    /// the first byte the buffer cannot take ends it (`EFAULT`).
    fn snapshot(&self, cmd: &mut Cmd, end: usize) -> Result {
        const CHUNK: usize = 512;
        let mut snap = KVec::from_elem(0u32, CHUNK, GFP_KERNEL)?;
        let mut perm = KVec::from_elem(0u8, CHUNK, GFP_KERNEL)?;
        let len = (end - cmd.addr as usize) / PAGE_SIZE;
        let mut out = UserSlice::new(UserPtr::from_addr(cmd.ptr as usize), len).writer();
        let mut addr = cmd.addr as usize;
        let mut vma = 0;
        while addr < end {
            if hmm_rs_driver::fatal_signal_pending() {
                return Err(EINTR);
            }
            hmm_rs_driver::cond_resched();
            let next = end.min(addr + CHUNK * PAGE_SIZE);
            let n = (next - addr) / PAGE_SIZE;
            if vma <= addr {
                vma = self.mirror.next_vma(addr, end)?;
            }
            if vma >= next {
                perm[..n].fill(PROT_ERROR);
            } else {
                self.mirror.snapshot(addr..next, &mut snap[..n])?;
                for (p, s) in perm.iter_mut().zip(snap.iter()).take(n) {
                    *p = perm_of(Snap(*s));
                }
            }
            out.write_slice(&perm[..n]).map_err(|_| EFAULT)?;
            cmd.cpages += n as u64;
            addr = next;
        }
        Ok(())
    }

    /// After a migration, pages of the range in this device's memory but no
    /// longer mirrored (an invalidation took their entries: khugepaged
    /// trying to collapse the range) are faulted in, which moves nothing,
    /// and read. Pages that did not move stay unread: `ENOENT`.
    fn refault_own(&self, c: &mut Transfer<'_>) -> Result {
        let own = Snap::VALID | Snap::DEVICE;
        for k in 0..c.npages() {
            if c.done.test(k) {
                continue;
            }
            if hmm_rs_driver::fatal_signal_pending() {
                return Err(EINTR);
            }
            let va = c.start + k * PAGE_SIZE;
            let mut snap = [0u32; 1];
            self.mirror.snapshot(va..va + PAGE_SIZE, &mut snap)?;
            if snap[0] & (own | Snap::REMOTE) != own {
                continue;
            }
            match self
                .mirror
                .fault_walk(Access::Read, va..va + PAGE_SIZE, |m| c.mapping(m))
            {
                Ok(()) | Err(EAGAIN) | Err(EFAULT) => {}
                Err(e) => return Err(e),
            }
        }
        c.complete()
    }

    /// To the device's memory, then what the device reads there (pages
    /// that could not move are read where they are mirrored), as test_hmm.
    fn migrate_to_device(&self, cmd: &mut Cmd, end: usize) -> Result {
        if cmd.npages == 0 {
            return Err(EINVAL);
        }
        let start = cmd.addr as usize;
        let moved = self.mirror.migrate_to_device(&self.dev.mem, start..end)?;
        let mut c = Transfer::new(&self.dev, start, end, false)?;
        let mut ret = self.access(&mut c);
        if ret == Err(ENOENT) {
            ret = self.refault_own(&mut c);
        }
        if ret == Err(ENOENT) {
            let n = PARTIAL.fetch_add(1, Relaxed);
            if n < 10 || n % 1000 == 0 {
                let k = c.done.first_zero();
                pr_warn!(
                    "rust_dmirror: {}: migration of [{:#x}, {:#x}) to the device moved {} of {} pages and left {:#x} neither moved nor mirrored ({} such so far)\n",
                    self.dev.name,
                    start,
                    end,
                    moved,
                    c.npages(),
                    start + k * PAGE_SIZE,
                    n + 1
                );
            }
        }
        ret?;
        let user = UserSlice::new(UserPtr::from_addr(cmd.ptr as usize), end - start);
        c.buf.write_to_user(&mut user.writer())?;
        cmd.cpages = c.pages as u64;
        Ok(())
    }

    fn command(&self, cmd_code: u32, cmd: &mut Cmd) -> Result {
        // [addr, end): page aligned, not wrapping, within user space (so
        // that a huge range fails at once).
        let end = cmd
            .npages
            .checked_mul(PAGE_SIZE as u64)
            .and_then(|len| cmd.addr.checked_add(len))
            .filter(|&end| {
                cmd.addr % PAGE_SIZE as u64 == 0 && end <= hmm_rs_driver::user_space_end() as u64
            })
            .ok_or(EINVAL)? as usize;
        cmd.cpages = 0;
        cmd.faults = 0;
        match cmd_code {
            HMM_DMIRROR_SNAPSHOT => self.snapshot(cmd, end),
            HMM_DMIRROR_CHECK_EXCLUSIVE => {
                if cmd.npages == 0 {
                    return Err(EINVAL);
                }
                self.mirror.walk(cmd.addr as usize..end, |m| {
                    if m.flags().contains(PtFlags::EXCLUSIVE) {
                        Err(EPERM)
                    } else {
                        Ok(())
                    }
                })
            }
            HMM_DMIRROR_MIGRATE_TO_DEV => self.migrate_to_device(cmd, end),
            HMM_DMIRROR_MIGRATE_TO_SYS => {
                if cmd.npages == 0 {
                    return Err(EINVAL);
                }
                cmd.cpages = self.mirror.migrate_to_system(cmd.addr as usize..end)? as u64;
                Ok(())
            }
            // Every page of the device's memory back to system memory.
            HMM_DMIRROR_RELEASE => self.dev.mem.evict().map(|_| ()),
            // test_hmm's FLAG_FAIL_ALLOC fails its next huge device
            // allocation; hmm-rs has none to fail.
            HMM_DMIRROR_FLAGS => Ok(()),
            HMM_DMIRROR_WRITE => self.read_write(cmd, end, true, false),
            HMM_DMIRROR_EXCLUSIVE => self.read_write(cmd, end, false, true),
            _ => self.read_write(cmd, end, false, false),
        }
    }
}

/// A snapshot value as test_hmm reports it.
fn perm_of(snap: Snap) -> u8 {
    if snap.has(Snap::ERROR) {
        return PROT_ERROR;
    }
    if !snap.has(Snap::VALID) {
        return PROT_NONE;
    }
    let remote = snap.has(Snap::REMOTE);
    let mut perm = if snap.has(Snap::COHERENT) {
        if remote {
            PROT_DEV_COHERENT_REMOTE
        } else {
            PROT_DEV_COHERENT_LOCAL
        }
    } else if snap.has(Snap::DEVICE) {
        if remote {
            PROT_DEV_PRIVATE_REMOTE
        } else {
            PROT_DEV_PRIVATE_LOCAL
        }
    } else if snap.has(Snap::ZERO) {
        PROT_ZERO
    } else {
        PROT_NONE
    };
    perm |= if snap.has(Snap::WRITE) {
        PROT_WRITE
    } else {
        PROT_READ
    };
    match snap.order() {
        9 => perm | PROT_PMD,
        18 => perm | PROT_PUD,
        _ => perm,
    }
}

fn read_cmd(arg: usize) -> Result<Cmd> {
    let mut raw = [0u8; CMD_SIZE];
    UserSlice::new(UserPtr::from_addr(arg), CMD_SIZE)
        .reader()
        .read_slice(&mut raw)?;
    let field = |i: usize| {
        let mut v = [0u8; 8];
        v.copy_from_slice(&raw[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(v)
    };
    Ok(Cmd {
        addr: field(0),
        ptr: field(1),
        npages: field(2),
        cpages: field(3),
        faults: field(4),
    })
}

fn write_cmd(arg: usize, cmd: &Cmd) -> Result {
    let mut raw = [0u8; CMD_SIZE];
    for (i, v) in [cmd.addr, cmd.ptr, cmd.npages, cmd.cpages, cmd.faults]
        .iter()
        .enumerate()
    {
        raw[i * 8..i * 8 + 8].copy_from_slice(&v.to_ne_bytes());
    }
    UserSlice::new(UserPtr::from_addr(arg), CMD_SIZE)
        .writer()
        .write_slice(&raw)
}

#[vtable]
impl<const ID: usize> MiscDevice for DmirrorFile<ID> {
    type Ptr = Pin<KBox<Self>>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<Self::Ptr> {
        let dev = DEVICES.lock()[ID].clone().ok_or(ENODEV)?;
        let task = kernel::current!();
        let mm = task.mm().ok_or(EINVAL)?;
        let mirror = Mirror::new(&dev.device, mm, FileMirror)?;
        Ok(KBox::pin(DmirrorFile { mirror, dev }, GFP_KERNEL)?)
    }

    fn ioctl(me: Pin<&Self>, _file: &File, cmd_code: u32, arg: usize) -> Result<isize> {
        match cmd_code {
            #[cfg(hmm_rs_have_read_unlocked)]
            HMM_DMIRROR_READ_UNLOCKED => {}
            HMM_DMIRROR_READ
            | HMM_DMIRROR_WRITE
            | HMM_DMIRROR_MIGRATE_TO_DEV
            | HMM_DMIRROR_MIGRATE_TO_SYS
            | HMM_DMIRROR_SNAPSHOT
            | HMM_DMIRROR_EXCLUSIVE
            | HMM_DMIRROR_CHECK_EXCLUSIVE
            | HMM_DMIRROR_RELEASE
            | HMM_DMIRROR_FLAGS => {}
            _ => return Err(ENOTTY),
        }
        let mut cmd = read_cmd(arg)?;
        me.command(cmd_code, &mut cmd)?;
        write_cmd(arg, &cmd)?;
        Ok(0)
    }

    /// Zeroed kernel pages (a mixed map), as test_hmm, so that mirroring
    /// such mappings can be tested.
    fn mmap(_me: Pin<&Self>, _file: &File, vma: &VmaNew) -> Result {
        let vma = vma.set_mixedmap();
        let mut addr = vma.start();
        while addr < vma.end() {
            let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
            // The mapping takes its own reference.
            vma.vm_insert_page(addr, &page)?;
            addr += PAGE_SIZE;
        }
        Ok(())
    }
}

/// The loaded module: the device nodes (`None` once being unloaded, and
/// for the coherent ones without their memory).
struct RustDmirror {
    misc0: Option<Pin<KBox<MiscDeviceRegistration<DmirrorFile<0>>>>>,
    misc1: Option<Pin<KBox<MiscDeviceRegistration<DmirrorFile<1>>>>>,
    misc2: Option<Pin<KBox<MiscDeviceRegistration<DmirrorFile<2>>>>>,
    misc3: Option<Pin<KBox<MiscDeviceRegistration<DmirrorFile<3>>>>>,
}

fn register<const ID: usize>(
    name: &'static CStr,
) -> Result<Pin<KBox<MiscDeviceRegistration<DmirrorFile<ID>>>>> {
    KBox::try_pin_init(
        MiscDeviceRegistration::register(MiscDeviceOptions { name }),
        GFP_KERNEL,
    )
}

impl kernel::Module for RustDmirror {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        // SAFETY: Called once, before anything uses `DEVICES`.
        unsafe { DEVICES.init() };
        let mib = param::<u32>(module_parameters::devmem_mib.value());
        if !(2..=4096).contains(&mib) {
            pr_err!("rust_dmirror: devmem_mib={}: 2 to 4096\n", mib);
            return Err(EINVAL);
        }
        let first = param::<u32>(module_parameters::first_node.value());
        if first != 0 && first != 4 {
            pr_err!("rust_dmirror: first_node={}: 0 or 4\n", first);
            return Err(EINVAL);
        }
        let spm = [
            0,
            0,
            param::<u64>(module_parameters::spm_addr_dev0.value()),
            param::<u64>(module_parameters::spm_addr_dev1.value()),
        ];
        // The coherent devices only with both their memories, as test_hmm.
        let n = if spm[2] != 0 && spm[3] != 0 { 4 } else { 2 };
        static NAMES: [&CStr; 8] = [
            c"hmm_dmirror0",
            c"hmm_dmirror1",
            c"hmm_dmirror2",
            c"hmm_dmirror3",
            c"hmm_dmirror4",
            c"hmm_dmirror5",
            c"hmm_dmirror6",
            c"hmm_dmirror7",
        ];
        let names = &NAMES[first as usize..first as usize + 4];
        let made = (|| {
            let mut devices = DEVICES.lock();
            for id in 0..n {
                devices[id] = Some(Dmirror::new(names[id], spm[id])?);
            }
            Ok::<(), Error>(())
        })();
        let module = made.and_then(|()| {
            Ok(RustDmirror {
                misc0: Some(register::<0>(names[0])?),
                misc1: Some(register::<1>(names[1])?),
                misc2: if n == 4 {
                    Some(register::<2>(names[2])?)
                } else {
                    None
                },
                misc3: if n == 4 {
                    Some(register::<3>(names[3])?)
                } else {
                    None
                },
            })
        });
        if module.is_err() {
            *DEVICES.lock() = [None, None, None, None];
        }
        module
    }
}

impl Drop for RustDmirror {
    fn drop(&mut self) {
        // No new opens; then each device goes with its last open file.
        drop((
            self.misc0.take(),
            self.misc1.take(),
            self.misc2.take(),
            self.misc3.take(),
        ));
        let devices = core::mem::take(&mut *DEVICES.lock());
        drop(devices);
    }
}
