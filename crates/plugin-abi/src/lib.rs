//! # popcosmos-plugin-abi — the C ABI of popcosmos plugins
//!
//! A plugin is a shared library (`crate-type = ["cdylib"]`) that exports one symbol,
//! [`ENTRY_SYMBOL`] (`popcosmos_plugin_entry`), an `extern "C" fn() -> *const PluginHeader`.
//! The header is the first field of a `#[repr(C)]` vtable of `extern "C"` function
//! pointers: [`SurveyVTable`] (a photometric survey: bands, softening, calibration) or
//! [`PriorVTable`] (a prior over the 16 latent parameters φ: batched log-density and
//! seeded sampling). The host (`popcosmos-plugin-host`) checks [`PluginHeader::abi_version`]
//! and [`PluginHeader::kind`] before it reads anything else, then wraps the vtable in the
//! safe `popcosmos_api::Survey` / `popcosmos_api::Prior` traits.
//!
//! Why a hand-rolled C ABI: Rust has no stable ABI, and a plugin has
//! its own std, allocator and panic runtime. The boundary here is small and numeric, so a
//! table of C function pointers is enough, needs no dependency, is checked at load time and
//! can be implemented in C/C++ too. This crate has no dependencies so plugins build in
//! seconds and never see candle types.
//!
//! ## Writing a plugin in Rust
//! Implement [`SurveyPlugin`] or [`PriorPlugin`] on a type and invoke
//! [`declare_survey_plugin!`] / [`declare_prior_plugin!`] once in the cdylib. The macros
//! emit the vtable and the entry symbol; the generic shims in this crate convert raw
//! pointers to slices, copy strings into the host's buffers and **catch every panic** (a
//! panic never unwinds across `extern "C"`; it becomes [`STATUS_PANIC`] with the message).
//!
//! ## Calling convention (for C implementations)
//! * Every function except `destroy` returns an `i32` status: [`STATUS_OK`], or
//!   [`STATUS_ERROR`] / [`STATUS_PANIC`] with a UTF-8 message written into the
//!   host-owned [`ErrorBuf`] (truncated to `cap` bytes; `len` = full message length).
//! * Strings are returned into host buffers `(buf, cap)`: the plugin copies at most `cap`
//!   bytes and stores the full length in `*len_out`; the host retries with a larger buffer
//!   when the length exceeds `cap`. No allocation ever crosses the boundary.
//! * Arrays are row-major `f32`. `log_prob` / `sample` write at most `out_cap` values and
//!   store the number of values they produced in `*out_len`; the host rejects any count
//!   other than the one it asked for.
//! * A prior handle must be safe to call from several threads at once (the host shares it);
//!   [`PriorPlugin`] therefore requires `Send + Sync`.
//!
//! ## Versioning
//! The first two fields of [`PluginHeader`] (`abi_version`, `kind`) are frozen forever; any
//! other change to the header or the vtables bumps [`ABI_VERSION`], and the host refuses a
//! plugin built against another version with an error naming both versions.

#![warn(missing_docs)]

