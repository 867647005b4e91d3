//! `rxnc run --fit`: data files, losses and their gradients, the optimiser, the command line.

use rxnc::Model;
use rxnc::diagnostics::Style;
use rxnc::driver::data::{self, Data};
use rxnc::driver::loss::{self, LossKind};
use rxnc::driver::{self, FitOptions};
use rxnc::estimators::{Estimator, GradOptions, run_timed};
use rxnc::jit::CompiledModel;
use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_rxnc");

const BIRTH_DEATH: &str = "species X = 0\nparam k = 10\nconst g = 1\n0 -> X @ k\nX -> 0 @ g\n";
const TELEGRAPH: &str = "species Goff = 1, Gon = 0, M = 0\nparam kon = 0.5, koff = 1, ktx = 10\n\
    const kdeg = 1\nobservable total = Gon + M\nGoff <-> Gon @ kon, koff\nGon -> Gon + M @ ktx\nM -> 0 @ kdeg\n";

fn model(text: &str) -> Model {
    Model::parse("model.rxn", text).unwrap()
}

fn parse(text: &str) -> Result<Data, String> {
    data::parse("data.csv", text, &model(TELEGRAPH).ir).map_err(|e| e.render(Style::Plain))
}

// ---------------------------------------------------------------- data files

#[test]
fn data_diagnostics() {
    let cases = [
        ("empty", ""),
        ("header_only", "time,M\n"),
        ("one_row", "time,M\n1,3\n"),
        ("unknown_column", "time,m,Gon\n1,3,0\n2,4,1\n"),
        ("unknown_column_no_suggestion", "time,protein\n1,3\n2,4\n"),
        ("duplicate_column", "M,Gon,M\n1,0,1\n2,1,2\n"),
        ("not_a_number", "time,M\n1,3\n2,three\n"),
        ("missing_value", "time,M\n1,3\n2,\n"),
        ("negative_count", "time,M\n1,3\n2,-4\n"),
        ("fractional_count", "time,M\n1,3\n2,4.5\n"),
        ("huge_count", "time,M\n1,3\n2,1e19\n"),
        ("huge_value", "time,total\n1,3\n2,1e160\n"),
        ("nan", "time,M\n1,NaN\n2,4\n"),
        ("negative_time", "time,M\n-1,3\n2,4\n"),
        ("row_length", "time,M\n1,3\n2,4,5\n"),
        ("several", "time,M\n1,x\n2,-1\n3,inf\n"),
    ];
    for (name, text) in cases {
        let rendered = parse(text).expect_err(name);
        insta::with_settings!({ description => text.to_string(), omit_expression => true }, {
            insta::assert_snapshot!(format!("data_{name}"), rendered);
        });
    }
}

/// Quoted fields (RFC 4180): quotes are not part of the text, a comma inside them does not split.
#[test]
fn data_fields_may_be_quoted() {
    let d = parse("\"time\", \"M\"\n\"1\",\"3\"\n2, 4\n").unwrap();
    assert_eq!((d.columns.clone(), d.rows), (vec!["M".to_string()], 2));
    let err = parse("time,M\n1,\"3,4\"\n2,4\n").unwrap_err();
    assert!(err.contains("`3,4`, which is not a number"), "{err}");
    assert!(!err.contains("fields"), "{err}");
}

#[test]
fn data_groups_rows_by_time() {
    let d = parse("time,M,total\n2,3,4\n1,5,5\n2,7,8\n\n1,1,2\n").unwrap();
    assert_eq!(d.columns, ["M", "total"]);
    assert_eq!(d.times, Some(vec![1.0, 2.0]));
    assert_eq!(d.samples[0], [vec![5.0, 1.0], vec![5.0, 2.0]]);
    assert_eq!(d.samples[1], [vec![3.0, 7.0], vec![4.0, 8.0]]);
    assert_eq!(d.rows, 4);
    assert_eq!(LossKind::default_for(&d), LossKind::Mean);
    // No time column: stationary samples; a `trajectory` column (as `rxnc simulate` writes) is
    // ignored; CRLF line ends are fine.
    let d = parse("trajectory,M\r\n0,3\r\n1,4\r\n").unwrap();
    assert_eq!(d.times, None);
    assert_eq!(d.samples, [vec![vec![3.0, 4.0]]]);
    let many: String = std::iter::once("M\n".to_string())
        .chain((0..10).map(|i| format!("{i}\n")))
        .collect();
    assert_eq!(LossKind::default_for(&parse(&many).unwrap()), LossKind::W1);
    // Times with 10 or more rows get w1, the others mean.
    let mixed: String = std::iter::once("time,M\n".to_string())
        .chain((0..10).map(|i| format!("1,{i}\n")))
        .chain(["2,4\n".to_string(), "2,6\n".to_string()])
        .collect();
    let d = parse(&mixed).unwrap();
    assert_eq!(LossKind::default_for(&d), LossKind::Auto);
    let scales = loss::column_scales(&d);
    let pool = vec![vec![(0..10).map(f64::from).collect()], vec![vec![5.0, 7.0]]];
    // Time 1: identical samples (W1 = 0); time 2: mean 6 against 5, squared error 1 / s.
    let expected = (0.0 + 1.0 / scales[0]) / 2.0;
    assert!((loss::value(&d, LossKind::Auto, &scales, &pool) - expected).abs() < 1e-12);
}

