//! The ctl client: connects to the appliance's socket, sends requests, reads answers.

use super::proto::{Command, ErrorBody, Request, Response};
use serde_json::{Map, Value};
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest answer line read (a `ports` answer of a big appliance is a few hundred KiB).
pub const MAX_RESPONSE: usize = 64 * 1024 * 1024;
/// How long a read command may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `fence` may take (power fencing can take tens of seconds, see DESIGN.md).
pub const FENCE_TIMEOUT: Duration = Duration::from_secs(180);

/// Why a ctl request did not produce a result. `Display` is one line naming the cause and,
/// where there is one, the fix.
#[derive(Debug)]
pub enum ClientError {
    SocketMissing(PathBuf),
    PermissionDenied(PathBuf),
    /// A socket file with nobody listening (an appliance that did not stop cleanly).
    NotListening(PathBuf),
    NotASocket(PathBuf),
    Timeout(PathBuf, Duration),
    Io(PathBuf, io::Error),
    /// The other side did not speak the protocol (closed early, garbage, wrong id).
    Protocol(PathBuf, String),
    /// The appliance answered with an error.
    Remote(ErrorBody),
}

impl ClientError {
    /// True if the appliance answered (with an error); false if it could not be reached.
    pub fn is_remote(&self) -> bool {
        matches!(self, ClientError::Remote(_))
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::SocketMissing(p) => write!(
                f,
                "no ctl socket at {}: is the appliance running, and is this the [ctl] socket of its rack file?",
                p.display()
            ),
            ClientError::PermissionDenied(p) => write!(
                f,
                "permission denied on the ctl socket {} (mode 0600, owned by the appliance's user): run tapsplice ctl as that user, usually root",
                p.display()
            ),
            ClientError::NotListening(p) => write!(
                f,
                "nothing is listening on the ctl socket {} (left over from an appliance that stopped?)",
                p.display()
            ),
            ClientError::NotASocket(p) => write!(f, "{} is not a socket: check --socket", p.display()),
            ClientError::Timeout(p, d) => {
                write!(f, "the appliance did not answer on {} within {} s", p.display(), d.as_secs())
            }
            ClientError::Io(p, e) => write!(f, "ctl socket {}: {e}", p.display()),
            ClientError::Protocol(p, m) => write!(f, "unexpected answer on the ctl socket {}: {m}", p.display()),
            ClientError::Remote(e) => write!(f, "the appliance answered {}: {}", e.code, e.message),
        }
    }
}

impl std::error::Error for ClientError {}

fn classify(path: &Path, e: io::Error) -> ClientError {
    match e.kind() {
        io::ErrorKind::NotFound => ClientError::SocketMissing(path.to_path_buf()),
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(path.to_path_buf()),
        io::ErrorKind::ConnectionRefused => match std::fs::metadata(path) {
            Ok(m) if !m.file_type().is_socket() => ClientError::NotASocket(path.to_path_buf()),
            _ => ClientError::NotListening(path.to_path_buf()),
        },
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout(path.to_path_buf(), DEFAULT_TIMEOUT),
        _ => ClientError::Io(path.to_path_buf(), e),
    }
}

/// One connection to the appliance; requests are answered in order.
pub struct Client {
    path: PathBuf,
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|e| classify(path, e))?;
        let reader = BufReader::new(stream.try_clone().map_err(|e| classify(path, e))?);
        let _ = stream.set_write_timeout(Some(DEFAULT_TIMEOUT));
        Ok(Client { path: path.to_path_buf(), writer: stream, reader, next_id: 1 })
    }

    /// Sends one line as is and reads one answer (for tests and raw use).
    pub fn send_line(&mut self, line: &[u8], timeout: Duration) -> Result<Response, ClientError> {
        let mut out = line.to_vec();
        if out.last() != Some(&b'\n') {
            out.push(b'\n');
        }
        self.writer.write_all(&out).map_err(|e| classify(&self.path, e))?;
        self.read_response(timeout)
    }

    /// Reads the next answer line.
    pub fn read_response(&mut self, timeout: Duration) -> Result<Response, ClientError> {
        let _ = self.reader.get_ref().set_read_timeout(Some(timeout));
        let mut buf = Vec::new();
        let n = (&mut self.reader).take(MAX_RESPONSE as u64 + 1).read_until(b'\n', &mut buf).map_err(|e| {
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                ClientError::Timeout(self.path.clone(), timeout)
            } else {
                classify(&self.path, e)
            }
        })?;
        if n == 0 {
            return Err(ClientError::Protocol(self.path.clone(), "the appliance closed the connection without answering".into()));
        }
        if buf.last() != Some(&b'\n') && buf.len() > MAX_RESPONSE {
            return Err(ClientError::Protocol(self.path.clone(), format!("answer longer than {MAX_RESPONSE} bytes")));
        }
        serde_json::from_slice::<Response>(&buf)
            .map_err(|e| ClientError::Protocol(self.path.clone(), format!("not a ctl response ({e})")))
    }

    /// Sends a request and returns its result (or the appliance's error).
    pub fn call_raw(&mut self, cmd: &str, args: Map<String, Value>, timeout: Duration) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let line = Request::new(id, cmd, args).to_line();
        let resp = self.send_line(line.as_bytes(), timeout)?;
        if resp.id.is_some() && resp.id != Some(id) {
            return Err(ClientError::Protocol(self.path.clone(), format!("answer to request {:?}, expected {id}", resp.id)));
        }
        resp.into_result().map_err(ClientError::Remote)
    }

    pub fn call(&mut self, cmd: &Command) -> Result<Value, ClientError> {
        let timeout = if matches!(cmd, Command::Fence { .. }) { FENCE_TIMEOUT } else { DEFAULT_TIMEOUT };
        let req = cmd.to_request(0);
        self.call_raw(&req.cmd, req.args, timeout)
    }
}

/// Connects, sends one command, returns its result.
pub fn request(path: &Path, cmd: &Command) -> Result<Value, ClientError> {
    Client::connect(path)?.call(cmd)
}
