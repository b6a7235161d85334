//! `popcosmos._popcosmos`: the Rust side of the Python package. A binding layer only: every
//! computation is a call into the popcosmos crates, as in `popcosmos-cli`. The Python
//! package (`popcosmos/__init__.py`) turns tables into the named f64 columns these functions
//! take, and their results into pandas DataFrames and numpy arrays.
//!
//! Columns cross as native-endian f64 bytes: one memory copy each way (numpy's `tobytes`
//! in, `numpy.frombuffer` out), which the limited (abi3) C API allows without numpy's
//! headers.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Mutex;

use popcosmos_api::{Error, N_PARAMS, PARAM_NAMES};
use popcosmos_catalog::{BandColumns, CatalogueReader, FluxUnit, MemoryTable, ResultTable};
use popcosmos_inference::{Manifest, Pipeline as RustPipeline, Progress, RunOptions};
use popcosmos_models::{BUILTIN, HubConfig, Location, WeightRef, hub, load_location};
use pyo3::create_exception;
use pyo3::exceptions::{PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

create_exception!(
    _popcosmos,
    ManifestError,
    PyValueError,
    "A manifest key is missing, unknown or has a bad value; `key` names it."
);

/// The demo manifest and catalogue of `popcosmos-cli demo` (100 COSMOS2020 galaxies).
const DEMO_MANIFEST_YAML: &str = include_str!("../../examples/cosmos-demo.yaml");
const DEMO_CATALOGUE_CSV: &str = include_str!("../../examples/data/cosmos2020_demo.csv");
/// The demo manifest's `survey.calibration_file`.
const DEMO_CALIBRATION_YAML: &str =
    include_str!("../../examples/calibrations/cosmos2020_zgt2p5_specz.calibration.yaml");

// ------------------------------------------------------------------ errors

/// The field a serde parse error names as unknown or missing (`unknown field `wlakers``).
fn serde_field(message: &str) -> Option<String> {
    ["unknown field `", "missing field `"]
        .iter()
        .find_map(|marker| {
            let rest = &message[message.find(marker)? + marker.len()..];
            rest.find('`').map(|j| rest[..j].to_string())
        })
}

fn manifest_error(message: String, key: Option<String>) -> PyErr {
    Python::attach(|py| {
        let err = ManifestError::new_err(message);
        let _ = err.value(py).setattr("key", key);
        err
    })
}

/// A parse error of the manifest section `section`, keyed by the field it names, else the
/// section.
fn parse_error(section: &str, e: impl std::fmt::Display) -> PyErr {
    let message = e.to_string();
    let key = serde_field(&message).unwrap_or_else(|| section.to_string());
    manifest_error(format!("{section}: {message}"), Some(key))
}

fn io_error(path: String, source: &std::io::Error) -> PyErr {
    let message = format!("{path}: {source}");
    if source.kind() == std::io::ErrorKind::NotFound {
        PyFileNotFoundError::new_err(message)
    } else {
        PyOSError::new_err(message)
    }
}

/// A manifest problem (reading, parsing or building what it names); `key` is that of an
/// [`Error::Config`], or the field a YAML parse error names.
fn manifest_err(e: Error) -> PyErr {
    let message = e.to_string();
    match e {
        Error::Io { path, source } => io_error(path, &source),
        Error::Config { key, .. } => manifest_error(message, Some(key)),
        _ => {
            let key = serde_field(&message);
            manifest_error(message, key)
        }
    }
}

/// A problem with the data of a call (a catalogue value, a column, a shape).
fn input_err(e: Error) -> PyErr {
    match e {
        Error::Io { path, source } => io_error(path, &source),
        other => PyValueError::new_err(other.to_string()),
    }
}

fn catalog_err(e: popcosmos_catalog::CatalogError) -> PyErr {
    input_err(e.into())
}

// ------------------------------------------------------------------ columns

/// f64 values from native-endian bytes (numpy `tobytes` of a float64 array).
fn f64_column(name: &str, bytes: &[u8]) -> PyResult<Vec<f64>> {
    if !bytes.len().is_multiple_of(8) {
        return Err(PyValueError::new_err(format!(
            "column '{name}': {} bytes is not a whole number of float64 values",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|b| f64::from_ne_bytes(b.try_into().expect("8 bytes")))
        .collect())
}

fn f64_bytes<'py>(py: Python<'py>, values: &[f64]) -> Bound<'py, PyBytes> {
    let mut bytes = Vec::with_capacity(values.len() * 8);
    for v in values {
        bytes.extend_from_slice(&v.to_ne_bytes());
    }
    PyBytes::new(py, &bytes)
}

/// A results table as `{"ids": [...], "columns": [(name, bytes)], "ints": [(name, [..])],
/// "strings": [(name, [...])]}`, f64 columns in `order` (then any others).
fn table_to_py<'py>(
    py: Python<'py>,
    table: &ResultTable,
    order: &[String],
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("ids", &table.ids)?;
    let columns = PyList::empty(py);
    let mut names: Vec<&String> = order
        .iter()
        .filter(|c| table.columns.contains_key(*c))
        .collect();
    names.extend(table.columns.keys().filter(|k| !order.contains(k)));
    for name in names {
        columns.append((name, f64_bytes(py, &table.columns[name])))?;
    }
    out.set_item("columns", columns)?;
    let ints = PyList::empty(py);
    for (k, v) in &table.ints {
        ints.append((k, v))?;
    }
    out.set_item("ints", ints)?;
    let strings = PyList::empty(py);
    for (k, v) in &table.strings {
        strings.append((k, v))?;
    }
    out.set_item("strings", strings)?;
    Ok(out)
}

