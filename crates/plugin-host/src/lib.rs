//! # popcosmos-plugin-host — load survey and prior plugins behind the safe traits
//!
//! Plugins are shared libraries exporting the C-ABI vtables of `popcosmos-plugin-abi`
//! (see `docs/plugins.md`). This crate opens them with libloading, checks the ABI version
//! and the plugin kind *before* reading anything else, and wraps them so the rest of
//! popcosmos only sees the ordinary traits:
//!
//! * [`load_survey`] → [`PluginSurvey`] (`impl popcosmos_api::Survey`): bands, softening and
//!   calibration are copied out of the plugin once, validated (positive finite softening and
//!   zero points, unique band names, …) and the plugin object released.
//! * [`load_prior`] → [`PluginPrior`] (`impl popcosmos_api::Prior`): `log_prob` copies the
//!   whole `[..., 16]` batch to one host f32 buffer, makes **one** plugin call per batch
//!   and uploads the result to the input's device; `sample` passes the plugin a seed drawn
//!   from the caller's [`RandomSource`], so draws are reproducible. Every returned length and
//!   value is checked (a log-density must be finite or −∞, draws finite).
//! * [`load`] / [`inspect`]: either kind, for `popcosmos-cli plugins inspect`.
//!
//! Every failure — missing file, not a library, missing entry symbol, wrong ABI version,
//! wrong kind, a plugin error or a caught plugin panic, a malformed result — is a
//! [`popcosmos_api::Error`] naming the plugin file, never a crash. Libraries stay loaded for
//! the life of the process (unloading a Rust cdylib with live thread-locals is unsound).

#![warn(missing_docs)]

use std::ffi::{CStr, c_char};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use popcosmos_api::{
    Band, Calibration, Error, FilterCurve, N_PARAMS, Prior, RandomSource, Result, Survey,
};
use popcosmos_plugin_abi as abi;

pub use abi::{ABI_VERSION, ENTRY_SYMBOL, LineValues};

/// Which trait a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    /// Bands, filter curves and calibration ([`popcosmos_api::Survey`]).
    Survey,
    /// A prior density over the 16 latent parameters φ ([`popcosmos_api::Prior`]).
    Prior,
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PluginKind::Survey => "survey",
            PluginKind::Prior => "prior",
        })
    }
}

/// What the plugin's header says about it.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginInfo {
    /// The library file as given (for error messages).
    pub path: PathBuf,
    /// The plugin ABI version from the header (equal to [`ABI_VERSION`] once opened).
    pub abi_version: u32,
    /// Which trait the plugin implements.
    pub kind: PluginKind,
    /// Package name and version the plugin was built as.
    pub plugin_name: String,
    /// The version string that goes with `plugin_name`.
    pub plugin_version: String,
}

/// A loaded plugin of either kind.
pub enum Plugin {
    /// A survey plugin.
    Survey(PluginSurvey),
    /// A prior plugin.
    Prior(PluginPrior),
}

impl Plugin {
    /// The plugin's header information, whichever kind it is.
    pub fn info(&self) -> &PluginInfo {
        match self {
            Plugin::Survey(s) => &s.info,
            Plugin::Prior(p) => &p.info,
        }
    }
}

/// Load a plugin of either kind and create it with `config`.
pub fn load(path: &Path, config: &str) -> Result<Plugin> {
    let lib = open(path)?;
    Ok(match lib.info.kind {
        PluginKind::Survey => Plugin::Survey(PluginSurvey::create(lib, config)?),
        PluginKind::Prior => Plugin::Prior(PluginPrior::create(lib, config)?),
    })
}

/// Read a plugin's header only (ABI version, kind, name) without creating it.
pub fn inspect(path: &Path) -> Result<PluginInfo> {
    Ok(open(path)?.info)
}

/// Load a survey plugin and create it with `config` (the manifest's configuration string).
pub fn load_survey(path: &Path, config: &str) -> Result<PluginSurvey> {
    let lib = open(path)?;
    expect_kind(&lib.info, PluginKind::Survey)?;
    PluginSurvey::create(lib, config)
}

/// Load a prior plugin and create it with `config` (the manifest's configuration string).
pub fn load_prior(path: &Path, config: &str) -> Result<PluginPrior> {
    let lib = open(path)?;
    expect_kind(&lib.info, PluginKind::Prior)?;
    PluginPrior::create(lib, config)
}

