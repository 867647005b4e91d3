//! Statistical exactness of the SSA engine.
//!
//! Every test simulates a model with a fixed seed and compares the sample with an exact answer: a
//! closed form (those of the DSMTS suite among them), or the chemical master equation solved here.
//! Each bound is a number of standard errors of the statistic or a p-value, never a tolerance
//! tuned to pass: when the engine is exact a z-score has |z| < 4 with probability 1 - 6e-5, and a
//! chi-square p-value falls below 1e-4 with probability 1e-4. Run with `--nocapture` to see every
//! statistic.

use rxnc::Model;
use rxnc::engine::{Ensemble, SimError, SimOptions};
use rxnc::jit::CompiledModel;
use std::sync::LazyLock;

// ---------------------------------------------------------------------------------------------
// Models

/// The examples and test models, parsed and checked.
fn model(name: &str, text: &str) -> Model {
    Model::parse(name, text).unwrap_or_else(|e| panic!("{name} does not check: {e}"))
}

const BIRTH_DEATH: &str = include_str!("../examples/birth_death.rxn");
const TELEGRAPH: &str = include_str!("../examples/telegraph.rxn");
const SCHLOGL: &str = include_str!("../examples/schlogl.rxn");
const AUTOREPRESSOR: &str = include_str!("../examples/autorepressor.rxn");
const VILAR: &str = include_str!("../examples/vilar.rxn");
const DSMTS_001_01: &str = include_str!("models/dsmts-001-01.rxn");
const DSMTS_002_01: &str = include_str!("models/dsmts-002-01.rxn");
const DSMTS_003_01: &str = include_str!("models/dsmts-003-01.rxn");
const DIMERISATION: &str = include_str!("../examples/dimerisation.rxn");

/// The value of a parameter or constant as written in the model.
fn value(model: &Model, name: &str) -> f64 {
    let ir = &model.ir;
    ir.params
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.value)
        .or_else(|| ir.consts.iter().find(|c| c.name == name).map(|c| c.value))
        .unwrap_or_else(|| panic!("no parameter or constant `{name}`"))
}

/// Added to every seed: 0 unless `EXACTNESS_SEED_OFFSET` says otherwise. The seeds are fixed so
/// that the suite is deterministic; with an exact engine a fresh set of seeds fails one of the
/// 12 independent DSMTS Z tests (|Z| < 3) with probability about 3%, and one of the other checks
/// with probability of the order of 0.1%. After a change to the engine's random streams, judge a
/// failure by rerunning with a few offsets (`EXACTNESS_SEED_OFFSET=1000 cargo test --release --test exactness`).
fn seed_offset() -> u64 {
    std::env::var("EXACTNESS_SEED_OFFSET").map_or(0, |v| v.parse().expect("a whole number"))
}

/// Simulates `n` trajectories of `model` sampled every `every` up to `t_end`.
fn simulate(
    model: &Model,
    t_end: f64,
    every: f64,
    n: usize,
    seed: u64,
) -> Result<Ensemble, SimError> {
    simulate_on(None, model, t_end, every, n, seed)
}

/// [`simulate`] on `threads` threads (`None`: the default).
fn simulate_on(
    threads: Option<usize>,
    model: &Model,
    t_end: f64,
    every: f64,
    n: usize,
    seed: u64,
) -> Result<Ensemble, SimError> {
    let compiled = CompiledModel::new(&model.ir).expect("every checked model compiles");
    let options = SimOptions {
        t_end,
        every,
        trajectories: n,
        seed: seed + seed_offset(),
        threads,
        ..SimOptions::default()
    };
    Ensemble::run(&compiled, &model.ir.param_values(), &options)
}