// ---------------------------------------------------------------- losses

#[test]
fn w1_by_hand() {
    assert_eq!(loss::w1(&[0.0, 1.0, 2.0], &[1.0, 2.0, 3.0]), 1.0);
    assert_eq!(loss::w1(&[0.0, 0.0], &[2.0]), 2.0);
    assert_eq!(loss::w1(&[0.0, 2.0], &[1.0, 1.0]), 1.0);
    assert_eq!(loss::w1(&[3.0, 1.0], &[1.0, 3.0]), 0.0);
    // Unequal sizes: F_a − F_b is 1/2 on [0, 1) and 1/6 on [1, 3): 1/2 + 2/6.
    assert!((loss::w1(&[0.0, 3.0], &[1.0, 1.0, 3.0]) - (0.5 + 2.0 / 6.0)).abs() < 1e-12);
}

#[test]
fn loss_values_by_hand() {
    // One column, stationary; observed 1, 2, 3 (mean 2, variance 1, so the scale is 1).
    let d = data::parse("d.csv", "X\n1\n2\n3\n", &model(BIRTH_DEATH).ir).unwrap();
    let scales = loss::column_scales(&d);
    assert_eq!(scales, [1.0]);
    let pool = vec![vec![vec![2.0, 4.0, 6.0]]]; // mean 4, variance 4
    assert_eq!(loss::value(&d, LossKind::Mean, &scales, &pool), 4.0);
    assert_eq!(
        loss::value(&d, LossKind::Moments, &scales, &pool),
        4.0 + 9.0
    );
    // F_sim − F_obs: −1/3 on [1, 2), −1/3 on [2, 3), −2/3 on [3, 4), −1/3 on [4, 6): 2.
    assert!((loss::value(&d, LossKind::W1, &scales, &pool) - 2.0).abs() < 1e-12);
    // Scales: observed 4, 8 have variance 8, so the mean term is (8 − 6)² / 8.
    let d = data::parse("d.csv", "X\n4\n8\n", &model(BIRTH_DEATH).ir).unwrap();
    let scales = loss::column_scales(&d);
    assert_eq!(scales, [8.0]);
    assert_eq!(
        loss::value(&d, LossKind::Mean, &scales, &[vec![vec![6.0, 10.0]]]),
        0.5
    );
}

/// Fit options for the tests: Adam's default learning rate, the model's horizon, one restart,
/// 10^6 events; each test names the rest.
fn fit_options(
    estimator: Estimator,
    loss: LossKind,
    trajectories: usize,
    tracked: usize,
) -> FitOptions {
    FitOptions {
        steps: 100,
        trajectories,
        tracked,
        estimator,
        loss,
        lr: 0.05,
        seed: 0,
        t_end: None,
        restarts: 1,
        max_events: 1_000_000,
    }
}

/// Samples of Poisson(lambda) at evenly spaced quantiles: a deterministic stand-in for data.
fn poisson_quantiles(lambda: f64, n: usize) -> Vec<u64> {
    let mut cdf = Vec::new();
    let (mut p, mut total) = ((-lambda).exp(), 0.0);
    for j in 0..200u64 {
        total += p;
        cdf.push(total);
        p *= lambda / (j + 1) as f64;
    }
    (0..n)
        .map(|i| {
            let u = (i as f64 + 0.5) / n as f64;
            cdf.iter().position(|&c| c >= u).unwrap() as u64
        })
        .collect()
}

fn poisson_data(lambda: f64, n: usize) -> String {
    let mut s = String::from("X\n");
    for v in poisson_quantiles(lambda, n) {
        s.push_str(&format!("{v}\n"));
    }
    s
}

