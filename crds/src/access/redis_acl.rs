//! The Redis ACL user of one service namespace: what the servers of that namespace may do with
//! the credential the operator gives them (instead of the operator's own URL).
//!
//! A namespace's user may run the quota script ([`QUOTA_SCRIPT`]: `EVALSHA`, `SCRIPT LOAD` when
//! Redis lost it, and the commands the script calls, which Redis checks against the caller's
//! permissions too), release a place in flight (`ZREM`) and `PING`, plus what the client sends
//! when it connects. Its keys: the tenant records of its namespace read-only (`%R~`), the
//! counters and limiters of its namespace read-write, nothing else. Every tenant key carries
//! `{namespace/name}` as its hash tag, and namespace names cannot contain `/`, so
//! `<prefix><kind>:{<namespace>/*` matches exactly that namespace's keys of that kind.
//!
//! Pure: the operator sends [`setuser_args`] with `ACL SETUSER` and writes [`credential_url`]
//! into the namespace's Secret; [`password_hash`] compares a stored password with the hashes
//! `ACL GETUSER` reports.

use sha2::{Digest, Sha256};

use super::redis_keys::{kind, RedisKeys, QUOTA_SCRIPT};

/// Commands the quota script calls (`redis.call`), each checked against the user's ACL.
pub const SCRIPT_COMMANDS: [&str; 17] = [
    "exists",
    "hmget",
    "time",
    "zrange",
    "hincrby",
    "ttl",
    "expire",
    "hget",
    "zremrangebyscore",
    "zcard",
    "zadd",
    "pexpire",
    "zrangebyscore",
    "del",
    "decrby",
    "incrby",
    "get",
];

/// Commands the server sends itself: the script by hash (loaded again after a Redis restart),
/// the in-flight release, the readiness probe; what redis-rs sends on connecting (credentials,
/// connection name; the slot map of a cluster). `CLIENT SETINFO` (Redis 7.2+) is left out so
/// the rules load on Redis 7.0: redis-rs ignores its answer.
pub const SERVER_COMMANDS: [&str; 8] = [
    "evalsha",
    "script|load",
    "zrem",
    "ping",
    "auth",
    "hello",
    "client|setname",
    "cluster|slots",
];

/// The ACL user name of a service namespace.
pub fn user_name(namespace: &str) -> String {
    format!("nlu-ns-{namespace}")
}

