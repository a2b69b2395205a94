//! `launcher eval`: weighted kNN and a linear probe on frozen backbone features of a labelled
//! dataset, for the trained network and, beside it, a randomly initialised one of the same
//! architecture (what "the pretraining learned something" is measured against).

use super::features::{extract, EvalTransform};
use super::knn::{accuracy, knn_top1, DEFAULT_K, DEFAULT_T};
use super::probe::{fit, ProbeOptions};
use super::split::split;
use crate::checkpoint::Weights;
use crate::data::Dataset;
use crate::error::{Result, WorkerError};
use moco_kernels::Backend;

#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    pub k: usize,
    pub temperature: f32,
    /// Every n-th sample of each class is a test sample (`split`).
    pub test_every: usize,
    /// Images per forward pass.
    pub batch: usize,
    pub probe: ProbeOptions,
    /// Seed of the randomly initialised baseline network.
    pub random_seed: u64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            k: DEFAULT_K,
            temperature: DEFAULT_T,
            test_every: 5,
            batch: 64,
            probe: ProbeOptions::default(),
            random_seed: 0,
        }
    }
}

/// Top-1 accuracies of one network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub knn_top1: f32,
    pub probe_top1: f32,
}

/// Both networks' scores and what they were measured on.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    pub trained: Scores,
    pub random: Scores,
    pub n_train: usize,
    pub n_test: usize,
    pub classes: usize,
    pub feat_dim: usize,
    pub k: usize,
    pub temperature: f32,
}

impl EvalReport {
    /// The side-by-side table `launcher eval` prints (and summary.md embeds).
    pub fn table(&self) -> String {
        let pct = |v: f32| format!("{:5.1}%", 100.0 * v);
        let chance = 1.0 / self.classes.max(1) as f32;
        format!(
            "{} train / {} test images, {} classes (chance {}), {}-d features\n\n\
             | metric | trained | random init |\n\
             |---|---|---|\n\
             | kNN top-1 (k = {}, T = {}) | {} | {} |\n\
             | linear probe top-1 | {} | {} |\n",
            self.n_train,
            self.n_test,
            self.classes,
            pct(chance).trim(),
            self.feat_dim,
            self.k,
            self.temperature,
            pct(self.trained.knn_top1),
            pct(self.random.knn_top1),
            pct(self.trained.probe_top1),
            pct(self.random.probe_top1),
        )
    }
}

/// The labels of every tile, or an error saying how to provide them.
pub fn labels_of(ds: &dyn Dataset) -> Result<(Vec<u32>, usize)> {
    let labels: Option<Vec<u32>> = (0..ds.len()).map(|i| ds.label(i)).collect();
    let labels = labels.ok_or_else(|| {
        WorkerError::Data(
            "evaluation needs labels: give a folder with one sub-folder per class \
             (DIR/<class>/<image>) or `synthetic`"
                .into(),
        )
    })?;
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0).max(ds.class_names().len());
    if classes < 2 {
        return Err(WorkerError::Data(format!(
            "evaluation needs at least 2 classes, the data has {classes}"
        )));
    }
    Ok((labels, classes))
}

fn gather(x: &[f32], d: usize, idx: &[usize]) -> Vec<f32> {
    idx.iter().flat_map(|&i| x[i * d..(i + 1) * d].iter().copied()).collect()
}

/// kNN and linear-probe accuracy of features `x` (`[n, d]`) on the split (train, test).
pub fn score_features(
    x: &[f32],
    d: usize,
    labels: &[u32],
    classes: usize,
    train: &[usize],
    test: &[usize],
    opts: &EvalOptions,
) -> Scores {
    let (xtr, xte) = (gather(x, d, train), gather(x, d, test));
    let ytr: Vec<u32> = train.iter().map(|&i| labels[i]).collect();
    let yte: Vec<u32> = test.iter().map(|&i| labels[i]).collect();
    let knn_top1 = knn_top1(&xtr, &ytr, &xte, &yte, d, classes, opts.k, opts.temperature);
    let probe = fit(&xtr, &ytr, d, classes, &opts.probe);
    Scores { knn_top1, probe_top1: accuracy(&probe.predict(&xte), &yte) }
}

/// Evaluate `w` and a random network of its architecture on the labelled dataset `ds`.
pub fn evaluate<B: Backend>(
    be: &B,
    w: &Weights,
    ds: &dyn Dataset,
    tf: &EvalTransform,
    opts: &EvalOptions,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<EvalReport> {
    let (labels, classes) = labels_of(ds)?;
    let (train, test) = split(&labels, opts.test_every);
    if train.is_empty() || test.is_empty() {
        return Err(WorkerError::Data(format!(
            "{} labelled images are too few to split into train and test (every {}th of a class is a test image)",
            labels.len(),
            opts.test_every
        )));
    }
    let all: Vec<usize> = (0..ds.len()).collect();
    let d = w.topo.backbone.feat_dim;
    let random = Weights::random(&w.topo, opts.random_seed);
    let mut scores = Vec::new();
    for (name, net) in [("trained", w), ("random init", &random)] {
        let x = extract(be, net, ds, &all, tf, opts.batch, &mut |done, total| progress(name, done, total))?;
        scores.push(score_features(&x, d, &labels, classes, &train, &test, opts));
    }
    Ok(EvalReport {
        trained: scores[0],
        random: scores[1],
        n_train: train.len(),
        n_test: test.len(),
        classes,
        feat_dim: d,
        k: opts.k,
        temperature: opts.temperature,
    })
}

/// kNN top-1 of `w` alone (during training, every N epochs with `--eval-data`).
pub fn knn_accuracy<B: Backend>(
    be: &B,
    w: &Weights,
    ds: &dyn Dataset,
    tf: &EvalTransform,
    opts: &EvalOptions,
) -> Result<f32> {
    let (labels, classes) = labels_of(ds)?;
    let all: Vec<usize> = (0..ds.len()).collect();
    let x = extract(be, w, ds, &all, tf, opts.batch, &mut |_, _| {})?;
    knn_on_features(&x, w.topo.backbone.feat_dim, &labels, classes, opts)
}

/// kNN top-1 on features `x` (`[labels.len(), d]`) with the deterministic split of `opts`.
pub fn knn_on_features(
    x: &[f32],
    d: usize,
    labels: &[u32],
    classes: usize,
    opts: &EvalOptions,
) -> Result<f32> {
    let (train, test) = split(labels, opts.test_every);
    if train.is_empty() || test.is_empty() {
        return Err(WorkerError::Data(format!(
            "{} labelled images are too few to split into train and test (every {}th of a class is a test image)",
            labels.len(),
            opts.test_every
        )));
    }
    let ytr: Vec<u32> = train.iter().map(|&i| labels[i]).collect();
    let yte: Vec<u32> = test.iter().map(|&i| labels[i]).collect();
    Ok(knn_top1(
        &gather(x, d, &train),
        &ytr,
        &gather(x, d, &test),
        &yte,
        d,
        classes,
        opts.k,
        opts.temperature,
    ))
}