/// The copy numbers of `species` at time `t` over all trajectories.
fn sample(ensemble: &Ensemble, species: &str, t: f64) -> Vec<f64> {
    let i = ensemble
        .species
        .iter()
        .position(|s| s == species)
        .expect("species in the model");
    let k = ensemble
        .times
        .iter()
        .position(|&g| (g - t).abs() < 1e-9)
        .expect("t on the grid");
    (0..ensemble.trajectories)
        .map(|n| ensemble.state(n, k)[i] as f64)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// Sample mean, unbiased variance, and third and fourth central moments.
struct Moments {
    n: f64,
    mean: f64,
    var: f64,
    m3: f64,
    m4: f64,
}

fn moments(xs: &[f64]) -> Moments {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let central = |p: i32| xs.iter().map(|x| (x - mean).powi(p)).sum::<f64>() / n;
    Moments {
        n,
        mean,
        var: central(2) * n / (n - 1.0),
        m3: central(3),
        m4: central(4),
    }
}

/// Asserts |z| < `bound`, saying which statistic failed and by how much (and, with
/// `--nocapture`, how every statistic fared).
fn assert_z(what: &str, z: f64, bound: f64) {
    eprintln!("{what}: z = {z:.2}");
    assert!(
        z.abs() < bound,
        "{what}: |z| = {:.2} is not below {bound}",
        z.abs()
    );
}

/// z-scores of the sample mean and sample variance against a distribution with the given mean,
/// variance and fourth central moment: Var(s^2) = mu4/n - sigma^4 (n-3)/(n(n-1)).
fn assert_mean_and_variance(what: &str, xs: &[f64], mean: f64, var: f64, mu4: f64) {
    let m = moments(xs);
    let var_of_var = mu4 / m.n - var * var * (m.n - 3.0) / (m.n * (m.n - 1.0));
    assert_z(
        &format!("{what}: mean {} vs {mean}", m.mean),
        (m.mean - mean) / (var / m.n).sqrt(),
        4.0,
    );
    assert_z(
        &format!("{what}: variance {} vs {var}", m.var),
        (m.var - var) / var_of_var.sqrt(),
        4.0,
    );
}

/// `ln Γ(x)` for x > 0: recurrence up to x >= 10, then Stirling's series (error below 1e-12).
fn ln_gamma(x: f64) -> f64 {
    assert!(x > 0.0);
    let (mut x, mut shift) = (x, 0.0);
    while x < 10.0 {
        shift += x.ln();
        x += 1.0;
    }
    let r = 1.0 / (x * x);
    let series = (1.0 / 12.0 - r * (1.0 / 360.0 - r * (1.0 / 1260.0 - r / 1680.0))) / x;
    (x - 0.5) * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI).ln() + series - shift
}

/// The regularised upper incomplete gamma function Q(a, x) (Numerical Recipes §6.2: the series
/// for P below a + 1, Lentz's continued fraction for Q above).
fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let prefactor = (-x + a * x.ln() - ln_gamma(a)).exp();
    if x < a + 1.0 {
        let (mut term, mut sum, mut ap) = (1.0 / a, 1.0 / a, a);
        while term.abs() > sum.abs() * 1e-16 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
        }
        1.0 - sum * prefactor
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let (mut c, mut d) = (1.0 / tiny, 1.0 / b);
        let mut h = d;
        for i in 1..100_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            d = if d.abs() < tiny { tiny } else { d };
            c = b + an / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            h *= d * c;
            if (d * c - 1.0).abs() < 1e-16 {
                break;
            }
        }
        prefactor * h
    }
}

