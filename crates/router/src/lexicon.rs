//! A small multilingual vocabulary of task words, matched by word stem.
//!
//! Structure (numbers, operators, code shapes, enumerations) carries most of the score; these
//! words add what structure cannot see in a short prompt: that it asks for a proof, an
//! algorithm or a calculation. The lists are general vocabulary of mathematics, programming
//! and argument in nine languages, not phrases taken from any evaluation set.
//!
//! Matching: a stem of up to five characters matches only that whole word; a stem of six
//! characters matches every word starting with it; seven characters, that whole word; eight or
//! more, every word starting with its first eight (so `integral` is not `integrate`).
//! Characters are compared after folding ASCII and Cyrillic capitals. Chinese and Japanese have
//! no spaces, so any two adjacent ideographs or kana are looked up as a pair. Lookup is a hash
//! probe into a table built at compile time: no allocation, a few nanoseconds per word. A stem
//! is keyed by FNV-1a over its characters; a stem of ASCII letters is also keyed by its letters
//! packed in one word (one multiplication), which is how the scanner looks up most words.

/// What a cue word says about the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cue {
    /// Mathematics: proofs, equations, probability, geometry.
    Math,
    /// Programming: code, algorithms, data structures, systems.
    Code,
    /// Argument and analysis: why, justify, derive, trade-offs, step by step.
    Reason,
    /// A structured output or input format: JSON, CSV, YAML, a table.
    Format,
    /// Thanks: the turn acknowledges an answer.
    Thanks,
    /// A request to produce extended text: write, explain, describe, summarise, plan.
    Produce,
}

/// Number of [`Cue`] kinds.
pub(crate) const CUES: usize = 6;

/// Length of the short prefix stem.
const SHORT_STEM: u32 = 6;
/// Length of the long prefix stem.
pub(crate) const LONG_STEM: u32 = 8;

const MATH: &[&str] = &[
    // English
    "equati",
    "intege",
    "deriva",
    "theore",
    "proof",
    "proofs",
    "prove",
    "proves",
    "proven",
    "lemma",
    "probab",
    "matrix",
    "matric",
    "vector",
    "polyno",
    "geomet",
    "trigon",
    "logari",
    "algebr",
    "calcul",
    "arithm",
    "fracti",
    "inequa",
    "modulo",
    "diviso",
    "divisi",
    "prime",
    "primes",
    "sqrt",
    "solve",
    "solves",
    "solvin",
    "statis",
    "varian",
    "permut",
    "sequen",
    "triang",
    "eigenv",
    "optimi",
    "minimi",
    "maximi",
    "adjacent",
    "combinat",
    "divisibl",
    "integral",
    "converge",
    "diverge",
    "diverges",
    "inductio",
    "theorem",
    "polygon",
    "parabola",
    "geometric",
    // Spanish, Portuguese, Italian, French
    "ecuaci",
    "equaçã",
    "equazi",
    "équati",
    "demues",
    "demost",
    "démont",
    "dimost",
    "matriz",
    "cálcul",
    "resuel",
    "risolv",
    "résoud",
    "triáng",
    "triâng",
    "polinô",
    "polino",
    "polynô",
    "fracci",
    "fraçõe",
    "frazio",
    "divisib",
    "algaris",
    // German
    "beweis",
    "berech",
    "ableit",
    "lösung",
    "lösen",
    "ganzza",
    "primza",
    "dreiec",
    // Russian
    "уравне",
    "доказа",
    "докажи",
    "вычисл",
    "вероят",
    "матриц",
    "интегр",
    "теорем",
    "неравенс",
    "треуго",
    "решите",
    "делится",
    // Korean
    "증명",
    "계산",
    "확률",
    "방정식",
    "행렬",
    "정수",
];

