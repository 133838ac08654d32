//! Reading an Avro datum without building it: the observer's ingest path.
//!
//! Ingest needs two things from a record's value: that it decodes, and its structural
//! fingerprint (see `model::envelope::fields::shape_of`). Decoding a datum with
//! `apache-avro` builds a `Value` tree (a `String` per field name, a `Box` per union) and then
//! a JSON tree from it, only to drop both. [`AvroPlan::skim`] walks the bytes along the
//! schema instead, checking what the decoder checks, and hashes the structure on the way.
//!
//! It is strict: anything it is not sure `apache-avro` accepts it refuses, and the caller
//! then decodes the datum fully, so the decoder stays the judge of what is valid and of the
//! error message. Schemas with logical types that carry their own checks (decimals, UUIDs,
//! durations) get no plan and always take the full decode.

use std::collections::HashMap;
use std::hash::Hasher;

use apache_avro::schema::{Name, Namespace, Schema};

use crate::model::log::FxHasher;

/// Nesting beyond which the skim gives up (the full decode then judges).
const MAX_NESTING: u16 = 256;

/// One node of a compiled schema; children are indexes into [`AvroPlan::nodes`].
#[derive(Debug)]
enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Fixed(usize),
    Enum(usize),
    Array(usize),
    Map(usize),
    Union(Vec<usize>),
    Record(Vec<usize>),
}

/// An Avro schema compiled for [`AvroPlan::skim`]; named types (and recursion) are edges.
#[derive(Debug)]
pub struct AvroPlan {
    nodes: Vec<Node>,
    root: usize,
}

struct Builder {
    nodes: Vec<Node>,
    names: HashMap<Name, usize>,
}

impl Builder {
    fn add(&mut self, schema: &Schema, ns: &Namespace, nesting: u16) -> Option<usize> {
        if nesting > MAX_NESTING {
            return None;
        }
        let leaf = |b: &mut Builder, n: Node| {
            b.nodes.push(n);
            Some(b.nodes.len() - 1)
        };
        match schema {
            Schema::Null => leaf(self, Node::Null),
            Schema::Boolean => leaf(self, Node::Boolean),
            Schema::Int | Schema::Date | Schema::TimeMillis => leaf(self, Node::Int),
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => leaf(self, Node::Long),
            Schema::Float => leaf(self, Node::Float),
            Schema::Double => leaf(self, Node::Double),
            Schema::Bytes => leaf(self, Node::Bytes),
            Schema::String => leaf(self, Node::String),
            Schema::Fixed(f) => {
                let i = leaf(self, Node::Fixed(f.size))?;
                self.names.insert(f.name.fully_qualified_name(ns), i);
                Some(i)
            }
            Schema::Enum(e) => {
                let i = leaf(self, Node::Enum(e.symbols.len()))?;
                self.names.insert(e.name.fully_qualified_name(ns), i);
                Some(i)
            }
            Schema::Array(a) => {
                let slot = leaf(self, Node::Null)?;
                let items = self.add(&a.items, ns, nesting + 1)?;
                self.nodes[slot] = Node::Array(items);
                Some(slot)
            }
            Schema::Map(m) => {
                let slot = leaf(self, Node::Null)?;
                let values = self.add(&m.types, ns, nesting + 1)?;
                self.nodes[slot] = Node::Map(values);
                Some(slot)
            }
            Schema::Union(u) => {
                let slot = leaf(self, Node::Null)?;
                let variants = u
                    .variants()
                    .iter()
                    .map(|v| self.add(v, ns, nesting + 1))
                    .collect::<Option<Vec<_>>>()?;
                self.nodes[slot] = Node::Union(variants);
                Some(slot)
            }
            Schema::Record(r) => {
                // Named before its fields, so that a field can refer back to it.
                let slot = leaf(self, Node::Null)?;
                let name = r.name.fully_qualified_name(ns);
                let inner = name.namespace.clone();
                self.names.insert(name, slot);
                let fields = r
                    .fields
                    .iter()
                    .map(|f| self.add(&f.schema, &inner, nesting + 1))
                    .collect::<Option<Vec<_>>>()?;
                self.nodes[slot] = Node::Record(fields);
                Some(slot)
            }
            Schema::Ref { name } => self.names.get(&name.fully_qualified_name(ns)).copied(),
            // Logical types with checks of their own: the full decode.
            Schema::Decimal(_) | Schema::BigDecimal | Schema::Uuid | Schema::Duration => None,
        }
    }
}

/// Why a skim stopped; the caller decodes fully and reports the decoder's reason.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused;

