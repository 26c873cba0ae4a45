// SPDX-License-Identifier: GPL-2.0

//! Errors as C sees them: a [`Result`] as 0 or a negative errno, or as a
//! count or a negative errno. The C API ([`crate::c_api`]) returns these,
//! and the tracepoints ([`crate::trace`]) record them.

use kernel::prelude::*;

/// 0, or the negative errno of `r`.
pub(crate) fn errno(r: Result) -> core::ffi::c_int {
    r.map_or_else(|e| e.to_errno(), |()| 0)
}

/// The count of `r`, or its negative errno.
pub(crate) fn count_or_errno(r: Result<usize>) -> core::ffi::c_long {
    r.map_or_else(
        |e| core::ffi::c_long::from(e.to_errno()),
        |n| n as core::ffi::c_long,
    )
}
