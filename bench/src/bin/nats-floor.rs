//! The NATS floor for the cluster rows of `make bench`: plain processes
//! talking through a NATS server with async-nats, nothing else.
//!
//! - `nats-floor serve URL SUBJECT`: answer every request with its payload
//!   (prints `ready` once subscribed);
//! - `nats-floor request URL SUBJECT N SIZE`: N requests one after the
//!   other: `{"rtt_us": mean}`;
//! - `nats-floor sink URL SUBJECT N`: take N messages, then publish to
//!   `SUBJECT.done` (prints `ready` once subscribed);
//! - `nats-floor pub URL SUBJECT N SIZE`: publish N messages without
//!   waiting, then wait for the sink's `done`: `{"msgs_per_s": ...}`.

use std::time::Instant;

use futures_util::StreamExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let number = |i: usize| arg(i).parse::<u64>().unwrap_or(1000);
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(arg(1).as_str())
        .await?;
    let subject = arg(2);
    match arg(0).as_str() {
        "serve" => {
            let mut requests = client.subscribe(subject).await?;
            client.flush().await?;
            println!("ready");
            while let Some(request) = requests.next().await {
                if let Some(reply) = request.reply {
                    client.publish(reply, request.payload).await?;
                }
            }
        }
        "request" => {
            let (n, size) = (number(3), number(4) as usize);
            let payload = bytes::Bytes::from(vec![7u8; size]);
            let t = Instant::now();
            for _ in 0..n {
                client.request(subject.clone(), payload.clone()).await?;
            }
            let rtt_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
            println!("{}", serde_json::json!({ "rtt_us": rtt_us }));
        }
        "sink" => {
            let n = number(3);
            let mut messages = client.subscribe(subject.clone()).await?;
            client.flush().await?;
            println!("ready");
            let mut taken = 0;
            while taken < n && messages.next().await.is_some() {
                taken += 1;
            }
            client
                .publish(format!("{subject}.done"), bytes::Bytes::new())
                .await?;
            client.flush().await?;
        }
        "pub" => {
            let (n, size) = (number(3), number(4) as usize);
            let mut done = client.subscribe(format!("{subject}.done")).await?;
            client.flush().await?;
            let payload = bytes::Bytes::from(vec![7u8; size]);
            let t = Instant::now();
            for _ in 0..n {
                client.publish(subject.clone(), payload.clone()).await?;
            }
            client.flush().await?;
            done.next().await;
            let msgs_per_s = n as f64 / t.elapsed().as_secs_f64();
            println!("{}", serde_json::json!({ "msgs_per_s": msgs_per_s }));
        }
        other => anyhow::bail!("unknown mode `{other}` (serve, request, sink, pub)"),
    }
    Ok(())
}
