//! WebSocket framing (RFC 6455) for the server side, without I/O.
//!
//! The server's Engine.IO layer holds tens of thousands of idle WebSockets, and what one of
//! them costs while it waits is what this module is for: a [`Decoder`] keeps nothing between
//! messages but an optional fragment being assembled, and [`encode`] writes a frame into a
//! buffer the caller owns (and frees once written). A general crate (tungstenite) keeps a read
//! buffer and a write buffer per socket for its whole life, and the write buffer keeps the
//! capacity of the largest write; that was a third of an idle connection's memory.
//!
//! Only what a server needs: client frames must be masked, no extension is negotiated (the
//! reserved bits must be clear), control frames are short and whole, a message is bounded by
//! the caller's limit before its payload is read, and text must be UTF-8.

/// A whole message from the client, unmasked and assembled from its fragments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Vec<u8>),
    /// The client pings: answer with a pong carrying the same payload.
    Ping(Vec<u8>),
    Pong,
    /// The client closes, with its status code if it gave one.
    Close(Option<u16>),
}

/// Why a client's bytes are not a WebSocket stream this server accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
    #[error("websocket message of more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("websocket text message is not UTF-8")]
    Utf8,
}

impl WsError {
    /// The close status a server answers this error with (RFC 6455, 7.4.1).
    pub fn status(&self) -> u16 {
        match self {
            WsError::Protocol(_) => 1002,
            WsError::TooLarge { .. } => 1009,
            WsError::Utf8 => 1007,
        }
    }
}

/// Frame opcodes.
pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// What [`Decoder::decode`] made of the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Not a whole frame yet. `frame_len` is the whole frame's length once its header is
    /// complete (so a reader can make room for it), else 0.
    NeedMore { frame_len: usize },
    /// One frame was used (`used` bytes). `message` is set when it completed one; a fragment
    /// that does not complete a message gives `None`.
    Frame {
        used: usize,
        message: Option<Message>,
    },
}

/// A fragmented message being assembled.
#[derive(Debug)]
struct Partial {
    text: bool,
    data: Vec<u8>,
}

/// Turns the bytes a client sends into messages, one frame at a time.
#[derive(Debug)]
pub struct Decoder {
    /// The largest message accepted, in bytes (the sum of its fragments).
    max_message: usize,
    /// Boxed: most connections never fragment, and an idle one keeps only the pointer.
    partial: Option<Box<Partial>>,
}

/// The largest header: 2 bytes, 8 of length, 4 of mask.
const MAX_HEAD: usize = 14;

impl Decoder {
    pub fn new(max_message: usize) -> Self {
        Decoder {
            max_message,
            partial: None,
        }
    }

    /// Decodes the frame at the start of `buf`, if it is all there.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Decoded, WsError> {
        let Some((head, head_len)) = read_head(buf)? else {
            return Ok(Decoded::NeedMore { frame_len: 0 });
        };
        let control = head.opcode & 0x8 != 0;
        if control {
            if !head.fin {
                return Err(WsError::Protocol("a control frame is fragmented"));
            }
            if head.len > 125 {
                return Err(WsError::Protocol(
                    "a control frame is longer than 125 bytes",
                ));
            }
        } else {
            // bounded before the payload is waited for: a client cannot make the server
            // buffer more than the limit
            let before = self.partial.as_ref().map_or(0, |p| p.data.len() as u64);
            if before.saturating_add(head.len) > self.max_message as u64 {
                return Err(WsError::TooLarge {
                    limit: self.max_message,
                });
            }
        }
        // fits in usize: bounded by max_message or 125 above
        let len = head.len as usize;
        let frame_len = head_len + len;
        if buf.len() < frame_len {
            return Ok(Decoded::NeedMore { frame_len });
        }
        let mut payload = buf[head_len..frame_len].to_vec();
        unmask(&mut payload, head.mask);
        let message = match head.opcode {
            opcode::TEXT | opcode::BINARY => {
                if self.partial.is_some() {
                    return Err(WsError::Protocol(
                        "a new message started before the fragmented one ended",
                    ));
                }
                let text = head.opcode == opcode::TEXT;
                if head.fin {
                    Some(whole(text, payload)?)
                } else {
                    self.partial = Some(Box::new(Partial {
                        text,
                        data: payload,
                    }));
                    None
                }
            }
            opcode::CONTINUATION => {
                let Some(p) = self.partial.as_mut() else {
                    return Err(WsError::Protocol("a continuation frame without a message"));
                };
                p.data.extend_from_slice(&payload);
                if head.fin {
                    match self.partial.take() {
                        Some(p) => Some(whole(p.text, p.data)?),
                        None => None,
                    }
                } else {
                    None
                }
            }
            opcode::CLOSE => Some(Message::Close(close_code(&payload)?)),
            opcode::PING => Some(Message::Ping(payload)),
            opcode::PONG => Some(Message::Pong),
            _ => return Err(WsError::Protocol("a reserved opcode")),
        };
        Ok(Decoded::Frame {
            used: frame_len,
            message,
        })
    }
}

