//! `popcosmos-cli plugins inspect PATH`: what a plugin library is and contains
//! (docs/plugins.md).

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use popcosmos_api::{Device, HostRng, Prior, Survey};
use popcosmos_plugin_host::{ABI_VERSION, Plugin, PluginInfo};

#[derive(Subcommand)]
pub enum PluginsCommand {
    /// Load a plugin library and print its kind, ABI version and contents (survey: bands,
    /// softening, calibration, filter curves; prior: name and a sampling self-check).
    Inspect {
        path: PathBuf,
        /// Configuration string handed to the plugin's `create` (as `plugin_config:` /
        /// `config:` in a manifest).
        #[arg(long, default_value = "")]
        config: String,
    },
}

pub fn run(cmd: PluginsCommand) -> Result<()> {
    match cmd {
        PluginsCommand::Inspect { path, config } => inspect(&path, &config),
    }
}

fn header(info: &PluginInfo) {
    println!("plugin   {}", info.path.display());
    println!("kind     {}", info.kind);
    println!(
        "abi      {} (this popcosmos: {ABI_VERSION})",
        info.abi_version
    );
    println!("package  {} {}", info.plugin_name, info.plugin_version);
}

fn inspect(path: &std::path::Path, config: &str) -> Result<()> {
    match popcosmos_plugin_host::load(path, config)? {
        Plugin::Survey(s) => {
            header(s.info());
            print_survey(&s);
        }
        Plugin::Prior(p) => {
            header(p.info());
            print_prior(&p)?;
        }
    }
    Ok(())
}

fn print_survey(s: &popcosmos_plugin_host::PluginSurvey) {
    let cal = s.calibration();
    println!("name     {}", s.name());
    println!("bands    {}", s.bands().len());
    println!(
        "  {:>3}  {:<16} {:<8} {:>14} {:>11} {:>11} {:>14}",
        "#", "name", "label", "softening_nmgy", "zero_point", "error_floor", "pivot_aa"
    );
    for (i, b) in s.bands().iter().enumerate() {
        let pivot = s
            .filters()
            .get(i)
            .map(|f| format!("{:.1}", f.pivot_wavelength_aa()))
            .unwrap_or_else(|| "-".into());
        println!(
            "  {i:>3}  {:<16} {:<8} {:>14} {:>11.6} {:>11} {:>14}",
            b.name, b.label, b.flux_softening_nmgy, cal.zero_points[i], cal.error_floors[i], pivot
        );
    }
    println!(
        "filters  {}",
        if s.filters().is_empty() {
            "none (the plugin gives no filter curves)".to_string()
        } else {
            format!("{} curves", s.filters().len())
        }
    );
    println!("emission lines  {}", s.emission_lines().len());
    for (l, v) in s.emission_lines().iter().enumerate() {
        let (a, g) = (v.offset, v.ln_scatter);
        println!("  {l:>3}  offset {a:>9.4}  ln scatter {g:>9.4}");
    }
}

fn print_prior(p: &popcosmos_plugin_host::PluginPrior) -> Result<()> {
    println!("name     {}", p.name());
    println!("params   {}", popcosmos_api::N_PARAMS);
    // Self-check: 1000 seeded draws must have finite log-densities under the prior.
    let n = 1000;
    let phi = p.sample(n, &mut HostRng::seed_from_u64(0), &Device::Cpu)?;
    let lp = p.log_prob(&phi)?.to_vec1::<f32>()?;
    let finite = lp.iter().filter(|v| v.is_finite()).count();
    let mean_lp = lp
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| v as f64)
        .sum::<f64>()
        / finite.max(1) as f64;
    println!("self-check  {n} draws (seed 0): {finite} with finite ln p, mean ln p {mean_lp:.3}");
    let rows = phi.to_vec2::<f32>()?;
    println!("  {:<16} {:>10} {:>10}", "φ", "mean", "std");
    for (k, name) in popcosmos_api::PARAM_NAMES.iter().enumerate() {
        let m = rows.iter().map(|r| r[k] as f64).sum::<f64>() / n as f64;
        let v = rows.iter().map(|r| (r[k] as f64 - m).powi(2)).sum::<f64>() / (n - 1) as f64;
        println!("  {name:<16} {m:>10.4} {:>10.4}", v.sqrt());
    }
    if finite < n {
        anyhow::bail!(
            "{}: {} of {n} of the plugin's own draws have a non-finite ln p",
            p.info().path.display(),
            n - finite
        );
    }
    Ok(())
}
