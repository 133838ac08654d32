//! Deterministic identifiers: the same seed gives the same ids, so runs can be compared.

use uuid::Uuid;

const NAMESPACE: Uuid = Uuid::from_u128(0x6576_656e_7473_636f_7065_2d64_656d_6f00);

/// A name-based (v5) UUID for `parts` joined by `:`.
pub fn derive(parts: &[&str]) -> String {
    let name = parts.join(":");
    Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string()
}

/// Order id of the `n`-th order placed under `seed`.
pub fn order_id(seed: u64, n: u64) -> String {
    derive(&["order", &seed.to_string(), &n.to_string()])
}

/// A fresh random id, for things that must never collide across runs.
pub fn random() -> String {
    Uuid::new_v4().to_string()
}
