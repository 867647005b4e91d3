//! Gradient estimators against analytic derivatives. Unbiased estimators must agree within four
//! standard errors; the straight-through estimator (biased) within the tolerance documented in
//! docs/gradients.md.

use rxnc::Model;
use rxnc::estimators::{Estimator, GradOptions, GradResult, Objective, estimate_gradient};
use rxnc::jit::{CompiledModel, Kernels};

const BIRTH_DEATH: &str = "species X = 0\nparam k = 10, g = 1\n0 -> X @ k\nX -> 0 @ g\n";

fn estimate(
    model: &str,
    objective: &str,
    t_end: f64,
    n: usize,
    estimator: Estimator,
) -> GradResult {
    let model = Model::parse("m.rxn", model).unwrap();
    let compiled = CompiledModel::new(&model.ir).unwrap();
    let objective = Objective::parse(objective, &model.ir).unwrap();
    let options = GradOptions {
        t_end,
        trajectories: n,
        seed: 7,
        estimator,
        max_events: 10_000_000,
    };
    estimate_gradient(&compiled, &model.ir.param_values(), &objective, &options).unwrap()
}

/// Birth-death from X = 0: X(T) is Poisson with mean m = k/g (1 - e^{-gT}).
fn birth_death_truth(t: f64) -> (f64, [f64; 2]) {
    let (k, g) = (10.0_f64, 1.0_f64);
    let m = k / g * (1.0 - (-g * t).exp());
    (
        m,
        [
            (1.0 - (-g * t).exp()) / g,
            -k / (g * g) * (1.0 - (-g * t).exp()) + k * t * (-g * t).exp() / g,
        ],
    )
}

/// Within `z` standard errors (unbiased estimators) or a relative tolerance `rel` (biased ones).
fn check(r: &GradResult, value: f64, grad: &[f64], z: f64, rel: f64) {
    let ok = |est: f64, se: f64, truth: f64| (est - truth).abs() <= z * se + rel * truth.abs();
    assert!(
        ok(r.objective.estimate, r.objective.stderr, value),
        "{}: objective {:?} vs {value}",
        r.estimator,
        r.objective
    );
    for ((name, e), truth) in r.gradient.iter().zip(grad) {
        assert!(
            ok(e.estimate, e.stderr, *truth),
            "{}: d/d{name} = {:?} vs {truth}",
            r.estimator,
            e
        );
        assert!(
            e.stderr > 0.0 && e.stderr < 0.35 * truth.abs().max(0.1),
            "{}: d/d{name} stderr {}",
            r.estimator,
            e.stderr
        );
    }
}

#[test]
fn birth_death_mean_unbiased_estimators() {
    let (m, g) = birth_death_truth(2.0);
    check(
        &estimate(BIRTH_DEATH, "mean(X)", 2.0, 4000, Estimator::Score),
        m,
        &g,
        4.0,
        0.0,
    );
    check(
        &estimate(BIRTH_DEATH, "mean(X)", 2.0, 4000, Estimator::AltPath),
        m,
        &g,
        4.0,
        0.0,
    );
    check(
        &estimate(
            BIRTH_DEATH,
            "mean(X)",
            2.0,
            4000,
            Estimator::Fd { sigma: 0.05 },
        ),
        m,
        &g,
        4.0,
        0.0,
    );
}

/// At stationarity (T = 20, ten relaxation times) the straight-through bias on birth-death is a few
/// percent at temperature 1 (docs/gradients.md); in the transient it is much larger, because the
/// estimator does not see events moving across the horizon.
#[test]
fn birth_death_mean_gs_st_at_stationarity() {
    let (m, g) = birth_death_truth(20.0);
    check(
        &estimate(
            BIRTH_DEATH,
            "mean(X)",
            20.0,
            4000,
            Estimator::GsSt { temperature: 1.0 },
        ),
        m,
        &g,
        4.0,
        0.06,
    );
}

