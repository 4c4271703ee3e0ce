//! Fixed-size arrays for the lcores' big tables, on transparent huge pages.
//!
//! A splice table of a million connections is 128 MiB of slots and 64 MiB of index: on
//! 4 KiB pages every cold lookup also misses the TLB (two page walks per segment, index
//! then slot). [`HugeSlice`] maps such an array anonymously, 2 MiB-aligned, and asks the
//! kernel for transparent huge pages on it (`madvise(MADV_HUGEPAGE)`, which Debian's
//! default THP mode, `madvise`, requires). It is filled at construction, so the table's
//! pages are all faulted in at start-up rather than on the fast path. Where the kernel has
//! no THP, or no huge page free, the array is on ordinary pages and works the same.
//!
//! Measured (`role_cost`, same run): lookups of 2^20 connections' keys in random order
//! take 84.9 ns on huge pages and 88.7 ns on small ones (docs/splice.md); at the splice
//! role bench's sizes (up to 32 768 connections) the difference is within its noise.

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// The huge page size asked for (x86-64 and arm64 with 4 KiB base pages).
pub const HUGE_PAGE: usize = 2 << 20;
/// The base page size every mapping starts on.
const SMALL_PAGE: usize = 4096;

/// Which pages a [`HugeSlice`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pages {
    /// 2 MiB-aligned with `MADV_HUGEPAGE` (from 2 MiB on).
    Huge,
    /// The kernel's default for anonymous memory (4 KiB pages under THP mode `madvise`).
    Small,
}

/// `len` copies of a value in one anonymous mapping, 2 MiB-aligned with `MADV_HUGEPAGE`
/// when it is at least one huge page long. Derefs to `[T]`.
pub struct HugeSlice<T: Copy> {
    ptr: NonNull<T>,
    len: usize,
    /// The whole mapping (aligned start and length), unmapped on drop; `None` for a
    /// zero-sized array.
    map: Option<(NonNull<u8>, usize)>,
    /// Mapped 2 MiB-aligned with `MADV_HUGEPAGE`.
    huge: bool,
}

// SAFETY: a HugeSlice owns its elements exclusively, like a Box<[T]>.
unsafe impl<T: Copy + Send> Send for HugeSlice<T> {}
// SAFETY: shared access only reads, like &[T].
unsafe impl<T: Copy + Sync> Sync for HugeSlice<T> {}

impl<T: Copy> HugeSlice<T> {
    /// `len` copies of `value`. Panics on a byte size past `isize::MAX` (as `Vec` does),
    /// a failed mapping (out of memory) or an element aligned beyond 4 KiB.
    pub fn filled(value: T, len: usize) -> HugeSlice<T> {
        HugeSlice::filled_on(value, len, Pages::Huge)
    }

