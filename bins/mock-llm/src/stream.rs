//! Playing a stream: a task makes the events one by one, with the configured pauses and faults,
//! and hands each to the response body through a channel as soon as it is made.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::mpsc;

use crate::stats::Stats;

/// The error a response body ends with; hyper aborts the connection (or resets the HTTP/2
/// stream) when a body returns one.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The events of one stream, already encoded as server-sent events.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Script {
    /// Events before the first content chunk.
    pub head: Vec<Bytes>,
    /// One event per piece of the answer; `cut_after` and `malformed_at` count these.
    pub content: Vec<Bytes>,
    /// What replaces the content event at `malformed_at`.
    pub malformed: Bytes,
    /// Events after the last content chunk, ending the stream.
    pub tail: Vec<Bytes>,
}

/// How a stream is played.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pacing {
    /// The pause before each content chunk.
    pub chunk_delay: Duration,
    /// End the stream abruptly after this many content chunks (at most all of them).
    pub cut_after: Option<u32>,
    /// Send the malformed event in place of the content chunk with this index.
    pub malformed_at: Option<u32>,
}

/// Starts playing `script` and returns the response body it plays into.
pub(crate) fn play(script: Script, pacing: Pacing, stats: Arc<Stats>) -> ChannelBody {
    // A buffer of one frame: the next event is made only once hyper has taken the previous one,
    // so each goes out as soon as it is made and a departed client is noticed at the next event.
    let (tx, rx) = mpsc::channel(1);
    stats.stream_started();
    tokio::spawn(async move {
        match run(script, pacing, &tx).await {
            Ok(End::Completed) => stats.stream_completed(),
            Ok(End::Cut) => {
                let cut = std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "mock-llm cut the stream",
                );
                // If the client has already gone there is nothing left to cut.
                let _ = tx.send(Err(Box::new(cut))).await;
            }
            Err(ClientGone) => stats.stream_cancelled(),
        }
    });
    ChannelBody { rx }
}

/// A response body fed by a channel: each message is one data frame, or the error that ends
/// the body abnormally.
#[derive(Debug)]
pub(crate) struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, BodyError>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.rx
            .poll_recv(cx)
            .map(|message| message.map(|m| m.map(Frame::data)))
    }
}

type Sender = mpsc::Sender<Result<Bytes, BodyError>>;

/// How a stream ended, when the client stayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Completed,
    Cut,
}

/// The client went away (hyper dropped the body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClientGone;

async fn run(script: Script, pacing: Pacing, tx: &Sender) -> Result<End, ClientGone> {
    for event in script.head {
        send(tx, event).await?;
    }
    let cut = pacing
        .cut_after
        .map(|n| (n as usize).min(script.content.len()));
    for (i, event) in script.content.into_iter().enumerate() {
        pause(tx, pacing.chunk_delay).await?;
        if cut == Some(i) {
            return Ok(End::Cut);
        }
        let malformed = pacing.malformed_at.is_some_and(|m| m as usize == i);
        send(
            tx,
            if malformed {
                script.malformed.clone()
            } else {
                event
            },
        )
        .await?;
    }
    if cut.is_some() {
        return Ok(End::Cut);
    }
    for event in script.tail {
        send(tx, event).await?;
    }
    Ok(End::Completed)
}

async fn send(tx: &Sender, event: Bytes) -> Result<(), ClientGone> {
    tx.send(Ok(event)).await.map_err(|_| ClientGone)
}

/// Sleeps, waking early if the client goes away meanwhile.
async fn pause(tx: &Sender, delay: Duration) -> Result<(), ClientGone> {
    if delay.is_zero() {
        return if tx.is_closed() {
            Err(ClientGone)
        } else {
            Ok(())
        };
    }
    tokio::select! {
        () = tokio::time::sleep(delay) => Ok(()),
        () = tx.closed() => Err(ClientGone),
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn script() -> Script {
        Script {
            head: vec![Bytes::from_static(b"h")],
            content: ["a", "b", "c"].map(|s| Bytes::from(s.to_owned())).to_vec(),
            malformed: Bytes::from_static(b"!"),
            tail: vec![Bytes::from_static(b"t")],
        }
    }

    async fn frames(pacing: Pacing, stats: Arc<Stats>) -> (String, bool) {
        let mut body = play(script(), pacing, stats);
        let mut out = String::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => out.push_str(&String::from_utf8_lossy(f.data_ref().unwrap())),
                Err(_) => return (out, true),
            }
        }
        (out, false)
    }

    #[tokio::test]
    async fn plays_in_order_with_faults() {
        let stats = Arc::new(Stats::default());
        assert_eq!(
            frames(Pacing::default(), stats.clone()).await,
            ("habct".to_owned(), false)
        );
        let malformed = Pacing {
            malformed_at: Some(1),
            ..Pacing::default()
        };
        assert_eq!(
            frames(malformed, stats.clone()).await,
            ("ha!ct".to_owned(), false)
        );
        let cut = Pacing {
            cut_after: Some(2),
            ..Pacing::default()
        };
        assert_eq!(frames(cut, stats.clone()).await, ("hab".to_owned(), true));
        let cut_late = Pacing {
            cut_after: Some(99),
            ..Pacing::default()
        };
        assert_eq!(
            frames(cut_late, stats.clone()).await,
            ("habc".to_owned(), true)
        );
        assert_eq!(stats.streams_started(), 4);
        assert_eq!(stats.streams_completed(), 2);
        assert_eq!(stats.streams_cancelled(), 0);
    }

    #[tokio::test]
    async fn a_dropped_body_counts_as_cancelled() {
        let stats = Arc::new(Stats::default());
        let pacing = Pacing {
            chunk_delay: Duration::from_secs(60),
            ..Pacing::default()
        };
        let mut body = play(script(), pacing, stats.clone());
        assert!(body.frame().await.is_some());
        drop(body);
        for _ in 0..200 {
            if stats.streams_cancelled() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stats.streams_cancelled(), 1);
        assert_eq!(stats.streams_completed(), 0);
    }
}