#[test]
fn birth_death_variance_and_sd_chain_rule() {
    // X(T) is Poisson: var = mean, sd = sqrt(mean), so d var = d mean and d sd = d mean / (2 sd).
    let (m, g) = birth_death_truth(2.0);
    let half = |v: &[f64; 2]| [v[0] / (2.0 * m.sqrt()), v[1] / (2.0 * m.sqrt())];
    check(
        &estimate(BIRTH_DEATH, "var(X)", 2.0, 8000, Estimator::Score),
        m,
        &g,
        4.0,
        0.0,
    );
    check(
        &estimate(BIRTH_DEATH, "sd(X)", 2.0, 8000, Estimator::Score),
        m.sqrt(),
        &half(&g),
        4.0,
        0.0,
    );
    check(
        &estimate(
            BIRTH_DEATH,
            "var(X)",
            2.0,
            20000,
            Estimator::Fd { sigma: 0.05 },
        ),
        m,
        &g,
        4.0,
        0.0,
    );
    check(
        &estimate(BIRTH_DEATH, "var(X)", 2.0, 8000, Estimator::AltPath),
        m,
        &g,
        4.0,
        0.0,
    );
    // A function of statistics: (mean - 5)^2 has gradient 2 (mean - 5) d mean.
    let f = |v: f64| 2.0 * (m - 5.0) * v;
    check(
        &estimate(BIRTH_DEATH, "(mean(X) - 5)^2", 2.0, 8000, Estimator::Score),
        (m - 5.0).powi(2),
        &[f(g[0]), f(g[1])],
        4.0,
        0.0,
    );
}

/// Counts far from zero: a birth process from X = 10^9 has X(T) = 10^9 + Poisson(kT), so
/// var = kT and d var/dk = T, and the variance must not come out of E[X²] − E[X]² (10^18 against
/// 3: it was −256 with score).
#[test]
fn variance_of_large_counts_does_not_cancel() {
    let model = "species X = 1000000000\nparam k = 1\n0 -> X @ k\n";
    for estimator in [
        Estimator::Score,
        Estimator::AltPath,
        Estimator::Fd { sigma: 0.05 },
    ] {
        check(
            &estimate(model, "var(X)", 3.0, 4000, estimator),
            3.0,
            &[3.0],
            4.0,
            0.0,
        );
    }
    // 10^9 sd/mean = 10^9 sqrt(3)/(10^9 + 3), near sqrt(3): d/dk = 10^9 (T/(2 sqrt(3)) -
    // sqrt(3) T/(10^9 + 3))/(10^9 + 3), near sqrt(3)/2 (scaled so that the tolerance on the
    // standard error, relative to the truth, means something).
    let m = 1e9 + 3.0;
    let truth = 1e9 * (3.0 / (2.0 * 3f64.sqrt()) - 3f64.sqrt() * 3.0 / m) / m;
    check(
        &estimate(model, "1e9 * sd(X) / mean(X)", 3.0, 4000, Estimator::Score),
        1e9 * 3f64.sqrt() / m,
        &[truth],
        4.0,
        0.0,
    );
}

const TELEGRAPH: &str = "species Goff = 1, Gon = 0, M = 0
param kon = 0.5, koff = 1, ktx = 10, kdeg = 1
Goff <-> Gon @ kon, koff
Gon -> Gon + M @ ktx
M -> 0 @ kdeg
";

/// Stationary telegraph mean ktx kon / ((kon + koff) kdeg) and its closed-form gradient.
fn telegraph_truth() -> (f64, [f64; 4]) {
    let (kon, koff, ktx, kdeg) = (0.5_f64, 1.0_f64, 10.0_f64, 1.0_f64);
    let s = kon + koff;
    let m = ktx * kon / (s * kdeg);
    (
        m,
        [
            ktx * koff / (s * s * kdeg),
            -ktx * kon / (s * s * kdeg),
            kon / (s * kdeg),
            -m / kdeg,
        ],
    )
}

#[test]
fn telegraph_stationary_mean_gradient() {
    let (m, g) = telegraph_truth();
    check(
        &estimate(TELEGRAPH, "mean(M)", 30.0, 6000, Estimator::Score),
        m,
        &g,
        4.0,
        0.0,
    );
    check(
        &estimate(
            TELEGRAPH,
            "mean(M)",
            30.0,
            20000,
            Estimator::Fd { sigma: 0.05 },
        ),
        m,
        &g,
        4.0,
        0.0,
    );
}