/// Pearson's chi-square goodness of fit of observed values against a pmf on 0, 1, 2, ...
/// (whatever mass the pmf leaves out belongs to its last state). Consecutive states are pooled
/// so that every bin expects at least 5 counts. Returns (statistic, degrees of freedom, p-value).
fn chi_square(xs: &[f64], pmf: &[f64]) -> (f64, usize, f64) {
    let n = xs.len() as f64;
    let last = pmf.len() - 1;
    let mut observed = vec![0.0; pmf.len()];
    for &x in xs {
        observed[(x as usize).min(last)] += 1.0;
    }
    let mut expected: Vec<f64> = pmf.iter().map(|p| p * n).collect();
    expected[last] += n * (1.0 - pmf.iter().sum::<f64>()).max(0.0);
    let mut bins: Vec<(f64, f64)> = Vec::new();
    let mut open = (0.0, 0.0);
    for (o, e) in observed.iter().zip(&expected) {
        open = (open.0 + o, open.1 + e);
        if open.1 >= 5.0 {
            bins.push(open);
            open = (0.0, 0.0);
        }
    }
    match bins.last_mut() {
        Some(b) => *b = (b.0 + open.0, b.1 + open.1),
        None => bins.push(open),
    }
    let statistic: f64 = bins.iter().map(|(o, e)| (o - e).powi(2) / e).sum();
    let dof = bins.len() - 1;
    (statistic, dof, gamma_q(dof as f64 / 2.0, statistic / 2.0))
}

/// Asserts that the sample fits the pmf with a chi-square p-value above 1e-4.
fn assert_fits(what: &str, xs: &[f64], pmf: &[f64]) {
    let (statistic, dof, p) = chi_square(xs, pmf);
    eprintln!("{what}: chi-square {statistic:.1} on {dof} degrees of freedom, p = {p:.3}");
    assert!(
        p > 1e-4,
        "{what}: chi-square {statistic:.1} on {dof} degrees of freedom, p = {p:.2e}"
    );
}

fn poisson_pmf(lambda: f64, k: usize) -> f64 {
    (k as f64 * lambda.ln() - lambda - ln_gamma(k as f64 + 1.0)).exp()
}

/// `x choose s`.
fn choose(x: f64, s: u32) -> f64 {
    (0..s).map(|j| (x - j as f64) / (j + 1) as f64).product()
}

// ---------------------------------------------------------------------------------------------
// The chemical master equation of a one-species birth-death chain

/// The distribution at time `t` of a chain on 0..=n_max with jumps x -> x+1 at `birth(x)` and
/// x -> x-1 at `death(x)`, started at `x0`, by uniformisation: with Λ the largest exit rate,
/// p(t) = Σ_k Poisson(k; Λt) P^k p(0) where P = I + Q/Λ. Births out of n_max are dropped.
fn master_equation(
    birth: impl Fn(f64) -> f64,
    death: impl Fn(f64) -> f64,
    n_max: usize,
    x0: usize,
    t: f64,
) -> Vec<f64> {
    let up: Vec<f64> = (0..=n_max)
        .map(|x| if x < n_max { birth(x as f64) } else { 0.0 })
        .collect();
    let down: Vec<f64> = (0..=n_max).map(|x| death(x as f64)).collect();
    let rate = up.iter().zip(&down).map(|(u, d)| u + d).fold(0.0, f64::max);
    let lambda = rate * t;
    let mut p = vec![0.0; n_max + 1];
    p[x0] = 1.0;
    let mut result = vec![0.0; n_max + 1];
    let mut next = vec![0.0; n_max + 1];
    let k_max = (lambda + 10.0 * lambda.sqrt() + 20.0) as usize;
    for k in 0..=k_max {
        let weight = poisson_pmf(lambda, k);
        if weight > 0.0 {
            result
                .iter_mut()
                .zip(&p)
                .for_each(|(r, q)| *r += weight * q);
        }
        for x in 0..=n_max {
            let stay = p[x] * (1.0 - (up[x] + down[x]) / rate);
            let from_below = if x > 0 {
                p[x - 1] * up[x - 1] / rate
            } else {
                0.0
            };
            let from_above = if x < n_max {
                p[x + 1] * down[x + 1] / rate
            } else {
                0.0
            };
            next[x] = stay + from_below + from_above;
        }
        std::mem::swap(&mut p, &mut next);
    }
    result
}