use std::ffi::{c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Version of the vtable layouts in this crate.
pub const ABI_VERSION: u32 = 1;

/// Name of the exported entry function (without the trailing NUL).
pub const ENTRY_SYMBOL: &str = "popcosmos_plugin_entry";

/// [`PluginHeader::kind`] of a survey plugin ([`SurveyVTable`]).
pub const KIND_SURVEY: u32 = 1;
/// [`PluginHeader::kind`] of a prior plugin ([`PriorVTable`]).
pub const KIND_PRIOR: u32 = 2;

/// Success.
pub const STATUS_OK: i32 = 0;
/// The plugin reported an error (message in the [`ErrorBuf`]).
pub const STATUS_ERROR: i32 = 1;
/// The plugin panicked; the panic was caught at the boundary (message in the [`ErrorBuf`]).
pub const STATUS_PANIC: i32 = 2;

/// Opaque plugin object created by `create` and released by `destroy`.
pub type Handle = *mut c_void;

/// Common head of every vtable; the entry function returns a pointer to it.
#[repr(C)]
pub struct PluginHeader {
    /// [`ABI_VERSION`] the plugin was built against. Frozen position.
    pub abi_version: u32,
    /// [`KIND_SURVEY`] or [`KIND_PRIOR`]. Frozen position.
    pub kind: u32,
    /// NUL-terminated UTF-8 package name of the plugin (static).
    pub plugin_name: *const c_char,
    /// NUL-terminated UTF-8 package version of the plugin (static).
    pub plugin_version: *const c_char,
}

/// Host-owned buffer for an error message.
#[repr(C)]
pub struct ErrorBuf {
    /// Start of the host's buffer (UTF-8 bytes, not NUL-terminated); may be null.
    pub ptr: *mut u8,
    /// Bytes writable at `ptr`; longer messages are truncated to it.
    pub cap: usize,
    /// Set by the plugin to the full message length in bytes (may exceed `cap`).
    pub len: usize,
}

/// Signature of [`ENTRY_SYMBOL`].
pub type EntryFn = unsafe extern "C" fn() -> *const PluginHeader;

/// `create(config, config_len, handle_out, err)`: build the plugin object from a UTF-8
/// configuration string (may be empty).
pub type CreateFn = unsafe extern "C" fn(*const u8, usize, *mut Handle, *mut ErrorBuf) -> i32;
/// `destroy(handle)`: release a handle from `create`. Must not fail.
pub type DestroyFn = unsafe extern "C" fn(Handle);
/// `f(handle, buf, cap, len_out, err)`: a string property.
pub type StrFn = unsafe extern "C" fn(Handle, *mut u8, usize, *mut usize, *mut ErrorBuf) -> i32;
/// `f(handle, index, buf, cap, len_out, err)`: a string property of item `index`.
pub type IndexedStrFn =
    unsafe extern "C" fn(Handle, usize, *mut u8, usize, *mut usize, *mut ErrorBuf) -> i32;
/// `f(handle, out, err)`: a count.
pub type CountFn = unsafe extern "C" fn(Handle, *mut usize, *mut ErrorBuf) -> i32;
/// `band_values(handle, band, out, err)`.
pub type BandValuesFn = unsafe extern "C" fn(Handle, usize, *mut BandValues, *mut ErrorBuf) -> i32;
/// `line_values(handle, line, out, err)`.
pub type LineValuesFn = unsafe extern "C" fn(Handle, usize, *mut LineValues, *mut ErrorBuf) -> i32;
/// `filter_curve(handle, band, wavelength_aa, transmission, cap, out_len, err)`: the band's
/// filter curve (observed-frame Å, increasing; photon-counting response), at most `cap`
/// points into each array; `*out_len` = number of points (0 = no curve for this band).
pub type FilterCurveFn = unsafe extern "C" fn(
    Handle,
    usize,
    *mut f64,
    *mut f64,
    usize,
    *mut usize,
    *mut ErrorBuf,
) -> i32;
/// `log_prob(handle, phi[n·dim], n, out, out_cap, out_len, err)`: ln p(φ) per row
/// (−∞ outside the support).
pub type LogProbFn = unsafe extern "C" fn(
    Handle,
    *const f32,
    usize,
    *mut f32,
    usize,
    *mut usize,
    *mut ErrorBuf,
) -> i32;
/// `sample(handle, n, seed, out, out_cap, out_len, err)`: `n` draws, row-major `[n, dim]`,
/// a deterministic function of `(seed, n)`.
pub type SampleFn =
    unsafe extern "C" fn(Handle, usize, u64, *mut f32, usize, *mut usize, *mut ErrorBuf) -> i32;

/// Numbers of one band.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BandValues {
    /// Asinh-magnitude softening b, nanomaggies (> 0).
    pub flux_softening_nmgy: f64,
    /// Multiplicative zero point Z_b (observed ≈ Z × model, > 0).
    pub zero_point: f64,
    /// Fractional error floor ε_b (≥ 0).
    pub error_floor: f64,
}

/// Calibration of one emission line.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LineValues {
    /// Offset α_l.
    pub offset: f64,
    /// ln of the scatter γ_l.
    pub ln_scatter: f64,
}

/// Survey plugin vtable ([`KIND_SURVEY`]).
#[repr(C)]
pub struct SurveyVTable {
    /// ABI version, kind and plugin name; must stay first.
    pub header: PluginHeader,
    /// Build a survey object from its configuration string.
    pub create: CreateFn,
    /// Release a survey object.
    pub destroy: DestroyFn,
    /// Survey name.
    pub name: StrFn,
    /// Number of bands.
    pub n_bands: CountFn,
    /// Filter name of a band (as the SPS emulator knows it, e.g. `sdss_u`).
    pub band_name: IndexedStrFn,
    /// Short label of a band (e.g. `u`).
    pub band_label: IndexedStrFn,
    /// Softening, zero point and error floor of a band.
    pub band_values: BandValuesFn,
    /// Number of emission lines with a calibration (0 = none).
    pub n_lines: CountFn,
    /// Calibration (offset, ln scatter) of an emission line.
    pub line_values: LineValuesFn,
    /// Filter curve of a band (optional: every band or none).
    pub filter_curve: FilterCurveFn,
}

