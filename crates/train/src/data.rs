//! The training corpus, content-addressed chunks, their Merkle root, shards and batches.
//!
//! Everything here is a pure function of its arguments and gives the same bytes on every
//! machine: the corpus comes from a seeded [`SplitMix64`], shard and batch choices from SHA-256
//! in counter mode over the seed material the caller passes (a hash of job, round and previous
//! checkpoint), so an auditor who knows the seed material re-derives exactly the tokens a worker
//! trained on.
//!
//! The tokenizer is the identity on bytes: a token is one byte of the corpus (vocabulary
//! [`VOCAB`] = 256), carried as `u16` in a [`Batch`] so the model's embedding lookup needs no
//! conversion and a larger vocabulary would not change the batch type.
//!
//! The corpus is cut into chunks of [`CHUNK_BYTES`] (the last may be shorter). A chunk is named
//! by [`chunk_hash`]; a [`Dataset`] is the list of chunk hashes, and its [`Dataset::root`] is a
//! binary Merkle tree over them with domain-separated leaves and inner nodes. An odd node at the
//! end of a level is promoted to the next level unchanged (never paired with a copy of itself),
//! so two different leaf lists never share a root the way a duplicated-leaf tree allows. The
//! root also commits to the chunk count (`sha256("pazar/train/merkle/root\0" ‖ count u32 LE ‖
//! top)`): without it, a proof for chunk 2 of 3 also checks as chunk 1 of 2 against the same
//! top hash, so a verifier told the wrong count would accept the wrong position.
//!
//! The last `max(1, n / 20)` chunks are held out for evaluation ([`eval_count`]); training
//! shards are drawn from the others.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use pazar_types::tx::Hash32;
use sha2::{Digest, Sha256};

/// Tokens per position: a token is a byte.
pub const VOCAB: usize = 256;

/// Bytes in every chunk but the last (which holds 1 to `CHUNK_BYTES`).
pub const CHUNK_BYTES: usize = 16 * 1024;

/// The most sibling hashes a Merkle proof can hold: a tree of at most `u32::MAX` chunks is at
/// most 32 levels deep.
pub const MAX_PROOF_LEN: usize = 32;

/// The most chunks one worker may be assigned in a round (a bound on the work and memory of
/// [`assign_shards`]).
pub const MAX_SHARD_CHUNKS: u32 = 1 << 20;

/// The most token positions one batch may hold (`batch × seq_len`).
pub const MAX_BATCH_TOKENS: u64 = 1 << 24;

/// The most batches [`eval_batches`] will build in one call.
pub const MAX_EVAL_BATCHES: u32 = 1 << 16;

const CORPUS_DOMAIN: &[u8] = b"pazar/train/corpus/v1\0";
const CHUNK_DOMAIN: &[u8] = b"pazar/train/chunk/v1\0";
const LEAF_DOMAIN: &[u8] = b"pazar/train/merkle/leaf\0";
const NODE_DOMAIN: &[u8] = b"pazar/train/merkle/node\0";
const ROOT_DOMAIN: &[u8] = b"pazar/train/merkle/root\0";
const SHARD_DOMAIN: &[u8] = b"pazar/train/shards/v1\0";
const BATCH_DOMAIN: &[u8] = b"pazar/train/batch/v1\0";

/// Why a data operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A dataset needs at least one chunk, so at least one byte.
    #[error("a dataset needs at least one chunk; the corpus is empty")]
    EmptyCorpus,
    /// A chunk index past the end of the dataset.
    #[error("chunk index {index} is out of range for a dataset of {count} chunks")]
    ChunkIndex {
        /// The index asked for.
        index: u32,
        /// Chunks in the dataset.
        count: u32,
    },
    /// More chunks than a `u32` index can name.
    #[error("the dataset has {count} chunks; at most {max} are supported", max = u32::MAX)]
    TooManyChunks {
        /// Chunks found.
        count: usize,
    },
    /// A worker's shard holds no chunks.
    #[error("the shard holds no chunks")]
    EmptyShard,
    /// No chunk of the shard is long enough for one sequence and its next-token target.
    #[error("no chunk of the shard has the {needed} bytes one sequence needs (longest: {longest})")]
    NoUsableChunk {
        /// `seq_len + 1`.
        needed: u64,
        /// The longest chunk of the shard.
        longest: usize,
    },
    /// A batch of zero sequences, zero positions, or more than [`MAX_BATCH_TOKENS`].
    #[error("a batch of {batch} sequences of {seq_len} tokens is refused (each at least 1, product at most {max})", max = MAX_BATCH_TOKENS)]
    BatchShape {
        /// Sequences per batch.
        batch: u32,
        /// Tokens per sequence.
        seq_len: u32,
    },
    /// No chunks to train on (a dataset of one chunk is all evaluation).
    #[error("there are no training chunks to assign")]
    NoTrainChunks,
    /// A shard of zero chunks, more than there are, or more than [`MAX_SHARD_CHUNKS`].
    #[error("cannot assign {per_worker} distinct chunks out of {train_chunks} (at least 1, at most {max} and at most the training chunks)", max = MAX_SHARD_CHUNKS)]
    ShardSize {
        /// Chunks asked for.
        per_worker: u32,
        /// Training chunks there are.
        train_chunks: u32,
    },
    /// More evaluation batches asked for than [`MAX_EVAL_BATCHES`].
    #[error("{asked} evaluation batches asked for; at most {max}", max = MAX_EVAL_BATCHES)]
    TooManyEvalBatches {
        /// Batches asked for.
        asked: u32,
    },
    /// The chunk store's directory could not be created or read.
    #[error("chunk store {path}: {source}")]
    StoreDir {
        /// The directory.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Reading or writing one chunk failed.
    #[error("chunk {chunk}: {source}")]
    ChunkIo {
        /// The chunk's hash, hex.
        chunk: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The store has no file for a chunk.
    #[error("chunk {chunk} is not in the store")]
    MissingChunk {
        /// The chunk's hash, hex.
        chunk: String,
    },
    /// A stored file's bytes do not hash to its name.
    #[error("chunk {chunk} is corrupt: its bytes hash to {actual}")]
    CorruptChunk {
        /// The chunk's hash (the file's name), hex.
        chunk: String,
        /// What the file's bytes hash to, hex.
        actual: String,
    },
    /// A chunk of the wrong size: empty, larger than [`CHUNK_BYTES`], or short but not last.
    #[error("chunk {chunk} (number {index}) holds {len} bytes; every chunk but the last holds exactly {full} and the last 1 to {full}", full = CHUNK_BYTES)]
    ChunkSize {
        /// The chunk's hash, hex.
        chunk: String,
        /// Its position in the dataset.
        index: usize,
        /// Its length (or `CHUNK_BYTES + 1` for "more than a chunk").
        len: usize,
    },
}

/// SplitMix64 (Steele, Lea and Flood), the corpus generator's source of randomness: one 64-bit
/// state, an add and two multiply-xorshifts per output. Chosen because it is tiny, fast and
/// specified exactly, so every machine draws the same numbers.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose first output is the mix of `seed + golden gamma`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n` without modulo bias (rejection of the short last interval).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no value to return");
        uniform_below(n, || self.next_u64())
    }
}