/// The stationary distribution of the same chain: π(x+1)/π(x) = birth(x)/death(x+1).
fn stationary(birth: impl Fn(f64) -> f64, death: impl Fn(f64) -> f64, n_max: usize) -> Vec<f64> {
    let mut log_pi = vec![0.0];
    for x in 0..n_max {
        log_pi.push(log_pi[x] + birth(x as f64).ln() - death(x as f64 + 1.0).ln());
    }
    let top = log_pi.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let pi: Vec<f64> = log_pi.iter().map(|l| (l - top).exp()).collect();
    let total: f64 = pi.iter().sum();
    pi.iter().map(|p| p / total).collect()
}

/// Mean and standard deviation of a pmf on 0, 1, 2, ...
fn mean_sd(pmf: &[f64]) -> (f64, f64) {
    let mean: f64 = pmf.iter().enumerate().map(|(x, p)| x as f64 * p).sum();
    let var: f64 = pmf
        .iter()
        .enumerate()
        .map(|(x, p)| (x as f64 - mean).powi(2) * p)
        .sum();
    (mean, var.sqrt())
}

// ---------------------------------------------------------------------------------------------
// Birth-death: Poisson at stationarity

#[test]
fn birth_death_is_poisson_at_stationarity() {
    let m = model("birth_death.rxn", BIRTH_DEATH);
    let lambda = value(&m, "k") / value(&m, "g");
    // Started empty, X(t) is Poisson with mean λ(1 - e^(-g t)): λ up to 1e-12 at t = 30/g.
    let t = 30.0 / value(&m, "g");
    let xs = sample(&simulate(&m, t, t, 20_000, 1).unwrap(), "X", t);
    let pmf: Vec<f64> = (0..=(lambda + 20.0 * lambda.sqrt() + 20.0) as usize)
        .map(|k| poisson_pmf(lambda, k))
        .collect();
    assert_mean_and_variance(
        "birth-death",
        &xs,
        lambda,
        lambda,
        lambda * (1.0 + 3.0 * lambda),
    );
    assert_fits("birth-death against Poisson(k/g)", &xs, &pmf);
}

// ---------------------------------------------------------------------------------------------
// DSMTS: Evans, Gillespie & Wilkinson, "The SBML discrete stochastic models test suite" (2008)

/// The suite's tests on `species` at t = 5, 10, 25, 50 over 10^4 trajectories, against the exact
/// mean and standard deviation `exact(t)`: Z = (mean - μ)/(σ/√N) with |Z| < 3, and
/// Y = √(N/2) (s²/σ² - 1) with |Y| < 5.
fn dsmts(name: &str, text: &str, species: &str, exact: impl Fn(f64) -> (f64, f64)) {
    let ensemble = simulate(&model(name, text), 50.0, 1.0, 10_000, 2008).unwrap();
    for t in [5.0, 10.0, 25.0, 50.0] {
        let m = moments(&sample(&ensemble, species, t));
        let (mu, sigma) = exact(t);
        let z = (m.mean - mu) / (sigma / m.n.sqrt());
        let y = (m.n / 2.0).sqrt() * (m.var / sigma.powi(2) - 1.0);
        assert_z(
            &format!("{name} {species} at t = {t}: mean {} vs {mu} (Z)", m.mean),
            z,
            3.0,
        );
        assert_z(
            &format!(
                "{name} {species} at t = {t}: sd {} vs {sigma} (Y)",
                m.var.sqrt()
            ),
            y,
            5.0,
        );
    }
}

#[test]
fn dsmts_001_01_birth_death() {
    let (x0, birth, death) = (100.0, 0.1, 0.11);
    let growth = |t: f64| ((birth - death) * t).exp();
    dsmts("dsmts-001-01", DSMTS_001_01, "X", |t| {
        (
            x0 * growth(t),
            (x0 * (birth + death) / (birth - death) * growth(t) * (growth(t) - 1.0)).sqrt(),
        )
    });
}

