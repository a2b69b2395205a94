//! `Snapshot`: one rank's training state on the host, taken from a `Moco<B>` (any backend, via
//! `to_host`) and put back into one (`from_host`), bit for bit; and its tensors as stored in a
//! rank file.
//!
//! Tensor names (our layout: conv weights OHWI, see `meta::LAYOUT`):
//! - shared by every rank, stored in rank 0's file only (all-reduced gradients and a global
//!   inf/NaN verdict keep them identical on every rank):
//!   `param.<name>` (query encoder, torchvision-style names), `key_param.<name>` (momentum
//!   encoder: backbone + projector), `opt.m`, `opt.v` (flat, parameter order), `opt.steps`;
//! - per rank (BN statistics differ under local/shuffle BN; each rank owns a queue shard):
//!   `q_stats.<bn>.running_mean|running_var`, `k_stats.<...>`, `queue.keys` `[rows, dim]`,
//!   `queue.idx` (I64, dataset index per row, -1 = initial random key), `queue.ptr` (I64).

use super::tensors::{Entry, TensorFile};
use crate::error::{Result, WorkerError};
use crate::moco::queue::QueueShard;
use crate::moco::scaler::LossScaler;
use crate::moco::Moco;
use crate::model::topology::{ParamKind, Topology};
use moco_kernels::Backend;

/// A queue shard on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueState {
    pub keys: Vec<f32>,
    pub idx: Vec<i64>,
    pub ptr: usize,
    pub rows: usize,
    pub dim: usize,
}

/// One rank's training state on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub params: Vec<f32>,
    pub key_params: Vec<f32>,
    pub q_stats: Vec<f32>,
    pub k_stats: Vec<f32>,
    pub opt_m: Vec<f32>,
    pub opt_v: Vec<f32>,
    pub opt_steps: u64,
    pub queue: Option<QueueState>,
    pub scaler: LossScaler,
    pub micro_total: u64,
    pub steps: u64,
}

/// Shape of a parameter as stored in rank files (our layout).
pub fn stored_shape(kind: &ParamKind) -> Vec<usize> {
    match *kind {
        ParamKind::ConvWeight { c_out, c_in, k } => vec![c_out, k, k, c_in],
        ParamKind::LinearWeight { d_out, d_in } => vec![d_out, d_in],
        ParamKind::BnGamma { c } | ParamKind::BnBeta { c } => vec![c],
    }
}

impl Snapshot {
    /// Copy the state out of `m`. Checkpoints are taken between optimiser steps: an
    /// accumulation in progress (gradients not yet applied) is an error.
    pub fn of<B: Backend>(m: &Moco<B>) -> Result<Snapshot> {
        if m.micro_in_step != 0 {
            return Err(WorkerError::Numeric(format!(
                "checkpoint requested after {} of {} micro-batches of a step: save between optimiser steps",
                m.micro_in_step, m.cfg.accumulation
            )));
        }
        let be = &m.be;
        let queue = match &m.queue {
            // The device pointer and indices cross to the host here, between steps (a corrupted
            // pointer is an error naming its value: no checkpoint carries it).
            Some(q) => Some(QueueState {
                keys: be.to_host(&q.keys)?,
                idx: q.idx_host(be)?,
                ptr: q.ptr_host(be)?,
                rows: q.rows,
                dim: q.dim,
            }),
            None => None,
        };
        Ok(Snapshot {
            params: be.to_host(&m.params)?,
            key_params: be.to_host(&m.key_params)?,
            q_stats: be.to_host(&m.q_stats)?,
            k_stats: be.to_host(&m.k_stats)?,
            opt_m: be.to_host(&m.opt.m)?,
            opt_v: be.to_host(&m.opt.v)?,
            opt_steps: m.opt.steps,
            queue,
            scaler: m.scaler,
            micro_total: m.micro_total,
            steps: m.steps,
        })
    }

