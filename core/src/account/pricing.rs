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
//!                                   # UTC (no time-zone database, so no daylight-saving
//!                                   # switch). Default "+00:00".
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

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Hours in a (365-day) year: the amortization period unit.
pub const HOURS_PER_YEAR: f64 = 8760.0;

/// The tariff when `[pricing.energy]` does not say.
const DEFAULT_PRICE_PER_KWH: f64 = 0.15;
/// The longest lifetime accepted for on-prem hardware.
const MAX_LIFETIME_YEARS: f64 = 20.0;
const MAX_PER_HOUR: f64 = 1000.0;
const MAX_PER_KWH: f64 = 10.0;
const MAX_PURCHASE: f64 = 1_000_000.0;
const MAX_OPEX_PER_YEAR: f64 = 1_000_000.0;
const MAX_POWER_W: f64 = 5000.0;
/// Currencies whose unit is worth so little that the money bounds are 1000 times larger.
const SMALL_UNIT_CURRENCIES: &[&str] = &[
    "ARS", "CLP", "COP", "HUF", "IDR", "INR", "IRR", "ISK", "JPY", "KRW", "KZT", "LKR", "NGN",
    "PKR", "RUB", "TZS", "UGX", "VND",
];

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

/// A time-of-use window of the energy tariff.
#[derive(Debug, Clone, PartialEq)]
pub struct TariffWindow {
    /// Monday first. The days on which the window starts.
    pub days: [bool; 7],
    /// Minutes after local midnight, 0..1440.
    pub start_min: u32,
    /// Minutes after local midnight, 0..=1440; less than `start_min` when crossing midnight.
    pub end_min: u32,
    pub price_per_kwh: f64,
}

