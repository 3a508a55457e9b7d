//! What hosts say to each other over NATS: the subjects, and the postcard
//! payloads on them. Pure: no I/O, so it is tested on its own.
//!
//! | subject | what | how |
//! |---|---|---|
//! | `wp.APP.in.NODE` | a letter of [`Envelope`]s for node NODE's relay | request; the reply is an [`Ack`] per envelope |
//! | `wp.APP.ack.NODE-INSTANCE.SEQ` | the [`Ack`]s for letter SEQ | the reply subject of the above (or carried by a letter going back: [`Letter::acks`]) |
//! | `wp.APP.ack.NODE-INSTANCE.many` | [`Answered`]s of several letters | acks that waited and no letter took |
//! | `wp.APP.done.NODE` | a [`Report`]: which of NODE's messages were taken or came back | batched, by the receiving host |
//! | `wp.APP.beat.NODE` | a [`Beat`]: NODE is up, and its guests | every [`BEAT`] |
//! | `wp.APP.exit.NODE` | an [`Exit`]: a guest of NODE ended | as it happens |
//! | `wp.APP.claim.NODE` | who runs node NODE? | request, answered by that host |
//! | `wp.APP.ctl.NODE` | a control verb (JSON) for NODE | request; the reply is the verb's answer |
//!
//! APP is the app's name and NODE a node name, each escaped into one token
//! of `[A-Za-z0-9_-]` ([`token`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmproc_protocol::{CallError, InboxItem, UndeliverableReason};

/// How often a host says it is up.
pub const BEAT: Duration = Duration::from_secs(1);

/// Beats missed before a peer counts as lost (and our own connection must
/// have been up this many beats for us to say so).
pub const MISSED_BEATS: u32 = 3;

/// One subject token for `name`: ASCII letters, digits and `-` stay, every
/// other byte (`_` too) becomes `_` and two hex digits, so distinct names
/// never share a token and no name can add a token or a wildcard.
pub fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// The subjects of one app, as seen from one node.
#[derive(Debug, Clone)]
pub struct Subjects {
    app: String,
}

impl Subjects {
    pub fn new(app: &str) -> Subjects {
        Subjects { app: token(app) }
    }

    fn of(&self, kind: &str, node: &str) -> String {
        format!("wp.{}.{kind}.{}", self.app, token(node))
    }

    /// Node `node`'s relay.
    pub fn inbox(&self, node: &str) -> String {
        self.of("in", node)
    }

    pub fn beat(&self, node: &str) -> String {
        self.of("beat", node)
    }

    pub fn exit(&self, node: &str) -> String {
        self.of("exit", node)
    }

    pub fn claim(&self, node: &str) -> String {
        self.of("claim", node)
    }

    pub fn control(&self, node: &str) -> String {
        self.of("ctl", node)
    }

    /// Where node `node` hears what became of its messages.
    pub fn settled(&self, node: &str) -> String {
        self.of("done", node)
    }

    /// Every node's `kind` subject (`beat`, `exit`).
    pub fn every(&self, kind: &str) -> String {
        format!("wp.{}.{kind}.*", self.app)
    }

    /// Where this host's acks come back, one subject per envelope.
    pub fn acks(&self, node: &str, instance: u64) -> String {
        format!("wp.{}.ack.{}-{instance:x}", self.app, token(node))
    }

    /// Whether `subject` is where some host of this app hears its acks.
    pub fn is_acks(&self, subject: &str) -> bool {
        subject
            .strip_prefix("wp.")
            .and_then(|rest| rest.strip_prefix(self.app.as_str()))
            .and_then(|rest| rest.strip_prefix(".ack."))
            .is_some_and(|rest| {
                rest.split_once('.')
                    .is_some_and(|(_, seq)| seq.parse::<u64>().is_ok())
            })
    }

    /// Where process `instance` of `node` hears its take reports answered
    /// (one more token: report numbers).
    pub fn report_acks(&self, node: &str, instance: u64) -> String {
        format!("{}.report", self.acks(node, instance))
    }