/// The long-format chains (rows grouped by galaxy, in catalogue order) as a
/// `[draws, galaxies, 16]` array of the physical parameters and `[draws, galaxies]` log_prob.
fn chains_array(chains: &ResultTable, ids: &[String]) -> PyResult<(usize, Vec<f64>, Vec<f64>)> {
    let g = ids.len();
    let rows = chains.ids.len();
    if g == 0 || !rows.is_multiple_of(g) {
        return Err(PyValueError::new_err(format!(
            "chains: {rows} rows do not split evenly over {g} galaxies"
        )));
    }
    let draws = rows / g;
    let mut theta = vec![0.0; draws * g * N_PARAMS];
    let mut log_prob = vec![0.0; draws * g];
    let lp = &chains.columns["log_prob"];
    for (p, name) in PARAM_NAMES.iter().enumerate() {
        let col = &chains.columns[*name];
        for gal in 0..g {
            for d in 0..draws {
                theta[(d * g + gal) * N_PARAMS + p] = col[gal * draws + d];
            }
        }
    }
    for gal in 0..g {
        if chains.ids[gal * draws] != ids[gal] {
            return Err(PyValueError::new_err(format!(
                "chains: galaxy {} is '{}', the summaries have '{}'",
                gal,
                chains.ids[gal * draws],
                ids[gal]
            )));
        }
        for d in 0..draws {
            log_prob[d * g + gal] = lp[gal * draws + d];
        }
    }
    Ok((draws, theta, log_prob))
}

// ------------------------------------------------------------------ pipeline

/// A manifest and everything built from it (survey, emulators, prior, likelihood).
#[pyclass(module = "popcosmos._popcosmos", frozen)]
struct Pipeline {
    /// Locked while a fit or run uses it (never while holding the GIL, so a second Python
    /// thread waits without blocking the first one's progress callback).
    inner: Mutex<RustPipeline>,
    /// The manifest as given (`fit` switches `output.chains` per call).
    manifest: Manifest,
    bands: Vec<String>,
    survey_name: String,
}

/// Apply the survey's column map, check and build: the steps of `popcosmos-cli run` after
/// reading the manifest.
fn build_pipeline(py: Python<'_>, mut m: Manifest) -> PyResult<Pipeline> {
    m.apply_survey_columns().map_err(manifest_err)?;
    let inner = py
        .detach(|| RustPipeline::new(m, &HubConfig::from_env()))
        .map_err(manifest_err)?;
    Ok(Pipeline {
        manifest: inner.manifest.clone(),
        bands: inner.survey.band_names(),
        survey_name: inner.survey.name().to_string(),
        inner: Mutex::new(inner),
    })
}

#[pymethods]
impl Pipeline {
    /// Load a manifest file (relative paths resolve against its folder).
    #[staticmethod]
    fn from_path(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let m = Manifest::load(&path).map_err(manifest_err)?;
        build_pipeline(py, m)
    }

    /// A manifest from YAML or JSON text (a Python dict as JSON); relative paths resolve
    /// against `base_dir`.
    #[staticmethod]
    fn from_text(py: Python<'_>, text: &str, source: &str, base_dir: PathBuf) -> PyResult<Self> {
        let mut m = Manifest::from_yaml(text, source).map_err(manifest_err)?;
        m.resolve_paths(&base_dir);
        build_pipeline(py, m)
    }