/// A uniform integer in `0..n` from a source of uniform `u64`s: draws below `2^64 mod n` are
/// rejected, so every residue is hit by the same number of accepted draws.
fn uniform_below(n: u64, mut next: impl FnMut() -> u64) -> u64 {
    debug_assert!(n > 0);
    let threshold = n.wrapping_neg() % n;
    loop {
        let x = next();
        if x >= threshold {
            return x % n;
        }
    }
}

/// Uniform `u64`s from SHA-256 in counter mode: block `i` is `sha256(prefix ‖ i as u64 LE)`, read
/// as four little-endian `u64`s.
struct HashStream {
    prefix: Sha256,
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl HashStream {
    fn new(parts: &[&[u8]]) -> HashStream {
        let mut prefix = Sha256::new();
        for p in parts {
            prefix.update(p);
        }
        HashStream {
            prefix,
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }

    fn next_u64(&mut self) -> u64 {
        if self.used == 32 {
            let mut h = self.prefix.clone();
            h.update(self.counter.to_le_bytes());
            self.block = h.finalize().into();
            self.counter += 1;
            self.used = 0;
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.block[self.used..self.used + 8]);
        self.used += 8;
        u64::from_le_bytes(word)
    }

    fn below(&mut self, n: u64) -> u64 {
        uniform_below(n, || self.next_u64())
    }
}

// ---------------------------------------------------------------------------------------------
// The corpus.

/// (singular, plural) nouns that can act: subjects are drawn from these.
const AGENTS: &[(&str, &str)] = &[
    ("cat", "cats"),
    ("dog", "dogs"),
    ("bird", "birds"),
    ("fox", "foxes"),
    ("child", "children"),
    ("farmer", "farmers"),
    ("teacher", "teachers"),
    ("sailor", "sailors"),
    ("baker", "bakers"),
    ("robot", "robots"),
    ("horse", "horses"),
    ("wolf", "wolves"),
    ("mouse", "mice"),
    ("king", "kings"),
    ("queen", "queens"),
    ("miner", "miners"),
    ("painter", "painters"),
    ("doctor", "doctors"),
    ("student", "students"),
    ("owl", "owls"),
    ("goat", "goats"),
    ("uncle", "uncles"),
    ("artist", "artists"),
    ("engineer", "engineers"),
];

/// (singular, plural) nouns for things and places: objects are drawn from these and the agents.
const THINGS: &[(&str, &str)] = &[
    ("river", "rivers"),
    ("tree", "trees"),
    ("house", "houses"),
    ("boat", "boats"),
    ("city", "cities"),
    ("garden", "gardens"),
    ("key", "keys"),
    ("box", "boxes"),
    ("letter", "letters"),
    ("song", "songs"),
    ("book", "books"),
    ("lamp", "lamps"),
    ("clock", "clocks"),
    ("stone", "stones"),
    ("bridge", "bridges"),
    ("window", "windows"),
    ("cloud", "clouds"),
    ("train", "trains"),
    ("field", "fields"),
    ("village", "villages"),
    ("market", "markets"),
    ("ship", "ships"),
    ("road", "roads"),
    ("tower", "towers"),
    ("engine", "engines"),
    ("apple", "apples"),
    ("cup", "cups"),
    ("door", "doors"),
    ("hill", "hills"),
    ("star", "stars"),
    ("map", "maps"),
    ("coin", "coins"),
    ("lake", "lakes"),
    ("bell", "bells"),
    ("shop", "shops"),
    ("card", "cards"),
    ("wheel", "wheels"),
    ("rope", "ropes"),
    ("nest", "nests"),
    ("drum", "drums"),
    ("leaf", "leaves"),
    ("island", "islands"),
    ("orange", "oranges"),
    ("umbrella", "umbrellas"),
    ("egg", "eggs"),
    ("oven", "ovens"),
];

/// Transitive verbs: (base, third person singular, past).
const VERBS: &[(&str, &str, &str)] = &[
    ("see", "sees", "saw"),
    ("find", "finds", "found"),
    ("carry", "carries", "carried"),
    ("watch", "watches", "watched"),
    ("follow", "follows", "followed"),
    ("paint", "paints", "painted"),
    ("build", "builds", "built"),
    ("open", "opens", "opened"),
    ("close", "closes", "closed"),
    ("lift", "lifts", "lifted"),
    ("push", "pushes", "pushed"),
    ("pull", "pulls", "pulled"),
    ("love", "loves", "loved"),
    ("help", "helps", "helped"),
    ("fix", "fixes", "fixed"),
    ("clean", "cleans", "cleaned"),
    ("count", "counts", "counted"),
    ("hide", "hides", "hid"),
    ("keep", "keeps", "kept"),
    ("sell", "sells", "sold"),
    ("buy", "buys", "bought"),
    ("draw", "draws", "drew"),
    ("visit", "visits", "visited"),
    ("cross", "crosses", "crossed"),
    ("bring", "brings", "brought"),
    ("take", "takes", "took"),
    ("hold", "holds", "held"),
    ("move", "moves", "moved"),
    ("touch", "touches", "touched"),
    ("guard", "guards", "guarded"),
    ("chase", "chases", "chased"),
    ("greet", "greets", "greeted"),
    ("ring", "rings", "rang"),
    ("read", "reads", "read"),
    ("write", "writes", "wrote"),
    ("feed", "feeds", "fed"),
    ("wash", "washes", "washed"),
    ("climb", "climbs", "climbed"),
    ("miss", "misses", "missed"),
    ("mend", "mends", "mended"),
];

/// Intransitive verbs: (base, third person singular, past).
const INTRANSITIVE: &[(&str, &str, &str)] = &[
    ("sleep", "sleeps", "slept"),
    ("run", "runs", "ran"),
    ("sing", "sings", "sang"),
    ("wait", "waits", "waited"),
    ("laugh", "laughs", "laughed"),
    ("swim", "swims", "swam"),
    ("dance", "dances", "danced"),
    ("rest", "rests", "rested"),
    ("smile", "smiles", "smiled"),
    ("jump", "jumps", "jumped"),
    ("work", "works", "worked"),
    ("play", "plays", "played"),
    ("shout", "shouts", "shouted"),
    ("listen", "listens", "listened"),
    ("travel", "travels", "travelled"),
    ("cook", "cooks", "cooked"),
    ("fly", "flies", "flew"),
    ("walk", "walks", "walked"),
    ("hum", "hums", "hummed"),
    ("fall", "falls", "fell"),
];

const ADJECTIVES: &[&str] = &[
    "red", "blue", "green", "small", "big", "old", "young", "quiet", "loud", "happy", "sad", "brave", "tired",
    "bright", "dark", "warm", "cold", "tall", "short", "clever", "gentle", "busy", "lazy", "wild", "kind", "proud",
    "shy", "quick", "slow", "heavy", "light", "strange", "lucky", "calm", "rich", "poor", "clean", "dirty", "round",
    "sharp", "soft", "hard", "golden", "silver", "wooden", "little", "famous", "hungry", "sleepy", "curious", "empty",
    "ancient", "orange", "early", "icy",
];

const ADVERBS: &[&str] = &[
    "quickly",
    "slowly",
    "quietly",
    "happily",
    "carefully",
    "often",
    "rarely",
    "again",
    "softly",
    "gladly",
    "boldly",
    "loudly",
    "gently",
    "twice",
    "always",
    "never",
    "sometimes",
    "eagerly",
];

const PREPOSITIONS: &[&str] = &[
    "near", "behind", "under", "beside", "above", "inside", "across", "beyond", "around", "past", "along", "by",
];

const NAMES: &[&str] = &[
    "Ada", "Bo", "Cleo", "Dara", "Eli", "Fern", "Gus", "Hana", "Ivo", "Juno", "Kai", "Lena", "Milo", "Nia", "Omar",
    "Pia", "Quin", "Rosa", "Sam", "Tara", "Uma", "Vik", "Wren", "Yara", "Zed", "Ben", "Cora", "Dev", "Ezra", "Faye",
    "Gil", "Ines", "Jon", "Kira", "Leo", "Mara", "Ned", "Ola",
];

const CITIES: &[&str] = &[
    "Oslo", "Lima", "Pune", "Kyiv", "Baku", "Riga", "Doha", "Nice", "Bonn", "Cork", "Accra", "Quito", "Hanoi", "Porto",
    "Turin", "Malmo", "Split", "Ghent",
];

const COLORS: &[&str] = &[
    "red", "blue", "green", "yellow", "black", "white", "purple", "orange", "grey", "pink",
];

const FOODS: &[&str] = &[
    "bread", "rice", "soup", "cheese", "plums", "beans", "honey", "noodles", "pears", "fish",
];

const NUMBER_WORDS: &[&str] = &[
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
];

const CONJUNCTIONS: &[&str] = &["and", "but", "because", "while", "so"];

/// Whether a word takes "an": it starts with a vowel letter (true for every word listed here).
fn starts_with_vowel(word: &str) -> bool {
    matches!(word.as_bytes().first(), Some(b'a' | b'e' | b'i' | b'o' | b'u'))
}

/// Writes sentences, sums and records into a byte buffer from one [`SplitMix64`].
struct Writer {
    rng: SplitMix64,
    out: Vec<u8>,
}

/// A noun phrase's grammatical number, which the verb must agree with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Number {
    Singular,
    Plural,
}

/// The few nouns and names a story paragraph keeps returning to.
struct Topic {
    agents: [usize; 3],
    things: [usize; 4],
    names: [usize; 2],
}

impl Writer {
    fn below(&mut self, n: usize) -> usize {
        // Lists and ranges here are small constants, so `usize` <-> `u64` never truncates.
        self.rng.below(n as u64) as usize
    }

