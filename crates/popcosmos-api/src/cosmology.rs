//! Cosmology helpers.
//!
//! Two flavours, as in the reference:
//! * [`Planck18`]: astropy's `Planck18` (flat ΛCDM with photons and one massive neutrino,
//!   m_ν = 0.06 eV, N_eff = 3.046), integrated numerically. pop-cosmos uses it for the
//!   N ↔ log10 M_formed conversion of derived quantities, and for ages/SFH bins.
//! * [`pade`]: the Adachi & Kasai (2012) Padé approximation for flat ΛCDM without radiation
//!   (Ω_m = 0.30966, H₀ = 67.66), used by the Prospector-α prior (`ProspectorModel`),
//!   closed-form so it runs as tensor ops on the device.

use candle_core::Tensor;

use crate::Result;

/// Speed of light in km/s.
pub const C_KM_S: f64 = 299_792.458;
/// One megaparsec in km.
pub const MPC_KM: f64 = 3.085_677_581_491_367e19;
/// Seconds per gigayear (Julian years, as astropy).
pub const GYR_S: f64 = 3.15576e16;

/// astropy `Planck18` background cosmology.
#[derive(Debug, Clone)]
pub struct Planck18 {
    /// Hubble constant, km/s/Mpc.
    pub h0: f64,
    /// Matter density today (with the massive neutrinos' non-relativistic part excluded).
    pub om0: f64,
    /// Photon density today.
    pub ogamma0: f64,
    /// Dark-energy density today (flat: 1 − the rest).
    pub ode0: f64,
    /// m_ν / (k_B T_ν0) for the massive species.
    nu_y: f64,
    n_massless: f64,
    neff_per_nu: f64,
    table: DistanceTable,
}

#[derive(Debug, Clone)]
struct DistanceTable {
    dz: f64,
    /// Comoving distance in Mpc on z = k·dz.
    comoving_mpc: Vec<f64>,
    /// Age of the universe in Gyr on the same grid.
    age_gyr: Vec<f64>,
}

const Z_TABLE_MAX: f64 = 20.0;
const Z_TABLE_STEP: f64 = 1e-3;

impl Default for Planck18 {
    fn default() -> Self {
        Self::new()
    }
}

impl Planck18 {
    /// The Planck 2018 parameters (Planck Collaboration 2020, as in astropy).
    pub fn new() -> Self {
        let h0 = 67.66;
        let om0 = 0.30966;
        let tcmb0: f64 = 2.7255;
        let neff = 3.046;
        // Photon density: Ω_γ = (4σ_SB/c³) T⁴ / ρ_crit (astropy's a_B_c2 / critical_density0).
        let sigma_sb = 5.670_374_419e-8; // W m⁻² K⁻⁴
        let c: f64 = 299_792_458.0; // m/s
        let g = 6.674_30e-11; // m³ kg⁻¹ s⁻²
        let h0_si = h0 * 1e3 / (MPC_KM * 1e3); // s⁻¹
        let rho_crit = 3.0 * h0_si * h0_si / (8.0 * std::f64::consts::PI * g); // kg/m³
        let ogamma0 = 4.0 * sigma_sb / c.powi(3) * tcmb0.powi(4) / rho_crit;
        let t_nu0 = 0.713_765_855_503_608_2 * tcmb0;
        let kb_ev = 8.617_333_262e-5;
        let nu_y = 0.06 / (kb_ev * t_nu0);
        let mut p = Self {
            h0,
            om0,
            ogamma0,
            ode0: 0.0,
            nu_y,
            n_massless: 2.0,
            neff_per_nu: neff / 3.0,
            table: DistanceTable {
                dz: Z_TABLE_STEP,
                comoving_mpc: vec![],
                age_gyr: vec![],
            },
        };
        let onu0 = ogamma0 * p.nu_relative_density(0.0);
        p.ode0 = 1.0 - om0 - ogamma0 - onu0;
        p.table = p.build_table();
        p
    }

