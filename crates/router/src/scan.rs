//! One pass over a message's text that counts what the signals are built from.
//!
//! Two speeds. The detailed scanner follows words, numbers, lines, sentences and operators; it
//! reads the whole text when the text is short, and for a long text its head, its tail and one
//! sample block every [`STRIDE`] bytes in between (a long document's structure shows in those).
//! The token estimate's counts (letters, word and number starts, punctuation, characters per
//! script) are taken by the detailed scanner as it goes, and over the rest by a separate pass
//! that the compiler vectorises. Every counter is on the stack: no allocation, no backtracking,
//! linear time.
//!
//! The detailed scanner reads a byte at a time, except where a word starts with nothing
//! pending: then its letters are taken as one run, and a following space and word too. A run's
//! end is found byte by byte on purpose: the loop's exit is predicted, so the next token's
//! position does not wait on arithmetic over the bytes. For the same reason a word's first
//! letters are only kept, packed in a word; a word made of one run of ASCII letters is looked
//! up as a cue from them, with one multiplication, and only when it ends in an instruction
//! zone. Other words are hashed a character at a time (a chain of multiplications).
//! Between the zones, where the scanner only counts ordinary words, a run of them (letters, a
//! space or a sentence mark, the next word) is measured in a tight loop, eight letters at a
//! time, and counted at once; such a run is tried where a word follows a space or a line
//! break, not at every word. After an ideograph (CJK or kana), the ideographs that follow it
//! are taken in a loop of their own: between two of them nothing is open, so each only counts
//! its script and a word, and in an instruction zone looks up its pair with the one before.
//! A word of one ASCII letter that a space or a mark ends (`x`, `a`) is counted at once.

use std::sync::LazyLock;

use memchr::memmem;

use crate::lexicon::{self, Cue, StemHash};
use crate::request::Content;

#[cfg(test)]
mod reference;

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

