//! The MCP tools: the sample's demo tools, done right (input schemas, titles, annotations,
//! `isError` results for bad input), and `whoami`, which reports the caller's identity.
//!
//! To add a tool: write an `async fn` in the `#[tool_router]` block with a `#[tool(…)]`
//! attribute and a `Parameters<YourArgs>` argument (`YourArgs: Deserialize + JsonSchema`;
//! its doc comments become the schema's descriptions). Read the caller with
//! `Extension(parts): Extension<Parts>` and `caller(&parts)`. To require a scope for it, list
//! it under `[mcp.tool_scopes]` in the configuration.

use axum::http::request::Parts;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::{ErrorData as McpError, tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::server::McpServer;
use crate::resource::Principal;

fn ok(text: impl Into<String>) -> Result<CallToolResult, McpError> {
    Ok(CallToolResult::success(vec![ContentBlock::text(
        text.into(),
    )]))
}

/// A tool-level failure: the model sees it and can correct its input (not a protocol error).
fn bad_input(text: impl Into<String>) -> Result<CallToolResult, McpError> {
    Ok(CallToolResult::error(vec![ContentBlock::text(text.into())]))
}

/// The authenticated caller of this request, if the endpoint is protected.
pub fn caller(parts: &Parts) -> Option<&Principal> {
    parts.extensions.get::<Principal>()
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct AddArgs {
    /// The first number.
    pub a: f64,
    /// The second number.
    pub b: f64,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CircleArgs {
    /// The circle's radius; must be positive.
    pub radius: f64,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RandomArgs {
    /// Smallest possible result (inclusive).
    pub min: i64,
    /// Largest possible result (inclusive).
    pub max: i64,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TextFormat {
    Uppercase,
    Lowercase,
    Titlecase,
    Reverse,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct FormatArgs {
    /// The text to format (at most 100,000 characters).
    pub text: String,
    /// How to format it.
    pub format: TextFormat,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PrimeArgs {
    /// A positive whole number.
    pub number: u64,
}

/// Deterministic Miller–Rabin for 64-bit integers: these bases decide every `n < 2^64`.
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    const BASES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    for p in BASES {
        if n.is_multiple_of(p) {
            return n == p;
        }
    }
    let mul = |a: u64, b: u64| ((a as u128 * b as u128) % n as u128) as u64;
    let pow = |mut base: u64, mut exp: u64| {
        let mut acc = 1u64;
        while exp > 0 {
            if exp & 1 == 1 {
                acc = mul(acc, base);
            }
            base = mul(base, base);
            exp >>= 1;
        }
        acc
    };
    let (mut d, mut s) = (n - 1, 0);
    while d.is_multiple_of(2) {
        d /= 2;
        s += 1;
    }
    'witness: for a in BASES {
        let mut x = pow(a, d);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mul(x, x);
            if x == n - 1 {
                continue 'witness;
            }
        }
        return false;
    }
    true
}

/// Uniform integer in `min..=max` from the OS RNG (rejection sampling: no modulo bias).
pub fn random_in(min: i64, max: i64) -> i64 {
    let span = (max as i128 - min as i128) as u128 + 1;
    let limit = u128::MAX - (u128::MAX % span);
    loop {
        let v = u128::from_le_bytes(crate::random::bytes());
        if v < limit {
            return (min as i128 + (v % span) as i128) as i64;
        }
    }
}

fn title_case(text: &str) -> String {
    text.split(' ')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f
                    .to_uppercase()
                    .chain(c.flat_map(char::to_lowercase))
                    .collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[tool_router(vis = "pub(super)")]
impl McpServer {
    #[tool(
        title = "Add two numbers",
        description = "Add two numbers and return their sum.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn add_numbers(
        &self,
        Parameters(AddArgs { a, b }): Parameters<AddArgs>,
    ) -> Result<CallToolResult, McpError> {
        let sum = a + b;
        if !sum.is_finite() {
            return bad_input(
                "the numbers must be finite and their sum must fit in a 64-bit float",
            );
        }
        ok(format!("The sum of {a} and {b} is {sum}."))
    }

    #[tool(
        title = "Circle area",
        description = "Calculate the area of a circle from its radius.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn calculate_circle_area(
        &self,
        Parameters(CircleArgs { radius }): Parameters<CircleArgs>,
    ) -> Result<CallToolResult, McpError> {
        if !(radius.is_finite() && radius > 0.0) {
            return bad_input("radius must be a positive, finite number");
        }
        let area = std::f64::consts::PI * radius * radius;
        ok(format!(
            "The area of a circle with radius {radius} is {area:.2}."
        ))
    }

    #[tool(
        title = "Random number",
        description = "Generate a random whole number between min and max, inclusive.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn generate_random_number(
        &self,
        Parameters(RandomArgs { min, max }): Parameters<RandomArgs>,
    ) -> Result<CallToolResult, McpError> {
        if min > max {
            return bad_input(format!("min ({min}) must not be greater than max ({max})"));
        }
        ok(random_in(min, max).to_string())
    }

    #[tool(
        title = "Format text",
        description = "Convert text to uppercase, lowercase, title case, or reverse it.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn format_text(
        &self,
        Parameters(FormatArgs { text, format }): Parameters<FormatArgs>,
    ) -> Result<CallToolResult, McpError> {
        if text.chars().count() > 100_000 {
            return bad_input("text must be at most 100,000 characters");
        }
        let formatted = match format {
            TextFormat::Uppercase => text.to_uppercase(),
            TextFormat::Lowercase => text.to_lowercase(),
            TextFormat::Titlecase => title_case(&text),
            TextFormat::Reverse => text.chars().rev().collect(),
        };
        ok(formatted)
    }

    #[tool(
        title = "Check a prime",
        description = "Tell whether a positive whole number is prime.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn check_prime_number(
        &self,
        Parameters(PrimeArgs { number }): Parameters<PrimeArgs>,
    ) -> Result<CallToolResult, McpError> {
        if number == 0 {
            return bad_input("number must be positive");
        }
        let verdict = if is_prime(number) { "is" } else { "is not" };
        ok(format!("{number} {verdict} a prime number."))
    }

    #[tool(
        title = "Who am I",
        description = "Show the user, client and scopes of the access token this request was made with.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn whoami(&self, Extension(parts): Extension<Parts>) -> Result<CallToolResult, McpError> {
        let body = match caller(&parts) {
            Some(p) => json!({
                "authenticated": true,
                "subject": p.subject,
                "client_id": p.client_id,
                "scopes": p.scopes.iter().collect::<Vec<_>>(),
                "token_expires_at": p.expires_at,
            }),
            None => json!({"authenticated": false}),
        };
        ok(body.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes() {
        let primes: Vec<u64> = (0..50).filter(|n| is_prime(*n)).collect();
        assert_eq!(
            primes,
            vec![2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47]
        );
        assert!(is_prime(18_446_744_073_709_551_557), "largest 64-bit prime");
        assert!(
            !is_prime(3_215_031_751),
            "strong pseudoprime to bases 2, 3, 5, 7"
        );
        assert!(!is_prime(u64::MAX));
    }

    #[test]
    fn random_stays_in_range() {
        for _ in 0..1000 {
            let v = random_in(-3, 3);
            assert!((-3..=3).contains(&v));
        }
        assert_eq!(random_in(7, 7), 7);
        let _ = random_in(i64::MIN, i64::MAX);
    }

    #[test]
    fn title_case_words() {
        assert_eq!(title_case("hello wORLD  again"), "Hello World  Again");
    }
}