    /// astropy `nu_relative_density` (Komatsu et al. 2011 fitting function).
    fn nu_relative_density(&self, z: f64) -> f64 {
        let prefac = 0.227_107_317_660_239_4; // (7/8)(4/11)^(4/3)
        let p = 1.83;
        let k = 0.3173;
        let y = self.nu_y / (1.0 + z);
        let rel_mass = (1.0 + (k * y).powf(p)).powf(1.0 / p) + self.n_massless;
        prefac * self.neff_per_nu * rel_mass
    }

    /// E(z) = H(z)/H₀.
    pub fn efunc(&self, z: f64) -> f64 {
        let zp1 = 1.0 + z;
        let or = self.ogamma0 * (1.0 + self.nu_relative_density(z));
        (self.om0 * zp1.powi(3) + or * zp1.powi(4) + self.ode0).sqrt()
    }

    fn hubble_distance_mpc(&self) -> f64 {
        C_KM_S / self.h0
    }

    fn hubble_time_gyr(&self) -> f64 {
        MPC_KM / self.h0 / GYR_S
    }

    fn build_table(&self) -> DistanceTable {
        let n = (Z_TABLE_MAX / Z_TABLE_STEP).round() as usize;
        let dz = Z_TABLE_STEP;
        // Comoving distance: cumulative Simpson on each cell (exact to ~1e-12 relative here).
        let mut dc = vec![0.0; n + 1];
        for k in 0..n {
            let (a, b) = (k as f64 * dz, (k + 1) as f64 * dz);
            let m = 0.5 * (a + b);
            let cell = dz / 6.0 * (1.0 / self.efunc(a) + 4.0 / self.efunc(m) + 1.0 / self.efunc(b));
            dc[k + 1] = dc[k] + cell;
        }
        let dh = self.hubble_distance_mpc();
        let comoving_mpc = dc.iter().map(|v| v * dh).collect();
        // Age: t(z) = t_H ∫₀^{a(z)} da / (a E(a)); integrate in ln a from a tiny value.
        let age_at = |z: f64| -> f64 {
            let a_end = 1.0 / (1.0 + z);
            let ln_lo = (1e-12f64).ln();
            let ln_hi = a_end.ln();
            let m = 4000;
            let h = (ln_hi - ln_lo) / m as f64;
            let f = |lna: f64| {
                let a = lna.exp();
                1.0 / self.efunc(1.0 / a - 1.0) // da/(aE) = dlna / E
            };
            let mut s = f(ln_lo) + f(ln_hi);
            for i in 1..m {
                s += if i % 2 == 1 { 4.0 } else { 2.0 } * f(ln_lo + i as f64 * h);
            }
            s * h / 3.0
        };
        let th = self.hubble_time_gyr();
        // Age varies smoothly: evaluate exactly on a coarse grid then interpolate onto the table.
        let coarse_step = 0.05;
        let nc = (Z_TABLE_MAX / coarse_step).round() as usize;
        let coarse: Vec<f64> = (0..=nc)
            .map(|k| age_at(k as f64 * coarse_step) * th)
            .collect();
        let age_gyr = (0..=n)
            .map(|k| {
                let z = k as f64 * dz;
                cubic_interp(&coarse, coarse_step, z)
            })
            .collect();
        DistanceTable {
            dz,
            comoving_mpc,
            age_gyr,
        }
    }

    /// Line-of-sight comoving distance in Mpc.
    pub fn comoving_distance_mpc(&self, z: f64) -> f64 {
        cubic_interp(&self.table.comoving_mpc, self.table.dz, z)
    }

    /// Luminosity distance in Mpc.
    pub fn luminosity_distance_mpc(&self, z: f64) -> f64 {
        (1.0 + z) * self.comoving_distance_mpc(z)
    }

