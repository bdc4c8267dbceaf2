//! Access policies (CONTRACT.md section 8): what a valid signature may do.
//! Pure, like the signature schemes: the admin API, the CLI, the stores
//! and the verifier share it, and nothing here does I/O.
//!
//! - [`AccessPolicy`]: the document an admin sets on an application or a
//!   key, validated by [`AccessPolicy::parse`] (the only way in).
//! - [`Enforced`]: a key's policy and its application's, ready to check a
//!   request against, with their rate limiters.
//! - [`path_pattern`], [`source`], [`rate_limit`]: one file per kind of rule.

pub mod path_pattern;
pub mod rate_limit;
pub mod source;

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::clock::Clock;

pub use path_pattern::{normalize_path, PathPattern};
pub use rate_limit::RateLimitDocument;
pub use rate_limit::{Allowance, Limiter, OverLimit, RateLimit};

/// Bounds on a policy document, so one cannot make every request slow.
pub const MAX_RULES: usize = 256;
pub const MAX_SOURCE_CIDRS: usize = 256;
const MAX_METHODS: usize = 16;
const MAX_METHOD_LEN: usize = 32;

/// Who carries a policy: only a key may name source networks (an
/// application's keys may run in different places).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    App,
    Key,
}

/// One allowed route: some methods (or `*`, any) on a path pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Upper-case; `["*"]` for any method.
    methods: Vec<String>,
    path: PathPattern,
}

impl Rule {
    /// The path first: in a long list most rules differ by path, and a
    /// prefix comparison fails at the first differing byte.
    fn allows(&self, method: &str, normalized_path: &str) -> bool {
        self.path.matches(normalized_path)
            && self
                .methods
                .iter()
                .any(|m| m == "*" || m.eq_ignore_ascii_case(method))
    }
}

/// A validated policy. `None` fields mean "no restriction"; `Some(vec![])`
/// rules allow nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AccessPolicy {
    pub rules: Option<Vec<Rule>>,
    pub source_cidrs: Option<Vec<IpNet>>,
    pub rate_limit: Option<RateLimit>,
}

/// A policy as the admin API reads and shows it (CONTRACT.md section 8):
/// what `AccessPolicy::parse` takes, and the OpenAPI document's schema of
/// it (`http/openapi.rs`). Absent fields mean "no restriction".
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    /// Allowed routes; `[]` allows nothing.
    rules: Option<Vec<RuleDocument>>,
    /// Networks a key may be used from (keys only), e.g. `203.0.113.0/24`.
    source_cidrs: Option<Vec<String>>,
    rate_limit: Option<rate_limit::RateLimitDocument>,
}

/// One allowed route: methods (or `["*"]`) on an exact path or a prefix
/// ending in `/*`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleDocument {
    methods: Option<Vec<String>>,
    path: Option<String>,
}

/// RFC 9110's token characters: what a method may be made of.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Rule {
    fn parse(index: usize, document: RuleDocument) -> Result<Rule, String> {
        let at = |what: String| format!("rules[{index}]: {what}");
        let methods = document
            .methods
            .ok_or_else(|| at("needs methods, e.g. [\"GET\", \"POST\"] or [\"*\"]".into()))?;
        if methods.is_empty() || methods.len() > MAX_METHODS {
            return Err(at(format!("methods must list 1 to {MAX_METHODS} methods")));
        }
        let mut upper = Vec::with_capacity(methods.len());
        for method in methods {
            if method.len() > MAX_METHOD_LEN || !is_token(&method) {
                return Err(at(format!("{method:?} is not an HTTP method")));
            }
            let method = method.to_ascii_uppercase();
            if !upper.contains(&method) {
                upper.push(method);
            }
        }
        if upper.iter().any(|m| m == "*") {
            upper = vec!["*".into()];
        }
        let path = document
            .path
            .ok_or_else(|| at("needs a path, e.g. \"/v1/orders/*\"".into()))?;
        let path = PathPattern::parse(&path).map_err(at)?;
        Ok(Rule {
            methods: upper,
            path,
        })
    }

    fn to_json(&self) -> Value {
        json!({ "methods": self.methods, "path": self.path.as_str() })
    }
}

