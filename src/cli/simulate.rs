//! `rxnc simulate`.

use super::output::{PendingFile, stdout_error};
use super::{Failure, model_diagnostic};
use crate::Model;
use crate::diagnostics::Diagnostic;
use crate::engine::{Ensemble, SimError, SimOptions, write_trajectories};
use crate::jit::CompiledModel;
use crate::syntax::ast::Span;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The model file.
    file: PathBuf,
    /// The horizon: simulate from t = 0 to this time.
    #[arg(long, value_name = "T", allow_hyphen_values = true)]
    t_end: f64,
    /// Sampling interval of the output [default: T/100].
    #[arg(long, value_name = "DT", allow_hyphen_values = true)]
    every: Option<f64>,
    /// Number of trajectories.
    #[arg(
        short = 'n',
        long = "trajectories",
        value_name = "N",
        default_value_t = 1
    )]
    trajectories: usize,
    /// Seed of the random streams (trajectory i uses the stream keyed by (seed, i)).
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Write the trajectories CSV here: trajectory,time,<species...>,<observables...>.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write tidy statistics here: time,name,mean,sd over the trajectories.
    #[arg(long, value_name = "FILE")]
    stats: Option<PathBuf>,
    /// Draw sample trajectories, mean ± sd bands and the distribution at the last time (.svg,
    /// or .png for a raster image).
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Stop a trajectory that exceeds this many events (runaway models).
    #[arg(long, value_name = "K", default_value_t = 100_000_000)]
    max_events: u64,
    /// Worker threads [default: one per idle core]; results do not depend on it.
    #[arg(long, value_name = "K")]
    threads: Option<usize>,
}

/// Turns a simulation failure into a diagnostic pointing at the reaction responsible.
pub fn sim_failure(model: &Model, e: SimError) -> Failure {
    let reaction = match &e {
        SimError::InvalidPropensity { reaction, .. }
        | SimError::NegativeCount { reaction, .. }
        | SimError::NonFiniteDerivative { reaction, .. } => Some(reaction),
        _ => None,
    };
    match reaction.and_then(|name| model.ir.reactions.iter().find(|r| &r.name == name)) {
        Some(r) => {
            let (code, label) = match &e {
                SimError::InvalidPropensity { value, .. } => (
                    "rxn::runtime::propensity",
                    format!("this propensity is {value}"),
                ),
                SimError::NegativeCount { species, .. } => (
                    "rxn::runtime::negative_count",
                    format!("this propensity was not zero when `{species}` had run out"),
                ),
                SimError::NonFiniteDerivative { param, value, .. } => (
                    "rxn::runtime::derivative",
                    format!("its derivative with respect to `{param}` is {value}"),
                ),
                _ => ("rxn::runtime", String::new()),
            };
            let text = e.to_string();
            let (message, help) = text.split_once("; ").unwrap_or((&text, ""));
            let span = rate_span(model, r);
            let d = Diagnostic::new(code, message.to_string(), span, label);

            model_diagnostic(
                model,
                if help.is_empty() {
                    d
                } else {
                    d.with_help(help.to_string())
                },
            )
        }
        None => {
            let text = e.to_string();
            match text.split_once(". ") {
                Some((message, help)) => {
                    let mut h = help.chars();
                    let help: String = h
                        .next()
                        .map_or(String::new(), |c| c.to_lowercase().chain(h).collect());
                    Failure::input(message, help)
                }
                None => Failure::input(&text, "see rxnc simulate --help"),
            }
        }
    }
}

/// The command-line failure for a model that did not compile: a diagnostic at the rate whose
/// derivatives are too large, else an internal error.
pub fn compile_failure(model: &Model, e: crate::jit::JitError) -> Failure {
    let too_large = e.too_large_reaction();
    match too_large.and_then(|name| model.ir.reactions.iter().find(|r| r.name == name)) {
        Some(r) => {
            let d = Diagnostic::new("rxn::too_large", e.to_string(), rate_span(model, r), "this rate")
                .with_help(
                    "gradients need these derivatives, and they grow with the rate's nesting (a tower of powers, a function of a function): simplify the rate law; rxnc simulate does not need them",
                );
            model_diagnostic(model, d)
        }
        None => Failure::Internal(e.to_string()),
    }
}

