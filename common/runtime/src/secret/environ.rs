//! Removing secrets from the process's own environment once they have been read.
//!
//! `std::env::remove_var` only unlinks a variable from libc's `environ` array: its text stays in
//! the block the kernel laid out at `exec`, and `/proc/<pid>/environ` keeps showing it for the
//! life of the process. So the entry's bytes are also overwritten in place (the block lives in
//! the main thread's stack mapping, which is writable). Both happen in [`unset_and_wipe`], one of
//! the workspace's two audited `unsafe` sites.

use std::ffi::{CStr, c_char};

/// Why the environment could not be scrubbed (names no variable and no value).
#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    /// `/proc/self/stat` did not give the environment's bounds.
    #[error("cannot find the environment block in /proc/self/stat")]
    Bounds,
    /// Reading `/proc/self/stat` failed.
    #[error("cannot read /proc/self/stat for the environment block: {0}")]
    Io(#[from] std::io::Error),
}

/// Removes every variable named in `names` from this process's environment and overwrites its
/// `NAME=value` text in the block the kernel set up at `exec` with zero bytes; returns how many
/// entries it removed. Call it before any thread starts: nothing may read or change the
/// environment while it runs.
pub fn scrub_environment(names: &[&str]) -> Result<usize, ScrubError> {
    // The usual case (secrets given as files) touches nothing.
    if !names.iter().any(|n| std::env::var_os(n).is_some()) {
        return Ok(0);
    }
    let block = environment_bounds()?;
    Ok(unset_and_wipe(names, block))
}

/// Unsets each variable of `names` (`std::env::remove_var`) and zeroes the bytes of its entry
/// when that entry lies in `block` (the kernel's environment block, `[start, end)`); returns how
/// many entries matched.
#[allow(unsafe_code)]
fn unset_and_wipe(names: &[&str], block: (u64, u64)) -> usize {
    // Defined by every Unix C library with exactly this type: the `NAME=value` pointers,
    // null-terminated.
    unsafe extern "C" {
        static environ: *const *const c_char;
    }
    // Addresses and lengths first: `remove_var` rewrites the array we walk.
    let mut found: Vec<(*mut u8, usize)> = Vec::new();
    // SAFETY: the caller runs this before any other thread exists (`scrub_environment`'s
    // contract, kept by every `main` calling it before the Tokio runtime is built), so no
    // concurrent `getenv`/`setenv` can race with reading `environ`, with `remove_var` (unsound
    // only with concurrent environment access) or with the writes. Every pointer read comes
    // from the null-terminated `environ` array and points at a NUL-terminated string. Bytes are
    // only written inside `block`, the kernel-laid-out `[env_start, env_end)` that the kernel
    // maps writable on the main stack and nothing else owns (a `setenv` copy on the heap, which
    // libc may reuse, is only unset, never written); `len` stops before the entry's NUL.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            let text = CStr::from_ptr(*entry).to_bytes();
            if is_one_of(text, names) {
                found.push(((*entry).cast_mut().cast::<u8>(), text.len()));
            }
            entry = entry.add(1);
        }
        for name in names {
            std::env::remove_var(name);
        }
        for &(start, len) in &found {
            let addr = start as u64;
            if addr >= block.0 && addr.saturating_add(len as u64) <= block.1 {
                std::ptr::write_bytes(start, 0, len);
            }
        }
    }
    found.len()
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
