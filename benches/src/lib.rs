//! Benchmarks live in benches/benches; this library holds what more than one of them uses.

/// The router benchmarks' prompt material and catalog.
pub mod router {
    use cognitude_catalog::Catalog;

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

    /// 50 models with spread prices, quality and speeds, each able to serve the benchmarks'
    /// selection request (a short prompt asking for tools and JSON, nothing more).
    pub fn fifty_models() -> Catalog {
        let mut toml = String::new();
        for i in 0..50u32 {
            toml += &format!(
                "[[model]]\nid = \"model-{i}\"\nprovider = \"provider-{}\"\ninput = {:.2}\noutput = {:.2}\n\
                 context_window = {}\nmax_output = 16000\ncapabilities = [\"tools\", \"json\"]\n\
                 quality = {}\nlatency_ms = {}\ntokens_per_second = {}\n\n",
                i % 7,
                f64::from(i % 13 + 1) * 0.1,
                f64::from(i % 11 + 1) * 0.4,
                32_000 * (i % 4 + 1),
                40 + (i * 37) % 60,
                200 + (i * 53) % 3000,
                30 + (i * 17) % 300,
            );
        }
        Catalog::from_toml(&toml).unwrap_or_default()
    }

    /// The request the selection benchmarks choose a model for.
    pub const SELECT_PROMPT: &str =
        "Write a SQL query that returns the top 5 customers by revenue, with a short explanation.";
}
