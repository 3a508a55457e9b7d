//! The length-prefixed postcard codec. Pure: bytes in, frames out, no I/O.
//!
//! A frame is a 4-byte little-endian length followed by that many bytes of
//! postcard. The length is checked against a hard maximum *before* any buffer
//! is grown for the body, so a hostile peer announcing a 4 GiB frame costs
//! nothing but an error.
//!
//! A frame whose last field is a payload of [`MARK_MIN_PAYLOAD`] bytes or
//! more is *marked*: its length has the top bit ([`PAYLOAD_MARK`]) set and a
//! second 4-byte word, the payload's length, follows it; the body is the
//! same. A reader then knows where the payload starts before it arrives,
//! and can read it from the pipe straight into the buffer the frame keeps
//! ([`decode_head`], [`WithPayload`]) instead of copying it out of its read
//! buffer.
//!
//! A marked frame whose payload word has its own top bit ([`RING_MARK`])
//! set carries no payload on the pipe at all: an 8-byte position follows
//! the word, and the payload lies at that position in the writer's shared
//! ring (the host's `os::ring`); only the head follows the prefix. The
//! length still counts the payload, as if it were there.

use std::marker::PhantomData;

use bytes::{Buf, BytesMut};
use serde::{Serialize, de::DeserializeOwned};
use tokio_util::codec::Decoder;

/// The largest payload a message may carry, whatever a guest's own limit says.
pub const MAX_PAYLOAD_LEN: usize = 64 * 1024 * 1024;

/// The largest frame body either side accepts: the largest payload plus room
/// for the frame's other fields (addresses, names).
pub const MAX_FRAME_LEN: usize = MAX_PAYLOAD_LEN + 64 * 1024;

/// Bytes in the length prefix.
pub const HEADER_LEN: usize = 4;

/// Set in a marked frame's length: a payload length follows (see the
/// module's documentation).
pub const PAYLOAD_MARK: u32 = 1 << 31;

/// Bytes in a marked frame's prefix: its length and its payload's.
pub const MARKED_HEADER_LEN: usize = 8;

/// Payloads at least this large are marked in their frame's prefix.
pub const MARK_MIN_PAYLOAD: usize = 64 * 1024;

/// Set in a marked frame's payload word: the payload is in the writer's
/// shared ring, at the position in the 8 bytes after the word.
pub const RING_MARK: u32 = 1 << 31;

/// Bytes in the prefix of a frame whose payload is in a ring: its length,
/// its payload's, and the payload's position.
pub const RING_HEADER_LEN: usize = 16;

/// A frame's prefix, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes of the prefix itself.
    pub header_len: usize,
    /// Bytes of the body after it.
    pub len: usize,
    /// For a marked frame, the bytes at the end of the body that are its
    /// payload.
    pub payload_len: Option<usize>,
    /// For a frame whose payload is in the writer's ring, its position
    /// there: the pipe then carries the body without the payload.
    pub ring_pos: Option<u64>,
}

impl Header {
    /// The bytes after the prefix on the pipe: the body, or for a frame
    /// whose payload is in a ring, its head.
    pub fn pipe_len(&self) -> usize {
        match (self.ring_pos, self.payload_len) {
            (Some(_), Some(payload_len)) => self.len - payload_len,
            _ => self.len,
        }
    }
}

/// A frame type some of whose frames end with a payload (`serde_bytes`).
pub trait WithPayload {
    /// The payload this frame ends with, if its kind has one.
    fn payload_mut(&mut self) -> Option<&mut Vec<u8>>;
}

/// Why bytes could not be turned into a frame, or a frame into bytes.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the limit allows.
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// The body is not a valid postcard encoding of the expected frame type.
    #[error("malformed frame of {len} bytes: {source}")]
    Malformed {
        len: usize,
        #[source]
        source: postcard::Error,
    },
    /// The body decoded but left bytes unread.
    #[error("malformed frame: {trailing} trailing bytes after a {len}-byte frame")]
    Trailing { len: usize, trailing: usize },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
    /// A frame given as a head does not end with an empty payload.
    #[error("not a frame head: it must end with an empty payload")]
    NotAHead,
    /// A frame says its payload is in a shared ring, and it is not there
    /// (or the reader has no ring).
    #[error("frame of {len} bytes: {reason}")]
    Ring { len: usize, reason: String },
    /// Reading or writing the pipe failed.
    #[error("pipe I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Append one frame for `value` to `out`.