/// The loss and its gradient at k = 10 for birth-death data from Poisson(8), at t = 20.
fn bd_gradient(kind: LossKind, estimator: Estimator, n: usize) -> (f64, f64) {
    let m = model(BIRTH_DEATH);
    let compiled = CompiledModel::new(&m.ir).unwrap();
    let d = data::parse("d.csv", &poisson_data(8.0, 2000), &m.ir).unwrap();
    let scales = loss::column_scales(&d);
    let options = GradOptions {
        t_end: 20.0,
        trajectories: n,
        seed: 3,
        estimator,
        max_events: 1_000_000,
    };
    let tracked = run_timed(&compiled, &[10.0], &d.leaves, &[20.0], &options, 0..n).unwrap();
    let pool = vec![vec![
        (0..n).map(|i| tracked.value(i, 0, 0)).collect::<Vec<_>>(),
    ]];
    let l = loss::value_and_gradient(&d, kind, &scales, &pool, &tracked, estimator, 1);
    (l.v * scales[0].sqrt(), l.d[0] * scales[0].sqrt())
}

#[test]
fn w1_gradient_of_birth_death_against_poisson_data() {
    // Poisson laws are stochastically ordered: W1(Poisson(k), Poisson(8)) = k − 8, slope 1.
    for (estimator, tol) in [
        (Estimator::Score, 0.12),
        // One pruned alternative per trajectory over ~400 events: unbiased but noisy (its
        // standard error here is about 0.3).
        (Estimator::AltPath, 0.9),
        (Estimator::Fd { sigma: 0.05 }, 0.12),
        (Estimator::GsSt { temperature: 1.0 }, 0.12),
    ] {
        let (value, slope) = bd_gradient(LossKind::W1, estimator, 4000);
        assert!((value - 2.0).abs() < 0.2, "{estimator:?}: W1 {value}");
        assert!((slope - 1.0).abs() < tol, "{estimator:?}: dW1/dk {slope}");
    }
}

#[test]
fn mean_gradient_of_birth_death() {
    // (μ − 8)² with μ = k at stationarity: slope 2 (k − 8) = 4 (before scaling by the variance).
    for estimator in [Estimator::Score, Estimator::GsSt { temperature: 1.0 }] {
        let (value, slope) = bd_gradient(LossKind::Mean, estimator, 4000);
        let scale = loss::column_scales(
            &data::parse("d.csv", &poisson_data(8.0, 2000), &model(BIRTH_DEATH).ir).unwrap(),
        )[0];
        assert!(
            (value * scale.sqrt() - 4.0).abs() < 0.8,
            "{estimator:?}: {value}"
        );
        assert!(
            (slope * scale.sqrt() - 4.0).abs() < 0.8,
            "{estimator:?}: {slope}"
        );
    }
}

#[test]
fn time_course_records_match_forward_simulation() {
    // Every estimator's primal at each observation time is an exact SSA: the means of a pure
    // birth process at t = 1, 2, 4 are 10 t. (gs-st is left out: with a single channel the
    // softmax has nothing to relax and its pathwise derivative of a count is zero.)
    let m = model("species X = 0\nparam k = 10\n0 -> X @ k\n");
    let compiled = CompiledModel::new(&m.ir).unwrap();
    let times = [1.0, 2.0, 4.0];
    for estimator in [
        Estimator::Score,
        Estimator::AltPath,
        Estimator::Fd { sigma: 0.05 },
    ] {
        let options = GradOptions {
            t_end: 4.0,
            trajectories: 2000,
            seed: 1,
            estimator,
            max_events: 1_000_000,
        };
        let r = run_timed(
            &compiled,
            &[10.0],
            &[rxnc::ir::Expr::Species(0)],
            &times,
            &options,
            0..2000,
        )
        .unwrap();
        for (k, &t) in times.iter().enumerate() {
            let d = r.expectation(k, 0, &|y| (y, 1.0));
            assert!(
                (d.v - 10.0 * t).abs() < 4.0 * (10.0 * t / 2000.0).sqrt(),
                "{estimator:?} mean {}",
                d.v
            );
            // dE[X_t]/dk = t.
            assert!(
                (d.d[0] - t).abs() < 0.15 * t,
                "{estimator:?} t = {t}: {}",
                d.d[0]
            );
        }
    }
}

// ---------------------------------------------------------------- optimiser

#[test]
fn fit_recovers_birth_death_rate_from_stationary_data() {
    let m = model("species X = 0\nparam k = 3\nconst g = 1\n0 -> X @ k\nX -> 0 @ g\n");
    let compiled = CompiledModel::new(&m.ir).unwrap();
    let d = data::parse("d.csv", &poisson_data(10.0, 1000), &m.ir).unwrap();
    for (estimator, loss) in [
        (Estimator::Score, LossKind::W1),
        (Estimator::GsSt { temperature: 1.0 }, LossKind::Moments),
    ] {
        let options = FitOptions {
            steps: 120,
            seed: 5,
            restarts: 2,
            ..fit_options(estimator, loss, 400, 200)
        };
        let mut steps = 0;
        let r = driver::fit(&compiled, &d, &options, &mut |_| steps += 1).unwrap();
        assert!(
            (r.params[0] - 10.0).abs() < 1.0,
            "{estimator:?} {loss:?}: k = {}",
            r.params[0]
        );
        assert_eq!(steps, r.trace.len());
        assert_eq!(r.restarts.len(), 2);
        assert!(r.uncertainty[0].is_finite());
        // Burn-in: 10 / g.
        assert_eq!(r.times, [10.0]);
    }
}

