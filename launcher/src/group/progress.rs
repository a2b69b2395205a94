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
        Progress { bar, total, last_line: Instant::now() - Duration::from_secs(60), last: None, first: None }
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
