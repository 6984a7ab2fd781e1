//! Small file helpers shared by the stores, the key loader and the commands.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Reads a whole file of at most `max` bytes; a larger one is an error, not an allocation.
pub fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?
        .take(max.saturating_add(1))
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_up_to_the_bound_and_refuses_more() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b' '; 5000]).unwrap();
        assert_eq!(read_bounded(&big, 5000).unwrap().len(), 5000);
        let e = read_bounded(&big, 4999).unwrap_err();
        assert!(e.to_string().contains("larger than 4999 bytes"), "{e}");
    }
}
