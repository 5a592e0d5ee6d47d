//! WebSocket framing (RFC 6455) for a subscriber, on the server side.
//!
//! A subscriber receives large, shared JSON (snapshots of ~10 MB, deltas shared by every
//! subscriber) and sends only tiny `__ping` messages. A general WebSocket library buffers
//! both ways per connection (tungstenite keeps a write buffer as large as the largest
//! message it sent, and a read buffer of its own); here a frame header is a few bytes on
//! the stack and the payload goes to the socket as the shared bytes it already is, and
//! client frames are read into a buffer of at most [`MAX_CLIENT_MESSAGE`] bytes.

use bytes::{Buf, Bytes, BytesMut};

/// The largest message (and frame) a client may send: only small `{"type":"__ping"}`
/// messages are expected. Past it the connection is closed with 1009.
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024;

pub const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// The header of an unmasked server frame with the FIN bit set: 2, 4 or 10 bytes.
pub fn header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut out = [0u8; 10];
    out[0] = 0x80 | opcode;
    let used = if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (out, used)
}

/// A whole frame (header and payload) in one buffer, for small control frames.
pub fn small_frame(opcode: u8, payload: &[u8]) -> Bytes {
    let (head, used) = header(opcode, payload.len());
    let mut out = BytesMut::with_capacity(used + payload.len());
    out.extend_from_slice(&head[..used]);
    out.extend_from_slice(payload);
    out.freeze()
}

/// A close frame with `code` and `reason`.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    small_frame(CLOSE, &payload)
}

/// What a client sent, once a frame (or a fragmented message) is complete.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientMessage {
    Text(String),
    /// Binary messages and pongs: nothing to do.
    Ignored,
    /// A ping: answer with a pong carrying this payload.
    Ping(Bytes),
    /// A close frame: answer with a close frame with this code. The reason is the
    /// client's text (to log escaped, never as it is).
    Close {
        code: u16,
        reason: String,
    },
}

/// Why the gateway ends a connection, with the close code it sends.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    /// The label of `connections_closed_total`.
    pub reason: &'static str,
    pub message: &'static str,
}

fn protocol(message: &'static str) -> Violation {
    Violation {
        code: 1002,
        reason: "protocol_error",
        message,
    }
}

/// Reads client frames out of the bytes received so far.
#[derive(Debug, Default)]
pub struct Reader {
    /// Received bytes not parsed yet.
    pub buf: BytesMut,
    /// The data of a fragmented message in progress, and its opcode.
    message: Option<(u8, Vec<u8>)>,
}

impl Reader {
    /// The next complete message, `None` when more bytes are needed, or the violation
    /// that ends the connection.
    pub fn next(&mut self) -> Result<Option<ClientMessage>, Violation> {
        loop {
            let Some((fin, opcode, payload)) = self.frame()? else {
                return Ok(None);
            };
            if let Some(message) = self.message_of(fin, opcode, payload)? {
                return Ok(Some(message));
            }
        }
    }

    /// Takes one complete frame out of the buffer: (FIN, opcode, unmasked payload).
    fn frame(&mut self) -> Result<Option<(bool, u8, Vec<u8>)>, Violation> {
        let buf = &self.buf[..];
        if buf.len() < 2 {
            return Ok(None);
        }
        let (fin, rsv, opcode) = (buf[0] & 0x80 != 0, buf[0] & 0x70, buf[0] & 0x0F);
        if rsv != 0 {
            return Err(protocol("reserved bits set"));
        }
        if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
            return Err(protocol("reserved opcode"));
        }
        if buf[1] & 0x80 == 0 {
            return Err(protocol("client frames must be masked"));
        }
        let (len, at) = match buf[1] & 0x7F {
            126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4),
            127 if buf.len() >= 10 => (
                u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")),
                10,
            ),
            126 | 127 => return Ok(None),
            n => (n as u64, 2),
        };
        let control = opcode >= CLOSE;
        if control && (len > 125 || !fin) {
            return Err(protocol("control frames are short and never fragmented"));
        }
        if len > MAX_CLIENT_MESSAGE as u64 {
            return Err(too_big());
        }
        let len = len as usize;
        if buf.len() < at + 4 + len {
            return Ok(None);
        }
        let mask: [u8; 4] = buf[at..at + 4].try_into().expect("4 bytes");
        let payload: Vec<u8> = buf[at + 4..at + 4 + len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        self.buf.advance(at + 4 + len);
        Ok(Some((fin, opcode, payload)))
    }

    /// Assembles fragments; returns a message when one is complete.
    fn message_of(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: Vec<u8>,
    ) -> Result<Option<ClientMessage>, Violation> {
        match opcode {
            PING => return Ok(Some(ClientMessage::Ping(Bytes::from(payload)))),
            PONG => return Ok(Some(ClientMessage::Ignored)),
            CLOSE => {
                return close_of(&payload)
                    .map(|(code, reason)| Some(ClientMessage::Close { code, reason }))
            }
            _ => {}
        }
        let (kind, mut data) = match (opcode, self.message.take()) {
            (CONTINUATION, Some(started)) => started,
            (CONTINUATION, None) => return Err(protocol("a continuation without a start")),
            (_, Some(_)) => return Err(protocol("a new message inside a fragmented one")),
            (kind, None) => (kind, Vec::new()),
        };
        if data.len() + payload.len() > MAX_CLIENT_MESSAGE {
            return Err(too_big());
        }
        data.extend_from_slice(&payload);
        if !fin {
            self.message = Some((kind, data));
            return Ok(None);
        }
        if kind == BINARY {
            return Ok(Some(ClientMessage::Ignored));
        }
        String::from_utf8(data)
            .map(|text| Some(ClientMessage::Text(text)))
            .map_err(|_| bad_utf8())
    }
}