    /// The node whose `kind` subject this is (the last token, unescaped
    /// enough to compare: tokens are compared escaped).
    pub fn node_token(subject: &str) -> &str {
        subject.rsplit('.').next().unwrap_or_default()
    }
}

/// A guest, as another host names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// By name: it follows the name through restarts and swaps there.
    Name(String),
    /// By that host's id (a guest without a name).
    Id(u64),
}

/// Who sent an envelope's message: a guest of the sending host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct From {
    /// Its id on the sending host.
    pub id: u64,
    pub name: Option<String>,
}

/// What one host asks of another's relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Envelope {
    /// A message for a guest of the receiving host, numbered by the
    /// sending host: the receiving host reports that number when the
    /// message is taken or comes back ([`Report`]).
    Message {
        to: Target,
        from: From,
        seq: u64,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// A call to a guest of the receiving host, which places it with the
    /// time left and answers with [`Envelope::Answer`].
    Call {
        to: Target,
        from: From,
        /// The call's id on the sending host.
        request: u64,
        timeout_ms: u64,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// The answer to call `request`, which the receiving host placed.
    Answer {
        request: u64,
        answer: Result<serde_bytes::ByteBuf, CallError>,
    },
    /// A notice for guest `to` of the receiving host, about what it sent.
    Notice { to: u64, item: InboxItem },
    /// Is this host there? (Asked of a peer whose beat is late.)
    Ping,
}

/// What the receiving relay did with an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ack {
    /// Queued in the recipient's mailbox (or handled, for the rest): from
    /// here the receiving host returns it if it is not taken.
    Accepted,
    /// A message that could not be queued, and why.
    Undeliverable(UndeliverableReason),
    /// A call that could not be placed, and why.
    CallFailed(CallError),
    /// The envelope could not be read (a host of another version).
    Garbled,
}

/// Envelopes, in order, and the node that sent them: one NATS message to
/// a node's inbox, answered with one [`Ack`] per envelope, on its own or
/// carried by a letter going back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Letter {
    pub node: String,
    pub envelopes: Vec<Envelope>,
    /// The acks of letters the receiving host sent here, carried back.
    pub acks: Vec<Answered>,
}

impl Letter {
    /// A letter that carries no acks.
    pub fn new(node: String, envelopes: Vec<Envelope>) -> Letter {
        Letter {
            node,
            envelopes,
            acks: Vec::new(),
        }
    }
}

/// The acks of one letter: the reply subject it named, and an [`Ack`]
/// per envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answered {
    pub reply: String,
    pub acks: Vec<Ack>,
}

/// What became of messages of one host (by their numbers) at another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The node that says so: where the messages went.
    pub node: String,
    /// Taken by their recipients.
    pub taken: Vec<u64>,
    /// Come back, and why (their recipients ended before taking them).
    pub returned: Vec<(u64, UndeliverableReason)>,
}

impl Report {
    /// This report as reports of at most `most` numbers each.
    pub fn split(self, most: usize) -> Vec<Report> {
        let most = most.max(1);
        let part = |taken: &[u64], returned: &[(u64, UndeliverableReason)]| Report {
            node: self.node.clone(),
            taken: taken.to_vec(),
            returned: returned.to_vec(),
        };
        let mut parts: Vec<Report> = self.taken.chunks(most).map(|t| part(t, &[])).collect();
        parts.extend(self.returned.chunks(most).map(|r| part(&[], r)));
        parts
    }
}

/// One of a host's guests, as its beats announce it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guest {
    pub id: u64,
    pub name: Option<String>,
    pub group: Option<String>,
    pub max_message_size: u64,
}

/// A host's heartbeat: it is up, and these are its guests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    pub node: String,
    /// Random per process: two hosts claiming one node differ here.
    pub instance: u64,
    pub guests: Vec<Guest>,
    /// The host is leaving (its last beat, on shutdown).
    pub leaving: bool,
}

/// A guest of the sending host has ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub id: u64,
    pub reason: String,
    /// Its name had moved on to a new instance (a swap): whoever reaches
    /// it by name reaches the new one, so nothing ends for them.
    pub moved: bool,
}