///
/// # Errors
///
/// [`FrameError::TooLarge`] if the encoding is over `max_len`; `out` is then
/// left as it was.
pub fn encode_into<T: Serialize>(
    value: &T,
    out: &mut Vec<u8>,
    max_len: usize,
) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    let encoded = postcard::to_extend(value, std::mem::take(out));
    *out = match encoded {
        Ok(buf) => buf,
        Err(source) => {
            // postcard only fails on types it cannot encode, which ours are not;
            // report it as malformed rather than panic.
            return Err(FrameError::Malformed { len: 0, source });
        }
    };
    set_header(out, start, 0, max_len)
}

/// Write the length header of the frame that starts at `start` in `out` and
/// runs to its end, plus `later` bytes the caller writes separately; or, when
/// that is over `max_len`, remove the frame.
fn set_header(
    out: &mut Vec<u8>,
    start: usize,
    later: usize,
    max_len: usize,
) -> Result<(), FrameError> {
    let len = out.len() - start - HEADER_LEN + later;
    let too_large = FrameError::TooLarge { len, max: max_len };
    match u32::try_from(len) {
        Ok(len32) if len <= max_len => {
            out[start..start + HEADER_LEN].copy_from_slice(&len32.to_le_bytes());
            Ok(())
        }
        _ => {
            out.truncate(start);
            Err(too_large)
        }
    }
}

/// Encode the frame `head`, whose last field is an empty byte payload
/// (`serde_bytes`), as the start of a frame carrying `payload_len` payload
/// bytes: the caller writes the payload itself right after, from wherever it
/// is, so a large payload is never copied into a batch.
///
/// The bytes are those of the whole frame encoded at once: postcard ends
/// the frame with the payload's length (a varint) and its bytes.
///
/// # Errors
///
/// [`FrameError::TooLarge`] when the whole frame would be over `max_len`;
/// [`FrameError::NotAHead`] when `head` does not end with an empty payload.
pub fn encode_head_into<T: Serialize>(
    head: &T,
    payload_len: usize,
    out: &mut Vec<u8>,
    max_len: usize,
) -> Result<(), FrameError> {
    let start = out.len();
    encode_into(head, out, max_len)?;
    // The empty payload's length, a one-byte varint 0, comes last.
    if out.len() == start + HEADER_LEN || out.last() != Some(&0) {
        out.truncate(start);
        return Err(FrameError::NotAHead);
    }
    out.pop();
    // The payload's real length, encoded as postcard encodes any length.
    let with_len = postcard::to_extend(&(payload_len as u64), std::mem::take(out));
    *out = with_len.map_err(|source| FrameError::Malformed { len: 0, source })?;
    set_header(out, start, payload_len, max_len)?;
    if payload_len >= MARK_MIN_PAYLOAD {
        // Within the limit, so the length leaves the top bit free.
        out[start + HEADER_LEN - 1] |= (PAYLOAD_MARK >> 24) as u8;
        let payload_word = (payload_len as u32).to_le_bytes();
        out.splice(start + HEADER_LEN..start + HEADER_LEN, payload_word);
    }
    Ok(())
}

/// Encode the frame `head` (as for [`encode_head_into`]) as a frame whose
/// payload of `payload_len` bytes (at least [`MARK_MIN_PAYLOAD`]) the
/// caller has put at `pos` in its shared ring: nothing follows the head.
///
/// # Errors
///
/// As [`encode_head_into`]; [`FrameError::Ring`] for a payload too small
/// to be marked.
pub fn encode_ring_head_into<T: Serialize>(
    head: &T,
    payload_len: usize,
    pos: u64,
    out: &mut Vec<u8>,
    max_len: usize,
) -> Result<(), FrameError> {
    if payload_len < MARK_MIN_PAYLOAD {
        return Err(FrameError::Ring {
            len: payload_len,
            reason: format!("a payload under {MARK_MIN_PAYLOAD} bytes is never in a ring"),
        });
    }
    let start = out.len();
    encode_head_into(head, payload_len, out, max_len)?;
    out[start + MARKED_HEADER_LEN - 1] |= (RING_MARK >> 24) as u8;
    out.splice(
        start + MARKED_HEADER_LEN..start + MARKED_HEADER_LEN,
        pos.to_le_bytes(),
    );
    Ok(())
}

