use serde::Serialize;

/// Pretty JSON of any report value, newline-terminated.
pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(value).expect("report values serialize");
    out.push(b'\n');
    out
}
