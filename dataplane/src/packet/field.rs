//! Bounds-checked big-endian field access.
//!
//! Views validate lengths once in `parse`; these helpers make the accessors panic-free by
//! construction anyway (an out-of-range read yields 0, an out-of-range write is ignored),
//! so a view built with `new_unchecked` over a short buffer is still memory- and
//! panic-safe. After a successful `parse` the fallbacks are unreachable.

#[inline(always)]
pub(crate) fn bytes<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    match b.get(at..).and_then(|s| s.get(..N)) {
        Some(s) => {
            let mut out = [0u8; N];
            out.copy_from_slice(s);
            out
        }
        None => [0u8; N],
    }
}

#[inline(always)]
pub(crate) fn u8_at(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

#[inline(always)]
pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(bytes::<2>(b, at))
}

#[inline(always)]
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes::<4>(b, at))
}

#[inline(always)]
pub(crate) fn set_bytes(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(s) = b.get_mut(at..).and_then(|s| s.get_mut(..v.len())) {
        s.copy_from_slice(v);
    }
}

#[inline(always)]
pub(crate) fn set_u8(b: &mut [u8], at: usize, v: u8) {
    if let Some(x) = b.get_mut(at) {
        *x = v;
    }
}

#[inline(always)]
pub(crate) fn set_u16(b: &mut [u8], at: usize, v: u16) {
    set_bytes(b, at, &v.to_be_bytes());
}

#[inline(always)]
pub(crate) fn set_u32(b: &mut [u8], at: usize, v: u32) {
    set_bytes(b, at, &v.to_be_bytes());
}

/// `b[from..to]`, or an empty slice when the range does not fit.
#[inline(always)]
pub(crate) fn sub(b: &[u8], from: usize, to: usize) -> &[u8] {
    b.get(from..to).unwrap_or(&[])
}

#[inline(always)]
pub(crate) fn sub_mut(b: &mut [u8], from: usize, to: usize) -> &mut [u8] {
    b.get_mut(from..to).unwrap_or(&mut [])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_is_harmless() {
        let mut b = [1u8, 2, 3];
        assert_eq!(u16_at(&b, 1), 0x0203);
        assert_eq!(u16_at(&b, 2), 0);
        assert_eq!(u32_at(&b, usize::MAX), 0);
        set_u32(&mut b, 1, 0xdead_beef);
        assert_eq!(b, [1, 2, 3]);
        set_u16(&mut b, 1, 0xaabb);
        assert_eq!(b, [1, 0xaa, 0xbb]);
        assert!(sub(&b, 2, 1).is_empty());
        assert!(sub(&b, 0, 9).is_empty());
        assert_eq!(sub(&b, 0, 3).len(), 3);
    }
}
