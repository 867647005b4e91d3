//! `rxnc simulate`.

use super::output::{self, PendingFile, is_broken_pipe, write_failure};
use super::{Failure, model_diagnostic};
use crate::Model;
use crate::diagnostics::Diagnostic;
use crate::engine::{
    BatchError, Ensemble, EnsembleMoments, SimError, SimOptions, TrajectoryWriter,
};
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
        | SimError::PropensitySumOverflow { reaction, .. }
        | SimError::NegativeCount { reaction, .. }
        | SimError::NonFiniteDerivative { reaction, .. } => Some(reaction),
        _ => None,
    };
    match reaction.and_then(|name| model.ir.reactions.iter().find(|r| &r.name == name)) {
        Some(r) => {
            let (code, label) = match &e {
                SimError::InvalidPropensity { value, .. } => (
                    "rxn::runtime::propensity",
                    format!("this propensity is {}", num(*value)),
                ),
                SimError::PropensitySumOverflow { value, .. } => (
                    "rxn::runtime::propensity",
                    format!("the largest propensity, {}", num(*value)),
                ),
                SimError::NegativeCount { species, .. } => (
                    "rxn::runtime::negative_count",
                    format!("this propensity was not zero when `{species}` had run out"),
                ),
                SimError::NonFiniteDerivative { param, value, .. } => (
                    "rxn::runtime::derivative",
                    format!(
                        "its derivative with respect to `{param}` is {}",
                        num(*value)
                    ),
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
                    "gradients need these derivatives, and they grow with the rate's nesting (a tower of powers, a function of a function) and, for mass action, as the square of the number of molecules of one species a reaction takes (`250 A -> ...`): simplify the rate law; rxnc simulate does not need them",
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

/// `n` things, in the singular for one.
pub fn plural(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// A number for a message: plain when short, in scientific notation when very large or small.
pub fn num(x: f64) -> String {
    crate::engine::Shown(x).to_string()
}

/// A number in a table column: `decimals` decimals where that shows it, scientific notation for
/// very large or small values (a mean of 3.3e19 printed 20 digits), empty when undefined (the sd
/// of a single row).
pub fn cell(v: f64, decimals: usize) -> String {
    if v.is_nan() {
        String::new()
    } else if v == 0.0 || !v.is_finite() || (1e-3..1e7).contains(&v.abs()) {
        format!("{v:.decimals$}")
    } else {
        format!("{v:.decimals$e}")
    }
}

/// The memory `simulate` may use where the machine's cannot be read.
const MAX_MEMORY_BYTES: f64 = 64.0 * (1u64 << 30) as f64;

/// The lowest memory limit of this process's control group and its ancestors (Linux), if any:
/// cgroup v2's `memory.max` ("max" when unlimited), v1's `memory.limit_in_bytes`.
#[cfg(unix)]
fn cgroup_limit() -> Option<f64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_limit_under(&own, std::path::Path::new("/sys/fs/cgroup"))
}

/// [`cgroup_limit`] for the memberships `own` (as in `/proc/self/cgroup`) under the cgroup file
/// systems mounted at `mount`.
#[cfg(unix)]
fn cgroup_limit_under(own: &str, mount: &std::path::Path) -> Option<f64> {
    let mut lowest: Option<f64> = None;
    for line in own.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (root, file) = if controllers.is_empty() {
            (mount.to_path_buf(), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (mount.join("memory"), "memory.limit_in_bytes")
        } else {
            continue;
        };
        let mut dir = root.join(path.trim_start_matches('/'));
        while dir.starts_with(&root) {
            let limit = std::fs::read_to_string(dir.join(file));
            if let Some(limit) = limit.ok().and_then(|l| l.trim().parse::<f64>().ok()) {
                lowest = Some(lowest.map_or(limit, |l| l.min(limit)));
            }
            if !dir.pop() {
                break;
            }
        }
    }
    lowest
}

/// The memory this process may use, in bytes: the lowest of the machine's physical memory, its
/// address-space limit (`ulimit -v`, common on clusters) and its control group's limit.
fn available_memory() -> Option<f64> {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions; it returns -1 for what it does not know.
        let (pages, size) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let physical = (pages > 0 && size > 0).then_some(pages as f64 * size as f64);
        let mut space: libc::rlimit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        let space = (unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut space) } == 0
            && space.rlim_cur != libc::RLIM_INFINITY)
            .then_some(space.rlim_cur as f64);
        [physical, space, cgroup_limit()]
            .into_iter()
            .flatten()
            .reduce(f64::min)
    }
    #[cfg(not(unix))]
    None
}

pub fn run(args: SimulateArgs) -> Result<(), Failure> {
    let model = Model::load(&args.file)?;
    if !(args.t_end.is_finite() && args.t_end > 0.0) {
        return Err(Failure::input(
            format!("--t-end must be a positive time, not {}", num(args.t_end)),
            "for example --t-end 100",
        ));
    }
    let every = args.every.unwrap_or(args.t_end / 100.0);
    if args.every.is_none() && every <= 0.0 {
        return Err(Failure::input(
            format!(
                "--t-end {} is too small for the default sampling interval (a hundredth of it is 0)",
                num(args.t_end)
            ),
            "give a larger --t-end, or --every",
        ));
    }
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
    // The grid has floor(T / dt) + 1 times, one more if T is not a multiple of dt.
    if args.t_end / every > 1e8 - 1.0 {
        return Err(Failure::input(
            format!(
                "sampling every {} up to {} gives more than 10^8 sampling times",
                num(every),
                num(args.t_end)
            ),
            "choose a larger --every",
        ));
    }
    // Memory holds a batch of at least one trajectory's samples and its sampling times, the
    // statistics' accumulators (16 bytes per time and value) and what the figure draws, not the
    // ensemble: refuse what cannot fit rather than be killed.
    let times = (args.t_end / every).floor() + 2.0;
    let species = model.ir.species.len() as f64;
    let values = species + model.ir.observables.len() as f64;
    let mut bytes = times * (species + 1.0) * 8.0;
    if args.stats.is_some() || args.plot.is_some() {
        bytes += times * (8.0 + 16.0 * values);
    }
    let finals = args.trajectories as f64 * values * 8.0;
    if args.plot.is_some() {
        bytes += times * values * 8.0 * 10.0 + finals;
    }
    let memory = available_memory().unwrap_or(MAX_MEMORY_BYTES);
    if bytes > memory {
        let (what, help) = if args.plot.is_some() && finals > memory / 2.0 {
            (
                format!("the figure of {} trajectories", args.trajectories),
                "the figure keeps every trajectory's last values: use fewer trajectories (-n) or leave out --plot",
            )
        } else {
            (
                format!(
                    "a trajectory sampled every {} up to {}",
                    num(every),
                    num(args.t_end)
                ),
                "trajectories are written as they finish, but each keeps its samples until then: choose a larger sampling interval (--every)",
            )
        };
        return Err(Failure::input(
            format!(
                "{what} would need about {:.1} GB of memory, more than the {:.1} GB there is",
                bytes / 1e9,
                memory / 1e9
            ),
            help,
        ));
    }
    if args.max_events == 0 {
        return Err(Failure::input(
            "--max-events must be at least 1",
            "leave it out for the default of 100000000 events per trajectory",
        ));
    }
    super::output::distinct_outputs(
        &[
            ("--out", args.out.as_deref()),
            ("--stats", args.stats.as_deref()),
            ("--plot", args.plot.as_deref()),
        ],
        &[("model file", &args.file)],
    )?;
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

    // The ensemble is simulated and written a batch of trajectories at a time, so that memory
    // holds one batch and the statistics' accumulators, not the ensemble.
    let times = options.grid();
    let batch = batch_size(times.len() * model.ir.species.len());
    let mut moments = (args.stats.is_some() || args.plot.is_some())
        .then(|| EnsembleMoments::new(&compiled, &times));
    drop(times);
    let to_stdout = args.out.is_none() && args.stats.is_none() && args.plot.is_none();
    // A pipe closed by its reader (`| head`, also through `--out /dev/stdout` or a named pipe)
    // takes no more; it is not an error. (A regular file never reports a closed pipe.)
    let rows_direct = to_stdout || out_file.as_ref().is_some_and(PendingFile::is_direct);
    if to_stdout {
        output::stdout_open()?;
    }
    let stdout = std::io::stdout();
    let mut rows = match (&mut out_file, to_stdout) {
        (Some(f), _) => Some(Box::new(f.writer()) as Box<dyn Write>),
        (None, true) => Some(Box::new(std::io::BufWriter::new(stdout.lock())) as Box<dyn Write>),
        (None, false) => None,
    }
    .map(|out| TrajectoryWriter::new(out, &compiled));
    if rows.is_some() {
        let ir = &model.ir;
        let names = (ir.species.iter().map(|s| ("species", &s.name)))
            .chain(ir.observables.iter().map(|o| ("observable", &o.name)));
        for (kind, name) in names.filter(|(_, n)| ["trajectory", "time"].contains(&n.as_str())) {
            eprintln!(
                "warning: {kind} `{name}` has the name of the trajectories CSV's own `{name}` \
                 column: the header holds `{name}` twice, which tools reading columns by name \
                 cannot tell apart; rename the {kind}"
            );
        }
    }
    let mut figure = args.plot.is_some().then(|| FigureSamples::new(&compiled));
    let mut rows_closed = false;
    let simulated = Ensemble::run_in_batches(
        &compiled,
        &params,
        &options,
        batch,
        &|| bar.inc(1),
        |first, ensemble| {
            if let Some(w) = rows.as_mut() {
                // Rows for a terminal would mix with the bar's redrawing unless it steps aside.
                match bar.suspend(|| w.write(first, ensemble, &compiled, &params)) {
                    // The rows' pipe was closed: the other outputs go on.
                    Err(e) if rows_direct && is_broken_pipe(&e) => {
                        rows = None;
                        rows_closed = true;
                        if moments.is_none() {
                            return Err(e);
                        }
                    }
                    written => written?,
                }
            }
            if let Some(m) = moments.as_mut() {
                m.add(ensemble, &compiled, &params);
            }
            if let Some(f) = figure.as_mut() {
                f.add(ensemble, &compiled, &params);
            }
            Ok::<(), std::io::Error>(())
        },
    );
    bar.finish_and_clear();
    let unwritten = match simulated {
        Ok(_) => rows.as_mut().and_then(|w| w.flush().err()),
        Err(BatchError::Simulation(e)) => return Err(sim_failure(&model, e)),
        Err(BatchError::Sink(e)) => Some(e),
    };
    match unwritten {
        Some(e) if rows_direct && is_broken_pipe(&e) => rows_closed = true,
        Some(e) => {
            let what = if to_stdout {
                "standard output"
            } else {
                "--out"
            };
            return Err(write_failure(e, what));
        }
        None => {}
    }
    if rows_closed && moments.is_none() {
        // The rows were all there was to write: a closed pipe ends the run quietly.
        return Ok(());
    }
    // Rows hold inf and NaN as written; say so (the statistics' warning below covers --stats).
    if let (Some(w), None) = (&rows, &moments) {
        let counts = w.non_finite_observables();
        for (o, seen) in counts.iter().enumerate() {
            if let Some((trajectory, t)) = seen.first {
                eprintln!(
                    "warning: observable `{}` is infinite or NaN in {} of the trajectories \
                     (the first: trajectory {trajectory}, t = {})",
                    model.ir.observables[o].name,
                    plural(seen.rows, "row"),
                    num(t)
                );
            }
        }
    }
    drop(rows);

    if let Some(m) = &moments {
        for (name, first, times) in m.non_finite_observables() {
            eprintln!(
                "warning: observable `{name}` is infinite or NaN in some trajectories at {times} of \
                 {} sampling times (the first t = {}): its mean there is inf, -inf or NaN, its sd NaN",
                m.times().len(),
                num(first)
            );
        }
    }
    let quiet = |f: &PendingFile, e: &std::io::Error| f.is_direct() && is_broken_pipe(e);
    if let (Some(f), Some(m)) = (stats_file.as_mut(), &moments) {
        match m.write_csv(f.writer()) {
            Err(e) if !quiet(f, &e) => return Err(write_failure(e, "--stats")),
            _ => {}
        }
    }
    if let (Some(mut f), Some(samples), Some(m)) = (plot_file, figure, &moments) {
        let path = args
            .plot
            .as_deref()
            .unwrap_or(std::path::Path::new("plot.svg"));
        let bytes = crate::driver::plot::trajectories_svg(&samples.figure(m))
            .and_then(|svg| crate::driver::plot::figure_bytes(path, svg))
            .map_err(|e| Failure::Internal(format!("cannot draw --plot: {e}")))?;
        match f.writer().write_all(&bytes) {
            Err(e) if !quiet(&f, &e) => {
                return Err(write_failure(e, "--plot"));
            }
            _ => f.commit()?,
        }
    }
    if let Some(f) = out_file.filter(|_| !rows_closed) {
        f.commit()?;
    }
    if let Some(f) = stats_file {
        f.commit()?;
    }
    Ok(())
}

/// The memory a batch of trajectories' samples may take; below it a whole ensemble is one batch.
const BATCH_BYTES: usize = 64 << 20;

/// Trajectories per batch when each keeps `cells` counts; at most 2^16, as each also costs about
/// 200 bytes of bookkeeping (4.2 M trajectories of two samples took 567 MB in one batch).
fn batch_size(cells: usize) -> usize {
    (BATCH_BYTES / (cells.max(1) * std::mem::size_of::<i64>())).clamp(1, 1 << 16)
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

/// What `--plot` needs beyond the moments, gathered batch by batch: the first trajectories'
/// paths and every trajectory's values at the last time.
struct FigureSamples {
    names: Vec<String>,
    ns: usize,
    /// `[series][path][time]`.
    paths: Vec<Vec<Vec<f64>>>,
    /// `[series][trajectory]`.
    finals: Vec<Vec<f64>>,
    obs: Vec<f64>,
}

impl FigureSamples {
    /// Sample paths drawn per series.
    const PATHS: usize = 10;

    fn new(compiled: &CompiledModel) -> Self {
        let model = &compiled.model;
        let names: Vec<String> = model
            .species
            .iter()
            .map(|s| s.name.clone())
            .chain(model.observables.iter().map(|o| o.name.clone()))
            .collect();
        FigureSamples {
            ns: model.species.len(),
            paths: vec![Vec::new(); names.len()],
            finals: vec![Vec::new(); names.len()],
            obs: vec![0.0; model.observables.len()],
            names,
        }
    }

    /// Species then observables of trajectory `n` at time index `k`, one per series.
    fn values(
        &mut self,
        ensemble: &Ensemble,
        n: usize,
        k: usize,
        compiled: &CompiledModel,
        params: &[f64],
    ) -> Vec<f64> {
        let x = ensemble.state(n, k);
        if !self.obs.is_empty() {
            compiled.observables(x, params, ensemble.times[k], &mut self.obs);
        }
        x.iter()
            .map(|&c| c as f64)
            .chain(self.obs.iter().copied())
            .collect()
    }

    fn add(&mut self, ensemble: &Ensemble, compiled: &CompiledModel, params: &[f64]) {
        let nt = ensemble.times.len();
        for n in 0..ensemble.trajectories {
            if self.paths.first().is_some_and(|p| p.len() < Self::PATHS) {
                let mut path = vec![Vec::with_capacity(nt); self.names.len()];
                for k in 0..nt {
                    let values = self.values(ensemble, n, k, compiled, params);
                    for (series, v) in path.iter_mut().zip(values) {
                        series.push(v);
                    }
                }
                for (series, p) in self.paths.iter_mut().zip(path) {
                    series.push(p);
                }
            }
            let values = self.values(ensemble, n, nt - 1, compiled, params);
            for (series, v) in self.finals.iter_mut().zip(values) {
                series.push(v);
            }
        }
    }

    fn figure(self, moments: &EnsembleMoments) -> crate::driver::plot::TrajectoryFigure {
        let nt = moments.times().len();
        let per_time = |f: &dyn Fn(usize, usize) -> f64| -> Vec<Vec<f64>> {
            (0..self.names.len())
                .map(|i| (0..nt).map(|k| f(k, i)).collect())
                .collect()
        };
        crate::driver::plot::TrajectoryFigure {
            mean: per_time(&|k, i| moments.mean(k, i)),
            sd: per_time(&|k, i| moments.sd(k, i).unwrap_or(0.0)),
            times: moments.times().to_vec(),
            trajectories: moments.trajectories(),
            in_histogram: self.ns,
            samples: self.paths,
            finals: self.finals,
            names: self.names,
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::cgroup_limit_under;

    /// The lowest limit on the way from the process's group to the root, in either version.
    #[test]
    fn cgroup_limits_are_read_up_the_hierarchy() {
        let mount = std::env::temp_dir().join(format!("rxnc-cgroup-{}", std::process::id()));
        let write = |dir: &str, file: &str, text: &str| {
            let dir = mount.join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(file), text).unwrap();
        };
        write("", "memory.max", "max\n");
        write("user.slice", "memory.max", "8000000000\n");
        write("user.slice/job", "memory.max", "max\n");
        write("memory", "memory.limit_in_bytes", "9223372036854771712\n");
        write("memory/batch", "memory.limit_in_bytes", "3000000000\n");
        write("memory/batch/task", "memory.limit_in_bytes", "5000000000\n");
        assert_eq!(
            cgroup_limit_under("0::/user.slice/job\n", &mount),
            Some(8e9)
        );
        assert_eq!(cgroup_limit_under("0::/\n", &mount), None);
        let v1 = "4:memory:/batch/task\n3:cpuset:/\n";
        assert_eq!(cgroup_limit_under(v1, &mount), Some(3e9));
        assert_eq!(cgroup_limit_under("1:cpu:/\n", &mount), None);
        std::fs::remove_dir_all(&mount).unwrap();
    }
}
