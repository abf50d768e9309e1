//! Benchmarks live in benches/benches; this library holds what more than one of them uses.

/// The router benchmarks' prompt material (their catalog is `cognitude_testkit::fifty_models`).
pub mod router {
    /// Varied prompt material: prose, a list, numbers, a code block, a little non-Latin script.
    pub const MATERIAL: &str = "Please review the following notes and answer the questions at the end.\n\
1. Revenue grew 12% to $4.1M in Q3; churn fell from 3.1% to 2.3%.\n\
2. The team shipped the new onboarding flow (four screens instead of seven).\n\
- Open question: should pricing change for annual plans?\n\
```python\ndef growth(a, b):\n    return (b - a) / a * 100\n```\n\
Les clients demandent une version mobile ; 客户也希望有移动版本。\n\
Why did churn fall, and what would you measure next? Explain step by step.\n";

    /// [`MATERIAL`] repeated and cut to `len` bytes, or just under where a character would be cut.
    pub fn text_of(len: usize) -> String {
        let mut s = String::with_capacity(len + MATERIAL.len());
        while s.len() < len {
            s.push_str(MATERIAL);
        }
        let mut cut = len;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s
    }

    /// The request the selection benchmarks choose a model for.
    pub const SELECT_PROMPT: &str =
        "Write a SQL query that returns the top 5 customers by revenue, with a short explanation.";
}