fn expect_kind(info: &PluginInfo, want: PluginKind) -> Result<()> {
    if info.kind != want {
        return Err(fail(
            &info.path,
            format!(
                "is a {} plugin ('{}'), not a {want} plugin",
                info.kind, info.plugin_name
            ),
        ));
    }
    Ok(())
}

/// libloading's error with its cause: its own text is only "dlopen failed", while the cause
/// holds the loader's message (dlerror), which names e.g. a missing dependency.
fn loader_message(e: &libloading::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

fn fail(path: &Path, message: String) -> Error {
    Error::Format {
        file: path.display().to_string(),
        message,
    }
}

/// An opened library whose header passed the version and kind checks.
struct Library {
    header: *const abi::PluginHeader,
    info: PluginInfo,
}

fn open(path: &Path) -> Result<Library> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(fail(
            path,
            "not a file (expected a plugin shared library)".into(),
        ));
    }
    // dlopen searches the system library path for names without a slash: always pass an
    // absolute path so the file the user named is the one loaded.
    let abs = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: loading runs the library's initialisers. That is the trust the user gives a
    // plugin by naming it; nothing else can be checked before loading.
    let lib = unsafe { libloading::Library::new(&abs) }.map_err(|e| {
        fail(
            path,
            format!(
                "not a loadable shared library (a popcosmos plugin is a cdylib): {}",
                loader_message(&e)
            ),
        )
    })?;
    // Never unloaded: handles and vtables point into it for the rest of the process.
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    // SAFETY: the symbol's type is fixed by the ABI crate; a library exporting the name
    // with another type breaks the plugin contract.
    let entry = unsafe { lib.get::<abi::EntryFn>(ENTRY_SYMBOL) }.map_err(|e| {
        fail(
            path,
            format!(
                "not a popcosmos plugin: it does not export `{ENTRY_SYMBOL}` (declare it with \
                 popcosmos_plugin_abi::declare_survey_plugin! / declare_prior_plugin!): {e}"
            ),
        )
    })?;
    // SAFETY: `popcosmos_plugin_entry` takes no arguments and returns a static pointer.
    let header = unsafe { entry() };
    if header.is_null() {
        return Err(fail(
            path,
            format!("`{ENTRY_SYMBOL}` returned a null vtable"),
        ));
    }
    // Version first: only the first two u32 fields are common to every ABI version.
    // SAFETY: non-null pointer to a header whose first fields are frozen.
    let abi_version = unsafe { std::ptr::read(&raw const (*header).abi_version) };
    if abi_version != ABI_VERSION {
        return Err(fail(
            path,
            format!(
                "plugin ABI version {abi_version}, but this popcosmos supports ABI version \
                 {ABI_VERSION}; rebuild the plugin against this popcosmos's \
                 crates/plugin-abi"
            ),
        ));
    }
    let kind_tag = unsafe { std::ptr::read(&raw const (*header).kind) };
    let kind = match kind_tag {
        abi::KIND_SURVEY => PluginKind::Survey,
        abi::KIND_PRIOR => PluginKind::Prior,
        other => {
            return Err(fail(
                path,
                format!(
                    "unknown plugin kind {other} (expected {} = survey or {} = prior)",
                    abi::KIND_SURVEY,
                    abi::KIND_PRIOR
                ),
            ));
        }
    };
    // SAFETY: ABI v1 header, checked above.
    let (name_ptr, version_ptr) = unsafe { ((*header).plugin_name, (*header).plugin_version) };
    let info = PluginInfo {
        path: path.to_path_buf(),
        abi_version,
        kind,
        plugin_name: static_str(name_ptr),
        plugin_version: static_str(version_ptr),
    };
    Ok(Library { header, info })
}

fn static_str(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the header's strings are static and NUL-terminated (ABI contract).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Calls into one plugin, turning status codes and messages into [`Error`]s.
struct Caller<'a> {
    path: &'a Path,
}

