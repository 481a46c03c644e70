//! Finding secrets in stored entities without knowing their types: every
//! byte sequence of a stored value, read through any self-describing codec.

use std::cell::RefCell;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Every byte sequence of at least `min_len` bytes in `value`, decoded with
/// `decode` (a codec's `deserialize_any`): `serde` byte strings, and
/// sequences of integers that all fit a byte (how serde writes `Vec<u8>`
/// in MessagePack and JSON).
pub fn byte_sequences<'de, D: Deserializer<'de>>(decode: D, min_len: usize) -> Vec<Vec<u8>> {
    let found = RefCell::new(Vec::new());
    Walker {
        found: &found,
        min_len,
    }
    .deserialize(decode)
    .expect("a self-describing value");
    found.into_inner()
}

/// Every byte sequence of at least 16 bytes in a MessagePack blob.
pub fn msgpack_byte_sequences(blob: &[u8]) -> Vec<Vec<u8>> {
    byte_sequences(&mut rmp_serde::Deserializer::new(blob), 16)
}

enum Node {
    Byte(u8),
    Other,
}

#[derive(Clone, Copy)]
struct Walker<'a> {
    found: &'a RefCell<Vec<Vec<u8>>>,
    min_len: usize,
}

impl<'de> DeserializeSeed<'de> for Walker<'_> {
    type Value = Node;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walker<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any value")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(u8::try_from(v).map_or(Node::Other, Node::Byte))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(u8::try_from(v).map_or(Node::Other, Node::Byte))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        self.deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        self.deserialize(d)
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
        if v.len() >= self.min_len {
            self.found.borrow_mut().push(v.to_vec());
        }
        Ok(Node::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut bytes = Vec::new();
        let mut all_bytes = true;
        while let Some(node) = seq.next_element_seed(self)? {
            match node {
                Node::Byte(b) => bytes.push(b),
                Node::Other => all_bytes = false,
            }
        }
        if all_bytes && bytes.len() >= self.min_len {
            self.found.borrow_mut().push(bytes);
        }
        Ok(Node::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        while map.next_entry_seed(self, self)?.is_some() {}
        Ok(Node::Other)
    }
}
