//! What `launcher bench` prints: a table for people, one JSON line for scripts (the keys of
//! scripts/pytorch_reference.py's line, so scripts/compare.sh can join the two), and an
//! optional markdown section appended to a results file.

use moco_worker::trace::PHASES;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Everything measured, plus what describes the run.
pub struct Figures {
    /// Keys shared with the PyTorch reference and extras (config, machine), in JSON form.
    pub fields: Map<String, Value>,
    pub step_s: Vec<f64>,
    pub median_step_s: f64,
    /// Exclusive seconds per phase over the timed steps.
    pub phase_s: BTreeMap<&'static str, f64>,
    pub images_per_step: usize,
    /// The loader alone (None: not measured).
    pub loader_pairs_per_s: Option<f64>,
    pub peak_memory_bytes: u64,
    pub peak_memory_kind: &'static str,
}

impl Figures {
    pub fn images_per_s(&self) -> f64 {
        self.images_per_step as f64 / self.median_step_s
    }

    /// Share of the timed steps' wall time per phase; time outside every span counts as
    /// "other", so the shares add up to 1.
    pub fn phase_share(&self) -> Vec<(&'static str, f64)> {
        let wall: f64 = self.step_s.iter().sum();
        let traced: f64 = self.phase_s.iter().filter(|(k, _)| **k != "other").map(|(_, v)| v).sum();
        PHASES
            .iter()
            .map(|&p| {
                let secs = if p == "other" {
                    (wall - traced).max(0.0)
                } else {
                    self.phase_s.get(p).copied().unwrap_or(0.0)
                };
                (p, if wall > 0.0 { secs / wall } else { 0.0 })
            })
            .collect()
    }

    pub fn json(&self) -> Value {
        let mut m = self.fields.clone();
        let r6 = |x: f64| (x * 1e6).round() / 1e6;
        m.insert("median_step_s".into(), json!(r6(self.median_step_s)));
        let min = self.step_s.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.step_s.iter().copied().fold(0.0, f64::max);
        m.insert("step_min_s".into(), json!(r6(min)));
        m.insert("step_max_s".into(), json!(r6(max)));
        m.insert("images_per_s".into(), json!((self.images_per_s() * 1e3).round() / 1e3));
        m.insert("peak_memory_bytes".into(), json!(self.peak_memory_bytes));
        m.insert("peak_memory_kind".into(), json!(self.peak_memory_kind));
        let share: Map<String, Value> = self
            .phase_share()
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!((v * 1e4).round() / 1e4)))
            .collect();
        m.insert("phase_share".into(), Value::Object(share));
        m.insert(
            "loader_pairs_per_s".into(),
            json!(self.loader_pairs_per_s.map(|p| (p * 10.0).round() / 10.0)),
        );
        m.insert("fits".into(), json!(true));
        Value::Object(m)
    }

    /// The table printed before the JSON line.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let f = &self.fields;
        let get = |k: &str| f.get(k).map(|v| v.to_string().trim_matches('"').to_string()).unwrap_or_default();
        let _ = writeln!(
            s,
            "\nbench: preset {}, {} on {} ({} threads), batch {} x accumulation {}, {} px, width {}",
            get("preset"),
            get("device"),
            get("device_name"),
            get("threads"),
            get("batch"),
            get("accumulation"),
            get("image_size"),
            get("width")
        );
        let _ = writeln!(
            s,
            "       {} steps timed after {} warm-up, batches from the {}",
            self.step_s.len(),
            get("warmup"),
            get("feed")
        );
        let rate = self.images_per_s();
        let _ = writeln!(s, "  {:<26} {:>12.2} ms", "median step", self.median_step_s * 1e3);
        let _ = writeln!(s, "  {:<26} {:>12.1} (two-view pairs consumed per second)", "images/s", rate);
        let _ = writeln!(
            s,
            "  {:<26} {:>12} ({})",
            "peak memory",
            human(self.peak_memory_bytes),
            self.peak_memory_kind
        );
        if let Some(b) = f
            .get("baseline_rss_bytes")
            .and_then(Value::as_u64)
            .filter(|_| self.peak_memory_kind == "process_peak_rss")
        {
            let _ = writeln!(
                s,
                "  {:<26} {:>12} (peak minus the RSS before the model)",
                "  of which the step",
                human(self.peak_memory_bytes.saturating_sub(b))
            );
        }
        if let Some(r) = f.get("peak_reserved_bytes").and_then(Value::as_u64) {
            let _ =
                writeln!(s, "  {:<26} {:>12} (arena peak, free lists included)", "peak reserved", human(r));
        }
        if let (Some(p), Some(sh)) = (
            f.get("planned_peak_bytes").and_then(Value::as_u64),
            f.get("planned_shapes_bytes").and_then(Value::as_u64),
        ) {
            let _ = writeln!(
                s,
                "  {:<26} {:>12} (launcher plan; {} of it from shapes, measured/planned {:.2})",
                "planned peak",
                human(p),
                human(sh),
                self.peak_memory_bytes as f64 / sh.max(1) as f64
            );
        }
        let _ = writeln!(s, "  phase share of the step:");
        let wall: f64 = self.step_s.iter().sum();
        let steps = self.step_s.len().max(1) as f64;
        for (p, share) in self.phase_share() {
            let _ = writeln!(
                s,
                "    {p:<24} {:>8.1} %  {:>10.2} ms/step",
                share * 100.0,
                share * wall / steps * 1e3
            );
        }
        let Some(lp) = self.loader_pairs_per_s else { return s };
        let _ = writeln!(
            s,
            "  {:<26} {:>12.1} pairs/s alone with {} thread(s): {}",
            "loader",
            lp,
            get("loader_threads"),
            if lp >= rate {
                format!("{:.1}x what the step consumes, it keeps up", lp / rate)
            } else {
                format!(
                    "only {:.0}% of what the step consumes: training would wait for data",
                    100.0 * lp / rate
                )
            }
        );
        s
    }

    /// A markdown section for a results file: when, where, the command and the figures.
    pub fn markdown(&self, command: &str, machine: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## launcher bench, {}\n", utc_now());
        let _ = writeln!(s, "Machine: {machine}\n");
        let _ = writeln!(s, "```\n{command}\n```\n");
        let _ = writeln!(s, "```{}```\n", self.table());
        let _ = writeln!(s, "```json\n{}\n```\n", self.json());
        s
    }
}

