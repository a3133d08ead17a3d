//! Prices: the `[pricing]` section of the agent's config, validated into [`Pricing`].
//!
//! Everything money-related that the accounting needs lives here: the hourly price of each GPU
//! model (a cloud rate for the configured market, or on-prem hardware amortized over its
//! lifetime), the electricity tariff with time-of-use windows, PUE, grid carbon intensity and a
//! per-GPU-hour overhead. Amounts are in `currency`; the agent never converts currencies.
//!
//! # Keys
//!
//! ```toml
//! [pricing]
//! currency = "USD"                  # 3 upper-case letters (ISO 4217). Default "USD".
//! market = "on_demand"              # on_demand | spot | reserved | on_prem: which hourly price
//!                                   # of each [[pricing.gpu]] applies. Default "on_demand".
//! pue = 1.3                         # power usage effectiveness, 1.0 to 3.0. Default 1.2.
//! carbon_intensity_g_per_kwh = 380  # grid g CO2e per kWh, 0 to 2000. Default 400.
//! overhead_per_gpu_hour = 0.10      # storage, network, support: what a node cannot see.
//!                                   # 0 or more. Default 0.
//! idle_threshold = 0.05             # utilization ratio (0 to 1) below which a GPU is idle.
//!                                   # Default 0.05; 0 means never idle.
//! default_gpu_per_hour = 2.0        # price per hour of GPU models that match no
//!                                   # [[pricing.gpu]] entry, in any market. Optional: when it
//!                                   # is missing such GPUs cost 0 per hour and the agent warns
//!                                   # (see `Pricing::warnings`).
//!
//! [pricing.energy]
//! price_per_kwh = 0.15              # the tariff outside every window. Default 0.15.
//! utc_offset = "+01:00"             # local time of the windows, as a fixed offset ±HH:MM from
//!                                   # UTC (no daylight-saving switch). Default "+00:00".
//! # timezone = "Europe/Berlin"      # instead of utc_offset (setting both is an error): local
//!                                   # time of the windows in an IANA time zone, daylight
//!                                   # saving included. On the day clocks skip an hour, a
//!                                   # window boundary inside it takes effect when the hour
//!                                   # ends; on the day they repeat one, it is priced by the
//!                                   # local time it shows both times (see `tariff.rs`).
//!
//! [[pricing.energy.window]]         # time-of-use windows, first match wins. Optional.
//! days = ["mon", "tue", "wed", "thu", "fri"]  # mon..sun (or monday..sunday). Optional: all
//!                                   # days. A window that crosses midnight belongs to the day
//!                                   # it starts on: Friday 22:00-06:00 covers Saturday 03:00,
//!                                   # not Monday 03:00.
//! start = "22:00"                   # HH:MM local time, 00:00 to 23:59.
//! end = "06:00"                     # HH:MM, 00:00 to 24:00 (both mean midnight); earlier
//!                                   # than start = crosses midnight. start = end is rejected
//!                                   # (for a whole day: 00:00 to 24:00).
//! price_per_kwh = 0.09
//!
//! [[pricing.gpu]]                   # matched against the NVML model name; first match wins,
//!                                   # so put specific entries ("H100 NVL") before general
//!                                   # ones ("H100").
//! match = "H100"                    # case-insensitive substring of the model name. Required.
//! on_demand_per_hour = 4.00         # cloud rates per GPU-hour; the one for `market` is
//! spot_per_hour = 2.10              # required, the others optional (on_demand_per_hour is
//! reserved_per_hour = 2.60          # also what `report --breakeven` compares with).
//! purchase_price = 30000            # on-prem hardware, per GPU: required when
//! lifetime_years = 4                # market = "on_prem", and for `--breakeven`.
//! opex_per_year = 1500              # per GPU: maintenance, rack space; not energy, which is
//!                                   # counted separately. Default 0.
//! power_w = 700                     # mean draw for the break-even estimate. Optional: the
//!                                   # observed mean power.
//! ```
//!
//! On-prem hourly price: `purchase_price / (lifetime_years x 8760) + opex_per_year / 8760`
//! (30000 over 4 years plus 1500 a year is 0.8562 + 0.1712 = 1.0274 per hour).
//!
//! Values beyond plausible bounds are rejected as typos: more than 1000 per GPU-hour, 10 per kWh,
//! 1,000,000 purchase price or opex per year. For currencies with a small unit (JPY, KRW, INR,
//! ...; see `SMALL_UNIT_CURRENCIES`) these money bounds are 1000 times larger.
//!
//! Every error names the dotted key (`pricing.gpu[1].on_demand_per_hour`) and what is wrong.
//!
//! This module owns the types and the lookups on them (a GPU's hourly price, the warnings);
//! `tariff.rs` owns the time-of-use windows and the tariff in force at an instant, `parse.rs`
//! the way from TOML to a validated [`Pricing`] with its validators and limits.

