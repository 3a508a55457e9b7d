//! The allocator's settings for processes that move large messages.

/// Keep large message buffers in the heap: with glibc's defaults every
/// buffer over 128 KiB is mapped, zeroed page by page and unmapped again,
/// which costs a third of a 1 MiB message's trip. Buffers up to 8 MiB come
/// from the heap instead, and up to 32 MiB of free heap is kept for the
/// next ones. The runner and the `wasmproc` CLI call this first thing; a
/// host application that moves large messages can do the same.
pub fn keep_large_buffers_in_heap() {
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 * 1024 * 1024);
    }
}

/// One heap for every thread of a runner: what its short-lived linker
/// thread allocates (see the runner's `Prepared`) then lands in the heap
/// that is trimmed after the start, not in a second arena of its own that
/// would keep its pages in every runner of a fleet.
pub(crate) fn one_heap_for_all_threads() {
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Give the kernel back every whole page of free heap, wherever it lies
/// (`malloc_trim`: the heap's top is only trimmed past 32 MiB otherwise, see
/// [`keep_large_buffers_in_heap`]). A runner calls it once its guest is
/// instantiated, when what only starting needed has been freed.
pub(crate) fn release_free_heap() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
