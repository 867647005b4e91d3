//! The command line: a thin layer over the library. See `docs/cli.md`.
//!
//! Exit status: 0 success; 1 the user's input was wrong (a diagnostic was printed); 2 anything
//! else. A panic is caught and reported as an internal error with status 2.

mod grad;
mod output;
pub use output::note_stdout_closed;
mod run;
mod simulate;

use crate::diagnostics::{Diagnostic, ModelError, Style};
use crate::{LoadError, Model};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;

/// rxnc: compile stochastic reaction network models and simulate them exactly.
#[derive(Debug, Parser)]
#[command(name = "rxnc", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Each subcommand's arguments are built only when it is the one run (a tenth of a millisecond
// of start-up for all four).
#[derive(Debug, Subcommand)]
#[command(defer = true)]
enum Command {
    /// Parse and check a model; print its species, parameters and reactions.
    Check(CheckArgs),
    /// Exact stochastic simulation (Gillespie's direct method) of N trajectories.
    Simulate(simulate::SimulateArgs),
    /// Estimate an objective over exact trajectories and its gradient with respect to every free parameter.
    Grad(grad::GradArgs),
    /// Fit the free parameters to data (a CSV of observed counts); print the fitted values.
    Run(run::RunArgs),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The model file.
    file: PathBuf,
    /// What to print: a readable summary, the IR, or the generated Cranelift IR.
    #[arg(long, value_enum, default_value_t = Emit::Summary)]
    emit: Emit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Emit {
    /// Species, parameters, reactions with their generated names and stoichiometry.
    Summary,
    /// The lowered IR: indices, propensities, dependency graph.
    Ir,
    /// The Cranelift IR of the generated kernels.
    Clif,
}

/// A failure of a command, classified by exit status.
#[derive(Debug)]
pub enum Failure {
    /// The user's input was wrong: exit 1. The string is the rendered diagnostic.
    Input(String),
    /// Anything else: exit 2.
    Internal(String),
    /// Writing an output failed (a full disk, a vanished directory): exit 2, not reported as a
    /// fault of rxnc.
    Output(String),
}

impl Failure {
    /// A plain input error with a help line.
    pub fn input(message: impl std::fmt::Display, help: impl std::fmt::Display) -> Failure {
        Failure::Input(format!("error: {message}\n  help: {help}\n"))
    }
}

/// The estimator named `name` on the command line, with gs-st's `--temperature` (default 1) and
/// fd's `--sigma` (default 0.05); either given with another estimator is an error rather than
/// silently ignored.
fn estimator(
    name: &str,
    temperature: Option<f64>,
    sigma: Option<f64>,
) -> Result<crate::estimators::Estimator, Failure> {
    use crate::estimators::Estimator;
    let estimator = match name {
        "gs-st" => Estimator::GsSt {
            temperature: temperature.unwrap_or(1.0),
        },
        "score" => Estimator::Score,
        "alt-path" => Estimator::AltPath,
        "fd" => Estimator::Fd {
            sigma: sigma.unwrap_or(0.05),
        },
        other => {
            return Err(Failure::input(
                format!("unknown estimator `{other}`"),
                format!("choose one of {}", Estimator::NAMES.join(", ")),
            ));
        }
    };
    if temperature.is_some() && !matches!(estimator, Estimator::GsSt { .. }) {
        return Err(Failure::input(
            format!("--temperature applies to gs-st, not to {name}"),
            "remove --temperature, or choose --estimator gs-st",
        ));
    }
    if sigma.is_some() && !matches!(estimator, Estimator::Fd { .. }) {
        return Err(Failure::input(
            format!("--sigma applies to fd, not to {name}"),
            "remove --sigma, or choose --estimator fd",
        ));
    }
    Ok(estimator)
}

impl From<LoadError> for Failure {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Io { path, source } => match not_utf8(&path) {
                Some((line, col, byte)) => Failure::input(
                    format!(
                        "`{path}` is not UTF-8 text: line {line}, column {col} has the byte 0x{byte:02X}"
                    ),
                    "model files are UTF-8; save it again with UTF-8 encoding",
                ),
                None => Failure::input(
                    format!("cannot read model file `{path}`: {source}"),
                    "check the path; model files are UTF-8 text",
                ),
            },
            LoadError::Model(m) => Failure::Input(m.render(style())),
        }
    }
}