/// A column that depends on a parameter directly (a background offset added to a count) is
/// fitted by every estimator with the default loss: the W1 loss's slope at the simulated samples
/// is that of the quantile coupling (the potential's one-sided slope there was 0 for a point
/// mass, and score walked an offset away from the data).
#[test]
fn fit_recovers_a_parameter_that_a_column_reads_directly() {
    let m = model(
        "species X = 0\nparam bg = 9 in [0, 50]\nconst k = 5, g = 1\nobservable y = X + bg\n\
         0 -> X @ k\nX -> 0 @ g\n",
    );
    let compiled = CompiledModel::new(&m.ir).unwrap();
    let quantiles = poisson_quantiles(5.0, 600).into_iter();
    let data: String = std::iter::once("y\n".to_string())
        .chain(quantiles.map(|v| format!("{}\n", v + 10)))
        .collect();
    let d = data::parse("d.csv", &data, &m.ir).unwrap();
    for estimator in [
        Estimator::Score,
        Estimator::AltPath,
        Estimator::GsSt { temperature: 1.0 },
        Estimator::Fd { sigma: 0.05 },
    ] {
        let options = FitOptions {
            steps: 150,
            seed: 2,
            ..fit_options(estimator, LossKind::W1, 500, 500)
        };
        let r = driver::fit(&compiled, &d, &options, &mut |_| {}).unwrap();
        let bg = r.params[0];
        assert!((bg - 10.0).abs() < 0.3, "{estimator:?}: bg = {bg}");
    }
}

#[test]
fn fit_recovers_both_birth_death_rates_from_a_time_course() {
    // From X(0) = 0, X(t) is Poisson with mean (k/g)(1 − e^{−g t}): the time course determines
    // both rates (a stationary distribution only their ratio).
    let (k, g) = (10.0f64, 1.0f64);
    let mut text = String::from("time,X\n");
    for t in [0.5, 1.0, 2.0, 4.0] {
        for v in poisson_quantiles(k / g * (1.0 - (-g * t).exp()), 200) {
            text.push_str(&format!("{t},{v}\n"));
        }
    }
    let m = model("species X = 0\nparam k = 3, g = 0.4\n0 -> X @ k\nX -> 0 @ g\n");
    let compiled = CompiledModel::new(&m.ir).unwrap();
    let d = data::parse("d.csv", &text, &m.ir).unwrap();
    assert_eq!(LossKind::default_for(&d), LossKind::W1);
    let options = FitOptions {
        steps: 200,
        seed: 2,
        ..fit_options(Estimator::Score, LossKind::W1, 400, 400)
    };
    let r = driver::fit(&compiled, &d, &options, &mut |_| {}).unwrap();
    assert!((r.params[0] / k - 1.0).abs() < 0.15, "k = {}", r.params[0]);
    assert!((r.params[1] / g - 1.0).abs() < 0.15, "g = {}", r.params[1]);
    assert_eq!(r.times, [0.5, 1.0, 2.0, 4.0]);
}

#[test]
fn transforms_round_trip() {
    use driver::Transform;
    for (t, v) in [(Transform::Log, 3.5), (Transform::Logit(0.1, 10.0), 2.0)] {
        let u = t.inverse(v);
        assert!((t.forward(u) - v).abs() < 1e-12);
        let h = 1e-6;
        let slope = (t.forward(u + h) - t.forward(u - h)) / (2.0 * h);
        assert!((slope - t.slope(u)).abs() < 1e-6 * slope.abs().max(1.0));
    }
    // A start at (or very near) a bound is taken 1% of the range inside, where the logit is
    // not flat.
    let t = Transform::Logit(10.0, 100.0);
    for (v, inside) in [
        (10.0, 10.9),
        (100.0, 99.1),
        (10.0 + 1e-6, 10.9),
        (55.0, 55.0),
    ] {
        assert!((t.forward(t.inverse(v)) - inside).abs() < 1e-9, "{v}");
    }
}

