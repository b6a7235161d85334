//! Serde configuration of a normalizing flow, stored as JSON in the `config` metadata entry
//! of its safetensors file (format `popcosmos/flow/v1`).

use serde::{Deserialize, Serialize};

use super::spline::SplineConfig;

/// Architecture of a rational-quadratic spline coupling flow.
///
/// Layer `l` (data → base direction) optionally applies a per-dimension affine map
/// (ActNorm-like, `y = x e^{s} + b`), then a coupling transform: the coordinates listed in
/// `masks[l]` go through elementwise splines whose 3K − 1 parameters each are produced by
/// an MLP (SiLU) of the remaining coordinates; the other coordinates pass through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    /// Dimension D of the modelled variable (≥ 2).
    pub dim: usize,
    /// Hidden layer widths of every conditioner MLP: `[D − |mask|] + hidden + [|mask|(3K−1)]`.
    pub hidden: Vec<usize>,
    /// Shape of the coupling splines.
    pub spline: SplineConfig,
    /// Per-dimension invertible affine map before each coupling.
    #[serde(default)]
    pub actnorm: bool,
    /// Transformed coordinates of each coupling layer (the layer count is `masks.len()`).
    pub masks: Vec<Vec<usize>>,
    /// Names of the D modelled columns (optional; e.g. the latent φ names for a prior).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

impl FlowConfig {
    /// A config with `layers` couplings on [`default_masks`].
    pub fn new(dim: usize, layers: usize, hidden: Vec<usize>, spline: SplineConfig) -> Self {
        Self {
            dim,
            hidden,
            spline,
            actnorm: false,
            masks: default_masks(dim, layers),
            names: Vec::new(),
        }
    }

    /// Number of coupling layers.
    pub fn layers(&self) -> usize {
        self.masks.len()
    }

    /// Check the config makes sense (names the offending key).
    pub fn validate(&self) -> Result<(), String> {
        let d = self.dim;
        if d < 2 {
            return Err(format!("dim must be >= 2 for a coupling flow (got {d})"));
        }
        self.spline.validate()?;
        if self.masks.is_empty() {
            return Err("masks: a flow needs at least one coupling layer".into());
        }
        if self.hidden.contains(&0) {
            return Err("hidden: layer widths must be > 0".into());
        }
        for (l, m) in self.masks.iter().enumerate() {
            let mut seen = vec![false; d];
            for &i in m {
                if i >= d || seen[i] {
                    return Err(format!(
                        "masks[{l}]: index {i} is out of range or repeated (dim {d})"
                    ));
                }
                seen[i] = true;
            }
            if m.is_empty() || m.len() == d {
                return Err(format!(
                    "masks[{l}]: a coupling must transform some but not all coordinates"
                ));
            }
        }
        if !self.names.is_empty() && self.names.len() != d {
            return Err(format!("names: {} names for dim {d}", self.names.len()));
        }
        Ok(())
    }
}

/// Bit masks: layers `2r` and `2r + 1` split the coordinates by bit `r mod ⌈log₂ D⌉` of their
/// index (layer `2r` transforms those with the bit clear, `2r + 1` the others), so after
/// 2⌈log₂ D⌉ layers every pair of coordinates has been on opposite sides of some coupling.
pub fn default_masks(dim: usize, layers: usize) -> Vec<Vec<usize>> {
    let bits = (usize::BITS - (dim.max(2) - 1).leading_zeros()) as usize;
    (0..layers)
        .map(|l| {
            let bit = (l / 2) % bits;
            let want = l % 2;
            (0..dim).filter(|i| (i >> bit) & 1 == want).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_masks_separate_every_pair() {
        for dim in 2usize..=20 {
            let bits = (usize::BITS - (dim - 1).leading_zeros()) as usize;
            let masks = default_masks(dim, 2 * bits);
            let cfg = FlowConfig {
                masks: masks.clone(),
                ..FlowConfig::new(dim, 1, vec![8], SplineConfig::default())
            };
            cfg.validate().unwrap();
            for i in 0..dim {
                for j in 0..i {
                    assert!(
                        masks.iter().any(|m| m.contains(&i) != m.contains(&j)),
                        "dim {dim}: {i} and {j} never separated"
                    );
                }
            }
        }
        assert_eq!(default_masks(2, 2), vec![vec![0], vec![1]]);
    }
}
