//! Upcasters: how the `Order` aggregate reads events stored in older (or
//! other) versions of their contract. A pure table: (type, version) -> a
//! transform to another version, chained until the version the fold reads.
//! Persisted type names are never renamed; a new shape is a new version plus
//! an entry here (cqrs-es `persist/upcaster.rs`).

use serde_json::Value;

/// The version of each type that `domain::OrderEvent` reads.
pub fn current(event_type: &str) -> u32 {
    match event_type {
        "OrderCreated" => 2,
        _ => 1,
    }
}

type Transform = fn(Value) -> Value;

/// (type, from version, to version, transform).
const UPCASTERS: &[(&str, u32, u32, Transform)] = &[
    ("OrderCreated", 1, 2, order_created_v1_to_v2),
    ("OrderCreated", 3, 2, order_created_v3_to_v2),
];

/// v2 added the optional `currency`; v1 orders were all in euros.
fn order_created_v1_to_v2(mut data: Value) -> Value {
    if let Some(o) = data.as_object_mut() {
        o.entry("currency").or_insert_with(|| "EUR".into());
    }
    data
}

/// v3 (the breaking draft the `schema-drift` fault writes) renamed `items` to
/// `line_items`. The order service wrote it, so it can read it back; the
/// other services, which know only the registered versions, cannot.
fn order_created_v3_to_v2(mut data: Value) -> Value {
    if let Some(o) = data.as_object_mut() {
        if let Some(items) = o.remove("line_items") {
            o.insert("items".into(), items);
        }
    }
    order_created_v1_to_v2(data)
}

/// Bring `data` of `event_type` from `version` to [`current`]. Returns the
/// versions it passed through (empty when it was current already), or None
/// when no chain leads there.
pub fn upcast(event_type: &str, version: u32, data: Value) -> Option<(Value, Vec<u32>)> {
    let target = current(event_type);
    let (mut v, mut data, mut path) = (version, data, Vec::new());
    while v != target {
        let (_, _, to, f) = UPCASTERS
            .iter()
            .find(|(t, from, _, _)| *t == event_type && *from == v)?;
        path.push(v);
        data = f(data);
        v = *to;
        if path.len() > UPCASTERS.len() {
            return None;
        }
    }
    Some((data, path))
}

/// The version of a stored or observed `OrderCreated`-like payload when no
/// `dataschema` names it (records written before contracts existed).
pub fn guess_version(event_type: &str, data: &Value) -> u32 {
    match event_type {
        "OrderCreated" if data.get("line_items").is_some() => 3,
        "OrderCreated" if data.get("currency").is_some() => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chains_to_the_current_version() {
        let v1 = json!({"order_id": "o", "items": [1]});
        let (v2, path) = upcast("OrderCreated", 1, v1).unwrap();
        assert_eq!(v2["currency"], "EUR");
        assert_eq!(path, vec![1]);
        let v3 = json!({"order_id": "o", "line_items": [1], "currency": "USD"});
        let (back, path) = upcast("OrderCreated", 3, v3).unwrap();
        assert_eq!(
            back,
            json!({"order_id": "o", "items": [1], "currency": "USD"})
        );
        assert_eq!(path, vec![3]);
        let (same, path) = upcast("OrderCompleted", 1, json!({"a": 1})).unwrap();
        assert_eq!((same, path), (json!({"a": 1}), vec![]));
        assert!(upcast("OrderCreated", 9, json!({})).is_none());
    }
}
