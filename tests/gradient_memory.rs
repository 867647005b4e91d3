//! The gradient estimators run in forward mode: a trajectory carries its tangents, so memory does
//! not grow with the number of events. A counting global allocator measures the peak heap during
//! an estimate of about 10^4 events and during one of more than 10^6: the two peaks must differ by
//! a few KiB at most, not by anything proportional to the events.

use rxnc::Model;
use rxnc::estimators::{Estimator, GradOptions, Objective, estimate_gradient};
use rxnc::jit::CompiledModel;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(size: usize) {
    let now = CURRENT.fetch_add(size, Ordering::SeqCst) + size;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

fn shrank(size: usize) {
    CURRENT.fetch_sub(size, Ordering::SeqCst);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A fast birth-death process: about 2 k T events per trajectory once X is near k/g.
const MODEL: &str = "species X = 100000\nparam k = 100000, g = 1\n0 -> X @ k\nX -> 0 @ g\n";

/// Runs one estimate with `trajectories` to `t_end`; returns (events, peak heap growth in bytes
/// over the heap in use before the call).
fn measure(
    compiled: &CompiledModel,
    objective: &Objective,
    estimator: Estimator,
    t_end: f64,
    trajectories: usize,
) -> (u64, usize) {
    let options = GradOptions {
        t_end,
        trajectories,
        seed: 11,
        estimator,
        max_events: 100_000_000,
    };
    let params = compiled.model.param_values();
    let before = CURRENT.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let result = estimate_gradient(compiled, &params, objective, &options)
        .unwrap_or_else(|e| panic!("{}: {e}", estimator.name()));
    let peak = PEAK.load(Ordering::SeqCst);
    assert!(result.objective.estimate.is_finite());
    let events = result.events;
    drop(result);
    (events, peak.saturating_sub(before))
}

fn check(estimator: Estimator) {
    let model = Model::parse("bd.rxn", MODEL).unwrap();
    let compiled = CompiledModel::new(&model.ir).unwrap();
    let objective = Objective::parse("mean(X) + var(X)", &model.ir).unwrap();
    // Warm up: the thread pool, lazily initialised statics and the allocator's own state.
    measure(&compiled, &objective, estimator, 0.05, 3);
    measure(&compiled, &objective, estimator, 0.05, 3);
    let (short_events, short_peak) = measure(&compiled, &objective, estimator, 0.025, 3);
    let (long_events, long_peak) = measure(&compiled, &objective, estimator, 3.0, 3);
    let name = estimator.name();
    eprintln!(
        "{name:>8}: {short_events:>9} events, peak +{short_peak} bytes; \
         {long_events:>9} events, peak +{long_peak} bytes; difference {} bytes",
        long_peak as i64 - short_peak as i64
    );
    assert!(
        (5_000..50_000).contains(&short_events),
        "{name}: {short_events} events in the short run"
    );
    assert!(
        long_events >= 1_000_000,
        "{name}: only {long_events} events in the long run"
    );
    assert!(
        long_peak <= short_peak + 4096,
        "{name}: the peak heap grew from {short_peak} to {long_peak} bytes between {short_events} \
         and {long_events} events"
    );
}

/// One test, so that the test harness runs nothing else (and allocates nothing) meanwhile:
/// memory grows neither with the events nor with the trajectories.
#[test]
fn memory_does_not_grow_with_events_or_trajectories() {
    // The counter sees what an estimator would leak: a vector of 10^6 tangents.
    let before = CURRENT.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let v = std::hint::black_box(vec![0.0f64; 1_000_000]);
    let peak = PEAK.load(Ordering::SeqCst);
    assert!(
        peak.saturating_sub(before) >= 8_000_000,
        "{before} -> {peak}"
    );
    drop(v);

    check(Estimator::GsSt { temperature: 1.0 });
    // Another temperature takes the softmax branch.
    check(Estimator::GsSt { temperature: 0.5 });
    check(Estimator::Score);
    check(Estimator::AltPath);
    check(Estimator::Fd { sigma: 0.05 });
    check_trajectories();
}

/// Nor with the number of trajectories: they are summed as they finish, in the jackknife's 50
/// groups (records of every trajectory took about 190 bytes each: 5.7 GB for 3 × 10^7).
fn check_trajectories() {
    let model = Model::parse("bd.rxn", MODEL).unwrap();
    let compiled = CompiledModel::new(&model.ir).unwrap();
    let objective = Objective::parse("mean(X) + var(X)", &model.ir).unwrap();
    for estimator in [Estimator::GsSt { temperature: 1.0 }, Estimator::Score] {
        measure(&compiled, &objective, estimator, 1e-6, 1000);
        let (_, few) = measure(&compiled, &objective, estimator, 1e-6, 1000);
        let (_, many) = measure(&compiled, &objective, estimator, 1e-6, 200_000);
        assert!(
            many <= few + 16_384,
            "{}: the peak heap grew from {few} to {many} bytes between 10^3 and 2 x 10^5 trajectories",
            estimator.name()
        );
    }
}