    /// True with probability `num / den`.
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.rng.below(den) < num
    }

    /// An index into a list of `n` words skewed towards its front (the smaller of two uniform
    /// draws), so word frequencies are uneven as in real text.
    fn skewed(&mut self, n: usize) -> usize {
        let a = self.below(n);
        let b = self.below(n);
        a.min(b)
    }

    fn word(&mut self, w: &str) {
        self.out.extend_from_slice(w.as_bytes());
    }

    fn space(&mut self) {
        self.out.push(b' ');
    }

    fn number(&mut self, mut n: u32) {
        let mut digits = [0u8; 10];
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in (0..len).rev() {
            self.out.push(digits[i]);
        }
    }

    /// Upper-cases the byte at `at` (a sentence's first letter).
    fn capitalise(&mut self, at: usize) {
        if let Some(b) = self.out.get_mut(at) {
            b.make_ascii_uppercase();
        }
    }

    fn pick_agent(&mut self, topic: &Topic) -> (&'static str, &'static str) {
        let i = if self.chance(3, 4) {
            topic.agents[self.below(topic.agents.len())]
        } else {
            self.skewed(AGENTS.len())
        };
        AGENTS[i]
    }

    fn pick_thing(&mut self, topic: &Topic) -> (&'static str, &'static str) {
        if self.chance(1, 5) {
            return self.pick_agent(topic);
        }
        let i = if self.chance(3, 4) {
            topic.things[self.below(topic.things.len())]
        } else {
            self.skewed(THINGS.len())
        };
        THINGS[i]
    }

