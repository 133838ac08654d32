//! The append-only observed log and its indexes. A data structure; its one way out is a
//! [`RecordStore`] to read evicted payloads back (Kafka), when one is given.
//!
//! Every appended record gets a global, dense [`LogIndex`] (0, 1, 2, …). Rows are compact:
//! strings (topic, type, source, ids, header names) are interned as 4-byte [`Sym`]s, the raw
//! key/headers/value are packed into a chunked byte arena, and the payload is parsed only on
//! demand ([`ObservedLog::event`], [`ObservedLog::payload`]). Undecodable records are kept as
//! poison rows with their raw bytes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};

use hashbrown::HashTable;
use serde::Serialize;
use smallvec::SmallVec;
use xxhash_rust::xxh3::xxh3_64;

use super::envelope::{
    decode, decode_envelope, DecodeConfig, EnvelopeFormat, ObservedEvent, VersionKind,
};
use super::record::Record;
use super::store::{OffsetRange, RecordStore, RecordStoreHandle};

/// Position of a record in the observed log (arrival order, dense from 0).
pub type LogIndex = u32;

/// A list of log indices; most lists are short, so up to four live inline.
pub type IndexList = SmallVec<[LogIndex; 4]>;

/// An interned string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(NonZeroU32);

impl Sym {
    fn slot(self) -> usize {
        (self.0.get() - 1) as usize
    }
}

/// A small, fast hasher for integer keys (FxHash). Not DoS-resistant; keys are our own symbols.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_i32(&mut self, i: i32) {
        self.add(u64::from(i as u32));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_i64(&mut self, i: i64) {
        self.add(i as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

impl FxHasher {
    #[inline]
    fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(FX_SEED);
    }
}

/// `HashMap` with [`FxHasher`], for keys made of [`Sym`]s and integers.
pub type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Heap bytes of an [`FxMap`] (its entries, inline), from its capacity: O(1).
pub fn fx_map_bytes<K, V>(m: &FxMap<K, V>) -> usize {
    m.capacity() * (std::mem::size_of::<(K, V)>() + 1)
}
/// `HashSet` with [`FxHasher`].
pub type FxSet<K> = HashSet<K, BuildHasherDefault<FxHasher>>;

/// Bits of a slot's packed span that hold the string's length; the rest hold its start.
const LEN_BITS: u32 = 24;
const LEN_MASK: u64 = (1 << LEN_BITS) - 1;

/// String interner: one arena plus a hash table of symbol numbers.
///
/// Strings can be forgotten ([`Interner::forget`]): an id that only dropped records carried
/// (see [`ObservedLog::shed`]). A forgotten symbol resolves to `""` and its string is no
/// longer found; its bytes are given back when the arena is compacted (once half of it is
/// forgotten), and its slot is reused by a later string, but only after the next round of
/// forgetting has begun ([`Interner::reuse_forgotten`]): whoever keeps symbols drops the
/// forgotten ones at each round ([`ObservedLog::forget_epoch`]), so a symbol never names
/// another string while someone still holds it. Names (topics, types, header names) are
/// pinned and never forgotten.
#[derive(Default)]
pub struct Interner {
    arena: String,
    /// Per slot: start in the arena << [`LEN_BITS`] | length.
    spans: Vec<u64>,
    /// Each slot with the high half of its string's hash (its tag): a lookup compares
    /// strings only where the tags agree, and growing the table re-hashes tags, not
    /// strings (it read every string back from the arena, a cache miss each).
    table: HashTable<(u32, Sym)>,
    /// Seeded per process (the strings come from anybody's topics), and several times
    /// faster than SipHash on short strings: foldhash's quality variant.
    hasher: foldhash::quality::RandomState,
    /// One bit per slot: a name, never forgotten.
    pinned: Vec<u64>,
    /// One bit per slot: forgotten (and not reused since).
    dead: Vec<u64>,
    /// Slots forgotten in the current round: free from the next round on.
    cooling: Vec<Sym>,
    /// Slots a new string may take.
    free: Vec<Sym>,
    /// Arena bytes no live slot uses.
    dead_bytes: usize,
}

fn bit(bits: &[u64], slot: usize) -> bool {
    bits.get(slot / 64)
        .is_some_and(|w| w & (1 << (slot % 64)) != 0)
}

fn set_bit(bits: &mut Vec<u64>, slot: usize, on: bool) {
    let w = slot / 64;
    if w >= bits.len() {
        if !on {
            return;
        }
        bits.resize(w + 1, 0);
    }
    if let Some(word) = bits.get_mut(w) {
        if on {
            *word |= 1 << (slot % 64);
        } else {
            *word &= !(1 << (slot % 64));
        }
    }
}

/// The table's hash of a tag: its bits spread over both halves (hashbrown takes the bucket
/// from the low bits and its control byte from the top seven).
fn spread(tag: u32) -> u64 {
    u64::from(tag) << 32 | u64::from(tag)
}

impl Interner {
    /// The tag of `s` (see [`Interner::table`]).
    fn tag(&self, s: &str) -> u32 {
        (self.hasher.hash_one(s) >> 32) as u32
    }

    fn str_at<'a>(arena: &'a str, spans: &[u64], sym: Sym) -> &'a str {
        let span = spans.get(sym.slot()).copied().unwrap_or(0);
        let start = (span >> LEN_BITS) as usize;
        let len = (span & LEN_MASK) as usize;
        arena.get(start..start + len).unwrap_or("")
    }

    /// Intern `s`. `None` only if the interner is full (4 billion strings) or `s` is longer
    /// than 16 MiB.
    pub fn intern(&mut self, s: &str) -> Option<Sym> {
        let tag = self.tag(s);
        let Interner {
            arena,
            spans,
            table,
            ..
        } = self;
        if let Some((_, sym)) = table.find(spread(tag), |&(t, sym)| {
            t == tag && Self::str_at(arena, spans, sym) == s
        }) {
            return Some(*sym);
        }
        if s.len() as u64 > LEN_MASK || (arena.len() as u64) >> (64 - LEN_BITS) != 0 {
            return None;
        }
        let span = (arena.len() as u64) << LEN_BITS | s.len() as u64;
        let sym = match self.free.pop() {
            Some(sym) => {
                set_bit(&mut self.dead, sym.slot(), false);
                *spans.get_mut(sym.slot())? = span;
                sym
            }
            None => {
                let n = u32::try_from(spans.len() + 1).ok()?;
                spans.push(span);
                Sym(NonZeroU32::new(n)?)
            }
        };
        arena.push_str(s);
        table.insert_unique(spread(tag), (tag, sym), |&(t, _)| spread(t));
        Some(sym)
    }

    /// Intern a name (a topic, a type, a header name, an error): never forgotten.
    pub fn intern_pinned(&mut self, s: &str) -> Option<Sym> {
        let sym = self.intern(s)?;
        if !bit(&self.pinned, sym.slot()) {
            set_bit(&mut self.pinned, sym.slot(), true);
        }
        Some(sym)
    }

    /// The symbol of `s`, if it was interned (and not forgotten).
    pub fn get(&self, s: &str) -> Option<Sym> {
        let tag = self.tag(s);
        self.table
            .find(spread(tag), |&(t, sym)| {
                t == tag && Self::str_at(&self.arena, &self.spans, sym) == s
            })
            .map(|&(_, sym)| sym)
    }

    /// The string of a symbol (empty for a forgotten one, or one from another interner).
    pub fn resolve(&self, sym: Sym) -> &str {
        Self::str_at(&self.arena, &self.spans, sym)
    }

    /// Whether `sym` names a string of this interner (not forgotten).
    pub fn is_live(&self, sym: Sym) -> bool {
        sym.slot() < self.spans.len() && !bit(&self.dead, sym.slot())
    }

    fn is_pinned(&self, sym: Sym) -> bool {
        bit(&self.pinned, sym.slot())
    }

    /// Forget `sym`'s string: it resolves to `""` from now on and is no longer found. A pinned
    /// or already forgotten symbol stays as it is (false).
    pub fn forget(&mut self, sym: Sym) -> bool {
        if !self.is_live(sym) || self.is_pinned(sym) {
            return false;
        }
        let s = self.resolve(sym);
        let (tag, len) = (self.tag(s), s.len());
        if let Ok(entry) = self.table.find_entry(spread(tag), |&(_, x)| x == sym) {
            entry.remove();
        }
        if let Some(span) = self.spans.get_mut(sym.slot()) {
            *span = 0;
        }
        set_bit(&mut self.dead, sym.slot(), true);
        self.dead_bytes += len;
        self.cooling.push(sym);
        true
    }

    /// A new round of forgetting begins: the slots forgotten in the last round may take new
    /// strings from now on (their holders have dropped them since).
    pub fn reuse_forgotten(&mut self) {
        self.free.append(&mut self.cooling);
    }

    /// Give back the bytes of forgotten strings once they are half the arena: the live ones
    /// are copied into a new arena (symbols stay as they are). O(arena), so O(1) amortised.
    pub fn compact(&mut self) {
        if self.dead_bytes < 4096 || self.dead_bytes * 2 < self.arena.len() {
            return;
        }
        let mut arena = String::with_capacity(self.arena.len() - self.dead_bytes);
        for span in &mut self.spans {
            let start = (*span >> LEN_BITS) as usize;
            let len = (*span & LEN_MASK) as usize;
            let s = self.arena.get(start..start + len).unwrap_or("");
            *span = (arena.len() as u64) << LEN_BITS | len as u64;
            arena.push_str(s);
        }
        self.arena = arena;
        self.dead_bytes = 0;
    }

    /// Slots (live, forgotten and reused alike).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Heap bytes held (arena, spans, table, bits, free slots), from capacities: O(1).
    fn bytes_used(&self) -> usize {
        self.arena.capacity()
            + self.spans.capacity() * 8
            + self.table.capacity() * 9
            + (self.pinned.capacity() + self.dead.capacity()) * 8
            + (self.free.capacity() + self.cooling.capacity()) * 4
    }
}

/// Where a blob lives in the [`ByteArena`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    chunk: u32,
    start: u32,
    len: u32,
}

/// Append-only byte storage in fixed-size chunks (no big reallocations, no per-row
/// allocation). A chunk that is full is sealed: compressed with zstd (on a thread of its
/// own, off the ingest path) and its raw bytes dropped; reading a sealed chunk decompresses
/// it into a small cache of recent chunks. Records are JSON and headers repeat, so a sealed
/// chunk takes a fifth to a third of its raw size, and the log holds every record byte for
/// byte in that much less memory.
///
/// Under a memory limit the oldest chunks are dropped whole: each chunk counts the rows whose
/// bytes live in it, and a chunk no held row uses any more gives its memory back.
#[derive(Default)]
struct ByteArena {
    chunks: Vec<Chunk>,
    /// Rows held whose bytes live in each chunk (same positions as `chunks`).
    refs: Vec<u32>,
    /// Bytes of `chunks` (raw capacity of open and sealing chunks, compressed size of sealed
    /// ones), kept as they change: reading it is O(1).
    held: usize,
    /// Bytes of the decompressed chunks in `cache`.
    cached: AtomicUsize,
    /// The chunk currently being filled.
    current: Option<usize>,
    /// Sealed chunks read lately, decompressed (most recent last).
    cache: std::sync::Mutex<Vec<(usize, std::sync::Arc<Vec<u8>>)>>,
    /// The compressing thread, started with the first full chunk.
    sealer: Option<Sealer>,
    /// How many decompressed chunks the cache keeps (0: [`CACHED_CHUNKS`]).
    cache_cap: usize,
    /// Per chunk (same positions as `chunks`): the first and last log index of the rows whose
    /// bytes live in it (other chunks' rows may lie between).
    rows_of: Vec<(LogIndex, LogIndex)>,
    /// Per chunk (same positions as `chunks`): the record store its records are read back
    /// from (an index into [`ObservedLog`]'s stores; a chunk's records all share one).
    epochs: Vec<u16>,
    /// Chunks before this one are evicted or dropped: eviction goes oldest first.
    evict_from: usize,
    /// Held rows whose bytes are only in the record store (their chunk is `InStore`).
    in_store_rows: u64,
    /// Chunks whose read-back failed lately, and why: not asked again for [`RETRY_AFTER`].
    failed: std::sync::Mutex<HashMap<usize, (std::time::Instant, String)>>,
}

enum Chunk {
    Open(Vec<u8>),
    /// Full, being compressed; read as it is meanwhile.
    Sealing(std::sync::Arc<Vec<u8>>),
    Sealed {
        zst: Box<[u8]>,
        len: usize,
        /// xxh3 of the raw bytes: a chunk read back from the record store must match it.
        sum: u64,
    },
    /// Evicted under the memory limit: its rows are held, their bytes are read back from the
    /// record store (into the cache) when needed.
    InStore {
        len: usize,
        sum: u64,
    },
    /// Given back under the memory limit: no held row points here.
    Dropped,
}

impl Chunk {
    fn bytes(&self) -> usize {
        match self {
            Chunk::Open(raw) => raw.capacity(),
            Chunk::Sealing(raw) => raw.capacity(),
            Chunk::Sealed { zst, .. } => zst.len(),
            Chunk::InStore { .. } | Chunk::Dropped => 0,
        }
    }
}

/// A chunk the compressing thread is done with: its position, and its compressed bytes with
/// the raw bytes' checksum (`None`: zstd could not shrink it).
type Sealed = (usize, Option<(Vec<u8>, u64)>);

/// A thread that compresses full chunks: chunks go out, compressed bytes come back.
struct Sealer {
    out: std::sync::mpsc::Sender<(usize, std::sync::Arc<Vec<u8>>)>,
    back: std::sync::mpsc::Receiver<Sealed>,
    in_flight: usize,
}

