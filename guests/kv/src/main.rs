//! A small key-value server: it answers calls, one line of text each.
//!
//! - `put KEY VALUE` stores VALUE (the rest of the line) under KEY: `ok`;
//! - `get KEY`: `value VALUE`, or `missing`;
//! - `del KEY`: `deleted`, or `missing`;
//! - `len`: the number of keys.
//!
//! Anything else is answered `error: ...`. A plain message (not a call) is
//! ignored; `shutdown` ends it.
//!
//! ```text
//! $ wasmproc call kv.wasm 'get colour'
//! missing
//! ```

use std::collections::BTreeMap;

use wasmproc_guest::{self as ipc, InboxItem};

fn main() {
    let mut store = BTreeMap::new();
    for item in ipc::inbox() {
        match item {
            InboxItem::Message(msg) if msg.request.is_some() => {
                let answer = match std::str::from_utf8(&msg.payload) {
                    Ok(line) => answer(&mut store, line),
                    Err(_) => "error: a request is one line of UTF-8 text".to_owned(),
                };
                // A caller that stopped waiting needs no answer.
                let _ = msg.reply(answer.as_bytes());
            }
            InboxItem::Shutdown => return,
            _ => {}
        }
    }
}

fn answer(store: &mut BTreeMap<String, String>, line: &str) -> String {
    let mut words = line.splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("put"), Some(key), Some(value)) => {
            store.insert(key.to_owned(), value.to_owned());
            "ok".to_owned()
        }
        (Some("get"), Some(key), None) => match store.get(key) {
            Some(value) => format!("value {value}"),
            None => "missing".to_owned(),
        },
        (Some("del"), Some(key), None) => match store.remove(key) {
            Some(_) => "deleted".to_owned(),
            None => "missing".to_owned(),
        },
        (Some("len"), None, None) => store.len().to_string(),
        _ => format!("error: `{line}` is not `put KEY VALUE`, `get KEY`, `del KEY` or `len`"),
    }
}