    /// A determiner, optional adjective and noun, with "a"/"an" chosen by the next word's first
    /// letter and plural nouns after plural determiners. Returns the phrase's number.
    fn noun_phrase(&mut self, noun: (&'static str, &'static str)) -> Number {
        let adjective = if self.chance(2, 5) {
            Some(ADJECTIVES[self.skewed(ADJECTIVES.len())])
        } else {
            None
        };
        let number = if self.chance(1, 3) {
            Number::Plural
        } else {
            Number::Singular
        };
        let noun_word = match number {
            Number::Singular => noun.0,
            Number::Plural => noun.1,
        };
        let next = adjective.unwrap_or(noun_word);
        match number {
            Number::Singular => match self.below(5) {
                0 | 1 => self.word("the"),
                2 => {
                    self.word(if starts_with_vowel(next) { "an" } else { "a" });
                }
                3 => self.word("this"),
                _ => self.word("every"),
            },
            Number::Plural => match self.below(4) {
                0 | 1 => self.word("the"),
                2 => self.word("some"),
                _ => {
                    let n = 2 + self.below(NUMBER_WORDS.len() - 2);
                    self.word(NUMBER_WORDS[n]);
                }
            },
        }
        self.space();
        if let Some(a) = adjective {
            self.word(a);
            self.space();
        }
        self.word(noun_word);
        number
    }

    fn prepositional_phrase(&mut self, topic: &Topic) {
        let p = PREPOSITIONS[self.skewed(PREPOSITIONS.len())];
        self.word(p);
        self.space();
        let thing = self.pick_thing(topic);
        self.noun_phrase(thing);
    }

    /// A subject: a name (singular) or a noun phrase.
    fn subject(&mut self, topic: &Topic) -> Number {
        if self.chance(1, 4) {
            let name = NAMES[topic.names[self.below(topic.names.len())]];
            self.word(name);
            Number::Singular
        } else {
            let agent = self.pick_agent(topic);
            self.noun_phrase(agent)
        }
    }

    /// One clause: subject, verb agreeing with it (present) or past, object or adverb, maybe a
    /// place.
    fn clause(&mut self, topic: &Topic, past: bool) {
        let number = self.subject(topic);
        self.space();
        let transitive = self.chance(2, 3);
        let forms = if transitive {
            VERBS[self.skewed(VERBS.len())]
        } else {
            INTRANSITIVE[self.skewed(INTRANSITIVE.len())]
        };
        let verb = if past {
            forms.2
        } else if number == Number::Singular {
            forms.1
        } else {
            forms.0
        };
        self.word(verb);
        if transitive {
            self.space();
            let thing = self.pick_thing(topic);
            self.noun_phrase(thing);
        } else if self.chance(1, 2) {
            self.space();
            let adverb = ADVERBS[self.skewed(ADVERBS.len())];
            self.word(adverb);
        }
        if self.chance(1, 3) {
            self.space();
            self.prepositional_phrase(topic);
        }
    }

    /// A question and its answer, which repeats the question's words with the verb agreeing:
    /// "Does the cat see a key? Yes, the cat sees a key."
    fn question(&mut self, topic: &Topic) {
        let agent = self.pick_agent(topic);
        let plural = self.chance(1, 3);
        let verb = VERBS[self.skewed(VERBS.len())];
        let thing = self.pick_thing(topic);
        let object = if self.chance(1, 2) { thing.0 } else { thing.1 };
        let article = if object == thing.1 {
            "some "
        } else if starts_with_vowel(object) {
            "an "
        } else {
            "a "
        };
        let (aux, subject, answer_verb) = if plural {
            ("Do the ", agent.1, verb.0)
        } else {
            ("Does the ", agent.0, verb.1)
        };
        let yes = self.chance(2, 3);
        self.word(aux);
        self.word(subject);
        self.space();
        self.word(verb.0);
        self.space();
        self.word(article);
        self.word(object);
        self.word(if yes { "? Yes, the " } else { "? No, the " });
        self.word(subject);
        self.space();
        if yes {
            self.word(answer_verb);
        } else {
            self.word(if plural { "do not " } else { "does not " });
            self.word(verb.0);
        }
        self.space();
        self.word(article);
        self.word(object);
        self.word(".");
    }

    fn story_paragraph(&mut self) {
        let topic = Topic {
            agents: [
                self.below(AGENTS.len()),
                self.below(AGENTS.len()),
                self.below(AGENTS.len()),
            ],
            things: [
                self.below(THINGS.len()),
                self.below(THINGS.len()),
                self.below(THINGS.len()),
                self.below(THINGS.len()),
            ],
            names: [self.below(NAMES.len()), self.below(NAMES.len())],
        };
        let sentences = 3 + self.below(6);
        for s in 0..sentences {
            if s > 0 {
                self.space();
            }
            let start = self.out.len();
            match self.below(10) {
                0 | 1 => self.question(&topic),
                2 => {
                    self.word("yesterday ");
                    self.clause(&topic, true);
                    self.word(".");
                }
                3 | 4 => {
                    self.clause(&topic, false);
                    self.word(", ");
                    let c = CONJUNCTIONS[self.below(CONJUNCTIONS.len())];
                    self.word(c);
                    self.space();
                    self.clause(&topic, false);
                    self.word(".");
                }
                _ => {
                    self.clause(&topic, false);
                    self.word(".");
                }
            }
            self.capitalise(start);
        }
    }