fn too_big() -> Violation {
    Violation {
        code: 1009,
        reason: "message_too_big",
        message: "message too big",
    }
}

fn bad_utf8() -> Violation {
    Violation {
        code: 1007,
        reason: "protocol_error",
        message: "text is not UTF-8",
    }
}

/// The code to answer a client's close frame with (RFC 6455 5.5.1, 7.4), and its reason.
fn close_of(payload: &[u8]) -> Result<(u16, String), Violation> {
    match payload {
        [] => Ok((1000, String::new())),
        [_] => Err(protocol("a close frame with a 1-byte payload")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !allowed {
                return Err(protocol("a close code a peer may not send"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| bad_utf8())?;
            Ok((code, reason.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn client(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn read(bytes: &[u8]) -> Result<Vec<ClientMessage>, Violation> {
        let mut reader = Reader::default();
        reader.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(message) = reader.next()? {
            out.push(message);
        }
        Ok(out)
    }

    #[test]
    fn server_headers_use_the_shortest_length() {
        assert_eq!(header(TEXT, 5).0[..2], [0x81, 5]);
        assert_eq!(header(TEXT, 300).0[..4], [0x81, 126, 1, 44]);
        let (big, used) = header(TEXT, 70_000);
        assert_eq!((big[1], used), (127, 10));
        assert_eq!(u64::from_be_bytes(big[2..10].try_into().unwrap()), 70_000);
    }

    #[test]
    fn messages_pings_and_fragments_are_read_byte_by_byte() {
        let mut wire = client(0x81, br#"{"type":"__ping"}"#);
        wire.extend(client(0x89, b"hb"));
        wire.extend(client(0x01, b"ab"));
        wire.extend(client(0x8A, b""));
        wire.extend(client(0x80, b"c"));
        wire.extend(client(0x82, b"\xff"));
        wire.extend(client(0x88, &1000u16.to_be_bytes()));
        let mut reader = Reader::default();
        let mut got = Vec::new();
        for byte in wire {
            reader.buf.extend_from_slice(&[byte]);
            while let Some(message) = reader.next().unwrap() {
                got.push(message);
            }
        }
        assert_eq!(
            got,
            vec![
                ClientMessage::Text(r#"{"type":"__ping"}"#.into()),
                ClientMessage::Ping(Bytes::from_static(b"hb")),
                ClientMessage::Ignored,
                ClientMessage::Text("abc".into()),
                ClientMessage::Ignored,
                ClientMessage::Close {
                    code: 1000,
                    reason: String::new()
                },
            ]
        );
    }

    #[test]
    fn violations_end_the_connection_with_their_code() {
        let code = |bytes: Vec<u8>| read(&bytes).unwrap_err().code;
        assert_eq!(code(client(0xC1, b"x")), 1002, "RSV1");
        assert_eq!(code(client(0x83, b"x")), 1002, "reserved opcode");
        assert_eq!(code(vec![0x81, 0x01, b'x']), 1002, "unmasked");
        assert_eq!(code(client(0x89, &[0u8; 126])), 1002, "long ping");
        assert_eq!(code(client(0x09, b"x")), 1002, "fragmented ping");
        assert_eq!(code(client(0x80, b"x")), 1002, "continuation without start");
        let mut nested = client(0x01, b"a");
        nested.extend(client(0x81, b"b"));
        assert_eq!(code(nested), 1002, "a message inside another");
        assert_eq!(code(client(0x81, b"\xff\xfe")), 1007, "invalid UTF-8");
        assert_eq!(code(client(0x88, b"\x03")), 1002, "1-byte close");
        for bad in [999u16, 1005, 1006, 1015, 5000] {
            assert_eq!(code(client(0x88, &bad.to_be_bytes())), 1002, "close {bad}");
        }
        assert_eq!(code(client(0x88, b"\x03\xe8\xff")), 1007, "close reason");
        let mut announced = vec![0x81, 0x80 | 127];
        announced.extend_from_slice(&(16u64 << 20).to_be_bytes());
        assert_eq!(code(announced), 1009, "16 MiB announced");
        let mut fragments = Vec::new();
        for _ in 0..5 {
            fragments.extend(client(0x00, &[b'a'; 1000]));
        }
        let mut start = client(0x01, &[b'a'; 1000]);
        start.extend(fragments);
        assert_eq!(code(start), 1009, "fragments past 4 KiB");
    }
}
