//! `mvccpb.KeyValue`, written by hand instead of generated (build.rs maps the proto type here).
//!
//! The generated encoder appends a `Bytes` field by cloning it first (prost's `BytesAdapter`),
//! an atomic increment and decrement on the value's shared header for each key and value it
//! writes. Encoding a large range or a burst of watch events touches those headers nowhere else,
//! so each clone is a cache miss: a profile of a 100,000-key range put 44% of the gRPC worker's
//! time there. This encoder copies the bytes straight from the slice. The wire format is the
//! same field for field (`tests/integration/proto_wire.rs` compares it with the generated messages).

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;

#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyValue {
    /// The key; never empty for a stored record.
    pub key: Bytes,
    /// Revision of the write that created this key in its current generation.
    pub create_revision: i64,
    /// Revision of the most recent write to this key.
    pub mod_revision: i64,
    /// Number of writes to the key in this generation; a delete resets it to zero.
    pub version: i64,
    pub value: Bytes,
    /// Lease the key is attached to, or 0 for none.
    pub lease: i64,
}

const KEY: u32 = 1;
const CREATE_REVISION: u32 = 2;
const MOD_REVISION: u32 = 3;
const VERSION: u32 = 4;
const VALUE: u32 = 5;
const LEASE: u32 = 6;

/// A proto3 bytes field: absent when empty, else key, length and the bytes themselves.
fn put_bytes(tag: u32, bytes: &Bytes, buf: &mut impl BufMut) {
    if !bytes.is_empty() {
        encoding::encode_key(tag, WireType::LengthDelimited, buf);
        encoding::encode_varint(bytes.len() as u64, buf);
        buf.put_slice(bytes);
    }
}

/// A proto3 int64 field: absent when zero.
fn put_int64(tag: u32, value: i64, buf: &mut impl BufMut) {
    if value != 0 {
        encoding::int64::encode(tag, &value, buf);
    }
}

fn bytes_len(tag: u32, bytes: &Bytes) -> usize {
    if bytes.is_empty() {
        0
    } else {
        encoding::bytes::encoded_len(tag, bytes)
    }
}

fn int64_len(tag: u32, value: i64) -> usize {
    if value == 0 {
        0
    } else {
        encoding::int64::encoded_len(tag, &value)
    }
}

impl KeyValue {
    /// The length of this pair's encoding with a value of `value_len` bytes in place of its own
    /// (empty) one.
    pub fn encoded_len_with_value(&self, value_len: usize) -> usize {
        debug_assert!(self.value.is_empty(), "the value comes from elsewhere");
        let value_field_len = if value_len == 0 {
            0
        } else {
            encoding::key_len(VALUE) + encoding::encoded_len_varint(value_len as u64) + value_len
        };
        prost::Message::encoded_len(self) + value_field_len
    }

    /// Writes this pair as field `tag` of an enclosing message, as `prost::encoding::message`
    /// would with a value of `value_len` bytes, up to where those bytes go: the caller puts
    /// them there (a value read from disk straight into the encoding), then calls
    /// [`KeyValue::encode_after_value`]. The pair's own `value` must be empty.
    pub fn encode_up_to_value(&self, tag: u32, value_len: usize, buf: &mut impl BufMut) {
        encoding::encode_key(tag, WireType::LengthDelimited, buf);
        encoding::encode_varint(self.encoded_len_with_value(value_len) as u64, buf);
        put_bytes(KEY, &self.key, buf);
        put_int64(CREATE_REVISION, self.create_revision, buf);
        put_int64(MOD_REVISION, self.mod_revision, buf);
        put_int64(VERSION, self.version, buf);
        if value_len > 0 {
            encoding::encode_key(VALUE, WireType::LengthDelimited, buf);
            encoding::encode_varint(value_len as u64, buf);
        }
    }

    /// The fields after the value, to follow [`KeyValue::encode_up_to_value`] and the value.
    pub fn encode_after_value(&self, buf: &mut impl BufMut) {
        put_int64(LEASE, self.lease, buf);
    }
}

