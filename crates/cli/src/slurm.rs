//! `popcosmos-cli slurm`: an sbatch job-array script whose task I runs shard I of N with
//! `--resume` (so a preempted, failed or requeued task continues where it stopped), and the
//! throughput planner behind `slurm --plan` (docs/scale-out.md).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use popcosmos_inference::Manifest;

/// Slurm's default `MaxArraySize` (array indices 0 … 1000).
pub const DEFAULT_MAX_ARRAY_SIZE: u64 = 1001;

/// Galaxies per task-hour measured end to end on 2 CPU cores (docs/benchmarks.md: the demo,
/// 100 galaxies in 76 s at 64 walkers × 200 steps). GPU rates are not measured yet.
pub const CPU_RATE_PER_TASK_HOUR: f64 = 100.0 / 76.0 * 3600.0;

#[derive(clap::Args, Debug)]
pub struct SlurmArgs {
    /// The run's manifest (not needed with --plan).
    #[arg(required_unless_present = "plan")]
    pub manifest: Option<PathBuf>,
    /// Number of shards N = array tasks (task I runs `--shard I/N`).
    #[arg(long, required_unless_present = "plan")]
    pub array: Option<u64>,
    /// Only submit shards A-B (inclusive) of the N, e.g. to stay under MaxArraySize.
    #[arg(long, value_name = "A-B")]
    pub shards: Option<String>,
    /// GPUs per task (default: 1 when the manifest's device is CUDA, else 0).
    #[arg(long)]
    pub gpus_per_task: Option<u32>,
    /// CPU cores per task (also the task's RAYON_NUM_THREADS).
    #[arg(long, default_value_t = 2)]
    pub cpus_per_task: u32,
    /// Wall-time limit per task, [D-]HH:MM:SS.
    #[arg(long, default_value = "24:00:00")]
    pub time: String,
    #[arg(long)]
    pub partition: Option<String>,
    #[arg(long)]
    pub account: Option<String>,
    /// Memory per task (sbatch --mem, e.g. 16G).
    #[arg(long)]
    pub mem: Option<String>,
    /// Run at most this many tasks at once (the array's %K).
    #[arg(long)]
    pub max_concurrent: Option<u64>,
    /// Where to write the script (default: <output.dir>/slurm/popcosmos-array.sbatch).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Submit the script with `sbatch` and print the job id.
    #[arg(long)]
    pub submit: bool,
    /// Print a throughput plan for this many galaxies instead of writing a script.
    #[arg(long, value_name = "GALAXIES")]
    pub plan: Option<f64>,
    /// Measured galaxies per task-hour for --plan (default: the 2-core CPU demo rate).
    #[arg(long, default_value_t = CPU_RATE_PER_TASK_HOUR)]
    pub rate: f64,
    /// Tasks that can run at once for --plan (GPUs or nodes you get).
    #[arg(long, default_value_t = 1000)]
    pub concurrent: u64,
    /// galaxies_per_batch for --plan (shard sizes are whole batches).
    #[arg(long, default_value_t = 100)]
    pub batch: u64,
}

/// Everything the script depends on, resolved to absolute paths.
#[derive(Debug, Clone)]
pub struct ArrayJob {
    pub binary: PathBuf,
    pub manifest: PathBuf,
    pub shards: u64,
    pub first: u64,
    pub last: u64,
    pub gpus_per_task: u32,
    pub cpus_per_task: u32,
    pub time: String,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub mem: Option<String>,
    pub max_concurrent: Option<u64>,
    pub log_dir: PathBuf,
    pub job_name: String,
}

/// `[D-]HH:MM:SS` → seconds.
pub fn parse_time(s: &str) -> Result<u64> {
    let (days, hms) = match s.split_once('-') {
        Some((d, rest)) => (d.parse::<u64>().ok(), rest),
        None => (Some(0), s),
    };
    let parts: Vec<Option<u64>> = hms.split(':').map(|p| p.parse().ok()).collect();
    match (days, parts.as_slice()) {
        (Some(d), [Some(h), Some(m), Some(sec)]) if *m < 60 && *sec < 60 => {
            Ok(((d * 24 + h) * 60 + m) * 60 + sec)
        }
        _ => bail!("--time {s}: expected [D-]HH:MM:SS, e.g. 24:00:00 or 2-00:00:00"),
    }
}

