// SPDX-License-Identifier: GPL-2.0

//! The core's debugfs directory, `/sys/kernel/debug/hmm_rs/`: `stats` (the
//! counters of every mm, mirror and device memory) and, in a build with
//! the benchmarks (`HMM_RS_BENCH=1`), `pt_bench` and `core_bench`.

use kernel::{debugfs, fmt, prelude::*};
#[cfg(hmm_rs_bench)]
use kernel::{new_mutex, sync::Mutex, uaccess::UserSliceReader};

/// The files; they go with the directory when dropped.
pub(crate) struct DebugFs {
    _dir: debugfs::Dir,
    _stats: Pin<KBox<debugfs::File<()>>>,
    #[cfg(hmm_rs_bench)]
    _pt_bench: Pin<KBox<debugfs::File<Mutex<KVec<u8>>>>>,
    #[cfg(hmm_rs_bench)]
    _core_bench: Pin<KBox<debugfs::File<Mutex<KVec<u8>>>>>,
}

impl DebugFs {
    pub(crate) fn new() -> Result<Self> {
        let dir = debugfs::Dir::new(c"hmm_rs");
        let stats = KBox::pin_init(
            dir.read_callback_file(c"stats", (), &show_stats),
            GFP_KERNEL,
        )?;
        #[cfg(hmm_rs_bench)]
        let pt_bench = KBox::pin_init(
            dir.read_write_callback_file(
                c"pt_bench",
                new_mutex!(KVec::new()),
                &show_pt_bench,
                &run_pt_bench,
            ),
            GFP_KERNEL,
        )?;
        #[cfg(hmm_rs_bench)]
        let core_bench = KBox::pin_init(
            dir.read_write_callback_file(
                c"core_bench",
                new_mutex!(KVec::new()),
                &show_core_bench,
                &run_core_bench,
            ),
            GFP_KERNEL,
        )?;
        Ok(Self {
            _dir: dir,
            _stats: stats,
            #[cfg(hmm_rs_bench)]
            _pt_bench: pt_bench,
            #[cfg(hmm_rs_bench)]
            _core_bench: core_bench,
        })
    }
}

/// A text buffer that grows with `GFP_KERNEL`, for reports.
#[cfg(any(hmm_rs_bench, CONFIG_KUNIT))]
pub(crate) struct TextBuf(pub(crate) KVec<u8>);

#[cfg(any(hmm_rs_bench, CONFIG_KUNIT))]
impl core::fmt::Write for TextBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0
            .extend_from_slice(s.as_bytes(), GFP_KERNEL)
            .map_err(|_| core::fmt::Error)
    }
}

/// Reading `hmm_rs/stats` shows the counters of every mm and mirror.
fn show_stats(_: &(), f: &mut fmt::Formatter<'_>) -> fmt::Result {
    crate::hmm_mirror::write_stats(f)
}

/// Reading `hmm_rs/pt_bench` shows the last benchmark report.
#[cfg(hmm_rs_bench)]
fn show_pt_bench(report: &Mutex<KVec<u8>>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    show_report(report, "write 'run' to this file", f)
}

/// Reading `hmm_rs/core_bench` shows the last benchmark report.
#[cfg(hmm_rs_bench)]
fn show_core_bench(report: &Mutex<KVec<u8>>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    show_report(
        report,
        "write 'ADDR LEN' of your own memory to this file",
        f,
    )
}

#[cfg(hmm_rs_bench)]
fn show_report(report: &Mutex<KVec<u8>>, how: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let report = report.lock();
    match core::str::from_utf8(&report) {
        Ok(s) if !s.is_empty() => f.write_str(s),
        _ => writeln!(f, "no report yet: {how}"),
    }
}

/// Writing `run` to `hmm_rs/pt_bench` runs the page-table benchmark.
#[cfg(hmm_rs_bench)]
fn run_pt_bench(report: &Mutex<KVec<u8>>, input: &mut UserSliceReader) -> Result {
    let mut cmd = [0u8; 4];
    let len = input.len();
    if len > cmd.len() {
        return Err(EINVAL);
    }
    input.read_slice(&mut cmd[..len])?;
    if !matches!(&cmd[..len], b"run" | b"run\n") {
        return Err(EINVAL);
    }
    let mut report = report.lock();
    pr_info!("running the page-table benchmark\n");
    *report = crate::pt_bench::pt_bench()?.0;
    Ok(())
}

/// Writing `ADDR LEN` to `hmm_rs/core_bench` runs the core's benchmark over
/// that range of the writer's memory (`tests/core_bench.rs`).
#[cfg(hmm_rs_bench)]
fn run_core_bench(report: &Mutex<KVec<u8>>, input: &mut UserSliceReader) -> Result {
    let mut cmd = [0u8; 64];
    let len = input.len();
    if len > cmd.len() {
        return Err(EINVAL);
    }
    input.read_slice(&mut cmd[..len])?;
    let text = core::str::from_utf8(&cmd[..len]).map_err(|_| EINVAL)?;
    let mut words = text.split_ascii_whitespace().map(parse_u64);
    let (Some(addr), Some(size), None) = (words.next(), words.next(), words.next()) else {
        return Err(EINVAL);
    };
    let mut report = report.lock();
    *report = crate::core_bench::core_bench(addr?, size?)?.0;
    Ok(())
}

/// A decimal or `0x`-prefixed hexadecimal number.
#[cfg(hmm_rs_bench)]
fn parse_u64(s: &str) -> Result<u64> {
    let (digits, radix) = match s.strip_prefix("0x") {
        Some(hex) => (hex, 16),
        None => (s, 10),
    };
    u64::from_str_radix(digits, radix).map_err(|_| EINVAL)
}