    /// As [`HugeSlice::filled`], on the pages asked for (`Pages::Small`: the baseline of
    /// `role_cost`'s table lookups).
    pub fn filled_on(value: T, len: usize, pages: Pages) -> HugeSlice<T> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .filter(|&b| b <= isize::MAX as usize - 2 * HUGE_PAGE)
            .expect("HugeSlice: size overflow");
        if bytes == 0 {
            return HugeSlice { ptr: NonNull::dangling(), len, map: None, huge: false };
        }
        // A mapping starts on a page (4 KiB); a huge one on 2 MiB. Elements aligned beyond
        // a page would be misaligned on the small path: not supported (the tables' are
        // aligned to 64 and 128 bytes).
        assert!(std::mem::align_of::<T>() <= SMALL_PAGE, "HugeSlice: element alignment above 4 KiB");
        let huge = pages == Pages::Huge && bytes >= HUGE_PAGE;
        let map_len = if huge { bytes.div_ceil(HUGE_PAGE) * HUGE_PAGE } else { bytes };
        // Over-map by one huge page so that an aligned start can be cut out of it.
        let raw_len = if huge { map_len + HUGE_PAGE } else { map_len };
        // SAFETY: an anonymous private mapping; no file, no fixed address.
        let raw = unsafe {
            libc::mmap(std::ptr::null_mut(), raw_len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if raw == libc::MAP_FAILED {
            panic!("HugeSlice: cannot map {raw_len} bytes: {}", std::io::Error::last_os_error());
        }
        let raw = raw as usize;
        let start = if huge { raw.next_multiple_of(HUGE_PAGE) } else { raw };
        if huge {
            // SAFETY: both ranges lie inside the mapping just made and are not used.
            unsafe {
                if start > raw {
                    libc::munmap(raw as *mut libc::c_void, start - raw);
                }
                let end = start + map_len;
                if raw + raw_len > end {
                    libc::munmap(end as *mut libc::c_void, raw + raw_len - end);
                }
                // A hint: without THP the call fails (EINVAL) and the pages are small.
                libc::madvise(start as *mut libc::c_void, map_len, libc::MADV_HUGEPAGE);
            }
        }
        let ptr = start as *mut T;
        for i in 0..len {
            // SAFETY: in bounds of the mapping; a page-aligned start and
            // align_of::<T>() ≤ 4 KiB (checked above), so every element is aligned.
            unsafe { ptr.add(i).write(value) };
        }
        HugeSlice {
            // SAFETY: mmap never returns null on success.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            len,
            map: Some((unsafe { NonNull::new_unchecked(start as *mut u8) }, map_len)),
            huge,
        }
    }

    /// Whether the array was mapped for huge pages (asked for, and at least 2 MiB long).
    pub fn is_huge_mapped(&self) -> bool {
        self.huge
    }
}

impl<T: Copy> Drop for HugeSlice<T> {
    fn drop(&mut self) {
        if let Some((start, len)) = self.map {
            // SAFETY: the mapping made in `filled`, unmapped once; T is Copy (no drop).
            unsafe { libc::munmap(start.as_ptr() as *mut libc::c_void, len) };
        }
    }
}

impl<T: Copy> Deref for HugeSlice<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` initialised elements at `ptr` (or a dangling pointer for none).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> DerefMut for HugeSlice<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as above, and `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy + std::fmt::Debug> std::fmt::Debug for HugeSlice<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugeSlice").field("len", &self.len).field("huge", &self.is_huge_mapped()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `smaps` block of the mapping that holds `addr`.
    fn smaps_of(addr: usize) -> String {
        let text = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut out = String::new();
        let mut inside = false;
        for line in text.lines() {
            let head = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = head.split_once('-').filter(|(a, b)| !a.is_empty() && !b.is_empty() && a.bytes().all(|c| c.is_ascii_hexdigit()) && b.bytes().all(|c| c.is_ascii_hexdigit())) {
                let (a, b) = (usize::from_str_radix(a, 16).unwrap(), usize::from_str_radix(b, 16).unwrap());
                inside = (a..b).contains(&addr);
            }
            if inside {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    #[test]
    fn a_large_array_is_aligned_filled_and_marked_for_huge_pages() {
        let mut a = HugeSlice::filled(0xabu8, 5 * HUGE_PAGE + 123);
        assert!(a.is_huge_mapped());
        assert_eq!(a.as_ptr() as usize % HUGE_PAGE, 0);
        assert_eq!(a.len(), 5 * HUGE_PAGE + 123);
        assert!(a.iter().all(|&b| b == 0xab));
        a[HUGE_PAGE] = 1;
        assert_eq!(a[HUGE_PAGE], 1);
        let smaps = smaps_of(a.as_ptr() as usize);
        // The kernel marks the region eligible where THP exists (`enabled` = madvise or
        // always); whether it then found free huge pages depends on the machine.
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        if thp.contains("[madvise]") || thp.contains("[always]") {
            let eligible = smaps.lines().find_map(|l| l.strip_prefix("THPeligible:")).map(str::trim);
            assert_eq!(eligible, Some("1"), "{smaps}");
            let vmflags = smaps.lines().find(|l| l.starts_with("VmFlags:")).unwrap_or("");
            assert!(vmflags.split_whitespace().any(|f| f == "hg"), "MADV_HUGEPAGE not applied: {vmflags}");
        }
    }

    #[test]
    fn small_and_empty_arrays_work_and_drop() {
        #[derive(Clone, Copy, Debug, PartialEq)]
        struct Pair(u64, Option<u32>);
        let a = HugeSlice::filled(Pair(7, None), 1000);
        assert!(!a.is_huge_mapped());
        let big_small = HugeSlice::filled_on(Pair(8, Some(1)), 1 << 20, Pages::Small);
        assert!(!big_small.is_huge_mapped());
        assert!(big_small.iter().all(|p| *p == Pair(8, Some(1))));
        let vmflags = smaps_of(big_small.as_ptr() as usize).lines().find(|l| l.starts_with("VmFlags:")).unwrap_or("").to_string();
        assert!(!vmflags.split_whitespace().any(|f| f == "hg"), "{vmflags}");
        assert!(a.iter().all(|p| *p == Pair(7, None)));
        let e = HugeSlice::filled(Pair(1, Some(2)), 0);
        assert!(e.is_empty());
        drop((a, e));
    }

    #[test]
    #[should_panic(expected = "size overflow")]
    fn a_size_past_isize_max_panics_instead_of_wrapping() {
        let _ = HugeSlice::filled(0u64, usize::MAX / 8);
    }

    #[test]
    #[should_panic(expected = "alignment above 4 KiB")]
    fn an_element_aligned_beyond_a_page_is_refused() {
        #[derive(Clone, Copy)]
        #[repr(align(8192))]
        struct Big(#[allow(dead_code)] u8);
        let _ = HugeSlice::filled(Big(0), 4);
    }

    #[test]
    fn an_aligned_element_type_stays_aligned() {
        #[derive(Clone, Copy)]
        #[repr(align(128))]
        struct Line([u8; 128]);
        let a = HugeSlice::filled(Line([3; 128]), 40_000);
        for i in [0, 1, 39_999] {
            assert_eq!(&a[i] as *const Line as usize % 128, 0);
            assert_eq!(a[i].0[127], 3);
        }
    }
}
