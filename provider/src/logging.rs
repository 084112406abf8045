//! hclog-style JSON lines on stderr (`{"@level":"info","@message":"...","@module":"redisha",...}`):
//! go-plugin parses them and Terraform shows them under TF_LOG / TF_LOG_PROVIDER. stdout is
//! reserved for the handshake line. Only messages and the fields code passes are logged; code
//! never passes attribute values, so sensitive values cannot leak here.

use std::io::Write;

use serde_json::{Map, Value as Json};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

struct HclogLayer;

#[derive(Default)]
struct Fields(Map<String, Json>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), Json::from(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), Json::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Json::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Json::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Json::from(value));
    }
}

fn level_name(l: &Level) -> &'static str {
    match *l {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

impl<S: Subscriber> Layer<S> for HclogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert("@level".into(), level_name(event.metadata().level()).into());
        let message = fields.0.remove("message").unwrap_or(Json::from(""));
        line.insert("@message".into(), message);
        line.insert("@module".into(), "redisha".into());
        line.insert("@timestamp".into(), timestamp().into());
        line.extend(fields.0);
        let mut text = Json::Object(line).to_string();
        text.push('\n');
        // Logging must never fail the provider: a closed stderr is ignored.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

/// Now in hclog's format (`2006-01-02T15:04:05.000000Z07:00`, UTC), which go-plugin parses.
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Our own crates' events (the operator's progress, checkpoints and data-loss warnings live in
/// redisha_cluster and redisha_aws); h2/hyper/aws-sdk internals are noise at debug level.
fn filter(level: Level) -> tracing_subscriber::filter::Targets {
    [
        "terraform_provider_redisha",
        "redisha_cluster",
        "redisha_aws",
        "redisha_planner",
    ]
    .into_iter()
    .fold(tracing_subscriber::filter::Targets::new(), |f, target| {
        f.with_target(target, level)
    })
}

/// Level from TF_LOG_PROVIDER_REDISHA, TF_LOG_PROVIDER or TF_LOG (Terraform's own variables);
/// `info` when none is set.
pub fn init() {
    let level = ["TF_LOG_PROVIDER_REDISHA", "TF_LOG_PROVIDER", "TF_LOG"]
        .iter()
        .find_map(|k| std::env::var(k).ok())
        .map(|v| v.to_ascii_lowercase())
        .filter(|v| ["trace", "debug", "info", "warn", "error"].contains(&v.as_str()))
        .unwrap_or_else(|| "info".into());
    let filter = filter(level.parse::<Level>().unwrap_or(Level::INFO));
    let _ = tracing_subscriber::registry()
        .with(HclogLayer.with_filter(filter))
        .try_init();
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    #[test]
    fn every_redisha_crate_reaches_terraforms_log_and_nothing_else() {
        let f = super::filter(Level::DEBUG);
        for target in [
            "terraform_provider_redisha::server",
            "redisha_cluster::migrate_exec",
            "redisha_aws::driver",
        ] {
            assert!(f.would_enable(target, &Level::DEBUG), "{target}");
        }
        assert!(!f.would_enable("h2::codec", &Level::DEBUG));
        assert!(!super::filter(Level::INFO).would_enable("redisha_cluster::ops", &Level::DEBUG));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }
}
