//! Streaming catalogue reader: fixed-size chunks of validated photometry in nanomaggies.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use popcosmos_api::{Device, Observations, Tensor};

use crate::error::{CatalogError, Result, display};
use crate::source::{RowSource, open_source};
use crate::spec::{BandColumns, CatalogueSpec, FluxUnit, UpperLimitConvention};

/// Magnitudes this far from zero are sentinels (99, −99, 99.99, …), not measurements.
const MAG_SENTINEL_ABS: f64 = 50.0;

/// Rows a chunk reserves memory for up front; larger chunks grow as their rows are read.
const CHUNK_RESERVE_ROWS: usize = 4096;

/// Fluxes or uncertainties this large (in nanomaggies, after unit conversion) are sentinels,
/// not measurements: 1e20 nmgy is AB magnitude −27.5, brighter than any galaxy, while
/// catalogues use values such as 1e29 (KiDS) or 1e30 for "no measurement". Such a band is
/// treated as missing, like a `missing_values` sentinel.
pub const ABSURD_FLUX_NMGY: f64 = 1e20;

/// A chunk of galaxies, `[rows, bands]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedChunk {
    /// 0-based index of the chunk's first row in the catalogue.
    pub row_offset: usize,
    /// Galaxy ids, one per row.
    pub ids: Vec<String>,
    /// Bands per row (the row stride of the flux, error and mask vectors).
    pub n_bands: usize,
    /// Observed flux, nanomaggies (0 where masked).
    pub flux_nmgy: Vec<f32>,
    /// 1σ uncertainty, nanomaggies (1 where masked).
    pub flux_err_nmgy: Vec<f32>,
    /// 1 = used, 0 = missing or non-detection.
    pub mask: Vec<f32>,
    /// The spec's `truth_columns` (sentinels and empty cells → NaN), one value per row.
    pub truth: BTreeMap<String, Vec<f64>>,
}

impl ObservedChunk {
    /// Galaxies in the chunk.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when the chunk holds no galaxies.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The chunk as `[galaxies, bands]` f32 tensors on `device`.
    pub fn to_observations(&self, device: &Device) -> popcosmos_api::Result<Observations> {
        let shape = (self.len(), self.n_bands);
        Ok(Observations {
            flux_nmgy: Tensor::from_slice(&self.flux_nmgy, shape, device)?,
            flux_err_nmgy: Tensor::from_slice(&self.flux_err_nmgy, shape, device)?,
            mask: Tensor::from_slice(&self.mask, shape, device)?,
        })
    }

    fn empty(row_offset: usize, n_bands: usize, truth: &[String]) -> Self {
        Self {
            row_offset,
            ids: Vec::new(),
            n_bands,
            flux_nmgy: Vec::new(),
            flux_err_nmgy: Vec::new(),
            mask: Vec::new(),
            truth: truth.iter().map(|t| (t.clone(), Vec::new())).collect(),
        }
    }
}

/// What one (flux, error) cell pair means.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Entry {
    Measured(f64, f64),
    Masked,
}

/// Streams a catalogue in chunks; memory is bounded by the chunk size (plus the set of
/// ids seen so far, kept to reject duplicates).
pub struct CatalogueReader {
    path: PathBuf,
    file: String,
    id_column: String,
    units: FluxUnit,
    upper_limits: UpperLimitConvention,
    missing_values: Vec<f64>,
    bands: Vec<BandColumns>,
    truth_columns: Vec<String>,
    source: Box<dyn RowSource>,
    /// The first row, read at `open` to detect an empty catalogue.
    pending: Option<(String, Vec<f64>)>,
    rows_read: usize,
    seen: HashMap<String, usize>,
    done: bool,
}

impl CatalogueReader {
    /// Open the catalogue, resolve the band columns for `band_names` (survey order) and
    /// check every needed column exists.
    pub fn open(spec: &CatalogueSpec, band_names: &[String]) -> Result<Self> {
        let bands = spec.band_columns(band_names)?;
        let format = spec.resolved_format()?;
        let columns = Self::needed_columns(spec, &bands);
        // The catalogue the manifest names cannot be opened: say which key names it.
        let source = open_source(&spec.path, format, Some(&spec.id_column), &columns).map_err(
            |e| match e {
                CatalogError::Io { file, source } => CatalogError::Io {
                    file: format!("catalogue.path: {file}"),
                    source,
                },
                other => other,
            },
        )?;
        Self::from_source(spec, bands, columns, source)
    }

