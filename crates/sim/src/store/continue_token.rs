//! The continue tokens of paginated lists: the resourceVersion of the snapshot and the last key.

use super::error::*;

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct ContinueKey {
    pub(crate) rv: u64,
    pub(crate) epoch: u64,
    pub(crate) start: (String, String),
}

pub(crate) fn encode_continue(k: &ContinueKey) -> String {
    serde_json::to_vec(k)
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn decode_continue(s: &str) -> Result<ContinueKey, StoreError> {
    let bad = || StoreError::BadRequest(format!("continue key is not valid: {s:?}"));
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return Err(bad());
    }
    let bytes: Result<Vec<u8>, _> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16))
        .collect();
    serde_json::from_slice(&bytes.map_err(|_| bad())?).map_err(|_| bad())
}
