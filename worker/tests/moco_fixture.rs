//! One full hybrid-MoCo step against PyTorch (fixtures `moco_step_{lars,adamw}.safetensors`):
//! loss, every gradient, updated query and momentum weights, BN running statistics of both
//! encoders, queue contents, indices and pointer.

mod common;

use common::{assert_close, Fixture};
use moco_kernels::cpu::Cpu;
use moco_kernels::Backend;
use moco_proto::config::{AugConfig, BnMode, Optimizer, TrainConfig};
use moco_worker::model::params::{init_stats, ohwi_to_oihw};
use moco_worker::model::topology::ParamKind;
use moco_worker::moco::comm::Solo;
use moco_worker::moco::{Moco, Views};

// fp32 on both sides, different summation orders; see tests/model_fixture.rs. The optimiser
// steps are element-wise, so updated weights inherit the gradients' relative error times lr.
const RTOL: f32 = 2e-3;

fn config(fx: &Fixture, optimizer: Optimizer) -> TrainConfig {
    TrainConfig {
        width: fx.meta_f32("width"),
        image_size: fx.meta_usize("image_size"),
        proj_hidden: fx.meta_usize("proj_hidden"),
        dim: fx.meta_usize("dim"),
        pred_hidden: fx.meta_usize("pred_hidden"),
        batch: fx.meta_usize("batch"),
        global_batch: 0,
        accumulation: 1,
        queue_size: fx.meta_usize("queue_size"),
        temperature: fx.meta_f32("T"),
        momentum: fx.meta_f32("m"),
        momentum_cosine: false,
        mask_own: true,
        bn_mode: BnMode::Local,
        shuffle_groups: 1,
        optimizer,
        base_lr: fx.meta_f32("lr"),
        weight_decay: fx.meta_f32("wd"),
        warmup_epochs: 0.0,
        epochs: 1,
        amp: false,
        recompute: false,
        aug: AugConfig::default(),
        seed: 0,
    }
}

fn torch_layout(topo: &moco_worker::model::Topology, flat: &[f32], len: usize) -> Vec<(String, Vec<f32>)> {
    topo.params
        .iter()
        .filter(|p| p.offset < len)
        .map(|p| {
            let v = &flat[p.range()];
            let v = match p.kind {
                ParamKind::ConvWeight { c_out, c_in, k } => ohwi_to_oihw(v, c_out, c_in, k),
                _ => v.to_vec(),
            };
            (p.name.clone(), v)
        })
        .collect()
}

fn check(file: &str, optimizer: Optimizer, recompute: bool) {
    let fx = Fixture::load(file);
    let mut cfg = config(&fx, optimizer);
    cfg.recompute = recompute;
    let in_ch = fx.meta_usize("in_channels");
    let mut moco = Moco::new(Cpu { amp: false }, &cfg, in_ch, 0, 1).unwrap();
    let topo = moco.topo.clone();
    let kl = topo.key_len();
    moco.params = fx.flat_params(&topo, "param.", topo.param_len());
    moco.key_params = fx.flat_params(&topo, "key_param.", kl);
    let defaults = init_stats(&topo);
    moco.q_stats = fx.flat_stats(&topo, "buffer.", &defaults);
    moco.k_stats = fx.flat_stats(&topo, "key_buffer.", &defaults);
    {
        let q = moco.queue.as_mut().unwrap();
        q.keys = fx.tensor("queue").1;
        q.idx = fx.tensor_i64("queue_idx");
        q.ptr = fx.tensor_i64("queue_ptr")[0] as usize;
    }
    let (x1, [n, c, s, _]) = fx.nhwc("x1");
    let (x2, _) = fx.nhwc("x2");
    let idx = fx.tensor_i64("batch_idx");
    let views = Views { x1: &x1, x2: &x2, idx: &idx, n, size: s, channels: c };

    let out = moco.micro_batch(&Solo, &views, cfg.momentum).unwrap();
    let want = fx.scalar("loss");
    assert!((out.loss - want).abs() <= 1e-5 * want.abs().max(1.0), "loss {} vs {want}", out.loss);
    assert!((out.loss_terms[0] - fx.scalar("loss1")).abs() <= 1e-5 * want.abs());
    assert!((out.loss_terms[1] - fx.scalar("loss2")).abs() <= 1e-5 * want.abs());

    for (name, got) in torch_layout(&topo, &moco.grads, topo.param_len()) {
        let key = format!("grad.{name}");
        assert_close(&key, &got, &fx.tensor(&key).1, 1e-7, RTOL);
    }
    // The momentum encoder after the EMA.
    for (name, got) in torch_layout(&topo, &moco.key_params, kl) {
        let key = format!("key_param_after.{name}");
        assert_close(&key, &got, &fx.tensor(&key).1, 1e-7, 1e-5);
    }

    let step = moco.optimizer_step(&Solo, cfg.base_lr).unwrap();
    assert!(step.applied);
    for (name, got) in torch_layout(&topo, &moco.params, topo.param_len()) {
        let key = format!("param_after.{name}");
        assert_close(&key, &got, &fx.tensor(&key).1, 1e-7, RTOL);
    }
    assert_close("buffer_after", &moco.q_stats, &fx.flat_stats(&topo, "buffer_after.", &defaults), 1e-6, 2e-4);
    let key_after = fx.flat_stats(&topo, "key_buffer_after.", &moco.k_stats);
    assert_close("key_buffer_after", &moco.k_stats, &key_after, 1e-6, 2e-4);
    let q = moco.queue.as_ref().unwrap();
    assert_close("queue_after", &q.keys, &fx.tensor("queue_after").1, 1e-6, 1e-4);
    assert_eq!(q.idx, fx.tensor_i64("queue_idx_after"));
    assert_eq!(q.ptr as i64, fx.tensor_i64("queue_ptr_after")[0]);
    let _ = Backend::name(&moco.be);
}

#[test]
fn lars_step_matches_pytorch() {
    check("moco_step_lars.safetensors", Optimizer::Lars, false);
}

#[test]
fn lars_step_matches_pytorch_with_recompute() {
    check("moco_step_lars.safetensors", Optimizer::Lars, true);
}

#[test]
fn adamw_step_matches_pytorch() {
    check("moco_step_adamw.safetensors", Optimizer::Adamw, false);
}
