//! Shared by orb's fuzz targets: a counting global allocator with a heap budget per input, so a
//! decoder that allocates what its input *announces* (a lying length prefix, a MessagePack map
//! of four billion entries) instead of what it holds fails the run as a crash, on the stable
//! toolchain without a sanitizer (libFuzzer's `-malloc_limit_mb` needs one).
#![forbid(unsafe_code)]

use std::alloc::System;

use cap::Cap;

#[global_allocator]
static HEAP: Cap<System> = Cap::new(System, usize::MAX);

/// Runs `f` allowed at most `budget` bytes of heap beyond what is in use when it starts. An
/// allocation past the budget fails, which aborts the process: libFuzzer reports a crash and
/// keeps the input.
pub fn with_heap_budget<R>(budget: usize, f: impl FnOnce() -> R) -> R {
    // `set_limit` refuses only a limit below what is allocated, which this never is.
    let _ = HEAP.set_limit(HEAP.allocated().saturating_add(budget));
    let out = f();
    let _ = HEAP.set_limit(usize::MAX);
    out
}

/// Splits `data` at the first `sep` byte: the input before it and the rest (empty when there is
/// no separator). Targets use it to take two or three texts from one input.
pub fn split_at_byte(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