/// Escapes Redis glob characters, so a prefix is matched literally.
fn glob_literal(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

/// The key pattern of every key of `kind` of the tenants of `namespace`.
pub fn namespace_keys(keys: &RedisKeys, kind: &str, namespace: &str) -> String {
    format!("{}{kind}:{{{namespace}/*", glob_literal(keys.prefix()))
}

/// The user's rules after `reset` (which also drops every password and key pattern, turns the
/// user off and denies every command). Redis checks `EVALSHA` against its declared keys as a
/// write (a script may write anything), so the root permissions allow the server's own
/// commands on all the namespace's keys, and two selectors decide what the script (and a
/// direct call) may do with them: read the records, read and write the counters.
pub fn rules(keys: &RedisKeys, namespace: &str) -> Vec<String> {
    let record = namespace_keys(keys, kind::TENANT, namespace);
    let counters: Vec<String> = kind::COUNTERS
        .iter()
        .map(|k| format!("~{}", namespace_keys(keys, k, namespace)))
        .collect();
    let mut rules = vec!["on".to_owned(), "resetchannels".to_owned()];
    rules.extend(
        SERVER_COMMANDS
            .iter()
            .filter(|c| **c != "zrem")
            .map(|c| format!("+{c}")),
    );
    rules.push(format!("~{record}"));
    rules.extend(counters.iter().cloned());
    rules.push(format!("(+exists +hmget %R~{record})"));
    let writes: Vec<String> = SCRIPT_COMMANDS
        .iter()
        .chain(&["zrem"])
        .map(|c| format!("+{c}"))
        .collect();
    rules.push(format!("({} {})", writes.join(" "), counters.join(" ")));
    rules
}

/// Arguments of `ACL SETUSER` (after `ACL`): the whole user from scratch, with `password` as
/// its only password, so an earlier password stops working at once.
pub fn setuser_args(keys: &RedisKeys, namespace: &str, password: &str) -> Vec<String> {
    let mut args = vec![
        "SETUSER".to_owned(),
        user_name(namespace),
        "reset".to_owned(),
    ];
    args.push(format!(">{password}"));
    args.extend(rules(keys, namespace));
    args
}

/// How Redis shows a password in `ACL GETUSER`: its SHA-256 in lowercase hex.
pub fn password_hash(password: &str) -> String {
    format!("{:x}", Sha256::digest(password.as_bytes()))
}

/// `url` (the operator's Redis URL: `redis://`, `rediss://`, `redis+cluster://`,
/// `rediss+cluster://`) with `user:password@` in place of its credentials: same scheme, hosts,
/// database and options. `user` and `password` must be URL-safe (the ones made here are).
pub fn credential_url(url: &str, user: &str, password: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .filter(|(scheme, _)| {
            matches!(
                *scheme,
                "redis" | "rediss" | "redis+cluster" | "rediss+cluster"
            )
        })
        .ok_or_else(|| {
            "the operator's Redis URL must be redis://, rediss://, redis+cluster:// or \
             rediss+cluster:// to hand namespaces their own credential"
                .to_owned()
        })?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Ok(format!("{scheme}://{user}:{password}@{hosts}{tail}"))
}

/// The user name and password in a URL made by [`credential_url`]; `None` without both.
pub fn url_credentials(url: &str) -> Option<(String, String)> {
    let (_, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (userinfo, _) = rest[..end].rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':')?;
    (!user.is_empty() && !password.is_empty()).then(|| (user.to_owned(), password.to_owned()))
}

/// Whether the script's own text calls exactly [`SCRIPT_COMMANDS`] (a new call in the script
/// without a rule here would be refused with `NOPERM` for every namespace).
pub fn script_calls() -> Vec<String> {
    let mut calls: Vec<String> = QUOTA_SCRIPT
        .split("redis.call('")
        .skip(1)
        .filter_map(|rest| rest.split_once('\''))
        .map(|(name, _)| name.to_ascii_lowercase())
        .collect();
    calls.sort();
    calls.dedup();
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_cover_exactly_the_commands_the_script_calls() {
        let mut listed: Vec<String> = SCRIPT_COMMANDS.iter().map(|c| c.to_string()).collect();
        listed.sort();
        assert_eq!(script_calls(), listed);
    }

    #[test]
    fn rules_give_read_only_records_and_read_write_counters_of_one_namespace() {
        let rules = rules(&RedisKeys::default(), "team-a");
        assert!(rules.contains(&"(+exists +hmget %R~nlu:tenant:{team-a/*)".to_owned()));
        let counters = rules.last().unwrap();
        assert!(counters.starts_with("(+exists +hmget +time"), "{counters}");
        assert!(counters.contains("+zrem") && !counters.contains("tenant"));
        for k in [
            "usage",
            "rate",
            "rate-tokens",
            "rate-tokens-sum",
            "in-flight",
        ] {
            assert!(rules.contains(&format!("~nlu:{k}:{{team-a/*")), "{k}");
            assert!(counters.contains(&format!(" ~nlu:{k}:{{team-a/*")), "{k}");
        }
        assert!(!rules.iter().any(|r| r.contains("~*") || r == "allkeys"));
        assert!(!rules.iter().any(|r| r.starts_with("+@")), "no categories");
        assert!(rules.contains(&"+evalsha".to_owned()));
        assert!(!rules.contains(&"+eval".to_owned()));
    }

    #[test]
    fn prefixes_are_matched_literally() {
        let keys = RedisKeys::new("a*b?[c]\\:");
        assert_eq!(
            namespace_keys(&keys, kind::RATE, "ns"),
            "a\\*b\\?\\[c\\]\\\\:rate:{ns/*"
        );
    }

    #[test]
    fn setuser_starts_from_scratch_with_one_password() {
        let args = setuser_args(&RedisKeys::default(), "ns", "s3cret");
        assert_eq!(args[..4], ["SETUSER", "nlu-ns-ns", "reset", ">s3cret"]);
        assert_eq!(args.iter().filter(|a| a.starts_with('>')).count(), 1);
        assert_eq!(args[4], "on");
    }

    #[test]
    fn password_hash_is_redis_sha256_hex() {
        assert_eq!(
            password_hash("foo"),
            "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
        );
    }

    #[test]
    fn credential_urls_keep_scheme_hosts_database_and_options() {
        for (url, expected) in [
            ("redis://r:6379/0", "redis://u:p@r:6379/0"),
            (
                "rediss://:root@redis.nlu-system.svc:6380/2?protocol=resp3",
                "rediss://u:p@redis.nlu-system.svc:6380/2?protocol=resp3",
            ),
            (
                "redis+cluster://default:x%40y@a:7000,b:7001",
                "redis+cluster://u:p@a:7000,b:7001",
            ),
            ("rediss+cluster://a,b/0", "rediss+cluster://u:p@a,b/0"),
        ] {
            assert_eq!(credential_url(url, "u", "p").unwrap(), expected, "{url}");
            assert_eq!(
                url_credentials(expected),
                Some(("u".to_owned(), "p".to_owned()))
            );
        }
        assert!(credential_url("unix:///run/redis.sock", "u", "p").is_err());
        assert_eq!(url_credentials("redis://r:6379/0"), None);
        assert_eq!(url_credentials("redis://:only-password@r/"), None);
    }
}
