//! Per-thread scratch buffers for kernel temporaries that are fully overwritten before they are
//! read (Winograd's transformed tiles, im2col blocks, the AMX kernel's packed operands). Reusing
//! them skips the allocator's zeroing and, with the system allocator, the page faults of a fresh
//! mapping on every call.

use std::cell::RefCell;

thread_local! {
    static SLOTS: RefCell<[Vec<f32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
    static PACKED: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a buffer of `len` u16 (the AMX kernel's packed bf16 operands) from this thread's
/// slot, on the same terms as [`with_scratch`]: `f` must write every element before reading it,
/// and a nested call gets a fresh buffer.
pub(crate) fn with_packed_scratch<R>(len: usize, f: impl FnOnce(&mut [u16]) -> R) -> R {
    let mut v = PACKED.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if v.len() < len {
        v.resize(len, 0);
    }
    let r = f(&mut v[..len]);
    PACKED.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < v.len() {
            *s = v;
        }
    });
    r
}

/// Runs `f` with two buffers of `a` and `b` floats taken from this thread's slots. Their contents
/// are whatever an earlier call left: `f` must write every element before reading it. A nested
/// call on the same thread gets fresh buffers instead of the busy ones.
pub(crate) fn with_scratch<R>(
    a: usize,
    b: usize,
    f: impl FnOnce(&mut [f32], &mut [f32]) -> R,
) -> R {
    let [mut x, mut y] = SLOTS.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if x.len() < a {
        x.resize(a, 0.0);
    }
    if y.len() < b {
        y.resize(b, 0.0);
    }
    let r = f(&mut x[..a], &mut y[..b]);
    SLOTS.with(|s| {
        let mut s = s.borrow_mut();
        // Keep the larger of the returned and any buffers a nested call left behind.
        if s[0].len() < x.len() {
            s[0] = x;
        }
        if s[1].len() < y.len() {
            s[1] = y;
        }
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_have_the_asked_sizes_and_are_reused() {
        let p = with_scratch(10, 3, |a, b| {
            assert_eq!((a.len(), b.len()), (10, 3));
            a.fill(7.0);
            a.as_ptr() as usize
        });
        // A smaller request on the same thread gets the same allocation back, contents kept.
        with_scratch(4, 1, |a, _| {
            assert_eq!(a.as_ptr() as usize, p);
            assert_eq!(a, &[7.0; 4]);
        });
        // Nested calls get their own buffers.
        with_scratch(2, 2, |a, _| {
            with_scratch(2, 2, |c, _| assert_ne!(a.as_ptr(), c.as_ptr()));
        });
        let q = with_packed_scratch(8, |a| {
            a.fill(3);
            a.as_ptr() as usize
        });
        with_packed_scratch(5, |a| {
            assert_eq!((a.as_ptr() as usize, &a[..]), (q, &[3u16; 5][..]))
        });
        with_packed_scratch(2, |a| {
            with_packed_scratch(2, |c| assert_ne!(a.as_ptr(), c.as_ptr()))
        });
    }
}