/// GS-ST on the telegraph model is biased (the paper's estimator, checked against stochastix:
/// docs/gradients.md); the sign and rough size of the two best-identified derivatives hold.
#[test]
fn telegraph_gs_st_signs() {
    let (_, g) = telegraph_truth();
    let r = estimate(
        TELEGRAPH,
        "mean(M)",
        30.0,
        2000,
        Estimator::GsSt { temperature: 1.0 },
    );
    for q in [0, 3] {
        let e = r.gradient[q].1.estimate;
        assert!(
            e.signum() == g[q].signum() && (e / g[q] - 1.0).abs() < 0.4,
            "{}: {e} vs {}",
            r.gradient[q].0,
            g[q]
        );
    }
}

/// Time-dependent production k t with first-order decay: E[A(T)] = k (T - 1 + e^{-T}). Only `fd`
/// (which simulates with the exact integrated hazard) supports time-dependent propensities.
#[test]
fn time_dependent_rates_fd_only() {
    let model = "species A = 0\nparam k = 1\n0 -> A @= k * t\nA -> 0 @ 1\n";
    let m = 2.0 - 1.0 + (-2.0f64).exp();
    check(
        &estimate(model, "mean(A)", 2.0, 20000, Estimator::Fd { sigma: 0.05 }),
        m,
        &[m],
        4.0,
        0.0,
    );
    let parsed = Model::parse("m.rxn", model).unwrap();
    let compiled = CompiledModel::new(&parsed.ir).unwrap();
    let objective = Objective::parse("mean(A)", &parsed.ir).unwrap();
    let options = GradOptions {
        t_end: 2.0,
        trajectories: 10,
        seed: 1,
        estimator: Estimator::Score,
        max_events: 1000,
    };
    let err = estimate_gradient(&compiled, &[1.0], &objective, &options).unwrap_err();
    assert!(err.to_string().contains("read time"), "{err}");
}

/// A propensity whose parameter derivative is infinite where the simulation goes stops every
/// estimator that differentiates propensities with an error naming the reaction and parameter
/// (alt-path used to skip it and report 0 ± 0).
#[test]
fn non_finite_propensity_derivative_is_an_error() {
    let model = Model::parse(
        "m.rxn",
        "species P\nparam n = 2 in [1, 3]\n0 -> P @= 1 + sqrt(n - 2)\nP -> 0 @ 1\n",
    )
    .unwrap();
    let compiled = CompiledModel::new(&model.ir).unwrap();
    let objective = Objective::parse("mean(P)", &model.ir).unwrap();
    for estimator in [
        Estimator::Score,
        Estimator::AltPath,
        Estimator::GsSt { temperature: 1.0 },
    ] {
        let options = GradOptions {
            t_end: 2.0,
            trajectories: 10,
            seed: 1,
            estimator,
            max_events: 1000,
        };
        let err = estimate_gradient(&compiled, &[2.0], &objective, &options).unwrap_err();
        assert!(
            err.to_string().contains("with respect to `n` is inf"),
            "{}: {err}",
            estimator.name()
        );
    }
}

/// A propensity whose derivative with respect to the state is infinite where the simulation goes:
/// GS-ST (the estimator that reads ∂a/∂x) names the reaction and the species.
#[test]
fn non_finite_state_derivative_is_an_error() {
    let model = Model::parse(
        "m.rxn",
        "species P\nparam k = 1\n0 -> P @= k * (1 + sqrt(P))\nP -> 0 @ 1\n",
    )
    .unwrap();
    let compiled = CompiledModel::new(&model.ir).unwrap();
    let objective = Objective::parse("mean(P)", &model.ir).unwrap();
    let options = GradOptions {
        t_end: 2.0,
        trajectories: 10,
        seed: 1,
        estimator: Estimator::GsSt { temperature: 1.0 },
        max_events: 1000,
    };
    let err = estimate_gradient(&compiled, &[1.0], &objective, &options).unwrap_err();
    assert!(
        err.to_string().contains("with respect to `P` is inf"),
        "{err}"
    );
}

