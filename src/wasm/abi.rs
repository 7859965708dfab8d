//! The guest ABI: names and the packing of buffers into one `i64`.
//!
//! A guest exports `memory`, `mofa_alloc(len: i32) -> i32` and
//! `mofa_handle(ptr: i32, len: i32) -> i64`. The input is one MessagePack value at
//! `[ptr, ptr + len)`; the result packs a buffer as `(ptr << 32) | len`, and sets bit 63 when
//! the buffer is an error (`{code, message}` in MessagePack) rather than the output value.

/// Module name of every host function.
pub const HOST_MODULE: &str = "mofa";
/// The guest's exported linear memory.
pub const EXPORT_MEMORY: &str = "memory";
/// `mofa_alloc(len: i32) -> i32`: returns `len` writable bytes in guest memory.
pub const EXPORT_ALLOC: &str = "mofa_alloc";
/// `mofa_handle(ptr: i32, len: i32) -> i64`: runs one request.
pub const EXPORT_HANDLE: &str = "mofa_handle";
/// Bit 63 of a packed result: the buffer holds an error body, not an output value.
pub const ERROR_FLAG: u64 = 1 << 63;

/// A buffer in guest memory, decoded from a packed `i64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packed {
    /// Offset in guest memory.
    pub ptr: u32,
    /// Length in bytes.
    pub len: u32,
    /// Whether the buffer is an error body.
    pub error: bool,
}

impl Packed {
    /// Unpacks a guest's return value.
    pub fn unpack(raw: i64) -> Packed {
        let raw = raw as u64;
        Packed {
            ptr: ((raw & !ERROR_FLAG) >> 32) as u32,
            len: raw as u32,
            error: raw & ERROR_FLAG != 0,
        }
    }

    /// Packs a buffer for the guest.
    pub fn pack(self) -> i64 {
        let flag = if self.error { ERROR_FLAG } else { 0 };
        (flag | (u64::from(self.ptr) << 32) | u64::from(self.len)) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips() {
        for p in [
            Packed {
                ptr: 0,
                len: 0,
                error: false,
            },
            Packed {
                ptr: 0x7fff_ffff,
                len: u32::MAX,
                error: true,
            },
            Packed {
                ptr: 1024,
                len: 17,
                error: false,
            },
        ] {
            assert_eq!(Packed::unpack(p.pack()), p);
        }
    }
}
