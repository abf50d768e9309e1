//! The byte-at-a-time scanner, kept unchanged as the specification the module's scanner is
//! tested against: both must count exactly the same from any text.

#![allow(
    dead_code,
    reason = "only the parts the block scanner is compared with are called"
)]

use super::{HEAD, SeparatorChain, TAIL, is_magnitude};
use crate::lexicon::{self, Cue, StemHash};
use crate::request::Content;

/// How closely to read a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Depth {
    /// The latest user turn: head, tail and samples in detail.
    Full,
    /// Earlier user turns and the system prompt: head and tail, no samples.
    Brief,
    /// Everything else: the token estimate only.
    Tokens,
}

/// Distance between sample blocks in the middle of a long text.
pub(crate) const STRIDE: usize = 8 * 1024;
const SAMPLE: usize = 256;
/// The instruction of a long prompt is at its start or its end; prose features (clauses,
/// sentences, questions, cue words) are counted only this close to either end, so a pasted
/// document's own sentences are not read as requirements.
const ZONE: usize = 600;
/// A closing instruction line is rarely longer than this.
const MAX_INSTRUCTION_LINE: usize = 150;

/// Non-ASCII characters by the lead byte of their UTF-8 encoding, for the token estimate.
pub(crate) const SCRIPTS: usize = 12;
/// Hundredths of a token per character of each class, set from the usual ratios of current BPE
/// tokenizers (about one token per CJK character, two to three Cyrillic characters per token);
/// not fitted to a tokenizer's output. Classes: Latin extensions, Greek, Cyrillic, Armenian to Syriac
/// (Hebrew, Arabic), Indic and Thai, other alphabets, symbols and punctuation, CJK and kana,
/// Hangul, private use and full-width forms, four-byte characters (emoji), invalid bytes.
const SCRIPT_CENTI_TOKENS: [u64; SCRIPTS] = [30, 50, 38, 45, 55, 60, 80, 90, 80, 80, 150, 100];

/// Counts gathered from one text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    pub bytes: u64,
    // For the token estimate; filled by both passes.
    pub letters: u64,
    pub words: u64,
    pub digits: u64,
    pub numbers: u64,
    pub punct: u64,
    pub newlines: u64,
    pub scripts: [u64; SCRIPTS],
    // Structure; filled by the detailed scanner.
    pub lines: u32,
    pub enum_lines: u32,
    pub bullet_lines: u32,
    pub heading_lines: u32,
    pub questions: u32,
    pub sentences: u32,
    /// Declarative sentences before the last question.
    pub premises: u32,
    pub fences: u32,
    pub code_lines: u32,
    pub code_ops: u32,
    pub idents: u32,
    pub ticks: u32,
    pub brackets: u32,
    pub math_ops: u32,
    pub math_syms: u32,
    pub vars: u32,
    /// One bit per distinct number value (hashed to 64 bits).
    pub number_set: u64,
    pub data_rows: u32,
    pub json_keys: u32,
    pub quotes: u32,
    pub cues: [u32; lexicon::CUES],
    /// Phrase separators in prose: commas and semicolons followed by a space, ideographic commas.
    pub clauses: u32,
    /// Bytes in the instruction zones (the whole text when it has no separate payload).
    pub zone_bytes: u64,
    pub detailed_bytes: u64,
}

impl Stats {
    /// Estimated tokens of the text, in the style of the BPE tokenizers of current models.
    pub(crate) fn tokens(&self) -> u64 {
        let mut centi = 75 * self.words
            + 12 * self.letters
            + 34 * self.digits
            + 50 * self.numbers
            + 60 * self.punct
            + 35 * self.newlines;
        for (n, w) in self.scripts.iter().zip(SCRIPT_CENTI_TOKENS) {
            centi += n * w;
        }
        // Any non-empty text is at least one token.
        if self.bytes > 0 {
            (centi / 100).max(1)
        } else {
            0
        }
    }

    /// Estimated tokens of the instruction, and of the material it came with.
    pub(crate) fn instruction_and_material_tokens(&self) -> (u64, u64) {
        let all = self.tokens();
        if self.bytes == 0 {
            return (0, 0);
        }
        let instruction = (u128::from(all) * u128::from(self.zone_bytes.min(self.bytes))
            / u128::from(self.bytes)) as u64;
        (instruction, all - instruction)
    }

    pub(crate) fn distinct_numbers(&self) -> u32 {
        self.number_set.count_ones()
    }

    pub(crate) fn cue(&self, cue: Cue) -> u32 {
        self.cues[cue as usize]
    }

    /// Adds another text's counts (the parts of one conversation role).
    pub(crate) fn merge(&mut self, o: &Stats) {
        self.bytes += o.bytes;
        self.letters += o.letters;
        self.words += o.words;
        self.digits += o.digits;
        self.numbers += o.numbers;
        self.punct += o.punct;
        self.newlines += o.newlines;
        for (a, b) in self.scripts.iter_mut().zip(o.scripts) {
            *a += b;
        }
        self.lines += o.lines;
        self.enum_lines += o.enum_lines;
        self.bullet_lines += o.bullet_lines;
        self.heading_lines += o.heading_lines;
        self.questions += o.questions;
        self.sentences += o.sentences;
        self.premises = self.premises.max(o.premises);
        self.fences += o.fences;
        self.code_lines += o.code_lines;
        self.code_ops += o.code_ops;
        self.idents += o.idents;
        self.ticks += o.ticks;
        self.brackets += o.brackets;
        self.math_ops += o.math_ops;
        self.math_syms += o.math_syms;
        self.vars += o.vars;
        self.number_set |= o.number_set;
        self.data_rows += o.data_rows;
        self.json_keys += o.json_keys;
        self.quotes += o.quotes;
        for (a, b) in self.cues.iter_mut().zip(o.cues) {
            *a += b;
        }
        self.clauses += o.clauses;
        self.zone_bytes += o.zone_bytes;
        self.detailed_bytes += o.detailed_bytes;
    }
}

