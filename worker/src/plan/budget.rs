//! `--vram` sizes (8GiB, 8GB, 8192MiB, 7.5GiB) and how sizes are printed.

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// Bytes of a size with a unit. Binary units (KiB, MiB, GiB, TiB) are powers of 1024; decimal
/// ones (KB, MB, GB, TB) powers of 1000, as disk makers use them. A bare number is refused:
/// "8" could mean GiB or GB, and the difference is 590 MiB.
pub fn parse_vram(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = (t[..split].trim(), t[split..].trim());
    let help = "give a number and a unit, e.g. 8GiB, 8GB, 8192MiB or 7.5GiB";
    let value: f64 = num.parse().map_err(|_| format!("{s:?}: {help}"))?;
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "b" => 1,
        "kib" => 1 << 10,
        "mib" => MIB,
        "gib" => GIB,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "" => return Err(format!("{s:?} has no unit: {help}")),
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; {help}")),
    };
    let bytes = value * scale as f64;
    if !(bytes.is_finite() && bytes >= MIB as f64) {
        return Err(format!("{s:?}: a budget below 1 MiB cannot hold a model; {help}"));
    }
    Ok(bytes as u64)
}

/// `1234.5` (MiB, one decimal).
pub fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / MIB as f64)
}

/// `7.25 GiB`.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / GIB as f64)
}

/// `7.78 GB` (decimal, as the seeds write sizes).
pub fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_binary_and_decimal_units() {
        assert_eq!(parse_vram("8GiB").unwrap(), 8 * GIB);
        assert_eq!(parse_vram("8192MiB").unwrap(), 8 * GIB);
        assert_eq!(parse_vram("8GB").unwrap(), 8_000_000_000);
        assert_eq!(parse_vram("7.5 gib").unwrap(), 7 * GIB + GIB / 2);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for s in ["8", "eight GiB", "8 GiBs", "-8GiB", "", "0.5KiB"] {
            let e = parse_vram(s).unwrap_err();
            assert!(e.contains("8GiB"), "{s:?}: {e}");
        }
    }
}
