//! Searching the raw bytes of every file SQLite keeps for a database for a
//! secret, in every encoding a codec could have written it in.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use openmls::prelude::KeyPackageBundle;

/// The two private keys of a bundle (init, encryption), read from its serde
/// form (OpenMLS only exposes one of them outside its own tests).
pub fn private_keys(bundle: &KeyPackageBundle) -> (Vec<u8>, Vec<u8>) {
    let value = serde_json::to_value(bundle).unwrap();
    (
        first_byte_array(&value["private_init_key"]).expect("init key"),
        first_byte_array(&value["private_encryption_key"]).expect("encryption key"),
    )
}

fn first_byte_array(value: &serde_json::Value) -> Option<Vec<u8>> {
    match value {
        serde_json::Value::Array(items)
            if !items.is_empty() && items.iter().all(|i| i.is_u64()) =>
        {
            items.iter().map(|i| i.as_u64().map(|b| b as u8)).collect()
        }
        serde_json::Value::Array(items) => items.iter().find_map(first_byte_array),
        serde_json::Value::Object(map) => map.values().find_map(first_byte_array),
        _ => None,
    }
}

/// Every way a codec could have laid `key` out: raw, as MessagePack
/// integers (one byte each below 128, `0xcc` and the byte above), and as the
/// decimal list JSON writes.
pub fn encodings(key: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let msgpack = key
        .iter()
        .flat_map(|&b| if b < 128 { vec![b] } else { vec![0xcc, b] })
        .collect();
    let json = key
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes();
    vec![
        ("raw", key.to_vec()),
        ("messagepack", msgpack),
        ("json", json),
    ]
}

/// The files SQLite may keep for a database.
pub fn database_files(db: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{}{suffix}", db.display())))
        .filter(|p| p.exists())
        .collect()
}

/// Where `key` can still be found, as "file: encoding" lines.
pub fn traces(db: &Path, key: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for file in database_files(db) {
        let bytes = std::fs::read(&file).unwrap();
        for (encoding, pattern) in encodings(key) {
            if bytes
                .windows(pattern.len())
                .any(|w| w == pattern.as_slice())
            {
                found.push(format!("{}: {encoding}", file.display()));
            }
        }
    }
    found
}

/// Where any of `keys` can still be found.
pub fn traces_of_all(db: &Path, keys: &[Vec<u8>]) -> Vec<String> {
    keys.iter().flat_map(|key| traces(db, key)).collect()
}

/// Checks `found` every 50 ms until it finds nothing or `within` has passed;
/// returns what it found last.
pub fn until_none(within: Duration, mut found: impl FnMut() -> Vec<String>) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let now = found();
        if now.is_empty() || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks `done` every 50 ms until it holds or `within` has passed;
/// returns whether it held.
pub fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Bytes from lowercase hex.
pub fn from_hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}