/// Scans a message's content at the given depth.
pub(crate) fn scan(content: &Content<'_>, depth: Depth) -> Stats {
    let total = content.len();
    let (head, tail, sampled) = match depth {
        Depth::Full => (HEAD, TAIL, true),
        Depth::Brief => (HEAD, TAIL, false),
        Depth::Tokens => (0, 0, false),
    };
    let windows = Windows {
        total,
        head,
        tail,
        sampled,
    };
    let mut sc = Scanner::new();
    (sc.zone_head, sc.zone_tail) = zones(content, total);
    let mut offset = 0usize;
    for part in content.parts() {
        let bytes = part.as_bytes();
        let mut pos = 0usize;
        while pos < bytes.len() {
            let global = offset + pos;
            let (start, end) = windows.next_detail(global);
            if start > global {
                // A gap before the next detailed window: the fast pass.
                let stop = (start - offset).min(bytes.len());
                token_counts(&bytes[pos..stop], &mut sc.s);
                sc.break_window();
                pos = stop;
            } else {
                let stop = (end - offset).min(bytes.len());
                sc.base = global;
                sc.feed(&bytes[pos..stop]);
                sc.s.detailed_bytes += (stop - pos) as u64;
                pos = stop;
                if end < total {
                    sc.break_window();
                }
            }
        }
        offset += bytes.len();
        // Parts are separate paragraphs.
        sc.end_part();
    }
    sc.s.bytes = total as u64;
    sc.s.zone_bytes =
        (sc.zone_head.min(total) + (total - sc.zone_tail.min(total))).min(total) as u64;
    sc.s
}

/// The instruction zones of a text as `(head_end, tail_start)`: prose features count before
/// `head_end` and from `tail_start` on.
///
/// A first line ending in a colon introduces a payload (`Summarize this:` + a document), so the
/// head zone is that line. Otherwise the head zone ends at the first blank line, or, in a text
/// longer than [`ZONE`] without one, at the end of the first line. The tail zone is
/// the last paragraph, or the last line, within [`ZONE`] bytes of the end, unless an intro line
/// came first and that paragraph or line is too long to be an instruction. Texts without line
/// breaks keep [`ZONE`] bytes at each end.
fn zones(content: &Content<'_>, total: usize) -> (usize, usize) {
    let first = content.parts().next().unwrap_or("").as_bytes();
    let head = &first[..first.len().min(ZONE)];
    let line_end = find_byte(head, b'\n');
    let intro = line_end.is_some_and(|e| {
        let line = head[..e].trim_ascii_end();
        line.ends_with(b":") || line.ends_with("：".as_bytes())
    });
    let head_end = match (intro, line_end) {
        (true, Some(e)) => e,
        _ => match find_pair(head, b'\n') {
            Some(p) => p,
            // A long text without a blank line near its start: its first line is the
            // instruction (or the title of what follows).
            None if total > ZONE => line_end.unwrap_or(head.len()),
            None => head.len(),
        },
    };
    let last = content.parts().last().unwrap_or("").as_bytes();
    let from = last.len().saturating_sub(ZONE);
    let tail = &last[from..];
    let tail_start_in_last = match rfind_pair(tail, b'\n') {
        // After an intro line, a long last paragraph is the payload, not an instruction.
        Some(p) if intro && tail.len() - p > MAX_INSTRUCTION_LINE => last.len(),
        Some(p) => from + p + 2,
        None => match rfind_byte(tail, b'\n') {
            // After an intro line, a long last line is more of the payload.
            Some(p) if intro && tail.len() - p > MAX_INSTRUCTION_LINE => last.len(),
            Some(p) => from + p + 1,
            None if intro => last.len(),
            None => from,
        },
    };
    let tail_start = (total - (last.len() - tail_start_in_last)).max(head_end);
    (head_end, tail_start)
}

// Byte searches over the up to 600-byte zones. A plain `position` loop stops at each byte to
// test for the end; these look at 16 bytes at a time (a loop without an early exit, which the
// compiler vectorises) and only walk the bytes of a block that holds the byte sought.

const BLOCK: usize = 16;

fn has_byte(block: &[u8], c: u8) -> bool {
    block.iter().fold(false, |found, &b| found | (b == c))
}

/// The first `c` in `b`.
fn find_byte(b: &[u8], c: u8) -> Option<usize> {
    let mut start = 0;
    for block in b.chunks(BLOCK) {
        if has_byte(block, c) {
            return block.iter().position(|&x| x == c).map(|i| start + i);
        }
        start += block.len();
    }
    None
}

/// The last `c` in `b`.
fn rfind_byte(b: &[u8], c: u8) -> Option<usize> {
    let mut end = b.len();
    for block in b.rchunks(BLOCK) {
        end -= block.len();
        if has_byte(block, c) {
            return block.iter().rposition(|&x| x == c).map(|i| end + i);
        }
    }
    None
}