fn whole(text: bool, data: Vec<u8>) -> Result<Message, WsError> {
    if text {
        String::from_utf8(data)
            .map(Message::Text)
            .map_err(|_| WsError::Utf8)
    } else {
        Ok(Message::Binary(data))
    }
}

fn close_code(payload: &[u8]) -> Result<Option<u16>, WsError> {
    match payload {
        [] => Ok(None),
        [_] => Err(WsError::Protocol("a close frame with a one-byte payload")),
        [a, b, reason @ ..] => {
            if std::str::from_utf8(reason).is_err() {
                return Err(WsError::Utf8);
            }
            Ok(Some(u16::from_be_bytes([*a, *b])))
        }
    }
}

struct Head {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    len: u64,
}

/// The header at the start of `buf`, and its length; `None` until all of it is there.
fn read_head(buf: &[u8]) -> Result<Option<(Head, usize)>, WsError> {
    let [b0, b1, rest @ ..] = buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(WsError::Protocol(
            "a reserved bit is set (no extension was agreed)",
        ));
    }
    if b1 & 0x80 == 0 {
        return Err(WsError::Protocol("a client frame is not masked"));
    }
    let (len, at) = match b1 & 0x7f {
        126 => match rest {
            [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 2),
            _ => return Ok(None),
        },
        127 => match rest.get(..8) {
            Some(b) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(b);
                let n = u64::from_be_bytes(n);
                if n >> 63 != 0 {
                    return Err(WsError::Protocol("a frame length with its top bit set"));
                }
                (n, 8)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 0),
    };
    let Some(m) = rest.get(at..at + 4) else {
        return Ok(None);
    };
    let mask = [m[0], m[1], m[2], m[3]];
    let head_len = 2 + at + 4;
    debug_assert!(head_len <= MAX_HEAD);
    Ok(Some((
        Head {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0f,
            mask,
            len,
        },
        head_len,
    )))
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// Appends a whole, unmasked server frame to `out`.
pub fn encode(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(10 + payload.len());
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Appends a whole client frame to `out`: masked with `mask`, as a client must send it (the
/// server's tests and fuzzing build their input with it).
pub fn encode_client(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    out.push(if fin { 0x80 } else { 0 } | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// Appends a close frame with `status` to `out`.
pub fn encode_close(status: u16, out: &mut Vec<u8>) {
    encode(opcode::CLOSE, &status.to_be_bytes(), out);
}

/// The value of `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let mut h = sha1::Sha1::new();
    h.update(key);
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(fin: bool, op: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_client(fin, op, payload, mask, &mut out);
        out
    }

    fn one(d: &mut Decoder, bytes: &[u8]) -> Result<Option<Message>, WsError> {
        match d.decode(bytes)? {
            Decoded::Frame { used, message } => {
                assert_eq!(used, bytes.len());
                Ok(message)
            }
            Decoded::NeedMore { .. } => panic!("a whole frame was given"),
        }
    }

    #[test]
    fn text_and_binary_unmask_at_every_length() {
        let mut d = Decoder::new(1 << 20);
        for n in [0, 1, 3, 4, 5, 125, 126, 127, 65_535, 65_536, 70_001] {
            let text: String = (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            let f = client(true, opcode::TEXT, text.as_bytes(), [1, 2, 3, 0xff]);
            assert_eq!(one(&mut d, &f), Ok(Some(Message::Text(text))), "length {n}");
            let bin: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let f = client(true, opcode::BINARY, &bin, [9, 0, 7, 0x80]);
            assert_eq!(one(&mut d, &f), Ok(Some(Message::Binary(bin))));
        }
    }

    #[test]
    fn a_frame_in_pieces_asks_for_more_and_says_how_much_once_it_can() {
        let mut d = Decoder::new(1 << 20);
        let f = client(true, opcode::TEXT, &[b'x'; 300], [4, 3, 2, 1]);
        assert_eq!(d.decode(&f[..1]), Ok(Decoded::NeedMore { frame_len: 0 }));
        assert_eq!(d.decode(&f[..3]), Ok(Decoded::NeedMore { frame_len: 0 }));
        assert_eq!(
            d.decode(&f[..8]),
            Ok(Decoded::NeedMore { frame_len: f.len() })
        );
        assert_eq!(
            d.decode(&f[..f.len() - 1]),
            Ok(Decoded::NeedMore { frame_len: f.len() })
        );
        // two frames back to back: the first is used, the rest left
        let mut two = f.clone();
        two.extend_from_slice(&client(true, opcode::PING, b"hi", [0; 4]));
        assert_eq!(
            d.decode(&two),
            Ok(Decoded::Frame {
                used: f.len(),
                message: Some(Message::Text("x".repeat(300)))
            })
        );
        assert_eq!(
            one(&mut d, &two[f.len()..]),
            Ok(Some(Message::Ping(b"hi".to_vec())))
        );
    }

    #[test]
    fn fragments_are_assembled_with_control_frames_between_them() {
        let mut d = Decoder::new(1 << 20);
        let m = [5, 6, 7, 8];
        assert_eq!(
            one(&mut d, &client(false, opcode::TEXT, b"hel", m)),
            Ok(None)
        );
        assert_eq!(
            one(&mut d, &client(true, opcode::PING, b"p", m)),
            Ok(Some(Message::Ping(b"p".to_vec())))
        );
        assert_eq!(
            one(&mut d, &client(false, opcode::CONTINUATION, b"lo ", m)),
            Ok(None)
        );
        assert_eq!(
            one(
                &mut d,
                &client(true, opcode::CONTINUATION, "wörld".as_bytes(), m)
            ),
            Ok(Some(Message::Text("hello wörld".into())))
        );
        // and the decoder is ready for a new message
        assert_eq!(
            one(&mut d, &client(true, opcode::BINARY, b"\x00", m)),
            Ok(Some(Message::Binary(vec![0])))
        );
    }

    #[test]
    fn what_a_server_must_refuse() {
        let m = [1, 1, 1, 1];
        let refuse = |bytes: Vec<u8>| Decoder::new(1000).decode(&bytes).unwrap_err();
        // unmasked
        assert!(matches!(
            refuse(vec![0x81, 0x01, b'a']),
            WsError::Protocol(_)
        ));
        // a reserved bit (compression was never agreed)
        let mut f = client(true, opcode::TEXT, b"a", m);
        f[0] |= 0x40;
        assert!(matches!(refuse(f), WsError::Protocol(_)));
        // reserved opcodes
        for op in [3, 7, 0xB, 0xF] {
            assert!(matches!(
                refuse(client(true, op, b"", m)),
                WsError::Protocol(_)
            ));
        }
        // a fragmented or long control frame
        assert!(matches!(
            refuse(client(false, opcode::PING, b"", m)),
            WsError::Protocol(_)
        ));
        assert!(matches!(
            refuse(client(true, opcode::PING, &[0; 126], m)),
            WsError::Protocol(_)
        ));
        // a continuation out of nowhere
        assert!(matches!(
            refuse(client(true, opcode::CONTINUATION, b"a", m)),
            WsError::Protocol(_)
        ));
        // text that is not UTF-8, whole or split inside a character
        assert_eq!(
            refuse(client(true, opcode::TEXT, &[0xff], m)),
            WsError::Utf8
        );
        let mut d = Decoder::new(1000);
        let e = "é".as_bytes();
        assert_eq!(
            one(&mut d, &client(false, opcode::TEXT, &e[..1], m)),
            Ok(None)
        );
        assert_eq!(
            one(&mut d, &client(true, opcode::CONTINUATION, &e[1..], m)),
            Ok(Some(Message::Text("é".into())))
        );
        // a close with one byte
        assert!(matches!(
            refuse(client(true, opcode::CLOSE, &[3], m)),
            WsError::Protocol(_)
        ));
        // a new message inside a fragmented one
        let mut d = Decoder::new(1000);
        assert_eq!(one(&mut d, &client(false, opcode::TEXT, b"a", m)), Ok(None));
        assert!(matches!(
            d.decode(&client(true, opcode::TEXT, b"b", m)),
            Err(WsError::Protocol(_))
        ));
    }

    #[test]
    fn a_message_over_the_limit_is_refused_from_its_header_alone() {
        // only the header of a claimed 2^40-byte frame: refused without waiting for it
        let mut f = vec![0x82, 0x80 | 127];
        f.extend_from_slice(&(1u64 << 40).to_be_bytes());
        f.extend_from_slice(&[0; 4]);
        assert_eq!(
            Decoder::new(1000).decode(&f),
            Err(WsError::TooLarge { limit: 1000 })
        );
        // the top bit of a 64-bit length
        let mut f = vec![0x82, 0x80 | 127];
        f.extend_from_slice(&u64::MAX.to_be_bytes());
        f.extend_from_slice(&[0; 4]);
        assert!(matches!(
            Decoder::new(1000).decode(&f),
            Err(WsError::Protocol(_))
        ));
        // fragments count together
        let mut d = Decoder::new(1000);
        let m = [0; 4];
        assert_eq!(
            one(&mut d, &client(false, opcode::BINARY, &[0; 600], m)),
            Ok(None)
        );
        assert_eq!(
            d.decode(&client(true, opcode::CONTINUATION, &[0; 401], m)),
            Err(WsError::TooLarge { limit: 1000 })
        );
        // exactly at the limit is fine
        let mut d = Decoder::new(1000);
        assert_eq!(
            one(&mut d, &client(false, opcode::BINARY, &[0; 600], m)),
            Ok(None)
        );
        assert_eq!(
            one(&mut d, &client(true, opcode::CONTINUATION, &[0; 400], m)),
            Ok(Some(Message::Binary(vec![0; 1000])))
        );
    }

    #[test]
    fn close_frames_give_their_code() {
        let mut d = Decoder::new(1000);
        let m = [7; 4];
        assert_eq!(
            one(&mut d, &client(true, opcode::CLOSE, &[], m)),
            Ok(Some(Message::Close(None)))
        );
        assert_eq!(
            one(&mut d, &client(true, opcode::CLOSE, b"\x03\xe8bye", m)),
            Ok(Some(Message::Close(Some(1000))))
        );
    }

    #[test]
    fn server_frames_have_the_shortest_length() {
        for (n, head) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let mut out = Vec::new();
            encode(opcode::TEXT, &vec![b'a'; n], &mut out);
            assert_eq!(out.len(), head + n, "length {n}");
            assert_eq!(out[0], 0x81);
            assert_eq!(out[1] & 0x80, 0, "a server does not mask");
        }
        let mut out = Vec::new();
        encode_close(1000, &mut out);
        assert_eq!(out, [0x88, 2, 0x03, 0xe8]);
    }

    #[test]
    fn the_accept_key_of_rfc_6455() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