/// Bytes read along the schema.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Refused> {
        let (head, rest) = self.0.split_at_checked(n).ok_or(Refused)?;
        self.0 = rest;
        Ok(head)
    }
    /// A zigzag varint, as `apache_avro::util::zag_i64` reads it (at most 10 bytes).
    fn long(&mut self) -> Result<i64, Refused> {
        let mut z = 0u64;
        for j in 0..10 {
            let b = *self.take(1)?.first().ok_or(Refused)?;
            z |= u64::from(b & 0x7f) << (j * 7);
            if b & 0x80 == 0 {
                return Ok(if z & 1 == 0 {
                    (z >> 1) as i64
                } else {
                    !(z >> 1) as i64
                });
            }
        }
        Err(Refused)
    }
    fn int(&mut self) -> Result<i32, Refused> {
        i32::try_from(self.long()?).map_err(|_| Refused)
    }
    /// A byte or string length: not negative, within the decoder's allocation limit.
    fn len(&mut self) -> Result<usize, Refused> {
        usize::try_from(self.long()?)
            .ok()
            .filter(|&n| n <= super::MAX_AVRO_ALLOCATION)
            .ok_or(Refused)
    }
    /// An array or map block's item count (0 ends the sequence); a negative count is
    /// followed by the block's size in bytes. More items than bytes left: refused (items
    /// that take no bytes are the full decode's to judge).
    fn block(&mut self) -> Result<usize, Refused> {
        let raw = self.long()?;
        let n = match raw {
            0 => return Ok(0),
            n if n < 0 => {
                self.long()?;
                n.checked_neg().ok_or(Refused)?
            }
            n => n,
        };
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= super::MAX_AVRO_ALLOCATION && n <= self.0.len())
            .ok_or(Refused)
    }
}

/// Markers of the fingerprint (as in `shape_of`).
const END: u8 = 0xfe;
const KEY_END: u8 = 0xff;

impl AvroPlan {
    /// The plan for `schema` (with the named types of `references`); None when the schema
    /// has a type the skim leaves to the full decode.
    pub fn new(schema: &Schema, references: &[Schema]) -> Option<AvroPlan> {
        let mut b = Builder {
            nodes: Vec::new(),
            names: HashMap::new(),
        };
        for r in references {
            b.add(r, &None, 0)?;
        }
        let root = b.add(schema, &None, 0)?;
        Some(AvroPlan {
            nodes: b.nodes,
            root,
        })
    }

    /// Check that `datum` is exactly one datum of the schema, and hash its structure down
    /// to `depth` levels (union branches taken, whether arrays and bytes are empty, the keys
    /// of maps; the schema fixes the rest) into `h`.
    pub fn skim(&self, datum: &[u8], depth: u8, h: &mut FxHasher) -> Result<(), Refused> {
        let mut r = Reader(datum);
        self.walk(self.root, &mut r, i32::from(depth), h, 0)?;
        if r.0.is_empty() {
            Ok(())
        } else {
            Err(Refused)
        }
    }