const CODE: &[&str] = &[
    // Technical words, mostly written in English whatever the language around them.
    "algori",
    "python",
    "javasc",
    "typesc",
    "rust",
    "golang",
    "java",
    "kotlin",
    "c++",
    "sql",
    "regex",
    "regexp",
    "api",
    "apis",
    "http",
    "async",
    "await",
    "thread",
    "mutex",
    "concur",
    "parall",
    "deadlo",
    "recurs",
    "compil",
    "runtim",
    "debug",
    "bug",
    "bugs",
    "stack",
    "heap",
    "pointe",
    "refact",
    "kubern",
    "docker",
    "databa",
    "query",
    "querie",
    "linked",
    "binary",
    "hashma",
    "cache",
    "latenc",
    "bash",
    "script",
    "endpoi",
    "server",
    "unitte",
    "complexi",
    "concurre",
    "idempote",
    "replicat",
    "sharding",
    "sharded",
    "failover",
    "throughp",
    "deadlock",
    "lineariz",
    "transact",
    "microser",
    "backtrac",
    "atomics",
    "borrow-c",
    "pytest",
    "lambda",
    "iterat",
    "interf",
    "implem",
    "functi",
    "variab",
    "string",
    "boolea",
    "array",
    "arrays",
    "graph",
    "dijkst",
    "greedy",
    "memoiz",
    "sorted",
    "sortin",
    "trait",
    "generi",
    "closur",
    "git",
    "deploy",
    "segfau",
    "overfl",
    "leak",
    "leaks",
    "exploi",
    "vulner",
    "encryp",
    "crypto",
    "protoc",
    "tcp",
    "udp",
    "socket",
    "kernel",
    "linux",
    "django",
    "pandas",
    "numpy",
    // Spanish, Portuguese, French, Italian, German
    "funció",
    "funçã",
    "foncti",
    "funzio",
    "funkti",
    "progra",
    "código",
    "codigo",
    "implém",
    "algorí",
    "datenb",
    "depura",
    "débogu",
    "rekurs",
    "récurs",
    // Russian
    "алгори",
    "функци",
    "реализ",
    "програ",
    "код",
    "массив",
    "рекурс",
    "ошибк",
    "компил",
    "сервер",
    // Korean
    "알고리즘",
    "코드",
    "구현",
    "프로그램",
    "배열",
    "재귀",
];

const REASON: &[&str] = &[
    // English
    "why",
    "justif",
    "reason",
    "derive",
    "deduce",
    "infer",
    "infers",
    "inferr",
    "analyz",
    "analys",
    "evalua",
    "critiq",
    "compar",
    "tradeo",
    "trade-",
    "assump",
    "hypoth",
    "argume",
    "logic",
    "logica",
    "paradox",
    "puzzle",
    "riddle",
    "archit",
    "diagno",
    "step",
    "steps",
    "step-b",
    "verify",
    "invari",
    "rigoro",
    "whethe",
    "if",
    "therefo",
    "suppos",
    "assume",
    "given",
    "correctn",
    "countere",
    "optimal",
    "optimali",
    "constrai",
    // Spanish, Portuguese, Italian, French
    "razona",
    "raciocín",
    "ragion",
    "raison",
    "analiz",
    "analis",
    "confro",
    "dado",
    "dada",
    "supong",
    "suppon",
    "pourquoi",
    "perché",
    "paso",
    "passo",
    "étape",
    "pasos",
    "passos",
    "étapes",
    // German
    "warum",
    "begrün",
    "herlei",
    "vergle",
    "schrit",
    "angenomm",
    "annahm",
    "folger",
    // Russian
    "почему",
    "обосну",
    "выведи",
    "анализ",
    "сравни",
    "шаг",
    "если",
    "предпо",
    "логик",
    "рассуж",
    // Korean
    "왜",
    "분석",
    "비교",
    "추론",
    "단계",
    "만약",
];

/// Thanks and acknowledgements: a turn that closes a topic rather than asking more.
const THANKS: &[&str] = &[
    "thanks",
    "thank",
    "thx",
    "gracias",
    "merci",
    "danke",
    "obrigado",
    "obrigada",
    "grazie",
    "спасибо",
    "감사합니다",
    "고마워",
    "شكرا",
    "धन्यवाद",
];