impl TariffWindow {
    /// Whether the window covers local second-of-day `sod` on weekday `wd` (0 = Monday).
    fn covers(&self, wd: usize, sod: f64) -> bool {
        let start = f64::from(self.start_min) * 60.0;
        let end = f64::from(self.end_min) * 60.0;
        if start < end {
            self.days[wd] && sod >= start && sod < end
        } else {
            (self.days[wd] && sod >= start) || (self.days[(wd + 6) % 7] && sod < end)
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EnergyPricing {
    /// The tariff outside every window.
    pub price_per_kwh: f64,
    /// Seconds east of UTC of the windows' local time.
    pub utc_offset_s: i32,
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
                utc_offset_s: 0,
                windows: Vec::new(),
            },
            gpus: Vec::new(),
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

    /// The electricity price per kWh at `unix_seconds`.
    pub fn tariff_at(&self, unix_seconds: f64) -> f64 {
        if !unix_seconds.is_finite() {
            return self.energy.price_per_kwh;
        }
        let local = unix_seconds + f64::from(self.energy.utc_offset_s);
        let day = (local / 86_400.0).floor();
        let sod = (local - day * 86_400.0).clamp(0.0, 86_399.999);
        // 1970-01-01 was a Thursday (Monday = 0).
        let wd = ((day as i64) + 3).rem_euclid(7) as usize;
        self.tariff_local(wd, sod)
    }

    fn tariff_local(&self, wd: usize, sod: f64) -> f64 {
        self.energy
            .windows
            .iter()
            .find(|w| w.covers(wd, sod))
            .map_or(self.energy.price_per_kwh, |w| w.price_per_kwh)
    }

    /// The time-weighted mean tariff over a week (exact: windows have minute boundaries).
    pub fn mean_tariff(&self) -> f64 {
        if self.energy.windows.is_empty() {
            return self.energy.price_per_kwh;
        }
        let mut sum = 0.0;
        for wd in 0..7 {
            for m in 0..1440 {
                sum += self.tariff_local(wd, f64::from(m) * 60.0 + 30.0);
            }
        }
        sum / (7.0 * 1440.0)
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

// ---- deserialization ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPricing {
    currency: Option<String>,
    market: Option<Market>,
    pue: Option<f64>,
    carbon_intensity_g_per_kwh: Option<f64>,
    overhead_per_gpu_hour: Option<f64>,
    idle_threshold: Option<f64>,
    default_gpu_per_hour: Option<f64>,
    energy: Option<toml::Value>,
    gpu: Option<Vec<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnergy {
    price_per_kwh: Option<f64>,
    utc_offset: Option<String>,
    window: Option<Vec<toml::Value>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Day {
    #[serde(alias = "monday")]
    Mon,
    #[serde(alias = "tuesday")]
    Tue,
    #[serde(alias = "wednesday")]
    Wed,
    #[serde(alias = "thursday")]
    Thu,
    #[serde(alias = "friday")]
    Fri,
    #[serde(alias = "saturday")]
    Sat,
    #[serde(alias = "sunday")]
    Sun,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    days: Option<Vec<Day>>,
    start: String,
    end: String,
    price_per_kwh: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGpu {
    #[serde(rename = "match")]
    pattern: String,
    on_demand_per_hour: Option<f64>,
    spot_per_hour: Option<f64>,
    reserved_per_hour: Option<f64>,
    purchase_price: Option<f64>,
    lifetime_years: Option<f64>,
    opex_per_year: Option<f64>,
    power_w: Option<f64>,
}

/// Deserializes the table at `path`, naming the offending key on error. serde's errors from a
/// `toml::Value` carry no path, so a failure is located by deserializing each key on its own:
/// the key whose lone value fails for a reason other than a missing field is the culprit.
fn de_table<T: DeserializeOwned>(v: &toml::Value, path: &str) -> Result<T, PricingError> {
    if !v.is_table() {
        return Err(PricingError::new(
            path,
            format!("must be a table (found {})", v.type_str()),
        ));
    }
    let err = match T::deserialize(v.clone()) {
        Ok(t) => return Ok(t),
        Err(e) => e.message().trim().to_string(),
    };
    if let Some(field) = backticked(&err, "missing field `") {
        return Err(PricingError::new(format!("{path}.{field}"), "is required"));
    }
    if let Some(table) = v.as_table() {
        for (k, val) in table {
            let mut single = toml::Table::new();
            single.insert(k.clone(), val.clone());
            if let Err(e) = T::deserialize(toml::Value::Table(single)) {
                let msg = e.message().trim().to_string();
                if !msg.starts_with("missing field") {
                    return Err(PricingError::new(format!("{path}.{k}"), msg));
                }
            }
        }
    }
    Err(PricingError::new(path, err))
}

fn backticked<'a>(msg: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = msg.strip_prefix(prefix)?;
    rest.split('`').next()
}

/// Validates the `[pricing]` table (already split out of the config file).
pub fn from_toml_value(v: &toml::Value) -> Result<Pricing, PricingError> {
    let raw: RawPricing = de_table(v, "pricing")?;
    let d = Pricing::default();

    let currency = raw.currency.unwrap_or(d.currency);
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(PricingError::new(
            "pricing.currency",
            format!("{currency:?} is not a currency code: 3 upper-case letters such as \"USD\""),
        ));
    }
    let money = if SMALL_UNIT_CURRENCIES.contains(&currency.as_str()) {
        1000.0
    } else {
        1.0
    };
    let market = raw.market.unwrap_or(d.market);
    let pue = check("pricing.pue", raw.pue, d.pue, 1.0, 3.0)?;
    let carbon = check(
        "pricing.carbon_intensity_g_per_kwh",
        raw.carbon_intensity_g_per_kwh,
        d.carbon_intensity_g_per_kwh,
        0.0,
        2000.0,
    )?;
    let overhead = check(
        "pricing.overhead_per_gpu_hour",
        raw.overhead_per_gpu_hour,
        d.overhead_per_gpu_hour,
        0.0,
        MAX_PER_HOUR * money,
    )?;
    if let Some(t) = raw.idle_threshold {
        if t.is_finite() && t > 1.0 && t <= 100.0 {
            return Err(PricingError::new(
                "pricing.idle_threshold",
                format!("{t} is not a ratio from 0 to 1 (5% is 0.05)"),
            ));
        }
    }
    let idle = check(
        "pricing.idle_threshold",
        raw.idle_threshold,
        d.idle_threshold,
        0.0,
        1.0,
    )?;
    let default_gpu = opt_check(
        "pricing.default_gpu_per_hour",
        raw.default_gpu_per_hour,
        0.0,
        MAX_PER_HOUR * money,
    )?;

    let energy = match &raw.energy {
        Some(e) => energy(e, money)?,
        None => d.energy,
    };

    let mut gpus = Vec::new();
    for (i, g) in raw.gpu.iter().flatten().enumerate() {
        gpus.push(gpu(g, &format!("pricing.gpu[{i}]"), market, money)?);
    }

    Ok(Pricing {
        currency,
        market,
        pue,
        carbon_intensity_g_per_kwh: carbon,
        overhead_per_gpu_hour: overhead,
        idle_threshold: idle,
        default_gpu_per_hour: default_gpu,
        energy,
        gpus,
    })
}

fn energy(v: &toml::Value, money: f64) -> Result<EnergyPricing, PricingError> {
    let raw: RawEnergy = de_table(v, "pricing.energy")?;
    let price_per_kwh = check(
        "pricing.energy.price_per_kwh",
        raw.price_per_kwh,
        DEFAULT_PRICE_PER_KWH,
        0.0,
        MAX_PER_KWH * money,
    )?;
    let utc_offset_s = match &raw.utc_offset {
        Some(s) => parse_offset(s).ok_or_else(|| {
            PricingError::new(
                "pricing.energy.utc_offset",
                format!(
                    "{s:?} is not a UTC offset ±HH:MM from -14:00 to +14:00, such as \"+01:00\" \
                     (\"+00:00\" for UTC)"
                ),
            )
        })?,
        None => 0,
    };
    let mut windows = Vec::new();
    for (i, w) in raw.window.iter().flatten().enumerate() {
        let path = format!("pricing.energy.window[{i}]");
        let raw: RawWindow = de_table(w, &path)?;
        let days = match &raw.days {
            None => [true; 7],
            Some(list) if list.is_empty() => {
                return Err(PricingError::new(
                    format!("{path}.days"),
                    "is empty: leave it out for every day",
                ))
            }
            Some(list) => {
                let mut days = [false; 7];
                for d in list {
                    days[*d as usize] = true;
                }
                days
            }
        };
        let bad_time = |key: &str, s: &str, range: &str| {
            PricingError::new(
                format!("{path}.{key}"),
                format!("{s:?} is not a time of day HH:MM ({range})"),
            )
        };
        let start_min = parse_hhmm(&raw.start)
            .filter(|m| *m < 1440)
            .ok_or_else(|| bad_time("start", &raw.start, "00:00 to 23:59"))?;
        let end_min =
            parse_hhmm(&raw.end).ok_or_else(|| bad_time("end", &raw.end, "00:00 to 24:00"))?;
        if start_min == end_min {
            return Err(PricingError::new(
                format!("{path}.end"),
                format!(
                    "equals start ({}): an empty window; for the whole day use start = \
                     \"00:00\", end = \"24:00\"",
                    raw.start
                ),
            ));
        }
        let price = check(
            &format!("{path}.price_per_kwh"),
            Some(raw.price_per_kwh),
            0.0,
            0.0,
            MAX_PER_KWH * money,
        )?;
        windows.push(TariffWindow {
            days,
            start_min,
            end_min,
            price_per_kwh: price,
        });
    }
    Ok(EnergyPricing {
        price_per_kwh,
        utc_offset_s,
        windows,
    })
}

fn gpu(v: &toml::Value, path: &str, market: Market, money: f64) -> Result<GpuPrice, PricingError> {
    let raw: RawGpu = de_table(v, path)?;
    let key = |k: &str| format!("{path}.{k}");
    if raw.pattern.trim().is_empty() {
        return Err(PricingError::new(
            key("match"),
            "is empty: it would match every GPU; use pricing.default_gpu_per_hour for that",
        ));
    }
    let rate = |k: &str, v| opt_check(&key(k), v, 0.0, MAX_PER_HOUR * money);
    let g = GpuPrice {
        pattern: raw.pattern.trim().to_string(),
        on_demand_per_hour: rate("on_demand_per_hour", raw.on_demand_per_hour)?,
        spot_per_hour: rate("spot_per_hour", raw.spot_per_hour)?,
        reserved_per_hour: rate("reserved_per_hour", raw.reserved_per_hour)?,
        purchase_price: opt_check(
            &key("purchase_price"),
            raw.purchase_price,
            0.0,
            MAX_PURCHASE * money,
        )?,
        lifetime_years: opt_check(
            &key("lifetime_years"),
            raw.lifetime_years,
            0.0,
            MAX_LIFETIME_YEARS,
        )?,
        opex_per_year: check(
            &key("opex_per_year"),
            raw.opex_per_year,
            0.0,
            0.0,
            MAX_OPEX_PER_YEAR * money,
        )?,
        power_w: opt_check(&key("power_w"), raw.power_w, 0.0, MAX_POWER_W)?,
    };
    if g.lifetime_years == Some(0.0) {
        return Err(PricingError::new(
            key("lifetime_years"),
            "must be more than 0",
        ));
    }
    if g.power_w == Some(0.0) {
        return Err(PricingError::new(key("power_w"), "must be more than 0"));
    }
    match (g.purchase_price, g.lifetime_years) {
        (Some(_), None) => {
            return Err(PricingError::new(
                key("lifetime_years"),
                "is required with purchase_price (the purchase is amortized over it)",
            ))
        }
        (None, Some(_)) => {
            return Err(PricingError::new(
                key("purchase_price"),
                "is required with lifetime_years",
            ))
        }
        _ => {}
    }
    if g.rate(market).is_none() {
        let missing = if market == Market::OnPrem && g.purchase_price.is_some() {
            "lifetime_years"
        } else {
            market.rate_key()
        };
        let what = if market == Market::OnPrem {
            " (with lifetime_years)"
        } else {
            ""
        };
        return Err(PricingError::new(
            key(missing),
            format!(
                "is required{what} because pricing.market = {:?} (entry match = {:?})",
                market.as_str(),
                g.pattern
            ),
        ));
    }
    Ok(g)
}

/// `v` (or `default`) must be finite and within `min..=max`.
fn check(key: &str, v: Option<f64>, default: f64, min: f64, max: f64) -> Result<f64, PricingError> {
    Ok(opt_check(key, v, min, max)?.unwrap_or(default))
}

fn opt_check(key: &str, v: Option<f64>, min: f64, max: f64) -> Result<Option<f64>, PricingError> {
    let Some(v) = v else { return Ok(None) };
    if !v.is_finite() {
        return Err(PricingError::new(
            key,
            format!("{v} is not a finite number"),
        ));
    }
    if v < min {
        let problem = if min == 0.0 {
            format!("{v} is negative")
        } else {
            format!("{v} is less than {min}")
        };
        return Err(PricingError::new(key, problem));
    }
    if v > max {
        return Err(PricingError::new(
            key,
            format!("{v} is implausibly large (at most {max})"),
        ));
    }
    Ok(Some(v))
}

/// `HH:MM` -> minutes after midnight; `24:00` is 1440.
fn parse_hhmm(s: &str) -> Option<u32> {
    let b = s.as_bytes();
    if b.len() != 5 || b[2] != b':' {
        return None;
    }
    let two = |i: usize| -> Option<u32> {
        let (a, c) = (b[i], b[i + 1]);
        (a.is_ascii_digit() && c.is_ascii_digit())
            .then(|| u32::from(a - b'0') * 10 + u32::from(c - b'0'))
    };
    let (h, m) = (two(0)?, two(3)?);
    match (h, m) {
        (24, 0) => Some(1440),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

/// `±HH:MM` -> seconds east of UTC, at most 14 hours.
fn parse_offset(s: &str) -> Option<i32> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let minutes = parse_hhmm(s.get(1..)?)?;
    (minutes <= 14 * 60).then_some(sign * minutes as i32 * 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a config file's text and validates its `[pricing]` table (empty when absent).
    fn parse(text: &str) -> Result<Pricing, PricingError> {
        let doc: toml::Table = toml::from_str(text).expect("test TOML parses");
        let v = doc
            .get("pricing")
            .cloned()
            .unwrap_or(toml::Value::Table(toml::Table::new()));
        from_toml_value(&v)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    /// 2024-01-01 00:00 UTC, a Monday.
    const MON_2024_01_01: f64 = 1_704_067_200.0;

    /// Unix seconds of local `day` of January 2024 at `hh:mm:ss`, at `offset_h` hours east.
    fn jan2024(day: u32, hh: u32, mm: u32, ss: u32, offset_h: f64) -> f64 {
        MON_2024_01_01 + f64::from(day - 1) * 86_400.0 + f64::from(hh * 3600 + mm * 60 + ss)
            - offset_h * 3600.0
    }

    #[test]
    fn empty_table_is_the_documented_default() {
        let p = parse("").unwrap();
        assert_eq!(p, Pricing::default());
        assert_eq!(p.currency, "USD");
        assert_eq!(p.market, Market::OnDemand);
        assert_eq!(p.pue, 1.2);
        assert_eq!(p.carbon_intensity_g_per_kwh, 400.0);
        assert_eq!(p.energy.price_per_kwh, 0.15);
        assert_eq!(p.energy.utc_offset_s, 0);
        assert_eq!(p.overhead_per_gpu_hour, 0.0);
        assert_eq!(p.idle_threshold, 0.05);
        assert_eq!(p.default_gpu_per_hour, None);
        assert_eq!(p.hourly_price("NVIDIA H100 80GB HBM3"), 0.0);
        assert_eq!(p.tariff_at(MON_2024_01_01), 0.15);
        assert_eq!(
            Pricing::from_toml_value(&toml::Value::Table(toml::Table::new())),
            Ok(p)
        );
    }

    #[test]
    fn documented_example_parses() {
        let p = parse(
            r#"
[pricing]
currency = "EUR"
market = "spot"
pue = 1.3
carbon_intensity_g_per_kwh = 380   # an integer is a number too
overhead_per_gpu_hour = 0.10
idle_threshold = 0.05
default_gpu_per_hour = 2.0

[pricing.energy]
price_per_kwh = 0.15
utc_offset = "+01:00"
[[pricing.energy.window]]
days = ["mon", "tue", "wed", "thu", "friday"]
start = "22:00"
end = "06:00"
price_per_kwh = 0.09

[[pricing.gpu]]
match = "H100"
on_demand_per_hour = 4.00
spot_per_hour = 2.10
reserved_per_hour = 2.60
purchase_price = 30000
lifetime_years = 4
opex_per_year = 1500
power_w = 700
"#,
        )
        .unwrap();
        assert_eq!(p.currency, "EUR");
        assert_eq!(p.market, Market::Spot);
        assert_eq!(p.pue, 1.3);
        assert_eq!(p.carbon_intensity_g_per_kwh, 380.0);
        assert_eq!(p.overhead_per_gpu_hour, 0.10);
        assert_eq!(p.default_gpu_per_hour, Some(2.0));
        assert_eq!(p.energy.utc_offset_s, 3600);
        assert_eq!(
            p.energy.windows,
            vec![TariffWindow {
                days: [true, true, true, true, true, false, false],
                start_min: 22 * 60,
                end_min: 6 * 60,
                price_per_kwh: 0.09,
            }]
        );
        assert_eq!(p.gpus.len(), 1);
        assert_eq!(p.gpus[0].power_w, Some(700.0));
        assert_eq!(p.hourly_price("NVIDIA H100 80GB HBM3"), 2.10);
        assert_eq!(p.hourly_price("NVIDIA A100-SXM4-40GB"), 2.0);
        assert!(p.warnings(&["NVIDIA A100-SXM4-40GB"]).is_empty());
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

    #[test]
    fn tariff_windows_cross_midnight_by_weekday_with_offset() {
        let p = parse(
            r#"
[pricing.energy]
price_per_kwh = 0.15
utc_offset = "+01:00"
[[pricing.energy.window]]   # weekday nights, belonging to the day they start
days = ["mon", "tue", "wed", "thu", "fri"]
start = "22:00"
end = "06:00"
price_per_kwh = 0.09
[[pricing.energy.window]]   # weekends all day
days = ["sat", "sun"]
start = "00:00"
end = "24:00"
price_per_kwh = 0.10
"#,
        )
        .unwrap();
        // (local day of January 2024 (1 = Monday), hh, mm, ss, expected price)
        let cases: &[(u32, u32, u32, u32, f64)] = &[
            (1, 3, 0, 0, 0.15),    // Mon 03:00: Sunday night is not a weekday night
            (1, 12, 0, 0, 0.15),   // Mon noon
            (1, 21, 59, 59, 0.15), // just before the window
            (1, 22, 0, 0, 0.09),   // start is inclusive
            (2, 5, 59, 59, 0.09),  // Tue early morning: Monday's night
            (2, 6, 0, 0, 0.15),    // end is exclusive
            (5, 23, 0, 0, 0.09),   // Fri night
            (6, 3, 0, 0, 0.09),    // Sat 03:00: Friday's night, first match beats the weekend
            (6, 6, 0, 0, 0.10),    // Sat 06:00: weekend
            (7, 23, 30, 0, 0.10),  // Sun night: weekend
            (8, 3, 0, 0, 0.15),    // Mon 03:00 again
        ];
        for &(day, hh, mm, ss, want) in cases {
            let t = jan2024(day, hh, mm, ss, 1.0);
            assert_eq!(
                p.tariff_at(t),
                want,
                "Jan {day} {hh:02}:{mm:02}:{ss:02} local"
            );
        }
        // The offset matters: Mon 21:30 UTC is 22:30 local (+01:00), in the night window.
        assert_eq!(p.tariff_at(jan2024(1, 21, 30, 0, 0.0)), 0.09);
        assert_eq!(p.tariff_at(f64::NAN), 0.15);
    }

    #[test]
    fn tariff_weekday_follows_a_negative_offset_and_the_epoch() {
        let fri = |offset: &str, day: &str| {
            parse(&format!(
                "[pricing.energy]\nutc_offset = {offset:?}\n[[pricing.energy.window]]\n\
                 days = [{day:?}]\nstart = \"00:00\"\nend = \"24:00\"\nprice_per_kwh = 0.5\n"
            ))
            .unwrap()
        };
        let p = fri("-05:00", "fri");
        // Sat 6 Jan 03:00 UTC is Fri 22:00 at -05:00.
        assert_eq!(p.tariff_at(jan2024(6, 3, 0, 0, 0.0)), 0.5);
        // Sat 06:00 UTC is Sat 01:00 local.
        assert_eq!(p.tariff_at(jan2024(6, 6, 0, 0, 0.0)), 0.15);
        // 1970-01-01 was a Thursday; the hour before it a Wednesday.
        assert_eq!(fri("+00:00", "thu").tariff_at(0.0), 0.5);
        assert_eq!(fri("+00:00", "thu").tariff_at(86_399.0), 0.5);
        assert_eq!(fri("+00:00", "thu").tariff_at(86_400.0), 0.15);
        assert_eq!(fri("+00:00", "wed").tariff_at(-3600.0), 0.5);
        // At +05:30 the epoch is already 05:30 Thursday; 18:30 UTC is Friday 00:00.
        assert_eq!(fri("+05:30", "fri").tariff_at(18.5 * 3600.0 - 1.0), 0.15);
        assert_eq!(fri("+05:30", "fri").tariff_at(18.5 * 3600.0), 0.5);
    }

    #[test]
    fn window_ending_at_midnight_and_mean_tariff() {
        let p = parse(
            "[[pricing.energy.window]]\nstart = \"22:00\"\nend = \"00:00\"\nprice_per_kwh = 0.05\n",
        )
        .unwrap();
        assert_eq!(p.tariff_at(jan2024(3, 23, 59, 59, 0.0)), 0.05);
        assert_eq!(p.tariff_at(jan2024(4, 0, 0, 0, 0.0)), 0.15);
        // 2 h at 0.05 and 22 h at 0.15: (0.10 + 3.30) / 24 = 0.141667.
        assert!(close(p.mean_tariff(), 3.4 / 24.0));

        let p = parse(
            "[[pricing.energy.window]]\nstart = \"22:00\"\nend = \"06:00\"\nprice_per_kwh = 0.09\n",
        )
        .unwrap();
        // 8 h at 0.09, 16 h at 0.15: (0.72 + 2.40) / 24 = 0.13.
        assert!(close(p.mean_tariff(), 0.13));
        assert_eq!(Pricing::default().mean_tariff(), 0.15);
    }

    #[test]
    fn small_unit_currencies_get_larger_bounds() {
        let gpu = "[[pricing.gpu]]\nmatch = \"H100\"\non_demand_per_hour = 1800\n";
        let p = parse(&format!("[pricing]\ncurrency = \"JPY\"\n{gpu}")).unwrap();
        assert_eq!(p.hourly_price("H100"), 1800.0);
        let e = parse(&format!("[pricing]\ncurrency = \"USD\"\n{gpu}")).unwrap_err();
        assert_eq!(e.key, "pricing.gpu[0].on_demand_per_hour");
    }

    /// (config text, the key the error must name, a piece of the problem)
    #[test]
    fn every_validation_error_names_its_key() {
        let h100 = "[[pricing.gpu]]\nmatch = \"A100\"\non_demand_per_hour = 2.0\n";
        let cases: Vec<(String, &str, &str)> = vec![
            ("[pricing]\ncurrency = \"usd\"".into(), "pricing.currency", "3 upper-case"),
            ("[pricing]\ncurrency = \"DOLLAR\"".into(), "pricing.currency", "3 upper-case"),
            ("[pricing]\nmarket = \"cloud\"".into(), "pricing.market", "unknown variant"),
            ("[pricing]\npue = 0.9".into(), "pricing.pue", "less than 1"),
            ("[pricing]\npue = 5".into(), "pricing.pue", "implausibly large"),
            ("[pricing]\npue = nan".into(), "pricing.pue", "not a finite number"),
            ("[pricing]\npue = \"1.2\"".into(), "pricing.pue", "invalid type"),
            (
                "[pricing]\ncarbon_intensity_g_per_kwh = -1".into(),
                "pricing.carbon_intensity_g_per_kwh",
                "negative",
            ),
            (
                "[pricing]\ncarbon_intensity_g_per_kwh = 5000".into(),
                "pricing.carbon_intensity_g_per_kwh",
                "implausibly large",
            ),
            (
                "[pricing]\noverhead_per_gpu_hour = -0.1".into(),
                "pricing.overhead_per_gpu_hour",
                "negative",
            ),
            ("[pricing]\nidle_threshold = 5".into(), "pricing.idle_threshold", "0.05"),
            ("[pricing]\nidle_threshold = -0.1".into(), "pricing.idle_threshold", "negative"),
            (
                "[pricing]\ndefault_gpu_per_hour = 1e6".into(),
                "pricing.default_gpu_per_hour",
                "implausibly large",
            ),
            (
                "[pricing]\ndefault_gpu_per_hour = inf".into(),
                "pricing.default_gpu_per_hour",
                "not a finite number",
            ),
            ("[pricing]\ncolour = \"red\"".into(), "pricing.colour", "unknown field"),
            ("[pricing]\nenergy = 3".into(), "pricing.energy", "must be a table"),
            ("[pricing]\ngpu = 3".into(), "pricing.gpu", "invalid type"),
            ("[pricing]\ngpu = [3]".into(), "pricing.gpu[0]", "must be a table"),
            (
                "[pricing.energy]\nprice_per_kwh = -0.1".into(),
                "pricing.energy.price_per_kwh",
                "negative",
            ),
            (
                "[pricing.energy]\nprice_per_kwh = 50".into(),
                "pricing.energy.price_per_kwh",
                "implausibly large",
            ),
            (
                "[pricing.energy]\ntarif = 0.1".into(),
                "pricing.energy.tarif",
                "unknown field",
            ),
            (
                "[pricing.energy]\nutc_offset = \"+1\"".into(),
                "pricing.energy.utc_offset",
                "±HH:MM",
            ),
            (
                "[pricing.energy]\nutc_offset = \"01:00\"".into(),
                "pricing.energy.utc_offset",
                "±HH:MM",
            ),
            (
                "[pricing.energy]\nutc_offset = \"+15:00\"".into(),
                "pricing.energy.utc_offset",
                "±HH:MM",
            ),
            (
                "[pricing.energy]\nutc_offset = \"+01:60\"".into(),
                "pricing.energy.utc_offset",
                "±HH:MM",
            ),
            (
                "[pricing.energy]\nutc_offset = \"Europe/Paris\"".into(),
                "pricing.energy.utc_offset",
                "±HH:MM",
            ),
            (window("start = \"25:00\"\nend = \"06:00\""), "pricing.energy.window[0].start", "HH:MM"),
            (window("start = \"24:00\"\nend = \"06:00\""), "pricing.energy.window[0].start", "HH:MM"),
            (window("start = \"22:00\"\nend = \"6:00\""), "pricing.energy.window[0].end", "HH:MM"),
            (window("start = \"22:00\"\nend = \"06:61\""), "pricing.energy.window[0].end", "HH:MM"),
            (window("start = \"22:00\"\nend = \"22:00\""), "pricing.energy.window[0].end", "empty window"),
            (window("start = \"00:00\"\nend = \"00:00\""), "pricing.energy.window[0].end", "24:00"),
            (window("end = \"06:00\""), "pricing.energy.window[0].start", "is required"),
            (window("start = 22\nend = \"06:00\""), "pricing.energy.window[0].start", "invalid type"),
            (
                window("days = [\"mon\", \"funday\"]\nstart = \"22:00\"\nend = \"06:00\""),
                "pricing.energy.window[0].days",
                "unknown variant `funday`",
            ),
            (
                window("days = []\nstart = \"22:00\"\nend = \"06:00\""),
                "pricing.energy.window[0].days",
                "empty",
            ),
            (
                window("start = \"22:00\"\nend = \"06:00\"\nprice = 1"),
                "pricing.energy.window[0].price",
                "unknown field",
            ),
            (
                window("start = \"22:00\"\nend = \"06:00\"\nprice_per_kwh = -1"),
                "pricing.energy.window[0].price_per_kwh",
                "negative",
            ),
            (
                format!(
                    "{}\n[[pricing.energy.window]]\nstart = \"10:00\"\nend = \"12:00\"",
                    window("start = \"22:00\"\nend = \"06:00\"\nprice_per_kwh = 0.1")
                ),
                "pricing.energy.window[1].price_per_kwh",
                "is required",
            ),
            (
                format!("{h100}[[pricing.gpu]]\nmatch = \"H100\"\non_demand_per_hour = -4"),
                "pricing.gpu[1].on_demand_per_hour",
                "negative",
            ),
            (
                format!("{h100}[[pricing.gpu]]\nmatch = \"H100\"\non_demand_per_hour = 5000"),
                "pricing.gpu[1].on_demand_per_hour",
                "implausibly large",
            ),
            (
                format!("{h100}[[pricing.gpu]]\nmatch = \"H100\"\nspot_per_hour = 2"),
                "pricing.gpu[1].on_demand_per_hour",
                "pricing.market = \"on_demand\"",
            ),
            (
                format!("[pricing]\nmarket = \"spot\"\n{h100}"),
                "pricing.gpu[0].spot_per_hour",
                "is required",
            ),
            (
                format!("[pricing]\nmarket = \"reserved\"\n{h100}"),
                "pricing.gpu[0].reserved_per_hour",
                "is required",
            ),
            (
                format!("[pricing]\nmarket = \"on_prem\"\n{h100}"),
                "pricing.gpu[0].purchase_price",
                "on_prem",
            ),
            (
                gpu("purchase_price = 30000"),
                "pricing.gpu[0].lifetime_years",
                "is required with purchase_price",
            ),
            (
                gpu("lifetime_years = 4"),
                "pricing.gpu[0].purchase_price",
                "is required with lifetime_years",
            ),
            (
                gpu("purchase_price = 30000\nlifetime_years = 0"),
                "pricing.gpu[0].lifetime_years",
                "more than 0",
            ),
            (
                gpu("purchase_price = 30000\nlifetime_years = 50"),
                "pricing.gpu[0].lifetime_years",
                "implausibly large",
            ),
            (
                gpu("purchase_price = -1\nlifetime_years = 4"),
                "pricing.gpu[0].purchase_price",
                "negative",
            ),
            (
                gpu("purchase_price = 30000\nlifetime_years = 4\nopex_per_year = -5"),
                "pricing.gpu[0].opex_per_year",
                "negative",
            ),
            (gpu("power_w = 0"), "pricing.gpu[0].power_w", "more than 0"),
            (gpu("power_w = 70000"), "pricing.gpu[0].power_w", "implausibly large"),
            (gpu("prize = 3"), "pricing.gpu[0].prize", "unknown field"),
            (
                "[pricing]\nmarket = \"on_demand\"\n[[pricing.gpu]]\nmatch = \"  \"\non_demand_per_hour = 1".into(),
                "pricing.gpu[0].match",
                "empty",
            ),
            (
                "[[pricing.gpu]]\non_demand_per_hour = 1".into(),
                "pricing.gpu[0].match",
                "is required",
            ),
        ];
        for (text, key, problem) in &cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.key, *key, "{text:?}: {e}");
            assert!(
                e.problem.contains(problem),
                "{text:?}: expected {problem:?} in {e}"
            );
            assert_eq!(e.to_string(), format!("{}: {}", e.key, e.problem));
        }

        /// One window with the given keys (and a price when none is given).
        fn window(body: &str) -> String {
            let price = if body.contains("price") {
                ""
            } else {
                "\nprice_per_kwh = 0.1"
            };
            format!("[[pricing.energy.window]]\n{body}{price}")
        }
        /// One H100 entry with an on-demand rate and the given keys.
        fn gpu(body: &str) -> String {
            format!("[[pricing.gpu]]\nmatch = \"H100\"\non_demand_per_hour = 4\n{body}")
        }
    }

    #[test]
    fn not_a_table() {
        let e = from_toml_value(&toml::Value::Integer(3)).unwrap_err();
        assert_eq!(e.key, "pricing");
        assert!(e.problem.contains("must be a table"), "{e}");
    }
}