/// Prior plugin vtable ([`KIND_PRIOR`]).
#[repr(C)]
pub struct PriorVTable {
    /// ABI version, kind and plugin name; must stay first.
    pub header: PluginHeader,
    /// Build a prior object from its configuration string.
    pub create: CreateFn,
    /// Release a prior object.
    pub destroy: DestroyFn,
    /// Prior name (for run records).
    pub name: StrFn,
    /// Dimension of φ (16 for popcosmos).
    pub dim: CountFn,
    /// Batched ln p(φ).
    pub log_prob: LogProbFn,
    /// Seeded draws of φ.
    pub sample: SampleFn,
}

// SAFETY: the tables are immutable statics of function pointers and pointers to static
// NUL-terminated strings.
unsafe impl Sync for SurveyVTable {}
unsafe impl Sync for PriorVTable {}

/// One band of a [`SurveyPlugin`].
#[derive(Debug, Clone, PartialEq)]
pub struct BandDef {
    /// Filter name, as the SPS emulator knows it (e.g. `sdss_u`).
    pub name: String,
    /// Short label for tables and plots (e.g. `u`).
    pub label: String,
    /// Asinh-magnitude softening b, nanomaggies (> 0).
    pub flux_softening_nmgy: f64,
    /// Multiplicative zero point Z_b (observed ≈ Z × model, > 0).
    pub zero_point: f64,
    /// Fractional error floor ε_b (≥ 0).
    pub error_floor: f64,
}

/// One emission line of a [`SurveyPlugin`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LineDef {
    /// Offset α_l.
    pub offset: f64,
    /// ln of the scatter γ_l.
    pub ln_scatter: f64,
}

/// Filter curve of one band of a [`SurveyPlugin`].
#[derive(Debug, Clone, PartialEq)]
pub struct FilterDef {
    /// Observed-frame wavelength, Å (strictly increasing).
    pub wavelength_aa: Vec<f64>,
    /// Photon-counting response (arbitrary normalisation, ≥ 0).
    pub transmission: Vec<f64>,
}

/// A survey implemented in Rust; exported with [`declare_survey_plugin!`].
pub trait SurveyPlugin: Sized + 'static {
    /// Build from the manifest's configuration string (empty if none).
    fn create(config: &str) -> Result<Self, String>;
    /// Survey name (`cosmos`, `kids`, …).
    fn name(&self) -> String;
    /// The bands, in catalogue order, with their calibration.
    fn bands(&self) -> Vec<BandDef>;
    /// Emission-line calibration, one entry per line of the SPS line emulator (none by
    /// default).
    fn emission_lines(&self) -> Vec<LineDef> {
        Vec::new()
    }
    /// Filter curve of band `band` (none by default; give every band a curve or none).
    fn filter_curve(&self, band: usize) -> Option<FilterDef> {
        let _ = band;
        None
    }
}

/// A prior over φ implemented in Rust; exported with [`declare_prior_plugin!`].
pub trait PriorPlugin: Sized + Send + Sync + 'static {
    /// Build from the manifest's configuration string (empty if none).
    fn create(config: &str) -> Result<Self, String>;
    /// Prior name (for run records).
    fn name(&self) -> String;
    /// Dimension of φ.
    fn dim(&self) -> usize {
        16
    }
    /// ln p(φ) for `n` rows of `phi` (row-major `[n, dim]`); must return `n` values,
    /// −∞ outside the support.
    fn log_prob(&self, phi: &[f32], n: usize) -> Result<Vec<f32>, String>;
    /// `n` draws, row-major `[n, dim]`; a deterministic function of `(seed, n)`.
    fn sample(&self, n: usize, seed: u64) -> Result<Vec<f32>, String>;
}

