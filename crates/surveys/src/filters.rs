//! Filter transmission curves (photon-counting response, wavelength in Å), bundled for the
//! built-in surveys (sources in each file's header and in NOTICE).

use popcosmos_api::{Error, Result};

/// A filter transmission curve.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterCurve {
    pub name: String,
    /// Observed-frame wavelength, Å (increasing).
    pub wavelength_aa: Vec<f64>,
    /// Photon-counting response (arbitrary normalisation).
    pub transmission: Vec<f64>,
}

impl FilterCurve {
    /// Parse a two-column text file (`#` comments); `source` names the file in errors.
    pub fn parse(name: &str, text: &str, source: &str) -> Result<Self> {
        let mut wavelength_aa = Vec::new();
        let mut transmission = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut it = line.split_whitespace();
            let parse = |s: Option<&str>| -> Result<f64> {
                s.and_then(|v| v.parse::<f64>().ok())
                    .ok_or_else(|| Error::Format {
                        file: source.to_string(),
                        message: format!(
                            "line {}: expected two numbers 'wavelength transmission', got '{line}'",
                            i + 1
                        ),
                    })
            };
            let (w, t) = (parse(it.next())?, parse(it.next())?);
            if let Some(&last) = wavelength_aa.last()
                && w <= last
            {
                return Err(Error::Format {
                    file: source.to_string(),
                    message: format!(
                        "line {}: wavelengths must increase ({w} after {last})",
                        i + 1
                    ),
                });
            }
            wavelength_aa.push(w);
            transmission.push(t);
        }
        if wavelength_aa.len() < 2 {
            return Err(Error::Format {
                file: source.to_string(),
                message: "fewer than two points".into(),
            });
        }
        Ok(Self {
            name: name.to_string(),
            wavelength_aa,
            transmission,
        })
    }

    /// Read a filter file from disk.
    pub fn from_path(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        Self::parse(&name, &text, &path.display().to_string())
    }

    /// Pivot wavelength λ_p = sqrt(∫Tλ dλ / ∫T/λ dλ), Å.
    pub fn pivot_wavelength_aa(&self) -> f64 {
        let (mut a, mut b) = (0.0, 0.0);
        for k in 1..self.wavelength_aa.len() {
            let (l0, l1) = (self.wavelength_aa[k - 1], self.wavelength_aa[k]);
            let (t0, t1) = (self.transmission[k - 1], self.transmission[k]);
            let dl = l1 - l0;
            a += 0.5 * dl * (t0 * l0 + t1 * l1);
            b += 0.5 * dl * (t0 / l0 + t1 / l1);
        }
        (a / b).sqrt()
    }
}

const COSMOS_FILTERS: &[(&str, &str)] = &[
    (
        "NB711.SuprimeCam",
        include_str!("../../../assets/filters/cosmos/NB711.SuprimeCam.txt"),
    ),
    (
        "NB816.SuprimeCam",
        include_str!("../../../assets/filters/cosmos/NB816.SuprimeCam.txt"),
    ),
    (
        "hsc_g",
        include_str!("../../../assets/filters/cosmos/hsc_g.txt"),
    ),
    (
        "hsc_i",
        include_str!("../../../assets/filters/cosmos/hsc_i.txt"),
    ),
    (
        "hsc_r",
        include_str!("../../../assets/filters/cosmos/hsc_r.txt"),
    ),
    (
        "hsc_y",
        include_str!("../../../assets/filters/cosmos/hsc_y.txt"),
    ),
    (
        "hsc_z",
        include_str!("../../../assets/filters/cosmos/hsc_z.txt"),
    ),
    (
        "ia427_cosmos",
        include_str!("../../../assets/filters/cosmos/ia427_cosmos.txt"),
    ),
    (
        "ia464_cosmos",
        include_str!("../../../assets/filters/cosmos/ia464_cosmos.txt"),
    ),
    (
        "ia484_cosmos",
        include_str!("../../../assets/filters/cosmos/ia484_cosmos.txt"),
    ),
    (
        "ia505_cosmos",
        include_str!("../../../assets/filters/cosmos/ia505_cosmos.txt"),
    ),
    (
        "ia527_cosmos",
        include_str!("../../../assets/filters/cosmos/ia527_cosmos.txt"),
    ),
    (
        "ia574_cosmos",
        include_str!("../../../assets/filters/cosmos/ia574_cosmos.txt"),
    ),
    (
        "ia624_cosmos",
        include_str!("../../../assets/filters/cosmos/ia624_cosmos.txt"),
    ),
    (
        "ia679_cosmos",
        include_str!("../../../assets/filters/cosmos/ia679_cosmos.txt"),
    ),
    (
        "ia709_cosmos",
        include_str!("../../../assets/filters/cosmos/ia709_cosmos.txt"),
    ),
    (
        "ia738_cosmos",
        include_str!("../../../assets/filters/cosmos/ia738_cosmos.txt"),
    ),
    (
        "ia767_cosmos",
        include_str!("../../../assets/filters/cosmos/ia767_cosmos.txt"),
    ),
    (
        "ia827_cosmos",
        include_str!("../../../assets/filters/cosmos/ia827_cosmos.txt"),
    ),
    (
        "irac1_cosmos",
        include_str!("../../../assets/filters/cosmos/irac1_cosmos.txt"),
    ),
    (
        "irac2_cosmos",
        include_str!("../../../assets/filters/cosmos/irac2_cosmos.txt"),
    ),
    (
        "u_megaprime_sagem",
        include_str!("../../../assets/filters/cosmos/u_megaprime_sagem.txt"),
    ),
    (
        "uvista_h_cosmos",
        include_str!("../../../assets/filters/cosmos/uvista_h_cosmos.txt"),
    ),
    (
        "uvista_j_cosmos",
        include_str!("../../../assets/filters/cosmos/uvista_j_cosmos.txt"),
    ),
    (
        "uvista_ks_cosmos",
        include_str!("../../../assets/filters/cosmos/uvista_ks_cosmos.txt"),
    ),
    (
        "uvista_y_cosmos",
        include_str!("../../../assets/filters/cosmos/uvista_y_cosmos.txt"),
    ),
];

/// Bundled COSMOS filter curve by emulator band name.
pub fn cosmos_filter(name: &str) -> Result<FilterCurve> {
    COSMOS_FILTERS
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| Error::Invalid(format!("no bundled COSMOS filter curve named '{name}'")))
        .and_then(|(n, text)| {
            FilterCurve::parse(n, text, &format!("assets/filters/cosmos/{n}.txt"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pivot_wavelengths_are_in_the_band() {
        let g = cosmos_filter("hsc_g").unwrap();
        let p = g.pivot_wavelength_aa();
        assert!(p > 4600.0 && p < 4900.0, "{p}");
        let ch1 = cosmos_filter("irac1_cosmos").unwrap().pivot_wavelength_aa();
        assert!(ch1 > 34000.0 && ch1 < 37000.0, "{ch1}");
    }

    #[test]
    fn malformed_curve_names_file_and_line() {
        let err = FilterCurve::parse("x", "# c\n1000 0.1\nabc 0.2\n", "my.txt")
            .unwrap_err()
            .to_string();
        assert!(err.contains("my.txt") && err.contains("line 3"), "{err}");
    }
}
