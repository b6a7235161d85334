//! Filter transmission curves: photon-counting response against observed-frame wavelength
//! (Å), parsed from two-column text files. Shared by surveys (band definitions) and the SPS
//! crate (spectrum → photometry through any filter set).

use crate::{Error, Result};

/// A filter transmission curve.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterCurve {
    /// Filter name, e.g. `hsc_g`.
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

    /// Transmission at `lambda_aa`, linear between knots, 0 outside the curve.
    pub fn transmission_at(&self, lambda_aa: f64) -> f64 {
        let w = &self.wavelength_aa;
        let k = w.partition_point(|&v| v <= lambda_aa);
        if k == 0 || k == w.len() {
            // Outside, or exactly on the last knot.
            return if k == w.len() && lambda_aa == w[k - 1] {
                self.transmission[k - 1]
            } else {
                0.0
            };
        }
        let f = (lambda_aa - w[k - 1]) / (w[k] - w[k - 1]);
        self.transmission[k - 1] + f * (self.transmission[k] - self.transmission[k - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmission_is_interpolated_linearly_and_zero_outside() {
        let f = FilterCurve::parse("x", "1000 0.0\n2000 1.0\n3000 0.5\n", "x.txt").unwrap();
        assert_eq!(f.transmission_at(999.0), 0.0);
        assert_eq!(f.transmission_at(1500.0), 0.5);
        assert_eq!(f.transmission_at(2000.0), 1.0);
        assert_eq!(f.transmission_at(2500.0), 0.75);
        assert_eq!(f.transmission_at(3000.0), 0.5);
        assert_eq!(f.transmission_at(3000.5), 0.0);
    }

    #[test]
    fn malformed_curve_names_file_and_line() {
        let err = FilterCurve::parse("x", "# c\n1000 0.1\nabc 0.2\n", "my.txt")
            .unwrap_err()
            .to_string();
        assert!(err.contains("my.txt") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn pivot_of_a_top_hat() {
        // Top hat on [a, b]: λ_p² = (b² − a²) / (2 ln(b/a)).
        let n = 2001;
        let wavelength_aa: Vec<f64> = (0..n).map(|i| 4000.0 + i as f64 * 0.5).collect();
        let c = FilterCurve {
            name: "t".into(),
            wavelength_aa,
            transmission: vec![1.0; n],
        };
        let (a, b) = (4000f64, 5000f64);
        let exact = ((b * b - a * a) / 2.0 / (b / a).ln()).sqrt();
        assert!(
            (c.pivot_wavelength_aa() - exact).abs() < 1e-3,
            "{}",
            c.pivot_wavelength_aa()
        );
    }
}
