//! Turning one JSON value into the JSON of a typed value in place, reporting what changed.
//!
//! After an event, a fold's state differs from the one before by little (a note appended, a
//! status changed). Serializing the whole state again and diffing it against the previous JSON
//! costs a pass that allocates every string of the state; walking the typed state against the
//! previous JSON instead allocates only what changed. [`patch_json`] does that walk with a
//! `serde` serializer that compares as it goes (phase 1, read-only), then applies the changes it
//! found (phase 2). The result is what `serde_json::to_value` gives, and the changes are those
//! [`json_diff`] reports, in the same order.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde::ser::{self, Serialize, Serializer};
use serde_json::value::Serializer as ValueSerializer;
use serde_json::{Error, Map, Value};

use super::{diff_at, json_diff, JsonChange};

/// Make `json` equal to `serde_json::to_value(value)` and return the changes made, as
/// `json_diff(old json, new json)` would. When `value` cannot be serialized, `json` is
/// replaced by `Value::Null` (what a fold's `to_value(..).unwrap_or(Null)` gives).
pub fn patch_json<T: Serialize + ?Sized>(value: &T, json: &mut Value) -> Vec<JsonChange> {
    let mut segs = Vec::new();
    let mut found = Vec::new();
    let walk = value.serialize(Cmp {
        old: Some(json),
        segs: &mut segs,
        found: &mut found,
    });
    if walk.is_err() {
        let new = Value::Null;
        let d = json_diff(json, &new);
        *json = new;
        return d;
    }
    found.sort_by(|a, b| cmp_segs(&a.segs, &b.segs));
    let mut changes = Vec::new();
    for f in found {
        apply(json, &f.segs, f.new);
        changes.extend(f.changes);
    }
    changes
}

/// One step of a path: an object key (a struct's field name, or a key of the old JSON that
/// goes) or an array index. Map keys only appear inside a subtree replaced whole.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(Cow<'static, str>),
    Index(usize),
}

