//! The JSON-RPC 2.0 envelope, for the parties that frame messages
//! themselves: the CLI's blocking client and the daemon's plugin host
//! (the daemon's own API is served by jsonrpsee, which has its own).
//!
//! Serde types only: no I/O, no async. Outgoing messages borrow their
//! method and parameters ([`Request`], [`Notification`]); an incoming line
//! of any kind reads as one [`Message`], whose fields say what it is (a
//! `method` with an `id` is a request, without one a notification; an `id`
//! without a `method` is a response, carrying `result` or `error`).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::WireError;

/// The only version there is, in every message's `jsonrpc` field.
pub const VERSION: &str = "2.0";

/// A request or response id: a number, a string or `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    Number(serde_json::Number),
    String(String),
    Null,
}

impl Id {
    /// The id as the unsigned number both framing parties send.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Id::Number(n) => n.as_u64(),
            _ => None,
        }
    }
}

impl From<u64> for Id {
    fn from(n: u64) -> Id {
        Id::Number(n.into())
    }
}

/// As JSON: `7`, `"seven"`, `null`.
impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::String(s) => write!(f, "{}", Value::String(s.clone())),
            Id::Null => f.write_str("null"),
        }
    }
}

/// A call that expects an answer with the same `id`.
#[derive(Debug, Clone, Serialize)]
pub struct Request<'a, P> {
    pub jsonrpc: &'static str,
    pub id: Id,
    pub method: &'a str,
    pub params: P,
}

impl<'a, P> Request<'a, P> {
    pub fn new(id: impl Into<Id>, method: &'a str, params: P) -> Self {
        Request {
            jsonrpc: VERSION,
            id: id.into(),
            method,
            params,
        }
    }
}

/// A message that expects no answer.
#[derive(Debug, Clone, Serialize)]
pub struct Notification<'a, P> {
    pub jsonrpc: &'static str,
    pub method: &'a str,
    pub params: P,
}

impl<'a, P> Notification<'a, P> {
    pub fn new(method: &'a str, params: P) -> Self {
        Notification {
            jsonrpc: VERSION,
            method,
            params,
        }
    }
}

/// The answer to a request: its `result` or its `error`.
#[derive(Debug, Clone, Serialize)]
pub struct Response<R> {
    pub jsonrpc: &'static str,
    pub id: Id,
    #[serde(flatten)]
    pub outcome: Outcome<R>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome<R> {
    Result(R),
    Error(WireError),
}

impl<R> Response<R> {
    pub fn new(id: impl Into<Id>, outcome: Result<R, WireError>) -> Self {
        Response {
            jsonrpc: VERSION,
            id: id.into(),
            outcome: match outcome {
                Ok(r) => Outcome::Result(r),
                Err(e) => Outcome::Error(e),
            },
        }
    }
}

/// Any incoming message, every field optional: the reader decides what
/// it is and what is missing. `R` is how `result` is kept (a [`Value`],
/// or a `Box<RawValue>` to deserialize later straight into its type).
#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "R: Deserialize<'de>"))]
pub struct Message<R = Value> {
    #[serde(default)]
    pub jsonrpc: Option<String>,
    #[serde(default)]
    pub id: Option<Id>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub params: Option<Value>,
    #[serde(default)]
    pub result: Option<R>,
    #[serde(default)]
    pub error: Option<WireError>,
}

impl<R> Message<R> {
    /// What a response carries: its `error` if any, else its `result`
    /// (`None` when it has neither).
    pub fn outcome(self) -> Result<Option<R>, WireError> {
        match (self.result, self.error) {
            (_, Some(e)) => Err(e),
            (r, None) => Ok(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn outgoing_messages_carry_the_version_and_their_fields() {
        let req = serde_json::to_value(Request::new(3, "hello", json!({"a": 1}))).unwrap();
        assert_eq!(
            req,
            json!({"jsonrpc": "2.0", "id": 3, "method": "hello", "params": {"a": 1}})
        );
        let note = serde_json::to_value(Notification::new("cancel", json!({}))).unwrap();
        assert_eq!(
            note,
            json!({"jsonrpc": "2.0", "method": "cancel", "params": {}})
        );
        let ok = serde_json::to_value(Response::new(4, Ok(json!("x")))).unwrap();
        assert_eq!(ok, json!({"jsonrpc": "2.0", "id": 4, "result": "x"}));
        let err = WireError {
            code: -32601,
            message: "no such method".into(),
            data: None,
        };
        let bad = serde_json::to_value(Response::<Value>::new(Id::Null, Err(err))).unwrap();
        assert_eq!(
            bad,
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32601, "message": "no such method"}})
        );
    }

    #[test]
    fn ids_are_numbers_strings_or_null() {
        let m: Message = serde_json::from_str(r#"{"id": 7, "result": 1}"#).unwrap();
        assert_eq!(m.id.as_ref().and_then(Id::as_u64), Some(7));
        let m: Message = serde_json::from_str(r#"{"id": "seven", "result": 1}"#).unwrap();
        assert_eq!(m.id, Some(Id::String("seven".into())));
        assert_eq!(m.id.unwrap().to_string(), "\"seven\"");
        let m: Message = serde_json::from_str(r#"{"id": null, "method": "log"}"#).unwrap();
        assert_eq!(m.id, None);
        assert_eq!(Id::from(5).to_string(), "5");
    }

    #[test]
    fn an_error_wins_over_a_result_and_neither_is_none() {
        let m: Message =
            serde_json::from_str(r#"{"id": 1, "result": 2, "error": {"code": 1, "message": "m"}}"#)
                .unwrap();
        assert_eq!(m.outcome().unwrap_err().message, "m");
        let m: Message = serde_json::from_str(r#"{"id": 1}"#).unwrap();
        assert_eq!(m.outcome().unwrap(), None);
    }
}