/// Encode anything of this module.
pub fn encode<T: Serialize>(value: &T) -> bytes::Bytes {
    // Nothing here fails to encode: no maps with non-string keys, no
    // sequences of unknown length.
    bytes::Bytes::from(postcard::to_allocvec(value).unwrap_or_default())
}

/// Decode anything of this module; `None` for bytes that are not one.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    postcard::from_bytes(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_safe_names_and_escape_the_rest_injectively() {
        assert_eq!(token("worker-1"), "worker-1");
        assert_eq!(token("w.1"), "w_2e1");
        assert_eq!(token("a_b"), "a_5fb");
        assert_eq!(token("a*>"), "a_2a_3e");
        assert_eq!(token("é"), "_c3_a9");
        // `_` itself is escaped, so an escape cannot be forged by a name.
        assert_ne!(token("w_2e1"), token("w.1"));
        assert!(
            token("x y.z>*$")
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn subjects_put_app_and_node_in_one_token_each() {
        let s = Subjects::new("my.app");
        assert_eq!(s.inbox("b"), "wp.my_2eapp.in.b");
        assert_eq!(s.every("beat"), "wp.my_2eapp.beat.*");
        assert_eq!(s.acks("a", 255), "wp.my_2eapp.ack.a-ff");
        assert_eq!(s.settled("a"), "wp.my_2eapp.done.a");
        assert_eq!(Subjects::node_token("wp.x.beat.n-1"), "n-1");
    }

    #[test]
    fn only_a_hosts_acks_subject_of_this_app_counts_as_one() {
        let s = Subjects::new("my.app");
        assert!(s.is_acks(&format!("{}.17", s.acks("a", 255))));
        // Another app's, a report's answer, a probe's inbox, no number.
        assert!(!s.is_acks(&format!("{}.17", Subjects::new("other").acks("a", 255))));
        assert!(!s.is_acks(&format!("{}.3", s.report_acks("a", 255))));
        assert!(!s.is_acks("_INBOX.abc.def"));
        assert!(!s.is_acks(&format!("{}.many", s.acks("a", 255))));
    }

    #[test]
    fn a_letter_carries_acks_back() {
        let letter = Letter {
            node: "b".into(),
            envelopes: vec![Envelope::Ping],
            acks: vec![Answered {
                reply: "wp.x.ack.a-1.9".into(),
                acks: vec![Ack::Accepted, Ack::Garbled],
            }],
        };
        assert_eq!(decode::<Letter>(&encode(&letter)), Some(letter));
    }

    #[test]
    fn envelopes_round_trip_and_garbage_is_refused() {
        let envelope = Envelope::Call {
            to: Target::Name("kv".into()),
            from: From {
                id: 7,
                name: Some("client".into()),
            },
            request: 42,
            timeout_ms: 1000,
            payload: b"get x".to_vec(),
        };
        assert_eq!(decode::<Envelope>(&encode(&envelope)), Some(envelope));
        assert_eq!(decode::<Envelope>(&[0xff, 0xff, 0xff]), None);
        let ack = Ack::Undeliverable(UndeliverableReason::MailboxFull);
        assert_eq!(decode::<Ack>(&encode(&ack)), Some(ack));
    }

    #[test]
    fn reports_split_into_parts_that_keep_every_number() {
        let report = Report {
            node: "b".into(),
            taken: (1..=5).collect(),
            returned: vec![(9, UndeliverableReason::RecipientExited)],
        };
        assert_eq!(decode::<Report>(&encode(&report)), Some(report.clone()));
        let parts = report.split(2);
        let taken: Vec<u64> = parts.iter().flat_map(|p| p.taken.clone()).collect();
        assert_eq!(taken, [1, 2, 3, 4, 5]);
        assert_eq!(parts.len(), 4);
        assert_eq!(
            parts[3].returned,
            [(9, UndeliverableReason::RecipientExited)]
        );
        assert!(parts.iter().all(|p| p.node == "b"));
    }
}