    /// Stream an in-memory table (see [`crate::MemoryTable`]) with the checks and unit
    /// conversions of [`CatalogueReader::open`]; `spec.path` only names the table in errors.
    pub fn from_memory(
        spec: &CatalogueSpec,
        band_names: &[String],
        table: crate::MemoryTable,
    ) -> Result<Self> {
        let bands = spec.band_columns(band_names)?;
        let columns = Self::needed_columns(spec, &bands);
        let source = table.into_source(&spec.path, &spec.id_column, &columns)?;
        Self::from_source(spec, bands, columns, source)
    }

    /// Flux and error column of every band, then the truth columns.
    fn needed_columns(spec: &CatalogueSpec, bands: &[BandColumns]) -> Vec<String> {
        let mut columns = Vec::with_capacity(2 * bands.len() + spec.truth_columns.len());
        for b in bands {
            columns.push(b.flux.clone());
            columns.push(b.error.clone());
        }
        columns.extend(spec.truth_columns.iter().cloned());
        columns
    }

    fn from_source(
        spec: &CatalogueSpec,
        bands: Vec<BandColumns>,
        columns: Vec<String>,
        mut source: Box<dyn RowSource>,
    ) -> Result<Self> {
        let mut id = String::new();
        let mut values = vec![0.0; columns.len()];
        if !source.next_row(&mut id, &mut values)? {
            return Err(CatalogError::Empty {
                file: display(&spec.path),
            });
        }
        Ok(Self {
            path: spec.path.clone(),
            file: display(&spec.path),
            id_column: spec.id_column.clone(),
            units: spec.units,
            upper_limits: spec.upper_limits,
            missing_values: spec.missing_values.clone(),
            bands,
            truth_columns: spec.truth_columns.clone(),
            source,
            pending: Some((id, values)),
            rows_read: 0,
            seen: HashMap::new(),
            done: false,
        })
    }

    /// The catalogue's `path` from the spec (the file name used in errors).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Band columns in output order.
    pub fn bands(&self) -> &[BandColumns] {
        &self.bands
    }

    /// Number of bands.
    pub fn n_bands(&self) -> usize {
        self.bands.len()
    }

    /// Rows returned so far.
    pub fn rows_read(&self) -> usize {
        self.rows_read
    }

    /// The next at most `max_rows` rows (`max_rows` ≥ 1); `None` once the catalogue is exhausted.
    pub fn next_chunk(&mut self, max_rows: usize) -> Result<Option<ObservedChunk>> {
        let max_rows = max_rows.max(1);
        if self.done {
            return Ok(None);
        }
        let n_bands = self.bands.len();
        let mut chunk = ObservedChunk::empty(self.rows_read, n_bands, &self.truth_columns);
        // Reserve for what a chunk usually holds, not for `max_rows`: the vectors grow with
        // the rows actually read, so a huge `galaxies_per_batch` over a small catalogue
        // allocates only what the catalogue has.
        let reserve = max_rows.min(CHUNK_RESERVE_ROWS);
        chunk.ids.reserve(reserve);
        chunk.flux_nmgy.reserve(reserve * n_bands);
        let mut id = String::new();
        let mut values = vec![0.0; 2 * n_bands + self.truth_columns.len()];
        while chunk.len() < max_rows {
            if let Some((pid, pvalues)) = self.pending.take() {
                id = pid;
                values = pvalues;
            } else if !self.source.next_row(&mut id, &mut values)? {
                self.done = true;
                break;
            }
            self.push_row(&mut chunk, &id, &values)?;
        }
        Ok(if chunk.is_empty() { None } else { Some(chunk) })
    }