/// The order [`json_diff`] visits paths in: keys in byte order, indices in number order.
fn cmp_segs(a: &[Seg], b: &[Seg]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = match (x, y) {
            (Seg::Key(x), Seg::Key(y)) => x.cmp(y),
            (Seg::Index(x), Seg::Index(y)) => x.cmp(y),
            (Seg::Key(_), Seg::Index(_)) => Ordering::Less,
            (Seg::Index(_), Seg::Key(_)) => Ordering::Greater,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

fn pointer(segs: &[Seg]) -> String {
    use std::fmt::Write as _;
    let mut p = String::new();
    for s in segs {
        match s {
            Seg::Key(k) => {
                p.push('/');
                p.push_str(&k.replace('~', "~0").replace('/', "~1"));
            }
            Seg::Index(i) => {
                let _ = write!(p, "/{i}");
            }
        }
    }
    p
}

/// A change found by the walk: the new value at `segs` (`None`: remove it) and the changes
/// it makes there, in [`json_diff`]'s order.
struct Found {
    segs: Vec<Seg>,
    new: Option<Value>,
    changes: Vec<JsonChange>,
}

/// Put `new` at `segs` (the parent exists: the walk came through it).
fn apply(json: &mut Value, segs: &[Seg], new: Option<Value>) {
    let Some((last, parents)) = segs.split_last() else {
        *json = new.unwrap_or(Value::Null);
        return;
    };
    let mut at = json;
    for s in parents {
        let next = match (s, at) {
            (Seg::Key(k), Value::Object(o)) => o.get_mut(k.as_ref()),
            (Seg::Index(i), Value::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => at = n,
            None => return,
        }
    }
    match (last, at, new) {
        (Seg::Key(k), Value::Object(o), Some(v)) => {
            o.insert(k.clone().into_owned(), v);
        }
        (Seg::Key(k), Value::Object(o), None) => {
            o.remove(k.as_ref());
        }
        (Seg::Index(i), Value::Array(a), Some(v)) => match a.get_mut(*i) {
            Some(slot) => *slot = v,
            None => a.push(v),
        },
        // Removals come in index order: the first cuts the array to its new length.
        (Seg::Index(i), Value::Array(a), None) => a.truncate(*i),
        _ => {}
    }
}

/// Compares a value being serialized with `old` (`None`: absent there).
struct Cmp<'a, 'p> {
    old: Option<&'a Value>,
    segs: &'p mut Vec<Seg>,
    found: &'p mut Vec<Found>,
}

impl<'a, 'p> Cmp<'a, 'p> {
    /// The new value here is `new` (a leaf, or a subtree built by `serde_json`).
    fn found(self, new: Value) {
        if self.old == Some(&new) {
            return;
        }
        let mut changes = Vec::new();
        let mut path = pointer(self.segs);
        diff_at(&mut path, self.old, Some(&new), &mut changes);
        self.found.push(Found {
            segs: self.segs.clone(),
            new: Some(new),
            changes,
        });
    }

    /// Done with this value: `new` is its JSON.
    fn end(self, new: Result<Value, Error>) -> Result<(), Error> {
        self.found(new?);
        Ok(())
    }

    fn build<S>(self, inner: S) -> Build<'a, 'p, S> {
        Build { inner, at: self }
    }
}

/// A value of a kind compared as a whole: built by `serde_json`, then diffed.
struct Build<'a, 'p, S> {
    inner: S,
    at: Cmp<'a, 'p>,
}

/// Serialize `value` against `old` one level down (`seg`).
fn child<T: Serialize + ?Sized>(
    segs: &mut Vec<Seg>,
    found: &mut Vec<Found>,
    seg: Seg,
    old: Option<&Value>,
    value: &T,
) -> Result<(), Error> {
    segs.push(seg);
    let r = value.serialize(Cmp {
        old,
        segs: &mut *segs,
        found: &mut *found,
    });
    segs.pop();
    r
}

impl<'a, 'p> Serializer for Cmp<'a, 'p> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Seq<'a, 'p>;
    type SerializeTuple = Seq<'a, 'p>;
    type SerializeTupleStruct = Seq<'a, 'p>;
    type SerializeTupleVariant =
        Build<'a, 'p, <ValueSerializer as Serializer>::SerializeTupleVariant>;
    type SerializeMap = Build<'a, 'p, <ValueSerializer as Serializer>::SerializeMap>;
    type SerializeStruct = Struct<'a, 'p>;
    type SerializeStructVariant =
        Build<'a, 'p, <ValueSerializer as Serializer>::SerializeStructVariant>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.end(ValueSerializer.serialize_bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.end(ValueSerializer.serialize_i8(v))
    }
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.end(ValueSerializer.serialize_i16(v))
    }
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.end(ValueSerializer.serialize_i32(v))
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.end(ValueSerializer.serialize_i64(v))
    }
    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        self.end(ValueSerializer.serialize_i128(v))
    }
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.end(ValueSerializer.serialize_u8(v))
    }
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.end(ValueSerializer.serialize_u16(v))
    }
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.end(ValueSerializer.serialize_u32(v))
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        self.end(ValueSerializer.serialize_u64(v))
    }
    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        self.end(ValueSerializer.serialize_u128(v))
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        self.end(ValueSerializer.serialize_f32(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.end(ValueSerializer.serialize_f64(v))
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.end(ValueSerializer.serialize_char(v))
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        // The common case, and allocation-free when unchanged.
        if self.old.and_then(Value::as_str) == Some(v) {
            return Ok(());
        }
        self.end(Ok(Value::String(v.to_owned())))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        self.end(ValueSerializer.serialize_bytes(v))
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.end(Ok(Value::Null))
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.end(Ok(Value::Null))
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.end(Ok(Value::Null))
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.end(ValueSerializer.serialize_newtype_variant(name, index, variant, value))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Seq<'a, 'p>, Error> {
        match self.old {
            Some(Value::Array(old)) => Ok(Seq::Cmp {
                old,
                i: 0,
                at: self,
            }),
            _ => Ok(Seq::Build(self.build(ValueSerializer.serialize_seq(len)?))),
        }
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq<'a, 'p>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Seq<'a, 'p>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        let inner = ValueSerializer.serialize_tuple_variant(name, index, variant, len)?;
        Ok(self.build(inner))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, Error> {
        let inner = ValueSerializer.serialize_map(len)?;
        Ok(self.build(inner))
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Struct<'a, 'p>, Error> {
        // serde_json's own markers (raw values, arbitrary-precision numbers) are not objects.
        match self.old {
            Some(Value::Object(old)) if !name.starts_with("$serde_json") => Ok(Struct::Cmp {
                old,
                seen: Vec::with_capacity(len),
                at: self,
            }),
            _ => Ok(Struct::Build(
                self.build(ValueSerializer.serialize_struct(name, len)?),
            )),
        }
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        let inner = ValueSerializer.serialize_struct_variant(name, index, variant, len)?;
        Ok(self.build(inner))
    }
}

/// A sequence: element by element against an old array, else built whole.
enum Seq<'a, 'p> {
    Cmp {
        old: &'a Vec<Value>,
        i: usize,
        at: Cmp<'a, 'p>,
    },
    Build(Build<'a, 'p, <ValueSerializer as Serializer>::SerializeSeq>),
}

impl Seq<'_, '_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        match self {
            Seq::Cmp { old, i, at } => {
                let r = child(at.segs, at.found, Seg::Index(*i), old.get(*i), value);
                *i += 1;
                r
            }
            Seq::Build(b) => ser::SerializeSeq::serialize_element(&mut b.inner, value),
        }
    }

    fn finish(self) -> Result<(), Error> {
        match self {
            Seq::Cmp { old, i, at } => {
                // Elements past the new length go, each reported like json_diff does.
                if let Some(gone) = old.get(i..).filter(|g| !g.is_empty()) {
                    for (n, v) in gone.iter().enumerate() {
                        at.segs.push(Seg::Index(i + n));
                        at.found.push(Found {
                            segs: at.segs.clone(),
                            new: None,
                            changes: vec![JsonChange {
                                path: pointer(at.segs),
                                old: Some(v.clone()),
                                new: None,
                            }],
                        });
                        at.segs.pop();
                    }
                }
                Ok(())
            }
            Seq::Build(b) => {
                let new = ser::SerializeSeq::end(b.inner);
                b.at.end(new)
            }
        }
    }
}

impl ser::SerializeSeq for Seq<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeTuple for Seq<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Seq<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

/// A struct: field by field against an old object, else built whole.
enum Struct<'a, 'p> {
    Cmp {
        old: &'a Map<String, Value>,
        seen: Vec<&'static str>,
        at: Cmp<'a, 'p>,
    },
    Build(Build<'a, 'p, <ValueSerializer as Serializer>::SerializeStruct>),
}

impl ser::SerializeStruct for Struct<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        match self {
            Struct::Cmp { old, seen, at } => {
                seen.push(key);
                child(
                    at.segs,
                    at.found,
                    Seg::Key(Cow::Borrowed(key)),
                    old.get(key),
                    value,
                )
            }
            Struct::Build(b) => ser::SerializeStruct::serialize_field(&mut b.inner, key, value),
        }
    }
    fn end(self) -> Result<(), Error> {
        match self {
            Struct::Cmp { old, seen, at } => {
                // Keys the new value does not have (a skipped field) go.
                for (k, v) in old.iter().filter(|(k, _)| !seen.contains(&k.as_str())) {
                    at.segs.push(Seg::Key(Cow::Owned(k.clone())));
                    at.found.push(Found {
                        segs: at.segs.clone(),
                        new: None,
                        changes: vec![JsonChange {
                            path: pointer(at.segs),
                            old: Some(v.clone()),
                            new: None,
                        }],
                    });
                    at.segs.pop();
                }
                Ok(())
            }
            Struct::Build(b) => {
                let new = ser::SerializeStruct::end(b.inner);
                b.at.end(new)
            }
        }
    }
}

