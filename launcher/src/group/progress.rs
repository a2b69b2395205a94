//! The one progress display of a run, fed by rank 0's metrics: a bar on a terminal, a plain
//! line every few seconds otherwise (logs, CI).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use moco_proto::wire::Metrics;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    last_line: Instant,
    pub last: Option<Metrics>,
    pub first: Option<Metrics>,
    /// Images per optimiser step, when the first step's time should be turned into an estimate
    /// of the step time and the whole run (full-size presets on the CPU).
    pub estimate_from_first: Option<f64>,
}

impl Progress {
    pub fn new(total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        });
        Progress {
            bar,
            total,
            last_line: Instant::now() - Duration::from_secs(60),
            last: None,
            first: None,
            estimate_from_first: None,
        }
    }

    pub fn update(&mut self, m: Metrics) {
        let msg = format!(
            "epoch {} loss {:.4} lr {:.2e} m {:.4} scale {} {:.1} img/s mem {:.0} MiB",
            m.epoch,
            m.loss,
            m.lr,
            m.momentum,
            m.loss_scale,
            m.images_per_sec,
            m.memory_bytes as f64 / (1u64 << 20) as f64
        );
        match &self.bar {
            Some(b) => {
                b.set_position(m.step);
                b.set_message(msg);
            }
            None => {
                if self.last_line.elapsed() >= Duration::from_secs(5) || m.step == self.total || m.step == 1 {
                    eprintln!("step {}/{}  {msg}", m.step, self.total);
                    self.last_line = Instant::now();
                }
            }
        }
        if self.first.is_none() {
            if let Some(line) =
                self.estimate_from_first.and_then(|images| estimate_line(images, &m, self.total))
            {
                self.println(&line);
            }
            self.first = Some(m.clone());
        }
        self.last = Some(m);
    }

    /// Print a line without tearing the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.abandon();
        }
    }
}

/// The expected time per step and for the run, from the first step's rate (`images` per
/// optimiser step); `None` when the rate is unknown.
pub fn estimate_line(images: f64, first: &Metrics, total: u64) -> Option<String> {
    if first.images_per_sec <= 0.0 || !first.images_per_sec.is_finite() {
        return None;
    }
    let per_step = images / first.images_per_sec;
    let run = per_step * total.max(first.step) as f64;
    Some(format!(
        "the first step took {}: expect about {} per step and {} for the {total} step(s) of this run \
         (stop with Ctrl-C; a GPU run: `launcher doctor`)",
        human_secs(per_step),
        human_secs(per_step),
        human_secs(run),
    ))
}

/// "42 s", "11.3 min", "5.2 h", "3.1 days".
pub fn human_secs(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} days", s / 86_400.0)
    }
}

#[cfg(test)]
mod tests {
    use super::{estimate_line, human_secs};
    use moco_proto::wire::Metrics;

    #[test]
    fn the_first_step_gives_the_time_per_step_and_for_the_run() {
        // optimized on 2 CPU ranks: 192 images per step at 0.29 img/s (11 min per step).
        let metrics = |ips: f64| Metrics {
            rank: 0,
            step: 1,
            epoch: 0,
            loss: 1.0,
            lr: 0.0,
            momentum: 0.99,
            loss_scale: 1.0,
            images_per_sec: ips,
            memory_bytes: 0,
        };
        let m = metrics(192.0 / 678.0);
        let line = estimate_line(192.0, &m, 1000).unwrap();
        assert!(line.contains("about 11.3 min per step and 7.8 days for the 1000 step(s)"), "{line}");
        let unknown = metrics(0.0);
        assert_eq!(estimate_line(192.0, &unknown, 1000), None);
    }

    #[test]
    fn durations_read_in_the_unit_that_fits() {
        assert_eq!(human_secs(42.0), "42.0 s");
        assert_eq!(human_secs(678.0), "11.3 min");
        assert_eq!(human_secs(18_720.0), "5.2 h");
        assert_eq!(human_secs(267_840.0), "3.1 days");
    }
}
