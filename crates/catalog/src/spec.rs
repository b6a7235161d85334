//! The `catalogue:` section of the user's YAML manifest.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CatalogError, Result};

/// 1 nanomaggy in Jansky (AB zero point 3631 Jy at m = 22.5).
pub const NMGY_IN_JY: f64 = 3.631e-6;

/// Where the catalogue is and how to read it.
///
/// ```yaml
/// path: data/cosmos.csv
/// id_column: id
/// units: mjy
/// flux_pattern: "flux_{band}"
/// error_pattern: "fluxerr_{band}"
/// upper_limits: negative_error
/// truth_columns: [zspec]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueSpec {
    /// The catalogue file (relative paths resolve against the manifest's folder).
    pub path: PathBuf,
    /// Inferred from the extension when absent (`.csv/.tsv/.txt`, `.fits/.fit`, `.parquet/.pq`).
    #[serde(default)]
    pub format: Option<CatalogueFormat>,
    /// Column of unique galaxy ids (default `id`).
    #[serde(default = "default_id_column")]
    pub id_column: String,
    /// Units of the flux and error columns, converted to nanomaggies on reading.
    pub units: FluxUnit,
    /// Explicit band → column mapping (alternative to the patterns).
    #[serde(default)]
    pub bands: Option<Vec<BandColumns>>,
    /// e.g. `"flux_{band}"`, expanded over the survey's band names.
    #[serde(default)]
    pub flux_pattern: Option<String>,
    /// e.g. `"fluxerr_{band}"`.
    #[serde(default)]
    pub error_pattern: Option<String>,
    /// How non-detections are marked (default: no convention).
    #[serde(default)]
    pub upper_limits: UpperLimitConvention,
    /// Sentinels meaning "no measurement" in a flux or error column (NaN and empty cells
    /// always mean missing). For `ab_mag` any |m| ≥ 50 is also missing (99 / −99 …), and
    /// in every unit a flux or σ of at least 1e20 nanomaggies after conversion
    /// ([`crate::ABSURD_FLUX_NMGY`]; KiDS writes 1e29 for "no measurement").
    #[serde(default = "default_missing_values")]
    pub missing_values: Vec<f64>,
    /// Extra per-galaxy columns carried through (e.g. `zspec`), as f64.
    #[serde(default)]
    pub truth_columns: Vec<String>,
}

fn default_id_column() -> String {
    "id".to_string()
}

/// The default sentinels; −99.9 / 99.99 also appear in the VVDS / zCOSMOS magnitudes but
/// 99.x is a legal flux, so magnitude sentinels are handled by the |m| ≥ 50 rule instead.
pub fn default_missing_values() -> Vec<f64> {
    vec![-99.0, -99.9, -999.0, -999.99]
}

/// File format of a catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogueFormat {
    /// Delimited text with a header row (`.csv`, `.tsv`, `.txt`).
    Csv,
    /// A FITS binary table (`.fits`, `.fit`, `.fts`).
    Fits,
    /// Apache Parquet (`.parquet`, `.pq`).
    Parquet,
}

impl CatalogueFormat {
    /// Infer the format from a file extension.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "csv" | "tsv" | "txt" => Ok(Self::Csv),
            "fits" | "fit" | "fts" => Ok(Self::Fits),
            "parquet" | "pq" => Ok(Self::Parquet),
            _ => Err(CatalogError::Spec(format!(
                "{}: cannot infer the format from the extension '{ext}'; set `format:` to csv, fits or parquet",
                path.display()
            ))),
        }
    }
}

/// Units of the flux and error columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FluxUnit {
    /// Nanomaggies (m_AB = 22.5 − 2.5 log10 f); also `nmgy`.
    #[serde(alias = "nmgy")]
    Nanomaggies,
    /// Maggies (1 maggie = 10⁹ nmgy).
    Maggies,
    /// Microjansky; also `uJy`, `microjansky`.
    #[serde(alias = "uJy", alias = "microjansky")]
    Ujy,
    /// Millijansky; also `mJy`, `millijansky`.
    #[serde(alias = "mJy", alias = "millijansky")]
    Mjy,
    /// Jansky; also `Jy`, `jansky`.
    #[serde(alias = "Jy", alias = "jansky")]
    Jy,
    /// AB magnitudes with magnitude errors: σ_f = f · 0.4 ln10 · σ_m.
    #[serde(alias = "mag", alias = "AB")]
    AbMag,
    /// erg s⁻¹ cm⁻² Hz⁻¹ (CLAUDS/LePhare).
    #[serde(alias = "cgs")]
    ErgSCm2Hz,
}