    /// Distance modulus μ(z) = 5 log10(d_L / 10 pc).
    pub fn distmod(&self, z: f64) -> f64 {
        5.0 * self.luminosity_distance_mpc(z).log10() + 25.0
    }

    /// Age of the universe at redshift z, in Gyr.
    pub fn age_gyr(&self, z: f64) -> f64 {
        cubic_interp(&self.table.age_gyr, self.table.dz, z)
    }
}

/// Catmull-Rom style cubic interpolation on a uniform grid starting at 0 (clamped ends).
fn cubic_interp(y: &[f64], step: f64, x: f64) -> f64 {
    let n = y.len();
    let t = (x / step).clamp(0.0, (n - 1) as f64);
    let i = (t.floor() as usize).min(n - 2);
    let f = t - i as f64;
    let p0 = y[i.saturating_sub(1)];
    let p1 = y[i];
    let p2 = y[i + 1];
    let p3 = y[(i + 2).min(n - 1)];
    // Lagrange cubic through 4 points (exact for cubics; ends degrade to quadratic-ish).
    if i == 0 || i + 2 > n - 1 {
        return p1 + f * (p2 - p1);
    }
    let a = -p0 / 6.0 + p1 / 2.0 - p2 / 2.0 + p3 / 6.0;
    let b = p0 / 2.0 - p1 + p2 / 2.0;
    let c = -p0 / 3.0 - p1 / 2.0 + p2 - p3 / 6.0;
    ((a * f + b) * f + c) * f + p1
}

/// Adachi & Kasai (2012) Padé approximation for flat ΛCDM.
pub mod pade {
    use super::*;

    /// Ω_m used by the reference `ProspectorModel`.
    pub const OMEGA_M: f64 = 0.30966;
    /// H₀ in km/s/Mpc used by the reference `ProspectorModel`.
    pub const H0: f64 = 67.66;

    fn phi(x: f64) -> f64 {
        (1.0 + 1.320 * x + 0.4415 * x * x + 0.02656 * x.powi(3))
            / (1.0 + 1.392 * x + 0.5121 * x * x + 0.03944 * x.powi(3))
    }

    /// Luminosity distance in Mpc.
    pub fn luminosity_distance_mpc(z: f64) -> f64 {
        let om = OMEGA_M;
        let x0 = (1.0 - om) / om;
        let xz = x0 / (1.0 + z).powi(3);
        2.0 * C_KM_S / H0 * (1.0 + z) / om.sqrt() * (phi(x0) - phi(xz) / (1.0 + z).sqrt())
    }

    /// Distance modulus μ = 5 log10(d_L/Mpc) + 25.
    pub fn distmod(z: f64) -> f64 {
        5.0 * luminosity_distance_mpc(z).log10() + 25.0
    }

    /// dV_c/dz per steradian in Mpc³: (c/H₀) d_M² / E(z), d_M = d_L/(1+z).
    pub fn differential_comoving_volume(z: f64) -> f64 {
        let dm = luminosity_distance_mpc(z) / (1.0 + z);
        let e = (OMEGA_M * (1.0 + z).powi(3) + 1.0 - OMEGA_M).sqrt();
        C_KM_S / H0 * dm * dm / e
    }

    fn phi_t(x: &Tensor) -> Result<Tensor> {
        let x2 = x.sqr()?;
        let x3 = (&x2 * x)?;
        let num = ((((x * 1.320)? + 1.0)? + (&x2 * 0.4415)?)? + (&x3 * 0.02656)?)?;
        let den = ((((x * 1.392)? + 1.0)? + (&x2 * 0.5121)?)? + (&x3 * 0.03944)?)?;
        Ok((num / den)?)
    }