impl ser::SerializeTupleVariant
    for Build<'_, '_, <ValueSerializer as Serializer>::SerializeTupleVariant>
{
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeTupleVariant::serialize_field(&mut self.inner, value)
    }
    fn end(self) -> Result<(), Error> {
        let new = ser::SerializeTupleVariant::end(self.inner);
        self.at.end(new)
    }
}

impl ser::SerializeMap for Build<'_, '_, <ValueSerializer as Serializer>::SerializeMap> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        ser::SerializeMap::serialize_key(&mut self.inner, key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeMap::serialize_value(&mut self.inner, value)
    }
    fn end(self) -> Result<(), Error> {
        let new = ser::SerializeMap::end(self.inner);
        self.at.end(new)
    }
}

impl ser::SerializeStructVariant
    for Build<'_, '_, <ValueSerializer as Serializer>::SerializeStructVariant>
{
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        ser::SerializeStructVariant::serialize_field(&mut self.inner, key, value)
    }
    fn end(self) -> Result<(), Error> {
        let new = ser::SerializeStructVariant::end(self.inner);
        self.at.end(new)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::Serialize;
    use serde_json::{json, Value};

    use super::patch_json;
    use crate::model::timetravel::json_diff;

    #[derive(Debug, Clone, Serialize)]
    enum Kind {
        Unit,
        New(i64),
        Pair(u8, String),
        Rec { a: bool, b: Option<String> },
    }

    #[derive(Debug, Clone, Serialize)]
    struct Item {
        id: String,
        n: i64,
    }

    #[derive(Debug, Clone, Serialize)]
    struct State {
        name: String,
        #[serde(rename = "a/b~c")]
        odd: u32,
        ratio: f64,
        maybe: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<i64>,
        notes: Vec<String>,
        items: Vec<Item>,
        kind: Kind,
        tags: BTreeMap<String, i64>,
        pair: (u8, bool),
    }

    fn state() -> impl Strategy<Value = State> {
        let s = || "[a-c]{0,2}";
        let kind = prop_oneof![
            Just(Kind::Unit),
            (-2i64..2).prop_map(Kind::New),
            (0u8..2, s()).prop_map(|(x, y)| Kind::Pair(x, y)),
            (any::<bool>(), proptest::option::of(s())).prop_map(|(a, b)| Kind::Rec { a, b }),
        ];
        (
            (
                s(),
                0u32..2,
                prop_oneof![Just(0.5), Just(f64::NAN), Just(-1.0)],
            ),
            (proptest::option::of(s()), proptest::option::of(0i64..2)),
            proptest::collection::vec(s(), 0..4),
            proptest::collection::vec((s(), 0i64..2).prop_map(|(id, n)| Item { id, n }), 0..3),
            kind,
            proptest::collection::btree_map(s(), 0i64..2, 0..3),
            (0u8..2, any::<bool>()),
        )
            .prop_map(
                |((name, odd, ratio), (maybe, skipped), notes, items, kind, tags, pair)| State {
                    name,
                    odd,
                    ratio,
                    maybe,
                    skipped,
                    notes,
                    items,
                    kind,
                    tags,
                    pair,
                },
            )
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-2i64..3).prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("name".to_owned()),
                        Just("notes".to_owned()),
                        Just("a/b~c".to_owned()),
                        "[a-c]{1}"
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn check<T: Serialize>(old: Value, new: &T) -> Result<(), TestCaseError> {
        let want = serde_json::to_value(new).unwrap_or(Value::Null);
        let mut got = old.clone();
        let changes = patch_json(new, &mut got);
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(changes, json_diff(&old, &want));
        Ok(())
    }

    proptest! {
        #[test]
        fn patching_equals_serializing_and_diffing(a in state(), b in state()) {
            check(serde_json::to_value(&a).unwrap(), &b)?;
        }

        #[test]
        fn patching_any_json(old in json_value(), b in state(), v in json_value()) {
            check(old.clone(), &b)?;
            check(old, &v)?;
        }
    }

    #[test]
    fn an_appended_note_is_one_change() {
        let mut st = json!({"notes": ["a", "b"], "version": 2});
        #[derive(Serialize)]
        struct S {
            notes: Vec<&'static str>,
            version: i64,
        }
        let changes = patch_json(
            &S {
                notes: vec!["a", "b", "c"],
                version: 3,
            },
            &mut st,
        );
        assert_eq!(st, json!({"notes": ["a", "b", "c"], "version": 3}));
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["/notes/2", "/version"]);
    }
}