impl Caller<'_> {
    /// Run one vtable call with a fresh error buffer; `what` names the function.
    fn call(&self, what: &str, f: impl FnOnce(*mut abi::ErrorBuf) -> i32) -> Result<()> {
        let mut buf = vec![0u8; 4096];
        let mut err = abi::ErrorBuf {
            ptr: buf.as_mut_ptr(),
            cap: buf.len(),
            len: 0,
        };
        let status = f(&mut err);
        if status == abi::STATUS_OK {
            return Ok(());
        }
        let n = err.len.min(buf.len());
        let msg = String::from_utf8_lossy(&buf[..n]);
        let msg = if msg.is_empty() {
            "(no message)".into()
        } else {
            msg
        };
        // STATUS_PANIC messages already start with "plugin panicked".
        let status = match status {
            abi::STATUS_ERROR | abi::STATUS_PANIC => String::new(),
            other => format!(" (unknown status {other})"),
        };
        Err(fail(self.path, format!("{what} failed{status}: {msg}")))
    }

    /// A string property: host buffer, grown once if the plugin reports a longer string.
    fn string(
        &self,
        what: &str,
        f: impl Fn(*mut u8, usize, *mut usize, *mut abi::ErrorBuf) -> i32,
    ) -> Result<String> {
        let mut cap = 256;
        loop {
            let mut buf = vec![0u8; cap];
            let mut len = usize::MAX;
            self.call(what, |e| f(buf.as_mut_ptr(), cap, &mut len, e))?;
            if len == usize::MAX {
                return Err(fail(self.path, format!("{what}: no length reported")));
            }
            if len <= cap {
                buf.truncate(len);
                return String::from_utf8(buf)
                    .map_err(|_| fail(self.path, format!("{what}: not valid UTF-8")));
            }
            if len > 1 << 20 || cap > 256 {
                return Err(fail(
                    self.path,
                    format!("{what}: implausible string length {len}"),
                ));
            }
            cap = len;
        }
    }

    fn count(
        &self,
        what: &str,
        f: impl FnOnce(*mut usize, *mut abi::ErrorBuf) -> i32,
    ) -> Result<usize> {
        let mut n = usize::MAX;
        self.call(what, |e| f(&mut n, e))?;
        if n == usize::MAX {
            return Err(fail(self.path, format!("{what}: no value reported")));
        }
        Ok(n)
    }

    /// `create` the plugin object from `config`.
    fn create(&self, create: abi::CreateFn, config: &str) -> Result<abi::Handle> {
        let mut handle: abi::Handle = std::ptr::null_mut();
        // SAFETY: host buffers valid for the call (ABI contract).
        self.call("create", |e| unsafe {
            create(config.as_ptr(), config.len(), &mut handle, e)
        })?;
        if handle.is_null() {
            return Err(fail(self.path, "create returned a null handle".into()));
        }
        Ok(handle)
    }
}

/// Name, bands, calibration, filter curves and emission-line terms read from a survey plugin.
type SurveyParts = (
    String,
    Vec<Band>,
    Calibration,
    Vec<FilterCurve>,
    Vec<LineValues>,
);

/// A survey loaded from a plugin (its data copied and validated at load time).
#[derive(Debug, Clone)]
pub struct PluginSurvey {
    info: PluginInfo,
    name: String,
    bands: Vec<Band>,
    calibration: Calibration,
    /// One curve per band, or empty when the plugin gives none.
    filters: Vec<FilterCurve>,
    /// The plugin's emission-line terms (none if it gives none).
    emission_lines: Vec<LineValues>,
}

impl PluginSurvey {
    fn create(lib: Library, config: &str) -> Result<Self> {
        // SAFETY: the header passed the version and kind checks: it heads a SurveyVTable.
        let vt: &'static abi::SurveyVTable = unsafe { &*(lib.header as *const abi::SurveyVTable) };
        let path = lib.info.path.clone();
        let c = Caller { path: &path };
        let h = c.create(vt.create, config)?;
        // Copy everything out, then release the plugin object whatever happened.
        let read = Self::read(&c, vt, h);
        // SAFETY: handle from this vtable's `create`, released once.
        unsafe { (vt.destroy)(h) };
        let (name, bands, calibration, filters, emission_lines) = read?;
        Ok(Self {
            info: lib.info,
            name,
            bands,
            calibration,
            filters,
            emission_lines,
        })
    }