/// Verbs and nouns of producing extended text (not one-line answers).
const PRODUCE: &[&str] = &[
    // English
    "write",
    "writin",
    "draft",
    "compose",
    "explai",
    "descri",
    "summar",
    "outline",
    "plan",
    "create",
    "brainsto",
    "essay",
    "story",
    "letter",
    "email",
    "blog",
    "itiner",
    "recipe",
    "discuss",
    "elabor",
    "detailed",
    "walk",
    "guide",
    "report",
    // Spanish, Portuguese, Italian, French
    "escrib",
    "escrev",
    "escreva",
    "explic",
    "expliq",
    "descrí",
    "descreva",
    "resume",
    "resuma",
    "redact",
    "redija",
    "planif",
    "correo",
    "carta",
    "ensayo",
    "cuento",
    "écris",
    "écrire",
    "écrivez",
    "rédige",
    "rédigez",
    "décris",
    "résume",
    "lettre",
    "courri",
    "scrivi",
    "spiega",
    "descrivi",
    "riassumi",
    // German
    "schreibe",
    "erklär",
    "beschrei",
    "plane",
    "aufsatz",
    // Russian
    "напиши",
    "объясн",
    "опиши",
    "составь",
    "письмо",
    "расскажи",
];

const FORMAT: &[&str] = &[
    "json",
    "csv",
    "yaml",
    "xml",
    "toml",
    "markdo",
    "table",
    "tables",
    "tabla",
    "tablas",
    "tabela",
    "tableau",
    "tabell",
    "tabelle",
    "таблиц",
    "schema",
    "column",
    "колонк",
    "표",
];

/// Pairs of ideographs or kana (Chinese, Japanese): looked up two characters at a time.
const CJK_PAIRS: &[(&str, Cue)] = &[
    ("证明", Cue::Math),
    ("証明", Cue::Math),
    ("计算", Cue::Math),
    ("計算", Cue::Math),
    ("方程", Cue::Math),
    ("概率", Cue::Math),
    ("確率", Cue::Math),
    ("积分", Cue::Math),
    ("積分", Cue::Math),
    ("矩阵", Cue::Math),
    ("行列", Cue::Math),
    ("函数", Cue::Code),
    ("関数", Cue::Code),
    ("整数", Cue::Math),
    ("素数", Cue::Math),
    ("质数", Cue::Math),
    ("求解", Cue::Math),
    ("定理", Cue::Math),
    ("几何", Cue::Math),
    ("幾何", Cue::Math),
    ("算法", Cue::Code),
    ("代码", Cue::Code),
    ("代碼", Cue::Code),
    ("编程", Cue::Code),
    ("程序", Cue::Code),
    ("实现", Cue::Code),
    ("実装", Cue::Code),
    ("数组", Cue::Code),
    ("递归", Cue::Code),
    ("再帰", Cue::Code),
    ("并发", Cue::Code),
    ("並行", Cue::Code),
    ("为什", Cue::Reason),
    ("為什", Cue::Reason),
    ("なぜ", Cue::Reason),
    ("理由", Cue::Reason),
    ("推导", Cue::Reason),
    ("推論", Cue::Reason),
    ("推理", Cue::Reason),
    ("分析", Cue::Reason),
    ("比较", Cue::Reason),
    ("比較", Cue::Reason),
    ("步骤", Cue::Reason),
    ("手順", Cue::Reason),
    ("如果", Cue::Reason),
    ("假设", Cue::Reason),
    ("仮定", Cue::Reason),
    ("表格", Cue::Format),
    ("解释", Cue::Produce),
    ("描述", Cue::Produce),
    ("总结", Cue::Produce),
    ("撰写", Cue::Produce),
    ("我写", Cue::Produce),
    ("写一", Cue::Produce),
    ("邮件", Cue::Produce),
    ("计划", Cue::Produce),
    ("安排", Cue::Produce),
    ("説明", Cue::Produce),
    ("書い", Cue::Produce),
    ("要約", Cue::Produce),
    ("計画", Cue::Produce),
    ("谢谢", Cue::Thanks),
    ("多谢", Cue::Thanks),
    ("感谢", Cue::Thanks),
    ("がと", Cue::Thanks),
];

const TABLE_BITS: u32 = 12;
const TABLE_SIZE: usize = 1 << TABLE_BITS;

/// One slot: the word hash (0 = empty) and its cue.
type Slot = (u64, Cue);

static TABLE: [Slot; TABLE_SIZE] = build_table();

