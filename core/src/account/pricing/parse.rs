//! From TOML to a validated [`Pricing`]: the `[pricing]` keys, their bounds and their errors.
//!
//! Owns the raw (as written) shapes of the tables, the validators, the plausibility limits and
//! the small text formats (`HH:MM`, `±HH:MM`, IANA time zone names). Every error is a
//! [`PricingError`] naming the dotted key and what is wrong with it.

use serde::de::DeserializeOwned;
use serde::Deserialize;

use jiff::tz::{TimeZone, TimeZoneDatabase};

use super::{
    EnergyPricing, GpuPrice, LocalClock, Market, Pricing, PricingError, TariffWindow,
    DEFAULT_PRICE_PER_KWH,
};

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

// ---- the tables as written ----

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
    timezone: Option<String>,
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
    /// Required, like `end` and `price_per_kwh` (see [`de_table`]).
    start: Option<String>,
    end: Option<String>,
    price_per_kwh: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGpu {
    /// Required (see [`de_table`]).
    #[serde(rename = "match")]
    pattern: Option<String>,
    on_demand_per_hour: Option<f64>,
    spot_per_hour: Option<f64>,
    reserved_per_hour: Option<f64>,
    purchase_price: Option<f64>,
    lifetime_years: Option<f64>,
    opex_per_year: Option<f64>,
    power_w: Option<f64>,
}

/// Deserializes the table at `path`. serde_path_to_error follows the deserializer into the
/// table, so an error names the key (or list element) where it failed: `pricing.colour` for an
/// unknown key, `pricing.energy.window[0].days[1]` for a bad day. Required keys are `Option`s in
/// the raw structs and checked by the caller (see [`required`]), because serde reports a missing
/// field at the table that lacks it, naming the field only in its message.
fn de_table<T: DeserializeOwned>(v: &toml::Value, path: &str) -> Result<T, PricingError> {
    if !v.is_table() {
        return Err(PricingError::new(
            path,
            format!("must be a table (found {})", v.type_str()),
        ));
    }
    serde_path_to_error::deserialize(v.clone()).map_err(|e| {
        let key = dotted(path, e.path());
        PricingError::new(key, e.into_inner().message().trim())
    })
}

/// `path` followed by the segments serde_path_to_error recorded, in the config's spelling.
fn dotted(path: &str, within: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut key = path.to_string();
    for segment in within {
        match segment {
            Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            Segment::Map { key: k } => key.push_str(&format!(".{k}")),
            Segment::Enum { variant } => key.push_str(&format!(".{variant}")),
            Segment::Unknown => key.push_str(".?"),
        }
    }
    key
}

/// A key the table must have.
fn required<T>(v: Option<T>, path: &str, key: &str) -> Result<T, PricingError> {
    v.ok_or_else(|| PricingError::new(format!("{path}.{key}"), "is required"))
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
        source: Some(v.clone()),
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
    let clock = local_clock(raw.utc_offset.as_deref(), raw.timezone.as_deref())?;
    let mut windows = Vec::new();
    for (i, w) in raw.window.iter().flatten().enumerate() {
        let path = format!("pricing.energy.window[{i}]");
        let raw: RawWindow = de_table(w, &path)?;
        let start = required(raw.start, &path, "start")?;
        let end = required(raw.end, &path, "end")?;
        let price = required(raw.price_per_kwh, &path, "price_per_kwh")?;
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
        let start_min = parse_hhmm(&start)
            .filter(|m| *m < 1440)
            .ok_or_else(|| bad_time("start", &start, "00:00 to 23:59"))?;
        let end_min = parse_hhmm(&end).ok_or_else(|| bad_time("end", &end, "00:00 to 24:00"))?;
        if start_min == end_min {
            return Err(PricingError::new(
                format!("{path}.end"),
                format!(
                    "equals start ({}): an empty window; for the whole day use start = \
                     \"00:00\", end = \"24:00\"",
                    start
                ),
            ));
        }
        let price = check(
            &format!("{path}.price_per_kwh"),
            Some(price),
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
        clock,
        windows,
    })
}