/// Where the rate of reaction channel `r` is written: the expression after `@` or `@=` (the second
/// of two for the reverse channel of a reversible reaction). Falls back to the whole statement.
fn rate_span(model: &Model, r: &crate::ir::Reaction) -> Span {
    let text = &model.source.text;
    let Some(statement) = text.get(r.span.start..r.span.end) else {
        return r.span;
    };
    let Some(at) = statement.find('@') else {
        return r.span;
    };
    let mut start = at + 1;
    if statement[start..].starts_with('=') {
        start += 1;
    }
    // Channels from one statement are consecutive: forward first, then reverse.
    let which = model
        .ir
        .reactions
        .iter()
        .take_while(|other| !std::ptr::eq(*other, r))
        .filter(|other| other.span == r.span)
        .count();
    let mut depth = 0i32;
    let mut parts = vec![start];
    for (i, c) in statement[start..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => parts.push(start + i + 1),
            _ => {}
        }
    }
    parts.push(statement.len() + 1);
    let (Some(&from), Some(&to)) = (parts.get(which), parts.get(which + 1)) else {
        return r.span;
    };
    let piece = &statement[from..to - 1];
    let lead = piece.len() - piece.trim_start().len();
    let trimmed = piece.trim();
    if trimmed.is_empty() {
        return r.span;
    }
    let begin = r.span.start + from + lead;
    Span::new(begin, begin + trimmed.len())
}

/// A number for a message: plain when short, in scientific notation when very large or small.
pub fn num(x: f64) -> String {
    if x != 0.0 && x.is_finite() && !(1e-4..1e9).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        x.to_string()
    }
}

/// The largest ensemble `simulate` keeps in memory: 64 GiB of counts.
const MAX_ENSEMBLE_BYTES: f64 = 64.0 * (1u64 << 30) as f64;

