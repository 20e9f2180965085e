//! Operational metrics, recorded through the `metrics` facade: nothing is kept unless the
//! process installs a recorder (`quire serve --metrics-listen` installs the Prometheus one).
//!
//! Every name starts with `quire_`; durations are in seconds. Labels take a handful of fixed
//! values, so series stay few.

use std::time::Duration;

use metrics::{counter, histogram};

use crate::{Answer, Error, Hit, IngestOutcome, IngestStatus, Result};

/// One `Engine::ingest` call: documents by status (`created`, `replaced`, `unchanged`, or
/// `failed` with the error's code), chunks written, and the call's duration.
pub(crate) fn observe_ingest(result: &Result<IngestOutcome>, took: Duration) {
    match result {
        Ok(outcome) => {
            let status = match outcome.status {
                IngestStatus::Created => "created",
                IngestStatus::Replaced => "replaced",
                IngestStatus::Unchanged => "unchanged",
            };
            counter!("quire_ingest_documents_total", "status" => status).increment(1);
            if outcome.status != IngestStatus::Unchanged {
                counter!("quire_ingest_chunks_total").increment(u64::from(outcome.chunks));
            }
        }
        Err(e) => {
            counter!("quire_ingest_documents_total", "status" => "failed", "code" => e.code())
                .increment(1)
        }
    }
    histogram!("quire_ingest_seconds").record(took.as_secs_f64());
}

/// One `Engine::retrieve` call: its duration, and errors by code.
pub(crate) fn observe_retrieve(result: &Result<Vec<Hit>>, took: Duration) {
    if let Err(e) = result {
        counter!("quire_request_errors_total", "call" => "retrieve", "code" => e.code())
            .increment(1);
    }
    histogram!("quire_retrieve_seconds").record(took.as_secs_f64());
}

/// One `Engine::ask` call: answers and abstentions, errors by code, the call's duration, the
/// time to the first generated token, and the tokens read and generated.
pub(crate) fn observe_ask(result: &Result<Answer>, took: Duration) {
    match result {
        Ok(answer) => {
            let outcome = if answer.abstained.is_some() {
                "abstained"
            } else {
                "answered"
            };
            counter!("quire_ask_total", "outcome" => outcome).increment(1);
            counter!("quire_prompt_tokens_total").increment(answer.prompt_tokens as u64);
            counter!("quire_generated_tokens_total").increment(answer.completion_tokens as u64);
            if answer.completion_tokens > 0 {
                histogram!("quire_ask_first_token_seconds")
                    .record(answer.time_to_first_token.as_secs_f64());
            }
        }
        Err(e) => {
            counter!("quire_request_errors_total", "call" => "ask", "code" => e.code())
                .increment(1);
        }
    }
    histogram!("quire_ask_seconds").record(took.as_secs_f64());
}

/// A `call` refused before any work (too many in progress): counted as an error by code, and
/// kept out of the duration summaries.
pub(crate) fn observe_refused(call: &'static str, error: &Error) {
    counter!("quire_request_errors_total", "call" => call, "code" => error.code()).increment(1);
}
