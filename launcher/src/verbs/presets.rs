//! `launcher presets`: every preset as a table row with the values that follow from it
//! (effective batch, scaled lr, keys per step), then a line on each.

use crate::cli::PresetsArgs;
use crate::error::Result;
use moco_proto::presets::PRESETS;
use moco_proto::resolved::{fmt_num, optimizer_name, Batching};

pub fn run(a: &PresetsArgs) -> Result<()> {
    say_part!("{}", table(a.gpus));
    Ok(())
}

fn table(gpus: Option<usize>) -> String {
    let header = format!(
        "{:<13} {:>4} {:>9} {:>5} {:>9} {:>8} {:>9} {:>10} {:>7} {:>9} {:>4} {:>6} {:>4} {:>9}\n",
        "preset",
        "gpus",
        "batch/gpu",
        "accum",
        "eff.batch",
        "opt",
        "base lr",
        "scaled lr",
        "queue",
        "keys/step",
        "T",
        "epochs",
        "amp",
        "recompute"
    );
    let mut s = header;
    let mut notes = Vec::new();
    for p in PRESETS {
        let cfg = p.config();
        let world = gpus.unwrap_or(p.gpus);
        let yes = |b: bool| if b { "on" } else { "off" };
        match Batching::new(&cfg, world) {
            Ok(b) => s.push_str(&format!(
                "{:<13} {:>4} {:>9} {:>5} {:>9} {:>8} {:>9} {:>10} {:>7} {:>9} {:>4} {:>6} {:>4} {:>9}\n",
                p.name,
                world,
                b.batch,
                b.accumulation,
                b.effective_batch,
                optimizer_name(&cfg),
                fmt_num(cfg.base_lr as f64),
                fmt_num(b.scaled_lr),
                if cfg.queue_size == 0 { "none".to_string() } else { cfg.queue_size.to_string() },
                b.keys_per_step,
                cfg.temperature,
                cfg.epochs,
                yes(cfg.amp),
                yes(cfg.recompute)
            )),
            Err(e) => {
                s.push_str(&format!("{:<13} {:>4}  not valid on {world} GPU(s): see below\n", p.name, world));
                let problems: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
                let text = if problems.is_empty() { e.to_string() } else { problems.join("\n") };
                notes.push(format!("{} on {world} GPU(s):\n  {}", p.name, text.replace('\n', "\n  ")));
            }
        }
    }
    s.push('\n');
    for p in PRESETS {
        s.push_str(&format!("{:<13} {}\n", p.name, p.about));
    }
    s.push_str(
        "\neff.batch = batch/gpu x gpus x accum; scaled lr = base lr x eff.batch / 256; \
         keys/step = 2 views x batch/gpu x gpus (the queue must be a multiple of it).\n\
         `launcher plan --preset NAME --gpus N --vram 8GiB` tells whether one fits.\n",
    );
    for n in notes {
        s.push_str(&format!("\n{n}\n"));
    }
    s
}
