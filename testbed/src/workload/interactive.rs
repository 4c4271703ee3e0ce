//! interactive: a 150 B request gets a 10 KB generated reply (papers' "interactive").

pub const DEFAULT_REQUESTS: u64 = 100;
pub const DEFAULT_REPLY_BYTES: u64 = 10 * 1024;