/// `pub const fn $builder<T: $plugin>(name, version) -> $vtable`: the vtable of a plugin
/// kind; `destroy` is the same for every kind, every other field is the shim of its name.
macro_rules! vtable_builder {
    ($(#[$doc:meta])* $builder:ident<$plugin:ident> -> $vtable:ident = $kind:ident
        { create: $create:ident, name: $name:ident, $($field:ident),* }) => {
        $(#[$doc])*
        pub const fn $builder<T: $plugin>(name: &'static str, version: &'static str) -> $vtable {
            $vtable {
                header: header($kind, name, version),
                create: shim::$create::<T>,
                destroy: shim::destroy::<T>,
                name: shim::$name::<T>,
                $($field: shim::$field::<T>,)*
            }
        }
    };
}

vtable_builder! {
    /// Build a survey vtable for `T` (used by [`declare_survey_plugin!`]). `name` and
    /// `version` must end with a NUL byte.
    survey_vtable<SurveyPlugin> -> SurveyVTable = KIND_SURVEY {
        create: survey_create, name: survey_name,
        n_bands, band_name, band_label, band_values, n_lines, line_values, filter_curve
    }
}

vtable_builder! {
    /// Build a prior vtable for `T` (used by [`declare_prior_plugin!`]). `name` and `version`
    /// must end with a NUL byte.
    prior_vtable<PriorPlugin> -> PriorVTable = KIND_PRIOR {
        create: prior_create, name: prior_name, dim, log_prob, sample
    }
}

const fn header(kind: u32, name: &'static str, version: &'static str) -> PluginHeader {
    let (n, v) = (name.as_bytes(), version.as_bytes());
    assert!(
        !n.is_empty() && n[n.len() - 1] == 0 && !v.is_empty() && v[v.len() - 1] == 0,
        "plugin name and version must be NUL-terminated"
    );
    PluginHeader {
        abi_version: ABI_VERSION,
        kind,
        plugin_name: n.as_ptr().cast(),
        plugin_version: v.as_ptr().cast(),
    }
}

/// Export a [`SurveyPlugin`] implementation as this library's plugin.
///
/// ```text
/// popcosmos_plugin_abi::declare_survey_plugin!(MySurvey);
/// ```
#[macro_export]
macro_rules! declare_survey_plugin {
    ($ty:ty) => {
        $crate::__declare_plugin!(SurveyVTable, survey_vtable, $ty);
    };
}

/// Export a [`PriorPlugin`] implementation as this library's plugin.
///
/// ```text
/// popcosmos_plugin_abi::declare_prior_plugin!(MyPrior);
/// ```
#[macro_export]
macro_rules! declare_prior_plugin {
    ($ty:ty) => {
        $crate::__declare_plugin!(PriorVTable, prior_vtable, $ty);
    };
}

/// The entry symbol of [`declare_survey_plugin!`] / [`declare_prior_plugin!`]: a static
/// `$vtable` built by `$builder::<$ty>` with the package's name and version.
#[doc(hidden)]
#[macro_export]
macro_rules! __declare_plugin {
    ($vtable:ident, $builder:ident, $ty:ty) => {
        /// popcosmos plugin entry point (see the popcosmos-plugin-abi crate).
        #[unsafe(no_mangle)]
        pub extern "C" fn popcosmos_plugin_entry() -> *const $crate::PluginHeader {
            static VTABLE: $crate::$vtable = $crate::$builder::<$ty>(
                concat!(env!("CARGO_PKG_NAME"), "\0"),
                concat!(env!("CARGO_PKG_VERSION"), "\0"),
            );
            &VTABLE.header
        }
    };
}

/// Generic `extern "C"` shims between the vtables and the Rust traits. Every body runs
/// inside [`guard`], so a panic in plugin code is caught here and reported as
/// [`STATUS_PANIC`].
mod shim {
    use super::*;

    /// Run `f`, turning `Err` into [`STATUS_ERROR`] and a panic into [`STATUS_PANIC`] with
    /// the message written to `err`.
    pub fn guard(err: *mut ErrorBuf, f: impl FnOnce() -> Result<(), String>) -> i32 {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(())) => STATUS_OK,
            Ok(Err(msg)) => {
                // SAFETY: `err` is null or the host's buffer (calling convention).
                unsafe { write_error(err, &msg) };
                STATUS_ERROR
            }
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".into());
                // The payload may hold plugin allocations: drop it here, on this side.
                drop(payload);
                unsafe { write_error(err, &format!("plugin panicked: {msg}")) };
                STATUS_PANIC
            }
        }
    }

    /// Copy `msg` (truncated) into the host's error buffer.
    ///
    /// # Safety
    /// `err` is null or points to a valid [`ErrorBuf`] whose `ptr` has `cap` writable bytes.
    pub unsafe fn write_error(err: *mut ErrorBuf, msg: &str) {
        if err.is_null() {
            return;
        }
        let e = unsafe { &mut *err };
        let n = msg.len().min(e.cap);
        if n > 0 && !e.ptr.is_null() {
            unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), e.ptr, n) };
        }
        e.len = msg.len();
    }

    /// Copy `values` (at most `cap`) to `out` and store their full number in `len_out`;
    /// `what` names the buffer in the null-pointer error.
    unsafe fn write_slice<V: Copy>(
        values: &[V],
        out: *mut V,
        cap: usize,
        len_out: *mut usize,
        what: &str,
    ) -> Result<(), String> {
        if len_out.is_null() {
            return Err("null length pointer".into());
        }
        let n = values.len().min(cap);
        if n > 0 {
            if out.is_null() {
                return Err(format!("null {what} buffer"));
            }
            unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), out, n) };
        }
        unsafe { *len_out = values.len() };
        Ok(())
    }

    /// Copy the string from `get` (truncated to `cap`) into `buf` and store its full length
    /// in `len_out`.
    unsafe fn write_string(
        buf: *mut u8,
        cap: usize,
        len_out: *mut usize,
        err: *mut ErrorBuf,
        get: impl FnOnce() -> Result<String, String>,
    ) -> i32 {
        guard(err, || unsafe {
            write_slice(get()?.as_bytes(), buf, cap, len_out, "string")
        })
    }

    unsafe fn this<'a, T>(handle: Handle) -> Result<&'a T, String> {
        if handle.is_null() {
            return Err("null plugin handle".into());
        }
        Ok(unsafe { &*(handle as *const T) })
    }

    fn out_of_range(what: &str, i: usize, n: usize) -> String {
        format!("{what} index {i} out of range (the plugin has {n})")
    }

    fn write_count(out: *mut usize, n: usize) -> Result<(), String> {
        if out.is_null() {
            return Err("null output pointer".into());
        }
        unsafe { *out = n };
        Ok(())
    }

    /// `$create` and `$name` (the `create` and `name` entries) for a `$plugin` type.
    macro_rules! kind_shims {
        ($($plugin:ident: $create:ident, $name:ident;)*) => {$(
            #[doc = concat!("`create` for a [`", stringify!($plugin), "`].")]
            pub unsafe extern "C" fn $create<T: $plugin>(
                config: *const u8,
                config_len: usize,
                handle_out: *mut Handle,
                err: *mut ErrorBuf,
            ) -> i32 {
                unsafe { create_with(config, config_len, handle_out, err, T::create) }
            }

            #[doc = concat!("`name` for a [`", stringify!($plugin), "`].")]
            pub unsafe extern "C" fn $name<T: $plugin>(
                handle: Handle,
                buf: *mut u8,
                cap: usize,
                len_out: *mut usize,
                err: *mut ErrorBuf,
            ) -> i32 {
                unsafe { write_string(buf, cap, len_out, err, || Ok(this::<T>(handle)?.name())) }
            }
        )*};
    }

    kind_shims! {
        SurveyPlugin: survey_create, survey_name;
        PriorPlugin: prior_create, prior_name;
    }

    unsafe fn create_with<T>(
        config: *const u8,
        config_len: usize,
        handle_out: *mut Handle,
        err: *mut ErrorBuf,
        make: fn(&str) -> Result<T, String>,
    ) -> i32 {
        guard(err, || {
            if handle_out.is_null() {
                return Err("null handle pointer".into());
            }
            let cfg = if config_len == 0 {
                ""
            } else if config.is_null() {
                return Err("null configuration pointer".into());
            } else {
                let bytes = unsafe { std::slice::from_raw_parts(config, config_len) };
                std::str::from_utf8(bytes)
                    .map_err(|e| format!("configuration is not UTF-8: {e}"))?
            };
            let obj = Box::new(make(cfg)?);
            unsafe { *handle_out = Box::into_raw(obj).cast() };
            Ok(())
        })
    }

    /// `destroy` for any plugin type.
    pub unsafe extern "C" fn destroy<T: 'static>(handle: Handle) {
        if !handle.is_null() {
            // A panicking Drop must not unwind into the host either.
            let _ = catch_unwind(AssertUnwindSafe(|| {
                drop(unsafe { Box::from_raw(handle as *mut T) })
            }));
        }
    }

    /// Count entries: `$name` writes `$count` of the `$plugin` `$p` to `out`.
    macro_rules! count_shims {
        ($($name:ident<$plugin:ident>(|$p:ident| $count:expr);)*) => {$(
            pub unsafe extern "C" fn $name<T: $plugin>(
                handle: Handle,
                out: *mut usize,
                err: *mut ErrorBuf,
            ) -> i32 {
                guard(err, || {
                    let $p = unsafe { this::<T>(handle)? };
                    write_count(out, $count)
                })
            }
        )*};
    }

    count_shims! {
        n_bands<SurveyPlugin>(|s| s.bands().len());
        n_lines<SurveyPlugin>(|s| s.emission_lines().len());
        dim<PriorPlugin>(|p| p.dim());
    }

    fn band<T: SurveyPlugin>(handle: Handle, i: usize) -> Result<BandDef, String> {
        let mut bands = unsafe { this::<T>(handle)? }.bands();
        let n = bands.len();
        if i >= n {
            return Err(out_of_range("band", i, n));
        }
        Ok(bands.swap_remove(i))
    }

    /// Band strings: `$name` writes the `$field` of a band.
    macro_rules! band_str_shims {
        ($($name:ident: $field:ident),*) => {$(
            pub unsafe extern "C" fn $name<T: SurveyPlugin>(
                handle: Handle,
                band: usize,
                buf: *mut u8,
                cap: usize,
                len_out: *mut usize,
                err: *mut ErrorBuf,
            ) -> i32 {
                let get = || Ok(self::band::<T>(handle, band)?.$field);
                unsafe { write_string(buf, cap, len_out, err, get) }
            }
        )*};
    }

    band_str_shims!(band_name: name, band_label: label);

    pub unsafe extern "C" fn band_values<T: SurveyPlugin>(
        handle: Handle,
        band: usize,
        out: *mut BandValues,
        err: *mut ErrorBuf,
    ) -> i32 {
        guard(err, || {
            let b = self::band::<T>(handle, band)?;
            if out.is_null() {
                return Err("null output pointer".into());
            }
            unsafe {
                *out = BandValues {
                    flux_softening_nmgy: b.flux_softening_nmgy,
                    zero_point: b.zero_point,
                    error_floor: b.error_floor,
                }
            };
            Ok(())
        })
    }

    pub unsafe extern "C" fn line_values<T: SurveyPlugin>(
        handle: Handle,
        line: usize,
        out: *mut LineValues,
        err: *mut ErrorBuf,
    ) -> i32 {
        guard(err, || {
            let lines = unsafe { this::<T>(handle)? }.emission_lines();
            let l = lines
                .get(line)
                .ok_or_else(|| out_of_range("line", line, lines.len()))?;
            if out.is_null() {
                return Err("null output pointer".into());
            }
            unsafe {
                *out = LineValues {
                    offset: l.offset,
                    ln_scatter: l.ln_scatter,
                }
            };
            Ok(())
        })
    }

    pub unsafe extern "C" fn filter_curve<T: SurveyPlugin>(
        handle: Handle,
        band: usize,
        wavelength_aa: *mut f64,
        transmission: *mut f64,
        cap: usize,
        out_len: *mut usize,
        err: *mut ErrorBuf,
    ) -> i32 {
        guard(err, || {
            let survey = unsafe { this::<T>(handle)? };
            let n_bands = survey.bands().len();
            if band >= n_bands {
                return Err(out_of_range("band", band, n_bands));
            }
            if out_len.is_null() {
                return Err("null length pointer".into());
            }
            let Some(f) = survey.filter_curve(band) else {
                unsafe { *out_len = 0 };
                return Ok(());
            };
            if f.wavelength_aa.len() != f.transmission.len() {
                return Err(format!(
                    "band {band}: filter curve has {} wavelengths but {} transmission values",
                    f.wavelength_aa.len(),
                    f.transmission.len()
                ));
            }
            let n = f.wavelength_aa.len().min(cap);
            if n > 0 {
                if wavelength_aa.is_null() || transmission.is_null() {
                    return Err("null filter buffer".into());
                }
                unsafe {
                    std::ptr::copy_nonoverlapping(f.wavelength_aa.as_ptr(), wavelength_aa, n);
                    std::ptr::copy_nonoverlapping(f.transmission.as_ptr(), transmission, n);
                }
            }
            unsafe { *out_len = f.wavelength_aa.len() };
            Ok(())
        })
    }

    /// Row-output entries of a prior: `$name(handle, $args.., out, out_cap, out_len, err)`
    /// writes the values `$values` of the prior `$p` (at most `out_cap`) to `out`.
    macro_rules! rows_shims {
        ($($name:ident($($arg:ident: $ty:ty),*) |$p:ident| $values:expr;)*) => {$(
            pub unsafe extern "C" fn $name<T: PriorPlugin>(
                handle: Handle,
                $($arg: $ty,)*
                out: *mut f32,
                out_cap: usize,
                out_len: *mut usize,
                err: *mut ErrorBuf,
            ) -> i32 {
                guard(err, || {
                    let $p = unsafe { this::<T>(handle)? };
                    let values = $values?;
                    unsafe { write_slice(&values, out, out_cap, out_len, "output") }
                })
            }
        )*};
    }

    rows_shims! {
        log_prob(phi: *const f32, n: usize) |prior| unsafe { log_prob_rows(prior, phi, n) };
        sample(n: usize, seed: u64) |prior| prior.sample(n, seed);
    }

    /// `log_prob` of `n` rows of `phi` (`n · dim` values; null only when that is 0).
    unsafe fn log_prob_rows<T: PriorPlugin>(
        prior: &T,
        phi: *const f32,
        n: usize,
    ) -> Result<Vec<f32>, String> {
        let len = n.checked_mul(prior.dim()).ok_or("batch size overflows")?;
        let phi = if len == 0 {
            &[][..]
        } else if phi.is_null() {
            return Err("null φ buffer".into());
        } else {
            unsafe { std::slice::from_raw_parts(phi, len) }
        };
        prior.log_prob(phi, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct LongName;

    impl SurveyPlugin for LongName {
        fn create(config: &str) -> Result<Self, String> {
            match config {
                "panic" => panic!("boom"),
                "long-error" => Err("e".repeat(100)),
                _ => Ok(LongName),
            }
        }
        fn name(&self) -> String {
            "x".repeat(300)
        }
        fn bands(&self) -> Vec<BandDef> {
            Vec::new()
        }
    }

    static VT: SurveyVTable = survey_vtable::<LongName>("long-name\0", "0.0.1\0");

    #[test]
    fn calling_convention_truncates_reports_lengths_and_catches_panics() {
        assert_eq!(
            (VT.header.abi_version, VT.header.kind),
            (ABI_VERSION, KIND_SURVEY)
        );
        let mut ebuf = [0u8; 64];
        let mut err = ErrorBuf {
            ptr: ebuf.as_mut_ptr(),
            cap: ebuf.len(),
            len: 0,
        };
        let mut h: Handle = std::ptr::null_mut();
        // A panic in create comes back as a status and a message.
        let cfg = b"panic";
        let s = unsafe { (VT.create)(cfg.as_ptr(), cfg.len(), &mut h, &mut err) };
        assert_eq!(s, STATUS_PANIC);
        assert_eq!(&ebuf[..err.len], b"plugin panicked: boom");
        assert!(h.is_null());
        // A message longer than the buffer: truncated, full length reported.
        let cfg = b"long-error";
        let s = unsafe { (VT.create)(cfg.as_ptr(), cfg.len(), &mut h, &mut err) };
        assert_eq!((s, err.len), (STATUS_ERROR, 100));
        assert_eq!(ebuf, [b'e'; 64]);
        // Strings: at most `cap` bytes copied, the full length reported.
        let s = unsafe { (VT.create)(std::ptr::null(), 0, &mut h, &mut err) };
        assert!(s == STATUS_OK && !h.is_null());
        let (mut buf, mut len) = ([0u8; 10], 0usize);
        let s = unsafe { (VT.name)(h, buf.as_mut_ptr(), buf.len(), &mut len, &mut err) };
        assert_eq!((s, len, &buf), (STATUS_OK, 300, b"xxxxxxxxxx"));
        // Out-of-range items are errors, not reads past the end.
        let mut v = BandValues::default();
        let s = unsafe { (VT.band_values)(h, 0, &mut v, &mut err) };
        assert_eq!(s, STATUS_ERROR);
        let msg = String::from_utf8_lossy(&ebuf[..err.len.min(64)]).to_string();
        assert!(msg.contains("band index 0 out of range"), "{msg}");
        unsafe { (VT.destroy)(h) };
    }
}
