//! Trace contexts: the W3C `traceparent`/`tracestate` a task carries from
//! the span that scheduled it to every attempt's worker
//! (<https://www.w3.org/TR/trace-context/>).
//!
//! A task's context is stored apart from its row (see
//! `store::keys::trace`), written only by `Operation::Traced` (feature
//! level 3), so the task row's encoding and every entry of earlier levels
//! are unchanged. Retries and redrives keep it (nothing rewrites it); a
//! periodic schedule's fire gets a trace of its own, derived from the
//! schedule's name and the task, linked to the schedule's context
//! ([`TraceContext::fire`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest `tracestate` accepted (the W3C limit is 32 entries; 512 bytes
/// is what propagators must at least pass on).
pub const MAX_TRACESTATE: usize = 512;

/// A W3C trace context, as given: `traceparent` is well formed (see
/// [`TraceContext::parse`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: String,
}

impl crate::encoding::Record for TraceContext {}

impl TraceContext {
    /// Check a `traceparent` (version `00`: `00-` 32 hex digits of trace id,
    /// `-` 16 of span id, `-` 2 of flags, lower case, neither id all
    /// zeros) and a `tracestate`. `Ok(None)` for an empty traceparent.
    pub fn parse(traceparent: &str, tracestate: &str) -> Result<Option<TraceContext>, String> {
        let traceparent = traceparent.trim();
        if traceparent.is_empty() {
            if !tracestate.is_empty() {
                return Err("tracestate is set without a traceparent".into());
            }
            return Ok(None);
        }
        let parts: Vec<&str> = traceparent.split('-').collect();
        let hex =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let bad = |why: &str| {
            Err(format!(
                "traceparent {traceparent:?} is not a W3C trace context ({why}); expected 00-<32 hex trace id>-<16 hex \
                 span id>-<2 hex flags>"
            ))
        };
        let [version, trace_id, span_id, flags] = parts[..] else { return bad("not four dash-separated fields") };
        if version != "00" {
            return bad("only version 00 is understood");
        }
        if !hex(trace_id, 32) || trace_id.bytes().all(|b| b == b'0') {
            return bad("the trace id must be 32 lower-case hex digits, not all zeros");
        }
        if !hex(span_id, 16) || span_id.bytes().all(|b| b == b'0') {
            return bad("the span id must be 16 lower-case hex digits, not all zeros");
        }
        if !hex(flags, 2) {
            return bad("the flags must be 2 lower-case hex digits");
        }
        if tracestate.len() > MAX_TRACESTATE {
            return Err(format!("tracestate is {} bytes; the limit is {MAX_TRACESTATE}", tracestate.len()));
        }
        if !tracestate.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err("tracestate must be printable ASCII".into());
        }
        Ok(Some(TraceContext { traceparent: traceparent.to_string(), tracestate: tracestate.to_string() }))
    }

    /// The trace id, 32 hex digits.
    pub fn trace_id(&self) -> &str {
        self.traceparent.get(3..35).unwrap_or_default()
    }

    /// The parent span id, 16 hex digits.
    pub fn span_id(&self) -> &str {
        self.traceparent.get(36..52).unwrap_or_default()
    }

    /// Whether its producer sampled it (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.traceparent.get(53..55).and_then(|f| u8::from_str_radix(f, 16).ok()).is_some_and(|f| f & 1 == 1)
    }

    /// The trace of one fire of a periodic schedule whose own context is
    /// `self`: a new trace id and span id derived from the schedule's name
    /// and the fired task (so every read, on any node, derives the same),
    /// with the schedule's sampling flag and state.
    pub fn fire(&self, schedule: &str, task_id: u64, created_index: u64) -> TraceContext {
        let mut h = Sha256::new();
        h.update(b"drover fire\0");
        h.update(schedule.as_bytes());
        h.update([0]);
        h.update(task_id.to_be_bytes());
        h.update(created_index.to_be_bytes());
        h.update(self.trace_id().as_bytes());
        let digest = h.finalize();
        let flags = if self.sampled() { "01" } else { "00" };
        TraceContext {
            traceparent: format!("00-{}-{}-{flags}", hex::encode(&digest[..16]), hex::encode(&digest[16..24])),
            tracestate: self.tracestate.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_w3c_traceparent_parses_and_names_its_parts() {
        let t = TraceContext::parse(GOOD, "congo=t61rcWkgMzE").unwrap().unwrap();
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id(), "00f067aa0ba902b7");
        assert!(t.sampled());
        assert!(!TraceContext::parse(&GOOD.replace("-01", "-00"), "").unwrap().unwrap().sampled());
        assert_eq!(TraceContext::parse("", "").unwrap(), None);
    }

    #[test]
    fn malformed_traceparents_are_refused_with_the_reason() {
        for (bad, why) in [
            ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version"),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "trace id"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "span id"),
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "trace id"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "four"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", "flags"),
            ("nonsense", "four"),
        ] {
            let e = TraceContext::parse(bad, "").unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(TraceContext::parse("", "a=b").unwrap_err().contains("without a traceparent"));
        assert!(TraceContext::parse(GOOD, &"x".repeat(MAX_TRACESTATE + 1)).unwrap_err().contains("limit"));
    }

    #[test]
    fn each_fire_gets_its_own_trace_the_same_on_every_read() {
        let s = TraceContext::parse(GOOD, "k=v").unwrap().unwrap();
        let a = s.fire("nightly", 7, 100);
        assert_eq!(a, s.fire("nightly", 7, 100));
        assert_ne!(a.trace_id(), s.fire("nightly", 8, 101).trace_id());
        assert_ne!(a.trace_id(), s.trace_id());
        assert!(TraceContext::parse(&a.traceparent, &a.tracestate).unwrap().is_some());
        assert!(a.sampled());
        assert_eq!(a.tracestate, "k=v");
    }
}
