//! A tiny command-line parser (`--flag`, `--key value`, `--key=value`): the two binaries take a
//! handful of options, not worth a dependency.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// Parsed options: every `--key` with its value (`None` for a flag).
pub struct Args {
    values: BTreeMap<String, Option<String>>,
}

impl Args {
    /// Parses `raw` (without the program name). `flags` take no value; `options` take one.
    /// Anything else is an error naming it.
    pub fn parse(raw: &[String], flags: &[&str], options: &[&str]) -> Result<Args> {
        let mut values = BTreeMap::new();
        let mut iter = raw.iter();
        while let Some(arg) = iter.next() {
            let Some(stripped) = arg.strip_prefix("--") else {
                bail!("unexpected argument {arg:?}; options start with --");
            };
            let (key, inline) = match stripped.split_once('=') {
                Some((key, value)) => (key, Some(value.to_string())),
                None => (stripped, None),
            };
            if flags.contains(&key) {
                if inline.is_some() {
                    bail!("--{key} takes no value");
                }
                values.insert(key.to_string(), None);
            } else if options.contains(&key) {
                let value = match inline {
                    Some(value) => value,
                    None => iter
                        .next()
                        .cloned()
                        .ok_or_else(|| anyhow!("--{key} needs a value"))?,
                };
                values.insert(key.to_string(), Some(value));
            } else {
                bail!("unknown option --{key}");
            }
        }
        Ok(Args { values })
    }

    pub fn flag(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    pub fn string(&self, key: &str) -> Option<&str> {
        self.values.get(key).and_then(|v| v.as_deref())
    }

    /// The value of `--key` parsed as `T`, or `default`.
    pub fn get<T: FromStr>(&self, key: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.string(key) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|e| anyhow!("invalid value for --{key}: {raw:?}: {e}")),
        }
    }

    /// `--key` as a duration (`30s`, `2m`, `500ms`), or `default`.
    pub fn duration(&self, key: &str, default: Duration) -> Result<Duration> {
        match self.string(key) {
            None => Ok(default),
            Some(raw) => humantime::parse_duration(raw)
                .with_context(|| format!("invalid duration for --{key}: {raw:?} (e.g. 30s, 2m)")),
        }
    }

    /// `--key` as a ratio in `0..=1`, or `default`.
    pub fn ratio(&self, key: &str, default: f64) -> Result<f64> {
        let value: f64 = self.get(key, default)?;
        if !(0.0..=1.0).contains(&value) {
            bail!("--{key} must be between 0 and 1, got {value}");
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(raw: &[&str]) -> Vec<String> {
        raw.iter().map(std::string::ToString::to_string).collect()
    }

    #[test]
    fn parses_flags_and_options() {
        let args = Args::parse(
            &strings(&[
                "--quick",
                "--state-gb",
                "2",
                "--rate=100",
                "--duration",
                "5s",
            ]),
            &["quick"],
            &["state-gb", "rate", "duration"],
        )
        .unwrap();
        assert!(args.flag("quick"));
        assert_eq!(args.get::<f64>("state-gb", 1.0).unwrap(), 2.0);
        assert_eq!(args.get::<u64>("rate", 0).unwrap(), 100);
        assert_eq!(
            args.duration("duration", Duration::ZERO).unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(args.get::<u32>("absent", 7).unwrap(), 7);
    }

    #[test]
    fn refuses_unknown_and_missing() {
        assert!(Args::parse(&strings(&["--nope"]), &[], &[]).is_err());
        assert!(Args::parse(&strings(&["--rate"]), &[], &["rate"]).is_err());
        assert!(Args::parse(&strings(&["plain"]), &[], &[]).is_err());
        let args = Args::parse(&strings(&["--ratio", "1.5"]), &[], &["ratio"]).unwrap();
        assert!(args.ratio("ratio", 0.0).is_err());
    }
}