impl AccessPolicy {
    /// The admin API's body (`PUT .../policy`) or the CLI's `--json`.
    pub fn parse(json: &[u8], holder: Holder) -> Result<AccessPolicy, String> {
        // The error names the field at fault: `rate_limit.per_second: ...`.
        let document: PolicyDocument =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(json))
                .map_err(|e| match e.path().to_string().as_str() {
                    "." => format!("not a policy document: {}", e.inner()),
                    path => format!("{path}: {}", e.inner()),
                })?;
        let rules = match document.rules {
            None => None,
            Some(rules) if rules.len() > MAX_RULES => {
                return Err(format!("at most {MAX_RULES} rules"))
            }
            Some(rules) => Some(
                rules
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| Rule::parse(i, r))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let source_cidrs = match (document.source_cidrs, holder) {
            (None, _) => None,
            (Some(_), Holder::App) => {
                return Err("source_cidrs belongs on a key's policy, not an application's".into())
            }
            (Some(list), Holder::Key) if list.len() > MAX_SOURCE_CIDRS => {
                return Err(format!("at most {MAX_SOURCE_CIDRS} source_cidrs"))
            }
            (Some(list), Holder::Key) => Some(
                list.iter()
                    .map(|text| {
                        source::parse_network(text).map_err(|e| format!("source_cidrs: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let rate_limit = document.rate_limit.map(RateLimit::parse).transpose()?;
        Ok(AccessPolicy {
            rules,
            source_cidrs,
            rate_limit,
        })
    }

    /// A policy as the database keeps it (written by [`Self::to_stored`]).
    /// Text that no longer parses allows nothing: a damaged policy must
    /// fail closed, never open.
    pub fn from_stored(text: Option<&str>, holder: Holder) -> AccessPolicy {
        match text {
            None => AccessPolicy::default(),
            Some(text) => AccessPolicy::parse(text.as_bytes(), holder).unwrap_or_else(|e| {
                tracing::error!(error = %e, "a stored access policy does not parse; allowing nothing");
                AccessPolicy {
                    rules: Some(Vec::new()),
                    ..AccessPolicy::default()
                }
            }),
        }
    }

    /// `None` for the empty policy, which is stored as no policy at all.
    pub fn to_stored(&self) -> Option<String> {
        (!self.is_unrestricted()).then(|| self.to_json().to_string())
    }

    pub fn is_unrestricted(&self) -> bool {
        self.rules.is_none() && self.source_cidrs.is_none() && self.rate_limit.is_none()
    }

    /// As the admin API returns it: only the fields that are set.
    pub fn to_json(&self) -> Value {
        let mut fields = Map::new();
        if let Some(rules) = &self.rules {
            fields.insert("rules".into(), rules.iter().map(Rule::to_json).collect());
        }
        if let Some(cidrs) = &self.source_cidrs {
            fields.insert(
                "source_cidrs".into(),
                cidrs.iter().map(|c| json!(c.to_string())).collect(),
            );
        }
        if let Some(limit) = &self.rate_limit {
            fields.insert("rate_limit".into(), limit.to_json());
        }
        Value::Object(fields)
    }
}

/// Why a request with a valid signature was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Outside the allowed routes.
    Route,
    /// From outside the key's networks (`None`: the address is unknown).
    Source(Option<IpAddr>),
    RateLimited(OverLimit),
}

/// One holder's policy, compiled: its rate limiter lives as long as the
/// policy does, so the count carries on until the policy changes.
pub struct Compiled {
    policy: AccessPolicy,
    limiter: Option<Limiter>,
    /// The stored text it came from: a reload with the same text keeps
    /// this value, and so the count.
    stored: Option<String>,
}

impl Compiled {
    /// `clock`: what the rate limiter counts time in.
    pub fn new(stored: Option<String>, holder: Holder, clock: &Clock) -> Compiled {
        let policy = AccessPolicy::from_stored(stored.as_deref(), holder);
        Compiled {
            limiter: policy
                .rate_limit
                .map(|limit| Limiter::new(limit, clock.clone())),
            policy,
            stored,
        }
    }

    pub fn stored(&self) -> Option<&str> {
        self.stored.as_deref()
    }

    fn allows_route(&self, method: &str, normalized_path: &str) -> bool {
        match &self.policy.rules {
            None => true,
            Some(rules) => rules.iter().any(|r| r.allows(method, normalized_path)),
        }
    }
}

/// What a request is checked against: its key's policy and its
/// application's, both of which must allow it (so a key's policy can only
/// narrow its application's), as of `policy_seq`.
pub struct Enforced {
    pub app: Arc<Compiled>,
    pub key: Arc<Compiled>,
    /// The key's policy version in the database when these were read: the
    /// nonce ledger refuses to record a pair checked against an older one.
    pub policy_seq: i64,
}

impl Enforced {
    /// The contract's order: routes, then source, then rate limits (the
    /// key's, then the application's), so a refused route or source never
    /// spends the allowance. `client` is asked for only when a key is
    /// limited to some networks. Accepted, with a rate limit: the tighter
    /// allowance left, for the answer's `RateLimit-*` fields.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        client: impl FnOnce() -> Option<IpAddr>,
    ) -> Result<Option<Allowance>, Refusal> {
        if self.app.policy.rules.is_some() || self.key.policy.rules.is_some() {
            let normalized = normalize_path(path);
            if !(self.app.allows_route(method, &normalized)
                && self.key.allows_route(method, &normalized))
            {
                return Err(Refusal::Route);
            }
        }
        if let Some(networks) = &self.key.policy.source_cidrs {
            let address = client();
            let inside = address.is_some_and(|a| networks.iter().any(|n| n.contains(&a)));
            if !inside {
                return Err(Refusal::Source(address));
            }
        }
        let key = self.key.limiter.as_ref();
        let key_allowance = key
            .map(Limiter::check)
            .transpose()
            .map_err(Refusal::RateLimited)?;
        let app_allowance = match self.app.limiter.as_ref().map(Limiter::check).transpose() {
            Ok(allowance) => allowance,
            Err(over) => {
                // Not accepted, so the key's allowance it took comes back.
                key.into_iter().for_each(Limiter::give_back);
                return Err(Refusal::RateLimited(over));
            }
        };
        // The tighter of the two (the key's on a tie).
        Ok([key_allowance, app_allowance]
            .into_iter()
            .flatten()
            .min_by_key(|allowance| allowance.remaining))
    }

    /// Undoes the allowance a successful [`check`](Self::check) took, for
    /// a request that was then not accepted (its nonce turned out to be
    /// used already, or could not be recorded): only accepted requests
    /// count against a limit (CONTRACT.md section 8).
    pub fn give_back(&self) {
        [&self.key.limiter, &self.app.limiter]
            .into_iter()
            .flatten()
            .for_each(Limiter::give_back);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_policy(json: &str) -> Result<AccessPolicy, String> {
        AccessPolicy::parse(json.as_bytes(), Holder::Key)
    }

    fn enforced(app: &str, key: &str) -> Enforced {
        let stored = |json: &str, holder| {
            AccessPolicy::parse(json.as_bytes(), holder)
                .unwrap()
                .to_stored()
        };
        Enforced {
            app: Arc::new(Compiled::new(
                stored(app, Holder::App),
                Holder::App,
                &Clock::manual(0),
            )),
            key: Arc::new(Compiled::new(
                stored(key, Holder::Key),
                Holder::Key,
                &Clock::manual(0),
            )),
            policy_seq: 0,
        }
    }

    #[test]
    fn the_contract_example_round_trips() {
        let text = r#"{"rules": [{"methods": ["GET", "POST"], "path": "/v1/orders/*"}],
            "source_cidrs": ["203.0.113.0/24", "2001:db8::/32"],
            "rate_limit": {"per_second": 50, "burst": 100}}"#;
        let policy = key_policy(text).unwrap();
        let expected: Value = serde_json::from_str(text).unwrap();
        assert_eq!(policy.to_json(), expected);
        let stored = policy.to_stored().unwrap();
        assert_eq!(
            AccessPolicy::from_stored(Some(&stored), Holder::Key),
            policy
        );
        assert_eq!(key_policy("{}").unwrap().to_stored(), None);
    }

    #[test]
    fn bad_documents_say_what_is_wrong() {
        for (bad, says) in [
            (
                r#"{"rules": [{"methods": ["GET"], "path": "orders"}]}"#,
                "must start with /",
            ),
            (r#"{"rules": [{"methods": [], "path": "/x"}]}"#, "methods"),
            (
                r#"{"rules": [{"methods": ["GE T"], "path": "/x"}]}"#,
                "not an HTTP method",
            ),
            (r#"{"rules": [{"path": "/x"}]}"#, "needs methods"),
            (r#"{"source_cidrs": ["300.1.1.1/8"]}"#, "source_cidrs"),
            (r#"{"rate_limit": {"per_second": 0}}"#, "per_second"),
            (r#"{"rule": []}"#, "unknown field"),
            (r#"[]"#, "not a policy document"),
        ] {
            let error = key_policy(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
        let app = AccessPolicy::parse(br#"{"source_cidrs": ["10.0.0.0/8"]}"#, Holder::App);
        assert!(app.unwrap_err().contains("key"));
    }

    #[test]
    fn a_key_narrows_its_application() {
        let policy = enforced(
            r#"{"rules": [{"methods": ["GET", "POST"], "path": "/v1/*"}]}"#,
            r#"{"rules": [{"methods": ["*"], "path": "/v1/orders/*"}, {"methods": ["DELETE"], "path": "/v1/x"}]}"#,
        );
        let none = || None;
        assert_eq!(
            policy.check("GET", "/v1/orders/1", none).map(|_| ()),
            Ok(())
        );
        assert_eq!(
            policy.check("get", "/v1/orders/1", none).map(|_| ()),
            Ok(())
        );
        assert_eq!(
            policy.check("DELETE", "/v1/orders/1", none),
            Err(Refusal::Route)
        );
        assert_eq!(policy.check("DELETE", "/v1/x", none), Err(Refusal::Route));
        assert_eq!(policy.check("GET", "/v1/whoami", none), Err(Refusal::Route));
        assert_eq!(
            policy.check("GET", "/v1/orders/../whoami", none),
            Err(Refusal::Route)
        );
        let nothing = enforced(r#"{"rules": []}"#, "{}");
        assert_eq!(nothing.check("GET", "/", none), Err(Refusal::Route));
        let everything = enforced("{}", "{}");
        assert_eq!(
            everything.check("PATCH", "/anything", none).map(|_| ()),
            Ok(())
        );
    }

    #[test]
    fn sources_are_checked_only_when_listed() {
        let policy = enforced(
            "{}",
            r#"{"source_cidrs": ["203.0.113.0/24", "2001:db8::/32"]}"#,
        );
        let from = |a: &str| {
            let address: IpAddr = a.parse().unwrap();
            move || Some(address)
        };
        assert_eq!(
            policy.check("GET", "/", from("203.0.113.9")).map(|_| ()),
            Ok(())
        );
        assert_eq!(
            policy.check("GET", "/", from("2001:db8:1::5")).map(|_| ()),
            Ok(())
        );
        assert!(matches!(
            policy.check("GET", "/", from("198.51.100.1")),
            Err(Refusal::Source(_))
        ));
        assert!(matches!(
            policy.check("GET", "/", || None),
            Err(Refusal::Source(None))
        ));
        let open = enforced("{}", "{}");
        assert_eq!(
            open.check("GET", "/", || panic!("not needed")).map(|_| ()),
            Ok(())
        );
    }

    #[test]
    fn refused_routes_do_not_spend_the_allowance() {
        let policy = enforced(
            r#"{"rate_limit": {"per_second": 1, "burst": 2}}"#,
            r#"{"rules": [{"methods": ["GET"], "path": "/ok"}]}"#,
        );
        for _ in 0..10 {
            assert_eq!(policy.check("GET", "/no", || None), Err(Refusal::Route));
        }
        assert_eq!(policy.check("GET", "/ok", || None).map(|_| ()), Ok(()));
        assert_eq!(policy.check("GET", "/ok", || None).map(|_| ()), Ok(()));
        assert!(matches!(
            policy.check("GET", "/ok", || None),
            Err(Refusal::RateLimited(_))
        ));
    }

    /// A request the application's limit refuses is not accepted, so the
    /// key's allowance it took comes back; and `give_back` undoes a check.
    #[test]
    fn only_accepted_requests_spend_an_allowance() {
        let policy = enforced(
            r#"{"rate_limit": {"per_second": 0.01, "burst": 1}}"#,
            r#"{"rate_limit": {"per_second": 0.01, "burst": 3}}"#,
        );
        let remaining = |p: &Enforced| p.check("GET", "/", || None).map(|a| a.unwrap().remaining);
        assert_eq!(remaining(&policy), Ok(0));
        for _ in 0..5 {
            assert!(matches!(remaining(&policy), Err(Refusal::RateLimited(_))));
        }
        policy.give_back();
        assert_eq!(remaining(&policy), Ok(0));
        assert_eq!(
            policy
                .key
                .limiter
                .as_ref()
                .unwrap()
                .check()
                .unwrap()
                .remaining,
            1
        );
    }
}