/// The cue of a stem hash, if any.
pub(crate) fn lookup(hash: u64) -> Option<Cue> {
    let mut i = slot_of(hash);
    // The table is under a fifth full, so probes are short; the bound keeps it total.
    for _ in 0..TABLE_SIZE {
        let (h, cue) = TABLE[i];
        if h == hash {
            return Some(cue);
        }
        if h == 0 {
            return None;
        }
        i = (i + 1) & (TABLE_SIZE - 1);
    }
    None
}

/// Incremental stem hash, fed one character at a time (FNV-1a over the folded characters).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StemHash {
    hash: u64,
    short: u64,
    chars: u32,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl StemHash {
    pub(crate) const fn new() -> StemHash {
        StemHash {
            hash: FNV_OFFSET,
            short: FNV_OFFSET,
            chars: 0,
        }
    }

    /// Adds a character (already folded) while the long stem is not full.
    #[inline]
    pub(crate) const fn push(&mut self, c: u32) {
        if self.chars < LONG_STEM {
            self.hash = (self.hash ^ c as u64).wrapping_mul(FNV_PRIME);
            self.chars += 1;
            if self.chars == SHORT_STEM {
                self.short = self.hash;
            }
        }
    }

    /// Adds ASCII letters (folded here) while the long stem is not full: what `push` does for
    /// each of them, without a test per letter once the stem is full.
    #[inline]
    pub(crate) fn push_ascii_letters(&mut self, letters: &[u8]) {
        let room = LONG_STEM.saturating_sub(self.chars) as usize;
        for &b in letters.iter().take(room) {
            self.hash = (self.hash ^ u64::from(b | 0x20)).wrapping_mul(FNV_PRIME);
            self.chars += 1;
            if self.chars == SHORT_STEM {
                self.short = self.hash;
            }
        }
    }

    /// The keys to look up for a word of `word_chars` characters: the word itself (up to seven
    /// characters) or its long stem, and its short stem.
    #[inline]
    pub(crate) const fn keys(&self, word_chars: u32) -> [Option<u64>; 2] {
        if word_chars < SHORT_STEM {
            [Some(mix(self.hash, word_chars)), None]
        } else if word_chars == SHORT_STEM {
            [Some(mix(self.short, SHORT_STEM)), None]
        } else if word_chars < LONG_STEM {
            [
                Some(mix(self.hash, word_chars)),
                Some(mix(self.short, SHORT_STEM)),
            ]
        } else {
            [
                Some(mix(self.hash, LONG_STEM)),
                Some(mix(self.short, SHORT_STEM)),
            ]
        }
    }

    /// The key of a listed stem (the hash holds all of its first eight characters).
    const fn entry_key(&self, chars: u32) -> u64 {
        if chars == SHORT_STEM {
            mix(self.short, SHORT_STEM)
        } else if chars > LONG_STEM {
            mix(self.hash, LONG_STEM)
        } else {
            mix(self.hash, chars)
        }
    }
}