/// The first position of two `c` in a row.
fn find_pair(b: &[u8], c: u8) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = find_byte(&b[from..], c) {
        let at = from + i;
        if b.get(at + 1) == Some(&c) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The last position of two `c` in a row.
fn rfind_pair(b: &[u8], c: u8) -> Option<usize> {
    let mut to = b.len();
    while let Some(at) = rfind_byte(&b[..to], c) {
        if at > 0 && b[at - 1] == c {
            return Some(at - 1);
        }
        to = at;
    }
    None
}

/// Which byte ranges of a text are read in detail.
struct Windows {
    total: usize,
    head: usize,
    tail: usize,
    sampled: bool,
}

impl Windows {
    /// The first detailed range ending after `pos`, as `(start, end)`; `(total, total)` if none.
    fn next_detail(&self, pos: usize) -> (usize, usize) {
        if self.head + self.tail >= self.total {
            return if self.head == 0 {
                (self.total, self.total)
            } else {
                (0, self.total)
            };
        }
        if pos < self.head {
            return (0, self.head);
        }
        let tail_start = self.total - self.tail;
        if self.sampled {
            // Sample k covers [head + k·STRIDE + (STRIDE − SAMPLE)/2, … + SAMPLE).
            let first = self.head + (STRIDE - SAMPLE) / 2;
            let k = pos.saturating_sub(first) / STRIDE;
            for k in [k, k + 1] {
                let start = first + k * STRIDE;
                let end = start + SAMPLE;
                if end > pos && end <= tail_start {
                    return (start, end);
                }
            }
        }
        if self.tail > 0 {
            (tail_start, self.total)
        } else {
            (self.total, self.total)
        }
    }
}

/// Byte classes of the fast pass.
const C_PUNCT: u8 = 0;
const C_LETTER: u8 = 1;
const C_DIGIT: u8 = 2;
const C_SPACE: u8 = 3;
const C_NEWLINE: u8 = 4;
const C_CONT: u8 = 5;
const C_SCRIPT: u8 = 6;

static CLASS: [u8; 256] = class_table();

const fn class_table() -> [u8; 256] {
    let mut t = [C_PUNCT; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        t[b] = match c {
            b'a'..=b'z' | b'A'..=b'Z' => C_LETTER,
            b'0'..=b'9' => C_DIGIT,
            b'\n' => C_NEWLINE,
            b' ' | b'\t' | b'\r' | 0x0B | 0x0C => C_SPACE,
            0x00..=0x1F | 0x7F => C_SPACE,
            0x21..=0x7E => C_PUNCT,
            0x80..=0xBF => C_CONT,
            0xC2..=0xCD => C_SCRIPT,
            0xCE..=0xCF => C_SCRIPT + 1,
            0xD0..=0xD4 => C_SCRIPT + 2,
            0xD5..=0xDF => C_SCRIPT + 3,
            0xE0 => C_SCRIPT + 4,
            0xE1 => C_SCRIPT + 5,
            0xE2 => C_SCRIPT + 6,
            0xE3..=0xE9 => C_SCRIPT + 7,
            0xEA..=0xED => C_SCRIPT + 8,
            0xEE..=0xEF => C_SCRIPT + 9,
            0xF0..=0xF4 => C_SCRIPT + 10,
            // C0, C1, F5–FF never start a valid character.
            _ => C_SCRIPT + 11,
        };
        b += 1;
    }
    t
}

/// The counts the token estimate needs (letters, digits, punctuation, newlines, word and
/// number starts, non-ASCII characters by script) over `bytes`, as if a space preceded them.
///
/// Used for every byte of the text, read in detail or not, so the detailed scanner's per-byte
/// loop does none of this. The ASCII counts are taken 16 bytes at a time into byte-wide
/// counters, a loop the compiler turns into vector instructions; only 64-byte blocks holding
/// a non-ASCII byte are looked at byte by byte, for the script of each character.
fn token_counts(bytes: &[u8], s: &mut Stats) {
    const LANES: usize = 16;
    /// Byte-wide counters hold up to 255: flush them before.
    const FLUSH: u32 = 255;
    let Some(&first) = bytes.first() else {
        return;
    };
    // letters, digits, newlines, printable ASCII (0x21–0x7E), word starts, number starts.
    let mut total = [0u64; 6];
    let mut acc = [[0u8; LANES]; 6];
    let mut rounds = 0;
    let flush = |acc: &mut [[u8; LANES]; 6], total: &mut [u64; 6]| {
        for (t, a) in total.iter_mut().zip(acc.iter_mut()) {
            *t += a.iter().map(|&n| u64::from(n)).sum::<u64>();
            *a = [0; LANES];
        }
    };
    // Lane l of a round looks at byte `1 + 16k + l` and at the byte before it.
    let rest = &bytes[1..];
    let current = rest.chunks_exact(LANES);
    let tail = current.remainder();
    for (cur, prev) in current.zip(bytes.chunks_exact(LANES)) {
        for l in 0..LANES {
            let (b, p) = (cur[l], prev[l]);
            let letter = is_letter(b);
            let digit = b.is_ascii_digit();
            acc[0][l] += u8::from(letter);
            acc[1][l] += u8::from(digit);
            acc[2][l] += u8::from(b == b'\n');
            acc[3][l] += u8::from(b.wrapping_sub(0x21) < 0x5E);
            acc[4][l] += u8::from(letter & !is_letter(p));
            acc[5][l] += u8::from(digit & !p.is_ascii_digit());
        }
        rounds += 1;
        if rounds == FLUSH {
            flush(&mut acc, &mut total);
            rounds = 0;
        }
    }
    if rounds > 0 {
        flush(&mut acc, &mut total);
    }
    // The first byte (after a space) and the bytes after the last full round.
    let done = bytes.len() - tail.len();
    for (i, &b) in [first].iter().chain(tail).enumerate() {
        let p = if i == 0 { b' ' } else { bytes[done + i - 2] };
        let letter = is_letter(b);
        let digit = b.is_ascii_digit();
        total[0] += u64::from(letter);
        total[1] += u64::from(digit);
        total[2] += u64::from(b == b'\n');
        total[3] += u64::from(b.wrapping_sub(0x21) < 0x5E);
        total[4] += u64::from(letter & !is_letter(p));
        total[5] += u64::from(digit & !p.is_ascii_digit());
    }
    let [letters, digits, newlines, printable, words, numbers] = total;
    s.letters += letters;
    s.digits += digits;
    s.newlines += newlines;
    s.punct += printable - letters - digits;
    s.words += words;
    s.numbers += numbers;
    for block in bytes.chunks(64) {
        if block.iter().fold(0u8, |m, &b| m | b) < 0x80 {
            continue;
        }
        for &b in block {
            let c = CLASS[b as usize];
            if c >= C_SCRIPT {
                s.scripts[(c - C_SCRIPT) as usize] += 1;
            }
        }
    }
}

#[inline]
fn is_letter(b: u8) -> bool {
    (b | 0x20).wrapping_sub(b'a') < 26
}

/// What the previous token was, for telling an operator from a hyphen or a slash in prose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    None,
    Number,
    /// A one-character word, or a number with a one-letter suffix (`x`, `4z`).
    Short,
    Word,
    Close,
    Other,
}