impl FluxUnit {
    /// Multiplicative factor to nanomaggies; `None` for magnitudes.
    pub fn nmgy_per_unit(self) -> Option<f64> {
        match self {
            FluxUnit::Nanomaggies => Some(1.0),
            FluxUnit::Maggies => Some(1e9),
            FluxUnit::Ujy => Some(1e-6 / NMGY_IN_JY),
            FluxUnit::Mjy => Some(1e-3 / NMGY_IN_JY),
            FluxUnit::Jy => Some(1.0 / NMGY_IN_JY),
            FluxUnit::ErgSCm2Hz => Some(1e23 / NMGY_IN_JY),
            FluxUnit::AbMag => None,
        }
    }

    /// (value, error) in these units → (flux, σ) in nanomaggies.
    pub fn to_nmgy(self, value: f64, error: f64) -> (f64, f64) {
        match self.nmgy_per_unit() {
            Some(k) => (value * k, error * k),
            None => {
                let flux = 10f64.powf(-0.4 * (value - 22.5));
                (flux, flux * 0.4 * std::f64::consts::LN_10 * error)
            }
        }
    }
}

/// Column names of one band.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandColumns {
    /// Survey band name.
    pub band: String,
    /// Flux column.
    pub flux: String,
    /// Flux-error (1σ) column.
    pub error: String,
}

/// How the catalogue marks upper limits (non-detections). Matching entries are masked.
///
/// YAML: `none`, `negative_error`, `{flag_value: -99}`, `{snr_below: 1.0}`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpperLimitConvention {
    /// No convention: every negative / zero / NaN error on a present flux is an error.
    #[default]
    None,
    /// CIGALE: a negative error marks an upper limit (the flux column holds the limit).
    NegativeError,
    /// The flux or the error column equals this value.
    FlagValue(f64),
    /// flux / σ below this threshold.
    SnrBelow(f64),
}

impl CatalogueSpec {
    /// The explicit or inferred file format.
    pub fn resolved_format(&self) -> Result<CatalogueFormat> {
        match self.format {
            Some(f) => Ok(f),
            None => CatalogueFormat::from_path(&self.path),
        }
    }

    /// Resolve a relative `path` against the directory of the manifest.
    pub fn with_base_dir(mut self, dir: impl AsRef<Path>) -> Self {
        if self.path.is_relative() {
            self.path = dir.as_ref().join(&self.path);
        }
        self
    }

    /// The (band, flux column, error column) triples in `band_names` order (or in the
    /// order of `bands:` when `band_names` is empty).
    pub fn band_columns(&self, band_names: &[String]) -> Result<Vec<BandColumns>> {
        match (&self.bands, &self.flux_pattern, &self.error_pattern) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(CatalogError::Spec(
                "give either `bands:` or `flux_pattern:`/`error_pattern:`, not both".into(),
            )),
            (Some(list), None, None) => {
                for (i, b) in list.iter().enumerate() {
                    if list[..i].iter().any(|o| o.band == b.band) {
                        return Err(CatalogError::Spec(format!(
                            "band '{}' listed twice",
                            b.band
                        )));
                    }
                }
                if band_names.is_empty() {
                    return Ok(list.clone());
                }
                if let Some(extra) = list.iter().find(|b| !band_names.contains(&b.band)) {
                    return Err(CatalogError::Spec(format!(
                        "band '{}' is not a band of the survey (bands: {})",
                        extra.band,
                        band_names.join(", ")
                    )));
                }
                band_names
                    .iter()
                    .map(|name| {
                        list.iter()
                            .find(|b| &b.band == name)
                            .cloned()
                            .ok_or_else(|| {
                                CatalogError::Spec(format!(
                                    "survey band '{name}' has no entry in `bands:`"
                                ))
                            })
                    })
                    .collect()
            }
            (None, Some(fp), Some(ep)) => {
                for p in [fp, ep] {
                    if !p.contains("{band}") {
                        return Err(CatalogError::Spec(format!(
                            "pattern '{p}' does not contain {{band}}"
                        )));
                    }
                }
                if band_names.is_empty() {
                    return Err(CatalogError::Spec(
                        "flux_pattern needs the survey's band names".into(),
                    ));
                }
                Ok(band_names
                    .iter()
                    .map(|b| BandColumns {
                        band: b.clone(),
                        flux: fp.replace("{band}", b),
                        error: ep.replace("{band}", b),
                    })
                    .collect())
            }
            (None, Some(_), None) | (None, None, Some(_)) => Err(CatalogError::Spec(
                "flux_pattern and error_pattern must be given together".into(),
            )),
            (None, None, None) => Err(CatalogError::Spec(
                "no band columns: give `bands:` or `flux_pattern:` + `error_pattern:`".into(),
            )),
        }
    }
}
