//! The `--data` argument: `synthetic[:N[:SIZE]]` or a path to a folder of tiles.

use crate::error::{Result, WorkerError};
use std::path::PathBuf;

/// Default number of synthetic tiles (the size of the user's real dataset, ~2,000 tiles).
pub const DEFAULT_SYNTHETIC_COUNT: usize = 2048;
/// Default stored size of a synthetic tile in pixels (square).
pub const DEFAULT_SYNTHETIC_SIZE: usize = 96;

/// How many synthetic tiles, and of what size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticSpec {
    pub count: usize,
    /// Side of the square stored tile, pixels.
    pub size: usize,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec { count: DEFAULT_SYNTHETIC_COUNT, size: DEFAULT_SYNTHETIC_SIZE }
    }
}

/// Where the tiles come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSpec {
    /// `synthetic`, `synthetic:N` or `synthetic:N:SIZE`.
    Synthetic(SyntheticSpec),
    /// Anything else is a path (a folder of images or a cache). A folder literally named
    /// `synthetic` is reached as `./synthetic`.
    Path(PathBuf),
}

impl DataSpec {
    pub fn parse(s: &str) -> Result<DataSpec> {
        let bad = |why: String| WorkerError::Data(format!("--data {s:?}: {why}"));
        let rest = match s.strip_prefix("synthetic") {
            Some("") => return Ok(DataSpec::Synthetic(SyntheticSpec::default())),
            Some(rest) => match rest.strip_prefix(':') {
                Some(rest) => rest,
                None => return Ok(DataSpec::Path(PathBuf::from(s))),
            },
            None if s.is_empty() => return Err(bad("empty; give a folder or `synthetic[:N[:SIZE]]`".into())),
            None => return Ok(DataSpec::Path(PathBuf::from(s))),
        };
        let mut parts = rest.split(':');
        let mut spec = SyntheticSpec::default();
        let number = |p: &str, what: &str| {
            p.trim().parse::<usize>().map_err(|_| bad(format!("{what} {p:?} is not a whole number")))
        };
        if let Some(p) = parts.next() {
            spec.count = number(p, "tile count")?;
        }
        if let Some(p) = parts.next() {
            spec.size = number(p, "tile size")?;
        }
        if parts.next().is_some() {
            return Err(bad("expected `synthetic`, `synthetic:N` or `synthetic:N:SIZE`".into()));
        }
        if spec.count == 0 || u32::try_from(spec.count).is_err() {
            return Err(bad(format!("tile count must be 1..=4294967295, got {}", spec.count)));
        }
        if !(16..=4096).contains(&spec.size) {
            return Err(bad(format!("tile size must be 16..=4096 pixels, got {}", spec.size)));
        }
        Ok(DataSpec::Synthetic(spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synth(count: usize, size: usize) -> DataSpec {
        DataSpec::Synthetic(SyntheticSpec { count, size })
    }

    #[test]
    fn parses_synthetic_forms() {
        assert_eq!(DataSpec::parse("synthetic").unwrap(), synth(2048, 96));
        assert_eq!(DataSpec::parse("synthetic:500").unwrap(), synth(500, 96));
        assert_eq!(DataSpec::parse("synthetic:500:128").unwrap(), synth(500, 128));
    }

    #[test]
    fn paths_pass_through() {
        assert_eq!(DataSpec::parse("./tiles").unwrap(), DataSpec::Path("./tiles".into()));
        assert_eq!(DataSpec::parse("./synthetic").unwrap(), DataSpec::Path("./synthetic".into()));
        assert_eq!(DataSpec::parse("synthetic_tiles").unwrap(), DataSpec::Path("synthetic_tiles".into()));
    }

    #[test]
    fn rejects_bad_synthetic_specs() {
        for s in [
            "",
            "synthetic:",
            "synthetic:0",
            "synthetic:-3",
            "synthetic:10:8",
            "synthetic:1:96:3",
            "synthetic:x",
        ] {
            assert!(DataSpec::parse(s).is_err(), "{s:?} accepted");
        }
    }
}