#[test]
fn dsmts_002_01_immigration_death() {
    let (alpha, mu) = (1.0, 0.1);
    let mean = |t: f64| alpha / mu * (1.0 - (-mu * t).exp());
    dsmts("dsmts-002-01", DSMTS_002_01, "X", |t| {
        (mean(t), mean(t).sqrt())
    });
}

/// The distribution of P2 in DSMTS 003-01 at time t, from the master equation.
fn dimers(t: f64) -> Vec<f64> {
    let (p0, k1, k2) = (100.0, 0.001, 0.01);
    master_equation(|d| k1 * choose(p0 - 2.0 * d, 2), |d| k2 * d, 50, 0, t)
}

#[test]
fn dsmts_003_01_dimerisation() {
    dsmts("dsmts-003-01", DSMTS_003_01, "P2", |t| mean_sd(&dimers(t)));
    dsmts("dsmts-003-01", DSMTS_003_01, "P", |t| {
        let (mean, sd) = mean_sd(&dimers(t));
        (100.0 - 2.0 * mean, 2.0 * sd)
    });
    // The example is the same model written with `<->`: it must give the same trajectories.
    let run = |name, text| {
        simulate(&model(name, text), 50.0, 1.0, 100, 3)
            .unwrap()
            .data
    };
    assert_eq!(
        run("dimerisation.rxn", DIMERISATION),
        run("dsmts-003-01", DSMTS_003_01)
    );
}

#[test]
fn the_chi_square_survival_function_matches_the_tables() {
    // Quantiles of the chi-square distribution (1, 10 and 100 degrees of freedom), and the
    // closed form e^(-x/2) for 2 degrees of freedom.
    let sf = |x: f64, dof: f64| gamma_q(dof / 2.0, x / 2.0);
    assert!((sf(3.841459, 1.0) - 0.05).abs() < 1e-6);
    assert!((sf(3.940299, 10.0) - 0.95).abs() < 1e-6);
    assert!((sf(124.3421, 100.0) - 0.05).abs() < 1e-6);
    assert!((sf(30.0, 2.0) - (-15.0_f64).exp()).abs() < 1e-15);
}

#[test]
fn the_master_equation_solver_is_exact_on_immigration_death() {
    // The solver behind the dimerisation and Schlögl references, checked on the one chain with a
    // closed form: from 0, immigration-death is Poisson with mean (1/0.1) (1 - e^(-0.1 t)).
    let p = master_equation(|_| 1.0, |x| 0.1 * x, 200, 0, 50.0);
    let lambda = 10.0 * (1.0 - (-5.0_f64).exp());
    let worst = p
        .iter()
        .enumerate()
        .map(|(k, q)| (q - poisson_pmf(lambda, k)).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-12, "largest error {worst:e}");
}

// ---------------------------------------------------------------------------------------------
// Telegraph promoter: mean and Fano factor of the mRNA at stationarity

#[test]
fn telegraph_mean_and_fano_factor() {
    let m = model("telegraph.rxn", TELEGRAPH);
    let (kon, koff, ktx, kdeg) = (
        value(&m, "kon"),
        value(&m, "koff"),
        value(&m, "ktx"),
        value(&m, "kdeg"),
    );
    let mean = ktx * kon / ((kon + koff) * kdeg);
    let fano = 1.0 + ktx * koff / ((kon + koff) * (kon + koff + kdeg));
    // One sample per trajectory, at a time when the slowest mode (rate min(kdeg, kon + koff))
    // has decayed by e^-30: the samples are independent draws from the stationary law.
    let t = 30.0 / kdeg.min(kon + koff);
    let xs = sample(&simulate(&m, t, t, 50_000, 7).unwrap(), "M", t);
    let s = moments(&xs);
    // Delta method for F = v/m: Var F ≈ (v³/m⁴ - 2 v μ3/m³ + (μ4 - v²)/m²) / n.
    let var_fano = (s.var.powi(3) / s.mean.powi(4) - 2.0 * s.var * s.m3 / s.mean.powi(3)
        + (s.m4 - s.var.powi(2)) / s.mean.powi(2))
        / s.n;
    assert_z(
        &format!("telegraph mean {} vs {mean}", s.mean),
        (s.mean - mean) / (fano * mean / s.n).sqrt(),
        4.0,
    );
    assert_z(
        &format!("telegraph Fano {} vs {fano}", s.var / s.mean),
        (s.var / s.mean - fano) / var_fano.sqrt(),
        4.0,
    );
}