    /// Put this state into `m` (same topology, optimiser and queue shape: checked), clearing the
    /// gradient buffer and rebuilding the AMP weight copies.
    pub fn restore_into<B: Backend>(&self, m: &mut Moco<B>) -> Result<()> {
        let t = &m.topo;
        let check = |what: &str, got: usize, want: usize| {
            if got == want {
                Ok(())
            } else {
                Err(WorkerError::Numeric(format!(
                    "snapshot {what} holds {got} values, the model needs {want}"
                )))
            }
        };
        check("parameters", self.params.len(), t.param_len())?;
        check("momentum-encoder parameters", self.key_params.len(), t.key_len())?;
        check("query BN statistics", self.q_stats.len(), t.stats_len)?;
        check("key BN statistics", self.k_stats.len(), t.stats_len)?;
        check("optimiser m", self.opt_m.len(), B::buf_len(&m.opt.m))?;
        check("optimiser v", self.opt_v.len(), B::buf_len(&m.opt.v))?;
        match (&self.queue, &m.queue) {
            (Some(s), Some(q)) => {
                check("queue rows", s.rows, q.rows)?;
                check("queue dim", s.dim, q.dim)?;
            }
            (None, None) => {}
            (s, _) => {
                return Err(WorkerError::Numeric(format!(
                    "snapshot {} a queue, the run {}",
                    if s.is_some() { "has" } else { "has no" },
                    if s.is_some() { "has none" } else { "has one" }
                )))
            }
        }
        let be = &m.be;
        m.params = be.from_host(&self.params)?;
        m.key_params = be.from_host(&self.key_params)?;
        m.q_stats = be.from_host(&self.q_stats)?;
        m.k_stats = be.from_host(&self.k_stats)?;
        m.opt.m = be.from_host(&self.opt_m)?;
        m.opt.v = be.from_host(&self.opt_v)?;
        m.opt.steps = self.opt_steps;
        if let Some(s) = &self.queue {
            m.queue = Some(QueueShard::from_host(be, &s.keys, &s.idx, s.ptr, s.dim, m.cfg.queue_precision)?);
        }
        m.grads = be.zeros_master(t.param_len())?;
        m.scaler = self.scaler;
        m.micro_total = self.micro_total;
        m.micro_in_step = 0;
        m.steps = self.steps;
        m.refresh_weights()
    }

    /// Tensors of the state shared by all ranks (written to rank 0's file).
    pub fn shared_entries<'a>(&'a self, t: &Topology, opt_steps: &'a [i64; 1]) -> Vec<Entry<'a>> {
        let mut v = Vec::new();
        for p in &t.params {
            v.push(Entry::f32(format!("param.{}", p.name), stored_shape(&p.kind), &self.params[p.range()]));
        }
        for p in t.params.iter().filter(|p| p.offset < t.key_len()) {
            v.push(Entry::f32(
                format!("key_param.{}", p.name),
                stored_shape(&p.kind),
                &self.key_params[p.range()],
            ));
        }
        v.push(Entry::f32("opt.m", vec![self.opt_m.len()], &self.opt_m));
        v.push(Entry::f32("opt.v", vec![self.opt_v.len()], &self.opt_v));
        v.push(Entry::i64("opt.steps", vec![], &opt_steps[..]));
        v
    }

    /// Tensors of this rank's own state.
    pub fn local_entries<'a>(&'a self, t: &Topology, ptr: &'a [i64; 1]) -> Vec<Entry<'a>> {
        let mut v = Vec::new();
        for (prefix, stats) in [("q_stats", &self.q_stats), ("k_stats", &self.k_stats)] {
            for (name, off, len) in &t.buffers {
                v.push(Entry::f32(format!("{prefix}.{name}"), vec![*len], &stats[*off..off + len]));
            }
        }
        if let Some(q) = &self.queue {
            v.push(Entry::f32("queue.keys", vec![q.rows, q.dim], &q.keys));
            v.push(Entry::i64("queue.idx", vec![q.rows], &q.idx));
            v.push(Entry::i64("queue.ptr", vec![], &ptr[..]));
        }
        v
    }
}