/// Quote for a POSIX shell (single quotes, `'` → `'\''`).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl ArrayJob {
    /// The sbatch script. Why each choice:
    /// * `--requeue` + `--resume`: a preempted or failed task that Slurm (or `scontrol
    ///   requeue`) restarts skips the batches whose parts are on disk; parts are atomic, so
    ///   at most the batch in flight is recomputed, with the same seed.
    /// * `--open-mode=append`: a restarted task adds to its log instead of truncating it.
    /// * `exec`: signals from Slurm reach popcosmos-cli directly.
    pub fn script(&self) -> String {
        let mut s = String::new();
        let n = self.shards;
        let _ = writeln!(s, "#!/bin/bash");
        let _ = writeln!(
            s,
            "# Written by popcosmos-cli {} `slurm`: shards {}-{} of {n} of {}.",
            env!("CARGO_PKG_VERSION"),
            self.first,
            self.last,
            self.manifest.display()
        );
        let _ = writeln!(
            s,
            "# Task I runs `run --shard I/{n} --resume`: idempotent, safe to requeue or resubmit."
        );
        let _ = writeln!(
            s,
            "# When all {n} shards are done: popcosmos-cli merge <output.dir>"
        );
        let mut opt = |k: &str, v: &str| {
            let _ = writeln!(s, "#SBATCH --{k}={v}");
        };
        opt("job-name", &self.job_name);
        let mut array = format!("0-{}", self.last - self.first);
        if let Some(k) = self.max_concurrent {
            array += &format!("%{k}");
        }
        opt("array", &array);
        opt("ntasks", "1");
        opt("cpus-per-task", &self.cpus_per_task.to_string());
        if self.gpus_per_task > 0 {
            opt("gpus-per-task", &self.gpus_per_task.to_string());
        }
        opt("time", &self.time);
        if let Some(p) = &self.partition {
            opt("partition", p);
        }
        if let Some(a) = &self.account {
            opt("account", a);
        }
        if let Some(m) = &self.mem {
            opt("mem", m);
        }
        opt("open-mode", "append");
        opt(
            "output",
            &self.log_dir.join("%A_%a.log").display().to_string(),
        );
        let _ = writeln!(s, "#SBATCH --requeue");
        let _ = writeln!(s, "set -euo pipefail");
        let _ = writeln!(s, "shard=$(( SLURM_ARRAY_TASK_ID + {} ))", self.first);
        let _ = writeln!(
            s,
            "export RAYON_NUM_THREADS=\"${{SLURM_CPUS_PER_TASK:-{}}}\"",
            self.cpus_per_task
        );
        let _ = writeln!(
            s,
            "echo \"popcosmos shard ${{shard}}/{n}: job ${{SLURM_ARRAY_JOB_ID:-?}}_${{SLURM_ARRAY_TASK_ID}}, restart ${{SLURM_RESTART_COUNT:-0}}, $(hostname), $(date -u +%FT%TZ)\""
        );
        let _ = writeln!(
            s,
            "exec {} run {} --shard \"${{shard}}/{n}\" --resume",
            sh_quote(&self.binary.display().to_string()),
            sh_quote(&self.manifest.display().to_string())
        );
        s
    }
}

fn parse_range(s: &str, n: u64) -> Result<(u64, u64)> {
    let bad = || anyhow::anyhow!("--shards {s}: expected A-B with 0 ≤ A ≤ B < {n}");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > b || b >= n {
        return Err(bad());
    }
    Ok((a, b))
}