use serde::Deserialize;

mod parse;
mod tariff;

pub use parse::from_toml_value;
pub use tariff::{LocalClock, TariffWindow};

/// Hours in a (365-day) year: the amortization period unit.
pub const HOURS_PER_YEAR: f64 = 8760.0;

/// The tariff when `[pricing.energy]` does not say.
const DEFAULT_PRICE_PER_KWH: f64 = 0.15;

/// A problem with the `[pricing]` section (or with what a computation needs from it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct PricingError {
    /// Dotted key, e.g. `pricing.gpu[1].on_demand_per_hour`.
    pub key: String,
    pub problem: String,
}

impl PricingError {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        PricingError {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Which hourly price of a GPU applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Market {
    OnDemand,
    Spot,
    Reserved,
    /// Owned hardware: purchase price amortized over its lifetime plus yearly operating cost.
    OnPrem,
}

impl Market {
    /// The config spelling, also the `market` label of `gpucost_pricing_info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Market::OnDemand => "on_demand",
            Market::Spot => "spot",
            Market::Reserved => "reserved",
            Market::OnPrem => "on_prem",
        }
    }

    /// The `[[pricing.gpu]]` key holding this market's price.
    pub fn rate_key(self) -> &'static str {
        match self {
            Market::OnDemand => "on_demand_per_hour",
            Market::Spot => "spot_per_hour",
            Market::Reserved => "reserved_per_hour",
            Market::OnPrem => "purchase_price",
        }
    }
}

/// The `[pricing.energy]` table: the electricity tariff.
#[derive(Debug, Clone, PartialEq)]
pub struct EnergyPricing {
    /// The tariff outside every window.
    pub price_per_kwh: f64,
    /// The clock the windows' times of day are read on (`utc_offset` or `timezone`).
    pub clock: LocalClock,
    pub windows: Vec<TariffWindow>,
}

/// One `[[pricing.gpu]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuPrice {
    /// Case-insensitive substring of the NVML model name, as written.
    pub pattern: String,
    pub on_demand_per_hour: Option<f64>,
    pub spot_per_hour: Option<f64>,
    pub reserved_per_hour: Option<f64>,
    pub purchase_price: Option<f64>,
    pub lifetime_years: Option<f64>,
    pub opex_per_year: f64,
    pub power_w: Option<f64>,
}

impl GpuPrice {
    /// The cloud rate for a cloud market (`None` for `OnPrem` or when not configured).
    pub fn cloud_rate(&self, market: Market) -> Option<f64> {
        match market {
            Market::OnDemand => self.on_demand_per_hour,
            Market::Spot => self.spot_per_hour,
            Market::Reserved => self.reserved_per_hour,
            Market::OnPrem => None,
        }
    }

    /// Amortized hourly cost of owning the GPU: purchase over its lifetime plus opex.
    pub fn owned_per_hour(&self) -> Option<f64> {
        let (price, years) = (self.purchase_price?, self.lifetime_years?);
        Some(price / (years * HOURS_PER_YEAR) + self.opex_per_year / HOURS_PER_YEAR)
    }

    /// The hourly price in `market`.
    pub fn rate(&self, market: Market) -> Option<f64> {
        match market {
            Market::OnPrem => self.owned_per_hour(),
            m => self.cloud_rate(m),
        }
    }
}

/// The validated `[pricing]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Pricing {
    pub currency: String,
    pub market: Market,
    pub pue: f64,
    pub carbon_intensity_g_per_kwh: f64,
    pub overhead_per_gpu_hour: f64,
    pub idle_threshold: f64,
    /// `None`: not configured, unmatched GPUs cost 0 per hour (see [`Pricing::warnings`]).
    pub default_gpu_per_hour: Option<f64>,
    pub energy: EnergyPricing,
    pub gpus: Vec<GpuPrice>,
    /// The `[pricing]` table these prices were read from (`None` for the defaults): the agent
    /// records it in the ledger, so that `gpucost report` prices with what the agent used.
    pub source: Option<toml::Value>,
}

impl Default for Pricing {
    fn default() -> Self {
        Pricing {
            currency: "USD".into(),
            market: Market::OnDemand,
            pue: 1.2,
            carbon_intensity_g_per_kwh: 400.0,
            overhead_per_gpu_hour: 0.0,
            idle_threshold: 0.05,
            default_gpu_per_hour: None,
            energy: EnergyPricing {
                price_per_kwh: DEFAULT_PRICE_PER_KWH,
                clock: LocalClock::UTC,
                windows: Vec::new(),
            },
            gpus: Vec::new(),
            source: None,
        }
    }
}

