//! A live app's numbers in the Prometheus text format, on an HTTP endpoint
//! (`wasmproc up --metrics 127.0.0.1:9464`): the same numbers as `top`.

use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use serde_json::Value;
use tokio::net::TcpListener;

use super::live::Live;

/// Each per-guest number: its key in `top`'s rows, its metric, its type,
/// its help, and a divisor (milliseconds to seconds).
const METRICS: [(&str, &str, &str, &str, u64); 12] = [
    (
        "msgs_in",
        "wasmproc_messages_in_total",
        "counter",
        "Messages written to the guest's runner.",
        1,
    ),
    (
        "bytes_in",
        "wasmproc_message_bytes_in_total",
        "counter",
        "Payload bytes written to the guest's runner.",
        1,
    ),
    (
        "msgs_out",
        "wasmproc_messages_out_total",
        "counter",
        "Messages, calls and replies the guest sent.",
        1,
    ),
    (
        "bytes_out",
        "wasmproc_message_bytes_out_total",
        "counter",
        "Payload bytes the guest sent.",
        1,
    ),
    (
        "undeliverable",
        "wasmproc_undeliverable_total",
        "counter",
        "Undeliverable notices the guest was given.",
        1,
    ),
    (
        "mailbox",
        "wasmproc_mailbox_items",
        "gauge",
        "Items the host holds for the guest.",
        1,
    ),
    (
        "mailbox_high_water",
        "wasmproc_mailbox_high_water_items",
        "gauge",
        "The most items the host has held for the guest.",
        1,
    ),
    (
        "calls_to_answer",
        "wasmproc_calls_to_answer",
        "gauge",
        "Calls made to the guest and not answered yet.",
        1,
    ),
    (
        "calls_waiting",
        "wasmproc_calls_waiting",
        "gauge",
        "Calls the guest made that wait for their answer.",
        1,
    ),
    (
        "rss_bytes",
        "wasmproc_resident_memory_bytes",
        "gauge",
        "Resident memory of the guest's runner.",
        1,
    ),
    (
        "memory_bytes",
        "wasmproc_linear_memory_bytes",
        "gauge",
        "The guest's linear memory, as its runner last said.",
        1,
    ),
    (
        "cpu_ms",
        "wasmproc_cpu_seconds_total",
        "counter",
        "CPU time of the guest's runner.",
        1000,
    ),
];

/// The text a scrape gets.
pub fn render(live: &Live) -> String {
    let Ok(top) = live.metrics() else {
        return String::new();
    };
    let guests = top["guests"].as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    let label = |g: &Value| {
        let name = g["name"].as_str().unwrap_or_default();
        name.replace('\\', "\\\\").replace('"', "\\\"")
    };
    let _ = writeln!(
        out,
        "# HELP wasmproc_up Whether the guest runs (1) or not (0)."
    );
    let _ = writeln!(out, "# TYPE wasmproc_up gauge");
    for g in &guests {
        let up = u8::from(g["state"] == "running");
        let _ = writeln!(out, "wasmproc_up{{guest=\"{}\"}} {up}", label(g));
    }
    for (key, metric, kind, help, divisor) in METRICS {
        let _ = writeln!(out, "# HELP {metric} {help}");
        let _ = writeln!(out, "# TYPE {metric} {kind}");
        for g in &guests {
            let Some(value) = g[key].as_u64() else {
                continue;
            };
            let value = if divisor == 1 {
                value.to_string()
            } else {
                format!("{}", value as f64 / divisor as f64)
            };
            let _ = writeln!(out, "{metric}{{guest=\"{}\"}} {value}", label(g));
        }
    }
    let _ = writeln!(
        out,
        "# HELP wasmproc_late_replies_total Replies that came after their call had ended."
    );
    let _ = writeln!(out, "# TYPE wasmproc_late_replies_total counter");
    let _ = writeln!(out, "wasmproc_late_replies_total {}", top["late_replies"]);
    let cluster = &top["cluster"];
    if cluster.is_object() {
        for (key, help) in [
            ("sent", "Envelopes sent to other nodes."),
            ("acked", "Acks received from other nodes."),
            (
                "acks_carried",
                "Other nodes' letters acked on a letter going back.",
            ),
            ("acks_alone", "Other nodes' letters acked on their own."),
            ("no_responders", "Sends no node served."),
            (
                "unknown_outcome",
                "Sends to other nodes whose ack did not come in time.",
            ),
            (
                "slow_consumers",
                "Messages the NATS client dropped (slow consumer).",
            ),
            ("disconnects", "Times the connection to NATS dropped."),
            (
                "settled",
                "Messages to other nodes they reported taken or returned.",
            ),
            (
                "evicted",
                "Unsettled messages past the bound, returned as of unknown outcome.",
            ),
            (
                "dropped_reports",
                "Take reports for other nodes dropped past the bound.",
            ),
            (
                "reports_given_up",
                "Take reports no node answered after every try.",
            ),
            (
                "node_conflicts",
                "Beats of another host claiming this node.",
            ),
        ] {
            cluster_metric(
                &mut out,
                &format!("{key}_total"),
                help,
                "counter",
                &cluster[key],
            );
        }
        for (key, help) in [
            (
                "unsettled",
                "Messages sent to other nodes and not yet reported taken or returned.",
            ),
            (
                "reports_unanswered",
                "Take reports sent to other nodes and not answered yet.",
            ),
        ] {
            cluster_metric(&mut out, key, help, "gauge", &cluster[key]);
        }
    }
    out
}

/// One of the bridge's numbers, as `wasmproc_cluster_NAME` of `kind`.
fn cluster_metric(out: &mut String, name: &str, help: &str, kind: &str, value: &Value) {
    let name = format!("wasmproc_cluster_{name}");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// Serve `GET /metrics` on `listener` until the app shuts down.
pub async fn serve(live: Arc<Live>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            () = live.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let live = live.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let live = live.clone();
                async move { Ok::<_, Infallible>(respond(&live, &request)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

fn respond(live: &Live, request: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let (status, body) = match (request.method(), request.uri().path()) {
        (&hyper::Method::GET, "/metrics") => (StatusCode::OK, render(live)),
        (&hyper::Method::GET, _) => (StatusCode::NOT_FOUND, "try /metrics\n".to_owned()),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "GET /metrics only\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