/// A marked frame's `head` (its body up to the payload) without the
/// payload's length it ends with, which must be `payload_len`.
fn head_fields(head: &[u8], payload_len: usize, len: usize) -> Result<&[u8], FrameError> {
    let malformed = |source| FrameError::Malformed { len, source };
    // As postcard encodes any length: a varint, at most 10 bytes.
    let mut word = [0u8; 10];
    let word = postcard::to_slice(&(payload_len as u64), &mut word).map_err(malformed)?;
    head.strip_suffix(&*word)
        .ok_or(malformed(postcard::Error::DeserializeBadVarint))
}

/// The prefix at the start of `buf`, once it is all there.
///
/// # Errors
///
/// [`FrameError::TooLarge`] when the body is over `max_len`;
/// [`FrameError::Malformed`] for a marked payload longer than its body.
pub fn header(buf: &[u8], max_len: usize) -> Result<Option<Header>, FrameError> {
    let Some(word) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
    let len = (word & !PAYLOAD_MARK) as usize;
    if len > max_len {
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    if word & PAYLOAD_MARK == 0 {
        return Ok(Some(Header {
            header_len: HEADER_LEN,
            len,
            payload_len: None,
            ring_pos: None,
        }));
    }
    let Some(payload) = buf.get(HEADER_LEN..MARKED_HEADER_LEN) else {
        return Ok(None);
    };
    let payload_word = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
    let payload_len = (payload_word & !RING_MARK) as usize;
    if payload_len > len {
        return Err(FrameError::Malformed {
            len,
            source: postcard::Error::DeserializeUnexpectedEnd,
        });
    }
    if payload_word & RING_MARK == 0 {
        return Ok(Some(Header {
            header_len: MARKED_HEADER_LEN,
            len,
            payload_len: Some(payload_len),
            ring_pos: None,
        }));
    }
    let Some(pos) = buf.get(MARKED_HEADER_LEN..RING_HEADER_LEN) else {
        return Ok(None);
    };
    let mut word = [0u8; 8];
    word.copy_from_slice(pos);
    Ok(Some(Header {
        header_len: RING_HEADER_LEN,
        len,
        payload_len: Some(payload_len),
        ring_pos: Some(u64::from_le_bytes(word)),
    }))
}

/// Decode a marked frame from its `head` (its body up to the payload) and
/// its `payload`, read separately: the frame the whole body would decode to.
///
/// # Errors
///
/// [`FrameError::Malformed`] when the head does not end with the payload's
/// length, does not decode, or its kind carries no payload.
pub fn decode_head<T: DeserializeOwned + WithPayload>(
    head: &[u8],
    payload: Vec<u8>,
) -> Result<T, FrameError> {
    let len = head.len() + payload.len();
    let malformed = |source| FrameError::Malformed { len, source };
    // Decode the head with an empty payload in place of the real one.
    let fields = head_fields(head, payload.len(), len)?;
    let mut empty = Vec::with_capacity(fields.len() + 1);
    empty.extend_from_slice(fields);
    empty.push(0);
    let (mut frame, rest): (T, _) = postcard::take_from_bytes(&empty).map_err(malformed)?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing {
            len,
            trailing: rest.len(),
        });
    }
    match frame.payload_mut() {
        Some(slot) if slot.is_empty() => *slot = payload,
        _ => return Err(malformed(postcard::Error::DeserializeBadEncoding)),
    }
    Ok(frame)
}

/// Decode the first frame in `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame (read more and
/// call again), or the frame and the number of bytes it used.
///
/// # Errors
///
/// [`FrameError::TooLarge`] as soon as the length prefix is read,
/// [`FrameError::Malformed`] or [`FrameError::Trailing`] for a bad body.
pub fn decode<T: DeserializeOwned>(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<(T, usize)>, FrameError> {
    let Some(Header {
        header_len,
        len,
        payload_len,
        ring_pos,
    }) = header(buf, max_len)?
    else {
        return Ok(None);
    };
    if ring_pos.is_some() {
        return Err(FrameError::Ring {
            len,
            reason: "its payload is in a shared ring, and this reader has none".to_owned(),
        });
    }
    let Some(body) = buf.get(header_len..header_len + len) else {
        return Ok(None);
    };
    if let Some(payload_len) = payload_len {
        // The mark must tell the truth, whichever way the frame is read.
        head_fields(&body[..len - payload_len], payload_len, len)?;
    }
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|source| FrameError::Malformed { len, source })?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing {
            len,
            trailing: rest.len(),
        });
    }
    Ok(Some((value, header_len + len)))
}