/// An error naming the tensor when `v` holds NaN or inf: a checkpoint with such a tensor would
/// load, train and export "fine" and give chance-level features, so readers refuse it by name.
pub fn check_finite(f: &TensorFile, name: &str, v: &[f32]) -> Result<()> {
    let bad = v.iter().filter(|x| !x.is_finite()).count();
    if bad == 0 {
        return Ok(());
    }
    Err(WorkerError::BadFile {
        path: f.path.clone(),
        problem: format!(
            "tensor {name} holds {bad} non-finite value(s) (NaN/inf) of {}: the run diverged before this \
             checkpoint was written. Use an older checkpoint of the run (its checkpoints/step-N folders)",
            v.len()
        ),
    })
}

/// Read flat parameters `<prefix><name>` for every parameter with offset < `len`.
pub fn read_params(f: &TensorFile, t: &Topology, prefix: &str, len: usize) -> Result<Vec<f32>> {
    let mut flat = vec![0.0f32; len];
    for p in t.params.iter().filter(|p| p.offset < len) {
        let name = format!("{prefix}{}", p.name);
        let v = f.f32(&name, Some(&stored_shape(&p.kind)))?;
        check_finite(f, &name, &v)?;
        flat[p.range()].copy_from_slice(&v);
    }
    Ok(flat)
}

/// Read a flat running-statistics buffer `<prefix>.<bn>.running_mean|var`.
pub fn read_stats(f: &TensorFile, t: &Topology, prefix: &str) -> Result<Vec<f32>> {
    let mut flat = vec![0.0f32; t.stats_len];
    for (name, off, len) in &t.buffers {
        let name = format!("{prefix}.{name}");
        let v = f.f32(&name, Some(&[*len]))?;
        check_finite(f, &name, &v)?;
        flat[*off..off + len].copy_from_slice(&v);
    }
    Ok(flat)
}

/// The shared part of a snapshot from rank 0's file.
pub struct Shared {
    pub params: Vec<f32>,
    pub key_params: Vec<f32>,
    pub opt_m: Vec<f32>,
    pub opt_v: Vec<f32>,
    pub opt_steps: u64,
}

pub fn read_shared(f: &TensorFile, t: &Topology, v_len: usize) -> Result<Shared> {
    let bad = |p: String| WorkerError::BadFile { path: f.path.clone(), problem: p };
    let opt_steps = f.i64_scalar("opt.steps")?;
    Ok(Shared {
        params: read_params(f, t, "param.", t.param_len())?,
        key_params: read_params(f, t, "key_param.", t.key_len())?,
        opt_m: f.f32("opt.m", Some(&[t.param_len()]))?,
        opt_v: f.f32("opt.v", Some(&[v_len]))?,
        opt_steps: u64::try_from(opt_steps).map_err(|_| bad(format!("opt.steps is {opt_steps}")))?,
    })
}

/// This rank's own part: (q_stats, k_stats, queue).
pub fn read_local(
    f: &TensorFile,
    t: &Topology,
    queue: Option<(usize, usize)>,
) -> Result<(Vec<f32>, Vec<f32>, Option<QueueState>)> {
    let bad = |p: String| WorkerError::BadFile { path: f.path.clone(), problem: p };
    let q_stats = read_stats(f, t, "q_stats")?;
    let k_stats = read_stats(f, t, "k_stats")?;
    let queue = match queue {
        Some((rows, dim)) => {
            let keys = f.f32("queue.keys", Some(&[rows, dim]))?;
            check_finite(f, "queue.keys", &keys)?;
            let idx = f.i64("queue.idx", Some(&[rows]))?;
            let ptr = f.i64_scalar("queue.ptr")?;
            if ptr < 0 || ptr as usize >= rows.max(1) {
                return Err(bad(format!("queue.ptr {ptr} outside a shard of {rows} rows")));
            }
            Some(QueueState { keys, idx, ptr: ptr as usize, rows, dim })
        }
        None => None,
    };
    Ok((q_stats, k_stats, queue))
}
