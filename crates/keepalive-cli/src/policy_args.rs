//! The policy flags every subcommand shares: `--policy` or `--idle/--interval/--count/--user-timeout`.
//! Values go to the library's one parser, key by key.

use crate::UsageError;
use clap::Args;
use keepalive::policy::{Key, Policy};

#[derive(Debug, Args, Default)]
pub struct PolicyArgs {
    /// The whole policy, e.g. 'idle=60s,interval=10s,count=5,user-timeout=90s'.
    #[arg(long, value_name = "POLICY")]
    pub policy: Option<String>,
    /// Idle time before the first probe (TCP_KEEPIDLE, 1..=32767 s; units ms, s, m, h).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub idle: Option<String>,
    /// Time between probes (TCP_KEEPINTVL, 1..=32767 s).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub interval: Option<String>,
    /// Unanswered probes before the reset (TCP_KEEPCNT, 1..=127).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub count: Option<String>,
    /// TCP_USER_TIMEOUT (up to 2147483647ms; a bare number is seconds; 0 = off, or auto =
    /// idle + interval x count).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub user_timeout: Option<String>,
}

impl PolicyArgs {
    /// The policy given, from `--policy`, from the key flags, or from `positional` (a command's
    /// POLICY argument, which counts as `--policy`). Giving it two ways is an error.
    pub fn to_policy(&self, positional: Option<&str>) -> anyhow::Result<Policy> {
        let flags = [
            (Key::Idle, &self.idle),
            (Key::Interval, &self.interval),
            (Key::Count, &self.count),
            (Key::UserTimeout, &self.user_timeout),
        ];
        for (key, value) in &flags {
            // The flags take values that start with '-' (so that `--idle -5` is refused for
            // being negative); a flag is no value.
            if let Some(flag) = value.as_deref().filter(|v| v.starts_with("--")) {
                return Err(UsageError::err(format!(
                    "--{} needs a value before the next flag ({flag})",
                    key.name()
                )));
            }
        }
        let any_flag = flags.iter().any(|(_, v)| v.is_some());
        let whole = match (positional, self.policy.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(UsageError::err(
                    "the policy is given twice: as an argument and as --policy; give one",
                ));
            }
            (p, q) => p.or(q),
        };
        if let Some(text) = whole {
            if any_flag {
                return Err(UsageError::err(
                    "give the policy either whole (--policy or POLICY) or as --idle/--interval/--count/--user-timeout, not both",
                ));
            }
            return Ok(Policy::parse(text)?);
        }
        let mut policy = Policy::empty();
        for (key, value) in flags {
            if let Some(value) = value {
                policy.set(key, value)?;
            }
        }
        Ok(policy)
    }
}