/// Where a file that failed to read as text stops being UTF-8: 1-based line, column (in
/// characters) and the offending byte.
pub(crate) fn not_utf8(path: &str) -> Option<(usize, usize, u8)> {
    let bytes = std::fs::read(path).ok()?;
    let err = std::str::from_utf8(&bytes).err()?;
    let good = std::str::from_utf8(&bytes[..err.valid_up_to()]).ok()?;
    let line = good.matches('\n').count() + 1;
    let col = good.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some((line, col, bytes[err.valid_up_to()]))
}

/// How to draw diagnostics on this process's standard error.
pub fn style() -> Style {
    if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        Style::Fancy
    } else {
        Style::Plain
    }
}

/// Renders a diagnostic about a model's text (for runtime errors that point at a reaction).
pub fn model_diagnostic(model: &Model, d: Diagnostic) -> Failure {
    Failure::Input(
        ModelError {
            source: model.source.clone(),
            diagnostics: vec![d],
        }
        .render(style()),
    )
}

/// A progress bar of `len` steps on standard error, drawn only on a terminal (so that logs and
/// scripts see only outputs and diagnostics).
pub fn progress_bar(len: u64, template: &str) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Applies `--threads K`: how many threads run the trajectories (results do not depend on it).
pub fn set_threads(threads: Option<usize>) -> Result<(), Failure> {
    if let Some(k) = threads {
        if k == 0 {
            return Err(Failure::input(
                "--threads must be at least 1",
                "leave it out to use the idle cores",
            ));
        }
        crate::engine::set_worker_threads(k);
    }
    Ok(())
}

/// Where the command line keeps compiled kernels (see [`crate::jit::set_code_cache`]):
/// `$RXNC_CACHE_DIR` (`off` or empty: no cache), else `$XDG_CACHE_HOME/rxnc`, else
/// `~/.cache/rxnc`.
fn code_cache_dir() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = std::env::var_os("RXNC_CACHE_DIR") {
        return (!dir.is_empty() && dir != "off").then(|| PathBuf::from(dir));
    }
    let absolute = |dir: PathBuf| dir.is_absolute().then_some(dir);
    match var("XDG_CACHE_HOME").map(PathBuf::from).and_then(absolute) {
        Some(cache) => Some(cache.join("rxnc")),
        None => var("HOME")
            .map(PathBuf::from)
            .and_then(absolute)
            .map(|home| home.join(".cache").join("rxnc")),
    }
}

/// Runs the command line and returns the exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    if let Err(Failure::Output(text)) = output::stdout_open() {
                        eprintln!("error: {text}");
                        return 2;
                    }
                    0
                }
                _ => 1,
            };
            let _ = e.print();
            return code;
        }
    };
    crate::jit::set_code_cache(code_cache_dir());
    let result = std::panic::catch_unwind(|| run(cli));
    match result {
        Ok(Ok(())) => 0,
        Ok(Err(Failure::Input(text))) => {
            eprint!("{text}");
            1
        }
        Ok(Err(Failure::Internal(text))) => {
            eprintln!("internal error: {text}");
            2
        }
        Ok(Err(Failure::Output(text))) => {
            eprintln!("error: {text}");
            2
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            eprintln!(
                "internal error: rxnc stopped unexpectedly ({what}); please report this with the model file"
            );
            2
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    // These always print to standard output: fail before the work, not after it.
    if !matches!(cli.command, Command::Simulate(_)) {
        output::stdout_open()?;
    }
    match cli.command {
        Command::Check(args) => check(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Grad(args) => grad::run(args),
        Command::Run(args) => run::run(args),
    }
}

fn check(args: CheckArgs) -> Result<(), Failure> {
    let model = Model::load(&args.file)?;
    let text = match args.emit {
        Emit::Summary => model.ir.summary(),
        Emit::Ir => model.ir.ir_dump(),
        Emit::Clif => crate::jit::CompiledModel::with_clif(&model.ir)
            .map_err(|e| simulate::compile_failure(&model, e))?
            .clif
            .clone()
            .unwrap_or_default(),
    };
    output::print_stdout(&text)
}
