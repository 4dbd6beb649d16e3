//! WebAssembly test guests written in WAT, compiled with the `wat` crate:
//! they need no `wasm32` target. A [`Guest`] answers each method with a
//! fixed [`Action`]: a fixed JSON result or error, an endless loop,
//! unbounded memory growth, or a host call whose response it returns.
//!
//! Shared by the daemon's unit tests (through `#[path]`) and the
//! scenarios.
//!
//! The guest finds the request id at byte 22 of the message (`{"jsonrpc":
//! "2.0","id":N,"method":"…"`, the order the host writes) and the method
//! name after it.

/// What a guest does when called with a method.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answer with this JSON as the result.
    Result(String),
    /// Answer with this JSON-RPC error.
    Error(i32, String),
    /// Loop forever.
    Loop,
    /// Grow memory until it traps.
    Grow,
    /// Trap at once (`unreachable`).
    Trap,
    /// Sleep this many milliseconds (WASI `poll_oneoff`, one relative
    /// clock: what `std::thread::sleep` does), then answer `{}`.
    Sleep(u64),
    /// Send this JSON-RPC message through `host_call`, then answer with
    /// the host's response as the result (`null` for a notification).
    HostCall(String),
    /// Send this message (a host call or a notification) through
    /// `host_call`, ignore the answer, and answer with this result.
    CallThen(String, String),
}

/// A test guest.
#[derive(Debug, Clone)]
pub struct Guest {
    /// What `taskrush_abi_version` returns.
    pub abi: i32,
    /// The `taskrush_version` custom section, if any.
    pub version_section: Option<String>,
    /// Method → action; other methods are answered "method not found".
    pub answers: Vec<(String, Action)>,
}

impl Guest {
    /// A guest that shakes hands as `name` `version` with `hooks`, and
    /// answers every hook with an empty result.
    pub fn plugin(name: &str, version: &str, hooks: &[&str]) -> Guest {
        let hooks_json: Vec<String> = hooks.iter().map(|h| format!("\"{h}\"")).collect();
        let init = format!(
            r#"{{"name":"{name}","version":"{version}","protocol":1,"hooks":[{}],"commands":[]}}"#,
            hooks_json.join(",")
        );
        let mut answers = vec![("initialize".to_owned(), Action::Result(init))];
        for h in hooks {
            answers.push(((*h).to_owned(), Action::Result("{}".into())));
        }
        answers.push(("shutdown".into(), Action::Result("null".into())));
        Guest {
            abi: 1,
            version_section: None,
            answers,
        }
    }

    /// Answer `method` with `action` (replacing an earlier answer).
    pub fn on(mut self, method: &str, action: Action) -> Guest {
        self.answers.retain(|(m, _)| m != method);
        self.answers.insert(0, (method.to_owned(), action));
        self
    }

    pub fn abi(mut self, abi: i32) -> Guest {
        self.abi = abi;
        self
    }

    pub fn version_section(mut self, v: &str) -> Guest {
        self.version_section = Some(v.to_owned());
        self
    }