impl Sealer {
    fn start() -> Option<Sealer> {
        let (out, work) = std::sync::mpsc::channel::<(usize, std::sync::Arc<Vec<u8>>)>();
        let (done, back) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("log-zstd".into())
            .spawn(move || {
                // One context for every chunk: creating one per 64 KiB chunk (its tables
                // allocated and cleared) took about a tenth of the compressing thread.
                let mut zstd = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
                for (i, raw) in work {
                    let zst = match zstd.as_mut() {
                        Some(c) => c.compress(&raw),
                        None => zstd::bulk::compress(&raw, ZSTD_LEVEL),
                    }
                    .ok()
                    .filter(|z| z.len() < raw.len())
                    .map(|z| (z, xxh3_64(&raw)));
                    if done.send((i, zst)).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        Some(Sealer {
            out,
            back,
            in_flight: 0,
        })
    }
}

/// Raw bytes per chunk: small enough that reading one record decompresses little (tens of
/// µs: an aggregate's events lie scattered over many chunks, and time travel reads a
/// tail of them), large enough that zstd finds the repeats.
const CHUNK: usize = 64 << 10;
/// zstd level of sealed chunks: fast to write (ingest pays it), about 4x on JSON records.
const ZSTD_LEVEL: i32 = 1;
/// Decompressed chunks kept for reading (16 MiB): a warm time-travel tail or a screen of
/// table rows stays in it.
const CACHED_CHUNKS: usize = 256;
/// A chunk the record store could not give back is not asked for again before this.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(10);
/// The key of [`ByteArena::failed`] that says the record store could not be read at all.
const STORE_DOWN: usize = usize::MAX;
/// Evicted chunks read back together: the one asked for and those right after it.
const READ_AHEAD: u32 = 16;

impl ByteArena {
    fn push(&mut self, bytes: &[u8], idx: LogIndex, epoch: u16) -> Option<Span> {
        let len = u32::try_from(bytes.len()).ok()?;
        if bytes.len() > CHUNK / 4 {
            let chunk = u32::try_from(self.chunks.len()).ok()?;
            let raw = bytes.to_vec();
            self.held += raw.capacity();
            self.chunks.push(Chunk::Open(raw));
            self.refs.push(1);
            self.rows_of.push((idx, idx));
            self.epochs.push(epoch);
            self.seal(chunk as usize);
            return Some(Span {
                chunk,
                start: 0,
                len,
            });
        }
        let fits = match self
            .current
            .and_then(|c| Some((self.chunks.get(c)?, self.epochs.get(c)?)))
        {
            Some((Chunk::Open(c), &e)) => c.capacity() - c.len() >= bytes.len() && e == epoch,
            _ => false,
        };
        if !fits {
            if let Some(full) = self.current {
                self.seal(full);
            }
            let raw = Vec::with_capacity(CHUNK);
            self.held += raw.capacity();
            self.chunks.push(Chunk::Open(raw));
            self.refs.push(0);
            self.rows_of.push((idx, idx));
            self.epochs.push(epoch);
            self.current = Some(self.chunks.len() - 1);
        }
        let c = self.current?;
        let Some(Chunk::Open(chunk)) = self.chunks.get_mut(c) else {
            return None;
        };
        let start = u32::try_from(chunk.len()).ok()?;
        chunk.extend_from_slice(bytes);
        if let Some(r) = self.refs.get_mut(c) {
            *r += 1;
        }
        if let Some(r) = self.rows_of.get_mut(c) {
            r.1 = idx;
        }
        Some(Span {
            chunk: u32::try_from(c).ok()?,
            start,
            len,
        })
    }

    /// Hand chunk `i` to the compressing thread (or, without one, compress it here); a
    /// chunk zstd cannot shrink stays as it is. Takes in what the thread has finished.
    fn seal(&mut self, i: usize) {
        self.take_sealed(false);
        let Some(slot) = self.chunks.get_mut(i) else {
            return;
        };
        let Chunk::Open(raw) = std::mem::replace(slot, Chunk::Open(Vec::new())) else {
            return;
        };
        if self.sealer.is_none() {
            self.sealer = Sealer::start();
        }
        let raw = std::sync::Arc::new(raw);
        match &mut self.sealer {
            Some(s) if s.out.send((i, raw.clone())).is_ok() => {
                s.in_flight += 1;
                *slot = Chunk::Sealing(raw);
            }
            _ => {
                let zst = zstd::bulk::compress(&raw, ZSTD_LEVEL)
                    .ok()
                    .filter(|z| z.len() < raw.len());
                *slot = match zst {
                    Some(z) => {
                        self.held = self.held.saturating_sub(raw.capacity()) + z.len();
                        Chunk::Sealed {
                            zst: z.into_boxed_slice(),
                            len: raw.len(),
                            sum: xxh3_64(&raw),
                        }
                    }
                    None => Chunk::Open(std::sync::Arc::unwrap_or_clone(raw)),
                };
            }
        }
    }

    /// Put the chunks the thread has compressed in place of their raw bytes; with `wait`,
    /// every chunk handed over.
    fn take_sealed(&mut self, wait: bool) {
        let Some(s) = &mut self.sealer else { return };
        while s.in_flight > 0 {
            let got = if wait {
                s.back.recv().ok()
            } else {
                s.back.try_recv().ok()
            };
            let Some((i, zst)) = got else { break };
            s.in_flight -= 1;
            let Some(slot) = self.chunks.get_mut(i) else {
                continue;
            };
            if let (Some((z, sum)), Chunk::Sealing(raw)) = (zst, &*slot) {
                let len = raw.len();
                self.held = self.held.saturating_sub(raw.capacity()) + z.len();
                *slot = Chunk::Sealed {
                    zst: z.into_boxed_slice(),
                    len,
                    sum,
                };
            }
        }
    }

    /// Run `f` on the bytes of `s`.
    fn read<R>(&self, s: Span, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let i = s.chunk as usize;
        let range = s.start as usize..s.start as usize + s.len as usize;
        match self.chunks.get(i)? {
            Chunk::Open(raw) => raw.get(range).map(f),
            Chunk::Sealing(raw) => raw.get(range).map(f),
            Chunk::Sealed { zst, len, .. } => {
                let raw = self.unsealed(i, zst, *len)?;
                raw.get(range).map(f)
            }
            Chunk::InStore { .. } => self.cached(i)?.get(range).map(f),
            Chunk::Dropped => None,
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Vec<(usize, std::sync::Arc<Vec<u8>>)>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Chunk `i`'s raw bytes if the cache has them (marked as just used).
    fn cached(&self, i: usize) -> Option<std::sync::Arc<Vec<u8>>> {
        let mut cache = self.lock_cache();
        let pos = cache.iter().position(|(c, _)| *c == i)?;
        let hit = cache.remove(pos);
        let raw = hit.1.clone();
        cache.push(hit);
        Some(raw)
    }

    /// Put chunk `i`'s raw bytes in the cache, the least recently used out if it is full.
    fn cache_put(&self, i: usize, raw: std::sync::Arc<Vec<u8>>) {
        let mut cache = self.lock_cache();
        let cap = if self.cache_cap == 0 {
            CACHED_CHUNKS
        } else {
            self.cache_cap
        };
        while cache.len() >= cap {
            let (_, old) = cache.remove(0);
            self.cached.fetch_sub(old.capacity(), Ordering::Relaxed);
        }
        self.cached.fetch_add(raw.capacity(), Ordering::Relaxed);
        cache.push((i, raw));
    }

    /// Evict the oldest chunk that still holds bytes (not the one being filled): its rows
    /// stay, their bytes are read back from the record store. Returns the bytes freed; `None`
    /// when there is nothing left to evict.
    /// The epoch (record store) of chunk `chunk`'s records.
    fn epoch_of(&self, chunk: usize) -> u16 {
        self.epochs.get(chunk).copied().unwrap_or(0)
    }

    /// Only a chunk whose record store `stored` says exists is evicted: at an older one
    /// without, eviction stops (its records are dropped first).
    fn evict_oldest(&mut self, stored: impl Fn(u16) -> bool) -> Option<usize> {
        while self.evict_from < self.chunks.len() && self.current != Some(self.evict_from) {
            let i = self.evict_from;
            let unevicted = !matches!(
                self.chunks.get(i),
                Some(Chunk::InStore { .. } | Chunk::Dropped)
            );
            if unevicted && !stored(self.epoch_of(i)) {
                return None;
            }
            self.evict_from += 1;
            let slot = self.chunks.get_mut(i)?;
            let (len, sum) = match &*slot {
                Chunk::Sealed { len, sum, .. } => (*len, *sum),
                Chunk::Open(raw) => (raw.len(), xxh3_64(raw)),
                Chunk::Sealing(raw) => (raw.len(), xxh3_64(raw)),
                Chunk::InStore { .. } | Chunk::Dropped => continue,
            };
            let freed = slot.bytes();
            *slot = Chunk::InStore { len, sum };
            self.held = self.held.saturating_sub(freed);
            self.in_store_rows += u64::from(self.refs.get(i).copied().unwrap_or(0));
            return Some(freed);
        }
        None
    }

    /// The raw bytes of sealed chunk `i`, from the cache or decompressed into it.
    fn unsealed(&self, i: usize, zst: &[u8], len: usize) -> Option<std::sync::Arc<Vec<u8>>> {
        if let Some(raw) = self.cached(i) {
            return Some(raw);
        }
        let raw = std::sync::Arc::new(zstd::bulk::decompress(zst, len).ok()?);
        self.cache_put(i, raw.clone());
        Some(raw)
    }

    /// Bytes held: chunks and the cache of decompressed ones. O(1).
    fn bytes_used(&self) -> usize {
        self.held + self.cached.load(Ordering::Relaxed)
    }

    /// A row whose bytes live in `chunk` was dropped. When no held row uses the chunk any more
    /// (and it is not the one being filled), its memory is given back; returns the bytes freed.
    fn release(&mut self, chunk: u32) -> Option<usize> {
        let i = chunk as usize;
        if matches!(self.chunks.get(i), Some(Chunk::InStore { .. })) {
            self.in_store_rows = self.in_store_rows.saturating_sub(1);
        }
        let r = self.refs.get_mut(i)?;
        *r = r.saturating_sub(1);
        if *r > 0 || self.current == Some(i) {
            return None;
        }
        let slot = self.chunks.get_mut(i)?;
        let freed = slot.bytes();
        *slot = Chunk::Dropped;
        self.held = self.held.saturating_sub(freed);
        let mut cache = self.lock_cache();
        if let Some(pos) = cache.iter().position(|(c, _)| *c == i) {
            let (_, raw) = cache.remove(pos);
            self.cached.fetch_sub(raw.capacity(), Ordering::Relaxed);
        }
        Some(freed)
    }
}

/// Decoded envelope facts of a row, as symbols. `None` = the envelope did not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventMeta {
    pub event_id: Sym,
    pub event_type: Option<Sym>,
    pub source: Option<Sym>,
    pub aggregate_id: Option<Sym>,
    pub correlation_id: Option<Sym>,
    pub causation_id: Option<Sym>,
    pub trace_id: Option<Sym>,
    order: i64,
    order_kind: u8,
    format: u8,
    /// First time this event id was observed (later deliveries are redeliveries).
    pub first_delivery: bool,
    /// The record sits on a command topic.
    pub is_command: bool,
    /// The record sits on a dead-letter topic: a consumer's copy of a record it
    /// could not handle, not a delivery of the event (see [`is_dead_letter_topic`]).
    pub dead_letter: bool,
    /// The payload's structural fingerprint from the decoder ([`ObservedEvent::shape`]);
    /// 0 when it took none.
    pub shape: u64,
}

/// A dead-letter topic: consumers forward there what they could not handle
/// (`dlq`, `*.dlq`, `*-dlt` as Spring names them, `*dead-letter*`, …).
pub fn is_dead_letter_topic(topic: &str) -> bool {
    let t = topic.to_ascii_lowercase();
    t == "dlq"
        || t == "dlt"
        || [".dlq", "-dlq", "_dlq", ".dlt", "-dlt", "_dlt"]
            .iter()
            .any(|s| t.ends_with(s))
        || ["dead-letter", "deadletter", "dead_letter"]
            .iter()
            .any(|s| t.contains(s))
}

impl EventMeta {
    /// The aggregate version, else the sequence.
    pub fn order_key(&self) -> Option<(VersionKind, i64)> {
        match self.order_kind {
            1 => Some((VersionKind::AggregateVersion, self.order)),
            2 => Some((VersionKind::Sequence, self.order)),
            _ => None,
        }
    }

    pub fn format(&self) -> Option<EnvelopeFormat> {
        EnvelopeFormat::from_u8(self.format)
    }

    /// The ids it carries (event, aggregate, correlation, causation, trace), the ones the
    /// memory limit may forget once only dropped records carried them.
    pub fn ids(&self) -> impl Iterator<Item = Sym> {
        [
            Some(self.event_id),
            self.aggregate_id,
            self.correlation_id,
            self.causation_id,
            self.trace_id,
        ]
        .into_iter()
        .flatten()
    }
}

/// What a queued id holds while it is remembered exactly: its string, its slot and table
/// entry in the interner, its queue entry and its place in the set of dropped event ids.
fn queued_cost(len: usize) -> u32 {
    u32::try_from(len + 32).unwrap_or(u32::MAX)
}

/// Ids forgotten under the memory limit, remembered approximately: their hashes in two Bloom
/// filters (about 1 % false positives), the newer one filled up to its capacity, then the
/// older one dropped. A lint asks it before it judges an id it does not know (a causation id
/// that points nowhere, an aggregate whose first version is not the expected one): an id
/// that was forgotten is not a missing one. Each filter takes a 64th of the memory limit, so
/// the ids forgotten last (some 800 000 per 64 MiB of limit) are known.
#[derive(Clone, Default)]
struct Forgotten {
    /// The newer filter first.
    filters: [Option<fastbloom::BloomFilter>; 2],
    in_newer: usize,
    count: u64,
}

impl Forgotten {
    fn add(&mut self, hash: u64, limit: usize) {
        let bits = (limit / 64).max(64 << 10) * 8;
        let capacity = bits / 10;
        if self.in_newer >= capacity {
            self.filters[1] = self.filters[0].take();
            self.in_newer = 0;
        }
        let newer = self.filters[0].get_or_insert_with(|| {
            fastbloom::BloomFilter::with_num_bits(bits).expected_items(capacity)
        });
        newer.insert_hash(hash);
        self.in_newer += 1;
        self.count += 1;
    }

    fn maybe(&self, hash: u64) -> bool {
        self.filters.iter().flatten().any(|f| f.contains_hash(hash))
    }

    fn bytes(&self) -> usize {
        self.filters
            .iter()
            .flatten()
            .map(|f| f.num_bits() / 8)
            .sum()
    }
}

/// What a row holds once decoding was attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    Event(EventMeta),
    /// Undecodable; `error` is the interned [`super::envelope::DecodeError`] message.
    Poison {
        error: Sym,
    },
}

/// One observed record, compact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub topic: Sym,
    pub partition: i32,
    pub offset: i64,
    timestamp_ms: i64,
    /// Time used to place the row on the time axis: broker timestamp, else event time,
    /// else the observer's `now_ms` at append.
    pub time_ms: i64,
    blob: Span,
    pub kind: RowKind,
}

const NO_TS: i64 = i64::MIN;
const NONE_LEN: u32 = u32::MAX;

impl Row {
    pub fn timestamp_ms(&self) -> Option<i64> {
        (self.timestamp_ms != NO_TS).then_some(self.timestamp_ms)
    }
    pub fn meta(&self) -> Option<&EventMeta> {
        match &self.kind {
            RowKind::Event(m) => Some(m),
            RowKind::Poison { .. } => None,
        }
    }
    pub fn is_poison(&self) -> bool {
        matches!(self.kind, RowKind::Poison { .. })
    }
}

/// Counters for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LogStats {
    /// Records appended (events + poison).
    pub observed: u64,
    /// Distinct event ids.
    pub unique: u64,
    /// Decoded records whose event id had been seen before.
    pub duplicate_deliveries: u64,
    /// Undecodable records.
    pub poison: u64,
}

/// Appending failed; the log is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("the observed log is full ({0} records)")]
    Full(usize),
    #[error("record of {0} bytes is too large to store")]
    TooLarge(usize),
    /// Reading the log again: a held record's bytes could not be read back (its indices
    /// would shift if it were left out).
    #[error("record {0} cannot be read again: {1}")]
    Unreadable(LogIndex, String),
}

