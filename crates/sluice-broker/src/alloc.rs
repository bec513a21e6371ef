//! A global allocator that keeps a hostile length field from aborting the process.
//!
//! `kafka-protocol` sizes a decoded array with `Vec::with_capacity(n)`, `n` read from the
//! wire, before it knows whether the request holds `n` elements. A 19-byte request can thus
//! ask for a hundred gigabytes; the system allocator refuses and Rust aborts the whole broker
//! (found by the `request_decode` fuzz target). This allocator serves allocations of a
//! gibibyte or more with anonymous `mmap(MAP_NORESERVE)`: address space is reserved but no
//! memory is committed until it is written, so decoding such a request fails when its bytes
//! run out, and the mapping is given back. Smaller allocations go to the allocator it wraps
//! (the binary's choice: jemalloc there, the system allocator in the fuzz target).
//!
//! The binary installs it with `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are mapped lazily.
pub const LAZY_BYTES: usize = 1 << 30;

const PAGE: usize = 4096;

/// An allocator `A`, with lazily committed huge allocations.
pub struct LazyHugeAllocator<A = System>(pub A);

fn is_lazy(size: usize, align: usize) -> bool {
    size >= LAZY_BYTES && align <= PAGE
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping has no preconditions; failure is MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

unsafe impl<A: GlobalAlloc> GlobalAlloc for LazyHugeAllocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_lazy(layout.size(), layout.align()) {
            // SAFETY: the size is non-zero; anonymous mappings are page aligned.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { self.0.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_lazy(layout.size(), layout.align()) {
            // Anonymous mappings are zero-filled.
            // SAFETY: as in `alloc`.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { self.0.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_lazy(layout.size(), layout.align()) {
            // SAFETY: `ptr` came from `map` with this size (same layout).
            unsafe {
                libc::munmap(ptr.cast(), layout.size());
            }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { self.0.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !is_lazy(layout.size(), layout.align()) && !is_lazy(new_size, layout.align()) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { self.0.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller guarantees `new_size` is valid for this alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a fresh allocation, then a copy of the smaller size, then the old freed.
        unsafe {
            let new_ptr = self.alloc(new_layout);
            if !new_ptr.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new_ptr
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_allocations_are_lazy_and_usable() {
        let a = LazyHugeAllocator(System);
        // 64 GiB of address space, far more than this machine's memory.
        let layout = Layout::from_size_align(64 << 30, 8).unwrap();
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            *p = 7;
            *p.add((64 << 30) - 1) = 9;
            let q = a.realloc(p, layout, 128);
            assert_eq!(*q, 7);
            a.dealloc(q, Layout::from_size_align(128, 8).unwrap());
        }
    }
}
