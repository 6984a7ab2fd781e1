//! Removing secrets from the process's own environment block once they have been read.
//!
//! `std::env::remove_var` only unlinks a variable from libc's `environ` array: its text stays in
//! the block the kernel laid out at `exec`, and `/proc/<pid>/environ` keeps showing it for the
//! life of the process. So the bytes themselves are overwritten, through `/proc/self/mem` (the
//! block lives in the main thread's stack mapping, which is writable). With the text gone,
//! `getenv` no longer finds the variable and a child that inherits the environment gets nothing.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt as _;

use zeroize::Zeroize as _;

/// Why the environment could not be scrubbed (names no variable and no value).
#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    /// `/proc/self/stat` did not give the environment's bounds.
    #[error("cannot find the environment block in /proc/self/stat")]
    Bounds,
    /// Reading `/proc/self/stat` or reading/writing `/proc/self/mem` failed.
    #[error("cannot rewrite the environment block through /proc/self: {0}")]
    Io(#[from] std::io::Error),
}

/// Overwrites with zero bytes every `NAME=value` entry of this process's environment block whose
/// name is in `names`; returns how many entries it wiped. Call it before any thread starts: nothing
/// may read the environment while it runs.
pub fn scrub_environment(names: &[&str]) -> Result<usize, ScrubError> {
    // The usual case (secrets given as files) touches nothing.
    if !names.iter().any(|n| std::env::var_os(n).is_some()) {
        return Ok(0);
    }
    let (start, end) = environment_bounds()?;
    let len = usize::try_from(end - start).map_err(|_| ScrubError::Bounds)?;
    let mem = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")?;
    let mut block = vec![0u8; len];
    mem.read_exact_at(&mut block, start)?;
    let mut wiped = 0;
    let mut offset: u64 = 0;
    let mut result = Ok(());
    for entry in block.split(|b| *b == 0) {
        if is_one_of(entry, names) {
            result = mem.write_all_at(&vec![0u8; entry.len()], start + offset);
            if result.is_err() {
                break;
            }
            wiped += 1;
        }
        offset += entry.len() as u64 + 1;
    }
    block.zeroize();
    result?;
    Ok(wiped)
}

/// True when `entry` is `NAME=…` for one of `names`.
fn is_one_of(entry: &[u8], names: &[&str]) -> bool {
    names.iter().any(|name| {
        entry
            .strip_prefix(name.as_bytes())
            .is_some_and(|rest| rest.first() == Some(&b'='))
    })
}

/// `env_start` and `env_end` of this process (fields 50 and 51 of `/proc/self/stat`).
fn environment_bounds() -> Result<(u64, u64), ScrubError> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Field 2, the command name, may hold spaces and parentheses: count from the last ')'.
    let (_, after_name) = stat.rsplit_once(')').ok_or(ScrubError::Bounds)?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `after_name` starts at field 3.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    match (field(50), field(51)) {
        (Some(start), Some(end)) if start < end => Ok((start, end)),
        _ => Err(ScrubError::Bounds),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_whole_names_only() {
        assert!(is_one_of(b"TON_API_KEY=abc", &["TON_API_KEY"]));
        assert!(is_one_of(b"TON_API_KEY=", &["TON_API_KEY"]));
        assert!(!is_one_of(b"TON_API_KEY_FILE=/run/k", &["TON_API_KEY"]));
        assert!(!is_one_of(b"TON_API_KE=abc", &["TON_API_KEY"]));
        assert!(!is_one_of(b"", &["TON_API_KEY"]));
    }

    #[test]
    fn bounds_are_readable() {
        let (start, end) = environment_bounds().unwrap();
        assert!(end > start);
    }
}
