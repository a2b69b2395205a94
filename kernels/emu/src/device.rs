//! The emulated device's properties, configurable through the environment so that tests can
//! pose as the user's 8 GB card or as a small one that must run out of memory.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `MOCO_EMU_DEVICES` | 2 | devices visible to each process (the user's two cards) |
//! | `MOCO_EMU_NAME` | `moco-emu emulated GPU` | what `cuDeviceGetName` returns |
//! | `MOCO_EMU_MEMORY` | `8GiB` | total memory of each device (bytes, or KiB/MiB/GiB suffix) |
//! | `MOCO_EMU_CC` | `8.6` | compute capability (sm_86: RTX 30-series) |
//! | `MOCO_EMU_SMS` | 28 | multiprocessors (an RTX 3060 has 28) |
//! | `MOCO_EMU_DRIVER_VERSION` | 13000 | what `cuDriverGetVersion` returns (12040: a CUDA 12.4 driver); module images from a newer toolkit are refused as a real driver refuses them (`driver/module_api.rs`) |
//! | `MOCO_EMU_REFUSE_CUBIN` | unset | `1`: every CUBIN is refused (as for an architecture the image lacks), so the PTX fallback runs |

use std::sync::OnceLock;

#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub count: i32,
    pub name: String,
    pub total_memory: usize,
    pub cc_major: i32,
    pub cc_minor: i32,
    pub sm_count: i32,
    /// The CUDA version the driver supports, as `cuDriverGetVersion` encodes it (12040 = 12.4).
    pub driver_version: i32,
    /// Refuse every CUBIN (tests of the PTX fallback).
    pub refuse_cubin: bool,
}

/// Parses "8GiB", "512MiB", "64KiB" or a plain byte count.
pub fn parse_bytes(text: &str) -> Option<usize> {
    let t = text.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("GiB") {
        (n, 1usize << 30)
    } else if let Some(n) = t.strip_suffix("MiB") {
        (n, 1 << 20)
    } else if let Some(n) = t.strip_suffix("KiB") {
        (n, 1 << 10)
    } else {
        (t, 1)
    };
    num.trim().parse::<usize>().ok().and_then(|n| n.checked_mul(mult))
}

fn env_or<T>(name: &str, default: T, parse: impl Fn(&str) -> Option<T>) -> T {
    match std::env::var(name) {
        Ok(v) => parse(&v).unwrap_or_else(|| {
            // A typo in a test's environment must not silently become the default.
            eprintln!("moco-emu: {name}={v:?} is not valid; using the default");
            default
        }),
        Err(_) => default,
    }
}

impl DeviceConfig {
    fn from_env() -> Self {
        let (cc_major, cc_minor) = env_or("MOCO_EMU_CC", (8, 6), |v| {
            let (a, b) = v.split_once('.')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        });
        DeviceConfig {
            count: env_or("MOCO_EMU_DEVICES", 2, |v| v.parse().ok().filter(|n| *n >= 0)),
            name: std::env::var("MOCO_EMU_NAME").unwrap_or_else(|_| "moco-emu emulated GPU".to_string()),
            total_memory: env_or("MOCO_EMU_MEMORY", 8usize << 30, parse_bytes),
            cc_major,
            cc_minor,
            sm_count: env_or("MOCO_EMU_SMS", 28, |v| v.parse().ok().filter(|n| *n > 0)),
            driver_version: env_or("MOCO_EMU_DRIVER_VERSION", 13000, |v| {
                v.parse().ok().filter(|n| (10000..100000).contains(n))
            }),
            refuse_cubin: std::env::var("MOCO_EMU_REFUSE_CUBIN").is_ok_and(|v| v == "1"),
        }
    }
}

/// The configuration of this process's devices, read once.
pub fn config() -> &'static DeviceConfig {
    static CONFIG: OnceLock<DeviceConfig> = OnceLock::new();
    CONFIG.get_or_init(DeviceConfig::from_env)
}

/// Limits of a launch, as on every device since sm_30.
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
pub const MAX_BLOCK_DIM: [u32; 3] = [1024, 1024, 64];
pub const MAX_GRID_DIM: [u32; 3] = [i32::MAX as u32, 65535, 65535];
/// Static plus dynamic shared memory per block without the opt-in attribute.
pub const MAX_SHARED_PER_BLOCK: usize = 48 * 1024;
pub const WARP_SIZE: i32 = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_and_without_suffix() {
        assert_eq!(parse_bytes("8GiB"), Some(8 << 30));
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("8GB"), None);
    }
}
