//! Engine.IO 4 packets: the text and binary forms a WebSocket frame carries, and the payload a
//! long-polling request or response carries (packets joined by the record separator, binary
//! ones as `b` + base64).
//!
//! Decoding is strict where the reference server is (an unknown type is an error, and a
//! payload stops at its first bad packet) and bounded: the caller passes the largest payload it
//! accepts, and nothing here allocates more than the input's size.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// Separates packets in a long-polling payload.
pub const SEPARATOR: char = '\u{1e}';

/// One Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// `0` + the handshake JSON (server to client).
    Open(String),
    /// `1`: the session ends.
    Close,
    /// `2` + optional data (`probe` during an upgrade). The server pings; the client answers.
    Ping(String),
    /// `3` + the ping's data.
    Pong(String),
    /// `4` + text: a Socket.IO packet.
    Message(String),
    /// A binary message: a WebSocket binary frame, or `b` + base64 in a polling payload.
    Binary(Vec<u8>),
    /// `5`: the client switches to the WebSocket it probed.
    Upgrade,
    /// `6`: nothing (releases a pending poll during an upgrade).
    Noop,
}

/// Why bytes are not an Engine.IO packet or payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type `{0}`")]
    UnknownType(char),
    #[error("binary packet is not valid base64")]
    Base64,
    #[error("payload of {size} bytes is larger than the {max} allowed")]
    TooLarge { size: usize, max: usize },
}

/// A packet's type, as its first character says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Open,
    Close,
    Ping,
    Pong,
    Message,
    Upgrade,
    Noop,
    /// `b`: base64 in a polling payload.
    Binary,
}

/// A text packet's type and the data after it, borrowed: what a reader needs to decide what
/// to do with a frame before copying anything (a load generator reads a million a second).
pub fn peek(text: &str) -> Result<(Type, &str), DecodeError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(DecodeError::Empty)?;
    let data = chars.as_str();
    Ok((
        match kind {
            '0' => Type::Open,
            '1' => Type::Close,
            '2' => Type::Ping,
            '3' => Type::Pong,
            '4' => Type::Message,
            '5' => Type::Upgrade,
            '6' => Type::Noop,
            'b' => Type::Binary,
            other => return Err(DecodeError::UnknownType(other)),
        },
        data,
    ))
}

impl Packet {
    /// Decodes a text frame or one packet of a polling payload (`b…` is binary in base64).
    pub fn decode(text: &str) -> Result<Packet, DecodeError> {
        let (kind, data) = peek(text)?;
        Ok(match kind {
            Type::Open => Packet::Open(data.to_string()),
            Type::Close => Packet::Close,
            Type::Ping => Packet::Ping(data.to_string()),
            Type::Pong => Packet::Pong(data.to_string()),
            Type::Message => Packet::Message(data.to_string()),
            Type::Upgrade => Packet::Upgrade,
            Type::Noop => Packet::Noop,
            Type::Binary => Packet::Binary(B64.decode(data).map_err(|_| DecodeError::Base64)?),
        })
    }

    /// Appends the packet's text form: what a WebSocket text frame carries, and one packet of
    /// a polling payload (binary as `b` + base64; over WebSocket a binary packet is sent as a
    /// binary frame of its bytes instead).
    pub fn encode_into(&self, out: &mut String) {
        match self {
            Packet::Open(d) => {
                out.push('0');
                out.push_str(d);
            }
            Packet::Close => out.push('1'),
            Packet::Ping(d) => {
                out.push('2');
                out.push_str(d);
            }
            Packet::Pong(d) => {
                out.push('3');
                out.push_str(d);
            }
            Packet::Message(d) => {
                out.push('4');
                out.push_str(d);
            }
            Packet::Binary(b) => {
                out.push('b');
                B64.encode_string(b, out);
            }
            Packet::Upgrade => out.push('5'),
            Packet::Noop => out.push('6'),
        }
    }

    /// The packet's text form (see [`Packet::encode_into`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out);
        out
    }
}

/// Decodes a long-polling request body of at most `max` bytes. Like the reference parser, the
/// first packet that does not decode ends the payload with that error.
pub fn decode_payload(body: &str, max: usize) -> Result<Vec<Packet>, DecodeError> {
    if body.len() > max {
        return Err(DecodeError::TooLarge {
            size: body.len(),
            max,
        });
    }
    body.split(SEPARATOR).map(Packet::decode).collect()
}

/// Encodes packets as one long-polling response body.
pub fn encode_payload(packets: &[Packet]) -> String {
    let mut out = String::new();
    for (i, p) in packets.iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        p.encode_into(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_read_and_write_as_the_reference_parser_does() {
        // the forms engine.io-parser's own tests use
        let cases = [
            ("0{\"sid\":\"x\"}", Packet::Open("{\"sid\":\"x\"}".into())),
            ("1", Packet::Close),
            ("2", Packet::Ping(String::new())),
            ("2probe", Packet::Ping("probe".into())),
            ("3probe", Packet::Pong("probe".into())),
            ("4hello", Packet::Message("hello".into())),
            ("4", Packet::Message(String::new())),
            ("5", Packet::Upgrade),
            ("6", Packet::Noop),
            ("bAQIDBA==", Packet::Binary(vec![1, 2, 3, 4])),
        ];
        for (text, packet) in cases {
            assert_eq!(Packet::decode(text).unwrap(), packet, "{text}");
            assert_eq!(packet.encode(), text);
        }
        assert_eq!(Packet::decode(""), Err(DecodeError::Empty));
        assert_eq!(Packet::decode("7"), Err(DecodeError::UnknownType('7')));
        assert_eq!(Packet::decode("b!!"), Err(DecodeError::Base64));
        assert_eq!(Packet::decode("é"), Err(DecodeError::UnknownType('é')));
        assert_eq!(peek("42[1]"), Ok((Type::Message, "2[1]")));
        assert_eq!(peek("2"), Ok((Type::Ping, "")));
    }

    #[test]
    fn payloads_join_packets_with_the_record_separator() {
        let packets = vec![
            Packet::Message("hello €".into()),
            Packet::Binary(vec![1, 2, 3, 4]),
            Packet::Ping(String::new()),
        ];
        let body = encode_payload(&packets);
        assert_eq!(body, "4hello €\u{1e}bAQIDBA==\u{1e}2");
        assert_eq!(decode_payload(&body, 1000).unwrap(), packets);
        assert_eq!(
            decode_payload(&body, 10),
            Err(DecodeError::TooLarge {
                size: body.len(),
                max: 10
            })
        );
        // a bad packet ends the payload with an error, as the reference parser does
        assert!(decode_payload("4a\u{1e}9\u{1e}4b", 100).is_err());
        // an empty body is one empty (bad) packet
        assert_eq!(decode_payload("", 100), Err(DecodeError::Empty));
    }
}