impl Pricing {
    /// Validates the `[pricing]` table (already split out of the config file).
    pub fn from_toml_value(v: &toml::Value) -> Result<Pricing, PricingError> {
        from_toml_value(v)
    }

    /// Index of the first `[[pricing.gpu]]` entry matching `model`.
    pub fn matched_rule(&self, model: &str) -> Option<usize> {
        let model = model.to_lowercase();
        self.gpus
            .iter()
            .position(|g| model.contains(&g.pattern.to_lowercase()))
    }

    /// The price per GPU-hour of `model` in the configured market; `default_gpu_per_hour` (or 0)
    /// when no entry matches.
    pub fn hourly_price(&self, model: &str) -> f64 {
        match self.matched_rule(model) {
            Some(i) => self.gpus[i].rate(self.market).unwrap_or(0.0),
            None => self.default_gpu_per_hour.unwrap_or(0.0),
        }
    }

    /// The electricity price per kWh at `unix_seconds` (see [`EnergyPricing::tariff_at`]).
    pub fn tariff_at(&self, unix_seconds: f64) -> f64 {
        self.energy.tariff_at(unix_seconds)
    }

    /// The time-weighted mean tariff (see [`EnergyPricing::mean_tariff`]).
    pub fn mean_tariff(&self) -> f64 {
        self.energy.mean_tariff()
    }

    /// Warnings for GPU models this configuration prices at 0 without saying so.
    pub fn warnings(&self, models: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        if self.default_gpu_per_hour.is_some() {
            return out;
        }
        for m in models {
            if self.matched_rule(m).is_none() {
                out.push(format!(
                    "GPU model {m:?} matches no [[pricing.gpu]] entry and \
                     pricing.default_gpu_per_hour is not set: its GPU time costs 0"
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::parse::parse_text as parse;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn hourly_price_by_market_first_match_case_insensitive() {
        let entries = r#"
[[pricing.gpu]]
match = "h100 nvl"
on_demand_per_hour = 5.00
spot_per_hour = 2.50
reserved_per_hour = 3.00
purchase_price = 35040
lifetime_years = 4
[[pricing.gpu]]
match = "H100"
on_demand_per_hour = 4.00
spot_per_hour = 2.10
reserved_per_hour = 2.60
purchase_price = 30000
lifetime_years = 4
opex_per_year = 1500
"#;
        // (market, model, expected price per hour)
        let cases: &[(&str, &str, f64)] = &[
            ("on_demand", "NVIDIA H100 NVL", 5.00),
            ("on_demand", "NVIDIA H100 80GB HBM3", 4.00),
            ("spot", "NVIDIA H100 NVL", 2.50),
            ("spot", "nvidia h100 80gb hbm3", 2.10),
            ("reserved", "NVIDIA H100 80GB HBM3", 2.60),
            ("reserved", "Tesla V100-SXM2-16GB", 0.0),
            // 35040 / (4 x 8760) = 1.0 per hour, no opex.
            ("on_prem", "NVIDIA H100 NVL", 1.0),
            // 30000 / (4 x 8760) + 1500 / 8760 = 0.8562 + 0.1712 = 1.0274 per hour.
            ("on_prem", "NVIDIA H100 80GB HBM3", 1.027_397_260_273_972_5),
        ];
        for (market, model, want) in cases {
            let p = parse(&format!("[pricing]\nmarket = {market:?}\n{entries}")).unwrap();
            let got = p.hourly_price(model);
            assert!(close(got, *want), "{market} {model}: {got} != {want}");
        }
        let p = parse(&format!("[pricing]\n{entries}")).unwrap();
        assert_eq!(p.matched_rule("NVIDIA H100 NVL"), Some(0));
        assert_eq!(p.matched_rule("NVIDIA H100 PCIe"), Some(1));
        assert_eq!(p.matched_rule("NVIDIA A10"), None);
        let w = p.warnings(&["NVIDIA H100 PCIe", "NVIDIA A10"]);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("NVIDIA A10") && w[0].contains("default_gpu_per_hour"));
    }

    #[test]
    fn on_prem_amortization_worked_example() {
        let p = parse(
            "[pricing]\nmarket = \"on_prem\"\n[[pricing.gpu]]\nmatch = \"H100\"\n\
             purchase_price = 30000\nlifetime_years = 4\nopex_per_year = 1500\n",
        )
        .unwrap();
        // 30000 / 35040 h = 0.856164; 1500 / 8760 h = 0.171233; sum 1.027397 per hour.
        let h = p.hourly_price("NVIDIA H100 80GB HBM3");
        assert!((h - 1.0274).abs() < 1e-4, "{h}");
        assert!(close(h, 30000.0 / 35040.0 + 1500.0 / 8760.0));
    }
}