/// What follows an operator, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rhs {
    None,
    Letter,
    Digit,
    Open,
}

/// The detailed scanner's state between bytes.
struct Scanner {
    s: Stats,
    prev_byte: u8,
    // The current word (letters, digits, underscores, apostrophes inside).
    w_chars: u32,
    w_first: u32,
    w_alpha: u32,
    w_digit_first: bool,
    w_has_digit: bool,
    w_underscore: bool,
    w_camel: bool,
    /// The word has a lower-case letter: letters and digits with capitals only (`Q3`, `A100`)
    /// are names, not identifiers.
    w_lower: bool,
    w_lower_run: u32,
    w_greek: bool,
    stem: StemHash,
    // The current number.
    in_num: bool,
    num_hash: u64,
    last_tok: Tok,
    /// The last one-character word was a vowel (`a`, `y`: words in many languages).
    last_short_vowel: bool,
    /// A hyphen or slash after a one-letter word: an operator if the next word has one letter
    /// too (`x-y`), prose otherwise (`t-shirt`).
    pending_short_op: bool,
    // The current line.
    l_sig: u32,
    l_head: [u8; 5],
    l_head_len: u8,
    l_last: u8,
    l_pipes: u16,
    l_tabs: u16,
    l_tight_commas: u16,
    l_numbers: u16,
    l_words: u16,
    l_open_paren: bool,
    in_fence: bool,
    // A run of operator characters waiting for its right-hand side.
    op: [u8; 2],
    op_len: u8,
    op_lhs: Tok,
    /// The pending operator run follows a digit.
    op_after_digit: bool,
    /// Where the current or last number starts.
    num_start: usize,
    chain: SeparatorChain,
    // Multi-byte characters.
    cp: u32,
    need: u8,
    prev_cjk: u32,
    // Position in the whole text, for the instruction zones.
    base: usize,
    pos: usize,
    /// Inside double quotes: quoted text is material to work on, not instructions.
    in_quote: bool,
    zone_head: usize,
    zone_tail: usize,
}

impl Scanner {
    fn new() -> Scanner {
        Scanner {
            s: Stats::default(),
            prev_byte: b'\n',
            w_chars: 0,
            w_first: 0,
            w_alpha: 0,
            w_digit_first: false,
            w_has_digit: false,
            w_underscore: false,
            w_camel: false,
            w_lower: false,
            w_lower_run: 0,
            w_greek: false,
            stem: StemHash::new(),
            in_num: false,
            num_hash: 0,
            last_tok: Tok::None,
            last_short_vowel: false,
            pending_short_op: false,
            l_sig: 0,
            l_head: [0; 5],
            l_head_len: 0,
            l_last: 0,
            l_pipes: 0,
            l_tabs: 0,
            l_tight_commas: 0,
            l_numbers: 0,
            l_words: 0,
            l_open_paren: false,
            in_fence: false,
            op: [0; 2],
            op_len: 0,
            op_lhs: Tok::None,
            op_after_digit: false,
            num_start: 0,
            chain: SeparatorChain::NONE,
            cp: 0,
            need: 0,
            prev_cjk: 0,
            base: 0,
            pos: 0,
            in_quote: false,
            zone_head: 0,
            zone_tail: 0,
        }
    }

    /// Whether the current byte is near enough to either end to be part of the instruction.
    #[inline]
    fn in_zone(&self) -> bool {
        (self.pos < self.zone_head || self.pos >= self.zone_tail) && !self.in_quote
    }

    /// A discontinuity: the next bytes do not follow the previous ones.
    fn break_window(&mut self) {
        self.end_token();
        self.resolve_op(Rhs::None);
        self.end_line();
        self.need = 0;
        self.prev_cjk = 0;
        self.prev_byte = b'\n';
        self.last_tok = Tok::None;
        self.chain = SeparatorChain::NONE;
    }

    fn end_part(&mut self) {
        self.break_window();
        self.in_quote = false;
    }