/// What the memory limit has dropped so far (the oldest records first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DropStats {
    /// The limit in bytes (`None`: no limit).
    pub limit_bytes: Option<u64>,
    /// Records dropped: log indices `0..dropped_records` are gone.
    pub dropped_records: u64,
    /// Their stored bytes (key, headers and value as packed).
    pub dropped_bytes: u64,
    /// Records still held.
    pub held_records: u64,
    /// Bytes the limit cannot drop, counted against it: interned strings and the ids known
    /// only from dropped records (until they are forgotten, see `forgotten_ids`).
    #[serde(default)]
    pub undroppable_bytes: u64,
    /// Held records whose bytes were evicted to the record store (Kafka): their rows and
    /// indexes stay, their bytes are fetched from the broker when inspected or folded.
    #[serde(default)]
    pub payloads_in_store: u64,
    /// Ids that only dropped records carried, forgotten once they held more than an eighth
    /// of the limit (oldest first): an event delivered again after its id was forgotten is
    /// not recognised as a duplicate.
    #[serde(default)]
    pub forgotten_ids: u64,
}

/// Evicted chunks to read back from the record store: made by the log
/// ([`ObservedLog::read_back_request`]), fetched on any thread ([`ReadBack::fetch`]; it
/// blocks on the broker), checked and cached by [`ObservedLog::finish_read_back`]. A window
/// fetches on a thread of its own, so a slow or unreachable broker never stalls a frame.
pub struct ReadBack {
    chunk: u32,
    chunks: Vec<u32>,
    ranges: Vec<OffsetRange>,
    store: std::sync::Arc<dyn RecordStore>,
}

impl ReadBack {
    /// The chunk asked for (the others are read ahead with it).
    pub fn chunk(&self) -> u32 {
        self.chunk
    }

    /// Read the records from the store (blocking).
    pub fn fetch(self) -> ReadBackDone {
        ReadBackDone {
            fetched: self.store.fetch(&self.ranges),
            chunk: self.chunk,
            chunks: self.chunks,
            store: self.store,
        }
    }
}

/// What a [`ReadBack`] fetched, for [`ObservedLog::finish_read_back`].
pub struct ReadBackDone {
    chunk: u32,
    chunks: Vec<u32>,
    fetched: Result<Vec<Record>, String>,
    store: std::sync::Arc<dyn RecordStore>,
}

/// The append-only observed log with its indexes.
///
/// With a memory limit ([`ObservedLog::set_memory_limit`], applied by [`ObservedLog::shed`])
/// the oldest records are dropped, a whole chunk of the arena at a time. Log indices stay
/// absolute: `len()` counts every record ever appended, records below
/// [`ObservedLog::first_held`] read as `None`, and the index lists only return held records.
/// What lints need about dropped records stays: an event id once seen is still seen
/// ([`ObservedLog::has_event`], so a redelivery is still a duplicate and a causation id
/// pointing at it is not a broken chain), and every aggregate counts the events it lost
/// ([`ObservedLog::aggregate_dropped`]), until those ids hold more than an eighth of the limit:
/// then the oldest are forgotten (see [`ObservedLog::forget_epoch`]).
pub struct ObservedLog {
    cfg: DecodeConfig,
    strings: Interner,
    bytes: ByteArena,
    /// Held rows; `rows[0]` is log index `first`.
    rows: VecDeque<Row>,
    /// Log index of `rows[0]` (= records dropped so far).
    first: LogIndex,
    /// Running maximum of `time_ms` (monotone), for time search; aligned with `rows`.
    time_max: VecDeque<i64>,
    memory_limit: Option<usize>,
    dropped_bytes: u64,
    /// Event ids whose every delivery was dropped.
    gone_events: FxSet<Sym>,
    /// Per aggregate: events dropped, and the last dropped one's index.
    agg_dropped: FxMap<Sym, (u32, LogIndex)>,
    /// Ids that only dropped records carried, oldest first, each with what it holds
    /// ([`queued_cost`]): forgotten once they hold more than an eighth of the memory limit.
    forget_queue: VecDeque<(Sym, u32)>,
    /// What the queued ids hold, in bytes (estimated).
    queued_bytes: usize,
    /// The ids forgotten so far, remembered approximately.
    forgotten: Forgotten,
    /// Rounds of forgetting so far: whoever keeps symbols drops the forgotten ones at each.
    forget_epoch: u64,
    /// Strings held rows carry outside the indexes, counted: the ids of dead-letter rows, the
    /// errors of poison rows (an error text may differ per record, so it is not pinned).
    unindexed: FxMap<Sym, u32>,
    /// What the lints keep per id, as the model last said ([`ObservedLog::set_lint_bytes`]):
    /// counted against the limit.
    lint_bytes: usize,
    /// Heap bytes of the index lists that live outside their map (spilled lists).
    list_heap: usize,
    by_event: SymIndex,
    by_correlation: SymIndex,
    by_causation: SymIndex,
    by_aggregate: SymIndex,
    by_trace: SymIndex,
    by_partition: FxMap<(Sym, i32), Vec<LogIndex>>,
    stats: LogStats,
    scratch: Vec<u8>,
    /// Per topic: (carries commands, is a dead-letter topic), judged once per topic.
    topic_flags: FxMap<Sym, (bool, bool)>,
    /// The last record's topic symbol and header-name symbols by position: producers write
    /// the same headers in the same order, so a name equal to the one cached at its position
    /// is interned without hashing.
    last_topic: Option<Sym>,
    header_syms: Vec<Sym>,
    /// Where evicted payloads are read back from, by epoch: a chunk reads back from the store
    /// of its epoch ([`ObservedLog::set_record_store`] starts a new one when the log already
    /// holds records). Never empty. Without a store, the limit drops records.
    stores: Vec<RecordStoreHandle>,
    /// The epoch records are appended in (the last one but while a log is read again).
    append_epoch: u16,
    /// With a store: payload bytes kept at most ([`ObservedLog::set_payload_budget`]).
    payload_budget: Option<usize>,
}

impl Default for ObservedLog {
    fn default() -> Self {
        Self::new(DecodeConfig::default())
    }
}

static EMPTY: [LogIndex; 0] = [];

impl ObservedLog {
    pub fn new(cfg: DecodeConfig) -> Self {
        ObservedLog {
            cfg,
            strings: Interner::default(),
            bytes: ByteArena::default(),
            rows: VecDeque::new(),
            first: 0,
            time_max: VecDeque::new(),
            memory_limit: None,
            dropped_bytes: 0,
            gone_events: FxSet::default(),
            agg_dropped: FxMap::default(),
            forget_queue: VecDeque::new(),
            queued_bytes: 0,
            forgotten: Forgotten::default(),
            forget_epoch: 0,
            unindexed: FxMap::default(),
            lint_bytes: 0,
            list_heap: 0,
            by_event: SymIndex::default(),
            by_correlation: SymIndex::default(),
            by_causation: SymIndex::default(),
            by_aggregate: SymIndex::default(),
            by_trace: SymIndex::default(),
            by_partition: FxMap::default(),
            stats: LogStats::default(),
            scratch: Vec::new(),
            topic_flags: FxMap::default(),
            last_topic: None,
            header_syms: Vec::new(),
            stores: vec![RecordStoreHandle::default()],
            append_epoch: 0,
            payload_budget: None,
        }
    }

    pub fn decode_config(&self) -> &DecodeConfig {
        &self.cfg
    }

    /// Decode the records appended from now on through `registry` (the records held keep
    /// the decoding they got).
    pub fn set_registry(&mut self, registry: crate::registry::RegistryHandle) {
        self.cfg.registry = registry;
    }

    /// Decode and append one record; O(1) amortised. Undecodable records become poison rows.
    pub fn append(&mut self, rec: &Record, now_ms: i64) -> Result<LogIndex, LogError> {
        let decoded = decode_envelope(rec, &self.cfg);
        self.append_decoded(rec, &decoded, now_ms)
    }

    /// [`ObservedLog::append`] with the record's envelope decoded already (by
    /// [`decode_envelope`] with this log's [`DecodeConfig`], on another thread: decoding is
    /// half of what a record costs and needs nothing of the log). Borrowed: the caller may
    /// free it elsewhere too.
    pub fn append_decoded(
        &mut self,
        rec: &Record,
        decoded: &Result<ObservedEvent, super::envelope::DecodeError>,
        now_ms: i64,
    ) -> Result<LogIndex, LogError> {
        let idx = LogIndex::try_from(self.len()).map_err(|_| LogError::Full(self.len()))?;
        if idx == LogIndex::MAX {
            return Err(LogError::Full(self.len()));
        }
        let too_large = || LogError::TooLarge(rec.approx_size());
        let topic = match self.last_topic {
            Some(t) if self.strings.resolve(t) == rec.topic => t,
            _ => self
                .strings
                .intern_pinned(&rec.topic)
                .ok_or_else(too_large)?,
        };
        self.last_topic = Some(topic);
        let blob = self.store_blob(rec, idx).ok_or_else(too_large)?;
        let (kind, event_time) = match decoded {
            Ok(ev) => {
                let meta = self.intern_meta(ev, rec, topic).ok_or_else(too_large)?;
                (RowKind::Event(meta), ev.time_ms)
            }
            Err(e) => {
                let error = self.strings.intern(&e.to_string()).ok_or_else(too_large)?;
                (RowKind::Poison { error }, None)
            }
        };
        let time_ms = rec.timestamp_ms.or(event_time).unwrap_or(now_ms);
        let row = Row {
            topic,
            partition: rec.partition,
            offset: rec.offset,
            timestamp_ms: rec.timestamp_ms.unwrap_or(NO_TS),
            time_ms,
            blob,
            kind,
        };
        self.index_row(idx, &row);
        let prev_max = self.time_max.back().copied().unwrap_or(i64::MIN);
        self.time_max.push_back(prev_max.max(time_ms));
        self.rows.push_back(row);
        Ok(idx)
    }

    /// Whether `topic` carries commands and whether it is a dead-letter topic.
    fn topic_flags(&mut self, topic: Sym, name: &str) -> (bool, bool) {
        let cfg = &self.cfg;
        *self
            .topic_flags
            .entry(topic)
            .or_insert_with(|| (cfg.is_command_topic(name), is_dead_letter_topic(name)))
    }

    fn intern_meta(&mut self, ev: &ObservedEvent, rec: &Record, topic: Sym) -> Option<EventMeta> {
        let s = &mut self.strings;
        let name = |s: &mut Interner, v: &Option<String>| -> Option<Option<Sym>> {
            match v {
                None => Some(None),
                Some(v) => s.intern_pinned(v).map(Some),
            }
        };
        let event_type = name(s, &ev.event_type)?;
        let source = name(s, &ev.source)?;
        let mut opt = |v: &Option<String>| -> Option<Option<Sym>> {
            match v {
                None => Some(None),
                Some(v) => s.intern(v).map(Some),
            }
        };
        let aggregate_id = opt(&ev.aggregate_id)?;
        let correlation_id = opt(&ev.correlation_id)?;
        let causation_id = opt(&ev.causation_id)?;
        let trace_id = opt(&ev.trace_id)?;
        let event_id = self.strings.intern(&ev.event_id)?;
        let (is_command, dead_letter) = self.topic_flags(topic, &rec.topic);
        let (order_kind, order) = match ev.order_key() {
            Some((VersionKind::AggregateVersion, v)) => (1, v),
            Some((VersionKind::Sequence, v)) => (2, v),
            None => (0, 0),
        };
        Some(EventMeta {
            event_id,
            event_type,
            source,
            aggregate_id,
            correlation_id,
            causation_id,
            trace_id,
            order,
            order_kind,
            format: ev.format.as_u8(),
            first_delivery: !dead_letter && !self.has_event(event_id),
            is_command,
            dead_letter,
            shape: ev.shape.unwrap_or(0),
        })
    }

    fn index_row(&mut self, idx: LogIndex, row: &Row) {
        self.stats.observed += 1;
        let part = self
            .by_partition
            .entry((row.topic, row.partition))
            .or_default();
        let before = part.capacity();
        part.push(idx);
        self.list_heap = self.list_heap + part.capacity() * 4 - before * 4;
        let m = match row.kind {
            RowKind::Event(m) => m,
            RowKind::Poison { error } => {
                self.stats.poison += 1;
                *self.unindexed.entry(error).or_insert(0) += 1;
                return;
            }
        };
        if m.dead_letter {
            // Not a delivery: kept out of the event, chain and aggregate indexes; its ids
            // are counted so that they are not forgotten while it is held.
            for id in m.ids() {
                *self.unindexed.entry(id).or_insert(0) += 1;
            }
            return;
        }
        if m.first_delivery {
            self.stats.unique += 1;
        } else {
            self.stats.duplicate_deliveries += 1;
        }
        let heap = &mut self.list_heap;
        let mut add = |map: &mut SymIndex, k: Option<Sym>| {
            if let Some(k) = k {
                map.push(k, idx, heap);
            }
        };
        add(&mut self.by_event, Some(m.event_id));
        add(&mut self.by_correlation, m.correlation_id);
        add(&mut self.by_causation, m.causation_id);
        add(&mut self.by_aggregate, m.aggregate_id);
        add(&mut self.by_trace, m.trace_id);
    }