const fn mix(hash: u64, len: u32) -> u64 {
    let h = (hash ^ (len as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(FNV_PRIME);
    if h == 0 { 1 } else { h }
}

/// The cue of a word, from its stem hash.
#[inline]
pub(crate) fn cue_of(stem: &StemHash, word_chars: u32) -> Option<Cue> {
    let [a, b] = stem.keys(word_chars);
    a.and_then(lookup).or_else(|| b.and_then(lookup))
}

/// The cue of a word of `word_chars` ASCII letters whose first eight or fewer are packed in
/// `letters` (first in the low byte, not folded): what [`cue_of`] finds for it, through the
/// packed keys, without hashing it a character at a time.
#[inline]
pub(crate) fn cue_of_ascii_letters(letters: u64, word_chars: u32) -> Option<Cue> {
    // Folding an ASCII letter sets its 0x20 bit; bytes past the word are masked off.
    let folded = letters | 0x2020_2020_2020_2020;
    if word_chars <= SHORT_STEM {
        lookup(packed_key(folded, word_chars))
    } else {
        lookup(packed_key(folded, word_chars.min(LONG_STEM)))
            .or_else(|| lookup(packed_key(folded, SHORT_STEM)))
    }
}

/// The packed key of the first `n` (up to 8) of the folded letters `folded`: the stems of
/// [`StemHash::keys`], from letters packed in a word. Two odd multiplications around the
/// length, so the slot, taken from the top bits, depends on every letter.
#[inline]
const fn packed_key(folded: u64, n: u32) -> u64 {
    let mask = if n >= 8 { u64::MAX } else { (1 << (8 * n)) - 1 };
    let h =
        ((folded & mask).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ n as u64).wrapping_mul(FNV_PRIME);
    if h == 0 { 1 } else { h }
}

/// Folds a character for stem matching: ASCII and Cyrillic capitals to lower case.
#[inline]
pub(crate) const fn fold(c: u32) -> u32 {
    match c {
        0x41..=0x5A => c + 0x20,
        0x410..=0x42F => c + 0x20,
        0x400..=0x40F => c + 0x50,
        _ => c,
    }
}

/// The key of a pair of ideographs or kana.
#[inline]
pub(crate) const fn pair_key(a: u32, b: u32) -> u64 {
    let h = ((a as u64) << 21 | b as u64 | 1 << 63).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    if h == 0 { 1 } else { h }
}

const fn slot_of(hash: u64) -> usize {
    (hash >> (64 - TABLE_BITS)) as usize
}

/// Decodes the next character of a UTF-8 string at byte `i` (the lists are valid UTF-8).
const fn decode(b: &[u8], i: usize) -> (u32, usize) {
    let lead = b[i];
    if lead < 0x80 {
        (lead as u32, 1)
    } else if lead < 0xE0 {
        (((lead & 0x1F) as u32) << 6 | (b[i + 1] & 0x3F) as u32, 2)
    } else if lead < 0xF0 {
        (
            ((lead & 0x0F) as u32) << 12
                | ((b[i + 1] & 0x3F) as u32) << 6
                | (b[i + 2] & 0x3F) as u32,
            3,
        )
    } else {
        (
            ((lead & 0x07) as u32) << 18
                | ((b[i + 1] & 0x3F) as u32) << 12
                | ((b[i + 2] & 0x3F) as u32) << 6
                | (b[i + 3] & 0x3F) as u32,
            4,
        )
    }
}

const fn word_key(word: &str) -> u64 {
    let b = word.as_bytes();
    let mut h = StemHash::new();
    let mut chars = 0;
    let mut i = 0;
    while i < b.len() {
        let (c, n) = decode(b, i);
        h.push(fold(c));
        chars += 1;
        i += n;
    }
    h.entry_key(chars)
}

const fn insert(table: &mut [Slot; TABLE_SIZE], key: u64, cue: Cue) {
    let mut i = slot_of(key);
    loop {
        if table[i].0 == 0 {
            table[i] = (key, cue);
            return;
        }
        // A word listed twice keeps its first cue.
        if table[i].0 == key {
            return;
        }
        i = (i + 1) & (TABLE_SIZE - 1);
    }
}

const fn insert_all(table: &mut [Slot; TABLE_SIZE], words: &[&str], cue: Cue) {
    let mut w = 0;
    while w < words.len() {
        insert(table, word_key(words[w]), cue);
        if let Some(key) = packed_word_key(words[w]) {
            insert(table, key, cue);
        }
        w += 1;
    }
}

/// The packed key of a listed word made of ASCII letters only; `None` for any other.
const fn packed_word_key(word: &str) -> Option<u64> {
    let b = word.as_bytes();
    let mut folded = 0u64;
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_alphabetic() {
            return None;
        }
        if i < LONG_STEM as usize {
            folded |= ((b[i] | 0x20) as u64) << (8 * i);
        }
        i += 1;
    }
    // The stem of `StemHash::entry_key`: the whole word up to eight letters, else its first
    // eight (six-letter words are the short stem, which is the same six letters).
    let n = if b.len() > LONG_STEM as usize {
        LONG_STEM
    } else {
        b.len() as u32
    };
    Some(packed_key(folded, n))
}

const fn build_table() -> [Slot; TABLE_SIZE] {
    let mut table = [(0u64, Cue::Math); TABLE_SIZE];
    // Order matters for words in two lists: the first list wins.
    insert_all(&mut table, FORMAT, Cue::Format);
    insert_all(&mut table, MATH, Cue::Math);
    insert_all(&mut table, CODE, Cue::Code);
    insert_all(&mut table, REASON, Cue::Reason);
    insert_all(&mut table, THANKS, Cue::Thanks);
    insert_all(&mut table, PRODUCE, Cue::Produce);
    let mut p = 0;
    while p < CJK_PAIRS.len() {
        let b = CJK_PAIRS[p].0.as_bytes();
        let (a, n) = decode(b, 0);
        let (c, _) = decode(b, n);
        insert(&mut table, pair_key(a, c), CJK_PAIRS[p].1);
        p += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cue_of(word: &str) -> Option<Cue> {
        let mut h = StemHash::new();
        let mut chars = 0;
        for c in word.chars() {
            h.push(fold(c as u32));
            chars += 1;
        }
        super::cue_of(&h, chars)
    }

    #[test]
    fn stems_match_longer_words_and_short_words_match_exactly() {
        assert_eq!(cue_of("algorithm"), Some(Cue::Code));
        assert_eq!(cue_of("Algorithmus"), Some(Cue::Code));
        assert_eq!(cue_of("probability"), Some(Cue::Math));
        assert_eq!(cue_of("why"), Some(Cue::Reason));
        assert_eq!(cue_of("integrals"), Some(Cue::Math));
        assert_eq!(cue_of("integrate"), None);
        assert_eq!(cue_of("optimal"), Some(Cue::Reason));
        assert_eq!(cue_of("optimally"), None);
        assert_eq!(cue_of("Спасибо"), Some(Cue::Thanks));
        assert_eq!(cue_of("whys"), None);
        assert_eq!(cue_of("JSON"), Some(Cue::Format));
        assert_eq!(cue_of("Докажите"), Some(Cue::Math));
        assert_eq!(cue_of("the"), None);
        assert_eq!(cue_of("banana"), None);
    }

    /// The scanner looks a word made of one run of ASCII letters up from its packed letters,
    /// and any other word from a stem fed a character at a time: both must find the same cue.
    #[test]
    fn packed_letters_find_what_a_stem_fed_by_characters_finds() {
        let packed = |word: &str| {
            let b = word.as_bytes();
            let head = b
                .iter()
                .take(8)
                .rev()
                .fold(0u64, |w, &x| (w << 8) | u64::from(x));
            cue_of_ascii_letters(head, b.len() as u32)
        };
        let lists = [FORMAT, MATH, CODE, REASON, THANKS, PRODUCE];
        let mut checked = 0;
        for word in lists.iter().flat_map(|l| l.iter()) {
            if !word.bytes().all(|b| b.is_ascii_alphabetic()) {
                continue;
            }
            let upper = word.to_ascii_uppercase();
            let mut title = word.to_string();
            title[..1].make_ascii_uppercase();
            for form in [
                word.to_string(),
                upper,
                title,
                format!("{word}s"),
                format!("{word}ings"),
                word[..word.len() - 1].to_string(),
            ] {
                assert_eq!(packed(&form), cue_of(&form), "{form}");
            }
            assert!(packed(word).is_some(), "{word}");
            checked += 1;
        }
        assert!(checked > 300, "{checked} ASCII entries");
        assert_eq!(packed("banana"), None);
        assert_eq!(packed("Integrals"), Some(Cue::Math));
        assert_eq!(packed("integrate"), None);
    }

    #[test]
    fn cjk_pairs_are_found() {
        let k = |s: &str| {
            let b = s.as_bytes();
            let (a, n) = decode(b, 0);
            let (c, _) = decode(b, n);
            lookup(pair_key(a, c))
        };
        assert_eq!(k("证明"), Some(Cue::Math));
        assert_eq!(k("算法"), Some(Cue::Code));
        assert_eq!(k("天气"), None);
    }

    #[test]
    fn table_is_sparse_enough_for_short_probes() {
        let used = TABLE.iter().filter(|s| s.0 != 0).count();
        assert!(used * 4 <= TABLE_SIZE, "{used} of {TABLE_SIZE} slots used");
    }
}
