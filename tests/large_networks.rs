//! Networks above `SUM_TREE_THRESHOLD` reactions select through a sum tree: the same exact
//! process, checked statistically on many independent immigration-death channels.

use rxnc::Model;
use rxnc::engine::{Ensemble, SUM_TREE_THRESHOLD, SimOptions};
use rxnc::jit::CompiledModel;

/// `channels` independent channels `0 -> X_i @ k_i`, `X_i -> 0 @ 1` with `k_i = (i + 1) / 4`.
fn channels(channels: usize) -> String {
    let mut text = String::new();
    for i in 0..channels {
        text.push_str(&format!(
            "species X{i}\n0 -> X{i} @ {}\nX{i} -> 0 @ 1\n",
            (i + 1) as f64 / 4.0
        ));
    }
    text
}

#[test]
fn sum_tree_selection_is_exact() {
    let n_channels = 60; // 120 reactions: above the threshold
    assert!(2 * n_channels > SUM_TREE_THRESHOLD);
    let model = Model::parse("channels.rxn", &channels(n_channels)).unwrap();
    let compiled = CompiledModel::new(&model.ir).unwrap();
    // From zero, X_i(T) is Poisson with mean k_i (1 - e^{-T}).
    let (t_end, n) = (3.0, 4000);
    let options = SimOptions {
        t_end,
        every: t_end,
        trajectories: n,
        seed: 11,
        ..SimOptions::default()
    };
    let ensemble = Ensemble::run(&compiled, &[], &options).unwrap();
    let mut worst: f64 = 0.0;
    for i in 0..n_channels {
        let mean_true = (i + 1) as f64 / 4.0 * (1.0 - (-t_end).exp());
        let mean = (0..n).map(|k| ensemble.state(k, 1)[i] as f64).sum::<f64>() / n as f64;
        // Poisson: the variance of the sample mean is mean/n. |z| < 4.5 for each of 60 channels
        // keeps the family-wise false-alarm rate below 1e-3.
        let z = (mean - mean_true) / (mean_true / n as f64).sqrt();
        worst = worst.max(z.abs());
        assert!(
            z.abs() < 4.5,
            "channel {i}: mean {mean} vs {mean_true} (z = {z})"
        );
    }
    println!("largest |z| over {n_channels} channels: {worst:.2}");
}

#[test]
fn sum_tree_and_linear_scan_agree_in_distribution() {
    // The same 30 channels alone (60 reactions: linear scan) and padded with 10 inert channels
    // (70 reactions: sum tree): the first 30 species have the same distribution.
    let small = Model::parse("small.rxn", &channels(30)).unwrap();
    let mut padded_text = channels(30);
    for i in 0..10 {
        padded_text.push_str(&format!("species Z{i}\nZ{i} -> 0 @ 1\n"));
    }
    let padded = Model::parse("padded.rxn", &padded_text).unwrap();
    assert!(
        small.ir.reactions.len() <= SUM_TREE_THRESHOLD
            && padded.ir.reactions.len() > SUM_TREE_THRESHOLD
    );
    let (t_end, n) = (2.0, 4000);
    let mean_of = |model: &Model, seed: u64| {
        let compiled = CompiledModel::new(&model.ir).unwrap();
        let options = SimOptions {
            t_end,
            every: t_end,
            trajectories: n,
            seed,
            ..SimOptions::default()
        };
        let e = Ensemble::run(&compiled, &[], &options).unwrap();
        (0..n)
            .map(|k| e.state(k, 1)[..30].iter().sum::<i64>() as f64)
            .collect::<Vec<_>>()
    };
    let (a, b) = (mean_of(&small, 1), mean_of(&padded, 2));
    let stats = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (
            m,
            v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64,
        )
    };
    let ((ma, va), (mb, vb)) = (stats(&a), stats(&b));
    let z = (ma - mb) / ((va + vb) / n as f64).sqrt();
    assert!(
        z.abs() < 4.0,
        "total of the 30 channels: {ma} vs {mb} (z = {z})"
    );
}