    /// The manifest (paths resolved) as JSON text.
    fn manifest_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.manifest).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The survey's band names, in order.
    fn band_names(&self) -> Vec<String> {
        self.bands.clone()
    }

    fn survey_name(&self) -> String {
        self.survey_name.clone()
    }

    /// The catalogue's id column and (band, flux column, error column) per survey band.
    fn catalogue_columns(&self) -> PyResult<(String, Vec<(String, String, String)>)> {
        let spec = &self.manifest.catalogue;
        let bands = spec
            .band_columns(&self.bands)
            .map_err(|e| manifest_err(Error::config("catalogue.bands", e.to_string())))?;
        Ok((
            spec.id_column.clone(),
            bands
                .into_iter()
                .map(|b| (b.band, b.flux, b.error))
                .collect(),
        ))
    }

    /// Summary column names of this manifest's sampler (after `id`, before `flags`).
    fn result_columns(&self) -> Vec<String> {
        popcosmos_inference::result_columns_of(&self.manifest)
    }

    /// Fit an in-memory table. `columns` are (name, f64 bytes); `bands` (band, flux column,
    /// error column) replace the manifest's column names and `units` its units when given.
    /// `progress(event, value)` is called with the GIL between batches; an exception from it
    /// or a pending signal (Ctrl-C) stops the fit before the next batch.
    #[pyo3(signature = (name, ids, columns, bands=None, units=None, chains=false, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn fit<'py>(
        &self,
        py: Python<'py>,
        name: String,
        ids: Option<Vec<String>>,
        columns: Vec<(String, Vec<u8>)>,
        bands: Option<Vec<(String, String, String)>>,
        units: Option<String>,
        chains: bool,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mut spec = self.manifest.catalogue.clone();
        spec.path = PathBuf::from(&name);
        // Truth columns are carried, not fitted; an in-memory table need not have them.
        spec.truth_columns.clear();
        if let Some(bands) = bands {
            spec.bands = Some(
                bands
                    .into_iter()
                    .map(|(band, flux, error)| BandColumns { band, flux, error })
                    .collect(),
            );
            spec.flux_pattern = None;
            spec.error_pattern = None;
        }
        if let Some(u) = units {
            spec.units = serde_json::from_value::<FluxUnit>(serde_json::Value::String(u.clone()))
                .map_err(|_| {
                    PyValueError::new_err(format!(
                        "units: unknown unit '{u}' (nanomaggies|nmgy, maggies, ujy, mjy, jy, ab_mag, erg_s_cm2_hz)"
                    ))
                })?;
        }
        let table = MemoryTable {
            ids,
            columns: columns
                .iter()
                .map(|(n, b)| Ok((n.clone(), f64_column(n, b)?)))
                .collect::<PyResult<_>>()?,
        };
        let mut stop: Option<PyErr> = None;
        let mut on_progress = |p: Progress| -> ControlFlow<()> {
            Python::attach(|py| {
                let called = match (&progress, p) {
                    (None, _) => Ok(()),
                    (Some(cb), Progress::Total(n)) => cb.call1(py, ("total", n)).map(drop),
                    (Some(cb), Progress::Done(n)) => cb.call1(py, ("done", n)).map(drop),
                    (Some(cb), Progress::Stage(s)) => cb.call1(py, ("stage", s)).map(drop),
                };
                match called.and_then(|_| py.check_signals()) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(e) => {
                        stop = Some(e);
                        ControlFlow::Break(())
                    }
                }
            })
        };
        let fit = py.detach(|| {
            let reader =
                CatalogueReader::from_memory(&spec, &self.bands, table).map_err(Error::from)?;
            let mut pipeline = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            // Chain rows are made only when asked for; the summaries do not depend on them.
            pipeline.manifest.output.chains = chains;
            pipeline.fit_reader(reader, &mut on_progress)
        });
        let fit = fit.map_err(input_err)?;
        let Some(fit) = fit else {
            return Err(stop.unwrap_or_else(|| PyKeyboardInterrupt::new_err("fit stopped")));
        };
        let order = self.result_columns();
        let out = table_to_py(py, &fit.summaries, &order)?;
        out.set_item("seconds_library", fit.seconds_library)?;
        out.set_item("seconds_sampling", fit.seconds_sampling)?;
        if let Some(c) = &fit.chains {
            let (draws, theta, log_prob) = chains_array(c, &fit.summaries.ids)?;
            out.set_item("draws", draws)?;
            out.set_item("chains", f64_bytes(py, &theta))?;
            out.set_item("chain_log_prob", f64_bytes(py, &log_prob))?;
        }
        Ok(out)
    }

    /// `popcosmos-cli run MANIFEST [--resume]` (without its progress bar): writes
    /// `output.dir` and returns the folder.
    #[pyo3(signature = (resume=false))]
    fn run(&self, py: Python<'_>, resume: bool) -> PyResult<PathBuf> {
        self.manifest.check_output_dir().map_err(manifest_err)?;
        let options = RunOptions {
            resume,
            ..RunOptions::default()
        };
        let summary = py
            .detach(|| {
                let mut pipeline = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                pipeline.manifest.output.chains = self.manifest.output.chains;
                pipeline.run(&options, &mut |_| {})
            })
            .map_err(input_err)?;
        Ok(summary.output_dir)
    }
}

