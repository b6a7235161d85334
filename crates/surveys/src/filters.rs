//! Filter transmission curves (photon-counting response, wavelength in Å), bundled for the
//! built-in surveys (sources in each file's header and in NOTICE).

pub use popcosmos_api::FilterCurve;
use popcosmos_api::{Error, Result};

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
}