    fn read(c: &Caller, vt: &abi::SurveyVTable, h: abi::Handle) -> Result<SurveyParts> {
        let bad = |m: String| fail(c.path, m);
        // SAFETY (all calls below): live handle, host-owned buffers of the stated sizes.
        let name = c.string("name", |b, cap, len, e| unsafe {
            (vt.name)(h, b, cap, len, e)
        })?;
        if name.trim().is_empty() {
            return Err(bad("the survey name is empty".into()));
        }
        let n_bands = c.count("n_bands", |o, e| unsafe { (vt.n_bands)(h, o, e) })?;
        if n_bands == 0 || n_bands > 10_000 {
            return Err(bad(format!("implausible number of bands: {n_bands}")));
        }
        let mut bands = Vec::with_capacity(n_bands);
        let mut cal = Calibration {
            zero_points: Vec::with_capacity(n_bands),
            error_floors: Vec::with_capacity(n_bands),
        };
        for i in 0..n_bands {
            let name = c.string(&format!("band_name({i})"), |b, cap, len, e| unsafe {
                (vt.band_name)(h, i, b, cap, len, e)
            })?;
            let label = c.string(&format!("band_label({i})"), |b, cap, len, e| unsafe {
                (vt.band_label)(h, i, b, cap, len, e)
            })?;
            let mut v = abi::BandValues {
                flux_softening_nmgy: f64::NAN,
                zero_point: f64::NAN,
                error_floor: f64::NAN,
            };
            c.call(&format!("band_values({i})"), |e| unsafe {
                (vt.band_values)(h, i, &mut v, e)
            })?;
            if name.trim().is_empty() {
                return Err(bad(format!("band {i} has an empty name")));
            }
            if let Some(j) = bands.iter().position(|b: &Band| b.name == name) {
                return Err(bad(format!(
                    "band {i} repeats the name '{name}' of band {j}"
                )));
            }
            let (b, z, f) = (v.flux_softening_nmgy, v.zero_point, v.error_floor);
            let problem = if !(b.is_finite() && b > 0.0) {
                Some(format!(
                    "softening must be a positive finite number of nmgy, got {b}"
                ))
            } else if !(z.is_finite() && z > 0.0) {
                Some(format!("zero point must be positive and finite, got {z}"))
            } else if !(f.is_finite() && f >= 0.0) {
                Some(format!("error floor must be finite and ≥ 0, got {f}"))
            } else {
                None
            };
            if let Some(p) = problem {
                return Err(bad(format!("band {i} ('{name}'): {p}")));
            }
            cal.zero_points.push(z);
            cal.error_floors.push(f);
            bands.push(Band {
                name,
                label,
                flux_softening_nmgy: b,
            });
        }
        let n_lines = c.count("n_lines", |o, e| unsafe { (vt.n_lines)(h, o, e) })?;
        if n_lines > 10_000 {
            return Err(bad(format!(
                "implausible number of emission lines: {n_lines}"
            )));
        }
        let mut lines = Vec::with_capacity(n_lines);
        for l in 0..n_lines {
            let mut v = LineValues {
                offset: f64::NAN,
                ln_scatter: f64::NAN,
            };
            c.call(&format!("line_values({l})"), |e| unsafe {
                (vt.line_values)(h, l, &mut v, e)
            })?;
            if !(v.offset.is_finite() && v.ln_scatter.is_finite()) {
                return Err(bad(format!(
                    "emission line {l}: offset and ln scatter must be finite, got {} and {}",
                    v.offset, v.ln_scatter
                )));
            }
            lines.push(v);
        }
        let filters = Self::read_filters(c, vt, h, &bands)?;
        Ok((name, bands, cal, filters, lines))
    }