/// Bytes read in detail at the head and at the tail of a text; a text up to their sum is read
/// whole. Both hold an instruction zone ([`ZONE`]) with room to spare. The detailed scanner
/// costs more per byte than the classifier's budget of 1 µs per KiB allows on mixed prompt text,
/// the counting pass over the rest a fraction of it, so these bound the detailed part of the
/// cost. The signals built from structure flatten out past a dozen code lines, numbers or rows,
/// which these hold.
const HEAD: usize = 1024;
const TAIL: usize = 640;
const _: () = assert!(HEAD >= ZONE && TAIL >= ZONE);
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
    (sc.window_zone_head, sc.window_zone_tail) = (sc.zone_head, sc.zone_tail);
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
        _ => match find_blank_line(head) {
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
    let tail_start_in_last = match rfind_blank_line(tail) {
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

// Byte searches over the up to 600-byte zones, with `memchr` (vector code chosen for the
// machine at run time). A text without blank lines has many single line breaks: the blank line
// is searched for as two bytes, not from line break to line break.

/// The first `c` in `b`.
fn find_byte(b: &[u8], c: u8) -> Option<usize> {
    memchr::memchr(c, b)
}

/// The last `c` in `b`.
fn rfind_byte(b: &[u8], c: u8) -> Option<usize> {
    memchr::memrchr(c, b)
}

/// Two line breaks in a row; the searcher is built once.
static BLANK_LINE: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\n\n"));

/// Where the first blank line's two line breaks start.
fn find_blank_line(b: &[u8]) -> Option<usize> {
    BLANK_LINE.find(b)
}

/// Where the last blank line's two line breaks start (the last two of a longer run).
fn rfind_blank_line(b: &[u8]) -> Option<usize> {
    // Forwards, from blank line to blank line: they are few, and the backward searcher has no
    // vector code for a needle this short.
    let mut last = None;
    let mut from = 0;
    while let Some(i) = b.get(from..).and_then(find_blank_line) {
        last = Some(from + i);
        from += i + 1;
    }
    last
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
/// Used for the bytes not read in detail (the detailed scanner counts the same things for the
/// others, and the tests check that the two agree). The ASCII counts are taken 16 bytes at a
/// time into byte-wide counters, a loop the compiler turns into vector instructions; only
/// 64-byte blocks holding a non-ASCII byte are looked at byte by byte, for the script of each
/// character.
// Kept out of line: inlined into `scan`, its one caller, it is not vectorised as well.
#[inline(never)]
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

/// The separators between numbers that make a date, a phone number or a code rather than
/// arithmetic. A hyphen or slash written tight between two numbers counts as an operator
/// (`12-5`); when the same separator follows its right-hand number, also tight, the first is
/// taken back and neither that one nor the rest of the chain counts (`2024-05-01`,
/// `06/12/2024`, `555-123-4567`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeparatorChain {
    sep: u8,
    /// Where the right-hand number of the last separator counted (or chained) starts.
    start: usize,
    undone: bool,
}

impl SeparatorChain {
    pub(crate) const NONE: SeparatorChain = SeparatorChain {
        sep: 0,
        start: usize::MAX,
        undone: false,
    };

    /// Whether the operator `op` between a number starting at `lhs_start` and one starting at
    /// `rhs_start`, which would count, does; takes back the chain's first from `math_ops`.
    pub(crate) fn counts(
        &mut self,
        op: u8,
        tight: bool,
        lhs_start: usize,
        rhs_start: usize,
        math_ops: &mut u32,
    ) -> bool {
        if !tight || !matches!(op, b'-' | b'/') {
            return true;
        }
        let chained = self.start == lhs_start && self.sep == op;
        self.sep = op;
        self.start = rhs_start;
        if !chained {
            self.undone = false;
            return true;
        }
        if !self.undone {
            self.undone = true;
            *math_ops = math_ops.saturating_sub(1);
        }
        false
    }
}

/// Whether a letter after a number is a magnitude (`$4.1M`, `2B`, `3T`, `10K`) rather than a
/// variable. Only capitals: a lower-case `k` is as often a variable (`4k + 3`) as thousands.
#[inline]
pub(crate) fn is_magnitude(letter: u32) -> bool {
    matches!(letter, 0x4B | 0x4D | 0x42 | 0x54)
}

/// What a UTF-8 lead byte says: how many continuation bytes follow it, and its bits of the
/// character (none for a byte that cannot lead).
#[inline]
fn lead_byte(b: u8) -> (u8, u32) {
    match b {
        0xC0..=0xDF => (1, u32::from(b & 0x1F)),
        0xE0..=0xEF => (2, u32::from(b & 0x0F)),
        0xF0..=0xF7 => (3, u32::from(b & 0x07)),
        _ => (0, 0),
    }
}

/// The character whose lead byte is at `bytes[i]`, and its length, if all its continuation
/// bytes follow; decoded as `utf8_byte` decodes it, byte by byte.
#[inline]
fn complete_char(bytes: &[u8], i: usize) -> Option<(u32, usize)> {
    // A continuation byte's six bits of the character.
    let cont = |k: usize| {
        let b = bytes.get(i + k).copied().filter(|&b| b & 0xC0 == 0x80)?;
        Some(u32::from(b & 0x3F))
    };
    let (need, lead) = lead_byte(bytes[i]);
    let c = match need {
        1 => (lead << 6) | cont(1)?,
        2 => (lead << 12) | (cont(1)? << 6) | cont(2)?,
        3 => (lead << 18) | (cont(1)? << 12) | (cont(2)? << 6) | cont(3)?,
        _ => return None,
    };
    Some((c, 1 + usize::from(need)))
}

/// Whether the byte after `bytes[i]` is a lower-case ASCII letter: a plain word (two letters or
/// more, capitals only first) can start at `i`. Checked before trying a run of plain words, so
/// that single letters, `Q3` or `USA` do not cost a call.
#[inline]
fn second_is_lower(bytes: &[u8], i: usize) -> bool {
    bytes.get(i + 1).is_some_and(u8::is_ascii_lowercase)
}

/// How many of the eight bytes of `w` (in memory order) are ASCII lower-case letters before
/// the first that is not.
#[inline]
fn lowercase_prefix(w: u64) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x80 * ONES;
    let low7 = w & !HIGH;
    // The high bit of each byte: at least `a`, and not past `z` (nor above 0x7F).
    let at_least_a = low7 + (0x80 - 0x61) * ONES;
    let past_z = low7 + (0x7F - 0x7A) * ONES;
    let lower = at_least_a & !past_z & !w & HIGH;
    ((!lower & HIGH).trailing_zeros() / 8) as usize
}

/// Whether `c`, a character of three bytes in UTF-8, is an ideograph or kana: kana, CJK
/// extension A, the unified ideographs, compatibility ideographs.
#[inline]
fn is_three_byte_ideograph(c: u32) -> bool {
    matches!(c, 0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF)
}

/// Whether a word of the one character `c` is a vowel (`a`, `y`: words in many languages)
/// rather than a name.
#[inline]
fn is_short_vowel(c: u32) -> bool {
    matches!(c | 0x20, 0x61 | 0x65 | 0x69 | 0x6F | 0x75 | 0x79)
}

/// Whether the byte at `i` ends a word of one letter just before it, with nothing left for
/// the word: a space, a line break, a control character or a mark other than `.` (which
/// looks back at the word: `file.txt`), `_` and `'` (which go on with it). A digit or a
/// non-ASCII byte may go on with the word.
#[inline]
fn ends_short_word(bytes: &[u8], i: usize) -> bool {
    bytes.get(i).is_some_and(|&n| {
        matches!(CLASS[usize::from(n)], C_PUNCT | C_SPACE | C_NEWLINE)
            && !matches!(n, b'.' | b'_' | b'\'')
    })
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
    /// The stem is not hashed: it is the word's first `w_buf_len` letters, packed in `w_buf`.
    /// A word made of one run of ASCII letters is looked up from them; it is hashed only if it
    /// goes on with other characters.
    w_lazy: bool,
    w_buf: u64,
    w_buf_len: u8,
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
    /// The line has a significant (non-space) byte.
    l_text: bool,
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
    // Position, for the instruction zones: where the window starts in the whole text, and
    // the current byte's position in the window.
    base: usize,
    pos: usize,
    /// Inside double quotes: quoted text is material to work on, not instructions.
    in_quote: bool,
    zone_head: usize,
    zone_tail: usize,
    /// The zones' bounds as positions in the current window (0 for a bound before it), so
    /// the position is not offset by `base` at every byte.
    window_zone_head: usize,
    window_zone_tail: usize,
    /// The window has room for plain words between its zones (see `plain_words`).
    prose_between_zones: bool,
    /// Where the last run of plain words in this window stopped.
    plain_stop: usize,
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
            w_lazy: false,
            w_buf: 0,
            w_buf_len: 0,
            in_num: false,
            num_hash: 0,
            last_tok: Tok::None,
            last_short_vowel: false,
            pending_short_op: false,
            l_text: false,
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
            window_zone_head: 0,
            window_zone_tail: 0,
            prose_between_zones: false,
            plain_stop: usize::MAX,
        }
    }

    /// Whether the current byte is near enough to either end to be part of the instruction.
    #[inline]
    fn in_zone(&self) -> bool {
        self.in_zone_at(self.pos)
    }

    /// Whether a byte at `pos` in the window is part of the instruction.
    #[inline]
    fn in_zone_at(&self, pos: usize) -> bool {
        (pos < self.window_zone_head || pos >= self.window_zone_tail) && !self.in_quote
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
        // (`pos` < `window_zone_head` exactly when `base + pos` < `zone_head`; the same for the
        // tail.)
        self.window_zone_head = self.zone_head.saturating_sub(self.base);
        self.window_zone_tail = self.zone_tail.saturating_sub(self.base);
        self.prose_between_zones =
            self.window_zone_tail.min(bytes.len()) > self.window_zone_head + 2;
        self.plain_stop = usize::MAX;
        // Every window starts after a break, as after a space: the token-estimate counts of a
        // window are those of its bytes alone. They are taken here, byte class by byte class,
        // rather than by `token_counts`, so each byte is read once: a letter reached here starts
        // a run of letters (`letter_run` takes all of it), so it is a word start.
        let mut i = 0;
        'bytes: while i < bytes.len() {
            let b = bytes[i];
            self.pos = i;
            if b < 0x80 {
                // After an ASCII byte no multi-byte character is pending (a truncated one is
                // dropped).
                self.need = 0;
                // Letters and spaces are most bytes: tested first, with direct branches, rather
                // than through the dispatch on every ASCII byte.
                if is_letter(b) {
                    self.s.words += 1;
                    if self.w_chars == 0 && !self.in_num {
                        // A new word (most words): an operator before it is judged first, as
                        // `ascii_letter` does, and then nothing is pending. What `ascii_letter`
                        // does for the word's first letter is what `letter_run` does for the
                        // others, once the word is started.
                        self.resolve_op(Rhs::Letter);
                        // Plain words go on after a space (after a word, a comma, a full stop)
                        // and start lines, but not from where a run of them has just stopped.
                        if self.prose_between_zones
                            && matches!(self.prev_byte, b' ' | b'\n')
                            && i != self.plain_stop
                            && second_is_lower(bytes, i)
                            && let Some(end) = self.plain_words(bytes, i)
                        {
                            i = end;
                            continue;
                        }
                        if ends_short_word(bytes, i + 1) {
                            self.short_word(b, i);
                            i += 1;
                            continue;
                        }
                        self.w_first = u32::from(b);
                        self.w_lazy = true;
                        i = self.letter_run(bytes, i);
                        // Prose is mostly a word, a space and the next word: take those here,
                        // doing for the space what the loop does (the next word starts with
                        // nothing pending, as this one did).
                        while let (Some(b' '), Some(&next)) = (bytes.get(i), bytes.get(i + 1)) {
                            if !is_letter(next) {
                                break;
                            }
                            self.pos = i;
                            // A word is open (no number), and the line has begun: what
                            // `end_token` and `line_space` do, without their tests.
                            debug_assert!(!self.in_num && self.w_chars != 0 && self.l_text);
                            self.end_word();
                            self.line_space_after_text();
                            i += 1;
                            self.s.words += 1;
                            if self.prose_between_zones
                                && second_is_lower(bytes, i)
                                && let Some(end) = self.plain_words(bytes, i)
                            {
                                i = end;
                                continue 'bytes;
                            }
                            self.w_first = u32::from(next);
                            self.w_lazy = true;
                            i = self.letter_run(bytes, i);
                        }
                        continue;
                    }
                    self.ascii_letter(b);
                    self.s.letters += 1;
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
                if let Some((c, len)) = complete_char(bytes, i) {
                    // A whole character at once: what `utf8_byte` does over its bytes.
                    self.s.scripts[usize::from(CLASS[usize::from(b)] - C_SCRIPT)] += 1;
                    let last = i + len - 1;
                    self.pos = last;
                    self.prev_byte = bytes[last - 1];
                    self.need = 0;
                    self.char(c);
                    self.prev_byte = bytes[last];
                    i += len;
                    if self.prev_cjk != 0 {
                        // An ideograph: the ones after it, at once.
                        i = self.ideograph_run(bytes, i);
                    }
                    continue;
                }
                self.utf8_byte(b);
                self.prev_byte = b;
            }
            i += 1;
        }
    }

    /// A word of one ASCII letter, `b` at `i`, which the byte after it ends (see
    /// [`ends_short_word`]): what `letter_run` and then `end_word` do for it, at once.
    #[inline(never)]
    fn short_word(&mut self, b: u8, i: usize) {
        self.s.letters += 1;
        self.line_char(b);
        self.prev_byte = b;
        self.l_words = self.l_words.saturating_add(1);
        if self.pending_short_op {
            self.pending_short_op = false;
            self.s.math_ops += 1;
        }
        let vowel = is_short_vowel(u32::from(b));
        self.last_short_vowel = vowel;
        if !vowel && !self.in_fence {
            self.s.vars += 1;
        }
        self.last_tok = Tok::Short;
        // The word ends at the byte after it, whose position decides the zone.
        self.pos = i + 1;
        if self.in_zone()
            && let Some(cue) = lexicon::cue_of_ascii_letters(u64::from(b), 1)
        {
            self.s.cues[cue as usize] += 1;
        }
    }

    /// Takes a run of plain words from `start`, where a word starts after a space or a line
    /// break with nothing pending, and returns the index after it; `None` if there is no such
    /// run here. (Not tried where a word follows anything else, or where a run has just
    /// stopped: it would take nothing more often than not, and the word would then be read
    /// twice.)
    ///
    /// A plain word is two or more ASCII letters, capitals only first, followed by a space, by
    /// a line break (which the run stops before), or by one of `,;.?!` and either of those,
    /// outside the instruction zones: most of a document's prose. Outside the zones no cue,
    /// sentence, question or clause is counted, and no word flag or operator can change, so for
    /// such words the scanner only counts (letters, words, marks, the line's words and
    /// significant bytes) and records the line's first bytes. The run is measured in a tight
    /// loop and its counts added at once. What the byte-by-byte path would leave differently
    /// (the last word's first letter and packed stem) is read only while a word is open.
    #[inline(always)]
    fn plain_words(&mut self, bytes: &[u8], start: usize) -> Option<usize> {
        // Where a run cannot start, decided here, without a call.
        if self.pending_short_op {
            return None;
        }
        // A word ends at the byte after it: that byte's position decides whether the word is
        // in a zone.
        let limit = if self.in_quote {
            bytes.len()
        } else if start >= self.window_zone_head {
            self.window_zone_tail.min(bytes.len())
        } else {
            return None;
        };
        // (The run reads eight bytes at each word's start.)
        if start + 8 > limit {
            return None;
        }
        self.plain_run(bytes, start, limit)
    }

    /// The run of [`Scanner::plain_words`], with the bytes it may read up to `limit`.
    // Inlined at both places a run is tried: many runs are of one or two words, where a call
    // cost more than the second copy of the loop does.
    #[inline(always)]
    fn plain_run(&mut self, bytes: &[u8], start: usize, limit: usize) -> Option<usize> {
        // Words and the byte that ends each are before `limit`.
        let text = bytes.get(..limit).unwrap_or_default();
        let (mut words, mut marks) = (0u32, 0u32);
        // The run stopped before a line break (after a word or a mark), which has no space after
        // it.
        let mut at_line_end = false;
        let mut next = start;
        // Eight bytes at a word's start hold all of most words and the byte after them. The run
        // stops where fewer than eight are left; the byte-by-byte path takes the rest.
        while next + 8 <= text.len() {
            let eight = u64::from_le_bytes(text[next..next + 8].try_into().unwrap_or_default());
            let n = lowercase_prefix(eight | 0x20);
            if n < 2 {
                break;
            }
            let mut end = next + n;
            if n == 8 {
                // A longer word, eight letters at a time. (One that goes on into the last eight
                // bytes ends in a letter here, and so stops the run.)
                while let Some(eight) = text.get(end..end + 8) {
                    let n =
                        lowercase_prefix(u64::from_le_bytes(eight.try_into().unwrap_or_default()));
                    end += n;
                    if n < 8 {
                        break;
                    }
                }
            }
            // How many bytes after the word the run takes, and whether it stops there.
            let (taken, stop) = match text.get(end) {
                Some(b' ') => (1, false),
                // The line break ends the word; the loop then takes the break itself.
                Some(b'\n') => (0, true),
                Some(b',' | b';' | b'.' | b'?' | b'!') => match bytes.get(end + 1) {
                    Some(b' ') => (2, false),
                    Some(b'\n') => (1, true),
                    _ => break,
                },
                _ => break,
            };
            // A mark was taken where two bytes were, or one before a line break.
            marks += u32::from(taken == 2 || (taken == 1 && stop));
            words += 1;
            next = end + taken;
            if stop {
                at_line_end = true;
                break;
            }
        }
        if words == 0 {
            return None;
        }
        // Every word but one at a line end has one space after it; the rest are letters.
        let spaces = words - u32::from(at_line_end);
        let letters = (next - start) as u64 - u64::from(marks + spaces);
        // The last letter or mark taken.
        let last = match bytes[next - 1] {
            b' ' => bytes[next - 2],
            b => b,
        };
        let last_tok = if is_letter(last) {
            Tok::Word
        } else {
            Tok::Other
        };
        // (The loop counted the first word already.)
        self.s.words += u64::from(words - 1);
        self.s.letters += letters;
        self.s.punct += u64::from(marks);
        self.l_words = self
            .l_words
            .saturating_add(u16::try_from(words).unwrap_or(u16::MAX));
        self.l_text = true;
        // Every byte taken (letters, spaces after them, marks) is one the line's head records.
        self.line_head(bytes.get(start..next).unwrap_or_default());
        self.l_last = last;
        self.prev_byte = bytes[next - 1];
        self.last_tok = last_tok;
        self.last_short_vowel = false;
        self.plain_stop = next;
        Some(next)
    }

    /// Continues the current word over ASCII letters from `start`; returns the index after
    /// them. Does what `ascii` would do for each letter, minus the work that cannot apply
    /// inside a word (operators, numbers, line starts).
    #[inline(always)]
    fn letter_run(&mut self, bytes: &[u8], start: usize) -> usize {
        // First find the run's end. Byte by byte: the loop's exit is predicted, so where the
        // next token starts does not wait for arithmetic on the bytes, as it would if found
        // from a mask. The class table tells a letter with one comparison against memory,
        // where `is_letter` needs two operations before its comparison.
        let rest = bytes.get(start..).unwrap_or_default();
        let run = rest
            .iter()
            .position(|&b| CLASS[usize::from(b)] != C_LETTER)
            .unwrap_or(rest.len());
        if run == 0 {
            return start;
        }
        let letters = &rest[..run];
        // The first eight letters or fewer, one a byte; whether all letters are lower case (bit
        // 0x20 set in each) is read from them, and from the rest of a longer word.
        let keep = run.min(8);
        let low_bytes = u64::MAX >> (64 - 8 * keep);
        let head = match rest.get(..8) {
            Some(eight) => u64::from_le_bytes(eight.try_into().unwrap_or_default()) & low_bytes,
            None => letters[..keep]
                .iter()
                .rev()
                .fold(0u64, |w, &b| (w << 8) | u64::from(b)),
        };
        let case_bits = 0x2020_2020_2020_2020 & low_bytes;
        let lower = head & case_bits == case_bits
            && letters
                .get(8..)
                .is_none_or(|more| more.iter().all(|&b| b & 0x20 != 0));
        self.s.letters += run as u64;
        let any_lower = if lower {
            // Lower case only: the run of lower-case letters grows, camelCase cannot start.
            self.w_lower_run += run as u32;
            true
        } else {
            let first_lower = (0x61..=0x7A).contains(&self.w_first);
            let mut lower_run = self.w_lower_run;
            let mut camel = self.w_camel;
            let mut any_lower = false;
            for &b in letters {
                let lower = b.is_ascii_lowercase();
                camel |= !lower && lower_run >= 2 && first_lower;
                lower_run = if lower { lower_run + 1 } else { 0 };
                any_lower |= lower;
            }
            self.w_lower_run = lower_run;
            self.w_camel = camel;
            any_lower
        };
        if self.w_lazy {
            // A new word (`w_lazy` is set only at a word's first letter): its stem is its
            // first letters, up to the stem's length.
            self.w_lower = any_lower;
            self.w_buf = head;
            self.w_buf_len = keep as u8;
            // (The stem hashes at most its first `LONG_STEM` letters, all in `head`.)
            const _: () = assert!(lexicon::LONG_STEM <= 8);
        } else {
            self.w_lower |= any_lower;
            self.stem.push_ascii_letters(letters);
        }
        let n = run as u32;
        self.w_chars += n;
        self.w_alpha += n;
        self.line_head(letters);
        self.l_text = true;
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

    /// An ASCII byte other than a letter (the loop takes letters itself).
    fn ascii(&mut self, b: u8, next: Option<u8>) {
        debug_assert!(!is_letter(b));
        match b {
            b'0'..=b'9' => {
                self.s.digits += 1;
                self.s.numbers += u64::from(!self.prev_byte.is_ascii_digit());
                self.resolve_op(Rhs::Digit);
                self.line_char(b);
                if self.w_chars > 0 && !self.in_num {
                    // `x2`, `utf8`: digits inside a word.
                    self.w_has_digit = true;
                    self.w_chars += 1;
                    self.hash_stem();
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
                if self.l_text {
                    self.l_tabs = self.l_tabs.saturating_add(1);
                }
            }
            b'\n' => {
                self.s.newlines += 1;
                self.end_token();
                self.resolve_op(Rhs::None);
                self.end_line();
            }
            // Other control characters (a pattern, not a guard, so the match is one dispatch).
            0x00..=0x1F | 0x7F => self.end_token(),
            _ => self.ascii_punct(b, next),
        }
    }

    fn ascii_punct(&mut self, b: u8, next: Option<u8>) {
        self.s.punct += 1;
        // Tests on the next byte, made only where an arm needs them (most marks need none).
        let next_digit = || next.is_some_and(|n| n.is_ascii_digit());
        let next_alpha = || next.is_some_and(|n| n.is_ascii_alphabetic());
        let next_ends = || {
            next.is_none_or(|n| {
                n.is_ascii_whitespace() || matches!(n, b'"' | b'\'' | b')' | b']' | b'*' | b'_')
            })
        };
        self.line_char(b);
        match b {
            b'.' if self.in_num && next_digit() => {
                // A decimal point: the number goes on.
                self.num_hash = (self.num_hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
            b',' if self.in_num && next_digit() => {
                // A thousands separator (or a list of numbers without spaces).
                self.l_tight_commas = self.l_tight_commas.saturating_add(1);
                self.num_hash = (self.num_hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
            b'_' if self.w_chars > 0 && (next_alpha() || next_digit()) => {
                self.w_underscore = true;
                self.w_chars += 1;
            }
            b'\'' if self.w_alpha > 0 && next_alpha() => {
                // An apostrophe inside a word (`don't`, `l'eau`).
                self.w_chars += 1;
            }
            _ => {
                let was_word = self.w_chars > 0;
                self.end_token();
                match b {
                    b'.' => {
                        // (`end_token` leaves `prev_byte` as it was.)
                        if self.prev_byte.is_ascii_alphanumeric() && next_alpha() && was_word {
                            // `file.txt`, `obj.method`.
                            self.s.idents += 1;
                        } else if next_ends() && self.prev_byte != b'.' && self.prev_byte != b' ' {
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
                        if next_alpha() {
                            // A LaTeX command (`\frac`, `\sum`).
                            self.s.math_syms += 1;
                        }
                        self.last_tok = Tok::Other;
                    }
                    b'$' => {
                        if next_alpha() || next == Some(b'\\') {
                            // `$x$`, `$\alpha$`; a `$` before a digit is a price.
                            self.s.math_syms += 1;
                        }
                        self.last_tok = Tok::Other;
                    }
                    b'!' if next != Some(b'=') => {
                        if next_ends() {
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
            self.w_lazy = false;
        } else if upper && self.w_lower_run >= 2 && (0x61..=0x7A).contains(&self.w_first) {
            // camelCase (`getValue`); PascalCase (`YouTube`) and `iPhone` are names.
            self.w_camel = true;
        }
        self.w_lower_run = if lower { self.w_lower_run + 1 } else { 0 };
        self.w_lower |= lower;
        self.w_chars += 1;
        self.w_alpha += 1;
        self.hash_stem();
        self.stem.push(lexicon::fold(c));
    }

    /// Hashes the letters a lazy stem holds, before the word goes on with other characters.
    #[inline]
    fn hash_stem(&mut self) {
        if self.w_lazy {
            self.w_lazy = false;
            let mut stem = StemHash::new();
            let letters = self.w_buf.to_le_bytes();
            stem.push_ascii_letters(&letters[..usize::from(self.w_buf_len)]);
            self.stem = stem;
        }
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

    /// Ends the current word.
    // Most words are letters only, two or more of them, with no operator waiting for them:
    // that case is inlined where words end, the rest is not.
    #[inline]
    fn end_word(&mut self) {
        if !(self.w_digit_first
            || self.w_has_digit
            || self.w_underscore
            || self.w_camel
            || self.w_greek)
            && self.w_chars >= 2
            && !self.pending_short_op
        {
            // What `end_word_in_general` does for such a word.
            self.l_words = self.l_words.saturating_add(1);
            self.last_short_vowel = false;
            self.last_tok = Tok::Word;
            if self.in_zone() {
                self.look_up_cue();
            }
            self.w_chars = 0;
            self.w_alpha = 0;
            self.w_lower_run = 0;
        } else {
            self.end_word_in_general();
        }
    }

    /// Counts the cue of the current word, if it has one.
    #[inline(never)]
    fn look_up_cue(&mut self) {
        let cue = if self.w_lazy {
            // One run of ASCII letters, its first ones packed: no hash to build.
            lexicon::cue_of_ascii_letters(self.w_buf, self.w_chars)
        } else {
            lexicon::cue_of(&self.stem, self.w_chars)
        };
        if let Some(cue) = cue {
            self.s.cues[cue as usize] += 1;
        }
    }

    #[inline(never)]
    fn end_word_in_general(&mut self) {
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
                let vowel = is_short_vowel(c);
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
            if !self.w_has_digit && !self.w_underscore && self.in_zone() {
                self.look_up_cue();
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

    /// Records the first of `bytes` in the line's head, as far as it has room.
    #[inline]
    fn line_head(&mut self, bytes: &[u8]) {
        let head_len = usize::from(self.l_head_len);
        if head_len < self.l_head.len() {
            for (slot, &b) in self.l_head[head_len..].iter_mut().zip(bytes) {
                *slot = b;
                self.l_head_len += 1;
            }
        }
    }

    /// Records a significant (non-space) byte of the current line.
    fn line_char(&mut self, b: u8) {
        if (self.l_head_len as usize) < self.l_head.len() {
            self.l_head[self.l_head_len as usize] = b;
            self.l_head_len += 1;
        }
        self.l_text = true;
        self.l_last = b;
    }

    /// A space inside the line: kept in the head, where it separates `1.` from the text.
    fn line_space(&mut self) {
        if self.l_text {
            self.line_space_after_text();
        }
    }

    /// A space after the line's first significant byte.
    #[inline]
    fn line_space_after_text(&mut self) {
        if (self.l_head_len as usize) < self.l_head.len() {
            self.l_head[self.l_head_len as usize] = b' ';
            self.l_head_len += 1;
        }
    }

    fn end_line(&mut self) {
        if !self.l_text {
            // A blank line ends any quotation left open.
            self.in_quote = false;
        }
        if self.l_text {
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
        self.l_text = false;
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
            self.s.scripts[(CLASS[b as usize] - C_SCRIPT) as usize] += 1;
            let (need, bits) = lead_byte(b);
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

    /// Takes the three-byte ideographs (CJK and kana) from `start`, right after one, and returns
    /// the index after them: what `char` does for each. After an ideograph no word, number or
    /// operator is open and the line has text, so each only counts its script and a word, fills
    /// the line's head, and, in an instruction zone, looks up its pair with the one before.
    #[inline(never)]
    fn ideograph_run(&mut self, bytes: &[u8], start: usize) -> usize {
        debug_assert!(self.w_chars == 0 && !self.in_num && self.op_len == 0 && self.l_text);
        let mut i = start;
        let mut prev = self.prev_cjk;
        // Ideographs by script class: lead bytes E3–E9 (kana and the unified ideographs) and EF
        // (compatibility ideographs).
        let (mut taken, mut compatibility) = (0u64, 0u64);
        while let Some(&[lead, c1, c2]) = bytes.get(i..).and_then(<[u8]>::first_chunk::<3>) {
            if lead & 0xF0 != 0xE0 || (c1 & 0xC0) | ((c2 & 0xC0) >> 2) != 0xA0 {
                break;
            }
            let c =
                (u32::from(lead & 0x0F) << 12) | (u32::from(c1 & 0x3F) << 6) | u32::from(c2 & 0x3F);
            // The unified ideographs first: most of them.
            if c.wrapping_sub(0x4E00) >= 0x5200 && !is_three_byte_ideograph(c) {
                break;
            }
            taken += 1;
            compatibility += u64::from(lead == 0xEF);
            // The character's last byte decides the zone, as in `char`.
            if self.in_zone_at(i + 2)
                && let Some(cue) = lexicon::lookup(lexicon::pair_key(prev, c))
            {
                self.s.cues[cue as usize] += 1;
            }
            prev = c;
            i += 3;
        }
        const _: () = assert!(CLASS[0xE3] == C_SCRIPT + 7 && CLASS[0xE9] == C_SCRIPT + 7);
        const _: () = assert!(CLASS[0xEF] == C_SCRIPT + 9);
        if taken > 0 {
            self.s.scripts[7] += taken - compatibility;
            self.s.scripts[9] += compatibility;
            self.l_words = self
                .l_words
                .saturating_add(u16::try_from(taken).unwrap_or(u16::MAX));
            for _ in 0..taken.min(self.l_head.len() as u64) {
                self.line_marker(0xE3);
            }
            self.prev_cjk = prev;
            self.pos = i - 1;
            self.prev_byte = bytes[i - 1];
        }
        i
    }

    /// A complete non-ASCII character.
    fn char(&mut self, c: u32) {
        let is_cjk = is_three_byte_ideograph(c) || (0x20000..=0x2FFFF).contains(&c);
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
    // Most lines start with a word: decided at once.
    if let [x, y, ..] = head
        && x.is_ascii_alphabetic()
        && !matches!(y, b')' | b'.')
    {
        return LineKind::Plain;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(text: &str) -> Stats {
        scan(&Content::Text(text), Depth::Full)
    }

    #[test]
    fn counts_operators_between_operands_but_not_hyphens_in_prose() {
        let s = stats("x+y = 4z, x*y = 4z^2, express x-y in z");
        assert!(s.math_ops >= 6, "{s:?}");
        assert!(s.vars >= 4, "{s:?}");
        for prose in [
            "A well-known and/or state-of-the-art approach.",
            "Y a-t-il un t-shirt ?",
            "What is 15% of 80?",
        ] {
            assert_eq!(stats(prose).math_ops, 0, "{prose}: {:?}", stats(prose));
        }
        assert_eq!(stats("n-1, x-y, x % 2, (a+b)/2").math_ops, 5);
    }

    #[test]
    fn recognises_enumerations_bullets_and_questions() {
        let s =
            stats("Answer these:\n1. What is it?\n2) Why?\na) first\n- bullet\n• dot\n# Title\n");
        assert_eq!(s.enum_lines, 3, "{s:?}");
        assert_eq!(s.bullet_lines, 2, "{s:?}");
        assert_eq!(s.heading_lines, 1, "{s:?}");
        // Items introduced by a colon count as items, not as questions of the instruction.
        assert_eq!(s.questions, 0, "{s:?}");
        assert_eq!(stats("What is it? And why?").questions, 2);
    }

    #[test]
    fn finds_code_in_fences_and_by_line_endings() {
        let s = stats("Fix this:\n```\nfn main() {\n    let x_y = foo.bar(a, b) + 1;\n}\n```\n");
        assert_eq!(s.fences, 2);
        assert_eq!(
            (s.math_ops, s.vars),
            (0, 0),
            "operators and names in code are code"
        );
        assert_eq!(s.code_lines, 3);
        assert!(s.idents >= 2, "{s:?}");
        let s = stats("if (a == b) {\n  return a && b;\n}");
        assert!(s.code_lines >= 2 && s.code_ops >= 2, "{s:?}");
    }

    #[test]
    fn finds_data_rows_and_json_keys() {
        let s = stats("Date,Open,Close\n2022-01-01,150.02,153.80\n2022-01-02,154.32,156.25\n");
        assert_eq!(s.data_rows, 3, "{s:?}");
        let s = stats(r#"{"name": "a", "age": 3}"#);
        assert_eq!(s.json_keys, 2);
        let s = stats("| a | b |\n|---|---|\n| 1 | 2 |\n");
        assert_eq!(s.data_rows, 3);
    }

    #[test]
    fn premises_are_the_statements_before_the_question() {
        let s = stats("A is the father of B. B is the father of C. What is A to C?");
        assert_eq!(s.premises, 2);
        assert_eq!(s.questions, 1);
        let s = stats("甲比乙高。乙比丙高。谁最高？");
        assert_eq!(s.premises, 2);
        assert_eq!(s.questions, 1);
    }

    #[test]
    fn capitals_with_digits_are_names_and_capital_suffixes_are_magnitudes() {
        // Quarters, fiscal years, chips and amounts: neither identifiers nor variables.
        let s = stats("Compare Q3 and FY2024 revenue on A100 and H100 chips: $4.1M, 2B and 3T.");
        assert_eq!((s.idents, s.vars), (0, 0), "{s:?}");
        // Lower-case letters with digits are identifiers; a lower-case letter after a number
        // is a variable, `k` included.
        let s = stats("Why does x2 differ from utf8 and sha256 when 4z and 4k + 3 are given?");
        assert_eq!((s.idents, s.vars), (3, 2), "{s:?}");
    }

    #[test]
    fn dates_phone_numbers_and_codes_are_not_arithmetic() {
        let s = stats("Meet on 2024-05-01 or 06/12/2024; call 1-800-555-0199 first.");
        assert_eq!(s.math_ops, 0, "{s:?}");
        // One separator between numbers is still an operator, tight or spaced, and a chain
        // of different ones is arithmetic.
        let s = stats("Compute 12-5 and 3/4, then 7 - 2 and 8-4/2.");
        assert_eq!(s.math_ops, 5, "{s:?}");
    }

    #[test]
    fn distinct_numbers_and_decimals() {
        let s = stats("3.14 and 3.14 and 2,000 and 7");
        assert_eq!(s.numbers, 7, "digit runs, for the token estimate");
        assert!(
            s.distinct_numbers() >= 2 && s.distinct_numbers() <= 3,
            "{s:?}"
        );
    }

    #[test]
    fn cues_in_several_languages() {
        let s = stats("Prove the theorem. Докажите, что это так. 请证明这个定理。");
        assert!(s.cue(Cue::Math) >= 3, "{s:?}");
        let s = stats("Implement the algorithm in Python and return JSON.");
        assert!(s.cue(Cue::Code) >= 2 && s.cue(Cue::Format) == 1, "{s:?}");
    }

    #[test]
    fn token_estimate_is_near_bpe_counts() {
        // Ranges typical of current BPE tokenizers for such sentences.
        let en =
            "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.";
        let t = stats(en).tokens();
        assert!((15..=22).contains(&t), "{t}");
        let zh = "今天天气很好，我们去公园散步吧。";
        let t = stats(zh).tokens();
        assert!((10..=18).contains(&t), "{t}");
        assert_eq!(stats("").tokens(), 0);
        assert_eq!(stats("a").tokens(), 1);
    }

    #[test]
    fn long_texts_are_sampled_and_counted_linearly() {
        let para = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ";
        let text = para.repeat(4000);
        let s = stats(&text);
        assert!(
            s.detailed_bytes < (text.len() / 4) as u64,
            "{}",
            s.detailed_bytes
        );
        let small = stats(&para.repeat(40)).tokens() * 100;
        let big = s.tokens();
        assert!(big.abs_diff(small) * 20 < small, "{big} vs {small}");
    }

    #[test]
    fn instruction_zones_leave_out_a_pasted_document() {
        let doc =
            "Summarize this:\nOne, two, three. Four, five, six. Seven?\nEight, nine.\n\nBe brief.";
        let s = stats(doc);
        assert_eq!((s.clauses, s.sentences, s.questions), (0, 1, 0), "{s:?}");
        let doc = format!(
            "Read this.\n\n{}\n\nWhat is the title? Why?",
            "Words, words, words. ".repeat(50)
        );
        let s = stats(&doc);
        assert_eq!((s.clauses, s.questions), (0, 2), "{s:?}");
        let s = stats("Is this spam? \"Win now, click here, claim it.\" Answer yes or no.");
        assert_eq!(s.clauses, 0, "{s:?}");
        let s = stats("Explain A, B, and C.");
        assert_eq!(s.clauses, 2, "{s:?}");
    }

    /// The token-estimate counts byte by byte, from the class table: what `token_counts`
    /// computes sixteen bytes at a time.
    fn reference_counts(bytes: &[u8]) -> Stats {
        let mut s = Stats::default();
        let mut prev = C_SPACE;
        for &b in bytes {
            let c = CLASS[b as usize];
            let fresh = c != prev;
            match c {
                C_LETTER => {
                    s.letters += 1;
                    s.words += u64::from(fresh);
                }
                C_DIGIT => {
                    s.digits += 1;
                    s.numbers += u64::from(fresh);
                }
                C_PUNCT => s.punct += 1,
                C_NEWLINE => s.newlines += 1,
                C_SPACE | C_CONT => {}
                _ => s.scripts[(c - C_SCRIPT) as usize] += 1,
            }
            prev = c;
        }
        s
    }

    #[test]
    fn token_counts_match_byte_by_byte_counting() {
        let mixed = "Rev 12% ($4.1M), x2 + y_3 = 7;\n\t客户 «été» Ж 😀 \u{1}\u{7f}|a1b2 ";
        let mut texts: Vec<String> = (0..70)
            .map(|n| mixed.repeat(n % 7).chars().take(n).collect())
            .collect();
        texts.push(mixed.repeat(400));
        texts.push("a".repeat(16 * 300 + 5));
        texts.push("1 ".repeat(5000));
        for t in &texts {
            let mut s = Stats::default();
            token_counts(t.as_bytes(), &mut s);
            assert_eq!(s, reference_counts(t.as_bytes()), "{t:?}");
        }
    }

    #[test]
    fn byte_searches_match_plain_scans() {
        let text = b"ab\ncd\n\nef\n\n\ngh\n".repeat(9);
        for end in 0..text.len() {
            for start in 0..end.min(40) {
                let b = &text[start..end];
                assert_eq!(find_byte(b, b'\n'), b.iter().position(|&x| x == b'\n'));
                assert_eq!(rfind_byte(b, b'\n'), b.iter().rposition(|&x| x == b'\n'));
                let pair = |w: &[u8]| w[0] == b'\n' && w[1] == b'\n';
                assert_eq!(find_blank_line(b), b.windows(2).position(pair));
                assert_eq!(rfind_blank_line(b), b.windows(2).rposition(pair));
            }
        }
    }

    /// The counts of this scanner and of the byte-at-a-time reference, at every depth.
    fn check_against_reference(content: &Content<'_>) {
        for (depth, old) in [
            (Depth::Full, reference::Depth::Full),
            (Depth::Brief, reference::Depth::Brief),
            (Depth::Tokens, reference::Depth::Tokens),
        ] {
            let new = format!("{:?}", scan(content, depth));
            let old = format!("{:?}", reference::scan(content, old));
            assert_eq!(new, old, "{depth:?} {content:?}");
        }
    }

    /// Pieces prompts are made of, and the edge cases of each rule: words in every case,
    /// cue words, numbers, operators, code, markup, quotes, other scripts, control bytes.
    const PIECES: &[&str] = &[
        "the",
        "The",
        "quick",
        "fox",
        "algorithm",
        "Algorithms",
        "prove",
        "theorem",
        "why",
        "Why",
        "explain",
        "json",
        "JSON",
        "thanks",
        "Thanks",
        "write",
        "getValue",
        "x_y",
        "utf8",
        "x2",
        "a",
        "I",
        "y",
        "x",
        "z",
        "t-shirt",
        "well-known",
        "and/or",
        "don't",
        "l'eau",
        "file.txt",
        "obj.method()",
        "3.14",
        "2,000",
        "1.",
        "2)",
        "a)",
        "(b)",
        "- ",
        "* ",
        "# ",
        "```",
        "```rust",
        "~~~",
        "    ",
        "\t",
        "\n",
        "\n\n",
        "\r\n",
        " ",
        " ",
        " ",
        ", ",
        ";",
        ". ",
        "? ",
        "! ",
        "!=",
        "==",
        "->",
        "::",
        "&&",
        "+=",
        "<=",
        "**",
        "--flag",
        "//",
        "x+y",
        "4z",
        "x^2",
        "15%",
        "x % 2",
        "(a+b)/2",
        "n-1",
        "$x$",
        "$5",
        "\\frac",
        "\"",
        "\":",
        "'",
        "`",
        "{",
        "}",
        "(",
        ")",
        "[",
        "]",
        "|",
        ":",
        "：",
        "Докажите",
        "Спасибо",
        "ЖЁЛТЫЙ",
        "été",
        "cálculo",
        "请证明这个定理",
        "。",
        "，",
        "？",
        "谢谢",
        "ありがとう",
        "증명",
        "•",
        "①",
        "│",
        "±",
        "×",
        "²",
        "→",
        "𝑥",
        "😀",
        "«",
        "»",
        "“",
        "”",
        "「",
        "α",
        "π",
        "\u{1}",
        "\u{7f}",
        "\u{a0}",
        "\u{feff}",
        "ß",
        "؟",
        "।",
        "０",
        "42",
        "007",
        "1,2,3",
        "a,b,c",
        "12:30",
        "if (a == b) {",
        "return a && b;",
        "def f(x):",
        "SELECT * FROM t;",
        "http://x.io/a?b=c",
        "e.g.",
        "...",
        "—",
        "_",
        "__init__",
        "CamelCase",
        "camelCaseWord",
        "iPhone",
        "HTTPServer",
        "getXValue",
        "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklm",
        "integral",
        "integrals",
        "optimally",
        "implementation",
        "Ж",
        "ё",
    ];

    /// A seeded pseudo-random text: pieces, random lower-case words, spaces, and (in some
    /// texts) random ASCII bytes or random characters.
    fn random_text(state: &mut u64, max: usize) -> String {
        let mut next = |n: usize| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            (*state % n as u64) as usize
        };
        let len = match next(10) {
            0..=5 => next(400),
            6..=8 => next(5000),
            _ => next(max),
        };
        let style = next(4);
        let mut s = String::new();
        while s.len() < len {
            match next(16) {
                0 if style == 0 => s.push(next(128) as u8 as char),
                1 if style == 1 => s.extend(char::from_u32(next(0x30000) as u32)),
                2 | 3 => s.extend((0..1 + next(12)).map(|_| (b'a' + next(26) as u8) as char)),
                4 | 5 => s.push(' '),
                _ => s.push_str(PIECES[next(PIECES.len())]),
            }
        }
        s
    }

    #[test]
    fn complete_characters_decode_as_the_standard_library_does() {
        // Every scalar value below 0x30000 and every 97th above, whole and cut short.
        let all = (0..0x30000u32).chain((0x30000..=0x10FFFF).step_by(97));
        for c in all.filter_map(char::from_u32) {
            let mut buf = [0u8; 5];
            let len = c.encode_utf8(&mut buf).len();
            buf[len] = b'x';
            let expected = (len > 1).then_some((u32::from(c), len));
            assert_eq!(complete_char(&buf[..=len], 0), expected, "{c:?}");
            for cut in 1..len {
                assert_eq!(complete_char(&buf[..cut], 0), None, "{c:?} cut at {cut}");
                // An ASCII byte where a continuation byte should be.
                let mut broken = buf;
                broken[cut] = b'a';
                assert_eq!(
                    complete_char(&broken[..len], 0),
                    None,
                    "{c:?} broken at {cut}"
                );
            }
        }
    }

    #[test]
    fn lowercase_prefix_counts_what_a_byte_loop_counts() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        // Letters, their neighbours in ASCII, and bytes with the high bit set, in every mix.
        let alphabet = b"abyz`{AZ@[ \n.\x7f\x80\xe1\xfa\xfb";
        for _ in 0..200_000 {
            let mut w = [0u8; 8];
            for b in &mut w {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = alphabet[(state % alphabet.len() as u64) as usize];
            }
            let expected = w.iter().take_while(|b| b.is_ascii_lowercase()).count();
            assert_eq!(lowercase_prefix(u64::from_le_bytes(w)), expected, "{w:?}");
        }
        for b in 0..=255u8 {
            let expected = usize::from(b.is_ascii_lowercase());
            let w = u64::from_le_bytes([b, 0, 0, 0, 0, 0, 0, 0]);
            assert_eq!(lowercase_prefix(w), expected, "{b:#x}");
        }
    }

    #[test]
    fn runs_of_plain_words_count_as_the_reference_does() {
        // Prose between the zones, where whole runs of words are taken at once: words ending in
        // each mark, at line ends, words of more than eight letters, single letters, capitals, a
        // quotation, a code block, operators breaking runs, and lines whose first bytes are plain
        // words followed by what would start a list, a heading or a fence, in every fifth prefix.
        let middle = "The report, as drafted, covers three regions. Does it hold? It does! \
                      Sales rose; costs fell. Internationalization considerations: \
                      extraordinarily understanding.\nA short line ends here\nand goes on, then stops.\n\
                      Then \"quoted words, here. And more\" outside again x y z and a b.\n\
                      ```\nlet value = other, more; done.\n```\n\
                      Mixed words: camelCase HTML iPhone don't e.g. x-y and/or 4z 12 items.\n\
                      Go 1. on\nNo - bullet\nSo # no heading\nAn ```inline fence\n";
        let text = format!(
            "Summarize the notes below\n\n{}\n\nWhat changed, and why?",
            middle.repeat(12)
        );
        check_prefixes_against_reference(&text, 5);
        check_against_reference(&Content::Text(&text));
        check_against_reference(&Content::Parts(&[&text, middle, &text]));
    }

    /// Every `step`-th prefix of `text` that ends on a character boundary.
    fn check_prefixes_against_reference(text: &str, step: usize) {
        for end in (0..=text.len())
            .filter(|&e| text.is_char_boundary(e))
            .step_by(step)
        {
            check_against_reference(&Content::Text(&text[..end]));
        }
    }

    #[test]
    fn ideograph_runs_and_one_letter_words_count_as_the_reference_does() {
        // Runs of ideographs and kana (with pair cues, compatibility ideographs, ideographs of
        // four bytes, full-width marks and quotation marks between them) and one-letter words
        // before every kind of byte, across the zones' edges, in every third prefix.
        let middle = "请证明这个定理，然后解释为什么。ありがとうございます。「引用的证明」之后继续。\
                      﨑﨑漢字𠀋𠀋字 混合 mixed 中文text 。x y, z; (a) b-c d/e f_g h'i j.k l1 \
                      é a\tb\nc\n证明\n";
        let text = format!(
            "请证明下面的结论\n\n{}\n\n为什么？证明它。",
            middle.repeat(10)
        );
        check_prefixes_against_reference(&text, 3);
        check_against_reference(&Content::Parts(&[&text, middle, &text]));
    }

    #[test]
    fn counts_match_the_byte_at_a_time_reference() {
        // The labelled set's messages and every prefix of each.
        for line in include_str!("../tests/data/labelled.jsonl").lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            for m in v["messages"].as_array().into_iter().flatten() {
                let text = m["content"].as_str().unwrap_or_default();
                check_against_reference(&Content::Text(text));
                for (i, _) in text.char_indices() {
                    let prefix = Content::Text(&text[..i]);
                    assert_eq!(
                        scan(&prefix, Depth::Full),
                        reference_stats(&prefix),
                        "{prefix:?}"
                    );
                }
            }
        }
        // Random texts and multi-part messages; `COGNITUDE_SCAN_CASES` runs more of them.
        let cases = std::env::var("COGNITUDE_SCAN_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(400);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..cases {
            let text = random_text(&mut state, 40_000);
            check_against_reference(&Content::Text(&text));
            let parts: Vec<String> = (0..1 + state % 4)
                .map(|_| random_text(&mut state, 10_000))
                .collect();
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            check_against_reference(&Content::Parts(&parts));
        }
    }

    #[test]
    fn pair_searches_match_a_plain_scan() {
        // Every text of up to 40 bytes from seeded random runs of `a` and `\n`, with pairs
        // inside 16-byte blocks and across their edges.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 41) as usize;
            let text: Vec<u8> = (0..len)
                .map(|i| {
                    if state >> (i % 64) & 1 == 1 {
                        b'\n'
                    } else {
                        b'a'
                    }
                })
                .collect();
            let pair_at = |i: &usize| text[*i] == b'\n' && text[*i + 1] == b'\n';
            let all: Vec<usize> = (0..len.saturating_sub(1)).filter(pair_at).collect();
            assert_eq!(find_blank_line(&text), all.first().copied(), "{text:?}");
            assert_eq!(rfind_blank_line(&text), all.last().copied(), "{text:?}");
        }
    }

    /// The reference's counts as this module's type (the two have the same fields).
    fn reference_stats(content: &Content<'_>) -> Stats {
        let r = reference::scan(content, reference::Depth::Full);
        let mut s = Stats {
            bytes: r.bytes,
            letters: r.letters,
            words: r.words,
            digits: r.digits,
            numbers: r.numbers,
            punct: r.punct,
            newlines: r.newlines,
            scripts: r.scripts,
            lines: r.lines,
            enum_lines: r.enum_lines,
            bullet_lines: r.bullet_lines,
            heading_lines: r.heading_lines,
            questions: r.questions,
            sentences: r.sentences,
            premises: r.premises,
            fences: r.fences,
            code_lines: r.code_lines,
            code_ops: r.code_ops,
            idents: r.idents,
            ticks: r.ticks,
            brackets: r.brackets,
            math_ops: r.math_ops,
            math_syms: r.math_syms,
            vars: r.vars,
            number_set: r.number_set,
            data_rows: r.data_rows,
            json_keys: r.json_keys,
            quotes: r.quotes,
            cues: r.cues,
            clauses: r.clauses,
            zone_bytes: r.zone_bytes,
            detailed_bytes: r.detailed_bytes,
        };
        s.cues = r.cues;
        s
    }

    #[test]
    fn windows_cover_head_samples_and_tail_in_order() {
        let w = Windows {
            total: 100_000,
            head: HEAD,
            tail: TAIL,
            sampled: true,
        };
        let mut pos = 0;
        let mut ranges = Vec::new();
        while pos < w.total {
            let (s, e) = w.next_detail(pos);
            assert!(e > pos && s < e, "{s} {e} at {pos}");
            ranges.push((s, e));
            pos = e;
        }
        assert_eq!(ranges.first(), Some(&(0, HEAD)));
        assert_eq!(ranges.last(), Some(&(100_000 - TAIL, 100_000)));
        assert!(ranges.len() >= 6, "{ranges:?}");
        assert!(ranges.windows(2).all(|p| p[0].1 <= p[1].0));
    }
}