/// A [`tokio_util::codec`] decoder of `In` frames (frames are encoded with
/// [`encode_into`] and [`encode_head_into`], which batch writes need).
#[derive(Debug)]
pub struct FrameCodec<In> {
    max_len: usize,
    _types: PhantomData<fn() -> In>,
}

impl<In> FrameCodec<In> {
    /// A codec that refuses frames longer than `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        FrameCodec {
            max_len,
            _types: PhantomData,
        }
    }
}

impl<In> Default for FrameCodec<In> {
    fn default() -> Self {
        Self::new(MAX_FRAME_LEN)
    }
}

impl<In: DeserializeOwned> Decoder for FrameCodec<In> {
    type Item = In;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, FrameError> {
        match decode(src, self.max_len)? {
            Some((frame, used)) => {
                src.advance(used);
                Ok(Some(frame))
            }
            None => {
                // Reserve for the rest of this frame only once its (already
                // checked) length is known, so one read can take it whole.
                if let Some(header) = header(src, self.max_len)? {
                    src.reserve(header.header_len + header.len - src.len());
                }
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<In>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

/// Write one frame to a blocking writer.
///
/// # Errors
///
/// When the frame is too large or the write fails.
pub fn write_frame_blocking<T: Serialize>(
    out: &mut impl std::io::Write,
    frame: &T,
) -> Result<(), FrameError> {
    let mut buf = Vec::new();
    encode_into(frame, &mut buf, MAX_FRAME_LEN)?;
    out.write_all(&buf)?;
    Ok(())
}

/// Read one frame from a blocking reader, after the bytes `read_ahead`
/// already read from it. Returns the frame and any bytes read past it (the
/// start of later frames).
///
/// # Errors
///
/// [`FrameError::Truncated`] when the input ends first, or any decoding error.
pub fn read_frame_blocking<T: DeserializeOwned>(
    input: &mut impl std::io::Read,
    read_ahead: Vec<u8>,
) -> Result<(T, Vec<u8>), FrameError> {
    // A runner reads its launch spec with this, a few KiB at most: a chunk on
    // the stack, not 64 KiB of zeroed heap for every runner to fault in.
    let mut buf = read_ahead;
    let mut chunk = [0u8; 8 * 1024];
    loop {
        if let Some((frame, used)) = decode::<T>(&buf, MAX_FRAME_LEN)? {
            return Ok((frame, buf.split_off(used)));
        }
        let n = match input.read(&mut chunk) {
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err.into()),
        };
        if n == 0 {
            return Err(FrameError::Truncated {
                buffered: buf.len(),
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::*;

    #[test]
    fn a_head_and_its_payload_decode_as_the_whole_frame() {
        for len in [0usize, 1, 127, 128, 16_383, 16_384, 70_000, 3 << 20] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let whole = RunnerToHost::Send {
                taken: 0,
                to: Address::Name("sink".into()),
                payload: payload.clone(),
            };
            let head = RunnerToHost::Send {
                taken: 0,
                to: Address::Name("sink".into()),
                payload: Vec::new(),
            };
            let mut split = Vec::new();
            encode_head_into(&head, len, &mut split, MAX_FRAME_LEN).unwrap();
            split.extend_from_slice(&payload);
            let mut at_once = Vec::new();
            encode_into(&whole, &mut at_once, MAX_FRAME_LEN).unwrap();
            if len >= MARK_MIN_PAYLOAD {
                // The same body, after a marked length and the payload's.
                let body_len = (at_once.len() - HEADER_LEN) as u32;
                at_once.splice(..HEADER_LEN, (body_len | PAYLOAD_MARK).to_le_bytes());
                at_once.splice(HEADER_LEN..HEADER_LEN, (len as u32).to_le_bytes());
            }
            assert_eq!(split, at_once, "payload of {len} bytes");
            let (back, used) = decode::<RunnerToHost>(&split, MAX_FRAME_LEN)
                .unwrap()
                .unwrap();
            assert_eq!((back, used), (whole, split.len()), "payload of {len} bytes");
        }
    }

    #[test]
    fn a_marked_frame_decodes_from_its_head_and_its_payload_read_apart() {
        let payload = vec![9u8; MARK_MIN_PAYLOAD + 5];
        let head = HostToRunner::Replied {
            call: 7,
            payload: Vec::new(),
        };
        let mut frame = Vec::new();
        encode_head_into(&head, payload.len(), &mut frame, MAX_FRAME_LEN).unwrap();
        let found = header(&frame, MAX_FRAME_LEN).unwrap().unwrap();
        assert_eq!(
            found,
            Header {
                header_len: MARKED_HEADER_LEN,
                len: frame.len() - MARKED_HEADER_LEN + payload.len(),
                payload_len: Some(payload.len()),
                ring_pos: None,
            }
        );
        let back: HostToRunner = decode_head(&frame[MARKED_HEADER_LEN..], payload.clone()).unwrap();
        assert_eq!(back, HostToRunner::Replied { call: 7, payload });
    }

    #[test]
    fn a_frame_whose_payload_is_in_a_ring_carries_its_head_and_the_position() {
        let payload = vec![4u8; MARK_MIN_PAYLOAD + 1];
        let head = HostToRunner::Replied {
            call: 7,
            payload: Vec::new(),
        };
        let mut marked = Vec::new();
        encode_head_into(&head, payload.len(), &mut marked, MAX_FRAME_LEN).unwrap();
        let pos = (5u64 << 32) + 3;
        let mut frame = Vec::new();
        encode_ring_head_into(&head, payload.len(), pos, &mut frame, MAX_FRAME_LEN).unwrap();
        assert_eq!(frame.len(), marked.len() + 8);
        let found = header(&frame, MAX_FRAME_LEN).unwrap().unwrap();
        assert_eq!(
            found,
            Header {
                header_len: RING_HEADER_LEN,
                len: frame.len() - RING_HEADER_LEN + payload.len(),
                payload_len: Some(payload.len()),
                ring_pos: Some(pos),
            }
        );
        assert_eq!(found.pipe_len(), frame.len() - RING_HEADER_LEN);
        // The same head as the marked frame's, after the position.
        assert_eq!(
            frame[RING_HEADER_LEN..],
            marked[MARKED_HEADER_LEN..],
            "the head"
        );
        let back: HostToRunner = decode_head(&frame[RING_HEADER_LEN..], payload.clone()).unwrap();
        assert_eq!(back, HostToRunner::Replied { call: 7, payload });
        // Half a prefix is not yet a header.
        assert_eq!(header(&frame[..12], MAX_FRAME_LEN).unwrap(), None);
        // A reader without a ring refuses it, saying why.
        let err = decode::<HostToRunner>(&frame, MAX_FRAME_LEN).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "frame of {} bytes: its payload is in a shared ring, and this reader has none",
                found.len
            )
        );
        // A small payload is never in a ring.
        assert!(matches!(
            encode_ring_head_into(&head, 10, 0, &mut Vec::new(), MAX_FRAME_LEN),
            Err(FrameError::Ring { len: 10, .. })
        ));
    }

    #[test]
    fn a_mark_that_lies_about_the_payload_is_malformed() {
        let payload = vec![1u8; MARK_MIN_PAYLOAD];
        let head = RunnerToHost::Send {
            to: Address::Parent,
            taken: 0,
            payload: Vec::new(),
        };
        let mut frame = Vec::new();
        encode_head_into(&head, payload.len(), &mut frame, MAX_FRAME_LEN).unwrap();
        frame.extend_from_slice(&payload);
        // One byte less of payload than the body's own length says.
        frame[HEADER_LEN..MARKED_HEADER_LEN]
            .copy_from_slice(&(payload.len() as u32 - 1).to_le_bytes());
        assert!(matches!(
            decode::<RunnerToHost>(&frame, MAX_FRAME_LEN),
            Err(FrameError::Malformed { .. })
        ));
        let head_part = &frame[MARKED_HEADER_LEN..frame.len() - payload.len() + 1];
        assert!(matches!(
            decode_head::<RunnerToHost>(head_part, payload[1..].to_vec()),
            Err(FrameError::Malformed { .. })
        ));
        // Longer than the body: refused from the prefix alone.
        frame[HEADER_LEN..MARKED_HEADER_LEN].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            header(&frame, MAX_FRAME_LEN),
            Err(FrameError::Malformed { .. })
        ));
        // A frame kind without a payload cannot be marked.
        let mut ready = Vec::new();
        encode_into(&RunnerToHost::Ready, &mut ready, MAX_FRAME_LEN).unwrap();
        assert!(matches!(
            decode_head::<RunnerToHost>(&ready[HEADER_LEN..], vec![0; 3]),
            Err(FrameError::Malformed { .. })
        ));
    }

    #[test]
    fn a_head_is_checked_against_the_limit_with_its_payload() {
        let head = HostToRunner::Deliver(InboxItem::Message {
            from: GuestId(1),
            from_name: None,
            request: None,
            payload: Vec::new(),
        });
        let mut out = vec![9];
        let err = encode_head_into(&head, 1000, &mut out, 100).unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { max: 100, .. }),
            "{err}"
        );
        assert_eq!(out, [9]);
        let not_a_head = RunnerToHost::Monitor { name: "db".into() };
        assert!(encode_head_into(&not_a_head, 10, &mut out, 100).is_err());
        assert_eq!(out, [9]);
    }