    /// Filter curves: every band or none, each checked (≥ 2 points, finite, wavelengths
    /// positive and increasing, response ≥ 0 and not all zero).
    fn read_filters(
        c: &Caller,
        vt: &abi::SurveyVTable,
        h: abi::Handle,
        bands: &[Band],
    ) -> Result<Vec<FilterCurve>> {
        let bad = |m: String| fail(c.path, m);
        let mut curves = Vec::with_capacity(bands.len());
        for (i, band) in bands.iter().enumerate() {
            let mut cap = 4096;
            let (wl, tr) = loop {
                let (mut wl, mut tr) = (vec![f64::NAN; cap], vec![f64::NAN; cap]);
                let mut len = usize::MAX;
                // SAFETY: live handle; both buffers hold `cap` values.
                c.call(&format!("filter_curve({i})"), |e| unsafe {
                    (vt.filter_curve)(h, i, wl.as_mut_ptr(), tr.as_mut_ptr(), cap, &mut len, e)
                })?;
                if len == usize::MAX || len > 10_000_000 || (len > cap && cap > 4096) {
                    return Err(bad(format!(
                        "filter_curve({i}): implausible number of points {len}"
                    )));
                }
                if len <= cap {
                    wl.truncate(len);
                    tr.truncate(len);
                    break (wl, tr);
                }
                cap = len;
            };
            if wl.is_empty() {
                curves.push(None);
                continue;
            }
            let problem = if wl.len() < 2 {
                Some("fewer than two points".to_string())
            } else if let Some(k) = (0..wl.len()).find(|&k| !(wl[k].is_finite() && wl[k] > 0.0)) {
                Some(format!(
                    "wavelength {k} is {} (must be positive and finite)",
                    wl[k]
                ))
            } else if let Some(k) = (1..wl.len()).find(|&k| wl[k] <= wl[k - 1]) {
                Some(format!(
                    "wavelengths must increase ({} Å after {} Å at point {k})",
                    wl[k],
                    wl[k - 1]
                ))
            } else if let Some(k) = (0..tr.len()).find(|&k| !(tr[k].is_finite() && tr[k] >= 0.0)) {
                Some(format!(
                    "transmission {k} is {} (must be finite and ≥ 0)",
                    tr[k]
                ))
            } else if tr.iter().all(|&t| t == 0.0) {
                Some("transmission is zero everywhere".to_string())
            } else {
                None
            };
            if let Some(p) = problem {
                return Err(bad(format!(
                    "band {i} ('{}'): filter curve: {p}",
                    band.name
                )));
            }
            curves.push(Some(FilterCurve {
                name: band.name.clone(),
                wavelength_aa: wl,
                transmission: tr,
            }));
        }
        let given = curves.iter().filter(|c| c.is_some()).count();
        if given != 0 && given != curves.len() {
            let missing = curves.iter().position(Option::is_none).unwrap_or(0);
            return Err(bad(format!(
                "filter curves for {given} of {} bands (band {missing} '{}' has none): give every \
                 band a curve or none",
                curves.len(),
                bands[missing].name
            )));
        }
        Ok(curves.into_iter().flatten().collect())
    }

    /// Filter curves, one per band in band order; empty when the plugin gives none.
    pub fn filters(&self) -> &[FilterCurve] {
        &self.filters
    }

    /// Emission-line offsets and ln scatters, one per line; empty when the plugin gives none.
    pub fn emission_lines(&self) -> &[LineValues] {
        &self.emission_lines
    }

    /// `(name, bands, filter curves, calibration)`, for building other survey types.
    pub fn into_parts(self) -> (String, Vec<Band>, Vec<FilterCurve>, Calibration) {
        (self.name, self.bands, self.filters, self.calibration)
    }

    /// The plugin's header information.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The calibration, for manifest overrides (`survey.zero_points`, …).
    pub fn calibration_mut(&mut self) -> &mut Calibration {
        &mut self.calibration
    }
}

impl Survey for PluginSurvey {
    fn name(&self) -> &str {
        &self.name
    }
    fn bands(&self) -> &[Band] {
        &self.bands
    }
    fn calibration(&self) -> &Calibration {
        &self.calibration
    }
}

/// A prior over φ implemented by a plugin.
pub struct PluginPrior {
    info: PluginInfo,
    vt: &'static abi::PriorVTable,
    handle: abi::Handle,
    name: String,
}

// SAFETY: the ABI contract requires prior handles to be callable from several threads at
// once (`PriorPlugin: Send + Sync` for Rust plugins); the vtable is an immutable static.
unsafe impl Send for PluginPrior {}
unsafe impl Sync for PluginPrior {}

impl std::fmt::Debug for PluginPrior {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginPrior")
            .field("info", &self.info)
            .field("name", &self.name)
            .finish()
    }
}

impl PluginPrior {
    fn create(lib: Library, config: &str) -> Result<Self> {
        // SAFETY: the header passed the version and kind checks: it heads a PriorVTable.
        let vt: &'static abi::PriorVTable = unsafe { &*(lib.header as *const abi::PriorVTable) };
        let c = Caller {
            path: &lib.info.path,
        };
        let handle = c.create(vt.create, config)?;
        // Owned from here on: Drop releases the handle on every error path below.
        let mut prior = Self {
            info: lib.info.clone(),
            vt,
            handle,
            name: String::new(),
        };
        let c = Caller {
            path: &prior.info.path,
        };
        // SAFETY: live handle, host-owned buffers.
        let name = c.string("name", |b, cap, len, e| unsafe {
            (vt.name)(handle, b, cap, len, e)
        })?;
        let dim = c.count("dim", |o, e| unsafe { (vt.dim)(handle, o, e) })?;
        if dim != N_PARAMS {
            return Err(fail(
                &prior.info.path,
                format!("the prior is over {dim} parameters; popcosmos needs {N_PARAMS}"),
            ));
        }
        prior.name = if name.trim().is_empty() {
            prior.info.plugin_name.clone()
        } else {
            name
        };
        Ok(prior)
    }