// ---------------------------------------------------------------------------------------------
// Negative autoregulation with `@=` and hillr: the exact stationary distribution

#[test]
fn autorepressor_matches_its_stationary_distribution() {
    let m = model("autorepressor.rxn", AUTOREPRESSOR);
    let (alpha, k, n, delta) = (
        value(&m, "alpha"),
        value(&m, "K"),
        value(&m, "n"),
        value(&m, "delta"),
    );
    let pi = stationary(
        |x| alpha * k.powf(n) / (k.powf(n) + x.powf(n)),
        |x| delta * x,
        500,
    );
    let (mean, sd) = mean_sd(&pi);
    let mu4: f64 = pi
        .iter()
        .enumerate()
        .map(|(x, p)| (x as f64 - mean).powi(4) * p)
        .sum();
    let t = 30.0 / delta;
    let xs = sample(&simulate(&m, t, t, 20_000, 11).unwrap(), "P", t);
    assert_mean_and_variance("autorepressor", &xs, mean, sd * sd, mu4);
    assert_fits(
        "autorepressor against its stationary distribution",
        &xs,
        &pi,
    );
}

// ---------------------------------------------------------------------------------------------
// Schlögl: bistable

/// The Schlögl example: X at t = 5 over 10^4 trajectories from X = 250.
static SCHLOGL_SAMPLE: LazyLock<(Model, Vec<f64>)> = LazyLock::new(|| {
    let m = model("schlogl.rxn", SCHLOGL);
    let xs = sample(&simulate(&m, 5.0, 5.0, 10_000, 1972).unwrap(), "X", 5.0);
    (m, xs)
});

/// The Schlögl rate constants of 2X -> 3X, 3X -> 2X, 0 -> X, X -> 0, buffers folded in.
fn schlogl_constants(m: &Model) -> [f64; 4] {
    let c = |name| value(m, name);
    [c("c1") * c("A"), c("c2"), c("c3") * c("B"), c("c4")]
}