impl prost::Message for KeyValue {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_bytes(KEY, &self.key, buf);
        put_int64(CREATE_REVISION, self.create_revision, buf);
        put_int64(MOD_REVISION, self.mod_revision, buf);
        put_int64(VERSION, self.version, buf);
        put_bytes(VALUE, &self.value, buf);
        put_int64(LEASE, self.lease, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let field = match tag {
            KEY => (
                "key",
                encoding::bytes::merge(wire_type, &mut self.key, buf, ctx),
            ),
            CREATE_REVISION => (
                "create_revision",
                encoding::int64::merge(wire_type, &mut self.create_revision, buf, ctx),
            ),
            MOD_REVISION => (
                "mod_revision",
                encoding::int64::merge(wire_type, &mut self.mod_revision, buf, ctx),
            ),
            VERSION => (
                "version",
                encoding::int64::merge(wire_type, &mut self.version, buf, ctx),
            ),
            VALUE => (
                "value",
                encoding::bytes::merge(wire_type, &mut self.value, buf, ctx),
            ),
            LEASE => (
                "lease",
                encoding::int64::merge(wire_type, &mut self.lease, buf, ctx),
            ),
            _ => return encoding::skip_field(wire_type, tag, buf, ctx),
        };
        let (name, result) = field;
        result.map_err(|mut error| {
            error.push("KeyValue", name);
            error
        })
    }

    fn encoded_len(&self) -> usize {
        bytes_len(KEY, &self.key)
            + int64_len(CREATE_REVISION, self.create_revision)
            + int64_len(MOD_REVISION, self.mod_revision)
            + int64_len(VERSION, self.version)
            + bytes_len(VALUE, &self.value)
            + int64_len(LEASE, self.lease)
    }

    fn clear(&mut self) {
        *self = KeyValue::default();
    }
}

/// As the generated messages print: every field, bytes as their debug form.
impl std::fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .field("version", &self.version)
            .field("value", &self.value)
            .field("lease", &self.lease)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    /// What prost's derive makes of proto/mvccpb/kv.proto's KeyValue: the reference encoding.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Derived {
        #[prost(bytes = "bytes", tag = "1")]
        key: Bytes,
        #[prost(int64, tag = "2")]
        create_revision: i64,
        #[prost(int64, tag = "3")]
        mod_revision: i64,
        #[prost(int64, tag = "4")]
        version: i64,
        #[prost(bytes = "bytes", tag = "5")]
        value: Bytes,
        #[prost(int64, tag = "6")]
        lease: i64,
    }

    fn int64() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(0i64),
            Just(-1i64),
            Just(i64::MAX),
            any::<i64>(),
            0..300i64
        ]
    }

    fn bytes() -> impl Strategy<Value = Bytes> {
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
    }

    proptest! {
        #[test]
        fn encodes_and_decodes_as_the_derived_message(
            key in bytes(), value in bytes(),
            create_revision in int64(), mod_revision in int64(),
            version in int64(), lease in int64(),
        ) {
            let ours = KeyValue { key, create_revision, mod_revision, version, value, lease };
            let derived = Derived {
                key: ours.key.clone(),
                create_revision,
                mod_revision,
                version,
                value: ours.value.clone(),
                lease,
            };
            let wire = ours.encode_to_vec();
            prop_assert_eq!(&wire, &derived.encode_to_vec());
            prop_assert_eq!(ours.encoded_len(), wire.len());
            prop_assert_eq!(KeyValue::decode(&wire[..]).expect("decodes"), ours);
        }

        #[test]
        fn a_value_filled_into_its_hole_encodes_as_the_whole_pair(
            key in bytes(), value in bytes(), version in int64(), lease in int64(),
            tag in 1u32..40,
        ) {
            let whole = KeyValue { key, version, value, lease, ..KeyValue::default() };
            let mut expected = Vec::new();
            encoding::message::encode(tag, &whole, &mut expected);
            let mut holed = vec![7u8; 3];
            let without = KeyValue { value: Bytes::new(), ..whole.clone() };
            without.encode_up_to_value(tag, whole.value.len(), &mut holed);
            holed.extend_from_slice(&whole.value);
            without.encode_after_value(&mut holed);
            prop_assert_eq!(&holed[3..], &expected[..]);
            prop_assert_eq!(
                encoding::key_len(tag)
                    + encoding::encoded_len_varint(without.encoded_len_with_value(whole.value.len()) as u64)
                    + without.encoded_len_with_value(whole.value.len()),
                expected.len()
            );
        }
    }

    #[test]
    fn unknown_fields_are_skipped_and_bad_wire_types_refused() {
        // Field 7 (varint 5), then key "k".
        let wire = [0x38, 0x05, 0x0a, 0x01, b'k'];
        let decoded = KeyValue::decode(&wire[..]).expect("unknown fields are skipped");
        assert_eq!(&decoded.key[..], b"k");
        // Key (field 1) as a varint instead of length-delimited.
        let error = KeyValue::decode(&[0x08, 0x01][..]).expect_err("wrong wire type");
        assert!(error.to_string().contains("KeyValue.key"), "{error}");
    }
}
