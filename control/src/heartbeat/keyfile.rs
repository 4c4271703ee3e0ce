//! Loading the rack key (`keys.rack_key`): the HMAC key of heartbeats and replication.
//!
//! Whoever reads the key can forge heartbeats for every node of the rack (keep a dead
//! primary "alive", or fake a failure and trigger a fence), so the file must be private:
//! a regular file with no group or world permission bits. Violations are refused with one
//! line that names the file and the fix.
//!
//! Format (see docs/heartbeat.md): if the file, with surrounding ASCII whitespace removed,
//! is an even number of hex digits, it is hex (`openssl rand -hex 32 > FILE`); otherwise
//! its bytes are the key as they are, trailing newline included
//! (`head -c 32 /dev/urandom > FILE`). Either way the key must be at least 16 bytes.

use super::wire::{KeyTooShort, MacKey, MIN_KEY_LEN};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Largest key file read (a bigger file is almost certainly the wrong file).
pub const MAX_KEY_FILE: u64 = 4096;

/// How the key file was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyEncoding {
    Hex,
    Raw,
}

/// The rack key. Its bytes never appear in `Debug` output and are zeroed on drop.
pub struct RackKey {
    bytes: Vec<u8>,
    encoding: KeyEncoding,
    mac: MacKey,
}

impl RackKey {
    /// A key from bytes already in memory (tests, the agent's own plumbing).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<RackKey, KeyTooShort> {
        Self::build(bytes, KeyEncoding::Raw)
    }

    fn build(bytes: Vec<u8>, encoding: KeyEncoding) -> Result<RackKey, KeyTooShort> {
        match MacKey::new(&bytes) {
            Ok(mac) => Ok(RackKey {
                bytes,
                encoding,
                mac,
            }),
            Err(e) => {
                wipe(bytes);
                Err(e)
            }
        }
    }
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    pub fn encoding(&self) -> KeyEncoding {
        self.encoding
    }
    /// The keyed HMAC state used by `wire::encode`/`decode`.
    pub fn mac_key(&self) -> MacKey {
        self.mac.clone()
    }
}

impl fmt::Debug for RackKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RackKey({} bytes, {:?})",
            self.bytes.len(),
            self.encoding
        )
    }
}

impl Drop for RackKey {
    fn drop(&mut self) {
        wipe(std::mem::take(&mut self.bytes));
    }
}

fn wipe(mut v: Vec<u8>) {
    for b in v.iter_mut() {
        // Volatile so the compiler cannot drop the stores to memory about to be freed.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
}

/// Why the key file was refused. `Display` is one line naming the file and the fix.
#[derive(Debug)]
pub enum KeyFileError {
    Open {
        path: PathBuf,
        err: io::Error,
    },
    NotRegular {
        path: PathBuf,
        kind: &'static str,
    },
    Permissive {
        path: PathBuf,
        mode: u32,
    },
    TooLarge {
        path: PathBuf,
        len: u64,
    },
    TooShort {
        path: PathBuf,
        len: usize,
        encoding: KeyEncoding,
    },
    Read {
        path: PathBuf,
        err: io::Error,
    },
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::Open { path, err } => write!(
                f,
                "cannot open rack key {}: {err}; create it with `openssl rand -hex 32 > {p} && chmod 600 {p}` and copy it to every node of the rack",
                path.display(),
                p = path.display()
            ),
            KeyFileError::NotRegular { path, kind } => write!(
                f,
                "rack key {} is a {kind}, not a regular file; point keys.rack_key at the key file",
                path.display()
            ),
            KeyFileError::Permissive { path, mode } => write!(
                f,
                "rack key {} is accessible by group or others (mode {:04o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            ),
            KeyFileError::TooLarge { path, len } => write!(
                f,
                "rack key {} is {len} bytes, more than {MAX_KEY_FILE}: is keys.rack_key the right file?",
                path.display()
            ),
            KeyFileError::TooShort { path, len, encoding } => write!(
                f,
                "rack key {} holds {len} bytes ({}), at least {MIN_KEY_LEN} are required; generate one with `openssl rand -hex 32 > {p}`",
                path.display(),
                match encoding {
                    KeyEncoding::Hex => "read as hex",
                    KeyEncoding::Raw => "read as raw bytes",
                },
                p = path.display()
            ),
            KeyFileError::Read { path, err } => {
                write!(f, "cannot read rack key {}: {err}", path.display())
            }
        }
    }
}