#[test]
fn schlogl_is_bimodal_with_peaks_at_the_stable_fixed_points() {
    let (m, xs) = &*SCHLOGL_SAMPLE;
    let [k1, k2, k3, k4] = schlogl_constants(m);
    // The rate equation dx/dt = f(x) = k1 x²/2 - k2 x³/6 + k3 - k4 x: its three roots, and the
    // linear-noise standard deviation sqrt((birth + death) / 2|f'|) of each stable one.
    let f = |x: f64| k1 * x * x / 2.0 - k2 * x.powi(3) / 6.0 + k3 - k4 * x;
    let df = |x: f64| k1 * x - k2 * x * x / 2.0 - k4;
    let roots: Vec<f64> = (0..4000)
        .map(|i| i as f64 / 2.0)
        .filter(|&x| f(x) * f(x + 0.5) < 0.0)
        .map(|mut lo| {
            let mut hi = lo + 0.5;
            for _ in 0..60 {
                let mid = (lo + hi) / 2.0;
                if f(lo) * f(mid) <= 0.0 {
                    hi = mid
                } else {
                    lo = mid
                }
            }
            lo
        })
        .collect();
    let &[low, unstable, high] = roots.as_slice() else {
        panic!("the Schlögl example is not bistable: roots {roots:?}")
    };
    assert!(df(low) < 0.0 && df(unstable) > 0.0 && df(high) < 0.0);
    let lna_sd = |x: f64| {
        ((k1 * x * x / 2.0 + k3 + k2 * x.powi(3) / 6.0 + k4 * x) / (2.0 * df(x).abs())).sqrt()
    };

    // Histogram with bins half a standard deviation of the narrower peak wide.
    let width = (lna_sd(low) / 2.0).floor();
    let bin = |x: f64| (x / width) as usize;
    let center = |b: usize| (b as f64 + 0.5) * width;
    let mut counts = vec![0.0_f64; bin(xs.iter().cloned().fold(0.0, f64::max)) + 1];
    xs.iter().for_each(|&x| counts[bin(x)] += 1.0);
    let argmax =
        |r: std::ops::Range<usize>| r.max_by(|&a, &b| counts[a].total_cmp(&counts[b])).unwrap();
    let (peak_low, trough, peak_high) = (
        argmax(0..bin(unstable)),
        bin(unstable),
        argmax(bin(unstable) + 1..counts.len()),
    );

    eprintln!(
        "Schlögl: fixed points {low:.1} (sd {:.1}), {unstable:.1}, {high:.1} (sd {:.1}); \
         histogram peaks at {} and {}, bins {width} wide",
        lna_sd(low),
        lna_sd(high),
        center(peak_low),
        center(peak_high)
    );
    // Each peak lies within one linear-noise standard deviation of its fixed point.
    for (peak, x) in [(peak_low, low), (peak_high, high)] {
        assert!(
            (center(peak) - x).abs() < lna_sd(x),
            "peak at {} but stable fixed point at {x:.1} (sd {:.1})",
            center(peak),
            lna_sd(x)
        );
    }
    // Exactly two modes: the counts rise to the first peak, fall to the trough, rise to the second
    // peak and fall after it, each up to 4 standard errors of a difference of Poisson counts.
    let monotone = |range: std::ops::Range<usize>, rising: bool| {
        let bins: Vec<usize> = if rising {
            range.collect()
        } else {
            range.rev().collect()
        };
        let mut highest = 0.0_f64;
        for b in bins {
            let c = counts[b];
            assert!(
                highest - c <= 4.0 * (highest + c).sqrt(),
                "a third mode near X = {}: {counts:?}",
                center(b)
            );
            highest = highest.max(c);
        }
    };
    monotone(0..peak_low + 1, true);
    monotone(peak_low..trough + 1, false);
    monotone(trough..peak_high + 1, true);
    monotone(peak_high..counts.len(), false);
    // And the trough at the unstable fixed point is significantly below both peaks.
    for peak in [peak_low, peak_high] {
        let (c, t) = (counts[peak], counts[trough]);
        assert!(
            c - t > 4.0 * (c + t).sqrt(),
            "no trough at X = {unstable:.1}: {counts:?}"
        );
    }
}

#[test]
fn schlogl_matches_the_master_equation() {
    let (m, xs) = &*SCHLOGL_SAMPLE;
    let [k1, k2, k3, k4] = schlogl_constants(m);
    let birth = |x| k1 * choose(x, 2) + k3;
    let death = |x| k2 * choose(x, 3) + k4 * x;
    // States above 1000 have stationary probability below 1e-27: truncation is exact to rounding.
    let pmf = master_equation(birth, death, 1000, m.ir.species[0].initial as usize, 5.0);
    assert_fits("Schlögl at t = 5 against the master equation", xs, &pmf);
}

// ---------------------------------------------------------------------------------------------
// Reproducibility

/// Runs the Vilar oscillator on `threads` threads.
fn vilar_on(threads: usize, seed: u64) -> Ensemble {
    let m = model("vilar.rxn", VILAR);
    simulate_on(Some(threads), &m, 100.0, 1.0, 64, seed).unwrap()
}

#[test]
fn same_seed_gives_the_same_ensemble_on_any_number_of_threads() {
    assert_eq!(vilar_on(1, 42), vilar_on(2, 42));
    assert_eq!(vilar_on(1, 42), vilar_on(3, 42));
}