    /// Correct arithmetic, counting and comparisons: "17 + 25 = 42." "count: 8, 9, 10, 11."
    fn math_paragraph(&mut self) {
        let lines = 4 + self.below(6);
        for _ in 0..lines {
            match self.below(7) {
                0 | 1 => {
                    let a = self.below(100) as u32;
                    let b = self.below(100) as u32;
                    self.number(a);
                    self.word(" + ");
                    self.number(b);
                    self.word(" = ");
                    self.number(a + b);
                }
                2 => {
                    let a = self.below(100) as u32;
                    let b = self.below(a as usize + 1) as u32;
                    self.number(a);
                    self.word(" - ");
                    self.number(b);
                    self.word(" = ");
                    self.number(a - b);
                }
                3 | 4 => {
                    let a = self.below(13) as u32;
                    let b = self.below(13) as u32;
                    self.number(a);
                    self.word(" * ");
                    self.number(b);
                    self.word(" = ");
                    self.number(a * b);
                }
                5 => {
                    let start = self.below(90) as u32;
                    let len = 4 + self.below(5) as u32;
                    self.word("count:");
                    for i in 0..len {
                        self.word(if i == 0 { " " } else { ", " });
                        self.number(start + i);
                    }
                }
                _ => {
                    let a = self.below(13);
                    let b = self.below(13);
                    self.word(NUMBER_WORDS[a]);
                    self.word(match a.cmp(&b) {
                        std::cmp::Ordering::Less => " is less than ",
                        std::cmp::Ordering::Equal => " is equal to ",
                        std::cmp::Ordering::Greater => " is more than ",
                    });
                    self.word(NUMBER_WORDS[b]);
                }
            }
            self.word(".\n");
        }
        // The paragraph break adds one more newline.
        self.out.pop();
    }

    /// A record: `key=value` lines, a sentence that uses the values, then some of the same
    /// lines again, so a model that copies from earlier in the paragraph predicts them.
    fn record_paragraph(&mut self) {
        let id = 1000 + self.below(9000) as u32;
        let name = NAMES[self.below(NAMES.len())];
        let city = CITIES[self.below(CITIES.len())];
        let color = COLORS[self.below(COLORS.len())];
        let food = FOODS[self.below(FOODS.len())];
        let age = 18 + self.below(60) as u32;
        let code = self.below(100_000) as u32;
        self.word("record ");
        self.number(id);
        self.word(":\n");
        let mut lines: [u8; 6] = [0, 1, 2, 3, 4, 5];
        let shown = 3 + self.below(4);
        self.kv_lines(&lines[..shown], name, city, color, food, age, code);
        self.word(name);
        self.word(" lives in ");
        self.word(city);
        self.word(" and likes ");
        self.word(food);
        self.word(".\n");
        // Repeat a shuffled subset of the lines shown (Fisher-Yates over the prefix).
        for i in (1..shown).rev() {
            let j = self.below(i + 1);
            lines.swap(i, j);
        }
        let again = 1 + self.below(shown);
        self.word("check ");
        self.number(id);
        self.word(":\n");
        self.kv_lines(&lines[..again], name, city, color, food, age, code);
        self.out.pop();
    }

    #[allow(clippy::too_many_arguments)]
    fn kv_lines(&mut self, which: &[u8], name: &str, city: &str, color: &str, food: &str, age: u32, code: u32) {
        for k in which {
            match k {
                0 => {
                    self.word("name=");
                    self.word(name);
                }
                1 => {
                    self.word("city=");
                    self.word(city);
                }
                2 => {
                    self.word("color=");
                    self.word(color);
                }
                3 => {
                    self.word("food=");
                    self.word(food);
                }
                4 => {
                    self.word("age=");
                    self.number(age);
                }
                _ => {
                    self.word("code=");
                    self.number(code);
                }
            }
            self.out.push(b'\n');
        }
    }
}

/// `bytes` bytes of ASCII text from `seed`: story paragraphs from a small stochastic grammar
/// (about three hundred words, subject/verb agreement, "a"/"an", number agreement, questions
/// answered by repeating them), paragraphs of correct arithmetic and counting, and records of
/// `key=value` lines repeated within the paragraph. Paragraphs end with a blank line.
///
/// The same seed gives the same bytes on every machine, and a shorter corpus is a prefix of a
/// longer one with the same seed.
pub fn generate_corpus(seed: u64, bytes: usize) -> Vec<u8> {
    let digest = Sha256::new()
        .chain_update(CORPUS_DOMAIN)
        .chain_update(seed.to_le_bytes())
        .finalize();
    let mut state = [0u8; 8];
    state.copy_from_slice(&digest[..8]);
    let mut w = Writer {
        rng: SplitMix64::new(u64::from_le_bytes(state)),
        out: Vec::with_capacity(bytes + 1024),
    };
    while w.out.len() < bytes {
        match w.below(4) {
            0 | 1 => w.story_paragraph(),
            2 => w.math_paragraph(),
            _ => w.record_paragraph(),
        }
        w.word("\n\n");
    }
    w.out.truncate(bytes);
    debug_assert!(w.out.is_ascii());
    w.out
}

/// The tokens of `bytes`: each byte is one token.
pub fn tokens(bytes: &[u8]) -> Vec<u16> {
    bytes.iter().map(|&b| u16::from(b)).collect()
}

// ---------------------------------------------------------------------------------------------
// Chunks, the Merkle tree and the dataset.

/// A chunk's name: `sha256("pazar/train/chunk/v1\0" ‖ bytes)`.
pub fn chunk_hash(bytes: &[u8]) -> Hash32 {
    Sha256::new()
        .chain_update(CHUNK_DOMAIN)
        .chain_update(bytes)
        .finalize()
        .into()
}

/// The chunks of a corpus: [`CHUNK_BYTES`] each, the last 1 to `CHUNK_BYTES`.
pub fn chunks(corpus: &[u8]) -> std::slice::Chunks<'_, u8> {
    corpus.chunks(CHUNK_BYTES)
}

