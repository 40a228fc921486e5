//! The protobuf wire format, for the handful of CRI messages airgap sends and reads. Written
//! by hand (a few dozen lines) instead of generating code from the CRI's `.proto` files: the
//! messages are small and fixed, and a protobuf toolchain would cost more than it saves.

/// A message being encoded: fields appended in tag order.
#[derive(Debug, Default, Clone)]
pub struct Message(Vec<u8>);

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Message {
    pub fn new() -> Self {
        Message(Vec::new())
    }

    pub fn bytes(mut self, tag: u32, value: &[u8]) -> Self {
        varint(&mut self.0, u64::from(tag) << 3 | 2);
        varint(&mut self.0, value.len() as u64);
        self.0.extend_from_slice(value);
        self
    }

    pub fn string(self, tag: u32, value: &str) -> Self {
        if value.is_empty() {
            return self;
        }
        self.bytes(tag, value.as_bytes())
    }

    pub fn strings(self, tag: u32, values: &[&str]) -> Self {
        values.iter().fold(self, |m, v| m.bytes(tag, v.as_bytes()))
    }

    pub fn message(self, tag: u32, value: Message) -> Self {
        self.bytes(tag, &value.0)
    }

    pub fn uint(mut self, tag: u32, value: u64) -> Self {
        if value == 0 {
            return self;
        }
        varint(&mut self.0, u64::from(tag) << 3);
        varint(&mut self.0, value);
        self
    }

    pub fn bool(self, tag: u32, value: bool) -> Self {
        self.uint(tag, u64::from(value))
    }

    /// A `map<string, string>` entry.
    pub fn entry(self, tag: u32, key: &str, value: &str) -> Self {
        self.message(tag, Message::new().string(1, key).string(2, value))
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

#[derive(Debug, thiserror::Error)]
#[error("malformed protobuf message")]
pub struct WireError;

/// One decoded field: its tag and, for length-delimited fields, the bytes (varints as numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn read_varint(buf: &mut &[u8]) -> Result<u64, WireError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or(WireError)?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(WireError)
}

/// The fields of `buf`, in order.
pub fn fields(mut buf: &[u8]) -> Result<Vec<(u32, Value<'_>)>, WireError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = read_varint(&mut buf)?;
        let tag = u32::try_from(key >> 3).map_err(|_| WireError)?;
        let value = match key & 7 {
            0 => Value::Varint(read_varint(&mut buf)?),
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                buf = buf.get(n..).ok_or(WireError)?;
                Value::Fixed
            }
            2 => {
                let n = usize::try_from(read_varint(&mut buf)?).map_err(|_| WireError)?;
                let (v, rest) = (buf.get(..n).ok_or(WireError)?, &buf[n..]);
                buf = rest;
                Value::Bytes(v)
            }
            _ => return Err(WireError),
        };
        out.push((tag, value));
    }
    Ok(out)
}

/// Every length-delimited value of field `tag`.
pub fn all_bytes(buf: &[u8], tag: u32) -> Result<Vec<&[u8]>, WireError> {
    Ok(fields(buf)?
        .into_iter()
        .filter_map(|(t, v)| match v {
            Value::Bytes(b) if t == tag => Some(b),
            _ => None,
        })
        .collect())
}

/// The last value of field `tag` as bytes (protobuf's "last one wins"), empty if absent.
pub fn bytes_field(buf: &[u8], tag: u32) -> Result<&[u8], WireError> {
    Ok(all_bytes(buf, tag)?.pop().unwrap_or_default())
}

pub fn string_field(buf: &[u8], tag: u32) -> Result<String, WireError> {
    std::str::from_utf8(bytes_field(buf, tag)?)
        .map(str::to_string)
        .map_err(|_| WireError)
}

pub fn strings_field(buf: &[u8], tag: u32) -> Result<Vec<String>, WireError> {
    all_bytes(buf, tag)?
        .into_iter()
        .map(|b| {
            std::str::from_utf8(b)
                .map(str::to_string)
                .map_err(|_| WireError)
        })
        .collect()
}

pub fn bool_field(buf: &[u8], tag: u32) -> Result<bool, WireError> {
    Ok(fields(buf)?
        .into_iter()
        .any(|(t, v)| t == tag && v == Value::Varint(1)))
}

/// A `map<string, string>` field.
pub fn map_field(
    buf: &[u8],
    tag: u32,
) -> Result<std::collections::BTreeMap<String, String>, WireError> {
    all_bytes(buf, tag)?
        .into_iter()
        .map(|entry| Ok((string_field(entry, 1)?, string_field(entry, 2)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_truncation() {
        let inner = Message::new().string(1, "registry.k8s.io/pause:3.10.1");
        let msg = Message::new()
            .message(1, inner)
            .uint(2, 300)
            .bool(3, true)
            .strings(4, &["a", "b"])
            .entry(5, "k", "v")
            .into_bytes();
        let image = bytes_field(&msg, 1).unwrap();
        assert_eq!(
            string_field(image, 1).unwrap(),
            "registry.k8s.io/pause:3.10.1"
        );
        assert!(fields(&msg).unwrap().contains(&(2, Value::Varint(300))));
        assert!(bool_field(&msg, 3).unwrap());
        assert_eq!(strings_field(&msg, 4).unwrap(), ["a", "b"]);
        assert_eq!(map_field(&msg, 5).unwrap()["k"], "v");
        assert_eq!(string_field(&msg, 9).unwrap(), "");
        for cut in 1..msg.len() {
            let _ = fields(&msg[..cut]); // never panics
        }
        assert!(fields(&msg[..msg.len() - 1]).is_err());
    }
}
