//! bulk: a 150 B request gets N MB of generated reply (papers' "bulk": 1, 5, 20, 100 MB).

pub const DEFAULT_REQUESTS: u64 = 1;
pub const DEFAULT_REPLY_BYTES: u64 = 20 * 1000 * 1000;