    // ---- the memory limit ----

    /// Keep [`ObservedLog::approx_bytes`] under `limit` bytes by dropping the oldest records
    /// ([`ObservedLog::shed`]); `None`: no limit.
    pub fn set_memory_limit(&mut self, limit: Option<usize>) {
        self.memory_limit = limit;
    }

    pub fn memory_limit(&self) -> Option<usize> {
        self.memory_limit
    }

    /// What the lints keep about the ids they saw (see [`crate::model::detect::Detector::state_bytes`]):
    /// counted against the limit; it shrinks as ids are forgotten.
    pub fn set_lint_bytes(&mut self, bytes: usize) {
        self.lint_bytes = bytes;
    }

    /// Read evicted payloads back from `store` (Kafka, on a broker that keeps its log): under
    /// the memory limit the oldest chunks' bytes are evicted first, their rows and indexes
    /// kept; records are dropped only once nothing is left to evict.
    ///
    /// Given to a log that holds records (the window connected to another broker), it is
    /// where the records appended from now on are read back from; those held already are
    /// still read back from where they came from (each chunk of the arena keeps its store).
    pub fn set_record_store(&mut self, store: RecordStoreHandle) {
        if self.rows.is_empty() && self.first == 0 {
            self.stores = vec![store];
            self.append_epoch = 0;
        } else {
            self.push_store(store);
        }
    }

    /// Append from now on in an epoch of `store`: a new one, unless it is the last already.
    fn push_store(&mut self, store: RecordStoreHandle) {
        if self.stores.last() != Some(&store) {
            if self.stores.len() > usize::from(u16::MAX) {
                // 65,535 switches: the oldest records read back from the last store.
                self.stores.pop();
            }
            self.stores.push(store);
        }
        self.append_epoch = self.last_epoch();
    }

    /// The newest epoch (`stores` is never empty).
    fn last_epoch(&self) -> u16 {
        u16::try_from(self.stores.len().saturating_sub(1)).unwrap_or(u16::MAX)
    }

    /// Where the record at `idx` is read back from once evicted (the store of the connection
    /// it was read from).
    pub fn record_store_of(&self, idx: LogIndex) -> Option<&RecordStoreHandle> {
        let chunk = self.row(idx)?.blob.chunk as usize;
        self.stores.get(usize::from(self.bytes.epoch_of(chunk)))
    }

    /// The record store of chunk `chunk`'s epoch.
    fn store_of(&self, chunk: u32) -> Option<&std::sync::Arc<dyn RecordStore>> {
        let epoch = self.bytes.epoch_of(chunk as usize);
        self.stores.get(usize::from(epoch))?.0.as_ref()
    }

    /// Whether epoch `epoch` has a record store (its chunks can be evicted).
    fn stored(stores: &[RecordStoreHandle], epoch: u16) -> bool {
        stores
            .get(usize::from(epoch))
            .is_some_and(|s| s.0.is_some())
    }

    /// The key of "the store of chunk `chunk` could not be read at all" among the failures.
    fn store_down_key(&self, chunk: u32) -> usize {
        STORE_DOWN - usize::from(self.bytes.epoch_of(chunk as usize))
    }

    /// With a record store, keep at most `budget` bytes of payloads (the arena) whatever the
    /// memory limit: older chunks are evicted at once, and the log holds rows and indexes (the
    /// index-only mode). `None`: payloads are evicted only under the memory limit.
    pub fn set_payload_budget(&mut self, budget: Option<usize>) {
        self.payload_budget = budget;
    }

    /// Under a memory limit, while the log holds more than the limit: with a record store,
    /// evict the oldest chunks' bytes first (rows and index entries stay, the bytes are read
    /// back from the store); then drop the oldest records, whole chunks of the arena at a time
    /// (their rows and index entries go with them). The
    /// rows of the chunk being filled, and the newest row, are never dropped, nor records
    /// below a quarter of the limit (see [`ObservedLog::over`]). O(1) when under the limit.
    /// Returns how many records were dropped.
    pub fn shed(&mut self) -> usize {
        let stores = &self.stores;
        if let (Some(budget), true) = (self.payload_budget, stores.iter().any(|s| s.0.is_some())) {
            if self.bytes.held > budget {
                self.bytes.take_sealed(false);
                while self.bytes.held > budget
                    && self
                        .bytes
                        .evict_oldest(|e| Self::stored(stores, e))
                        .is_some()
                {}
            }
        }
        let Some(limit) = self.memory_limit else {
            return 0;
        };
        if !self.over(limit) {
            return 0;
        }
        // Every chunk handed to the compressing thread counted at its compressed size: which
        // records go depends on the records only, not on the thread's timing.
        self.bytes.take_sealed(true);
        let mut dropped = Vec::new();
        let mut n = 0;
        while self.over(limit) {
            let stores = &self.stores;
            if self
                .bytes
                .evict_oldest(|e| Self::stored(stores, e))
                .is_some()
            {
                continue;
            }
            let mut freed = false;
            while !freed {
                let Some(front) = self.rows.front() else {
                    break;
                };
                if self.rows.len() <= 1 || self.bytes.current == Some(front.blob.chunk as usize) {
                    break;
                }
                let Some(row) = self.rows.pop_front() else {
                    break;
                };
                self.time_max.pop_front();
                self.first += 1;
                self.dropped_bytes += u64::from(row.blob.len);
                freed = self.bytes.release(row.blob.chunk).is_some();
                dropped.push(row);
            }
            // Out of the indexes chunk by chunk: what that frees, and what it adds (the ids
            // of dropped events stay known), counts before the next look at the limit.
            let first_dropped = self.first - dropped.len() as LogIndex;
            for (i, row) in dropped.iter().enumerate() {
                self.unindex(first_dropped + i as LogIndex, row);
            }
            n += dropped.len();
            dropped.clear();
            self.shrink();
            if !freed {
                break;
            }
        }
        self.forget_old_ids(limit);
        n
    }

    /// A held row that carried `sym` outside the indexes was dropped: queued to be forgotten
    /// once no held row carries it.
    fn release_unindexed(&mut self, sym: Sym) {
        if let Some(n) = self.unindexed.get_mut(&sym) {
            *n -= 1;
            if *n == 0 {
                self.unindexed.remove(&sym);
                self.queue_forget(sym);
            }
        }
    }

    /// Queue an id no held record carries any more, to be forgotten in its turn.
    fn queue_forget(&mut self, sym: Sym) {
        let cost = queued_cost(self.strings.resolve(sym).len());
        self.queued_bytes += cost as usize;
        self.forget_queue.push_back((sym, cost));
    }

    /// The indexes by id (event, correlation, causation, aggregate, trace).
    fn id_indexes(&self) -> [&SymIndex; 5] {
        [
            &self.by_event,
            &self.by_correlation,
            &self.by_causation,
            &self.by_aggregate,
            &self.by_trace,
        ]
    }

    /// Whether a held record carries `sym` as one of its ids.
    fn is_held_id(&self, sym: Sym) -> bool {
        self.id_indexes().iter().any(|i| i.one.contains_key(&sym))
            || self.unindexed.contains_key(&sym)
    }

    /// Ids that only dropped records carried are remembered exactly (an event id delivered
    /// again is a duplicate, a causation id pointing at it is no broken chain, an aggregate
    /// keeps its count of dropped events) until they hold more than an eighth of the limit
    /// (or what cannot be dropped holds more than half of it). Then the oldest are forgotten,
    /// down to a sixteenth (or all of them), in one round: their strings are
    /// given back, the lints drop what they kept about them ([`ObservedLog::forget_epoch`]
    /// moves on), and their hashes go to a Bloom filter ([`ObservedLog::maybe_forgotten`]).
    /// An id seen again after it was forgotten is new to the log: a redelivery that late is
    /// not reported as a duplicate. O(1) amortised.
    fn forget_old_ids(&mut self, limit: usize) {
        let budget = limit / 8;
        // What cannot be dropped (ids, the lints' state about them) outgrew half the limit:
        // every queued id goes, in rounds of at least a sixty-fourth of the limit (a round
        // costs the lints a pass over their state).
        let pressed = self.undroppable_bytes() > limit / 2 && self.queued_bytes > budget / 8;
        if self.queued_bytes <= budget && !pressed {
            return;
        }
        let keep = if pressed { 0 } else { budget / 2 };
        self.strings.reuse_forgotten();
        let mut n = 0u64;
        while self.queued_bytes > keep {
            let Some((sym, cost)) = self.forget_queue.pop_front() else {
                break;
            };
            self.queued_bytes = self.queued_bytes.saturating_sub(cost as usize);
            if self.is_held_id(sym) {
                // Queued again when the last record that carries it is dropped.
                continue;
            }
            let hash = xxh3_64(self.strings.resolve(sym).as_bytes());
            if self.strings.forget(sym) {
                self.gone_events.remove(&sym);
                self.agg_dropped.remove(&sym);
                self.forgotten.add(hash, limit);
                n += 1;
            }
        }
        if n > 0 {
            self.forget_epoch += 1;
        }
        self.strings.compact();
        self.forget_queue.shrink_to(self.forget_queue.len() * 2);
        if self.gone_events.capacity() > 4 * self.gone_events.len().max(1024) {
            self.gone_events.shrink_to(self.gone_events.len() * 2);
        }
        if self.agg_dropped.capacity() > 4 * self.agg_dropped.len().max(1024) {
            self.agg_dropped.shrink_to(self.agg_dropped.len() * 2);
        }
    }

    /// Rounds of forgetting so far (see [`ObservedLog::shed`]). Whoever keeps symbols across
    /// appends drops the forgotten ones ([`ObservedLog::is_live`]) each time this moves on: a
    /// forgotten symbol's slot names another string from the next round on.
    pub fn forget_epoch(&self) -> u64 {
        self.forget_epoch
    }

    /// Whether `sym` still names its string (it was not forgotten).
    pub fn is_live(&self, sym: Sym) -> bool {
        self.strings.is_live(sym)
    }

    /// Whether the string of `sym` may be an id forgotten under the memory limit (a Bloom
    /// filter: about 1 % of other strings say yes too). False while nothing was forgotten.
    pub fn maybe_forgotten(&self, sym: Sym) -> bool {
        self.forgotten.count > 0
            && self
                .forgotten
                .maybe(xxh3_64(self.strings.resolve(sym).as_bytes()))
    }

    /// Give back the room of rows and index entries dropped: a container at a quarter of its
    /// capacity (or less) shrinks to twice its length. Rare, so O(1) amortised.
    fn shrink(&mut self) {
        fn too_big(len: usize, cap: usize) -> bool {
            cap > 4 * len.max(1024)
        }
        if too_big(self.rows.len(), self.rows.capacity()) {
            self.rows.shrink_to(2 * self.rows.len());
            self.time_max.shrink_to(2 * self.time_max.len());
        }
        fn map<K: Eq + std::hash::Hash, V>(m: &mut FxMap<K, V>) {
            if too_big(m.len(), m.capacity()) {
                m.shrink_to(2 * m.len());
            }
        }
        for index in [
            &mut self.by_event,
            &mut self.by_correlation,
            &mut self.by_causation,
            &mut self.by_aggregate,
            &mut self.by_trace,
        ] {
            map(&mut index.one);
            map(&mut index.many);
        }
        map(&mut self.by_partition);
    }

    /// Over the limit, with records to drop: the log holds more than `limit`. Once what
    /// cannot be dropped (interned ids) takes more than three quarters of it, a quarter of the
    /// limit stays for records and the log goes over ([`DropStats::undroppable_bytes`] says
    /// by how much).
    fn over(&self, limit: usize) -> bool {
        self.approx_bytes() > limit
            && (self.undroppable_bytes() <= limit / 4 * 3 || self.record_bytes() > limit / 4)
    }

    /// Bytes of the records held: their part of the arena and their rows.
    fn record_bytes(&self) -> usize {
        self.memory_parts()[0].1 + self.rows.len() * (std::mem::size_of::<Row>() + 8)
    }

    /// Take a dropped row out of the indexes. Index lists are in ascending order, so the
    /// dropped entries are a prefix: a list loses it once half of it is dropped (or all of
    /// it), and until then the getters skip it.
    fn unindex(&mut self, idx: LogIndex, row: &Row) {
        let first = self.first;
        if let Some(part) = self.by_partition.get_mut(&(row.topic, row.partition)) {
            let k = part.partition_point(|&i| i < first);
            if k == part.len() {
                self.list_heap -= part.capacity() * 4;
                self.by_partition.remove(&(row.topic, row.partition));
            } else if k * 2 >= part.len() {
                self.list_heap -= part.capacity() * 4;
                part.drain(..k);
                part.shrink_to_fit();
                self.list_heap += part.capacity() * 4;
            }
        }
        let m = match row.kind {
            RowKind::Event(m) if !m.dead_letter => m,
            RowKind::Event(m) => {
                for id in m.ids() {
                    self.release_unindexed(id);
                }
                return;
            }
            RowKind::Poison { error } => {
                self.release_unindexed(error);
                return;
            }
        };
        let heap = &mut self.list_heap;
        let mut gone: SmallVec<[Sym; 5]> = SmallVec::new();
        let mut prune = |map: &mut SymIndex, k: Option<Sym>| -> bool {
            let pruned = k.is_some_and(|k| map.prune(k, first, heap));
            if let (true, Some(k)) = (pruned, k) {
                gone.push(k);
            }
            pruned
        };
        if prune(&mut self.by_event, Some(m.event_id)) {
            self.gone_events.insert(m.event_id);
        }
        prune(&mut self.by_correlation, m.correlation_id);
        prune(&mut self.by_causation, m.causation_id);
        prune(&mut self.by_aggregate, m.aggregate_id);
        prune(&mut self.by_trace, m.trace_id);
        for k in gone {
            self.queue_forget(k);
        }
        if let Some(agg) = m.aggregate_id {
            let e = self.agg_dropped.entry(agg).or_insert((0, idx));
            e.0 += 1;
            e.1 = idx;
        }
    }

