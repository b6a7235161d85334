//! `popcosmos-cli models …`: list, inspect, fetch and verify model weights (docs/models.md).

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use popcosmos_models::{
    BUILTIN, HubConfig, LoadedModel, Location, WeightRef, builtin, hub, inspect_safetensors, load,
    load_location,
};

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Bundled models and the models in the Hugging Face cache.
    List,
    /// Show a model card (NAME of a bundled model, or any weight reference) and verify the file.
    Info { name: String },
    /// Download a `hf://ORG/REPO[@REVISION]/FILE` reference and its card into the cache.
    Fetch {
        reference: String,
        /// Download again even when the cache has it (repairs a corrupted cache entry).
        #[arg(long)]
        refresh: bool,
    },
    /// Check size, sha256 and safetensors structure of the given references (default: every
    /// bundled and cached model).
    Verify { references: Vec<String> },
}

pub fn run(cmd: ModelsCommand) -> Result<()> {
    // The only place the HF_* variables are read: libraries get the config passed in.
    let cfg = HubConfig::from_env();
    match cmd {
        ModelsCommand::List => list(&cfg),
        ModelsCommand::Info { name } => info(&name, &cfg),
        ModelsCommand::Fetch { reference, refresh } => fetch(&reference, refresh, cfg),
        ModelsCommand::Verify { references } => verify(&references, &cfg),
    }
}

/// A bare bundled name (`photulator_cosmos26`) is accepted where a reference is expected.
fn parse_ref(text: &str) -> Result<WeightRef> {
    let r: WeightRef = text.parse()?;
    if let WeightRef::Path(p) = &r
        && !p.exists()
        && builtin(text).is_ok()
    {
        return Ok(WeightRef::Builtin(text.to_string()));
    }
    Ok(r)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn list(cfg: &HubConfig) -> Result<()> {
    println!("bundled (builtin:NAME):");
    for m in BUILTIN {
        let card = popcosmos_models::ModelCard::from_bytes(m.card_text.as_bytes(), m.card_file)?;
        println!(
            "  builtin:{:<24} {:<15} {:>3} bands  {:>9}  {}",
            m.name,
            card.architecture.kind,
            card.bands.len(),
            mib(card.size_bytes),
            card.license
        );
    }
    let cached = hub::list_cached(cfg);
    println!(
        "Hugging Face cache {}{}:",
        cfg.cache_dir.display(),
        if cfg.offline { " (offline)" } else { "" }
    );
    if cached.is_empty() {
        println!("  (none; `popcosmos-cli models fetch hf://ORG/REPO/FILE` adds one)");
    }
    for (r, card_path) in cached {
        match popcosmos_models::ModelCard::from_path(&card_path) {
            Ok(card) => println!(
                "  {r}  {}  {} bands  {}",
                card.architecture.kind,
                card.bands.len(),
                mib(card.size_bytes)
            ),
            Err(e) => println!("  {r}  (unreadable card: {e})"),
        }
    }
    Ok(())
}

fn describe(m: &LoadedModel) {
    let c = &m.card;
    println!("name:         {}", c.name);
    println!("description:  {}", c.description);
    match &m.location {
        Location::Builtin { name } => println!("location:     bundled (builtin:{name})"),
        Location::Files { card, weights } => {
            println!("weights:      {}", weights.display());
            println!("card:         {}", card.display());
        }
    }
    println!(
        "architecture: {} {:?}",
        c.architecture.kind, c.architecture.layers
    );
    println!("activation:   {}", c.architecture.activation);
    println!("parameters ({}):", c.parameters.len());
    for p in &c.parameters {
        let bound = |b: Option<f64>| b.map_or("—".to_string(), |v| format!("{v}"));
        println!(
            "  {:<16} [{:>8}, {:>8}]  {}",
            p.name,
            bound(p.min),
            bound(p.max),
            p.unit
        );
    }
    if !c.bands.is_empty() {
        println!("bands ({}):   {}", c.bands.len(), c.bands.join(", "));
    }
    println!("input:        {}", c.units.input);
    println!("output:       {}", c.units.output);
    println!(
        "provenance:   {}{}",
        c.provenance.source,
        c.provenance
            .commit
            .as_deref()
            .map(|s| format!(" @ {s}"))
            .unwrap_or_default()
    );
    println!("license:      {}", c.license);
    println!("size:         {} bytes", c.size_bytes);
    println!("sha256:       {} (verified)", c.sha256);
}

fn info(name: &str, cfg: &HubConfig) -> Result<()> {
    let r = parse_ref(name)?;
    let m = load(&r, cfg)?;
    describe(&m);
    let s = inspect_safetensors(&m.bytes, &m.source)?;
    println!(
        "tensors:      {} ({} values, {})",
        s.tensors,
        s.values,
        s.dtypes.into_iter().collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

fn fetch(reference: &str, refresh: bool, mut cfg: HubConfig) -> Result<()> {
    let WeightRef::Hub(h) = parse_ref(reference)? else {
        bail!("`models fetch` takes a hf://ORG/REPO[@REVISION]/FILE reference, got '{reference}'");
    };
    cfg.progress = true;
    let cached = hub::resolve(&h, &cfg, refresh)?;
    // Verify now so a corrupted cache entry is reported by `fetch`, not by a later run.
    let m = load_location(Location::Files {
        card: cached.card.clone(),
        weights: cached.weights.clone(),
    })
    .with_context(|| {
        format!("{reference}: run `popcosmos-cli models fetch --refresh {reference}`")
    })?;
    println!("{}", cached.weights.display());
    eprintln!(
        "{h}: commit {}, {} bytes, sha256 {} verified",
        cached.commit,
        m.bytes.len(),
        m.card.sha256
    );
    Ok(())
}

fn verify(references: &[String], cfg: &HubConfig) -> Result<()> {
    let mut targets: Vec<WeightRef> = Vec::new();
    if references.is_empty() {
        targets.extend(BUILTIN.iter().map(|m| WeightRef::Builtin(m.name.into())));
        targets.extend(
            hub::list_cached(cfg)
                .into_iter()
                .map(|(r, _)| WeightRef::Hub(r)),
        );
    } else {
        for r in references {
            targets.push(parse_ref(r)?);
        }
    }
    // Verification never downloads: it checks what is here.
    let cfg = HubConfig {
        offline: true,
        ..cfg.clone()
    };
    let mut failed = 0;
    for r in &targets {
        let result = load(r, &cfg).and_then(|m| {
            inspect_safetensors(&m.bytes, &m.source)?;
            Ok(m)
        });
        match result {
            Ok(m) => println!("ok      {r}  sha256 {}", m.card.sha256),
            Err(e) => {
                failed += 1;
                println!("FAILED  {r}: {e}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} models failed verification", targets.len());
    }
    Ok(())
}