pub fn run(args: SimulateArgs) -> Result<(), Failure> {
    let model = Model::load(&args.file)?;
    if !(args.t_end.is_finite() && args.t_end > 0.0) {
        return Err(Failure::input(
            format!("--t-end must be a positive time, not {}", num(args.t_end)),
            "for example --t-end 100",
        ));
    }
    let every = args.every.unwrap_or(args.t_end / 100.0);
    if !(every.is_finite() && every > 0.0) {
        return Err(Failure::input(
            format!("--every must be a positive time, not {}", num(every)),
            "for example --every 1",
        ));
    }
    if args.trajectories == 0 {
        return Err(Failure::input(
            "-n must be at least 1",
            "for example -n 1000",
        ));
    }
    if args.t_end / every > 1e8 {
        return Err(Failure::input(
            format!(
                "sampling every {} up to {} gives more than 10^8 sampling times",
                num(every),
                num(args.t_end)
            ),
            "choose a larger --every",
        ));
    }
    // The ensemble is kept in memory (a count per trajectory, sampling time and species): refuse
    // sizes that cannot fit rather than abort when the allocation fails.
    let cells = (args.trajectories as f64)
        * ((args.t_end / every).floor() + 2.0)
        * model.ir.species.len().max(1) as f64;
    if cells * 8.0 > MAX_ENSEMBLE_BYTES {
        return Err(Failure::input(
            format!(
                "{} trajectories sampled every {} up to {} would need about {:.0} GB of memory",
                args.trajectories,
                num(every),
                num(args.t_end),
                cells * 8.0 / 1e9
            ),
            "use fewer trajectories (-n) or a larger sampling interval (--every)",
        ));
    }
    if args.max_events == 0 {
        return Err(Failure::input(
            "--max-events must be at least 1",
            "leave it out for the default of 100000000 events per trajectory",
        ));
    }
    if let (Some(out), Some(stats)) = (&args.out, &args.stats) {
        let same = out == stats
            || matches!(
                (std::path::absolute(out), std::path::absolute(stats)),
                (Ok(a), Ok(b)) if a == b
            )
            || matches!(
                (std::fs::canonicalize(out), std::fs::canonicalize(stats)),
                (Ok(a), Ok(b)) if a == b
            );
        // Two outputs into one device or pipe (`/dev/null`) are fine; into one file they are not.
        let special = std::fs::metadata(out).is_ok_and(|m| !m.is_file());
        if same && !special {
            return Err(Failure::input(
                format!("--out and --stats both name `{}`", out.display()),
                "give them different files",
            ));
        }
    }
    super::set_threads(args.threads)?;
    // Open outputs first: an unwritable path fails before the simulation, not after it.
    let mut out_file = args
        .out
        .as_deref()
        .map(|p| PendingFile::create(p, "--out"))
        .transpose()?;
    let mut stats_file = args
        .stats
        .as_deref()
        .map(|p| PendingFile::create(p, "--stats"))
        .transpose()?;
    if let Some(p) = &args.plot {
        check_plot_path(p)?;
    }
    let plot_file = args
        .plot
        .as_deref()
        .map(|p| PendingFile::create(p, "--plot"))
        .transpose()?;

    let compiled =
        CompiledModel::for_simulation(&model.ir).map_err(|e| compile_failure(&model, e))?;
    let params = model.ir.param_values();
    let options = SimOptions {
        t_end: args.t_end,
        every,
        trajectories: args.trajectories,
        seed: args.seed,
        max_events: args.max_events,
        threads: None,
    };
    let bar = if args.trajectories >= 2 {
        super::progress_bar(
            args.trajectories as u64,
            "{elapsed_precise} [{bar:40}] {pos}/{len} trajectories ({eta} left)",
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    let ensemble = Ensemble::run_observed(&compiled, &params, &options, &|| bar.inc(1));
    bar.finish_and_clear();
    let ensemble = ensemble.map_err(|e| sim_failure(&model, e))?;

    let csv_failure = |e: csv::Error| match e.kind() {
        csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe => None,
        _ => Some(Failure::Internal(format!("cannot write output: {e}"))),
    };
    if let Some(f) = out_file.as_mut() {
        write_trajectories(f.writer(), &ensemble, &compiled, &params)
            .map_err(|e| csv_failure(e).unwrap_or(Failure::Internal("broken pipe".into())))?;
    }
    if let Some(f) = stats_file.as_mut() {
        ensemble
            .write_stats_csv(f.writer(), &compiled, &params)
            .map_err(|e| {
                csv_failure(csv::Error::from(e)).unwrap_or(Failure::Internal("broken pipe".into()))
            })?;
    }
    if let Some(mut f) = plot_file {
        let path = args
            .plot
            .as_deref()
            .unwrap_or(std::path::Path::new("plot.svg"));
        let bytes = plot_ensemble(&ensemble, &compiled, &params)
            .and_then(|svg| crate::driver::plot::figure_bytes(path, svg))
            .map_err(|e| Failure::Internal(format!("cannot draw --plot: {e}")))?;
        f.writer()
            .write_all(&bytes)
            .map_err(|e| Failure::Internal(format!("cannot write --plot: {e}")))?;
        f.commit()?;
    }
    if let Some(f) = out_file {
        f.commit()?;
    }
    if let Some(f) = stats_file {
        f.commit()?;
    }
    if args.out.is_none() && args.stats.is_none() && args.plot.is_none() {
        let stdout = std::io::stdout();
        let mut lock = std::io::BufWriter::new(stdout.lock());
        if let Err(e) = write_trajectories(&mut lock, &ensemble, &compiled, &params) {
            if let Some(f) = csv_failure(e) {
                return Err(f);
            }
            return Ok(());
        }
        lock.flush().or_else(stdout_error)?;
    }
    Ok(())
}

/// Figures are SVG or PNG: refuse other extensions before any work is done.
pub fn check_plot_path(p: &std::path::Path) -> Result<(), Failure> {
    match p.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("svg") || e.eq_ignore_ascii_case("png") => Ok(()),
        _ => Err(Failure::input(
            format!(
                "cannot draw `{}`: figures are written as SVG or PNG",
                p.display()
            ),
            "give a file name ending in .svg or .png, for example --plot figure.svg",
        )),
    }
}

/// Species and observables of every trajectory, drawn with the fitting figures' code.
fn plot_ensemble(
    ensemble: &Ensemble,
    compiled: &CompiledModel,
    params: &[f64],
) -> Result<String, Box<dyn std::error::Error>> {
    let model = &compiled.model;
    let (ns, no) = (model.species.len(), model.observables.len());
    let names: Vec<String> = model
        .species
        .iter()
        .map(|s| s.name.clone())
        .chain(model.observables.iter().map(|o| o.name.clone()))
        .collect();
    let nt = ensemble.times.len();
    let mut values = vec![vec![vec![0.0; nt]; ensemble.trajectories]; ns + no];
    let mut obs = vec![0.0; no];
    for n in 0..ensemble.trajectories {
        for (k, &t) in ensemble.times.iter().enumerate() {
            let x = ensemble.state(n, k);
            for i in 0..ns {
                values[i][n][k] = x[i] as f64;
            }
            if no > 0 {
                compiled.observables(x, params, t, &mut obs);
                for j in 0..no {
                    values[ns + j][n][k] = obs[j];
                }
            }
        }
    }
    crate::driver::plot::trajectories_svg(&names, &ensemble.times, &values, ns)
}
