//! Just enough of the protobuf wire format for what kubectl sends and reads: decoding the name
//! of an object a client sends as `application/vnd.kubernetes.protobuf` (kubectl 1.33's
//! `create namespace` does: the `k8s\0` envelope holds a `runtime.Unknown` whose `raw`
//! (field 2) is the object, whose `metadata` (field 1) holds `name` (field 1)), and encoding
//! length-delimited fields (the OpenAPI v2 document kubectl 1.27 reads, see
//! [`crate::openapi::v2`]).

const MAGIC: &[u8] = b"k8s\0";

/// Field `number` of a message, length-delimited (wire type 2): a string, bytes or an embedded
/// message.
pub fn delimited(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 6);
    put_varint(&mut out, u64::from(number) << 3 | 2);
    put_varint(&mut out, bytes.len() as u64);
    out.extend_from_slice(bytes);
    out
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The length-delimited field `number` of one protobuf message, if present.
fn field(mut message: &[u8], number: u64) -> Option<&[u8]> {
    while !message.is_empty() {
        let key = varint(&mut message)?;
        let len = match key & 7 {
            0 => {
                varint(&mut message)?;
                continue;
            }
            1 => 8,
            5 => 4,
            2 => usize::try_from(varint(&mut message)?).ok()?,
            _ => return None,
        };
        if message.len() < len {
            return None;
        }
        let (value, rest) = message.split_at(len);
        if key >> 3 == number && key & 7 == 2 {
            return Some(value);
        }
        message = rest;
    }
    None
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// `metadata.name` of the object in a protobuf-encoded request body.
pub fn object_name(body: &[u8]) -> Option<String> {
    let unknown = body.strip_prefix(MAGIC)?;
    let object = field(unknown, 2)?;
    let metadata = field(object, 1)?;
    let name = field(metadata, 1)?;
    String::from_utf8(name.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_fields_get_a_varint_length_and_read_back() {
        let long = vec![b'x'; 300];
        let encoded = delimited(2, &long);
        assert_eq!(&encoded[..3], &[0x12, 0xac, 0x02]);
        assert_eq!(field(&encoded, 2), Some(long.as_slice()));
    }

    #[test]
    fn reads_the_name_from_the_envelope_kubectl_sends() {
        let type_meta = [delimited(1, b"v1"), delimited(2, b"Namespace")].concat();
        let metadata = [delimited(1, b"net-test"), vec![0x28, 0x96, 0x01]].concat();
        let namespace = [
            delimited(1, &metadata),
            delimited(2, b""),
            delimited(3, b""),
        ]
        .concat();
        let unknown = [
            delimited(1, &type_meta),
            delimited(2, &namespace),
            delimited(4, b""),
        ]
        .concat();
        let body = [MAGIC, &unknown].concat();
        assert_eq!(object_name(&body).as_deref(), Some("net-test"));
        assert_eq!(object_name(&unknown), None);
        assert_eq!(object_name(&body[..body.len() - 12]), None);
    }
}
