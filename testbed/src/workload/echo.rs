//! echo: a request of `request_bytes` (150 B) is echoed back byte for byte (papers' "echo").

/// Requests per connection when the topology does not say.
pub const DEFAULT_REQUESTS: u64 = 500;

pub fn reply_len(request_bytes: u32) -> u64 {
    request_bytes as u64
}