    /// `depth` < 0: below the fingerprint, only checked.
    fn walk(
        &self,
        n: usize,
        r: &mut Reader<'_>,
        depth: i32,
        h: &mut FxHasher,
        nesting: u16,
    ) -> Result<(), Refused> {
        if nesting > MAX_NESTING {
            return Err(Refused);
        }
        let down = (depth - 1).max(-1);
        match self.nodes.get(n).ok_or(Refused)? {
            Node::Null => {}
            Node::Boolean => {
                if *r.take(1)?.first().ok_or(Refused)? > 1 {
                    return Err(Refused);
                }
            }
            Node::Int => {
                r.int()?;
            }
            Node::Long => {
                r.long()?;
            }
            Node::Float => {
                r.take(4)?;
            }
            Node::Double => {
                r.take(8)?;
            }
            Node::Bytes => {
                let len = r.len()?;
                r.take(len)?;
                if depth > 0 {
                    h.write_u8(u8::from(len > 0));
                }
            }
            Node::String => {
                let len = r.len()?;
                std::str::from_utf8(r.take(len)?).map_err(|_| Refused)?;
            }
            Node::Fixed(size) => {
                r.take(*size)?;
            }
            Node::Enum(symbols) => {
                let i = usize::try_from(r.int()?).map_err(|_| Refused)?;
                if i >= *symbols {
                    return Err(Refused);
                }
            }
            Node::Array(items) => {
                let mut first = true;
                loop {
                    let count = r.block()?;
                    if count == 0 {
                        break;
                    }
                    for _ in 0..count {
                        let d = if first { down } else { -1 };
                        if first && depth >= 0 {
                            h.write_u8(1);
                        }
                        first = false;
                        self.walk(*items, r, d, h, nesting + 1)?;
                    }
                }
                if depth >= 0 {
                    h.write_u8(END);
                }
            }
            Node::Map(values) => {
                loop {
                    let count = r.block()?;
                    if count == 0 {
                        break;
                    }
                    for _ in 0..count {
                        let len = r.len()?;
                        let key = std::str::from_utf8(r.take(len)?).map_err(|_| Refused)?;
                        if depth > 0 {
                            h.write(key.as_bytes());
                            h.write_u8(KEY_END);
                        }
                        self.walk(*values, r, down, h, nesting + 1)?;
                    }
                }
                if depth >= 0 {
                    h.write_u8(END);
                }
            }
            Node::Union(variants) => {
                let i = usize::try_from(r.long()?).map_err(|_| Refused)?;
                let v = *variants.get(i).ok_or(Refused)?;
                if depth >= 0 {
                    h.write_u64(i as u64);
                }
                self.walk(v, r, depth, h, nesting + 1)?;
            }
            Node::Record(fields) => {
                for &f in fields {
                    self.walk(f, r, down, h, nesting + 1)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value as A;

    const SCHEMA: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
        {"name":"id","type":"string"},
        {"name":"total","type":"long"},
        {"name":"paid","type":"boolean"},
        {"name":"note","type":["null","string"],"default":null},
        {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B"]}},
        {"name":"tags","type":{"type":"map","values":"int"}},
        {"name":"lines","type":{"type":"array","items":{"type":"record","name":"Line",
            "fields":[{"name":"sku","type":"string"},{"name":"qty","type":"int"},
                      {"name":"next","type":["null","Line"],"default":null}]}}},
        {"name":"hash","type":{"type":"fixed","name":"H","size":4}},
        {"name":"raw","type":"bytes"},
        {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"ratio","type":"double"}
    ]}"#;

    fn datum(schema: &Schema, note: Option<&str>, lines: usize, tags: &[(&str, i32)]) -> Vec<u8> {
        let line = |i: usize| {
            A::Record(vec![
                ("sku".into(), A::String(format!("s{i}"))),
                ("qty".into(), A::Int(i as i32)),
                ("next".into(), A::Union(0, Box::new(A::Null))),
            ])
        };
        let v = A::Record(vec![
            ("id".into(), A::String("o-1".into())),
            ("total".into(), A::Long(-42)),
            ("paid".into(), A::Boolean(true)),
            (
                "note".into(),
                match note {
                    Some(n) => A::Union(1, Box::new(A::String(n.into()))),
                    None => A::Union(0, Box::new(A::Null)),
                },
            ),
            ("kind".into(), A::Enum(1, "B".into())),
            (
                "tags".into(),
                A::Map(
                    tags.iter()
                        .map(|(k, v)| ((*k).into(), A::Int(*v)))
                        .collect(),
                ),
            ),
            ("lines".into(), A::Array((0..lines).map(line).collect())),
            ("hash".into(), A::Fixed(4, vec![1, 2, 3, 4])),
            ("raw".into(), A::Bytes(vec![9; 3])),
            ("at".into(), A::TimestampMillis(1_700_000_000_000)),
            ("ratio".into(), A::Double(0.5)),
        ]);
        apache_avro::to_avro_datum(schema, v).unwrap()
    }

    fn fp(plan: &AvroPlan, d: &[u8]) -> Result<u64, Refused> {
        let mut h = FxHasher::default();
        plan.skim(d, 3, &mut h).map(|()| h.finish())
    }

    /// The skim accepts what the decoder writes, tells structures apart (union branch,
    /// empty array, map keys) and not values, and refuses every cut of a datum and
    /// trailing bytes, as the decoder does.
    #[test]
    fn skims_what_the_decoder_reads() {
        let schema = Schema::parse_str(SCHEMA).unwrap();
        let plan = AvroPlan::new(&schema, &[]).expect("a plan");
        let a = datum(&schema, None, 2, &[("x", 1)]);
        let fa = fp(&plan, &a).unwrap();
        assert_eq!(
            fa,
            fp(&plan, &datum(&schema, None, 5, &[("x", 9)])).unwrap()
        );
        assert_ne!(
            fa,
            fp(&plan, &datum(&schema, Some("n"), 2, &[("x", 1)])).unwrap()
        );
        assert_ne!(
            fa,
            fp(&plan, &datum(&schema, None, 0, &[("x", 1)])).unwrap()
        );
        assert_ne!(
            fa,
            fp(&plan, &datum(&schema, None, 2, &[("y", 1)])).unwrap()
        );
        for cut in 0..a.len() {
            let d = &a[..cut];
            if fp(&plan, d).is_ok() {
                panic!("a datum cut at {cut} was accepted");
            }
        }
        let mut long = a.clone();
        long.push(0);
        assert_eq!(fp(&plan, &long), Err(Refused));
        // Whatever the skim accepts, the decoder accepts: flip each byte and compare.
        for i in 0..a.len() {
            for b in [0u8, 1, 2, 0x7f, 0x80, 0xff] {
                let mut d = a.clone();
                d[i] = b;
                if fp(&plan, &d).is_ok() {
                    let mut rd = d.as_slice();
                    let decoded = apache_avro::from_avro_datum(&schema, &mut rd, None);
                    assert!(
                        decoded.is_ok() && rd.is_empty(),
                        "skim accepted what the decoder refuses: byte {i} = {b:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn logical_types_with_checks_take_the_full_decode() {
        let s = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[{"name":"u","type":{"type":"string","logicalType":"uuid"}}]}"#,
        )
        .unwrap();
        assert!(AvroPlan::new(&s, &[]).is_none());
    }
}