    /// The plugin's header information.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn caller(&self) -> Caller<'_> {
        Caller {
            path: &self.info.path,
        }
    }

    /// ln p for `n` rows of host φ (`[n, 16]` row-major); one plugin call, checked.
    pub fn log_prob_host(&self, phi: &[f32]) -> Result<Vec<f32>> {
        let n = phi.len() / N_PARAMS;
        if phi.len() != n * N_PARAMS {
            return Err(Error::Invalid(format!(
                "prior '{}': φ has {} values, not a multiple of {N_PARAMS}",
                self.name,
                phi.len()
            )));
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        // NaN-filled, so values the plugin claims but never wrote are caught below.
        let mut out = vec![f32::NAN; n];
        let mut len = usize::MAX;
        // SAFETY: phi holds n·16 values, out has room for n; live handle.
        self.caller().call("log_prob", |e| unsafe {
            (self.vt.log_prob)(
                self.handle,
                phi.as_ptr(),
                n,
                out.as_mut_ptr(),
                n,
                &mut len,
                e,
            )
        })?;
        if len != n {
            return Err(fail(
                &self.info.path,
                format!("log_prob returned {len} values for a batch of {n} rows"),
            ));
        }
        if let Some(i) = out.iter().position(|v| v.is_nan() || *v == f32::INFINITY) {
            return Err(fail(
                &self.info.path,
                format!(
                    "log_prob returned {} for row {i} (φ = {:?}); a log-density must be finite \
                     or −∞",
                    out[i],
                    &phi[i * N_PARAMS..(i + 1) * N_PARAMS]
                ),
            ));
        }
        Ok(out)
    }

    /// `n` draws `[n, 16]` row-major from the plugin with `seed`; one plugin call, checked.
    pub fn sample_host(&self, n: usize, seed: u64) -> Result<Vec<f32>> {
        let want = n
            .checked_mul(N_PARAMS)
            .ok_or_else(|| Error::Invalid(format!("prior '{}': {n} draws overflow", self.name)))?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut out = vec![f32::NAN; want];
        let mut len = usize::MAX;
        // SAFETY: out has room for n·16 values; live handle.
        self.caller().call("sample", |e| unsafe {
            (self.vt.sample)(self.handle, n, seed, out.as_mut_ptr(), want, &mut len, e)
        })?;
        if len != want {
            return Err(fail(
                &self.info.path,
                format!(
                    "sample returned {len} values for {n} draws of {N_PARAMS} parameters (expected {want})"
                ),
            ));
        }
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            return Err(fail(
                &self.info.path,
                format!(
                    "sample returned {} for parameter {} of draw {}; draws must be finite",
                    out[i],
                    i % N_PARAMS,
                    i / N_PARAMS
                ),
            ));
        }
        Ok(out)
    }
}

impl Drop for PluginPrior {
    fn drop(&mut self) {
        // SAFETY: handle from this vtable's `create`, released once.
        unsafe { (self.vt.destroy)(self.handle) };
    }
}

impl Prior for PluginPrior {
    fn name(&self) -> &str {
        &self.name
    }

    fn log_prob(&self, phi: &Tensor) -> Result<Tensor> {
        let dims = phi.dims();
        if dims.last() != Some(&N_PARAMS) {
            let what = format!("prior '{}': φ", self.name);
            return Err(Error::shape(what, format!("[..., {N_PARAMS}]"), dims));
        }
        if phi.track_op() {
            // The plugin runs on host buffers: it has no gradient, and silently dropping
            // the prior's gradient would bias gradient-based samplers.
            return Err(fail(
                &self.info.path,
                "a plugin prior has no gradient; use it with the ensemble sampler \
                 (sampler.kind: ensemble), not HMC"
                    .into(),
            ));
        }
        let host: Vec<f32> = phi.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let lp = self.log_prob_host(&host)?;
        Ok(Tensor::from_vec(lp, &dims[..dims.len() - 1], phi.device())?)
    }

    fn sample(&self, n: usize, rng: &mut dyn RandomSource, device: &Device) -> Result<Tensor> {
        // 64 seed bits from two draws of the caller's stream (reproducible per seed).
        let hi = (rng.next_f64() * 4_294_967_296.0) as u64;
        let lo = (rng.next_f64() * 4_294_967_296.0) as u64;
        let draws = self.sample_host(n, (hi << 32) | lo)?;
        Ok(Tensor::from_vec(draws, (n, N_PARAMS), device)?)
    }
}
