//! `nlu-operator usage`: a tenant's daily usage (requests, tokens, refusals by reason), one row
//! per UTC day, read from the usage hashes in Redis with the operator's own connection settings
//! (the same flags and `NLU_OPERATOR_*` variables, so it runs as is in the operator's pod).

use chrono::{Days, NaiveDate};
use clap::ValueEnum;
use nlu_crds::access::redis_client::RedisConnection;
use nlu_crds::access::redis_keys::{DayUsage, MAX_USAGE_RETENTION_DAYS};
use nlu_crds::access::{QualifiedName, RedisKeys};

use super::redis_sync;
use crate::config::OperatorConfig;

/// Flags of `nlu-operator usage`.
#[derive(clap::Args, Clone, Debug)]
pub struct UsageArgs {
    /// The Tenant, `namespace/name`.
    #[arg(long)]
    pub tenant: QualifiedName,

    /// First UTC day, `YYYY-MM-DD`. Days older than `--usage-retention-days` are gone (zeros).
    #[arg(long)]
    pub since: NaiveDate,

    /// Last UTC day, `YYYY-MM-DD` (default: today).
    #[arg(long)]
    pub until: Option<NaiveDate>,

    /// `table` or `csv`.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// The operator's settings: `--redis-url`, `--redis-ca-file` and `--redis-prefix` are read.
    #[command(flatten)]
    pub operator: OperatorConfig,
}

/// How the rows are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns, for people.
    Table,
    /// Comma-separated, with a header line.
    Csv,
}

/// Prints the tenant's usage of `--since` to `--until`.
pub async fn usage(args: &UsageArgs) -> anyhow::Result<()> {
    let until = args
        .until
        .unwrap_or_else(|| chrono::Utc::now().date_naive());
    let mut conn = super::connect_redis(&args.operator)?;
    let keys = RedisKeys::new(args.operator.redis_prefix.clone());
    let rows = read(&mut conn, &keys, &args.tenant, args.since, until).await?;
    print!("{}", render(&rows, args.format));
    Ok(())
}

/// The tenant's usage of each day from `since` to `until`, oldest first; a day with nothing
/// counted (or no longer kept) is all zeros. At most the longest retention's days at once.
pub async fn read(
    conn: &mut RedisConnection,
    keys: &RedisKeys,
    tenant: &QualifiedName,
    since: NaiveDate,
    until: NaiveDate,
) -> anyhow::Result<Vec<(NaiveDate, DayUsage)>> {
    let days = day_range(since, until)?;
    let usage = redis_sync::read_days(conn, keys, tenant, &days).await?;
    Ok(days.into_iter().zip(usage).collect())
}

/// The days of `since..=until`: not backwards, and no more than Redis can hold.
fn day_range(since: NaiveDate, until: NaiveDate) -> anyhow::Result<Vec<NaiveDate>> {
    let span = (until - since).num_days();
    if span < 0 {
        anyhow::bail!("--since {since} is after --until {until}");
    }
    if span.unsigned_abs() > MAX_USAGE_RETENTION_DAYS {
        anyhow::bail!(
            "at most {MAX_USAGE_RETENTION_DAYS} days before --until are kept; ask for fewer"
        );
    }
    Ok((0..=span.unsigned_abs())
        .filter_map(|n| since.checked_add_days(Days::new(n)))
        .collect())
}

/// The rows as a table or CSV: date, requests, tokens, then a `refused_<reason>` column for each
/// reason refused on any of these days (in name order).
pub fn render(rows: &[(NaiveDate, DayUsage)], format: Format) -> String {
    let reasons: std::collections::BTreeSet<&str> = rows
        .iter()
        .flat_map(|(_, day)| day.refused.keys().map(String::as_str))
        .collect();
    let header: Vec<String> = ["date", "requests", "tokens"]
        .into_iter()
        .map(String::from)
        .chain(reasons.iter().map(|r| format!("refused_{r}")))
        .collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(date, day)| {
            [
                date.to_string(),
                day.requests.to_string(),
                day.tokens.to_string(),
            ]
            .into_iter()
            .chain(
                reasons
                    .iter()
                    .map(|r| day.refused.get(*r).copied().unwrap_or(0).to_string()),
            )
            .collect()
        })
        .collect();
    let lines = std::iter::once(&header).chain(&cells);
    match format {
        // Every cell is a date, a number or a reason name: nothing to quote.
        Format::Csv => lines.map(|line| line.join(",") + "\n").collect(),
        Format::Table => {
            let widths: Vec<usize> = (0..header.len())
                .map(|c| lines.clone().map(|line| line[c].len()).max().unwrap_or(0))
                .collect();
            lines
                .map(|line| {
                    let padded: Vec<String> = line
                        .iter()
                        .zip(&widths)
                        .enumerate()
                        // Dates to the left, numbers to the right.
                        .map(|(c, (cell, w))| match c {
                            0 => format!("{cell:<w$}"),
                            _ => format!("{cell:>w$}"),
                        })
                        .collect();
                    padded.join("  ") + "\n"
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    fn rows() -> Vec<(NaiveDate, DayUsage)> {
        vec![
            (
                day(1),
                DayUsage {
                    requests: 1200,
                    tokens: 35_000,
                    refused: BTreeMap::from([("requests_per_minute".into(), 7)]),
                },
            ),
            (day(2), DayUsage::default()),
        ]
    }

    #[test]
    fn csv_has_a_header_and_a_row_per_day_with_the_reasons_seen() {
        assert_eq!(
            render(&rows(), Format::Csv),
            "date,requests,tokens,refused_requests_per_minute\n\
             2026-11-01,1200,35000,7\n\
             2026-11-02,0,0,0\n"
        );
    }

    #[test]
    fn the_table_aligns_columns() {
        assert_eq!(
            render(&rows(), Format::Table),
            "date        requests  tokens  refused_requests_per_minute\n\
             2026-11-01      1200   35000                            7\n\
             2026-11-02         0       0                            0\n"
        );
        assert_eq!(
            render(&[], Format::Table),
            "date  requests  tokens\n",
            "no days: the header"
        );
    }

    #[test]
    fn the_range_runs_forwards_and_is_bounded() {
        assert_eq!(day_range(day(1), day(3)).unwrap(), [day(1), day(2), day(3)]);
        assert_eq!(day_range(day(2), day(2)).unwrap(), [day(2)]);
        assert!(day_range(day(3), day(1)).is_err());
        let long_ago = day(1) - Days::new(MAX_USAGE_RETENTION_DAYS + 1);
        assert!(day_range(long_ago, day(1)).is_err());
    }
}
