//! Benchmarks of the pipeline: front end + JIT of the Vilar oscillator, and exact-SSA throughput
//! (nanoseconds per event, single thread) on the peer models. Run with `cargo bench --bench ssa`;
//! results and the side-by-side peer comparison are recorded in docs/performance.md.

use criterion::{Criterion, criterion_group, criterion_main};
use rxnc::Model;
use rxnc::engine::{Ensemble, SimOptions};
use rxnc::jit::CompiledModel;
use std::hint::black_box;
use std::time::Instant;

const PEERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/peers/models/");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/");

fn model_text(name: &str) -> String {
    std::fs::read_to_string(format!("{PEERS}{name}"))
        .or_else(|_| std::fs::read_to_string(format!("{EXAMPLES}{name}")))
        .expect("benchmark model")
}

fn front_end(c: &mut Criterion) {
    let text = model_text("vilar.rxn");
    c.bench_function("vilar parse+check", |b| {
        b.iter(|| Model::parse("vilar.rxn", black_box(&text)).unwrap())
    });
    let model = Model::parse("vilar.rxn", &text).unwrap();
    c.bench_function("vilar jit (all kernels)", |b| {
        b.iter(|| CompiledModel::new(black_box(&model.ir)).unwrap())
    });
    c.bench_function("vilar parse+check+jit", |b| {
        b.iter(|| {
            let m = Model::parse("vilar.rxn", black_box(&text)).unwrap();
            CompiledModel::new(&m.ir).unwrap()
        })
    });
}

/// ns per event on one thread, reported as a custom measurement through criterion's timing of
/// whole ensembles divided by their event counts (printed).
fn throughput(c: &mut Criterion) {
    for (file, t_end) in [
        ("vilar.rxn", 200.0),
        ("telegraph_fast.rxn", 2000.0),
        ("birth_death_fast.rxn", 200.0),
    ] {
        let model = Model::parse(file, &model_text(file)).unwrap();
        let compiled = CompiledModel::new(&model.ir).unwrap();
        let params = model.ir.param_values();
        let options = SimOptions {
            t_end,
            every: t_end,
            trajectories: 4,
            seed: 1,
            threads: Some(1),
            ..SimOptions::default()
        };
        let start = Instant::now();
        let events = Ensemble::run(&compiled, &params, &options).unwrap().events;
        println!(
            "{file}: {:.1} ns/event ({events} events)",
            start.elapsed().as_nanos() as f64 / events as f64
        );
        c.bench_function(&format!("ssa {file} ({events} events)"), |b| {
            b.iter(|| Ensemble::run(&compiled, &params, black_box(&options)).unwrap())
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = front_end, throughput
}
criterion_main!(benches);