    fn sample_frames() -> Vec<RunnerToHost> {
        vec![
            RunnerToHost::Hello {
                protocol_version: PROTOCOL_VERSION,
            },
            RunnerToHost::Send {
                taken: 0,
                to: Address::Name("worker-1".into()),
                payload: b"hello".to_vec(),
            },
            RunnerToHost::Send {
                taken: 0,
                to: Address::Id(GuestId(7)),
                payload: vec![0xff; 70_000],
            },
            RunnerToHost::Monitor { name: "db".into() },
            RunnerToHost::Exit(ExitReport::Trapped {
                message: "unreachable".into(),
                backtrace: vec!["guest::main".into()],
            }),
        ]
    }

    #[test]
    fn round_trip_many_frames_in_one_buffer() {
        let frames = sample_frames();
        let mut buf = Vec::new();
        for frame in &frames {
            encode_into(frame, &mut buf, MAX_FRAME_LEN).unwrap();
        }
        let mut rest = &buf[..];
        let mut decoded = Vec::new();
        while let Some((frame, used)) = decode::<RunnerToHost>(rest, MAX_FRAME_LEN).unwrap() {
            decoded.push(frame);
            rest = &rest[used..];
        }
        assert_eq!(decoded, frames);
        assert!(rest.is_empty());
    }