    /// Make this empty log continue `old`'s drops, to read `old`'s held records again (with
    /// other settings): they get their old indices, the counters include the dropped
    /// records, and event ids and aggregates seen only in dropped records stay known.
    /// Does nothing to a log that holds records.
    pub fn continue_drops_from(&mut self, old: &ObservedLog) {
        if !self.is_empty() {
            return;
        }
        // The old log's record stores, so that each record read again is read back from where
        // it came from ([`ObservedLog::append_like`]); this log's own store comes last.
        let mine = self.stores.pop().unwrap_or_default();
        self.stores = old.stores.clone();
        self.push_store(mine);
        self.first = old.first;
        self.dropped_bytes = old.dropped_bytes;
        // The counters of the dropped part: the old counters less those of its held rows.
        let mut held = LogStats::default();
        for (idx, row) in old.held().zip(old.rows.iter()) {
            held.observed += 1;
            let RowKind::Event(m) = row.kind else {
                held.poison += 1;
                continue;
            };
            if m.dead_letter {
                continue;
            }
            if m.first_delivery {
                held.unique += 1;
            } else {
                held.duplicate_deliveries += 1;
                // Its first delivery was dropped: the event id stays seen.
                if old.deliveries_of(m.event_id).first() == Some(&idx) {
                    if let Some(s) = self.strings.intern(old.resolve(m.event_id)) {
                        self.gone_events.insert(s);
                    }
                }
            }
        }
        let o = old.stats;
        self.stats = LogStats {
            observed: o.observed.saturating_sub(held.observed),
            unique: o.unique.saturating_sub(held.unique),
            duplicate_deliveries: o
                .duplicate_deliveries
                .saturating_sub(held.duplicate_deliveries),
            poison: o.poison.saturating_sub(held.poison),
        };
        for &e in &old.gone_events {
            if let Some(s) = self.strings.intern(old.resolve(e)) {
                self.gone_events.insert(s);
            }
        }
        for (&a, &d) in &old.agg_dropped {
            if let Some(s) = self.strings.intern(old.resolve(a)) {
                self.agg_dropped.insert(s, d);
            }
        }
        // The ids only dropped records carried, oldest first as they were queued.
        for &(q, _) in &old.forget_queue {
            if old.is_live(q) {
                if let Some(s) = self.strings.intern(old.resolve(q)) {
                    self.queue_forget(s);
                }
            }
        }
        self.forgotten = old.forgotten.clone();
    }

    /// While `old` is read again into this log (see [`ObservedLog::continue_drops_from`]):
    /// append the next record in the epoch of `old`'s record at `idx`, so that it is read back
    /// from the same store. `None`: back to the last epoch.
    pub fn append_like(&mut self, old: &ObservedLog, idx: Option<LogIndex>) {
        let last = self.last_epoch();
        self.append_epoch = idx
            .and_then(|i| old.row(i))
            .map(|r| old.bytes.epoch_of(r.blob.chunk as usize))
            .filter(|&e| e < last)
            .unwrap_or(last);
    }

    /// Log index of the oldest record held (= records dropped so far).
    pub fn first_held(&self) -> LogIndex {
        self.first
    }

    /// Whether the record at `idx` was appended and then dropped under the memory limit.
    pub fn is_dropped(&self, idx: LogIndex) -> bool {
        idx < self.first
    }

    /// Events of an aggregate dropped under the memory limit, and the last one's log index.
    pub fn aggregate_dropped(&self, aggregate_id: Sym) -> Option<(u32, LogIndex)> {
        self.agg_dropped.get(&aggregate_id).copied()
    }

    /// What the memory limit has dropped, for the report and the status bar.
    pub fn drop_stats(&self) -> DropStats {
        DropStats {
            limit_bytes: self.memory_limit.map(|l| l as u64),
            dropped_records: u64::from(self.first),
            dropped_bytes: self.dropped_bytes,
            held_records: self.rows.len() as u64,
            undroppable_bytes: self.undroppable_bytes() as u64,
            payloads_in_store: self.bytes.in_store_rows,
            forgotten_ids: self.forgotten.count,
        }
    }

    /// Pack the record into the arena (see [`pack`]).
    fn store_blob(&mut self, rec: &Record, idx: LogIndex) -> Option<Span> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let (strings, header_syms) = (&mut self.strings, &mut self.header_syms);
        let ok = pack(rec, &mut buf, |i, name| match header_syms.get(i) {
            Some(&s) if strings.resolve(s) == name => Some(s),
            _ => {
                let s = strings.intern_pinned(name)?;
                match header_syms.get_mut(i) {
                    Some(slot) => *slot = s,
                    None => header_syms.push(s),
                }
                Some(s)
            }
        });
        let span = ok.and_then(|()| self.bytes.push(&buf, idx, self.append_epoch));
        self.scratch = buf;
        span
    }

    /// Read the bytes of evicted chunk `chunk` back from the record store, with up to
    /// [`READ_AHEAD`] evicted chunks after it (a scan reads on; one read of a few hundred KiB
    /// costs little more than one of 64). The records of each chunk's held rows, fetched by
    /// topic, partition and offset and packed again at their places, must give the bytes
    /// observed (the chunk's checksum when all its rows are held, else every record's packed
    /// length). Then they are cached like decompressed chunks.
    fn read_back(&self, chunk: u32) -> Result<std::sync::Arc<Vec<u8>>, String> {
        let store = self.store_or_err(chunk)?;
        if let Some(why) = self.recently_failed(chunk) {
            return Err(why);
        }
        let request = self.request_chunks(store, chunk);
        self.finish_read_back(request.fetch())
    }

    fn store_or_err(&self, chunk: u32) -> Result<&std::sync::Arc<dyn RecordStore>, String> {
        self.store_of(chunk)
            .ok_or_else(|| "no record store to read it back from".to_owned())
    }

    /// Why `chunk` is not asked for again yet: it failed, or the store could not be read at
    /// all (`STORE_DOWN`), less than [`RETRY_AFTER`] ago (the window reads records every frame).
    fn recently_failed(&self, chunk: u32) -> Option<String> {
        let mut failed = self
            .bytes
            .failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let down = self.store_down_key(chunk);
        for key in [chunk as usize, down] {
            if let Some((at, why)) = failed.get(&key) {
                if at.elapsed() < RETRY_AFTER {
                    return Some(why.clone());
                }
            }
        }
        failed.remove(&down);
        None
    }

    /// The read back of `chunk` and of the evicted chunks after it (up to [`READ_AHEAD`]),
    /// to fetch in one go.
    fn request_chunks(&self, store: &std::sync::Arc<dyn RecordStore>, chunk: u32) -> ReadBack {
        let mut chunks = vec![chunk];
        {
            let failed = self
                .bytes
                .failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for next in chunk + 1..chunk.saturating_add(READ_AHEAD) {
                let i = next as usize;
                if !matches!(self.bytes.chunks.get(i), Some(Chunk::InStore { .. }))
                    || self.bytes.epoch_of(i) != self.bytes.epoch_of(chunk as usize)
                    || failed.contains_key(&i)
                    || self.bytes.cached(i).is_some()
                {
                    break;
                }
                chunks.push(next);
            }
        }
        let mut ranges: Vec<OffsetRange> = Vec::new();
        for &c in &chunks {
            for r in self.rows_in_chunk(c) {
                let topic = self.resolve(r.topic);
                match ranges
                    .iter_mut()
                    .find(|g| g.partition == r.partition && g.topic == topic)
                {
                    Some(g) => {
                        g.first = g.first.min(r.offset);
                        g.last = g.last.max(r.offset);
                    }
                    None => ranges.push(OffsetRange {
                        topic: topic.to_owned(),
                        partition: r.partition,
                        first: r.offset,
                        last: r.offset,
                    }),
                }
            }
        }
        ReadBack {
            chunk,
            chunks,
            ranges,
            store: store.clone(),
        }
    }

    /// The held rows whose bytes are in chunk `chunk`.
    fn rows_in_chunk(&self, chunk: u32) -> Vec<&Row> {
        let Some(&(lo, hi)) = self.bytes.rows_of.get(chunk as usize) else {
            return Vec::new();
        };
        (lo.max(self.first)..=hi)
            .filter_map(|x| self.row(x))
            .filter(|r| r.blob.chunk == chunk)
            .collect()
    }

    /// The read back the record at `idx` needs before it can be shown, to run on another
    /// thread ([`ReadBack::fetch`], then [`ObservedLog::finish_read_back`]): `None` when its
    /// bytes are at hand, were never evicted, or failed a moment ago
    /// ([`ObservedLog::unreadable`] then says why without asking the store).
    pub fn read_back_request(&self, idx: LogIndex) -> Option<ReadBack> {
        if !self.needs_read_back(idx) {
            return None;
        }
        let chunk = self.row(idx)?.blob.chunk;
        Some(self.request_chunks(self.store_of(chunk)?, chunk))
    }

    /// Whether reading the record at `idx` would ask the record store now: its bytes were
    /// evicted, are not cached, and did not fail a moment ago.
    pub fn needs_read_back(&self, idx: LogIndex) -> bool {
        let Some(row) = self.row(idx) else {
            return false;
        };
        self.store_of(row.blob.chunk).is_some()
            && matches!(
                self.bytes.chunks.get(row.blob.chunk as usize),
                Some(Chunk::InStore { .. })
            )
            && self.bytes.read(row.blob, |_| ()).is_none()
            && self.recently_failed(row.blob.chunk).is_none()
    }

    /// Check and cache what a [`ReadBack`] fetched (each chunk rebuilt from the records and
    /// compared with what was observed), or remember why it failed. The asked chunk's bytes.
    pub fn finish_read_back(&self, done: ReadBackDone) -> Result<std::sync::Arc<Vec<u8>>, String> {
        let ReadBackDone {
            chunk,
            chunks,
            fetched,
            store,
        } = done;
        let got: Vec<(u32, Result<Vec<u8>, String>)> = match fetched {
            Ok(records) => {
                let by_pos: HashMap<(&str, i32, i64), &Record> = records
                    .iter()
                    .map(|r| ((r.topic.as_str(), r.partition, r.offset), r))
                    .collect();
                chunks
                    .iter()
                    .map(|&c| {
                        let rows = self.rows_in_chunk(c);
                        (c, self.repack(store.as_ref(), c, &rows, &by_pos))
                    })
                    .collect()
            }
            // Said about the chunk asked for; those read ahead are asked again when wanted.
            Err(why) => {
                self.bytes
                    .failed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(
                        self.store_down_key(chunk),
                        (std::time::Instant::now(), why.clone()),
                    );
                vec![(chunk, Err(why))]
            }
        };
        let mut failed = self
            .bytes
            .failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        let mut asked = Err("its bytes are not in the record store".to_owned());
        for (c, result) in got {
            let result = result.map(std::sync::Arc::new);
            match &result {
                Ok(raw) => {
                    failed.remove(&(c as usize));
                    self.bytes.cache_put(c as usize, raw.clone());
                }
                Err(why) => {
                    failed.insert(c as usize, (now, why.clone()));
                }
            }
            if c == chunk {
                asked = result;
            }
        }
        asked
    }

    /// Chunk `chunk` rebuilt from the records read back for its held `rows`, checked.
    fn repack(
        &self,
        store: &dyn RecordStore,
        chunk: u32,
        rows: &[&Row],
        by_pos: &HashMap<(&str, i32, i64), &Record>,
    ) -> Result<Vec<u8>, String> {
        let Some(&Chunk::InStore { len, sum }) = self.bytes.chunks.get(chunk as usize) else {
            return Err("its bytes are not in the record store".into());
        };
        let mut raw = vec![0u8; len];
        let mut packed = Vec::new();
        for r in rows {
            let topic = self.resolve(r.topic);
            let Some(rec) = by_pos.get(&(topic, r.partition, r.offset)) else {
                return Err(format!(
                    "{} no longer has {topic}/{}@{} (retention or compaction)",
                    store.describe(),
                    r.partition,
                    r.offset
                ));
            };
            packed.clear();
            let at = r.blob.start as usize..r.blob.start as usize + r.blob.len as usize;
            let fits = pack(rec, &mut packed, |_, name| self.strings.get(name)).is_some()
                && packed.len() == at.len();
            match raw.get_mut(at) {
                Some(place) if fits => place.copy_from_slice(&packed),
                _ => {
                    return Err(format!(
                        "{topic}/{}@{} on {} is not the record observed there (topic \
                         recreated?)",
                        r.partition,
                        r.offset,
                        store.describe()
                    ))
                }
            }
        }
        let lo = self.bytes.rows_of.get(chunk as usize).map_or(0, |r| r.0);
        let whole = self.bytes.refs.get(chunk as usize).copied() == Some(rows.len() as u32)
            && lo >= self.first;
        if whole && xxh3_64(&raw) != sum {
            return Err(format!(
                "the records read back from {} differ from those observed (topic recreated?)",
                store.describe()
            ));
        }
        Ok(raw)
    }

    /// Whether the held record at `idx` has its bytes in the record store only (evicted).
    pub fn is_in_store(&self, idx: LogIndex) -> bool {
        self.row(idx).is_some_and(|r| {
            matches!(
                self.bytes.chunks.get(r.blob.chunk as usize),
                Some(Chunk::InStore { .. })
            )
        })
    }

    /// Why the held record at `idx` cannot be read (its bytes were evicted to the record store
    /// and reading them back failed), if it cannot.
    pub fn unreadable(&self, idx: LogIndex) -> Option<String> {
        let row = self.row(idx)?;
        if self.bytes.read(row.blob, |_| ()).is_some() {
            return None;
        }
        self.read_back(row.blob.chunk).err()
    }

    // ---- access ----

    /// Records ever appended (held or dropped): the next record's index.
    pub fn len(&self) -> usize {
        self.first as usize + self.rows.len()
    }

    /// Nothing was ever appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> LogStats {
        self.stats
    }

    /// The rows held, oldest first (the first is at [`ObservedLog::first_held`]).
    pub fn rows(&self) -> impl Iterator<Item = &Row> + '_ {
        self.rows.iter()
    }

    /// The held log indices, ascending.
    pub fn held(&self) -> std::ops::Range<LogIndex> {
        self.first..self.first + self.rows.len() as LogIndex
    }

    /// The row at `idx`; `None` past the end or once dropped ([`ObservedLog::is_dropped`]).
    pub fn row(&self, idx: LogIndex) -> Option<&Row> {
        self.rows.get(idx.checked_sub(self.first)? as usize)
    }

    pub fn meta(&self, idx: LogIndex) -> Option<&EventMeta> {
        self.row(idx).and_then(Row::meta)
    }

    pub fn resolve(&self, sym: Sym) -> &str {
        self.strings.resolve(sym)
    }

    pub fn resolve_opt(&self, sym: Option<Sym>) -> Option<&str> {
        sym.map(|s| self.strings.resolve(s))
    }

    /// The symbol of a string if any row mentions it.
    pub fn sym(&self, s: &str) -> Option<Sym> {
        self.strings.get(s)
    }

    /// The decode error message of a poison row.
    pub fn poison_error(&self, idx: LogIndex) -> Option<&str> {
        match self.row(idx)?.kind {
            RowKind::Poison { error } => Some(self.resolve(error)),
            RowKind::Event(_) => None,
        }
    }

    /// The raw record back, byte for byte.
    pub fn record(&self, idx: LogIndex) -> Option<Record> {
        self.record_clipped(idx, usize::MAX).map(|(r, _)| r)
    }

    /// The record if its bytes are at hand (in memory, or read back already): never asks the
    /// record store, so a window's frame can call it for every row it shows.
    pub fn record_at_hand(&self, idx: LogIndex) -> Option<Record> {
        let row = self.row(idx)?;
        self.bytes
            .read(row.blob, |blob| self.unpack(row, blob, usize::MAX))
            .flatten()
            .map(|(r, _)| r)
    }

    /// The record with its key, header values and value cut to at most `max` bytes each,
    /// and their full sizes: for showing a record without copying a large value.
    pub fn record_clipped(&self, idx: LogIndex, max: usize) -> Option<(Record, RecordSizes)> {
        let row = self.row(idx)?;
        if let Some(got) = self
            .bytes
            .read(row.blob, |blob| self.unpack(row, blob, max))
        {
            return got;
        }
        // Evicted: read its chunk back from the record store.
        let raw = self.read_back(row.blob.chunk).ok()?;
        let start = row.blob.start as usize;
        let blob = raw.get(start..start + row.blob.len as usize)?;
        self.unpack(row, blob, max)
    }

    fn unpack(&self, row: &Row, blob: &[u8], max: usize) -> Option<(Record, RecordSizes)> {
        let mut r = Reader(blob);
        let (key, key_len) = r.opt_clipped(max)?;
        let n = r.u32()?;
        let mut headers = super::record::Headers::default();
        let mut header_lens = Vec::with_capacity(n.min(1024) as usize);
        for _ in 0..n {
            let name = Sym(NonZeroU32::new(r.u32()?)?);
            let (v, len) = r.opt_clipped(max)?;
            headers.push(self.resolve(name), v.as_deref());
            header_lens.push(len);
        }
        let (value, value_len) = r.opt_clipped(max)?;
        let rec = Record {
            topic: self.resolve(row.topic).to_owned(),
            partition: row.partition,
            offset: row.offset,
            timestamp_ms: row.timestamp_ms(),
            key,
            headers,
            value,
        };
        let sizes = RecordSizes {
            key: key_len,
            headers: header_lens,
            value: value_len,
        };
        Some((rec, sizes))
    }

    /// The decoded event, payload included (re-decoded from the raw bytes). `None` for poison.
    pub fn event(&self, idx: LogIndex) -> Option<ObservedEvent> {
        self.meta(idx)?;
        decode(&self.record(idx)?, &self.cfg).ok()
    }

    /// Just the JSON payload of a row, parsed on demand.
    pub fn payload(&self, idx: LogIndex) -> Option<serde_json::Value> {
        self.event(idx).and_then(|e| e.payload)
    }

    fn list<'a>(&self, map: &'a SymIndex, key: Option<Sym>) -> &'a [LogIndex] {
        let l = key.map_or(&EMPTY[..], |k| map.get(k));
        self.held_part(l)
    }

    /// The part of an index list that is held (dropped entries are a prefix).
    fn held_part<'a>(&self, l: &'a [LogIndex]) -> &'a [LogIndex] {
        if l.first().is_some_and(|&i| i < self.first) {
            l.get(l.partition_point(|&i| i < self.first)..)
                .unwrap_or(&EMPTY[..])
        } else {
            l
        }
    }

    /// Every delivery of an event id, in arrival order.
    pub fn deliveries(&self, event_id: &str) -> &[LogIndex] {
        self.list(&self.by_event, self.sym(event_id))
    }
    pub fn deliveries_of(&self, event_id: Sym) -> &[LogIndex] {
        self.list(&self.by_event, Some(event_id))
    }
    /// Whether any row carried this event id (held, or dropped under the memory limit).
    pub fn has_event(&self, event_id: Sym) -> bool {
        self.by_event.one.contains_key(&event_id) || self.gone_events.contains(&event_id)
    }
    /// The records of a correlation chain, in arrival order.
    pub fn chain(&self, correlation_id: &str) -> &[LogIndex] {
        self.list(&self.by_correlation, self.sym(correlation_id))
    }
    pub fn chain_of(&self, correlation_id: Sym) -> &[LogIndex] {
        self.list(&self.by_correlation, Some(correlation_id))
    }
    /// The records caused by an event id (whose causation id is `event_id`).
    pub fn children(&self, event_id: &str) -> &[LogIndex] {
        self.list(&self.by_causation, self.sym(event_id))
    }
    /// Records whose causation id is `event_id` (interned), in arrival order.
    pub fn children_of(&self, event_id: Sym) -> &[LogIndex] {
        self.list(&self.by_causation, Some(event_id))
    }
    /// The records of an aggregate (subject / key), in arrival order.
    pub fn aggregate(&self, aggregate_id: &str) -> &[LogIndex] {
        self.list(&self.by_aggregate, self.sym(aggregate_id))
    }
    pub fn aggregate_of(&self, aggregate_id: Sym) -> &[LogIndex] {
        self.list(&self.by_aggregate, Some(aggregate_id))
    }
    /// The records of one trace.
    pub fn trace(&self, trace_id: &str) -> &[LogIndex] {
        self.list(&self.by_trace, self.sym(trace_id))
    }
    /// The records of one topic-partition in arrival order (offsets via [`Row::offset`]).
    pub fn partition(&self, topic: &str, partition: i32) -> &[LogIndex] {
        self.sym(topic)
            .and_then(|t| self.by_partition.get(&(t, partition)))
            .map_or(&EMPTY[..], |l| self.held_part(l))
    }
    /// All (topic, partition) pairs seen, sorted.
    pub fn topic_partitions(&self) -> Vec<(String, i32)> {
        let mut v: Vec<(String, i32)> = self
            .by_partition
            .keys()
            .map(|(t, p)| (self.resolve(*t).to_owned(), *p))
            .collect();
        v.sort();
        v
    }

    /// Whether `idx` is the first delivery of its event id (false for poison).
    pub fn is_first_delivery(&self, idx: LogIndex) -> bool {
        self.meta(idx).is_some_and(|m| m.first_delivery)
    }

    /// The first held row whose time is at or after `time_ms`.
    pub fn first_at_or_after(&self, time_ms: i64) -> Option<LogIndex> {
        let i = self.time_max.partition_point(|&t| t < time_ms);
        (i < self.rows.len())
            .then(|| LogIndex::try_from(i).ok())
            .flatten()
            .map(|i| self.first + i)
    }

    /// Heap bytes held, estimated from sizes and capacities in O(1): the arena (compressed
    /// chunks, open ones, the cache of decompressed ones), rows, index maps and their lists,
    /// the interned strings. What the memory limit is checked against.
    pub fn approx_bytes(&self) -> usize {
        self.memory_parts().iter().map(|p| p.1).sum()
    }

    /// The part of [`ObservedLog::approx_bytes`] that dropping records does not give back.
    pub fn undroppable_bytes(&self) -> usize {
        self.memory_parts()
            .iter()
            .filter(|p| matches!(p.0, "strings" | "dropped ids" | "lint state"))
            .map(|p| p.1)
            .sum()
    }

    /// [`ObservedLog::approx_bytes`] by part: what the memory limit can drop (arena, rows,
    /// index maps and lists) and what stays (interned strings; event ids and aggregates
    /// known only from dropped records).
    pub fn memory_parts(&self) -> [(&'static str, usize); 7] {
        [
            (
                "arena",
                self.bytes.bytes_used()
                    + self.bytes.chunks.capacity() * std::mem::size_of::<Chunk>()
                    + self.bytes.refs.capacity() * 4,
            ),
            // By length: the room a doubling adds is not touched (not resident) until rows
            // fill it, and counting it would drop every record at each doubling.
            (
                "rows",
                self.rows.len() * std::mem::size_of::<Row>() + self.time_max.len() * 8,
            ),
            (
                "indexes",
                self.id_indexes()
                    .iter()
                    .map(|i| fx_map_bytes(&i.one) + fx_map_bytes(&i.many))
                    .sum::<usize>()
                    + fx_map_bytes(&self.by_partition),
            ),
            ("index lists", self.list_heap),
            ("strings", self.strings.bytes_used()),
            (
                "dropped ids",
                fx_map_bytes(&self.agg_dropped)
                    + self.gone_events.capacity() * 5
                    + self.forget_queue.capacity() * 8
                    + fx_map_bytes(&self.unindexed)
                    + self.forgotten.bytes(),
            ),
            ("lint state", self.lint_bytes),
        ]
    }
}