// ------------------------------------------------------------------ functions

/// A results folder or file written by `run` (summaries or `chains/`).
#[pyfunction]
fn read_results<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let table = popcosmos_catalog::read_results(&path).map_err(catalog_err)?;
    let order = file_column_order(&path)?;
    table_to_py(py, &table, &order)
}

/// Column names in the order of the file (a folder's first part): the reader's table keeps
/// them sorted by name.
fn file_column_order(path: &std::path::Path) -> PyResult<Vec<String>> {
    let first = if path.is_dir() {
        popcosmos_catalog::list_parts(path)
            .map_err(catalog_err)?
            .into_iter()
            .next()
    } else {
        Some(path.to_path_buf())
    };
    let Some(file) = first else {
        return Ok(Vec::new());
    };
    let io = |e: std::io::Error| io_error(file.display().to_string(), &e);
    if file.extension().is_some_and(|e| e == "csv") {
        let text = std::fs::read_to_string(&file).map_err(io)?;
        let header = text.lines().next().unwrap_or("");
        return Ok(header.split(',').map(|c| c.trim().to_string()).collect());
    }
    let f = std::fs::File::open(&file).map_err(io)?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| PyValueError::new_err(format!("{}: {e}", file.display())))?;
    Ok(builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect())
}

/// `n` prior draws as `popcosmos-cli sample-prior` makes them; `spec` is a kind or the
/// JSON of a `prior:` section. Returns (column order, table dict).
#[pyfunction]
fn sample_prior<'py>(
    py: Python<'py>,
    spec: &str,
    n: usize,
    seed: u64,
) -> PyResult<(Vec<String>, Bound<'py, PyDict>)> {
    let text = if spec.trim_start().starts_with('{') {
        spec.to_string()
    } else {
        format!("{{kind: {spec}}}")
    };
    let spec: popcosmos_priors::PriorSpec =
        serde_saphyr::from_str(&text).map_err(|e| parse_error("prior", e))?;
    if n == 0 {
        return Err(PyValueError::new_err("n: at least one draw is needed"));
    }
    let (order, table) = py
        .detach(|| popcosmos_inference::prior_draws(&spec, n, seed, &HubConfig::from_env()))
        .map_err(manifest_err)?;
    let out = table_to_py(py, &table, &order)?;
    Ok((order, out))
}

/// `popcosmos-cli predict` on named columns; `survey` is the JSON of a `survey:` section.
#[pyfunction]
#[pyo3(signature = (columns, survey, lines=true))]
fn predict<'py>(
    py: Python<'py>,
    columns: Vec<(String, Vec<u8>)>,
    survey: &str,
    lines: bool,
) -> PyResult<Bound<'py, PyList>> {
    let survey: popcosmos_surveys::SurveySpec =
        serde_json::from_str(survey).map_err(|e| parse_error("survey", e))?;
    // A survey that cannot be built is a `survey:` problem, not one of the parameters.
    survey.build().map_err(manifest_err)?;
    let columns = columns
        .iter()
        .map(|(n, b)| Ok((n.clone(), f64_column(n, b)?)))
        .collect::<PyResult<Vec<_>>>()?;
    let out = py
        .detach(|| {
            let hub = HubConfig::from_env();
            popcosmos_inference::predict_photometry("params", &columns, &survey, lines, &hub)
        })
        .map_err(input_err)?;
    let list = PyList::empty(py);
    for (name, values) in out {
        list.append((name, f64_bytes(py, &values)))?;
    }
    Ok(list)
}