    #[test]
    fn round_trip_host_frames() {
        let frames = vec![
            HostToRunner::Launch(LaunchSpec {
                protocol_version: PROTOCOL_VERSION,
                id: GuestId(3),
                name: Some("a".into()),
                artifact: "/tmp/x.cwasm".into(),
                kind: ModuleKind::Component,
                args: vec!["x.wasm".into(), "a b".into()],
                env: vec![("K".into(), "V".into())],
                preopens: vec![Preopen {
                    host_path: "/data".into(),
                    guest_path: "/".into(),
                    read_only: true,
                }],
                limits: Limits::default(),
                probe: None,
            }),
            HostToRunner::Deliver(InboxItem::Undeliverable {
                to: Address::Group("g".into()),
                reason: UndeliverableReason::MailboxFull,
                payload_len: 12,
            }),
            HostToRunner::Deliver(InboxItem::Shutdown),
        ];
        let mut codec = FrameCodec::<HostToRunner>::default();
        let mut bytes = Vec::new();
        for frame in &frames {
            encode_into(frame, &mut bytes, MAX_FRAME_LEN).unwrap();
        }
        let mut buf = BytesMut::from(&bytes[..]);
        for frame in &frames {
            assert_eq!(codec.decode(&mut buf).unwrap().as_ref(), Some(frame));
        }
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    }

    #[test]
    fn partial_input_is_not_an_error() {
        let mut buf = Vec::new();
        encode_into(&sample_frames()[1], &mut buf, MAX_FRAME_LEN).unwrap();
        for cut in 0..buf.len() {
            assert!(
                decode::<RunnerToHost>(&buf[..cut], MAX_FRAME_LEN)
                    .unwrap()
                    .is_none(),
                "prefix of {cut} bytes"
            );
        }
        let (frame, used) = decode::<RunnerToHost>(&buf, MAX_FRAME_LEN)
            .unwrap()
            .unwrap();
        assert_eq!(frame, sample_frames()[1]);
        assert_eq!(used, buf.len());
    }