    /// Read everything left as one chunk (small catalogues; memory is not bounded).
    pub fn read_all(&mut self) -> Result<ObservedChunk> {
        let mut all = ObservedChunk::empty(self.rows_read, self.bands.len(), &self.truth_columns);
        while let Some(c) = self.next_chunk(65_536)? {
            all.ids.extend(c.ids);
            all.flux_nmgy.extend(c.flux_nmgy);
            all.flux_err_nmgy.extend(c.flux_err_nmgy);
            all.mask.extend(c.mask);
            for (k, v) in c.truth {
                all.truth.entry(k).or_default().extend(v);
            }
        }
        Ok(all)
    }

    fn push_row(&mut self, chunk: &mut ObservedChunk, id: &str, values: &[f64]) -> Result<()> {
        let row = self.rows_read + 1;
        if id.is_empty() {
            return Err(CatalogError::Value {
                file: self.file.clone(),
                row,
                column: self.id_column.clone(),
                message: "empty id".into(),
            });
        }
        if let Some(&first_row) = self.seen.get(id) {
            return Err(CatalogError::DuplicateId {
                file: self.file.clone(),
                column: self.id_column.clone(),
                id: id.to_string(),
                first_row,
                row,
            });
        }
        for (b, band) in self.bands.iter().enumerate() {
            match self.entry(row, band, values[2 * b], values[2 * b + 1])? {
                Entry::Measured(f, e) => {
                    chunk.flux_nmgy.push(f as f32);
                    chunk.flux_err_nmgy.push(e as f32);
                    chunk.mask.push(1.0);
                }
                Entry::Masked => {
                    chunk.flux_nmgy.push(0.0);
                    chunk.flux_err_nmgy.push(1.0);
                    chunk.mask.push(0.0);
                }
            }
        }
        let truth_values = &values[2 * self.bands.len()..];
        for (name, &v) in self.truth_columns.iter().zip(truth_values) {
            let v = if self.is_sentinel(v) { f64::NAN } else { v };
            chunk
                .truth
                .get_mut(name)
                .expect("truth column initialised")
                .push(v);
        }
        self.seen.insert(id.to_string(), row);
        chunk.ids.push(id.to_string());
        self.rows_read += 1;
        Ok(())
    }

    fn is_sentinel(&self, v: f64) -> bool {
        self.missing_values.contains(&v)
    }

    /// Validate one (value, error) pair and convert it to nanomaggies.
    fn entry(&self, row: usize, band: &BandColumns, value: f64, error: f64) -> Result<Entry> {
        let bad = |column: &str, message: String| CatalogError::Value {
            file: self.file.clone(),
            row,
            column: column.to_string(),
            message,
        };
        let is_mag = self.units == FluxUnit::AbMag;
        if value.is_nan()
            || self.is_sentinel(value)
            || self.is_sentinel(error)
            || (is_mag && value.abs() >= MAG_SENTINEL_ABS)
        {
            return Ok(Entry::Masked);
        }
        if !value.is_finite() {
            return Err(bad(&band.flux, format!("non-finite value {value}")));
        }
        if self.units.to_nmgy(value, 0.0).0.abs() >= ABSURD_FLUX_NMGY {
            return Ok(Entry::Masked);
        }
        match self.upper_limits {
            UpperLimitConvention::NegativeError if error < 0.0 => return Ok(Entry::Masked),
            UpperLimitConvention::FlagValue(flag) if error == flag || value == flag => {
                return Ok(Entry::Masked);
            }
            _ => {}
        }
        if error.is_nan() {
            return Err(bad(
                &band.error,
                "missing (NaN) uncertainty on a present measurement".into(),
            ));
        }
        if error < 0.0 {
            return Err(bad(
                &band.error,
                format!(
                    "negative uncertainty {error} (set `upper_limits: negative_error` if negative errors mark upper limits)"
                ),
            ));
        }
        if error == 0.0 {
            return Err(bad(&band.error, "zero uncertainty".into()));
        }
        if !error.is_finite() {
            return Err(bad(&band.error, format!("non-finite uncertainty {error}")));
        }
        let (flux, sigma) = self.units.to_nmgy(value, error);
        if sigma >= ABSURD_FLUX_NMGY {
            return Ok(Entry::Masked);
        }
        if let UpperLimitConvention::SnrBelow(threshold) = self.upper_limits
            && flux / sigma < threshold
        {
            return Ok(Entry::Masked);
        }
        Ok(Entry::Measured(flux, sigma))
    }
}