    /// The module's text.
    pub fn wat(&self) -> String {
        let mut data = Data::default();
        let prefix = data.add(br#"{"jsonrpc":"2.0","id":"#);
        let result_key = data.add(br#""result":"#);
        let null = data.add(b"null");
        let not_found = data.add(br#""error":{"code":-32601,"message":"method not found"}"#);
        let mut dispatch = String::new();
        for (method, action) in &self.answers {
            let name = data.add(format!("{method}\"").as_bytes());
            let body = match action {
                Action::Result(json) => {
                    let seg = data.add(format!(r#""result":{json}"#).as_bytes());
                    format!(
                        "(return (call $reply (local.get $id) (local.get $idlen) (i32.const {}) (i32.const {}) (i32.const 0) (i32.const 0)))",
                        seg.0, seg.1
                    )
                }
                Action::Error(code, message) => {
                    let seg = data.add(
                        format!(
                            r#""error":{{"code":{code},"message":{}}}"#,
                            json_str(message)
                        )
                        .as_bytes(),
                    );
                    format!(
                        "(return (call $reply (local.get $id) (local.get $idlen) (i32.const {}) (i32.const {}) (i32.const 0) (i32.const 0)))",
                        seg.0, seg.1
                    )
                }
                Action::Loop => "(loop $forever (br $forever)) (unreachable)".into(),
                Action::Trap => "(unreachable)".into(),
                Action::Grow => {
                    "(loop $more (drop (memory.grow (i32.const 16))) (br $more)) (unreachable)"
                        .into()
                }
                Action::Sleep(ms) => {
                    // subscription: userdata 0, tag 0 (clock), id 1
                    // (monotonic) at 16, timeout (ns) at 24, flags 0.
                    let mut sub = vec![0u8; 48];
                    sub[16] = 1;
                    sub[24..32].copy_from_slice(&(ms * 1_000_000).to_le_bytes());
                    let sub = data.add(&sub);
                    let event = data.add(&[0u8; 40]);
                    let res = data.add(br#""result":{}"#);
                    format!(
                        "(drop (call $poll_oneoff (i32.const {}) (i32.const {}) (i32.const 1) (i32.const {})))
                         (return (call $reply (local.get $id) (local.get $idlen) (i32.const {}) (i32.const {}) (i32.const 0) (i32.const 0)))",
                        sub.0,
                        event.0,
                        event.0 + 32,
                        res.0,
                        res.1
                    )
                }
                Action::HostCall(msg) => {
                    let seg = data.add(msg.as_bytes());
                    format!(
                        "(local.set $r (call $host_call (i32.const {}) (i32.const {})))
                         (if (i64.eqz (local.get $r)) (then (return (call $reply (local.get $id) (local.get $idlen) (i32.const {}) (i32.const {}) (i32.const {}) (i32.const {})))))
                         (return (call $reply (local.get $id) (local.get $idlen) (i32.const {}) (i32.const {}) (i32.wrap_i64 (i64.shr_u (local.get $r) (i64.const 32))) (i32.wrap_i64 (local.get $r))))",
                        seg.0, seg.1, result_key.0, result_key.1, null.0, null.1, result_key.0, result_key.1
                    )
                }
                Action::CallThen(msg, json) => {
                    let seg = data.add(msg.as_bytes());
                    let res = data.add(format!(r#""result":{json}"#).as_bytes());
                    format!(
                        "(drop (call $host_call (i32.const {}) (i32.const {})))
                         (return (call $reply (local.get $id) (local.get $idlen) (i32.const {}) (i32.const {}) (i32.const 0) (i32.const 0)))",
                        seg.0, seg.1, res.0, res.1
                    )
                }
            };
            dispatch.push_str(&format!(
                "(if (call $is (local.get $m) (i32.const {}) (i32.const {})) (then {body}))\n",
                name.0, name.1
            ));
        }
        assert!(data.next < 60_000, "test guest data too large");
        format!(
            r#"(module
  (import "taskrush" "host_call" (func $host_call (param i32 i32) (result i64)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  {segments}
  (func (export "taskrush_abi_version") (result i32) (i32.const {abi}))
  (func $alloc (export "taskrush_alloc") (param $len i32) (result i32)
    (local $p i32) (local $need i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $len)))
    (local.set $need (i32.sub (i32.shr_u (i32.add (global.get $heap) (i32.const 65535)) (i32.const 16)) (memory.size)))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then (if (i32.eq (memory.grow (local.get $need)) (i32.const -1)) (then (unreachable)))))
    (local.get $p))
  (func (export "taskrush_free") (param $p i32) (param $len i32)
    (if (i32.eq (i32.add (local.get $p) (local.get $len)) (global.get $heap))
      (then (global.set $heap (local.get $p)))))
  (func $is (param $a i32) (param $b i32) (param $n i32) (result i32)
    (local $i i32)
    (block $no
      (loop $next
        (if (i32.ge_u (local.get $i) (local.get $n)) (then (return (i32.const 1))))
        (br_if $no (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i)))
                           (i32.load8_u (i32.add (local.get $b) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 0))
  (func $reply (param $id i32) (param $idlen i32) (param $b1 i32) (param $l1 i32) (param $b2 i32) (param $l2 i32) (result i64)
    (local $out i32) (local $n i32) (local $o i32)
    (local.set $n (i32.add (i32.add (i32.const {plen}) (local.get $idlen)) (i32.add (i32.add (local.get $l1) (local.get $l2)) (i32.const 2))))
    (local.set $out (call $alloc (local.get $n)))
    (memory.copy (local.get $out) (i32.const {pptr}) (i32.const {plen}))
    (local.set $o (i32.add (local.get $out) (i32.const {plen})))
    (memory.copy (local.get $o) (local.get $id) (local.get $idlen))
    (local.set $o (i32.add (local.get $o) (local.get $idlen)))
    (i32.store8 (local.get $o) (i32.const 44))
    (local.set $o (i32.add (local.get $o) (i32.const 1)))
    (memory.copy (local.get $o) (local.get $b1) (local.get $l1))
    (local.set $o (i32.add (local.get $o) (local.get $l1)))
    (memory.copy (local.get $o) (local.get $b2) (local.get $l2))
    (local.set $o (i32.add (local.get $o) (local.get $l2)))
    (i32.store8 (local.get $o) (i32.const 125))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32)) (i64.extend_i32_u (local.get $n))))
  (func (export "taskrush_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $id i32) (local $idlen i32) (local $m i32) (local $r i64)
    (local.set $id (i32.add (local.get $ptr) (i32.const {plen})))
    (block $done
      (loop $scan
        (br_if $done (i32.eq (i32.load8_u (i32.add (local.get $id) (local.get $idlen))) (i32.const 44)))
        (local.set $idlen (i32.add (local.get $idlen) (i32.const 1)))
        (br $scan)))
    (local.set $m (i32.add (i32.add (local.get $id) (local.get $idlen)) (i32.const 11)))
    {dispatch}
    (call $reply (local.get $id) (local.get $idlen) (i32.const {nf}) (i32.const {nflen}) (i32.const 0) (i32.const 0)))
)"#,
            segments = data.segments,
            abi = self.abi,
            pptr = prefix.0,
            plen = prefix.1,
            nf = not_found.0,
            nflen = not_found.1,
        )
    }

    /// The module's bytes (with its custom section, if any).
    pub fn wasm(&self) -> Vec<u8> {
        let mut bytes = wat::parse_str(self.wat()).expect("the test guest's WAT is valid");
        if let Some(v) = &self.version_section {
            let name = b"taskrush_version";
            let mut body = leb(name.len());
            body.extend_from_slice(name);
            body.extend_from_slice(v.as_bytes());
            bytes.push(0);
            bytes.extend(leb(body.len()));
            bytes.extend(body);
        }
        bytes
    }
}

/// A module that is not a plugin at all, for the "wrong ABI" family: it
/// exports `taskrush_abi_version` only.
pub fn abi_only(abi: i32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module (memory (export "memory") 1) (func (export "taskrush_abi_version") (result i32) (i32.const {abi})))"#
    ))
    .expect("valid WAT")
}

fn leb(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[derive(Default)]
struct Data {
    segments: String,
    next: usize,
}

impl Data {
    /// Place `bytes` in page 0; returns (offset, length).
    fn add(&mut self, bytes: &[u8]) -> (usize, usize) {
        if self.next == 0 {
            self.next = 1024;
        }
        // 8-aligned: WASI reads its structures aligned.
        self.next = self.next.div_ceil(8) * 8;
        let at = self.next;
        let mut text = String::new();
        for b in bytes {
            text.push_str(&format!("\\{b:02x}"));
        }
        self.segments
            .push_str(&format!("(data (i32.const {at}) \"{text}\")\n  "));
        self.next += bytes.len().max(1);
        (at, bytes.len())
    }
}