    /// Luminosity distance in Mpc as tensor ops (f32, any shape, any device).
    pub fn luminosity_distance_mpc_t(z: &Tensor) -> Result<Tensor> {
        let om = OMEGA_M;
        let x0 = (1.0 - om) / om;
        let zp1 = (z + 1.0)?;
        let xz = (zp1.powf(-3.0)? * x0)?;
        let inner = ((phi_t(&xz)? / zp1.sqrt()?)? * -1.0)?;
        let inner = (inner + phi(x0))?;
        Ok(((zp1 * inner)? * (2.0 * C_KM_S / H0 / om.sqrt()))?)
    }

    /// Distance modulus as tensor ops.
    pub fn distmod_t(z: &Tensor) -> Result<Tensor> {
        let dl = luminosity_distance_mpc_t(z)?;
        Ok(((dl.log()? * (5.0 / std::f64::consts::LN_10))? + 25.0)?)
    }

    /// ln(dV_c/dz) per steradian (Mpc³) as tensor ops.
    pub fn ln_differential_comoving_volume_t(z: &Tensor) -> Result<Tensor> {
        let zp1 = (z + 1.0)?;
        let dl = luminosity_distance_mpc_t(z)?;
        let ln_dm = (dl.log()? - zp1.log()?)?;
        let e2 = ((zp1.powf(3.0)? * OMEGA_M)? + (1.0 - OMEGA_M))?;
        let out = ((ln_dm * 2.0)? - (e2.log()? * 0.5)?)?;
        Ok((out + (C_KM_S / H0).ln())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planck18_matches_astropy() {
        // astropy Planck18.distmod values recovered from the stellar-mass fixture
        // (N + 2.5 log10 M, f32 storage: ~2e-6 mag rounding).
        let c = Planck18::new();
        let cases = [
            (0.0747341513633728, 37.71781539916992),
            (1.429518461227417, 45.11613464355469),
            (2.5705325603485107, 46.67218780517578),
            (3.697495460510254, 47.61833953857422),
            (4.828919410705566, 48.302940368652344),
        ];
        for (z, mu) in cases {
            assert!(
                (c.distmod(z) - mu).abs() < 2e-4,
                "z={z}: {} vs {mu}",
                c.distmod(z)
            );
        }
        // astropy Planck18.age(0) = 13.787 Gyr.
        assert!(
            (c.age_gyr(0.0) - 13.787).abs() < 0.002,
            "{}",
            c.age_gyr(0.0)
        );
        assert!((c.efunc(0.0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn pade_is_close_to_numerical_integration() {
        // Adachi & Kasai (2012): |Δμ| < 0.004 mag against numerical integration for 0.1 ≤ z ≤ 6.
        let e = |z: f64| (pade::OMEGA_M * (1.0 + z).powi(3) + 1.0 - pade::OMEGA_M).sqrt();
        for &z in &[0.1, 0.5, 1.0, 2.0, 4.0, 6.0] {
            let n = 20000;
            let h = z / n as f64;
            let mut s = 1.0 / e(0.0) + 1.0 / e(z);
            for i in 1..n {
                s += if i % 2 == 1 { 4.0 } else { 2.0 } / e(i as f64 * h);
            }
            let dl = (1.0 + z) * C_KM_S / pade::H0 * s * h / 3.0;
            let mu = 5.0 * dl.log10() + 25.0;
            assert!((mu - pade::distmod(z)).abs() < 0.004, "z={z}");
        }
    }

    #[test]
    fn tensor_pade_matches_scalar() {
        let zs = [0.01f32, 0.3, 1.0, 2.5, 5.9];
        let t = Tensor::new(&zs, &candle_core::Device::Cpu).unwrap();
        let mu = pade::distmod_t(&t).unwrap().to_vec1::<f32>().unwrap();
        let lv = pade::ln_differential_comoving_volume_t(&t)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (i, &z) in zs.iter().enumerate() {
            assert!((mu[i] as f64 - pade::distmod(z as f64)).abs() < 1e-4);
            assert!(
                (lv[i] as f64 - pade::differential_comoving_volume(z as f64).ln()).abs() < 1e-4
            );
        }
    }
}