/// Photo-z metrics (bias, σ_NMAD, outlier fraction, n) of `popcosmos-cli evaluate`.
#[pyfunction]
fn evaluate<'py>(
    py: Python<'py>,
    z_phot: Vec<u8>,
    z_spec: Vec<u8>,
) -> PyResult<Bound<'py, PyDict>> {
    let (p, s) = (
        f64_column("z_phot", &z_phot)?,
        f64_column("z_spec", &z_spec)?,
    );
    if p.len() != s.len() {
        return Err(PyValueError::new_err(format!(
            "z_phot has {} values, z_spec has {}",
            p.len(),
            s.len()
        )));
    }
    let m = popcosmos_catalog::photoz_metrics(&p, &s);
    let out = PyDict::new(py);
    out.set_item("bias", m.bias)?;
    out.set_item("sigma_nmad", m.sigma_nmad)?;
    out.set_item("outlier_fraction", m.outlier_fraction)?;
    out.set_item("n", m.n)?;
    Ok(out)
}

/// Bundled models and the models in the Hugging Face cache, as in `models list`.
#[pyfunction]
fn list_models<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
    let cfg = HubConfig::from_env();
    let out = PyList::empty(py);
    let row = |reference: String, card: &popcosmos_models::ModelCard, location: &str| {
        let d = PyDict::new(py);
        d.set_item("reference", reference)?;
        d.set_item("kind", &card.architecture.kind)?;
        d.set_item("bands", &card.bands)?;
        d.set_item("size_bytes", card.size_bytes)?;
        d.set_item("license", &card.license)?;
        d.set_item("sha256", &card.sha256)?;
        d.set_item("location", location)?;
        PyResult::Ok(d)
    };
    for m in BUILTIN {
        let card = popcosmos_models::ModelCard::from_bytes(m.card_text.as_bytes(), m.card_file)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        out.append(row(format!("builtin:{}", m.name), &card, "bundled")?)?;
    }
    for (r, card_path) in hub::list_cached(&cfg) {
        let card = popcosmos_models::ModelCard::from_path(&card_path)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        out.append(row(r.to_string(), &card, &card_path.display().to_string())?)?;
    }
    Ok(out)
}

/// `models fetch`: download a `hf://` reference and its card into the cache, verify it and
/// return the weights path.
#[pyfunction]
#[pyo3(signature = (reference, refresh=false))]
fn fetch_model(py: Python<'_>, reference: &str, refresh: bool) -> PyResult<PathBuf> {
    let r: WeightRef = reference
        .parse()
        .map_err(|e: popcosmos_models::ModelError| PyValueError::new_err(e.to_string()))?;
    let WeightRef::Hub(h) = r else {
        return Err(PyValueError::new_err(format!(
            "fetch takes a hf://ORG/REPO[@REVISION]/FILE reference, got '{reference}'"
        )));
    };
    let cfg = HubConfig::from_env();
    py.detach(|| {
        let cached = hub::resolve(&h, &cfg, refresh)?;
        load_location(Location::Files {
            card: cached.card.clone(),
            weights: cached.weights.clone(),
        })?;
        Ok(cached.weights)
    })
    .map_err(|e: popcosmos_models::ModelError| PyValueError::new_err(format!("{reference}: {e}")))
}

/// The demo manifest YAML and catalogue CSV text.
#[pyfunction]
fn demo_files() -> (&'static str, &'static str, &'static str) {
    (DEMO_MANIFEST_YAML, DEMO_CATALOGUE_CSV, DEMO_CALIBRATION_YAML)
}

/// YAML text as JSON text (the demo manifest for Python dicts).
#[pyfunction]
fn yaml_to_json(text: &str) -> PyResult<String> {
    let v: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| parse_error("manifest", e))?;
    Ok(v.to_string())
}

/// Parameter names in sampling order.
#[pyfunction]
fn parameter_names() -> Vec<&'static str> {
    PARAM_NAMES.to_vec()
}

#[pymodule]
fn _popcosmos(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("ManifestError", m.py().get_type::<ManifestError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Pipeline>()?;
    m.add_function(wrap_pyfunction!(read_results, m)?)?;
    m.add_function(wrap_pyfunction!(sample_prior, m)?)?;
    m.add_function(wrap_pyfunction!(predict, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(list_models, m)?)?;
    m.add_function(wrap_pyfunction!(fetch_model, m)?)?;
    m.add_function(wrap_pyfunction!(demo_files, m)?)?;
    m.add_function(wrap_pyfunction!(yaml_to_json, m)?)?;
    m.add_function(wrap_pyfunction!(parameter_names, m)?)?;
    Ok(())
}