/// The Merkle leaf of a chunk hash: `sha256("pazar/train/merkle/leaf\0" ‖ chunk_hash)`.
pub fn merkle_leaf(chunk_hash: &Hash32) -> Hash32 {
    Sha256::new()
        .chain_update(LEAF_DOMAIN)
        .chain_update(chunk_hash)
        .finalize()
        .into()
}

/// An inner Merkle node: `sha256("pazar/train/merkle/node\0" ‖ left ‖ right)`.
pub fn merkle_node(left: &Hash32, right: &Hash32) -> Hash32 {
    Sha256::new()
        .chain_update(NODE_DOMAIN)
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// The root of a tree of `count` leaves whose top node is `top`:
/// `sha256("pazar/train/merkle/root\0" ‖ count u32 LE ‖ top)`.
pub fn merkle_root(count: u32, top: &Hash32) -> Hash32 {
    Sha256::new()
        .chain_update(ROOT_DOMAIN)
        .chain_update(count.to_le_bytes())
        .chain_update(top)
        .finalize()
        .into()
}

/// The next level up: pairs hashed, an odd last node promoted unchanged.
fn merkle_level(level: &[Hash32]) -> Vec<Hash32> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [l, r] => merkle_node(l, r),
            [single] => *single,
            _ => unreachable!("chunks(2) yields one or two items"),
        })
        .collect()
}

/// Checks that `proof` leads from the chunk hash at `index` of a `count`-chunk dataset to
/// `root`. `chunk_hash` is the chunk's [`chunk_hash`] (the leaf's domain separation is applied
/// here); the proof holds one sibling per level where the node has one, bottom first.
pub fn verify_proof(root: &Hash32, index: u32, count: u32, chunk_hash: &Hash32, proof: &[Hash32]) -> bool {
    if count == 0 || index >= count || proof.len() > MAX_PROOF_LEN {
        return false;
    }
    let mut h = merkle_leaf(chunk_hash);
    let mut idx = index;
    let mut width = count;
    let mut siblings = proof.iter();
    while width > 1 {
        if idx % 2 == 1 {
            let Some(s) = siblings.next() else {
                return false;
            };
            h = merkle_node(s, &h);
        } else if idx + 1 < width {
            let Some(s) = siblings.next() else {
                return false;
            };
            h = merkle_node(&h, s);
        }
        idx /= 2;
        width = width.div_ceil(2);
    }
    siblings.next().is_none() && merkle_root(count, &h) == *root
}

/// A dataset: the hashes of its chunks in order and its size. Its identity on the ledger is
/// [`Dataset::root`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    chunk_hashes: Vec<Hash32>,
    total_bytes: u64,
}

impl Dataset {
    /// The dataset of a corpus held in memory.
    pub fn from_corpus(corpus: &[u8]) -> Result<Dataset, DataError> {
        if corpus.is_empty() {
            return Err(DataError::EmptyCorpus);
        }
        let count = corpus.len().div_ceil(CHUNK_BYTES);
        if u32::try_from(count).is_err() {
            return Err(DataError::TooManyChunks { count });
        }
        Ok(Dataset {
            chunk_hashes: chunks(corpus).map(chunk_hash).collect(),
            total_bytes: corpus.len() as u64,
        })
    }

    /// The dataset of the chunks `hashes`, read from `store` and checked: every chunk present,
    /// its bytes hashing to its name, every chunk but the last exactly [`CHUNK_BYTES`] long (so
    /// the dataset is the one [`Dataset::from_corpus`] gives for the chunks joined).
    pub fn from_store(store: &ChunkStore, hashes: &[Hash32]) -> Result<Dataset, DataError> {
        if hashes.is_empty() {
            return Err(DataError::EmptyCorpus);
        }
        if u32::try_from(hashes.len()).is_err() {
            return Err(DataError::TooManyChunks { count: hashes.len() });
        }
        let mut total_bytes = 0u64;
        for (index, h) in hashes.iter().enumerate() {
            let bytes = store.get(h)?;
            let last = index + 1 == hashes.len();
            if bytes.is_empty() || (!last && bytes.len() != CHUNK_BYTES) {
                return Err(DataError::ChunkSize {
                    chunk: hex(h),
                    index,
                    len: bytes.len(),
                });
            }
            total_bytes += bytes.len() as u64;
        }
        Ok(Dataset {
            chunk_hashes: hashes.to_vec(),
            total_bytes,
        })
    }

    /// The chunks' hashes, in order.
    pub fn chunk_hashes(&self) -> &[Hash32] {
        &self.chunk_hashes
    }

    /// Chunks in the dataset (at least one).
    pub fn count(&self) -> u32 {
        u32::try_from(self.chunk_hashes.len()).expect("a dataset's chunk count is checked to fit u32 when it is built")
    }

    /// Bytes (tokens) in the dataset.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Chunks `0..train_count()` are for training.
    pub fn train_count(&self) -> u32 {
        self.count() - eval_count(self.count())
    }

    /// The held-out chunks' indices: the last [`eval_count`].
    pub fn eval_range(&self) -> std::ops::Range<u32> {
        self.train_count()..self.count()
    }

    /// The Merkle root over the chunk hashes, committing to their count.
    pub fn root(&self) -> Hash32 {
        let mut level: Vec<Hash32> = self.chunk_hashes.iter().map(merkle_leaf).collect();
        while level.len() > 1 {
            level = merkle_level(&level);
        }
        merkle_root(self.count(), &level[0])
    }

    /// The proof that chunk `index` is in the dataset, for [`verify_proof`].
    pub fn proof(&self, index: u32) -> Result<Vec<Hash32>, DataError> {
        let count = self.count();
        if index >= count {
            return Err(DataError::ChunkIndex { index, count });
        }
        let mut level: Vec<Hash32> = self.chunk_hashes.iter().map(merkle_leaf).collect();
        let mut idx = index as usize;
        let mut proof = Vec::new();
        while level.len() > 1 {
            let sibling = idx ^ 1;
            if sibling < level.len() {
                proof.push(level[sibling]);
            }
            level = merkle_level(&level);
            idx /= 2;
        }
        debug_assert!(proof.len() <= MAX_PROOF_LEN);
        Ok(proof)
    }
}

