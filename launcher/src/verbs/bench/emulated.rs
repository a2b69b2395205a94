//! On the emulated CUDA device (kernels/emu): the device work of one optimiser step, from the
//! emulator's counters read before and after the timed steps. These figures are structural
//! (how often the host waits, what crosses the bus, how many launches), so they hold on a real
//! GPU too; the emulator's times do not, and the bench says so.

use serde_json::{json, Map, Value};

/// The counters that are totals (per-step averages make sense for them).
const TOTALS: [&str; 11] = [
    "host_waits",
    "event_queries",
    "h2d_bytes",
    "d2h_bytes",
    "d2d_bytes",
    "memset_bytes",
    "kernel_launches",
    "cublas_calls",
    "cudnn_calls",
    "nccl_calls",
    "nccl_bytes",
];
/// Breakdowns by name, averaged the same way.
const BREAKDOWNS: [&str; 5] =
    ["host_waits_by_reason", "kernel_launches_by_name", "cublas_by_name", "cudnn_by_name", "nccl_by_name"];

fn parse(text: &str) -> Option<Map<String, Value>> {
    serde_json::from_str::<Value>(text).ok()?.as_object().cloned()
}

fn num(m: &Map<String, Value>, k: &str) -> f64 {
    m.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

/// Per-optimiser-step averages of the counters between two snapshots, plus the peak device
/// bytes of the whole run.
pub fn per_step(before: &str, after: &str, steps: u64) -> Option<Value> {
    let (b, a) = (parse(before)?, parse(after)?);
    let steps = steps.max(1) as f64;
    let mut out = Map::new();
    for k in TOTALS {
        out.insert(k.to_string(), json!((num(&a, k) - num(&b, k)) / steps));
    }
    for k in BREAKDOWNS {
        let empty = Map::new();
        let (bm, am) = (
            b.get(k).and_then(Value::as_object).unwrap_or(&empty),
            a.get(k).and_then(Value::as_object).unwrap_or(&empty),
        );
        let mut m = Map::new();
        for (name, v) in am {
            let d = v.as_f64().unwrap_or(0.0) - bm.get(name).and_then(Value::as_f64).unwrap_or(0.0);
            if d > 0.0 {
                m.insert(name.clone(), json!(d / steps));
            }
        }
        out.insert(k.to_string(), Value::Object(m));
    }
    out.insert("peak_device_bytes".into(), json!(num(&a, "peak_device_bytes")));
    Some(Value::Object(out))
}

/// The per-step counters as lines for the terminal.
pub fn table(v: &Value) -> String {
    let g = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let mut s = String::from("emulated CUDA device, per optimiser step (structure, not speed):\n");
    s += &format!(
        "  host waits {:.1}   H2D {:.0} B   D2H {:.0} B   D2D {:.0} B   memset {:.0} B\n",
        g("host_waits"),
        g("h2d_bytes"),
        g("d2h_bytes"),
        g("d2d_bytes"),
        g("memset_bytes")
    );
    s += &format!(
        "  kernel launches {:.1}   cuBLAS {:.1}   cuDNN {:.1}   NCCL {:.1} ({:.0} B)\n",
        g("kernel_launches"),
        g("cublas_calls"),
        g("cudnn_calls"),
        g("nccl_calls"),
        g("nccl_bytes")
    );
    if let Some(m) = v.get("host_waits_by_reason").and_then(Value::as_object) {
        for (reason, n) in m {
            s += &format!("    wait: {reason} x{:.1}\n", n.as_f64().unwrap_or(0.0));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_step_divides_the_difference_by_the_steps() {
        let before = r#"{"host_waits": 2, "h2d_bytes": 100, "host_waits_by_reason": {"cuStreamSynchronize": 2},
            "kernel_launches_by_name": {"relu": 4}, "peak_device_bytes": 10}"#;
        let after = r#"{"host_waits": 6, "h2d_bytes": 300, "host_waits_by_reason": {"cuStreamSynchronize": 6},
            "kernel_launches_by_name": {"relu": 4, "fill": 8}, "peak_device_bytes": 50}"#;
        let v = per_step(before, after, 4).unwrap();
        assert_eq!(v["host_waits"], json!(1.0));
        assert_eq!(v["h2d_bytes"], json!(50.0));
        assert_eq!(v["host_waits_by_reason"]["cuStreamSynchronize"], json!(1.0));
        assert_eq!(v["kernel_launches_by_name"], json!({"fill": 2.0}), "unchanged names are left out");
        assert_eq!(v["peak_device_bytes"], json!(50.0));
        assert!(table(&v).contains("host waits 1.0"));
    }
}