pub fn run(args: &SlurmArgs) -> Result<()> {
    if let Some(g) = args.plan {
        let p = plan(
            g,
            args.rate,
            parse_time(&args.time)? as f64 / 3600.0,
            args.batch,
            args.concurrent,
        )?;
        println!("{p}");
        return Ok(());
    }
    let manifest_path = args
        .manifest
        .as_ref()
        .expect("clap: required without --plan");
    let manifest_path = manifest_path
        .canonicalize()
        .with_context(|| format!("manifest {}", manifest_path.display()))?;
    let m = Manifest::load(&manifest_path)?;
    let n = args.array.expect("clap: required without --plan");
    if n == 0 {
        bail!("--array must be at least 1");
    }
    let (first, last) = match &args.shards {
        Some(r) => parse_range(r, n)?,
        None => (0, n - 1),
    };
    parse_time(&args.time)?;
    let cuda = m.device.to_ascii_lowercase().starts_with("cuda");
    let gpus = args.gpus_per_task.unwrap_or(u32::from(cuda));
    if gpus > 0 && !cuda {
        eprintln!(
            "warning: --gpus-per-task {gpus} but the manifest's device is '{}'; tasks will not use the GPU",
            m.device
        );
    }
    let out_dir = std::path::absolute(&m.output.dir)?;
    let log_dir = out_dir.join("slurm");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let job = ArrayJob {
        binary: std::env::current_exe()?,
        manifest: manifest_path.clone(),
        shards: n,
        first,
        last,
        gpus_per_task: gpus,
        cpus_per_task: args.cpus_per_task,
        time: args.time.clone(),
        partition: args.partition.clone(),
        account: args.account.clone(),
        mem: args.mem.clone(),
        max_concurrent: args.max_concurrent,
        log_dir: log_dir.clone(),
        job_name: format!(
            "popcosmos-{}",
            manifest_path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default()
        ),
    };
    let script_path = args
        .output
        .clone()
        .unwrap_or_else(|| log_dir.join("popcosmos-array.sbatch"));
    write_script(&script_path, &job.script())?;
    eprintln!(
        "wrote {} ({} task(s): shards {first}-{last} of {n}; logs in {})",
        script_path.display(),
        last - first + 1,
        log_dir.display()
    );
    if args.submit {
        let out = std::process::Command::new("sbatch")
            .arg("--parsable")
            .arg(&script_path)
            .output()
            .context("running sbatch (is Slurm installed and on PATH?)")?;
        if !out.status.success() {
            bail!(
                "sbatch {} failed: {}",
                script_path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // --parsable prints `jobid` or `jobid;cluster`.
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() {
            bail!("sbatch printed no job id");
        }
        println!("{id}");
    }
    Ok(())
}

fn write_script(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// A throughput plan for `galaxies` at `rate` galaxies per task-hour.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub galaxies: f64,
    pub rate_per_task_hour: f64,
    /// Galaxies per shard (whole batches).
    pub shard_size: u64,
    /// Shards = array tasks.
    pub tasks: u64,
    /// Wall time of one task, hours.
    pub task_hours: f64,
    /// Task-hours (GPU-hours on GPUs) of the whole catalogue.
    pub total_task_hours: f64,
    /// Tasks running at once.
    pub concurrent: u64,
    /// Wall time of the campaign when `concurrent` tasks run at once, hours.
    pub wall_hours: f64,
    /// Arrays of at most [`DEFAULT_MAX_ARRAY_SIZE`] tasks needed (`--shards A-B` each).
    pub arrays: u64,
}

/// Fill a task's time limit to 80 %: room for the init library, catalogue streaming and
/// slower nodes, so a task finishes inside its limit instead of relying on a requeue.
pub const TIME_FILL: f64 = 0.8;

/// Shard size and wall time for `galaxies` at `rate` galaxies per task-hour with a per-task
/// limit of `limit_hours`, batches of `batch`, and `concurrent` tasks at once.
pub fn plan(
    galaxies: f64,
    rate: f64,
    limit_hours: f64,
    batch: u64,
    concurrent: u64,
) -> Result<Plan> {
    if !(galaxies >= 1.0 && rate > 0.0 && limit_hours > 0.0 && batch > 0 && concurrent > 0) {
        bail!("plan needs galaxies ≥ 1, rate > 0, a time limit > 0, batch > 0, concurrent > 0");
    }
    let g = galaxies.round() as u64;
    let max_shard = ((rate * limit_hours * TIME_FILL / batch as f64).floor() as u64).max(1) * batch;
    let tasks = g.div_ceil(max_shard);
    // Balance: the same number of whole batches per task (± 1).
    let shard_size = g.div_ceil(batch).div_ceil(tasks) * batch;
    let task_hours = shard_size.min(g) as f64 / rate;
    let waves = tasks.div_ceil(concurrent);
    Ok(Plan {
        galaxies,
        rate_per_task_hour: rate,
        shard_size,
        tasks,
        task_hours,
        total_task_hours: g as f64 / rate,
        concurrent,
        wall_hours: waves as f64 * task_hours,
        arrays: tasks.div_ceil(DEFAULT_MAX_ARRAY_SIZE - 1),
    })
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:.3e} galaxies at {:.0} galaxies per task-hour:",
            self.galaxies, self.rate_per_task_hour
        )?;
        writeln!(
            f,
            "  shards (array tasks): {} of {} galaxies, {:.1} h each",
            self.tasks, self.shard_size, self.task_hours
        )?;
        writeln!(f, "  total: {:.0} task-hours", self.total_task_hours)?;
        writeln!(
            f,
            "  wall time with {} tasks at once: {:.1} h ({:.1} days)",
            self.concurrent.min(self.tasks),
            self.wall_hours,
            self.wall_hours / 24.0
        )?;
        write!(
            f,
            "  arrays: {} (Slurm's default MaxArraySize {}; use --shards A-B per array)",
            self.arrays, DEFAULT_MAX_ARRAY_SIZE
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> ArrayJob {
        ArrayJob {
            binary: "/opt/bin/popcosmos-cli".into(),
            manifest: "/data/it's/m.yaml".into(),
            shards: 4,
            first: 0,
            last: 3,
            gpus_per_task: 1,
            cpus_per_task: 8,
            time: "12:00:00".into(),
            partition: Some("gpu".into()),
            account: None,
            mem: None,
            max_concurrent: Some(2),
            log_dir: "/data/out/slurm".into(),
            job_name: "popcosmos-m".into(),
        }
    }

    #[test]
    fn script_runs_each_shard_with_resume_and_requeue() {
        let s = job().script();
        for line in [
            "#SBATCH --array=0-3%2",
            "#SBATCH --gpus-per-task=1",
            "#SBATCH --cpus-per-task=8",
            "#SBATCH --time=12:00:00",
            "#SBATCH --partition=gpu",
            "#SBATCH --requeue",
            "#SBATCH --open-mode=append",
            "#SBATCH --output=/data/out/slurm/%A_%a.log",
            "shard=$(( SLURM_ARRAY_TASK_ID + 0 ))",
            r#"exec '/opt/bin/popcosmos-cli' run '/data/it'\''s/m.yaml' --shard "${shard}/4" --resume"#,
        ] {
            assert!(s.lines().any(|l| l == line), "missing `{line}` in\n{s}");
        }
        assert!(s.starts_with("#!/bin/bash\n"));
        // sbatch stops reading #SBATCH lines at the first command.
        let first_cmd = s.lines().position(|l| !l.starts_with('#')).unwrap();
        assert!(s.lines().skip(first_cmd).all(|l| !l.starts_with("#SBATCH")));
        // A CPU job asks for no GPUs; a sub-range offsets the task id.
        let mut cpu = job();
        (cpu.gpus_per_task, cpu.first, cpu.last, cpu.max_concurrent) = (0, 1000, 1999, None);
        let s = cpu.script();
        assert!(!s.contains("gpus"));
        assert!(s.contains("#SBATCH --array=0-999\n"));
        assert!(s.contains("shard=$(( SLURM_ARRAY_TASK_ID + 1000 ))"));
    }

    #[test]
    fn script_passes_bash_syntax_check() {
        let Ok(o) = std::process::Command::new("bash")
            .args(["-n", "-c", &job().script()])
            .output()
        else {
            return; // no bash on this machine
        };
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("24:00:00").unwrap(), 86_400);
        assert_eq!(parse_time("2-01:30:05").unwrap(), 2 * 86_400 + 5405);
        for bad in ["24:00", "1:60:00", "x", "1-2-03:00:00"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_range("3-7", 8).unwrap(), (3, 7));
        assert!(parse_range("3-8", 8).is_err() && parse_range("5-4", 8).is_err());
    }

    #[test]
    fn plan_fills_tasks_and_covers_every_galaxy() {
        // 1M galaxies at 4737/h with 24 h tasks: ≤ 0.8·24·4737 → 90 900 per shard → 12 tasks.
        let p = plan(1e6, CPU_RATE_PER_TASK_HOUR, 24.0, 100, 1000).unwrap();
        assert_eq!(p.tasks, 12);
        assert_eq!(p.shard_size % 100, 0);
        assert!(p.shard_size * p.tasks >= 1_000_000);
        assert!((p.shard_size - 100) * p.tasks < 1_000_000, "balanced");
        assert!(p.task_hours <= 24.0 * TIME_FILL);
        assert!((p.total_task_hours - 1e6 / CPU_RATE_PER_TASK_HOUR).abs() < 1e-6);
        assert_eq!(p.wall_hours, p.task_hours, "one wave");
        assert_eq!(p.arrays, 1);
        // 20B galaxies: many waves and arrays; wall = waves × task time.
        let p = plan(2e10, 1e5, 24.0, 1000, 1000).unwrap();
        assert_eq!(p.tasks, (2e10 as u64).div_ceil(p.shard_size));
        assert_eq!(p.arrays, p.tasks.div_ceil(1000));
        assert!((p.wall_hours - p.tasks.div_ceil(1000) as f64 * p.task_hours).abs() < 1e-9);
        // Tiny catalogues: one task holding everything.
        let p = plan(10.0, 100.0, 1.0, 100, 4).unwrap();
        assert_eq!((p.tasks, p.shard_size), (1, 100));
        assert!((p.task_hours - 0.1).abs() < 1e-12);
        assert!(plan(0.0, 1.0, 1.0, 1, 1).is_err());
    }
}