/// Held-out chunks of a `count`-chunk dataset: `max(1, count / 20)`.
pub fn eval_count(count: u32) -> u32 {
    (count / 20).max(1)
}

// ---------------------------------------------------------------------------------------------
// The chunk store.

/// Lower-case hex of a hash: a chunk file's name.
pub fn hex(h: &Hash32) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in h {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Chunks on disk: one file per chunk in one directory, named by the hex of its hash. A path is
/// only ever built from a hash, never from a caller's string, and every read is re-hashed.
#[derive(Clone, Debug)]
pub struct ChunkStore {
    dir: PathBuf,
}

impl ChunkStore {
    /// The store in `dir`, created if missing.
    pub fn open(dir: &Path) -> Result<ChunkStore, DataError> {
        fs::create_dir_all(dir).map_err(|source| DataError::StoreDir {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(ChunkStore { dir: dir.to_path_buf() })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, h: &Hash32) -> PathBuf {
        self.dir.join(hex(h))
    }

    /// Stores one chunk (1 to [`CHUNK_BYTES`] bytes) and returns its hash. Written to a
    /// temporary file and renamed, so a crash never leaves a partial file under a chunk's name;
    /// an intact chunk already present is left as it is.
    pub fn put(&self, bytes: &[u8]) -> Result<Hash32, DataError> {
        let h = chunk_hash(bytes);
        if bytes.is_empty() || bytes.len() > CHUNK_BYTES {
            return Err(DataError::ChunkSize {
                chunk: hex(&h),
                index: 0,
                len: bytes.len(),
            });
        }
        let path = self.path(&h);
        // A file already there is kept only if it is intact; a corrupt one is replaced.
        if path.is_file() && self.get(&h).is_ok() {
            return Ok(h);
        }
        let io = |source| DataError::ChunkIo { chunk: hex(&h), source };
        // A temporary name of its own per call (process and counter), so two writers of the
        // same chunk never write into one file.
        static NEXT_TMP: AtomicU64 = AtomicU64::new(0);
        let unique = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!(".{}.tmp{}-{unique}", hex(&h), std::process::id()));
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io)?;
        Ok(h)
    }

    /// Stores every chunk of a corpus and returns its dataset.
    pub fn put_corpus(&self, corpus: &[u8]) -> Result<Dataset, DataError> {
        let dataset = Dataset::from_corpus(corpus)?;
        for c in chunks(corpus) {
            self.put(c)?;
        }
        Ok(dataset)
    }

    /// The chunk named `h`, re-hashed: a file whose bytes do not hash to its name is refused
    /// with [`DataError::CorruptChunk`], one larger than a chunk with
    /// [`DataError::ChunkSize`] (read no further than one byte past [`CHUNK_BYTES`]).
    pub fn get(&self, h: &Hash32) -> Result<Vec<u8>, DataError> {
        let f = match fs::File::open(self.path(h)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DataError::MissingChunk { chunk: hex(h) })
            }
            Err(source) => return Err(DataError::ChunkIo { chunk: hex(h), source }),
        };
        let mut bytes = Vec::with_capacity(CHUNK_BYTES);
        f.take(CHUNK_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| DataError::ChunkIo { chunk: hex(h), source })?;
        if bytes.len() > CHUNK_BYTES {
            return Err(DataError::ChunkSize {
                chunk: hex(h),
                index: 0,
                len: bytes.len(),
            });
        }
        let actual = chunk_hash(&bytes);
        if actual != *h {
            return Err(DataError::CorruptChunk {
                chunk: hex(h),
                actual: hex(&actual),
            });
        }
        Ok(bytes)
    }
}

// ---------------------------------------------------------------------------------------------
// Shards and batches.

/// The training chunks a worker trains on this round: `per_worker` distinct indices in
/// `0..train_chunks`, ascending, drawn by Floyd's algorithm from SHA-256 in counter mode over
/// `"pazar/train/shards/v1\0" ‖ seed_material ‖ len(worker) as u32 LE ‖ worker` (each draw
/// uniform by rejection, no modulo bias). The caller's seed material is a hash of (job, round,
/// previous checkpoint); `worker` is the worker's address bytes.
pub fn assign_shards(
    seed_material: &[u8; 32],
    worker: &[u8],
    train_chunks: u32,
    per_worker: u32,
) -> Result<Vec<u32>, DataError> {
    if train_chunks == 0 {
        return Err(DataError::NoTrainChunks);
    }
    if per_worker == 0 || per_worker > train_chunks || per_worker > MAX_SHARD_CHUNKS {
        return Err(DataError::ShardSize {
            per_worker,
            train_chunks,
        });
    }
    let worker_len = u32::try_from(worker.len())
        .expect("an address is far shorter than 4 GiB")
        .to_le_bytes();
    let mut stream = HashStream::new(&[SHARD_DOMAIN, seed_material, &worker_len, worker]);
    // Floyd: for j in n-k..n, draw t uniform in 0..=j; take t unless already taken, else j.
    // Exactly k draws, each subset of size k equally likely.
    let mut chosen = std::collections::BTreeSet::new();
    for j in (train_chunks - per_worker)..train_chunks {
        let t = stream.below(u64::from(j) + 1) as u32;
        if !chosen.insert(t) {
            chosen.insert(j);
        }
    }
    debug_assert_eq!(chosen.len(), per_worker as usize);
    Ok(chosen.into_iter().collect())
}

/// A batch of next-token examples: `batch` sequences of `seq_len` tokens, row-major, and the
/// token that follows each position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Sequences in the batch.
    pub batch: u32,
    /// Tokens per sequence.
    pub seq_len: u32,
    /// `batch × seq_len` input tokens, sequence after sequence.
    pub tokens: Vec<u16>,
    /// The token after each input position (the input shifted left by one).
    pub targets: Vec<u16>,
}