#[test]
fn different_seeds_give_different_ensembles() {
    assert_ne!(vilar_on(2, 42).data, vilar_on(2, 43).data);
}

// ---------------------------------------------------------------------------------------------
// Runtime errors

/// How a run of `tests/models/<file>` (8 trajectories up to t = 100) fails.
fn failure(file: &str, max_events: u64) -> SimError {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/models")
        .join(file);
    let m = Model::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let compiled = CompiledModel::new(&m.ir).unwrap();
    let options = SimOptions {
        t_end: 100.0,
        every: 1.0,
        trajectories: 8,
        seed: 1,
        max_events,
        ..SimOptions::default()
    };
    Ensemble::run(&compiled, &m.ir.param_values(), &options).expect_err("the run must fail")
}

fn state(x: i64) -> Vec<(String, i64)> {
    vec![("X".to_string(), x)]
}

#[test]
fn a_negative_propensity_is_an_error_naming_the_reaction() {
    let e = failure("negative_propensity.rxn", u64::MAX);
    assert!(
        matches!(&e, SimError::InvalidPropensity { reaction, value, state: s, .. }
            if reaction == "bad" && *value == -6.0 && *s == state(6)),
        "{e:?}"
    );
    assert!(e.to_string().contains("`bad`"), "{e}");
}

#[test]
fn a_nan_propensity_is_an_error_naming_the_reaction() {
    let e = failure("nan_propensity.rxn", u64::MAX);
    assert!(
        matches!(&e, SimError::InvalidPropensity { reaction, value, state: s, .. }
            if reaction == "grow" && value.is_nan() && *s == state(4)),
        "{e:?}"
    );
}

#[test]
fn a_reaction_that_takes_a_count_below_zero_is_an_error() {
    let e = failure("negative_count.rxn", u64::MAX);
    assert!(
        matches!(&e, SimError::NegativeCount { reaction, species, state: s, .. }
            if reaction == "death" && species == "X" && *s == state(-1)),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("`death`") && e.to_string().contains("`X`"),
        "{e}"
    );
}

#[test]
fn a_runaway_model_stops_at_the_event_limit() {
    // Every event adds one X to the initial 10: the run stops after exactly 1000 of them.
    let e = failure("runaway.rxn", 1000);
    assert!(
        matches!(&e, SimError::TooManyEvents { limit: 1000, state: s, .. } if *s == state(1010)),
        "{e:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The examples

#[test]
fn every_example_checks_and_compiles() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rxn") {
            let m = Model::load(&path).unwrap_or_else(|e| panic!("{e}"));
            CompiledModel::new(&m.ir).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 6, "only {seen} examples in {}", dir.display());
}

/// A propensity that reads time is integrated between events: `0 -> A @= 2 t` from A = 0 gives
/// A(t) Poisson with mean t² (held fixed between events it would never fire: its propensity is 0
/// at t = 0).
#[test]
fn time_dependent_propensity_is_integrated() {
    let m = model("time.rxn", "species A = 0\n0 -> A @= 2 * t\n");
    let ensemble = simulate(&m, 3.0, 1.0, 8000, 41).unwrap();
    for t in [1.0, 2.0, 3.0] {
        let xs = sample(&ensemble, "A", t);
        let s = moments(&xs);
        let truth = t * t;
        // Poisson: the sample mean's variance is truth / n.
        assert_z(
            &format!("mean of A({t})"),
            (s.mean - truth) / (truth / s.n).sqrt(),
            4.0,
        );
        // The sample variance's variance for a Poisson law: truth/n + 2 truth^2/(n-1).
        let se_var = (truth / s.n + 2.0 * truth * truth / (s.n - 1.0)).sqrt();
        assert_z(
            &format!("variance of A({t})"),
            (s.var - truth) / se_var,
            4.0,
        );
    }
}