    #[test]
    fn oversize_length_is_refused_before_the_body_arrives() {
        let mut codec = FrameCodec::<RunnerToHost>::new(1024);
        let mut buf = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        let err = codec.decode(&mut buf).unwrap_err();
        // The top bit marks a payload; the rest is the length, 2 GiB.
        assert!(
            matches!(err, FrameError::TooLarge { len, max: 1024 } if len == (u32::MAX >> 1) as usize)
        );
        // Nothing was reserved for the announced 4 GiB body.
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn encoding_over_the_limit_is_refused_and_leaves_the_buffer() {
        let frame = RunnerToHost::Send {
            taken: 0,
            to: Address::Parent,
            payload: vec![1; 2000],
        };
        let mut out = vec![9, 9];
        let err = encode_into(&frame, &mut out, 1000).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { max: 1000, .. }));
        assert_eq!(out, vec![9, 9]);
    }

    #[test]
    fn garbage_is_malformed() {
        // An enum tag far past the last variant.
        let mut buf = 3u32.to_le_bytes().to_vec();
        buf.extend_from_slice(&[0x7f, 0x01, 0x02]);
        let err = decode::<RunnerToHost>(&buf, MAX_FRAME_LEN).unwrap_err();
        assert!(matches!(err, FrameError::Malformed { len: 3, .. }), "{err}");
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut body = postcard::to_allocvec(&RunnerToHost::Monitor { name: "x".into() }).unwrap();
        body.push(0);
        let mut buf = (body.len() as u32).to_le_bytes().to_vec();
        buf.extend_from_slice(&body);
        let err = decode::<RunnerToHost>(&buf, MAX_FRAME_LEN).unwrap_err();
        assert!(
            matches!(err, FrameError::Trailing { trailing: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn stream_ending_inside_a_frame_is_truncated() {
        let mut full = Vec::new();
        encode_into(&sample_frames()[0], &mut full, MAX_FRAME_LEN).unwrap();
        let mut codec = FrameCodec::<RunnerToHost>::default();
        let mut buf = BytesMut::from(&full[..full.len() - 1]);
        let err = codec.decode_eof(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::Truncated { .. }), "{err}");
    }

    #[test]
    fn a_blocking_read_goes_on_from_the_bytes_it_read_ahead() {
        let frames = [
            HostToRunner::Preload {
                artifact: "/cache/a.cwasm".into(),
                kind: ModuleKind::Component,
            },
            HostToRunner::Deliver(InboxItem::Shutdown),
        ];
        let mut bytes = Vec::new();
        for frame in &frames {
            write_frame_blocking(&mut bytes, frame).unwrap();
        }
        let mut input = &bytes[..];
        let (first, ahead) = read_frame_blocking::<HostToRunner>(&mut input, Vec::new()).unwrap();
        assert_eq!(first, frames[0]);
        // One read took both frames: the second is all in what was read ahead.
        assert!(input.is_empty());
        let (second, rest) = read_frame_blocking::<HostToRunner>(&mut input, ahead).unwrap();
        assert_eq!(second, frames[1]);
        assert!(rest.is_empty());
        let end = read_frame_blocking::<HostToRunner>(&mut input, rest).unwrap_err();
        assert!(
            matches!(end, FrameError::Truncated { buffered: 0 }),
            "{end}"
        );
    }

    #[test]
    fn version_mismatch_is_reported_with_both_versions() {
        assert!(check_version(PROTOCOL_VERSION).is_ok());
        let err = check_version(PROTOCOL_VERSION + 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "protocol version mismatch: this side speaks {}, the peer speaks {}",
                PROTOCOL_VERSION,
                PROTOCOL_VERSION + 1
            )
        );
    }

    #[test]
    fn a_hello_from_a_newer_runner_decodes_and_fails_the_check() {
        let mut buf = Vec::new();
        encode_into(
            &RunnerToHost::Hello {
                protocol_version: 99,
            },
            &mut buf,
            MAX_FRAME_LEN,
        )
        .unwrap();
        let (frame, _) = decode::<RunnerToHost>(&buf, MAX_FRAME_LEN)
            .unwrap()
            .unwrap();
        let RunnerToHost::Hello { protocol_version } = frame else {
            panic!("not a hello: {frame:?}");
        };
        assert_eq!(
            check_version(protocol_version),
            Err(VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 99
            })
        );
    }
}