/// Log indices by symbol, in arrival order. Most keys have one entry (an event id is
/// delivered once, most events cause one other): `one` holds every key's first index in 8
/// bytes, and only a key seen again has its whole list in `many` (a list with its map entry
/// takes 32 bytes, four times as much, and most of a million keys never need one).
#[derive(Default)]
struct SymIndex {
    /// Every key's first index (stale once `many` has the key: `many` is read first).
    one: FxMap<Sym, LogIndex>,
    /// The lists of keys with more than one entry.
    many: FxMap<Sym, IndexList>,
}

impl SymIndex {
    /// Append `idx` to `k`'s list; `heap` counts the bytes of spilled lists.
    fn push(&mut self, k: Sym, idx: LogIndex, heap: &mut usize) {
        match self.one.entry(k) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(idx);
            }
            std::collections::hash_map::Entry::Occupied(o) => {
                let first = *o.get();
                let list = self.many.entry(k).or_insert_with(|| {
                    let mut l = IndexList::new();
                    l.push(first);
                    l
                });
                let before = list_heap(list);
                list.push(idx);
                *heap = *heap + list_heap(list) - before;
            }
        }
    }

    fn get(&self, k: Sym) -> &[LogIndex] {
        match self.many.get(&k) {
            Some(l) => l.as_slice(),
            None => self.one.get(&k).map_or(&EMPTY[..], std::slice::from_ref),
        }
    }

    /// Drop `k`'s entries below `first` (a prefix): the key goes once all are dropped
    /// (returns true), a list loses its prefix once half of it is dropped; until then the
    /// getters skip it.
    fn prune(&mut self, k: Sym, first: LogIndex, heap: &mut usize) -> bool {
        let Some(list) = self.many.get_mut(&k) else {
            return match self.one.get(&k) {
                Some(&i) if i < first => {
                    self.one.remove(&k);
                    true
                }
                _ => false,
            };
        };
        let n = list.partition_point(|&i| i < first);
        if n == list.len() {
            *heap -= list_heap(list);
            self.many.remove(&k);
            self.one.remove(&k);
            return true;
        }
        if n * 2 >= list.len() {
            *heap -= list_heap(list);
            list.drain(..n);
            list.shrink_to_fit();
            *heap += list_heap(list);
        }
        false
    }
}

/// Heap bytes of an index list outside its map.
fn list_heap(l: &IndexList) -> usize {
    if l.spilled() {
        l.capacity() * 4
    } else {
        0
    }
}

fn put_opt(buf: &mut Vec<u8>, b: Option<&[u8]>) -> Option<()> {
    match b {
        None => buf.extend_from_slice(&NONE_LEN.to_le_bytes()),
        Some(b) => {
            let len = u32::try_from(b.len()).ok().filter(|&l| l != NONE_LEN)?;
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(b);
        }
    }
    Some(())
}

/// Pack key, headers and value: `[opt key][u32 n][n × (u32 name sym, opt value)][opt value]`,
/// where `opt` is a u32 length (`u32::MAX` = absent) followed by the bytes. `name` gives the
/// symbol of the header name at a position. `None`: a field too large, or a name not known.
fn pack(
    rec: &Record,
    buf: &mut Vec<u8>,
    mut name: impl FnMut(usize, &str) -> Option<Sym>,
) -> Option<()> {
    put_opt(buf, rec.key.as_deref())?;
    buf.extend_from_slice(&u32::try_from(rec.headers.len()).ok()?.to_le_bytes());
    for (i, (n, value)) in rec.headers.iter().enumerate() {
        buf.extend_from_slice(&name(i, n)?.0.get().to_le_bytes());
        put_opt(buf, value)?;
    }
    put_opt(buf, rec.value.as_deref())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }
    /// An optional byte field cut to `max` bytes, and its full length (0 when absent).
    fn opt_clipped(&mut self, max: usize) -> Option<(Option<Vec<u8>>, usize)> {
        match self.u32()? {
            NONE_LEN => Some((None, 0)),
            n => {
                let b = self.take(n as usize)?;
                Some((Some(b[..b.len().min(max)].to_vec()), b.len()))
            }
        }
    }
}