    fn feed(&mut self, bytes: &[u8]) {
        // Every window starts after a break, as after a space: the token-estimate counts of a
        // window are those of its bytes alone.
        token_counts(bytes, &mut self.s);
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            self.pos = self.base + i;
            if b < 0x80 {
                // After an ASCII byte no multi-byte character is pending (a truncated one is
                // dropped).
                self.need = 0;
                // Letters and spaces are most bytes: tested first, with direct branches, rather
                // than through the dispatch on every ASCII byte.
                if is_letter(b) {
                    if self.w_chars == 0 && !self.in_num && self.op_len == 0 {
                        // A new word with nothing pending before it (most words): what
                        // `ascii_letter` does for its first letter is what `letter_run` does for
                        // the others, once the word is started.
                        self.w_first = u32::from(b);
                        self.stem = StemHash::new();
                        i = self.letter_run(bytes, i);
                        continue;
                    }
                    self.ascii_letter(b);
                    self.prev_byte = b;
                    // The word is open: take the rest of its letters at once.
                    i = self.letter_run(bytes, i + 1);
                    continue;
                }
                if b == b' ' {
                    self.end_token();
                    self.line_space();
                } else {
                    self.ascii(b, bytes.get(i + 1).copied());
                }
                self.prev_byte = b;
            } else {
                self.utf8_byte(b);
                self.prev_byte = b;
            }
            i += 1;
        }
    }

    /// Continues the current word over ASCII letters from `start`; returns the index after
    /// them. Does what `ascii` would do for each letter, minus the work that cannot apply
    /// inside a word (operators, numbers, line starts).
    #[inline]
    fn letter_run(&mut self, bytes: &[u8], start: usize) -> usize {
        // First find the run's end, noting whether every letter is lower case (bit 0x20 set
        // in each): then the per-letter case tracking below reduces to one addition.
        let rest = bytes.get(start..).unwrap_or_default();
        let mut run = 0;
        let mut lower_bits = 0x20u8;
        while let Some(&b) = rest.get(run) {
            if !is_letter(b) {
                break;
            }
            lower_bits &= b;
            run += 1;
        }
        if run == 0 {
            return start;
        }
        let letters = &rest[..run];
        let any_lower = letters.iter().any(|b| b.is_ascii_lowercase());
        if self.w_chars == 0 {
            self.w_lower = any_lower;
        } else {
            self.w_lower |= any_lower;
        }
        if lower_bits != 0 {
            // Lower case only: the run of lower-case letters grows, camelCase cannot start.
            self.w_lower_run += run as u32;
        } else {
            let first_lower = (0x61..=0x7A).contains(&self.w_first);
            let mut lower_run = self.w_lower_run;
            let mut camel = self.w_camel;
            for &b in letters {
                let lower = b.is_ascii_lowercase();
                camel |= !lower && lower_run >= 2 && first_lower;
                lower_run = if lower { lower_run + 1 } else { 0 };
            }
            self.w_lower_run = lower_run;
            self.w_camel = camel;
        }
        self.stem.push_ascii_letters(letters);
        let n = run as u32;
        self.w_chars += n;
        self.w_alpha += n;
        let head_len = self.l_head_len as usize;
        if head_len < self.l_head.len() {
            for (slot, &b) in self.l_head[head_len..].iter_mut().zip(letters) {
                *slot = b;
                self.l_head_len += 1;
            }
        }
        self.l_sig += n;
        let last = letters[run - 1];
        self.l_last = last;
        self.prev_byte = last;
        start + run
    }

    #[inline]
    fn ascii_letter(&mut self, b: u8) {
        self.resolve_op(Rhs::Letter);
        if self.in_num {
            // `4z`, `10th`: a number with a letter suffix.
            self.end_number();
            self.w_digit_first = true;
        }
        self.line_char(b);
        self.word_letter(u32::from(b), b.is_ascii_lowercase(), b.is_ascii_uppercase());
    }

    fn ascii(&mut self, b: u8, next: Option<u8>) {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' => self.ascii_letter(b),
            b'0'..=b'9' => {
                self.resolve_op(Rhs::Digit);
                self.line_char(b);
                if self.w_chars > 0 && !self.in_num {
                    // `x2`, `utf8`: digits inside a word.
                    self.w_has_digit = true;
                    self.w_chars += 1;
                    self.stem.push(u32::from(b));
                } else {
                    if !self.in_num {
                        self.in_num = true;
                        self.num_start = self.pos;
                        self.num_hash = 0xcbf2_9ce4_8422_2325;
                        self.l_numbers = self.l_numbers.saturating_add(1);
                    }
                    self.num_hash = (self.num_hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
                }
            }
            b' ' | b'\r' => {
                self.end_token();
                self.line_space();
            }
            b'\t' => {
                self.end_token();
                self.line_space();
                if self.l_sig > 0 {
                    self.l_tabs = self.l_tabs.saturating_add(1);
                }
            }
            b'\n' => {
                self.end_token();
                self.resolve_op(Rhs::None);
                self.end_line();
            }
            _ if b < 0x20 || b == 0x7F => self.end_token(),
            _ => self.ascii_punct(b, next),
        }
    }

    fn ascii_punct(&mut self, b: u8, next: Option<u8>) {
        let next_digit = next.is_some_and(|n| n.is_ascii_digit());
        let next_alpha = next.is_some_and(|n| n.is_ascii_alphabetic());
        let next_ends = next.is_none_or(|n| {
            n.is_ascii_whitespace() || matches!(n, b'"' | b'\'' | b')' | b']' | b'*' | b'_')
        });
        self.line_char(b);
        match b {
            b'.' if self.in_num && next_digit => {
                // A decimal point: the number goes on.
                self.num_hash = (self.num_hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
            b',' if self.in_num && next_digit => {
                // A thousands separator (or a list of numbers without spaces).
                self.l_tight_commas = self.l_tight_commas.saturating_add(1);
                self.num_hash = (self.num_hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
            b'_' if self.w_chars > 0 && (next_alpha || next_digit) => {
                self.w_underscore = true;
                self.w_chars += 1;
            }
            b'\'' if self.w_alpha > 0 && next_alpha => {
                // An apostrophe inside a word (`don't`, `l'eau`).
                self.w_chars += 1;
            }
            _ => {
                let was_word = self.w_chars > 0;
                let prev_alnum = self.prev_byte.is_ascii_alphanumeric();
                self.end_token();
                match b {
                    b'.' => {
                        if prev_alnum && next_alpha && was_word {
                            // `file.txt`, `obj.method`.
                            self.s.idents += 1;
                        } else if next_ends && self.prev_byte != b'.' && self.prev_byte != b' ' {
                            self.s.sentences += u32::from(self.in_zone());
                        }
                        self.last_tok = Tok::Other;
                    }
                    b'?' => {
                        if self.prev_byte != b'?' && self.in_zone() {
                            self.s.questions += 1;
                            self.s.premises = self.s.sentences;
                        }
                        self.last_tok = Tok::Other;
                    }
                    b'"' => {
                        self.s.quotes += 1;
                        self.in_quote = !self.in_quote;
                        if next == Some(b':') {
                            self.s.json_keys += 1;
                        }
                        self.last_tok = Tok::Other;
                    }
                    b'`' => {
                        self.s.ticks += 1;
                        self.last_tok = Tok::Other;
                    }
                    b'(' | b'[' | b'{' => {
                        self.resolve_op(Rhs::Open);
                        self.s.brackets += 1;
                        if b == b'(' {
                            self.l_open_paren = true;
                        }
                        self.last_tok = Tok::Other;
                    }
                    b')' | b']' | b'}' => {
                        self.resolve_op(Rhs::None);
                        self.s.brackets += 1;
                        self.last_tok = Tok::Close;
                    }
                    b',' | b';' => {
                        if next.is_some_and(|n| n == b' ') && !self.in_fence {
                            self.s.clauses += u32::from(self.in_zone());
                        } else if b == b',' && next.is_some_and(|n| !n.is_ascii_whitespace()) {
                            self.l_tight_commas = self.l_tight_commas.saturating_add(1);
                        }
                        self.resolve_op(Rhs::None);
                        self.last_tok = Tok::Other;
                    }
                    b'\\' => {
                        if next_alpha {
                            // A LaTeX command (`\frac`, `\sum`).
                            self.s.math_syms += 1;
                        }
                        self.last_tok = Tok::Other;
                    }
                    b'$' => {
                        if next_alpha || next == Some(b'\\') {
                            // `$x$`, `$\alpha$`; a `$` before a digit is a price.
                            self.s.math_syms += 1;
                        }
                        self.last_tok = Tok::Other;
                    }
                    b'!' if next != Some(b'=') => {
                        if next_ends {
                            self.s.sentences += u32::from(self.in_zone());
                        }
                        self.last_tok = Tok::Other;
                    }
                    b'=' | b'+' | b'-' | b'*' | b'/' | b'^' | b'<' | b'>' | b'%' | b'&' | b'|'
                    | b':' | b'!' | b'~' => {
                        if b == b'|' {
                            self.l_pipes = self.l_pipes.saturating_add(1);
                        }
                        self.op_char(b);
                    }
                    _ => {
                        self.resolve_op(Rhs::None);
                        self.last_tok = Tok::Other;
                    }
                }
            }
        }
    }

    /// An operator character: starts or extends a run.
    fn op_char(&mut self, b: u8) {
        if self.op_len == 0 {
            self.op_lhs = self.last_tok;
            self.op[0] = b;
            self.op_len = 1;
            self.op_after_digit = self.prev_byte.is_ascii_digit();
        } else if self.op_len == 1 && self.prev_byte == self.op[0] {
            self.op[1] = b;
            self.op_len = 2;
        } else {
            // A third character, or one after a space: judge the run without a right-hand side.
            self.resolve_op(Rhs::None);
            self.op_lhs = Tok::Other;
            self.op[0] = b;
            self.op_len = 1;
            self.op_after_digit = self.prev_byte.is_ascii_digit();
        }
    }

    /// Judges a pending operator run now that what follows it is known.
    // Called before most tokens, and usually with no operator pending: the check is inlined,
    // the judging is not.
    #[inline]
    fn resolve_op(&mut self, rhs: Rhs) {
        if self.op_len != 0 {
            self.judge_op(rhs);
        }
    }

    fn judge_op(&mut self, rhs: Rhs) {
        if self.in_fence {
            // Inside a code block every operator is code.
            self.s.code_ops += 1;
            self.op_len = 0;
            self.last_tok = Tok::Other;
            return;
        }
        let lhs = self.op_lhs;
        let operand = matches!(lhs, Tok::Number | Tok::Short | Tok::Word | Tok::Close);
        let has_rhs = rhs != Rhs::None;
        if self.op_len == 1 {
            let mut counts = match self.op[0] {
                b'=' | b'+' | b'*' | b'^' | b'<' | b'>' => operand && has_rhs,
                // `x % 2` is an operator; `15% of` is a percentage.
                b'%' => operand && matches!(rhs, Rhs::Digit | Rhs::Open),
                // A hyphen or slash between words is prose (`well-known`, `and/or`, `a-t-il`).
                b'-' | b'/' => match lhs {
                    Tok::Number | Tok::Close => has_rhs,
                    Tok::Short if !self.last_short_vowel => match rhs {
                        Rhs::Digit | Rhs::Open => true,
                        Rhs::Letter => {
                            self.pending_short_op = true;
                            false
                        }
                        Rhs::None => false,
                    },
                    _ => false,
                },
                _ => false,
            };
            if counts && lhs == Tok::Number && rhs == Rhs::Digit {
                // Written tight: a digit right before the operator and right after it.
                let tight = self.op_after_digit && self.prev_byte == self.op[0];
                counts = self.chain.counts(
                    self.op[0],
                    tight,
                    self.num_start,
                    self.pos,
                    &mut self.s.math_ops,
                );
            }
            if counts {
                self.s.math_ops += 1;
            }
        } else {
            match (self.op[0], self.op[1]) {
                (b'<', b'=') | (b'>', b'=') if operand && has_rhs => self.s.math_ops += 1,
                (b'=', b'=')
                | (b'!', b'=')
                | (b'-', b'>')
                | (b'=', b'>')
                | (b':', b':')
                | (b'&', b'&')
                | (b'|', b'|')
                | (b'+', b'=')
                | (b'-', b'=')
                | (b'*', b'=')
                | (b'/', b'=')
                | (b':', b'=')
                | (b'<', b'<')
                | (b'>', b'>')
                | (b'/', b'/')
                | (b'/', b'*') => self.s.code_ops += 1,
                (b'*', b'*') if operand && has_rhs => self.s.code_ops += 1,
                // `--flag`
                (b'-', b'-') if rhs == Rhs::Letter && !operand => self.s.code_ops += 1,
                _ => {}
            }
        }
        self.op_len = 0;
        self.last_tok = Tok::Other;
    }

    fn word_letter(&mut self, c: u32, lower: bool, upper: bool) {
        if self.w_chars == 0 {
            self.w_first = c;
            self.w_lower = lower;
            self.stem = StemHash::new();
        } else if upper && self.w_lower_run >= 2 && (0x61..=0x7A).contains(&self.w_first) {
            // camelCase (`getValue`); PascalCase (`YouTube`) and `iPhone` are names.
            self.w_camel = true;
        }
        self.w_lower_run = if lower { self.w_lower_run + 1 } else { 0 };
        self.w_lower |= lower;
        self.w_chars += 1;
        self.w_alpha += 1;
        self.stem.push(lexicon::fold(c));
    }

    fn end_number(&mut self) {
        if self.in_num {
            self.in_num = false;
            self.s.number_set |= 1u64 << (self.num_hash % 64);
            self.last_tok = Tok::Number;
        }
    }

    /// Ends the current word or number, if any.
    // Called at every space and mark, mostly with no word or number open: the check is
    // inlined, the work is not.
    #[inline]
    fn end_token(&mut self) {
        if self.in_num {
            self.end_number();
        } else if self.w_chars != 0 {
            self.end_word();
        }
    }

    fn end_word(&mut self) {
        let chars = self.w_chars;
        self.l_words = self.l_words.saturating_add(1);
        if self.pending_short_op {
            self.pending_short_op = false;
            if chars == 1 {
                self.s.math_ops += 1;
            }
        }
        self.last_short_vowel = false;
        if self.w_digit_first {
            // `4z` is a coefficient and a variable; `3rd` and `10th` are ordinals; `$4.1M`, `2B`
            // and `3T` are magnitudes.
            if self.w_alpha == 1 && !self.in_fence && !is_magnitude(self.w_first) {
                self.s.vars += 1;
            }
            self.last_tok = Tok::Short;
        } else {
            if self.w_underscore || self.w_camel || (self.w_has_digit && chars >= 2 && self.w_lower)
            {
                self.s.idents += 1;
            }
            if chars == 1 {
                let c = self.w_first;
                let vowel = matches!(
                    c,
                    0x61 | 0x65
                        | 0x69
                        | 0x6F
                        | 0x75
                        | 0x79
                        | 0x41
                        | 0x45
                        | 0x49
                        | 0x4F
                        | 0x55
                        | 0x59
                );
                self.last_short_vowel = vowel;
                if c < 0x80 && !vowel && !self.in_fence {
                    // One-letter names in code are code, not algebra.
                    self.s.vars += 1;
                } else if self.w_greek {
                    self.s.math_syms += 1;
                }
                self.last_tok = Tok::Short;
            } else {
                self.last_tok = Tok::Word;
            }
            if !self.w_has_digit
                && !self.w_underscore
                && self.in_zone()
                && let Some(cue) = lexicon::cue_of(&self.stem, chars)
            {
                self.s.cues[cue as usize] += 1;
            }
        }
        self.w_chars = 0;
        self.w_alpha = 0;
        self.w_digit_first = false;
        self.w_has_digit = false;
        self.w_underscore = false;
        self.w_camel = false;
        self.w_lower_run = 0;
        self.w_greek = false;
    }

    /// Records a significant (non-space) byte of the current line.
    fn line_char(&mut self, b: u8) {
        if (self.l_head_len as usize) < self.l_head.len() {
            self.l_head[self.l_head_len as usize] = b;
            self.l_head_len += 1;
        }
        self.l_sig += 1;
        self.l_last = b;
    }

    /// A space inside the line: kept in the head, where it separates `1.` from the text.
    fn line_space(&mut self) {
        if self.l_sig > 0 && (self.l_head_len as usize) < self.l_head.len() {
            self.l_head[self.l_head_len as usize] = b' ';
            self.l_head_len += 1;
        }
    }

    fn end_line(&mut self) {
        if self.l_sig == 0 {
            // A blank line ends any quotation left open.
            self.in_quote = false;
        }
        if self.l_sig > 0 {
            self.s.lines += 1;
            let head = &self.l_head[..self.l_head_len as usize];
            if head.starts_with(b"```") || head.starts_with(b"~~~") {
                self.s.fences += 1;
                self.in_fence = !self.in_fence;
            } else if self.in_fence {
                self.s.code_lines += 1;
            } else {
                match line_kind(head) {
                    LineKind::Enumerated => self.s.enum_lines += 1,
                    LineKind::Bullet => self.s.bullet_lines += 1,
                    LineKind::Heading => self.s.heading_lines += 1,
                    LineKind::Plain => {}
                }
                let code_end = matches!(self.l_last, b';' | b'{' | b'}')
                    || (self.l_last == b':' && self.l_open_paren)
                    || (self.l_last == b')' && self.l_open_paren && self.l_words <= 4);
                if code_end {
                    self.s.code_lines += 1;
                }
            }
            let data = self.l_pipes >= 2
                || self.l_tabs >= 2
                || self.l_tight_commas >= 2
                || (self.l_numbers >= 3 && self.l_numbers * 2 >= self.l_words);
            if data {
                self.s.data_rows += 1;
            }
        }
        self.l_sig = 0;
        self.l_head_len = 0;
        self.l_last = 0;
        self.l_pipes = 0;
        self.l_tabs = 0;
        self.l_tight_commas = 0;
        self.l_numbers = 0;
        self.l_words = 0;
        self.l_open_paren = false;
    }

    fn utf8_byte(&mut self, b: u8) {
        if b >= 0xC0 {
            let (need, bits) = match b {
                0xC0..=0xDF => (1, u32::from(b & 0x1F)),
                0xE0..=0xEF => (2, u32::from(b & 0x0F)),
                0xF0..=0xF7 => (3, u32::from(b & 0x07)),
                _ => (0, 0),
            };
            self.need = need;
            self.cp = bits;
            if need == 0 {
                self.end_token();
            }
            return;
        }
        // A continuation byte.
        if self.need == 0 {
            return;
        }
        self.cp = (self.cp << 6) | u32::from(b & 0x3F);
        self.need -= 1;
        if self.need == 0 {
            self.char(self.cp);
        }
    }

    /// A complete non-ASCII character.
    fn char(&mut self, c: u32) {
        let is_cjk = matches!(c, 0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FFFF);
        if is_cjk {
            self.end_token();
            self.resolve_op(Rhs::Letter);
            self.line_marker(0xE3);
            self.l_words = self.l_words.saturating_add(1);
            if self.prev_cjk != 0
                && self.in_zone()
                && let Some(cue) = lexicon::lookup(lexicon::pair_key(self.prev_cjk, c))
            {
                self.s.cues[cue as usize] += 1;
            }
            self.prev_cjk = c;
            self.last_tok = Tok::Word;
            return;
        }
        self.prev_cjk = 0;
        let letter = matches!(c,
            0xC0..=0xD6 | 0xD8..=0xF6 | 0xF8..=0x24F | 0x370..=0x3FF | 0x400..=0x52F
            | 0x531..=0x58F | 0x5D0..=0x5EA | 0x620..=0x64A | 0x660..=0x669 | 0x671..=0x6D3
            | 0x900..=0x963 | 0x966..=0xDFF | 0xE00..=0xE7F | 0x10A0..=0x10FF | 0x1100..=0x11FF
            | 0x1E00..=0x1FFF | 0xAC00..=0xD7AF);
        if letter {
            self.resolve_op(Rhs::Letter);
            if self.in_num {
                self.end_number();
                self.w_digit_first = true;
            }
            self.line_marker(0xC3);
            let greek = (0x370..=0x3FF).contains(&c);
            if self.w_chars == 0 {
                self.w_greek = greek;
            }
            let lower = !(0x410..=0x42F).contains(&c);
            self.word_letter(c, lower, !lower);
            return;
        }
        self.end_token();
        match c {
            // Sentence ends: ideographic and full-width full stop and exclamation, danda.
            0x3002 | 0xFF0E | 0xFF01 | 0x0964 | 0x0965 | 0x06D4 => {
                self.resolve_op(Rhs::None);
                self.s.sentences += u32::from(self.in_zone());
                self.line_marker(0xE3);
                self.last_tok = Tok::Other;
            }
            // Question marks: full-width, Arabic, Greek.
            0xFF1F | 0x061F | 0x037E => {
                self.resolve_op(Rhs::None);
                if self.in_zone() {
                    self.s.questions += 1;
                    self.s.premises = self.s.sentences;
                }
                self.line_marker(0xE3);
                self.last_tok = Tok::Other;
            }
            // Quotation marks.
            0x201C | 0x201D | 0x201E | 0xAB | 0xBB | 0x300C..=0x300F => {
                self.s.quotes += 1;
                self.in_quote = matches!(c, 0x201C | 0x201E | 0xAB | 0x300C | 0x300E);
                self.line_marker(0xE2);
                self.last_tok = Tok::Other;
            }
            // Bullets: •, ●, ▪, ・, ◦.
            0x2022 | 0x25CF | 0x25AA | 0x30FB | 0x25E6 => {
                self.line_marker(0x95);
                self.last_tok = Tok::Other;
            }
            // Circled numbers: ①…⑳.
            0x2460..=0x2473 => {
                self.line_marker(0x31);
                self.line_marker(0x2E);
                self.line_marker(b' ');
                self.last_tok = Tok::Other;
            }
            // Box drawing: a table.
            0x2500..=0x257F => {
                self.l_pipes = self.l_pipes.saturating_add(1);
                self.line_marker(0xE2);
                self.last_tok = Tok::Other;
            }
            // Mathematics: ±, ×, ÷, super- and subscripts, arrows, operators, technical.
            0xB1
            | 0xD7
            | 0xF7
            | 0xB2
            | 0xB3
            | 0xB9
            | 0x2070..=0x209F
            | 0x2190..=0x23FF
            | 0x2A00..=0x2AFF
            | 0x1D400..=0x1D7FF => {
                self.s.math_syms += 1;
                self.line_marker(0xE2);
                self.resolve_op(Rhs::Open);
                self.last_tok = Tok::Short;
            }
            // Ideographic comma, full-width comma and semicolon, Arabic comma: phrase separators.
            0x3001 | 0xFF0C | 0xFF1B | 0x060C => {
                self.s.clauses += u32::from(self.in_zone());
                self.line_marker(0xE3);
                self.last_tok = Tok::Other;
            }
            // Full-width colon.
            0xFF1A => {
                self.line_marker(0xE3);
                self.last_tok = Tok::Other;
            }
            _ => {
                self.line_marker(0xE2);
                self.last_tok = Tok::Other;
            }
        }
    }

    /// A non-ASCII significant character on the line, recorded as one marker byte in the
    /// line head (bullets and enumerations are recognised from the head).
    fn line_marker(&mut self, marker: u8) {
        self.line_char(marker);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    Enumerated,
    Bullet,
    Heading,
    Plain,
}

/// Classifies a line by its first bytes (after indentation).
fn line_kind(head: &[u8]) -> LineKind {
    let sep = |b: Option<&u8>| b.is_none_or(|b| *b == b' ' || *b == b'\t');
    match head {
        [b'-' | b'*' | b'+' | 0x95, rest @ ..] if sep(rest.first()) => LineKind::Bullet,
        [b'#', rest @ ..] if sep(rest.first()) || rest.first() == Some(&b'#') => LineKind::Heading,
        // `(a)`, `(1)`
        [b'(', x, b')', ..] if x.is_ascii_alphanumeric() => LineKind::Enumerated,
        // `a)`, `b.`, `A.` followed by a space
        [x, b')' | b'.', rest @ ..] if x.is_ascii_alphabetic() && sep(rest.first()) => {
            LineKind::Enumerated
        }
        _ => {
            let digits = head.iter().take_while(|b| b.is_ascii_digit()).count();
            if (1..=3).contains(&digits) {
                match head.get(digits) {
                    Some(b'.' | b')' | b':') if sep(head.get(digits + 1)) => LineKind::Enumerated,
                    // `1、` (ideographic comma recorded as a marker)
                    Some(0xE3) => LineKind::Enumerated,
                    _ => LineKind::Plain,
                }
            } else {
                LineKind::Plain
            }
        }
    }
}