pub fn human(bytes: u64) -> String {
    moco_kernels::cuda::arena::human_bytes(bytes)
}

/// The machine in one line: CPU model, cores, load average, kernel.
pub fn machine_line() -> String {
    let model = cpu_model();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = load_average().unwrap_or_else(|| "unknown".into());
    let uname = std::process::Command::new("uname")
        .arg("-a")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{model}, {cores} core(s), load average {load}; {uname}")
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg writes them.
pub fn load_average() -> Option<String> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// "2025-11-22 21:30 UTC" from the system clock (no time-zone database needed).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!("{y:04}-{mo:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(step_s: Vec<f64>, phases: &[(&'static str, f64)]) -> Figures {
        Figures {
            fields: Map::new(),
            median_step_s: crate::verbs::bench::steps::median(&step_s),
            step_s,
            phase_s: phases.iter().copied().collect(),
            images_per_step: 32,
            loader_pairs_per_s: Some(100.0),
            peak_memory_bytes: 1 << 30,
            peak_memory_kind: "process_peak_rss",
        }
    }

    #[test]
    fn shares_add_up_to_one_with_untraced_time_as_other() {
        // 3 steps of 0.1 s; spans cover 0.24 s of the 0.3 s.
        let f = figures(vec![0.1, 0.1, 0.1], &[("forward", 0.12), ("backward", 0.09), ("optimizer", 0.03)]);
        let s: BTreeMap<&str, f64> = f.phase_share().into_iter().collect();
        assert!((s.values().sum::<f64>() - 1.0).abs() < 1e-12, "{s:?}");
        assert!((s["forward"] - 0.4).abs() < 1e-12 && (s["other"] - 0.2).abs() < 1e-12, "{s:?}");
        assert_eq!(s["comm"], 0.0);
        assert!((f.images_per_s() - 320.0).abs() < 1e-9);
    }

    #[test]
    fn json_has_the_reference_keys() {
        let f = figures(vec![0.2, 0.1, 0.3], &[("forward", 0.3)]);
        let v = f.json();
        for k in [
            "median_step_s",
            "images_per_s",
            "peak_memory_bytes",
            "peak_memory_kind",
            "phase_share",
            "loader_pairs_per_s",
        ] {
            assert!(v.get(k).is_some(), "{k} missing from {v}");
        }
        assert_eq!(v["median_step_s"], json!(0.2));
        assert_eq!(v["images_per_s"], json!(160.0));
    }

    #[test]
    fn the_table_says_when_the_loader_cannot_keep_up() {
        let mut f = figures(vec![0.1], &[]);
        f.loader_pairs_per_s = Some(80.0); // the step eats 320 pairs/s
        assert!(f.table().contains("would wait for data"), "{}", f.table());
        f.loader_pairs_per_s = Some(640.0);
        assert!(f.table().contains("2.0x"), "{}", f.table());
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_414), (2025, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