/// Full sizes in bytes of a record's byte fields (0 when absent), for
/// [`ObservedLog::record_clipped`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordSizes {
    pub key: usize,
    pub headers: Vec<usize>,
    pub value: usize,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CloudEvents binary record for fixtures.
    pub(crate) struct Ev<'a> {
        pub topic: &'a str,
        pub partition: i32,
        pub offset: i64,
        pub id: &'a str,
        pub ty: &'a str,
        pub agg: &'a str,
        pub corr: Option<&'a str>,
        pub cause: Option<&'a str>,
        pub version: Option<i64>,
        pub ts: i64,
        pub payload: &'a str,
    }

    impl Default for Ev<'_> {
        fn default() -> Self {
            Ev {
                topic: "orders",
                partition: 0,
                offset: 0,
                id: "e",
                ty: "OrderCreated",
                agg: "order-1",
                corr: Some("corr-1"),
                cause: None,
                version: None,
                ts: 0,
                payload: "{}",
            }
        }
    }

    impl Ev<'_> {
        pub(crate) fn rec(&self) -> Record {
            let mut r = Record::new(self.topic, self.partition, self.offset)
                .with_key(self.agg)
                .with_timestamp(self.ts)
                .with_header("ce_specversion", "1.0")
                .with_header("ce_id", self.id)
                .with_header("ce_type", self.ty)
                .with_header("ce_source", "/test")
                .with_header("ce_subject", self.agg)
                .with_header("content-type", "application/json")
                .with_value(self.payload.as_bytes().to_vec());
            if let Some(c) = self.corr {
                r = r.with_header("ce_correlationid", c);
            }
            if let Some(c) = self.cause {
                r = r.with_header("ce_causationid", c);
            }
            if let Some(v) = self.version {
                r = r.with_header("ce_aggregateversion", &v.to_string());
            }
            r
        }
    }

    #[test]
    fn interner_roundtrip() {
        let mut i = Interner::default();
        let a = i.intern("alpha").unwrap();
        let b = i.intern("").unwrap();
        let c = i.intern("gamma").unwrap();
        assert_eq!(i.intern("alpha"), Some(a));
        assert_eq!(i.resolve(a), "alpha");
        assert_eq!(i.resolve(b), "");
        assert_eq!(i.resolve(c), "gamma");
        assert_eq!(i.get("gamma"), Some(c));
        assert_eq!(i.get("delta"), None);
        for n in 0..10_000 {
            i.intern(&format!("s{n}")).unwrap();
        }
        assert_eq!(i.resolve(i.get("s9999").unwrap()), "s9999");
        assert_eq!(i.len(), 10_003);
    }

    /// A forgotten string resolves to "" and is not found; a pinned one is never forgotten;
    /// a forgotten slot takes a new string only once the next round began; compacting gives
    /// the bytes back and keeps every live symbol's string.
    #[test]
    fn interner_forgets_reuses_and_compacts() {
        let mut i = Interner::default();
        let name = i.intern_pinned("OrderCreated").unwrap();
        let ids: Vec<Sym> = (0..20_000)
            .map(|n| i.intern(&format!("id-{n:05}")).unwrap())
            .collect();
        assert!(!i.forget(name));
        assert_eq!(i.resolve(name), "OrderCreated");
        for &s in &ids[..15_000] {
            assert!(i.forget(s));
            assert!(!i.forget(s));
        }
        assert!(!i.is_live(ids[0]) && i.is_live(ids[15_000]));
        assert_eq!(i.resolve(ids[0]), "");
        assert_eq!(i.get("id-00000"), None);
        // Not reused in the round that forgot it.
        let late = i.intern("late").unwrap();
        assert!(!ids.contains(&late));
        i.reuse_forgotten();
        let reused = i.intern("reused").unwrap();
        assert!(ids[..15_000].contains(&reused));
        assert!(i.is_live(reused));
        assert_eq!(i.resolve(reused), "reused");
        let before = i.arena.len();
        i.compact();
        assert!(i.arena.len() < before / 3, "{} of {before}", i.arena.len());
        assert_eq!(i.dead_bytes, 0);
        for (n, &s) in ids.iter().enumerate().skip(15_000) {
            assert_eq!(i.resolve(s), format!("id-{n:05}"));
            assert_eq!(i.get(&format!("id-{n:05}")), Some(s));
        }
        assert_eq!(i.resolve(reused), "reused");
        assert_eq!(i.resolve(late), "late");
        assert_eq!(i.resolve(name), "OrderCreated");
        assert_eq!(i.len(), 20_002);
    }

    #[test]
    fn append_index_and_roundtrip() {
        let mut log = ObservedLog::default();
        let e1 = Ev {
            id: "a",
            version: Some(1),
            ..Ev::default()
        }
        .rec();
        let e2 = Ev {
            id: "b",
            cause: Some("a"),
            topic: "payments.commands",
            ty: "ProcessPayment",
            partition: 2,
            offset: 7,
            ..Ev::default()
        }
        .rec();
        let mut poison = Record::new("orders", 0, 1).with_value(vec![0xff, 0, 1]);
        poison.headers.push("weird", None);
        poison.headers.push("bin", Some(&[0x80]));
        let i1 = log.append(&e1, 10).unwrap();
        let i2 = log.append(&e2, 11).unwrap();
        let i3 = log.append(&poison, 12).unwrap();
        let i4 = log.append(&e1, 13).unwrap();
        assert_eq!((i1, i2, i3, i4), (0, 1, 2, 3));
        assert_eq!(log.record(i1).as_ref(), Some(&e1));
        assert_eq!(log.record(i2).as_ref(), Some(&e2));
        assert_eq!(log.record(i3).as_ref(), Some(&poison));
        assert!(log.poison_error(i3).is_some());
        assert_eq!(log.deliveries("a"), &[0, 3]);
        assert_eq!(log.chain("corr-1"), &[0, 1, 3]);
        assert_eq!(log.children("a"), &[1]);
        assert_eq!(log.aggregate("order-1"), &[0, 1, 3]);
        assert_eq!(log.partition("orders", 0), &[0, 2, 3]);
        assert_eq!(log.partition("payments.commands", 2), &[1]);
        assert!(log.meta(1).unwrap().is_command);
        assert!(log.is_first_delivery(0) && !log.is_first_delivery(3));
        assert_eq!(
            log.stats(),
            LogStats {
                observed: 4,
                unique: 2,
                duplicate_deliveries: 1,
                poison: 1
            }
        );
        assert_eq!(log.payload(0), Some(serde_json::json!({})));
        assert_eq!(
            log.meta(0).unwrap().order_key(),
            Some((VersionKind::AggregateVersion, 1))
        );
    }

    #[test]
    fn time_search() {
        let mut log = ObservedLog::default();
        for (i, ts) in [100, 300, 200, 400].into_iter().enumerate() {
            let id = format!("e{i}");
            log.append(
                &Ev {
                    id: &id,
                    ts,
                    ..Ev::default()
                }
                .rec(),
                0,
            )
            .unwrap();
        }
        assert_eq!(log.first_at_or_after(0), Some(0));
        assert_eq!(log.first_at_or_after(150), Some(1));
        assert_eq!(log.first_at_or_after(300), Some(1));
        assert_eq!(log.first_at_or_after(301), Some(3));
        assert_eq!(log.first_at_or_after(401), None);
    }

    #[test]
    fn big_values_get_their_own_chunk() {
        let mut log = ObservedLog::default();
        let big = Record::new("t", 0, 0).with_value(vec![7u8; CHUNK]);
        let i = log.append(&big, 0).unwrap();
        let small = Record::new("t", 0, 1).with_value(b"x".to_vec());
        let j = log.append(&small, 0).unwrap();
        assert_eq!(log.record(i).as_ref(), Some(&big));
        assert_eq!(log.record(j).as_ref(), Some(&small));
    }

    /// Full chunks are sealed (zstd) and read back byte for byte, in any order, through the
    /// small cache; the arena then holds much less than the records' size. Bytes zstd cannot
    /// shrink stay as they are.
    #[test]
    fn sealed_chunks_read_back_byte_for_byte() {
        let mut log = ObservedLog::default();
        let mut recs = Vec::new();
        let mut raw = 0;
        for i in 0..12_000i64 {
            let id = format!("e{i}");
            let payload = format!(
                r#"{{"order_id":"o-{}","total_cents":{},"note":"n{i}"}}"#,
                i % 97,
                i * 3
            );
            let r = Ev {
                id: &id,
                offset: i,
                payload: &payload,
                ..Ev::default()
            }
            .rec();
            raw += r.approx_size();
            log.append(&r, 0).unwrap();
            recs.push(r);
        }
        log.bytes.take_sealed(true);
        let sealed = log
            .bytes
            .chunks
            .iter()
            .filter(|c| matches!(c, Chunk::Sealed { .. }))
            .count();
        assert!(sealed >= 2, "{sealed} sealed chunks");
        for i in 0..log.bytes.chunks.len() - 1 {
            assert!(
                matches!(log.bytes.chunks[i], Chunk::Sealed { .. }),
                "chunk {i} is sealed once the thread is done"
            );
        }
        assert!(
            log.bytes.bytes_used() < raw / 2,
            "{} of {raw}",
            log.bytes.bytes_used()
        );
        // Forwards, backwards and strided: more chunks than the cache holds.
        log.bytes.cache_cap = 4;
        let n = recs.len() as u32;
        for i in (0..n).chain((0..n).rev()).chain((0..n).step_by(37)) {
            assert_eq!(
                log.record(i).as_ref(),
                Some(&recs[i as usize]),
                "record {i}"
            );
        }
        // Random bytes do not compress: kept raw, still read back.
        let noise: Vec<u8> = (0..CHUNK as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let big = Record::new("t", 0, 9).with_value(noise);
        let i = log.append(&big, 0).unwrap();
        assert_eq!(log.record(i).as_ref(), Some(&big));
    }

    /// A record of the memory-limit tests: unique id, one of 7 aggregates, a few hundred bytes.
    pub(crate) fn filler(i: i64) -> Record {
        let id = format!("e{i}");
        let agg = format!("order-{}", i % 7);
        let payload = format!(
            r#"{{"order_id":"{agg}","total_cents":{},"note":"n{i}","pad":"{}"}}"#,
            i * 3,
            "x".repeat((i % 50) as usize)
        );
        Ev {
            id: &id,
            agg: &agg,
            offset: i,
            ts: 1_000 + i,
            payload: &payload,
            ..Ev::default()
        }
        .rec()
    }

    /// Over the limit, the oldest records go a whole arena chunk at a time; what is held reads
    /// back byte for byte, what is gone reads as `None`, the index lists name only held
    /// records, and an event id once seen stays seen.
    #[test]
    fn memory_limit_drops_whole_chunks_oldest_first() {
        let limit = 4 << 20;
        let mut log = ObservedLog::default();
        log.set_memory_limit(Some(limit));
        let mut recs = Vec::new();
        let mut shed = 0;
        let mut at_limit = 0;
        for i in 0..30_000i64 {
            let r = filler(i);
            log.append(&r, 0).unwrap();
            shed += log.shed();
            recs.push(r);
            let open = log.row(log.first_held()).map(|r| r.blob.chunk as usize);
            assert!(
                log.approx_bytes() <= limit || open == log.bytes.current,
                "{} > {limit} after record {i}",
                log.approx_bytes()
            );
            if log.first_held() > 0 {
                at_limit = at_limit.max(log.approx_bytes());
            }
        }
        // Under the limit, not far under it.
        assert!(at_limit > limit * 3 / 4, "{at_limit}");
        let first = log.first_held();
        assert!(first > 10_000, "{first} dropped");
        assert_eq!(shed, first as usize);
        assert_eq!(log.len(), 30_000);
        assert_eq!(log.stats().observed, 30_000);
        let d = log.drop_stats();
        assert_eq!(d.dropped_records, u64::from(first));
        assert_eq!(d.held_records, 30_000 - u64::from(first));
        assert!(d.dropped_bytes > u64::from(first) * 200, "{d:?}");
        assert_eq!(d.limit_bytes, Some(limit as u64));
        // Whole chunks: every chunk before the first held row's is given back, and the
        // held rows use no other chunks.
        let c0 = log.row(first).unwrap().blob.chunk as usize;
        assert!(c0 > 2);
        for (c, chunk) in log.bytes.chunks.iter().enumerate() {
            assert_eq!(matches!(chunk, Chunk::Dropped), c < c0, "chunk {c}");
            assert_eq!(log.bytes.refs[c] == 0, c < c0, "chunk {c}");
        }
        // Dropped: gone. Held: byte for byte.
        for i in 0..30_000u32 {
            if i < first {
                assert!(log.is_dropped(i));
                assert!(log.row(i).is_none() && log.meta(i).is_none());
                assert!(log.record(i).is_none() && log.event(i).is_none());
            } else {
                assert!(!log.is_dropped(i));
                assert_eq!(log.record(i).as_ref(), Some(&recs[i as usize]), "{i}");
            }
        }
        assert_eq!(log.held(), first..30_000);
        assert_eq!(log.rows().count(), (30_000 - first) as usize);
        // Index lists hold only what is held.
        assert!(log.deliveries("e0").is_empty());
        assert_eq!(log.deliveries("e29999"), &[29_999]);
        let chain = log.chain("corr-1");
        assert_eq!(chain.len(), (30_000 - first) as usize);
        assert!(chain.iter().all(|&i| i >= first));
        assert_eq!(log.partition("orders", 0), chain);
        let mut per_agg = 0;
        for a in 0..7 {
            let agg = format!("order-{a}");
            let list = log.aggregate(&agg);
            assert!(list.first().is_some_and(|&i| i >= first), "{agg}");
            per_agg += list.len();
            let (n, last) = log.aggregate_dropped(log.sym(&agg).unwrap()).unwrap();
            assert!(last < first && n as usize > 1000, "{agg}: {n} {last}");
        }
        assert_eq!(per_agg, (30_000 - first) as usize);
        assert_eq!(log.first_at_or_after(0), Some(first));
        assert_eq!(log.first_at_or_after(1_000 + 29_999), Some(29_999));
        // An event id whose deliveries were all dropped is still seen: a redelivery is no
        // first delivery, and a causation id naming it points to an observed event.
        let e0 = log.sym("e0").unwrap();
        assert!(log.has_event(e0));
        let again = log.append(&recs[0], 0).unwrap();
        assert!(!log.is_first_delivery(again));
        assert_eq!(log.stats().duplicate_deliveries, 1);
        assert_eq!(log.deliveries("e0"), &[again]);
    }

    /// Poison rows' error texts (one per record here) are forgotten like ids once no held
    /// row carries them; a held poison row keeps its error.
    #[test]
    fn poison_errors_of_dropped_records_are_forgotten() {
        let limit = 1 << 20;
        let mut log = ObservedLog::default();
        log.set_memory_limit(Some(limit));
        let poison = |i: i64| {
            let mut r = filler(i);
            r.headers.retain(|name, _| name != "ce_aggregateversion");
            r.headers
                .push("ce_aggregateversion", Some(format!("x{i}").as_bytes()));
            r
        };
        for i in 0..100_000i64 {
            log.append(&if i % 3 == 0 { poison(i) } else { filler(i) }, 0)
                .unwrap();
            log.shed();
        }
        assert!(log.drop_stats().forgotten_ids > 50_000);
        // 33,334 distinct errors went through: theirs are forgotten too.
        assert!(log.strings.len() < 20_000, "{} slots", log.strings.len());
        let mut held = 0;
        for idx in log.held().filter(|i| i % 3 == 0) {
            let why = log.poison_error(idx).unwrap();
            assert!(why.contains(&format!("`x{idx}`")), "{why}");
            held += 1;
        }
        assert!(held > 100);
    }

    /// The ids only dropped records carried are forgotten, oldest first, once they hold an
    /// eighth of the limit: the log stays within the limit however many unique ids go
    /// through it, the held records keep their ids, the last dropped ids are still known,
    /// and an id forgotten and seen again is new (and said to be maybe forgotten).
    #[test]
    fn memory_limit_forgets_the_oldest_ids_of_dropped_records() {
        let limit = 1 << 20;
        let mut log = ObservedLog::default();
        log.set_memory_limit(Some(limit));
        let mut peak = 0;
        let mut epochs = 0;
        for i in 0..200_000i64 {
            log.append(&filler(i), 0).unwrap();
            let epoch = log.forget_epoch();
            log.shed();
            epochs += usize::from(log.forget_epoch() != epoch);
            assert!(log.forget_epoch() <= epoch + 1, "one round per shed");
            peak = peak.max(log.approx_bytes());
        }
        let d = log.drop_stats();
        assert!(d.forgotten_ids > 100_000 && epochs > 10, "{d:?} {epochs}");
        assert!(d.undroppable_bytes < (limit / 2) as u64, "{d:?}");
        assert!(peak < limit + limit / 8, "peak {peak}");
        // Forgotten slots are reused: the interner does not grow with the ids.
        assert!(log.strings.len() < 100_000, "{} slots", log.strings.len());
        for idx in log.held() {
            let m = log.meta(idx).unwrap();
            assert_eq!(log.resolve(m.event_id), format!("e{idx}"));
            assert_eq!(
                log.resolve_opt(m.aggregate_id),
                Some(format!("order-{}", idx % 7).as_str())
            );
        }
        // The ids of dropped records not forgotten yet are still known (how many depends on
        // when the last round ran: one under pressure forgets every queued id).
        let last_dropped = log.first_held() - 1;
        for i in last_dropped.saturating_sub(2_000)..=last_dropped {
            if let Some(s) = log.sym(&format!("e{i}")) {
                assert!(log.has_event(s) && log.is_live(s), "e{i}");
            }
        }
        // Forgotten: new when seen again. The last forgotten are still known to have been.
        assert_eq!(log.sym("e0"), None);
        let newest_forgotten = (0..last_dropped)
            .rev()
            .find(|i| log.sym(&format!("e{i}")).is_none())
            .unwrap();
        let again = log.append(&filler(newest_forgotten.into()), 0).unwrap();
        assert!(log.is_first_delivery(again));
        let id = log.meta(again).unwrap().event_id;
        assert!(log.maybe_forgotten(id));
        let never = log.strings.intern("never-seen").unwrap();
        assert!(!log.maybe_forgotten(never));
    }

    /// Without a limit nothing is dropped; a limit smaller than one chunk keeps the chunk
    /// being filled (and always the newest record).
    #[test]
    fn memory_limit_edges() {
        let mut log = ObservedLog::default();
        for i in 0..5_000 {
            log.append(&filler(i), 0).unwrap();
            assert_eq!(log.shed(), 0);
        }
        assert_eq!(log.first_held(), 0);
        let mut log = ObservedLog::default();
        log.set_memory_limit(Some(1));
        for i in 0..5_000 {
            log.append(&filler(i), 0).unwrap();
            log.shed();
            let c = log.row(log.first_held()).unwrap().blob.chunk as usize;
            assert_eq!(Some(c), log.bytes.current, "only the open chunk is held");
        }
        let big = Record::new("t", 0, 0).with_value(vec![7u8; CHUNK]);
        let i = log.append(&big, 0).unwrap();
        log.shed();
        assert_eq!(log.record(i).as_ref(), Some(&big));
    }
    /// Record `i` of [`filler`] with a ~2 KB value that compresses about twofold, as real
    /// payloads do: the payloads outweigh the rows.
    fn noisy(i: i64) -> Record {
        let mut x = i as u64 + 1;
        let noise: String = (0..128)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                format!("{:016x}", x >> 1)
            })
            .collect();
        let mut r = filler(i);
        r.value = Some(format!(r#"{{"n":{i},"blob":"{noise}"}}"#).into_bytes());
        r
    }

    /// A record store over a vector, as Kafka would answer: records by position, some of
    /// them lost or replaced, every read counted.
    #[derive(Default)]
    struct VecStore {
        records: std::sync::Mutex<Vec<Record>>,
        reads: AtomicUsize,
    }

    impl RecordStore for std::sync::Arc<VecStore> {
        fn fetch(&self, ranges: &[OffsetRange]) -> Result<Vec<Record>, String> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let records = self.records.lock().unwrap();
            Ok(records
                .iter()
                .filter(|r| {
                    ranges.iter().any(|g| {
                        g.topic == r.topic
                            && g.partition == r.partition
                            && (g.first..=g.last).contains(&r.offset)
                    })
                })
                .cloned()
                .collect())
        }
        fn describe(&self) -> String {
            "the test store".into()
        }
    }

    /// A log that connects to another broker: records appended since read back from the new
    /// store, those before from the old one (a chunk never mixes the two), also once the log
    /// is read again; a chunk from a time without a store is dropped, not evicted.
    #[test]
    fn each_record_reads_back_from_the_store_it_came_from() {
        let limit = 2 << 20;
        let (a, b) = (
            std::sync::Arc::new(VecStore::default()),
            std::sync::Arc::new(VecStore::default()),
        );
        let mut log = ObservedLog::default();
        log.set_memory_limit(Some(limit));
        log.set_record_store(RecordStoreHandle::new(a.clone()));
        let mut recs = Vec::new();
        for i in 0..6_000i64 {
            if i == 3_001 {
                log.set_record_store(RecordStoreHandle::new(b.clone()));
            }
            let r = noisy(i);
            // The same topic and offsets on both brokers, other bytes on the wrong one.
            let mut other = r.clone();
            other.value = Some(b"{\"not\":\"this one\"}".to_vec());
            let (right, wrong) = if i <= 3_000 { (&a, &b) } else { (&b, &a) };
            right.records.lock().unwrap().push(r.clone());
            wrong.records.lock().unwrap().push(other);
            log.append(&r, 0).unwrap();
            log.shed();
            recs.push(r);
        }
        let d = log.drop_stats();
        assert_eq!(d.dropped_records, 0, "{d:?}");
        assert!(d.payloads_in_store > 3_500, "{d:?}");
        let chunk_of = |i: usize| log.row(i as LogIndex).unwrap().blob.chunk;
        assert_ne!(
            chunk_of(3_000),
            chunk_of(3_001),
            "a chunk holds one store's records"
        );
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(log.record(i as LogIndex).as_ref(), Some(r), "{i}");
        }
        assert!(a.reads.load(Ordering::Relaxed) > 0 && b.reads.load(Ordering::Relaxed) > 0);
        // Read again (as a profile change does): the records keep their stores.
        let mut again = ObservedLog::default();
        again.set_memory_limit(Some(limit));
        again.set_record_store(RecordStoreHandle::new(b.clone()));
        again.continue_drops_from(&log);
        for (i, r) in recs.iter().enumerate() {
            again.append_like(&log, Some(i as LogIndex));
            again.append(r, 0).unwrap();
            again.shed();
        }
        again.append_like(&log, None);
        assert!(again.drop_stats().payloads_in_store > 3_500);
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(again.record(i as LogIndex).as_ref(), Some(r), "{i}");
        }
        // Connected to the embedded broker (no store): those records cannot be evicted, so
        // under the limit they are dropped, oldest first, once nothing older can be evicted.
        log.set_record_store(RecordStoreHandle::default());
        for i in 6_000..9_000i64 {
            log.append(&noisy(i), 0).unwrap();
            log.shed();
        }
        let d = log.drop_stats();
        assert!(d.dropped_records > 0, "{d:?}");
        let newest = log.len() as LogIndex - 1;
        assert_eq!(log.record(newest), Some(noisy(8_999)));
        assert!(
            log.approx_bytes() <= limit + limit / 4,
            "{}",
            log.approx_bytes()
        );
    }

    /// With a record store, the limit evicts payload bytes before it drops any record: rows
    /// and indexes stay, and every record reads back byte for byte through the store.
    #[test]
    fn with_a_record_store_payloads_are_evicted_and_read_back() {
        let limit = 2 << 20;
        let store = std::sync::Arc::new(VecStore::default());
        let mut log = ObservedLog::default();
        log.set_memory_limit(Some(limit));
        log.set_record_store(RecordStoreHandle::new(store.clone()));
        let mut recs = Vec::new();
        for i in 0..5_000i64 {
            let r = noisy(i);
            store.records.lock().unwrap().push(r.clone());
            log.append(&r, 0).unwrap();
            log.shed();
            recs.push(r);
            assert!(
                log.approx_bytes() <= limit,
                "{} after {i}",
                log.approx_bytes()
            );
        }
        let d = log.drop_stats();
        assert_eq!(d.dropped_records, 0, "{d:?}");
        assert!(d.payloads_in_store > 2_000, "{d:?}");
        assert_eq!(
            store.reads.load(Ordering::Relaxed),
            0,
            "ingest reads nothing back"
        );
        let in_store = log
            .bytes
            .chunks
            .iter()
            .filter(|c| matches!(c, Chunk::InStore { .. }))
            .count();
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(log.record(i as LogIndex).as_ref(), Some(r), "{i}");
        }
        assert_eq!(log.deliveries("e0"), &[0]);
        assert_eq!(
            log.aggregate("order-3").len(),
            (3..5_000).step_by(7).count()
        );
        // One read per READ_AHEAD evicted chunks, then the cache answers.
        assert_eq!(
            store.reads.load(Ordering::Relaxed),
            in_store.div_ceil(READ_AHEAD as usize)
        );
        assert_eq!(log.event(5).unwrap().event_id, "e5");
        // Once rows alone outgrow the limit, the oldest records are dropped as without one.
        log.set_memory_limit(Some(log.approx_bytes() / 2));
        log.append(&noisy(5_000), 0).unwrap();
        assert!(log.shed() > 0);
        assert!(log.first_held() > 0);
        let first = log.first_held();
        assert_eq!(log.record(first).as_ref(), Some(&recs[first as usize]));
        assert!(log.drop_stats().payloads_in_store < d.payloads_in_store);
    }

    /// The index-only mode: with a payload budget of 0 every chunk but the one being filled is
    /// evicted at once, with no memory limit; records still read back byte for byte.
    #[test]
    fn a_payload_budget_of_nothing_keeps_only_the_index() {
        let store = std::sync::Arc::new(VecStore::default());
        let mut log = ObservedLog::default();
        log.set_record_store(RecordStoreHandle::new(store.clone()));
        log.set_payload_budget(Some(0));
        let mut recs = Vec::new();
        for i in 0..3_000i64 {
            let r = noisy(i);
            store.records.lock().unwrap().push(r.clone());
            log.append(&r, 0).unwrap();
            log.shed();
            recs.push(r);
            assert!(log.bytes.held <= 2 * CHUNK, "{} after {i}", log.bytes.held);
        }
        let d = log.drop_stats();
        assert_eq!((d.limit_bytes, d.dropped_records), (None, 0));
        assert!(d.payloads_in_store > 2_900, "{d:?}");
        for (i, r) in recs.iter().enumerate().rev() {
            assert_eq!(log.record(i as LogIndex).as_ref(), Some(r), "{i}");
        }
        // Without a store the budget does nothing: there is nowhere to read back from.
        let mut log = ObservedLog::default();
        log.set_payload_budget(Some(0));
        for r in &recs {
            log.append(r, 0).unwrap();
            log.shed();
        }
        assert_eq!(log.drop_stats().payloads_in_store, 0);
    }

    /// A record the store no longer has, or has other bytes at its offset, does not read back;
    /// the log says why, and does not ask again at once.
    #[test]
    fn a_record_the_store_lost_or_changed_reads_as_unreadable() {
        let store = std::sync::Arc::new(VecStore::default());
        let mut log = ObservedLog::default();
        log.set_memory_limit(Some(1 << 20));
        log.set_record_store(RecordStoreHandle::new(store.clone()));
        for i in 0..2_000i64 {
            let r = noisy(i);
            store.records.lock().unwrap().push(r.clone());
            log.append(&r, 0).unwrap();
            log.shed();
        }
        assert_eq!(log.first_held(), 0);
        let evicted: Vec<usize> = (0..log.bytes.chunks.len())
            .filter(|&c| matches!(log.bytes.chunks[c], Chunk::InStore { .. }))
            .collect();
        assert!(evicted.len() > 30, "{}", evicted.len());
        assert_eq!(
            evicted[..30],
            (0..30).collect::<Vec<_>>()[..],
            "oldest first"
        );
        let rows_of = |c: usize| log.bytes.rows_of[c];
        let mut recs = store.records.lock().unwrap();
        // Retention took record 10 (chunk 0).
        recs.remove(10);
        // Another record at an offset of chunk 10: same length, other bytes.
        let (lo, _) = rows_of(10);
        let r = recs
            .iter_mut()
            .find(|r| r.offset == i64::from(lo + 1))
            .unwrap();
        let v = r.value.as_mut().unwrap();
        let last = v.len() - 2;
        v[last] ^= 1;
        // And one of chunk 20 of another length.
        let (lo, _) = rows_of(20);
        let r = recs.iter_mut().find(|r| r.offset == i64::from(lo)).unwrap();
        r.value = Some(b"{}".to_vec());
        drop(recs);

        assert!(log.record(10).is_none());
        let why = log.unreadable(10).unwrap();
        assert!(why.contains("no longer has orders/0@10"), "{why}");
        let reads = store.reads.load(Ordering::Relaxed);
        assert!(log.record(11).is_none(), "same chunk, same verdict");
        assert_eq!(
            store.reads.load(Ordering::Relaxed),
            reads,
            "not asked again at once"
        );
        // Chunk 1, read ahead with chunk 0, is fine.
        let (lo, hi) = rows_of(1);
        assert_eq!(log.record(hi).unwrap().offset, i64::from(hi));
        assert!(log.unreadable(lo).is_none());
        assert_eq!(store.reads.load(Ordering::Relaxed), reads);
        // The checksum tells a record of the same length with other bytes.
        let (_, hi) = rows_of(10);
        assert!(log.record(hi).is_none());
        let why = log.unreadable(hi).unwrap();
        assert!(why.contains("differ"), "{why}");
        // Another length: the record does not fit its place.
        let (lo, _) = rows_of(20);
        let why = log.unreadable(lo).unwrap();
        assert!(why.contains("is not the record observed"), "{why}");
        // The other chunks read back.
        let (lo, hi) = rows_of(evicted[29]);
        assert_eq!(log.record(hi).unwrap().offset, i64::from(hi));
        assert!(log.unreadable(lo).is_none());
        assert_eq!(log.record(1_999).unwrap().offset, 1_999);
    }
}