impl std::error::Error for KeyFileError {}

/// True if `mode` (st_mode) grants nothing to group or others.
pub fn mode_is_private(mode: u32) -> bool {
    mode & 0o077 == 0
}

fn trim_ascii_whitespace(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Interprets key file content (pure): hex if the whitespace-trimmed content is an even,
/// non-zero number of hex digits, else the raw bytes. Length is not checked here.
pub fn parse_key(content: &[u8]) -> (Vec<u8>, KeyEncoding) {
    let t = trim_ascii_whitespace(content);
    if !t.is_empty() && t.len() & 1 == 0 && t.iter().all(|&c| hex_val(c).is_some()) {
        let v = t
            .chunks(2)
            .map(|p| (hex_val(p[0]).unwrap_or(0) << 4) | hex_val(p[1]).unwrap_or(0))
            .collect();
        (v, KeyEncoding::Hex)
    } else {
        (content.to_vec(), KeyEncoding::Raw)
    }
}

fn kind_name(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

/// Loads and checks the rack key from `path`.
///
/// The file is opened first (non-blocking, so a FIFO cannot hang start-up) and the checks
/// run on the opened file, so a rename between check and read cannot swap the file.
/// Symlinks are followed: the target must satisfy the rules.
pub fn load_rack_key(path: &Path) -> Result<RackKey, KeyFileError> {
    let p = || path.to_path_buf();
    let mut f: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|err| KeyFileError::Open { path: p(), err })?;
    let md = f
        .metadata()
        .map_err(|err| KeyFileError::Read { path: p(), err })?;
    if !md.file_type().is_file() {
        return Err(KeyFileError::NotRegular {
            path: p(),
            kind: kind_name(md.file_type()),
        });
    }
    let mode = md.permissions().mode();
    if !mode_is_private(mode) {
        return Err(KeyFileError::Permissive { path: p(), mode });
    }
    if md.len() > MAX_KEY_FILE {
        return Err(KeyFileError::TooLarge {
            path: p(),
            len: md.len(),
        });
    }
    let mut content = Vec::with_capacity(md.len() as usize);
    let read = (&mut f).take(MAX_KEY_FILE + 1).read_to_end(&mut content);
    if let Err(err) = read {
        wipe(content);
        return Err(KeyFileError::Read { path: p(), err });
    }
    if content.len() as u64 > MAX_KEY_FILE {
        let len = content.len() as u64;
        wipe(content);
        return Err(KeyFileError::TooLarge { path: p(), len });
    }
    let (bytes, encoding) = parse_key(&content);
    wipe(content);
    RackKey::build(bytes, encoding).map_err(|KeyTooShort(len)| KeyFileError::TooShort {
        path: p(),
        len,
        encoding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let d = std::env::temp_dir().join(format!(
                "tapsplice-keyfile-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }
        fn file(&self, name: &str, content: &[u8], mode: u32) -> PathBuf {
            let p = self.0.join(name);
            fs::write(&p, content).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            p
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn parses_hex_and_raw() {
        let (k, e) = parse_key(b"00ff10Ab\n");
        assert_eq!((k, e), (vec![0, 255, 16, 171], KeyEncoding::Hex));
        let (k, e) = parse_key(b"  0a0b \r\n");
        assert_eq!((k, e), (vec![10, 11], KeyEncoding::Hex));
        // Odd length, non-hex characters, empty: raw, byte for byte.
        assert_eq!(parse_key(b"abc\n"), (b"abc\n".to_vec(), KeyEncoding::Raw));
        assert_eq!(parse_key(b"0x00ff"), (b"0x00ff".to_vec(), KeyEncoding::Raw));
        assert_eq!(
            parse_key(b"\xff\x00\n"),
            (b"\xff\x00\n".to_vec(), KeyEncoding::Raw)
        );
        assert_eq!(parse_key(b""), (vec![], KeyEncoding::Raw));
        assert!(
            mode_is_private(0o100600) && mode_is_private(0o100400) && mode_is_private(0o100700)
        );
        assert!(
            !mode_is_private(0o100640) && !mode_is_private(0o100604) && !mode_is_private(0o100601)
        );
    }

    #[test]
    fn loads_private_keys() {
        let d = TempDir::new();
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
        let k = load_rack_key(&d.file("hex.key", hex.as_bytes(), 0o600)).unwrap();
        assert_eq!(k.encoding(), KeyEncoding::Hex);
        assert_eq!(k.len(), 32);
        assert_eq!(k.bytes()[1], 0x11);
        assert!(!format!("{k:?}").contains("17")); // no key bytes in Debug
        let raw: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(97) | 0x80).collect();
        let k = load_rack_key(&d.file("raw.key", &raw, 0o400)).unwrap();
        assert_eq!((k.bytes(), k.encoding()), (&raw[..], KeyEncoding::Raw));
        let _ = k.mac_key();
    }

    #[test]
    fn refuses_with_one_line_naming_file_and_fix() {
        let d = TempDir::new();
        let key = b"00112233445566778899aabbccddeeff";
        let p = d.file("open.key", key, 0o644);
        let e = load_rack_key(&p).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, KeyFileError::Permissive { .. }), "{msg}");
        assert!(msg.contains(&format!("chmod 600 {}", p.display())), "{msg}");
        assert!(msg.contains("0644") && !msg.contains('\n'), "{msg}");
        for mode in [0o640, 0o604, 0o660, 0o601, 0o610] {
            let p = d.file("m.key", key, mode);
            assert!(
                matches!(load_rack_key(&p), Err(KeyFileError::Permissive { .. })),
                "{mode:o}"
            );
        }

        let e = load_rack_key(&d.0).unwrap_err();
        assert!(
            matches!(
                e,
                KeyFileError::NotRegular {
                    kind: "directory",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains(&d.0.display().to_string()));

        let e = load_rack_key(&d.0.join("missing")).unwrap_err();
        assert!(matches!(e, KeyFileError::Open { .. }));
        assert!(
            e.to_string().contains("missing") && e.to_string().contains("chmod 600"),
            "{e}"
        );

        let e = load_rack_key(&d.file("short.key", b"00112233445566778899aabbccddee", 0o600))
            .unwrap_err();
        assert!(
            matches!(
                e,
                KeyFileError::TooShort {
                    len: 15,
                    encoding: KeyEncoding::Hex,
                    ..
                }
            ),
            "{e}"
        );
        let e = load_rack_key(&d.file("short2.key", b"short key\n", 0o600)).unwrap_err();
        assert!(
            matches!(
                e,
                KeyFileError::TooShort {
                    len: 10,
                    encoding: KeyEncoding::Raw,
                    ..
                }
            ),
            "{e}"
        );
        let e = load_rack_key(&d.file("empty.key", b"", 0o600)).unwrap_err();
        assert!(matches!(e, KeyFileError::TooShort { len: 0, .. }), "{e}");
        let e = load_rack_key(&d.file("big.key", &[b'x'; 5000], 0o600)).unwrap_err();
        assert!(matches!(e, KeyFileError::TooLarge { .. }), "{e}");
        for e in [
            load_rack_key(&d.file("x.key", b"", 0o600)).unwrap_err(),
            load_rack_key(&d.0).unwrap_err(),
        ] {
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn fifo_is_refused_without_blocking() {
        let d = TempDir::new();
        let p = d.0.join("fifo");
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            return; // filesystem without FIFOs: nothing to test
        }
        let e = load_rack_key(&p).unwrap_err();
        assert!(
            matches!(e, KeyFileError::NotRegular { kind: "FIFO", .. }),
            "{e}"
        );
    }

    #[test]
    fn symlink_to_private_file_is_followed() {
        let d = TempDir::new();
        let target = d.file("real.key", b"00112233445566778899aabbccddeeff", 0o600);
        let link = d.0.join("link.key");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(load_rack_key(&link).is_ok());
        fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_rack_key(&link),
            Err(KeyFileError::Permissive { .. })
        ));
    }

    #[test]
    fn from_bytes_checks_length() {
        assert!(RackKey::from_bytes(vec![1; 15]).is_err());
        assert_eq!(RackKey::from_bytes(vec![1; 16]).unwrap().len(), 16);
    }
}