fn gpu(v: &toml::Value, path: &str, market: Market, money: f64) -> Result<GpuPrice, PricingError> {
    let raw: RawGpu = de_table(v, path)?;
    let key = |k: &str| format!("{path}.{k}");
    let pattern = required(raw.pattern, path, "match")?;
    if pattern.trim().is_empty() {
        return Err(PricingError::new(
            key("match"),
            "is empty: it would match every GPU; use pricing.default_gpu_per_hour for that",
        ));
    }
    let rate = |k: &str, v| opt_check(&key(k), v, 0.0, MAX_PER_HOUR * money);
    let g = GpuPrice {
        pattern: pattern.trim().to_string(),
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

/// The clock the windows are read on: `utc_offset` or `timezone`, not both; UTC without either.
fn local_clock(
    utc_offset: Option<&str>,
    timezone: Option<&str>,
) -> Result<LocalClock, PricingError> {
    match (utc_offset, timezone) {
        (Some(_), Some(_)) => Err(PricingError::new(
            "pricing.energy.timezone",
            "cannot be set together with pricing.energy.utc_offset: set timezone for local time \
             with its daylight-saving switches, or utc_offset for a fixed offset",
        )),
        (Some(s), None) => parse_offset(s).map(LocalClock::FixedOffset).ok_or_else(|| {
            let hint = if s.contains('/') {
                format!("; for a time zone write timezone = {s:?}")
            } else {
                String::new()
            };
            PricingError::new(
                "pricing.energy.utc_offset",
                format!(
                    "{s:?} is not a UTC offset ±HH:MM from -14:00 to +14:00, such as \"+01:00\" \
                     (\"+00:00\" for UTC){hint}"
                ),
            )
        }),
        (None, Some(name)) => parse_timezone(name).map(LocalClock::Zone),
        (None, None) => Ok(LocalClock::UTC),
    }
}

/// An IANA time zone name (`Europe/Berlin`, any ASCII case), looked up in the time zone
/// database bundled with gpucost, never in the node's (see `tariff.rs`).
fn parse_timezone(name: &str) -> Result<TimeZone, PricingError> {
    TimeZoneDatabase::bundled()
        .get(name)
        .ok()
        // jiff answers "Etc/Unknown" with a stand-in zone at UTC; no place keeps that time.
        .filter(|tz| !tz.is_unknown())
        .ok_or_else(|| {
            PricingError::new(
                "pricing.energy.timezone",
                format!(
                    "unknown time zone {name:?}: an IANA name such as \"Europe/Berlin\" or \
                     \"America/New_York\" (for a fixed offset use utc_offset)"
                ),
            )
        })
}

/// Parses a config file's text and validates its `[pricing]` table (empty when absent).
#[cfg(test)]
pub(super) fn parse_text(text: &str) -> Result<Pricing, PricingError> {
    let doc: toml::Table = toml::from_str(text).expect("test TOML parses");
    let v = doc
        .get("pricing")
        .cloned()
        .unwrap_or(toml::Value::Table(toml::Table::new()));
    from_toml_value(&v)
}

#[cfg(test)]
mod tests {
    use super::parse_text as parse;
    use super::*;

    /// 2024-01-01 00:00 UTC, a Monday.
    const MON_2024_01_01: f64 = 1_704_067_200.0;

    #[test]
    fn empty_table_is_the_documented_default() {
        let p = parse("").unwrap();
        // The same prices; only the parsed one knows its (empty) table.
        assert_eq!(p.source, Some(toml::Value::Table(Default::default())));
        let p = Pricing { source: None, ..p };
        assert_eq!(p, Pricing::default());
        assert_eq!(p.currency, "USD");
        assert_eq!(p.market, Market::OnDemand);
        assert_eq!(p.pue, 1.2);
        assert_eq!(p.carbon_intensity_g_per_kwh, 400.0);
        assert_eq!(p.energy.price_per_kwh, 0.15);
        assert_eq!(p.energy.clock, LocalClock::UTC);
        assert_eq!(p.overhead_per_gpu_hour, 0.0);
        assert_eq!(p.idle_threshold, 0.05);
        assert_eq!(p.default_gpu_per_hour, None);
        assert_eq!(p.hourly_price("NVIDIA H100 80GB HBM3"), 0.0);
        assert_eq!(p.tariff_at(MON_2024_01_01), 0.15);
        let empty = toml::Value::Table(toml::Table::new());
        assert_eq!(
            Pricing::from_toml_value(&empty),
            Ok(Pricing {
                source: Some(empty.clone()),
                ..p
            })
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
        assert_eq!(p.energy.clock, LocalClock::FixedOffset(3600));
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
            (
                "[pricing.energy]\nutc_offset = \"Europe/Paris\"".into(),
                "pricing.energy.utc_offset",
                "for a time zone write timezone = \"Europe/Paris\"",
            ),
            (
                "[pricing.energy]\ntimezone = \"Europe/Berln\"".into(),
                "pricing.energy.timezone",
                "unknown time zone \"Europe/Berln\"",
            ),
            (
                "[pricing.energy]\ntimezone = \"\"".into(),
                "pricing.energy.timezone",
                "unknown time zone \"\"",
            ),
            (
                "[pricing.energy]\ntimezone = \"Etc/Unknown\"".into(),
                "pricing.energy.timezone",
                "unknown time zone",
            ),
            (
                "[pricing.energy]\ntimezone = \"CET-1CEST,M3.5.0,M10.5.0/3\"".into(),
                "pricing.energy.timezone",
                "an IANA name such as \"Europe/Berlin\"",
            ),
            (
                "[pricing.energy]\ntimezone = \"+01:00\"".into(),
                "pricing.energy.timezone",
                "for a fixed offset use utc_offset",
            ),
            ("[pricing.energy]\ntimezone = 1".into(), "pricing.energy.timezone", "invalid type"),
            (
                "[pricing.energy]\ntimezone = \"Europe/Berlin\"\nutc_offset = \"+01:00\"".into(),
                "pricing.energy.timezone",
                "cannot be set together with pricing.energy.utc_offset",
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
                "pricing.energy.window[0].days[1]",
                "unknown variant `funday`",
            ),
            (
                window("days = \"mon\"\nstart = \"22:00\"\nend = \"06:00\""),
                "pricing.energy.window[0].days",
                "invalid type",
            ),
            ("[pricing.energy]\nwindow = 3".into(), "pricing.energy.window", "invalid type"),
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
                "[[pricing.gpu]]\nmatch = \"H100\"\non_demand_per_hour = \"4\"".into(),
                "pricing.gpu[0].on_demand_per_hour",
                "invalid type",
            ),
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

    /// (timezone as written, the zone's canonical IANA name)
    #[test]
    fn timezone_names_resolve_in_the_bundled_database() {
        let cases = [
            ("Europe/Berlin", "Europe/Berlin"),
            ("europe/berlin", "Europe/Berlin"),
            ("America/New_York", "America/New_York"),
            ("Asia/Kolkata", "Asia/Kolkata"),
            ("UTC", "UTC"),
        ];
        for (written, want) in cases {
            let p = parse(&format!("[pricing.energy]\ntimezone = {written:?}")).unwrap();
            match &p.energy.clock {
                LocalClock::Zone(tz) => assert_eq!(tz.iana_name(), Some(want), "{written}"),
                other => panic!("{written}: {other:?}"),
            }
        }
        // Without either key the windows are in UTC, as before `timezone` existed.
        assert_eq!(
            parse("[pricing.energy]").unwrap().energy.clock,
            LocalClock::UTC
        );
    }

    /// deploy/config.example.toml shows `timezone` commented out beside `utc_offset`: switching
    /// to it as the comment says (drop utc_offset, uncomment timezone) gives a valid config, and
    /// uncommenting it alone gives the error about setting both.
    #[test]
    fn example_config_timezone_alternative() {
        let example = include_str!("../../../../deploy/config.example.toml");
        let offset = "\nutc_offset = \"+00:00\"\n";
        let zone = "\n# timezone = \"Europe/Berlin\"\n";
        assert!(example.contains(offset) && example.contains(zone));
        let uncommented = example.replace(zone, "\ntimezone = \"Europe/Berlin\"\n");
        let pricing = |text: &str| {
            let doc: toml::Table = toml::from_str(text).unwrap();
            from_toml_value(&doc["pricing"])
        };
        let p = pricing(&uncommented.replace(offset, "\n")).unwrap();
        assert!(
            matches!(&p.energy.clock, LocalClock::Zone(tz) if tz.iana_name() == Some("Europe/Berlin"))
        );
        let e = pricing(&uncommented).unwrap_err();
        assert_eq!(e.key, "pricing.energy.timezone");
    }

    #[test]
    fn not_a_table() {
        let e = from_toml_value(&toml::Value::Integer(3)).unwrap_err();
        assert_eq!(e.key, "pricing");
        assert!(e.problem.contains("must be a table"), "{e}");
    }
}
