//! Writing images into memory that was never initialised: the batch loader hands each sample its
//! slice of a freshly allocated batch buffer as `MaybeUninit<f32>`, and the image functions write
//! every value exactly once, so the buffer is never zero-filled first (that memset cost as much
//! as a fifth of the augmentation).

use std::mem::MaybeUninit;

/// An initialised slice seen as writable-only memory (always sound: only initialised values are
/// ever written through it).
pub(crate) fn as_uninit(v: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: MaybeUninit<f32> has f32's layout, and callers only store initialised f32 values,
    // so `v` stays initialised.
    unsafe { &mut *(v as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// Writes `x` into every element.
#[inline]
pub(crate) fn fill(v: &mut [MaybeUninit<f32>], x: f32) {
    for d in v {
        d.write(x);
    }
}