/// GS-ST's unrolled tangent kernel is an optimisation only: without it (as for models too large to
/// unroll) the generic loops give the same gradient to the bit, on a model with second-order mass
/// action, a Hill function and an odd number of parameters.
#[test]
fn gs_st_same_gradient_with_and_without_the_tangent_kernel() {
    let text = "species A = 20, B = 0, C = 3\nparam k1 = 0.05, k2 = 1.5, k3 = 4\n\
                2A -> B @ k1\nB -> 2A @ k2\n0 -> C @= k3 * hill(B, 5, 2)\nC -> 0 @ 1\n";
    let model = Model::parse("m.rxn", text).unwrap();
    let objective = Objective::parse("mean(C) + var(A)", &model.ir).unwrap();
    let options = GradOptions {
        t_end: 5.0,
        trajectories: 400,
        seed: 3,
        estimator: Estimator::GsSt { temperature: 0.7 },
        max_events: 1_000_000,
    };
    let params = model.ir.param_values();
    let run = |kernels: Kernels| {
        let compiled = CompiledModel::with_kernels(&model.ir, kernels).unwrap();
        assert_eq!(compiled.has_gs_st_tangent(), kernels.gs_st_tangent);
        estimate_gradient(&compiled, &params, &objective, &options).unwrap()
    };
    let with = run(Estimator::GsSt { temperature: 0.7 }.kernels());
    let without = run(Kernels::PARTIALS);
    assert_eq!(with, without);
    assert!(with.gradient.iter().all(|(_, g)| g.estimate != 0.0));
}

/// A model compiled without the kernels a computation needs is an error that says how to compile
/// it, not a panic: library callers choose the kernels.
#[test]
fn missing_kernels_are_errors() {
    let model = Model::parse("bd.rxn", BIRTH_DEATH).unwrap();
    let params = model.ir.param_values();
    let partials_only = CompiledModel::with_kernels(&model.ir, Kernels::PARTIALS).unwrap();
    let err = rxnc::engine::Ensemble::run(
        &partials_only,
        &params,
        &rxnc::engine::SimOptions {
            t_end: 1.0,
            trajectories: 2,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("Kernels::SIMULATION"), "{err}");
    let simulation_only = CompiledModel::with_kernels(&model.ir, Kernels::SIMULATION).unwrap();
    let objective = Objective::parse("mean(X)", &model.ir).unwrap();
    let options = GradOptions {
        t_end: 1.0,
        trajectories: 10,
        seed: 1,
        estimator: Estimator::Score,
        max_events: 1000,
    };
    let err = estimate_gradient(&simulation_only, &params, &objective, &options).unwrap_err();
    assert!(err.to_string().contains("with_kernels"), "{err}");
}

/// fd perturbs a bounded parameter in logit coordinates, so it never leaves its bounds (near
/// one, a log-space perturbation made 1 - p negative: a "negative propensity" blamed on the
/// model); at a bound itself it cannot, and says so.
#[test]
fn fd_stays_inside_bounds() {
    let model = "species X = 0, Y = 0\nparam p = 0.98 in [0, 1]\nconst k = 10\n0 -> X @ k * p\n\
                 0 -> Y @ k * (1 - p)\nX -> 0 @ 1\nY -> 0 @ 1\n";
    // E[X(T)] = k p (1 - e^-T).
    // (The smoothing is Gaussian in logit(p): its O(sigma^2) bias grows with sigma, 13% at 0.5.)
    let truth = 10.0 * (1.0 - (-2.0f64).exp());
    let fd = Estimator::Fd { sigma: 0.1 };
    check(
        &estimate(model, "mean(X)", 2.0, 20000, fd),
        9.8 * (1.0 - (-2.0f64).exp()),
        &[truth],
        4.0,
        0.0,
    );
    let at_bound = Model::parse("m.rxn", &model.replace("0.98", "1")).unwrap();
    let compiled = CompiledModel::new(&at_bound.ir).unwrap();
    let objective = Objective::parse("mean(X)", &at_bound.ir).unwrap();
    let options = GradOptions {
        t_end: 2.0,
        trajectories: 10,
        seed: 1,
        estimator: fd,
        max_events: 100_000,
    };
    let err = estimate_gradient(&compiled, &at_bound.ir.param_values(), &objective, &options)
        .unwrap_err();
    assert!(
        err.to_string().contains("`p` = 1 at a bound of [0, 1]"),
        "{err}"
    );
}
