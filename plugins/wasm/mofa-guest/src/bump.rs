//! A bump allocator for single-request instances: allocation moves a pointer forward, `dealloc`
//! does nothing, and `realloc` of the latest allocation grows it in place. Memory grows (in
//! 64 KiB pages) only when the initial memory above `__heap_base` is used up.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::null_mut;

const PAGE: usize = 65536;

extern "C" {
    /// Start of the heap, defined by the linker.
    static __heap_base: u8;
}

struct Bump {
    next: UnsafeCell<usize>,
    end: UnsafeCell<usize>,
}

// SAFETY: wasm32-unknown-unknown modules are single-threaded.
unsafe impl Sync for Bump {}

impl Bump {
    /// Reserves `size` bytes aligned to `align`; null if memory cannot grow.
    unsafe fn bump(&self, size: usize, align: usize) -> *mut u8 {
        let next = &mut *self.next.get();
        let end = &mut *self.end.get();
        if *next == 0 {
            *next = core::ptr::addr_of!(__heap_base) as usize;
            *end = core::arch::wasm32::memory_size(0) * PAGE;
        }
        let start = (*next + align - 1) & !(align - 1);
        let Some(new_next) = start.checked_add(size) else {
            return null_mut();
        };
        if new_next > *end {
            let pages = (new_next - *end).div_ceil(PAGE);
            if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
                return null_mut();
            }
            *end += pages * PAGE;
        }
        *next = new_next;
        start as *mut u8
    }
}

unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.bump(layout.size(), layout.align())
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let next = &mut *self.next.get();
        if ptr as usize + layout.size() == *next {
            // The latest allocation: grow or shrink it where it is.
            *next = ptr as usize;
            let grown = self.bump(new_size, 1);
            if grown.is_null() {
                *next = ptr as usize + layout.size();
            }
            return grown;
        }
        let new = self.bump(new_size, layout.align());
        if !new.is_null() {
            core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Bump = Bump {
    next: UnsafeCell::new(0),
    end: UnsafeCell::new(0),
};