fn check_shape(batch: u32, seq_len: u32) -> Result<(), DataError> {
    if batch == 0 || seq_len == 0 || u64::from(batch) * u64::from(seq_len) > MAX_BATCH_TOKENS {
        return Err(DataError::BatchShape { batch, seq_len });
    }
    Ok(())
}

/// The training batch of step `step`: for each sequence `b`, SHA-256 in counter mode over
/// `"pazar/train/batch/v1\0" ‖ seed_material ‖ step u32 LE ‖ b u32 LE` picks a chunk uniformly
/// among the shard's chunks that hold at least `seq_len + 1` bytes (shorter ones are skipped)
/// and then an offset uniformly among those where `seq_len + 1` bytes fit. `chunks` are the
/// worker's shard bytes, in shard order.
pub fn sample_batch(
    chunks: &[&[u8]],
    seed_material: &[u8; 32],
    step: u32,
    batch: u32,
    seq_len: u32,
) -> Result<Batch, DataError> {
    check_shape(batch, seq_len)?;
    if chunks.is_empty() {
        return Err(DataError::EmptyShard);
    }
    let needed = seq_len as usize + 1;
    let usable: Vec<&[u8]> = chunks.iter().copied().filter(|c| c.len() >= needed).collect();
    if usable.is_empty() {
        return Err(DataError::NoUsableChunk {
            needed: needed as u64,
            longest: chunks.iter().map(|c| c.len()).max().unwrap_or(0),
        });
    }
    let positions = batch as usize * seq_len as usize;
    let mut tokens = Vec::with_capacity(positions);
    let mut targets = Vec::with_capacity(positions);
    for b in 0..batch {
        let mut stream = HashStream::new(&[BATCH_DOMAIN, seed_material, &step.to_le_bytes(), &b.to_le_bytes()]);
        let chunk = usable[stream.below(usable.len() as u64) as usize];
        let offset = stream.below((chunk.len() - needed + 1) as u64) as usize;
        let window = &chunk[offset..offset + needed];
        tokens.extend(window[..seq_len as usize].iter().map(|&t| u16::from(t)));
        targets.extend(window[1..].iter().map(|&t| u16::from(t)));
    }
    Ok(Batch {
        batch,
        seq_len,
        tokens,
        targets,
    })
}

/// Evaluation batches over the held-out chunks (in the order given): each chunk is cut into
/// non-overlapping windows of `seq_len + 1` bytes from its start (a chunk's tail too short for a
/// window is left out), the windows are taken in order and grouped `batch` at a time; the last
/// batch may hold fewer sequences. At most `max_batches` batches.
pub fn eval_batches(
    eval_chunks: &[&[u8]],
    batch: u32,
    seq_len: u32,
    max_batches: u32,
) -> Result<Vec<Batch>, DataError> {
    check_shape(batch, seq_len)?;
    if max_batches > MAX_EVAL_BATCHES {
        return Err(DataError::TooManyEvalBatches { asked: max_batches });
    }
    if eval_chunks.is_empty() {
        return Err(DataError::EmptyShard);
    }
    let seq = seq_len as usize;
    let mut windows = eval_chunks
        .iter()
        .flat_map(|c| c.chunks_exact(seq + 1))
        .take((max_batches as usize).saturating_mul(batch as usize))
        .peekable();
    if windows.peek().is_none() {
        return Err(DataError::NoUsableChunk {
            needed: seq as u64 + 1,
            longest: eval_chunks.iter().map(|c| c.len()).max().unwrap_or(0),
        });
    }
    let mut out = Vec::new();
    let mut current = Batch {
        batch: 0,
        seq_len,
        tokens: Vec::new(),
        targets: Vec::new(),
    };
    for w in windows {
        current.tokens.extend(w[..seq].iter().map(|&t| u16::from(t)));
        current.targets.extend(w[1..].iter().map(|&t| u16::from(t)));
        current.batch += 1;
        if current.batch == batch {
            out.push(std::mem::replace(
                &mut current,
                Batch {
                    batch: 0,
                    seq_len,
                    tokens: Vec::new(),
                    targets: Vec::new(),
                },
            ));
        }
    }
    if current.batch > 0 {
        out.push(current);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // The published SplitMix64 outputs for seed 1234567.
        let mut r = SplitMix64::new(1_234_567);
        let expect = [
            6_457_827_717_110_365_317u64,
            3_203_168_211_198_807_973,
            9_817_491_932_198_370_423,
            4_593_380_528_125_082_431,
            16_408_922_859_458_223_821,
        ];
        for e in expect {
            assert_eq!(r.next_u64(), e);
        }
    }

    #[test]
    fn uniform_below_rejects_the_biased_tail() {
        // n = 3: 2^64 mod 3 = 1, so a draw of 0 is rejected and the next one used.
        let mut draws = [0u64, 7].into_iter();
        assert_eq!(uniform_below(3, || draws.next().expect("two draws")), 1);
        // A power of two has no biased tail: 0 is accepted.
        let mut draws = [0u64].into_iter();
        assert_eq!(uniform_below(4, || draws.next().expect("one draw")), 0);
    }

    #[test]
    fn below_stays_in_range_and_hits_every_value() {
        let mut r = SplitMix64::new(9);
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            let x = r.below(7) as usize;
            seen[x] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
    }

    #[test]
    fn number_writes_decimal_digits() {
        let mut w = Writer {
            rng: SplitMix64::new(0),
            out: Vec::new(),
        };
        for n in [0u32, 7, 10, 42, 1009, u32::MAX] {
            w.out.clear();
            w.number(n);
            assert_eq!(w.out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn a_level_promotes_its_odd_node_unchanged() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let c = [3u8; 32];
        assert_eq!(merkle_level(&[a, b, c]), vec![merkle_node(&a, &b), c]);
    }
}