/// A fit that starts at a bound leaves it (it stayed there, the logit's slope being 1e-9), with
/// fd too (which perturbs inside bounds, and cannot at the bound itself).
#[test]
fn fit_starting_at_a_bound_moves() {
    let m =
        model("species X = 0\nparam k = 10 in [10, 100]\nconst g = 1\n0 -> X @ k\nX -> 0 @ g\n");
    let compiled = CompiledModel::new(&m.ir).unwrap();
    let d = data::parse("d.csv", &poisson_data(50.0, 400), &m.ir).unwrap();
    for estimator in [Estimator::Score, Estimator::Fd { sigma: 0.05 }] {
        let options = FitOptions {
            steps: 150,
            seed: 4,
            lr: 0.2,
            ..fit_options(estimator, LossKind::W1, 200, 200)
        };
        let r = driver::fit(&compiled, &d, &options, &mut |_| {}).unwrap();
        assert!(
            (r.params[0] - 50.0).abs() < 5.0,
            "{estimator:?}: k = {}",
            r.params[0]
        );
    }
}

// ---------------------------------------------------------------- command line

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rxnc-fit-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn cli_run_writes_fit_json_and_trace() {
    let dir = scratch("json");
    std::fs::write(
        dir.join("m.rxn"),
        "species X = 0\nparam k = 4\nconst g = 1\n0 -> X @ k\nX -> 0 @ g\n",
    )
    .unwrap();
    std::fs::write(dir.join("d.csv"), poisson_data(8.0, 200)).unwrap();
    let out = Command::new(BIN)
        .env("RXNC_CACHE_DIR", "off")
        .args([
            "run", "m.rxn", "--fit", "d.csv", "--steps", "30", "-n", "100", "--seed", "1",
        ])
        .args(["--out", "fit.json", "--trace", "trace.csv"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("parameter") && stdout.contains("fitted"),
        "{stdout}"
    );
    assert!(
        stdout.contains("data mean") && stdout.contains("model mean"),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fit.json")).unwrap()).unwrap();
    for key in [
        "statistics",
        "parameters",
        "loss",
        "steps",
        "trace",
        "uncertainty",
        "estimator",
        "loss_kind",
    ] {
        assert!(json.get(key).is_some(), "fit.json lacks {key}: {json}");
    }
    assert!(json["parameters"]["k"].as_f64().unwrap() > 4.0);
    assert_eq!(json["loss_kind"], "w1");
    let trace = std::fs::read_to_string(dir.join("trace.csv")).unwrap();
    assert!(trace.starts_with("restart,step,loss,k\n"));
    assert_eq!(
        trace.lines().count(),
        1 + json["steps"].as_u64().unwrap() as usize
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn cli_run_exit_codes() {
    let dir = scratch("codes");
    for (name, contents) in [
        ("m.rxn", BIRTH_DEATH.as_bytes()),
        (
            "t.rxn",
            b"species X = 0\nparam k = 1\n0 -> X @= k * (1 + t)\n",
        ),
        (
            "time.rxn",
            b"species time = 0\nparam k = 1\n0 -> time @ k\n",
        ),
        ("good.csv", b"X\n3\n4\n"),
        ("bad.csv", b"time,Y\n1,3\n2,4\n"),
        // As spreadsheets write it: a byte-order mark before the header; another encoding.
        ("bom.csv", "\u{feff}X\n3\n4\n".as_bytes()),
        ("latin1.csv", b"X\n3\n4\xff\n"),
        ("time.csv", b"time\n1\n2\n"),
        ("far.csv", b"X\n50\n52\n48\n"),
        ("late.csv", b"time,X\n1e9,3\n1,4\n"),
    ] {
        std::fs::write(dir.join(name), contents).unwrap();
    }
    let run = |args: &str| {
        let out = Command::new(BIN)
            .env("RXNC_CACHE_DIR", "off")
            .arg("run")
            .args(args.split_whitespace())
            .current_dir(&dir)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // (arguments after `rxnc run`, exit status, what standard error must say)
    let cases: &[(&str, i32, &[&str])] = &[
        (
            "m.rxn --fit bad.csv",
            1,
            &["unknown column `Y`", "bad.csv:1:6"],
        ),
        ("m.rxn --fit missing.csv", 1, &["cannot read data file"]),
        ("m.rxn --fit good.csv --loss l2", 1, &["unknown loss `l2`"]),
        ("m.rxn --fit good.csv --tracked 5 -n 4", 1, &["--tracked"]),
        (
            "m.rxn --fit good.csv --estimator magic",
            1,
            &["unknown estimator `magic`"],
        ),
        ("m.rxn --fit bom.csv --steps 2 -n 10", 0, &[]),
        (
            "m.rxn --fit latin1.csv",
            1,
            &["not UTF-8 text: line 3, column 2 has the byte 0xFF"],
        ),
        // A species the data cannot name: `time` is the data's own column.
        (
            "time.rxn --fit time.csv",
            1,
            &["data's own `time` column, not the model's"],
        ),
        // Another estimator's option would be ignored: refused, as `grad` does.
        (
            "m.rxn --fit good.csv --sigma 0.5",
            1,
            &["--sigma applies to fd, not to score"],
        ),
        (
            "m.rxn --fit good.csv --temperature 0.5",
            1,
            &["--temperature applies to gs-st, not to score"],
        ),
        (
            "m.rxn --fit good.csv --max-events 0",
            1,
            &["--max-events must be at least 1"],
        ),
        // The event limit at the file's values: the horizon is the data's, not --t-end.
        (
            "m.rxn --fit late.csv --max-events 1000 -n 4",
            1,
            &["limit of 1000 events", "the data's last time, 1e9"],
        ),
        // A simulation failing at a later step keeps the best parameters so far, says where.
        (
            "m.rxn --fit far.csv --lr 1 --max-events 400 -n 20 --out far.json",
            1,
            &["at restart 0, step ", "limit of 400 events"],
        ),
        ("t.rxn --fit good.csv --t-end 2", 1, &["use --estimator fd"]),
        (
            "t.rxn --fit good.csv --t-end 2 --estimator fd --steps 2 -n 10",
            0,
            &[],
        ),
        ("m.rxn --fit good.csv --steps 3 -n 20 --loss mean", 0, &[]),
    ];
    for &(args, status, says) in cases {
        let (code, err) = run(args);
        assert_eq!(code, Some(status), "{args}: {err}");
        for words in says {
            assert!(err.contains(words), "{args}: no `{words}` in\n{err}");
        }
        assert!(!err.contains("grow without bound"), "{args}: {err}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("far.json")).unwrap()).unwrap();
    assert!(
        json["parameters"]["k"].is_number() && json["diverged"].is_string(),
        "{json}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn cli_run_non_finite_column_is_a_diagnostic_and_keeps_the_best_parameters() {
    let dir = scratch("diverge");
    std::fs::write(
        dir.join("m.rxn"),
        "species X = 0\nparam k = 2\nconst g = 1\nobservable inv = 1 / X\n0 -> X @ k\nX -> 0 @ g\n",
    )
    .unwrap();
    std::fs::write(dir.join("d.csv"), "inv\n0.5\n0.25\n").unwrap();
    let out = Command::new(BIN)
        .env("RXNC_CACHE_DIR", "off")
        .args(["run", "m.rxn", "--fit", "d.csv", "-n", "50", "--steps", "5"])
        .args(["--out", "fit.json"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("column `inv` evaluates to inf"), "{err}");
    assert!(err.contains("help:"), "{err}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fit.json")).unwrap()).unwrap();
    assert_eq!(json["parameters"]["k"], 2.0);
    assert!(json["diverged"].is_string());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn cli_run_stops_runaway_parameters() {
    // Data 30000 times the starting mean: the rate climbs until a trajectory costs over 1000
    // times its first events, and the fit stops with the best parameters so far.
    let dir = scratch("runaway");
    std::fs::write(
        dir.join("m.rxn"),
        "species X = 0\nparam k = 3\nconst g = 1\n0 -> X @ k\nX -> 0 @ g\n",
    )
    .unwrap();
    std::fs::write(dir.join("d.csv"), "X\n100000\n100100\n99900\n").unwrap();
    let out = Command::new(BIN)
        .env("RXNC_CACHE_DIR", "off")
        .args([
            "run", "m.rxn", "--fit", "d.csv", "--lr", "0.5", "-n", "50", "--out", "fit.json",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("running away") && err.contains("start closer"),
        "{err}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fit.json")).unwrap()).unwrap();
    assert!(json["parameters"]["k"].as_f64().unwrap() > 3.0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn cli_plots_are_svg() {
    let dir = scratch("plot");
    std::fs::write(dir.join("m.rxn"), BIRTH_DEATH).unwrap();
    std::fs::write(dir.join("d.csv"), "time,X\n1,5\n1,7\n2,8\n2,9\n").unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .env("RXNC_CACHE_DIR", "off")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[
        "run", "m.rxn", "--fit", "d.csv", "-n", "20", "--steps", "3", "--plot", "fit.svg",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = run(&[
        "simulate", "m.rxn", "--t-end", "5", "-n", "20", "--plot", "sim.svg",
    ]);
    assert_eq!(code, Some(0), "{err}");
    for f in ["fit.svg", "sim.svg"] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(text.starts_with("<svg") && text.contains("</svg>"), "{f}");
    }
    // PNG: the same figures rasterised (with an embedded font, so text renders anywhere).
    let (code, err) = run(&[
        "run", "m.rxn", "--fit", "d.csv", "-n", "20", "--steps", "3", "--plot", "fit.png",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = run(&[
        "simulate", "m.rxn", "--t-end", "5", "-n", "20", "--plot", "sim.png",
    ]);
    assert_eq!(code, Some(0), "{err}");
    for f in ["fit.png", "sim.png"] {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000,
            "{f}: {} bytes",
            bytes.len()
        );
    }
    // Other formats are refused before any work is done.
    let (code, err) = run(&["simulate", "m.rxn", "--t-end", "5", "--plot", "sim.pdf"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("SVG or PNG"), "{err}");
    assert!(!dir.join("sim.pdf").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bootstrap_refits_synthetic_data() {
    let m = model("species X = 0\nparam k = 10\nconst g = 1\n0 -> X @ k\nX -> 0 @ g\n");
    let compiled = CompiledModel::new(&m.ir).unwrap();
    let d = data::parse("d.csv", &poisson_data(10.0, 200), &m.ir).unwrap();
    let options = FitOptions {
        steps: 40,
        seed: 9,
        ..fit_options(Estimator::Score, LossKind::Mean, 200, 200)
    };
    let refits = driver::bootstrap(&compiled, &d, &options, &[10.0], 3, &mut |_, _| {}).unwrap();
    assert_eq!(refits.len(), 3);
    for r in &refits {
        // The sd of the mean of 200 Poisson(10) counts is 0.22: refits stay near 10, and differ.
        assert!((r[0] - 10.0).abs() < 1.5, "{r:?}");
    }
    assert!(refits[0] != refits[1]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
    /// Any text is parsed or rejected with diagnostics, never a panic, and rendering works.
    #[test]
    fn data_parser_never_panics(text in "(time|M|Gon|total|trajectory|x|,|-|\\.|[0-9]|e|nan|inf| |\"|\r|\n){0,60}") {
        match parse(&text) {
            Ok(d) => {
                proptest::prop_assert!(d.rows >= 2);
                proptest::prop_assert!(d.samples.iter().flatten().flatten().all(|v| v.is_finite()));
            }
            Err(rendered) => proptest::prop_assert!(!rendered.is_empty()),
        }
    }
}

/// A time with a single row has no sample variance: `moments` matches only its mean there (a
/// variance of 0 pulled the model's towards 0), and its data sd is empty in the table, null in
/// fit.json. Large means are printed in scientific notation, counts of one in the singular.
#[test]
fn cli_run_single_rows_have_no_variance() {
    let dir = scratch("single-rows");
    std::fs::write(dir.join("m.rxn"), BIRTH_DEATH).unwrap();
    // One observation per time, from X(t) ~ Poisson(10 (1 - e^-t)).
    std::fs::write(
        dir.join("d.csv"),
        "time,X\n1,6\n2,9\n3,8\n4,11\n5,10\n6,9\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .env("RXNC_CACHE_DIR", "off")
        .args([
            "run", "m.rxn", "--fit", "d.csv", "--loss", "moments", "--steps", "1", "-n", "50",
        ])
        .args(["--out", "fit.json"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("6 times") && stdout.contains("1 step ("),
        "{stdout}"
    );
    let row = stdout.lines().find(|l| l.starts_with("1 ")).unwrap();
    // time, column, data mean, model mean, (empty data sd), model sd.
    assert_eq!(row.split_whitespace().count(), 5, "{row}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fit.json")).unwrap()).unwrap();
    assert!(
        json["statistics"][0]["data_sd"].is_null(),
        "{}",
        json["statistics"]
    );
    assert!(
        json["statistics"][0]["model_sd"].is_number(),
        "{}",
        json["statistics"]
    );
}

/// Which parameters the data can see: through reactions, the species they change and the
/// reactions reading those, or by being read in a column. The others are held and reported so.
#[test]
fn parameters_the_data_cannot_see_are_not_fitted() {
    let m = model(
        "species X = 0, Y = 0, Z = 0\nparam k = 5, g = 1, ky = 2, kz = 1, bg = 3\n\
         observable shifted = Y + bg\n0 -> X @ k\nX -> 0 @ g\n0 -> Y @ ky\nY -> 0 @ 1\n\
         Y -> Z @ kz\n",
    );
    let column = |name: &str| {
        let d = data::parse("d.csv", &format!("{name}\n1\n2\n"), &m.ir).unwrap();
        m.ir.params_affecting(&d.leaves)
    };
    // k, g, ky, kz, bg.
    assert_eq!(column("X"), [true, true, false, false, false]);
    // kz removes Y (into Z).
    assert_eq!(column("Y"), [false, false, true, true, false]);
    assert_eq!(column("Z"), [false, false, true, true, false]);
    assert_eq!(column("shifted"), [false, false, true, true, true]);
    let dir = scratch("unseen-params");
    std::fs::write(dir.join("m.rxn"), "species X = 0, Y = 0\nparam k = 5, ky = 2\n0 -> X @ k\nX -> 0 @ 1\n0 -> Y @ ky\nY -> 0 @ 1\n").unwrap();
    std::fs::write(dir.join("d.csv"), "Y\n1\n2\n3\n").unwrap();
    let out = Command::new(BIN)
        .env("RXNC_CACHE_DIR", "off")
        .args([
            "run", "m.rxn", "--fit", "d.csv", "--steps", "5", "-n", "30", "--out", "fit.json",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: `k` can affect none of the data's columns (Y)"),
        "{stderr}"
    );
    let row = stdout.lines().find(|l| l.starts_with("k ")).unwrap();
    assert!(
        row.contains("5.000000      5.000000    not fitted"),
        "{row}"
    );
    // A held parameter at a bound stays exactly there (starts are clamped 1% inside).
    let m = model(
        "species X = 0, Y = 0\nparam p = 0 in [0, 1], ky = 2\n0 -> X @ 10 * p\n0 -> Y @ ky\nY -> 0 @ 1\n",
    );
    let compiled = CompiledModel::new(&m.ir).unwrap();
    let d = data::parse("d.csv", "Y\n1\n2\n3\n", &m.ir).unwrap();
    for estimator in [Estimator::Score, Estimator::Fd { sigma: 0.05 }] {
        let options = FitOptions {
            steps: 5,
            seed: 1,
            restarts: 2,
            ..fit_options(estimator, LossKind::Mean, 30, 30)
        };
        let r = driver::fit(&compiled, &d, &options, &mut |_| {}).unwrap();
        assert_eq!(
            (r.params[0], r.fitted.clone()),
            (0.0, vec![false, true]),
            "{estimator:?}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fit.json")).unwrap()).unwrap();
    assert!(
        json["uncertainty"]["k"].is_null() && json["uncertainty"]["ky"].is_number(),
        "{json}"
    );
}

/// One step is one update: the fitted values are not the initial ones (the update was left out
/// of the averaged iterates).
#[test]
fn a_single_step_updates_the_parameters() {
    let m = model(BIRTH_DEATH);
    let compiled = CompiledModel::new(&m.ir).unwrap();
    let d = data::parse("d.csv", &poisson_data(20.0, 200), &m.ir).unwrap();
    let options = FitOptions {
        steps: 1,
        seed: 1,
        ..fit_options(Estimator::Score, LossKind::Mean, 50, 50)
    };
    let r = driver::fit(&compiled, &d, &options, &mut |_| {}).unwrap();
    assert!(
        r.params[0] > 10.0,
        "k = {} after one step towards 20",
        r.params[0]
    );
}

/// A time course with many times is drawn through at most about 2000 data points (every k-th):
/// 10^5 times made an 18.7 MB figure.
#[test]
fn fit_figures_of_long_time_courses_stay_small() {
    let dir = scratch("long-plot");
    std::fs::write(dir.join("m.rxn"), BIRTH_DEATH).unwrap();
    let rows: String = (1..=6000)
        .map(|k| format!("{},{}\n", k as f64 * 0.01, k % 7))
        .collect();
    std::fs::write(dir.join("d.csv"), format!("time,X\n{rows}")).unwrap();
    let out = Command::new(BIN)
        .env("RXNC_CACHE_DIR", "off")
        .args([
            "run", "m.rxn", "--fit", "d.csv", "--steps", "1", "-n", "4", "--plot", "f.svg",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(dir.join("f.svg")).unwrap();
    let circles = svg.matches("<circle").count();
    assert!(
        (1000..=2100).contains(&circles),
        "{circles} data points drawn"
    );
}

/// A random restart that starts where the model fails (here 1 / X at X = 0) is reported and
/// skipped; the fit is that of the other restarts (one such restart ended the whole run).
#[test]
fn a_failing_restart_is_skipped() {
    let m = model(
        "species X = 0\nparam k = 50\nconst g = 1\nobservable inv = 1 / X\n0 -> X @ k\nX -> 0 @ g\n",
    );
    let compiled = CompiledModel::new(&m.ir).unwrap();
    let rows: String = poisson_quantiles(50.0, 50)
        .into_iter()
        .map(|v| format!("{}\n", 1.0 / v as f64))
        .collect();
    let d = data::parse("d.csv", &format!("inv\n{rows}"), &m.ir).unwrap();
    let options = FitOptions {
        steps: 30,
        seed: 1,
        restarts: 6,
        ..fit_options(Estimator::Score, LossKind::W1, 200, 200)
    };
    let r = driver::fit(&compiled, &d, &options, &mut |_| {}).unwrap();
    assert_eq!(r.failed_restarts.len() + r.restarts.len(), 6);
    assert!(
        r.failed_restarts
            .iter()
            .any(|f| f.contains("restart 4 failed: column `inv` evaluates to inf")),
        "{:?}",
        r.failed_restarts
    );
    assert!((r.params[0] - 50.0).abs() < 5.0, "k = {}", r.params[0]);
}
